//! Steering assignment at scale: many services over one set of client groups and PoPs,
//! with shared nearest-PoP lists and incremental re-solves after a PoP goes down.
//!
//! Solving every service as an independent dense (groups × PoPs) problem costs
//! `services × groups × PoPs` cost evaluations; at 1 000 × 100 000 × 500 that is 5·10¹⁰.
//! The planner instead relies on the shape of the cost model — `cost(g, p) = w.rtt ·
//! rtt(g, p) + penalty(p)`, the RTT shared by every service, only weights and penalties
//! per service — and on demand being sparse:
//!
//! - **Shared, once per latency model** ([`Planner::new`]): per PoP `q`, every PoP sorted by
//!   a key from which a lower bound of `rtt(g, p)` follows for any group `g` whose nearest PoP
//!   is `q` (`key(q, p) − (geo(g, q) − base)`, by the triangle inequality); per group, its
//!   nearest PoP and its `near` lowest-RTT PoPs with exact RTTs, plus a lower bound on the
//!   RTT of every PoP outside that list. Health does not change these lists, so a PoP going
//!   down or up never rebuilds them.
//! - **Per service** ([`Planner::full`]): only groups with demand are solved. A group's
//!   candidates (its `candidates` cheapest serving PoPs) come from its near list, filtered
//!   by the service's serving set and priced with the service's weights and penalties; they
//!   are exact whenever the k-th candidate is cheaper than the bound for every PoP outside
//!   the list, else a bounded scan of the nearest PoP's sorted list finds them. The
//!   candidates then go through the same core as [`super::assign`], so for the groups with
//!   demand the planner returns exactly what `assign` returns for the same inputs. Services
//!   with the same weights and deployed PoPs share each group's cheapest PoP through a memo
//!   kept for the call; a group shed off an overloaded PoP whose listed PoPs are full gets
//!   the cheapest PoP with room from one bounded scan — where widening its list would end —
//!   instead of lists four times as long each time.
//! - **Groups without demand** are not stored: [`Planner::route`] answers them on lookup
//!   (the cheapest serving PoP with room, as `assign` does, without hysteresis).
//! - **Incremental** ([`Planner::pop_down`]): a reverse index lists, per PoP, the (service,
//!   group) pairs with weight on it. Only those groups are re-solved, against the other
//!   groups' loads, plus any group sitting on a PoP that their move overloads; the result
//!   equals a full re-solve with the previous plan (bar float rounding of the loads).
//!
//! - **One-off, every group** ([`Planner::standalone`]): the runtime's snapshot solve
//!   answers every group and keeps the hysteresis of groups without demand, so it solves one
//!   service (arm) over every group against a dense previous assignment, still pricing each
//!   group only at its near PoPs; groups listed in [`ServiceSpec::exact`] (those with client
//!   reports) are priced from their own full row instead.
//!
//! Services are identified by their index in the list given to [`Planner::full`]; health is
//! the planner's (per PoP, [`Planner::pop_down`] / [`Planner::pop_up`]), deployment is the
//! service's ([`ServiceSpec::deployed`]).

use super::{
    Assignment, Params, Source, by_cost, clean_cost, clean_demand, has_room, solve, sorted, usable,
};
use crate::steering::cost::{
    CostWeights, LatencyModel, PopSignals, UNKNOWN_RTT_MS, modelled_cost, pop_penalty, unit,
};

/// Slack subtracted from RTT lower bounds so float rounding in the triangle inequality
/// never prunes a PoP that belongs, milliseconds.
const MARGIN_MS: f64 = 1e-6;

/// Marks an unused near-list slot.
const NONE: u32 = u32::MAX;

/// Most cost-weight profiles with a scan order of their own.
const MAX_PROFILES: usize = 8;

/// Most bytes [`Planner::full`] spends on cheapest-PoP memos shared by services with the
/// same weights and deployment (16 bytes per group per memo).
const MAX_MEMO_BYTES: usize = 64 << 20;

/// A memo entry not computed yet.
const UNSET: u32 = u32::MAX;

/// A memo entry for a group no PoP serves.
const NO_POP: u32 = u32::MAX - 1;

/// A scan order for services with the same cost weights: per PoP `q`, every PoP `p` by
/// `w.rtt · key(q, p) + penalty(p)`. For a group whose nearest PoP is `q`, that value minus
/// `w.rtt · slack` is a lower bound of its cost at `p` (see [`Planner::new`]), so a bounded
/// scan in this order can stop at the first bound above the k-th cost found — instead of
/// walking on until the bound with the *smallest* penalty passes it, which with load
/// penalties of tens of milliseconds meant most of the list. `n × n` entries per profile.
#[derive(Debug, Clone)]
struct Profile {
    weights: CostWeights,
    order: Vec<(f64, u32)>,
}

/// A PoP and an RTT, or part of a group's header (see [`Planner::slots`]).
#[derive(Debug, Clone, Copy)]
struct Slot {
    pop: u32,
    rtt: f64,
}

impl Slot {
    const EMPTY: Self = Self {
        pop: NONE,
        rtt: f64::INFINITY,
    };
}

/// Slots at the start of each group's block that hold its [`Head`].
const HEAD: usize = 5;

/// What pricing a group needs besides its near list, kept in the first [`HEAD`] slots of
/// its block so that one prefetched run of memory serves every lookup.
#[derive(Debug, Clone, Copy)]
struct Head {
    /// Nearest PoP; `NONE` for an unknown location (or no PoPs).
    q: u32,
    /// Its geographic RTT.
    q_ms: f64,
    /// A lower bound on the RTT of every PoP outside the near list.
    outside: f64,
    /// Unit vector of the group's location.
    unit: [f64; 3],
}

impl Head {
    fn write(&self, to: &mut [Slot]) {
        let [x, y, z] = self.unit;
        to[0] = Slot {
            pop: self.q,
            rtt: self.outside,
        };
        for (slot, value) in to[1..HEAD].iter_mut().zip([self.q_ms, x, y, z]) {
            *slot = Slot {
                pop: NONE,
                rtt: value,
            };
        }
    }

    #[inline]
    fn read(from: &[Slot]) -> Self {
        Self {
            q: from[0].pop,
            outside: from[0].rtt,
            q_ms: from[1].rtt,
            unit: [from[2].rtt, from[3].rtt, from[4].rtt],
        }
    }
}

