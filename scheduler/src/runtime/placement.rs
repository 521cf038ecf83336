//! The scheduler's placement side: drives [`PlacementBook`] under the lock, then persists,
//! audits, publishes and counts what changed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use isobar_proto::v1::{DemandReport, PlacementDecision, PlacementPolicy, StatusReport};
use isobar_store::Store;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Scheduler, SchedulerError, decode_hex, encode_hex, now_ms};
use crate::placement::PolicyError;
use crate::placement_state::{Outcome, PlaceError, PlacementBook, RiskDefaults, SiteReport};

/// How often every placement is re-solved for timers (grace, removal budget, failback) and
/// fresh demand.
pub const PLACEMENT_TICK: Duration = Duration::from_secs(5);

/// Most endpoints accepted in one status report.
const MAX_REPORT_ENDPOINTS: usize = 4096;

/// Builds the placement book from the store: decisions, their risk memory (removal budgets
/// spent, lost sites), then the last status reports.
pub(super) async fn load_book(store: &Store, now: i64) -> Result<PlacementBook, SchedulerError> {
    let mut book = PlacementBook::new(RiskDefaults::default(), now);
    for row in store.load_placements().await? {
        match decode_hex(&row.decision).and_then(|b| PlacementDecision::decode(b.as_slice()).ok()) {
            Some(decision) => book.restore(decision),
            None => warn!(service = %row.service, "ignoring undecodable stored placement"),
        }
    }
    for stored in store.load_placement_risk().await? {
        book.restore_risk(&stored);
    }
    for row in store.load_site_status().await? {
        let endpoints = serde_json::from_str::<Vec<serde_json::Value>>(&row.endpoints)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| {
                Some(isobar_proto::v1::ReadyEndpoint {
                    address: v.get("address")?.as_str()?.to_owned(),
                    port: u32::try_from(v.get("port")?.as_u64()?).ok()?,
                    ready: v.get("ready")?.as_bool()?,
                })
            })
            .collect();
        book.restore_report(
            &row.service,
            &row.site,
            SiteReport {
                ready_replicas: row.ready_replicas,
                endpoints,
                at_ms: row.reported_at,
            },
        );
    }
    Ok(book)
}

/// Counters for decisions, moves and infeasible demand (served by `Admin/GetState` callers
/// and logs; see [`Scheduler::placement_metrics`]).
#[derive(Debug, Default)]
pub struct PlacementMetrics {
    /// Decisions published (a version bump each).
    pub decisions: std::sync::atomic::AtomicU64,
    /// Replicas added plus removed across all decisions.
    pub moves: std::sync::atomic::AtomicU64,
    /// Replicas requested but not placed, summed over decisions published.
    pub infeasible_replicas: std::sync::atomic::AtomicU64,
    /// Removals held back by the per-site budget (decisions carrying `RemovalDeferred`).
    pub deferred_decisions: std::sync::atomic::AtomicU64,
    /// Demand entries accepted from frontends.
    pub demand_entries: std::sync::atomic::AtomicU64,
}

