//! Structured HTTPDNS access logs: one `tracing` event per request, target `isobar::access`.
//!
//! Fields: `account` (empty on the unprefixed `/d`), `path` (the endpoint), `host` (as
//! sent, truncated), `client` (the TCP peer), `status`, `code`, `latency_us`. The event is
//! built from borrowed fields, so a disabled target costs one cached interest check and an
//! enabled one formats straight into the subscriber. Silence them with
//! `RUST_LOG=info,isobar::access=off`.

use std::net::IpAddr;

use super::metrics::{Code, Endpoint};

/// Longest host text logged, bytes (a batch of five long names is cut).
const MAX_LOGGED_HOST: usize = 300;

/// Emits one access event.
pub(crate) fn log(
    account: &str,
    endpoint: Endpoint,
    host: &str,
    client: IpAddr,
    code: Code,
    latency_us: u64,
) {
    if !tracing::enabled!(target: "isobar::access", tracing::Level::INFO) {
        return;
    }
    let mut cut = host.len().min(MAX_LOGGED_HOST);
    while !host.is_char_boundary(cut) {
        cut -= 1;
    }
    tracing::info!(
        target: "isobar::access",
        account,
        path = endpoint.as_str(),
        host = &host[..cut],
        client = %client,
        status = code.status(),
        code = code.as_str(),
        latency_us,
    );
}
