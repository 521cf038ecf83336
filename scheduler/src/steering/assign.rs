//! Capacity-aware assignment of client-group demand to PoPs for one service, with
//! hysteresis against the previous assignment.
//!
//! [`assign`] is a pure function: (groups, PoPs, cost, parameters, previous) → per-group
//! weighted PoP lists. It proceeds in four steps:
//!
//! 1. **Candidates.** Each group considers its `candidates` cheapest serving PoPs, plus the
//!    serving PoPs of its previous assignment. Ties in cost go to the lower PoP index.
//! 2. **Stay or move (hysteresis).** A group without a previous assignment starts at its
//!    cheapest candidate. A group with one keeps its previous split, except that a share
//!    sitting on PoP `p` moves to a candidate `q` when `cost(q) < cost(p) − hysteresis·|cost(p)|`
//!    *and* `q` has room; this repeats until nothing moves, so a result re-solved with itself
//!    as `previous` is returned unchanged (bit for bit).
//! 3. **Shed overload.** While some PoP carries more than its usable capacity
//!    (`capacity · (1 − headroom)`), demand moves off it, fractionally, to the groups'
//!    next-cheapest PoPs that have room, smallest cost increase first (a regret order, as a
//!    successive-shortest-path solver would pick single-hop augmentations). A group whose
//!    candidates are all full looks at every serving PoP. So when total demand fits in total
//!    usable capacity, no PoP ends above its usable capacity. When it does not fit, every PoP
//!    with room is filled and the excess stays where the groups' cheapest choices put it:
//!    those PoPs are reported in [`Assignment::overloaded`] and the excess in
//!    [`Assignment::unserved_demand`]; no group is ever dropped from the map.
//! 4. **Zero-demand groups** get the cheapest candidate that still has room (so new clients
//!    do not land on a full PoP), weight 1, with the same hysteresis.
//!
//! Weights per group are exact fractions of the group's demand, listed by cost (then PoP
//! index) and sum to 1. Groups whose split did not change keep their previous weights
//! verbatim. If no PoP serves, every group gets an empty list (the caller applies the
//! service's all-down policy).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Relative tolerance on capacities: loads within `EPS · max(1, usable)` of the usable
/// capacity count as exactly full, so float rounding never triggers a move.
pub const EPS: f64 = 1e-9;

/// How many groups ahead the solver asks its [`Source`] to prefetch.
const PREFETCH_AHEAD: usize = 4;

/// Most stay-or-move passes before the solver settles for the current split.
const MAX_PASSES: usize = 32;

/// One client group of one service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupIn<'a> {
    /// The group label (`cell:N`, `group:NAME`, `unknown`).
    pub label: &'a str,
    /// Where the group's clients are, if known.
    pub location: Option<(f64, f64)>,
    /// Demand in queries per second (negative or non-finite counts as 0).
    pub demand: f64,
}

/// One PoP as seen by one service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PopIn<'a> {
    /// The PoP name.
    pub name: &'a str,
    /// Where the PoP is.
    pub location: (f64, f64),
    /// Its failure domain (region or provider); [`fallbacks`] prefers another one.
    pub failure_domain: &'a str,
    /// Capacity for this service in queries per second; `None` = unbounded.
    pub capacity: Option<f64>,
    /// Healthy and has endpoints for this service.
    pub serving: bool,
}

/// Solver parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Fraction of each PoP's capacity kept free (0.1: fill to 90 %).
    pub headroom: f64,
    /// Relative cost improvement a group needs before it leaves its previous PoP (0.1: 10 %).
    pub hysteresis: f64,
    /// Candidate PoPs considered per group before the list is widened.
    pub candidates: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            headroom: 0.1,
            hysteresis: 0.1,
            candidates: 8,
        }
    }
}

/// The assignment of one service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assignment {
    /// Per group: (PoP index, weight), by cost then PoP index; weights are > 0 and sum to 1.
    pub groups: Vec<Vec<(u32, f64)>>,
    /// Per PoP: assigned demand, queries per second.
    pub load: Vec<f64>,
    /// PoPs above their usable capacity (only when demand does not fit), by index.
    pub overloaded: Vec<u32>,
    /// Demand above usable capacity (the sum of the overloaded PoPs' excess), or all demand
    /// when no PoP serves.
    pub unserved_demand: f64,
}

