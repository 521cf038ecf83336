//! Demand from the frontends: DNS and HTTPDNS queries are counted per client group,
//! reported to the scheduler, and pull a demand-driven placement toward those users; the
//! placement counters show on `GET /metrics` next to the DNS ones.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use isobar_proto::geo::cell_index;
use isobar_proto::v1::placement_client::PlacementClient;
use isobar_proto::v1::{PlaceRequest, PlacementPolicy};

use crate::support::{Stack, eventually, get_json, query, udp};

const SERVICE: &str = "www.example.test.";

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("fits")
}

fn replicas(d: &isobar_proto::v1::PlacementDecision, site: &str) -> u32 {
    d.sites
        .iter()
        .find(|s| s.site == site)
        .map_or(0, |s| s.replicas)
}

#[tokio::test]
async fn queries_from_two_subnets_pull_replicas_toward_their_users() {
    let stack = Stack::start().await;
    let scheduler = stack.running.scheduler.clone().expect("scheduler role");
    let mut client = PlacementClient::connect(stack.grpc_url())
        .await
        .expect("connect");
    // Europe is the only declared demand at first: both replicas go to fra1.
    let placed = client
        .place(PlaceRequest {
            service: SERVICE.into(),
            policy: Some(PlacementPolicy {
                replicas: 2,
                demand_regions: vec!["eu".into()],
                ..Default::default()
            }),
        })
        .await
        .expect("place")
        .into_inner();
    let first = placed;
    assert_eq!(replicas(&first, "fra1"), 2, "{first:?}");

    // Users show up in Singapore (DNS with ECS) and, via HTTPDNS from 127.0.0.1, in
    // San Francisco (the fixture's location for loopback).
    for _ in 0..20 {
        udp(
            stack.dns(),
            &query(SERVICE, RecordType::A, Some("203.0.113.0/24")),
        )
        .await;
        let (status, _) = get_json(&stack.http_url("/d?host=www.example.test")).await;
        assert_eq!(status, 200);
    }
    let degrees = scheduler.world().0.defaults.cell_degrees;
    let sg = cell_index(degrees, 1.29, 103.85);
    let sf = cell_index(degrees, 37.77, -122.42);
    let located = |p: &isobar_scheduler::placement::DemandPoint| {
        cell_index(degrees, p.location.0, p.location.1)
    };
    eventually(Duration::from_secs(10), || async {
        let points = scheduler.observed_demand(SERVICE);
        points.iter().any(|p| located(p) == sg && p.weight > 0.0)
            && points.iter().any(|p| located(p) == sf && p.weight > 0.0)
    })
    .await;
    let points = scheduler.observed_demand(SERVICE);
    assert!(
        points.iter().all(|p| located(p) == sg || located(p) == sf),
        "only where queries came from: {points:?}"
    );

    // Observed demand replaces the declared region: a replan moves the replicas toward
    // Singapore and North America, one removal from fra1 at a time (the removal budget).
    scheduler.replan_placements(now_ms()).await.expect("replan");
    let d = scheduler.placement(SERVICE).expect("placed");
    assert!(d.version > first.version, "{d:?}");
    assert!(
        replicas(&d, "sin1") >= 1 && replicas(&d, "iad1") >= 1,
        "replicas follow the users: {d:?}"
    );
    let metrics = reqwest::get(stack.http_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(metrics.contains("isobar_dns_queries_total"), "{metrics}");
    let decisions: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("isobar_placement_decisions_total "))
        .and_then(|v| v.parse().ok())
        .expect("placement decisions in /metrics");
    assert!(decisions >= 2, "{metrics}");
    assert!(
        metrics.contains("isobar_placement_moves_total "),
        "{metrics}"
    );
    drop((client, scheduler));
    stack.running.stop().await;
}
