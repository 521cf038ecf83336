//! The runtime side of steering: gathers the solver's inputs from health, measurements,
//! demand, placement and client reports; keeps the solver's state between solves; and acts
//! on its events (audited drain holds, canary rollbacks applied to the stored config).

use std::collections::{BTreeMap, BTreeSet};

use isobar_store::world::World;
use tracing::{info, warn};

use super::{Inner, Scheduler, SchedulerError, now_ms};
use crate::probing::MESH_PREFIX;
use crate::steering::cost::PopSignals;
use crate::steering::{self, Inputs, Solved, SteeringEvent, TargetStats};

/// The actor recorded for changes the scheduler makes on its own.
pub const VERDICT_ACTOR: &str = "isobar:gray-verdict";

/// Node loads older than this are ignored.
const LOAD_FRESH_MS: i64 = 60_000;

/// Steering memory kept in [`Inner`].
#[derive(Debug, Default)]
pub(crate) struct SteerState {
    /// The solver's state from the last solve.
    pub(crate) solver: steering::SteeringState,
    /// Operator drain confirmations: service → when (Unix ms); valid for a drain window.
    pub(crate) confirmed: BTreeMap<String, i64>,
    /// Events of the last solves, waiting for the async handler.
    pub(crate) pending: Vec<SteeringEvent>,
    /// Drain holds already audited, so each is recorded once while it lasts.
    pub(crate) held: BTreeSet<(String, String)>,
    /// Rollbacks already under way: (service, rule).
    pub(crate) rolling_back: BTreeSet<(String, String)>,
}

impl Scheduler {
    /// The solver's inputs as of `now`, from everything the scheduler knows.
    pub(crate) fn steering_inputs(inner: &Inner, now: i64) -> Inputs {
        let world = &inner.world;
        let stats = inner.measure.stats(None, None);
        let (_, matrix) = crate::probing::rtt_matrix(world, &stats);
        let core_rtt = matrix
            .into_iter()
            .filter_map(|e| {
                let from = e.from.strip_prefix("pop:")?.to_owned();
                let to = e.to.strip_prefix("pop:")?.to_owned();
                Some(((from, to), e.rtt_ms))
            })
            .collect();
        Inputs {
            down: inner.health.down_set(),
            ready: inner.placements.ready_view(),
            demand: inner.placements.demand().rates(now),
            signals: pop_signals(world, &stats, &inner.measure.loads(), now),
            core_rtt,
            target_stats: target_stats(&stats),
            confirmed_drains: inner
                .steer
                .confirmed
                .iter()
                .filter(|(service, at)| {
                    let window = world
                        .services
                        .iter()
                        .find(|s| &s.name == *service)
                        .map_or(0, |s| i64::from(s.steering.guard.drain_window_s) * 1000);
                    now - **at < window
                })
                .map(|(service, _)| service.clone())
                .collect(),
            now_ms: now,
        }
    }

    /// Solves steering on `inner` as of now, keeps the state and queues the events.
    pub(crate) fn solve_steering(&self, inner: &mut Inner) -> Result<Solved, SchedulerError> {
        let now = now_ms();
        let inputs = Self::steering_inputs(inner, now);
        let reports = self.client_reports();
        let solved = steering::solve_full(
            &inner.world,
            inner.config_version,
            &inputs,
            &reports,
            Some(&inner.steer.solver),
        )?;
        inner.steer.solver = solved.state.clone();
        let held: BTreeSet<(String, String)> = solved
            .events
            .iter()
            .filter_map(|e| match e {
                SteeringEvent::DrainHeld { service, pop } => Some((service.clone(), pop.clone())),
                SteeringEvent::Rollback { .. } => None,
            })
            .collect();
        for event in &solved.events {
            let new = match event {
                SteeringEvent::DrainHeld { service, pop } => {
                    !inner.steer.held.contains(&(service.clone(), pop.clone()))
                }
                SteeringEvent::Rollback { service, rule, .. } => inner
                    .steer
                    .rolling_back
                    .insert((service.clone(), rule.clone())),
            };
            if new {
                inner.steer.pending.push(event.clone());
            }
        }
        inner.steer.held = held;
        Ok(solved)
    }

    /// Lifts the drain budget of `service` for one drain window: PoPs held in rotation
    /// because draining them would exceed the budget are drained at the next solve.
    pub async fn confirm_drain(&self, service: &str, actor: &str) -> Result<(), SchedulerError> {
        {
            let mut inner = self.lock();
            if !inner.world.services.iter().any(|s| s.name == service) {
                return Err(SchedulerError::UnknownService(service.to_owned()));
            }
            inner.steer.confirmed.insert(service.to_owned(), now_ms());
        }
        self.store
            .append_audit(
                actor,
                "confirm_drain",
                &serde_json::json!({ "service": service }),
            )
            .await?;
        self.recompute_now()?;
        self.handle_steering_events().await;
        Ok(())
    }

