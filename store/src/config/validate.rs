//! Semantic checks of a normalized world: ranges, uniqueness, references and zone rules.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::{Name, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use ipnet::IpNet;

use super::path::FieldPath;
use super::zone::{canonical_text, parse_record_line};
use crate::world::{World, Zone};

/// The largest TTL RFC 2181 §8 allows.
const MAX_TTL: u32 = 0x7fff_ffff;

/// The 2-byte AS number that stands in for any 4-byte one (RFC 6793); an ASN database may
/// map it to many unrelated networks, so it never names a client group.
const AS_TRANS: u32 = 23456;

/// A rule the world breaks, and where.
#[derive(Debug, Clone)]
pub(crate) struct Invalid {
    pub(crate) path: FieldPath,
    pub(crate) message: String,
}

fn invalid<T>(path: FieldPath, message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid {
        path,
        message: message.into(),
    })
}

/// Where a zone record came from, for error positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordSource {
    /// The `index`th entry of the zone's `records`.
    Inline(usize),
    /// A line of the zone's `file`.
    File(u32),
}

/// A zone rule that a record breaks.
#[derive(Debug, Clone)]
pub(crate) struct BadRecord {
    /// The offending record, or `None` when the zone as a whole is at fault.
    pub(crate) source: Option<RecordSource>,
    pub(crate) message: String,
}

/// Lowercase absolute form of a DNS name typed by a user: `Example.COM` → `example.com.`.
pub(crate) fn normalize_dns_name(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.contains(char::is_whitespace) {
        return Err(format!("{raw:?} is not a valid DNS name"));
    }
    let parsed = if raw.is_ascii() {
        Name::from_ascii(raw)
    } else {
        Name::from_utf8(raw)
    };
    let mut name = parsed.map_err(|e| format!("{raw:?} is not a valid DNS name: {e}"))?;
    name.set_fqdn(true);
    if name.is_root() {
        return Err("the root name is not allowed here".into());
    }
    Ok(name.to_lowercase().to_ascii())
}

/// Checks every rule of a world whose names, addresses and records are already in
/// normalized form (as `parse_world` produces and the store keeps).
pub(crate) fn check_world(world: &World) -> Result<(), Invalid> {
    check_defaults(world)?;
    check_health(world)?;
    let regions = check_regions(world)?;
    let pops = check_pops(world, &regions)?;
    let zones = check_zones(world)?;
    check_services(world, &regions, &pops, &zones)?;
    super::probing::check_probing(world)?;
    super::httpdns::check_httpdns(world, &regions)?;
    super::steering::check_steering(world, &pops)?;
    check_client_groups(world, &regions)
}

fn check_defaults(world: &World) -> Result<(), Invalid> {
    let path = FieldPath::new("defaults");
    let d = &world.defaults;
    if d.ttl > MAX_TTL {
        return invalid(path.key("ttl"), format!("must be at most {MAX_TTL}"));
    }
    if d.answers < 1 {
        return invalid(path.key("answers"), "must be at least 1");
    }
    if !(d.cell_degrees > 0.0 && d.cell_degrees <= 90.0) {
        return invalid(
            path.key("cell_degrees"),
            format!("must be in (0, 90], got {}", d.cell_degrees),
        );
    }
    if let Some(location) = &d.location {
        check_location(&path.key("location"), location.lat, location.lon)?;
    }
    Ok(())
}

fn check_health(world: &World) -> Result<(), Invalid> {
    let path = FieldPath::new("health");
    let h = &world.health;
    let rules: [(&'static str, u32, u32); 4] = [
        ("interval_ms", h.interval_ms, 50),
        ("timeout_ms", h.timeout_ms, 10),
        ("fall", h.fall, 1),
        ("rise", h.rise, 1),
    ];
    for (field, value, min) in rules {
        if value < min {
            return invalid(
                path.key(field),
                format!("must be at least {min}, got {value}"),
            );
        }
    }
    Ok(())
}

fn check_location(path: &FieldPath, lat: f64, lon: f64) -> Result<(), Invalid> {
    // `contains` is false for NaN, which TOML can express.
    if !(-90.0..=90.0).contains(&lat) {
        return invalid(
            path.key("lat"),
            format!("latitude must be in [-90, 90], got {lat}"),
        );
    }
    if !(-180.0..=180.0).contains(&lon) {
        return invalid(
            path.key("lon"),
            format!("longitude must be in [-180, 180], got {lon}"),
        );
    }
    Ok(())
}

fn check_plain_name(path: FieldPath, name: &str) -> Result<(), Invalid> {
    if name.is_empty() {
        return invalid(path, "must not be empty");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid(
            path,
            format!("{name:?} must not contain blanks or control characters"),
        );
    }
    Ok(())
}

fn check_unique<'w>(
    seen: &mut BTreeSet<&'w str>,
    path: FieldPath,
    kind: &str,
    name: &'w str,
) -> Result<(), Invalid> {
    if !seen.insert(name) {
        return invalid(path, format!("duplicate {kind} {name}"));
    }
    Ok(())
}

