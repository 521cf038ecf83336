//! Explain and what-if over the real stack: explain's answer equals the DNS frontend's for
//! the same client, what-if predicts where a failed PoP's clients go (and who overloads),
//! and the frontends then answer as predicted once the PoP really fails.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use isobar_proto::v1::admin_client::AdminClient;
use isobar_proto::v1::{ConfirmDrainRequest, ExplainRequest, Explanation, WhatIfRequest};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{Listeners, addresses, eventually, options, query, udp, world_toml};

const WWW: &str = "www.example.test.";
/// The Berlin network of the e2e GeoIP database.
const BERLIN_ECS: &str = "192.0.2.0/24";

struct Running {
    running: isobar::Running,
    listeners: Listeners,
    _dir: tempfile::TempDir,
}

/// The support world with capacities fra1 and iad1 2000, sin1 500 q/s, and 1200 q/s
/// declared by a Berlin office: fra1 carries it (usable 1800 q/s with 10 % headroom), so
/// does iad1 when fra1 fails, but sin1 alone (450) cannot.
async fn start() -> Running {
    let listeners = Listeners::start_all(3).await;
    let world = world_toml(&listeners)
        .replace("replica_slots = 4", "replica_slots = 4\ncapacity = CAP")
        .replacen("CAP", "2000", 2)
        .replace("CAP", "500")
        + r#"
[[client_groups]]
name = "berlin-office"
cidrs = ["10.20.0.0/16"]
region = "eu"
demand = 1200.0
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("world.toml");
    std::fs::write(&config, world).expect("write config");
    let running = isobar::start(options(dir.path(), &config), None)
        .await
        .expect("stack starts");
    let engine = running.engine.clone().expect("engine");
    eventually(Duration::from_secs(10), || {
        let engine = engine.clone();
        async move { engine.version() > 0 }
    })
    .await;
    Running {
        running,
        listeners,
        _dir: dir,
    }
}

async fn admin(r: &Running) -> AdminClient<Channel> {
    let url = format!("http://{}", r.running.grpc.expect("grpc"));
    AdminClient::connect(url).await.expect("admin")
}

fn berlin_request() -> ExplainRequest {
    ExplainRequest {
        name: WWW.into(),
        client: "127.0.0.1".into(),
        ecs: BERLIN_ECS.into(),
        device: String::new(),
    }
}

/// Explain and a real DNS query for the Berlin client over the same snapshot version
/// (retried while the steering tick publishes a new one in between).
async fn explain_and_dns(
    r: &Running,
    admin: &mut AdminClient<Channel>,
) -> (Explanation, Vec<String>) {
    let engine = r.running.engine.clone().expect("engine");
    let dns = r.running.dns.expect("dns");
    for _ in 0..50 {
        let before = engine.version();
        let e = admin
            .explain(berlin_request())
            .await
            .expect("explain")
            .into_inner();
        let answer = addresses(&udp(dns, &query(WWW, RecordType::A, Some(BERLIN_ECS))).await);
        if e.snapshot_version == before && engine.version() == before {
            return (e, answer);
        }
    }
    panic!("the snapshot never held still for one explain + query");
}

fn pop_of(address: &str) -> &'static str {
    match address {
        "192.0.2.10" => "fra1",
        "198.51.100.10" => "iad1",
        "203.0.113.10" => "sin1",
        other => panic!("unexpected address {other}"),
    }
}

