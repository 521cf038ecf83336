//! Probing and health across real network namespaces: three PoPs, each with a prober, a TCP
//! endpoint and UDP echo responders, joined through a core router namespace where the
//! scheduler listens. Impairments come from a userspace proxy (delay, random drop) and from
//! nftables rules inside the namespaces.
//!
//! Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN), `ip` and `nft`. Without them the tests skip
//! with a message, except under CI (`CI` set), where they fail.

mod lab;
mod proxy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use isobar_prober::echo::Responder;
use isobar_proto::v1::admin_client::AdminClient;
use isobar_proto::v1::{GetStateRequest, SetHealthOverrideRequest};
use isobar_scheduler::Scheduler;
use isobar_store::Store;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use lab::{Lab, in_netns, spawn_in_netns};
use proxy::Impairment;

/// Probe interval and fall of the lab world: the issue's detection scenario.
const INTERVAL_MS: u64 = 500;
const FALL: u64 = 3;
const GRPC_PORT: u16 = 50_077;
const ECHO_PORT: u16 = 7070;
const LOSSY_ECHO_PORT: u16 = 7071;
const PROXY_PORT: u16 = 7170;
const ENDPOINT_PORT: u16 = 8080;
/// Injected by the proxy on the way to PoP 2's mesh responder.
const INJECTED_DELAY: Duration = Duration::from_millis(40);
/// Dropped by nftables on PoP 2's lossy responder.
const INJECTED_LOSS_PERCENT: f64 = 10.0;

/// The lab tests share two cores with other builds; run them one at a time so the timing
/// assertions measure Isobar, not contention between labs.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Builds a lab or explains why not; `None` means skip.
fn lab_or_skip() -> Option<Lab> {
    let nft = lab::run(&["nft", "--version"]);
    let lab = Lab::new(3);
    match (lab, nft) {
        (Ok(lab), Ok(())) => Some(lab),
        (lab, nft) => {
            let why = match (lab, nft) {
                (Err(e), _) => format!("network namespaces unavailable: {}", e.0),
                (_, Err(e)) => format!("nftables unavailable: {e}"),
                _ => unreachable!("both available"),
            };
            assert!(std::env::var_os("CI").is_none(), "under CI: {why}");
            eprintln!("skipping: {why}");
            None
        }
    }
}

fn pop_ip(i: usize) -> String {
    format!("10.77.{i}.2")
}

fn target(i: usize) -> String {
    format!("tcp://{}:{ENDPOINT_PORT}", pop_ip(i))
}

fn world_toml() -> String {
    let pops = ["a", "b", "c"];
    let mut t = format!(
        r#"
[health]
interval_ms = {INTERVAL_MS}
timeout_ms = 400
fall = {FALL}
rise = 2
# PoP b's mesh responder sits behind the impairment proxy in the core.
mesh = {{ a = "10.77.1.2:{ECHO_PORT}", b = "10.77.2.1:{PROXY_PORT}", c = "10.77.3.2:{ECHO_PORT}" }}
landmarks = [{{ region = "eu", address = "10.77.2.2:{LOSSY_ECHO_PORT}", kind = "udp_echo", interval_ms = 5, timeout_ms = 50 }}]

[[regions]]
name = "eu"
lat = 50.0
lon = 8.0

[[zones]]
name = "lab.test."
records = ["@ 300 IN NS ns1", "ns1 300 IN A 192.0.2.53"]
"#
    );
    for (i, name) in pops.iter().enumerate() {
        t += &format!(
            "\n[[pops]]\nname = \"{name}\"\nregion = \"eu\"\nlat = {}\nlon = 8.0\n",
            50.0 + i as f64
        );
    }
    t += "\n[[services]]\nname = \"www.lab.test.\"\nendpoints = [\n";
    for (i, name) in pops.iter().enumerate() {
        t += &format!(
            "  {{ pop = \"{name}\", address = \"192.0.2.{}\", check = \"{}:{ENDPOINT_PORT}\" }},\n",
            i + 1,
            pop_ip(i + 1)
        );
    }
    t + "]\n"
}