fn check_regions(world: &World) -> Result<BTreeSet<&str>, Invalid> {
    let mut names = BTreeSet::new();
    for (i, region) in world.regions.iter().enumerate() {
        let path = FieldPath::new("regions").index(i);
        check_plain_name(path.key("name"), &region.name)?;
        check_unique(&mut names, path.key("name"), "region", &region.name)?;
        check_location(&path, region.lat, region.lon)?;
    }
    Ok(names)
}

fn check_pops<'w>(
    world: &'w World,
    regions: &BTreeSet<&str>,
) -> Result<BTreeSet<&'w str>, Invalid> {
    let mut names = BTreeSet::new();
    for (i, pop) in world.pops.iter().enumerate() {
        let path = FieldPath::new("pops").index(i);
        check_plain_name(path.key("name"), &pop.name)?;
        check_unique(&mut names, path.key("name"), "pop", &pop.name)?;
        if !regions.contains(pop.region.as_str()) {
            return invalid(path.key("region"), format!("unknown region {}", pop.region));
        }
        check_location(&path, pop.lat, pop.lon)?;
        if i64::try_from(pop.capacity).is_err() {
            return invalid(
                path.key("capacity"),
                format!("must be at most {}", i64::MAX),
            );
        }
        check_labels(&path, &pop.labels)?;
    }
    Ok(names)
}

fn check_labels(path: &FieldPath, labels: &BTreeMap<String, String>) -> Result<(), Invalid> {
    if labels.keys().any(String::is_empty) {
        return invalid(path.key("labels"), "label names must not be empty");
    }
    Ok(())
}

fn check_dns_name(path: FieldPath, name: &str) -> Result<Name, Invalid> {
    match normalize_dns_name(name) {
        Ok(normal) if normal == name => {}
        Ok(normal) => {
            return invalid(
                path,
                format!("{name:?} is not normalized (expected {normal:?})"),
            );
        }
        Err(e) => return invalid(path, e),
    }
    Name::from_ascii(name).or_else(|e| invalid(path, e.to_string()))
}

/// A zone's apex and parsed records.
pub(crate) struct ZoneRecords {
    pub(crate) apex: Name,
    pub(crate) records: Vec<Record>,
}

fn check_zones(world: &World) -> Result<Vec<ZoneRecords>, Invalid> {
    let mut names = BTreeSet::new();
    let mut zones = Vec::with_capacity(world.zones.len());
    for (i, zone) in world.zones.iter().enumerate() {
        let path = FieldPath::new("zones").index(i);
        let apex = check_dns_name(path.key("name"), &zone.name)?;
        check_unique(&mut names, path.key("name"), "zone", &zone.name)?;
        if zone.file.is_some() {
            return invalid(
                path.key("file"),
                "zone files must be read into `records` before storing",
            );
        }
        zones.push(check_zone_records(&path, zone, apex)?);
    }
    Ok(zones)
}

fn check_zone_records(path: &FieldPath, zone: &Zone, apex: Name) -> Result<ZoneRecords, Invalid> {
    let mut records = Vec::with_capacity(zone.records.len());
    for (j, text) in zone.records.iter().enumerate() {
        let at = path.key("records").index(j);
        let record = parse_record_line(text, &apex).or_else(|e| invalid(at.clone(), e))?;
        match canonical_text(&record) {
            Ok(canonical) if canonical == *text => {}
            Ok(canonical) => {
                return invalid(
                    at,
                    format!("record is not in canonical form (expected {canonical:?})"),
                );
            }
            Err(e) => return invalid(at, e),
        }
        records.push((record, RecordSource::Inline(j)));
    }
    check_records(&apex, &records, true).map_err(|bad| {
        let at = match bad.source {
            Some(RecordSource::Inline(j)) => path.key("records").index(j),
            Some(RecordSource::File(_)) | None => path.key("records"),
        };
        Invalid {
            path: at,
            message: bad.message,
        }
    })?;
    Ok(ZoneRecords {
        apex,
        records: records.into_iter().map(|(r, _)| r).collect(),
    })
}

