//! HTTPDNS for mobile SDKs: the Alibaba EMAS dialect per account, rate limits, access logs
//! and metrics, served over HTTP/1.1, HTTP/2 (h2c) and TLS.
//!
//! Routes ([`HttpdnsFrontend::router`]):
//!
//! - `GET /{account}/d?host=H[&ip=][&query=4|6|4,6][&did=]` — one host.
//! - `GET /{account}/resolve?host=a,b,...` (≤ 5 hosts) or `?host=a&ip=x,y,...` (≤ 5 client
//!   addresses), not both → `{"dns":[{host, client_ip, ips, type: 1|28, ttl, origin_ttl}]}`.
//! - `GET /{account}/sign_d`, `/{account}/sign_resolve`: the same with `t` (expiry, Unix
//!   seconds, ≤ 24 h ahead) and `s = md5_hex(host + "-" + secret + "-" + t)` ([`sign`]).
//! - `GET /{account}/ss?region=R` → `{"service_ip":[...],"service_ipv6":[...]}`: the HTTPDNS
//!   frontends' own addresses for a region, from the world's `[[httpdns.service_ips]]`.
//! - `GET /d` — the account-less path the frontend always had: unsigned, full TTL.
//!
//! A device id (`did=` or the `X-Device-Id` header) replaces the address as the
//! consistent-hashing and gray-cohort key. Errors are `{"code","message"}` with the codes and
//! statuses the SDK acts on ([`metrics::Code::status`]); successes carry
//! `Cache-Control: max-age=<ttl>`, errors `no-store`, 429s `Retry-After`.
//!
//! Accounts, service IPs and limits come only from the pushed snapshot; the per-snapshot
//! [`index::Index`] is rebuilt when the version changes. Rate-limit state lives here, in
//! bounded tables ([`limits`]), and survives snapshot swaps.

pub mod access_log;
pub mod alibaba;
pub mod h1;
pub mod h2;
pub mod index;
pub mod limits;
pub mod metrics;
pub mod query;
pub mod serve;
pub mod sign;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;

use crate::engine::Engine;
use crate::snapshot::ServingSnapshot;
use alibaba::Reply;
use index::Index;
use limits::{ACCOUNT_SLOTS, CLIENT_SLOTS, RateTable};
pub use metrics::{Code, Endpoint, HttpdnsMetrics};

/// The request header that may carry a device id.
pub const DEVICE_HEADER: &str = "x-device-id";

/// The HTTPDNS frontend: the engine, the per-snapshot index, rate limits and counters.
#[derive(Debug)]
pub struct HttpdnsFrontend {
    engine: Arc<Engine>,
    index: ArcSwap<Index>,
    clients: RateTable,
    accounts: RateTable,
    metrics: HttpdnsMetrics,
    epoch: Instant,
}

impl HttpdnsFrontend {
    /// A frontend answering from `engine`.
    pub fn new(engine: Arc<Engine>) -> Arc<Self> {
        let index = Index::build(&engine.current());
        Arc::new(Self {
            engine,
            index: ArcSwap::from_pointee(index),
            clients: RateTable::new(CLIENT_SLOTS),
            accounts: RateTable::new(ACCOUNT_SLOTS),
            metrics: HttpdnsMetrics::default(),
            epoch: Instant::now(),
        })
    }

    /// The request counters (for `GET /metrics`).
    pub fn metrics(&self) -> &HttpdnsMetrics {
        &self.metrics
    }

    /// The HTTPDNS index of `snapshot` (built on first use after a swap).
    pub fn index_for(&self, snapshot: &ServingSnapshot) -> Arc<Index> {
        let current = self.index.load_full();
        if current.version == snapshot.version() {
            return current;
        }
        let built = Arc::new(Index::build(snapshot));
        self.index.store(Arc::clone(&built));
        built
    }

