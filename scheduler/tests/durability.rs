//! Placement risk control survives a scheduler restart: a new `Scheduler` on the same SQLite
//! file neither grants a fresh removal budget nor puts replicas back on a site it had
//! declared lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use isobar_proto::v1::{
    PlacementDecision, PlacementPolicy, ReadyEndpoint, RiskControl, StatusReport,
};
use isobar_scheduler::{Scheduler, now_ms};
use isobar_store::Store;

const SERVICE: &str = "www.example.test.";
const MIN: i64 = 60 * 1000;

const WORLD: &str = r#"
[[regions]]
name = "eu"
lat = 50.0
lon = 10.0

[[regions]]
name = "na"
lat = 39.0
lon = -95.0

[[regions]]
name = "ap"
lat = 15.0
lon = 115.0

[[pops]]
name = "fra1"
region = "eu"
lat = 50.11
lon = 8.68
replica_slots = 4

[[pops]]
name = "lon2"
region = "eu"
lat = 51.51
lon = -0.13
replica_slots = 4

[[pops]]
name = "iad1"
region = "na"
lat = 39.04
lon = -77.49
replica_slots = 4

[[pops]]
name = "sin1"
region = "ap"
lat = 1.35
lon = 103.82
replica_slots = 4

[[zones]]
name = "example.test."
records = [
  "@ 3600 IN SOA ns1.example.test. hostmaster.example.test. 1 7200 900 1209600 300",
  "@ 3600 IN NS ns1.example.test.",
  "ns1 3600 IN A 127.0.0.1",
]

[[services]]
name = "www.example.test."
endpoints = [
  { pop = "fra1", address = "192.0.2.10" },
  { pop = "lon2", address = "192.0.2.20" },
  { pop = "iad1", address = "198.51.100.10" },
  { pop = "sin1", address = "203.0.113.10" },
]
"#;

/// A scheduler on a SQLite file in `dir`; the world is applied on first use.
async fn open(dir: &tempfile::TempDir) -> Arc<Scheduler> {
    let url = format!("sqlite://{}", dir.path().join("isobar.db").display());
    let store = Store::open(&url).await.expect("store");
    let scheduler = Scheduler::open(store).await.expect("scheduler");
    scheduler
        .apply_config("world.toml", WORLD, &BTreeMap::new(), false, "test")
        .await
        .expect("world applies");
    scheduler
}

async fn close(scheduler: Arc<Scheduler>) {
    let store = scheduler.store().clone();
    drop(scheduler);
    store.close().await;
}

fn by_site(d: &PlacementDecision) -> BTreeMap<String, u32> {
    d.sites
        .iter()
        .filter(|s| s.replicas > 0)
        .map(|s| (s.site.clone(), s.replicas))
        .collect()
}

fn has(d: &PlacementDecision, condition: &str) -> bool {
    d.conditions.iter().any(|c| c.r#type == condition)
}

fn policy(replicas: u32, risk: Option<RiskControl>) -> PlacementPolicy {
    PlacementPolicy {
        replicas,
        risk,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_restart_does_not_grant_a_fresh_removal_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scheduler = open(&dir).await;
    let full = scheduler
        .place(SERVICE, policy(12, None), "test")
        .await
        .expect("placed");
    assert_eq!(full.placed, 12, "{:?}", full.sites);

    // Scale down hard: each site may lose one replica per 30 min, so most stay, deferred.
    let cut = scheduler
        .place(SERVICE, policy(4, None), "test")
        .await
        .expect("updated");
    assert!(has(&cut, "RemovalDeferred"), "{:?}", cut.conditions);
    let held = by_site(&cut);
    for (site, n) in by_site(&full) {
        let now = held.get(&site).copied().unwrap_or(0);
        assert!(n - now <= 1, "{site}: {n} -> {now} in one window");
    }
    close(scheduler).await;

    // A new scheduler on the same file: the budget spent a moment ago is still spent.
    let scheduler = open(&dir).await;
    assert_eq!(
        by_site(&scheduler.placement(SERVICE).expect("restored")),
        held
    );
    scheduler
        .replan_placements(now_ms() + MIN)
        .await
        .expect("replan");
    let after = scheduler.placement(SERVICE).expect("placed");
    assert_eq!(by_site(&after), held, "no removal until the window passes");
    assert!(has(&after, "RemovalDeferred"));

    // Once the window has passed the budget refills and the drain continues, so the
    // assertions above are about the remembered budget, not a stuck solver.
    scheduler
        .replan_placements(now_ms() + 31 * MIN)
        .await
        .expect("replan");
    let later = scheduler.placement(SERVICE).expect("placed");
    assert!(
        later.placed < after.placed,
        "{:?} -> {:?}",
        by_site(&after),
        by_site(&later)
    );
    close(scheduler).await;
}

async fn report(scheduler: &Scheduler, site: &str, ready: u32) {
    let report = StatusReport {
        service: SERVICE.into(),
        site: site.into(),
        ready_replicas: ready,
        endpoints: vec![ReadyEndpoint {
            address: "192.0.2.99".into(),
            port: 443,
            ready: true,
        }],
    };
    scheduler.report_status(&report).await.expect("report");
}

#[tokio::test]
async fn a_lost_site_stays_lost_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scheduler = open(&dir).await;
    let risk = RiskControl {
        grace_period_seconds: 1,
        ..Default::default()
    };
    let placed = scheduler
        .place(SERVICE, policy(8, Some(risk)), "test")
        .await
        .expect("placed");
    let sites = by_site(&placed);
    assert!(sites.get("sin1").copied().unwrap_or(0) > 0, "{sites:?}");
    for (site, n) in &sites {
        report(&scheduler, site, *n).await;
    }

    // sin1 goes quiet past its 1 s grace while the others keep reporting.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for (site, n) in sites.iter().filter(|(s, _)| *s != "sin1") {
        report(&scheduler, site, *n).await;
    }
    scheduler.replan_placements(now_ms()).await.expect("replan");
    let lost = scheduler.placement(SERVICE).expect("placed");
    assert!(has(&lost, "SiteUnreachable"), "{:?}", lost.conditions);
    assert!(!by_site(&lost).contains_key("sin1"), "{:?}", lost.sites);
    close(scheduler).await;

    // A fresh scheduler counts silence from its own start, so without the stored lost-site
    // record sin1 would look healthy again and get its replicas back.
    let scheduler = open(&dir).await;
    scheduler.replan_placements(now_ms()).await.expect("replan");
    let after = scheduler.placement(SERVICE).expect("placed");
    assert!(has(&after, "SiteUnreachable"), "{:?}", after.conditions);
    assert!(!by_site(&after).contains_key("sin1"), "{:?}", after.sites);
    assert_eq!(by_site(&after), by_site(&lost));

    // When sin1 reports again it is recovered, and fails back only after stabilization.
    report(&scheduler, "sin1", 0).await;
    scheduler.replan_placements(now_ms()).await.expect("replan");
    let recovering = scheduler.placement(SERVICE).expect("placed");
    assert!(
        has(&recovering, "FailbackInProgress"),
        "{:?}",
        recovering.conditions
    );
    close(scheduler).await;
}
