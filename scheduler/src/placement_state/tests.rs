//! Scenario tests for risk control, driven by explicit clocks: hours pass in microseconds.

use isobar_proto::geo::cell_index;
use isobar_proto::v1::{GroupDemand, PlacementPolicy, ReadyEndpoint};

use super::{PlacementBook, RiskDefaults, SiteReport};
use crate::fixtures::world;

const SERVICE: &str = "www.example.test.";
const MIN: i64 = 60 * 1000;

fn replicas(book: &PlacementBook, site: &str) -> u32 {
    book.decision(SERVICE)
        .and_then(|d| d.sites.iter().find(|s| s.site == site))
        .map_or(0, |s| s.replicas)
}

fn report(book: &mut PlacementBook, site: &str, ready: u32, at_ms: i64) {
    let endpoints = (0..ready)
        .map(|i| ReadyEndpoint {
            address: format!("10.{}.0.{i}", site.len()),
            port: 443,
            ready: true,
        })
        .collect();
    assert!(book.report(
        SERVICE,
        site,
        SiteReport {
            ready_replicas: ready,
            endpoints,
            at_ms,
        }
    ));
}

fn placed_book(replicas: u32) -> PlacementBook {
    let mut book = PlacementBook::new(RiskDefaults::default(), 0);
    let policy = PlacementPolicy {
        replicas,
        ..Default::default()
    };
    let out = book
        .place(&world(), SERVICE, policy, 0, false)
        .expect("valid policy");
    assert!(out.changed);
    book
}

