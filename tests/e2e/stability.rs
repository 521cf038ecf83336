//! GSLB answers are stable: a client's answer changes only when its own mapping changes, and
//! the answer order is deterministic (no shuffling), compared byte for byte on the wire.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use isobar_proto::v1::ApplyConfigRequest;
use isobar_proto::v1::admin_client::AdminClient;
use tokio::net::UdpSocket;

use crate::support::{Stack, addresses, eventually, query, world_toml};

/// Sends one query with a fixed id and returns the raw response bytes.
async fn raw_udp(server: SocketAddr, name: &str, rtype: RecordType, ecs: &str) -> Vec<u8> {
    let mut msg = query(name, rtype, Some(ecs));
    msg.metadata.id = 0x1234;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket
        .send_to(&msg.to_vec().expect("encode"), server)
        .await
        .expect("send");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf))
        .await
        .expect("answer in time")
        .expect("recv");
    buf.truncate(n);
    buf
}

/// Clients (ECS subnets) and the question each asks.
const CLIENTS: [(&str, RecordType); 6] = [
    ("192.0.2.77/24", RecordType::A),      // Berlin (GeoIP)
    ("198.51.100.77/24", RecordType::A),   // New York (GeoIP)
    ("203.0.113.5/24", RecordType::A),     // Singapore (GeoIP)
    ("2001:db8:2::/48", RecordType::AAAA), // New York over IPv6
    ("192.0.2.77/24", RecordType::AAAA),   // Berlin, AAAA
    ("10.10.1.0/24", RecordType::A),       // the "office" CIDR override
];
const OFFICE: usize = 5;

async fn answers(stack: &Stack) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (ecs, rtype) in CLIENTS {
        out.push(raw_udp(stack.dns(), "www.example.test.", rtype, ecs).await);
    }
    out
}

#[tokio::test]
async fn answers_are_byte_identical_across_repeats_and_unrelated_config_changes() {
    let stack = Stack::start().await;
    let before = answers(&stack).await;

    // Deterministic: the same question gets the same bytes every time.
    for _ in 0..50 {
        assert_eq!(answers(&stack).await, before, "answers must not shuffle");
    }
    let office = hickory_proto::op::Message::from_vec(&before[OFFICE]).expect("decode");
    assert_eq!(addresses(&office), vec!["203.0.113.10", "192.0.2.10"]);

    // A new config: only the office group moves (ap -> eu), plus unrelated changes (a static
    // record's TTL, a new static record, a new region nobody maps to).
    let engine = stack.running.engine.as_ref().expect("engine");
    let version_before = engine.version();
    let changed = world_toml(&stack.listeners)
        .replace(
            "cidrs = [\"10.10.0.0/16\"]\nregion = \"ap\"",
            "cidrs = [\"10.10.0.0/16\"]\nregion = \"eu\"",
        )
        .replace(
            "\"static 300 IN A 192.0.2.200\",",
            "\"static 600 IN A 192.0.2.200\",\n  \"extra 60 IN TXT \\\"unrelated\\\"\",",
        )
        .replacen(
            "[[pops]]",
            "[[regions]]\nname = \"sa\"\nlat = -15.0\nlon = -55.0\n\n[[pops]]",
            1,
        );
    assert_ne!(changed, world_toml(&stack.listeners), "edits applied");
    let mut admin = AdminClient::connect(stack.grpc_url())
        .await
        .expect("connect");
    let applied = admin
        .apply_config(ApplyConfigRequest {
            source_name: "changed.toml".into(),
            toml: changed,
            ..Default::default()
        })
        .await
        .expect("apply")
        .into_inner();
    assert!(applied.changed, "{:?}", applied.diff);
    eventually(Duration::from_secs(10), || async {
        engine.version() > version_before
    })
    .await;

    let after = answers(&stack).await;
    // The office client's mapping changed, so its answer did (the test can see a change)...
    let office = hickory_proto::op::Message::from_vec(&after[OFFICE]).expect("decode");
    assert_eq!(addresses(&office), vec!["192.0.2.10", "198.51.100.10"]);
    // ...and nobody else's did, down to the byte: same addresses, same order, same TTL/scope.
    for (i, (old, new)) in before.iter().zip(&after).enumerate() {
        if i != OFFICE {
            assert_eq!(old, new, "client {:?} saw its answer change", CLIENTS[i]);
        }
    }
    stack.running.stop().await;
}
