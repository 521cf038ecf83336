//! Client-measured RTT (RUM) end to end: an app posts a signed batch of connect times to the
//! HTTP frontend, the frontend forwards it to the scheduler over gRPC, and the steering cost
//! the scheduler computes for the reporting client's group changes.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use isobar_proto::geo::cell_index;
use isobar_proto::v1::admin_client::AdminClient;
use isobar_proto::v1::{ExplainPop, ExplainRequest};
use isobar_scheduler::steering::cost::{ClientReports, CostWeights, LatencyModel, group_costs};
use serde_json::{Value, json};

use crate::support::{Listeners, addresses, eventually, options, query, udp, world_toml};

const ACCOUNT: &str = "100000";
const SECRET: &str = "IAmASecret";
/// Berlin in the demo GeoIP fixture.
const BERLIN_CLIENT: &str = "192.0.2.77";
const BERLIN: (f64, f64) = (52.52, 13.40);
/// iad1's IPv4 endpoint in the test world.
const IAD1_ENDPOINT: &str = "198.51.100.10";

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// `?t=&s=` for a report signed with `secret`, valid for ten minutes.
fn signed(secret: &str) -> String {
    let t = (now_unix() + 600).to_string();
    let s = isobar_dns::httpdns::sign::sign("report", secret, &t);
    format!("t={t}&s={s}")
}