    /// The routes: `/d` and `/{account}/{d,resolve,sign_d,sign_resolve,ss}`. Serve with
    /// connect info (`ConnectInfo<SocketAddr>`), as [`serve::serve`] and
    /// `into_make_service_with_connect_info` do.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/d", get(legacy_d))
            .route("/{account}/d", get(d))
            .route("/{account}/resolve", get(resolve))
            .route("/{account}/sign_d", get(sign_d))
            .route("/{account}/sign_resolve", get(sign_resolve))
            .route("/{account}/ss", get(ss))
            .with_state(Arc::clone(self))
    }

    /// Serves one request from the router. `account` is `None` on the unprefixed `/d`.
    fn handle(&self, endpoint: Endpoint, account: Option<&str>, req: &Request) -> Response {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let device_header = req
            .headers()
            .get(DEVICE_HEADER)
            .map(|v| v.to_str().unwrap_or("\u{0}"));
        let query = req.uri().query().unwrap_or_default();
        into_response(self.answer(endpoint, account, peer, query, device_header))
    }

    /// Answers one request, whichever HTTP code path carried it (the router, or
    /// [`h1`]'s fast path): rate limits, the answer, its counter and its access log.
    /// `account` is `None` on the unprefixed `/d`; `query` is the raw query string;
    /// `device_header` the `X-Device-Id` value (`"\0"` when it is not visible ASCII).
    pub(crate) fn answer(
        &self,
        endpoint: Endpoint,
        account: Option<&str>,
        peer: IpAddr,
        query: &str,
        device_header: Option<&str>,
    ) -> Reply {
        let started = Instant::now();
        let peer = peer.to_canonical();
        let now_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let request = alibaba::Request {
            endpoint,
            account,
            peer,
            query,
            device_header,
            now_ms: started.duration_since(self.epoch).as_millis() as u64,
            now_unix_ms,
        };
        let snapshot = self.engine.current();
        let index = self.index_for(&snapshot);
        let (reply, host) = alibaba::serve(self, &self.engine, &snapshot, &index, &request);
        self.metrics.record(endpoint, reply.code);
        access_log::log(
            account.unwrap_or_default(),
            endpoint,
            host.as_deref().unwrap_or_default(),
            peer,
            reply.code,
            started.elapsed().as_micros() as u64,
        );
        reply
    }
}

fn into_response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let cache = if reply.code == Code::Ok {
        HeaderValue::from_str(&format!("max-age={}", reply.max_age))
    } else {
        Ok(HeaderValue::from_static("no-store"))
    };
    if let Ok(cache) = cache {
        headers.insert(header::CACHE_CONTROL, cache);
    }
    if reply.retry_after > 0 {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(reply.retry_after));
    }
    response
}

/// The account segment of `/{account}/...`.
fn account_of(req: &Request) -> &str {
    let path = req.uri().path().trim_start_matches('/');
    path.split_once('/').map_or(path, |(account, _)| account)
}

async fn legacy_d(State(f): State<Arc<HttpdnsFrontend>>, req: Request) -> Response {
    f.handle(Endpoint::D, None, &req)
}

async fn d(State(f): State<Arc<HttpdnsFrontend>>, req: Request) -> Response {
    f.handle(Endpoint::D, Some(account_of(&req)), &req)
}

async fn resolve(State(f): State<Arc<HttpdnsFrontend>>, req: Request) -> Response {
    f.handle(Endpoint::Resolve, Some(account_of(&req)), &req)
}

async fn sign_d(State(f): State<Arc<HttpdnsFrontend>>, req: Request) -> Response {
    f.handle(Endpoint::SignD, Some(account_of(&req)), &req)
}

async fn sign_resolve(State(f): State<Arc<HttpdnsFrontend>>, req: Request) -> Response {
    f.handle(Endpoint::SignResolve, Some(account_of(&req)), &req)
}

async fn ss(State(f): State<Arc<HttpdnsFrontend>>, req: Request) -> Response {
    f.handle(Endpoint::Ss, Some(account_of(&req)), &req)
}
