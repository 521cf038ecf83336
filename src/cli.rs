//! Command-line interface: `serve`, `demo`, and the client commands that drive a running
//! scheduler over gRPC (`apply`, `export`, `state`, `place`, ...).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use isobar_proto::v1::admin_client::AdminClient;
use isobar_proto::v1::placement_client::PlacementClient;
use isobar_proto::v1::{
    ApplyConfigRequest, ExportConfigRequest, GetPlacementRequest, GetStateRequest, PlaceRequest,
    PlacementDecision, PlacementPolicy, ReleaseRequest, WatchPlacementRequest,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::app::{Role, ServeOptions};

/// Isobar: global request and compute scheduler with GSLB DNS.
#[derive(Debug, Parser)]
#[command(name = "isobar", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Isobar's roles (all of them by default) with a world config.
    Serve(Box<ServeArgs>),
    /// Run a built-in demo world: 6 PoPs on 3 continents with local endpoints, SQLite, a
    /// small GeoIP database, and every role in one process.
    Demo(DemoArgs),
    /// Validate a world config, show the diff and apply it atomically.
    Apply(ApplyArgs),
    /// Print the stored world config in the format `apply` takes.
    Export(ClientArgs),
    /// Show config and snapshot versions and target health.
    State(ClientArgs),
    /// Declare a placement policy for a service and print the decision.
    Place(PlaceArgs),
    /// Print the current placement of a service.
    GetPlacement(ServiceArgs),
    /// Stream placement decisions as they change (all services by default).
    WatchPlacement(WatchArgs),
    /// Forget a service's placement.
    Release(ServiceArgs),
    /// Health overrides (force up/down, drain) and probe measurements.
    Health(crate::health_cli::HealthArgs),
    /// Import or export a zone as an RFC 1035 master file.
    Zone(crate::zone_cmd::ZoneArgs),
    /// Show a client's answer for a GSLB name and why: group, PoP costs, gray rule, guardrails.
    Explain(crate::steer_cmd::ExplainArgs),
    /// Show what the steering map would become if PoPs, regions or endpoints failed.
    Whatif(crate::steer_cmd::WhatIfArgs),
    /// Drain guardrails: confirm a drain the budget holds back.
    Drain(crate::steer_cmd::DrainArgs),
}

/// Flags shared by the commands that talk to a scheduler.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Scheduler gRPC URL.
    #[arg(long, env = "ISOBAR_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Bearer token.
    #[arg(long, env = "ISOBAR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA bundle (PEM) trusted for an `https://` scheduler.
    #[arg(long, env = "ISOBAR_CA")]
    pub scheduler_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a scheduler that requires mTLS.
    #[arg(long, env = "ISOBAR_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "ISOBAR_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
}

/// `isobar serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// World config (TOML). Applied at start; its optional `[server]` table sets defaults
    /// for the flags below.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Roles to run, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<Role>,
    /// Store URL: `sqlite://FILE` (default `sqlite://isobar.db`) or `postgres://...`.
    #[arg(long, env = "ISOBAR_DB")]
    pub db: Option<String>,
    /// DNS listen address, UDP and TCP [default: 127.0.0.1:5353].
    #[arg(long)]
    pub dns: Option<SocketAddr>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long)]
    pub grpc: Option<SocketAddr>,
    /// Scheduler URL for frontends and prober when this process does not run the scheduler.
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Bearer token required by (and sent to) the scheduler's gRPC services.
    #[arg(long, env = "ISOBAR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// GeoIP database (GeoLite2-City, DB-IP City Lite, or any City-shaped MMDB).
    #[arg(long)]
    pub geoip: Option<PathBuf>,
    /// ASN database (GeoLite2-ASN, GeoIP2-ISP, or any MMDB with `autonomous_system_number`),
    /// for client groups that list `asns`.
    #[arg(long)]
    pub asn_db: Option<PathBuf>,
    /// Where frontends persist their last good snapshot [default: .isobar].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// This node's name (prober vantage, frontend name) [default: local].
    #[arg(long)]
    pub node: Option<String>,
    /// DNS response rate limit per client prefix (/24, /56), responses/s; 0 = off [default: 0].
    #[arg(long)]
    pub dns_rrl_rate: Option<u32>,
    /// Every Nth rate-limited response is sent truncated instead of dropped [default: 2].
    #[arg(long)]
    pub dns_rrl_slip: Option<u32>,
    /// Open DNS TCP connections at most [default: 256].
    #[arg(long)]
    pub dns_max_tcp: Option<usize>,
    /// Run the UDP echo responder here (prober role), for other PoPs' mesh probes.
    #[arg(long)]
    pub echo_listen: Option<SocketAddr>,
    /// Run the node load agent (prober role), reading the operator load figure from this file.
    #[arg(long)]
    pub load_file: Option<PathBuf>,
    /// Run the node load agent (prober role), accepting `PUT /load` figures here.
    #[arg(long)]
    pub load_listen: Option<SocketAddr>,
    /// Serve gRPC over TLS with this certificate chain (PEM); needs --grpc-tls-key.
    #[arg(long)]
    pub grpc_tls_cert: Option<PathBuf>,
    /// The gRPC listener's private key (PEM).
    #[arg(long)]
    pub grpc_tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA bundle (mTLS).
    #[arg(long)]
    pub grpc_tls_client_ca: Option<PathBuf>,
    /// CA bundle (PEM) the frontends and prober trust for an `https://` scheduler.
    #[arg(long, env = "ISOBAR_CA")]
    pub scheduler_ca: Option<PathBuf>,
    /// Client certificate (PEM) the frontends and prober present to an mTLS scheduler.
    #[arg(long)]
    pub scheduler_client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    pub scheduler_client_key: Option<PathBuf>,
    /// Seconds between the frontends' demand reports, 1..=120 [default: 10].
    #[arg(long)]
    pub demand_interval: Option<u64>,
    /// Serve HTTP (HTTPDNS, DoH) over TLS with this certificate chain (PEM); needs
    /// --http-tls-key. ALPN offers h2 and http/1.1.
    #[arg(long)]
    pub http_tls_cert: Option<PathBuf>,
    /// The HTTP listener's private key (PEM).
    #[arg(long)]
    pub http_tls_key: Option<PathBuf>,
}

