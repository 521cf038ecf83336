//! Isobar's probe agent: measures the targets the scheduler names and streams the results back.
//!
//! One job: run the probes the scheduler asks for, from one vantage point, and deliver what
//! they saw. It knows nothing of the scheduler's internals; the only contract is the
//! `isobar.v1.Telemetry` gRPC service.
//!
//! - **Input**: the `TargetSet` stream from `Telemetry/WatchTargets` for this vantage. Every set
//!   received replaces the running probe set: new targets start, targets no longer listed stop at
//!   once, targets whose settings changed restart (keeping their sequence numbers).
//! - **Output**: `MeasurementBatch`es on a `Telemetry/Report` client stream, one every
//!   `batch_interval` or as soon as [`MAX_BATCH`] measurements are pending.
//!
//! Between the probes and the reporter sits a bounded buffer of `max_buffered` measurements.
//! While the scheduler is unreachable measurements accumulate there; past the bound the oldest
//! are dropped and counted. Delivery is **at most once**: a batch handed to a report stream that
//! then fails is not re-sent, because the scheduler may already have accepted it and gRPC client
//! streams carry no per-message acknowledgement. Measurements still in the buffer are never lost
//! to a failed stream.
//!
//! Probe kinds: TCP connect, HTTP(S) GET, ICMP echo, DNS query and Isobar's UDP echo, whose
//! responder ([`echo::Responder`]) ships in this crate. With [`ProberConfig::load`] set, the
//! prober is also the node's load agent: CPU, load average, open connections and an
//! operator-defined figure ride along in the report batches.
//!
//! Both streams reconnect with exponential backoff (100 ms doubling to 5 s, full jitter) and
//! carry `authorization: Bearer <token>` when a token is configured. Everything stops when the
//! shutdown token is cancelled.

mod backoff;
mod buffer;
mod client;
pub mod echo;
mod load;
mod probe;
mod report;
mod targets;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::buffer::Buffer;
use crate::client::BearerAuth;

pub use crate::load::LoadAgentConfig;

/// Largest number of measurements sent in one `MeasurementBatch`; reaching it also triggers a
/// send before the batch interval elapses.
pub const MAX_BATCH: usize = 500;

/// Default bound of the measurement buffer.
pub const DEFAULT_MAX_BUFFERED: usize = 10_000;

/// Default time between two report batches.
pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(200);

/// How long a TCP + HTTP/2 connection attempt to the scheduler may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// HTTP/2 pings detect a scheduler that vanished without closing the connection; a silent
/// stream would otherwise keep measurements in flight forever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of one prober process.
#[derive(Clone)]
pub struct ProberConfig {
    /// The scheduler's gRPC address, `http://host:port`.
    pub scheduler: String,
    /// Bearer token sent with every request, if the scheduler requires one.
    pub token: Option<String>,
    /// The observer's name, normally the PoP the prober runs in (e.g. `fra1`).
    pub vantage: String,
    /// How many measurements are kept while the scheduler is unreachable; past this the oldest
    /// are dropped.
    pub max_buffered: usize,
    /// Time between two report batches.
    pub batch_interval: Duration,
    /// Run the node load agent too (CPU, load average, connections, operator figure).
    pub load: Option<LoadAgentConfig>,
    /// TLS settings; required for an `https://` scheduler.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl ProberConfig {
    /// A configuration with the default buffer bound and batch interval and no token.
    pub fn new(scheduler: impl Into<String>, vantage: impl Into<String>) -> Self {
        Self {
            scheduler: scheduler.into(),
            token: None,
            vantage: vantage.into(),
            max_buffered: DEFAULT_MAX_BUFFERED,
            batch_interval: DEFAULT_BATCH_INTERVAL,
            load: None,
            tls: None,
        }
    }
}

// Hand-written so the token never reaches a log line.
impl fmt::Debug for ProberConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProberConfig")
            .field("scheduler", &self.scheduler)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("vantage", &self.vantage)
            .field("max_buffered", &self.max_buffered)
            .field("batch_interval", &self.batch_interval)
            .field("load", &self.load)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Why the prober could not start. Once running it never fails: connection problems are