/// Zone rules over one zone's records: every owner inside the zone, SOA only at the apex
/// and at most one, a CNAME alone at its name, every record encodable on the wire. With
/// `complete`, the apex must also hold exactly one SOA and at least one NS.
pub(crate) fn check_records(
    apex: &Name,
    records: &[(Record, RecordSource)],
    complete: bool,
) -> Result<(), BadRecord> {
    let bad = |source: Option<RecordSource>, message: String| Err(BadRecord { source, message });
    let mut soa: Option<RecordSource> = None;
    let mut types_at: BTreeMap<Name, Vec<(RecordType, RecordSource)>> = BTreeMap::new();
    for (record, at) in records {
        let source = Some(*at);
        let owner = &record.name;
        if !apex.zone_of(owner) {
            return bad(source, format!("owner {owner} is outside zone {apex}"));
        }
        if let Err(e) = record.to_bytes() {
            return bad(
                source,
                format!("{} record cannot be encoded: {e}", record.record_type()),
            );
        }
        if record.record_type() == RecordType::SOA {
            if owner != apex {
                return bad(
                    source,
                    format!("SOA record must be at the zone apex {apex}, not at {owner}"),
                );
            }
            if soa.replace(*at).is_some() {
                return bad(source, format!("zone {apex} has more than one SOA record"));
            }
        }
        types_at
            .entry(owner.to_lowercase())
            .or_default()
            .push((record.record_type(), *at));
    }
    for (owner, types) in &types_at {
        if let Some((_, at)) = types.iter().find(|(t, _)| *t == RecordType::CNAME) {
            if owner == apex {
                return bad(
                    Some(*at),
                    format!("CNAME is not allowed at the zone apex {apex}"),
                );
            }
            if types.len() > 1 {
                return bad(
                    Some(*at),
                    format!("CNAME at {owner} must be the only record at that name"),
                );
            }
        }
    }
    if complete {
        let at_apex = types_at.get(&apex.to_lowercase());
        let has = |t: RecordType| at_apex.is_some_and(|v| v.iter().any(|(rt, _)| *rt == t));
        if !has(RecordType::SOA) {
            return bad(None, format!("zone {apex} has no SOA record at its apex"));
        }
        if !has(RecordType::NS) {
            return bad(None, format!("zone {apex} has no NS record at its apex"));
        }
    }
    Ok(())
}

