//! The running scheduler: holds the world, health and placements, recomputes the steering
//! snapshot when they change, and publishes snapshots, probe targets and placement
//! decisions to whoever subscribes (the gRPC services in [`crate::grpc`]).
//!
//! Locks are never held across an `.await`: store I/O happens outside, and the critical
//! sections are the pure solvers plus a few map updates.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use isobar_proto::v1::{PlacementDecision, Snapshot, TargetSet};
use isobar_store::world::World;
use isobar_store::{Store, StoreError};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::health::HealthTable;
use crate::placement::PolicyError;
use crate::placement_state::PlacementBook;
use crate::steering;

mod placement;
mod steer;
pub use placement::{PLACEMENT_TICK, PlacementMetrics};
pub use steer::VERDICT_ACTOR;

/// How often steering is re-solved even without a trigger: gray ramps, drain windows,
/// failback windows and demand move with time.
pub const STEERING_TICK: Duration = Duration::from_secs(1);

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
    /// A zone import or export was refused.
    #[error("{0}")]
    Zone(#[from] crate::zonefile::ZoneError),
    /// No service of that name is configured.
    #[error("no service named {0}")]
    UnknownService(String),
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
    placement_metrics: PlacementMetrics,
    /// Serialises placement changes from solve to store write (see `publish_outcomes`).
    placement_gate: tokio::sync::Mutex<()>,
    pub(crate) recompute: Notify,
    /// Client-measured RTT (RUM) per (client group, PoP); its own lock, off `inner`.
    rum: Mutex<crate::rum::RumBook>,
}

pub(crate) struct Inner {
    world: Arc<World>,
    config_version: u64,
    pub(crate) health: HealthTable,
    /// Measurement windows and node loads (see [`crate::probing`]).
    pub(crate) measure: crate::measure::Measurements,
    /// Mesh and landmark target ids: measured, but without health.
    pub(crate) probe_only: std::collections::HashSet<String>,
    placements: PlacementBook,
    /// The last published snapshot with version and timestamp zeroed, to detect changes.
    last_content: Snapshot,
    /// Steering solver state, drain confirmations and pending events.
    pub(crate) steer: steer::SteerState,
}

// === impl Scheduler ===

