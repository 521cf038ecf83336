//! `isobar serve`: starts the selected roles and stops them together.
//!
//! Every role talks to the scheduler through the gRPC contracts, also when they share a
//! process: the frontends subscribe to `WatchSnapshot` and the prober to `WatchTargets` on the
//! scheduler's own listener, exactly as they would from another machine.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use isobar_dns::{DnsLimits, DnsServer, Engine, GeoDb};
use isobar_scheduler::Scheduler;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long shutdown waits for tasks to finish before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Most HTTP requests handled at once; further requests wait for a slot.
pub const HTTP_MAX_IN_FLIGHT: usize = 1024;

/// How often the HTTP role forwards queued client RTT reports (RUM) to the scheduler.
pub const RUM_FORWARD_INTERVAL: Duration = Duration::from_secs(1);

/// A role one process can play.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Store, health, steering and placement; serves gRPC.
    Scheduler,
    /// Authoritative DNS frontend.
    Dns,
    /// HTTPDNS frontend (and, in the demo, the demo controls).
    Http,
    /// Probe agent.
    Prober,
}

/// Everything `isobar serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Roles to run.
    pub roles: BTreeSet<Role>,
    /// Store URL (`sqlite://file`, a path, or `postgres://...`).
    pub db: String,
    /// World config to apply at start (scheduler role).
    pub config: Option<PathBuf>,
    /// DNS listen address (UDP and TCP).
    pub dns: SocketAddr,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// gRPC listen address (scheduler role).
    pub grpc: SocketAddr,
    /// Scheduler URL for frontends and prober; `None` = this process's own gRPC listener.
    pub scheduler_url: Option<String>,
    /// Bearer token for gRPC.
    pub token: Option<String>,
    /// GeoIP database (MaxMind format, City-shaped records).
    pub geoip: Option<PathBuf>,
    /// ASN database (MaxMind format, GeoLite2-ASN-shaped records), for ASN client groups.
    pub asn_db: Option<PathBuf>,
    /// Where frontends keep their last good snapshot.
    pub data_dir: PathBuf,
    /// This process's name as a prober vantage and frontend.
    pub node_name: String,
    /// DNS limits.
    pub dns_limits: DnsLimits,
    /// Where the prober role also runs the UDP echo responder for mesh probes.
    pub echo_listen: Option<SocketAddr>,
    /// Run the node load agent with the prober role.
    pub load_agent: Option<isobar_prober::LoadAgentConfig>,
    /// TLS for the gRPC listener and for the clients calling the scheduler.
    pub tls: TlsOptions,
    /// How often frontends report observed demand to the scheduler.
    pub demand_interval: Duration,
}

/// TLS files. The listener serves TLS when `grpc_cert` and `grpc_key` are set (mTLS when
/// `grpc_client_ca` is too); clients use TLS for an `https://` scheduler URL.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The gRPC listener's certificate chain (PEM).
    pub grpc_cert: Option<PathBuf>,
    /// The gRPC listener's private key (PEM).
    pub grpc_key: Option<PathBuf>,
    /// CA bundle client certificates must chain to; enables mTLS.
    pub grpc_client_ca: Option<PathBuf>,
    /// CA bundle clients trust for the scheduler's certificate.
    pub scheduler_ca: Option<PathBuf>,
    /// Client certificate presented to an mTLS scheduler.
    pub client_cert: Option<PathBuf>,
    /// Its private key.
    pub client_key: Option<PathBuf>,
    /// The HTTP listener's certificate chain (PEM): HTTPS with ALPN h2 and http/1.1.
    pub http_cert: Option<PathBuf>,
    /// The HTTP listener's private key (PEM).
    pub http_key: Option<PathBuf>,
}