/// Assigns every group's demand to serving PoPs; see the module doc. `cost(g, p)` is the
/// cost of serving group `g` from PoP `p` (called for serving PoPs only). `previous` is the
/// last result for the same groups and PoPs (ignored if its shape differs).
pub fn assign(
    groups: &[GroupIn<'_>],
    pops: &[PopIn<'_>],
    cost: &dyn Fn(usize, usize) -> f64,
    params: &Params,
    previous: Option<&Assignment>,
) -> Assignment {
    let previous =
        previous.filter(|p| p.groups.len() == groups.len() && p.load.len() == pops.len());
    let serving: Vec<u32> = (0..pops.len() as u32)
        .filter(|&p| pops[p as usize].serving)
        .collect();
    let demand: Vec<f64> = groups.iter().map(|g| clean_demand(g.demand)).collect();
    if serving.is_empty() {
        return Assignment {
            groups: vec![Vec::new(); groups.len()],
            load: vec![0.0; pops.len()],
            overloaded: Vec::new(),
            unserved_demand: demand.iter().sum(),
        };
    }
    let usable: Vec<f64> = pops
        .iter()
        .map(|p| usable(p.capacity, params.headroom))
        .collect();
    let priced = |g: usize, p: u32| (p, clean_cost(cost(g, p as usize)));
    let all_serving = |g: usize| sorted(serving.iter().map(|&p| priced(g, p)).collect());

    let candidates: Vec<Vec<(u32, f64)>> = (0..groups.len())
        .map(|g| {
            let mut list: Vec<(u32, f64)> = serving.iter().map(|&p| priced(g, p)).collect();
            let k = params.candidates.max(1);
            if list.len() > k {
                list.select_nth_unstable_by(k - 1, by_cost);
                list.truncate(k);
            }
            for &(p, _) in previous.map_or(&[][..], |prev| &prev.groups[g]) {
                let known = (p as usize) < pops.len() && pops[p as usize].serving;
                if known && !list.iter().any(|&(q, _)| q == p) {
                    list.push(priced(g, p));
                }
            }
            sorted(list)
        })
        .collect();

    let prev_of = |g: usize| previous.map(|p| p.groups[g].as_slice());
    let mut source = Dense {
        pops,
        lists: candidates,
        all_serving: &all_serving,
        priced: &priced,
    };
    solve(
        &demand,
        &mut source,
        &usable,
        params.hysteresis,
        &prev_of,
        None,
    )
    .0
}

/// The dense path's [`Source`]: every list built up front.
struct Dense<'a> {
    pops: &'a [PopIn<'a>],
    lists: Vec<Vec<(u32, f64)>>,
    all_serving: &'a dyn Fn(usize) -> Vec<(u32, f64)>,
    priced: &'a dyn Fn(usize, u32) -> (u32, f64),
}

impl Source for Dense<'_> {
    fn eager(&self) -> bool {
        true
    }

    fn serving(&self, p: u32) -> bool {
        self.pops.get(p as usize).is_some_and(|pop| pop.serving)
    }

    fn best(&mut self, g: usize) -> Option<(u32, f64)> {
        self.lists[g].first().copied()
    }

    fn cost(&mut self, g: usize, p: u32) -> f64 {
        (self.priced)(g, p).1
    }

    fn candidates(&mut self, g: usize) -> Vec<(u32, f64)> {
        std::mem::take(&mut self.lists[g])
    }

    fn widen(&mut self, g: usize, n: usize) -> Vec<(u32, f64)> {
        let mut all = (self.all_serving)(g);
        all.truncate(n);
        all
    }
}

/// Usable capacity: `capacity · (1 − headroom)`, unbounded for `None`.
pub fn usable(capacity: Option<f64>, headroom: f64) -> f64 {
    match capacity {
        Some(c) if c.is_finite() => c.max(0.0) * (1.0 - headroom.clamp(0.0, 1.0)),
        Some(c) if c.is_nan() => 0.0,
        _ => f64::INFINITY,
    }
}

