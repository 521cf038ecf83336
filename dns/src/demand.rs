//! Observed demand: per-(service, client group) query counters and the task that reports
//! them to the scheduler (`Telemetry/ReportDemand`) for demand-driven placement.
//!
//! The query path only increments one pre-sized `AtomicU64` (no lock, no allocation). A
//! table is built for each installed snapshot, sized services × (cells + override groups +
//! 1), and swapped in with it; counts still in the old table are carried over by name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use isobar_proto::geo::cell_count;
use isobar_proto::v1::telemetry_client::TelemetryClient;
use isobar_proto::v1::{DemandReport, GroupDemand};
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::engine::{Decision, Engine};
use crate::snapshot::{Service, ServingSnapshot};

/// Default reporting interval.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest and longest interval accepted: shorter floods the scheduler, longer lets the
/// scheduler's demand (kept 5 minutes per frontend) expire between reports.
pub const MIN_REPORT_INTERVAL: Duration = Duration::from_millis(100);
/// See [`MIN_REPORT_INTERVAL`].
pub const MAX_REPORT_INTERVAL: Duration = Duration::from_secs(120);
/// Most entries in one report (the scheduler rejects beyond 100 000); the busiest are kept.
pub const MAX_REPORT_ENTRIES: usize = 50_000;
/// Ceiling of the retry delay after failed reports; counts accumulate meanwhile.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);
/// Bound on one `ReportDemand` call, connection included.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Query counters for one snapshot version.
///
/// Layout per service: `cells` slots (0 when the service has no per-cell map, since such a
/// service is never located), then one per override group, then `unknown`.
#[derive(Debug, Default)]
pub struct DemandTable {
    version: u64,
    services: Box<[String]>,
    groups: Box<[String]>,
    /// Per service: index of its first slot and its cell count.
    layout: Box<[(usize, u32)]>,
    counts: Box<[AtomicU64]>,
}

