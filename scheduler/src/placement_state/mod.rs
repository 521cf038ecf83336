//! Placement over time: the decisions in force, orchestrator status, observed demand and
//! risk control (removal rate limit, grace period for silent sites, bounded failback).
//!
//! [`PlacementBook`] is plain data driven by explicit `now_ms` arguments — no clock, no I/O —
//! so scenario tests step through hours in microseconds. The runtime calls it under its lock
//! and writes the returned [`AuditEvent`]s and decisions to the store.

mod demand;
mod risk;

use std::collections::{BTreeMap, HashMap, VecDeque};

use isobar_proto::v1::{Condition, PlacementDecision, PlacementPolicy, ReadyEndpoint};
use isobar_store::PlacementRisk;
use isobar_store::world::World;

use crate::placement::{self, DistanceRtt, PolicyError, RttModel, SolveInput};

pub use demand::{DEMAND_TTL_MS, DemandBook};
pub use risk::RiskDefaults;

/// What an orchestrator last said about one (service, site).
#[derive(Debug, Clone, PartialEq)]
pub struct SiteReport {
    /// Ready replicas.
    pub ready_replicas: u32,
    /// Replica endpoints; ready ones become steering endpoints.
    pub endpoints: Vec<ReadyEndpoint>,
    /// When the report arrived, Unix milliseconds.
    pub at_ms: i64,
}

/// Something the store's audit log must record.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Audit action, e.g. `placement.remove`.
    pub action: &'static str,
    /// Details as JSON.
    pub detail: serde_json::Value,
}

/// A changed decision and what to audit about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The decision now in force (version bumped when it changed).
    pub decision: PlacementDecision,
    /// Whether it differs from the one before.
    pub changed: bool,
    /// Removals, deferrals, lost and recovered sites.
    pub events: Vec<AuditEvent>,
    /// The service's risk memory (removal history, lost sites) when it changed: the
    /// runtime writes it through so a restart neither grants a fresh removal budget nor
    /// forgets a lost site.
    pub risk: Option<PlacementRisk>,
}

/// Risk-control memory for one service.
#[derive(Debug, Clone, Default)]
struct ServiceState {
    decision: PlacementDecision,
    reports: BTreeMap<String, SiteReport>,
    /// Timestamps of replica removals per site, oldest first, within the removal window.
    removals: BTreeMap<String, VecDeque<i64>>,
    /// Sites declared lost (silent past the grace period): since when, and when they
    /// started reporting again.
    lost: BTreeMap<String, risk::Lost>,
}

/// Every placed service's state, the observed demand and the risk defaults.
#[derive(Debug)]
pub struct PlacementBook {
    services: BTreeMap<String, ServiceState>,
    demand: DemandBook,
    defaults: RiskDefaults,
    rtt: DistanceRtt,
    /// When this book started tracking: silence is counted from here at the earliest, so a
    /// scheduler restart never looks like every site going quiet at once.
    started_ms: i64,
}

impl PlacementBook {
    /// An empty book; `now_ms` starts the grace clocks.
    pub fn new(defaults: RiskDefaults, now_ms: i64) -> Self {
        Self {
            services: BTreeMap::new(),
            demand: DemandBook::default(),
            defaults,
            rtt: DistanceRtt::default(),
            started_ms: now_ms,
        }
    }

    /// Restores a decision loaded from the store.
    pub fn restore(&mut self, decision: PlacementDecision) {
        self.services.insert(
            decision.service.clone(),
            ServiceState {
                decision,
                ..Default::default()
            },
        );
    }

    /// Restores stored risk memory (only for services with a decision).
    pub fn restore_risk(&mut self, stored: &PlacementRisk) {
        if let Some(state) = self.services.get_mut(&stored.service) {
            risk::restore(state, stored);
        }
    }

    /// The risk memory of `service` as the store keeps it.
    pub fn risk_memory(&self, service: &str) -> Option<PlacementRisk> {
        self.services
            .get(service)
            .map(|state| risk::memory(state, service))
    }

    /// Restores a stored status report (only for services with a decision).
    pub fn restore_report(&mut self, service: &str, site: &str, report: SiteReport) {
        if let Some(state) = self.services.get_mut(service) {
            state.reports.insert(site.to_owned(), report);
        }
    }

    /// The current decision for `service`.
    pub fn decision(&self, service: &str) -> Option<&PlacementDecision> {
        self.services.get(service).map(|s| &s.decision)
    }

    /// Every current decision, in service order.
    pub fn decisions(&self) -> impl Iterator<Item = &PlacementDecision> {
        self.services.values().map(|s| &s.decision)
    }

    /// The observed demand.
    pub fn demand(&self) -> &DemandBook {
        &self.demand
    }

    /// The observed demand, for recording.
    pub fn demand_mut(&mut self) -> &mut DemandBook {
        &mut self.demand
    }

    /// Declares or replaces `service`'s policy and solves it at `now_ms`. With
    /// `must_exist`, a service without a decision is an error (`UpdatePolicy`).
    pub fn place(
        &mut self,
        world: &World,
        service: &str,
        policy: PlacementPolicy,
        now_ms: i64,
        must_exist: bool,
    ) -> Result<Outcome, PlaceError> {
        placement::validate(world, service, &policy)?;
        if must_exist && !self.services.contains_key(service) {
            return Err(PlaceError::NotPlaced(service.to_owned()));
        }
        let state = self.services.entry(service.to_owned()).or_default();
        if state.decision.service.is_empty() {
            state.decision.service = service.to_owned();
        }
        Ok(self.resolve(world, service, now_ms, Some(policy)))
    }

    /// Forgets a service; `false` when it had no decision.
    pub fn release(&mut self, service: &str) -> bool {
        self.services.remove(service).is_some()
    }