/// Fallback PoPs for answers whose primary is `primary`: serving PoPs other than it, those in
/// another failure domain first, each part by `cost` (then index); at most `count`.
pub fn fallbacks(
    pops: &[PopIn<'_>],
    primary: u32,
    cost: &dyn Fn(usize) -> f64,
    count: usize,
) -> Vec<u32> {
    let domain = pops.get(primary as usize).map(|p| p.failure_domain);
    let mut order: Vec<(bool, f64, u32)> = (0..pops.len())
        .filter(|&p| p != primary as usize && pops[p].serving)
        .map(|p| {
            let same = Some(pops[p].failure_domain) == domain;
            (same, clean_cost(cost(p)), p as u32)
        })
        .collect();
    order.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
    order.into_iter().take(count).map(|(_, _, p)| p).collect()
}

pub(crate) fn clean_demand(d: f64) -> f64 {
    if d.is_finite() && d > 0.0 { d } else { 0.0 }
}

pub(crate) fn clean_cost(c: f64) -> f64 {
    if c.is_nan() { f64::INFINITY } else { c }
}

pub(crate) fn by_cost(a: &(u32, f64), b: &(u32, f64)) -> Ordering {
    a.1.total_cmp(&b.1).then(a.0.cmp(&b.0))
}

pub(crate) fn sorted(mut list: Vec<(u32, f64)>) -> Vec<(u32, f64)> {
    list.sort_unstable_by(by_cost);
    list
}

/// Slack within which a load counts as exactly at `usable` (infinite for unbounded PoPs,
/// which are never over).
fn tolerance(usable: f64) -> f64 {
    EPS * usable.max(1.0)
}

/// The amount to move out of `share` when `amount` is asked: all of it when the rest would
/// be rounding dust (at most half the capacity tolerance of the share), so no group keeps a
/// 10⁻¹⁵ weight on a PoP.
fn snap(share: f64, amount: f64) -> f64 {
    if share - amount <= 0.5 * EPS * share {
        share
    } else {
        amount
    }
}

/// Whether a PoP at `load` has room left under `usable` (beyond the rounding tolerance).
pub fn has_room(usable: f64, load: f64) -> bool {
    usable == f64::INFINITY || usable - load > tolerance(usable)
}

/// Working state of the load per PoP.
struct Loads<'a> {
    usable: &'a [f64],
    load: Vec<f64>,
}

impl Loads<'_> {
    /// Free usable capacity, or 0 when (within tolerance) there is none.
    fn room(&self, p: u32) -> f64 {
        let u = self.usable[p as usize];
        let load = self.load[p as usize];
        if has_room(u, load) { u - load } else { 0.0 }
    }

    /// Load above usable capacity, or 0 within tolerance.
    fn excess(&self, p: u32) -> f64 {
        let u = self.usable[p as usize];
        let excess = self.load[p as usize] - u;
        if excess > tolerance(u) { excess } else { 0.0 }
    }
}