/// A group's cheapest serving PoP and its cost in a memo ([`UNSET`], [`NO_POP`]).
type Best = (u32, f64);

/// One service as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// Per PoP: the service has endpoints there (PoP health is the planner's).
    pub deployed: Vec<bool>,
    /// Per PoP capacity for this service, queries per second; missing entries and `None`
    /// are unbounded.
    pub capacity: Vec<Option<f64>>,
    /// Cost weights.
    pub weights: CostWeights,
    /// (group index, queries per second); order and duplicates do not matter (duplicates add
    /// up), zero and negative demand is dropped.
    pub demand: Vec<(u32, f64)>,
    /// Groups priced from an explicit row instead of the model: (group, cost per PoP in PoP
    /// order). The runtime puts the groups that carry client reports here: reports replace
    /// the modelled RTT of single (group, PoP) pairs, which the shared lists cannot know, and
    /// such groups are few, so pricing them at every PoP keeps the result exact.
    pub exact: Vec<(u32, Vec<f64>)>,
    /// This service's headroom, hysteresis and candidate count; `None` = the planner's.
    pub params: Option<Params>,
}

/// The solved state of one service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Group indices with demand, ascending.
    pub groups: Vec<u32>,
    /// Their demand, queries per second.
    pub demand: Vec<f64>,
    /// `assignment.groups[i]` is the weighted PoP list of `groups[i]`; loads, overloaded PoPs
    /// and unserved demand are the whole service's.
    pub assignment: Assignment,
}

/// A service with its derived per-PoP figures.
#[derive(Debug, Clone)]
struct Service {
    spec: ServiceSpec,
    /// `spec.params`, or the planner's.
    params: Params,
    /// Loss and load penalty per PoP for this service's weights.
    penalty: Vec<f64>,
    /// The smallest penalty among deployed PoPs (a lower bound for any serving one).
    min_penalty: f64,
    /// Usable capacity per PoP.
    usable: Vec<f64>,
    /// The deployed PoPs, ascending.
    deployed: Vec<u32>,
    /// `spec.exact`, sorted by group with duplicates dropped (the first row wins).
    exact: Vec<(u32, Vec<f64>)>,
    /// Index of this service's weights in [`Planner::profiles`], when built.
    profile: Option<usize>,
}

impl Service {
    /// The explicit cost row of group `g`, if it has one.
    fn exact(&self, g: usize) -> Option<&[f64]> {
        if self.exact.is_empty() {
            return None;
        }
        self.exact
            .binary_search_by_key(&(g as u32), |(group, _)| *group)
            .ok()
            .map(|i| self.exact[i].1.as_slice())
    }
}

/// Shared candidate lists plus per-service plans; see the module doc.
#[derive(Debug, Clone)]
pub struct Planner {
    latency: LatencyModel,
    params: Params,
    up: Vec<bool>,
    signals: Vec<PopSignals>,
    locations: Vec<Option<(f64, f64)>>,
    near: usize,
    /// Per group, one block of `HEAD + near` slots, so that pricing a group touches one
    /// contiguous run of memory: first its [`Head`] (nearest PoP, `NONE` for an unknown
    /// location, with its RTT; a lower bound on the RTT of every PoP outside its near list;
    /// its unit vector), then its near PoPs (or `NONE`) with exact RTTs, by (RTT, PoP).
    slots: Vec<Slot>,
    /// Per PoP `q`, all PoPs by (key, PoP): `n × n`.
    by_key: Vec<(f64, u32)>,
    /// Scan orders per cost-weight profile, built on first use; see [`Profile`].
    profiles: Vec<Profile>,
    services: Vec<Service>,
    plans: Vec<Plan>,
    /// Per PoP: (service, index into the plan) with weight on it; may hold stale entries.
    users: Vec<Vec<(u32, u32)>>,
}

impl Planner {
    /// Builds the shared lists for `groups` (locations; `None` = unknown) over the PoPs of
    /// `latency`, keeping the `near` lowest-RTT PoPs per group. All PoPs start up; `signals`
    /// is indexed like the PoPs (missing = no penalty).
    pub fn new(
        groups: Vec<Option<(f64, f64)>>,
        latency: LatencyModel,
        signals: Vec<PopSignals>,
        params: Params,
        near: usize,
    ) -> Self {
        let n = latency.len();
        let near = near.max(1).min(n.max(1));
        let base = latency.distance().base_ms;
        let mut by_key = Vec::with_capacity(n * n);
        for q in 0..n {
            let start = by_key.len();
            for p in 0..n {
                let measured = latency.measured_ms(q, p).unwrap_or(f64::INFINITY);
                let geo = latency.geo_ms_unit(&latency.pop_unit(q), p);
                by_key.push((geo.min(base + measured), p as u32));
            }
            by_key[start..].sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        }
        let mut planner = Self {
            latency,
            params,
            up: vec![true; n],
            signals,
            near,
            slots: vec![Slot::EMPTY; groups.len() * (HEAD + near)],
            locations: groups,
            by_key,
            profiles: Vec::new(),
            services: Vec::new(),
            plans: Vec::new(),
            users: vec![Vec::new(); n],
        };
        let mut top: Vec<(f64, u32)> = Vec::with_capacity(near + 1);
        let width = HEAD + near;
        for g in 0..planner.locations.len() {
            let block = g * width..(g + 1) * width;
            let Some(location) = planner.locations[g].filter(|_| n > 0) else {
                let head = Head {
                    q: NONE,
                    q_ms: f64::NAN,
                    outside: f64::INFINITY,
                    unit: [0.0; 3],
                };
                head.write(&mut planner.slots[block]);
                continue;
            };
            let from = unit(location);
            let (q, q_ms) = planner.nearest_of(&from);
            let slack = q_ms - base + MARGIN_MS;
            top.clear();
            let mut dropped = f64::INFINITY;
            let mut outside = None;
            for &(key, p) in &planner.by_key[q * n..(q + 1) * n] {
                if top.len() == near && key - slack >= top[near - 1].0 {
                    outside = Some((key - slack).min(dropped));
                    break;
                }
                let rtt = planner.rtt_known(&from, q, q_ms, p as usize);
                if let Some((out, _)) = insert_top(&mut top, near, (rtt, p), |e| (e.0, e.1)) {
                    dropped = dropped.min(out);
                }
            }
            let block = &mut planner.slots[block];
            let head = Head {
                q: q as u32,
                q_ms,
                outside: outside.unwrap_or(dropped),
                unit: from,
            };
            head.write(block);
            for (slot, &(rtt, p)) in block[HEAD..].iter_mut().zip(&top) {
                *slot = Slot { pop: p, rtt };
            }
        }
        planner
    }

