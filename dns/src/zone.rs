//! One authoritative zone indexed for the query path: names, RRsets, delegations and the SOA.

use std::collections::HashMap;

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use isobar_proto::v1::ZoneData;

use crate::name::{NameKey, parse_absolute};
use crate::snapshot::SnapshotError;

/// The records of one (name, type).
#[derive(Debug, Clone)]
pub(crate) struct RrSet {
    pub(crate) rtype: RecordType,
    pub(crate) records: Vec<Record>,
}

/// A name that exists in the zone: it owns records, a GSLB service, or names below it
/// (an empty non-terminal, which exists for NXDOMAIN purposes but owns nothing).
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    pub(crate) rrsets: Vec<RrSet>,
    /// Index of the GSLB service with this name.
    pub(crate) service: Option<usize>,
    /// NS records below the apex: a delegation to another server.
    pub(crate) cut: bool,
}

impl Node {
    pub(crate) fn rrset(&self, rtype: RecordType) -> Option<&[Record]> {
        self.rrsets
            .iter()
            .find(|s| s.rtype == rtype)
            .map(|s| s.records.as_slice())
    }

    fn has(&self, rtype: RecordType) -> bool {
        self.rrsets.iter().any(|s| s.rtype == rtype)
    }
}

/// What a zone holds for one question.
#[derive(Debug)]
pub(crate) enum ZoneAnswer<'z> {
    /// The RRset asked for, or the CNAME standing at the name (not chased).
    Rrset(&'z [Record]),
    /// Every RRset at the name (qtype ANY).
    All(&'z Node),
    /// Records synthesized from a wildcard (RFC 4592), owner rewritten to the query name.
    Synthesized(Vec<Record>),
    /// A GSLB name asked for A, AAAA or ANY: the engine picks the addresses. `node` holds
    /// any other RRsets at the name (for ANY).
    Service { service: usize, node: &'z Node },
    /// The name exists but has no data of this type.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// The name is at or below a delegation: a referral, not an authoritative answer.
    Referral {
        ns: &'z [Record],
        glue: Vec<&'z Record>,
    },
}

/// An authoritative zone.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: Name,
    origin_labels: usize,
    /// The apex SOA with the served serial, as a one-element slice for response builders.
    soa: Vec<Record>,
    /// The SOA for negative answers: TTL = min(SOA TTL, MINIMUM) (RFC 2308 §3).
    negative_soa: Vec<Record>,
    nodes: HashMap<Box<[u8]>, Node>,
    has_cuts: bool,
}

impl Zone {
    /// The zone apex.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The apex SOA, with the served serial.
    pub fn soa(&self) -> &Record {
        &self.soa[0]
    }

    /// The SOA record carried in the authority section of NXDOMAIN and NODATA answers.
    pub(crate) fn negative_soa(&self) -> &[Record] {
        &self.negative_soa
    }

    /// How long a negative answer may be cached (RFC 2308 §5).
    pub(crate) fn negative_ttl(&self) -> u32 {
        self.negative_soa.first().map_or(0, |soa| soa.ttl)
    }

    /// Decodes and indexes one zone of a snapshot.
    pub(crate) fn build(data: &ZoneData) -> Result<(Box<[u8]>, Self), SnapshotError> {
        let err = |message: String| SnapshotError::Zone {
            zone: data.origin.clone(),
            message,
        };
        if !data.origin.ends_with('.') {
            return Err(err("origin is not absolute (no trailing dot)".into()));
        }
        let origin = parse_absolute(&data.origin)
            .ok_or_else(|| err("origin is not a valid domain name".into()))?
            .to_lowercase();
        let origin_key = NameKey::new(&origin).ok_or_else(|| err("origin is too long".into()))?;

        let mut zone = Zone {
            origin_labels: origin_key.labels(),
            origin,
            soa: Vec::new(),
            negative_soa: Vec::new(),
            nodes: HashMap::new(),
            has_cuts: false,
        };
        let origin_key: Box<[u8]> = origin_key.as_bytes().into();
        zone.nodes.insert(origin_key.clone(), Node::default());

        for (i, bytes) in data.records.iter().enumerate() {
            let mut record = decode_record(bytes).map_err(|m| err(format!("record {i}: {m}")))?;
            if !zone.origin.zone_of(&record.name) {
                return Err(err(format!(
                    "record {i}: {} is outside the zone",
                    record.name
                )));
            }
            if let RData::SOA(soa) = &mut record.data {
                if !record.name.eq_ignore_root(&zone.origin) {
                    return Err(err(format!(
                        "record {i}: SOA at {} (not the apex)",
                        record.name
                    )));
                }
                if !zone.soa.is_empty() {
                    return Err(err("more than one SOA record".into()));
                }
                // The scheduler owns the serial; the record's own value is only a default.
                soa.serial = data.serial;
                let negative_ttl = record.ttl.min(soa.minimum);
                let mut negative = record.clone();
                negative.ttl = negative_ttl;
                zone.negative_soa.push(negative);
                zone.soa.push(record.clone());
            }
            zone.add_record(record)
                .map_err(|m| err(format!("record {i}: {m}")))?;
        }
        if zone.soa.is_empty() {
            return Err(err("no SOA record at the apex".into()));
        }
        zone.finish().map_err(err)?;
        Ok((origin_key, zone))
    }

    fn add_record(&mut self, record: Record) -> Result<(), String> {
        let key = NameKey::new(&record.name).ok_or("owner name too long")?;
        // Every ancestor down to the apex exists, owning records or not (RFC 4592 §2.2.2).
        for skip in 1..key.labels().saturating_sub(self.origin_labels) {
            self.nodes.entry(key.suffix(skip).into()).or_default();
        }
        let is_apex = key.labels() == self.origin_labels;
        let node = self.nodes.entry(key.as_bytes().into()).or_default();
        let rtype = record.record_type();
        if rtype == RecordType::NS && !is_apex {
            node.cut = true;
            self.has_cuts = true;
        }
        match node.rrsets.iter_mut().find(|s| s.rtype == rtype) {
            Some(set) => {
                // An RRset is a set (RFC 2181 §5): repeated records collapse.
                if !set.records.iter().any(|r| r.data == record.data) {
                    set.records.push(record);
                }
            }
            None => node.rrsets.push(RrSet {
                rtype,
                records: vec![record],
            }),
        }
        Ok(())
    }

    /// Checks rules that need the whole zone, and evens out TTLs inside each RRset.
    fn finish(&mut self) -> Result<(), String> {
        for node in self.nodes.values_mut() {
            if node.has(RecordType::CNAME) && node.rrsets.len() > 1 {
                let owner = &node.rrsets[0].records[0].name;
                return Err(format!(
                    "{owner} has a CNAME and other data (RFC 1034 §3.6.2)"
                ));
            }
            if let Some(cname) = node.rrset(RecordType::CNAME)
                && cname.len() > 1
            {
                return Err(format!("{} has more than one CNAME", cname[0].name));
            }
            // RFC 2181 §5.2: all TTLs of an RRset are equal; serve the smallest.
            for set in &mut node.rrsets {
                let ttl = set.records.iter().map(|r| r.ttl).min().unwrap_or(0);
                for record in &mut set.records {
                    record.ttl = ttl;
                }
            }
        }
        Ok(())
    }

    /// Attaches a GSLB service to `name` (inside this zone).
    pub(crate) fn add_service(&mut self, key: &NameKey, service: usize) -> Result<(), String> {
        let below_apex = key.labels() - self.origin_labels;
        for skip in 1..below_apex {
            if self.nodes.get(key.suffix(skip)).is_some_and(|n| n.cut) {
                return Err("is below a delegation (NS records below the apex)".into());
            }
        }
        for skip in 1..below_apex {
            self.nodes.entry(key.suffix(skip).into()).or_default();
        }
        let node = self.nodes.entry(key.as_bytes().into()).or_default();
        if node.cut {
            return Err("is itself a delegation point".into());
        }
        for rtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            if node.has(rtype) {
                return Err(format!("also has static {rtype} records"));
            }
        }
        if node.service.replace(service).is_some() {
            return Err("is listed twice".into());
        }
        Ok(())
    }

    /// Answers `qtype` for `qname` (whose key is `key`), which lies inside this zone.
    pub(crate) fn lookup(&self, qname: &Name, key: &NameKey, qtype: RecordType) -> ZoneAnswer<'_> {
        let below_apex = key.labels().saturating_sub(self.origin_labels);
        // Walk down from the apex: the first missing name ends the walk (nothing below it
        // exists either); the last one found is the closest encloser.
        let mut encloser = below_apex;
        for skip in (0..below_apex).rev() {
            let Some(node) = self.nodes.get(key.suffix(skip)) else {
                break;
            };
            // DS lives on the parent side of a cut (RFC 4035 §3.1.4.1).
            if self.has_cuts && node.cut && !(skip == 0 && qtype == RecordType::DS) {
                return self.referral(node);
            }
            encloser = skip;
        }
        if encloser == 0 {
            let Some(node) = self.nodes.get(key.as_bytes()) else {
                return ZoneAnswer::NxDomain;
            };
            return node_answer(node, qtype);
        }
        self.wildcard(qname, key.suffix(encloser), qtype)
    }

    fn wildcard(&self, qname: &Name, encloser: &[u8], qtype: RecordType) -> ZoneAnswer<'_> {
        let Some(source) =
            NameKey::prepend(b"*", encloser).and_then(|k| self.nodes.get(k.as_bytes()))
        else {
            return ZoneAnswer::NxDomain;
        };
        let sets: Vec<&RrSet> = if qtype == RecordType::ANY {
            source.rrsets.iter().collect()
        } else {
            source
                .rrsets
                .iter()
                .filter(|s| s.rtype == qtype || s.rtype == RecordType::CNAME)
                .collect()
        };
        if sets.is_empty() {
            return ZoneAnswer::NoData;
        }
        let records = sets
            .iter()
            .flat_map(|s| s.records.iter())
            .map(|r| {
                let mut r = r.clone();
                r.name = qname.clone();
                r
            })
            .collect();
        ZoneAnswer::Synthesized(records)
    }

    fn referral<'z>(&'z self, cut: &'z Node) -> ZoneAnswer<'z> {
        let ns = cut.rrset(RecordType::NS).unwrap_or_default();
        // Glue: addresses of name servers that live inside this zone (at or below the cut),
        // without which the delegation could not be followed.
        let mut glue = Vec::new();
        for record in ns {
            let RData::NS(target) = &record.data else {
                continue;
            };
            if !self.origin.zone_of(&target.0) {
                continue;
            }
            let Some(node) = NameKey::new(&target.0).and_then(|k| self.nodes.get(k.as_bytes()))
            else {
                continue;
            };
            for rtype in [RecordType::A, RecordType::AAAA] {
                glue.extend(node.rrset(rtype).unwrap_or_default());
            }
        }
        ZoneAnswer::Referral { ns, glue }
    }
}

