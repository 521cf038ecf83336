//! Minimum-move assignment: keeps replicas where the previous decision ran them wherever
//! an equally good decision allows it.
//!
//! The fill in [`super::solve`] gives a fresh target `t`. The decisions as good as `t` are
//! those that
//! - hold, in every *bucket*, as many replicas as `t` does. A bucket is the sites of one
//!   fallback group with the same value for every spread constraint, and for demand-driven
//!   division also in the same region (they serve the same demand). Equal bucket totals
//!   keep the fallback-group order, the set of spread values in use and the replicas per
//!   demand region exactly as in `t`;
//! - keep each site inside `lo..=hi` ([`Fill::lo`]): the per-site minimum and the site's
//!   room, or, for weighted division, the two roundings of the site's exact share;
//! - for aggregated division, use no more sites per bucket than `t` (fewest sites);
//! - cover at least as much demand within the latency bound as `t`, up to the objective.
//!
//! Among them the step picks one with the fewest moves `Σ |x − p|` against the previous
//! counts `p`, and among those the one nearest to `t`. Per bucket this is exact and greedy:
//! let `c` be `p` clamped into `lo..=hi`. Every feasible `x` has
//! `|x_i − p_i| = |x_i − c_i| + |c_i − p_i|` (`c_i` is the nearest point of the range to
//! `p_i`), so `Σ |x − p| ≥ Σ |c − p| + |T − Σ c|` for the bucket total `T`. Starting from `c`
//! and adding (or removing) one replica at a time, each at the site furthest below (above)
//! its target, reaches that bound: every step costs exactly one move and, as `Σ t = T` and
//! `lo ≤ t ≤ hi`, a site below (above) its target always has room to take (give) one. When
//! the previous decision is itself as good as `t`, `c = p` and `Σ c = T`: nothing moves,
//! which makes re-solving unchanged inputs a fixed point. Without a previous decision the
//! steps lead from `lo` to exactly `t`.
//!
//! Aggregated division first picks the bucket's sites: those with minimums, then those the
//! previous decision used (most replicas first), then the target's; and settles on them or
//! on the target's sites, whichever moves less. Exact when the previous decision's sites
//! can still hold the total, never worse than the target otherwise. The latency check repairs a
//! shortfall by pinning one replica at a time to a target site that covers the most
//! uncovered demand; pinning all of them restores the target's coverage, so it ends.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use isobar_proto::v1::Division;

use super::SolveInput;
use super::objectives::spread_value;
use super::solve::{Demand, Fill, Site, objective_fraction};

