//! Snapshot propagation: the time from the scheduler publishing a snapshot to each of ten
//! frontends serving it, over real gRPC on loopback, with deltas (`WatchUpdates`) and with
//! whole snapshots (`WatchSnapshot`) as the same-run peer. Issue 5 asks for p99 ≤ 50 ms.
//!
//! One process: a real `Scheduler` (SQLite in memory) behind its real gRPC listener
//! (`grpc::serve`), and ten `isobar-dns` subscribers, each with its own `Engine`. The world
//! has 50 services over six PoPs, each with a full cell map (5° grid: 2592 cells). The
//! service maps are real solver output: all endpoints up, and each service with its
//! Frankfurt endpoint down. A push swaps one service between the two, so exactly one
//! service map changes, and is published through the runtime's own publish path
//! (`publish_for_bench`: versioning and watch channel as a recompute, without the solve,
//! which would cost 0.5–1.5 s per push here). "Published" is the instant before that call;
//! "installed" is when a frontend's engine has swapped the version in (the subscriber's
//! install hook, on the installing thread). The modes alternate in rounds so drift on a
//! shared machine hits both alike.
//!
//! `cargo bench -p isobar-scheduler --features bench-hooks --bench propagation`
//! (`PROPAGATION_PUSHES` sets the measured pushes per mode, default 200).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use isobar_dns::Engine;
use isobar_dns::subscriber::{self, SubscriberConfig, SubscriberOptions};
use isobar_proto::delta::diff;
use isobar_proto::v1::Snapshot;
use isobar_scheduler::{Scheduler, steering};
use isobar_store::Store;
use prost::Message;
use tokio_util::sync::CancellationToken;

const FRONTENDS: usize = 10;
const SERVICES: usize = 50;
const POPS: [(&str, &str, f64, f64); 6] = [
    ("fra1", "eu", 50.11, 8.68),
    ("lon1", "eu", 51.51, -0.13),
    ("iad1", "na", 39.04, -77.49),
    ("sfo1", "na", 37.77, -122.42),
    ("sin1", "ap", 1.35, 103.82),
    ("nrt1", "ap", 35.68, 139.69),
];
/// Rounds per mode; the pushes of a mode are split evenly over them.
const ROUNDS: usize = 2;
/// Pushes per round not counted (connections and allocators settle).
const WARMUP: usize = 5;
/// Bound on one push reaching every frontend; beyond it the run fails.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let pushes: usize = std::env::var("PROPAGATION_PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(pushes.div_ceil(ROUNDS)));
}

fn world() -> String {
    let mut t = String::from(
        "[defaults]\nanswers = 2\n\n\
         [[regions]]\nname = \"eu\"\nlat = 50.0\nlon = 10.0\n\n\
         [[regions]]\nname = \"na\"\nlat = 39.0\nlon = -95.0\n\n\
         [[regions]]\nname = \"ap\"\nlat = 15.0\nlon = 115.0\n\n\
         [[zones]]\nname = \"bench.test.\"\nrecords = [\n\
         \"@ 3600 IN SOA ns1.bench.test. hostmaster.bench.test. 1 7200 900 1209600 300\",\n\
         \"@ 3600 IN NS ns1.bench.test.\",\n\"ns1 3600 IN A 192.0.2.53\",\n]\n\n",
    );
    for (name, region, lat, lon) in POPS {
        t += &format!(
            "[[pops]]\nname = \"{name}\"\nregion = \"{region}\"\nlat = {lat}\nlon = {lon}\n\n"
        );
    }
    for s in 0..SERVICES {
        t += &format!("[[services]]\nname = \"s{s}.bench.test.\"\nendpoints = [\n");
        for (p, (pop, ..)) in POPS.iter().enumerate() {
            t += &format!(
                "  {{ pop = \"{pop}\", address = \"10.{p}.{s}.1\", check = \"10.{p}.{s}.1:80\" }},\n"
            );
        }
        t += "]\n";
    }
    t
}