/// The running roles. Drop does not stop them: call [`Running::stop`].
pub struct Running {
    /// Bound DNS address, when the DNS role runs.
    pub dns: Option<SocketAddr>,
    /// Bound HTTP address, when the HTTP role runs.
    pub http: Option<SocketAddr>,
    /// Bound gRPC address, when the scheduler role runs.
    pub grpc: Option<SocketAddr>,
    /// The scheduler, when this process runs it.
    pub scheduler: Option<Arc<Scheduler>>,
    /// The frontends' answer engine, when this process runs one.
    pub engine: Option<Arc<Engine>>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    dns_server: Option<DnsServer>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            roles: [Role::Scheduler, Role::Dns, Role::Http, Role::Prober].into(),
            db: "sqlite://isobar.db".into(),
            config: None,
            dns: SocketAddr::from(([127, 0, 0, 1], 5353)),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 50051)),
            scheduler_url: None,
            token: None,
            geoip: None,
            asn_db: None,
            data_dir: PathBuf::from(".isobar"),
            node_name: "local".into(),
            dns_limits: DnsLimits::default(),
            echo_listen: None,
            load_agent: None,
            tls: TlsOptions::default(),
            demand_interval: isobar_dns::demand::DEFAULT_REPORT_INTERVAL,
        }
    }
}

