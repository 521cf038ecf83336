//! End-to-end behaviour of the prober against a real gRPC Telemetry server and real sockets.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use isobar_prober::{ProberConfig, ProberError, run};
use isobar_proto::v1::{ProbeKind, ProbeTarget};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use support::{
    Scheduler, closed_port, open_port, serve, tcp_target, unique_seqs, unix_ms, wait_until,
};

const TOKEN: &str = "s3cret";
const WAIT: Duration = Duration::from_secs(10);

struct Prober {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ProberError>>,
}

impl Prober {
    fn start(cfg: ProberConfig) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(cfg, shutdown.clone()));
        Self { shutdown, task }
    }

    /// Cancels the prober and returns how long `run` took to come back.
    async fn stop(self) -> Duration {
        let start = Instant::now();
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("prober did not stop")
            .expect("prober panicked")
            .expect("prober failed");
        start.elapsed()
    }
}

fn config(url: String, token: Option<&str>) -> ProberConfig {
    let mut cfg = ProberConfig::new(url, "fra1");
    cfg.token = token.map(str::to_owned);
    cfg.batch_interval = Duration::from_millis(50);
    cfg
}

#[tokio::test]
async fn reports_open_port_as_success_and_closed_port_as_refused() {
    let sched = Scheduler::new(Some(TOKEN));
    let server = serve(&sched, "127.0.0.1:0".parse().unwrap()).await;
    let (open, closed) = (open_port().await, closed_port().await);
    sched.set_targets(
        1,
        vec![
            tcp_target("open", open, 20),
            tcp_target("closed", closed, 20),
        ],
    );
    let started = unix_ms();
    let prober = Prober::start(config(server.url(), Some(TOKEN)));

    wait_until(WAIT, "five measurements of each target", || {
        sched.measurements_for("open").len() >= 5 && sched.measurements_for("closed").len() >= 5
    })
    .await;
    let now = unix_ms();

    for m in sched.measurements_for("open") {
        assert!(m.success, "{m:?}");
        assert!(m.error.is_empty(), "{m:?}");
        assert!(
            m.rtt_us > 0 && m.rtt_us < 500_000,
            "implausible loopback rtt: {m:?}"
        );
        assert!((started..=now).contains(&m.at_unix_ms), "{m:?}");
    }
    for m in sched.measurements_for("closed") {
        assert!(!m.success, "{m:?}");
        assert_eq!(m.error, "connection refused");
        assert_eq!(m.rtt_us, 0);
    }
    // The buffer is FIFO and nothing failed, so each target's delivered sequence is 1..=n.
    for id in ["open", "closed"] {
        let seqs = unique_seqs(&sched.measurements_for(id));
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{id}");
    }

    {
        let seen = sched.seen.lock().unwrap();
        assert_eq!(seen.watch_vantages, ["fra1"]);
        assert!(seen.report_vantages.iter().all(|v| v == "fra1"));
        assert!(seen.auth.iter().any(|(m, _)| *m == "watch_targets"));
        assert!(seen.auth.iter().any(|(m, _)| *m == "report"));
        let want = format!("Bearer {TOKEN}");
        for (method, header) in &seen.auth {
            assert_eq!(header.as_deref(), Some(want.as_str()), "{method}");
        }
    }
    prober.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn without_the_token_the_scheduler_refuses_and_nothing_is_probed() {
    let sched = Scheduler::new(Some(TOKEN));
    let server = serve(&sched, "127.0.0.1:0".parse().unwrap()).await;
    sched.set_targets(1, vec![tcp_target("open", open_port().await, 20)]);
    let prober = Prober::start(config(server.url(), None));

    // The prober keeps retrying (with backoff) rather than giving up.
    wait_until(WAIT, "two refused watch attempts", || {
        let seen = sched.seen.lock().unwrap();
        seen.auth
            .iter()
            .filter(|(m, _)| *m == "watch_targets")
            .count()
            >= 2
    })
    .await;
    {
        let seen = sched.seen.lock().unwrap();
        assert!(seen.auth.iter().all(|(_, header)| header.is_none()));
        assert!(seen.watch_vantages.is_empty());
        assert!(seen.measurements.is_empty());
    }
    prober.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn removing_a_target_stops_it_and_changing_one_keeps_its_sequence() {
    let sched = Scheduler::new(None);
    let server = serve(&sched, "127.0.0.1:0".parse().unwrap()).await;
    let open = open_port().await;
    sched.set_targets(
        1,
        vec![tcp_target("a", open, 20), tcp_target("b", open, 20)],
    );
    let prober = Prober::start(config(server.url(), None));
    wait_until(WAIT, "measurements of both targets", || {
        sched.measurements_for("a").len() >= 3 && sched.measurements_for("b").len() >= 3
    })
    .await;

    // Drop b, and slow a down: a's loop restarts with the new interval.
    sched.set_targets(2, vec![tcp_target("a", open, 30)]);
    let changed = unix_ms();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b_after_grace = unique_seqs(&sched.measurements_for("b"));
    let a_after_grace = sched.measurements_for("a").len();
    tokio::time::sleep(Duration::from_millis(600)).await;

    let b = sched.measurements_for("b");
    assert_eq!(unique_seqs(&b), b_after_grace, "b kept being measured");
    // Allow one probe that was already running when the set arrived.
    let late = b.iter().filter(|m| m.at_unix_ms > changed + 50).count();
    assert_eq!(late, 0, "b probed after its removal: {b:?}");

    let a = sched.measurements_for("a");
    assert!(
        a.len() >= a_after_grace + 10,
        "a stopped: {} -> {}",
        a_after_grace,
        a.len()
    );
    let seqs = unique_seqs(&a);
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "a's sequence restarted"
    );
    prober.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn buffers_while_the_scheduler_is_down_and_delivers_after_reconnect() {
    let sched = Scheduler::new(Some(TOKEN));
    let server = serve(&sched, "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    sched.set_targets(1, vec![tcp_target("a", open_port().await, 50)]);
    let prober = Prober::start(config(server.url(), Some(TOKEN)));
    wait_until(WAIT, "first measurements", || {
        sched.measurements_for("a").len() >= 3
    })
    .await;

    server.stop().await;
    let down = unix_ms();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = serve(&sched, addr).await;
    let up = unix_ms();

    let during_outage = || {
        sched
            .measurements_for("a")
            .iter()
            .filter(|m| m.at_unix_ms > down + 100 && m.at_unix_ms < up - 100)
            .count()
    };
    // ~26 probes ran during the outage; all but a batch lost in flight must arrive.
    wait_until(WAIT, "measurements taken during the outage", || {
        during_outage() >= 20
    })
    .await;
    wait_until(WAIT, "the watch stream to come back", || {
        sched.seen.lock().unwrap().watch_vantages.len() >= 2
    })
    .await;
    unique_seqs(&sched.measurements_for("a"));
    prober.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_full_buffer_drops_the_oldest_measurements() {
    let sched = Scheduler::new(None);
    let server = serve(&sched, "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    sched.set_targets(1, vec![tcp_target("a", open_port().await, 10)]);
    let mut cfg = config(server.url(), None);
    cfg.max_buffered = 20;
    let prober = Prober::start(cfg);
    wait_until(WAIT, "first measurements", || {
        sched.measurements_for("a").len() >= 3
    })
    .await;

    server.stop().await;
    let down = unix_ms();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let server = serve(&sched, addr).await;
    let up = unix_ms();
    wait_until(WAIT, "measurements after the outage", || {
        sched
            .measurements_for("a")
            .iter()
            .any(|m| m.at_unix_ms > up)
    })
    .await;

    let a = sched.measurements_for("a");
    let seqs = unique_seqs(&a);
    let missing = seqs.last().unwrap() - seqs.len() as u64;
    assert!(
        missing >= 40,
        "only {missing} of ~100 outage measurements dropped"
    );
    // Only the newest 20 survive, and the reconnect comes after `up`: nothing from early in
    // the outage may have been kept.
    let early: Vec<_> = a
        .iter()
        .filter(|m| m.at_unix_ms > down + 100 && m.at_unix_ms < up - 400)
        .collect();
    assert!(early.is_empty(), "kept old measurements: {early:?}");
    prober.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn unsupported_kind_is_reported_once() {
    let sched = Scheduler::new(None);
    let server = serve(&sched, "127.0.0.1:0".parse().unwrap()).await;
    let bogus = ProbeTarget {
        kind: ProbeKind::Unspecified.into(),
        address: "127.0.0.1".to_owned(),
        ..tcp_target("bogus", "127.0.0.1:1".parse().unwrap(), 10)
    };
    sched.set_targets(1, vec![bogus]);
    let prober = Prober::start(config(server.url(), None));
    wait_until(WAIT, "the failure", || {
        !sched.measurements_for("bogus").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = sched.measurements_for("bogus");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(!got[0].success);
    assert_eq!(got[0].error, "unsupported probe kind");
    prober.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_is_prompt_while_connected_and_probing() {
    let sched = Scheduler::new(None);
    let server = serve(&sched, "127.0.0.1:0".parse().unwrap()).await;
    // Where the network drops SYNs to this unroutable address, the probe sits in connect
    // until its 10 s timeout unless shutdown cancels it; elsewhere it fails fast.
    let blackhole = ProbeTarget {
        address: "10.255.255.1:9".to_owned(),
        timeout_ms: 10_000,
        ..tcp_target("blackhole", "127.0.0.1:1".parse().unwrap(), 20)
    };
    sched.set_targets(
        1,
        vec![tcp_target("open", open_port().await, 20), blackhole],
    );
    let prober = Prober::start(config(server.url(), None));
    wait_until(WAIT, "measurements", || {
        sched.measurements_for("open").len() >= 3
    })
    .await;
    let took = prober.stop().await;
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_is_prompt_while_the_scheduler_hangs() {
    // Accepts TCP but never speaks HTTP/2: connect and stream calls stall.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let prober = Prober::start(config(format!("http://{addr}"), None));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = prober.stop().await;
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    holder.abort();
}

#[tokio::test]
async fn invalid_configuration_is_rejected_at_start() {
    let shutdown = CancellationToken::new();
    let err = run(
        ProberConfig::new("https://127.0.0.1:1", "fra1"),
        shutdown.clone(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ProberError::InvalidScheduler { .. }), "{err}");
    let mut cfg = ProberConfig::new("http://127.0.0.1:1", "fra1");
    cfg.max_buffered = 0;
    assert!(matches!(
        run(cfg, shutdown).await,
        Err(ProberError::ZeroBuffer)
    ));
}
