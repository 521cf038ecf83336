//! The world: Isobar's declarative configuration model.
//!
//! One `World` is what a `world.toml` describes and what the store keeps: zones, regions,
//! PoPs, services with their endpoints, client-group overrides and global settings. It is
//! plain data; parsing lives in [`crate::config`], persistence in [`crate::Store`].
//!
//! Every collection is kept sorted by name (see [`World::normalize`]) so that two worlds
//! describing the same thing compare equal and export identically.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod httpdns;
mod steering;
pub use httpdns::{HttpdnsAccount, HttpdnsSettings, RateLimit, ServiceIps};
pub use steering::{AllDown, Cohort, CostWeights, Gray, Guard, RampStep, Steering, Verdict};

/// The whole declarative configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    /// Defaults applied to services that do not set their own values.
    #[serde(default)]
    pub defaults: Defaults,
    /// Probe and health settings.
    #[serde(default)]
    pub health: HealthSettings,
    /// Named geographic regions (client demand areas, PoP grouping).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<Region>,
    /// Points of presence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pops: Vec<Pop>,
    /// Authoritative zones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<Zone>,
    /// GSLB names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// CIDR overrides: clients in these prefixes belong to the named group whatever GeoIP says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_groups: Vec<ClientGroup>,
    /// HTTPDNS serving settings: service IPs per region, rate limits.
    #[serde(default, skip_serializing_if = "HttpdnsSettings::is_default")]
    pub httpdns: HttpdnsSettings,
    /// HTTPDNS accounts (`/{id}/d`), with their signing secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<HttpdnsAccount>,
}

/// Service defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// TTL of GSLB answers, seconds.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Addresses per answer (per address family).
    #[serde(default = "default_answers")]
    pub answers: u32,
    /// Where clients whose location is unknown are assumed to be. When unset they get the
    /// PoPs in name order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Size of the geographic grid cells clients are grouped into, degrees.
    #[serde(default = "default_cell_degrees")]
    pub cell_degrees: f64,
}

/// Probe and health settings. A target goes down after `fall` consecutive failed probes and
/// comes back up after `rise` consecutive successful ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Probe interval, milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u32,
    /// Probe timeout, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Consecutive failures that take an up target down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Consecutive successes that bring a down target up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Down votes that take a target down; 0 means a strict majority of the vantages reporting.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub quorum: u32,
    /// A vantage's view of a target older than this no longer votes, milliseconds; 0 means
    /// four probe intervals, at least 3 s.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stale_ms: u32,
    /// A vantage that sees more than this percentage of its targets down while most of its
    /// peers do not is judged broken itself, and its votes are set aside.
    #[serde(
        default = "default_broken_vantage_percent",
        skip_serializing_if = "is_default_broken_vantage_percent"
    )]
    pub broken_vantage_percent: u32,
    /// Flap damping: a target that went down this many times in quick succession (each down
    /// counts 1 and the count halves every `flap_half_life_ms`) is held down until it is
    /// stable again. 0 disables damping.
    #[serde(
        default = "default_flap_suppress",
        skip_serializing_if = "is_default_flap_suppress"
    )]
    pub flap_suppress: u32,
    /// Half-life of the flap count, milliseconds.
    #[serde(
        default = "default_flap_half_life_ms",
        skip_serializing_if = "is_default_flap_half_life_ms"
    )]
    pub flap_half_life_ms: u32,
    /// The probe mesh: each PoP's UDP echo responder (`host:port`), probed by every other PoP's
    /// prober to measure PoP-to-PoP RTT and loss.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mesh: BTreeMap<String, String>,
    /// Landmarks standing for client regions: every prober measures them, which yields the
    /// PoP-to-region RTT and loss matrix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub landmarks: Vec<Landmark>,
}

/// A host that stands for the clients of a region in the probe mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Landmark {
    /// The region it stands for.
    pub region: String,
    /// What to probe: `host:port` (UDP echo, TCP) or an address (ICMP).
    pub address: String,
    /// How to probe it (default ICMP echo).
    #[serde(default = "default_landmark_kind")]
    pub kind: CheckKind,
    /// Probe interval, milliseconds (default `health.interval_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u32>,
    /// Probe timeout, milliseconds (default `health.timeout_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
}

