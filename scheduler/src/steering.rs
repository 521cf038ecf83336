//! The steering solver: (world, measurements, previous result) → the steering snapshot.
//!
//! A pure function, so it is deterministic, unit-testable and usable by simulations. For
//! every GSLB name it builds, per arm (the whole service, or a gray rule's baseline and
//! canary arms):
//!
//! 1. the PoPs that may serve, after health and the failover guardrails ([`guard`]);
//! 2. the client groups (grid cells, CIDR-override groups, `unknown`) with their demand,
//!    observed by the frontends or declared;
//! 3. the cost of each group at its near PoPs ([`cost`]: RTT estimated from geography and
//!    measured PoP-to-PoP latency, replaced by client reports when there are enough, plus
//!    loss and load penalties with the service's weights), from one [`assign::Planner`]
//!    whose nearest-PoP lists every service of the solve shares;
//! 4. a capacity-aware assignment of the demand with hysteresis against the previous one
//!    ([`assign`]), turned into weighted routes: a primary PoP, then fallbacks from other
//!    failure domains ([`map`]).
//!
//! Frontends pick a route per query by the client key's hash against the weights, then a
//! node per site with Maglev, so a client keeps its node while its mapping holds.
//!
//! When no PoP may serve (or the serving share falls below the guard's minimum), the
//! service's all-down policy decides: serve every endpoint (the default, as Route 53, gdnsd
//! and PowerDNS fail open), serve fallback addresses, or answer with no address.

pub mod assign;
pub mod cost;
pub mod explain;
pub mod gray;
pub mod guard;
pub mod map;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use isobar_proto::v1::{ClientGroupOverride, GeoGrid, GrayRule, ServiceMap, Snapshot, ZoneData};
use isobar_store::world::{AllDown, Endpoint, Service, World};

use self::assign::{Assignment, Params, Planner};
use self::cost::{ClientReports, LatencyModel, NoReports, PopSignals};
use self::gray::ArmHealth;
use self::guard::{GuardState, PopHealth, PopState};
use self::map::{ArmSolution, Groups, PopUse, Shared};

/// How many lowest-RTT PoPs the solve's planner keeps per client group. A group's
/// candidates and fallbacks come from this list while it holds enough serving PoPs, else
/// from a bounded scan, so the figure trades list-building time against scans, never
/// correctness.
pub const NEAR_POPS: usize = 24;

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

/// Ready replica addresses per service and site, reported by orchestrators through the
/// placement API (service → site → addresses).
pub type ReadyEndpoints = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// Probe figures of one health target, for the gray verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TargetStats {
    /// Samples in the window.
    pub samples: u64,
    /// Loss, percent.
    pub loss_percent: f64,
    /// Median RTT, ms.
    pub rtt_ms: f64,
}

/// The measurements and facts a solve reads besides the world.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Health targets that are down.
    pub down: BTreeSet<String>,
    /// Ready replicas reported through the placement API.
    pub ready: ReadyEndpoints,
    /// Observed demand: service → group label → queries per second.
    pub demand: BTreeMap<String, BTreeMap<String, f64>>,
    /// Probe loss and node load per PoP.
    pub signals: BTreeMap<String, PopSignals>,
    /// Measured PoP-to-PoP RTT, ms (mesh medians or network coordinates).
    pub core_rtt: BTreeMap<(String, String), f64>,
    /// Probe figures per health target id.
    pub target_stats: BTreeMap<String, TargetStats>,
    /// Services whose drains an operator confirmed (lifts the drain budget).
    pub confirmed_drains: BTreeSet<String>,
    /// The time of the solve, Unix ms (ramps, drain windows, failback).
    pub now_ms: i64,
}

/// What the solver carries from one solve to the next.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SteeringState {
    /// Per service.
    pub services: BTreeMap<String, ServiceState>,
}

/// One service's memory and report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceState {
    /// The baseline (or only) arm's assignment.
    pub assignment: Assignment,
    /// The canary arm's assignment, with a gray rule in force.
    pub canary: Option<Assignment>,
    /// Guardrail memory.
    pub guard: GuardState,
    /// The report: per PoP state and load.
    pub report: ServiceReport,
}

/// What explain and what-if show of one service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceReport {
    /// Per PoP of the world: guard state, capacity and load (baseline + canary).
    pub pops: Vec<PopReport>,
    /// Demand above usable capacity, queries per second.
    pub unserved_demand: f64,
    /// The all-down policy in force, if it applies now.
    pub all_down: Option<AllDown>,
    /// The gray rule in force: (name, share percent); `None` without one.
    pub gray: Option<(String, f64)>,
}