/// Where the core solver gets each group's PoPs and costs from.
///
/// The dense path ([`assign`]) prices every group at every PoP up front and hands over
/// finished candidate lists. The planner prices lazily: most groups stay on their cheapest
/// PoP, and for them the solver only needs that PoP ([`Source::best`]), the costs of the
/// PoPs they already use ([`Source::cost`]) and the serving set — the full candidate list
/// ([`Source::candidates`]) is built only for a group that could improve past the
/// hysteresis onto a PoP with room, must move off an overloaded PoP (see [`Move`]), or
/// (without demand) finds its cheapest PoP full. Both give the same result: the list's
/// first entry is `best`, and every other use of the list is guarded by one of those three
/// conditions, checked with lower bounds that only skip work that could not change a share.
pub(crate) trait Source {
    /// Whether every group's candidate list is built before solving (the dense path).
    fn eager(&self) -> bool {
        false
    }
    /// Hints that group `g` will be priced soon (`g` may be past the last group).
    fn prefetch(&self, _g: usize) {}
    /// Whether PoP `p` serves (false for indices out of range).
    fn serving(&self, p: u32) -> bool;
    /// The cheapest serving PoP of group `g` with its cost, by (cost, index); `None` when no
    /// PoP serves.
    fn best(&mut self, g: usize) -> Option<(u32, f64)>;
    /// The cheapest serving PoP of group `g` other than `from`, when it is certain to be in
    /// `g`'s candidate list (where it is then the first entry other than `from`); `None`
    /// when that is not known (the solver builds the list).
    fn runner_up(&mut self, _g: usize, _from: u32) -> Option<(u32, f64)> {
        None
    }
    /// A cheap first look at [`Source::runner_up`] for the overload-shedding queue: `Ok`
    /// with the cheapest serving PoP other than `from` when it is certain to be in `g`'s
    /// candidate list, `Err` with a lower bound of the cost of any serving PoP other than
    /// `from` when only more work could tell; `None` to have the solver work it out now.
    fn runner_up_bound(&mut self, _g: usize, _from: u32) -> Option<Result<(u32, f64), f64>> {
        None
    }
    /// A lower bound of the cost of group `g` at any serving PoP `q` other than `from`
    /// (`u32::MAX`: any) with `room(q)`; `None` when not known cheaply.
    fn room_bound(&mut self, _g: usize, _from: u32, _room: &dyn Fn(u32) -> bool) -> Option<f64> {
        None
    }
    /// The cheapest serving PoP of group `g` other than `from` with `room`, by (cost,
    /// index) — where widening `g`'s candidate list until it holds one ends — found
    /// directly: `Some(None)` when no such PoP exists, `None` to have the solver widen.
    fn cheapest_with_room(
        &mut self,
        _g: usize,
        _from: u32,
        _room: &dyn Fn(u32) -> bool,
    ) -> Option<Option<(u32, f64)>> {
        None
    }
    /// What [`target`] returns for group `g` before its candidate list is built, when the
    /// source can tell without building it: the cheapest serving PoP other than `from` with
    /// `room` (`Some(None)`: none has room), which is the list's answer unless a PoP of `g`'s
    /// previous list outside the candidates has room; `None` when that cannot be ruled out
    /// (the solver builds the list).
    fn direct_target(
        &mut self,
        _g: usize,
        _from: u32,
        _room: &dyn Fn(u32) -> bool,
    ) -> Option<Option<(u32, f64)>> {
        None
    }
    /// The cost of group `g` at serving PoP `p`, as the candidate lists price it.
    fn cost(&mut self, g: usize, p: u32) -> f64;
    /// Group `g`'s `candidates` cheapest serving PoPs plus the serving PoPs of its previous
    /// list, by (cost, index).
    fn candidates(&mut self, g: usize) -> Vec<(u32, f64)>;
    /// The `n` cheapest serving PoPs of `g` (all of them if fewer serve), by (cost, index).
    fn widen(&mut self, g: usize, n: usize) -> Vec<(u32, f64)>;
}

/// One group's working split.
#[derive(Default)]
struct Group {
    /// The candidate list, once built (see [`Source`]).
    candidates: Option<Vec<(u32, f64)>>,
    /// The cheapest serving PoP (the list's first entry), once known.
    best: Option<(u32, f64)>,
    /// No more serving PoPs beyond `candidates`.
    exhausted: bool,
    /// No candidate is cheaper than a share's PoP by the hysteresis: [`improve`] has
    /// nothing to do (shares only change in `improve` and, later, in `shed`).
    settled: bool,
    /// (PoP, qps), positive.
    shares: Vec<(u32, f64)>,
    touched: bool,
}

impl Group {
    /// The candidate list, built on first use.
    fn list(&mut self, g: usize, source: &mut dyn Source) -> &mut Vec<(u32, f64)> {
        self.candidates.get_or_insert_with(|| source.candidates(g))
    }

    fn cost(&self, g: usize, p: u32, source: &mut dyn Source) -> f64 {
        match &self.candidates {
            Some(list) => list
                .iter()
                .find(|&&(q, _)| q == p)
                .map_or(f64::INFINITY, |&(_, c)| c),
            None => match self.best {
                Some((q, c)) if q == p => c,
                _ => source.cost(g, p),
            },
        }
    }

