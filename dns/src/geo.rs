//! GeoIP: client address → (latitude, longitude) and the MMDB network that decided it.

use std::cell::RefCell;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use maxminddb::{LookupResult, Reader};
use serde::Deserialize;

/// Why a GeoIP (City or ASN) database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file could not be read or is not a valid MMDB database.
    #[error("cannot open geoip database {path}: {source}")]
    Open {
        /// The path given.
        path: String,
        /// The reader's error.
        source: maxminddb::MaxMindDbError,
    },
    /// The bytes are not a valid MMDB database.
    #[error("invalid geoip database: {0}")]
    Invalid(maxminddb::MaxMindDbError),
    /// A database given as the ASN database holds locations, not AS numbers.
    #[error(
        "database type {0} is not an ASN database (expected GeoLite2-ASN, GeoIP2-ISP or the like)"
    )]
    NotAsn(String),
}

/// A located client address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoHit {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Prefix length of the database network holding the address, in the address's own
    /// family (an IPv4 address in an IPv6-tree database reports an IPv4 length).
    pub prefix_len: u8,
}

/// The outcome of one lookup, located or not.
///
/// An unlocated address still has a network: the database region without data that holds
/// it. ECS answers must carry that length as their scope, not 0, or a resolver would reuse
/// the "location unknown" answer for every client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoLookup {
    /// (latitude, longitude) when the database has a location for the address.
    pub location: Option<(f64, f64)>,
    /// Prefix length of the database network (with or without data) holding the address.
    /// On a lookup error this is the full address length, the only scope that is safe.
    pub prefix_len: u8,
}

/// A read-only GeoIP2/GeoLite2 City-shaped database (also DB-IP City Lite), held in memory.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
    /// Unique per opened database, so the per-thread lookup cache never serves one
    /// database's answer for another's.
    id: u64,
}

/// Source of [`GeoDb::id`]; 0 is never handed out, so an empty cache slot never matches.
static NEXT_DB_ID: AtomicU64 = AtomicU64::new(1);

/// Slots in each thread's lookup cache (a power of two).
const CACHE_SLOTS: usize = 4096;

/// One cached lookup: (database id, address, result).
type CacheSlot = (u64, IpAddr, GeoLookup);

thread_local! {
    /// A direct-mapped cache of recent lookups per query thread. Resolvers send the same
    /// ECS prefixes again and again, and decoding an MMDB record costs more than the rest of
    /// the answer (gdnsd avoids it by compiling the whole database into its own tree at
    /// load time); the cache keeps the query path free of locks and allocation.
    static LOOKUPS: RefCell<Box<[CacheSlot]>> = RefCell::new(
        vec![(0, IpAddr::from([0u8; 4]), GeoLookup { location: None, prefix_len: 0 }); CACHE_SLOTS]
            .into_boxed_slice(),
    );
}

/// The cache slot of `ip`: a multiplicative hash of its bits.
fn slot_of(ip: IpAddr) -> usize {
    let bits = match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) ^ (1 << 127),
    };
    let folded = (bits as u64) ^ ((bits >> 64) as u64);
    (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as usize % CACHE_SLOTS
}

/// The subset of a City record we read. Everything else is skipped without decoding.
#[derive(Deserialize)]
struct CityLocation {
    location: Option<Location>,
}

/// The country part of a City or Country record.
#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow)]
    country: Option<CountryCode<'a>>,
}

#[derive(Deserialize)]
struct CountryCode<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// Reads an MMDB file fully into memory.
pub(crate) fn read_file(path: &Path) -> Result<Reader<Vec<u8>>, GeoError> {
    Reader::open_readfile(path).map_err(|source| GeoError::Open {
        path: path.display().to_string(),
        source,
    })
}

/// Wraps MMDB bytes already in memory.
pub(crate) fn read_bytes(bytes: Vec<u8>) -> Result<Reader<Vec<u8>>, GeoError> {
    Reader::from_source(bytes).map_err(GeoError::Invalid)
}