    /// The nearest PoP to `from` exactly as [`LatencyModel::nearest`] finds it, prefiltered
    /// by the dot product of unit vectors.
    fn nearest_of(&self, from: &[f64; 3]) -> (usize, f64) {
        let n = self.latency.len();
        let dots: Vec<f64> = (0..n)
            .map(|p| {
                let v = self.latency.pop_unit(p);
                from[0] * v[0] + from[1] * v[1] + from[2] * v[2]
            })
            .collect();
        let best = dots.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let close = (0..n).filter(|&p| dots[p] >= best - 1e-9);
        self.latency
            .nearest_among(from, close)
            .expect("at least one PoP")
    }

    /// Exact RTT from `from` (nearest PoP `q` at `q_ms`) to `pop`, as
    /// [`LatencyModel::rtt_row`] computes it.
    #[inline]
    fn rtt_known(&self, from: &[f64; 3], q: usize, q_ms: f64, pop: usize) -> f64 {
        let geo = self.latency.geo_ms_unit(from, pop);
        self.latency.corrected(geo, q, q_ms, pop)
    }

    /// Exact RTT of group `g` to `pop`.
    fn rtt(&self, g: usize, pop: usize) -> f64 {
        self.rtt_from(&self.head(g), pop)
    }

    /// Exact RTT to `pop` of the group with `head`.
    #[inline]
    fn rtt_from(&self, head: &Head, pop: usize) -> f64 {
        if head.q == NONE {
            return UNKNOWN_RTT_MS;
        }
        self.rtt_known(&head.unit, head.q as usize, head.q_ms, pop)
    }

    /// Group `g`'s [`Head`].
    #[inline]
    fn head(&self, g: usize) -> Head {
        let at = g * (HEAD + self.near);
        Head::read(&self.slots[at..at + HEAD])
    }

    /// Group `g`'s [`Head`] and near slots.
    #[inline]
    fn block(&self, g: usize) -> (Head, &[Slot]) {
        let width = HEAD + self.near;
        let block = &self.slots[g * width..(g + 1) * width];
        (Head::read(block), &block[HEAD..])
    }

    /// Hints the CPU to load group `g`'s block: groups with demand are scattered over the
    /// slot array, and waiting for each block in turn dominated the solve (memory-bound).
    #[inline]
    fn prefetch(&self, g: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(slot) = self.slots.get(g * (HEAD + self.near)) {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let at = std::ptr::from_ref(slot).cast::<i8>();
            let bytes = (HEAD + self.near) * std::mem::size_of::<Slot>();
            // SAFETY: prefetching is a hint that never faults; the block is in bounds.
            unsafe {
                for line in (0..bytes).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(line));
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = g;
    }

    /// The planner's parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Number of client groups.
    pub fn groups(&self) -> usize {
        self.locations.len()
    }

    /// Whether PoP `pop` is up.
    pub fn is_up(&self, pop: u32) -> bool {
        self.up[pop as usize]
    }

    /// The plan of service `service` (index into the last [`Self::full`] call).
    pub fn plan(&self, service: usize) -> &Plan {
        &self.plans[service]
    }

    /// All plans, by service index.
    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    /// Drops every plan, so the next [`Self::full`] solves without hysteresis.
    pub fn clear(&mut self) {
        self.plans.clear();
        self.users.iter_mut().for_each(Vec::clear);
    }

    /// The latency model the shared lists were built from.
    pub fn latency(&self) -> &LatencyModel {
        &self.latency
    }

    /// A service with its derived figures.
    fn service(&self, mut spec: ServiceSpec) -> Service {
        let n = self.latency.len();
        spec.demand = merged(std::mem::take(&mut spec.demand));
        let params = spec.params.unwrap_or(self.params);
        let penalty: Vec<f64> = (0..n)
            .map(|p| {
                let signal = self.signals.get(p).copied().unwrap_or_default();
                pop_penalty(&spec.weights, &signal)
            })
            .collect();
        let deployed: Vec<u32> = (0..n as u32)
            .filter(|&p| spec.deployed.get(p as usize).copied().unwrap_or(false))
            .collect();
        let min_penalty = deployed
            .iter()
            .map(|&p| penalty[p as usize])
            .fold(f64::INFINITY, f64::min);
        let usable = (0..n)
            .map(|p| usable(spec.capacity.get(p).copied().flatten(), params.headroom))
            .collect();
        let mut exact = std::mem::take(&mut spec.exact);
        exact.sort_by_key(|(g, _)| *g);
        exact.dedup_by_key(|(g, _)| *g);
        let profile = self.profiles.iter().position(|p| p.weights == spec.weights);
        Service {
            spec,
            params,
            penalty,
            min_penalty,
            usable,
            deployed,
            exact,
            profile,
        }
    }

    /// Builds the scan orders of up to [`MAX_PROFILES`] distinct cost weights (the most
    /// used first) that do not have one yet. [`Self::full`] calls it; a caller that solves
    /// through [`Self::standalone`] may call it first to make the rare bounded scans
    /// cheaper (results are the same either way).
    pub fn prepare_profiles<'w>(&mut self, weights: impl IntoIterator<Item = &'w CostWeights>) {
        let mut counts: Vec<(CostWeights, usize)> = Vec::new();
        for w in weights {
            match counts.iter_mut().find(|(known, _)| known == w) {
                Some((_, count)) => *count += 1,
                None => counts.push((*w, 1)),
            }
        }
        counts.sort_by_key(|&(_, count)| std::cmp::Reverse(count));
        for (w, _) in counts {
            if self.profiles.len() >= MAX_PROFILES {
                break;
            }
            // Negative or non-finite RTT weights break the ordering argument: no table.
            if !(w.rtt >= 0.0 && w.rtt.is_finite()) || self.profiles.iter().any(|p| p.weights == w)
            {
                continue;
            }
            let profile = self.profile(w);
            self.profiles.push(profile);
        }
    }