impl Scheduler {
    /// Loads the world and placements from the store and computes the first snapshot.
    pub async fn open(store: Store) -> Result<Arc<Self>, SchedulerError> {
        let (world, config_version) = store.load_world().await?;
        let placements = placement::load_book(&store, now_ms()).await?;
        let now = now_ms();
        let health = crate::probing::initial_health(&store, &world, now).await?;
        let probe_only = crate::probing::probe_only_ids(&world);
        let content = steering::solve_with_ready(
            &world,
            config_version,
            &health.down_set(),
            &placements.ready_view(),
        )?;
        // The first snapshot uses health and placement only: measurements, demand and
        // client reports arrive after start, and the tick re-solves with them.
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
                measure: Default::default(),
                probe_only,
                steer: Default::default(),
            }),
            snapshot_tx,
            targets_tx,
            placement_tx,
            placement_metrics: PlacementMetrics::default(),
            placement_gate: tokio::sync::Mutex::new(()),
            recompute: Notify::new(),
            rum: Mutex::new(crate::rum::RumBook::default()),
        }))
    }

    /// Spawns the background loops (snapshot recompute, store polling) into `tasks`. They
    /// stop when `shutdown` is cancelled.
    pub fn spawn(self: &Arc<Self>, tasks: &mut JoinSet<()>, shutdown: CancellationToken) {
        let this = Arc::clone(self);
        let token = shutdown.clone();
        tasks.spawn(async move { this.recompute_loop(token).await });
        let this = Arc::clone(self);
        let token = shutdown.clone();
        tasks.spawn(async move { this.placement_loop(token).await });
        let this = Arc::clone(self);
        tasks.spawn(crate::probing::health_loop(
            Arc::clone(self),
            shutdown.clone(),
        ));
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

    /// Every target's health.
    pub fn health_report(&self) -> BTreeMap<String, crate::health::TargetHealth> {
        self.lock().health.report(now_ms())
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
        let _gate = self.placement_gate.lock().await;
        let (world, config_version) = self.store.load_world().await?;
        let changed_placements = {
            let mut inner = self.lock();
            if config_version < inner.config_version {
                return Ok(());
            }
            crate::probing::reconfigure(&mut inner, &world);
            inner.world = Arc::new(world);
            inner.config_version = config_version;
            let world = Arc::clone(&inner.world);
            inner.placements.replan_all(&world, now_ms())
        };
        self.targets_tx
            .send_replace(Arc::new(target_set(&self.world().0, config_version)));
        self.publish_outcomes(changed_placements, "scheduler")
            .await?;
        // Publish before returning, so that once an apply returns (and before `serve` opens
        // its listeners at start) subscribers can only ever see the new world, never the
        // snapshot of the world it replaced.
        self.recompute_now()?;
        Ok(())
    }

    /// Solves the steering map now and publishes it if it changed.
    pub fn recompute_now(&self) -> Result<bool, SchedulerError> {
        let mut inner = self.lock();
        let content = self.solve_steering(&mut inner)?.snapshot;
        if content == inner.last_content {
            return Ok(false);
        }
        inner.last_content = content.clone();
        self.publish(content);
        Ok(true)
    }

    /// Stamps `content` with the next version and the time and hands it to every watcher.
    fn publish(&self, content: Snapshot) -> u64 {
        let mut snapshot = content;
        snapshot.version = next_version(self.snapshot_tx.borrow().version);
        snapshot.generated_unix_ms = now_ms();
        debug!(version = snapshot.version, "publishing snapshot");
        let version = snapshot.version;
        self.snapshot_tx.send_replace(Arc::new(snapshot));
        version
    }

    /// Publishes `content` as a recompute publishes the solver's output (same versioning,
    /// same channel) without solving, and returns its version. Only for the propagation
    /// benchmark, which pushes real solver output but cannot afford a full solve per push.
    #[cfg(feature = "bench-hooks")]
    #[doc(hidden)]
    pub fn publish_for_bench(&self, content: Snapshot) -> u64 {
        let mut inner = self.lock();
        inner.last_content = content.clone();
        self.publish(content)
    }

    async fn recompute_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.recompute.notified() => {}
                () = tokio::time::sleep(STEERING_TICK) => {}
            }
            if let Err(err) = self.recompute_now() {
                warn!(error = %err, "steering recompute failed; keeping the previous snapshot");
            }
            self.handle_steering_events().await;
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

    /// Takes one frontend's client RTT report into the RUM book. Returns (accepted,
    /// rejected) samples.
    pub fn ingest_client_rtt(&self, samples: &[isobar_proto::v1::ClientRttSample]) -> (u64, u64) {
        let (world, config_version, ready) = {
            let inner = self.lock();
            (
                Arc::clone(&inner.world),
                inner.config_version,
                inner.placements.ready_view(),
            )
        };
        let mut rum = self.rum_lock();
        rum.index_world(&world, config_version);
        rum.ingest(samples, &ready, now_ms())
    }

    /// The fresh client reports (RUM) as the steering cost model reads them
    /// ([`crate::steering::cost::ClientReports`]).
    pub fn client_reports(&self) -> crate::rum::RumView {
        self.rum_lock().view(now_ms())
    }

    /// The RUM book's part of `GET /metrics`.
    pub fn rum_prometheus(&self) -> String {
        self.rum_lock().render_prometheus()
    }

    fn rum_lock(&self) -> MutexGuard<'_, crate::rum::RumBook> {
        self.rum
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn target_set(world: &World, config_version: u64) -> TargetSet {
    crate::probing::target_set(world, config_version)
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