    fn share(&self, p: u32) -> f64 {
        self.shares
            .iter()
            .find(|&&(q, _)| q == p)
            .map_or(0.0, |&(_, s)| s)
    }

    /// Moves `amount` qps from `from` to `to` (`amount` ≤ the share on `from`).
    fn shift(&mut self, from: u32, to: u32, amount: f64, loads: &mut Loads<'_>) {
        let i = self.shares.iter().position(|&(q, _)| q == from);
        let Some(i) = i else { return };
        let amount = amount.min(self.shares[i].1);
        if amount >= self.shares[i].1 {
            self.shares.swap_remove(i);
        } else {
            self.shares[i].1 -= amount;
        }
        match self.shares.iter_mut().find(|(q, _)| *q == to) {
            Some((_, s)) => *s += amount,
            None => self.shares.push((to, amount)),
        }
        loads.load[from as usize] -= amount;
        loads.load[to as usize] += amount;
        self.touched = true;
    }

    /// Sorts `list` by this group's cost, then PoP index.
    fn sort_by_cost(&self, g: usize, list: &mut [(u32, f64)], source: &mut dyn Source) {
        if list.len() < 2 {
            return;
        }
        let mut keyed: Vec<(f64, (u32, f64))> = list
            .iter()
            .map(|&e| (self.cost(g, e.0, source), e))
            .collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.0.cmp(&b.1.0)));
        for (slot, (_, e)) in list.iter_mut().zip(keyed) {
            *slot = e;
        }
    }
}

/// A candidate move in the overload-shedding step, ordered by cost increase.
///
/// A move is `exact` when `to` is the group's target (see [`target`]) and `delta` its cost
/// increase; otherwise `delta` is only a lower bound of the increase (`to` is 0) and the
/// target is worked out when the move comes first in the queue. Rooms only shrink while
/// shedding, so a target found early stays the target as long as it has room, and every
/// queued key is at most the group's true key: the moves made are those of a queue priced
/// up front, while most groups on an overloaded PoP — those that never need to move —
/// are never priced beyond their near list.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Move {
    delta: f64,
    from: u32,
    group: u32,
    to: u32,
    exact: bool,
}

impl Eq for Move {}

impl Ord for Move {
    fn cmp(&self, other: &Self) -> Ordering {
        self.delta
            .total_cmp(&other.delta)
            .then(self.from.cmp(&other.from))
            .then(self.group.cmp(&other.group))
            .then(self.to.cmp(&other.to))
            .then(self.exact.cmp(&other.exact))
    }
}