/// Everything running in one lab.
struct Stack {
    lab: Lab,
    scheduler: Arc<Scheduler>,
    admin_url: String,
    shutdown: CancellationToken,
    endpoints: Vec<tokio::task::JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    tasks: JoinSet<()>,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start(lab: Lab) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&format!("sqlite://{}", dir.path().join("lab.db").display()))
            .await
            .expect("store");
        let scheduler = Scheduler::open(store).await.expect("scheduler");
        scheduler
            .apply_config(
                "lab.toml",
                &world_toml(),
                &BTreeMap::new(),
                false,
                "netns-test",
            )
            .await
            .expect("apply lab world");
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        scheduler.spawn(&mut tasks, shutdown.clone());

        // gRPC in the core namespace for the probers, and on loopback for the test itself.
        let core_listener = in_netns(&lab.core, || {
            std::net::TcpListener::bind(("0.0.0.0", GRPC_PORT)).expect("bind core grpc")
        });
        let local = std::net::TcpListener::bind("127.0.0.1:0").expect("bind local grpc");
        let admin_url = format!("http://{}", local.local_addr().expect("addr"));
        for listener in [core_listener, local] {
            listener.set_nonblocking(true).expect("nonblocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let (s, stop) = (Arc::clone(&scheduler), shutdown.clone());
            tasks.spawn(async move {
                isobar_scheduler::grpc::serve(listener, s, None, stop)
                    .await
                    .expect("grpc serve");
            });
        }

        // The impairment proxy in the core, in front of PoP b's mesh responder.
        let proxy_socket = in_netns(&lab.core, || {
            std::net::UdpSocket::bind(("10.77.2.1", PROXY_PORT)).expect("bind proxy")
        });
        let mut threads = Vec::new();
        let stop = shutdown.clone();
        threads.push(spawn_in_netns(&lab.core, move || {
            let upstream: SocketAddr = format!("10.77.2.2:{ECHO_PORT}").parse().expect("addr");
            let imp = Impairment {
                delay: INJECTED_DELAY,
                drop_percent: 0,
            };
            proxy::run(proxy_socket, upstream, imp, stop)
        }));

        // Per PoP: an endpoint listener, echo responders and a prober, all in the namespace.
        let mut endpoints = Vec::new();
        for (i, ns) in lab.pops.iter().enumerate() {
            let i = i + 1;
            let listener = in_netns(ns, move || {
                std::net::TcpListener::bind((pop_ip(i).as_str(), ENDPOINT_PORT))
                    .expect("bind endpoint")
            });
            listener.set_nonblocking(true).expect("nonblocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            endpoints.push(tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    drop(conn);
                }
            }));
            let stop = shutdown.clone();
            let vantage = ["a", "b", "c"][i - 1].to_owned();
            threads.push(spawn_in_netns(ns, move || async move {
                for port in [ECHO_PORT, LOSSY_ECHO_PORT] {
                    let addr: SocketAddr = format!("{}:{port}", pop_ip(i)).parse().expect("addr");
                    let responder = Responder::bind(addr).await.expect("bind responder");
                    tokio::spawn(responder.run(stop.clone()));
                }
                let cfg = isobar_prober::ProberConfig::new(
                    format!("http://10.77.{i}.1:{GRPC_PORT}"),
                    vantage,
                );
                isobar_prober::run(cfg, stop).await.expect("prober");
            }));
        }
        Stack {
            lab,
            scheduler,
            admin_url,
            shutdown,
            endpoints,
            threads,
            tasks,
            _dir: dir,
        }
    }

    /// Waits until every vantage has reported on every endpoint target.
    async fn wait_for_votes(&self) {
        wait_until(Duration::from_secs(15), "three vantages reporting", || {
            let report = self.scheduler.health_report();
            (1..=3).all(|i| {
                report
                    .get(&target(i))
                    .is_some_and(|h| h.vantages.len() == 3)
            })
        })
        .await;
    }

    fn state(&self, i: usize) -> (String, String) {
        let h = &self.scheduler.health_report()[&target(i)];
        (h.state.as_str().to_owned(), h.reason.clone())
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        for e in &self.endpoints {
            e.abort();
        }
        while self.tasks.join_next().await.is_some() {}
        let threads = std::mem::take(&mut self.threads);
        tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await
        .expect("join threads");
        drop(self.lab);
    }
}