    fn profile(&self, weights: CostWeights) -> Profile {
        let n = self.latency.len();
        let penalty: Vec<f64> = (0..n)
            .map(|p| pop_penalty(&weights, &self.signals.get(p).copied().unwrap_or_default()))
            .collect();
        let mut order = Vec::with_capacity(n * n);
        for q in 0..n {
            let start = order.len();
            order.extend(
                self.by_key[q * n..(q + 1) * n]
                    .iter()
                    .map(|&(key, p)| (weights.rtt * key + penalty[p as usize], p)),
            );
            order[start..].sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        }
        Profile { weights, order }
    }

    /// Solves every service. When the planner already holds plans for the same number of
    /// services, each serves as the previous assignment of the service at its index.
    pub fn full(&mut self, services: Vec<ServiceSpec>) {
        self.prepare_profiles(services.iter().map(|s| &s.weights));
        self.services = services
            .into_iter()
            .map(|spec| self.service(spec))
            .collect();
        let previous = if self.plans.len() == self.services.len() {
            std::mem::take(&mut self.plans)
        } else {
            Vec::new()
        };
        let (class, count) = self.memo_classes();
        let mut memos = vec![vec![(UNSET, 0.0); self.groups()]; count];
        self.plans = (0..self.services.len())
            .map(|s| {
                let memo = class[s].map(|c| memos[c].as_mut_slice());
                self.solve_service(s, previous.get(s), memo)
            })
            .collect();
        self.users.iter_mut().for_each(Vec::clear);
        for (s, plan) in self.plans.iter().enumerate() {
            for (i, list) in plan.assignment.groups.iter().enumerate() {
                for &(p, _) in list {
                    self.users[p as usize].push((s as u32, i as u32));
                }
            }
        }
    }

    /// Services whose cheapest serving PoP per group is the same — same cost weights, same
    /// deployed PoPs — share one memo of it during [`Self::full`] (a common case: services
    /// deployed everywhere under a few weight profiles). Returns each service's memo, if
    /// any, and the number of memos: only for sets of two services or more, the largest
    /// sets first, within [`MAX_MEMO_BYTES`].
    fn memo_classes(&self) -> (Vec<Option<usize>>, usize) {
        let mut keyed: Vec<(usize, &CostWeights, &[u32])> = self
            .services
            .iter()
            .enumerate()
            .map(|(s, svc)| (s, &svc.spec.weights, svc.deployed.as_slice()))
            .collect();
        let bits = |w: &CostWeights| [w.rtt.to_bits(), w.loss.to_bits(), w.load.to_bits()];
        keyed.sort_by(|a, b| {
            bits(a.1)
                .cmp(&bits(b.1))
                .then(a.2.cmp(b.2))
                .then(a.0.cmp(&b.0))
        });
        let mut sets: Vec<Vec<usize>> = Vec::new();
        for (i, &(s, w, deployed)) in keyed.iter().enumerate() {
            let same = i > 0 && bits(keyed[i - 1].1) == bits(w) && keyed[i - 1].2 == deployed;
            match sets.last_mut() {
                Some(set) if same => set.push(s),
                _ => sets.push(vec![s]),
            }
        }
        sets.retain(|set| set.len() > 1);
        sets.sort_by_key(|set| (std::cmp::Reverse(set.len()), set[0]));
        let per_memo = 16 * self.groups().max(1);
        sets.truncate(MAX_MEMO_BYTES / per_memo);
        let mut class = vec![None; self.services.len()];
        for (c, set) in sets.iter().enumerate() {
            for &s in set {
                class[s] = Some(c);
            }
        }
        (class, sets.len())
    }

    fn serving(&self, svc: &Service, p: usize) -> bool {
        self.up[p] && svc.spec.deployed.get(p).copied().unwrap_or(false)
    }

    fn cost(&self, svc: &Service, g: usize, p: usize) -> f64 {
        match svc.exact(g) {
            Some(row) => clean_cost(row.get(p).copied().unwrap_or(f64::INFINITY)),
            None => modelled_cost(&svc.spec.weights, self.rtt(g, p), svc.penalty[p]),
        }
    }

    /// Every serving PoP for group `g`, by (cost, PoP).
    fn all_serving(&self, svc: &Service, g: usize) -> Vec<(u32, f64)> {
        sorted(
            svc.deployed
                .iter()
                .map(|&p| p as usize)
                .filter(|&p| self.up[p])
                .map(|p| (p as u32, self.cost(svc, g, p)))
                .collect(),
        )
    }

    /// The `candidates` cheapest serving PoPs of group `g`.
    fn candidates(&self, svc: &Service, g: usize) -> Vec<(u32, f64)> {
        self.cheapest(svc, g, svc.params.candidates.max(1))
    }

    /// The cheapest serving PoP of group `g` with its cost: the first entry of
    /// [`Self::cheapest`], found without building a list. The near list is walked in RTT
    /// order until no later PoP can beat the best so far (RTT only grows along it, and no
    /// penalty is below the service's smallest).
    fn best(&self, svc: &Service, g: usize) -> Option<(u32, f64)> {
        self.best_except(svc, g, NONE)
    }

    /// [`Self::best`] among the serving PoPs other than `skip`.
    fn best_except(&self, svc: &Service, g: usize, skip: u32) -> Option<(u32, f64)> {
        match self.near_best_except(svc, g, skip) {
            Some(Ok(best)) => Some(best),
            // The near list did not settle it: straight to the scan.
            Some(Err(_)) => self.cheapest_with_room(svc, g, skip, &|_| true, false),
            None => self.cheapest_except(svc, g, skip),
        }
    }

    /// Group `g`'s near slots and the lower bound of its cost at any PoP outside them, for
    /// `svc`; `None` when the list cannot be used (unknown location, explicit cost row,
    /// negative RTT weight).
    fn near_view(&self, svc: &Service, g: usize) -> Option<(&[Slot], f64)> {
        let w = &svc.spec.weights;
        let (head, near) = self.block(g);
        if head.q == NONE || w.rtt < 0.0 || svc.exact(g).is_some() {
            return None;
        }
        let outside = head.outside;
        let bound = if outside == f64::INFINITY {
            f64::INFINITY
        } else {
            w.rtt * outside + svc.min_penalty
        };
        Some((near, bound))
    }

