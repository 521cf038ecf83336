//! Client RTT reports (RUM) through the real HTTP route and the real forwarder, against a
//! real tonic `Telemetry` server standing in for the scheduler.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use isobar_dns::Engine;
use isobar_dns::demand::ReporterConfig;
use isobar_dns::rum::{self, RumQueue};
use isobar_proto::geo::cell_index;
use isobar_proto::v1::telemetry_server::{Telemetry, TelemetryServer};
use isobar_proto::v1::{
    ClientRttAck, ClientRttReport, DemandAck, DemandReport, HttpdnsAccount, MeasurementBatch,
    ReportSummary, TargetSet, WatchTargetsRequest,
};
use serde_json::{Value, json};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::support::*;

/// The bearer token and report of every call the test's Telemetry server received.
type Calls = Arc<Mutex<Vec<(Option<String>, ClientRttReport)>>>;

const SECRET: &str = "s3cret";

/// Records every `ReportClientRtt` call and the token it carried.
#[derive(Default, Clone)]
struct Recorder {
    calls: Calls,
}

type Targets = std::pin::Pin<Box<dyn futures::Stream<Item = Result<TargetSet, Status>> + Send>>;

#[tonic::async_trait]
impl Telemetry for Recorder {
    type WatchTargetsStream = Targets;

    async fn watch_targets(
        &self,
        _: Request<WatchTargetsRequest>,
    ) -> Result<Response<Targets>, Status> {
        Err(Status::unimplemented("not a prober test"))
    }

    async fn report(
        &self,
        _: Request<Streaming<MeasurementBatch>>,
    ) -> Result<Response<ReportSummary>, Status> {
        Err(Status::unimplemented("not a prober test"))
    }

    async fn report_demand(&self, _: Request<DemandReport>) -> Result<Response<DemandAck>, Status> {
        Ok(Response::new(DemandAck::default()))
    }

    async fn report_client_rtt(
        &self,
        request: Request<ClientRttReport>,
    ) -> Result<Response<ClientRttAck>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        let report = request.into_inner();
        // Everything but one sample per call is taken, so both counters move.
        let n = report.samples.len() as u64;
        self.calls.lock().unwrap().push((auth, report));
        Ok(Response::new(ClientRttAck {
            accepted: n - 1,
            rejected: 1,
        }))
    }
}

struct Stage {
    base: String,
    queue: RumQueue,
    recorder: Recorder,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Stage {
    /// The HTTP route on a real server with a queue of `capacity` reports and, when
    /// `forward`, the forwarder sending to a real Telemetry server every 50 ms (else nobody
    /// drains the queue).
    async fn start(capacity: usize, forward: bool) -> Self {
        let engine = Engine::with_asn(Some(geo_db()), Some(asn_db()));
        let mut snap = asn_snapshot(1);
        snap.accounts = vec![
            HttpdnsAccount {
                id: "100000".into(),
                secret: SECRET.into(),
                unsigned_allowed: false,
            },
            HttpdnsAccount {
                id: "open".into(),
                secret: String::new(),
                unsigned_allowed: true,
            },
        ];
        engine.install(&snap).unwrap();
        let stop = CancellationToken::new();
        let (queue, receiver) = rum::queue(capacity);
        let mut tasks = Vec::new();

        let recorder = Recorder::default();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc.local_addr().unwrap();
        let service = TelemetryServer::new(recorder.clone());
        let shutdown = stop.clone().cancelled_owned();
        tasks.push(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), shutdown)
                .await
                .unwrap();
        }));
        if forward {
            let cfg = ReporterConfig {
                endpoint: format!("http://{grpc_addr}"),
                token: Some("tok".into()),
                frontend: "fe1".into(),
                interval: Duration::from_millis(50),
                tls: None,
            };
            let token = stop.clone();
            tasks.push(tokio::spawn(async move {
                rum::run_forwarder(cfg, receiver, token).await.unwrap();
            }));
        } else {
            // Hold the receiver so the queue stays open (and full).
            let token = stop.clone();
            tasks.push(tokio::spawn(async move {
                token.cancelled().await;
                drop(receiver);
            }));
        }

        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", http.local_addr().unwrap());
        let router = rum::router(Arc::clone(&engine), queue.clone());
        tasks.push(tokio::spawn(isobar_dns::httpdns::serve::serve(
            http,
            router,
            None,
            stop.clone(),
        )));
        Self {
            base,
            queue,
            recorder,
            stop,
            tasks,
        }
    }

    async fn post(&self, path_and_query: &str, body: &Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}{path_and_query}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    fn samples(&self) -> Vec<isobar_proto::v1::ClientRttSample> {
        let calls = self.recorder.calls.lock().unwrap();
        calls.iter().flat_map(|(_, r)| r.samples.clone()).collect()
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            // Every task, the forwarder included, ends on shutdown.
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("task stops on shutdown")
                .unwrap();
        }
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn signed() -> String {
    let t = (now_unix() + 60).to_string();
    let s = isobar_dns::httpdns::sign::sign(rum::SIGNED_PAYLOAD, SECRET, &t);
    format!("t={t}&s={s}")
}

fn batch(n: usize, target: &str) -> Value {
    let at = now_unix();
    let list: Vec<Value> = (0..n)
        .map(|i| json!({"ip": target, "connect_ms": i as f64, "ok": i % 10 != 9, "at": at}))
        .collect();
    json!({"network": "cellular", "measurements": list})
}

