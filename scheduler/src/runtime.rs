//! The running scheduler: holds the world, health and placements, recomputes the steering
//! snapshot when they change, and publishes snapshots, probe targets and placement
//! decisions to whoever subscribes (the gRPC services in [`crate::grpc`]).
//!
//! Locks are never held across an `.await`: store I/O happens outside, and the critical
//! sections are the pure solvers plus a few map updates.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use isobar_proto::v1::{
    PlacementDecision, PlacementPolicy, ProbeKind, ProbeTarget, Snapshot, StatusReport, TargetSet,
};
use isobar_store::world::World;
use isobar_store::{Store, StoreError};
use prost::Message;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::health::{HealthTable, State, Transition};
use crate::placement::{self, PolicyError};
use crate::steering;

/// How often the store's config version is polled, to pick up changes other nodes applied.
pub const CONFIG_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Capacity of the placement-change broadcast; slow watchers that fall further behind
/// resynchronise from the current state.
const PLACEMENT_CHANNEL_CAPACITY: usize = 256;

/// Errors of scheduler operations, mapped to gRPC codes by the services.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A config file was rejected.
    #[error("{0}")]
    Config(#[from] isobar_store::config::ConfigError),
    /// A placement policy was rejected.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// No placement exists for the service.
    #[error("no placement for service {0}")]
    NoPlacement(String),
    /// The world could not be solved (a bug or a corrupted store).
    #[error("steering: {0}")]
    Solve(#[from] steering::SolveError),
}

/// The outcome of applying a config.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Whether anything changed.
    pub changed: bool,
    /// The config version in force afterwards.
    pub config_version: u64,
    /// Diff lines.
    pub diff: Vec<String>,
}

/// The scheduler's state and its publication channels.
pub struct Scheduler {
    store: Store,
    inner: Mutex<Inner>,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    targets_tx: watch::Sender<Arc<TargetSet>>,
    placement_tx: broadcast::Sender<PlacementDecision>,
    recompute: Notify,
}

struct Inner {
    world: Arc<World>,
    config_version: u64,
    health: HealthTable,
    placements: BTreeMap<String, PlacementDecision>,
    /// The last published snapshot with version and timestamp zeroed, to detect changes.
    last_content: Snapshot,
}

// === impl Scheduler ===

impl Scheduler {
    /// Loads the world and placements from the store and computes the first snapshot.
    pub async fn open(store: Store) -> Result<Arc<Self>, SchedulerError> {
        let (world, config_version) = store.load_world().await?;
        let mut placements = BTreeMap::new();
        for row in store.load_placements().await? {
            match decode_hex(&row.decision)
                .and_then(|b| PlacementDecision::decode(b.as_slice()).ok())
            {
                Some(decision) => {
                    placements.insert(row.service.clone(), decision);
                }
                None => warn!(service = %row.service, "ignoring undecodable stored placement"),
            }
        }
        let now = now_ms();
        let health = HealthTable::new(world.health.clone(), target_ids(&world), now);
        let content = steering::solve(&world, config_version, &health.down_set())?;
        let mut first = content.clone();
        first.version = next_version(0);
        first.generated_unix_ms = now;
        let targets = target_set(&world, config_version);
        let (snapshot_tx, _) = watch::channel(Arc::new(first));
        let (targets_tx, _) = watch::channel(Arc::new(targets));
        let (placement_tx, _) = broadcast::channel(PLACEMENT_CHANNEL_CAPACITY);
        info!(
            config_version,
            backend = store.backend_name(),
            "scheduler loaded world"
        );
        Ok(Arc::new(Self {
            store,
            inner: Mutex::new(Inner {
                world: Arc::new(world),
                config_version,
                health,
                placements,
                last_content: content,
            }),
            snapshot_tx,
            targets_tx,
            placement_tx,
            recompute: Notify::new(),
        }))
    }

    /// Spawns the background loops (snapshot recompute, store polling) into `tasks`. They
    /// stop when `shutdown` is cancelled.
    pub fn spawn(self: &Arc<Self>, tasks: &mut JoinSet<()>, shutdown: CancellationToken) {
        let this = Arc::clone(self);
        let token = shutdown.clone();
        tasks.spawn(async move { this.recompute_loop(token).await });
        let this = Arc::clone(self);
        tasks.spawn(async move { this.poll_loop(shutdown).await });
    }

