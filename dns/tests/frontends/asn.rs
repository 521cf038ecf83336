//! ASN client groups over real UDP sockets: precedence (CIDR override > ASN group > GeoIP
//! cell > unknown) and the ECS scope each answer carries.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::RecordType;
use isobar_dns::{AsnDb, Decision, Engine, GeoError, SnapshotError};
use isobar_proto::v1::ClientGroupOverride;

use crate::support::*;

fn asn_engine() -> Arc<Engine> {
    let engine = Engine::with_asn(Some(geo_db()), Some(asn_db()));
    engine.install(&asn_snapshot(1)).unwrap();
    engine
}

/// The A records and the ECS scope of `www` for the ECS subnet `ecs`.
async fn ask(server: std::net::SocketAddr, ecs: &str) -> (Vec<IpAddr>, u8) {
    let r = udp(server, &query(WWW, RecordType::A, true, Some(ecs))).await;
    (addrs(&r.answers), echoed_ecs(&r).expect("ecs echoed").2)
}

#[tokio::test]
async fn an_asn_group_answers_its_clients_scoped_to_the_asn_network() {
    let server = dns_server(asn_engine()).await;
    let addr = server.local_addr();

    // The Paris GeoIP /24 lies inside AS64500's /22: the ASN group decides, and the answer
    // holds for the whole ASN network.
    for ecs in ["198.51.96.0/24", "198.51.97.9/32", "198.51.96.0/20"] {
        assert_eq!(ask(addr, ecs).await, (ips(&["192.0.2.40"]), 22), "{ecs}");
    }
    // AS64501's /25 inside the Frankfurt GeoIP /24.
    assert_eq!(
        ask(addr, "198.51.100.200/32").await,
        (ips(&["192.0.2.40"]), 25)
    );
    // IPv6: AS64500's /33.
    let r = udp(
        addr,
        &query(WWW, RecordType::AAAA, true, Some("2001:db8:8000::/48")),
    )
    .await;
    assert_eq!(addrs(&r.answers), ips(&["2001:db8::40"]));
    assert_eq!(echoed_ecs(&r).unwrap().2, 33);
    server.shutdown().await;
}

#[tokio::test]
async fn a_cidr_override_inside_an_asn_network_wins_and_narrows_the_asn_scope() {
    let server = dns_server(asn_engine()).await;
    let addr = server.local_addr();
    // 203.0.113.128/25 is the "office" override inside AS64500's /24.
    assert_eq!(
        ask(addr, "203.0.113.130/32").await,
        (ips(&["192.0.2.30"]), 25)
    );
    // The rest of the /24 is the ASN group's, scoped so that it leaves the override out.
    assert_eq!(
        ask(addr, "203.0.113.7/32").await,
        (ips(&["192.0.2.40"]), 25)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn outside_every_asn_group_geoip_decides_within_the_asn_network() {
    let server = dns_server(asn_engine()).await;
    let addr = server.local_addr();
    // The lower half of the Frankfurt /24 has no AS: Europe. Its scope is the ASN
    // database's empty /25, not the GeoIP /24, which also holds AS64501's clients.
    assert_eq!(
        ask(addr, "198.51.100.7/32").await,
        (ips(&["192.0.2.10", "192.0.2.11"]), 25)
    );
    // An AS no group lists, without a GeoIP location: the default answer, scoped to the
    // wider of the two networks (both /24 here).
    assert_eq!(ask(addr, "192.0.2.77/32").await, (ips(&["192.0.2.1"]), 24));
    server.shutdown().await;
}

#[tokio::test]
async fn without_an_asn_database_asn_groups_never_match() {
    let engine = Engine::new(Some(geo_db()));
    engine.install(&asn_snapshot(1)).unwrap();
    let server = dns_server(engine).await;
    let addr = server.local_addr();
    assert_eq!(
        ask(addr, "198.51.96.0/24").await,
        (ips(&["192.0.2.10", "192.0.2.11"]), 24)
    );
    assert_eq!(
        ask(addr, "203.0.113.7/32").await,
        (ips(&["192.0.2.20"]), 25)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn asn_answers_are_counted_as_the_group_s_demand() {
    let engine = asn_engine();
    let server = dns_server(Arc::clone(&engine)).await;
    let addr = server.local_addr();
    ask(addr, "198.51.96.0/24").await;
    ask(addr, "198.51.100.200/32").await;
    ask(addr, "203.0.113.130/32").await;
    let mut drained = BTreeMap::new();
    engine.drain_demand(&mut drained);
    let count = |group: &str| drained.get(&(WWW.to_owned(), group.to_owned())).copied();
    assert_eq!(count("group:isp"), Some(2), "{drained:?}");
    assert_eq!(count("group:office"), Some(1), "{drained:?}");

    let answer = engine
        .resolve_service(WWW, isobar_dns::ClientKey::from_addr(ip("198.51.97.1")))
        .unwrap();
    assert_eq!(answer.decision(), Decision::Asn(1));
    server.shutdown().await;
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_city_database_is_refused_as_the_asn_database() {
    // Any City-shaped MMDB will do; build one like the GeoIP fixture.
    let mut w = mmdb_writer::Writer::new("GeoIP2-City");
    w.insert(
        "198.51.100.0/24".parse::<ipnet::IpNet>().unwrap(),
        &serde_json::json!({"location": {"latitude": 1.0, "longitude": 2.0}}),
    )
    .unwrap();
    let err = AsnDb::from_bytes(w.to_bytes().unwrap()).unwrap_err();
    assert!(
        matches!(err, GeoError::NotAsn(ref t) if t == "GeoIP2-City"),
        "{err}"
    );
    assert!(err.to_string().contains("not an ASN database"), "{err}");
    assert_eq!(asn_db().database_type(), "GeoLite2-ASN");
}

#[test]
fn snapshots_with_reserved_or_shared_as_numbers_are_refused() {
    let engine = Engine::with_asn(None, Some(asn_db()));
    for (asns, other, message) in [
        (vec![0], None, "AS0 cannot name a client group"),
        (vec![23456], None, "AS23456 cannot name a client group"),
        (
            vec![64500],
            Some(vec![64500]),
            "AS64500 is also listed by group isp",
        ),
    ] {
        let mut s = asn_snapshot(1);
        s.overrides[1].asns = asns;
        if let Some(asns) = other {
            s.overrides.push(ClientGroupOverride {
                group: "mobile".into(),
                cidrs: Vec::new(),
                asns,
            });
        }
        let err = engine.install(&s).unwrap_err();
        assert!(matches!(err, SnapshotError::Override { .. }), "{err}");
        assert!(err.to_string().contains(message), "{err}");
    }
    assert_eq!(engine.version(), 0);
}