impl GeoDb {
    /// Reads a database file fully into memory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GeoError> {
        let reader = read_file(path.as_ref())?;
        Ok(Self::with_reader(reader))
    }

    /// Wraps database bytes already in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GeoError> {
        let reader = read_bytes(bytes)?;
        Ok(Self::with_reader(reader))
    }

    fn with_reader(reader: Reader<Vec<u8>>) -> Self {
        Self {
            reader,
            id: NEXT_DB_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The database type from its metadata, e.g. `GeoLite2-City`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// The location of `ip`, if the database has one.
    pub fn lookup(&self, ip: IpAddr) -> Option<GeoHit> {
        let found = self.locate(ip);
        found.location.map(|(lat, lon)| GeoHit {
            lat,
            lon,
            prefix_len: found.prefix_len,
        })
    }

    /// The location of `ip` (if any) and the length of the database network holding it,
    /// from this thread's cache of recent lookups when it holds `ip`.
    pub fn locate(&self, ip: IpAddr) -> GeoLookup {
        let slot = slot_of(ip);
        let cached = LOOKUPS.with_borrow(|cache| {
            let (id, at, found) = cache[slot];
            (id == self.id && at == ip).then_some(found)
        });
        if let Some(found) = cached {
            return found;
        }
        let found = self.locate_uncached(ip);
        LOOKUPS.with_borrow_mut(|cache| cache[slot] = (self.id, ip, found));
        found
    }

    /// [`Self::locate`] straight from the database.
    fn locate_uncached(&self, ip: IpAddr) -> GeoLookup {
        let (result, prefix_len) = lookup_network(&self.reader, ip);
        let Some(result) = result else {
            return GeoLookup {
                location: None,
                prefix_len,
            };
        };
        let location = match result.decode::<CityLocation>() {
            Ok(Some(CityLocation {
                location:
                    Some(Location {
                        latitude: Some(lat),
                        longitude: Some(lon),
                    }),
            })) if lat.is_finite() && lon.is_finite() => Some((lat, lon)),
            _ => None,
        };
        GeoLookup {
            location,
            prefix_len,
        }
    }
}

/// Looks `ip` up in `reader`: the record's handle (`None` on a lookup error) and the prefix
/// length of the database network holding `ip`, with or without data, in `ip`'s own family.
///
/// Shared by the City and the ASN database, so the ECS scope of an answer means the same
/// thing whichever database decided it.
pub(crate) fn lookup_network(
    reader: &Reader<Vec<u8>>,
    ip: IpAddr,
) -> (Option<LookupResult<'_, Vec<u8>>>, u8) {
    // No `to_canonical()` here: an ECS address of family IPv6 must get an IPv6 prefix
    // length back, even when it is IPv4-mapped.
    let full = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let Ok(result) = reader.lookup(ip) else {
        // An IPv6 address against an IPv4-only database: nothing in the database can ever
        // match any IPv6 client, so the whole family shares the answer.
        let len = if ip.is_ipv6() && reader.metadata().ip_version == 4 {
            0
        } else {
            full
        };
        return (None, len);
    };
    let prefix_len = match result.network() {
        // maxminddb already reports IPv4 lengths for IPv4 lookups in an IPv6 tree, except
        // when the lookup ended above the IPv4 subtree: that network is wider than all of
        // IPv4, so in IPv4 terms it is /0.
        Ok(net) if net.is_ipv4() == ip.is_ipv4() => net.prefix(),
        Ok(_) => 0,
        Err(_) => full,
    };
    (Some(result), prefix_len)
}

impl GeoDb {
    /// The ISO 3166-1 alpha-2 country of `ip` (upper case), if the database has one.
    pub fn country(&self, ip: IpAddr) -> Option<[u8; 2]> {
        let result = self.reader.lookup(ip).ok()?;
        let record: CountryRecord<'_> = result.decode().ok()??;
        match record.country?.iso_code?.as_bytes() {
            [a, b] => Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()]),
            _ => None,
        }
    }
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("database_type", &self.database_type())
            .field("ip_version", &self.reader.metadata().ip_version)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct City {
        location: Loc,
    }

    #[derive(serde::Serialize)]
    struct Loc {
        latitude: f64,
        longitude: f64,
    }

    /// A database placing 198.51.100.0/24 at (`lat`, 8.0).
    fn db(lat: f64) -> GeoDb {
        let mut w = mmdb_writer::Writer::new("GeoIP2-City");
        let city = City {
            location: Loc {
                latitude: lat,
                longitude: 8.0,
            },
        };
        w.insert("198.51.100.0/24".parse::<ipnet::IpNet>().unwrap(), &city)
            .unwrap();
        GeoDb::from_bytes(w.to_bytes().unwrap()).unwrap()
    }

    #[test]
    fn cached_lookups_equal_the_database_and_never_cross_databases() {
        let (a, b) = (db(50.0), db(-33.0));
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(a.locate(ip), a.locate_uncached(ip));
            assert_eq!(a.locate(ip).location, Some((50.0, 8.0)));
            assert_eq!(b.locate(ip).location, Some((-33.0, 8.0)));
            assert_eq!(a.locate(ip).prefix_len, 24);
        }
        // Addresses sharing a slot evict each other without mixing up their answers.
        let other: IpAddr = "203.0.113.9".parse().unwrap();
        let clash = (0u32..)
            .map(|n| IpAddr::from((u32::from_be_bytes([203, 0, 113, 0]) + n).to_be_bytes()))
            .find(|c| *c != other && slot_of(*c) == slot_of(ip))
            .unwrap_or(other);
        assert_eq!(a.locate(clash).location, None);
        assert_eq!(a.locate(ip).location, Some((50.0, 8.0)));
    }
}