async fn eventually(mut check: impl FnMut() -> bool) {
    for _ in 0..250 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test]
async fn reports_are_labelled_with_the_client_group_and_forwarded_in_batches() {
    let stage = Stage::start(rum::QUEUE_CAPACITY, true).await;

    // Frankfurt (GeoIP cell), the "office" CIDR override, the "isp" ASN group, no location
    // (in an AS no group lists), and the TCP peer (127.0.0.1: New York in the fixture
    // database).
    let frankfurt = format!(
        "cell:{}",
        cell_index(CELL_DEGREES, FRANKFURT.0, FRANKFURT.1)
    );
    let new_york = format!(
        "cell:{}",
        cell_index(CELL_DEGREES, NEW_YORK.0 + 0.01, NEW_YORK.1)
    );
    let cases = [
        ("&ip=198.51.100.7", frankfurt.as_str(), "192.0.2.10"),
        ("&ip=100.64.1.1", "group:office", "192.0.2.30"),
        ("&ip=198.51.97.1", "group:isp", "192.0.2.40"),
        ("&ip=192.0.2.99", "unknown", "2001:db8::1"),
        ("", new_york.as_str(), "192.0.2.20"),
    ];
    for (ip, _, target) in &cases {
        let (status, body) = stage
            .post(
                &format!("/100000/report?{}{ip}", signed()),
                &batch(3, target),
            )
            .await;
        assert_eq!(
            (status, body["accepted"].as_u64()),
            (202, Some(3)),
            "{body}"
        );
    }
    eventually(|| stage.samples().len() == 15).await;
    for (_, group, target) in &cases {
        let mine: Vec<_> = stage
            .samples()
            .into_iter()
            .filter(|s| s.target == *target)
            .collect();
        assert_eq!(mine.len(), 3, "{target}");
        assert!(mine.iter().all(|s| s.group == *group), "{target}: {mine:?}");
        assert!(mine.iter().all(|s| s.network == "cellular"));
        assert!(
            mine.iter()
                .all(|s| s.at_unix_ms % 1000 == 0 && s.at_unix_ms > 0)
        );
    }

    // 1500 more samples: every call holds at most 1000 and carries the token.
    for _ in 0..15 {
        let (status, _) = stage
            .post(
                &format!("/100000/report?{}", signed()),
                &batch(100, "192.0.2.10"),
            )
            .await;
        assert_eq!(status, 202);
    }
    eventually(|| stage.samples().len() == 1515).await;
    {
        let calls = stage.recorder.calls.lock().unwrap();
        assert!(calls.iter().all(|(_, r)| r.samples.len() <= rum::MAX_BATCH));
        assert!(
            calls
                .iter()
                .all(|(auth, r)| auth.as_deref() == Some("Bearer tok") && r.frontend == "fe1")
        );
    }
    // Unsigned reports are fine where the account allows them.
    let (status, _) = stage.post("/open/report", &batch(1, "192.0.2.10")).await;
    assert_eq!(status, 202);

    let stats = stage.queue.stats();
    eventually(|| stats.samples_sent() + stats.samples_refused() == 1516).await;
    assert_eq!(stats.accepted(), 21);
    let page = stats.render_prometheus();
    assert!(
        page.contains("isobar_rum_reports_total{code=\"Accepted\"} 21"),
        "{page}"
    );
    assert!(page.contains("isobar_rum_forwarded_samples_total{outcome=\"queued\"} 1516"));
    stage.stop().await;
}

#[tokio::test]
async fn refusals_carry_codes_and_a_full_queue_drops_and_counts() {
    let stage = Stage::start(1, false).await;
    let ok = batch(2, "192.0.2.10");

    for (path, body, status, code) in [
        (
            "/nobody/report".to_owned(),
            ok.clone(),
            403,
            "InvalidAccount",
        ),
        (
            "/100000/report".to_owned(),
            ok.clone(),
            403,
            "UnsignedInterfaceDisabled",
        ),
        (
            "/open/report?t=1&s=x".to_owned(),
            ok.clone(),
            403,
            "InvalidSignature",
        ),
        (
            format!("/100000/report?{}&ip=not-an-ip", signed()),
            ok.clone(),
            400,
            "InvalidIp",
        ),
        (
            format!("/100000/report?{}", signed()),
            json!({"measurements": [{"ip": "192.0.2.1", "ok": true, "at": now_unix(),
                                     "connect_ms": 1}], "network": "pigeon"}),
            400,
            "InvalidNetwork",
        ),
    ] {
        let (got, body) = stage.post(&path, &body).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    // Over 64 KiB.
    let huge = json!({"measurements": [], "pad": "x".repeat(rum::MAX_BODY)});
    let (status, body) = stage
        .post(&format!("/100000/report?{}", signed()), &huge)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("PayloadTooLarge"))
    );

    // The queue holds one report; nobody drains it: the second is dropped, still 202.
    for _ in 0..2 {
        let (status, _) = stage
            .post(&format!("/100000/report?{}", signed()), &ok)
            .await;
        assert_eq!(status, 202);
    }
    let stats = stage.queue.stats();
    assert_eq!(stats.samples_dropped_full(), 2);
    assert_eq!(stats.accepted(), 2);
    for code in [
        "InvalidAccount",
        "UnsignedInterfaceDisabled",
        "InvalidSignature",
        "InvalidIp",
    ] {
        assert_eq!(stats.rejected(code), 1, "{code}");
    }
    assert!(stage.samples().is_empty());
    stage.stop().await;
}
