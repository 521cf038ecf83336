//! The pure placement solver.
//!
//! Order of work: per-site minimums; then the ordered fallback groups, each filled only
//! with what the earlier ones could not hold; inside a group the division rule splits the
//! replicas (demand, aggregated, static weights or available capacity) by water-filling
//! under each site's capacity; then the latency objective moves single replicas to sites
//! that cover unserved demand; spread constraints re-run the fill with the sites restricted
//! (max) or with forced minimums (min). Ties go to the nearer site, then by name. That fill
//! is the fresh target, a function of the inputs without the previous decision.
//! [`super::moves`] then keeps replicas where the previous decision ran them wherever an
//! equally good decision allows it: re-solving unchanged inputs reproduces the previous
//! decision exactly, and a change moves only the replicas it must.

use std::collections::{BTreeMap, BTreeSet};

use isobar_proto::geo::distance_km;
use isobar_proto::v1::{
    Condition, Division, PlacementDecision, SchedulingType, SiteAssignment, SiteSelector,
};
use isobar_store::world::Pop;

use super::moves::keep_previous;
use super::objectives::{coverage, enforce_spread, latency_objective, spread_values};
use super::{DemandPoint, SolveInput, moves_between};

/// One eligible site as the solver sees it.
pub(super) struct Site<'a> {
    pub(super) pop: &'a Pop,
    /// Replicas this service may hold here: free slots, site maximum, risk ceiling.
    pub(super) cap: u32,
    /// Per-site minimum from the policy.
    pub(super) min: u32,
    /// Replicas in the previous decision.
    pub(super) prev: u32,
    /// Index of the fallback group, or `None` when no group selects it.
    pub(super) group: usize,
}

/// The outcome of one fill.
pub(super) struct Fill {
    pub(super) replicas: Vec<u32>,
    pub(super) reasons: Vec<BTreeSet<String>>,
    /// Per site, the least and most replicas the division rule accepts as equally good:
    /// the per-site minimum up to the site's room for demand-driven and aggregated
    /// division, the two roundings of the exact share for weighted division. Moving
    /// replicas inside these ranges (and inside a bucket, see [`super::moves`]) keeps the
    /// decision as good, so the previous decision's counts win there.
    pub(super) lo: Vec<u32>,
    pub(super) hi: Vec<u32>,
}

impl Fill {
    pub(super) fn new(n: usize) -> Self {
        Self {
            replicas: vec![0; n],
            reasons: vec![BTreeSet::new(); n],
            lo: vec![0; n],
            hi: vec![0; n],
        }
    }

    pub(super) fn add(&mut self, site: usize, count: u32, reason: &str) {
        if count > 0 {
            self.replicas[site] += count;
            if !self.reasons[site].contains(reason) {
                self.reasons[site].insert(reason.to_owned());
            }
        }
    }

    pub(super) fn total(&self) -> u32 {
        self.replicas.iter().sum()
    }
}

/// Demand, grouped once per solve.
pub(super) struct Demand {
    pub(super) points: Vec<DemandPoint>,
    /// Demand weight per region name, each point counted in its nearest region.
    regions: BTreeMap<String, f64>,
}

