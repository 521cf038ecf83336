//! Abuse bounds over real sockets: the TCP connection cap, the TCP idle timeout, and
//! response rate limiting with slip, each visible in the counters.

use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use isobar_dns::{DnsLimits, DnsServer, RrlLimits};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UdpSocket};

use crate::support::*;

/// Reads until EOF or `wait`; true if the server closed the connection in time.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn tcp_connections_over_the_cap_are_closed_and_counted() {
    let limits = DnsLimits {
        max_tcp_connections: 2,
        ..DnsLimits::default()
    };
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), engine_with(1), limits)
        .await
        .unwrap();
    let addr = server.local_addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // Give the accept loop time to take both slots.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(2)).await);
    assert_eq!(server.stats().snapshot().tcp_rejected, 1);

    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = tcp(addr, &query(WWW, RecordType::A, false, None)).await;
    assert_eq!(
        addrs(&r.answers),
        ips(&["192.0.2.20"]),
        "a freed slot serves again"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    let limits = DnsLimits {
        tcp_idle_timeout: Duration::from_millis(200),
        ..DnsLimits::default()
    };
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), engine_with(1), limits)
        .await
        .unwrap();
    let mut idle = TcpStream::connect(server.local_addr()).await.unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(3)).await);
    assert_eq!(server.stats().snapshot().tcp_idle_closed, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn rrl_limits_a_prefix_slips_tc_answers_and_spares_tcp() {
    let limits = DnsLimits {
        rrl: RrlLimits {
            responses_per_second: 5,
            slip: 2,
            ..RrlLimits::default()
        },
        ..DnsLimits::default()
    };
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), engine_with(1), limits)
        .await
        .unwrap();
    let addr = server.local_addr();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sent = 30u64;
    let bytes = query(WWW, RecordType::A, false, None).to_vec().unwrap();
    for _ in 0..sent {
        socket.send_to(&bytes, addr).await.unwrap();
    }
    let (mut full, mut slipped) = (0u64, 0u64);
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf)).await
    {
        let msg = Message::from_vec(&buf[..n]).unwrap();
        if msg.metadata.truncation {
            assert!(
                msg.answers.is_empty(),
                "a slipped answer carries no records"
            );
            slipped += 1;
        } else {
            assert_eq!(addrs(&msg.answers), ips(&["192.0.2.20"]));
            full += 1;
        }
    }
    // 5 per second; the burst may straddle one second boundary.
    assert!((5..=10).contains(&full), "{full} full answers");
    assert!(
        slipped >= 1,
        "slip 2 sends every other limited response truncated"
    );
    let stats = server.stats().snapshot();
    assert_eq!(stats.rrl_slipped, slipped);
    assert_eq!(stats.rrl_dropped + stats.rrl_slipped + full, sent);
    // TCP is never rate limited: the slipped client's retry gets the answer.
    let r = tcp(addr, &query(WWW, RecordType::A, false, None)).await;
    assert_eq!(addrs(&r.answers), ips(&["192.0.2.20"]));
    let text = server.stats().render_prometheus();
    assert!(
        text.contains(&format!("isobar_dns_rrl_slipped_total {slipped}")),
        "{text}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_queries_is_answered_in_full_each_to_its_sender() {
    // Several sockets fire queries back to back without waiting, so the server receives
    // them in batches (recvmmsg) and must send every answer to the right peer and id.
    let server = dns_server(engine_with(1)).await;
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for c in 0..4u16 {
        clients.push(tokio::spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let per_client = 100u16;
            for i in 0..per_client {
                let mut msg = query(WWW, RecordType::A, false, None);
                msg.metadata.id = c * 1000 + i;
                socket.send_to(&msg.to_vec().unwrap(), addr).await.unwrap();
            }
            let mut ids = std::collections::BTreeSet::new();
            let mut buf = [0u8; 1500];
            while ids.len() < usize::from(per_client) {
                let n = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf))
                    .await
                    .expect("every query answered")
                    .unwrap();
                let response = Message::from_vec(&buf[..n]).unwrap();
                assert_eq!(
                    response.metadata.id / 1000,
                    c,
                    "answer sent to the wrong client"
                );
                assert_eq!(addrs(&response.answers), ips(&["192.0.2.20"]));
                ids.insert(response.metadata.id);
            }
            ids.len()
        }));
    }
    for client in clients {
        assert_eq!(client.await.unwrap(), 100);
    }
    server.shutdown().await;
}