impl PartialOrd for Move {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The core solver (steps 2–4 of the module doc) over the groups `0..demand.len()`, pricing
/// through `source`.
///
/// `previous(g)` is group `g`'s last list. `usable` is indexed by PoP. `base` is load
/// already on the PoPs from groups outside this call (the planner re-solves subsets).
/// Returns weights per group and loads per PoP (including `base`), and the PoPs that were
/// overloaded before shedding.
pub(crate) fn solve<'p>(
    demand: &[f64],
    source: &mut dyn Source,
    usable: &[f64],
    hysteresis: f64,
    previous: &dyn Fn(usize) -> Option<&'p [(u32, f64)]>,
    base: Option<&[f64]>,
) -> (Assignment, Vec<u32>) {
    let base = base.map_or_else(|| vec![0.0; usable.len()], <[f64]>::to_vec);
    let mut loads = Loads {
        usable,
        load: base.clone(),
    };
    let mut groups: Vec<Group> = Vec::with_capacity(demand.len());
    groups.resize_with(demand.len(), Group::default);
    if source.eager() {
        for (g, group) in groups.iter_mut().enumerate() {
            let list = source.candidates(g);
            group.best = list.first().copied();
            group.candidates = Some(list);
        }
    }

    // Step 2: previous split or cheapest candidate.
    let mut sticky = Vec::new();
    for (g, group) in groups.iter_mut().enumerate() {
        source.prefetch(g + PREFETCH_AHEAD);
        let d = demand[g];
        if d <= 0.0 {
            continue;
        }
        if group.candidates.is_none() {
            group.best = source.best(g);
        }
        let Some((best, _)) = group.best else {
            continue;
        };
        let prev = previous(g).unwrap_or(&[]);
        let kept = prev.iter().filter(|&&(p, w)| w > 0.0 && source.serving(p));
        let (count, total) = kept
            .clone()
            .fold((0, 0.0), |(n, t), &(_, w)| (n + 1, t + w));
        if count == 0 || total <= 0.0 {
            group.shares = vec![(best, d)];
            group.touched = true;
        } else {
            group.touched = count != prev.len();
            let scale = if group.touched { d / total } else { d };
            group.shares = kept.map(|&(p, w)| (p, w * scale)).collect();
            sticky.push(g);
        }
        for &(p, s) in &group.shares {
            loads.load[p as usize] += s;
        }
    }
    for _ in 0..MAX_PASSES {
        let mut moved = false;
        for &g in &sticky {
            moved |= improve(g, &mut groups[g], hysteresis, &mut loads, source);
        }
        if !moved {
            break;
        }
    }

    // Step 3: shed overload, smallest cost increase first.
    let shed_from = shed(&mut groups, &mut loads, source);

    // Step 4: zero-demand groups go to the cheapest PoP with room.
    let mut out: Vec<Vec<(u32, f64)>> = Vec::with_capacity(groups.len());
    for (g, group) in groups.iter_mut().enumerate() {
        if demand[g] <= 0.0 {
            if group.candidates.is_none() {
                group.best = source.best(g);
            }
            out.push(match group.best {
                None => Vec::new(),
                Some(_) => idle_choice(g, group, hysteresis, previous, &loads, source),
            });
        } else if group.best.is_none() {
            out.push(Vec::new());
        } else if !group.touched {
            let mut kept = previous(g).unwrap_or(&[]).to_vec();
            group.sort_by_cost(g, &mut kept, source);
            out.push(kept);
        } else {
            out.push(weights(g, group, source));
        }
    }

    let mut load = base;
    for (g, list) in out.iter().enumerate() {
        for &(p, w) in list {
            load[p as usize] += w * demand[g];
        }
    }
    let mut overloaded = Vec::new();
    let mut unserved_demand = 0.0;
    for (p, (&l, &u)) in load.iter().zip(usable).enumerate() {
        if l - u > tolerance(u) {
            overloaded.push(p as u32);
            unserved_demand += l - u;
        }
    }
    let assignment = Assignment {
        groups: out,
        load,
        overloaded,
        unserved_demand,
    };
    (assignment, shed_from)
}

/// Moves shares of a sticky group to candidates cheaper by more than the hysteresis that
/// have room. True if anything moved.
fn improve(
    g: usize,
    group: &mut Group,
    hysteresis: f64,
    loads: &mut Loads<'_>,
    source: &mut dyn Source,
) -> bool {
    if group.settled {
        return false;
    }
    if group.candidates.is_none() {
        // Only a candidate cheaper than some share's bar can take a share, and the
        // cheapest candidate is `best`: without one, nothing here ever moves.
        let best = group.best.map_or(f64::INFINITY, |(_, c)| c);
        let mut bar = f64::NEG_INFINITY;
        for i in 0..group.shares.len() {
            let cp = group.cost(g, group.shares[i].0, source);
            bar = bar.max(cp - hysteresis * cp.abs());
        }
        if best >= bar {
            group.settled = true;
            return false;
        }
        // And it must have room: when the source can tell that no serving PoP below the
        // highest bar has any, nothing moves in this pass (rooms may open in a later one).
        let room = |q: u32| loads.room(q) > 0.0;
        if source
            .room_bound(g, u32::MAX, &room)
            .is_some_and(|cheapest| cheapest >= bar)
        {
            return false;
        }
        group.list(g, source);
    }
    let mut moved = false;
    let mut i = 0;
    while i < group.shares.len() {
        let (p, _) = group.shares[i];
        let cp = group.cost(g, p, source);
        let bar = cp - hysteresis * cp.abs();
        let mut j = 0;
        loop {
            let candidates = group.candidates.as_deref().unwrap_or(&[]);
            let Some(&(q, c)) = candidates.get(j) else {
                break;
            };
            if c >= bar {
                break;
            }
            let room = loads.room(q);
            let share = group.share(p);
            if room > 0.0 && share > 0.0 {
                group.shift(p, q, snap(share, share.min(room)), loads);
                moved = true;
            }
            if group.share(p) <= 0.0 {
                break;
            }
            j += 1;
        }
        // `shift` may have removed share `i` (swap_remove): only advance when it is still p.
        if group.shares.get(i).is_some_and(|&(q, _)| q == p) {
            i += 1;
        }
    }
    moved
}

