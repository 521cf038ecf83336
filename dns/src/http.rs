//! The HTTPDNS frontend: Alibaba EMAS-shaped `GET /d` JSON answers from the same engine.
//!
//! `GET /d?host=NAME[&ip=CLIENT_IP][&query=4|6|4,6]` answers
//! `{"host", "ips", "ipsv6", "ttl", "origin_ttl", "client_ip"}`. Unknown parameters are
//! ignored. The client is `ip=` when given, else the TCP peer; it stands for the user
//! itself (like an ECS address with a full-length prefix), so the service's `use_ecs` flag,
//! which is about trusting resolvers, does not apply here.
//!
//! Names: a GSLB name gets the engine's answer. A name inside a served zone that is not a
//! GSLB name gets its static A/AAAA records, or empty lists (200) when it has none: the
//! name is ours and the honest answer is "no addresses". A name outside every zone is
//! `400 InvalidHost`: it is not ours to answer, and unlike Alibaba (which resolves any
//! public name) we never recurse.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hickory_proto::rr::{RData, RecordType};
use serde::Serialize;

use crate::engine::{ClientKey, Engine};
use crate::name::{NameKey, parse_absolute};
use crate::server::DnsStats;

/// Longest host name accepted, in presentation form without the trailing dot.
const MAX_HOST_LEN: usize = 253;

/// The HTTPDNS routes: `GET /d` and `GET /healthz`.
///
/// Serve with `into_make_service_with_connect_info::<SocketAddr>()`: the peer address is
/// the default client address.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/d", get(resolve))
        .route("/healthz", get(healthz))
        .with_state(engine)
}

/// `GET /metrics`: the DNS frontend's counters in the Prometheus text format.
pub fn metrics_router(stats: Arc<DnsStats>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let stats = Arc::clone(&stats);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    stats.render_prometheus(),
                )
            }
        }),
    )
}

/// A successful `/d` answer.
#[derive(Debug, Serialize)]
struct Resolved {
    host: String,
    ips: Vec<String>,
    ipsv6: Vec<String>,
    ttl: u32,
    origin_ttl: u32,
    client_ip: String,
}

/// An error body: `{"code": "...", "message": "..."}`.
#[derive(Debug, Serialize)]
struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

/// Which families a `/d` request asks for.
#[derive(Debug, Clone, Copy)]
struct Families {
    v4: bool,
    v6: bool,
}

fn parse_families(query: Option<&str>) -> Option<Families> {
    match query {
        None | Some("4") => Some(Families {
            v4: true,
            v6: false,
        }),
        Some("6") => Some(Families {
            v4: false,
            v6: true,
        }),
        Some("4,6" | "6,4") => Some(Families { v4: true, v6: true }),
        Some(_) => None,
    }
}

fn valid_host(host: &str) -> bool {
    let bare = host.strip_suffix('.').unwrap_or(host);
    !bare.is_empty()
        && bare.len() <= MAX_HOST_LEN
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bare
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63)
}

async fn resolve(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Resolved>, ApiError> {
    let Query(params) = params
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "InvalidQuery", e.body_text()))?;
    let host = params.get("host").map(String::as_str).unwrap_or_default();
    if !valid_host(host) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidHost",
            format!("{host:?} is not a valid host name"),
        ));
    }
    let client: IpAddr = match params.get("ip") {
        Some(ip) => ip.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidIp",
                format!("{ip:?} is not an IP address"),
            )
        })?,
        None => peer.ip().to_canonical(),
    };
    let families = parse_families(params.get("query").map(String::as_str)).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidQuery",
            "query must be 4, 6 or 4,6",
        )
    })?;

    let snapshot = engine.current();
    if snapshot.version() == 0 {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NotReady",
            "no steering snapshot received yet",
        ));
    }
    let Some(key) = parse_absolute(host).as_ref().and_then(NameKey::new) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidHost",
            format!("{host:?} is not a valid host name"),
        ));
    };
    let Some(zone) = snapshot.find_zone(&key) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidHost",
            format!("{host} is not in any zone served here"),
        ));
    };

    let mut out = Resolved {
        host: host.to_owned(),
        ips: Vec::new(),
        ipsv6: Vec::new(),
        ttl: 0,
        origin_ttl: 0,
        client_ip: client.to_string(),
    };
    if let Some(service) = snapshot.find_service(&key) {
        let answer = engine.select(&snapshot, service, ClientKey::from_addr(client));
        if families.v4 {
            out.ips = answer.ipv4().iter().map(ToString::to_string).collect();
        }
        if families.v6 {
            out.ipsv6 = answer.ipv6().iter().map(ToString::to_string).collect();
        }
        out.ttl = answer.ttl();
    } else {
        // Static records: the smallest TTL among what is returned; the negative-caching
        // TTL of the zone when nothing is.
        let mut ttl: Option<u32> = None;
        for (wanted, rtype) in [
            (families.v4, RecordType::A),
            (families.v6, RecordType::AAAA),
        ] {
            if !wanted {
                continue;
            }
            let Some(records) = zone.static_records(&key, rtype) else {
                continue;
            };
            for record in records {
                match &record.data {
                    RData::A(a) => out.ips.push(a.0.to_string()),
                    RData::AAAA(aaaa) => out.ipsv6.push(aaaa.0.to_string()),
                    // A CNAME: not chased, so no address to give.
                    _ => continue,
                }
                ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
            }
        }
        out.ttl = ttl.unwrap_or_else(|| zone.negative_ttl());
    }
    out.origin_ttl = out.ttl;
    Ok(Json(out))
}

#[derive(Debug, Serialize)]
struct Health {
    snapshot_version: u64,
}

async fn healthz(State(engine): State<Arc<Engine>>) -> (StatusCode, Json<Health>) {
    let version = engine.version();
    let status = if version == 0 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(Health {
            snapshot_version: version,
        }),
    )
}
