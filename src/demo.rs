//! `isobar demo`: a complete Isobar on one machine.
//!
//! It writes the demo world (`demo/world.toml`) and a small GeoIP database that places the
//! documentation prefixes on three continents, starts one HTTP listener per PoP on
//! 127.0.1.N:18080 (the endpoints the probes check and the answers point at), starts every
//! role against a fresh SQLite store, and prints commands to try. `POST /demo/pops/{pop}/stop`
//! and `/start` on the HTTP port take a PoP's listener away and bring it back.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::app::{Role, ServeOptions};
use crate::cli::DemoArgs;

/// The demo world config.
pub const WORLD_TOML: &str = include_str!("../demo/world.toml");

/// Demo client locations: documentation prefixes and loopback, with the city they stand for.
pub const GEO_FIXTURE: &[(&str, &str, f64, f64)] = &[
    ("192.0.2.0/24", "Berlin", 52.52, 13.40),
    ("198.51.100.0/24", "New York", 40.71, -74.01),
    ("203.0.113.0/24", "Singapore", 1.29, 103.85),
    ("127.0.0.0/8", "San Francisco", 37.77, -122.42),
    ("2001:db8:1::/48", "Berlin", 52.52, 13.40),
    ("2001:db8:2::/48", "New York", 40.71, -74.01),
    ("2001:db8:3::/48", "Singapore", 1.29, 103.85),
];

/// The demo PoPs' endpoint listeners.
pub const POP_LISTENERS: &[(&str, &str)] = &[
    ("fra1", "127.0.1.1:18080"),
    ("lon1", "127.0.1.2:18080"),
    ("iad1", "127.0.1.3:18080"),
    ("sfo1", "127.0.1.4:18080"),
    ("sin1", "127.0.1.5:18080"),
    ("nrt1", "127.0.1.6:18080"),
];

/// Builds a GeoIP2-City-shaped MMDB from (cidr, city, lat, lon) rows.
pub fn geoip_database(rows: &[(&str, &str, f64, f64)]) -> anyhow::Result<Vec<u8>> {
    let mut writer = mmdb_writer::Writer::new("GeoIP2-City");
    for (cidr, city, lat, lon) in rows {
        let net: ipnet::IpNet = cidr
            .parse()
            .with_context(|| format!("bad demo prefix {cidr}"))?;
        let record = serde_json::json!({
            "city": { "names": { "en": city } },
            "location": { "latitude": lat, "longitude": lon, "accuracy_radius": 50 },
        });
        writer
            .insert(net, &record)
            .with_context(|| format!("inserting {cidr}"))?;
    }
    Ok(writer.to_bytes()?)
}

/// Builds a GeoLite2-ASN-shaped MMDB from (cidr, AS number, organization) rows.
pub fn asn_database(rows: &[(&str, u32, &str)]) -> anyhow::Result<Vec<u8>> {
    /// The record shape of GeoLite2-ASN: the number must be an MMDB uint32, as there.
    #[derive(serde::Serialize)]
    struct AsRecord<'a> {
        autonomous_system_number: u32,
        autonomous_system_organization: &'a str,
    }
    let mut writer = mmdb_writer::Writer::new("GeoLite2-ASN");
    for &(cidr, asn, organization) in rows {
        let net: ipnet::IpNet = cidr
            .parse()
            .with_context(|| format!("bad ASN prefix {cidr}"))?;
        let record = AsRecord {
            autonomous_system_number: asn,
            autonomous_system_organization: organization,
        };
        writer
            .insert(net, &record)
            .with_context(|| format!("inserting {cidr}"))?;
    }
    Ok(writer.to_bytes()?)
}

/// Endpoint listeners that can be stopped and restarted by name.
#[derive(Clone, Default)]
pub struct Endpoints {
    running: Arc<Mutex<BTreeMap<String, CancellationToken>>>,
    addrs: Arc<BTreeMap<String, SocketAddr>>,
    shutdown: CancellationToken,
}

impl Endpoints {
    /// Listeners for `(name, addr)` pairs, all stopped until [`Endpoints::start`].
    pub fn new(pairs: &[(&str, &str)], shutdown: CancellationToken) -> anyhow::Result<Self> {
        let mut addrs = BTreeMap::new();
        for (name, addr) in pairs {
            addrs.insert(
                (*name).to_owned(),
                addr.parse()
                    .with_context(|| format!("bad address {addr}"))?,
            );
        }
        Ok(Self {
            running: Arc::default(),
            addrs: Arc::new(addrs),
            shutdown,
        })
    }

