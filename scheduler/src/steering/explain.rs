//! Explain and what-if: why one client gets its answer, and what the map would become if
//! PoPs, regions or endpoints failed.
//!
//! Explain answers with the frontends' own selection code: it installs the scheduler's
//! current snapshot into a private [`isobar_dns::Engine`] (with the GeoIP and ASN databases
//! the scheduler was started with) and calls `resolve_service`, so its answer equals a
//! frontend's with the same databases bit for bit (without an ASN database it says so rather
//! than guess at ASN groups); the costs, capacities and weights beside it come from the same
//! inputs and solver state the snapshot was solved from. What-if re-solves a copy of the
//! inputs with the failed endpoints down and the live state as `previous`, and never writes
//! anything back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use isobar_dns::{AsnDb, ClientKey, Decision, EcsSubnet, Engine, GeoDb};
use isobar_proto::v1::{
    ExplainAnswer, ExplainGray, ExplainGroup, ExplainGuard, ExplainPop, ExplainWeight, Explanation,
    Snapshot, WhatIfGroup, WhatIfPop, WhatIfResult, WhatIfService,
};
use isobar_store::world::{AllDown, Service, World};

use super::assign::Assignment;
use super::cost::{self, ClientReports, CostWeights, LatencyModel, PopSignals};
use super::map::Groups;
use super::{Inputs, PopReport, ServiceReport, SolveError, SteeringState};

/// At most this many groups are listed per service in a what-if result.
pub const WHAT_IF_GROUPS: usize = 50;

/// Why explain or what-if could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The name is not a GSLB service of the served snapshot.
    #[error("no GSLB service named {0}")]
    UnknownService(String),
    /// A request field is malformed.
    #[error("{field}: {message}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The current snapshot could not be loaded into an engine (a bug).
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// The what-if solve failed (a bug or a corrupted store).
    #[error(transparent)]
    Solve(#[from] SolveError),
}

/// One explain question.
#[derive(Debug, Clone)]
pub struct ExplainQuery {
    /// The GSLB name.
    pub name: String,
    /// The client's (or its resolver's) address.
    pub client: IpAddr,
    /// The ECS subnet (address, source prefix), if any.
    pub ecs: Option<(IpAddr, u8)>,
    /// The HTTPDNS device ID, if any.
    pub device: Option<String>,
}

impl ExplainQuery {
    /// Parses the request's fields: `client` an address, `ecs` "ADDRESS/PREFIX" or empty,
    /// `device` any string or empty. Errors name the field.
    pub fn parse(name: &str, client: &str, ecs: &str, device: &str) -> Result<Self, ExplainError> {
        if name.trim().is_empty() {
            return Err(invalid("name", "empty".into()));
        }
        let client: IpAddr = client
            .trim()
            .parse()
            .map_err(|_| invalid("client", format!("{client:?} is not an IP address")))?;
        let ecs = match ecs.trim() {
            "" => None,
            text => {
                let net: ipnet::IpNet = text.parse().map_err(|_| {
                    invalid("ecs", format!("{text:?} is not a subnet (ADDRESS/PREFIX)"))
                })?;
                let net = net.trunc();
                Some((net.addr(), net.prefix_len()))
            }
        };
        Ok(Self {
            name: name.trim().to_owned(),
            client,
            ecs,
            device: Some(device.trim())
                .filter(|d| !d.is_empty())
                .map(str::to_owned),
        })
    }
}

fn invalid(field: &'static str, message: String) -> ExplainError {
    ExplainError::Invalid { field, message }
}

/// What explain and what-if read: the world, the served snapshot, and the inputs and state
/// it was solved from.
pub struct View<'a> {
    /// The world.
    pub world: &'a World,
    /// Its config version.
    pub config_version: u64,
    /// The snapshot frontends serve (version > 0).
    pub snapshot: &'a Snapshot,
    /// The solver's inputs as of now.
    pub inputs: &'a Inputs,
    /// Client reports (RUM).
    pub reports: &'a dyn ClientReports,
    /// The solver's state from the last solve.
    pub state: &'a SteeringState,
}

