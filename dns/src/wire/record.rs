//! Resource records pre-encoded once per snapshot, so answering copies bytes instead of
//! serializing structures.

use hickory_proto::rr::{RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use crate::name::NameKey;

/// Types whose RDATA names may be compressed (RFC 3597 §4: the RFC 1035 types).
const TYPE_NS: u16 = 2;
const TYPE_CNAME: u16 = 5;
const TYPE_SOA: u16 = 6;
const TYPE_PTR: u16 = 12;
const TYPE_MX: u16 = 15;

/// One record in wire form: owner, type, TTL, and RDATA with names uncompressed.
#[derive(Debug, Clone)]
pub(crate) struct WireRecord {
    /// Lowercase owner name, wire format.
    pub(crate) owner: Box<[u8]>,
    pub(crate) rtype: u16,
    pub(crate) ttl: u32,
    pub(crate) rdata: Box<[u8]>,
    /// Offsets of the names inside `rdata` the writer may compress, in order.
    compressible: [u16; 2],
    compressible_count: u8,
    /// The name this record points at (CNAME, NS, MX, SRV target), lowercase wire; what
    /// CNAME chasing and additional-section processing look up.
    pub(crate) target: Option<Box<[u8]>>,
}

impl WireRecord {
    /// Encodes `record` (class IN).
    pub(crate) fn new(record: &Record) -> Result<Self, String> {
        let owner = NameKey::new(&record.name).ok_or("owner name too long")?;
        let mut rdata = Vec::new();
        let mut encoder = BinEncoder::new(&mut rdata);
        encoder.set_name_encoding(NameEncoding::Uncompressed);
        record
            .data
            .emit(&mut encoder)
            .map_err(|e| format!("rdata does not encode: {e}"))?;
        if rdata.len() > usize::from(u16::MAX) {
            return Err("rdata longer than 65535 octets".into());
        }
        let rtype = u16::from(record.record_type());
        let mut out = Self {
            owner: owner.as_bytes().into(),
            rtype,
            ttl: record.ttl,
            rdata: rdata.into_boxed_slice(),
            compressible: [0; 2],
            compressible_count: 0,
            target: None,
        };
        let target = match &record.data {
            RData::CNAME(n) => Some(&n.0),
            RData::NS(n) => Some(&n.0),
            RData::MX(mx) => Some(&mx.exchange),
            RData::SRV(srv) => Some(&srv.target),
            _ => None,
        };
        out.target = target.and_then(NameKey::new).map(|k| k.as_bytes().into());
        match rtype {
            TYPE_NS | TYPE_CNAME | TYPE_PTR => out.compressible_at(&[0]),
            TYPE_MX => out.compressible_at(&[2]),
            TYPE_SOA => {
                let mut at = 0;
                NameKey::parse_uncompressed(&out.rdata, &mut at).ok_or("bad SOA MNAME")?;
                out.compressible_at(&[0, at as u16]);
            }
            // SRV targets are never compressed (RFC 2782), nor names in later types.
            _ => {}
        }
        Ok(out)
    }

    fn compressible_at(&mut self, offsets: &[u16]) {
        for (i, &o) in offsets.iter().take(2).enumerate() {
            self.compressible[i] = o;
        }
        self.compressible_count = offsets.len().min(2) as u8;
    }

    /// Offsets of compressible names inside `rdata`.
    pub(crate) fn compressible(&self) -> &[u16] {
        &self.compressible[..usize::from(self.compressible_count)]
    }
}
