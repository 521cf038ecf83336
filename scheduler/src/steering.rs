//! The steering solver: (world, health, previous snapshot) → the steering snapshot.
//!
//! A pure function, so it is deterministic, unit-testable and usable by simulations. For
//! every GSLB name and every client location (a grid cell, a CIDR-override group, or
//! "unknown") it orders the PoPs that have healthy endpoints by great-circle distance from
//! the client and fills the answer from the nearest PoP first, then the next nearest as
//! fallback, up to the service's answer count per address family. Identical answers are
//! stored once and indexed.
//!
//! When every endpoint of a service is down the service fails open and serves all of them,
//! as Route 53, gdnsd and PowerDNS do: an answer that may work beats one that cannot.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use isobar_proto::geo::{cell_center, cell_count, distance_km};
use isobar_proto::v1::{AnswerSet, ClientGroupOverride, GeoGrid, ServiceMap, Snapshot, ZoneData};
use isobar_store::world::{Endpoint, Service, World};

/// Why a world could not be turned into a snapshot. `isobar-store` validates configs before
/// storing them, so this signals a bug or a corrupted store, not an operator mistake.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// A stored zone's records did not parse.
    #[error("zone {zone}: {message}")]
    Zone {
        /// The zone origin.
        zone: String,
        /// What went wrong.
        message: String,
    },
}

/// Computes the snapshot content for `world` given the set of targets that are down.
///
/// `version` and `generated_unix_ms` are left at zero: the caller stamps them when it
/// publishes, so that solving the same inputs twice yields equal results.
pub fn solve(
    world: &World,
    config_version: u64,
    down: &BTreeSet<String>,
) -> Result<Snapshot, SolveError> {
    solve_with_ready(world, config_version, down, &ReadyEndpoints::new())
}

/// Ready replica addresses per service and site, reported by orchestrators through the
/// placement API (service → site → addresses).
pub type ReadyEndpoints =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<String>>>;

/// [`solve`], joined to placement: for a service listed in `ready`, only the listed sites
/// serve it — their reported ready addresses plus their configured endpoints — so clients
/// are never steered to a site whose replicas are not ready. Other services are unaffected.
pub fn solve_with_ready(
    world: &World,
    config_version: u64,
    down: &BTreeSet<String>,
    ready: &ReadyEndpoints,
) -> Result<Snapshot, SolveError> {
    let cell_degrees = world.defaults.cell_degrees;
    let cells = cell_count(cell_degrees);
    let cell_centers: Vec<(f64, f64)> = (0..cells as u32)
        .map(|c| cell_center(cell_degrees, c))
        .collect();

    let mut snapshot = Snapshot {
        version: 0,
        config_version,
        generated_unix_ms: 0,
        grid: Some(GeoGrid { cell_degrees }),
        zones: Vec::with_capacity(world.zones.len()),
        services: Vec::with_capacity(world.services.len()),
        overrides: world
            .client_groups
            .iter()
            .map(|g| ClientGroupOverride {
                group: g.name.clone(),
                cidrs: g.cidrs.clone(),
            })
            .collect(),
    };

    for zone in &world.zones {
        snapshot.zones.push(zone_data(zone, config_version)?);
    }

    for service in &world.services {
        let joined = ready
            .get(&service.name)
            .map(|sites| joined_service(service, sites));
        let service = joined.as_ref().unwrap_or(service);
        snapshot
            .services
            .push(service_map(world, service, down, &cell_centers));
    }
    Ok(snapshot)
}

/// The service as steering should see it under placement: configured endpoints at ready
/// sites only, plus each ready site's reported addresses (unprobed, weight 100).
fn joined_service(
    service: &Service,
    sites: &std::collections::BTreeMap<String, Vec<String>>,
) -> Service {
    let mut joined = service.clone();
    joined.endpoints.retain(|e| sites.contains_key(&e.pop));
    for (site, addresses) in sites {
        for address in addresses {
            if address.parse::<IpAddr>().is_ok()
                && !joined
                    .endpoints
                    .iter()
                    .any(|e| &e.address == address && &e.pop == site)
            {
                // Built through serde so every optional field takes its config default.
                let reported = serde_json::json!({ "pop": site, "address": address });
                if let Ok(endpoint) = serde_json::from_value::<Endpoint>(reported) {
                    joined.endpoints.push(endpoint);
                }
            }
        }
    }
    joined
}

fn zone_data(
    zone: &isobar_store::world::Zone,
    config_version: u64,
) -> Result<ZoneData, SolveError> {
    let zone_err = |message: String| SolveError::Zone {
        zone: zone.name.clone(),
        message,
    };
    let records = isobar_store::config::zone_records(zone).map_err(|e| zone_err(e.to_string()))?;
    let mut serial = 0;
    let mut encoded = Vec::with_capacity(records.len());
    for mut record in records {
        if record.record_type() == RecordType::SOA {
            // The served serial rises with every config change: the configured serial plus
            // the config version, so operators who bump their own serial still see it grow.
            if let RData::SOA(soa) = &mut record.data {
                let bumped = soa.serial.wrapping_add(config_version as u32);
                soa.serial = bumped;
                serial = bumped;
            }
        }
        encoded.push(encode_record(&record).map_err(zone_err)?);
    }
    Ok(ZoneData {
        origin: zone.name.clone(),
        serial,
        records: encoded,
    })
}