/// Explains `query` over `view`, locating clients with `geo` and matching ASN groups with
/// `asn` like the frontends do.
pub fn explain(
    view: &View<'_>,
    geo: Option<Arc<GeoDb>>,
    asn: Option<Arc<AsnDb>>,
    query: &ExplainQuery,
) -> Result<Explanation, ExplainError> {
    let engine = Engine::with_asn(geo, asn);
    engine
        .install(view.snapshot)
        .map_err(|e| ExplainError::Snapshot(e.to_string()))?;
    let device_hash = query
        .device
        .as_deref()
        .map(isobar_proto::hash::client_key_device);
    let key = ClientKey {
        source: query.client,
        subnet: query.ecs.map(|(addr, source_prefix)| EcsSubnet {
            addr,
            source_prefix,
        }),
        device: device_hash,
    };
    let unknown = || ExplainError::UnknownService(query.name.clone());
    let answer = engine
        .resolve_service(&query.name, key)
        .ok_or_else(unknown)?;
    let service = find_service(view.world, &query.name).ok_or_else(unknown)?;

    // The address steered on, as the engine picks it.
    let addr = match query.ecs {
        Some((addr, prefix)) if service.ecs && prefix > 0 => addr,
        _ => query.client.to_canonical(),
    };
    let located = engine.geo().map(|g| g.locate(addr));
    let location = located.and_then(|l| l.location);
    let groups = Groups::of(view.world);
    let (label, decided_by) = match answer.decision() {
        Decision::Override(i) => (
            format!("group:{}", override_names(view.snapshot)[i as usize]),
            "override",
        ),
        Decision::Asn(i) => (
            format!("group:{}", override_names(view.snapshot)[i as usize]),
            "asn",
        ),
        Decision::GeoCell(cell) => (format!("cell:{cell}"), "geoip"),
        // One answer for every location: the client's cell (when located) was solved like
        // any other, and its answer is the default.
        Decision::Default => match location {
            Some((lat, lon)) => (
                format!(
                    "cell:{}",
                    isobar_proto::geo::cell_index(view.world.defaults.cell_degrees, lat, lon)
                ),
                "default",
            ),
            None => ("unknown".to_owned(), "default"),
        },
    };
    let g = groups
        .labels
        .iter()
        .position(|l| *l == label)
        .unwrap_or(groups.unknown());

    let svc_state = view.state.services.get(&service.name);
    let report = svc_state.map(|s| s.report.clone()).unwrap_or_default();
    let assignment = svc_state.and_then(|s| {
        if answer.canary() {
            s.canary.as_ref()
        } else {
            Some(&s.assignment)
        }
    });
    let weights_of = |a: Option<&Assignment>| -> Vec<(u32, f64)> {
        a.and_then(|a| a.groups.get(g)).cloned().unwrap_or_default()
    };
    let weights = weights_of(assignment);

    let latency = latency_model(view.world, view.inputs);
    let cost_weights = CostWeights {
        rtt: service.steering.cost.rtt,
        loss: service.steering.cost.loss,
        load: service.steering.cost.load,
    };
    let signals: Vec<PopSignals> = view
        .world
        .pops
        .iter()
        .map(|p| {
            view.inputs
                .signals
                .get(&p.name)
                .copied()
                .unwrap_or_default()
        })
        .collect();
    let location_of_group = groups.locations[g];
    let costs = cost::group_costs(
        &latency,
        &label,
        location_of_group,
        &signals,
        &cost_weights,
        view.reports,
    );
    let rtts = latency.rtt_row(location_of_group);
    let mut pops: Vec<ExplainPop> = report
        .pops
        .iter()
        .enumerate()
        .filter(|(_, p)| p.state != "none")
        .map(|(i, p)| {
            let s = signals[i];
            let loss_penalty = cost_weights.loss * s.loss_percent.max(0.0);
            let load_penalty = cost_weights.load * s.utilisation.max(0.0);
            let modelled = cost::modelled_cost(&cost_weights, rtts[i], loss_penalty + load_penalty);
            // A usable client report replaced the estimate when the cost differs from it.
            let report_used = costs[i].to_bits() != modelled.to_bits();
            let rtt_ms = match view.reports.rtt(&label, &p.pop) {
                Some(r) if report_used => r.rtt_ms,
                _ => rtts[i],
            };
            ExplainPop {
                pop: p.pop.clone(),
                cost: costs[i],
                rtt_ms,
                loss_penalty,
                load_penalty,
                client_report: report_used,
                capacity: p.capacity,
                load: p.load,
                utilisation: p.utilisation(),
                state: p.state.clone(),
                weight: weights
                    .iter()
                    .find(|(q, _)| *q as usize == i)
                    .map_or(0.0, |(_, w)| *w),
            }
        })
        .collect();
    pops.sort_by(|a, b| a.cost.total_cmp(&b.cost).then_with(|| a.pop.cmp(&b.pop)));

    let gray = report.gray.as_ref().map(|(rule, share)| {
        let cohort = service.gray.as_ref().map(|g| &g.cohort);
        let why = if !answer.canary() {
            "hash"
        } else if let Some(c) = cohort {
            let country = engine.geo().and_then(|g| g.country(addr));
            if query.device.as_ref().is_some_and(|d| c.devices.contains(d)) {
                "cohort:device"
            } else if c.cidrs.iter().any(|n| {
                n.parse::<ipnet::IpNet>()
                    .is_ok_and(|n| n.trunc().contains(&addr))
            }) {
                "cohort:cidr"
            } else if country
                .is_some_and(|cc| c.countries.iter().any(|x| x.as_bytes() == cc.as_slice()))
            {
                "cohort:country"
            } else {
                "hash"
            }
        } else {
            "hash"
        };
        ExplainGray {
            rule: rule.clone(),
            arm: if answer.canary() {
                "canary"
            } else {
                "baseline"
            }
            .to_owned(),
            share_percent: *share,
            why: why.to_owned(),
        }
    });

    let demand = demand_of(view.world, view.inputs, &service.name);
    let asn_of = engine.asn().and_then(|db| db.describe(addr));
    Ok(Explanation {
        service: service.name.clone(),
        snapshot_version: view.snapshot.version,
        answer: Some(ExplainAnswer {
            ipv4: answer.ipv4().iter().map(ToString::to_string).collect(),
            ipv6: answer.ipv6().iter().map(ToString::to_string).collect(),
            pops: answer.pops().to_vec(),
            ttl: answer.ttl(),
            ecs_scope: u32::from(answer.scope_prefix()),
        }),
        group: Some(ExplainGroup {
            demand: demand.get(&label).copied().unwrap_or(0.0),
            label,
            decided_by: decided_by.to_owned(),
            steering_address: addr.to_string(),
            located: location.is_some(),
            lat: location.map_or(0.0, |l| l.0),
            lon: location.map_or(0.0, |l| l.1),
            prefix_len: match answer.decision() {
                Decision::Override(_) => u32::from(answer.scope_prefix()),
                Decision::Asn(_) => engine
                    .asn()
                    .map_or(0, |db| u32::from(db.lookup(addr).prefix_len)),
                _ => located.map_or(0, |l| u32::from(l.prefix_len)),
            },
            asn: asn_of.as_ref().map_or(0, |a| a.0),
            asn_organization: asn_of.and_then(|a| a.1).unwrap_or_default(),
            asn_db_missing: engine.asn().is_none()
                && view.snapshot.overrides.iter().any(|o| !o.asns.is_empty()),
        }),
        pops,
        weights: named_weights(view.world, &weights),
        gray,
        guard: Some(guard_of(&report)),
    })
}

