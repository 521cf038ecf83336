//! A dead endpoint leaves the answers within the detection time and comes back.

use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::support::{FALL, INTERVAL_MS, Stack, addresses, eventually, get_json, query, udp};

/// fall × interval, plus the prober's batching (200 ms), the push and generous slack for a
/// loaded CI machine. The measured figure is printed.
const DETECTION_LIMIT: Duration = Duration::from_millis(FALL * INTERVAL_MS + 2_500);

#[tokio::test]
async fn a_stopped_endpoint_leaves_dns_and_httpdns_answers_and_returns() {
    let mut stack = Stack::start().await;
    let berlin = || query("www.example.test.", RecordType::A, Some("192.0.2.1/24"));
    assert_eq!(
        addresses(&udp(stack.dns(), &berlin()).await)[0],
        "192.0.2.10"
    );

    stack.listeners.stop(0); // fra1
    let dns = stack.dns();
    let took = eventually(DETECTION_LIMIT, || async move {
        !addresses(&udp(dns, &berlin()).await).contains(&"192.0.2.10".to_owned())
    })
    .await;
    println!("fra1 left the DNS answers {took:?} after its listener stopped");
    // Berlin now gets the next nearest PoPs.
    assert_eq!(
        addresses(&udp(dns, &berlin()).await),
        vec!["198.51.100.10", "203.0.113.10"]
    );
    let (_, body) = get_json(&stack.http_url("/d?host=www.example.test&ip=192.0.2.1")).await;
    assert_eq!(
        body["ips"],
        serde_json::json!(["198.51.100.10", "203.0.113.10"])
    );

    // The scheduler explains why.
    let state = isobar_proto::v1::admin_client::AdminClient::connect(stack.grpc_url())
        .await
        .expect("connect")
        .get_state(isobar_proto::v1::GetStateRequest {})
        .await
        .expect("state")
        .into_inner();
    let fra = format!("tcp://127.0.0.1:{}", stack.listeners.port(0));
    let target = state
        .targets
        .iter()
        .find(|t| t.target_id == fra)
        .expect("fra1 target listed");
    assert_eq!(target.state, "down");
    assert!(
        target.reason.contains("consecutive failed probes"),
        "{}",
        target.reason
    );
    // ... and so does /metrics: the target's state and the probe-driven change.
    let page = metrics(&stack).await;
    let fra_line = |state: &str, up: u8| {
        format!("isobar_health_target_up{{target=\"{fra}\",state=\"{state}\"}} {up}")
    };
    assert!(page.lines().any(|l| l == fra_line("down", 0)), "{page}");
    assert!(
        sample(
            &page,
            "isobar_health_state_changes_total{to=\"down\",reason=\"probes\"}"
        ) >= 1,
        "{page}"
    );

    stack.listeners.restart(0).await;
    let took = eventually(DETECTION_LIMIT, || async move {
        addresses(&udp(dns, &berlin()).await)[0] == "192.0.2.10"
    })
    .await;
    println!("fra1 returned to the DNS answers {took:?} after its listener restarted");
    let (_, body) = get_json(&stack.http_url("/d?host=www.example.test&ip=192.0.2.1")).await;
    assert_eq!(body["ips"][0], "192.0.2.10");
    let page = metrics(&stack).await;
    assert!(page.lines().any(|l| l == fra_line("up", 1)), "{page}");
    assert!(
        sample(
            &page,
            "isobar_health_state_changes_total{to=\"up\",reason=\"probes\"}"
        ) >= 1,
        "{page}"
    );
    stack.running.stop().await;
}

async fn metrics(stack: &Stack) -> String {
    reqwest::get(stack.http_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

/// The value of the sample named exactly `series` (name and labels); 0 when absent.
fn sample(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}