/// Starts the roles in `opts`. `extra_http` is merged into the HTTP role's router (the demo
/// adds its controls there). Fails without leaving anything running.
pub async fn start(
    opts: ServeOptions,
    extra_http: Option<axum::Router>,
) -> anyhow::Result<Running> {
    if opts.roles.is_empty() {
        bail!("no roles selected");
    }
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut running = Running {
        dns: None,
        http: None,
        grpc: None,
        scheduler: None,
        engine: None,
        shutdown: shutdown.clone(),
        tasks: JoinSet::new(),
        dns_server: None,
    };
    let token = opts.token.clone().filter(|t| !t.is_empty());
    let mut own_scheme = "http";
    // One GeoIP and one ASN database for the frontends and the scheduler's explain, so both
    // locate and group clients identically.
    let geo = match &opts.geoip {
        Some(path) => {
            Some(Arc::new(GeoDb::open(path).with_context(|| {
                format!("opening GeoIP database {}", path.display())
            })?))
        }
        None => None,
    };
    let asn = match &opts.asn_db {
        Some(path) => Some(Arc::new(
            isobar_dns::AsnDb::open(path)
                .with_context(|| format!("opening ASN database {}", path.display()))?,
        )),
        None => None,
    };

    if opts.roles.contains(&Role::Scheduler) {
        isobar_scheduler::grpc::check_listener_auth(opts.grpc, token.as_deref())?;
        let store = isobar_store::Store::open(&opts.db)
            .await
            .with_context(|| format!("opening store {}", opts.db))?;
        let scheduler = Scheduler::open(store).await?;
        if let Some(path) = &opts.config {
            apply_file(&scheduler, path).await?;
        }
        let server_tls = match (&opts.tls.grpc_cert, &opts.tls.grpc_key) {
            (Some(cert), Some(key)) => Some(
                isobar_scheduler::grpc::tls::ServerTls {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: opts.tls.grpc_client_ca.clone(),
                }
                .load()?,
            ),
            (None, None) if opts.tls.grpc_client_ca.is_none() => None,
            _ => bail!(
                "--grpc-tls-cert and --grpc-tls-key go together (and --grpc-tls-client-ca needs both)"
            ),
        };
        let tls_scheme = if server_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let listener = TcpListener::bind(opts.grpc)
            .await
            .with_context(|| format!("binding gRPC on {}", opts.grpc))?;
        let addr = listener.local_addr()?;
        scheduler.spawn(&mut tasks, shutdown.clone());
        let sched = Arc::clone(&scheduler);
        let token = token.clone();
        let stop = shutdown.clone();
        own_scheme = tls_scheme;
        let (admin_geo, admin_asn) = (geo.clone(), asn.clone());
        tasks.spawn(async move {
            let served = isobar_scheduler::grpc::serve_with_geo(
                listener, sched, token, server_tls, admin_geo, admin_asn, stop,
            );
            if let Err(err) = served.await {
                warn!(error = %err, "gRPC server stopped with an error");
            }
        });
        info!(%addr, "scheduler gRPC listening");
        running.grpc = Some(addr);
        running.scheduler = Some(scheduler);
    }

    let scheduler_url = match (&opts.scheduler_url, running.grpc) {
        (Some(url), _) => url.clone(),
        (None, Some(addr)) => format!("{own_scheme}://{addr}"),
        (None, None) => {
            bail!("--scheduler URL is required when this process does not run the scheduler role")
        }
    };

    let client_tls = if scheduler_url.starts_with("https://") {
        let t = &opts.tls;
        Some(isobar_scheduler::grpc::tls::client_tls(
            t.scheduler_ca.as_deref(),
            t.client_cert.as_deref(),
            t.client_key.as_deref(),
        )?)
    } else {
        None
    };

    if opts.roles.contains(&Role::Dns) || opts.roles.contains(&Role::Http) {
        if geo.is_none() {
            warn!("no GeoIP database (--geoip): clients are located by CIDR overrides only");
        }
        let engine = Engine::with_asn(geo.clone(), asn.clone());
        std::fs::create_dir_all(&opts.data_dir)
            .with_context(|| format!("creating data dir {}", opts.data_dir.display()))?;
        let persist = opts
            .data_dir
            .join(format!("snapshot-{}.pb", opts.node_name));
        match isobar_dns::subscriber::load_persisted(&persist, &engine) {
            Ok(Some(version)) => {
                info!(version, path = %persist.display(), "serving persisted snapshot")
            }
            Ok(None) => {}
            Err(err) => warn!(error = %err, "ignoring unreadable persisted snapshot"),
        }
        let cfg = isobar_dns::subscriber::SubscriberConfig {
            endpoint: scheduler_url.clone(),
            token: token.clone(),
            frontend: opts.node_name.clone(),
            persist_path: Some(persist),
        };
        let eng = Arc::clone(&engine);
        let stop = shutdown.clone();
        let tls = client_tls.clone();
        tasks.spawn(async move {
            if let Err(err) = isobar_dns::subscriber::run_with_tls(cfg, tls, eng, stop).await {
                warn!(error = %err, "snapshot subscriber did not start");
            }
        });
        let demand = isobar_dns::demand::ReporterConfig {
            endpoint: scheduler_url.clone(),
            token: token.clone(),
            frontend: opts.node_name.clone(),
            interval: opts.demand_interval,
            tls: client_tls.clone(),
        };
        let eng = Arc::clone(&engine);
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(err) = isobar_dns::demand::run_reporter(demand, eng, stop).await {
                warn!(error = %err, "demand reporter did not start");
            }
        });

        let mut dns_stats = None;
        if opts.roles.contains(&Role::Dns) {
            let server = DnsServer::bind(opts.dns, Arc::clone(&engine), opts.dns_limits)
                .await
                .with_context(|| format!("binding DNS on {}", opts.dns))?;
            running.dns = Some(server.local_addr());
            info!(addr = %server.local_addr(), "DNS listening (UDP and TCP)");
            dns_stats = Some(server.stats());
            running.dns_server = Some(server);
        }
        if opts.roles.contains(&Role::Http) {
            let (rum_queue, rum_rx) = isobar_dns::rum::queue(isobar_dns::rum::QUEUE_CAPACITY);
            let rum_cfg = isobar_dns::demand::ReporterConfig {
                endpoint: scheduler_url.clone(),
                token: token.clone(),
                frontend: opts.node_name.clone(),
                interval: RUM_FORWARD_INTERVAL,
                tls: client_tls.clone(),
            };
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(err) = isobar_dns::rum::run_forwarder(rum_cfg, rum_rx, stop).await {
                    warn!(error = %err, "client RTT forwarder did not start");
                }
            });
            let rum_stats = rum_queue.stats();
            let http_tls = match (&opts.tls.http_cert, &opts.tls.http_key) {
                (Some(cert), Some(key)) => Some(
                    isobar_dns::httpdns::serve::load_tls(cert, key)
                        .context("loading the HTTP TLS certificate")?,
                ),
                (None, None) => None,
                _ => anyhow::bail!("--http-tls-cert and --http-tls-key go together"),
            };
            let httpdns = isobar_dns::httpdns::HttpdnsFrontend::new(Arc::clone(&engine));
            let mut router = isobar_dns::http::router_with(Arc::clone(&engine), &httpdns)
                .merge(isobar_dns::rum::router(Arc::clone(&engine), rum_queue))
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    HTTP_MAX_IN_FLIGHT,
                ));
            if let Some(extra) = extra_http {
                router = router.merge(extra);
            }
            if let Some(metrics) = metrics_router(
                dns_stats.take(),
                Some(rum_stats),
                Some(Arc::clone(&httpdns)),
                running.scheduler.clone(),
                Some(Arc::clone(&engine)),
            ) {
                router = router.merge(metrics);
            }
            let listener = TcpListener::bind(opts.http)
                .await
                .with_context(|| format!("binding HTTP on {}", opts.http))?;
            let addr = listener.local_addr()?;
            let stop = shutdown.clone();
            let tls = http_tls.is_some();
            tasks.spawn(isobar_dns::httpdns::serve::serve_with(
                listener,
                router,
                Some(httpdns),
                http_tls,
                stop,
            ));
            info!(%addr, tls, "HTTP listening (HTTP/1.1 and HTTP/2)");
            running.http = Some(addr);
        }
        running.engine = Some(engine);
    }

    if opts.roles.contains(&Role::Prober) {
        let mut cfg = isobar_prober::ProberConfig::new(scheduler_url, opts.node_name.clone());
        cfg.token = token;
        cfg.tls = client_tls;
        cfg.load = opts.load_agent.clone();
        if let Some(addr) = opts.echo_listen {
            let responder = isobar_prober::echo::Responder::bind(addr)
                .await
                .with_context(|| format!("binding the echo responder on {addr}"))?;
            info!(addr = %responder.local_addr()?, "UDP echo responder listening");
            tasks.spawn(responder.run(shutdown.clone()));
        }
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(err) = isobar_prober::run(cfg, stop).await {
                warn!(error = %err, "prober did not start");
            }
        });
    }

    running.tasks = tasks;
    Ok(running)
}

