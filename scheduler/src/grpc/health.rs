//! Admin RPCs of the health model and the measurements: overrides, state, windows, matrix.

use isobar_proto::v1::{
    Coordinate, GetMeasurementsRequest, HealthCounters, Measurements, NodeLoadState, PathStats,
    RttEstimate, SetHealthOverrideRequest, TargetHealth, VantageState, VantageVote,
};
use tonic::Status;

use crate::Scheduler;
use crate::health;
use crate::probing::OverrideError;

/// Converts one target's health to its wire form.
pub(super) fn target_health(id: String, h: health::TargetHealth) -> TargetHealth {
    let (override_mode, override_reason, override_actor) = match h.override_ {
        Some(o) => (o.mode.as_str().to_owned(), o.reason, o.actor),
        None => Default::default(),
    };
    TargetHealth {
        target_id: id,
        state: h.state.as_str().to_owned(),
        reason: h.reason,
        since_unix_ms: h.since_unix_ms,
        probe_state: h.probe_state.as_str().to_owned(),
        damped: h.damped,
        flap_penalty: h.flap_penalty,
        override_mode,
        override_reason,
        override_actor,
        votes: h
            .vantages
            .into_iter()
            .map(|(vantage, v)| VantageVote {
                vantage,
                state: v.state.as_str().to_owned(),
                consecutive_failures: v.consecutive_failures,
                consecutive_successes: v.consecutive_successes,
                last_seen_unix_ms: v.last_seen_ms,
                last_error: v.last_error,
            })
            .collect(),
    }
}

/// The vantages and counters part of `GetState`.
pub(super) fn vantages_and_counters(
    scheduler: &Scheduler,
) -> (Vec<VantageState>, Option<HealthCounters>) {
    let vantages = scheduler
        .vantages()
        .into_iter()
        .map(|(vantage, v)| VantageState {
            vantage,
            targets: u32::try_from(v.targets).unwrap_or(u32::MAX),
            down: u32::try_from(v.down).unwrap_or(u32::MAX),
            broken: v.broken,
            last_seen_unix_ms: v.last_seen_ms,
        })
        .collect();
    let c = scheduler.health_counters();
    let counters = HealthCounters {
        went_down: c.went_down,
        went_up: c.went_up,
        observations: c.observations,
        vantages_judged_broken: c.vantages_judged_broken,
    };
    (vantages, Some(counters))
}

/// `SetHealthOverride`.
pub(super) async fn set_override(
    scheduler: &Scheduler,
    req: SetHealthOverrideRequest,
    actor: String,
) -> Result<TargetHealth, Status> {
    if req.target_id.is_empty() {
        return Err(Status::invalid_argument("target_id: must not be empty"));
    }
    let health = scheduler
        .set_health_override(&req.target_id, &req.mode, &req.reason, &actor)
        .await
        .map_err(|err| match err {
            OverrideError::Unknown(_) => Status::not_found(err.to_string()),
            OverrideError::BadMode(_) | OverrideError::NoReason => {
                Status::invalid_argument(err.to_string())
            }
            OverrideError::Store(_) => {
                tracing::error!(error = %err, "internal error");
                Status::internal(err.to_string())
            }
        })?;
    Ok(target_health(req.target_id, health))
}

/// `GetMeasurements`.
pub(super) fn measurements(scheduler: &Scheduler, req: &GetMeasurementsRequest) -> Measurements {
    let paths = scheduler
        .window_stats(non_empty(&req.vantage), non_empty(&req.target_id))
        .into_iter()
        .map(|((vantage, target_id), s)| PathStats {
            vantage,
            target_id,
            samples: s.samples,
            rtt_min_us: s.rtt_min_us,
            rtt_median_us: s.rtt_median_us,
            rtt_p95_us: s.rtt_p95_us,
            loss_percent: s.loss_percent,
            jitter_us: s.jitter_us,
            last_unix_ms: s.last_at_ms,
        })
        .collect();
    let loads = scheduler
        .loads()
        .into_iter()
        .map(|(node, l)| NodeLoadState {
            node,
            at_unix_ms: l.at_ms,
            cpu: l.cpu,
            load_average: l.load_average,
            open_connections: l.open_connections,
            custom: l.custom,
        })
        .collect();
    let (coords, entries) = scheduler.rtt_matrix();
    Measurements {
        paths,
        loads,
        coordinates: coords
            .into_iter()
            .map(|(node, c)| Coordinate {
                node,
                vector: c.vec.to_vec(),
                height_ms: c.height,
                error: c.error,
            })
            .collect(),
        rtt: entries
            .into_iter()
            .map(|e| RttEstimate {
                from: e.from,
                to: e.to,
                rtt_ms: e.rtt_ms,
                measured: e.measured,
            })
            .collect(),
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}
