//! Client-measured RTT (RUM), frontend side: `POST /{account}/report` takes the app SDK's
//! connect-time measurements, labels them with the reporting client's group, and forwards
//! them to the scheduler (`Telemetry/ReportClientRtt`) through a bounded queue.
//!
//! Request: `POST /{account}/report?t=EXPIRY&s=SIGNATURE[&ip=CLIENT_IP]` with a JSON body
//! of at most [`MAX_BODY`] octets:
//! `{"device_id": "...", "network": "wifi", "measurements": [{"ip": "198.51.100.7",
//! "connect_ms": 23.5, "ok": true, "at": 1763700000}]}` — 1 to [`MAX_MEASUREMENTS`]
//! measurements; `ip` an address; `connect_ms` within 0..=60000 (required when `ok`); `at`
//! Unix seconds within ±24 h of the frontend's clock; `network` one of `wifi`, `cellular`,
//! `ethernet`, `other`, `unknown` (default `unknown`); `device_id` optional, 1–128 printable
//! ASCII characters, validated but not forwarded. Unknown keys are ignored.
//!
//! Signing, like the Alibaba `sign_d` rule with the host replaced by the fixed string
//! `report`: `s = md5_hex("report-" + secret + "-" + t)`, `t` the expiry in Unix seconds, at
//! most 24 h ahead. The signature does not cover the body (as `sign_d` does not cover `ip=`):
//! it proves the app holds the account's secret, nothing more. A request without `t` and `s`
//! is accepted only when the account allows unsigned calls.
//!
//! Answers: `202 {"accepted": N}` when queued; otherwise a 4xx with `{"code", "message"}`
//! (and `"field"` naming the offending field for body errors). The client group is the one
//! the DNS path would see for the reporting client (`ip=` or the TCP peer): `group:NAME`
//! for the longest CIDR override holding it, else `group:NAME` for the ASN group of its AS
//! number, else `cell:N` for its GeoIP grid cell, else
//! `unknown` — the labels `demand` reports, independent of any one service's map.
//!
//! The queue holds at most [`QUEUE_CAPACITY`] reports; when it is full a report is dropped
//! and counted (the client still gets 202: measurements are best effort). The forwarder
//! sends what is queued every interval (1 s in `isobar serve`) in batches of at most
//! [`MAX_BATCH`] samples, drops a batch the scheduler did not take (counted), and stops on
//! shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use isobar_proto::geo::cell_index;
use isobar_proto::v1::{ClientRttReport, ClientRttSample};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::demand::{ReporterConfig, ReporterError, TelemetryLink};
use crate::engine::Engine;
use crate::httpdns::Code;
use crate::httpdns::sign::{self, SignError};
use crate::snapshot::ServingSnapshot;

/// Largest report body, octets.
pub const MAX_BODY: usize = 64 * 1024;
/// Most measurements in one report.
pub const MAX_MEASUREMENTS: usize = 100;
/// Largest connect time accepted, milliseconds.
pub const MAX_CONNECT_MS: f64 = 60_000.0;
/// How far a measurement's `at` may be from the frontend's clock, and how far ahead a
/// signature's `t` may be, seconds.
pub const MAX_SKEW_SECS: i64 = 24 * 60 * 60;
/// Longest `device_id`, characters.
pub const MAX_DEVICE_ID: usize = 128;
/// Reports the queue holds before dropping (each ≤ [`MAX_MEASUREMENTS`] samples).
pub const QUEUE_CAPACITY: usize = 1024;
/// Most samples in one `ReportClientRtt` call.
pub const MAX_BATCH: usize = 1000;
/// The fixed string that stands for the host in the report signature.
pub const SIGNED_PAYLOAD: &str = "report";

/// The network types a report may name.
pub const NETWORKS: [&str; 5] = ["wifi", "cellular", "ethernet", "other", "unknown"];