/// What `Admin.Explain` says about `pop` for the Berlin client: (group label, PoPs in cost
/// order, that PoP's row).
async fn explain_berlin(
    admin: &mut AdminClient<tonic::transport::Channel>,
    pop: &str,
) -> (String, Vec<String>, ExplainPop) {
    let e = admin
        .explain(ExplainRequest {
            name: "www.example.test.".into(),
            client: BERLIN_CLIENT.into(),
            ecs: String::new(),
            device: String::new(),
        })
        .await
        .expect("explain")
        .into_inner();
    let order = e.pops.iter().map(|p| p.pop.clone()).collect();
    let row = e
        .pops
        .iter()
        .find(|p| p.pop == pop)
        .cloned()
        .expect("pop explained");
    (e.group.expect("group").label, order, row)
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("http request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

#[tokio::test]
async fn a_signed_report_batch_changes_the_steering_cost_for_its_group() {
    let listeners = Listeners::start_all(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("world.toml");
    let world = format!(
        "{}\n[[accounts]]\nid = \"{ACCOUNT}\"\nsecret = \"{SECRET}\"\nunsigned_allowed = false\n",
        world_toml(&listeners)
    );
    std::fs::write(&config, world).expect("write config");
    let running = isobar::start(options(dir.path(), &config), None)
        .await
        .expect("stack starts");
    let engine = running.engine.clone().expect("engine");
    let scheduler = running.scheduler.clone().expect("scheduler");
    eventually(Duration::from_secs(10), || async {
        engine.current().accounts().iter().any(|a| a.id == ACCOUNT)
    })
    .await;
    let http = running.http.expect("http role");
    let report_url = |query: &str| format!("http://{http}/{ACCOUNT}/report?{query}");

    // The steering model's view of Berlin's cell: geography says fra1 is near, iad1 far.
    let (world, _) = scheduler.world();
    let pops: Vec<(&str, (f64, f64))> = world
        .pops
        .iter()
        .map(|p| (p.name.as_str(), (p.lat, p.lon)))
        .collect();
    let latency = LatencyModel::new(&pops, None);
    let iad1 = pops.iter().position(|(n, _)| *n == "iad1").expect("iad1");
    let fra1 = pops.iter().position(|(n, _)| *n == "fra1").expect("fra1");
    let berlin = format!(
        "cell:{}",
        cell_index(world.defaults.cell_degrees, BERLIN.0, BERLIN.1)
    );
    let costs = |label: &str| {
        let reports = scheduler.client_reports();
        group_costs(
            &latency,
            label,
            Some(BERLIN),
            &[],
            &CostWeights::default(),
            &reports,
        )
    };
    let before = costs(&berlin);
    assert!(before[iad1] > before[fra1] + 50.0, "{before:?}");
    // The same through the operator's Explain (real gRPC), and what DNS answers Berlin.
    let mut admin = AdminClient::connect(format!("http://{}", running.grpc.expect("grpc")))
        .await
        .expect("admin");
    let (label, order, row) = explain_berlin(&mut admin, "iad1").await;
    assert_eq!(label, berlin);
    assert_eq!(order.first().map(String::as_str), Some("fra1"), "{order:?}");
    assert!(!row.client_report, "{row:?}");
    let dns = running.dns.expect("dns role");
    let berlin_query = query("www.example.test.", RecordType::A, Some("192.0.2.0/24"));
    assert_eq!(
        addresses(&udp(dns, &berlin_query).await)
            .first()
            .map(String::as_str),
        Some("192.0.2.10"),
        "Berlin starts on fra1"
    );

    // Berlin's clients find iad1 fast (an anycast or peering quirk geography cannot see).
    let at = now_unix();
    let measurements: Vec<Value> = (0..10)
        .map(|i| json!({"ip": IAD1_ENDPOINT, "connect_ms": 4.0 + f64::from(i) * 0.1, "ok": true, "at": at}))
        .collect();
    let batch = json!({"device_id": "phone-1", "network": "wifi", "measurements": measurements});

    // Unsigned and wrongly signed reports are refused with the HTTPDNS codes.
    let (status, body) = post(&report_url(&format!("ip={BERLIN_CLIENT}")), &batch).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("UnsignedInterfaceDisabled"))
    );
    let (status, body) = post(
        &report_url(&format!("ip={BERLIN_CLIENT}&{}", signed("wrong"))),
        &batch,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("InvalidSignature"))
    );
    let mut bad = batch.clone();
    bad["measurements"][3]["connect_ms"] = json!(-2);
    let (status, body) = post(
        &report_url(&format!("ip={BERLIN_CLIENT}&{}", signed(SECRET))),
        &bad,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "InvalidConnectMs");
    assert_eq!(body["field"], "measurements[3].connect_ms");
    assert!(
        scheduler.client_reports().rtt(&berlin, "iad1").is_none(),
        "nothing refused may reach the scheduler"
    );

    let (status, body) = post(
        &report_url(&format!("ip={BERLIN_CLIENT}&{}", signed(SECRET))),
        &batch,
    )
    .await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(10)),
        "{body}"
    );

    // Forwarded within a second or two over the real Telemetry gRPC.
    eventually(Duration::from_secs(10), || async {
        scheduler
            .client_reports()
            .rtt(&berlin, "iad1")
            .is_some_and(|r| r.samples == 10)
    })
    .await;
    let report = scheduler
        .client_reports()
        .rtt(&berlin, "iad1")
        .expect("report");
    assert!(report.rtt_ms > 3.9 && report.rtt_ms < 5.0, "{report:?}");
    assert_eq!(report.failure_ratio, 0.0);

    let after = costs(&berlin);
    assert!(
        after[iad1] < 10.0,
        "the report replaces the estimate: {after:?}"
    );
    assert!(
        after[iad1] < after[fra1],
        "iad1 is now Berlin's cheapest PoP: {after:?}"
    );
    assert_eq!(
        after[fra1], before[fra1],
        "unreported PoPs keep their estimate"
    );
    // The steering engine picks it up on its next tick: Explain shows the report and the
    // new order, and DNS now answers Berlin from iad1 first.
    eventually(Duration::from_secs(10), || {
        let mut admin = admin.clone();
        async move {
            let (_, order, row) = explain_berlin(&mut admin, "iad1").await;
            row.client_report && order.first().map(String::as_str) == Some("iad1")
        }
    })
    .await;
    let (_, _, row) = explain_berlin(&mut admin, "iad1").await;
    assert!(row.cost < 10.0 && row.rtt_ms < 5.0, "{row:?}");
    eventually(Duration::from_secs(10), || {
        let msg = berlin_query.clone();
        async move {
            addresses(&udp(dns, &msg).await).first().map(String::as_str) == Some(IAD1_ENDPOINT)
        }
    })
    .await;

    // Another group (Singapore's cell) is not touched.
    let singapore = format!(
        "cell:{}",
        cell_index(world.defaults.cell_degrees, 1.29, 103.85)
    );
    assert!(scheduler.client_reports().rtt(&singapore, "iad1").is_none());

    // Both sides count what happened.
    let metrics = reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "isobar_rum_reports_total{code=\"Accepted\"} 1",
        "isobar_rum_reports_total{code=\"UnsignedInterfaceDisabled\"} 1",
        "isobar_rum_reports_total{code=\"InvalidSignature\"} 1",
        "isobar_rum_reports_total{code=\"InvalidConnectMs\"} 1",
        "isobar_rum_forwarded_samples_total{outcome=\"accepted\"} 10",
        "isobar_rum_samples_total{outcome=\"accepted\",reason=\"\"} 10",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }

    running.stop().await;
}