/// `GET /metrics`: the DNS and client RTT report counters and, when this process runs the
/// scheduler, the placement counters, target health and RUM book, in one Prometheus text
/// page.
fn metrics_router(
    dns: Option<Arc<isobar_dns::DnsStats>>,
    rum: Option<Arc<isobar_dns::rum::RumStats>>,
    httpdns: Option<Arc<isobar_dns::httpdns::HttpdnsFrontend>>,
    scheduler: Option<Arc<Scheduler>>,
    engine: Option<Arc<isobar_dns::Engine>>,
) -> Option<axum::Router> {
    if dns.is_none() && rum.is_none() && scheduler.is_none() {
        return None;
    }
    let page = move || {
        let mut out = dns
            .as_ref()
            .map(|s| s.render_prometheus())
            .unwrap_or_default();
        if let Some(r) = &rum {
            out.push_str(&r.render_prometheus());
        }
        if let Some(h) = &httpdns {
            out.push_str(&h.metrics().render_prometheus());
        }
        if let Some(e) = &engine {
            out.push_str(&e.render_gray_prometheus());
        }
        if let Some(s) = &scheduler {
            out.push_str(&s.placement_metrics().render_prometheus());
            out.push_str(&s.health_prometheus());
            out.push_str(&s.rum_prometheus());
        }
        async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                out,
            )
        }
    };
    Some(axum::Router::new().route("/metrics", axum::routing::get(page)))
}

/// Applies a world file through the scheduler (the same path `isobar apply` takes).
async fn apply_file(scheduler: &Scheduler, path: &std::path::Path) -> anyhow::Result<()> {
    let (source, toml, files) = crate::cli::read_config_bundle(path)?;
    let applied = scheduler
        .apply_config(&source, &toml, &files, false, "isobar serve --config")
        .await?;
    if applied.changed {
        info!(
            config_version = applied.config_version,
            changes = applied.diff.len(),
            "applied {source}"
        );
    } else {
        info!(
            config_version = applied.config_version,
            "{source} matches the stored config"
        );
    }
    Ok(())
}

// === impl Running ===

impl Running {
    /// Cancels every task and waits (up to [`SHUTDOWN_GRACE`]) for them to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.dns_server.take() {
            server.shutdown().await;
        }
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            warn!("shutdown did not complete in {SHUTDOWN_GRACE:?}; aborting the rest");
            self.tasks.abort_all();
        }
        if let Some(scheduler) = &self.scheduler {
            scheduler.store().close().await;
        }
    }

    /// A token that is cancelled when the process shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}
