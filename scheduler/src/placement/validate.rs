//! Policy validation: every rejection names the offending field.

use isobar_proto::v1::{Division, PlacementPolicy, SchedulingType, SiteSelector, SpreadField};
use isobar_store::world::World;

use super::{MAX_REPLICAS, PolicyError};

/// Longest fallback-group name accepted (Karmada's `affinityName` allows 32).
const MAX_GROUP_NAME: usize = 64;
/// Most fallback groups, selectors or spread constraints in one policy.
const MAX_LIST: usize = 64;
/// Largest latency bound accepted, milliseconds.
const MAX_RTT_MS: u32 = 10_000;
/// Largest risk-control duration accepted, seconds (one week).
const MAX_SECONDS: u32 = 7 * 24 * 3600;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks a policy against the world; `Ok` means [`super::solve`] can run.
pub fn validate(world: &World, service: &str, policy: &PlacementPolicy) -> Result<(), PolicyError> {
    if world.service(service).is_none() {
        return Err(PolicyError::UnknownService(service.to_owned()));
    }
    if policy.replicas == 0 || policy.replicas > MAX_REPLICAS {
        return Err(invalid(
            "policy.replicas",
            format!(
                "must be between 1 and {MAX_REPLICAS}, got {}",
                policy.replicas
            ),
        ));
    }
    for (name, list) in [
        ("allowed_regions", &policy.allowed_regions),
        ("demand_regions", &policy.demand_regions),
    ] {
        for (i, region) in list.iter().enumerate() {
            if world.region(region).is_none() {
                return Err(invalid(
                    format!("policy.{name}[{i}]"),
                    format!("unknown region {region:?}"),
                ));
            }
        }
    }
    selectors(&policy.include, "policy.include")?;
    selectors(&policy.exclude, "policy.exclude")?;
    let mut min_total: u64 = 0;
    for (site, bounds) in &policy.site_bounds {
        let field = format!("policy.site_bounds[{site}]");
        if world.pop(site).is_none() {
            return Err(invalid(field, format!("unknown site {site:?}")));
        }
        if bounds.max != 0 && bounds.min > bounds.max {
            return Err(invalid(
                field,
                format!("min {} exceeds max {}", bounds.min, bounds.max),
            ));
        }
        min_total += u64::from(bounds.min);
    }
    let duplicated = SchedulingType::try_from(policy.scheduling).map_err(|_| {
        invalid(
            "policy.scheduling",
            format!("unknown value {}", policy.scheduling),
        )
    })? == SchedulingType::Duplicated;
    if !duplicated && min_total > u64::from(policy.replicas) {
        return Err(invalid(
            "policy.site_bounds",
            format!(
                "per-site minimums add up to {min_total}, more than the {} replicas requested",
                policy.replicas
            ),
        ));
    }
    if policy.groups.len() > MAX_LIST {
        return Err(invalid(
            "policy.groups",
            format!("at most {MAX_LIST} groups, got {}", policy.groups.len()),
        ));
    }
    for (i, group) in policy.groups.iter().enumerate() {
        if group.name.len() > MAX_GROUP_NAME {
            return Err(invalid(
                format!("policy.groups[{i}].name"),
                format!("longer than {MAX_GROUP_NAME} bytes"),
            ));
        }
        if group.selectors.is_empty() {
            return Err(invalid(
                format!("policy.groups[{i}].selectors"),
                "must not be empty (a group without selectors selects nothing)",
            ));
        }
        selectors(&group.selectors, &format!("policy.groups[{i}].selectors"))?;
    }
    if policy.spread.len() > MAX_LIST {
        return Err(invalid(
            "policy.spread",
            format!("at most {MAX_LIST} constraints"),
        ));
    }
    for (i, spread) in policy.spread.iter().enumerate() {
        let field = SpreadField::try_from(spread.field).map_err(|_| {
            invalid(
                format!("policy.spread[{i}].field"),
                format!("unknown value {}", spread.field),
            )
        })?;
        if field == SpreadField::Label && spread.label.is_empty() {
            return Err(invalid(
                format!("policy.spread[{i}].label"),
                "required when field is SPREAD_FIELD_LABEL",
            ));
        }
        if spread.max_groups != 0 {
            let pinned: std::collections::BTreeSet<&str> = policy
                .site_bounds
                .iter()
                .filter(|(_, b)| b.min > 0)
                .filter_map(|(site, _)| super::objectives::spread_value(spread, world.pop(site)?))
                .collect();
            if pinned.len() > spread.max_groups as usize {
                return Err(invalid(
                    format!("policy.spread[{i}].max_groups"),
                    format!(
                        "the sites with a minimum already span {} values, more than {}",
                        pinned.len(),
                        spread.max_groups
                    ),
                ));
            }
        }
        if spread.max_groups != 0 && spread.min_groups > spread.max_groups {
            return Err(invalid(
                format!("policy.spread[{i}]"),
                format!(
                    "min_groups {} exceeds max_groups {}",
                    spread.min_groups, spread.max_groups
                ),
            ));
        }
    }
    let division = Division::try_from(policy.division).map_err(|_| {
        invalid(
            "policy.division",
            format!("unknown value {}", policy.division),
        )
    })?;
    for site in policy.static_weights.keys() {
        if world.pop(site).is_none() {
            return Err(invalid(
                format!("policy.static_weights[{site}]"),
                format!("unknown site {site:?}"),
            ));
        }
    }
    if division == Division::StaticWeights && policy.static_weights.values().all(|w| *w == 0) {
        return Err(invalid(
            "policy.static_weights",
            "DIVISION_STATIC_WEIGHTS needs at least one site with a positive weight",
        ));
    }
    if let Some(latency) = &policy.latency {
        if latency.max_rtt_ms > MAX_RTT_MS {
            return Err(invalid(
                "policy.latency.max_rtt_ms",
                format!("at most {MAX_RTT_MS}, got {}", latency.max_rtt_ms),
            ));
        }
        if !(0.0..=1.0).contains(&latency.fraction) {
            return Err(invalid(
                "policy.latency.fraction",
                format!("must be between 0 and 1, got {}", latency.fraction),
            ));
        }
    }
    if let Some(risk) = &policy.risk {
        for (name, value) in [
            ("removal_window_seconds", risk.removal_window_seconds),
            ("grace_period_seconds", risk.grace_period_seconds),
            ("stabilization_seconds", risk.stabilization_seconds),
        ] {
            if value > MAX_SECONDS {
                return Err(invalid(
                    format!("policy.risk.{name}"),
                    format!("at most {MAX_SECONDS} (one week), got {value}"),
                ));
            }
        }
    }
    Ok(())
}

fn selectors(list: &[SiteSelector], field: &str) -> Result<(), PolicyError> {
    if list.len() > MAX_LIST {
        return Err(invalid(field, format!("at most {MAX_LIST} selectors")));
    }
    for (i, sel) in list.iter().enumerate() {
        if sel.match_labels.is_empty() && sel.match_in.is_empty() {
            return Err(invalid(
                format!("{field}[{i}]"),
                "an empty selector matches every site; omit it instead",
            ));
        }
        for (key, values) in &sel.match_in {
            if values.values.is_empty() {
                return Err(invalid(
                    format!("{field}[{i}].match_in[{key}]"),
                    "must list at least one value",
                ));
            }
        }
    }
    Ok(())
}