/// Re-solves steering with the failures in `fails` (`pop=NAME`, `region=NAME`,
/// `endpoint=ADDRESS`) on a copy of the inputs, with the live state as `previous`. The
/// groups labelled in `sample` are always listed.
pub fn what_if(
    view: &View<'_>,
    fails: &[String],
    sample: &[String],
) -> Result<WhatIfResult, ExplainError> {
    if let Some(bad) = sample
        .iter()
        .find(|l| !(l.as_str() == "unknown" || l.starts_with("cell:") || l.starts_with("group:")))
    {
        return Err(invalid(
            "groups",
            format!("{bad:?} is not cell:N, group:NAME or unknown"),
        ));
    }
    let world = view.world;
    let mut failed_pops: BTreeSet<String> = BTreeSet::new();
    let mut failed_addresses: BTreeSet<String> = BTreeSet::new();
    if fails.is_empty() {
        return Err(invalid(
            "fail",
            "give at least one pop=, region= or endpoint= item".into(),
        ));
    }
    for item in fails {
        let (kind, value) = item
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| invalid("fail", format!("{item:?} is not KIND=VALUE")))?;
        match kind {
            "pop" => {
                if world.pop(value).is_none() {
                    return Err(invalid("fail", format!("no PoP named {value:?}")));
                }
                failed_pops.insert(value.to_owned());
            }
            "region" => {
                if world.region(value).is_none() {
                    return Err(invalid("fail", format!("no region named {value:?}")));
                }
                failed_pops.extend(
                    world
                        .pops
                        .iter()
                        .filter(|p| p.region == value)
                        .map(|p| p.name.clone()),
                );
            }
            "endpoint" => {
                let known = world
                    .services
                    .iter()
                    .flat_map(|s| &s.endpoints)
                    .any(|e| e.address == value);
                if !known {
                    return Err(invalid(
                        "fail",
                        format!("no endpoint with address {value:?}"),
                    ));
                }
                failed_addresses.insert(value.to_owned());
            }
            other => {
                return Err(invalid(
                    "fail",
                    format!("{other:?} is not pop, region or endpoint (in {item:?})"),
                ));
            }
        }
    }

    // Failed endpoints with a health target go down; those without one (never health
    // checked) are removed from a copy of the world.
    let mut inputs = view.inputs.clone();
    let mut changed = world.clone();
    let mut failed_targets = BTreeSet::new();
    let fails_endpoint = |e: &isobar_store::world::Endpoint| {
        failed_pops.contains(&e.pop) || failed_addresses.contains(&e.address)
    };
    for service in &mut changed.services {
        for e in service.endpoints.iter().filter(|e| fails_endpoint(e)) {
            if let Some(id) = e.target_id() {
                failed_targets.insert(id);
            }
        }
        service
            .endpoints
            .retain(|e| !fails_endpoint(e) || e.target_id().is_some());
    }
    // Reported ready replicas at a failed site fail too.
    for sites in inputs.ready.values_mut() {
        for (site, addresses) in sites.iter_mut() {
            if failed_pops.contains(site) {
                addresses.clear();
            }
            addresses.retain(|a| !failed_addresses.contains(a));
        }
    }
    inputs.down.extend(failed_targets.iter().cloned());
    let solved = super::solve_full(
        &changed,
        view.config_version,
        &inputs,
        view.reports,
        Some(view.state),
    )?;

    let groups = Groups::of(world);
    let mut services = Vec::with_capacity(world.services.len());
    for service in &world.services {
        let before = view.state.services.get(&service.name);
        let after = solved.state.services.get(&service.name);
        let empty = ServiceReport::default();
        let before_report = before.map_or(&empty, |s| &s.report);
        let after_report = after.map_or(&empty, |s| &s.report);
        let demand = demand_of(world, view.inputs, &service.name);
        let primary = |w: &[(u32, f64)]| {
            w.iter()
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|x| x.0)
        };
        let mut listed: Vec<WhatIfGroup> = Vec::new();
        let mut sampled: Vec<WhatIfGroup> = Vec::new();
        for (g, label) in groups.labels.iter().enumerate() {
            let b = before
                .and_then(|s| s.assignment.groups.get(g))
                .map_or(&[][..], Vec::as_slice);
            let a = after
                .and_then(|s| s.assignment.groups.get(g))
                .map_or(&[][..], Vec::as_slice);
            let d = demand.get(label).copied().unwrap_or(0.0);
            let requested = sample.contains(label);
            if requested || d > 0.0 || primary(b) != primary(a) {
                let list = if requested { &mut sampled } else { &mut listed };
                list.push(WhatIfGroup {
                    group: label.clone(),
                    demand: d,
                    before: named_weights(world, b),
                    after: named_weights(world, a),
                });
            }
        }
        listed.sort_by(|x, y| {
            y.demand
                .total_cmp(&x.demand)
                .then_with(|| x.group.cmp(&y.group))
        });
        let omitted = listed.len().saturating_sub(WHAT_IF_GROUPS);
        listed.truncate(WHAT_IF_GROUPS);
        sampled.append(&mut listed);

        let headroom = service.steering.headroom;
        let mut pops = Vec::new();
        let mut overloaded = Vec::new();
        for (i, p) in world.pops.iter().enumerate() {
            let b = before_report.pops.get(i);
            let a = after_report.pops.get(i);
            let state = |r: Option<&PopReport>| r.map_or("none", |r| r.state.as_str()).to_owned();
            if state(b) == "none" && state(a) == "none" {
                continue;
            }
            if let Some(a) = a
                && overloaded_pop(a, headroom)
            {
                overloaded.push(p.name.clone());
            }
            pops.push(WhatIfPop {
                pop: p.name.clone(),
                capacity: b.and_then(|r| r.capacity),
                load_before: b.map_or(0.0, |r| r.load),
                load_after: a.map_or(0.0, |r| r.load),
                utilisation_before: b.map_or(0.0, PopReport::utilisation),
                utilisation_after: a.map_or(0.0, PopReport::utilisation),
                state_before: state(b),
                state_after: if failed_pops.contains(&p.name) && a.is_none_or(|r| r.state == "none")
                {
                    "failed".to_owned()
                } else {
                    state(a)
                },
            });
        }
        services.push(WhatIfService {
            service: service.name.clone(),
            groups: sampled,
            groups_omitted: omitted as u32,
            pops,
            overloaded,
            unserved_before: before_report.unserved_demand,
            unserved_after: after_report.unserved_demand,
            all_down: after_report.all_down.map(all_down_name).unwrap_or_default(),
        });
    }
    Ok(WhatIfResult {
        failed_pops: failed_pops.into_iter().collect(),
        failed_targets: failed_targets.into_iter().collect(),
        services,
    })
}