/// How a target is probed.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// TCP connect to `host:port`.
    #[default]
    Tcp,
    /// HTTP GET.
    Http,
    /// HTTPS GET.
    Https,
    /// ICMP echo.
    Icmp,
    /// A DNS query over UDP.
    Dns,
    /// Isobar's UDP echo probe, answered by the responder that ships with the prober.
    UdpEcho,
}

/// Per-endpoint probe settings beyond the `check` address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    /// How to probe (default TCP connect).
    #[serde(default)]
    pub kind: CheckKind,
    /// Probe interval, milliseconds (default `health.interval_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u32>,
    /// Probe timeout, milliseconds (default `health.timeout_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// Kind-specific settings: HTTP `path`, `host`, `sni`, `expect_status`, `body`,
    /// `header.<name>`; DNS `name`, `type`, `expect_rcode`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

/// A latitude/longitude pair, degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Latitude, -90..=90.
    pub lat: f64,
    /// Longitude, -180..=180.
    pub lon: f64,
}

/// A named geographic region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Unique name, e.g. "eu".
    pub name: String,
    /// Latitude of the region's centre of demand.
    pub lat: f64,
    /// Longitude of the region's centre of demand.
    pub lon: f64,
}

/// A point of presence: a site that hosts endpoints and replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pop {
    /// Unique name, e.g. "fra1".
    pub name: String,
    /// The region it belongs to (must be declared in `regions`).
    pub region: String,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Request capacity, queries or requests per second (steering).
    #[serde(default)]
    pub capacity: u64,
    /// How many service replicas the PoP can hold (placement).
    #[serde(default)]
    pub replica_slots: u32,
    /// Free-form labels (provider, tier, zone, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// PoPs sharing a failure domain (power, network, metro) fail together: answer
    /// fallbacks come from another domain first. Unset = the PoP is its own domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
}

/// An authoritative zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// Absolute origin with the trailing dot, lowercase, e.g. "demo.isobar.test.".
    pub name: String,
    /// An RFC 1035 master file to read the records from, relative to the config file.
    /// After parsing the records are held inline and this is cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Records in master-file syntax, one per entry. After parsing each entry is canonical:
    /// `<absolute owner> <ttl> IN <TYPE> <rdata>`, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<String>,
}

/// A GSLB name and how to answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Absolute name with the trailing dot, lowercase, inside one of the zones.
    pub name: String,
    /// Answer TTL, seconds (default: `defaults.ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// Addresses per answer and family (default: `defaults.answers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<u32>,
    /// Steer on EDNS Client Subnet when present (default true).
    #[serde(default = "default_true")]
    pub ecs: bool,
    /// Regions where this service's users are (placement demand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub demand: Vec<String>,
    /// The addresses that can answer for this name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// Capacity model, cost weights, guardrails and all-down policy.
    #[serde(default, skip_serializing_if = "Steering::is_default")]
    pub steering: Steering,
    /// A gray (canary) rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gray: Option<Gray>,
}

/// One address that can answer for a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The PoP it lives in.
    pub pop: String,
    /// The IPv4 or IPv6 address handed to clients.
    pub address: String,
    /// TCP health-check target `host:port`. When unset the endpoint is never probed and
    /// counts as up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// How `check` is probed; without it, TCP connect with the `[health]` timing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeSpec>,
    /// Relative weight inside its PoP (default 100).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Free-form labels (e.g. version = "v2").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Queries per second this endpoint can take (steering capacity); unset = the PoP's
    /// `capacity` bounds the service there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<f64>,
}

/// A client group defined by prefixes (CIDR overrides), AS numbers, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientGroup {
    /// Unique name.
    pub name: String,
    /// Prefixes whose clients belong to this group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<String>,
    /// Autonomous system numbers whose clients belong to this group, as the frontends' ASN
    /// database (`--asn-db`) maps client addresses. A matching prefix of any group wins over
    /// an AS number, so a CIDR override can carve an exception out of an ASN group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub asns: Vec<u32>,
    /// The region whose centre stands for these clients' location.
    pub region: String,
    /// Declared demand, queries per second: a floor under the rate the frontends observe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand: Option<f64>,
}

