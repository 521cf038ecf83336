//! Rules for the steering part of a world: `[services.steering]`, `[services.gray]`, PoP
//! failure domains, endpoint capacities and declared group demand.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::path::FieldPath;
use super::validate::Invalid;
use crate::world::{AllDown, World};

fn invalid<T>(path: FieldPath, message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid {
        path,
        message: message.into(),
    })
}

/// Canonical text for addresses, prefixes and country codes typed by users.
pub(crate) fn normalize_steering(world: &mut World) {
    for service in &mut world.services {
        for address in &mut service.steering.fallback {
            if let Ok(ip) = address.parse::<IpAddr>() {
                *address = ip.to_string();
            }
        }
        if let Some(gray) = &mut service.gray {
            for cidr in &mut gray.cohort.cidrs {
                if let Ok(net) = cidr.parse::<IpNet>() {
                    *cidr = net.trunc().to_string();
                }
            }
            for country in &mut gray.cohort.countries {
                *country = country.to_ascii_uppercase();
            }
            gray.pops.sort();
            gray.pops.dedup();
        }
    }
}

fn fraction(path: FieldPath, value: f64, max_inclusive: f64) -> Result<(), Invalid> {
    if !(value.is_finite() && (0.0..=max_inclusive).contains(&value)) {
        return invalid(path, format!("{value} is not in [0, {max_inclusive}]"));
    }
    Ok(())
}

fn positive(path: FieldPath, value: f64) -> Result<(), Invalid> {
    if !(value.is_finite() && value > 0.0) {
        return invalid(path, format!("{value} must be a positive number"));
    }
    Ok(())
}

/// Checks ranges and references of every steering setting.
pub(crate) fn check_steering(world: &World, pops: &BTreeSet<&str>) -> Result<(), Invalid> {
    for (i, pop) in world.pops.iter().enumerate() {
        if pop.failure_domain.as_deref().is_some_and(str::is_empty) {
            return invalid(
                FieldPath::new("pops").index(i).key("failure_domain"),
                "must not be empty (leave it out for \"the PoP itself\")",
            );
        }
    }
    for (i, group) in world.client_groups.iter().enumerate() {
        if let Some(demand) = group.demand {
            fraction(
                FieldPath::new("client_groups").index(i).key("demand"),
                demand,
                f64::MAX,
            )?;
        }
    }
    for (i, service) in world.services.iter().enumerate() {
        let path = FieldPath::new("services").index(i);
        for (j, endpoint) in service.endpoints.iter().enumerate() {
            if let Some(capacity) = endpoint.capacity {
                positive(path.key("endpoints").index(j).key("capacity"), capacity)?;
            }
        }
        let steering = &service.steering;
        let at = path.key("steering");
        if !(steering.headroom.is_finite() && (0.0..1.0).contains(&steering.headroom)) {
            return invalid(
                at.key("headroom"),
                format!("{} is not in [0, 1)", steering.headroom),
            );
        }
        fraction(at.key("hysteresis"), steering.hysteresis, 1.0)?;
        if let Some(c) = steering.replica_capacity {
            positive(at.key("replica_capacity"), c)?;
        }
        let cost = at.key("cost");
        fraction(cost.key("rtt"), steering.cost.rtt, 1e6)?;
        fraction(cost.key("loss"), steering.cost.loss, 1e6)?;
        fraction(cost.key("load"), steering.cost.load, 1e6)?;
        for (j, address) in steering.fallback.iter().enumerate() {
            if address.parse::<IpAddr>().is_err() {
                return invalid(
                    at.key("fallback").index(j),
                    format!("{address:?} is not an IP address"),
                );
            }
        }
        if steering.all_down == AllDown::Fallback && steering.fallback.is_empty() {
            return invalid(
                at.key("fallback"),
                "all_down = \"fallback\" needs at least one fallback address",
            );
        }
        let guard = at.key("guard");
        fraction(
            guard.key("max_drain_percent"),
            steering.guard.max_drain_percent,
            100.0,
        )?;
        fraction(
            guard.key("min_healthy_percent"),
            steering.guard.min_healthy_percent,
            100.0,
        )?;
        if steering.guard.drain_window_s == 0 {
            return invalid(guard.key("drain_window_s"), "must be at least 1 second");
        }

        let Some(gray) = &service.gray else {
            continue;
        };
        let at = path.key("gray");
        if gray.name.is_empty() || gray.name.len() > 64 {
            return invalid(at.key("name"), "must be 1 to 64 characters");
        }
        if gray.labels.is_empty() == gray.pops.is_empty() {
            return invalid(
                at.key("labels"),
                "give the canary target as either labels or pops (exactly one)",
            );
        }
        for (j, pop) in gray.pops.iter().enumerate() {
            if !pops.contains(pop.as_str()) {
                return invalid(at.key("pops").index(j), format!("unknown pop {pop}"));
            }
        }
        fraction(at.key("percent"), gray.percent, 100.0)?;
        let mut last: Option<(i64, f64)> = None;
        for (j, step) in gray.ramp.iter().enumerate() {
            let step_path = at.key("ramp").index(j);
            fraction(step_path.key("percent"), step.percent, 100.0)?;
            if let Some((at_s, percent)) = last {
                if step.at_unix_s <= at_s {
                    return invalid(
                        step_path.key("at_unix_s"),
                        "ramp steps must be in time order",
                    );
                }
                if step.percent < percent {
                    return invalid(
                        step_path.key("percent"),
                        "a ramp only rises: the canary cohort may grow, never shrink",
                    );
                }
            }
            last = Some((step.at_unix_s, step.percent));
        }
        let cohort = at.key("cohort");
        for (j, cidr) in gray.cohort.cidrs.iter().enumerate() {
            if cidr.parse::<IpNet>().is_err() {
                return invalid(
                    cohort.key("cidrs").index(j),
                    format!("{cidr:?} is not a CIDR prefix"),
                );
            }
        }
        for (j, country) in gray.cohort.countries.iter().enumerate() {
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                return invalid(
                    cohort.key("countries").index(j),
                    format!("{country:?} is not an ISO 3166-1 alpha-2 code"),
                );
            }
        }
        for (j, device) in gray.cohort.devices.iter().enumerate() {
            if device.is_empty()
                || device.len() > 128
                || !device.bytes().all(|b| b.is_ascii_graphic())
            {
                return invalid(
                    cohort.key("devices").index(j),
                    "must be 1 to 128 printable ASCII characters",
                );
            }
        }
        if let Some(verdict) = &gray.verdict {
            let v = at.key("verdict");
            fraction(
                v.key("max_error_delta_percent"),
                verdict.max_error_delta_percent,
                100.0,
            )?;
            if !(verdict.max_latency_ratio.is_finite() && verdict.max_latency_ratio >= 1.0) {
                return invalid(v.key("max_latency_ratio"), "must be at least 1.0");
            }
        }
    }
    Ok(())
}
