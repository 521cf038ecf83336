//! The subscriber against a real tonic `Steering` server: whole snapshots, deltas, refused
//! deltas and resynchronisation, persistence, and a scheduler without `WatchUpdates`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use isobar_dns::subscriber::{self, SubscriberConfig};
use isobar_dns::{ClientKey, Engine, PersistError, load_persisted};
use isobar_proto::delta::diff;
use isobar_proto::v1::steering_server::{Steering, SteeringServer};
use isobar_proto::v1::{
    Snapshot, SnapshotDelta, SnapshotUpdate, WatchSnapshotRequest, snapshot_update,
};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, WatchStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::support::*;

/// What the scheduler saw of one Watch call.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    authorization: Option<String>,
    frontend: String,
    have_version: u64,
}

/// Alters the next delta sent, to play a scheduler that gets it wrong.
type Tamper = Box<dyn FnOnce(&mut SnapshotDelta) + Send>;

struct FakeScheduler {
    latest: watch::Receiver<Option<Snapshot>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Every update sent on WatchUpdates streams: ("full" | "delta", version).
    sent: Arc<Mutex<Vec<(&'static str, u64)>>>,
    tamper: Arc<Mutex<Option<Tamper>>>,
    /// Plays a scheduler that predates WatchUpdates.
    whole_only: bool,
    stop: CancellationToken,
}

impl FakeScheduler {
    fn record(&self, request: &Request<WatchSnapshotRequest>) {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let req = request.get_ref();
        self.seen.lock().unwrap().push(Seen {
            authorization,
            frontend: req.frontend.clone(),
            have_version: req.have_version,
        });
    }
}

#[tonic::async_trait]
impl Steering for FakeScheduler {
    type WatchSnapshotStream = Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send>>;
    type WatchUpdatesStream = Pin<Box<dyn Stream<Item = Result<SnapshotUpdate, Status>> + Send>>;