async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// Whether any service may answer `address`: listed in a static answer, or a serving node of
/// a site that dynamic answers pick from (unserving nodes stay listed, marked down).
fn answered(scheduler: &Scheduler, address: &str) -> bool {
    let snapshot = scheduler.watch_snapshots().borrow().clone();
    snapshot.services.iter().any(|s| {
        s.answers
            .iter()
            .any(|a| a.ipv4.iter().any(|ip| ip == address))
            || s.sites
                .iter()
                .flat_map(|site| &site.nodes)
                .any(|n| n.address == address && !n.down)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measured_rtt_and_loss_match_the_injected_impairments() {
    let _serial = serial().await;
    let Some(lab) = lab_or_skip() else { return };
    lab.nft(
        2,
        "input",
        &format!(
            "udp dport {LOSSY_ECHO_PORT} numgen random mod 100 < {} drop",
            INJECTED_LOSS_PERCENT as u32
        ),
    )
    .expect("nft loss rule");
    let stack = Stack::start(lab).await;
    // 5 ms interval and 50 ms timeout: 1000 samples (the window) take about 10 s.
    wait_until(
        Duration::from_secs(30),
        "a full loss window and rtt samples",
        || {
            let s = stack.scheduler.window_stats(Some("a"), None);
            let lossy = s.get(&(
                "a".into(),
                format!("landmark://eu/10.77.2.2:{LOSSY_ECHO_PORT}"),
            ));
            let mesh = s.get(&("a".into(), "mesh://b".into()));
            lossy.is_some_and(|w| w.samples >= 1000) && mesh.is_some_and(|w| w.samples >= 8)
        },
    )
    .await;
    let stats = stack.scheduler.window_stats(Some("a"), None);
    let mesh = stats[&("a".to_owned(), "mesh://b".to_owned())];
    let injected = INJECTED_DELAY.as_secs_f64() * 1e6;
    let median = f64::from(mesh.rtt_median_us);
    println!(
        "a → b through the proxy: injected {injected:.0} µs, median {median:.0} µs, min {} µs, p95 {} µs, jitter {:.0} µs",
        mesh.rtt_min_us, mesh.rtt_p95_us, mesh.jitter_us
    );
    assert!(
        (median - injected).abs() <= injected * 0.10,
        "median rtt {median} µs is not within 10 % of {injected} µs"
    );
    let direct = stats[&("a".to_owned(), "mesh://c".to_owned())];
    assert!(direct.rtt_median_us < 5_000, "unimpaired path: {direct:?}");
    let lossy = stats[&(
        "a".to_owned(),
        format!("landmark://eu/10.77.2.2:{LOSSY_ECHO_PORT}"),
    )];
    println!(
        "a → b lossy responder: injected {INJECTED_LOSS_PERCENT} %, measured {:.2} % over {} samples",
        lossy.loss_percent, lossy.samples
    );
    assert!(
        (lossy.loss_percent - INJECTED_LOSS_PERCENT).abs() <= 3.0,
        "loss {} % is not within 3 points of {INJECTED_LOSS_PERCENT} %",
        lossy.loss_percent
    );
    // The matrix holds the measured PoP pairs and estimates the rest.
    let (_, rtt) = stack.scheduler.rtt_matrix();
    let ab = rtt
        .iter()
        .find(|e| e.from == "pop:a" && e.to == "pop:b")
        .expect("a→b");
    assert!(ab.measured && (ab.rtt_ms - 40.0).abs() < 4.0, "{ab:?}");
    assert!(
        rtt.iter().any(|e| e.from == "region:eu"),
        "region row: {rtt:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_leaves_the_answers_within_the_detection_bound() {
    let _serial = serial().await;
    let Some(lab) = lab_or_skip() else { return };
    let stack = Stack::start(lab).await;
    stack.wait_for_votes().await;
    assert!(answered(&stack.scheduler, "192.0.2.2"));
    stack.endpoints[1].abort();
    let took = wait_until(
        Duration::from_secs(5),
        "b's endpoint leaving the answers",
        || !answered(&stack.scheduler, "192.0.2.2"),
    )
    .await;
    let (state, reason) = stack.state(2);
    println!(
        "detection: endpoint killed → out of the snapshot in {took:?} (interval {INTERVAL_MS} ms, fall {FALL}); {reason}"
    );
    assert_eq!(state, "down", "{reason}");
    // fall × interval, plus the prober's 200 ms batching and 300 ms slack for a shared machine.
    let bound = Duration::from_millis(FALL * INTERVAL_MS + 200 + 300);
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
    assert!(reason.starts_with("down from"), "{reason}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prober_whose_own_network_is_cut_off_drains_nothing() {
    let _serial = serial().await;
    let Some(lab) = lab_or_skip() else { return };
    let stack = Stack::start(lab).await;
    stack.wait_for_votes().await;
    // The prober in PoP c can still reach the scheduler and nothing else; c's endpoint and
    // responders still answer what others send them (only new outbound flows are cut).
    stack
        .lab
        .nft(3, "output", "ct state new ip daddr != 10.77.3.1 drop")
        .expect("nft cut");
    wait_until(Duration::from_secs(10), "c judged broken", || {
        stack
            .scheduler
            .vantages()
            .get("c")
            .is_some_and(|v| v.broken)
    })
    .await;
    // Give every view time to settle: c sees everything down, a and b nothing.
    tokio::time::sleep(Duration::from_millis(3 * INTERVAL_MS * FALL)).await;
    let c = &stack.scheduler.vantages()["c"];
    assert!(c.broken && c.down * 2 > c.targets, "{c:?}");
    for i in 1..=3 {
        let (state, reason) = stack.state(i);
        assert_eq!(state, "up", "{}: {reason}", target(i));
    }
    assert!(
        stack.state(3).1.contains("broken vantage(s) set aside"),
        "{:?}",
        stack.state(3)
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_seen_down_by_a_minority_stays_up() {
    let _serial = serial().await;
    let Some(lab) = lab_or_skip() else { return };
    let stack = Stack::start(lab).await;
    stack.wait_for_votes().await;
    // Only a loses sight of c's endpoint.
    stack
        .lab
        .nft(
            1,
            "output",
            &format!("ip daddr 10.77.3.2 tcp dport {ENDPOINT_PORT} drop"),
        )
        .expect("nft minority");
    wait_until(
        Duration::from_secs(10),
        "a seeing c's endpoint down",
        || {
            stack.scheduler.health_report()[&target(3)].vantages["a"].state
                == isobar_scheduler::health::State::Down
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2 * INTERVAL_MS * FALL)).await;
    let (state, reason) = stack.state(3);
    assert_eq!(state, "up", "{reason}");
    assert!(
        reason.contains("down from only 1 of 3 vantages"),
        "{reason}"
    );
    assert!(answered(&stack.scheduler, "192.0.2.3"));
    assert!(stack.scheduler.vantages().values().all(|v| !v.broken));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_is_applied_and_audited() {
    let _serial = serial().await;
    let Some(lab) = lab_or_skip() else { return };
    let stack = Stack::start(lab).await;
    stack.wait_for_votes().await;
    let mut admin = AdminClient::connect(stack.admin_url.clone())
        .await
        .expect("admin");
    let set = admin
        .set_health_override(SetHealthOverrideRequest {
            target_id: target(1),
            mode: "drain".into(),
            reason: "kernel upgrade".into(),
            actor: "alice".into(),
        })
        .await
        .expect("drain")
        .into_inner();
    assert_eq!(set.state, "down");
    assert_eq!(set.probe_state, "up");
    assert_eq!(set.override_mode, "drain");
    assert!(set.reason.contains("kernel upgrade"), "{}", set.reason);
    wait_until(
        Duration::from_secs(2),
        "a's endpoint drained from answers",
        || !answered(&stack.scheduler, "192.0.2.1"),
    )
    .await;
    let missing = admin
        .set_health_override(SetHealthOverrideRequest {
            target_id: "tcp://192.0.2.99:1".into(),
            mode: "drain".into(),
            reason: "x".into(),
            actor: "alice".into(),
        })
        .await
        .expect_err("unknown target");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let audit = stack.scheduler.store().list_audit(10).await.expect("audit");
    let row = audit
        .iter()
        .find(|e| e.action == "health_override")
        .expect("override audited");
    assert!(row.actor.starts_with("alice"), "{row:?}");
    assert!(
        row.detail.contains("drain") && row.detail.contains(&target(1)),
        "{row:?}"
    );

    admin
        .set_health_override(SetHealthOverrideRequest {
            target_id: target(1),
            mode: "clear".into(),
            ..Default::default()
        })
        .await
        .expect("clear");
    let state = admin
        .get_state(GetStateRequest {})
        .await
        .expect("state")
        .into_inner();
    let t = state
        .targets
        .iter()
        .find(|t| t.target_id == target(1))
        .expect("listed");
    assert_eq!((t.state.as_str(), t.override_mode.as_str()), ("up", ""));
    assert_eq!(t.votes.len(), 3);
    assert_eq!(state.vantages.len(), 3);
    let audit = stack.scheduler.store().list_audit(10).await.expect("audit");
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.action == "health_override")
            .count(),
        2
    );
    stack.stop().await;
}