/// The pushes: real solver output in two states per service, and the content published
/// last.
struct Pusher {
    up: Snapshot,
    down: Snapshot,
    /// Which services are in the `down` state now.
    is_down: Vec<bool>,
    current: Snapshot,
    pushes: usize,
}

impl Pusher {
    fn new(scheduler: &Scheduler) -> Self {
        let (world, config_version) = scheduler.world();
        let up = steering::solve(&world, config_version, &BTreeSet::new()).expect("solve");
        let all_fra: BTreeSet<String> = (0..SERVICES)
            .map(|s| format!("tcp://10.0.{s}.1:80"))
            .collect();
        let down = steering::solve(&world, config_version, &all_fra).expect("solve");
        assert_eq!(up.services.len(), SERVICES);
        for (u, d) in up.services.iter().zip(&down.services) {
            assert_eq!(u.name, d.name);
            assert_ne!(u, d, "losing Frankfurt changes {}", u.name);
        }
        Self {
            current: up.clone(),
            is_down: vec![false; SERVICES],
            up,
            down,
            pushes: 0,
        }
    }

    /// The next content: one service swapped to its other state.
    fn next(&mut self) -> Snapshot {
        let s = self.pushes % SERVICES;
        self.pushes += 1;
        self.is_down[s] = !self.is_down[s];
        let from = if self.is_down[s] {
            &self.down
        } else {
            &self.up
        };
        self.current.services[s] = from.services[s].clone();
        self.current.clone()
    }
}

/// Figures of one mode.
#[derive(Default)]
struct Samples {
    /// Publish → installed, per frontend and push.
    per_install: Vec<Duration>,
    /// Publish → the last of the frontends installed, per push.
    per_push: Vec<Duration>,
    /// Bytes of the update each frontend received, per push.
    update_bytes: Vec<usize>,
    /// CPU time of the whole process (scheduler and frontends) over the measured pushes.
    cpu: Duration,
}

/// CPU time this process has used, user and system, all threads (Linux).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses): utime and stime are the
    // 12th and 13th, in clock ticks of 1/100 s.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let ticks: u64 = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|f| f.parse::<u64>().expect("tick count"))
        .sum();
    Duration::from_millis(ticks * 10)
}

async fn run(pushes_per_round: usize) {
    let store = Store::open("sqlite::memory:").await.expect("store");
    let scheduler = Scheduler::open(store).await.expect("scheduler");
    scheduler
        .apply_config("bench.toml", &world(), &BTreeMap::new(), false, "bench")
        .await
        .expect("world applies");
    // No recompute loops: the pushes below are the only publications.
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serve = tokio::spawn(isobar_scheduler::grpc::serve(
        listener,
        Arc::clone(&scheduler),
        None,
        shutdown.clone(),
    ));

    let mut pusher = Pusher::new(&scheduler);
    scheduler.publish_for_bench(pusher.current.clone());
    let (mut delta, mut whole) = (Samples::default(), Samples::default());
    for _ in 0..ROUNDS {
        for (whole_snapshots, samples) in [(false, &mut delta), (true, &mut whole)] {
            round(
                whole_snapshots,
                addr,
                &scheduler,
                pushes_per_round,
                &mut pusher,
                samples,
            )
            .await;
        }
    }
    shutdown.cancel();
    serve.await.expect("serve task").expect("serve");

    let first = &pusher.up;
    let cells = first.services.first().map_or(0, |s| s.cell_answers.len());
    println!(
        "propagation: {FRONTENDS} frontends over gRPC on loopback, {SERVICES} services x {cells} cells, \
         whole snapshot {} bytes; {} pushes per mode, one service changed per push",
        first.encoded_len(),
        delta.per_push.len(),
    );
    println!(
        "{:<6} {:>9} | {:>28} | {:>28} | {:>12}",
        "mode", "update B", "per install p50/p99/max ms", "per push p50/p99/max ms", "CPU/push ms"
    );
    for (name, s) in [("delta", &delta), ("whole", &whole)] {
        let bytes = s.update_bytes.iter().sum::<usize>() / s.update_bytes.len().max(1);
        let cpu = ms(s.cpu) / s.per_push.len().max(1) as f64;
        println!(
            "{name:<6} {bytes:>9} | {:>28} | {:>28} | {cpu:>12.1}",
            triple(&s.per_install),
            triple(&s.per_push)
        );
    }
    let ratio = |q| pct(&whole.per_push, q).as_secs_f64() / pct(&delta.per_push, q).as_secs_f64();
    println!(
        "whole/delta per push: p50 {:.2}x, p99 {:.2}x, CPU {:.2}x; delta per push p99 {:.1} ms \
         (target <= 50 ms)",
        ratio(0.50),
        ratio(0.99),
        whole.cpu.as_secs_f64() / delta.cpu.as_secs_f64(),
        ms(pct(&delta.per_push, 0.99)),
    );
}

