//! Observed demand: query rates per service and client group, as the frontends report them.

use std::collections::BTreeMap;

use isobar_proto::geo::{cell_center, cell_count};
use isobar_proto::v1::GroupDemand;
use isobar_store::world::World;

use crate::placement::DemandPoint;

/// A frontend's report counts for this long; one that stops reporting stops counting.
pub const DEMAND_TTL_MS: i64 = 5 * 60 * 1000;

/// Most frontends remembered; the stalest is forgotten first beyond this.
const MAX_FRONTENDS: usize = 4096;

/// Most (service, group) entries kept per frontend report.
pub const MAX_GROUPS_PER_REPORT: usize = 100_000;

/// The latest report per frontend.
#[derive(Debug, Default)]
pub struct DemandBook {
    frontends: BTreeMap<String, FrontendDemand>,
}

#[derive(Debug, Default)]
struct FrontendDemand {
    at_ms: i64,
    /// service → group → queries per second.
    rates: BTreeMap<String, BTreeMap<String, f64>>,
}

impl DemandBook {
    /// Replaces `frontend`'s demand with `demand`, received at `now_ms`. Returns (accepted,
    /// rejected): entries with a malformed group name, a negative or non-finite rate, or
    /// beyond [`MAX_GROUPS_PER_REPORT`] are rejected.
    pub fn record(&mut self, frontend: &str, demand: &[GroupDemand], now_ms: i64) -> (u64, u64) {
        let mut rates: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        let (mut accepted, mut rejected) = (0, 0);
        for (i, d) in demand.iter().enumerate() {
            if i >= MAX_GROUPS_PER_REPORT
                || !d.qps.is_finite()
                || d.qps < 0.0
                || parse_group(&d.group).is_none()
            {
                rejected += 1;
                continue;
            }
            accepted += 1;
            *rates
                .entry(normalize_service(&d.service))
                .or_default()
                .entry(d.group.clone())
                .or_default() += d.qps;
        }
        if self.frontends.len() >= MAX_FRONTENDS && !self.frontends.contains_key(frontend) {
            let stalest = self
                .frontends
                .iter()
                .min_by_key(|(_, f)| f.at_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                self.frontends.remove(&k);
            }
        }
        self.frontends.insert(
            frontend.to_owned(),
            FrontendDemand {
                at_ms: now_ms,
                rates,
            },
        );
        (accepted, rejected)
    }

    /// Forgets reports older than [`DEMAND_TTL_MS`].
    pub fn expire(&mut self, now_ms: i64) {
        self.frontends
            .retain(|_, f| now_ms.saturating_sub(f.at_ms) <= DEMAND_TTL_MS);
    }

    /// Observed rates summed over fresh frontend reports: service → group label → queries
    /// per second (what steering reads).
    pub fn rates(&self, now_ms: i64) -> BTreeMap<String, BTreeMap<String, f64>> {
        let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for f in self.frontends.values() {
            if now_ms.saturating_sub(f.at_ms) > DEMAND_TTL_MS {
                continue;
            }
            for (service, groups) in &f.rates {
                let entry = out.entry(service.clone()).or_default();
                for (group, qps) in groups {
                    *entry.entry(group.clone()).or_default() += qps;
                }
            }
        }
        out
    }

    /// Demand points for `service`, summed over fresh frontend reports, located on the
    /// world's grid (cells), at their region's centre (override groups) or at the default
    /// location (unknown clients; dropped without one). Sorted by location so the result
    /// does not depend on report order.
    pub fn points(&self, world: &World, service: &str, now_ms: i64) -> Vec<DemandPoint> {
        let mut by_group: BTreeMap<&str, f64> = BTreeMap::new();
        for f in self.frontends.values() {
            if now_ms.saturating_sub(f.at_ms) > DEMAND_TTL_MS {
                continue;
            }
            if let Some(groups) = f.rates.get(service) {
                for (g, qps) in groups {
                    *by_group.entry(g.as_str()).or_default() += qps;
                }
            }
        }
        let cells = cell_count(world.defaults.cell_degrees);
        by_group
            .into_iter()
            .filter(|(_, w)| *w > 0.0)
            .filter_map(|(group, weight)| {
                let location = match parse_group(group)? {
                    Group::Cell(c) if (c as usize) < cells => {
                        cell_center(world.defaults.cell_degrees, c)
                    }
                    Group::Cell(_) => return None,
                    Group::Override(name) => {
                        let g = world.client_groups.iter().find(|g| g.name == name)?;
                        let r = world.region(&g.region)?;
                        (r.lat, r.lon)
                    }
                    Group::Unknown => {
                        let loc = world.defaults.location?;
                        (loc.lat, loc.lon)
                    }
                };
                Some(DemandPoint { location, weight })
            })
            .collect()
    }
}

enum Group<'a> {
    Cell(u32),
    Override(&'a str),
    Unknown,
}

fn parse_group(group: &str) -> Option<Group<'_>> {
    if group == "unknown" {
        Some(Group::Unknown)
    } else if let Some(cell) = group.strip_prefix("cell:") {
        cell.parse().ok().map(Group::Cell)
    } else {
        group
            .strip_prefix("group:")
            .filter(|n| !n.is_empty())
            .map(Group::Override)
    }
}

fn normalize_service(raw: &str) -> String {
    let lower = raw.trim().to_ascii_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}