/// Places the policy's replicas. The returned decision has `version` 0 and no timestamp;
/// the caller stamps them. Call [`super::validate`] first: unknown names here are skipped.
pub fn solve(input: &SolveInput<'_>) -> PlacementDecision {
    let policy = input.policy;
    let prev = input
        .previous
        .map(super::replicas_by_site)
        .unwrap_or_default();
    let sites = eligible_sites(input, &prev);
    let demand = demand(input);
    let duplicated = policy.scheduling == SchedulingType::Duplicated as i32;

    let mut conditions = Vec::new();
    let (fresh, requested) = target(input, &sites, &demand);
    // The fill is the fresh target; now keep what the previous decision ran wherever an
    // equally good decision allows it.
    let fill = if duplicated {
        fresh
    } else {
        let division = Division::try_from(policy.division).unwrap_or(Division::Demand);
        keep_previous(input, &sites, fresh, &demand, division)
    };
    for (i, spread) in policy.spread.iter().enumerate() {
        let count = spread_values(spread, &sites, &fill.replicas).len() as u32;
        let too_few = count < spread.min_groups;
        let too_many = spread.max_groups > 0 && count > spread.max_groups;
        if too_few || too_many {
            conditions.push(Condition {
                r#type: "SpreadUnsatisfied".into(),
                message: format!(
                    "policy.spread[{i}]: replicas span {count} distinct values, wanted {}..{}",
                    spread.min_groups,
                    if spread.max_groups == 0 {
                        "any".to_owned()
                    } else {
                        spread.max_groups.to_string()
                    }
                ),
            });
        }
    }

    let placed = fill.total();
    if placed < requested {
        conditions.insert(
            0,
            Condition {
                r#type: "Infeasible".into(),
                message: format!(
                    "placed {placed} of {requested} replicas: the eligible sites have no more free slots"
                ),
            },
        );
    }
    let coverage = coverage(input, &sites, &fill.replicas, &demand);
    if let (Some(latency), Some(covered)) = (&policy.latency, coverage)
        && latency.max_rtt_ms > 0
        && covered + 1e-9 < objective_fraction(latency.fraction)
    {
        conditions.push(Condition {
            r#type: "LatencyObjectiveUnmet".into(),
            message: format!(
                "{:.1} % of demand within {} ms, wanted {:.1} %",
                covered * 100.0,
                latency.max_rtt_ms,
                objective_fraction(latency.fraction) * 100.0
            ),
        });
    }

    let groups_named = !policy.groups.is_empty();
    let mut assignments: Vec<SiteAssignment> = sites
        .iter()
        .enumerate()
        .filter(|(i, _)| fill.replicas[*i] > 0)
        .map(|(i, site)| SiteAssignment {
            site: site.pop.name.clone(),
            replicas: fill.replicas[i],
            weight: f64::from(fill.replicas[i]) / f64::from(placed.max(1)),
            group: if groups_named {
                group_name(policy, site.group)
            } else {
                site.pop.region.clone()
            },
            reason: fill.reasons[i]
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
        })
        .collect();
    assignments.sort_by(|a, b| a.site.cmp(&b.site));
    let new: BTreeMap<String, u32> = assignments
        .iter()
        .map(|s| (s.site.clone(), s.replicas))
        .collect();
    PlacementDecision {
        service: input.service.to_owned(),
        version: 0,
        sites: assignments,
        requested,
        placed,
        conditions,
        policy: Some(policy.clone()),
        demand_within_objective: coverage.unwrap_or(0.0),
        moves: moves_between(&prev, &new),
        decided_unix_ms: 0,
    }
}

/// The fresh target: the fill under the division rule, the latency objective and the
/// spread constraints, which re-run the fill with restrictions (passes settle max, then
/// min). It does not look at the previous decision. Returns the fill and the replicas
/// requested in total.
fn target(input: &SolveInput<'_>, sites: &[Site<'_>], demand: &Demand) -> (Fill, u32) {
    let policy = input.policy;
    let duplicated = policy.scheduling == SchedulingType::Duplicated as i32;
    let mut requested = policy.replicas;
    let mut allowed: Vec<bool> = vec![true; sites.len()];
    let mut forced: Vec<u32> = vec![0; sites.len()];
    let mut fill = Fill::new(0);
    for pass in 0..3 {
        fill = if duplicated {
            let (f, req) = fill_duplicated(input, sites, &allowed);
            requested = req;
            f
        } else {
            let mut f = fill_divided(input, sites, &allowed, &forced, demand);
            latency_objective(input, sites, &allowed, demand, &mut f);
            f
        };
        if pass == 2
            || !enforce_spread(
                &policy.spread,
                policy.replicas,
                sites,
                &fill,
                &mut allowed,
                &mut forced,
            )
        {
            break;
        }
    }
    (fill, requested)
}