/// `isobar demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Working directory for the demo's database, GeoIP file and config
    /// [default: $TMPDIR/isobar-demo]. Its database is recreated at every start.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// DNS listen address.
    #[arg(long, default_value = "127.0.0.1:5353")]
    pub dns: SocketAddr,
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc: SocketAddr,
    /// Use this GeoIP database instead of the demo's own (e.g. a real GeoLite2-City).
    #[arg(long)]
    pub geoip: Option<PathBuf>,
}

/// `isobar apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The world config to apply.
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Show the diff without applying.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply directly to this store instead of through a running scheduler (a running
    /// scheduler picks the change up within seconds).
    #[arg(long, env = "ISOBAR_DB")]
    pub db: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `isobar place`.
#[derive(Debug, Args)]
pub struct PlaceArgs {
    /// Service (GSLB name).
    #[arg(long)]
    pub service: String,
    /// Replicas wanted.
    #[arg(long)]
    pub replicas: u32,
    /// Regions allowed to hold replicas (repeat or comma-separate); none = any.
    #[arg(long = "allowed-region", value_delimiter = ',')]
    pub allowed_regions: Vec<String>,
    /// Regions where the users are; none = the service's configured demand.
    #[arg(long = "demand-region", value_delimiter = ',')]
    pub demand_regions: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A command about one service.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Service (GSLB name).
    #[arg(long)]
    pub service: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `isobar watch-placement`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only this service.
    #[arg(long, default_value = "")]
    pub service: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The `[server]` table of a config file: defaults for `isobar serve` flags. Never stored.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    roles: Option<Vec<Role>>,
    db: Option<String>,
    dns: Option<SocketAddr>,
    http: Option<SocketAddr>,
    grpc: Option<SocketAddr>,
    scheduler: Option<String>,
    token: Option<String>,
    geoip: Option<PathBuf>,
    asn_db: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    node: Option<String>,
    dns_rrl_rate: Option<u32>,
    dns_rrl_slip: Option<u32>,
    dns_max_tcp: Option<usize>,
    grpc_tls_cert: Option<PathBuf>,
    grpc_tls_key: Option<PathBuf>,
    grpc_tls_client_ca: Option<PathBuf>,
    scheduler_ca: Option<PathBuf>,
    scheduler_client_cert: Option<PathBuf>,
    scheduler_client_key: Option<PathBuf>,
    demand_interval: Option<u64>,
    http_tls_cert: Option<PathBuf>,
    http_tls_key: Option<PathBuf>,
}

/// Reads a config file and every zone file it names, for sending to a scheduler.
/// Fails with file, line and field when the config is invalid.
pub fn read_config_bundle(
    path: &Path,
) -> anyhow::Result<(String, String, BTreeMap<String, String>)> {
    let parsed = isobar_store::config::load_world_file(path)?;
    let toml =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((path.display().to_string(), toml, parsed.files))
}

/// Builds serve options from flags, the config's `[server]` table and defaults, in that order.
pub fn serve_options(args: ServeArgs) -> anyhow::Result<ServeOptions> {
    let section: ServerSection = match &args.config {
        Some(path) => match isobar_store::config::load_world_file(path)?.server {
            Some(table) => table.try_into().map_err(|e: toml::de::Error| {
                anyhow::anyhow!("{}: [server]: {}", path.display(), e.message())
            })?,
            None => ServerSection::default(),
        },
        None => ServerSection::default(),
    };
    let defaults = ServeOptions::default();
    let roles: BTreeSet<Role> = if args.roles.is_empty() {
        section
            .roles
            .map_or(defaults.roles.clone(), |r| r.into_iter().collect())
    } else {
        args.roles.into_iter().collect()
    };
    Ok(ServeOptions {
        roles,
        db: args.db.or(section.db).unwrap_or(defaults.db),
        config: args.config,
        dns: args.dns.or(section.dns).unwrap_or(defaults.dns),
        http: args.http.or(section.http).unwrap_or(defaults.http),
        grpc: args.grpc.or(section.grpc).unwrap_or(defaults.grpc),
        scheduler_url: args.scheduler.or(section.scheduler),
        token: args.token.or(section.token),
        geoip: args.geoip.or(section.geoip),
        asn_db: args.asn_db.or(section.asn_db),
        data_dir: args
            .data_dir
            .or(section.data_dir)
            .unwrap_or(defaults.data_dir),
        node_name: args.node.or(section.node).unwrap_or(defaults.node_name),
        echo_listen: args.echo_listen,
        tls: crate::app::TlsOptions {
            grpc_cert: args.grpc_tls_cert.or(section.grpc_tls_cert),
            grpc_key: args.grpc_tls_key.or(section.grpc_tls_key),
            grpc_client_ca: args.grpc_tls_client_ca.or(section.grpc_tls_client_ca),
            scheduler_ca: args.scheduler_ca.or(section.scheduler_ca),
            client_cert: args.scheduler_client_cert.or(section.scheduler_client_cert),
            client_key: args.scheduler_client_key.or(section.scheduler_client_key),
            http_cert: args.http_tls_cert.or(section.http_tls_cert),
            http_key: args.http_tls_key.or(section.http_tls_key),
        },
        demand_interval: match args.demand_interval.or(section.demand_interval) {
            Some(secs @ 1..=120) => std::time::Duration::from_secs(secs),
            Some(other) => anyhow::bail!("demand_interval must be 1..=120 seconds, got {other}"),
            None => defaults.demand_interval,
        },
        load_agent: (args.load_file.is_some() || args.load_listen.is_some()).then(|| {
            isobar_prober::LoadAgentConfig {
                custom_file: args.load_file.clone(),
                custom_listen: args.load_listen,
                ..Default::default()
            }
        }),
        dns_limits: isobar_dns::DnsLimits {
            max_tcp_connections: (args.dns_max_tcp.or(section.dns_max_tcp))
                .unwrap_or(defaults.dns_limits.max_tcp_connections),
            rrl: isobar_dns::RrlLimits {
                responses_per_second: (args.dns_rrl_rate.or(section.dns_rrl_rate))
                    .unwrap_or(defaults.dns_limits.rrl.responses_per_second),
                slip: (args.dns_rrl_slip.or(section.dns_rrl_slip))
                    .unwrap_or(defaults.dns_limits.rrl.slip),
                ..defaults.dns_limits.rrl
            },
            ..defaults.dns_limits
        },
    })
}

/// Attaches the bearer token and the caller's name to every request.
#[derive(Clone)]
pub struct ClientAuth {
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for ClientAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        if let Ok(user) = std::env::var("USER")
            .unwrap_or_else(|_| "cli".into())
            .parse()
        {
            request.metadata_mut().insert("x-isobar-actor", user);
        }
        Ok(request)
    }
}

