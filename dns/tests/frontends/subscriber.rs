//! The subscriber against a real tonic `Steering` server.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use isobar_dns::subscriber::{self, SubscriberConfig};
use isobar_dns::{ClientKey, Engine, PersistError, load_persisted};
use isobar_proto::v1::steering_server::{Steering, SteeringServer};
use isobar_proto::v1::{Snapshot, WatchSnapshotRequest};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, WatchStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::support::*;

/// What the scheduler saw of one WatchSnapshot call.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    authorization: Option<String>,
    frontend: String,
    have_version: u64,
}

struct FakeScheduler {
    latest: watch::Receiver<Option<Snapshot>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: CancellationToken,
}

#[tonic::async_trait]
impl Steering for FakeScheduler {
    type WatchSnapshotStream = Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send>>;

    async fn watch_snapshot(
        &self,
        request: Request<WatchSnapshotRequest>,
    ) -> Result<Response<Self::WatchSnapshotStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let req = request.into_inner();
        self.seen.lock().unwrap().push(Seen {
            authorization,
            frontend: req.frontend,
            have_version: req.have_version,
        });
        let have = req.have_version;
        let stream = WatchStream::new(self.latest.clone())
            .filter_map(move |s| async move { s.filter(|s| s.version > have).map(Ok) })
            .take_until(self.stop.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}

struct Scheduler {
    addr: SocketAddr,
    push: watch::Sender<Option<Snapshot>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Scheduler {
    async fn start(addr: SocketAddr, first: Option<Snapshot>) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (push, latest) = watch::channel(first);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let service = FakeScheduler {
            latest,
            seen: seen.clone(),
            stop: stop.clone(),
        };
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(SteeringServer::new(service))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                .await
                .unwrap();
        });
        Self {
            addr,
            push,
            seen,
            stop,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn default_v4(engine: &Engine) -> String {
    // 192.0.2.0/24 has no location: the default answer, which the fixtures vary by version.
    let client = ClientKey::from_addr("192.0.2.9".parse().unwrap());
    engine.resolve_service(WWW, client).unwrap().ipv4()[0].to_string()
}

#[tokio::test]
async fn follows_the_scheduler_persists_and_survives_its_absence() {
    let dir = tempfile::tempdir().unwrap();
    let persist = dir.path().join("snapshot.pb");
    let scheduler = Scheduler::start(
        "127.0.0.1:0".parse().unwrap(),
        Some(snapshot(1, "192.0.2.101")),
    )
    .await;
    let addr = scheduler.addr;

    let engine = Engine::new(Some(geo_db()));
    let stop = CancellationToken::new();
    let cfg = SubscriberConfig {
        endpoint: format!("http://{addr}"),
        token: Some("s3cret".into()),
        frontend: "edge-1".into(),
        persist_path: Some(persist.clone()),
    };
    let sub = tokio::spawn(subscriber::run(cfg, engine.clone(), stop.clone()));

    wait_for("snapshot 1", || engine.version() == 1).await;
    assert_eq!(default_v4(&engine), "192.0.2.101");
    assert_eq!(
        scheduler.seen()[0],
        Seen {
            authorization: Some("Bearer s3cret".into()),
            frontend: "edge-1".into(),
            have_version: 0,
        }
    );

    // A newer snapshot on the open stream replaces it and is persisted.
    scheduler
        .push
        .send_replace(Some(snapshot(2, "192.0.2.102")));
    wait_for("snapshot 2", || engine.version() == 2).await;
    assert_eq!(default_v4(&engine), "192.0.2.102");
    wait_for("persisted snapshot 2", || {
        let fresh = Engine::new(Some(geo_db()));
        matches!(load_persisted(&persist, &fresh), Ok(Some(2)))
    })
    .await;
    let restarted = Engine::new(Some(geo_db()));
    assert_eq!(load_persisted(&persist, &restarted).unwrap(), Some(2));
    assert_eq!(default_v4(&restarted), "192.0.2.102");

    // An invalid snapshot is rejected; the engine keeps serving version 2.
    let mut broken = snapshot(3, "192.0.2.103");
    broken.services[0].answers[0].ipv4[0] = "nonsense".into();
    scheduler.push.send_replace(Some(broken));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(engine.version(), 2);

    // The scheduler goes away: answers keep coming from the last good snapshot.
    scheduler.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(engine.version(), 2);
    assert_eq!(default_v4(&engine), "192.0.2.102");

    // It comes back on the same address: the subscriber reconnects, says what it has, and
    // gets the newer state.
    let back = Scheduler::start(addr, Some(snapshot(4, "192.0.2.104"))).await;
    wait_for("snapshot 4 after reconnect", || engine.version() == 4).await;
    assert_eq!(default_v4(&engine), "192.0.2.104");
    assert_eq!(back.seen()[0].have_version, 2);

    // Shutdown is prompt even with the stream open.
    stop.cancel();
    let finished = tokio::time::timeout(Duration::from_secs(2), sub).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))), "{finished:?}");
    back.stop().await;
}

#[tokio::test]
async fn shutdown_is_prompt_while_backing_off_from_an_absent_scheduler() {
    // Nothing listens on this port once the listener is dropped.
    let port = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let engine = Engine::new(None);
    let stop = CancellationToken::new();
    let cfg = SubscriberConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        token: None,
        frontend: "edge-2".into(),
        persist_path: None,
    };
    let sub = tokio::spawn(subscriber::run(cfg, engine.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(engine.version(), 0);
    stop.cancel();
    let finished = tokio::time::timeout(Duration::from_secs(1), sub).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))), "{finished:?}");
}

#[tokio::test]
async fn a_bad_endpoint_or_token_is_reported_at_once() {
    let engine = Engine::new(None);
    let cfg = |endpoint: &str, token: Option<&str>| SubscriberConfig {
        endpoint: endpoint.into(),
        token: token.map(str::to_owned),
        frontend: "edge".into(),
        persist_path: None,
    };
    let stop = CancellationToken::new();
    let err = subscriber::run(cfg("not a uri", None), engine.clone(), stop.clone()).await;
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("invalid scheduler endpoint")
    );
    let err = subscriber::run(cfg("http://127.0.0.1:1", Some("a\nb")), engine, stop).await;
    assert!(err.unwrap_err().to_string().contains("token"));
}

#[test]
fn persisted_files_missing_corrupt_or_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(None);
    let path = dir.path().join("snapshot.pb");
    assert_eq!(load_persisted(&path, &engine).unwrap(), None);

    std::fs::write(&path, b"\xff\xff\xff not protobuf").unwrap();
    let err = load_persisted(&path, &engine).unwrap_err();
    assert!(matches!(err, PersistError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("corrupt"));

    let mut invalid = snapshot(9, "192.0.2.9");
    invalid.zones[0].records.clear();
    std::fs::write(&path, prost::Message::encode_to_vec(&invalid)).unwrap();
    let err = load_persisted(&path, &engine).unwrap_err();
    assert!(matches!(err, PersistError::Invalid { .. }), "{err}");
    assert_eq!(engine.version(), 0);
}
