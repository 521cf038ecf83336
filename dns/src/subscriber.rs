//! Keeps the engine fed: watches the scheduler's updates, applies deltas, reconnects, and
//! persists the result.
//!
//! The scheduler sends a whole snapshot first, then deltas from the version last sent
//! (`WatchUpdates`). The subscriber keeps the proto snapshot of that version beside the
//! engine's serving form, applies each delta to it ([`isobar_proto::delta::apply`]) and
//! installs the result: all or nothing. A delta it cannot apply or that yields an invalid
//! snapshot changes nothing and makes it resubscribe with `have_version = 0`, which brings a
//! whole snapshot. A scheduler without `WatchUpdates` is watched whole (`WatchSnapshot`).
//!
//! The engine serves its last good snapshot whatever happens here: a lost scheduler, a
//! rejected snapshot or a failed write only delay the next update. The persisted copy lets
//! a restarted frontend answer before the scheduler is reachable again.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use isobar_proto::delta::DeltaError;
use isobar_proto::v1::steering_client::SteeringClient;
use isobar_proto::v1::{Snapshot, SnapshotDelta, WatchSnapshotRequest, snapshot_update};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::engine::Engine;
use crate::snapshot::SnapshotError;

/// First reconnect delay; doubled after each failed attempt.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Reconnect delay ceiling.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Bound on establishing the connection to the scheduler.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on the watch stream, so a scheduler that vanished without closing the
/// connection is noticed even when no snapshot is due.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest snapshot accepted, on the wire or from disk. A 5° grid with 500 services is
/// about 5 MiB; this leaves an order of magnitude of headroom.
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

/// Where and how to subscribe.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// The scheduler's gRPC endpoint, e.g. `http://127.0.0.1:50051`.
    pub endpoint: String,
    /// Sent as `authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// This frontend's name, for the scheduler's logs and metrics.
    pub frontend: String,
    /// Where to keep the last installed snapshot, if anywhere.
    pub persist_path: Option<PathBuf>,
}

/// A configuration the subscriber cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum SubscriberError {
    /// The endpoint is not a valid URI.
    #[error("invalid scheduler endpoint {endpoint:?}: {source}")]
    Endpoint {
        /// The endpoint given.
        endpoint: String,
        /// tonic's reason.
        source: tonic::transport::Error,
    },
    /// The token cannot be sent as an HTTP header value.
    #[error("the scheduler token contains characters not allowed in a header")]
    Token,
}

/// A persisted snapshot that could not be written or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading or writing the file failed.
    #[error("snapshot file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is larger than any snapshot we accept.
    #[error("snapshot file {path} is {size} bytes, more than the {MAX_SNAPSHOT_BYTES} accepted")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The file is not an encoded snapshot.
    #[error("snapshot file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The protobuf decoding error.
        source: prost::DecodeError,
    },
    /// The file decodes but the snapshot is invalid.
    #[error("snapshot file {path} holds an invalid snapshot: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why it was rejected.
        source: SnapshotError,
    },
}

/// Installs the snapshot persisted at `path`, if the file exists. Returns the version then
/// served. Errors leave the engine as it was; callers log them and carry on.
pub fn load_persisted(path: &Path, engine: &Engine) -> Result<Option<u64>, PersistError> {
    let Some(snapshot) = read_persisted(path)? else {
        return Ok(None);
    };
    let version = engine
        .install(&snapshot)
        .map_err(|source| PersistError::Invalid {
            path: path.to_owned(),
            source,
        })?;
    Ok(Some(version))
}

