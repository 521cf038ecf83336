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
    solve(
        &demand,
        candidates,
        &usable,
        params.hysteresis,
        &prev_of,
        &mut |g, n| {
            let mut all = all_serving(g);
            all.truncate(n);
            all
        },
        None,
    )
    .0
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

/// One group's working split.
struct Group {
    candidates: Vec<(u32, f64)>,
    /// No more serving PoPs beyond `candidates`.
    exhausted: bool,
    /// (PoP, qps), positive.
    shares: Vec<(u32, f64)>,
    touched: bool,
}

impl Group {
    fn cost(&self, p: u32) -> f64 {
        self.candidates
            .iter()
            .find(|&&(q, _)| q == p)
            .map_or(f64::INFINITY, |&(_, c)| c)
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
}

/// A candidate move in the overload-shedding step, ordered by cost increase.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Move {
    delta: f64,
    from: u32,
    group: u32,
    to: u32,
}

impl Eq for Move {}

impl Ord for Move {
    fn cmp(&self, other: &Self) -> Ordering {
        self.delta
            .total_cmp(&other.delta)
            .then(self.from.cmp(&other.from))
            .then(self.group.cmp(&other.group))
            .then(self.to.cmp(&other.to))
    }
}

impl PartialOrd for Move {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The core solver over prepared candidate lists (steps 2–4 of the module doc).
///
/// `candidates[g]` lists serving PoPs sorted by (cost, index) and includes the serving PoPs
/// of `previous(g)`; `widen(g, n)` returns the `n` cheapest serving PoPs for `g` (all of
/// them if fewer serve), sorted the same way.
/// `usable` is indexed by PoP. `base` is load already on the PoPs from groups outside this
/// call (the planner re-solves subsets). Returns weights per group and loads per PoP
/// (including `base`), and the PoPs that were overloaded before shedding.
pub(crate) fn solve<'p>(
    demand: &[f64],
    candidates: Vec<Vec<(u32, f64)>>,
    usable: &[f64],
    hysteresis: f64,
    previous: &dyn Fn(usize) -> Option<&'p [(u32, f64)]>,
    widen: &mut dyn FnMut(usize, usize) -> Vec<(u32, f64)>,
    base: Option<&[f64]>,
) -> (Assignment, Vec<u32>) {
    let base = base.map_or_else(|| vec![0.0; usable.len()], <[f64]>::to_vec);
    let mut loads = Loads {
        usable,
        load: base.clone(),
    };
    let mut groups: Vec<Group> = candidates
        .into_iter()
        .map(|candidates| Group {
            candidates,
            exhausted: false,
            shares: Vec::new(),
            touched: false,
        })
        .collect();

    // Step 2: previous split or cheapest candidate.
    let mut sticky = Vec::new();
    for (g, group) in groups.iter_mut().enumerate() {
        let d = demand[g];
        if d <= 0.0 || group.candidates.is_empty() {
            continue;
        }
        let prev = previous(g).unwrap_or(&[]);
        let kept: Vec<(u32, f64)> = prev
            .iter()
            .copied()
            .filter(|&(p, w)| w > 0.0 && group.candidates.iter().any(|&(q, _)| q == p))
            .collect();
        let total: f64 = kept.iter().map(|&(_, w)| w).sum();
        if kept.is_empty() || total <= 0.0 {
            group.shares.push((group.candidates[0].0, d));
            group.touched = true;
        } else {
            group.touched = kept.len() != prev.len();
            let scale = if group.touched { d / total } else { d };
            group.shares = kept.iter().map(|&(p, w)| (p, w * scale)).collect();
            sticky.push(g);
        }
        for &(p, s) in &group.shares {
            loads.load[p as usize] += s;
        }
    }
    for _ in 0..MAX_PASSES {
        let mut moved = false;
        for &g in &sticky {
            moved |= improve(&mut groups[g], hysteresis, &mut loads);
        }
        if !moved {
            break;
        }
    }

    // Step 3: shed overload, smallest cost increase first.
    let shed_from = shed(&mut groups, &mut loads, widen);

    // Step 4: zero-demand groups go to the cheapest PoP with room.
    let mut out: Vec<Vec<(u32, f64)>> = Vec::with_capacity(groups.len());
    for (g, group) in groups.iter_mut().enumerate() {
        if group.candidates.is_empty() {
            out.push(Vec::new());
        } else if demand[g] <= 0.0 {
            out.push(idle_choice(g, group, hysteresis, previous, &loads, widen));
        } else if !group.touched {
            let mut kept = previous(g).unwrap_or(&[]).to_vec();
            kept.sort_by(|a, b| {
                group
                    .cost(a.0)
                    .total_cmp(&group.cost(b.0))
                    .then(a.0.cmp(&b.0))
            });
            out.push(kept);
        } else {
            out.push(weights(group));
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
fn improve(group: &mut Group, hysteresis: f64, loads: &mut Loads<'_>) -> bool {
    let mut moved = false;
    let mut i = 0;
    while i < group.shares.len() {
        let (p, _) = group.shares[i];
        let cp = group.cost(p);
        let bar = cp - hysteresis * cp.abs();
        let mut j = 0;
        while j < group.candidates.len() && group.candidates[j].1 < bar {
            let q = group.candidates[j].0;
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
    widen: &mut dyn FnMut(usize, usize) -> Vec<(u32, f64)>,
) -> Option<(u32, f64)> {
    loop {
        let found = group
            .candidates
            .iter()
            .copied()
            .find(|&(q, _)| q != from && loads.room(q) > 0.0);
        if found.is_some() || group.exhausted {
            return found;
        }
        let want = (group.candidates.len() * 4).max(16);
        let mut all = widen(g, want);
        group.exhausted = all.len() < want;
        for &(p, c) in &group.candidates {
            if !all.iter().any(|&(q, _)| q == p) {
                all.push((p, c));
            }
        }
        group.candidates = sorted(all);
    }
}

fn shed(
    groups: &mut [Group],
    loads: &mut Loads<'_>,
    widen: &mut dyn FnMut(usize, usize) -> Vec<(u32, f64)>,
) -> Vec<u32> {
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
            push(&mut heap, g, group, from, loads, widen);
        }
    }
    while let Some(Reverse(m)) = heap.pop() {
        let excess = loads.excess(m.from);
        let group = &mut groups[m.group as usize];
        let share = group.share(m.from);
        if excess <= 0.0 || share <= 0.0 {
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
            push(&mut heap, m.group as usize, group, m.from, loads, widen);
        }
    }
    over
}

/// Queues `group`'s next move off `from`, if it has a PoP with room.
fn push(
    heap: &mut BinaryHeap<Reverse<Move>>,
    g: usize,
    group: &mut Group,
    from: u32,
    loads: &Loads<'_>,
    widen: &mut dyn FnMut(usize, usize) -> Vec<(u32, f64)>,
) {
    if let Some((to, c)) = target(g, group, from, loads, widen) {
        heap.push(Reverse(Move {
            delta: c - group.cost(from),
            from,
            group: g as u32,
            to,
        }));
    }
}

/// The single PoP of a zero-demand group.
fn idle_choice<'p>(
    g: usize,
    group: &mut Group,
    hysteresis: f64,
    previous: &dyn Fn(usize) -> Option<&'p [(u32, f64)]>,
    loads: &Loads<'_>,
    widen: &mut dyn FnMut(usize, usize) -> Vec<(u32, f64)>,
) -> Vec<(u32, f64)> {
    let best = target(g, group, u32::MAX, loads, widen).unwrap_or(group.candidates[0]);
    let prev = previous(g).and_then(|list| {
        list.iter()
            .copied()
            .filter(|&(p, _)| group.candidates.iter().any(|&(q, _)| q == p))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
    });
    if let Some((p, _)) = prev {
        let cp = group.cost(p);
        let keep = p == best.0 || (loads.room(p) > 0.0 && best.1 >= cp - hysteresis * cp.abs());
        if keep {
            return vec![(p, 1.0)];
        }
    }
    vec![(best.0, 1.0)]
}

/// A touched group's weights: shares over their sum, by cost, summing to exactly 1.
fn weights(group: &Group) -> Vec<(u32, f64)> {
    let total: f64 = group.shares.iter().map(|&(_, s)| s).sum();
    let mut list: Vec<(u32, f64)> = group
        .shares
        .iter()
        .filter(|&&(_, s)| s > 0.0)
        .map(|&(p, s)| (p, s / total))
        .collect();
    list.sort_by(|a, b| {
        group
            .cost(a.0)
            .total_cmp(&group.cost(b.0))
            .then(a.0.cmp(&b.0))
    });
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