async fn channel(args: &ClientArgs) -> anyhow::Result<(Channel, ClientAuth)> {
    let mut endpoint = Channel::from_shared(args.server.clone())
        .with_context(|| format!("invalid --server {}", args.server))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if args.server.starts_with("https://") {
        let tls = isobar_scheduler::grpc::tls::client_tls(
            args.scheduler_ca.as_deref(),
            args.client_cert.as_deref(),
            args.client_key.as_deref(),
        )?;
        endpoint = endpoint.tls_config(tls).context("TLS settings")?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to scheduler {}", args.server))?;
    let token = match args.token.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .context("token must be printable ASCII")?,
        ),
        None => None,
    };
    Ok((channel, ClientAuth { token }))
}

async fn admin(
    args: &ClientArgs,
) -> anyhow::Result<AdminClient<InterceptedService<Channel, ClientAuth>>> {
    let (channel, auth) = channel(args).await?;
    Ok(AdminClient::with_interceptor(channel, auth).max_decoding_message_size(64 << 20))
}

/// An admin client for `args` (used by the subcommands in other modules).
pub(crate) async fn admin_client(
    args: &ClientArgs,
) -> anyhow::Result<AdminClient<InterceptedService<Channel, ClientAuth>>> {
    admin(args).await
}

async fn placement(
    args: &ClientArgs,
) -> anyhow::Result<PlacementClient<InterceptedService<Channel, ClientAuth>>> {
    let (channel, auth) = channel(args).await?;
    Ok(PlacementClient::with_interceptor(channel, auth))
}

