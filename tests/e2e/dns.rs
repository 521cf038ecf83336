//! The DNS frontend answers from the scheduler's snapshot over UDP and TCP.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Stack, addresses, ecs_of, query, tcp, udp};

#[tokio::test]
async fn ecs_subnets_on_two_continents_get_answers_from_two_pops() {
    let stack = Stack::start().await;
    let berlin = udp(
        stack.dns(),
        &query("www.example.test.", RecordType::A, Some("192.0.2.77/24")),
    )
    .await;
    let new_york = udp(
        stack.dns(),
        &query("www.example.test.", RecordType::A, Some("198.51.100.77/24")),
    )
    .await;
    assert_eq!(berlin.metadata.response_code, ResponseCode::NoError);
    assert!(berlin.metadata.authoritative, "AA must be set");
    // Nearest first, then the next nearest as fallback.
    assert_eq!(addresses(&berlin), vec!["192.0.2.10", "198.51.100.10"]);
    assert_eq!(addresses(&new_york), vec!["198.51.100.10", "192.0.2.10"]);
    // The scope is the GeoIP network that decided (a /24 in the demo database).
    let scope = ecs_of(&berlin).expect("ECS echoed");
    assert_eq!((scope.source_prefix(), scope.scope_prefix()), (24, 24));
    assert!(berlin.answers.iter().all(|r| r.ttl == 20));
    stack.running.stop().await;
}

#[tokio::test]
async fn tcp_gives_the_same_answers_and_ipv6_works() {
    let stack = Stack::start().await;
    let over_tcp = tcp(
        stack.dns(),
        &query("www.example.test.", RecordType::A, Some("203.0.113.5/24")),
    )
    .await;
    assert_eq!(addresses(&over_tcp)[0], "203.0.113.10");
    let v6 = tcp(
        stack.dns(),
        &query(
            "www.example.test.",
            RecordType::AAAA,
            Some("2001:db8:2::/48"),
        ),
    )
    .await;
    assert_eq!(
        addresses(&v6),
        vec!["2001:db8:a::10", "2001:db8:f::10"],
        "New York over IPv6 ECS"
    );
    stack.running.stop().await;
}

#[tokio::test]
async fn without_ecs_the_source_address_decides() {
    let stack = Stack::start().await;
    // 127.0.0.0/8 stands for San Francisco in the demo GeoIP database: Ashburn is nearest.
    let resp = udp(
        stack.dns(),
        &query("www.example.test.", RecordType::A, None),
    )
    .await;
    assert_eq!(addresses(&resp), vec!["198.51.100.10", "192.0.2.10"]);
    assert!(ecs_of(&resp).is_none());
    stack.running.stop().await;
}

#[tokio::test]
async fn cidr_override_beats_geoip() {
    let stack = Stack::start().await;
    let resp = udp(
        stack.dns(),
        &query("www.example.test.", RecordType::A, Some("10.10.3.0/24")),
    )
    .await;
    assert_eq!(
        addresses(&resp)[0],
        "203.0.113.10",
        "the office group is pinned to ap"
    );
    assert_eq!(ecs_of(&resp).expect("ECS echoed").scope_prefix(), 16);
    stack.running.stop().await;
}

#[tokio::test]
async fn refused_nxdomain_and_static_records() {
    let stack = Stack::start().await;
    let refused = udp(
        stack.dns(),
        &query("www.elsewhere.test.", RecordType::A, None),
    )
    .await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert!(!refused.metadata.recursion_available);

    let nx = udp(
        stack.dns(),
        &query("nope.example.test.", RecordType::A, None),
    )
    .await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.metadata.authoritative);
    assert!(nx.answers.is_empty());
    assert_eq!(nx.authorities.len(), 1);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);

    let nodata = udp(
        stack.dns(),
        &query("static.example.test.", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);

    let stat = tcp(
        stack.dns(),
        &query("STATIC.Example.TEST.", RecordType::A, None),
    )
    .await;
    assert_eq!(addresses(&stat), vec!["192.0.2.200"]);
    assert_eq!(
        stat.queries[0].name().to_string(),
        "STATIC.Example.TEST.",
        "question echoed as sent"
    );
    stack.running.stop().await;
}