    /// The store this scheduler writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Subscribes to snapshots; the receiver holds the current one.
    pub fn watch_snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot_tx.subscribe()
    }

    /// Subscribes to probe target sets; the receiver holds the current one.
    pub fn watch_targets(&self) -> watch::Receiver<Arc<TargetSet>> {
        self.targets_tx.subscribe()
    }

    /// Subscribes to placement changes.
    pub fn watch_placements(&self) -> broadcast::Receiver<PlacementDecision> {
        self.placement_tx.subscribe()
    }

    /// The world in force and its version.
    pub fn world(&self) -> (Arc<World>, u64) {
        let inner = self.lock();
        (Arc::clone(&inner.world), inner.config_version)
    }

    /// Records a batch of probe results. Returns (accepted, rejected): results for targets
    /// that are not configured are rejected.
    pub fn ingest(
        &self,
        vantage: &str,
        results: impl IntoIterator<Item = (String, bool, String)>,
    ) -> (u64, u64) {
        let now = now_ms();
        let (mut accepted, mut rejected) = (0, 0);
        let mut transitions: Vec<Transition> = Vec::new();
        {
            let mut inner = self.lock();
            for (target, success, error) in results {
                if !inner.health.contains(&target) {
                    rejected += 1;
                    continue;
                }
                accepted += 1;
                transitions.extend(inner.health.observe(&target, success, &error, now));
            }
        }
        for t in &transitions {
            match t.to {
                State::Down => {
                    warn!(target = %t.target, vantage, reason = %t.reason, "target down")
                }
                State::Up => info!(target = %t.target, vantage, reason = %t.reason, "target up"),
            }
        }
        if !transitions.is_empty() {
            self.recompute.notify_one();
        }
        (accepted, rejected)
    }

    /// Every target's health.
    pub fn health_report(&self) -> BTreeMap<String, crate::health::TargetHealth> {
        self.lock().health.report()
    }

    /// Validates `toml` and stores it as the new world (unless `dry_run`).
    pub async fn apply_config(
        &self,
        source_name: &str,
        toml: &str,
        files: &BTreeMap<String, String>,
        dry_run: bool,
        actor: &str,
    ) -> Result<Applied, SchedulerError> {
        let read_file = |path: &str| {
            files.get(path).cloned().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{path} was not sent with the config"),
                )
            })
        };
        let parsed = isobar_store::config::parse_world(source_name, toml, &read_file)?;
        let outcome = self
            .store
            .apply_world(&parsed.world, actor, dry_run)
            .await?;
        if outcome.changed {
            info!(
                config_version = outcome.config_version,
                actor, "config applied"
            );
            self.reload().await?;
        }
        Ok(Applied {
            changed: outcome.changed,
            config_version: outcome.config_version,
            diff: outcome.changes.iter().map(ToString::to_string).collect(),
        })
    }

    /// Re-reads the world from the store and re-derives everything from it.
    pub async fn reload(&self) -> Result<(), SchedulerError> {
        let (world, config_version) = self.store.load_world().await?;
        let changed_placements = {
            let mut inner = self.lock();
            if config_version < inner.config_version {
                return Ok(());
            }
            inner
                .health
                .reconfigure(world.health.clone(), target_ids(&world), now_ms());
            inner.world = Arc::new(world);
            inner.config_version = config_version;
            replan_all(&mut inner)
        };
        self.targets_tx
            .send_replace(Arc::new(target_set(&self.world().0, config_version)));
        for decision in changed_placements {
            self.persist_placement(&decision).await?;
            let _ = self.placement_tx.send(decision);
        }
        self.recompute.notify_one();
        Ok(())
    }

    /// Declares or replaces a placement policy and returns the decision.
    pub async fn place(
        &self,
        service: &str,
        policy: PlacementPolicy,
        actor: &str,
    ) -> Result<PlacementDecision, SchedulerError> {
        let decision = {
            let mut inner = self.lock();
            placement::validate(&inner.world, service, &policy)?;
            let used = used_slots(&inner.placements, service);
            let mut decision = placement::solve(&inner.world, service, &policy, &used);
            let previous = inner.placements.get(service);
            if let Some(prev) = previous.filter(|p| same_decision(p, &decision)) {
                return Ok(prev.clone());
            }
            decision.version = previous.map_or(1, |p| p.version + 1);
            inner
                .placements
                .insert(service.to_owned(), decision.clone());
            decision
        };
        self.persist_placement(&decision).await?;
        self.store
            .append_audit(actor, "place", &serde_json::json!({
                "service": service,
                "version": decision.version,
                "requested": decision.requested,
                "placed": decision.placed,
                "sites": decision.sites.iter().map(|s| (s.site.clone(), s.replicas)).collect::<BTreeMap<_, _>>(),
            }))
            .await?;
        let _ = self.placement_tx.send(decision.clone());
        Ok(decision)
    }

    /// The current decision for a service.
    pub fn placement(&self, service: &str) -> Result<PlacementDecision, SchedulerError> {
        self.lock()
            .placements
            .get(service)
            .cloned()
            .ok_or_else(|| SchedulerError::NoPlacement(service.to_owned()))
    }

    /// Every current decision (or the one for `service` when non-empty).
    pub fn placements(&self, service: &str) -> Vec<PlacementDecision> {
        let inner = self.lock();
        inner
            .placements
            .values()
            .filter(|d| service.is_empty() || d.service == service)
            .cloned()
            .collect()
    }

    /// Forgets a placement.
    pub async fn release(&self, service: &str, actor: &str) -> Result<(), SchedulerError> {
        if self.lock().placements.remove(service).is_none() {
            return Err(SchedulerError::NoPlacement(service.to_owned()));
        }
        self.store.delete_placement(service).await?;
        self.store
            .append_audit(actor, "release", &serde_json::json!({ "service": service }))
            .await?;
        Ok(())
    }

    /// Stores an orchestrator's status report for one site.
    pub async fn report_status(&self, report: &StatusReport) -> Result<(), SchedulerError> {
        if self.lock().world.service(&report.service).is_none() {
            return Err(PolicyError::UnknownService(report.service.clone()).into());
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

    /// Solves the steering map now and publishes it if it changed.
    pub fn recompute_now(&self) -> Result<bool, SchedulerError> {
        let mut inner = self.lock();
        let content =
            steering::solve(&inner.world, inner.config_version, &inner.health.down_set())?;
        if content == inner.last_content {
            return Ok(false);
        }
        inner.last_content = content.clone();
        let mut snapshot = content;
        snapshot.version = next_version(self.snapshot_tx.borrow().version);
        snapshot.generated_unix_ms = now_ms();
        debug!(version = snapshot.version, "publishing snapshot");
        self.snapshot_tx.send_replace(Arc::new(snapshot));
        Ok(true)
    }

    async fn recompute_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.recompute.notified() => {}
            }
            if let Err(err) = self.recompute_now() {
                warn!(error = %err, "steering recompute failed; keeping the previous snapshot");
            }
        }
    }

    async fn poll_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(CONFIG_POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let stored = match self.store.config_version().await {
                Ok(v) => v,
                Err(err) => {
                    warn!(error = %err, "cannot poll the store's config version");
                    continue;
                }
            };
            if stored > self.lock().config_version {
                info!(
                    config_version = stored,
                    "store has a newer config; reloading"
                );
                if let Err(err) = self.reload().await {
                    warn!(error = %err, "reload failed");
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Re-solves every placement against the current world; returns those that changed, with
/// their versions bumped.
fn replan_all(inner: &mut Inner) -> Vec<PlacementDecision> {
    let services: Vec<String> = inner.placements.keys().cloned().collect();
    let mut changed = Vec::new();
    for service in services {
        let Some(previous) = inner.placements.get(&service).cloned() else {
            continue;
        };
        let policy = previous.policy.clone().unwrap_or_default();
        let mut decision = if placement::validate(&inner.world, &service, &policy).is_ok() {
            placement::solve(
                &inner.world,
                &service,
                &policy,
                &used_slots(&inner.placements, &service),
            )
        } else {
            // The service or a region it names is gone: keep what still exists of the old
            // decision? No — an invalid policy places nothing, and says why.
            PlacementDecision {
                service: service.clone(),
                requested: policy.replicas,
                conditions: vec![isobar_proto::v1::Condition {
                    r#type: "Invalid".into(),
                    message: placement::validate(&inner.world, &service, &policy)
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default(),
                }],
                policy: Some(policy),
                ..Default::default()
            }
        };
        if !same_decision(&previous, &decision) {
            decision.version = previous.version + 1;
            inner.placements.insert(service, decision.clone());
            changed.push(decision);
        }
    }
    changed
}

fn same_decision(a: &PlacementDecision, b: &PlacementDecision) -> bool {
    a.sites == b.sites
        && a.requested == b.requested
        && a.placed == b.placed
        && a.conditions == b.conditions
        && a.policy == b.policy
}

fn used_slots(
    placements: &BTreeMap<String, PlacementDecision>,
    except: &str,
) -> HashMap<String, u32> {
    let mut used = HashMap::new();
    for decision in placements.values().filter(|d| d.service != except) {
        for site in &decision.sites {
            *used.entry(site.site.clone()).or_insert(0) += site.replicas;
        }
    }
    used
}

fn target_ids(world: &World) -> Vec<String> {
    let mut ids: Vec<String> = world
        .services
        .iter()
        .flat_map(|s| s.endpoints.iter().filter_map(|e| e.target_id()))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn target_set(world: &World, config_version: u64) -> TargetSet {
    let mut targets: Vec<ProbeTarget> = world
        .services
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter_map(|e| {
            let check = e.check.clone()?;
            Some(ProbeTarget {
                id: e.target_id()?,
                kind: ProbeKind::Tcp as i32,
                address: check,
                interval_ms: world.health.interval_ms,
                timeout_ms: world.health.timeout_ms,
                params: Default::default(),
            })
        })
        .collect();
    targets.sort_by(|a, b| a.id.cmp(&b.id));
    targets.dedup_by(|a, b| a.id == b.id);
    TargetSet {
        version: config_version,
        targets,
    }
}

/// Snapshot versions must keep growing across scheduler restarts, because frontends ignore
/// anything older than what they persisted: use the wall clock in milliseconds, and never
/// less than previous + 1.
fn next_version(previous: u64) -> u64 {
    (previous + 1).max(u64::try_from(now_ms()).unwrap_or(0))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn encode_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