/// Overloaded: utilisation above 1 − headroom, i.e. load above the usable capacity the
/// assignment aims to stay under (only possible when the demand does not fit).
pub fn overloaded_pop(pop: &PopReport, headroom: f64) -> bool {
    match pop.capacity {
        Some(_) => pop.utilisation() > 1.0 - headroom + 1e-9,
        None => false,
    }
}

fn find_service<'w>(world: &'w World, name: &str) -> Option<&'w Service> {
    let norm = |n: &str| n.trim_end_matches('.').to_ascii_lowercase();
    let want = norm(name);
    world.services.iter().find(|s| norm(&s.name) == want)
}

/// Override group names in the order frontends index them (first appearance).
fn override_names(snapshot: &Snapshot) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for o in &snapshot.overrides {
        if !names.contains(&o.group.as_str()) {
            names.push(&o.group);
        }
    }
    names
}

fn latency_model(world: &World, inputs: &Inputs) -> LatencyModel {
    let pops: Vec<(&str, (f64, f64))> = world
        .pops
        .iter()
        .map(|p| (p.name.as_str(), (p.lat, p.lon)))
        .collect();
    LatencyModel::new(&pops, Some(&inputs.core_rtt))
}

/// Demand per group label as the solver reads it: observed, else declared.
fn demand_of(world: &World, inputs: &Inputs, service: &str) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = world
        .client_groups
        .iter()
        .filter_map(|g| Some((format!("group:{}", g.name), g.demand?)))
        .collect();
    if let Some(observed) = inputs.demand.get(service) {
        for (label, qps) in observed {
            out.insert(label.clone(), *qps);
        }
    }
    out
}