/// The snapshot persisted at `path`, decoded but not validated; `None` when there is no file.
fn read_persisted(path: &Path) -> Result<Option<Snapshot>, PersistError> {
    let io_err = |source| PersistError::Io {
        path: path.to_owned(),
        source,
    };
    let size = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    if size > MAX_SNAPSHOT_BYTES as u64 {
        return Err(PersistError::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    let bytes = std::fs::read(path).map_err(io_err)?;
    let snapshot = Snapshot::decode(bytes.as_slice()).map_err(|source| PersistError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    Ok(Some(snapshot))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, flushed, then renamed,
/// so a crash leaves either the old snapshot or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    // Make the rename itself durable; not every platform lets a directory be synced.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Called with each version the subscriber installs, on the installing thread right after
/// the engine swapped it in (for measurements and tests).
pub type InstallHook = Arc<dyn Fn(u64) + Send + Sync>;

/// Subscriber behaviour beyond [`SubscriberConfig`]; the default is what a frontend runs.
#[derive(Clone, Default)]
pub struct SubscriberOptions {
    /// Called with every version installed.
    pub on_install: Option<InstallHook>,
    /// Watch whole snapshots only (`WatchSnapshot`), never deltas: what happens anyway
    /// against a scheduler without `WatchUpdates`. For comparisons.
    pub whole_snapshots: bool,
}

/// Watches updates from the scheduler until `shutdown` is cancelled, installing each into
/// `engine` and persisting it. Reconnects with jittered exponential backoff (100 ms doubling
/// to 5 s). Returns an error only for a configuration it can never work with.
pub async fn run(
    cfg: SubscriberConfig,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
) -> Result<(), SubscriberError> {
    run_with_tls(cfg, None, engine, shutdown).await
}

/// [`run`] with TLS settings for an `https://` endpoint.
pub async fn run_with_tls(
    cfg: SubscriberConfig,
    tls: Option<tonic::transport::ClientTlsConfig>,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
) -> Result<(), SubscriberError> {
    run_with_options(cfg, tls, engine, shutdown, SubscriberOptions::default()).await
}

/// [`run_with_tls`] with [`SubscriberOptions`].
pub async fn run_with_options(
    cfg: SubscriberConfig,
    tls: Option<tonic::transport::ClientTlsConfig>,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    options: SubscriberOptions,
) -> Result<(), SubscriberError> {
    let mut endpoint = Endpoint::from_shared(cfg.endpoint.clone())
        .map_err(|source| SubscriberError::Endpoint {
            endpoint: cfg.endpoint.clone(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|source| SubscriberError::Endpoint {
                endpoint: cfg.endpoint.clone(),
                source,
            })?;
    }
    let auth = cfg
        .token
        .as_deref()
        .map(|t| format!("Bearer {t}").parse::<MetadataValue<Ascii>>())
        .transpose()
        .map_err(|_| SubscriberError::Token)?;

    let mut feed = Feed {
        engine,
        held: None,
        persist_path: cfg.persist_path.clone(),
        on_install: options.on_install,
        whole_snapshots: options.whole_snapshots,
    };
    feed.adopt_persisted().await;
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let mut received = false;
        let result = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            r = watch(&endpoint, &cfg, auth.as_ref(), &mut feed, &mut received) => r,
        };
        match result {
            Ok(()) => tracing::info!(endpoint = %cfg.endpoint, "snapshot stream ended"),
            Err(error @ WatchError::Resync { .. }) => {
                tracing::warn!(endpoint = %cfg.endpoint, %error, "resubscribing for a whole snapshot")
            }
            Err(error) => {
                tracing::warn!(endpoint = %cfg.endpoint, %error, "snapshot stream failed")
            }
        }
        if received {
            backoff = INITIAL_BACKOFF;
        }
        // Equal jitter: half the delay is fixed, half random, so a fleet of frontends that
        // lost the scheduler together does not reconnect in lockstep.
        let delay = backoff.mul_f64(rand::random_range(0.5..=1.0));
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Why one watch attempt ended.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("rpc: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("snapshot install task: {0}")]
    Install(#[from] tokio::task::JoinError),
    #[error("delta to version {version} not applied: {reason}")]
    Resync { version: u64, reason: ResyncReason },
}

/// Why a delta was refused.
#[derive(Debug, thiserror::Error)]
enum ResyncReason {
    #[error("{0}")]
    Apply(#[from] DeltaError),
    #[error("the resulting snapshot is invalid: {0}")]
    Invalid(#[from] SnapshotError),
}

/// The engine and what it takes to move it forward.
struct Feed {
    engine: Arc<Engine>,
    /// The snapshot the scheduler last sent us and we accepted: the base of its next delta.
    /// `None` after a refused delta, so the next subscription asks for a whole snapshot.
    held: Option<Arc<Snapshot>>,
    persist_path: Option<PathBuf>,
    on_install: Option<InstallHook>,
    whole_snapshots: bool,
}

impl Feed {
    /// Takes the persisted snapshot as the base for deltas when it is the version the
    /// engine serves (loaded at start), so a restart does not cost a whole snapshot.
    async fn adopt_persisted(&mut self) {
        let (Some(path), served) = (self.persist_path.clone(), self.engine.version()) else {
            return;
        };
        if served == 0 {
            return;
        }
        if let Ok(Ok(Some(snapshot))) =
            tokio::task::spawn_blocking(move || read_persisted(&path)).await
            && snapshot.version == served
        {
            self.held = Some(Arc::new(snapshot));
        }
    }

    /// Installs a whole snapshot. A rejected one leaves everything as it was; the next
    /// delta (computed from the rejected version) then fails to apply and we resubscribe.
    async fn install_full(&mut self, snapshot: Snapshot) -> Result<(), WatchError> {
        let offered = snapshot.version;
        match self
            .install(move || Ok::<_, SnapshotError>(snapshot))
            .await?
        {
            Ok(snapshot) => self.held = Some(snapshot),
            Err(error) => {
                tracing::error!(version = offered, %error, "snapshot rejected; still serving the previous one");
            }
        }
        Ok(())
    }

    /// Applies a delta to the held snapshot and installs the result, all or nothing. Any
    /// failure forgets the held snapshot and ends the stream, to resubscribe from scratch.
    async fn install_delta(&mut self, delta: SnapshotDelta) -> Result<(), WatchError> {
        let version = delta.version;
        let resync = |reason: ResyncReason| WatchError::Resync { version, reason };
        let Some(base) = self.held.take() else {
            return Err(resync(
                DeltaError::BaseMismatch {
                    held: 0,
                    base: delta.base_version,
                }
                .into(),
            ));
        };
        let applied = self
            .install(move || {
                // The base is ours alone once taken: moved into the result, not copied.
                let base = Arc::unwrap_or_clone(base);
                Ok::<_, ResyncReason>(isobar_proto::delta::apply_owned(base, delta)?)
            })
            .await?;
        self.held = Some(applied.map_err(resync)?);
        Ok(())
    }

    /// Builds the snapshot with `make`, then validates, indexes and swaps it in, all on a
    /// blocking thread (large snapshots are CPU work; keep it off the threads that answer
    /// queries); calls the hook, logs and persists. Returns the snapshot now held, which
    /// the engine serves unless it already served a newer one.
    async fn install<E>(
        &self,
        make: impl FnOnce() -> Result<Snapshot, E> + Send + 'static,
    ) -> Result<Result<Arc<Snapshot>, E>, WatchError>
    where
        E: From<SnapshotError> + Send + 'static,
    {
        let engine = Arc::clone(&self.engine);
        let hook = self.on_install.clone();
        let served_before = engine.version();
        let installed = tokio::task::spawn_blocking(move || {
            let snapshot = make()?;
            let version = engine.install(&snapshot)?;
            if let Some(hook) = hook.filter(|_| version > served_before) {
                hook(version);
            }
            Ok((Arc::new(snapshot), version))
        })
        .await?;
        Ok(match installed {
            Ok((snapshot, version)) => {
                self.installed(&snapshot, served_before, version).await;
                Ok(snapshot)
            }
            Err(error) => Err(error),
        })
    }

    /// Logs and persists an accepted snapshot that the engine now serves (or ignored, when
    /// it already served a newer one).
    async fn installed(&self, snapshot: &Snapshot, served_before: u64, version: u64) {
        if version > served_before {
            tracing::info!(
                version,
                config_version = snapshot.config_version,
                "snapshot installed"
            );
            if let Some(path) = &self.persist_path {
                persist(path, snapshot).await;
            }
        } else {
            tracing::debug!(
                offered = snapshot.version,
                served = version,
                "older snapshot ignored"
            );
        }
    }
}

/// One connection: stream updates until the stream ends or fails.
async fn watch(
    endpoint: &Endpoint,
    cfg: &SubscriberConfig,
    auth: Option<&MetadataValue<Ascii>>,
    feed: &mut Feed,
    received: &mut bool,
) -> Result<(), WatchError> {
    let channel: Channel = endpoint.connect().await?;
    let mut client = SteeringClient::new(channel).max_decoding_message_size(MAX_SNAPSHOT_BYTES);
    let request = |have_version| {
        let mut request = tonic::Request::new(WatchSnapshotRequest {
            frontend: cfg.frontend.clone(),
            have_version,
        });
        if let Some(auth) = auth {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        request
    };
    if feed.whole_snapshots {
        let have = feed.engine.version();
        return watch_whole(&mut client, request(have), cfg, feed, received).await;
    }
    let have = feed.held.as_ref().map_or(0, |s| s.version);
    let mut stream = match client.watch_updates(request(have)).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            return watch_whole(
                &mut client,
                request(feed.engine.version()),
                cfg,
                feed,
                received,
            )
            .await;
        }
        Err(status) => return Err(status.into()),
    };
    tracing::info!(endpoint = %cfg.endpoint, have_version = have, "watching snapshot updates");
    while let Some(update) = stream.message().await? {
        *received = true;
        match update.kind {
            Some(snapshot_update::Kind::Full(snapshot)) => feed.install_full(snapshot).await?,
            Some(snapshot_update::Kind::Delta(delta)) => feed.install_delta(delta).await?,
            None => tracing::warn!("empty snapshot update ignored"),
        }
    }
    Ok(())
}

/// Whole snapshots only: against a scheduler that predates deltas, or when
/// [`SubscriberOptions::whole_snapshots`] asks for it.
async fn watch_whole(
    client: &mut SteeringClient<Channel>,
    request: tonic::Request<WatchSnapshotRequest>,
    cfg: &SubscriberConfig,
    feed: &mut Feed,
    received: &mut bool,
) -> Result<(), WatchError> {
    let mut stream = client.watch_snapshot(request).await?.into_inner();
    tracing::info!(endpoint = %cfg.endpoint, "watching whole snapshots");
    while let Some(snapshot) = stream.message().await? {
        *received = true;
        feed.install_full(snapshot).await?;
    }
    Ok(())
}

async fn persist(path: &Path, snapshot: &Snapshot) {
    let bytes = snapshot.encode_to_vec();
    let target = path.to_owned();
    let written = tokio::task::spawn_blocking(move || write_atomically(&target, &bytes)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(path = %path.display(), %error, "cannot persist snapshot");
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "snapshot persist task failed")
        }
    }
}