/// One PoP in a service report.
#[derive(Debug, Clone, PartialEq)]
pub struct PopReport {
    /// PoP name.
    pub pop: String,
    /// Guard state (`serving`, `drained`, `held`, `recovering`), or `none` without endpoints.
    pub state: String,
    /// Capacity, queries per second (`None` = unbounded).
    pub capacity: Option<f64>,
    /// Assigned demand, queries per second.
    pub load: f64,
}

impl PopReport {
    /// Load over capacity (0 when unbounded).
    pub fn utilisation(&self) -> f64 {
        PopUse {
            pop: String::new(),
            serving: true,
            capacity: self.capacity,
            load: self.load,
        }
        .utilisation()
    }
}

/// Something the runtime must act on and audit.
#[derive(Debug, Clone, PartialEq)]
pub enum SteeringEvent {
    /// A PoP went down beyond the drain budget and is held in rotation.
    DrainHeld {
        /// Service.
        service: String,
        /// PoP.
        pop: String,
    },
    /// A canary lost its A/B verdict and must be rolled back.
    Rollback {
        /// Service.
        service: String,
        /// Rule name.
        rule: String,
        /// Why.
        reason: String,
    },
}

/// A solve's result.
#[derive(Debug, Clone)]
pub struct Solved {
    /// The snapshot content (version and timestamp zero).
    pub snapshot: Snapshot,
    /// State for the next solve, with the reports.
    pub state: SteeringState,
    /// Events for the runtime.
    pub events: Vec<SteeringEvent>,
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

/// [`solve`], joined to placement: for a service listed in `ready`, only the listed sites
/// serve it — their reported ready addresses plus their configured endpoints — so clients
/// are never steered to a site whose replicas are not ready. Other services are unaffected.
pub fn solve_with_ready(
    world: &World,
    config_version: u64,
    down: &BTreeSet<String>,
    ready: &ReadyEndpoints,
) -> Result<Snapshot, SolveError> {
    let inputs = Inputs {
        down: down.clone(),
        ready: ready.clone(),
        ..Inputs::default()
    };
    Ok(solve_full(world, config_version, &inputs, &NoReports, None)?.snapshot)
}

/// The full solve: every service's arms, guardrails, gray rules and reports.
///
/// Every arm's assignment and fallback order come from one [`Planner`] built per solve: its
/// nearest-PoP lists depend only on the groups' locations, the latency model and the PoP
/// signals, which every service shares, so no arm prices every group at every PoP. A gray
/// rule's canary arm is solved as its own planner service (its own serving set, capacity
/// and previous assignment) on the same lists, as the baseline is.
pub fn solve_full(
    world: &World,
    config_version: u64,
    inputs: &Inputs,
    reports: &dyn ClientReports,
    previous: Option<&SteeringState>,
) -> Result<Solved, SolveError> {
    solve_with(
        world,
        config_version,
        inputs,
        reports,
        previous,
        #[cfg(test)]
        false,
    )
}

/// [`solve_full`] pricing every group at every PoP and assigning with [`assign::assign`]:
/// the reference the planner path must match.
#[cfg(test)]
pub(crate) fn solve_full_dense(
    world: &World,
    config_version: u64,
    inputs: &Inputs,
    reports: &dyn ClientReports,
    previous: Option<&SteeringState>,
) -> Result<Solved, SolveError> {
    solve_with(world, config_version, inputs, reports, previous, true)
}

fn solve_with(
    world: &World,
    config_version: u64,
    inputs: &Inputs,
    reports: &dyn ClientReports,
    previous: Option<&SteeringState>,
    #[cfg(test)] dense: bool,
) -> Result<Solved, SolveError> {
    let mut snapshot = Snapshot {
        version: 0,
        config_version,
        generated_unix_ms: 0,
        grid: Some(GeoGrid {
            cell_degrees: world.defaults.cell_degrees,
        }),
        zones: Vec::with_capacity(world.zones.len()),
        services: Vec::with_capacity(world.services.len()),
        overrides: world
            .client_groups
            .iter()
            .map(|g| ClientGroupOverride {
                group: g.name.clone(),
                cidrs: g.cidrs.clone(),
                asns: g.asns.clone(),
            })
            .collect(),
        accounts: world.accounts.iter().map(httpdns_account).collect(),
        httpdns: Some(httpdns_settings(&world.httpdns)),
    };
    for zone in &world.zones {
        snapshot.zones.push(zone_data(zone, config_version)?);
    }

    let groups = Groups::of(world);
    let pops: Vec<(&str, (f64, f64))> = world
        .pops
        .iter()
        .map(|p| (p.name.as_str(), (p.lat, p.lon)))
        .collect();
    let latency = LatencyModel::new(&pops, Some(&inputs.core_rtt));
    let signals: Vec<PopSignals> = world
        .pops
        .iter()
        .map(|p| inputs.signals.get(&p.name).copied().unwrap_or_default())
        .collect();
    let planner = Planner::new(
        groups.locations.clone(),
        latency,
        signals,
        Params::default(),
        NEAR_POPS,
    );
    let reported = reported_groups(&groups, reports);
    let shared = Shared {
        planner: &planner,
        reported: &reported,
        #[cfg(test)]
        dense,
    };
    let mut state = SteeringState::default();
    let mut events = Vec::new();
    for service in &world.services {
        let joined = inputs
            .ready
            .get(&service.name)
            .map(|sites| joined_service(service, sites));
        let service = joined.as_ref().unwrap_or(service);
        let prev = previous.and_then(|p| p.services.get(&service.name));
        let solved = solve_service(
            world,
            service,
            &groups,
            &shared,
            inputs,
            reports,
            prev,
            &mut events,
        );
        snapshot.services.push(solved.0);
        state.services.insert(service.name.clone(), solved.1);
    }
    Ok(Solved {
        snapshot,
        state,
        events,
    })
}

/// Solves one service: guardrails, arms, gray rule, all-down policy.
#[allow(clippy::too_many_arguments)]
fn solve_service(
    world: &World,
    service: &Service,
    groups: &Groups,
    shared: &Shared<'_>,
    inputs: &Inputs,
    reports: &dyn ClientReports,
    previous: Option<&ServiceState>,
    events: &mut Vec<SteeringEvent>,
) -> (ServiceMap, ServiceState) {
    let healthy = |e: &Endpoint| e.target_id().is_none_or(|id| !inputs.down.contains(&id));
    let all: Vec<&Endpoint> = service.endpoints.iter().collect();
    let by_pop = map::endpoints_by_pop(world, &all);

    // Guardrails at PoP granularity, over the service's PoPs.
    let caps: Vec<Option<f64>> = (0..world.pops.len())
        .map(|i| map::capacity(world, i, &by_pop[i], &by_pop[i]))
        .collect();
    let with_endpoints: Vec<usize> = (0..world.pops.len())
        .filter(|&i| !by_pop[i].is_empty())
        .collect();
    let bounded: f64 = with_endpoints.iter().filter_map(|&i| caps[i]).sum();
    let share = |i: usize| -> f64 {
        let n = with_endpoints.len().max(1) as f64;
        match caps[i] {
            Some(c) if bounded > 0.0 => 100.0 * c / bounded,
            _ => 100.0 / n,
        }
    };
    let health: Vec<PopHealth<'_>> = with_endpoints
        .iter()
        .map(|&i| PopHealth {
            pop: &world.pops[i].name,
            healthy: by_pop[i].iter().any(|e| healthy(e)),
            share: share(i),
        })
        .collect();
    let (guard_states, guard_next) = guard::step(
        &service.steering.guard,
        &previous.map(|p| p.guard.clone()).unwrap_or_default(),
        &health,
        inputs.confirmed_drains.contains(&service.name),
        inputs.now_ms,
    );
    let mut pop_state: Vec<Option<PopState>> = vec![None; world.pops.len()];
    for (&i, &s) in with_endpoints.iter().zip(&guard_states) {
        pop_state[i] = Some(s);
        if s == PopState::Held {
            events.push(SteeringEvent::DrainHeld {
                service: service.name.clone(),
                pop: world.pops[i].name.clone(),
            });
        }
    }
    let serving_share: f64 = with_endpoints
        .iter()
        .zip(&guard_states)
        .filter(|(_, s)| s.serves())
        .map(|(&i, _)| share(i))
        .sum();
    let below_minimum = serving_share + 1e-9 < service.steering.guard.min_healthy_percent;
    let none_serving = !guard_states.iter().any(|s| s.serves());
    let all_down = (none_serving || below_minimum).then_some(service.steering.all_down);

    let observed = inputs.demand.get(&service.name);
    let declared: BTreeMap<String, f64> = world
        .client_groups
        .iter()
        .filter_map(|g| Some((format!("group:{}", g.name), g.demand?)))
        .collect();
    let demand_of = |g: usize| -> f64 {
        let label = &groups.labels[g];
        // Declared demand is a floor: what the operator expects even before (or while)
        // the frontends observe less.
        let seen = observed.and_then(|d| d.get(label).copied()).unwrap_or(0.0);
        seen.max(declared.get(label).copied().unwrap_or(0.0))
    };

    let gray_rule = service
        .gray
        .as_ref()
        .filter(|g| gray::share_percent(g, inputs.now_ms) > 0.0 || !g.cohort.is_empty());
    let share_pct = gray_rule.map_or(0.0, |g| gray::share_percent(g, inputs.now_ms));
    // A rule's target endpoints never serve the baseline, even at 0 % (after a rollback):
    // they take exactly the canary arm's clients.
    let split = |canary: bool| -> Vec<Vec<&Endpoint>> {
        by_pop
            .iter()
            .map(|list| {
                list.iter()
                    .copied()
                    .filter(|e| {
                        service
                            .gray
                            .as_ref()
                            .is_none_or(|g| gray::is_canary(g, e) == canary)
                    })
                    .collect()
            })
            .collect()
    };
    let solve_arm =
        |arm_all: &[Vec<&Endpoint>], fraction: f64, prev: Option<&Assignment>| -> ArmSolution {
            let serving: Vec<Vec<&Endpoint>> = arm_all
                .iter()
                .enumerate()
                .map(|(i, list)| serving_in(all_down, pop_state[i], list, &healthy))
                .collect();
            let scaled = |g: usize| demand_of(g) * fraction;
            map::solve_arm(
                world,
                service,
                groups,
                arm_all,
                &serving,
                &map::ArmInputs {
                    demand: &scaled,
                    signals: &inputs.signals,
                    shared,
                    reports,
                    previous: prev,
                },
            )
        };

    let base_all = split(false);
    let baseline = solve_arm(
        &base_all,
        1.0 - share_pct / 100.0,
        previous.map(|p| &p.assignment),
    );
    let mut canary_solution = None;
    if let Some(rule) = gray_rule {
        let canary_all = split(true);
        let solution = solve_arm(
            &canary_all,
            share_pct / 100.0,
            previous.and_then(|p| p.canary.as_ref()),
        );
        let serves = solution
            .map
            .sites
            .iter()
            .any(|s| s.nodes.iter().any(|n| !n.down));
        if serves {
            if let Some(verdict) = &rule.verdict {
                // Probes and client reports are judged separately: an arm that shares a
                // health check with the other cannot hide its users' failures behind it.
                let probes = |arm: &[Vec<&Endpoint>]| {
                    let mut total = ArmHealth::default();
                    for e in arm.iter().flatten() {
                        if let Some(stats) =
                            e.target_id().and_then(|id| inputs.target_stats.get(&id))
                        {
                            total.add(ArmHealth {
                                samples: stats.samples,
                                error_percent: stats.loss_percent,
                                rtt_ms: stats.rtt_ms,
                            });
                        }
                    }
                    total
                };
                let clients = |arm: &[Vec<&Endpoint>]| {
                    let mut total = ArmHealth::default();
                    for e in arm.iter().flatten() {
                        if let Some(r) = reports.target(&e.address) {
                            total.add(ArmHealth {
                                samples: r.samples,
                                error_percent: 100.0 * r.failure_ratio,
                                rtt_ms: r.rtt_ms,
                            });
                        }
                    }
                    total
                };
                let reason = gray::verdict(verdict, probes(&base_all), probes(&canary_all))
                    .map(|r| format!("probes: {r}"))
                    .or_else(|| {
                        gray::verdict(verdict, clients(&base_all), clients(&canary_all))
                            .map(|r| format!("client reports: {r}"))
                    });
                if let Some(reason) = reason {
                    events.push(SteeringEvent::Rollback {
                        service: service.name.clone(),
                        rule: rule.name.clone(),
                        reason,
                    });
                }
            }
            canary_solution = Some((rule, solution));
        }
    }

    let mut map = match all_down {
        Some(AllDown::Fallback) => map::static_map(&service.steering.fallback),
        Some(AllDown::Refuse) => map::static_map(&[]),
        _ => baseline.map.clone(),
    };
    map.name = service.name.clone();
    map.ttl = service.ttl(&world.defaults);
    map.use_ecs = service.ecs;
    if matches!(all_down, None | Some(AllDown::ServeAll))
        && let Some((rule, solution)) = &canary_solution
    {
        map.gray = Some(Box::new(GrayRule {
            name: rule.name.clone(),
            share_ppm: gray::share_ppm(share_pct),
            salt: gray::salt(&service.name, &rule.name),
            cohort_cidrs: rule.cohort.cidrs.clone(),
            cohort_countries: rule.cohort.countries.clone(),
            cohort_devices: rule.cohort.devices.clone(),
            canary: Some(Box::new(solution.map.clone())),
        }));
    }

    let report = ServiceReport {
        pops: world
            .pops
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let canary_load = canary_solution
                    .as_ref()
                    .map_or(0.0, |(_, s)| s.pops[i].load);
                PopReport {
                    pop: p.name.clone(),
                    state: pop_state[i].map_or("none", PopState::as_str).to_owned(),
                    capacity: caps[i],
                    load: baseline.pops[i].load + canary_load,
                }
            })
            .collect(),
        unserved_demand: baseline.assignment.unserved_demand
            + canary_solution
                .as_ref()
                .map_or(0.0, |(_, s)| s.assignment.unserved_demand),
        all_down,
        gray: canary_solution
            .as_ref()
            .map(|(rule, _)| (rule.name.clone(), share_pct)),
    };
    let state = ServiceState {
        assignment: baseline.assignment,
        canary: canary_solution.map(|(_, s)| s.assignment),
        guard: guard_next,
        report,
    };
    (map, state)
}

