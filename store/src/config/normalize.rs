//! Brings a freshly deserialized world into normalized form: DNS names lowercase and
//! absolute, addresses in canonical text, zone files read and every record canonical.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::{Name, Record, RecordType};
use ipnet::IpNet;

use super::path::FieldPath;
use super::validate::{Invalid, RecordSource, check_records, normalize_dns_name};
use super::zone::{canonical_text, parse_master_file, parse_record_line};
use crate::world::{World, Zone};

/// Why normalization failed, before positions are resolved against the source text.
#[derive(Debug)]
pub(crate) enum Problem {
    /// A field breaks a rule.
    Invalid(Invalid),
    /// An inline record (`zones[i].records[j]`) is bad.
    InlineRecord { path: FieldPath, message: String },
    /// A record in a zone file is bad.
    FileRecord {
        path: FieldPath,
        file: String,
        line: u32,
        message: String,
    },
    /// A zone file could not be read.
    Read {
        path: FieldPath,
        file: String,
        error: std::io::Error,
    },
}

impl From<Invalid> for Problem {
    fn from(invalid: Invalid) -> Self {
        Self::Invalid(invalid)
    }
}

/// Normalizes `world` in place. Zone files are read through `read_file` and recorded in `files`.
pub(crate) fn normalize_source(
    world: &mut World,
    read_file: &dyn Fn(&str) -> std::io::Result<String>,
    files: &mut BTreeMap<String, String>,
) -> Result<(), Problem> {
    for (i, zone) in world.zones.iter_mut().enumerate() {
        normalize_zone(&FieldPath::new("zones").index(i), zone, read_file, files)?;
    }
    for (i, service) in world.services.iter_mut().enumerate() {
        let path = FieldPath::new("services").index(i);
        service.name = dns_name(path.key("name"), &service.name)?;
        // Unparseable values are left alone for validation to report.
        for endpoint in &mut service.endpoints {
            if let Ok(address) = endpoint.address.parse::<IpAddr>() {
                endpoint.address = address.to_string();
            }
            if let Some(check) = &mut endpoint.check
                && let Ok(target) = check.parse::<SocketAddr>()
            {
                *check = target.to_string();
            }
        }
    }
    for group in &mut world.client_groups {
        for cidr in &mut group.cidrs {
            if let Ok(net) = cidr.parse::<IpNet>() {
                *cidr = net.to_string();
            }
        }
    }
    super::httpdns::normalize_httpdns(world);
    super::steering::normalize_steering(world);
    Ok(())
}

fn dns_name(path: FieldPath, raw: &str) -> Result<String, Problem> {
    normalize_dns_name(raw).map_err(|message| Problem::Invalid(Invalid { path, message }))
}

fn normalize_zone(
    path: &FieldPath,
    zone: &mut Zone,
    read_file: &dyn Fn(&str) -> std::io::Result<String>,
    files: &mut BTreeMap<String, String>,
) -> Result<(), Problem> {
    zone.name = dns_name(path.key("name"), &zone.name)?;
    let apex = Name::from_ascii(&zone.name).map_err(|e| {
        Problem::Invalid(Invalid {
            path: path.key("name"),
            message: e.to_string(),
        })
    })?;
    let file = zone.file.take();
    if file.is_some() && !zone.records.is_empty() {
        return Err(Problem::Invalid(Invalid {
            path: path.key("file"),
            message: "set either `file` or `records`, not both".into(),
        }));
    }

    let mut records: Vec<(Record, RecordSource)> = Vec::new();
    if let Some(file) = &file {
        let text = read_file(file).map_err(|error| Problem::Read {
            path: path.key("file"),
            file: file.clone(),
            error,
        })?;
        let parsed = parse_master_file(&text, &apex).map_err(|e| Problem::FileRecord {
            path: path.key("file"),
            file: file.clone(),
            line: e.line,
            message: e.message,
        })?;
        records.extend(
            parsed
                .into_iter()
                .map(|r| (r.record, RecordSource::File(r.line))),
        );
        files.insert(file.clone(), text);
    }
    for (j, line) in zone.records.iter().enumerate() {
        let record = parse_record_line(line, &apex).map_err(|message| Problem::InlineRecord {
            path: path.key("records").index(j),
            message,
        })?;
        records.push((record, RecordSource::Inline(j)));
    }

    let record_problem = |source: Option<RecordSource>, message: String| match (source, &file) {
        (Some(RecordSource::File(line)), Some(file)) => Problem::FileRecord {
            path: path.key("file"),
            file: file.clone(),
            line,
            message,
        },
        (Some(RecordSource::Inline(j)), _) => Problem::InlineRecord {
            path: path.key("records").index(j),
            message,
        },
        _ => Problem::Invalid(Invalid {
            path: path.key("name"),
            message,
        }),
    };
    check_records(&apex, &records, false).map_err(|bad| record_problem(bad.source, bad.message))?;

    let mut canonical = Vec::with_capacity(records.len() + 2);
    for (record, source) in &records {
        let text =
            canonical_text(record).map_err(|message| record_problem(Some(*source), message))?;
        canonical.push(text);
    }
    for synthesized in synthesize_apex(&apex, &records) {
        let record = parse_record_line(&synthesized, &apex)
            .map_err(|message| record_problem(None, message))?;
        canonical.push(canonical_text(&record).map_err(|message| record_problem(None, message))?);
    }
    canonical.sort();
    canonical.dedup();
    zone.records = canonical;
    Ok(())
}

/// The apex records a zone needs but lacks. A zone without an SOA gets
/// `<zone> 3600 IN SOA ns1.<zone> hostmaster.<zone> 1 7200 900 1209600 300`, and one
/// without an apex NS gets `<zone> 3600 IN NS ns1.<zone>`, so a zone of GSLB names alone
/// is a valid zone. The serial stays 1; the DNS frontend may substitute its own.
fn synthesize_apex(apex: &Name, records: &[(Record, RecordSource)]) -> Vec<String> {
    let has = |rtype: RecordType| {
        records
            .iter()
            .any(|(r, _)| r.record_type() == rtype && r.name == *apex)
    };
    let zone = apex.to_ascii();
    let mut out = Vec::new();
    if !has(RecordType::SOA) {
        out.push(format!(
            "{zone} 3600 IN SOA ns1.{zone} hostmaster.{zone} 1 7200 900 1209600 300"
        ));
    }
    if !has(RecordType::NS) {
        out.push(format!("{zone} 3600 IN NS ns1.{zone}"));
    }
    out
}