    /// Starts the named listener (no-op if running). It answers every connection with a
    /// one-line HTTP response naming the PoP.
    pub async fn start(&self, name: &str) -> anyhow::Result<bool> {
        let addr = *self
            .addrs
            .get(name)
            .with_context(|| format!("unknown PoP {name}"))?;
        if self.lock().contains_key(name) {
            return Ok(false);
        }
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let stop = self.shutdown.child_token();
        self.lock().insert(name.to_owned(), stop.clone());
        let body = format!("hello from {name}\n");
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(_) => continue,
                    },
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                // Best effort: health checks only need the connect to succeed.
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    socket.write_all(response.as_bytes()),
                )
                .await;
            }
        });
        Ok(true)
    }

    /// Stops the named listener; connections to it are then refused.
    pub fn stop(&self, name: &str) -> bool {
        self.lock().remove(name).map(|t| t.cancel()).is_some()
    }

    /// Which listeners run.
    pub fn status(&self) -> BTreeMap<String, bool> {
        let running = self.lock();
        self.addrs
            .keys()
            .map(|k| (k.clone(), running.contains_key(k)))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CancellationToken>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The demo's HTTP controls.
pub fn control_router(endpoints: Endpoints) -> Router {
    async fn list(State(e): State<Endpoints>) -> Json<BTreeMap<String, bool>> {
        Json(e.status())
    }
    async fn stop(
        State(e): State<Endpoints>,
        UrlPath(pop): UrlPath<String>,
    ) -> (StatusCode, Json<serde_json::Value>) {
        if e.stop(&pop) {
            (
                StatusCode::OK,
                Json(serde_json::json!({ "pop": pop, "listening": false })),
            )
        } else {
            (
                StatusCode::NOT_FOUND,
                Json(
                    serde_json::json!({ "code": "NotRunning", "message": format!("no running listener for {pop}") }),
                ),
            )
        }
    }
    async fn start(
        State(e): State<Endpoints>,
        UrlPath(pop): UrlPath<String>,
    ) -> (StatusCode, Json<serde_json::Value>) {
        match e.start(&pop).await {
            Ok(_) => (
                StatusCode::OK,
                Json(serde_json::json!({ "pop": pop, "listening": true })),
            ),
            Err(err) => (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({ "code": "UnknownPop", "message": err.to_string() })),
            ),
        }
    }
    Router::new()
        .route("/demo/pops", get(list))
        .route("/demo/pops/{pop}/stop", post(stop))
        .route("/demo/pops/{pop}/start", post(start))
        .with_state(endpoints)
}

/// Writes the demo files into `dir` and returns serve options for them.
pub fn prepare(dir: &Path, geoip: Option<&Path>) -> anyhow::Result<ServeOptions> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for stale in [
        "isobar.db",
        "isobar.db-wal",
        "isobar.db-shm",
        "snapshot-demo.pb",
    ] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let world = dir.join("world.toml");
    std::fs::write(&world, WORLD_TOML)?;
    let geoip = match geoip {
        Some(path) => path.to_path_buf(),
        None => {
            let path = dir.join("demo-geoip.mmdb");
            std::fs::write(&path, geoip_database(GEO_FIXTURE)?)?;
            path
        }
    };
    Ok(ServeOptions {
        roles: [Role::Scheduler, Role::Dns, Role::Http, Role::Prober].into(),
        db: format!("sqlite://{}", dir.join("isobar.db").display()),
        config: Some(world),
        geoip: Some(geoip),
        data_dir: dir.to_path_buf(),
        node_name: "demo".into(),
        ..ServeOptions::default()
    })
}

/// `isobar demo`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = args
        .data_dir
        .unwrap_or_else(|| std::env::temp_dir().join("isobar-demo"));
    let mut opts = prepare(&dir, args.geoip.as_deref())?;
    opts.dns = args.dns;
    opts.http = args.http;
    opts.grpc = args.grpc;

    let stop_listeners = CancellationToken::new();
    let endpoints = Endpoints::new(POP_LISTENERS, stop_listeners.clone())?;
    for (pop, _) in POP_LISTENERS {
        endpoints.start(pop).await?;
    }
    let running = crate::start(opts, Some(control_router(endpoints))).await?;
    print_tour(&dir, running.dns, running.http, running.grpc);
    wait_for_signal().await;
    info!("shutting down");
    stop_listeners.cancel();
    running.stop().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn print_tour(
    dir: &Path,
    dns: Option<SocketAddr>,
    http: Option<SocketAddr>,
    grpc: Option<SocketAddr>,
) {
    let (Some(dns), Some(http), Some(grpc)) = (dns, http, grpc) else {
        return;
    };
    let host = |a: SocketAddr| match a.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    let (dh, dp, hh, hp) = (host(dns), dns.port(), host(http), http.port());
    // A closed stdout (a pipe whose reader went away) must not take the demo down:
    // `println!` would panic on EPIPE, so write and ignore the error.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        r#"
Isobar demo is running (data in {dir}).
  PoPs: fra1 lon1 (eu)  iad1 sfo1 (na)  sin1 nrt1 (ap); endpoints 127.0.1.1-6:18080
  Demo GeoIP: 192.0.2.0/24 Berlin, 198.51.100.0/24 New York, 203.0.113.0/24 Singapore,
              127.0.0.0/8 San Francisco, 2001:db8:1::/48 2001:db8:2::/48 2001:db8:3::/48 likewise

Ask DNS as a client in Berlin, New York and Singapore (EDNS Client Subnet), and as yourself:
  dig @{dh} -p {dp} www.demo.isobar.test A +subnet=192.0.2.1/24
  dig @{dh} -p {dp} www.demo.isobar.test A +subnet=198.51.100.1/24
  dig @{dh} -p {dp} www.demo.isobar.test AAAA +subnet=203.0.113.1/24
  dig @{dh} -p {dp} www.demo.isobar.test A
  dig @{dh} -p {dp} demo.isobar.test SOA
(dig comes with `apt-get install bind9-dnsutils`.)

HTTPDNS:
  curl 'http://{hh}:{hp}/d?host=www.demo.isobar.test&ip=192.0.2.1'
  curl 'http://{hh}:{hp}/d?host=www.demo.isobar.test&ip=198.51.100.1&query=4,6'

Take Frankfurt down and watch Berlin move to London (about 1.5 s), then bring it back:
  curl -X POST http://{hh}:{hp}/demo/pops/fra1/stop
  curl 'http://{hh}:{hp}/d?host=www.demo.isobar.test&ip=192.0.2.1'
  curl -X POST http://{hh}:{hp}/demo/pops/fra1/start

Placement over gRPC (grpc://{grpc}, health and reflection enabled):
  isobar place --service www.demo.isobar.test --replicas 6
  isobar watch-placement
  isobar state
  isobar export
(or `cargo run --release --` in place of `isobar`.)

Ctrl-C stops everything.
"#,
        dir = dir.display()
    );
}