/// The error codes a report can be refused with (the metric labels).
pub const CODES: [&str; 18] = [
    "InvalidAccount",
    "UnsignedInterfaceDisabled",
    "MissingSignature",
    "InvalidTimestamp",
    "SignatureExpired",
    "InvalidDuration",
    "InvalidSignature",
    "InvalidQuery",
    "InvalidIp",
    "PayloadTooLarge",
    "InvalidBody",
    "InvalidDeviceId",
    "InvalidNetwork",
    "InvalidMeasurements",
    "InvalidOk",
    "InvalidConnectMs",
    "InvalidAt",
    "NotReady",
];

/// One measurement, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// The address the client connected to.
    pub ip: IpAddr,
    /// TCP connect time, ms (0 when the connection failed and none was given).
    pub connect_ms: f64,
    /// Whether the connection succeeded.
    pub ok: bool,
    /// When, Unix seconds on the client's clock.
    pub at: i64,
}

/// A report, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The device's identity, if sent.
    pub device_id: Option<String>,
    /// One of [`NETWORKS`].
    pub network: &'static str,
    /// 1 to [`MAX_MEASUREMENTS`] measurements.
    pub measurements: Vec<Measurement>,
}

/// Why a report (or its request) was refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportError {
    /// HTTP status.
    #[serde(skip)]
    pub status: StatusCode,
    /// One of [`CODES`].
    pub code: &'static str,
    /// The offending body field (`measurements[3].ip`), when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong, for people.
    pub message: String,
}