/// The indices of the groups with client reports, ascending: every group when `reports`
/// cannot list them (so no report is ever ignored, at the price of pricing every group at
/// every PoP).
fn reported_groups(groups: &Groups, reports: &dyn ClientReports) -> Vec<usize> {
    let Some(labels) = reports.groups() else {
        return (0..groups.labels.len()).collect();
    };
    let index: std::collections::HashMap<&str, usize> = groups
        .labels
        .iter()
        .enumerate()
        .map(|(g, label)| (label.as_str(), g))
        .collect();
    let mut reported: Vec<usize> = labels
        .iter()
        .filter_map(|label| index.get(label.as_str()).copied())
        .collect();
    reported.sort_unstable();
    reported.dedup();
    reported
}

/// The endpoints that take traffic in PoP `i`: healthy ones in serving PoPs, every one in a
/// held PoP, every one everywhere under "serve all".
fn serving_in<'e>(
    all_down: Option<AllDown>,
    state: Option<PopState>,
    endpoints: &[&'e Endpoint],
    healthy: &dyn Fn(&Endpoint) -> bool,
) -> Vec<&'e Endpoint> {
    match (all_down, state) {
        (Some(AllDown::ServeAll), _) | (_, Some(PopState::Held)) => endpoints.to_vec(),
        (_, Some(PopState::Serving)) => endpoints.iter().copied().filter(|e| healthy(e)).collect(),
        _ => Vec::new(),
    }
}