/// One round of one mode: ten fresh frontends subscribe and catch up, then `pushes`
/// (plus warm-up) are published one at a time, each waited for at every frontend.
async fn round(
    whole_snapshots: bool,
    addr: std::net::SocketAddr,
    scheduler: &Scheduler,
    pushes: usize,
    pusher: &mut Pusher,
    samples: &mut Samples,
) {
    let installs: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let stop = CancellationToken::new();
    let mut engines = Vec::new();
    let mut subscribers = Vec::new();
    for i in 0..FRONTENDS {
        let engine = Engine::new(None);
        let seen = Arc::clone(&installs);
        let options = SubscriberOptions {
            on_install: Some(Arc::new(move |v| {
                seen.lock().unwrap().push((v, Instant::now()));
            })),
            whole_snapshots,
        };
        let cfg = SubscriberConfig {
            endpoint: format!("http://{addr}"),
            token: None,
            frontend: format!("bench-{i}"),
            persist_path: None,
        };
        subscribers.push(tokio::spawn(subscriber::run_with_options(
            cfg,
            None,
            Arc::clone(&engine),
            stop.clone(),
            options,
        )));
        engines.push(engine);
    }
    let current = scheduler.watch_snapshots().borrow().version;
    wait_until("frontends catch up", || {
        engines.iter().all(|e| e.version() == current)
    })
    .await;

    let mut cpu_start = process_cpu();
    for k in 0..WARMUP + pushes {
        if k == WARMUP {
            cpu_start = process_cpu();
        }
        installs.lock().unwrap().clear();
        let before = pusher.current.clone();
        let content = pusher.next();
        let bytes = if whole_snapshots {
            content.encoded_len()
        } else {
            diff(&before, &content).encoded_len()
        };
        let published = Instant::now();
        let version = scheduler.publish_for_bench(content);
        wait_until("every frontend installs the push", || {
            let seen = installs.lock().unwrap();
            seen.iter().filter(|(v, _)| *v == version).count() == FRONTENDS
        })
        .await;
        if k >= WARMUP {
            let seen = installs.lock().unwrap();
            let lags: Vec<Duration> = seen.iter().map(|(_, at)| *at - published).collect();
            samples.per_push.push(*lags.iter().max().expect("installs"));
            samples.per_install.extend(lags);
            samples.update_bytes.push(bytes);
        }
    }
    samples.cpu += process_cpu() - cpu_start;
    stop.cancel();
    for s in subscribers {
        s.await.expect("subscriber task").expect("subscriber");
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PUSH_TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// The `q` quantile (nearest rank).
fn pct(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn triple(samples: &[Duration]) -> String {
    format!(
        "{:.2} / {:.2} / {:.2}",
        ms(pct(samples, 0.50)),
        ms(pct(samples, 0.99)),
        ms(pct(samples, 1.0))
    )
}
