//! The placement solver: (world, policy, slots used by others, previous decision) → decision.
//!
//! A pure function. The replicas are split evenly across the demand regions (largest
//! remainder, ties by name); each region's share goes round-robin over the eligible PoPs
//! inside that region, and overflows to the nearest eligible PoPs outside it when those are
//! full. A PoP never holds more than its free replica slots or its per-site maximum. When the
//! eligible PoPs cannot hold the request the decision is partial and carries an
//! `Infeasible` condition — never a silent shortfall.

use std::collections::{BTreeMap, HashMap};

use isobar_proto::geo::distance_km;
use isobar_proto::v1::{
    Condition, PlacementDecision, PlacementPolicy, SiteAssignment, SiteSelector,
};
use isobar_store::world::{Pop, World};

/// Why a policy cannot be placed at all. Each names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The service is not configured.
    #[error("unknown service {0}")]
    UnknownService(String),
    /// A field has an invalid value.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field, e.g. `policy.replicas`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The most replicas one policy may ask for.
pub const MAX_REPLICAS: u32 = 100_000;

/// Checks a policy against the world; `Ok` means [`solve`] can run.
pub fn validate(world: &World, service: &str, policy: &PlacementPolicy) -> Result<(), PolicyError> {
    if world.service(service).is_none() {
        return Err(PolicyError::UnknownService(service.to_owned()));
    }
    let invalid = |field: String, message: String| PolicyError::Invalid { field, message };
    if policy.replicas == 0 || policy.replicas > MAX_REPLICAS {
        return Err(invalid(
            "policy.replicas".into(),
            format!(
                "must be between 1 and {MAX_REPLICAS}, got {}",
                policy.replicas
            ),
        ));
    }
    for (i, region) in policy.allowed_regions.iter().enumerate() {
        if world.region(region).is_none() {
            return Err(invalid(
                format!("policy.allowed_regions[{i}]"),
                format!("unknown region {region:?}"),
            ));
        }
    }
    for (i, region) in policy.demand_regions.iter().enumerate() {
        if world.region(region).is_none() {
            return Err(invalid(
                format!("policy.demand_regions[{i}]"),
                format!("unknown region {region:?}"),
            ));
        }
    }
    for (site, bounds) in &policy.site_bounds {
        if world.pop(site).is_none() {
            return Err(invalid(
                format!("policy.site_bounds[{site}]"),
                format!("unknown site {site:?}"),
            ));
        }
        if bounds.max != 0 && bounds.min > bounds.max {
            return Err(invalid(
                format!("policy.site_bounds[{site}]"),
                format!("min {} exceeds max {}", bounds.min, bounds.max),
            ));
        }
    }
    Ok(())
}

