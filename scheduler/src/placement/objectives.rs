//! Spread constraints and the latency objective: the checks and repairs that run on a fill.

use std::collections::{BTreeMap, BTreeSet};

use isobar_proto::v1::{SpreadConstraint, SpreadField};
use isobar_store::world::Pop;

use super::SolveInput;
use super::solve::{Demand, Fill, Site, objective_fraction};

/// The value a spread constraint groups a site by (`None`: the site lacks the field).
pub(super) fn spread_value<'a>(spread: &SpreadConstraint, pop: &'a Pop) -> Option<&'a str> {
    match SpreadField::try_from(spread.field).unwrap_or(SpreadField::Region) {
        SpreadField::Region => Some(pop.region.as_str()),
        SpreadField::Site => Some(pop.name.as_str()),
        SpreadField::Zone => pop.labels.get("zone").map(String::as_str),
        SpreadField::Provider => pop.labels.get("provider").map(String::as_str),
        SpreadField::Label => pop.labels.get(&spread.label).map(String::as_str),
    }
}

/// Replicas per distinct value among the sites holding replicas.
pub(super) fn spread_values<'a>(
    spread: &SpreadConstraint,
    sites: &[Site<'a>],
    replicas: &[u32],
) -> BTreeMap<&'a str, u32> {
    let mut values = BTreeMap::new();
    for (i, site) in sites.iter().enumerate() {
        if replicas[i] > 0
            && let Some(v) = spread_value(spread, site.pop)
        {
            *values.entry(v).or_insert(0) += replicas[i];
        }
    }
    values
}