/// The cheapest candidate of `group` other than `from` with room. When the candidates are
/// full the list widens, four times as long each time, until it holds every serving PoP.
fn target(
    g: usize,
    group: &mut Group,
    from: u32,
    loads: &Loads<'_>,
    source: &mut dyn Source,
) -> Option<(u32, f64)> {
    let room = |q: u32| loads.room(q) > 0.0;
    if group.candidates.is_none() {
        if let Some(found) = source.direct_target(g, from, &room) {
            return found;
        }
        // The first list entry other than `from` qualifies: no need to build the rest.
        let first = match group.best {
            Some((p, c)) if p != from => Some((p, c)),
            _ => source.runner_up(g, from),
        };
        if let Some((p, c)) = first
            && room(p)
        {
            return Some((p, c));
        }
    }
    loop {
        let list = group.list(g, source);
        let found = list.iter().copied().find(|&(q, _)| q != from && room(q));
        let len = list.len();
        if found.is_some() || group.exhausted {
            return found;
        }
        // No listed PoP has room, so widening ends at the cheapest PoP other than `from`
        // that has any (rooms only shrink while a solve runs, so it stays the answer while
        // it has room): find it directly when the source can, and list it so its cost is
        // known for the rest of the solve.
        if let Some(found) = source.cheapest_with_room(g, from, &room) {
            if let Some(entry) = found
                && let Some(list) = group.candidates.as_mut()
            {
                let at = list.partition_point(|e| by_cost(e, &entry).is_lt());
                list.insert(at, entry);
            }
            return found;
        }
        let want = (len * 4).max(16);
        let mut all = source.widen(g, want);
        group.exhausted = all.len() < want;
        for &(p, c) in group.candidates.as_deref().unwrap_or(&[]) {
            if !all.iter().any(|&(q, _)| q == p) {
                all.push((p, c));
            }
        }
        group.candidates = Some(sorted(all));
    }
}

fn shed(groups: &mut [Group], loads: &mut Loads<'_>, source: &mut dyn Source) -> Vec<u32> {
    let over: Vec<u32> = (0..loads.load.len() as u32)
        .filter(|&p| loads.excess(p) > 0.0)
        .collect();
    if over.is_empty() {
        return over;
    }
    let mut heap = BinaryHeap::new();
    for (g, group) in groups.iter_mut().enumerate() {
        let on: Vec<u32> = group
            .shares
            .iter()
            .map(|&(p, _)| p)
            .filter(|p| over.binary_search(p).is_ok())
            .collect();
        for from in on {
            push(&mut heap, g, group, from, loads, source, false);
        }
    }
    while let Some(Reverse(m)) = heap.pop() {
        let excess = loads.excess(m.from);
        let g = m.group as usize;
        let group = &mut groups[g];
        let share = group.share(m.from);
        if excess <= 0.0 || share <= 0.0 {
            continue;
        }
        if !m.exact {
            push(&mut heap, g, group, m.from, loads, source, true);
            continue;
        }
        let room = loads.room(m.to);
        if room > 0.0 {
            group.shift(
                m.from,
                m.to,
                snap(share, share.min(excess).min(room)),
                loads,
            );
        }
        if loads.excess(m.from) > 0.0 && group.share(m.from) > 0.0 {
            push(&mut heap, g, group, m.from, loads, source, false);
        }
    }
    over
}