impl ReportError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            field: None,
            message: message.into(),
        }
    }

    /// An error with an HTTPDNS code and the status that code goes with.
    fn from_code(code: Code, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST),
            code: code.as_str(),
            field: None,
            message: message.into(),
        }
    }

    fn field(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl IntoResponse for ReportError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

/// Parses and validates a report body against the frontend's clock `now_unix` (seconds).
/// Never panics, whatever the bytes.
pub fn parse_report(body: &[u8], now_unix: i64) -> Result<Report, ReportError> {
    if body.len() > MAX_BODY {
        return Err(ReportError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("a report is at most {MAX_BODY} octets"),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ReportError::field("InvalidBody", "body", format!("not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ReportError::field(
            "InvalidBody",
            "body",
            "must be a JSON object",
        ));
    };

    let device_id = match map.get("device_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id))
            if (1..=MAX_DEVICE_ID).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
        {
            Some(id.clone())
        }
        Some(_) => {
            return Err(ReportError::field(
                "InvalidDeviceId",
                "device_id",
                format!("must be 1 to {MAX_DEVICE_ID} printable ASCII characters"),
            ));
        }
    };

    let network = match map.get("network") {
        None | Some(Value::Null) => "unknown",
        Some(Value::String(n)) => NETWORKS.iter().copied().find(|k| k == n).ok_or_else(|| {
            ReportError::field(
                "InvalidNetwork",
                "network",
                format!("must be one of {}", NETWORKS.join(", ")),
            )
        })?,
        Some(_) => {
            return Err(ReportError::field(
                "InvalidNetwork",
                "network",
                "must be a string",
            ));
        }
    };

    let list = match map.get("measurements") {
        Some(Value::Array(list)) if (1..=MAX_MEASUREMENTS).contains(&list.len()) => list,
        _ => {
            return Err(ReportError::field(
                "InvalidMeasurements",
                "measurements",
                format!("must be an array of 1 to {MAX_MEASUREMENTS} measurements"),
            ));
        }
    };
    let measurements = list
        .iter()
        .enumerate()
        .map(|(i, m)| parse_measurement(i, m, now_unix))
        .collect::<Result<_, _>>()?;
    Ok(Report {
        device_id,
        network,
        measurements,
    })
}

fn parse_measurement(i: usize, m: &Value, now_unix: i64) -> Result<Measurement, ReportError> {
    let at_field = |name: &str| format!("measurements[{i}].{name}");
    let Value::Object(m) = m else {
        return Err(ReportError::field(
            "InvalidMeasurements",
            format!("measurements[{i}]"),
            "must be an object",
        ));
    };
    let ip = m
        .get("ip")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<IpAddr>().ok())
        .ok_or_else(|| ReportError::field("InvalidIp", at_field("ip"), "must be an IP address"))?;
    let ok = m
        .get("ok")
        .and_then(Value::as_bool)
        .ok_or_else(|| ReportError::field("InvalidOk", at_field("ok"), "must be true or false"))?;
    let bad_ms = || {
        ReportError::field(
            "InvalidConnectMs",
            at_field("connect_ms"),
            format!("must be a number of milliseconds within 0..={MAX_CONNECT_MS}"),
        )
    };
    let connect_ms = match m.get("connect_ms") {
        None | Some(Value::Null) if !ok => 0.0,
        Some(v) => v
            .as_f64()
            .filter(|ms| (0.0..=MAX_CONNECT_MS).contains(ms))
            .ok_or_else(bad_ms)?,
        None => return Err(bad_ms()),
    };
    let at = m
        .get("at")
        .and_then(Value::as_i64)
        .filter(|at| at.abs_diff(now_unix) <= MAX_SKEW_SECS.unsigned_abs())
        .ok_or_else(|| {
            ReportError::field(
                "InvalidAt",
                at_field("at"),
                "must be Unix seconds within 24 h of now",
            )
        })?;
    Ok(Measurement {
        ip,
        connect_ms,
        ok,
        at,
    })
}

/// The client group label of `addr` in `snapshot` (see the module doc).
pub fn client_group(engine: &Engine, snapshot: &ServingSnapshot, addr: IpAddr) -> String {
    let addr = addr.to_canonical();
    let overrides = snapshot.overrides();
    if let Some((group, _)) = overrides.lookup(addr).longest
        && let Some(name) = overrides.groups().get(group as usize)
    {
        return format!("group:{name}");
    }
    if let Some((group, _)) = engine.asn_group(snapshot, addr)
        && let Some(name) = overrides.groups().get(group as usize)
    {
        return format!("group:{name}");
    }
    if let Some(geo) = engine.geo()
        && let Some((lat, lon)) = geo.locate(addr).location
    {
        return format!("cell:{}", cell_index(snapshot.cell_degrees(), lat, lon));
    }
    "unknown".to_owned()
}

/// Checks `t`/`s` of a report request for the account with `secret` and `unsigned_allowed`
/// at `now_unix`, with the HTTPDNS signing rule and error codes.
pub fn check_signature(
    secret: &str,
    unsigned_allowed: bool,
    t: Option<&str>,
    s: Option<&str>,
    now_unix: i64,
) -> Result<(), ReportError> {
    if t.is_none() && s.is_none() {
        if unsigned_allowed {
            return Ok(());
        }
        return Err(ReportError::from_code(
            Code::UnsignedInterfaceDisabled,
            "this account only accepts signed reports (t and s)",
        ));
    }
    if secret.is_empty() {
        return Err(ReportError::from_code(
            Code::InvalidSignature,
            "this account has no signing secret",
        ));
    }
    sign::verify(SIGNED_PAYLOAD, secret, t, s, now_unix).map_err(|e| {
        let code = match e {
            SignError::Missing => Code::MissingSignature,
            SignError::BadTimestamp => Code::InvalidTimestamp,
            SignError::Expired => Code::SignatureExpired,
            SignError::TooFarAhead => Code::InvalidDuration,
            SignError::Invalid => Code::InvalidSignature,
        };
        ReportError::from_code(code, e.to_string())
    })
}

/// Report counters, for `GET /metrics`.
#[derive(Debug, Default)]
pub struct RumStats {
    accepted: AtomicU64,
    rejected: [AtomicU64; CODES.len()],
    samples_queued: AtomicU64,
    samples_dropped_full: AtomicU64,
    samples_sent: AtomicU64,
    samples_refused: AtomicU64,
    samples_send_failed: AtomicU64,
}

impl RumStats {
    fn reject(&self, code: &str) {
        if let Some(i) = CODES.iter().position(|c| *c == code) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reports accepted (202) so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Reports refused with `code` so far.
    pub fn rejected(&self, code: &str) -> u64 {
        CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.rejected[i].load(Ordering::Relaxed))
    }

    /// Samples the scheduler accepted so far.
    pub fn samples_sent(&self) -> u64 {
        self.samples_sent.load(Ordering::Relaxed)
    }

    /// Samples the scheduler refused so far (unknown target, stale, ...).
    pub fn samples_refused(&self) -> u64 {
        self.samples_refused.load(Ordering::Relaxed)
    }

    /// Samples dropped because the queue was full.
    pub fn samples_dropped_full(&self) -> u64 {
        self.samples_dropped_full.load(Ordering::Relaxed)
    }

    /// The counters in the Prometheus text format.
    pub fn render_prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = String::from(
            "# HELP isobar_rum_reports_total Client RTT reports received on POST /{account}/report, by code.\n\
             # TYPE isobar_rum_reports_total counter\n",
        );
        let _ = writeln!(
            out,
            "isobar_rum_reports_total{{code=\"Accepted\"}} {}",
            self.accepted()
        );
        for (i, code) in CODES.iter().enumerate() {
            let _ = writeln!(
                out,
                "isobar_rum_reports_total{{code=\"{code}\"}} {}",
                self.rejected[i].load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP isobar_rum_forwarded_samples_total Client RTT samples on their way to the scheduler, by outcome.\n\
             # TYPE isobar_rum_forwarded_samples_total counter\n",
        );
        for (outcome, counter) in [
            ("queued", &self.samples_queued),
            ("dropped_queue_full", &self.samples_dropped_full),
            ("accepted", &self.samples_sent),
            ("refused", &self.samples_refused),
            ("send_failed", &self.samples_send_failed),
        ] {
            let _ = writeln!(
                out,
                "isobar_rum_forwarded_samples_total{{outcome=\"{outcome}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// The sending end of the report queue (cheap to clone), held by the HTTP handler.
#[derive(Debug, Clone)]
pub struct RumQueue {
    tx: mpsc::Sender<Vec<ClientRttSample>>,
    stats: Arc<RumStats>,
}

impl RumQueue {
    /// The counters shared with the forwarder.
    pub fn stats(&self) -> Arc<RumStats> {
        Arc::clone(&self.stats)
    }

    /// Queues one report's samples; drops them (counted) when the queue is full.
    fn push(&self, samples: Vec<ClientRttSample>) {
        let n = samples.len() as u64;
        match self.tx.try_send(samples) {
            Ok(()) => self.stats.samples_queued.fetch_add(n, Ordering::Relaxed),
            Err(_) => self
                .stats
                .samples_dropped_full
                .fetch_add(n, Ordering::Relaxed),
        };
    }
}

/// The receiving end, consumed by [`run_forwarder`].
#[derive(Debug)]
pub struct RumReceiver {
    rx: mpsc::Receiver<Vec<ClientRttSample>>,
    stats: Arc<RumStats>,
}

/// A report queue holding at most `capacity` reports.
pub fn queue(capacity: usize) -> (RumQueue, RumReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let stats = Arc::new(RumStats::default());
    (
        RumQueue {
            tx,
            stats: Arc::clone(&stats),
        },
        RumReceiver { rx, stats },
    )
}

#[derive(Clone)]
struct RumState {
    engine: Arc<Engine>,
    queue: RumQueue,
}

/// The route `POST /{account}/report`, feeding `queue`.
///
/// Serve with `into_make_service_with_connect_info::<SocketAddr>()`: the peer address is
/// the default client address.
pub fn router(engine: Arc<Engine>, queue: RumQueue) -> Router {
    Router::new()
        .route("/{account}/report", post(report))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(RumState { engine, queue })
}

#[derive(Serialize)]
struct Accepted {
    accepted: usize,
}

async fn report(
    State(state): State<RumState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(account_id): Path<String>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let stats = Arc::clone(&state.queue.stats);
    match accept(&state, peer, &account_id, params, body, now_unix()) {
        Ok(n) => {
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            (StatusCode::ACCEPTED, Json(Accepted { accepted: n })).into_response()
        }
        Err(err) => {
            stats.reject(err.code);
            err.into_response()
        }
    }
}

fn accept(
    state: &RumState,
    peer: SocketAddr,
    account_id: &str,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
    now: i64,
) -> Result<usize, ReportError> {
    let Query(params) =
        params.map_err(|e| ReportError::from_code(Code::InvalidQuery, e.body_text()))?;
    let snapshot = state.engine.current();
    if snapshot.version() == 0 {
        return Err(ReportError::from_code(
            Code::NotReady,
            "no steering snapshot received yet",
        ));
    }
    let account = snapshot
        .accounts()
        .iter()
        .find(|a| a.id == account_id)
        .ok_or_else(|| {
            ReportError::from_code(Code::InvalidAccount, format!("no account {account_id:?}"))
        })?;
    check_signature(
        &account.secret,
        account.unsigned_allowed,
        params.get("t").map(String::as_str),
        params.get("s").map(String::as_str),
        now,
    )?;
    let client = match params.get("ip") {
        Some(ip) => ip.parse::<IpAddr>().map_err(|_| {
            ReportError::from_code(Code::InvalidIp, format!("ip: {ip:?} is not an IP address"))
        })?,
        None => peer.ip(),
    };
    let body = body.map_err(|rejection| {
        let too_large = rejection.status() == StatusCode::PAYLOAD_TOO_LARGE;
        ReportError {
            status: rejection.status(),
            code: if too_large {
                "PayloadTooLarge"
            } else {
                "InvalidBody"
            },
            field: (!too_large).then(|| "body".to_owned()),
            message: rejection.body_text(),
        }
    })?;
    let report = parse_report(&body, now)?;
    let group = client_group(&state.engine, &snapshot, client);
    let samples: Vec<ClientRttSample> = report
        .measurements
        .iter()
        .map(|m| ClientRttSample {
            group: group.clone(),
            target: m.ip.to_canonical().to_string(),
            connect_ms: m.connect_ms,
            ok: m.ok,
            network: report.network.to_owned(),
            at_unix_ms: m.at.saturating_mul(1000),
        })
        .collect();
    let n = samples.len();
    state.queue.push(samples);
    Ok(n)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Forwards queued samples to the scheduler every `cfg.interval` (at least 10 ms) in
/// batches of at most [`MAX_BATCH`], until `shutdown`. A batch the scheduler does not take
/// is dropped and counted. Returns an error only for a configuration it can never work
/// with.
pub async fn run_forwarder(
    cfg: ReporterConfig,
    mut receiver: RumReceiver,
    shutdown: CancellationToken,
) -> Result<(), ReporterError> {
    let mut link = TelemetryLink::new(&cfg)?;
    let stats = Arc::clone(&receiver.stats);
    let mut ticker = tokio::time::interval(cfg.interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        // Bounded by the queue: at most QUEUE_CAPACITY reports of MAX_MEASUREMENTS each.
        let mut pending = Vec::new();
        while let Ok(samples) = receiver.rx.try_recv() {
            pending.extend(samples);
        }
        for chunk in pending.chunks(MAX_BATCH) {
            let request = link.request(ClientRttReport {
                frontend: cfg.frontend.clone(),
                samples: chunk.to_vec(),
            });
            let sent = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                r = link.client.report_client_rtt(request) => r,
            };
            match sent {
                Ok(ack) => {
                    let ack = ack.into_inner();
                    stats
                        .samples_sent
                        .fetch_add(ack.accepted, Ordering::Relaxed);
                    stats
                        .samples_refused
                        .fetch_add(ack.rejected, Ordering::Relaxed);
                }
                Err(status) => {
                    tracing::warn!(endpoint = %cfg.endpoint, %status, "client RTT report failed");
                    stats
                        .samples_send_failed
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_763_700_000;

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn good() -> serde_json::Value {
        serde_json::json!({
            "device_id": "d-42",
            "network": "cellular",
            "measurements": [
                {"ip": "198.51.100.7", "connect_ms": 23.5, "ok": true, "at": NOW - 5},
                {"ip": "2001:db8::7", "ok": false, "at": NOW + 5},
            ],
        })
    }

    #[test]
    fn a_valid_report_parses() {
        let report = parse_report(&body(good()), NOW).unwrap();
        assert_eq!(report.device_id.as_deref(), Some("d-42"));
        assert_eq!(report.network, "cellular");
        assert_eq!(
            report.measurements,
            vec![
                Measurement {
                    ip: "198.51.100.7".parse().unwrap(),
                    connect_ms: 23.5,
                    ok: true,
                    at: NOW - 5
                },
                Measurement {
                    ip: "2001:db8::7".parse().unwrap(),
                    connect_ms: 0.0,
                    ok: false,
                    at: NOW + 5
                },
            ]
        );
        let minimal = serde_json::json!({"measurements": [
            {"ip": "192.0.2.1", "connect_ms": 0, "ok": true, "at": NOW, "extra": 1}]});
        assert_eq!(
            parse_report(&body(minimal), NOW).unwrap().network,
            "unknown"
        );
    }

    #[test]
    fn each_invalid_field_is_named() {
        let with = |path: &[&str], value: serde_json::Value| {
            let mut v = good();
            let mut at = &mut v;
            for key in path {
                at = match key.parse::<usize>() {
                    Ok(n) => &mut at[n],
                    Err(_) => &mut at[*key],
                };
            }
            *at = value;
            v
        };
        let too_many: Vec<_> = (0..=MAX_MEASUREMENTS)
            .map(|_| serde_json::json!({"ip": "192.0.2.1", "connect_ms": 1, "ok": true, "at": NOW}))
            .collect();
        let cases = [
            (
                with(&["device_id"], "".into()),
                "InvalidDeviceId",
                "device_id",
            ),
            (
                with(&["device_id"], "x".repeat(129).into()),
                "InvalidDeviceId",
                "device_id",
            ),
            (
                with(&["network"], "satellite".into()),
                "InvalidNetwork",
                "network",
            ),
            (with(&["network"], 4.into()), "InvalidNetwork", "network"),
            (
                with(&["measurements"], serde_json::json!([])),
                "InvalidMeasurements",
                "measurements",
            ),
            (
                with(&["measurements"], serde_json::json!(too_many)),
                "InvalidMeasurements",
                "measurements",
            ),
            (
                with(&["measurements", "1"], 5.into()),
                "InvalidMeasurements",
                "measurements[1]",
            ),
            (
                with(&["measurements", "0", "ip"], "300.1.1.1".into()),
                "InvalidIp",
                "measurements[0].ip",
            ),
            (
                with(&["measurements", "1", "ok"], "yes".into()),
                "InvalidOk",
                "measurements[1].ok",
            ),
            (
                with(&["measurements", "0", "connect_ms"], (-1).into()),
                "InvalidConnectMs",
                "measurements[0].connect_ms",
            ),
            (
                with(&["measurements", "0", "connect_ms"], 60_000.5.into()),
                "InvalidConnectMs",
                "measurements[0].connect_ms",
            ),
            (
                with(
                    &["measurements", "0", "connect_ms"],
                    serde_json::Value::Null,
                ),
                "InvalidConnectMs",
                "measurements[0].connect_ms",
            ),
            (
                with(&["measurements", "1", "connect_ms"], "fast".into()),
                "InvalidConnectMs",
                "measurements[1].connect_ms",
            ),
            (
                with(
                    &["measurements", "0", "at"],
                    (NOW - MAX_SKEW_SECS - 1).into(),
                ),
                "InvalidAt",
                "measurements[0].at",
            ),
            (
                with(
                    &["measurements", "1", "at"],
                    (NOW + MAX_SKEW_SECS + 1).into(),
                ),
                "InvalidAt",
                "measurements[1].at",
            ),
            (
                with(&["measurements", "1", "at"], 1.5.into()),
                "InvalidAt",
                "measurements[1].at",
            ),
        ];
        for (value, code, field) in cases {
            let err = parse_report(&body(value), NOW).unwrap_err();
            assert_eq!(
                (err.code, err.field.as_deref(), err.status),
                (code, Some(field), StatusCode::BAD_REQUEST),
                "{err:?}"
            );
            assert!(CODES.contains(&err.code));
        }
        let err = parse_report(b"[1]", NOW).unwrap_err();
        assert_eq!(
            (err.code, err.field.as_deref()),
            ("InvalidBody", Some("body"))
        );
        let err = parse_report(b"{", NOW).unwrap_err();
        assert_eq!(err.code, "InvalidBody");
        let err = parse_report(&vec![b' '; MAX_BODY + 1], NOW).unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn signature_rules() {
        let sign = |t: i64| sign::sign(SIGNED_PAYLOAD, "IAmASecret", &t.to_string());
        let t = NOW + 600;
        assert_eq!(
            check_signature(
                "IAmASecret",
                false,
                Some(&t.to_string()),
                Some(&sign(t)),
                NOW
            ),
            Ok(())
        );
        let code = |r: Result<(), ReportError>| r.unwrap_err().code;
        let past = NOW - 1;
        assert_eq!(
            code(check_signature(
                "IAmASecret",
                false,
                Some(&past.to_string()),
                Some(&sign(past)),
                NOW
            )),
            "SignatureExpired"
        );
        let far = NOW + MAX_SKEW_SECS + 60;
        assert_eq!(
            code(check_signature(
                "IAmASecret",
                false,
                Some(&far.to_string()),
                Some(&sign(far)),
                NOW
            )),
            "InvalidDuration"
        );
        assert_eq!(
            code(check_signature(
                "other",
                false,
                Some(&t.to_string()),
                Some(&sign(t)),
                NOW
            )),
            "InvalidSignature"
        );
        assert_eq!(
            code(check_signature("IAmASecret", false, None, None, NOW)),
            "UnsignedInterfaceDisabled"
        );
        assert_eq!(check_signature("IAmASecret", true, None, None, NOW), Ok(()));
        assert_eq!(
            code(check_signature("IAmASecret", true, Some("1"), None, NOW)),
            "MissingSignature"
        );
        assert_eq!(
            code(check_signature(
                "",
                false,
                Some(&t.to_string()),
                Some(&sign(t)),
                NOW
            )),
            "InvalidSignature"
        );
        // The payload is the fixed string "report": a host's signature does not fit.
        let host_sig = sign::sign("www.example.test", "IAmASecret", &t.to_string());
        assert_eq!(
            code(check_signature(
                "IAmASecret",
                false,
                Some(&t.to_string()),
                Some(&host_sig),
                NOW
            )),
            "InvalidSignature"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_report(&bytes, NOW);
        }

        #[test]
        fn arbitrary_json_shapes_never_panic(
            ip in "[0-9a-f:.]{0,40}",
            ms in proptest::num::f64::ANY,
            at in any::<i64>(),
            ok in any::<bool>(),
            network in "[a-z]{0,10}",
        ) {
            let v = serde_json::json!({"network": network, "measurements": [
                {"ip": ip, "connect_ms": ms, "ok": ok, "at": at}]});
            if let Ok(report) = parse_report(&body(v), NOW) {
                let m = &report.measurements[0];
                prop_assert!((0.0..=MAX_CONNECT_MS).contains(&m.connect_ms));
                prop_assert!(m.at.abs_diff(NOW) <= MAX_SKEW_SECS as u64);
            }
        }
    }
}