#[tokio::test]
async fn explain_agrees_with_dns_and_what_if_predicts_the_failover() {
    let mut r = start().await;
    let mut admin = admin(&r).await;

    // Explain names the group and the PoP order, and answers exactly as the frontend.
    let (e, dns_answer) = explain_and_dns(&r, &mut admin).await;
    let answer = e.answer.clone().expect("answer");
    assert_eq!(answer.ipv4, dns_answer, "explain vs DNS");
    let group = e.group.clone().expect("group");
    assert!(group.label.starts_with("cell:"), "{group:?}");
    assert_eq!(group.decided_by, "geoip");
    assert!(
        group.located && (group.lat - 52.52).abs() < 0.01,
        "{group:?}"
    );
    let order: Vec<&str> = e.pops.iter().map(|p| p.pop.as_str()).collect();
    assert_eq!(order, ["fra1", "iad1", "sin1"], "{:?}", e.pops);
    assert!(e.pops[0].cost < e.pops[1].cost);
    assert!(e.pops.iter().all(|p| p.state == "serving"), "{:?}", e.pops);
    assert_eq!(e.pops[0].capacity, Some(2000.0));
    assert_eq!(e.pops[1].capacity, Some(2000.0));
    assert_eq!(e.pops[2].capacity, Some(500.0));
    assert_eq!(answer.pops[0], "fra1");
    assert_eq!(pop_of(&dns_answer[0]), "fra1");
    // fra1 carries the office's 1200 q/s (and the few queries of this test).
    assert!((e.pops[0].load - 1200.0).abs() < 50.0, "{:?}", e.pops[0]);

    // What-if fra1 fails: its load moves to the others, within their capacity.
    let version_before = r.running.engine.as_ref().unwrap().version();
    let w = admin
        .what_if(WhatIfRequest {
            fail: vec!["pop=fra1".into()],
            groups: vec![group.label.clone()],
        })
        .await
        .expect("what-if")
        .into_inner();
    assert_eq!(w.failed_pops, ["fra1"]);
    let svc = &w.services[0];
    let pop = |name: &str| {
        svc.pops
            .iter()
            .find(|p| p.pop == name)
            .expect("pop")
            .clone()
    };
    assert!(pop("fra1").load_before > 1100.0 && pop("fra1").load_after == 0.0);
    let moved = pop("iad1").load_after + pop("sin1").load_after
        - pop("iad1").load_before
        - pop("sin1").load_before;
    assert!(moved > 1100.0, "{:?}", svc.pops);
    assert!(svc.overloaded.is_empty(), "{svc:?}");
    assert!(svc.unserved_after < 1e-6);
    let cell = &svc.groups[0];
    assert_eq!(cell.group, group.label);
    assert_eq!(cell.before[0].pop, "fra1");
    let predicted = cell.after[0].pop.clone();
    assert_ne!(predicted, "fra1");

    // Without Europe and America, Singapore alone overloads and demand goes unserved.
    let tight = admin
        .what_if(WhatIfRequest {
            fail: vec!["pop=fra1".into(), "region=na".into()],
            groups: vec![],
        })
        .await
        .expect("what-if")
        .into_inner();
    assert_eq!(tight.failed_pops, ["fra1", "iad1"]);
    let svc = &tight.services[0];
    assert_eq!(svc.overloaded, ["sin1"], "{svc:?}");
    assert!(svc.unserved_after > 600.0, "{svc:?}");
    let sin = svc.pops.iter().find(|p| p.pop == "sin1").expect("sin1");
    assert!(sin.utilisation_after > 0.9, "{sin:?}");

    // Nothing changed live: the frontend still answers fra1 first.
    let dns = r.running.dns.expect("dns");
    let now = addresses(&udp(dns, &query(WWW, RecordType::A, Some(BERLIN_ECS))).await);
    assert_eq!(pop_of(&now[0]), "fra1");
    assert!(r.running.engine.as_ref().unwrap().version() >= version_before);

    // fra1 really fails: the frontend now answers from the PoP what-if predicted, and
    // explain still agrees with it.
    r.listeners.stop(0);
    let mut last = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        last = addresses(&udp(dns, &query(WWW, RecordType::A, Some(BERLIN_ECS))).await);
        if !last.is_empty() && pop_of(&last[0]) != "fra1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!last.is_empty());
    assert_eq!(pop_of(&last[0]), predicted, "{last:?} vs what-if {cell:?}");
    let (e, dns_answer) = explain_and_dns(&r, &mut admin).await;
    assert_eq!(e.answer.unwrap().ipv4, dns_answer);
    let guard = e.guard.unwrap();
    assert_eq!(guard.drained, ["fra1"]);
    assert!(
        e.pops
            .iter()
            .any(|p| p.pop == "fra1" && p.state == "drained")
    );
}

#[tokio::test]
async fn explain_what_if_and_confirm_drain_reject_bad_requests() {
    let r = start().await;
    let mut admin = admin(&r).await;
    let status = admin
        .explain(ExplainRequest {
            name: "nope.example.test.".into(),
            ..berlin_request()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = admin
        .explain(ExplainRequest {
            client: "not-an-ip".into(),
            ..berlin_request()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("client"), "{status:?}");
    let status = admin
        .what_if(WhatIfRequest {
            fail: vec!["pop=atlantis".into()],
            groups: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("fail") && status.message().contains("atlantis"));
    let status = admin
        .confirm_drain(ConfirmDrainRequest {
            service: "nope.example.test.".into(),
            actor: "e2e".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let ok = admin
        .confirm_drain(ConfirmDrainRequest {
            service: WWW.into(),
            actor: "e2e".into(),
        })
        .await
        .expect("confirm")
        .into_inner();
    assert_eq!(ok.service, WWW);
}