    /// What `g`'s near list alone says of [`Self::best_except`]: `Ok` with the answer when
    /// it is certain (cheaper than any PoP outside the list could be), `Err` with a lower
    /// bound of the answer's cost when only a scan could tell, `None` when the list cannot
    /// be used (unknown location, explicit cost row, negative RTT weight, one PoP).
    ///
    /// The list is walked in RTT order until no later PoP can beat the best so far (RTT only
    /// grows along it, and no penalty is below the service's smallest), so the best found
    /// is the cheapest listed PoP, and `w.rtt · outside + min_penalty` bounds the others.
    fn near_best_except(
        &self,
        svc: &Service,
        g: usize,
        skip: u32,
    ) -> Option<Result<(u32, f64), f64>> {
        self.near_best(svc, g, |p| p != skip && self.serving(svc, p as usize))
    }

    /// [`Self::near_best_except`] among the PoPs that `fit` (which must imply serving).
    fn near_best(
        &self,
        svc: &Service,
        g: usize,
        fit: impl Fn(u32) -> bool,
    ) -> Option<Result<(u32, f64), f64>> {
        let w = &svc.spec.weights;
        if svc.deployed.len() <= 1 {
            return None;
        }
        let (near, bound) = self.near_view(svc, g)?;
        let mut best: Option<(u32, f64)> = None;
        for &Slot { pop: p, rtt } in near {
            if p == NONE {
                break;
            }
            if let Some((_, c)) = best
                && w.rtt * rtt + svc.min_penalty > c
            {
                break;
            }
            if !fit(p) {
                continue;
            }
            let c = modelled_cost(w, rtt, svc.penalty[p as usize]);
            let better = best.is_none_or(|(bp, bc)| c.total_cmp(&bc).then(p.cmp(&bp)).is_lt());
            if better {
                best = Some((p, c));
            }
        }
        Some(match best {
            Some((p, c)) if c < bound => Ok((p, c)),
            Some((_, c)) => Err(c.min(bound)),
            None => Err(bound),
        })
    }

    /// A lower bound of group `g`'s cost at any serving PoP other than `skip` with `room`,
    /// from its near list: the cheapest such listed PoP, or the bound on every PoP outside
    /// the list if that is lower (`None` when the list cannot be used).
    fn room_bound(
        &self,
        svc: &Service,
        g: usize,
        skip: u32,
        room: &dyn Fn(u32) -> bool,
    ) -> Option<f64> {
        let w = &svc.spec.weights;
        let (near, bound) = self.near_view(svc, g)?;
        let mut best = bound;
        for &Slot { pop: p, rtt } in near {
            if p == NONE || w.rtt * rtt + svc.min_penalty >= best {
                break;
            }
            if p != skip && self.serving(svc, p as usize) && room(p) {
                best = best.min(modelled_cost(w, rtt, svc.penalty[p as usize]));
            }
        }
        Some(best)
    }

    /// The cheapest serving PoP of group `g` other than `skip` with `room`, by (cost, PoP):
    /// the near list when it settles it (looked at only with `walk`), else a bounded scan as
    /// in [`Self::cheapest`].
    fn cheapest_with_room(
        &self,
        svc: &Service,
        g: usize,
        skip: u32,
        room: &dyn Fn(u32) -> bool,
        walk: bool,
    ) -> Option<(u32, f64)> {
        let w = &svc.spec.weights;
        let fits = |p: u32| p != skip && self.serving(svc, p as usize) && room(p);
        let head = self.head(g);
        if head.q == NONE || w.rtt < 0.0 || svc.exact(g).is_some() {
            return self.all_serving(svc, g).into_iter().find(|&(p, _)| fits(p));
        }
        if walk && let Some(Ok(found)) = self.near_best(svc, g, fits) {
            return Some(found);
        }
        let mut top = Vec::with_capacity(2);
        self.scan(svc, &head, 1, fits, &mut top);
        top.first().copied()
    }

    /// The cheapest serving PoP other than `skip` from a list (one or two entries long).
    fn cheapest_except(&self, svc: &Service, g: usize, skip: u32) -> Option<(u32, f64)> {
        let k = if skip == NONE { 1 } else { 2 };
        self.cheapest(svc, g, k)
            .into_iter()
            .find(|&(p, _)| p != skip)
    }

    /// The `k` cheapest serving PoPs of group `g`, by (cost, PoP): exactly the first `k`
    /// entries of [`Self::all_serving`].
    fn cheapest(&self, svc: &Service, g: usize, k: usize) -> Vec<(u32, f64)> {
        let w = &svc.spec.weights;
        let (head, near) = self.block(g);
        // With at most `k` deployed PoPs, pricing them all is cheaper than any list.
        if head.q == NONE || w.rtt < 0.0 || svc.deployed.len() <= k || svc.exact(g).is_some() {
            let mut all = self.all_serving(svc, g);
            all.truncate(k);
            return all;
        }
        let mut top: Vec<(u32, f64)> = Vec::with_capacity(k + 1);
        for &Slot { pop: p, rtt } in near {
            if p == NONE {
                break;
            }
            if self.serving(svc, p as usize) {
                let c = modelled_cost(w, rtt, svc.penalty[p as usize]);
                _ = insert_top(&mut top, k, (p, c), |e| (e.1, e.0));
            }
        }
        let outside = head.outside;
        let bound = if outside == f64::INFINITY {
            f64::INFINITY
        } else {
            w.rtt * outside + svc.min_penalty
        };
        if top.len() == k && top[k - 1].1 < bound {
            return top;
        }
        top.clear();
        self.scan(svc, &head, k, |p| self.serving(svc, p as usize), &mut top);
        top
    }