/// Replaces the target `t` by the equally good assignment with the fewest moves against
/// the previous decision. Without a previous decision `t` is returned unchanged.
pub(super) fn keep_previous(
    input: &SolveInput<'_>,
    sites: &[Site<'_>],
    t: Fill,
    demand: &Demand,
    division: Division,
) -> Fill {
    if input.previous.is_none() || sites.iter().all(|s| s.prev == 0) {
        return t;
    }
    let buckets = buckets(input, sites, &t.replicas, division);
    let prev: Vec<u32> = sites.iter().map(|s| s.prev).collect();
    let mut lo: Vec<u32> = (0..sites.len())
        .map(|i| t.lo[i].min(t.replicas[i]))
        .collect();
    let hi: Vec<u32> = (0..sites.len())
        .map(|i| t.hi[i].max(t.replicas[i]))
        .collect();
    let aggregated = division == Division::Aggregated;
    let mut reach = Reach::new(input, sites, demand);
    let required = reach.as_mut().map(|r| r.target.min(r.covered(&t.replicas)));
    let mut x = settle_all(&buckets, aggregated, &lo, &hi, &prev, &t.replicas);
    if let (Some(reach), Some(required)) = (reach.as_mut(), required) {
        // Pin target sites until the coverage is back; each pin adds coverage, and with all
        // of the target's sites pinned it is at least the target's.
        while reach.covered(&x) + 1e-12 < required {
            let pick = (0..sites.len())
                .filter(|&i| t.replicas[i] > 0 && x[i] == 0)
                .map(|i| (i, reach.gain(&x, i)))
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
            let Some((i, _)) = pick else {
                break;
            };
            lo[i] = lo[i].max(1);
            x = settle_all(&buckets, aggregated, &lo, &hi, &prev, &t.replicas);
        }
    }
    finish(sites, &buckets, t, x)
}

/// What makes sites interchangeable: fallback group, region (demand-driven division only)
/// and the value of every spread constraint.
type BucketKey<'a> = (usize, Option<&'a str>, Vec<Option<&'a str>>);

/// Sites grouped by what makes them interchangeable, in site order. Only sites the target
/// or the previous decision uses: any other stays empty (it starts at `lo = 0` and lies
/// below no target, so no step ever picks it).
fn buckets(
    input: &SolveInput<'_>,
    sites: &[Site<'_>],
    t: &[u32],
    division: Division,
) -> Vec<Vec<usize>> {
    let by_region = division == Division::Demand;
    let mut map: BTreeMap<BucketKey<'_>, Vec<usize>> = BTreeMap::new();
    for (i, site) in sites.iter().enumerate() {
        if t[i] == 0 && site.prev == 0 {
            continue;
        }
        let region = by_region.then_some(site.pop.region.as_str());
        let values = input
            .policy
            .spread
            .iter()
            .map(|s| spread_value(s, site.pop))
            .collect();
        map.entry((site.group, region, values)).or_default().push(i);
    }
    map.into_values().collect()
}

/// The minimum-move assignment of every bucket; falls back to the target for a bucket it
/// cannot settle (it always can, see the module docs).
fn settle_all(
    buckets: &[Vec<usize>],
    aggregated: bool,
    lo: &[u32],
    hi: &[u32],
    prev: &[u32],
    t: &[u32],
) -> Vec<u32> {
    let mut x = t.to_vec();
    for bucket in buckets {
        let total: u32 = bucket.iter().map(|&i| t[i]).sum();
        let pick = |f: &dyn Fn(usize) -> u32| bucket.iter().map(|&i| f(i)).collect::<Vec<_>>();
        let (lo_here, hi_here) = (pick(&|i| lo[i]), pick(&|i| hi[i]));
        let (prev_here, t_here) = (pick(&|i| prev[i]), pick(&|i| t[i]));
        let settled = if aggregated {
            // No more sites than the target uses: the sites the previous decision used
            // when they can hold the total, else the target's, whichever moves less.
            let on = |keep: &dyn Fn(usize) -> bool| {
                let hi: Vec<u32> = (0..bucket.len())
                    .map(|k| if keep(k) { hi_here[k] } else { 0 })
                    .collect();
                settle(total, &lo_here, &hi, &prev_here, &t_here)
            };
            let chosen = chosen_sites(total, &lo_here, &hi_here, &prev_here, &t_here);
            let kept = chosen.and_then(|c| on(&|k| c.contains(&k)));
            let target = on(&|k| t_here[k] > 0);
            let cost = |x: &Option<Vec<u32>>| x.as_ref().map(|x| distance(x, &prev_here));
            match (cost(&kept), cost(&target)) {
                (Some(a), Some(b)) if a <= b => kept,
                (Some(_), None) => kept,
                _ => target,
            }
        } else {
            settle(total, &lo_here, &hi_here, &prev_here, &t_here)
        };
        if let Some(got) = settled {
            for (k, &i) in bucket.iter().enumerate() {
                x[i] = got[k];
            }
        }
    }
    x
}

/// `Σ |a − b|`.
fn distance(a: &[u32], b: &[u32]) -> u64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum()
}

/// Aggregated division's pick of as many sites as the target uses: those with a minimum,
/// then the previous decision's (most replicas first), then the target's (most first).
/// `None` when they cannot hold the total.
fn chosen_sites(
    total: u32,
    lo: &[u32],
    hi: &[u32],
    prev: &[u32],
    t: &[u32],
) -> Option<BTreeSet<usize>> {
    let limit = t.iter().filter(|&&n| n > 0).count();
    let mut order: Vec<usize> = (0..t.len()).filter(|&k| hi[k] > 0).collect();
    order.sort_by_key(|&k| (Reverse(lo[k] > 0), Reverse(prev[k]), Reverse(t[k]), k));
    // Sites with a minimum are among the target's (`lo ≤ t`), so they sort into the pick.
    let chosen: BTreeSet<usize> = order.into_iter().take(limit).collect();
    let room: u64 = chosen.iter().map(|&k| u64::from(hi[k])).sum();
    (room >= u64::from(total)).then_some(chosen)
}

/// One bucket: `total` replicas within `lo..=hi`, fewest moves against `prev`, then nearest
/// to `t`. `None` when the bounds cannot hold the total.
fn settle(total: u32, lo: &[u32], hi: &[u32], prev: &[u32], t: &[u32]) -> Option<Vec<u32>> {
    if lo.iter().zip(hi).any(|(l, h)| l > h) {
        return None;
    }
    let mut x: Vec<u32> = (0..prev.len())
        .map(|k| prev[k].clamp(lo[k], hi[k]))
        .collect();
    let sum: u32 = x.iter().sum();
    if sum < total {
        // Add where the site is furthest below its target; every site with room qualifies.
        let mut heap: BinaryHeap<(i64, Reverse<usize>)> = (0..x.len())
            .filter(|&k| x[k] < hi[k])
            .map(|k| (i64::from(t[k]) - i64::from(x[k]), Reverse(k)))
            .collect();
        for _ in sum..total {
            let (key, Reverse(k)) = heap.pop()?;
            x[k] += 1;
            if x[k] < hi[k] {
                heap.push((key - 1, Reverse(k)));
            }
        }
    } else if sum > total {
        let mut heap: BinaryHeap<(i64, Reverse<usize>)> = (0..x.len())
            .filter(|&k| x[k] > lo[k])
            .map(|k| (i64::from(x[k]) - i64::from(t[k]), Reverse(k)))
            .collect();
        for _ in total..sum {
            let (key, Reverse(k)) = heap.pop()?;
            x[k] -= 1;
            if x[k] > lo[k] {
                heap.push((key - 1, Reverse(k)));
            }
        }
    }
    Some(x)
}

/// The result: the kept counts, with reasons. A site keeps the target's reasons; one the
/// target left empty borrows its bucket's, and a site holding more than the target because
/// its replicas stayed put says so.
fn finish(sites: &[Site<'_>], buckets: &[Vec<usize>], t: Fill, x: Vec<u32>) -> Fill {
    let mut out = Fill::new(sites.len());
    for bucket in buckets {
        let shared: BTreeSet<String> = bucket
            .iter()
            .flat_map(|&i| t.reasons[i].iter().cloned())
            .collect();
        for &i in bucket {
            if x[i] == 0 {
                continue;
            }
            let reasons = if t.replicas[i] > 0 {
                &t.reasons[i]
            } else {
                &shared
            };
            out.reasons[i].clone_from(reasons);
            if x[i] > t.replicas[i] && sites[i].prev > 0 {
                out.reasons[i]
                    .insert("kept in place: moving it would not improve the placement".into());
            }
            out.replicas[i] = x[i];
        }
    }
    out.lo = t.lo;
    out.hi = t.hi;
    out
}

/// Demand coverage under the latency bound, with the RTT checks cached per point and site.
struct Reach<'a> {
    input: &'a SolveInput<'a>,
    sites: &'a [Site<'a>],
    demand: &'a Demand,
    bound: f64,
    total: f64,
    target: f64,
    /// `within[p * sites + i]`: 0 unknown, 1 no, 2 yes.
    within: Vec<u8>,
}

