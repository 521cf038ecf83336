//! The scheduler's probing side: which targets probers measure, what their results do to
//! health and the measurement windows, operator overrides, and the RTT matrices with the
//! network coordinates fitted from them.
//!
//! Target ids: endpoints are `<kind>://<check>` ([`Endpoint::target_id`]); the mesh adds
//! `mesh://<pop>` (that PoP's UDP echo responder) and landmarks add
//! `landmark://<region>/<address>`. Only endpoint targets have health; mesh and landmark
//! results feed the measurement windows and the coordinates.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use isobar_proto::v1::{MeasurementBatch, ProbeKind, ProbeTarget, TargetSet};
use isobar_store::world::{CheckKind, Endpoint, World};
use isobar_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Scheduler;
use crate::health::{HealthTable, Override, OverrideMode, State, Transition, UnknownTarget};
use crate::measure::{Load, Sample};
use crate::runtime::{Inner, now_ms};
use crate::vivaldi::{self, Coord, Pair};

/// How often health is re-evaluated against the clock (stale votes, damping release).
const HEALTH_TICK: Duration = Duration::from_millis(250);
/// Vivaldi replays of the measured matrix; the matrix is small (PoPs and regions).
const VIVALDI_ROUNDS: usize = 200;
/// Prefix of mesh target ids.
pub const MESH_PREFIX: &str = "mesh://";
/// Prefix of landmark target ids.
pub const LANDMARK_PREFIX: &str = "landmark://";