fn group_name(policy: &isobar_proto::v1::PlacementPolicy, index: usize) -> String {
    match policy.groups.get(index) {
        Some(g) if !g.name.is_empty() => g.name.clone(),
        _ => format!("group-{index}"),
    }
}

pub(super) fn objective_fraction(fraction: f64) -> f64 {
    if fraction > 0.0 { fraction } else { 0.95 }
}

/// The sites this service may use, in world (name) order, with their capacities.
fn eligible_sites<'a>(input: &SolveInput<'a>, prev: &BTreeMap<String, u32>) -> Vec<Site<'a>> {
    let policy = input.policy;
    input
        .world
        .pops
        .iter()
        .filter(|pop| eligible(pop, policy))
        .filter_map(|pop| {
            let group = if policy.groups.is_empty() {
                0
            } else {
                policy
                    .groups
                    .iter()
                    .position(|g| g.selectors.iter().any(|s| matches(pop, s)))?
            };
            let free = pop
                .replica_slots
                .saturating_sub(input.used.get(&pop.name).copied().unwrap_or(0));
            let bounds = policy.site_bounds.get(&pop.name);
            let mut cap = match bounds {
                Some(b) if b.max > 0 => free.min(b.max),
                _ => free,
            };
            if let Some(ceiling) = input.ceilings.get(&pop.name) {
                cap = cap.min(*ceiling);
            }
            Some(Site {
                pop,
                cap,
                min: bounds.map_or(0, |b| b.min),
                prev: prev.get(&pop.name).copied().unwrap_or(0),
                group,
            })
        })
        .collect()
}

/// Whether a selector matches a PoP. "region" and "site" match the PoP's own fields.
pub(crate) fn matches(pop: &Pop, sel: &SiteSelector) -> bool {
    let value = |key: &str| -> Option<&str> {
        pop.labels.get(key).map(String::as_str).or(match key {
            "region" => Some(pop.region.as_str()),
            "site" => Some(pop.name.as_str()),
            _ => None,
        })
    };
    sel.match_labels
        .iter()
        .all(|(k, v)| value(k) == Some(v.as_str()) || (k == "region" && pop.region == *v))
        && sel
            .match_in
            .iter()
            .all(|(k, list)| value(k).is_some_and(|v| list.values.iter().any(|x| x == v)))
}

fn eligible(pop: &Pop, policy: &isobar_proto::v1::PlacementPolicy) -> bool {
    (policy.allowed_regions.is_empty() || policy.allowed_regions.contains(&pop.region))
        && (policy.include.is_empty() || policy.include.iter().any(|s| matches(pop, s)))
        && !policy.exclude.iter().any(|s| matches(pop, s))
}

/// Observed demand, or the declared demand regions' centres, each point counted in its
/// nearest region.
fn demand(input: &SolveInput<'_>) -> Demand {
    let world = input.world;
    let mut points: Vec<DemandPoint> = input
        .demand
        .iter()
        .filter(|p| p.weight > 0.0 && p.weight.is_finite())
        .copied()
        .collect();
    if points.is_empty() {
        let policy = input.policy;
        let mut regions: Vec<&String> = if !policy.demand_regions.is_empty() {
            policy.demand_regions.iter().collect()
        } else if let Some(s) = world
            .service(input.service)
            .filter(|s| !s.demand.is_empty())
        {
            s.demand.iter().collect()
        } else if !policy.allowed_regions.is_empty() {
            policy.allowed_regions.iter().collect()
        } else {
            world.regions.iter().map(|r| &r.name).collect()
        };
        regions.sort();
        regions.dedup();
        points = regions
            .into_iter()
            .filter_map(|r| world.region(r))
            .map(|r| DemandPoint {
                location: (r.lat, r.lon),
                weight: 1.0,
            })
            .collect();
    }
    let mut by_region: BTreeMap<String, f64> = BTreeMap::new();
    for point in &points {
        let nearest = world.regions.iter().min_by(|a, b| {
            distance_km(point.location, (a.lat, a.lon))
                .total_cmp(&distance_km(point.location, (b.lat, b.lon)))
                .then_with(|| a.name.cmp(&b.name))
        });
        if let Some(region) = nearest {
            *by_region.entry(region.name.clone()).or_default() += point.weight;
        }
    }
    Demand {
        points,
        regions: by_region,
    }
}

