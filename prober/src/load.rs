//! Node load agent: CPU, load average, open TCP connections and an operator-defined figure,
//! sampled on an interval and attached to the next report batch.
//!
//! The operator figure comes from a file (re-read every sample, one number) or is pushed over
//! HTTP (`PUT /load` with a number as the body; `GET /load` reads it back). Linux `/proc` is
//! the source of the system figures; elsewhere they read as zero.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::get;
use isobar_proto::v1::NodeLoad;
use tokio_util::sync::CancellationToken;

use crate::buffer::Buffer;

/// Largest accepted push body: one number.
const MAX_PUSH_BODY: usize = 64;

/// Settings of the load agent.
#[derive(Debug, Clone)]
pub struct LoadAgentConfig {
    /// The node name reported (default: the vantage).
    pub node: Option<String>,
    /// Time between two samples.
    pub interval: Duration,
    /// A file holding the operator-defined load figure.
    pub custom_file: Option<PathBuf>,
    /// Where to accept pushed figures (`PUT /load`); keep it on loopback.
    pub custom_listen: Option<SocketAddr>,
}

impl Default for LoadAgentConfig {
    fn default() -> Self {
        Self {
            node: None,
            interval: Duration::from_secs(1),
            custom_file: None,
            custom_listen: None,
        }
    }
}

/// CPU jiffies (busy, total) from the first line of `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle + iowait are not busy.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total - idle.min(total), total))
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Established TCP connections, IPv4 and IPv6.
fn open_connections() -> u64 {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|l| l.split_whitespace().nth(3) == Some("01"))
                .count() as u64
        })
        .sum()
}

async fn read_custom(path: &PathBuf) -> Option<f64> {
    let text = tokio::fs::read_to_string(path).await.ok()?;
    parse_figure(&text)
}

fn parse_figure(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// Samples until `shutdown`, putting the latest load into `buffer`.
pub(crate) async fn run(
    cfg: LoadAgentConfig,
    node: String,
    buffer: Arc<Buffer>,
    shutdown: CancellationToken,
) {
    let pushed = Arc::new(AtomicU64::new(f64::NAN.to_bits()));
    if let Some(addr) = cfg.custom_listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let app = Router::new()
                    .route("/load", get(get_load).put(put_load).post(put_load))
                    .layer(DefaultBodyLimit::max(MAX_PUSH_BODY))
                    .with_state(Arc::clone(&pushed));
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let serve = axum::serve(listener, app)
                        .with_graceful_shutdown(async move { stop.cancelled().await });
                    if let Err(e) = serve.await {
                        tracing::warn!(error = %e, "load push listener failed");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, %addr, "cannot bind the load push listener"),
        }
    }
    let mut ticker = tokio::time::interval(cfg.interval.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = cpu_times();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = cpu_times();
        let cpu = match (previous, now) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
            _ => 0.0,
        };
        previous = now;
        let custom = match &cfg.custom_file {
            Some(path) => read_custom(path).await,
            None => None,
        }
        .or_else(|| Some(f64::from_bits(pushed.load(Ordering::Relaxed))).filter(|v| !v.is_nan()))
        .unwrap_or(0.0);
        buffer.set_load(NodeLoad {
            node: node.clone(),
            at_unix_ms: crate::probe::unix_ms(),
            cpu,
            load_average: load_average(),
            open_connections: open_connections(),
            custom,
        });
    }
}

async fn put_load(State(pushed): State<Arc<AtomicU64>>, body: String) -> StatusCode {
    match parse_figure(&body) {
        Some(v) => {
            pushed.store(v.to_bits(), Ordering::Relaxed);
            StatusCode::NO_CONTENT
        }
        None => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

async fn get_load(State(pushed): State<Arc<AtomicU64>>) -> String {
    let v = f64::from_bits(pushed.load(Ordering::Relaxed));
    if v.is_nan() {
        String::new()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_and_parses_figures() {
        if std::path::Path::new("/proc/stat").exists() {
            let (busy, total) = cpu_times().expect("cpu times");
            assert!(busy <= total && total > 0);
        }
        assert_eq!(parse_figure(" 0.75\n"), Some(0.75));
        assert_eq!(parse_figure("-1"), None);
        assert_eq!(parse_figure("NaN"), None);
        assert_eq!(parse_figure("busy"), None);
    }

    #[tokio::test]
    async fn samples_cpu_file_figure_and_pushed_figure() {
        let dir = std::env::temp_dir().join(format!("isobar-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("load");
        std::fs::write(&file, "0.25").unwrap();
        let buffer = Arc::new(Buffer::new(10, 10));
        let stop = CancellationToken::new();
        let cfg = LoadAgentConfig {
            interval: Duration::from_millis(100),
            custom_file: Some(file.clone()),
            ..LoadAgentConfig::default()
        };
        let task = tokio::spawn(run(cfg, "fra1".into(), Arc::clone(&buffer), stop.clone()));
        tokio::time::sleep(Duration::from_millis(350)).await;
        let loads = buffer.take_loads();
        assert_eq!(loads.len(), 1, "only the latest sample is kept");
        assert_eq!(loads[0].node, "fra1");
        assert_eq!(loads[0].custom, 0.25);
        assert!((0.0..=1.0).contains(&loads[0].cpu));
        stop.cancel();
        task.await.unwrap();

        // Pushed over HTTP.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let stop = CancellationToken::new();
        let cfg = LoadAgentConfig {
            interval: Duration::from_millis(100),
            custom_listen: Some(addr),
            ..LoadAgentConfig::default()
        };
        let task = tokio::spawn(run(cfg, "fra1".into(), Arc::clone(&buffer), stop.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let resp = reqwest::Client::new()
            .put(format!("http://{addr}/load"))
            .body("0.6")
            .send()
            .await
            .expect("push");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(buffer.take_loads()[0].custom, 0.6);
        stop.cancel();
        task.await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