    /// Bounded scan of the nearest PoP's list for the `k` cheapest PoPs that `fit` (which
    /// must imply serving), by (cost, PoP), into `top` (empty): it stops once no unseen PoP
    /// can be cheaper than the k-th found. For a group with a known location and no
    /// explicit cost row (the model prices every PoP) and a non-negative RTT weight.
    fn scan(
        &self,
        svc: &Service,
        head: &Head,
        k: usize,
        fit: impl Fn(u32) -> bool,
        top: &mut Vec<(u32, f64)>,
    ) {
        let w = &svc.spec.weights;
        let n = self.latency.len();
        let slack = head.q_ms - self.latency.distance().base_ms + MARGIN_MS;
        let price = |p: usize| modelled_cost(w, self.rtt_from(head, p), svc.penalty[p]);
        let q = head.q as usize;
        if let Some(profile) = svc.profile {
            // In the profile's order the lower bounds `w·(key − slack) + penalty` ascend,
            // so the scan stops at the first PoP whose bound exceeds the k-th cost.
            let shift = w.rtt * slack;
            for &(value, p) in &self.profiles[profile].order[q * n..(q + 1) * n] {
                let lower = value - shift;
                // Absorb the rounding of computing the bound in another order.
                let lower = lower - 1e-9 * lower.abs().max(1.0);
                if top.len() == k && lower > top[k - 1].1 {
                    break;
                }
                if fit(p) {
                    let c = price(p as usize);
                    _ = insert_top(top, k, (p, c), |e| (e.1, e.0));
                }
            }
            return;
        }
        for &(key, p) in &self.by_key[q * n..(q + 1) * n] {
            let p_ = p as usize;
            let lower = w.rtt * (key - slack);
            let full = top.len() == k;
            // Strict comparisons: a PoP tying the k-th on cost may still win on index.
            if full && lower + svc.min_penalty > top[k - 1].1 {
                break;
            }
            if !fit(p) || (full && lower + svc.penalty[p_] > top[k - 1].1) {
                continue;
            }
            let c = price(p_);
            _ = insert_top(top, k, (p, c), |e| (e.1, e.0));
        }
    }

    /// Candidates of `g` plus the serving PoPs of its previous list.
    fn candidates_with(&self, svc: &Service, g: usize, previous: &[(u32, f64)]) -> Vec<(u32, f64)> {
        let mut list = self.candidates(svc, g);
        let before = list.len();
        for &(p, _) in previous {
            let p_ = p as usize;
            if p_ < self.up.len() && self.serving(svc, p_) && !list.iter().any(|&(q, _)| q == p) {
                list.push((p, self.cost(svc, g, p_)));
            }
        }
        if list.len() != before {
            list.sort_unstable_by(by_cost);
        }
        list
    }

    /// Solves service `s` from scratch or against its `previous` plan; `memo` is the
    /// cheapest-PoP memo it shares with services of the same class (see
    /// [`Self::memo_classes`]).
    fn solve_service(&self, s: usize, previous: Option<&Plan>, memo: Option<&mut [Best]>) -> Plan {
        let svc = &self.services[s];
        let groups: Vec<u32> = svc.spec.demand.iter().map(|&(g, _)| g).collect();
        let demand: Vec<f64> = svc.spec.demand.iter().map(|&(_, d)| d).collect();
        // Index of each group in the previous plan (both lists ascending).
        let mut prev_at: Vec<Option<usize>> = vec![None; groups.len()];
        if let Some(prev) = previous {
            let mut j = 0;
            for (i, &g) in groups.iter().enumerate() {
                while j < prev.groups.len() && prev.groups[j] < g {
                    j += 1;
                }
                if prev.groups.get(j) == Some(&g) {
                    prev_at[i] = Some(j);
                }
            }
        }
        let prev_of = |i: usize| {
            prev_at[i].and_then(|j| previous.map(|prev| prev.assignment.groups[j].as_slice()))
        };
        let (assignment, _) = self.solve_lazy(svc, Some(&groups), &demand, &prev_of, None, memo);
        let assignment = self.no_pop_case(svc, assignment, &demand);
        Plan {
            groups,
            demand,
            assignment,
        }
    }