/// Divided placement: minimums, then the groups in order, each split by the division rule.
fn fill_divided(
    input: &SolveInput<'_>,
    sites: &[Site<'_>],
    allowed: &[bool],
    forced: &[u32],
    demand: &Demand,
) -> Fill {
    let policy = input.policy;
    let mut fill = Fill::new(sites.len());
    let mut free: Vec<u32> = sites
        .iter()
        .zip(allowed)
        .map(|(s, ok)| if *ok { s.cap } else { 0 })
        .collect();
    fill.hi.clone_from(&free);
    let mut remaining = policy.replicas;
    // Per-site minimums first (the operator asked for them by name), then the single
    // replicas spread minimums force into further regions/zones.
    for (pass, reason) in [(0, "site minimum"), (1, "spread minimum")] {
        for (i, site) in sites.iter().enumerate() {
            let want = if pass == 0 {
                site.min
            } else {
                forced[i].saturating_sub(fill.replicas[i])
            };
            let take = want.min(free[i]).min(remaining);
            if take > 0 {
                fill.add(i, take, reason);
                free[i] -= take;
                remaining -= take;
            }
        }
        if pass == 0 {
            // Site minimums bind; the spread minimums only need their value represented,
            // which the buckets of the minimum-move step preserve.
            fill.lo.clone_from(&fill.replicas);
        }
    }
    let groups = sites.iter().map(|s| s.group).max().map_or(0, |g| g + 1);
    let division = Division::try_from(policy.division).unwrap_or(Division::Demand);
    for group in 0..groups {
        if remaining == 0 {
            break;
        }
        let members: Vec<usize> = (0..sites.len())
            .filter(|&i| sites[i].group == group && free[i] > 0)
            .collect();
        if members.is_empty() {
            continue;
        }
        let label = if group == 0 {
            String::new()
        } else {
            format!(
                "overflow to {}: earlier groups are full",
                group_name(policy, group)
            )
        };
        let before = fill.total();
        match division {
            Division::Demand => divide_by_demand(
                input, sites, &members, &mut free, remaining, demand, &mut fill,
            ),
            Division::Aggregated => {
                let mut order = members.clone();
                // Sites already holding replicas (minimums) first: their room costs no
                // extra site. Then largest room first, which makes the count of sites the
                // least possible. Not by previous replicas: the minimum-move step keeps
                // those wherever the count allows.
                order.sort_by(|&a, &b| {
                    (fill.replicas[b] > 0, free[b])
                        .cmp(&(fill.replicas[a] > 0, free[a]))
                        .then(a.cmp(&b))
                });
                let mut left = remaining;
                for i in order {
                    let take = free[i].min(left);
                    fill.add(i, take, "aggregated: fewest sites");
                    free[i] -= take;
                    left -= take;
                }
            }
            Division::StaticWeights | Division::AvailableCapacity => {
                let weight = |i: usize| -> f64 {
                    if division == Division::StaticWeights {
                        f64::from(
                            policy
                                .static_weights
                                .get(&sites[i].pop.name)
                                .copied()
                                .unwrap_or(0),
                        )
                    } else {
                        f64::from(free[i])
                    }
                };
                let cands: Vec<(usize, f64)> = members.iter().map(|&i| (i, weight(i))).collect();
                let got = water_fill(remaining, &cands, &free);
                let reason = if division == Division::StaticWeights {
                    "static weight"
                } else {
                    "weighted by available capacity"
                };
                for (i, n, exact) in got {
                    // The division rule is indifferent between the two roundings of the
                    // exact share (1e-9: float noise must not widen or narrow the range).
                    fill.lo[i] += ((exact + 1e-9).floor() as u32).min(n);
                    fill.hi[i] = fill.replicas[i] + ((exact - 1e-9).ceil() as u32).max(n);
                    fill.add(i, n, reason);
                    free[i] -= n;
                }
            }
        }
        let placed_here = fill.total() - before;
        if !label.is_empty() {
            for &i in &members {
                if fill.replicas[i] > 0 {
                    fill.reasons[i].insert(label.clone());
                }
            }
        }
        remaining -= placed_here;
    }
    fill
}

/// Splits `n` over the demand regions by weight; each region's share goes evenly over the
/// member sites inside it (nearest to its centre first) and overflows to the nearest member
/// sites elsewhere.
fn divide_by_demand(
    input: &SolveInput<'_>,
    sites: &[Site<'_>],
    members: &[usize],
    free: &mut [u32],
    n: u32,
    demand: &Demand,
    fill: &mut Fill,
) {
    let regions: Vec<(&String, f64)> = demand.regions.iter().map(|(k, v)| (k, *v)).collect();
    let shares = largest_remainder(n, &regions.iter().map(|(_, w)| *w).collect::<Vec<_>>());
    let mut left_over = 0;
    for ((region_name, _), share) in regions.iter().zip(shares) {
        let Some(region) = input.world.region(region_name) else {
            left_over += share;
            continue;
        };
        let center = (region.lat, region.lon);
        let rtt = |i: usize| {
            let p = sites[i].pop;
            input.rtt.rtt_ms(center, &p.name, (p.lat, p.lon))
        };
        let mut home: Vec<(usize, f64)> = members
            .iter()
            .filter(|&&i| sites[i].pop.region == **region_name && free[i] > 0)
            .map(|&i| (i, rtt(i)))
            .collect();
        home.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        let cands: Vec<(usize, f64)> = home.iter().map(|&(i, _)| (i, 1.0)).collect();
        let mut left = share;
        let reason = format!("in demand region {region_name}");
        for (i, got, _) in water_fill(left, &cands, free) {
            fill.add(i, got, &reason);
            free[i] -= got;
            left -= got;
        }
        if left == 0 {
            continue;
        }
        let mut away: Vec<(usize, f64)> = members
            .iter()
            .filter(|&&i| sites[i].pop.region != **region_name && free[i] > 0)
            .map(|&i| (i, rtt(i)))
            .collect();
        away.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        for (i, ms) in away {
            if left == 0 {
                break;
            }
            let take = free[i].min(left);
            fill.add(
                i,
                take,
                &format!("overflow from {region_name} ({} ms)", ms.round()),
            );
            free[i] -= take;
            left -= take;
        }
        left_over += left;
    }
    // Regions whose share found no room anywhere: give it to any member with room, nearest
    // to nothing in particular, so the group is used before overflowing further.
    if left_over > 0 {
        let cands: Vec<(usize, f64)> = members
            .iter()
            .filter(|&&i| free[i] > 0)
            .map(|&i| (i, 1.0))
            .collect();
        for (i, got, _) in water_fill(left_over, &cands, free) {
            fill.add(i, got, "spill-over");
            free[i] -= got;
        }
    }
}

/// Splits `n` in proportion to `weights` (largest remainder; ties to the earlier entry).
fn largest_remainder(n: u32, weights: &[f64]) -> Vec<u32> {
    let total: f64 = weights.iter().sum();
    if weights.is_empty() || total <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| f64::from(n) * w / total).collect();
    let mut out: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let mut rest = n.saturating_sub(out.iter().sum());
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = exact[a] - exact[a].floor();
        let fb = exact[b] - exact[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for i in order {
        if rest == 0 {
            break;
        }
        out[i] += 1;
        rest -= 1;
    }
    out
}

/// Water-filling: splits `n` over `cands` (site index, weight) in proportion to weight,
/// never beyond `free`. Saturated sites are filled and the rest re-split; the final
/// remainder goes by largest fraction, then candidate order (nearest first). It does not
/// look at the previous decision, so re-solving is an exact fixed point; it is monotone in
/// the candidate set, so a new site only takes replicas from the others.
/// Returns (site, count, exact share) for every candidate: the exact share is what a
/// saturated site holds, or the unrounded proportional share of the last round.
fn water_fill(n: u32, cands: &[(usize, f64)], free: &[u32]) -> Vec<(usize, u32, f64)> {
    let mut got: Vec<u32> = vec![0; cands.len()];
    let mut exact_share: Vec<f64> = vec![0.0; cands.len()];
    let mut active: Vec<usize> = (0..cands.len())
        .filter(|&k| cands[k].1 > 0.0 && free[cands[k].0] > 0)
        .collect();
    let mut left = n;
    while left > 0 && !active.is_empty() {
        let total: f64 = active.iter().map(|&k| cands[k].1).sum();
        let saturated: Vec<usize> = active
            .iter()
            .copied()
            .filter(|&k| {
                f64::from(left) * cands[k].1 / total >= f64::from(free[cands[k].0] - got[k])
            })
            .collect();
        if !saturated.is_empty() {
            for &k in &saturated {
                let take = (free[cands[k].0] - got[k]).min(left);
                got[k] += take;
                exact_share[k] = f64::from(got[k]);
                left -= take;
            }
            active.retain(|k| !saturated.contains(k));
            continue;
        }
        let exact: Vec<f64> = active
            .iter()
            .map(|&k| f64::from(left) * cands[k].1 / total)
            .collect();
        let mut rest = left;
        for (j, &k) in active.iter().enumerate() {
            let base = exact[j].floor() as u32;
            got[k] += base;
            exact_share[k] = exact[j];
            rest -= base;
        }
        let mut order: Vec<usize> = (0..active.len()).collect();
        order.sort_by(|&a, &b| {
            let fa = exact[a] - exact[a].floor();
            let fb = exact[b] - exact[b].floor();
            let (ka, kb) = (active[a], active[b]);
            // Fractions within rounding noise count as equal, so candidate order decides.
            let by_fraction = if (fa - fb).abs() < 1e-9 {
                std::cmp::Ordering::Equal
            } else {
                fb.total_cmp(&fa)
            };
            by_fraction.then(ka.cmp(&kb))
        });
        for j in order {
            if rest == 0 {
                break;
            }
            got[active[j]] += 1;
            rest -= 1;
        }
        left = 0;
    }
    cands
        .iter()
        .zip(got)
        .zip(exact_share)
        .map(|(((i, _), g), e)| (*i, g, e))
        .collect()
}

/// Duplicated: every site of the first group that has room runs the full replica count.
fn fill_duplicated(input: &SolveInput<'_>, sites: &[Site<'_>], allowed: &[bool]) -> (Fill, u32) {
    let mut fill = Fill::new(sites.len());
    let first = (0..sites.len())
        .filter(|&i| allowed[i] && sites[i].cap > 0)
        .map(|i| sites[i].group)
        .min();
    let Some(group) = first else {
        return (fill, input.policy.replicas);
    };
    let chosen: Vec<usize> = (0..sites.len())
        .filter(|&i| allowed[i] && sites[i].group == group)
        .collect();
    for &i in &chosen {
        fill.add(i, sites[i].cap.min(input.policy.replicas), "duplicated");
    }
    fill.lo.clone_from(&fill.replicas);
    fill.hi.clone_from(&fill.replicas);
    (fill, input.policy.replicas * chosen.len().max(1) as u32)
}