/// retried until shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ProberError {
    /// `scheduler` is not a usable `http://host:port` URL.
    #[error("invalid scheduler address {address:?}: {reason}")]
    InvalidScheduler {
        /// The address as configured.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token contains characters that cannot appear in an HTTP header.
    #[error("token is not a valid http header value")]
    InvalidToken,
    /// The vantage name is empty.
    #[error("vantage must not be empty")]
    EmptyVantage,
    /// `max_buffered` is zero.
    #[error("max_buffered must be at least 1")]
    ZeroBuffer,
    /// `batch_interval` is zero.
    #[error("batch_interval must be greater than zero")]
    ZeroBatchInterval,
}

/// Runs the prober until `shutdown` is cancelled.
///
/// Returns an error only if `cfg` is invalid; otherwise it returns `Ok(())` after the target
/// watcher, every probe loop and the reporter have stopped.
pub async fn run(cfg: ProberConfig, shutdown: CancellationToken) -> Result<(), ProberError> {
    let endpoint = endpoint(&cfg.scheduler, cfg.tls.clone())?;
    let auth = BearerAuth::new(cfg.token.as_deref())?;
    if cfg.vantage.is_empty() {
        return Err(ProberError::EmptyVantage);
    }
    if cfg.max_buffered == 0 {
        return Err(ProberError::ZeroBuffer);
    }
    if cfg.batch_interval.is_zero() {
        return Err(ProberError::ZeroBatchInterval);
    }
    tracing::info!(scheduler = %cfg.scheduler, vantage = %cfg.vantage, "prober starting");

    let buffer = Arc::new(Buffer::new(cfg.max_buffered, MAX_BATCH));
    let load_agent = cfg.load.clone().map(|load| {
        let node = load.node.clone().unwrap_or_else(|| cfg.vantage.clone());
        tokio::spawn(load::run(load, node, Arc::clone(&buffer), shutdown.clone()))
    });
    let watcher = tokio::spawn(targets::watch(
        endpoint.clone(),
        auth.clone(),
        cfg.vantage.clone(),
        Arc::clone(&buffer),
        shutdown.clone(),
    ));
    let reporter = tokio::spawn(report::run(
        endpoint,
        auth,
        report::Settings {
            vantage: cfg.vantage,
            batch_interval: cfg.batch_interval,
        },
        buffer,
        shutdown,
    ));
    // A panic inside a task is a bug; surface it in the log rather than tearing down the caller.
    let tasks = [
        ("target watcher", Some(watcher)),
        ("reporter", Some(reporter)),
        ("load agent", load_agent),
    ];
    for (name, task) in tasks.into_iter().filter_map(|(n, t)| Some((n, t?))) {
        if let Err(e) = task.await {
            tracing::error!(task = name, error = %e, "prober task failed");
        }
    }
    tracing::info!("prober stopped");
    Ok(())
}

fn endpoint(
    address: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<Endpoint, ProberError> {
    let invalid = |reason: String| ProberError::InvalidScheduler {
        address: address.to_owned(),
        reason,
    };
    let endpoint = Endpoint::from_shared(address.to_owned()).map_err(|e| invalid(e.to_string()))?;
    // An https URL without trust roots would fail every connection attempt, far from the
    // cause; refuse it here.
    let endpoint = match (endpoint.uri().scheme_str(), tls) {
        (Some("http"), _) => endpoint,
        (Some("https"), Some(tls)) => endpoint
            .tls_config(tls)
            .map_err(|e| invalid(e.to_string()))?,
        (Some("https"), None) => {
            return Err(invalid("https needs a CA (--scheduler-ca)".to_owned()));
        }
        (Some(other), _) => {
            return Err(invalid(format!(
                "unsupported scheme {other:?}, use http or https"
            )));
        }
        (None, _) => return Err(invalid("missing scheme, use http://host:port".to_owned())),
    };
    if endpoint.uri().host().is_none() {
        return Err(invalid("missing host".to_owned()));
    }
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_rejects_unusable_addresses() {
        assert!(endpoint("http://127.0.0.1:7000", None).is_ok());
        for bad in [
            "127.0.0.1:7000",
            "https://127.0.0.1:7000",
            "http://",
            "not a url",
        ] {
            assert!(endpoint(bad, None).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn debug_redacts_token() {
        let mut cfg = ProberConfig::new("http://127.0.0.1:1", "fra1");
        cfg.token = Some("s3cret".to_owned());
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
