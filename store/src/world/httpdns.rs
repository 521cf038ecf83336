//! The HTTPDNS part of the world: accounts (`[[accounts]]`) and serving settings (`[httpdns]`).

use serde::{Deserialize, Serialize};

/// An HTTPDNS account of the Alibaba dialect: clients call `/{id}/d`, `/{id}/sign_d`, ...
///
/// The secret is part of the world, so `isobar export` writes it: an export must apply back
/// as a no-op. Treat exported files like the config they came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpdnsAccount {
    /// Account id, `[A-Za-z0-9_-]{1,64}` (Alibaba's are numeric, e.g. "100000").
    pub id: String,
    /// Signing secret for `sign_d`, `sign_resolve` and reports; empty = no signed access.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
    /// Whether the unsigned interfaces (`d`, `resolve`) answer. Default true, the way Alibaba
    /// rolls signing out: turn it off once old app versions are gone.
    #[serde(default = "default_true")]
    pub unsigned_allowed: bool,
}

/// A token bucket: `rate` requests per second, `burst` at once. `rate = 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second; 0 = unlimited.
    pub rate: u32,
    /// Bucket size: requests allowed at once after a quiet period (≥ 1 when `rate` > 0).
    pub burst: u32,
}

/// The addresses of the HTTPDNS frontends serving one region, answered by `/{id}/ss`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceIps {
    /// A region name from `[[regions]]`.
    pub region: String,
    /// IPv4 addresses of the frontends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv4: Vec<String>,
    /// IPv6 addresses of the frontends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6: Vec<String>,
}

/// `[httpdns]`: HTTPDNS serving settings. Limits apply per frontend process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpdnsSettings {
    /// Per client address (IPv6: per /64). Default 100/s, burst 200: generous, because
    /// carrier-grade NAT puts many phones behind one address.
    #[serde(default = "default_per_client")]
    pub per_client: RateLimit,
    /// Per account. Default 10000/s, burst 20000.
    #[serde(default = "default_per_account")]
    pub per_account: RateLimit,
    /// The frontends' own addresses per region (`/ss?region=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_ips: Vec<ServiceIps>,
}

impl Default for HttpdnsSettings {
    fn default() -> Self {
        Self {
            per_client: default_per_client(),
            per_account: default_per_account(),
            service_ips: Vec::new(),
        }
    }
}

impl HttpdnsSettings {
    /// Whether these are the defaults (then `[httpdns]` is left out of an export).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_true() -> bool {
    true
}

fn default_per_client() -> RateLimit {
    RateLimit {
        rate: 100,
        burst: 200,
    }
}

fn default_per_account() -> RateLimit {
    RateLimit {
        rate: 10_000,
        burst: 20_000,
    }
}