/// The service as steering should see it under placement: configured endpoints at ready
/// sites only, plus each ready site's reported addresses, each with the service's
/// `replica_capacity` (so a PoP's capacity follows its ready replicas).
fn joined_service(service: &Service, sites: &BTreeMap<String, Vec<String>>) -> Service {
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
                if let Ok(mut endpoint) = serde_json::from_value::<Endpoint>(reported) {
                    endpoint.capacity = service.steering.replica_capacity;
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

fn httpdns_account(a: &isobar_store::world::HttpdnsAccount) -> isobar_proto::v1::HttpdnsAccount {
    isobar_proto::v1::HttpdnsAccount {
        id: a.id.clone(),
        secret: a.secret.clone(),
        unsigned_allowed: a.unsigned_allowed,
    }
}

fn httpdns_settings(s: &isobar_store::world::HttpdnsSettings) -> isobar_proto::v1::HttpdnsSettings {
    use isobar_proto::v1::{RateLimit, ServiceIps};
    let limit = |l: isobar_store::world::RateLimit| RateLimit {
        rate: l.rate,
        burst: l.burst,
    };
    isobar_proto::v1::HttpdnsSettings {
        service_ips: s
            .service_ips
            .iter()
            .map(|e| ServiceIps {
                region: e.region.clone(),
                ipv4: e.ipv4.clone(),
                ipv6: e.ipv6.clone(),
            })
            .collect(),
        per_client: Some(limit(s.per_client)),
        per_account: Some(limit(s.per_account)),
    }
}

#[cfg(test)]
mod tests;