    /// The steering state of the last solve (reports per service).
    pub fn steering_state(&self) -> steering::SteeringState {
        self.lock().steer.solver.clone()
    }

    /// Acts on queued steering events: audits drain holds, rolls back failing canaries by
    /// storing their rule at 0 % (an audited config change, so the rollback survives
    /// restarts and shows in `isobar export`).
    pub(crate) async fn handle_steering_events(&self) {
        let events = std::mem::take(&mut self.lock().steer.pending);
        for event in events {
            let result = match &event {
                SteeringEvent::DrainHeld { service, pop } => {
                    warn!(
                        service,
                        pop, "drain held: it would exceed the service's drain budget"
                    );
                    self.store
                        .append_audit(
                            "isobar:guardrail",
                            "drain_held",
                            &serde_json::json!({ "service": service, "pop": pop }),
                        )
                        .await
                        .map_err(SchedulerError::from)
                }
                SteeringEvent::Rollback {
                    service,
                    rule,
                    reason,
                } => self.roll_back(service, rule, reason).await,
            };
            if let Err(err) = result {
                warn!(error = %err, ?event, "steering event failed");
                if let SteeringEvent::Rollback { service, rule, .. } = &event {
                    self.lock()
                        .steer
                        .rolling_back
                        .remove(&(service.clone(), rule.clone()));
                }
            }
        }
    }

    async fn roll_back(
        &self,
        service: &str,
        rule: &str,
        reason: &str,
    ) -> Result<(), SchedulerError> {
        let (mut world, _) = self.store.load_world().await?;
        let Some(gray) = world
            .services
            .iter_mut()
            .find(|s| s.name == service)
            .and_then(|s| s.gray.as_mut())
            .filter(|g| g.name == rule)
        else {
            return Ok(());
        };
        gray.percent = 0.0;
        gray.ramp.clear();
        gray.cohort = Default::default();
        info!(service, rule, reason, "rolling back canary");
        self.store.apply_world(&world, VERDICT_ACTOR, false).await?;
        self.store
            .append_audit(
                VERDICT_ACTOR,
                "gray_rollback",
                &serde_json::json!({ "service": service, "rule": rule, "reason": reason }),
            )
            .await?;
        self.reload().await
    }
}

/// Per-PoP loss (mean over the mesh windows towards the PoP's echo responder: network loss,
/// while endpoint failures are health's business — counting them here would keep a recovered
/// PoP penalised for the whole window after it came back) and utilisation (the PoP node's
/// fresh CPU or custom load, whichever is higher).
fn pop_signals(
    world: &World,
    stats: &BTreeMap<(String, String), crate::measure::WindowStats>,
    loads: &BTreeMap<String, crate::measure::Load>,
    now: i64,
) -> BTreeMap<String, PopSignals> {
    let mut loss: BTreeMap<&str, (f64, u32)> = BTreeMap::new();
    for ((_, target), s) in stats {
        let Some(pop) = target
            .strip_prefix(MESH_PREFIX)
            .and_then(|pop| world.pop(pop))
        else {
            continue;
        };
        if s.samples > 0 {
            let entry = loss.entry(pop.name.as_str()).or_default();
            entry.0 += s.loss_percent;
            entry.1 += 1;
        }
    }
    world
        .pops
        .iter()
        .map(|p| {
            let loss_percent = loss
                .get(p.name.as_str())
                .map_or(0.0, |(sum, n)| sum / f64::from(*n));
            let utilisation = loads
                .get(&p.name)
                .filter(|l| now - l.at_ms < LOAD_FRESH_MS)
                .map_or(0.0, |l| l.cpu.max(l.custom));
            (
                p.name.clone(),
                PopSignals {
                    loss_percent,
                    utilisation,
                },
            )
        })
        .collect()
}

/// Probe figures per target, over every vantage.
fn target_stats(
    stats: &BTreeMap<(String, String), crate::measure::WindowStats>,
) -> BTreeMap<String, TargetStats> {
    let mut out: BTreeMap<String, TargetStats> = BTreeMap::new();
    for ((_, target), s) in stats {
        let entry = out.entry(target.clone()).or_default();
        let total = entry.samples + u64::from(s.samples);
        if total == 0 {
            continue;
        }
        let w = u64::from(s.samples) as f64 / total as f64;
        entry.loss_percent = entry.loss_percent * (1.0 - w) + s.loss_percent * w;
        entry.rtt_ms = entry.rtt_ms * (1.0 - w) + f64::from(s.rtt_median_us) / 1000.0 * w;
        entry.samples = total;
    }
    out
}