impl DemandTable {
    /// A zeroed table shaped for `snapshot`.
    pub fn for_snapshot(snapshot: &ServingSnapshot) -> Self {
        let cells = u32::try_from(cell_count(snapshot.cell_degrees())).unwrap_or(u32::MAX);
        let groups: Box<[String]> = snapshot.overrides().groups().into();
        let mut layout = Vec::with_capacity(snapshot.services().len());
        let mut next = 0;
        for service in snapshot.services() {
            let c = if service.cell_answers.is_empty() {
                0
            } else {
                cells
            };
            layout.push((next, c));
            next += c as usize + groups.len() + 1;
        }
        Self {
            version: snapshot.version(),
            services: snapshot
                .services()
                .iter()
                .map(|s| s.name().to_string().to_ascii_lowercase())
                .collect(),
            groups,
            layout: layout.into(),
            counts: (0..next).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The snapshot version this table counts for.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Counts one query for the service at `service` decided by `decision`. Out-of-range
    /// indexes (a table and snapshot that do not match) are ignored.
    pub(crate) fn record(&self, service: usize, decision: Decision) {
        let Some(&(base, cells)) = self.layout.get(service) else {
            return;
        };
        let slot = match decision {
            Decision::GeoCell(c) if c < cells => c as usize,
            Decision::Override(g) | Decision::Asn(g) if (g as usize) < self.groups.len() => {
                cells as usize + g as usize
            }
            _ => cells as usize + self.groups.len(),
        };
        if let Some(counter) = self.counts.get(base + slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes every non-zero count, resetting it, as (service, group label) → queries.
    pub fn drain(&self, into: &mut BTreeMap<(String, String), u64>) {
        for (i, &(base, cells)) in self.layout.iter().enumerate() {
            let width = cells as usize + self.groups.len() + 1;
            for slot in 0..width {
                let Some(counter) = self.counts.get(base + slot) else {
                    continue;
                };
                let n = counter.swap(0, Ordering::Relaxed);
                if n > 0 {
                    *into
                        .entry((self.services[i].clone(), self.label(cells, slot)))
                        .or_default() += n;
                }
            }
        }
    }

    /// Moves `old`'s counts into this table where the service and group still exist, so a
    /// snapshot swap between two reports loses nothing.
    pub(crate) fn carry_from(&self, old: &DemandTable) {
        let mut drained = BTreeMap::new();
        old.drain(&mut drained);
        if drained.is_empty() {
            return;
        }
        let services: HashMap<&str, usize> = self
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        for ((service, group), n) in drained {
            let Some(&i) = services.get(service.as_str()) else {
                continue;
            };
            let (base, cells) = self.layout[i];
            let slot = if let Some(c) = group.strip_prefix("cell:") {
                c.parse::<u32>()
                    .ok()
                    .filter(|&c| c < cells)
                    .map(|c| c as usize)
            } else if let Some(g) = group.strip_prefix("group:") {
                self.groups
                    .iter()
                    .position(|x| x == g)
                    .map(|g| cells as usize + g)
            } else {
                Some(cells as usize + self.groups.len())
            };
            if let Some(counter) = slot.and_then(|s| self.counts.get(base + s)) {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn label(&self, cells: u32, slot: usize) -> String {
        let cells = cells as usize;
        if slot < cells {
            format!("cell:{slot}")
        } else if let Some(g) = self.groups.get(slot - cells) {
            format!("group:{g}")
        } else {
            "unknown".to_owned()
        }
    }
}

/// The index of `service` within `snapshot.services()`, from its address: `choose` is
/// handed a reference into that slice, and this keeps the query path free of a name
/// lookup. `None` if `service` does not live in `snapshot`.
pub(crate) fn service_index(snapshot: &ServingSnapshot, service: &Service) -> Option<usize> {
    let all = snapshot.services();
    let size = std::mem::size_of::<Service>().max(1);
    let offset = (service as *const Service as usize).checked_sub(all.as_ptr() as usize)?;
    let i = offset / size;
    (offset % size == 0 && i < all.len() && std::ptr::eq(&all[i], service)).then_some(i)
}

/// Where and how to report demand.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// The scheduler's gRPC endpoint (`http://` or `https://`).
    pub endpoint: String,
    /// Sent as `authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// This frontend's name; the scheduler keeps the latest report per name.
    pub frontend: String,
    /// How often to report, clamped to [`MIN_REPORT_INTERVAL`]..=[`MAX_REPORT_INTERVAL`].
    pub interval: Duration,
    /// TLS settings for an `https://` endpoint.
    pub tls: Option<ClientTlsConfig>,
}

/// A reporter configuration that can never work.
#[derive(Debug, thiserror::Error)]
pub enum ReporterError {
    /// The endpoint is not a valid URI, or TLS cannot be set up for it.
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

/// Builds one report from the counts accumulated over `window`: the busiest
/// [`MAX_REPORT_ENTRIES`] (service, group) pairs as queries per second.
pub fn build_report(
    frontend: &str,
    counts: &BTreeMap<(String, String), u64>,
    window: Duration,
) -> DemandReport {
    let secs = window.as_secs_f64().max(1e-3);
    let mut entries: Vec<(&(String, String), &u64)> = counts.iter().collect();
    if entries.len() > MAX_REPORT_ENTRIES {
        entries.sort_by(|a, b| b.1.cmp(a.1));
        entries.truncate(MAX_REPORT_ENTRIES);
    }
    DemandReport {
        frontend: frontend.to_owned(),
        window_ms: u32::try_from(window.as_millis()).unwrap_or(u32::MAX),
        demand: entries
            .into_iter()
            .map(|((service, group), &n)| GroupDemand {
                service: service.clone(),
                group: group.clone(),
                qps: n as f64 / secs,
            })
            .collect(),
    }
}

/// A lazily connecting `Telemetry` client for a reporter configuration, with the
/// `authorization` value its requests carry. Shared by the demand reporter and the client
/// RTT forwarder ([`crate::rum`]).
pub(crate) struct TelemetryLink {
    /// The client; its channel connects (and reconnects) on use.
    pub(crate) client: TelemetryClient<tonic::transport::Channel>,
    auth: Option<MetadataValue<Ascii>>,
}

impl TelemetryLink {
    /// Checks `cfg`'s endpoint, TLS and token; connects nothing yet.
    pub(crate) fn new(cfg: &ReporterConfig) -> Result<Self, ReporterError> {
        let bad = |source| ReporterError::Endpoint {
            endpoint: cfg.endpoint.clone(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(cfg.endpoint.clone())
            .map_err(bad)?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(RPC_TIMEOUT);
        if let Some(tls) = cfg.tls.clone() {
            endpoint = endpoint.tls_config(tls).map_err(bad)?;
        }
        let auth = cfg
            .token
            .as_deref()
            .map(|t| format!("Bearer {t}").parse::<MetadataValue<Ascii>>())
            .transpose()
            .map_err(|_| ReporterError::Token)?;
        // Lazy: a scheduler that is down at start only fails the first reports.
        Ok(Self {
            client: TelemetryClient::new(endpoint.connect_lazy()),
            auth,
        })
    }

    /// `message` as a request carrying the token.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(auth) = &self.auth {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        request
    }
}

/// Reports `engine`'s demand every `cfg.interval` until `shutdown`. A failed report keeps
/// its counts for the next one and backs off (jittered, doubling up to a minute). Returns
/// an error only for a configuration it can never work with.
pub async fn run_reporter(
    cfg: ReporterConfig,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
) -> Result<(), ReporterError> {
    let mut link = TelemetryLink::new(&cfg)?;
    let interval = cfg.interval.clamp(MIN_REPORT_INTERVAL, MAX_REPORT_INTERVAL);
    let mut pending: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut window_start = Instant::now();
    let mut delay = interval;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
        engine.drain_demand(&mut pending);
        let report = build_report(&cfg.frontend, &pending, window_start.elapsed());
        let request = link.request(report);
        let sent = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            r = link.client.report_demand(request) => r,
        };
        match sent {
            Ok(ack) => {
                let ack = ack.into_inner();
                tracing::debug!(
                    accepted = ack.accepted,
                    rejected = ack.rejected,
                    "demand reported"
                );
                pending.clear();
                window_start = Instant::now();
                delay = interval;
            }
            Err(status) => {
                tracing::warn!(endpoint = %cfg.endpoint, %status, "demand report failed");
                // Keep the counts (bounded: the table's shape bounds the keys) and retry
                // later, jittered so a fleet does not retry in lockstep.
                let next = (delay * 2).min(MAX_RETRY_DELAY.max(interval));
                delay = next.mul_f64(rand::random_range(0.5..=1.0)).max(interval);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::SOA;
    use hickory_proto::rr::{Name, RData, Record};
    use hickory_proto::serialize::binary::BinEncodable;
    use isobar_proto::v1::{AnswerSet, ClientGroupOverride, GeoGrid, ServiceMap, Snapshot};
    use std::str::FromStr;

    fn snapshot(version: u64) -> Snapshot {
        let name = |s: &str| Name::from_str(s).expect("valid name");
        let soa = SOA::new(
            name("ns.example.test."),
            name("h.example.test."),
            1,
            1,
            1,
            1,
            1,
        );
        let soa = Record::from_rdata(name("example.test."), 60, RData::SOA(soa));
        Snapshot {
            version,
            grid: Some(GeoGrid { cell_degrees: 90.0 }),
            zones: vec![isobar_proto::v1::ZoneData {
                origin: "example.test.".into(),
                serial: 1,
                records: vec![soa.to_bytes().expect("encodable SOA")],
            }],
            overrides: vec![ClientGroupOverride {
                group: "office".into(),
                cidrs: vec!["10.0.0.0/8".into()],
                asns: Vec::new(),
            }],
            services: vec![ServiceMap {
                name: "www.example.test.".into(),
                ttl: 30,
                answers: vec![AnswerSet {
                    ipv4: vec!["192.0.2.1".into()],
                    ..Default::default()
                }],
                cell_answers: vec![0; 8],
                default_answer: 0,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn counts_per_group_and_survive_a_swap() {
        let a = ServingSnapshot::from_proto(&snapshot(1)).expect("valid snapshot");
        let table = DemandTable::for_snapshot(&a);
        table.record(0, Decision::GeoCell(3));
        table.record(0, Decision::GeoCell(3));
        table.record(0, Decision::Override(0));
        table.record(0, Decision::Default);
        table.record(0, Decision::GeoCell(99));
        table.record(7, Decision::Default);
        let b = ServingSnapshot::from_proto(&snapshot(2)).expect("valid snapshot");
        let next = DemandTable::for_snapshot(&b);
        next.carry_from(&table);
        let mut out = BTreeMap::new();
        next.drain(&mut out);
        let get = |g: &str| {
            out.get(&("www.example.test.".to_owned(), g.to_owned()))
                .copied()
        };
        assert_eq!(get("cell:3"), Some(2));
        assert_eq!(get("group:office"), Some(1));
        assert_eq!(
            get("unknown"),
            Some(2),
            "the default and an out-of-grid cell"
        );
        assert_eq!(out.len(), 3);
        let mut again = BTreeMap::new();
        next.drain(&mut again);
        assert!(again.is_empty(), "drain resets the counters");
    }

    #[test]
    fn report_is_rate_and_bounded() {
        let mut counts = BTreeMap::new();
        counts.insert(("a.".to_owned(), "unknown".to_owned()), 50);
        let r = build_report("fe", &counts, Duration::from_secs(10));
        assert_eq!(r.demand.len(), 1);
        assert!((r.demand[0].qps - 5.0).abs() < 1e-9);
        for i in 0..(MAX_REPORT_ENTRIES + 10) {
            counts.insert((format!("s{i}."), "unknown".to_owned()), i as u64 + 1);
        }
        let r = build_report("fe", &counts, Duration::from_secs(1));
        assert_eq!(r.demand.len(), MAX_REPORT_ENTRIES);
        assert!(
            r.demand.iter().all(|d| d.qps >= 11.0),
            "the busiest are kept"
        );
    }
}