/// Tightens `allowed` (max groups) or `forced` (min groups) for a violated constraint.
/// It does not look at the previous decision: which site of a value runs its replicas is
/// the minimum-move step's business, and the values chosen must not depend on history, so
/// that re-solving cannot move more than a fresh solve would. Returns whether anything changed, i.e. whether the fill must run again.
pub(super) fn enforce_spread(
    constraints: &[SpreadConstraint],
    requested: u32,
    sites: &[Site<'_>],
    fill: &Fill,
    allowed: &mut [bool],
    forced: &mut [u32],
) -> bool {
    let mut changed = false;
    for spread in constraints {
        let values = spread_values(spread, sites, &fill.replicas);
        if spread.max_groups > 0 && values.len() as u32 > spread.max_groups {
            // Keep values pinned by a per-site minimum first, then those that can hold the
            // most of the request, then those the unrestricted fill preferred, then by name.
            let mut room: BTreeMap<&str, (bool, u32)> = BTreeMap::new();
            for (i, site) in sites.iter().enumerate() {
                if let Some(v) = spread_value(spread, site.pop)
                    && allowed[i]
                {
                    let e = room.entry(v).or_default();
                    e.0 |= site.min > 0 && site.cap > 0;
                    e.1 = e.1.saturating_add(site.cap);
                }
            }
            let mut ranked: Vec<(&str, (bool, u32, u32))> = room
                .iter()
                .map(|(v, (pinned, cap))| {
                    let held = values.get(v).copied().unwrap_or(0);
                    (*v, (*pinned, (*cap).min(requested), held))
                })
                .collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let keep: BTreeSet<&str> = ranked
                .iter()
                .take(spread.max_groups as usize)
                .map(|(v, ..)| *v)
                .collect();
            for (i, site) in sites.iter().enumerate() {
                if allowed[i] && !spread_value(spread, site.pop).is_some_and(|v| keep.contains(v)) {
                    allowed[i] = false;
                    changed = true;
                }
            }
        } else if (values.len() as u32) < spread.min_groups {
            let need = spread.min_groups as usize - values.len();
            // Best site per missing value: most room, then order. Values with the most
            // room come first.
            let mut best: BTreeMap<&str, usize> = BTreeMap::new();
            for (i, site) in sites.iter().enumerate() {
                let Some(v) = spread_value(spread, site.pop) else {
                    continue;
                };
                if values.contains_key(v) || !allowed[i] || site.cap == 0 || forced[i] > 0 {
                    continue;
                }
                let e = best.entry(v).or_insert(i);
                if site.cap > sites[*e].cap {
                    *e = i;
                }
            }
            let mut ranked: Vec<usize> = best.into_values().collect();
            ranked.sort_by(|&a, &b| sites[b].cap.cmp(&sites[a].cap).then(a.cmp(&b)));
            for i in ranked.into_iter().take(need) {
                forced[i] = 1;
                changed = true;
            }
        }
    }
    changed
}

/// Share of demand within the latency bound of a site holding replicas (`None` without an
/// objective, or without demand).
pub(super) fn coverage(
    input: &SolveInput<'_>,
    sites: &[Site<'_>],
    replicas: &[u32],
    demand: &Demand,
) -> Option<f64> {
    let bound = f64::from(input.policy.latency.as_ref()?.max_rtt_ms);
    if bound <= 0.0 {
        return None;
    }
    let total: f64 = demand.points.iter().map(|p| p.weight).sum();
    if total <= 0.0 {
        return None;
    }
    let covered: f64 = demand
        .points
        .iter()
        .filter(|p| {
            sites.iter().enumerate().any(|(i, s)| {
                replicas[i] > 0
                    && input
                        .rtt
                        .rtt_ms(p.location, &s.pop.name, (s.pop.lat, s.pop.lon))
                        <= bound
            })
        })
        .map(|p| p.weight)
        .sum();
    Some(covered / total)
}

/// Moves single replicas to sites that cover demand the current sites serve too slowly,
/// until the objective holds or no move helps. Only sites in groups already in use qualify.
pub(super) fn latency_objective(
    input: &SolveInput<'_>,
    sites: &[Site<'_>],
    allowed: &[bool],
    demand: &Demand,
    fill: &mut Fill,
) {
    let Some(latency) = input.policy.latency.as_ref().filter(|l| l.max_rtt_ms > 0) else {
        return;
    };
    let bound = f64::from(latency.max_rtt_ms);
    let target = objective_fraction(latency.fraction);
    let total: f64 = demand.points.iter().map(|p| p.weight).sum();
    if total <= 0.0 {
        return;
    }
    // within[p][i]: point p is within the bound of site i.
    let within: Vec<Vec<bool>> = demand
        .points
        .iter()
        .map(|p| {
            sites
                .iter()
                .map(|s| {
                    input
                        .rtt
                        .rtt_ms(p.location, &s.pop.name, (s.pop.lat, s.pop.lon))
                        <= bound
                })
                .collect()
        })
        .collect();
    let last_group = (0..sites.len())
        .filter(|&i| fill.replicas[i] > 0)
        .map(|i| sites[i].group)
        .max()
        .unwrap_or(0);
    for _ in 0..input.policy.replicas {
        let covered_by = |p: usize| (0..sites.len()).any(|i| fill.replicas[i] > 0 && within[p][i]);
        let uncovered: Vec<usize> = (0..demand.points.len())
            .filter(|&p| !covered_by(p))
            .collect();
        let covered: f64 = total
            - uncovered
                .iter()
                .map(|&p| demand.points[p].weight)
                .sum::<f64>();
        if covered / total >= target {
            return;
        }
        let best = (0..sites.len())
            .filter(|&i| {
                allowed[i]
                    && fill.replicas[i] == 0
                    && sites[i].cap > 0
                    && sites[i].group <= last_group
            })
            .map(|i| {
                let gain: f64 = uncovered
                    .iter()
                    .filter(|&&p| within[p][i])
                    .map(|&p| demand.points[p].weight)
                    .sum();
                (i, gain)
            })
            .filter(|(_, gain)| *gain > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        let donor = (0..sites.len())
            .filter(|&i| fill.replicas[i] >= 2 && fill.replicas[i] > sites[i].min)
            .max_by(|&a, &b| fill.replicas[a].cmp(&fill.replicas[b]).then(b.cmp(&a)));
        let (Some((to, _)), Some(from)) = (best, donor) else {
            return;
        };
        fill.replicas[from] -= 1;
        fill.add(
            to,
            1,
            &format!(
                "latency objective: covers demand beyond {} ms",
                latency.max_rtt_ms
            ),
        );
    }
}