fn node_answer(node: &Node, qtype: RecordType) -> ZoneAnswer<'_> {
    if let Some(service) = node.service
        && matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY)
    {
        return ZoneAnswer::Service { service, node };
    }
    if qtype == RecordType::ANY {
        return if node.rrsets.is_empty() {
            ZoneAnswer::NoData
        } else {
            ZoneAnswer::All(node)
        };
    }
    match node.rrset(qtype).or_else(|| node.rrset(RecordType::CNAME)) {
        Some(records) => ZoneAnswer::Rrset(records),
        None => ZoneAnswer::NoData,
    }
}

/// Decodes one uncompressed wire-format record and checks it is servable data.
fn decode_record(bytes: &[u8]) -> Result<Record, String> {
    let mut decoder = BinDecoder::new(bytes);
    let record = Record::read(&mut decoder).map_err(|e| format!("does not decode: {e}"))?;
    if !decoder.is_empty() {
        return Err(format!("{} trailing bytes after the record", decoder.len()));
    }
    if record.dns_class != DNSClass::IN {
        return Err(format!("class {} (only IN is served)", record.dns_class));
    }
    if matches!(record.data, RData::Update0(_) | RData::OPT(_)) || record.record_type().is_any() {
        return Err(format!("type {} is not zone data", record.record_type()));
    }
    Ok(record)
}
