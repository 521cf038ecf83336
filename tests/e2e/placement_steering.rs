//! Placement joined to steering: endpoints an orchestrator reports ready serve DNS and
//! HTTPDNS answers; a site whose replicas are not ready never does.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use isobar_proto::v1::placement_client::PlacementClient;
use isobar_proto::v1::{PlaceRequest, PlacementPolicy, ReadyEndpoint, StatusReport};
use tonic::Code;

use isobar_proto::v1::ExplainRequest;
use isobar_proto::v1::admin_client::AdminClient;

use crate::support::{Stack, addresses, eventually, get_json, query, udp, world_toml};

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

/// The share of 256 client /24s in 10.20.0.0/16 whose DNS answer starts at fra1.
async fn fra1_share(stack: &Stack) -> f64 {
    let mut first = 0;
    for n in 0..256 {
        let answer = dns_a(stack, &format!("10.20.{n}.0/24")).await;
        if answer.first().is_some_and(|a| a.starts_with("192.0.2.")) {
            first += 1;
        }
    }
    f64::from(first) / 256.0
}

#[tokio::test]
async fn a_pops_steering_capacity_follows_its_ready_replicas() {
    // Every ready replica the orchestrator reports adds 100 qps of capacity; a 250 qps group
    // sits next to fra1 (region eu), with 10 % headroom kept free.
    let stack = Stack::start_with(|listeners| {
        world_toml(listeners)
            + r#"
[services.steering]
replica_capacity = 100.0

[[client_groups]]
name = "berlin"
cidrs = ["10.20.0.0/16"]
region = "eu"
demand = 250.0
"#
    })
    .await;
    let mut placement = PlacementClient::connect(stack.grpc_url())
        .await
        .expect("connect");
    let admin = AdminClient::connect(stack.grpc_url()).await.expect("admin");
    placement
        .place(PlaceRequest {
            service: "www.example.test".into(),
            policy: Some(PlacementPolicy {
                replicas: 5,
                ..Default::default()
            }),
        })
        .await
        .expect("place");
    let report = |site: &str, addresses: &[&str]| StatusReport {
        service: "www.example.test".into(),
        site: site.into(),
        ready_replicas: addresses.len() as u32,
        endpoints: addresses.iter().map(|a| endpoint(a, true)).collect(),
    };
    let fra1 = |explanation: &isobar_proto::v1::Explanation| {
        let pop = explanation.pops.iter().find(|p| p.pop == "fra1").cloned();
        let weight = explanation
            .weights
            .iter()
            .find(|w| w.pop == "fra1")
            .map_or(0.0, |w| w.weight);
        (pop.and_then(|p| p.capacity), weight)
    };
    let explain = || {
        let mut admin = admin.clone();
        async move {
            admin
                .explain(ExplainRequest {
                    name: "www.example.test.".into(),
                    client: "127.0.0.1".into(),
                    ecs: "10.20.7.0/24".into(),
                    device: String::new(),
                })
                .await
                .expect("explain")
                .into_inner()
        }
    };

    // One ready replica in fra1: 100 qps, 90 usable, so most of the group spills over.
    for r in [
        report("fra1", &["192.0.2.60"]),
        report("iad1", &["198.51.100.60"]),
        report("sin1", &["203.0.113.60"]),
    ] {
        placement.report_status(r).await.expect("report");
    }
    eventually(Duration::from_secs(10), || async {
        fra1(&explain().await).0 == Some(100.0)
    })
    .await;
    let (_, weight) = fra1(&explain().await);
    assert!((weight - 0.36).abs() < 0.02, "fra1 weight {weight}");
    let share = fra1_share(&stack).await;
    println!("one ready replica: fra1 weight {weight:.3}, share of /24s {share:.3}");
    assert!((share - 0.36).abs() < 0.12, "{share}");

    // Three ready replicas: 300 qps, 270 usable, and the whole group fits in fra1.
    placement
        .report_status(report("fra1", &["192.0.2.60", "192.0.2.61", "192.0.2.62"]))
        .await
        .expect("report");
    eventually(Duration::from_secs(10), || async {
        fra1(&explain().await) == (Some(300.0), 1.0)
    })
    .await;
    assert_eq!(fra1_share(&stack).await, 1.0);

    // Back to none ready: fra1 leaves the answers although its configured endpoint is up.
    placement
        .report_status(report("fra1", &[]))
        .await
        .expect("report");
    eventually(Duration::from_secs(10), || async {
        fra1_share(&stack).await == 0.0
    })
    .await;
    stack.running.stop().await;
}
