//! Checks of the probing settings: the mesh, landmarks and per-endpoint probe specs.

use std::net::{IpAddr, SocketAddr};

use super::path::FieldPath;
use super::validate::Invalid;
use crate::world::{CheckKind, ProbeSpec, World};

/// Shortest probe interval accepted, milliseconds (a UDP echo stream for loss measurement
/// runs this fast; anything faster is a busy loop).
const MIN_INTERVAL_MS: u32 = 5;

fn invalid<T>(path: FieldPath, message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid {
        path,
        message: message.into(),
    })
}

/// Checks `[health]` mesh, landmarks and quorum settings, and every endpoint's `probe`.
pub(crate) fn check_probing(world: &World) -> Result<(), Invalid> {
    let health = FieldPath::new("health");
    if world.health.broken_vantage_percent > 100 {
        return invalid(
            health.key("broken_vantage_percent"),
            format!(
                "must be at most 100, got {}",
                world.health.broken_vantage_percent
            ),
        );
    }
    for (pop, address) in &world.health.mesh {
        if world.pop(pop).is_none() {
            return invalid(health.key("mesh"), format!("unknown pop {pop:?}"));
        }
        if address.parse::<SocketAddr>().is_err() {
            return invalid(
                health.key("mesh"),
                format!("{pop}: {address:?} is not an address:port"),
            );
        }
    }
    for (i, l) in world.health.landmarks.iter().enumerate() {
        let path = health.key("landmarks").index(i);
        if world.region(&l.region).is_none() {
            return invalid(path.key("region"), format!("unknown region {:?}", l.region));
        }
        check_address(path.key("address"), l.kind, &l.address)?;
        if matches!(l.kind, CheckKind::Http | CheckKind::Https | CheckKind::Dns) {
            return invalid(
                path.key("kind"),
                format!(
                    "{} is not a landmark kind: use icmp, udp_echo or tcp",
                    l.kind.as_str()
                ),
            );
        }
        check_timing(&path, l.interval_ms, l.timeout_ms)?;
    }
    for (s, service) in world.services.iter().enumerate() {
        for (e, endpoint) in service.endpoints.iter().enumerate() {
            let path = FieldPath::new("services")
                .index(s)
                .key("endpoints")
                .index(e);
            if let Some(spec) = &endpoint.probe {
                if endpoint.check.is_none() {
                    return invalid(path.key("probe"), "needs a check address to probe");
                }
                check_spec(&path.key("probe"), spec)?;
            }
        }
    }
    Ok(())
}

fn check_address(path: FieldPath, kind: CheckKind, address: &str) -> Result<(), Invalid> {
    let ok = address.parse::<SocketAddr>().is_ok()
        || (kind == CheckKind::Icmp && address.parse::<IpAddr>().is_ok());
    if ok {
        Ok(())
    } else {
        invalid(path, format!("{address:?} is not an address:port"))
    }
}

fn check_timing(
    path: &FieldPath,
    interval: Option<u32>,
    timeout: Option<u32>,
) -> Result<(), Invalid> {
    if let Some(ms) = interval.filter(|ms| *ms < MIN_INTERVAL_MS) {
        return invalid(
            path.key("interval_ms"),
            format!("must be at least {MIN_INTERVAL_MS}, got {ms}"),
        );
    }
    if timeout == Some(0) {
        return invalid(path.key("timeout_ms"), "must be at least 1, got 0");
    }
    Ok(())
}

fn check_spec(path: &FieldPath, spec: &ProbeSpec) -> Result<(), Invalid> {
    check_timing(path, spec.interval_ms, spec.timeout_ms)?;
    let allowed: &[&str] = match spec.kind {
        CheckKind::Http | CheckKind::Https => &[
            "scheme",
            "path",
            "host",
            "expect_status",
            "body",
            "tls_verify",
        ],
        CheckKind::Dns => &["name", "type", "expect_rcode"],
        CheckKind::Tcp | CheckKind::Icmp | CheckKind::UdpEcho => &[],
    };
    for key in spec.params.keys() {
        let header =
            key.starts_with("header.") && matches!(spec.kind, CheckKind::Http | CheckKind::Https);
        if !header && !allowed.contains(&key.as_str()) {
            return invalid(
                path.key("params"),
                format!(
                    "{key:?} is not a {} parameter (allowed: {})",
                    spec.kind.as_str(),
                    if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ),
            );
        }
    }
    Ok(())
}