fn named_weights(world: &World, weights: &[(u32, f64)]) -> Vec<ExplainWeight> {
    let mut out: Vec<ExplainWeight> = weights
        .iter()
        .filter_map(|&(p, w)| {
            Some(ExplainWeight {
                pop: world.pops.get(p as usize)?.name.clone(),
                weight: w,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.weight
            .total_cmp(&a.weight)
            .then_with(|| a.pop.cmp(&b.pop))
    });
    out
}

fn guard_of(report: &ServiceReport) -> ExplainGuard {
    let with = |state: &str| {
        report
            .pops
            .iter()
            .filter(|p| p.state == state)
            .map(|p| p.pop.clone())
            .collect()
    };
    ExplainGuard {
        held: with("held"),
        drained: with("drained"),
        recovering: with("recovering"),
        all_down: report.all_down.map(all_down_name).unwrap_or_default(),
        unserved_demand: report.unserved_demand,
    }
}

/// The config spelling of an all-down policy.
pub fn all_down_name(policy: AllDown) -> String {
    match policy {
        AllDown::ServeAll => "serve-all",
        AllDown::Fallback => "fallback",
        AllDown::Refuse => "refuse",
    }
    .to_owned()
}

#[cfg(test)]
mod tests;

// === the runtime side: read the live view under the scheduler's lock, then solve outside ===

impl crate::Scheduler {
    /// [`explain`] over the scheduler's served snapshot and current inputs.
    pub fn explain(
        &self,
        geo: Option<Arc<GeoDb>>,
        asn: Option<Arc<AsnDb>>,
        query: &ExplainQuery,
    ) -> Result<Explanation, ExplainError> {
        self.with_live_view(|view| explain(view, geo, asn, query))
    }

    /// [`what_if`] over the scheduler's current inputs and state; changes nothing.
    pub fn what_if(
        &self,
        fails: &[String],
        groups: &[String],
    ) -> Result<WhatIfResult, ExplainError> {
        self.with_live_view(|view| what_if(view, fails, groups))
    }

    /// Runs `f` over copies of the live world, snapshot, inputs and state (the lock is held
    /// only while copying).
    fn with_live_view<T>(&self, f: impl FnOnce(&View<'_>) -> T) -> T {
        let (world, config_version) = self.world();
        let snapshot = Arc::clone(&self.watch_snapshots().borrow());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let (inputs, state) = {
            let inner = self.lock();
            (
                crate::Scheduler::steering_inputs(&inner, now),
                inner.steer.solver.clone(),
            )
        };
        let reports = self.client_reports();
        f(&View {
            world: &world,
            config_version,
            snapshot: &snapshot,
            inputs: &inputs,
            reports: &reports,
            state: &state,
        })
    }
}