/// Queues `group`'s next move off `from`: exact when `priced` or when its target is known
/// cheaply, else keyed by a lower bound of the cost increase (see [`Move`]). Nothing is
/// queued when no PoP has room.
fn push(
    heap: &mut BinaryHeap<Reverse<Move>>,
    g: usize,
    group: &mut Group,
    from: u32,
    loads: &Loads<'_>,
    source: &mut dyn Source,
    priced: bool,
) {
    let first = match group.best {
        _ if priced || group.candidates.is_some() => None,
        Some((p, c)) if p != from => Some(Ok((p, c))),
        _ => source.runner_up_bound(g, from),
    };
    let room = |q: u32| loads.room(q) > 0.0;
    // The target costs at least as much as the cheapest other PoP, and as the cheapest
    // other PoP with room.
    let above = |bound: f64, source: &mut dyn Source| {
        Err(source
            .room_bound(g, from, &room)
            .map_or(bound, |with_room| with_room.max(bound)))
    };
    let target = match first {
        Some(Ok((p, c))) if room(p) => Ok((p, c)),
        Some(Ok((_, c))) => above(c, source),
        Some(Err(bound)) => above(bound, source),
        None => match target(g, group, from, loads, source) {
            Some(found) => Ok(found),
            None => return,
        },
    };
    queue(heap, g, group, from, target, source);
}

/// Queues the move of `group` off `from` to `target` (`Ok`: the target PoP and its cost;
/// `Err`: a lower bound of the target's cost).
fn queue(
    heap: &mut BinaryHeap<Reverse<Move>>,
    g: usize,
    group: &Group,
    from: u32,
    target: Result<(u32, f64), f64>,
    source: &mut dyn Source,
) {
    let (to, cost, exact) = match target {
        Ok((to, cost)) => (to, cost, true),
        Err(bound) => (0, bound, false),
    };
    let delta = cost - group.cost(g, from, source);
    // Infinite costs on both sides: keep a bound a bound.
    let delta = if delta.is_nan() && !exact {
        f64::NEG_INFINITY
    } else {
        delta
    };
    heap.push(Reverse(Move {
        delta,
        from,
        group: g as u32,
        to,
        exact,
    }));
}

/// The single PoP of a zero-demand group (one with a serving PoP).
fn idle_choice<'p>(
    g: usize,
    group: &mut Group,
    hysteresis: f64,
    previous: &dyn Fn(usize) -> Option<&'p [(u32, f64)]>,
    loads: &Loads<'_>,
    source: &mut dyn Source,
) -> Vec<(u32, f64)> {
    let best = match target(g, group, u32::MAX, loads, source) {
        Some(found) => found,
        None => group
            .best
            .expect("idle_choice is only called with a serving PoP"),
    };
    let prev = previous(g).and_then(|list| {
        list.iter()
            .copied()
            .filter(|&(p, _)| source.serving(p))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
    });
    if let Some((p, _)) = prev {
        let cp = group.cost(g, p, source);
        let keep = p == best.0 || (loads.room(p) > 0.0 && best.1 >= cp - hysteresis * cp.abs());
        if keep {
            return vec![(p, 1.0)];
        }
    }
    vec![(best.0, 1.0)]
}

/// A touched group's weights: shares over their sum, by cost, summing to exactly 1.
fn weights(g: usize, group: &mut Group, source: &mut dyn Source) -> Vec<(u32, f64)> {
    let total: f64 = group.shares.iter().map(|&(_, s)| s).sum();
    let mut list = std::mem::take(&mut group.shares);
    list.retain(|&(_, s)| s > 0.0);
    for entry in &mut list {
        entry.1 /= total;
    }
    group.sort_by_cost(g, &mut list, source);
    if let Some(big) =
        (0..list.len()).max_by(|&a, &b| list[a].1.total_cmp(&list[b].1).then(b.cmp(&a)))
    {
        let others: f64 = (0..list.len())
            .filter(|&i| i != big)
            .map(|i| list[i].1)
            .sum();
        list[big].1 = 1.0 - others;
    }
    list
}

pub mod planner;

pub use planner::{Plan, Planner, ServiceSpec, Standalone};

#[cfg(test)]
mod tests;