    /// Records an orchestrator report. Returns `false` when the service has no decision
    /// (the report is kept nowhere: status only means something against a placement).
    pub fn report(&mut self, service: &str, site: &str, report: SiteReport) -> bool {
        let Some(state) = self.services.get_mut(service) else {
            return false;
        };
        state.reports.insert(site.to_owned(), report);
        true
    }

    /// Re-solves every service at `now_ms` (config change, demand change, timers).
    /// Returns the outcomes that changed something.
    pub fn replan_all(&mut self, world: &World, now_ms: i64) -> Vec<Outcome> {
        let services: Vec<String> = self.services.keys().cloned().collect();
        services
            .into_iter()
            .map(|s| self.resolve(world, &s, now_ms, None))
            .filter(|o| o.changed || !o.events.is_empty() || o.risk.is_some())
            .collect()
    }

    /// Ready endpoint addresses per service and site, for steering: only services with a
    /// decision and at least one report, and only sites whose report is fresh and counts
    /// ready replicas.
    pub fn ready_view(&self) -> crate::steering::ReadyEndpoints {
        let mut view = crate::steering::ReadyEndpoints::new();
        for (service, state) in &self.services {
            if state.reports.is_empty() {
                continue;
            }
            let sites = view.entry(service.clone()).or_default();
            for (site, report) in &state.reports {
                if report.ready_replicas == 0 || state.lost.contains_key(site) {
                    continue;
                }
                let addresses: Vec<String> = report
                    .endpoints
                    .iter()
                    .filter(|e| e.ready)
                    .map(|e| e.address.clone())
                    .collect();
                sites.insert(site.clone(), addresses);
            }
        }
        view
    }

    /// Replica slots every other service holds, per site.
    fn used_except(&self, service: &str) -> HashMap<String, u32> {
        let mut used = HashMap::new();
        for (name, state) in &self.services {
            if name == service {
                continue;
            }
            for site in &state.decision.sites {
                *used.entry(site.site.clone()).or_insert(0) += site.replicas;
            }
        }
        used
    }

    /// Solves one service with its risk-control inputs and applies the removal limit.
    /// `new_policy` is set for an explicit `Place`/`UpdatePolicy`, `None` for a replan.
    fn resolve(
        &mut self,
        world: &World,
        service: &str,
        now_ms: i64,
        new_policy: Option<PlacementPolicy>,
    ) -> Outcome {
        let explicit = new_policy.is_some();
        let used = self.used_except(service);
        let demand = self.demand.points(world, service, now_ms);
        let defaults = self.defaults;
        let started = self.started_ms;
        let rtt = self.rtt;
        let Some(state) = self.services.get_mut(service) else {
            return Outcome {
                decision: PlacementDecision::default(),
                changed: false,
                events: Vec::new(),
                risk: None,
            };
        };
        let policy = new_policy
            .or_else(|| state.decision.policy.clone())
            .unwrap_or_default();
        let risk = defaults.effective(policy.risk.as_ref());
        let memory_before = risk::memory(state, service);
        risk::prune(state, &risk, now_ms);
        let previous = state.decision.clone();
        let mut events = Vec::new();

        let mut decision = if let Err(err) = placement::validate(world, service, &policy) {
            // The world changed under the policy (a region or the service is gone): place
            // nothing, and say why.
            PlacementDecision {
                service: service.to_owned(),
                requested: policy.replicas,
                conditions: vec![Condition {
                    r#type: "Invalid".into(),
                    message: err.to_string(),
                }],
                policy: Some(policy.clone()),
                ..Default::default()
            }
        } else {
            let ceilings = risk::ceilings(state, service, &risk, started, now_ms, &mut events);
            let input = SolveInput {
                world,
                service,
                policy: &policy,
                used: &used,
                demand: &demand,
                rtt: &rtt as &dyn RttModel,
                ceilings: &ceilings,
                previous: (!previous.sites.is_empty()).then_some(&previous),
            };
            let mut d = placement::solve(&input);
            risk::limit_removals(state, world, &previous, &mut d, &risk, now_ms, &mut events);
            risk::finish(state, &ceilings, &mut d, &mut events);
            d
        };
        let old = placement::replicas_by_site(&previous);
        decision.moves = placement::moves_between(&old, &placement::replicas_by_site(&decision));
        let changed = previous.version == 0 || !same_decision(&previous, &decision);
        if changed {
            decision.version = previous.version + 1;
            decision.decided_unix_ms = now_ms;
            if explicit || decision.moves > 0 {
                events.push(AuditEvent {
                    action: "placement.decision",
                    detail: serde_json::json!({
                        "service": service,
                        "version": decision.version,
                        "requested": decision.requested,
                        "placed": decision.placed,
                        "moves": decision.moves,
                        "sites": placement::replicas_by_site(&decision),
                        "conditions": decision.conditions.iter().map(|c| &c.r#type).collect::<Vec<_>>(),
                    }),
                });
            }
            state.decision = decision.clone();
        } else {
            decision = previous;
        }
        let memory = risk::memory(state, service);
        Outcome {
            decision,
            changed,
            events,
            risk: (memory != memory_before).then_some(memory),
        }
    }
}

/// Why `place` failed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The policy is invalid or the service unknown.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// `UpdatePolicy` for a service that was never placed.
    #[error("no placement for service {0}")]
    NotPlaced(String),
}

/// Equal apart from version, timestamp and the move count (which is relative).
pub fn same_decision(a: &PlacementDecision, b: &PlacementDecision) -> bool {
    a.sites == b.sites
        && a.requested == b.requested
        && a.placed == b.placed
        && a.conditions == b.conditions
        && a.policy == b.policy
        && (a.demand_within_objective - b.demand_within_objective).abs() < 1e-9
}

#[cfg(test)]
mod tests;