impl PlacementMetrics {
    /// The counters in Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (name, help, value) in [
            (
                "isobar_placement_decisions_total",
                "Placement decisions published (one per version bump).",
                &self.decisions,
            ),
            (
                "isobar_placement_moves_total",
                "Replicas added plus removed across published decisions.",
                &self.moves,
            ),
            (
                "isobar_placement_infeasible_replicas_total",
                "Replicas requested but not placed, summed over published decisions.",
                &self.infeasible_replicas,
            ),
            (
                "isobar_placement_deferred_removal_decisions_total",
                "Decisions that held removals back for the per-site removal budget.",
                &self.deferred_decisions,
            ),
            (
                "isobar_placement_demand_entries_total",
                "Demand entries accepted from frontends.",
                &self.demand_entries,
            ),
        ] {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

impl Scheduler {
    /// Declares or replaces a placement policy and returns the decision. With
    /// `must_exist` (`UpdatePolicy`) a service that was never placed is `NoPlacement`.
    pub async fn place_policy(
        &self,
        service: &str,
        policy: PlacementPolicy,
        actor: &str,
        must_exist: bool,
    ) -> Result<PlacementDecision, SchedulerError> {
        let _gate = self.placement_gate.lock().await;
        let outcome = {
            let mut inner = self.lock();
            let world = Arc::clone(&inner.world);
            inner
                .placements
                .place(&world, service, policy, now_ms(), must_exist)
                .map_err(|e| match e {
                    PlaceError::Policy(p) => SchedulerError::Policy(p),
                    PlaceError::NotPlaced(s) => SchedulerError::NoPlacement(s),
                })?
        };
        let decision = outcome.decision.clone();
        self.publish_outcomes(vec![outcome], actor).await?;
        Ok(decision)
    }

    /// Declares or replaces a placement policy and returns the decision.
    pub async fn place(
        &self,
        service: &str,
        policy: PlacementPolicy,
        actor: &str,
    ) -> Result<PlacementDecision, SchedulerError> {
        self.place_policy(service, policy, actor, false).await
    }

    /// The current decision for a service.
    pub fn placement(&self, service: &str) -> Result<PlacementDecision, SchedulerError> {
        self.lock()
            .placements
            .decision(service)
            .cloned()
            .ok_or_else(|| SchedulerError::NoPlacement(service.to_owned()))
    }

    /// Every current decision (or the one for `service` when non-empty).
    pub fn placements(&self, service: &str) -> Vec<PlacementDecision> {
        self.lock()
            .placements
            .decisions()
            .filter(|d| service.is_empty() || d.service == service)
            .cloned()
            .collect()
    }

    /// Forgets a placement; steering goes back to the service's configured endpoints.
    pub async fn release(&self, service: &str, actor: &str) -> Result<(), SchedulerError> {
        let _gate = self.placement_gate.lock().await;
        if !self.lock().placements.release(service) {
            return Err(SchedulerError::NoPlacement(service.to_owned()));
        }
        self.store.delete_placement(service).await?;
        self.store
            .append_audit(actor, "release", &serde_json::json!({ "service": service }))
            .await?;
        self.recompute.notify_one();
        Ok(())
    }

    /// Records an orchestrator's status report for one site: stored, then joined to
    /// steering (ready endpoints serve, unready sites stop serving).
    pub async fn report_status(&self, report: &StatusReport) -> Result<(), SchedulerError> {
        let invalid = |field: &str, message: String| {
            SchedulerError::Policy(PolicyError::Invalid {
                field: field.to_owned(),
                message,
            })
        };
        if report.endpoints.len() > MAX_REPORT_ENDPOINTS {
            return Err(invalid(
                "endpoints",
                format!("at most {MAX_REPORT_ENDPOINTS} per report"),
            ));
        }
        for (i, e) in report.endpoints.iter().enumerate() {
            if e.address.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(
                    &format!("endpoints[{i}].address"),
                    format!("not an IP address: {:?}", e.address),
                ));
            }
            if e.port > u32::from(u16::MAX) {
                return Err(invalid(
                    &format!("endpoints[{i}].port"),
                    format!("out of range: {}", e.port),
                ));
            }
        }
        let now = now_ms();
        {
            let mut inner = self.lock();
            if inner.world.service(&report.service).is_none() {
                return Err(PolicyError::UnknownService(report.service.clone()).into());
            }
            let known = inner.placements.report(
                &report.service,
                &report.site,
                SiteReport {
                    ready_replicas: report.ready_replicas,
                    endpoints: report.endpoints.clone(),
                    at_ms: now,
                },
            );
            if !known {
                return Err(SchedulerError::NoPlacement(report.service.clone()));
            }
        }
        let endpoints: Vec<serde_json::Value> = report
            .endpoints
            .iter()
            .map(|e| serde_json::json!({ "address": e.address, "port": e.port, "ready": e.ready }))
            .collect();
        self.store
            .save_site_status(
                &report.service,
                &report.site,
                report.ready_replicas,
                &serde_json::Value::from(endpoints).to_string(),
            )
            .await?;
        self.recompute.notify_one();
        Ok(())
    }

    /// Records one frontend's observed demand. Returns (accepted, rejected) entries.
    pub fn report_demand(&self, report: &DemandReport) -> (u64, u64) {
        let (accepted, rejected) =
            self.lock()
                .placements
                .demand_mut()
                .record(&report.frontend, &report.demand, now_ms());
        self.placement_metrics
            .demand_entries
            .fetch_add(accepted, Ordering::Relaxed);
        (accepted, rejected)
    }

    /// The demand frontends reported for `service` (absolute name), located on the map,
    /// as the solver sees it now.
    pub fn observed_demand(&self, service: &str) -> Vec<crate::placement::DemandPoint> {
        let inner = self.lock();
        inner
            .placements
            .demand()
            .points(&inner.world, service, now_ms())
    }

    /// Placement counters.
    pub fn placement_metrics(&self) -> &PlacementMetrics {
        &self.placement_metrics
    }

    /// Re-solves every placement as of `now` (timers, demand, config) and publishes what
    /// changed. Tests pass their own `now`; the tick loop passes the wall clock.
    pub async fn replan_placements(&self, now: i64) -> Result<usize, SchedulerError> {
        let _gate = self.placement_gate.lock().await;
        let outcomes = {
            let mut inner = self.lock();
            let world = Arc::clone(&inner.world);
            inner.placements.demand_mut().expire(now);
            inner.placements.replan_all(&world, now)
        };
        let changed = outcomes.iter().filter(|o| o.changed).count();
        self.publish_outcomes(outcomes, "scheduler").await?;
        Ok(changed)
    }

    /// Persists, audits, counts and broadcasts outcomes; refreshes steering when the ready
    /// view may have changed. Callers hold `placement_gate` from solving to here, so the
    /// store receives each service's state in the order it was computed.
    pub(super) async fn publish_outcomes(
        &self,
        outcomes: Vec<Outcome>,
        actor: &str,
    ) -> Result<(), SchedulerError> {
        let mut any = false;
        for outcome in outcomes {
            // Risk memory first: a crash before the decision is written then leaves a spent
            // budget beside the older decision (one removal fewer), never a fresh budget.
            if let Some(risk) = &outcome.risk {
                self.store.save_placement_risk(risk).await?;
            }
            for event in &outcome.events {
                info!(action = event.action, detail = %event.detail, "placement");
                self.store
                    .append_audit(actor, event.action, &event.detail)
                    .await?;
            }
            if !outcome.changed {
                continue;
            }
            any = true;
            let d = &outcome.decision;
            self.persist_placement(d).await?;
            let m = &self.placement_metrics;
            m.decisions.fetch_add(1, Ordering::Relaxed);
            m.moves.fetch_add(u64::from(d.moves), Ordering::Relaxed);
            m.infeasible_replicas.fetch_add(
                u64::from(d.requested.saturating_sub(d.placed)),
                Ordering::Relaxed,
            );
            if d.conditions.iter().any(|c| c.r#type == "RemovalDeferred") {
                m.deferred_decisions.fetch_add(1, Ordering::Relaxed);
            }
            let _ = self.placement_tx.send(outcome.decision);
        }
        if any {
            self.recompute.notify_one();
        }
        Ok(())
    }

    async fn persist_placement(&self, decision: &PlacementDecision) -> Result<(), SchedulerError> {
        let policy = decision.policy.clone().unwrap_or_default();
        self.store
            .save_placement(
                &decision.service,
                &encode_hex(&policy.encode_to_vec()),
                &encode_hex(&decision.encode_to_vec()),
                decision.version,
            )
            .await?;
        Ok(())
    }

    /// Re-solves placements every [`PLACEMENT_TICK`] until `shutdown`.
    pub(super) async fn placement_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(PLACEMENT_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(err) = self.replan_placements(now_ms()).await {
                warn!(error = %err, "placement replan failed");
            }
        }
    }
}
