//! A real in-process Telemetry server that serves a target set and records what probers send.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use isobar_proto::v1::telemetry_server::{Telemetry, TelemetryServer};
use isobar_proto::v1::{
    Measurement, MeasurementBatch, ProbeKind, ProbeTarget, ReportSummary, TargetSet,
    WatchTargetsRequest,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, WatchStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// What the scheduler side observed; survives server restarts.
#[derive(Default)]
pub struct Seen {
    pub measurements: Vec<Measurement>,
    pub report_vantages: Vec<String>,
    pub watch_vantages: Vec<String>,
    /// `(method, authorization header)` of every request, accepted or not.
    pub auth: Vec<(&'static str, Option<String>)>,
}

/// State shared by every incarnation of the test scheduler.
pub struct Scheduler {
    targets: watch::Sender<TargetSet>,
    token: Option<String>,
    pub seen: Mutex<Seen>,
}

impl Scheduler {
    pub fn new(token: Option<&str>) -> Arc<Self> {
        Arc::new(Self {
            targets: watch::Sender::new(TargetSet::default()),
            token: token.map(str::to_owned),
            seen: Mutex::new(Seen::default()),
        })
    }

    /// Publishes a new target set to every watcher.
    pub fn set_targets(&self, version: u64, targets: Vec<ProbeTarget>) {
        self.targets.send_replace(TargetSet { version, targets });
    }

    /// Measurements received so far for `target_id`, in arrival order.
    pub fn measurements_for(&self, target_id: &str) -> Vec<Measurement> {
        let seen = self.seen.lock().unwrap();
        seen.measurements
            .iter()
            .filter(|m| m.target_id == target_id)
            .cloned()
            .collect()
    }

    fn check_auth<T>(&self, method: &'static str, req: &Request<T>) -> Result<(), Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ok = match &self.token {
            None => true,
            Some(t) => header.as_deref() == Some(format!("Bearer {t}").as_str()),
        };
        self.seen.lock().unwrap().auth.push((method, header));
        if ok {
            Ok(())
        } else {
            Err(Status::unauthenticated("bad token"))
        }
    }
}

/// One running incarnation of the server; stopping it closes its streams and its port.
pub struct Running {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Gracefully stops the server: open streams end and the listener closes.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("test server did not stop")
            .expect("test server panicked");
    }
}

/// Starts serving `scheduler` on `addr` (`127.0.0.1:0` for a fresh port).
pub async fn serve(scheduler: &Arc<Scheduler>, addr: SocketAddr) -> Running {
    let listener = TcpListener::bind(addr).await.expect("bind test server");
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let svc = Service {
        scheduler: Arc::clone(scheduler),
        stop: stop.clone(),
    };
    let signal = stop.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TelemetryServer::new(svc))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
            .await
            .expect("test server failed");
    });
    Running { addr, stop, task }
}

struct Service {
    scheduler: Arc<Scheduler>,
    stop: CancellationToken,
}

type TargetStream = Pin<Box<dyn Stream<Item = Result<TargetSet, Status>> + Send>>;

#[tonic::async_trait]
impl Telemetry for Service {
    type WatchTargetsStream = TargetStream;

    async fn report_demand(
        &self,
        _request: Request<isobar_proto::v1::DemandReport>,
    ) -> Result<Response<isobar_proto::v1::DemandAck>, Status> {
        Err(Status::unimplemented("probers do not report demand"))
    }

    async fn report_client_rtt(
        &self,
        _request: Request<isobar_proto::v1::ClientRttReport>,
    ) -> Result<Response<isobar_proto::v1::ClientRttAck>, Status> {
        Err(Status::unimplemented("probers do not report client RTT"))
    }

    async fn watch_targets(
        &self,
        request: Request<WatchTargetsRequest>,
    ) -> Result<Response<TargetStream>, Status> {
        self.scheduler.check_auth("watch_targets", &request)?;
        self.scheduler
            .seen
            .lock()
            .unwrap()
            .watch_vantages
            .push(request.into_inner().vantage);
        let sets = WatchStream::new(self.scheduler.targets.subscribe())
            .map(Ok)
            .take_until(self.stop.clone().cancelled_owned());
        Ok(Response::new(Box::pin(sets)))
    }

    async fn report(
        &self,
        request: Request<Streaming<MeasurementBatch>>,
    ) -> Result<Response<ReportSummary>, Status> {
        self.scheduler.check_auth("report", &request)?;
        let mut stream = request.into_inner();
        let mut accepted = 0u64;
        loop {
            let next = tokio::select! {
                () = self.stop.cancelled() => return Err(Status::unavailable("shutting down")),
                next = stream.message() => next?,
            };
            let Some(batch) = next else { break };
            accepted += batch.measurements.len() as u64;
            let mut seen = self.scheduler.seen.lock().unwrap();
            seen.report_vantages.push(batch.vantage);
            seen.measurements.extend(batch.measurements);
        }
        Ok(Response::new(ReportSummary {
            accepted,
            rejected: 0,
        }))
    }
}

/// A TCP target that accepts and immediately closes every connection.
pub async fn open_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    });
    addr
}

/// A port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

pub fn tcp_target(id: &str, addr: SocketAddr, interval_ms: u32) -> ProbeTarget {
    ProbeTarget {
        id: id.to_owned(),
        kind: ProbeKind::Tcp.into(),
        address: addr.to_string(),
        interval_ms,
        timeout_ms: 500,
        ..ProbeTarget::default()
    }
}

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Polls `cond` until it holds, failing the test with `what` after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sorted sequence numbers, asserting none arrived twice.
pub fn unique_seqs(ms: &[Measurement]) -> Vec<u64> {
    let mut seqs: Vec<u64> = ms.iter().map(|m| m.seq).collect();
    seqs.sort_unstable();
    let before = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), before, "duplicate sequence numbers");
    seqs
}
