//! The HTTPDNS view of one snapshot: accounts by id, `ss` bodies by region, rate limits.
//!
//! Built once per snapshot version (the first request after an install builds it), so the
//! request path does one map lookup per account and none for the limits.

use std::collections::HashMap;

use isobar_proto::v1::RateLimit;

use super::limits::Limit;
use crate::snapshot::ServingSnapshot;

/// Per client address when the snapshot carries no settings (the world's defaults).
pub const DEFAULT_PER_CLIENT: Limit = Limit {
    rate: 100,
    burst: 200,
};
/// Per account when the snapshot carries no settings (the world's defaults).
pub const DEFAULT_PER_ACCOUNT: Limit = Limit {
    rate: 10_000,
    burst: 20_000,
};

/// One account as the request path needs it.
#[derive(Debug, Clone)]
pub struct Account {
    /// Signing secret; empty = signed interfaces refused.
    pub secret: String,
    /// Whether `d` and `resolve` answer without a signature.
    pub unsigned_allowed: bool,
}

/// The HTTPDNS index of one snapshot version.
#[derive(Debug)]
pub struct Index {
    /// The snapshot version it was built from.
    pub version: u64,
    /// Accounts by id.
    pub accounts: HashMap<String, Account>,
    /// `ss` response bodies by region.
    pub service_ips: HashMap<String, String>,
    /// Per client address.
    pub per_client: Limit,
    /// Per account.
    pub per_account: Limit,
}

impl Index {
    /// The index of `snapshot`. Duplicate account ids (which the store's validation rules
    /// out) resolve to the last one.
    pub fn build(snapshot: &ServingSnapshot) -> Self {
        let accounts = snapshot
            .accounts()
            .iter()
            .map(|a| {
                (
                    a.id.clone(),
                    Account {
                        secret: a.secret.clone(),
                        unsigned_allowed: a.unsigned_allowed,
                    },
                )
            })
            .collect();
        let settings = snapshot.httpdns();
        let limit = |l: Option<RateLimit>, default: Limit| {
            l.map_or(default, |l| Limit {
                rate: l.rate,
                burst: l.burst,
            })
        };
        let service_ips = settings
            .map(|s| {
                s.service_ips
                    .iter()
                    .map(|e| {
                        let body = serde_json::json!({
                            "service_ip": e.ipv4,
                            "service_ipv6": e.ipv6,
                        });
                        (e.region.clone(), body.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            version: snapshot.version(),
            accounts,
            service_ips,
            per_client: limit(settings.and_then(|s| s.per_client), DEFAULT_PER_CLIENT),
            per_account: limit(settings.and_then(|s| s.per_account), DEFAULT_PER_ACCOUNT),
        }
    }
}
