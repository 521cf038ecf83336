//! The frontend's HTTP routes: `/healthz`, HTTPDNS ([`crate::httpdns`]: the account-less
//! `/d` and the Alibaba dialect under `/{account}/`), DoH ([`crate::doh`]) and `/metrics`.
//!
//! HTTPDNS answers come from the same engine as DNS. The client is `ip=` when given, else the
//! TCP peer; it stands for the user itself (like an ECS address with a full-length prefix),
//! so the service's `use_ecs` flag, which is about trusting resolvers, does not apply. A GSLB
//! name gets the engine's answer; another name inside a served zone its static A/AAAA
//! records (empty lists when it has none); a name outside every zone is `400 InvalidHost`:
//! unlike Alibaba (which resolves any public name) we never recurse.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;

use crate::engine::Engine;
use crate::httpdns::HttpdnsFrontend;
use crate::server::DnsStats;

/// The HTTP routes: `GET /healthz`, HTTPDNS (`/d`, `/{account}/...`), and DNS over HTTPS
/// ([`crate::doh::router`]: `/dns-query`, `/resolve`).
///
/// Serve with `into_make_service_with_connect_info::<SocketAddr>()`: the peer address is
/// the default client address.
pub fn router(engine: Arc<Engine>) -> Router {
    let httpdns = HttpdnsFrontend::new(Arc::clone(&engine));
    router_with(engine, &httpdns)
}

/// [`router`] with a given HTTPDNS frontend (whose counters the caller exposes on
/// `/metrics`): `/healthz`, the HTTPDNS routes ([`HttpdnsFrontend::router`]) and DoH.
pub fn router_with(engine: Arc<Engine>, httpdns: &Arc<HttpdnsFrontend>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(Arc::clone(&engine))
        .merge(httpdns.router())
        .merge(crate::doh::router(engine))
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
