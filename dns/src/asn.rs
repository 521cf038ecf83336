//! ASN database: client address → autonomous system number and the MMDB network that decided
//! it (GeoLite2-ASN / GeoIP2-ISP format).

use std::net::IpAddr;
use std::path::Path;

use maxminddb::Reader;
use maxminddb::geoip2::Asn;

use crate::geo::{GeoError, lookup_network, read_bytes, read_file};

/// The outcome of one ASN lookup, found or not.
///
/// Like [`crate::GeoLookup`], an address the database has no AS number for still has a
/// network, and an answer that did not come from an ASN group may be cached by a resolver
/// only within it: a wider ECS scope could cover clients of an ASN group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsnLookup {
    /// The AS number, when the database has one for the address.
    pub asn: Option<u32>,
    /// Prefix length of the database network (with or without data) holding the address,
    /// in the address's own family. On a lookup error this is the full address length.
    pub prefix_len: u8,
}

/// A read-only ASN database held in memory: MaxMind GeoLite2-ASN, GeoIP2-ISP, or any MMDB
/// whose records carry `autonomous_system_number` (DB-IP ASN Lite, for one).
pub struct AsnDb {
    reader: Reader<Vec<u8>>,
}

impl AsnDb {
    /// Reads a database file fully into memory. A City or Country database is refused: it
    /// has no AS numbers, and accepting it would silently match no ASN group at all.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GeoError> {
        Self::checked(read_file(path.as_ref())?)
    }

    /// Wraps database bytes already in memory, with the same check as [`AsnDb::open`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GeoError> {
        Self::checked(read_bytes(bytes)?)
    }

    fn checked(reader: Reader<Vec<u8>>) -> Result<Self, GeoError> {
        let kind = reader.metadata().database_type.to_ascii_lowercase();
        if kind.contains("city") || kind.contains("country") {
            return Err(GeoError::NotAsn(reader.metadata().database_type.clone()));
        }
        Ok(Self { reader })
    }

    /// The database type from its metadata, e.g. `GeoLite2-ASN`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// The AS number of `ip` (if any) and the length of the database network holding it.
    /// Decodes only the number, so the query path allocates nothing.
    pub fn lookup(&self, ip: IpAddr) -> AsnLookup {
        let (result, prefix_len) = lookup_network(&self.reader, ip);
        let asn = result
            .and_then(|r| r.decode::<Asn<'_>>().ok().flatten())
            .and_then(|record| record.autonomous_system_number);
        AsnLookup { asn, prefix_len }
    }

    /// The AS number and the organization the database names for `ip`, for explanations.
    pub fn describe(&self, ip: IpAddr) -> Option<(u32, Option<String>)> {
        let (result, _) = lookup_network(&self.reader, ip);
        let record = result?.decode::<Asn<'_>>().ok()??;
        Some((
            record.autonomous_system_number?,
            record.autonomous_system_organization.map(str::to_owned),
        ))
    }
}

impl std::fmt::Debug for AsnDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsnDb")
            .field("database_type", &self.database_type())
            .field("ip_version", &self.reader.metadata().ip_version)
            .finish()
    }
}