/// Places `policy.replicas` replicas of `service`. `used` holds the replica slots other
/// services already take per PoP. The returned decision has `version` 0; the caller
/// versions it. Call [`validate`] first: unknown names here are simply skipped.
pub fn solve(
    world: &World,
    service: &str,
    policy: &PlacementPolicy,
    used: &HashMap<String, u32>,
) -> PlacementDecision {
    let eligible: Vec<&Pop> = world
        .pops
        .iter()
        .filter(|pop| eligible(pop, policy))
        .collect();
    let mut free: BTreeMap<&str, u32> = eligible
        .iter()
        .map(|pop| {
            let slots = pop
                .replica_slots
                .saturating_sub(used.get(&pop.name).copied().unwrap_or(0));
            let cap = match policy.site_bounds.get(&pop.name) {
                Some(b) if b.max > 0 => slots.min(b.max),
                _ => slots,
            };
            (pop.name.as_str(), cap)
        })
        .collect();
    let mut placed: BTreeMap<&str, (u32, Vec<String>)> = BTreeMap::new();

    // Per-site minimums come first.
    let mut remaining = policy.replicas;
    for pop in &eligible {
        let min = policy.site_bounds.get(&pop.name).map_or(0, |b| b.min);
        let take = min.min(free[pop.name.as_str()]).min(remaining);
        if take > 0 {
            place(&mut placed, &mut free, &pop.name, take, "site minimum");
            remaining -= take;
        }
    }

    let demand = demand_regions(world, service, policy);
    for (region_name, share) in split(remaining, &demand) {
        let Some(region) = world.region(&region_name) else {
            continue;
        };
        let center = (region.lat, region.lon);
        let mut home: Vec<&Pop> = eligible
            .iter()
            .copied()
            .filter(|p| p.region == region_name)
            .collect();
        home.sort_by(|a, b| {
            distance_km(center, (a.lat, a.lon)).total_cmp(&distance_km(center, (b.lat, b.lon)))
        });
        let mut away: Vec<&Pop> = eligible
            .iter()
            .copied()
            .filter(|p| p.region != region_name)
            .collect();
        away.sort_by(|a, b| {
            distance_km(center, (a.lat, a.lon)).total_cmp(&distance_km(center, (b.lat, b.lon)))
        });

        let mut left = share;
        // Spread over the region's own PoPs first, one replica at a time.
        while left > 0 {
            let mut progressed = false;
            for pop in &home {
                if left == 0 {
                    break;
                }
                if free[pop.name.as_str()] > 0 {
                    place(
                        &mut placed,
                        &mut free,
                        &pop.name,
                        1,
                        &format!("in demand region {region_name}"),
                    );
                    left -= 1;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        // Overflow to the nearest PoPs elsewhere.
        for pop in &away {
            if left == 0 {
                break;
            }
            let take = free[pop.name.as_str()].min(left);
            if take > 0 {
                let km = distance_km(center, (pop.lat, pop.lon)).round();
                place(
                    &mut placed,
                    &mut free,
                    &pop.name,
                    take,
                    &format!("overflow from {region_name} ({km} km)"),
                );
                left -= take;
            }
        }
    }

    let total: u32 = placed.values().map(|(n, _)| n).sum();
    let sites = placed
        .into_iter()
        .map(|(site, (replicas, reasons))| SiteAssignment {
            site: site.to_owned(),
            replicas,
            weight: f64::from(replicas) / f64::from(total.max(1)),
            group: world
                .pop(site)
                .map(|p| p.region.clone())
                .unwrap_or_default(),
            reason: reasons.join("; "),
        })
        .collect();
    let mut conditions = Vec::new();
    if total < policy.replicas {
        conditions.push(Condition {
            r#type: "Infeasible".to_owned(),
            message: format!(
                "placed {total} of {} replicas: the eligible sites have no more free slots",
                policy.replicas
            ),
        });
    }
    PlacementDecision {
        service: service.to_owned(),
        version: 0,
        sites,
        requested: policy.replicas,
        placed: total,
        conditions,
        policy: Some(policy.clone()),
    }
}

fn place<'a>(
    placed: &mut BTreeMap<&'a str, (u32, Vec<String>)>,
    free: &mut BTreeMap<&'a str, u32>,
    site: &'a str,
    count: u32,
    reason: &str,
) {
    if let Some(slots) = free.get_mut(site) {
        *slots -= count;
    }
    let entry = placed.entry(site).or_default();
    entry.0 += count;
    if !entry.1.iter().any(|r| r == reason) {
        entry.1.push(reason.to_owned());
    }
}

fn eligible(pop: &Pop, policy: &PlacementPolicy) -> bool {
    let matches = |sel: &SiteSelector| {
        sel.match_labels
            .iter()
            .all(|(k, v)| pop.labels.get(k) == Some(v) || (k == "region" && &pop.region == v))
    };
    (policy.allowed_regions.is_empty() || policy.allowed_regions.contains(&pop.region))
        && (policy.include.is_empty() || policy.include.iter().any(matches))
        && !policy.exclude.iter().any(matches)
}

/// Demand regions: the policy's, else the service's configured ones, else the allowed
/// regions, else every region. Sorted, deduplicated.
fn demand_regions(world: &World, service: &str, policy: &PlacementPolicy) -> Vec<String> {
    let mut regions: Vec<String> = if !policy.demand_regions.is_empty() {
        policy.demand_regions.clone()
    } else if let Some(s) = world.service(service).filter(|s| !s.demand.is_empty()) {
        s.demand.clone()
    } else if !policy.allowed_regions.is_empty() {
        policy.allowed_regions.clone()
    } else {
        world.regions.iter().map(|r| r.name.clone()).collect()
    };
    regions.sort();
    regions.dedup();
    regions
}

/// Splits `total` as evenly as possible; earlier names get the remainder.
fn split(total: u32, regions: &[String]) -> Vec<(String, u32)> {
    if regions.is_empty() {
        return Vec::new();
    }
    let n = regions.len() as u32;
    regions
        .iter()
        .enumerate()
        .map(|(i, r)| (r.clone(), total / n + u32::from((i as u32) < total % n)))
        .collect()
}

#[cfg(test)]
mod tests;