    /// Runs the core solver for `svc` over `demand`, pricing lazily from the shared lists:
    /// solve-local group `i` is `groups[i]` (or group `i` when `None`), `previous(i)` its
    /// last list; `base` is load from groups outside the call.
    fn solve_lazy<'p>(
        &self,
        svc: &Service,
        groups: Option<&[u32]>,
        demand: &[f64],
        previous: &dyn Fn(usize) -> Option<&'p [(u32, f64)]>,
        base: Option<&[f64]>,
        memo: Option<&mut [Best]>,
    ) -> (Assignment, Vec<u32>) {
        let mut source = Lazy {
            planner: self,
            svc,
            groups,
            previous,
            memo,
        };
        let hysteresis = svc.params.hysteresis;
        solve(demand, &mut source, &svc.usable, hysteresis, previous, base)
    }

    /// With no serving PoP the core leaves every list empty; report all demand unserved.
    fn no_pop_case(&self, svc: &Service, mut a: Assignment, demand: &[f64]) -> Assignment {
        if !(0..self.latency.len()).any(|p| self.serving(svc, p)) {
            a.unserved_demand = demand.iter().sum();
            a.overloaded.clear();
        }
        a
    }

    /// The weighted PoP list of `group` for `service`: its plan entry if it has demand,
    /// else the cheapest serving PoP with room (weight 1); empty if no PoP serves.
    pub fn route(&self, service: usize, group: u32) -> Vec<(u32, f64)> {
        let plan = &self.plans[service];
        if let Ok(i) = plan.groups.binary_search(&group) {
            return plan.assignment.groups[i].clone();
        }
        let svc = &self.services[service];
        let load = &plan.assignment.load;
        let room = |&&(p, _): &&(u32, f64)| has_room(svc.usable[p as usize], load[p as usize]);
        let g = group as usize;
        let candidates = self.candidates(svc, g);
        if let Some(&(p, _)) = candidates.iter().find(room) {
            return vec![(p, 1.0)];
        }
        let all = self.all_serving(svc, g);
        all.iter()
            .find(room)
            .or(all.first())
            .map(|&(p, _)| vec![(p, 1.0)])
            .unwrap_or_default()
    }

    /// Prepares `spec` for a one-off solve over every group against the shared lists, without
    /// storing a plan; see [`Standalone`].
    pub fn standalone(&self, spec: ServiceSpec) -> Standalone<'_> {
        Standalone {
            planner: self,
            svc: self.service(spec),
        }
    }

    /// Marks `pop` down and moves the demand on it, re-solving only the groups with weight
    /// on it (and those on PoPs their move overloads). Returns the (service, group) pairs
    /// whose weights changed, ascending. Groups without demand follow on their next
    /// [`Self::route`] lookup.
    pub fn pop_down(&mut self, pop: u32) -> Vec<(u32, u32)> {
        let p = pop as usize;
        if p >= self.up.len() || !self.up[p] {
            return Vec::new();
        }
        self.up[p] = false;
        let mut users = std::mem::take(&mut self.users[p]);
        users.sort_unstable();
        users.dedup();
        let mut changed = Vec::new();
        let mut at = 0;
        while at < users.len() {
            let s = users[at].0;
            let end = at + users[at..].partition_point(|&(t, _)| t == s);
            let plan = &self.plans[s as usize];
            let affected: Vec<usize> = users[at..end]
                .iter()
                .map(|&(_, i)| i as usize)
                .filter(|&i| plan.assignment.groups[i].iter().any(|&(q, _)| q == pop))
                .collect();
            at = end;
            if !affected.is_empty() {
                self.resolve_subset(s as usize, affected, &mut changed);
            }
        }
        changed
    }

    /// Re-solves the groups at `subset` (plan indices, ascending) of service `s` against
    /// the loads of the others, widening the subset to every group on a PoP that ends up
    /// overloaded, so the result is what a full re-solve with the previous plan gives.
    fn resolve_subset(&mut self, s: usize, mut subset: Vec<usize>, changed: &mut Vec<(u32, u32)>) {
        let svc = &self.services[s];
        let plan = &self.plans[s];
        let result = loop {
            let mut base = plan.assignment.load.clone();
            for &i in &subset {
                for &(p, w) in &plan.assignment.groups[i] {
                    base[p as usize] -= w * plan.demand[i];
                }
            }
            let demand: Vec<f64> = subset.iter().map(|&i| plan.demand[i]).collect();
            let groups: Vec<u32> = subset.iter().map(|&i| plan.groups[i]).collect();
            let prev_of = |j: usize| Some(plan.assignment.groups[subset[j]].as_slice());
            let (result, shed_from) =
                self.solve_lazy(svc, Some(&groups), &demand, &prev_of, Some(&base), None);
            // Groups outside the subset that sit on a PoP the subset overloaded must be
            // movable too, as they are in a full re-solve.
            let mut more: Vec<usize> = Vec::new();
            for &o in &shed_from {
                for (i, list) in plan.assignment.groups.iter().enumerate() {
                    if list.iter().any(|&(q, _)| q == o) && subset.binary_search(&i).is_err() {
                        more.push(i);
                    }
                }
            }
            if more.is_empty() {
                break result;
            }
            subset.extend(more);
            subset.sort_unstable();
            subset.dedup();
        };
        let any_serving = (0..self.latency.len()).any(|p| self.serving(svc, p));
        let plan = &mut self.plans[s];
        for (j, &i) in subset.iter().enumerate() {
            let list = &result.groups[j];
            if *list != plan.assignment.groups[i] {
                changed.push((s as u32, plan.groups[i]));
                for &(p, _) in list {
                    self.users[p as usize].push((s as u32, i as u32));
                }
                plan.assignment.groups[i] = list.clone();
            }
        }
        plan.assignment.load = result.load;
        plan.assignment.overloaded = result.overloaded;
        plan.assignment.unserved_demand = result.unserved_demand;
        if !any_serving {
            plan.assignment.overloaded.clear();
            plan.assignment.unserved_demand = plan.demand.iter().sum();
        }
    }

    /// Marks `pop` up again and re-solves every service deployed there with its current
    /// plan as the previous one (hysteresis decides who moves back).
    pub fn pop_up(&mut self, pop: u32) {
        let p = pop as usize;
        if p >= self.up.len() || self.up[p] {
            return;
        }
        self.up[p] = true;
        for s in 0..self.services.len() {
            if self.services[s]
                .spec
                .deployed
                .get(p)
                .copied()
                .unwrap_or(false)
            {
                let plan = self.solve_service(s, Some(&self.plans[s]), None);
                for (i, list) in plan.assignment.groups.iter().enumerate() {
                    if list.iter().any(|&(q, _)| q == pop) {
                        self.users[p].push((s as u32, i as u32));
                    }
                }
                self.plans[s] = plan;
            }
        }
    }
}

/// One service solved once over every group with the planner's shared lists: what the
/// runtime's snapshot solve (`steering::solve_full`) does for each arm.
///
/// Unlike [`Planner::full`] it takes and returns a dense [`Assignment`] (every group, with
/// or without demand): the snapshot answers every group, and the hysteresis of
/// [`super::assign`] holds groups without demand on their previous PoP too, which
/// [`Planner::route`] does not model. For the same inputs and previous assignment it returns
/// exactly what `assign` returns over cost rows of the same model, while pricing each group
/// only at the PoPs of its near list (or of a bounded scan), not at every PoP.
#[derive(Debug)]
pub struct Standalone<'p> {
    planner: &'p Planner,
    svc: Service,
}

impl Standalone<'_> {
    /// Assigns every group's demand with `previous` (the last assignment of the same groups
    /// and PoPs, ignored if its shape differs) for hysteresis, as [`super::assign`] does.
    pub fn assign(&self, previous: Option<&Assignment>) -> Assignment {
        let (planner, svc) = (self.planner, &self.svc);
        let count = planner.groups();
        let previous =
            previous.filter(|a| a.groups.len() == count && a.load.len() == planner.latency.len());
        let mut demand = vec![0.0; count];
        for &(g, d) in &svc.spec.demand {
            if let Some(slot) = demand.get_mut(g as usize) {
                *slot = d;
            }
        }
        let prev_of = |g: usize| previous.map(|a| a.groups[g].as_slice());
        let (assignment, _) = planner.solve_lazy(svc, None, &demand, &prev_of, None, None);
        planner.no_pop_case(svc, assignment, &demand)
    }

    /// The `k` cheapest serving PoPs of `group`, by (cost, PoP), with their costs.
    pub fn cheapest(&self, group: u32, k: usize) -> Vec<(u32, f64)> {
        self.planner.cheapest(&self.svc, group as usize, k)
    }

    /// The number of serving PoPs.
    pub fn serving(&self) -> usize {
        let up = &self.planner.up;
        self.svc
            .deployed
            .iter()
            .filter(|&&p| up[p as usize])
            .count()
    }
}