/// Errors of health overrides.
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    /// The target is not configured.
    #[error(transparent)]
    Unknown(#[from] UnknownTarget),
    /// The mode is not one of force_up, force_down, drain, clear.
    #[error("mode: {0:?} is not one of force_up, force_down, drain, clear")]
    BadMode(String),
    /// Setting an override without saying why.
    #[error("reason: must not be empty")]
    NoReason,
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// RTT between two nodes (`pop:<name>` or `region:<name>`), measured or estimated.
#[derive(Debug, Clone, PartialEq)]
pub struct RttEntry {
    /// From.
    pub from: String,
    /// To.
    pub to: String,
    /// Milliseconds.
    pub rtt_ms: f64,
    /// Whether a window measured it (median); otherwise the coordinates estimated it.
    pub measured: bool,
}

/// The health target ids of a world, sorted and unique.
pub(crate) fn target_ids(world: &World) -> Vec<String> {
    let mut ids: Vec<String> = world
        .services
        .iter()
        .flat_map(|s| s.endpoints.iter().filter_map(Endpoint::target_id))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Everything probers should measure: endpoint checks, the mesh and the landmarks.
pub(crate) fn target_set(world: &World, config_version: u64) -> TargetSet {
    let h = &world.health;
    let mut targets: Vec<ProbeTarget> = world
        .services
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter_map(|e| {
            let check = e.check.clone()?;
            let mut spec = e.probe.clone().unwrap_or_default();
            if spec.kind == CheckKind::Https {
                spec.params
                    .entry("scheme".to_owned())
                    .or_insert_with(|| "https".to_owned());
            }
            Some(ProbeTarget {
                id: e.target_id()?,
                kind: probe_kind(spec.kind) as i32,
                address: check,
                interval_ms: spec.interval_ms.unwrap_or(h.interval_ms),
                timeout_ms: spec.timeout_ms.unwrap_or(h.timeout_ms),
                params: spec.params.into_iter().collect(),
            })
        })
        .collect();
    for (pop, address) in &h.mesh {
        targets.push(ProbeTarget {
            id: format!("{MESH_PREFIX}{pop}"),
            kind: ProbeKind::UdpEcho as i32,
            address: address.clone(),
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            params: Default::default(),
        });
    }
    for l in &h.landmarks {
        targets.push(ProbeTarget {
            id: format!("{LANDMARK_PREFIX}{}/{}", l.region, l.address),
            kind: probe_kind(l.kind) as i32,
            address: l.address.clone(),
            interval_ms: l.interval_ms.unwrap_or(h.interval_ms),
            timeout_ms: l.timeout_ms.unwrap_or(h.timeout_ms),
            params: Default::default(),
        });
    }
    targets.sort_by(|a, b| a.id.cmp(&b.id));
    targets.dedup_by(|a, b| a.id == b.id);
    TargetSet {
        version: config_version,
        targets,
    }
}

/// The targets `vantage` should probe: everything but its own mesh responder.
pub fn targets_for(set: &TargetSet, vantage: &str) -> TargetSet {
    let own = format!("{MESH_PREFIX}{vantage}");
    TargetSet {
        version: set.version,
        targets: set
            .targets
            .iter()
            .filter(|t| t.id != own)
            .cloned()
            .collect(),
    }
}

fn probe_kind(kind: CheckKind) -> ProbeKind {
    match kind {
        CheckKind::Tcp => ProbeKind::Tcp,
        CheckKind::Http | CheckKind::Https => ProbeKind::Http,
        CheckKind::Icmp => ProbeKind::Icmp,
        CheckKind::Dns => ProbeKind::Dns,
        CheckKind::UdpEcho => ProbeKind::UdpEcho,
    }
}

/// Mesh and landmark target ids of `world`: measured, but without health.
pub(crate) fn probe_only_ids(world: &World) -> HashSet<String> {
    target_set(world, 0)
        .targets
        .into_iter()
        .map(|t| t.id)
        .filter(|id| id.starts_with(MESH_PREFIX) || id.starts_with(LANDMARK_PREFIX))
        .collect()
}

/// Adopts a new world's targets: health keeps known targets, windows of removed ones go.
pub(crate) fn reconfigure(inner: &mut Inner, world: &World) {
    let now = now_ms();
    let transitions = inner
        .health
        .reconfigure(world.health.clone(), target_ids(world), now);
    for t in transitions {
        info!(target = %t.target, to = t.to.as_str(), reason = %t.reason, "target changed on reconfigure");
    }
    inner.probe_only = probe_only_ids(world);
    let (health, probe_only) = (&inner.health, &inner.probe_only);
    inner
        .measure
        .retain_targets(|id| health.contains(id) || probe_only.contains(id));
}

/// A health table for `world` with the stored overrides applied.
pub(crate) async fn initial_health(
    store: &Store,
    world: &World,
    now: i64,
) -> Result<HealthTable, StoreError> {
    let mut health = HealthTable::new(world.health.clone(), target_ids(world), now);
    for row in store.load_health_overrides().await? {
        let Some(mode) = OverrideMode::parse(&row.mode) else {
            warn!(target_id = %row.target_id, mode = %row.mode, "ignoring stored override with unknown mode");
            continue;
        };
        let ov = Override {
            mode,
            reason: row.reason,
            actor: row.actor,
            since_unix_ms: row.created_at,
        };
        // An override of a target no longer configured waits in the store until it returns.
        let _ = health.set_override(&row.target_id, Some(ov), now);
    }
    Ok(health)
}

/// Re-evaluates health against the clock until `shutdown`.
pub(crate) async fn health_loop(scheduler: Arc<Scheduler>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(HEALTH_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let transitions = scheduler.lock().health.tick(now_ms());
        scheduler.announce(&transitions, "clock");
    }
}

impl Scheduler {
    /// Records a batch from one vantage: endpoint results feed health and the windows, mesh
    /// and landmark results the windows only, loads the load table. Returns (accepted,
    /// rejected): results for targets that are not configured are rejected.
    pub fn ingest(&self, batch: &MeasurementBatch) -> (u64, u64) {
        let now = now_ms();
        let vantage = batch.vantage.as_str();
        let (mut accepted, mut rejected) = (0, 0);
        let mut transitions: Vec<Transition> = Vec::new();
        {
            let mut guard = self.lock();
            let inner = &mut *guard;
            for m in &batch.measurements {
                let known = inner.health.observe(
                    vantage,
                    &m.target_id,
                    m.success,
                    &m.error,
                    now,
                    &mut transitions,
                ) || inner.probe_only.contains(&m.target_id);
                if !known {
                    rejected += 1;
                    continue;
                }
                accepted += 1;
                inner.measure.record(
                    vantage,
                    &m.target_id,
                    Sample {
                        at_ms: m.at_unix_ms,
                        seq: m.seq,
                        rtt_us: if m.success { m.rtt_us } else { 0 },
                        success: m.success,
                    },
                );
            }
            for l in &batch.loads {
                let node = if l.node.is_empty() { vantage } else { &l.node };
                inner.measure.record_load(
                    node,
                    Load {
                        at_ms: l.at_unix_ms,
                        cpu: l.cpu,
                        load_average: l.load_average,
                        open_connections: l.open_connections,
                        custom: l.custom,
                    },
                );
            }
        }
        self.announce(&transitions, vantage);
        (accepted, rejected)
    }

    /// Logs transitions and triggers a recompute when there are any.
    pub(crate) fn announce(&self, transitions: &[Transition], source: &str) {
        for t in transitions {
            match t.to {
                State::Down => {
                    warn!(target = %t.target, source, reason = %t.reason, "target down")
                }
                State::Up => info!(target = %t.target, source, reason = %t.reason, "target up"),
            }
        }
        if !transitions.is_empty() {
            self.recompute.notify_one();
        }
    }

    /// Sets or clears (`mode` = "clear") an operator override on a target, persisting it with
    /// an audit row before it takes effect.
    pub async fn set_health_override(
        &self,
        target_id: &str,
        mode: &str,
        reason: &str,
        actor: &str,
    ) -> Result<crate::health::TargetHealth, OverrideError> {
        let parsed = match mode {
            "clear" => None,
            other => Some(
                OverrideMode::parse(other).ok_or_else(|| OverrideError::BadMode(other.into()))?,
            ),
        };
        if parsed.is_some() && reason.trim().is_empty() {
            return Err(OverrideError::NoReason);
        }
        if !self.lock().health.contains(target_id) {
            return Err(UnknownTarget(target_id.to_owned()).into());
        }
        self.store()
            .set_health_override(target_id, parsed.map(|m| (m.as_str(), reason)), actor)
            .await?;
        let now = now_ms();
        let (transition, report) = {
            let mut inner = self.lock();
            let ov = parsed.map(|mode| Override {
                mode,
                reason: reason.to_owned(),
                actor: actor.to_owned(),
                since_unix_ms: now,
            });
            let transition = inner.health.set_override(target_id, ov, now)?;
            let report = inner.health.report(now).remove(target_id);
            (transition, report)
        };
        info!(target_id, mode, actor, reason, "health override");
        self.announce(transition.as_slice(), "override");
        report.ok_or_else(|| UnknownTarget(target_id.to_owned()).into())
    }

    /// Vantages that have reported, and whether their votes are set aside.
    pub fn vantages(&self) -> BTreeMap<String, crate::health::VantageStatus> {
        self.lock().health.vantages()
    }

    /// Health counters since start.
    pub fn health_counters(&self) -> crate::health::HealthCounters {
        self.lock().health.counters()
    }

    /// Health as Prometheus text: per-target state, changes by reason class, broken
    /// vantages (see [`crate::health::HealthTable::render_prometheus`]).
    pub fn health_prometheus(&self) -> String {
        self.lock().health.render_prometheus()
    }

    /// Window statistics, optionally for one vantage and/or target.
    pub fn window_stats(
        &self,
        vantage: Option<&str>,
        target: Option<&str>,
    ) -> BTreeMap<(String, String), crate::measure::WindowStats> {
        self.lock().measure.stats(vantage, target)
    }

    /// The latest load of every node.
    pub fn loads(&self) -> BTreeMap<String, Load> {
        self.lock().measure.loads()
    }

    /// The PoP × PoP and region × PoP RTT matrix: measured medians where windows exist,
    /// Vivaldi estimates elsewhere, with the fitted coordinates.
    pub fn rtt_matrix(&self) -> (BTreeMap<String, Coord>, Vec<RttEntry>) {
        let (world, _) = self.world();
        let stats = self.window_stats(None, None);
        rtt_matrix(&world, &stats)
    }
}

/// Builds the matrix from window statistics (pure; see [`Scheduler::rtt_matrix`]).
pub fn rtt_matrix(
    world: &World,
    stats: &BTreeMap<(String, String), crate::measure::WindowStats>,
) -> (BTreeMap<String, Coord>, Vec<RttEntry>) {
    let mut names: Vec<String> = world
        .pops
        .iter()
        .map(|p| format!("pop:{}", p.name))
        .collect();
    names.extend(world.regions.iter().map(|r| format!("region:{}", r.name)));
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    // (from, to) → RTT medians in ms, several landmarks per region averaged.
    let mut measured: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    for ((vantage, target), s) in stats {
        if s.rtt_median_us == 0 {
            continue;
        }
        let to = if let Some(pop) = target.strip_prefix(MESH_PREFIX) {
            format!("pop:{pop}")
        } else if let Some(rest) = target.strip_prefix(LANDMARK_PREFIX) {
            let region = rest.split('/').next().unwrap_or_default();
            format!("region:{region}")
        } else {
            continue;
        };
        let (Some(&a), Some(&b)) = (
            index.get(format!("pop:{vantage}").as_str()),
            index.get(to.as_str()),
        ) else {
            continue;
        };
        measured
            .entry((a, b))
            .or_default()
            .push(f64::from(s.rtt_median_us) / 1000.0);
    }
    let pairs: Vec<Pair> = measured
        .iter()
        .map(|(&(from, to), v)| Pair {
            from,
            to,
            rtt_ms: v.iter().sum::<f64>() / v.len() as f64,
        })
        .collect();
    let coords = vivaldi::fit(names.len(), &pairs, VIVALDI_ROUNDS);
    let known: BTreeSet<usize> = pairs.iter().flat_map(|p| [p.from, p.to]).collect();
    let mut entries = Vec::new();
    let pops = world.pops.len();
    for from in 0..names.len() {
        for to in 0..pops {
            if from == to {
                continue;
            }
            let direct = measured
                .get(&(from, to))
                .or_else(|| measured.get(&(to, from)))
                .map(|v| v.iter().sum::<f64>() / v.len() as f64);
            let entry = match direct {
                Some(rtt_ms) => RttEntry {
                    from: names[from].clone(),
                    to: names[to].clone(),
                    rtt_ms,
                    measured: true,
                },
                // Nothing to estimate from for a node no pair touches.
                None if !known.contains(&from) || !known.contains(&to) => continue,
                None => RttEntry {
                    from: names[from].clone(),
                    to: names[to].clone(),
                    rtt_ms: coords[from].rtt_to(&coords[to]),
                    measured: false,
                },
            };
            entries.push(entry);
        }
    }
    let coords = names
        .into_iter()
        .zip(coords)
        .enumerate()
        .filter(|(i, _)| known.contains(i))
        .map(|(_, nc)| nc)
        .collect();
    (coords, entries)
}