#[test]
fn a_disconnected_site_keeps_its_replicas_during_grace_and_loses_them_after() {
    let w = world();
    let mut book = placed_book(6);
    assert_eq!(replicas(&book, "sin1"), 2);
    for site in ["fra1", "lon2", "iad1", "sin1"] {
        {
            let n = replicas(&book, site);
            report(&mut book, site, n, 0);
        }
    }
    // sin1 goes quiet; the others keep reporting every minute.
    let mut now = 0;
    while now < 4 * MIN {
        now += MIN;
        for site in ["fra1", "lon2", "iad1"] {
            {
                let n = replicas(&book, site);
                report(&mut book, site, n, now);
            }
        }
        assert!(
            book.replan_all(&w, now).is_empty(),
            "nothing changes inside the grace period"
        );
        assert_eq!(replicas(&book, "sin1"), 2);
    }
    now = 6 * MIN;
    for site in ["fra1", "lon2", "iad1"] {
        {
            let n = replicas(&book, site);
            report(&mut book, site, n, now);
        }
    }
    let outcomes = book.replan_all(&w, now);
    assert_eq!(outcomes.len(), 1);
    let d = &outcomes[0].decision;
    assert_eq!(replicas(&book, "sin1"), 0, "{:?}", d.sites);
    assert_eq!(d.placed, 6, "sin1's replicas are rescheduled elsewhere");
    assert!(d.conditions.iter().any(|c| c.r#type == "SiteUnreachable"));
    let actions: Vec<&str> = outcomes[0].events.iter().map(|e| e.action).collect();
    assert!(actions.contains(&"placement.site_lost"), "{actions:?}");
    assert!(actions.contains(&"placement.remove"), "{actions:?}");
    assert!(
        !book.ready_view()[SERVICE].contains_key("sin1"),
        "steering drops the lost site"
    );

    // sin1 comes back: nothing moves during the stabilization window, then one replica per
    // window.
    now = 10 * MIN;
    report(&mut book, "sin1", 0, now);
    book.replan_all(&w, now);
    assert_eq!(replicas(&book, "sin1"), 0);
    let mut seen = vec![];
    for step in 1..=6 {
        let t = now + step * MIN * 5;
        for site in ["fra1", "lon2", "iad1", "sin1"] {
            {
                let n = replicas(&book, site);
                report(&mut book, site, n, t);
            }
        }
        book.replan_all(&w, t);
        seen.push(replicas(&book, "sin1"));
    }
    assert_eq!(
        &seen[..2],
        &[1, 2],
        "failback one replica per window: {seen:?}"
    );
    assert!(seen.iter().all(|&n| n <= 2));
}

#[test]
fn short_silence_of_every_site_evicts_nothing() {
    // The orchestrator (or the link to it) is down, not every site: keep everything.
    let w = world();
    let mut book = placed_book(6);
    for site in ["fra1", "lon2", "iad1", "sin1"] {
        {
            let n = replicas(&book, site);
            report(&mut book, site, n, 0);
        }
    }
    let outcomes = book.replan_all(&w, 60 * MIN);
    assert!(outcomes.is_empty(), "{outcomes:?}");
    assert_eq!(replicas(&book, "sin1"), 2);
}

#[test]
fn the_removal_rate_limit_holds_under_a_large_demand_drop() {
    let w = world();
    let mut book = placed_book(8);
    // All demand in Europe: 8 replicas on fra1 and lon2.
    let eu_cell = format!("cell:{}", cell_index(w.defaults.cell_degrees, 50.0, 10.0));
    let ap_cell = format!("cell:{}", cell_index(w.defaults.cell_degrees, 1.35, 103.8));
    let na_cell = format!("cell:{}", cell_index(w.defaults.cell_degrees, 39.0, -77.0));
    let demand = |group: &str| GroupDemand {
        service: SERVICE.into(),
        group: group.into(),
        qps: 1000.0,
    };
    book.demand_mut().record("fe1", &[demand(&eu_cell)], 0);
    book.replan_all(&w, 0);
    assert_eq!((replicas(&book, "fra1"), replicas(&book, "lon2")), (4, 4));

    // Europe's demand vanishes; everything now comes from na and ap.
    let mut history: Vec<(i64, u32, u32)> = vec![(0, 4, 4)];
    let mut removal_events = 0;
    for minute in 1..=150 {
        let now = minute * MIN;
        book.demand_mut()
            .record("fe1", &[demand(&na_cell), demand(&ap_cell)], now);
        for o in book.replan_all(&w, now) {
            removal_events += o
                .events
                .iter()
                .filter(|e| e.action == "placement.remove")
                .count();
        }
        history.push((now, replicas(&book, "fra1"), replicas(&book, "lon2")));
    }
    // At most one removal per site in any 30-minute window.
    for site in [1usize, 2] {
        let counts: Vec<(i64, u32)> = history
            .iter()
            .map(|h| (h.0, if site == 1 { h.1 } else { h.2 }))
            .collect();
        for (i, (t, n)) in counts.iter().enumerate() {
            let later = counts
                .iter()
                .skip(i)
                .take_while(|(t2, _)| *t2 < t + 30 * MIN)
                .map(|(_, n2)| *n2)
                .min()
                .unwrap_or(*n);
            assert!(
                n - later.min(*n) <= 1,
                "site {site} lost {} within 30 min at {t}",
                n - later
            );
        }
    }
    // Yet it does drain, at the bounded rate: 150 minutes allow 5 removals per site.
    let last = history.last().copied().unwrap_or_default();
    assert!(last.1 < 4 && last.2 < 4, "{last:?}");
    assert!(removal_events >= 2, "{removal_events}");
    let d = book.decision(SERVICE).expect("placed");
    assert!(d.placed >= d.requested);
}

#[test]
fn ready_view_lists_only_ready_sites_and_endpoints() {
    let mut book = placed_book(6);
    assert!(
        book.ready_view().is_empty(),
        "no report yet: steering unchanged"
    );
    report(&mut book, "fra1", 1, 0);
    report(&mut book, "iad1", 0, 0);
    book.report(
        SERVICE,
        "lon2",
        SiteReport {
            ready_replicas: 1,
            endpoints: vec![
                ReadyEndpoint {
                    address: "192.0.2.77".into(),
                    port: 80,
                    ready: true,
                },
                ReadyEndpoint {
                    address: "192.0.2.78".into(),
                    port: 80,
                    ready: false,
                },
            ],
            at_ms: 0,
        },
    );
    let view = book.ready_view();
    let sites = &view[SERVICE];
    assert!(sites.contains_key("fra1"));
    assert!(
        !sites.contains_key("iad1"),
        "zero ready replicas: not a steering target"
    );
    assert_eq!(sites["lon2"], vec!["192.0.2.77".to_owned()]);
}

#[test]
fn update_policy_needs_a_placement_and_report_needs_one_too() {
    let mut book = PlacementBook::new(RiskDefaults::default(), 0);
    let policy = PlacementPolicy {
        replicas: 2,
        ..Default::default()
    };
    assert!(book.place(&world(), SERVICE, policy, 0, true).is_err());
    assert!(!book.report(
        SERVICE,
        "fra1",
        SiteReport {
            ready_replicas: 1,
            endpoints: vec![],
            at_ms: 0
        }
    ));
}

#[test]
fn demand_groups_map_to_locations_and_expire() {
    let w = world();
    let mut book = PlacementBook::new(RiskDefaults::default(), 0);
    let (ok, bad) = book.demand_mut().record(
        "fe1",
        &[
            GroupDemand {
                service: "www.example.test".into(),
                group: "cell:10".into(),
                qps: 5.0,
            },
            GroupDemand {
                service: SERVICE.into(),
                group: "group:office".into(),
                qps: 3.0,
            },
            GroupDemand {
                service: SERVICE.into(),
                group: "weird".into(),
                qps: 3.0,
            },
            GroupDemand {
                service: SERVICE.into(),
                group: "cell:1".into(),
                qps: f64::NAN,
            },
        ],
        0,
    );
    assert_eq!((ok, bad), (2, 2));
    let points = book.demand_mut().points(&w, SERVICE, 0);
    assert_eq!(points.len(), 2);
    assert!(
        points
            .iter()
            .any(|p| p.location == (1.35, 103.8) && p.weight == 3.0),
        "{points:?}"
    );
    assert!(
        book.demand_mut()
            .points(&w, SERVICE, super::DEMAND_TTL_MS + 1)
            .is_empty()
    );
}
