//! One authoritative zone indexed for the query path: names, RRsets, delegations and the SOA.

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use isobar_proto::v1::ZoneData;

use crate::name::{FastMap, NameKey, parse_absolute};
use crate::snapshot::SnapshotError;
use crate::wire::WireRecord;

/// The records of one (name, type).
#[derive(Debug, Clone)]
pub(crate) struct RrSet {
    pub(crate) rtype: RecordType,
    pub(crate) records: Vec<Record>,
    /// The same records pre-encoded for DNS responses (filled by `Zone::finish`).
    pub(crate) wire: Vec<WireRecord>,
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

    /// The pre-encoded RRset of `rtype`, if any.
    pub(crate) fn wire(&self, rtype: RecordType) -> Option<&[WireRecord]> {
        self.rrsets
            .iter()
            .find(|s| s.rtype == rtype)
            .map(|s| s.wire.as_slice())
    }
}

/// Where a name lands in a zone, before the query type is considered.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Found<'z> {
    /// The name exists (possibly as an empty non-terminal).
    Node(&'z Node),
    /// The name does not exist but a wildcard covers it (RFC 4592): answer from this
    /// source with the query name as owner.
    Wildcard(&'z Node),
    /// The name does not exist.
    NxDomain,
    /// The name is at or below this delegation point.
    Referral(&'z Node),
}

/// An authoritative zone.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: Name,
    origin_labels: usize,
    origin_key: Box<[u8]>,
    /// The apex SOA with the served serial, as a one-element slice for response builders.
    soa: Vec<Record>,
    /// The SOA for negative answers: TTL = min(SOA TTL, MINIMUM) (RFC 2308 §3).
    negative_soa: Vec<Record>,
    /// `negative_soa`, pre-encoded.
    negative_soa_wire: Vec<WireRecord>,
    nodes: FastMap<Box<[u8]>, Node>,
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

    /// The negative-answer SOA, pre-encoded.
    pub(crate) fn negative_soa_wire(&self) -> &[WireRecord] {
        &self.negative_soa_wire
    }

    /// The apex as a lowercase wire name.
    pub(crate) fn origin_key(&self) -> &[u8] {
        &self.origin_key
    }

    /// Labels of the apex, not counting the root.
    pub(crate) fn origin_labels(&self) -> usize {
        self.origin_labels
    }

    /// The node at `key` (exact name, no wildcard), if the name exists.
    pub(crate) fn node(&self, key: &[u8]) -> Option<&Node> {
        self.nodes.get(key)
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
            origin_key: origin_key.as_bytes().into(),
            origin,
            soa: Vec::new(),
            negative_soa: Vec::new(),
            negative_soa_wire: Vec::new(),
            nodes: FastMap::default(),
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
                wire: Vec::new(),
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
                set.wire = set
                    .records
                    .iter()
                    .map(WireRecord::new)
                    .collect::<Result<_, _>>()?;
            }
            // Lowest type first: ANY is answered with the first RRset (RFC 8482), and
            // Knot picks the lowest type too.
            node.rrsets.sort_by_key(|s| u16::from(s.rtype));
        }
        self.negative_soa_wire = self
            .negative_soa
            .iter()
            .map(WireRecord::new)
            .collect::<Result<_, _>>()?;
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

    /// Where `key` (inside this zone) lands: its node, a wildcard, a delegation or nothing.
    /// `qtype` matters only for DS, which is answered on the parent side of a cut.
    pub(crate) fn find(&self, key: &NameKey, qtype: RecordType) -> Found<'_> {
        let below_apex = key.labels().saturating_sub(self.origin_labels);
        let mut encloser = below_apex;
        for skip in (0..below_apex).rev() {
            let Some(node) = self.nodes.get(key.suffix(skip)) else {
                break;
            };
            if self.has_cuts && node.cut && !(skip == 0 && qtype == RecordType::DS) {
                return Found::Referral(node);
            }
            encloser = skip;
        }
        if encloser == 0 {
            return match self.nodes.get(key.as_bytes()) {
                Some(node) => Found::Node(node),
                None => Found::NxDomain,
            };
        }
        match NameKey::prepend(b"*", key.suffix(encloser))
            .and_then(|k| self.nodes.get(k.as_bytes()))
        {
            Some(source) => Found::Wildcard(source),
            None => Found::NxDomain,
        }
    }

    /// The static `rtype` records at `key` (exact or from a wildcard), for HTTPDNS.
    pub(crate) fn static_records(&self, key: &NameKey, rtype: RecordType) -> Option<&[Record]> {
        match self.find(key, rtype) {
            Found::Node(node) | Found::Wildcard(node) => node.rrset(rtype),
            Found::NxDomain | Found::Referral(_) => None,
        }
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