// === impl World ===

impl World {
    /// Sorts every collection so equal worlds compare and serialize identically.
    pub fn normalize(&mut self) {
        self.regions.sort_by(|a, b| a.name.cmp(&b.name));
        self.pops.sort_by(|a, b| a.name.cmp(&b.name));
        self.zones.sort_by(|a, b| a.name.cmp(&b.name));
        for zone in &mut self.zones {
            zone.records.sort();
        }
        self.services.sort_by(|a, b| a.name.cmp(&b.name));
        for service in &mut self.services {
            service
                .endpoints
                .sort_by(|a, b| (&a.pop, &a.address).cmp(&(&b.pop, &b.address)));
        }
        self.client_groups.sort_by(|a, b| a.name.cmp(&b.name));
        self.accounts.sort_by(|a, b| a.id.cmp(&b.id));
        self.httpdns
            .service_ips
            .sort_by(|a, b| a.region.cmp(&b.region));
    }

    /// The PoP with this name.
    pub fn pop(&self, name: &str) -> Option<&Pop> {
        self.pops.iter().find(|p| p.name == name)
    }

    /// The region with this name.
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// The service with this name (absolute, lowercase).
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

// === impl Service ===

impl Service {
    /// The effective TTL.
    pub fn ttl(&self, defaults: &Defaults) -> u32 {
        self.ttl.unwrap_or(defaults.ttl)
    }

    /// The effective answer count per family.
    pub fn answers(&self, defaults: &Defaults) -> u32 {
        self.answers.unwrap_or(defaults.answers)
    }
}

// === impl Endpoint ===

impl Endpoint {
    /// The health target id probers report against (`<kind>://host:port`, e.g.
    /// `tcp://127.0.0.1:80`), if checked.
    pub fn target_id(&self) -> Option<String> {
        let kind = self.probe.as_ref().map_or(CheckKind::Tcp, |p| p.kind);
        self.check
            .as_ref()
            .map(|c| format!("{}://{c}", kind.as_str()))
    }
}

// === impl CheckKind ===

impl CheckKind {
    /// The name used in config files and target ids.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Https => "https",
            CheckKind::Icmp => "icmp",
            CheckKind::Dns => "dns",
            CheckKind::UdpEcho => "udp_echo",
        }
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            ttl: default_ttl(),
            answers: default_answers(),
            location: None,
            cell_degrees: default_cell_degrees(),
        }
    }
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            fall: default_fall(),
            rise: default_rise(),
            quorum: 0,
            stale_ms: 0,
            broken_vantage_percent: default_broken_vantage_percent(),
            flap_suppress: default_flap_suppress(),
            flap_half_life_ms: default_flap_half_life_ms(),
            mesh: BTreeMap::new(),
            landmarks: Vec::new(),
        }
    }
}

fn default_ttl() -> u32 {
    30
}
fn default_answers() -> u32 {
    2
}
fn default_cell_degrees() -> f64 {
    5.0
}
fn default_interval_ms() -> u32 {
    1000
}
fn default_timeout_ms() -> u32 {
    800
}
fn default_fall() -> u32 {
    3
}
fn default_rise() -> u32 {
    2
}
fn default_broken_vantage_percent() -> u32 {
    50
}
fn default_flap_suppress() -> u32 {
    3
}
fn default_flap_half_life_ms() -> u32 {
    60_000
}
fn default_landmark_kind() -> CheckKind {
    CheckKind::Icmp
}
fn is_zero(v: &u32) -> bool {
    *v == 0
}
fn is_default_broken_vantage_percent(v: &u32) -> bool {
    *v == default_broken_vantage_percent()
}
fn is_default_flap_suppress(v: &u32) -> bool {
    *v == default_flap_suppress()
}
fn is_default_flap_half_life_ms(v: &u32) -> bool {
    *v == default_flap_half_life_ms()
}
fn default_weight() -> u32 {
    100
}
fn default_true() -> bool {
    true
}
