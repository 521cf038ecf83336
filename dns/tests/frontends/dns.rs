//! The DNS frontend over real UDP and TCP sockets.

use std::time::Duration;

use hickory_proto::op::{Edns, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{RData, RecordType};
use isobar_dns::{DnsLimits, DnsServer, Engine};

use crate::support::*;

#[tokio::test]
async fn ecs_subnets_in_different_cells_get_different_answers_scoped_to_the_geoip_network() {
    let server = dns_server(engine_with(1)).await;
    let addr = server.local_addr();

    // Frankfurt /32 and Paris /20: both Europe, both scoped to their /24 GeoIP network,
    // wider or narrower than what the resolver sent.
    for ecs in ["198.51.100.7/32", "198.51.96.0/20"] {
        let r = udp(addr, &query(WWW, RecordType::A, true, Some(ecs))).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{ecs}");
        assert_eq!(
            addrs(&r.answers),
            ips(&["192.0.2.10", "192.0.2.11"]),
            "{ecs}"
        );
        let (echo_addr, source, scope) = echoed_ecs(&r).expect("ecs echoed");
        let sent: ClientSubnet = ecs.parse().unwrap();
        assert_eq!((echo_addr, source), (sent.addr(), sent.source_prefix()));
        assert_eq!(scope, 24, "{ecs}");
        assert!(r.answers.iter().all(|rec| rec.ttl == 30));
    }

    let r = udp(
        addr,
        &query(WWW, RecordType::A, true, Some("203.0.113.7/32")),
    )
    .await;
    assert_eq!(addrs(&r.answers), ips(&["192.0.2.20"]));
    // 203.0.113.128/25 is an override: /25 is the widest prefix around .7 that excludes it.
    assert_eq!(echoed_ecs(&r).unwrap().2, 25);
    server.shutdown().await;
}

#[tokio::test]
async fn an_override_beats_geoip_and_reports_its_own_prefix() {
    let server = dns_server(engine_with(1)).await;
    let addr = server.local_addr();
    // Inside the New York GeoIP network, but also inside the office override.
    let r = udp(
        addr,
        &query(WWW, RecordType::A, true, Some("203.0.113.200/32")),
    )
    .await;
    assert_eq!(addrs(&r.answers), ips(&["192.0.2.30"]));
    assert_eq!(echoed_ecs(&r).unwrap().2, 25);
    // Outside every GeoIP network: the override prefix decides alone.
    let r = udp(
        addr,
        &query(WWW, RecordType::A, true, Some("100.64.9.0/24")),
    )
    .await;
    assert_eq!(addrs(&r.answers), ips(&["192.0.2.30"]));
    assert_eq!(echoed_ecs(&r).unwrap().2, 10);
    server.shutdown().await;
}

#[tokio::test]
async fn without_ecs_the_source_address_decides() {
    let server = dns_server(engine_with(1)).await;
    let addr = server.local_addr();
    // 127.0.0.1 is in New York in the fixture database.
    for edns in [false, true] {
        let r = udp(addr, &query(WWW, RecordType::A, edns, None)).await;
        assert_eq!(addrs(&r.answers), ips(&["192.0.2.20"]));
        assert_eq!(
            r.edns.is_some(),
            edns,
            "OPT only in answers to EDNS queries"
        );
        assert!(echoed_ecs(&r).is_none());
    }
    // A service that ignores ECS steers on the source and says the answer fits every
    // client of this resolver (scope 0).
    let r = udp(
        addr,
        &query(NOECS, RecordType::A, true, Some("198.51.100.7/32")),
    )
    .await;
    assert_eq!(addrs(&r.answers), ips(&["192.0.2.20"]));
    assert_eq!(echoed_ecs(&r).unwrap().2, 0);
    // SOURCE PREFIX-LENGTH 0: the resolver opts out; steer on it, scope 0.
    let r = udp(addr, &query(WWW, RecordType::A, true, Some("0.0.0.0/0"))).await;
    assert_eq!(addrs(&r.answers), ips(&["192.0.2.20"]));
    assert_eq!(echoed_ecs(&r).unwrap().2, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_locations_get_the_default_answer_scoped_to_their_network() {
    let server = dns_server(engine_with(1)).await;
    let addr = server.local_addr();
    // In the database with a country but no coordinates.
    let r = udp(
        addr,
        &query(WWW, RecordType::A, true, Some("192.0.2.77/32")),
    )
    .await;
    assert_eq!(addrs(&r.answers), ips(&["192.0.2.1"]));
    assert_eq!(echoed_ecs(&r).unwrap().2, 24);
    // Not in the database at all: still scoped to the empty region, never 0, or the
    // resolver would hand the default answer to every client.
    let r = udp(addr, &query(WWW, RecordType::A, true, Some("10.1.2.0/24"))).await;
    assert_eq!(addrs(&r.answers), ips(&["192.0.2.1"]));
    let scope = echoed_ecs(&r).unwrap().2;
    assert!((1..=32).contains(&scope), "scope {scope}");
    server.shutdown().await;
}

#[tokio::test]
async fn aaaa_answers_come_from_the_ipv6_lists_and_ipv6_ecs_works() {
    let server = dns_server(engine_with(1)).await;
    let addr = server.local_addr();
    let r = udp(
        addr,
        &query(WWW, RecordType::AAAA, true, Some("2001:db8:1::/48")),
    )
    .await;
    assert_eq!(addrs(&r.answers), ips(&["2001:db8::10"]));
    assert_eq!(echoed_ecs(&r).unwrap().2, 32);
    // The office answer has no IPv6 address: NODATA, with the SOA and still scoped.
    let r = udp(
        addr,
        &query(WWW, RecordType::AAAA, true, Some("100.64.0.0/16")),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(echoed_ecs(&r).unwrap().2, 10);
    server.shutdown().await;
}

#[tokio::test]
async fn tcp_answers_like_udp_on_the_same_port() {
    let server = dns_server(engine_with(1)).await;
    let addr = server.local_addr();
    let r = tcp(
        addr,
        &query(WWW, RecordType::A, true, Some("198.51.100.7/32")),
    )
    .await;
    assert_eq!(addrs(&r.answers), ips(&["192.0.2.10", "192.0.2.11"]));
    assert_eq!(echoed_ecs(&r).unwrap().2, 24);
    assert!(r.metadata.authoritative);
    server.shutdown().await;
}

#[tokio::test]
async fn static_records_are_authoritative_and_the_question_is_echoed_as_sent() {
    let server = dns_server(engine_with(1)).await;
    let addr = server.local_addr();
    let r = udp(
        addr,
        &query("TxT.Demo.ISOBAR.test.", RecordType::TXT, false, None),
    )
    .await;
    assert!(r.metadata.authoritative);
    assert!(!r.metadata.recursion_available);
    assert_eq!(r.queries[0].name().to_ascii(), "TxT.Demo.ISOBAR.test.");
    let RData::TXT(txt) = &r.answers[0].data else {
        panic!("not TXT: {:?}", r.answers);
    };
    assert_eq!(txt.to_string(), "hello world");

    let r = udp(addr, &query(ZONE, RecordType::SOA, false, None)).await;
    let RData::SOA(soa) = &r.answers[0].data else {
        panic!("not SOA");
    };
    assert_eq!(soa.serial, 2024_0001, "the snapshot's serial is served");

    let r = udp(addr, &query(ZONE, RecordType::MX, false, None)).await;
    assert_eq!(r.answers[0].record_type(), RecordType::MX);

    // A CNAME inside the zone is followed, here to a GSLB name (127.0.0.1 is New York).
    let r = udp(
        addr,
        &query("alias.demo.isobar.test.", RecordType::A, false, None),
    )
    .await;
    assert_eq!(r.answers.len(), 2);
    assert_eq!(r.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(addrs(&r.answers), ips(&["192.0.2.20"]));

    // A wildcard is synthesized under the query name.
    let r = udp(
        addr,
        &query("X.wild.demo.isobar.test.", RecordType::A, false, None),
    )
    .await;
    assert_eq!(addrs(&r.answers), ips(&["192.0.2.56"]));
    assert_eq!(r.answers[0].name.to_ascii(), "X.wild.demo.isobar.test.");
    server.shutdown().await;
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa_with_the_negative_ttl() {
    let server = dns_server(engine_with(1)).await;
    let addr = server.local_addr();
    let cases = [
        (
            "nope.demo.isobar.test.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        (
            "txt.demo.isobar.test.",
            RecordType::A,
            ResponseCode::NoError,
        ),
        (WWW, RecordType::MX, ResponseCode::NoError),
        // An empty non-terminal exists: NODATA, not NXDOMAIN.
        ("b.demo.isobar.test.", RecordType::A, ResponseCode::NoError),
        (
            "nope.wild.demo.isobar.test.",
            RecordType::MX,
            ResponseCode::NoError,
        ),
    ];
    for (qname, qtype, code) in cases {
        let r = udp(addr, &query(qname, qtype, false, None)).await;
        assert_eq!(r.metadata.response_code, code, "{qname} {qtype}");
        assert!(r.answers.is_empty(), "{qname} {qtype}");
        assert!(r.metadata.authoritative, "{qname} {qtype}");
        assert_eq!(r.authorities.len(), 1, "{qname} {qtype}");
        let soa = &r.authorities[0];
        assert_eq!(soa.record_type(), RecordType::SOA);
        assert_eq!(soa.ttl, 300, "min(SOA TTL 3600, MINIMUM 300)");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn delegations_get_a_referral_with_glue() {
    let server = dns_server(engine_with(1)).await;
    let r = udp(
        server.local_addr(),
        &query("host.sub.demo.isobar.test.", RecordType::A, false, None),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(!r.metadata.authoritative);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::NS);
    assert_eq!(addrs(&r.additionals), ips(&["192.0.2.55"]));
    server.shutdown().await;
}

#[tokio::test]
async fn refused_formerr_notimp_badvers() {
    let server = dns_server(engine_with(1)).await;
    let addr = server.local_addr();

    let r = udp(addr, &query("www.example.com.", RecordType::A, false, None)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(!r.metadata.recursion_available);
    assert!(r.answers.is_empty());

    let mut two = query(WWW, RecordType::A, false, None);
    two.add_query(Query::query(name(ZONE), RecordType::SOA));
    let r = udp(addr, &two).await;
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);

    let mut notify = query(ZONE, RecordType::SOA, false, None);
    notify.metadata.op_code = OpCode::Notify;
    let r = udp(addr, &notify).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NotImp);

    // ECS address bits beyond SOURCE PREFIX-LENGTH (RFC 7871 §6).
    let mut bad_ecs = query(WWW, RecordType::A, false, None);
    let mut opt = Edns::new();
    let sloppy = ClientSubnet::new("198.51.100.7".parse().unwrap(), 20, 0);
    opt.options_mut().insert(EdnsOption::Subnet(sloppy));
    bad_ecs.set_edns(opt);
    let r = udp(addr, &bad_ecs).await;
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);

    let mut v1 = query(WWW, RecordType::A, true, None);
    if let Some(e) = v1.edns.as_mut() {
        e.set_version(1);
    }
    let r = udp(addr, &v1).await;
    // 16 is BADVERS in an OPT context (hickory decodes it under its TSIG alias BADSIG).
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert_eq!(r.edns.as_ref().map(Edns::version), Some(0));
    server.shutdown().await;
}

#[tokio::test]
async fn servfail_until_the_first_snapshot_then_newer_snapshots_swap_answers() {
    let engine = Engine::new(Some(geo_db()));
    let server = dns_server(engine.clone()).await;
    let addr = server.local_addr();
    let ask = query(WWW, RecordType::A, true, Some("192.0.2.77/32"));

    let r = udp(addr, &ask).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);

    assert_eq!(engine.install(&snapshot(5, "192.0.2.5")).unwrap(), 5);
    assert_eq!(addrs(&udp(addr, &ask).await.answers), ips(&["192.0.2.5"]));

    assert_eq!(engine.install(&snapshot(6, "192.0.2.6")).unwrap(), 6);
    assert_eq!(addrs(&udp(addr, &ask).await.answers), ips(&["192.0.2.6"]));

    // An older (or equal) version is ignored; the newest stays served.
    assert_eq!(engine.install(&snapshot(4, "192.0.2.4")).unwrap(), 6);
    assert_eq!(engine.install(&snapshot(6, "192.0.2.4")).unwrap(), 6);
    assert_eq!(addrs(&udp(addr, &ask).await.answers), ips(&["192.0.2.6"]));
    server.shutdown().await;
}

#[tokio::test]
async fn queries_over_the_in_flight_cap_are_dropped_and_counted() {
    let limits = DnsLimits {
        max_in_flight: 4,
        ..DnsLimits::default()
    };
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), engine_with(1), limits)
        .await
        .unwrap();
    let addr = server.local_addr();
    let ask = query(WWW, RecordType::A, false, None);

    let held = server.occupy_all_slots().expect("all slots free");
    assert_eq!(server.in_flight(), 4);
    let r = udp_exchange(addr, &ask, Duration::from_millis(300)).await;
    assert!(r.is_none(), "answered over the cap: {r:?}");
    assert_eq!(server.dropped_queries(), 1);

    drop(held);
    assert_eq!(addrs(&udp(addr, &ask).await.answers), ips(&["192.0.2.20"]));
    assert_eq!(server.dropped_queries(), 1);
    assert_eq!(server.in_flight(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_lone_query_to_an_idle_server_is_answered_at_once_and_shutdown_is_prompt() {
    let server = dns_server(engine_with(1)).await;
    let addr = server.local_addr();
    let ask = query(WWW, RecordType::A, false, None);
    let mut round_trips = Vec::new();
    for _ in 0..5 {
        // Idle for longer than a UDP thread's cancellation poll: each query meets threads
        // asleep in the kernel, with no batch to fill and nothing queued behind it.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let start = std::time::Instant::now();
        let r = udp(addr, &ask).await;
        round_trips.push(start.elapsed());
        assert_eq!(addrs(&r.answers), ips(&["192.0.2.20"]));
    }
    round_trips.sort();
    assert!(
        round_trips[2] < Duration::from_millis(20),
        "median round trip of a lone query: {round_trips:?}"
    );
    let start = std::time::Instant::now();
    server.shutdown().await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn zero_in_flight_is_rejected_and_shutdown_frees_the_port() {
    let engine = engine_with(1);
    let zero = DnsLimits {
        max_in_flight: 0,
        ..DnsLimits::default()
    };
    assert!(
        DnsServer::bind("127.0.0.1:0".parse().unwrap(), engine.clone(), zero)
            .await
            .is_err()
    );

    let server = dns_server(engine.clone()).await;
    let addr = server.local_addr();
    server.shutdown().await;
    let again = DnsServer::bind(addr, engine, DnsLimits::default())
        .await
        .unwrap();
    assert_eq!(again.local_addr(), addr);
    let r = udp(addr, &query(WWW, RecordType::A, false, None)).await;
    assert_eq!(r.metadata.message_type, MessageType::Response);
    again.shutdown().await;
}