fn check_services(
    world: &World,
    regions: &BTreeSet<&str>,
    pops: &BTreeSet<&str>,
    zones: &[ZoneRecords],
) -> Result<(), Invalid> {
    let mut names = BTreeSet::new();
    for (i, service) in world.services.iter().enumerate() {
        let path = FieldPath::new("services").index(i);
        let name = check_dns_name(path.key("name"), &service.name)?;
        check_unique(&mut names, path.key("name"), "service", &service.name)?;
        // The most specific zone is the one that answers for the name.
        let Some(zone) = zones
            .iter()
            .filter(|z| z.apex.zone_of(&name))
            .max_by_key(|z| z.apex.num_labels())
        else {
            return invalid(
                path.key("name"),
                format!("{} is not inside any configured zone", service.name),
            );
        };
        if let Some(clash) = zone.records.iter().find(|r| {
            r.name == name
                && matches!(
                    r.record_type(),
                    RecordType::A | RecordType::AAAA | RecordType::CNAME
                )
        }) {
            return invalid(
                path.key("name"),
                format!(
                    "service {} conflicts with the static {} record in zone {}",
                    service.name,
                    clash.record_type(),
                    zone.apex
                ),
            );
        }
        if let Some(ttl) = service.ttl
            && ttl > MAX_TTL
        {
            return invalid(path.key("ttl"), format!("must be at most {MAX_TTL}"));
        }
        if service.answers == Some(0) {
            return invalid(path.key("answers"), "must be at least 1");
        }
        let mut demand = HashSet::new();
        for (j, region) in service.demand.iter().enumerate() {
            if !regions.contains(region.as_str()) {
                return invalid(
                    path.key("demand").index(j),
                    format!("unknown region {region}"),
                );
            }
            if !demand.insert(region) {
                return invalid(
                    path.key("demand").index(j),
                    format!("duplicate region {region}"),
                );
            }
        }
        let mut addresses = HashSet::new();
        for (j, endpoint) in service.endpoints.iter().enumerate() {
            let path = path.key("endpoints").index(j);
            if !pops.contains(endpoint.pop.as_str()) {
                return invalid(path.key("pop"), format!("unknown pop {}", endpoint.pop));
            }
            let address: IpAddr = match endpoint.address.parse() {
                Ok(a) => a,
                Err(_) => {
                    return invalid(
                        path.key("address"),
                        format!("{:?} is not an IP address", endpoint.address),
                    );
                }
            };
            if address.to_string() != endpoint.address {
                return invalid(
                    path.key("address"),
                    format!(
                        "{:?} is not normalized (expected {address})",
                        endpoint.address
                    ),
                );
            }
            if !addresses.insert(address) {
                return invalid(
                    path.key("address"),
                    format!("duplicate endpoint address {address}"),
                );
            }
            let icmp = endpoint
                .probe
                .as_ref()
                .is_some_and(|p| p.kind == crate::world::CheckKind::Icmp);
            if let Some(check) = &endpoint.check
                && !(icmp
                    && check
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| ip.to_string() == *check))
            {
                match check.parse::<SocketAddr>() {
                    Ok(target) if target.to_string() == *check => {}
                    Ok(target) => {
                        return invalid(
                            path.key("check"),
                            format!("{check:?} is not normalized (expected {target})"),
                        );
                    }
                    Err(_) => {
                        return invalid(
                            path.key("check"),
                            format!("{check:?} is not an address:port"),
                        );
                    }
                }
            }
            check_labels(&path, &endpoint.labels)?;
        }
    }
    Ok(())
}

fn check_client_groups(world: &World, regions: &BTreeSet<&str>) -> Result<(), Invalid> {
    let mut names = BTreeSet::new();
    let mut owners: BTreeMap<IpNet, &str> = BTreeMap::new();
    let mut asn_owners: BTreeMap<u32, &str> = BTreeMap::new();
    for (i, group) in world.client_groups.iter().enumerate() {
        let path = FieldPath::new("client_groups").index(i);
        check_plain_name(path.key("name"), &group.name)?;
        check_unique(&mut names, path.key("name"), "client group", &group.name)?;
        if !regions.contains(group.region.as_str()) {
            return invalid(
                path.key("region"),
                format!("unknown region {}", group.region),
            );
        }
        if group.cidrs.is_empty() && group.asns.is_empty() {
            return invalid(
                path.key("cidrs"),
                "must list at least one prefix (or AS number in asns)",
            );
        }
        for (j, &asn) in group.asns.iter().enumerate() {
            let at = path.key("asns").index(j);
            match asn {
                0 => return invalid(at, "AS 0 is reserved (RFC 7607) and never announced"),
                AS_TRANS => {
                    return invalid(
                        at,
                        "AS 23456 is AS_TRANS (RFC 6793), a placeholder shared by many networks",
                    );
                }
                _ => {}
            }
            if let Some(other) = asn_owners.insert(asn, &group.name) {
                let message = if other == group.name {
                    format!("AS{asn} is listed twice")
                } else {
                    format!("AS{asn} is already in client group {other}")
                };
                return invalid(at, message);
            }
        }
        for (j, cidr) in group.cidrs.iter().enumerate() {
            let at = path.key("cidrs").index(j);
            let net: IpNet = match cidr.parse() {
                Ok(net) => net,
                Err(_) => return invalid(at, format!("{cidr:?} is not a CIDR prefix")),
            };
            if net.trunc() != net {
                return invalid(
                    at,
                    format!("{cidr} has host bits set (did you mean {}?)", net.trunc()),
                );
            }
            if net.to_string() != *cidr {
                return invalid(at, format!("{cidr:?} is not normalized (expected {net})"));
            }
            if let Some(other) = owners.insert(net, &group.name) {
                return invalid(at, format!("{net} is already in client group {other}"));
            }
        }
    }
    Ok(())
}
