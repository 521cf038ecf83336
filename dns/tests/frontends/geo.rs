//! GeoIP lookups against synthesized City-shaped databases.

use std::net::IpAddr;

use isobar_dns::{GeoDb, GeoHit};
use mmdb_writer::{IpVersion, Writer};

use crate::support::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn ipv4_in_an_ipv6_tree_reports_ipv4_prefix_lengths() {
    let db = geo_db();
    let hit = db.lookup(ip("198.51.100.7")).unwrap();
    assert_eq!(
        hit,
        GeoHit {
            lat: FRANKFURT.0,
            lon: FRANKFURT.1,
            prefix_len: 24
        }
    );
    assert_eq!(db.lookup(ip("127.9.9.9")).unwrap().prefix_len, 8);
    // IPv4-mapped IPv6 is the same client, seen through the IPv6 tree: IPv6 lengths.
    assert_eq!(
        db.lookup(ip("::ffff:198.51.100.7")).unwrap().prefix_len,
        96 + 24
    );
    assert_eq!(db.lookup(ip("2001:db8:5::1")).unwrap().prefix_len, 32);
}

#[test]
fn records_without_coordinates_and_unknown_addresses_are_not_located() {
    let db = geo_db();
    assert_eq!(db.lookup(ip("192.0.2.1")), None);
    let found = db.locate(ip("192.0.2.1"));
    assert_eq!((found.location, found.prefix_len), (None, 24));
    let missing = db.locate(ip("10.0.0.1"));
    assert_eq!(missing.location, None);
    assert!(
        missing.prefix_len > 0 && missing.prefix_len < 32,
        "{missing:?}"
    );
}

#[test]
fn ipv4_only_databases_and_files() {
    let mut w = Writer::builder("GeoLite2-City")
        .ip_version(IpVersion::V4)
        .build();
    #[derive(serde::Serialize)]
    struct Rec {
        location: Loc,
    }
    #[derive(serde::Serialize)]
    struct Loc {
        latitude: f64,
        longitude: f64,
    }
    let rec = Rec {
        location: Loc {
            latitude: 1.5,
            longitude: 2.5,
        },
    };
    w.insert("203.0.113.0/25".parse::<ipnet::IpNet>().unwrap(), &rec)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.mmdb");
    std::fs::write(&path, w.to_bytes().unwrap()).unwrap();

    let db = GeoDb::open(&path).unwrap();
    assert_eq!(db.database_type(), "GeoLite2-City");
    assert_eq!(
        db.lookup(ip("203.0.113.9")),
        Some(GeoHit {
            lat: 1.5,
            lon: 2.5,
            prefix_len: 25
        })
    );
    // No IPv6 client can ever be located here: the whole family shares one answer.
    assert_eq!(db.locate(ip("2001:db8::1")).prefix_len, 0);

    assert!(GeoDb::open(dir.path().join("absent.mmdb")).is_err());
    assert!(GeoDb::from_bytes(b"not a database".to_vec()).is_err());
}