pub(crate) fn grpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

/// `isobar apply`.
pub async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let (source, toml, files) = read_config_bundle(&args.file)?;
    let (changed, version, diff) = if let Some(db) = &args.db {
        let parsed = isobar_store::config::load_world_file(&args.file)?;
        let store = isobar_store::Store::open(db).await?;
        let outcome = store
            .apply_world(&parsed.world, &actor_name(), args.dry_run)
            .await?;
        store.close().await;
        (
            outcome.changed,
            outcome.config_version,
            outcome.changes.iter().map(ToString::to_string).collect(),
        )
    } else {
        let resp = admin(&args.client)
            .await?
            .apply_config(ApplyConfigRequest {
                source_name: source,
                toml,
                files: files.into_iter().collect(),
                dry_run: args.dry_run,
                actor: actor_name(),
            })
            .await
            .map_err(grpc_error)?
            .into_inner();
        (resp.changed, resp.config_version, resp.diff)
    };
    for line in &diff {
        println!("{line}");
    }
    match (args.dry_run, diff.is_empty(), changed) {
        (_, true, _) => println!("no changes (config version {version})"),
        (true, false, _) => println!(
            "dry run: {} change(s) not applied (config version {version})",
            diff.len()
        ),
        (false, false, _) => println!("applied {} change(s): config version {version}", diff.len()),
    }
    Ok(())
}

pub(crate) fn actor_name() -> String {
    format!(
        "{}@cli",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

/// `isobar export`.
pub async fn export(args: ClientArgs) -> anyhow::Result<()> {
    let resp = admin(&args)
        .await?
        .export_config(ExportConfigRequest {})
        .await
        .map_err(grpc_error)?
        .into_inner();
    print!("{}", resp.toml);
    Ok(())
}

/// `isobar state`.
pub async fn state(args: ClientArgs) -> anyhow::Result<()> {
    let state = admin(&args)
        .await?
        .get_state(GetStateRequest {})
        .await
        .map_err(grpc_error)?
        .into_inner();
    println!(
        "config version {}, snapshot version {}",
        state.config_version, state.snapshot_version
    );
    for t in state.targets {
        println!("{:<6} {:<32} {}", t.state, t.target_id, t.reason);
    }
    Ok(())
}

/// Prints a decision as a small table.
pub fn print_decision(d: &PlacementDecision) {
    println!(
        "{} (version {}): {} of {} replicas placed",
        d.service, d.version, d.placed, d.requested
    );
    for site in &d.sites {
        println!(
            "  {:<8} {:>4}  weight {:.2}  group {:<6} {}",
            site.site, site.replicas, site.weight, site.group, site.reason
        );
    }
    for c in &d.conditions {
        println!("  condition {}: {}", c.r#type, c.message);
    }
}

/// `isobar place`.
pub async fn place(args: PlaceArgs) -> anyhow::Result<()> {
    let policy = PlacementPolicy {
        replicas: args.replicas,
        allowed_regions: args.allowed_regions,
        demand_regions: args.demand_regions,
        ..Default::default()
    };
    let d = placement(&args.client)
        .await?
        .place(PlaceRequest {
            service: args.service,
            policy: Some(policy),
        })
        .await
        .map_err(grpc_error)?
        .into_inner();
    print_decision(&d);
    Ok(())
}

/// `isobar get-placement`.
pub async fn get_placement(args: ServiceArgs) -> anyhow::Result<()> {
    let d = placement(&args.client)
        .await?
        .get_placement(GetPlacementRequest {
            service: args.service,
        })
        .await
        .map_err(grpc_error)?
        .into_inner();
    print_decision(&d);
    Ok(())
}

/// `isobar watch-placement`.
pub async fn watch_placement(args: WatchArgs) -> anyhow::Result<()> {
    let mut stream = placement(&args.client)
        .await?
        .watch_placement(WatchPlacementRequest {
            service: args.service,
        })
        .await
        .map_err(grpc_error)?
        .into_inner();
    while let Some(item) = stream.next().await {
        print_decision(&item.map_err(grpc_error)?);
    }
    bail!("the scheduler closed the stream")
}

/// `isobar release`.
pub async fn release(args: ServiceArgs) -> anyhow::Result<()> {
    placement(&args.client)
        .await?
        .release(ReleaseRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(grpc_error)?;
    println!("released {}", args.service);
    Ok(())
}