    async fn watch_snapshot(
        &self,
        request: Request<WatchSnapshotRequest>,
    ) -> Result<Response<Self::WatchSnapshotStream>, Status> {
        self.record(&request);
        let have = request.get_ref().have_version;
        let stream = WatchStream::new(self.latest.clone())
            .filter_map(move |s| async move { s.filter(|s| s.version > have).map(Ok) })
            .take_until(self.stop.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }

    /// Like the real scheduler: whole first unless the frontend holds the current version,
    /// then a delta from the version last sent (through the shared `diff`).
    async fn watch_updates(
        &self,
        request: Request<WatchSnapshotRequest>,
    ) -> Result<Response<Self::WatchUpdatesStream>, Status> {
        if self.whole_only {
            return Err(Status::unimplemented("WatchUpdates"));
        }
        self.record(&request);
        let mut held_version = request.get_ref().have_version;
        let mut held: Option<Snapshot> = None;
        let (sent, tamper) = (self.sent.clone(), self.tamper.clone());
        let stream = WatchStream::new(self.latest.clone())
            .filter_map(move |s| {
                let update = s.and_then(|s| {
                    if s.version == held_version && held.is_none() {
                        held = Some(s);
                        return None;
                    }
                    if s.version <= held_version {
                        return None;
                    }
                    held_version = s.version;
                    let update = match held.replace(s.clone()) {
                        Some(old) => {
                            let mut delta = diff(&old, &s);
                            if let Some(tamper) = tamper.lock().unwrap().take() {
                                tamper(&mut delta);
                            }
                            sent.lock().unwrap().push(("delta", s.version));
                            snapshot_update::Kind::Delta(delta)
                        }
                        None => {
                            sent.lock().unwrap().push(("full", s.version));
                            snapshot_update::Kind::Full(s)
                        }
                    };
                    Some(Ok(SnapshotUpdate { kind: Some(update) }))
                });
                std::future::ready(update)
            })
            .take_until(self.stop.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}

struct Scheduler {
    addr: SocketAddr,
    push: watch::Sender<Option<Snapshot>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    sent: Arc<Mutex<Vec<(&'static str, u64)>>>,
    tamper: Arc<Mutex<Option<Tamper>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Scheduler {
    async fn start(addr: SocketAddr, first: Option<Snapshot>) -> Self {
        Self::start_with(addr, first, false).await
    }

    async fn start_with(addr: SocketAddr, first: Option<Snapshot>, whole_only: bool) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (push, latest) = watch::channel(first);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let tamper = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let service = FakeScheduler {
            latest,
            seen: seen.clone(),
            sent: sent.clone(),
            tamper: tamper.clone(),
            whole_only,
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
            sent,
            tamper,
            stop,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn sent(&self) -> Vec<(&'static str, u64)> {
        self.sent.lock().unwrap().clone()
    }

    fn tamper_next_delta(&self, tamper: impl FnOnce(&mut SnapshotDelta) + Send + 'static) {
        *self.tamper.lock().unwrap() = Some(Box::new(tamper));
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

fn subscriber_cfg(
    addr: SocketAddr,
    frontend: &str,
    persist: Option<&std::path::Path>,
) -> SubscriberConfig {
    SubscriberConfig {
        endpoint: format!("http://{addr}"),
        token: Some("s3cret".into()),
        frontend: frontend.into(),
        persist_path: persist.map(ToOwned::to_owned),
    }
}

/// `s` with services sorted by name and zones by origin, as an applied delta holds them.
fn normalized(mut s: Snapshot) -> Snapshot {
    s.services.sort_by(|a, b| a.name.cmp(&b.name));
    s.zones.sort_by(|a, b| a.origin.cmp(&b.origin));
    s
}

fn read_snapshot(path: &std::path::Path) -> Snapshot {
    prost::Message::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

/// A scratch directory, and a scheduler on an ephemeral port serving version 1.
async fn at_version_1() -> (tempfile::TempDir, Scheduler) {
    let scheduler = Scheduler::start(
        "127.0.0.1:0".parse().unwrap(),
        Some(snapshot(1, "192.0.2.101")),
    )
    .await;
    (tempfile::tempdir().unwrap(), scheduler)
}

#[tokio::test]
async fn follows_the_scheduler_with_deltas_persists_and_survives_its_absence() {
    let (dir, scheduler) = at_version_1().await;
    let persist = dir.path().join("snapshot.pb");
    let addr = scheduler.addr;

    let engine = Engine::new(Some(geo_db()));
    let stop = CancellationToken::new();
    let cfg = subscriber_cfg(addr, "edge-1", Some(&persist));
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

    // A newer snapshot on the open stream arrives as a delta, is applied and persisted: the
    // file holds the whole applied snapshot, not the delta.
    scheduler
        .push
        .send_replace(Some(snapshot(2, "192.0.2.102")));
    wait_for("snapshot 2", || engine.version() == 2).await;
    assert_eq!(default_v4(&engine), "192.0.2.102");
    assert_eq!(scheduler.sent(), [("full", 1), ("delta", 2)]);
    wait_for("persisted snapshot 2", || {
        let fresh = Engine::new(Some(geo_db()));
        matches!(load_persisted(&persist, &fresh), Ok(Some(2)))
    })
    .await;
    assert_eq!(
        read_snapshot(&persist),
        normalized(snapshot(2, "192.0.2.102"))
    );
    let restarted = Engine::new(Some(geo_db()));
    assert_eq!(load_persisted(&persist, &restarted).unwrap(), Some(2));
    assert_eq!(default_v4(&restarted), "192.0.2.102");

    // The scheduler goes away: answers keep coming from the last good snapshot.
    scheduler.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(engine.version(), 2);
    assert_eq!(default_v4(&engine), "192.0.2.102");

    // It comes back on the same address, still at version 2: the subscriber says it holds
    // 2, gets no whole snapshot, and follows the next change as a delta from 2.
    let back = Scheduler::start(addr, Some(snapshot(2, "192.0.2.102"))).await;
    wait_for("resubscription", || !back.seen().is_empty()).await;
    assert_eq!(back.seen()[0].have_version, 2);
    back.push.send_replace(Some(snapshot(4, "192.0.2.104")));
    wait_for("snapshot 4 after reconnect", || engine.version() == 4).await;
    assert_eq!(default_v4(&engine), "192.0.2.104");
    assert_eq!(back.sent(), [("delta", 4)]);
    wait_for("persisted snapshot 4", || {
        read_snapshot(&persist) == normalized(snapshot(4, "192.0.2.104"))
    })
    .await;

    // A frontend restarted from that file starts from version 4 and says so: deltas follow
    // without a whole snapshot first.
    stop.cancel();
    let finished = tokio::time::timeout(Duration::from_secs(2), sub).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))), "{finished:?}");
    let engine = Engine::new(Some(geo_db()));
    assert_eq!(load_persisted(&persist, &engine).unwrap(), Some(4));
    let stop = CancellationToken::new();
    let cfg = subscriber_cfg(addr, "edge-1", Some(&persist));
    let sub = tokio::spawn(subscriber::run(cfg, engine.clone(), stop.clone()));
    wait_for("second subscription", || back.seen().len() == 2).await;
    assert_eq!(back.seen()[1].have_version, 4);
    back.push.send_replace(Some(snapshot(5, "192.0.2.105")));
    wait_for("snapshot 5", || engine.version() == 5).await;
    assert_eq!(default_v4(&engine), "192.0.2.105");
    assert_eq!(back.sent(), [("delta", 4), ("delta", 5)]);

    // Shutdown is prompt even with the stream open.
    stop.cancel();
    let finished = tokio::time::timeout(Duration::from_secs(2), sub).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))), "{finished:?}");
    back.stop().await;
}

#[tokio::test]
async fn a_delta_that_does_not_apply_or_validate_changes_nothing_and_brings_a_resync() {
    let (dir, scheduler) = at_version_1().await;
    let persist = dir.path().join("snapshot.pb");
    let engine = Engine::new(Some(geo_db()));
    let stop = CancellationToken::new();
    let cfg = subscriber_cfg(scheduler.addr, "edge-3", Some(&persist));
    let sub = tokio::spawn(subscriber::run(cfg, engine.clone(), stop.clone()));
    wait_for("snapshot 1", || engine.version() == 1).await;
    wait_for("persisted snapshot 1", || persist.exists()).await;

    // A delta computed against a version the frontend does not hold: nothing changes, and
    // it resubscribes asking for everything (have_version 0), which brings version 2 whole.
    scheduler.tamper_next_delta(|d| d.base_version = 99);
    scheduler
        .push
        .send_replace(Some(snapshot(2, "192.0.2.102")));
    wait_for("resubscription after a foreign base", || {
        scheduler.seen().len() == 2
    })
    .await;
    assert_eq!(scheduler.seen()[1].have_version, 0);
    wait_for("snapshot 2 whole", || engine.version() == 2).await;
    assert_eq!(default_v4(&engine), "192.0.2.102");
    assert_eq!(scheduler.sent(), [("full", 1), ("delta", 2), ("full", 2)]);

    // A delta that applies but yields an invalid snapshot: still version 2, same answers,
    // same file on disk, and a resubscription from scratch.
    let mut broken = snapshot(3, "192.0.2.103");
    broken.services[0].answers[0].ipv4[0] = "nonsense".into();
    scheduler.push.send_replace(Some(broken));
    wait_for("resubscription after an invalid result", || {
        scheduler.seen().len() == 3
    })
    .await;
    assert_eq!(scheduler.seen()[2].have_version, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(engine.version(), 2);
    assert_eq!(default_v4(&engine), "192.0.2.102");
    assert_eq!(read_snapshot(&persist).version, 2);

    // A delta that removes a service the frontend never had is refused the same way; the
    // scheduler (which sent the rejected version 3 whole) is then followed to version 4.
    scheduler.tamper_next_delta(|d| d.removed_services.push("ghost.demo.isobar.test.".into()));
    scheduler
        .push
        .send_replace(Some(snapshot(4, "192.0.2.104")));
    wait_for("snapshot 4", || engine.version() == 4).await;
    assert_eq!(default_v4(&engine), "192.0.2.104");
    assert!(
        scheduler.seen().iter().all(|s| s.have_version == 0),
        "{:?}",
        scheduler.seen()
    );
    assert_eq!(scheduler.sent().last(), Some(&("full", 4)));

    // Back in step: the next change is a delta again.
    scheduler
        .push
        .send_replace(Some(snapshot(5, "192.0.2.105")));
    wait_for("snapshot 5", || engine.version() == 5).await;
    assert_eq!(scheduler.sent().last(), Some(&("delta", 5)));

    stop.cancel();
    sub.await.unwrap().unwrap();
    scheduler.stop().await;
}

#[tokio::test]
async fn a_scheduler_without_watch_updates_is_watched_whole() {
    let scheduler = Scheduler::start_with(
        "127.0.0.1:0".parse().unwrap(),
        Some(snapshot(1, "192.0.2.101")),
        true,
    )
    .await;
    let engine = Engine::new(Some(geo_db()));
    let stop = CancellationToken::new();
    let cfg = subscriber_cfg(scheduler.addr, "edge-4", None);
    let sub = tokio::spawn(subscriber::run(cfg, engine.clone(), stop.clone()));
    wait_for("snapshot 1", || engine.version() == 1).await;
    scheduler
        .push
        .send_replace(Some(snapshot(2, "192.0.2.102")));
    wait_for("snapshot 2", || engine.version() == 2).await;
    assert_eq!(default_v4(&engine), "192.0.2.102");
    assert_eq!(scheduler.seen().len(), 1, "one WatchSnapshot call");
    assert!(scheduler.sent().is_empty());
    stop.cancel();
    sub.await.unwrap().unwrap();
    scheduler.stop().await;
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