/// The planner's [`Source`]: solve-local group `i` is `groups[i]` (or group `i` itself
/// when `groups` is `None`), priced from the shared lists on demand.
struct Lazy<'a, 'p> {
    planner: &'a Planner,
    svc: &'a Service,
    groups: Option<&'a [u32]>,
    previous: &'a dyn Fn(usize) -> Option<&'p [(u32, f64)]>,
    /// Cheapest serving PoP per group, shared with the services of the same weights and
    /// deployment (see [`Planner::memo_classes`]).
    memo: Option<&'a mut [Best]>,
}

impl Lazy<'_, '_> {
    fn group(&self, i: usize) -> usize {
        self.groups.map_or(i, |groups| groups[i] as usize)
    }
}

impl Source for Lazy<'_, '_> {
    fn prefetch(&self, i: usize) {
        let known = self.groups.is_none_or(|groups| i < groups.len());
        if !known {
            return;
        }
        let g = self.group(i);
        self.planner.prefetch(g);
        #[cfg(target_arch = "x86_64")]
        if let Some(entry) = self.memo.as_deref().and_then(|memo| memo.get(g)) {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            // SAFETY: prefetching is a hint that never faults; the entry is in bounds.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(entry).cast::<i8>()) };
        }
    }

    fn serving(&self, p: u32) -> bool {
        (p as usize) < self.planner.up.len() && self.planner.serving(self.svc, p as usize)
    }

    fn best(&mut self, i: usize) -> Option<(u32, f64)> {
        let g = self.group(i);
        // An explicit cost row is the service's own: not shared.
        let shared = self.svc.exact.is_empty() || self.svc.exact(g).is_none();
        match self.memo.as_deref_mut().and_then(|memo| memo.get_mut(g)) {
            Some(slot) if shared => {
                if slot.0 == UNSET {
                    *slot = self.planner.best(self.svc, g).unwrap_or((NO_POP, 0.0));
                }
                (slot.0 != NO_POP).then_some(*slot)
            }
            _ => self.planner.best(self.svc, g),
        }
    }

    fn runner_up(&mut self, i: usize, from: u32) -> Option<(u32, f64)> {
        // With two candidates or more, the cheapest PoP other than `from` is among them.
        if self.svc.params.candidates < 2 {
            return None;
        }
        self.planner.best_except(self.svc, self.group(i), from)
    }

    fn room_bound(&mut self, i: usize, from: u32, room: &dyn Fn(u32) -> bool) -> Option<f64> {
        self.planner.room_bound(self.svc, self.group(i), from, room)
    }

    fn runner_up_bound(&mut self, i: usize, from: u32) -> Option<Result<(u32, f64), f64>> {
        let g = self.group(i);
        match self.planner.near_best_except(self.svc, g, from)? {
            Ok(found) if self.svc.params.candidates >= 2 => Some(Ok(found)),
            Ok((_, c)) => Some(Err(c)),
            Err(bound) => Some(Err(bound)),
        }
    }

    fn cheapest_with_room(
        &mut self,
        i: usize,
        from: u32,
        room: &dyn Fn(u32) -> bool,
    ) -> Option<Option<(u32, f64)>> {
        let g = self.group(i);
        Some(
            self.planner
                .cheapest_with_room(self.svc, g, from, room, true),
        )
    }

    fn direct_target(
        &mut self,
        i: usize,
        from: u32,
        room: &dyn Fn(u32) -> bool,
    ) -> Option<Option<(u32, f64)>> {
        // The list holds the candidates and the previous PoPs, and answers with its first
        // entry with room: the cheapest PoP with room overall, if the candidates hold it or
        // no listed previous PoP has room (widening then ends there too). Without another
        // previous PoP with room, that is all there is to know.
        let g = self.group(i);
        let found = self
            .planner
            .cheapest_with_room(self.svc, g, from, room, true);
        let previous = (self.previous)(i).unwrap_or(&[]);
        let other = previous.iter().any(|&(p, _)| {
            p != from && found.is_none_or(|(q, _)| q != p) && self.serving(p) && room(p)
        });
        (!other).then_some(found)
    }

    fn cost(&mut self, i: usize, p: u32) -> f64 {
        self.planner.cost(self.svc, self.group(i), p as usize)
    }

    fn candidates(&mut self, i: usize) -> Vec<(u32, f64)> {
        let previous = (self.previous)(i).unwrap_or(&[]);
        self.planner
            .candidates_with(self.svc, self.group(i), previous)
    }

    fn widen(&mut self, i: usize, n: usize) -> Vec<(u32, f64)> {
        self.planner.cheapest(self.svc, self.group(i), n)
    }
}

/// Sorts, merges duplicates and drops non-positive demand.
fn merged(mut demand: Vec<(u32, f64)>) -> Vec<(u32, f64)> {
    if !demand.is_sorted_by_key(|&(g, _)| g) {
        // Stable, so duplicates add up in the order given: sort (group, position) keys.
        let mut keys: Vec<u64> = (0..demand.len() as u64)
            .map(|i| (u64::from(demand[i as usize].0) << 32) | i)
            .collect();
        keys.sort_unstable();
        demand = keys
            .iter()
            .map(|&k| demand[(k & 0xffff_ffff) as usize])
            .collect();
    }
    let mut out: Vec<(u32, f64)> = Vec::with_capacity(demand.len());
    for (g, d) in demand {
        let d = clean_demand(d);
        match out.last_mut() {
            Some((last, total)) if *last == g => *total += d,
            _ => out.push((g, d)),
        }
    }
    out.retain(|&(_, d)| d > 0.0);
    out
}

/// Inserts `item` into `top` (ascending by `key`, at most `k` entries); returns what fell
/// out, if anything.
fn insert_top<T: Copy>(
    top: &mut Vec<T>,
    k: usize,
    item: T,
    key: impl Fn(&T) -> (f64, u32),
) -> Option<T> {
    let (c, p) = key(&item);
    let at = top.partition_point(|e| {
        let (ec, ep) = key(e);
        ec.total_cmp(&c).then(ep.cmp(&p)).is_lt()
    });
    if at >= k {
        return Some(item);
    }
    top.insert(at, item);
    if top.len() > k { top.pop() } else { None }
}

#[cfg(test)]
mod tests;
