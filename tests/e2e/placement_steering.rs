//! Placement joined to steering: endpoints an orchestrator reports ready serve DNS and
//! HTTPDNS answers; a site whose replicas are not ready never does.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use isobar_proto::v1::placement_client::PlacementClient;
use isobar_proto::v1::{PlaceRequest, PlacementPolicy, ReadyEndpoint, StatusReport};
use tonic::Code;

use crate::support::{Stack, addresses, eventually, get_json, query, udp};

fn endpoint(address: &str, ready: bool) -> ReadyEndpoint {
    ReadyEndpoint {
        address: address.into(),
        port: 443,
        ready,
    }
}

async fn dns_a(stack: &Stack, ecs: &str) -> Vec<String> {
    addresses(
        &udp(
            stack.dns(),
            &query("www.example.test.", RecordType::A, Some(ecs)),
        )
        .await,
    )
}

/// Every address HTTPDNS answers for `ip` to 32 different devices: inside a PoP each device
/// is hashed onto one node, so many devices see every ready node of the PoP.
async fn device_answers(stack: &Stack, ip: &str) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for device in 0..32 {
        let url = format!("/d?host=www.example.test&ip={ip}&did=device-{device}");
        let (_, body) = get_json(&stack.http_url(&url)).await;
        let ips: Vec<String> = serde_json::from_value(body["ips"].clone()).unwrap_or_default();
        seen.extend(ips);
    }
    seen
}

#[tokio::test]
async fn ready_replicas_appear_in_answers_and_unready_ones_never_do() {
    let stack = Stack::start().await;
    let mut client = PlacementClient::connect(stack.grpc_url())
        .await
        .expect("connect");
    // Reporting status for a service that was never placed is NOT_FOUND.
    let err = client
        .report_status(StatusReport {
            service: "www.example.test".into(),
            site: "fra1".into(),
            ready_replicas: 1,
            endpoints: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    client
        .place(PlaceRequest {
            service: "www.example.test".into(),
            policy: Some(PlacementPolicy {
                replicas: 6,
                ..Default::default()
            }),
        })
        .await
        .expect("place");
    let report = |site: &str, ready: u32, endpoints: Vec<ReadyEndpoint>| StatusReport {
        service: "www.example.test".into(),
        site: site.into(),
        ready_replicas: ready,
        endpoints,
    };
    for r in [
        report(
            "fra1",
            2,
            vec![endpoint("192.0.2.50", true), endpoint("192.0.2.51", false)],
        ),
        report("iad1", 0, vec![endpoint("198.51.100.50", false)]),
        report("sin1", 2, vec![endpoint("203.0.113.50", true)]),
    ] {
        client.report_status(r).await.expect("report");
    }
    let bad = client
        .report_status(report("sin1", 1, vec![endpoint("not-an-ip", true)]))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("endpoints[0].address"),
        "{}",
        bad.message()
    );

    // Berlin gets fra1's ready replica; nobody ever gets the unready one.
    eventually(Duration::from_secs(5), || async {
        device_answers(&stack, "192.0.2.1")
            .await
            .contains("192.0.2.50")
    })
    .await;
    assert!(
        !device_answers(&stack, "192.0.2.1")
            .await
            .contains("192.0.2.51")
    );
    for ecs in ["192.0.2.1/24", "198.51.100.1/24", "203.0.113.1/24"] {
        let answer = dns_a(&stack, ecs).await;
        assert!(
            !answer.contains(&"192.0.2.51".to_owned()),
            "{ecs}: {answer:?}"
        );
        // iad1 has no ready replica: New York is steered elsewhere.
        assert!(
            !answer.iter().any(|a| a.starts_with("198.51.100.")),
            "{ecs}: {answer:?}"
        );
    }
    let (_, body) = get_json(&stack.http_url("/d?host=www.example.test&ip=198.51.100.1")).await;
    let ips: Vec<String> = serde_json::from_value(body["ips"].clone()).unwrap_or_default();
    assert!(
        !ips.is_empty() && !ips.iter().any(|a| a.starts_with("198.51.100.")),
        "{ips:?}"
    );

    // iad1's replica becomes ready: New York is answered from iad1 again.
    client
        .report_status(report("iad1", 1, vec![endpoint("198.51.100.50", true)]))
        .await
        .expect("report");
    eventually(Duration::from_secs(5), || async {
        device_answers(&stack, "198.51.100.1")
            .await
            .contains("198.51.100.50")
    })
    .await;
    stack.running.stop().await;
}