fn encode_record(record: &Record) -> Result<Vec<u8>, String> {
    record
        .to_bytes()
        .map_err(|e| format!("cannot encode {}: {e}", record.name))
}

/// A PoP that can serve one service, with its endpoints in answer order.
struct Candidate<'a> {
    name: &'a str,
    location: (f64, f64),
    v4: Vec<&'a str>,
    v6: Vec<&'a str>,
}

fn service_map(
    world: &World,
    service: &Service,
    down: &BTreeSet<String>,
    cell_centers: &[(f64, f64)],
) -> ServiceMap {
    let candidates = candidates(world, service, down);
    let limit = service.answers(&world.defaults) as usize;
    let mut answers = AnswerTable::default();

    let default_answer = match world.defaults.location {
        Some(loc) => answers.intern(answer_for(&candidates, Some((loc.lat, loc.lon)), limit)),
        None => answers.intern(answer_for(&candidates, None, limit)),
    };

    let mut cell_answers: Vec<u32> = cell_centers
        .iter()
        .map(|&center| answers.intern(answer_for(&candidates, Some(center), limit)))
        .collect();
    if cell_answers.iter().all(|&a| a == default_answer) {
        cell_answers.clear();
    }

    let group_answers = world
        .client_groups
        .iter()
        .filter_map(|group| {
            let region = world.region(&group.region)?;
            let idx = answers.intern(answer_for(
                &candidates,
                Some((region.lat, region.lon)),
                limit,
            ));
            Some((group.name.clone(), idx))
        })
        .collect();

    ServiceMap {
        name: service.name.clone(),
        ttl: service.ttl(&world.defaults),
        use_ecs: service.ecs,
        answers: answers.sets,
        cell_answers,
        group_answers,
        default_answer,
    }
}

/// PoPs with serving endpoints for this service, in name order. Falls back to every
/// endpoint (fail open) when none is healthy.
fn candidates<'a>(
    world: &'a World,
    service: &'a Service,
    down: &BTreeSet<String>,
) -> Vec<Candidate<'a>> {
    let healthy = |e: &Endpoint| e.target_id().is_none_or(|id| !down.contains(&id));
    let any_healthy = service.endpoints.iter().any(healthy);
    let mut by_pop: Vec<Candidate<'a>> = Vec::new();
    for pop in &world.pops {
        let mut endpoints: Vec<&Endpoint> = service
            .endpoints
            .iter()
            .filter(|e| e.pop == pop.name && (!any_healthy || healthy(e)))
            .collect();
        if endpoints.is_empty() {
            continue;
        }
        // Heavier endpoints first; the address breaks ties so the order is stable.
        endpoints.sort_by(|a, b| {
            b.weight
                .cmp(&a.weight)
                .then_with(|| a.address.cmp(&b.address))
        });
        let mut candidate = Candidate {
            name: &pop.name,
            location: (pop.lat, pop.lon),
            v4: vec![],
            v6: vec![],
        };
        for endpoint in endpoints {
            match endpoint.address.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => candidate.v4.push(&endpoint.address),
                Ok(IpAddr::V6(_)) => candidate.v6.push(&endpoint.address),
                Err(_) => {} // rejected by config validation; never stored
            }
        }
        by_pop.push(candidate);
    }
    by_pop
}

/// The answer for a client at `location` (None: unknown, PoPs in name order).
fn answer_for(
    candidates: &[Candidate<'_>],
    location: Option<(f64, f64)>,
    limit: usize,
) -> AnswerSet {
    let mut order: Vec<(f64, &Candidate<'_>)> = candidates
        .iter()
        .map(|c| (location.map_or(0.0, |l| distance_km(l, c.location)), c))
        .collect();
    // Stable sort keeps name order among equal distances.
    order.sort_by(|a, b| a.0.total_cmp(&b.0));

    let mut answer = AnswerSet::default();
    for (_, candidate) in order {
        let before = (answer.ipv4.len(), answer.ipv6.len());
        for addr in &candidate.v4 {
            if answer.ipv4.len() < limit {
                answer.ipv4.push((*addr).to_owned());
            }
        }
        for addr in &candidate.v6 {
            if answer.ipv6.len() < limit {
                answer.ipv6.push((*addr).to_owned());
            }
        }
        if (answer.ipv4.len(), answer.ipv6.len()) != before {
            answer.pops.push(candidate.name.to_owned());
        }
        if answer.ipv4.len() >= limit && answer.ipv6.len() >= limit {
            break;
        }
    }
    answer
}

/// Deduplicates answer sets so each distinct answer is stored once.
#[derive(Default)]
struct AnswerTable {
    sets: Vec<AnswerSet>,
    index: HashMap<(Vec<String>, Vec<String>), u32>,
}

impl AnswerTable {
    fn intern(&mut self, set: AnswerSet) -> u32 {
        let key = (set.ipv4.clone(), set.ipv6.clone());
        if let Some(&idx) = self.index.get(&key) {
            return idx;
        }
        let idx = self.sets.len() as u32;
        self.sets.push(set);
        self.index.insert(key, idx);
        idx
    }
}

#[cfg(test)]
mod tests;