impl<'a> Reach<'a> {
    /// `None` without a latency objective or without demand.
    fn new(input: &'a SolveInput<'a>, sites: &'a [Site<'a>], demand: &'a Demand) -> Option<Self> {
        let latency = input.policy.latency.as_ref().filter(|l| l.max_rtt_ms > 0)?;
        let total: f64 = demand.points.iter().map(|p| p.weight).sum();
        (total > 0.0).then(|| Self {
            input,
            sites,
            demand,
            bound: f64::from(latency.max_rtt_ms),
            total,
            target: objective_fraction(latency.fraction),
            within: vec![0; demand.points.len() * sites.len()],
        })
    }

    fn within(&mut self, p: usize, i: usize) -> bool {
        let slot = &mut self.within[p * self.sites.len() + i];
        if *slot == 0 {
            let pop = self.sites[i].pop;
            let ms = self.input.rtt.rtt_ms(
                self.demand.points[p].location,
                &pop.name,
                (pop.lat, pop.lon),
            );
            *slot = if ms <= self.bound { 2 } else { 1 };
        }
        *slot == 2
    }

    fn is_covered(&mut self, x: &[u32], p: usize) -> bool {
        (0..x.len()).any(|i| x[i] > 0 && self.within(p, i))
    }

    /// Share of demand within the bound of a site holding replicas.
    fn covered(&mut self, x: &[u32]) -> f64 {
        let mut covered = 0.0;
        for p in 0..self.demand.points.len() {
            if self.is_covered(x, p) {
                covered += self.demand.points[p].weight;
            }
        }
        covered / self.total
    }

    /// Demand weight not covered by `x` that site `i` would cover.
    fn gain(&mut self, x: &[u32], i: usize) -> f64 {
        let mut gain = 0.0;
        for p in 0..self.demand.points.len() {
            if !self.is_covered(x, p) && self.within(p, i) {
                gain += self.demand.points[p].weight;
            }
        }
        gain
    }
}
