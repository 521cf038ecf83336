use std::collections::HashMap;

use isobar_proto::v1::{PlacementPolicy, SiteBounds, SiteSelector};

use super::{PolicyError, solve, validate};
use crate::fixtures::world;

const SERVICE: &str = "www.example.test.";

fn policy(replicas: u32, allowed: &[&str], demand: &[&str]) -> PlacementPolicy {
    PlacementPolicy {
        replicas,
        allowed_regions: allowed.iter().map(|s| (*s).to_owned()).collect(),
        demand_regions: demand.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

fn replicas(decision: &isobar_proto::v1::PlacementDecision, site: &str) -> u32 {
    decision
        .sites
        .iter()
        .find(|s| s.site == site)
        .map_or(0, |s| s.replicas)
}

#[test]
fn spreads_over_the_demand_regions_pops() {
    let d = solve(&world(), SERVICE, &policy(4, &[], &["eu"]), &HashMap::new());
    assert_eq!((replicas(&d, "fra1"), replicas(&d, "lon2")), (2, 2));
    assert_eq!(d.placed, 4);
    assert!(d.conditions.is_empty());
    let total: f64 = d.sites.iter().map(|s| s.weight).sum();
    assert!((total - 1.0).abs() < 1e-9);
}

#[test]
fn splits_between_demand_regions_and_overflows_to_the_nearest() {
    // ap holds 2 slots; the rest of its share overflows to the nearest other PoP.
    let d = solve(
        &world(),
        SERVICE,
        &policy(6, &[], &["ap", "na"]),
        &HashMap::new(),
    );
    assert_eq!(replicas(&d, "sin1"), 2);
    assert_eq!(replicas(&d, "iad1"), 3);
    assert_eq!(d.placed, 6);
    assert!(
        d.sites
            .iter()
            .any(|s| s.reason.contains("overflow from ap")),
        "{:?}",
        d.sites
    );
}

#[test]
fn never_exceeds_capacity_and_reports_a_shortfall() {
    let d = solve(&world(), SERVICE, &policy(9, &["eu"], &[]), &HashMap::new());
    assert_eq!(d.placed, 8);
    assert_eq!(d.conditions[0].r#type, "Infeasible");
    let used = HashMap::from([("fra1".to_owned(), 3)]);
    let d = solve(&world(), SERVICE, &policy(4, &["eu"], &[]), &used);
    assert_eq!(replicas(&d, "fra1"), 1, "only one slot left in fra1");
    assert_eq!(d.placed, 4, "lon2 takes the rest");
}

#[test]
fn selectors_and_site_bounds() {
    let mut p = policy(3, &[], &["eu"]);
    p.exclude = vec![SiteSelector {
        match_labels: [("tier".to_owned(), "edge".to_owned())].into(),
    }];
    let d = solve(&world(), SERVICE, &p, &HashMap::new());
    assert_eq!(replicas(&d, "lon2"), 0);
    assert_eq!(replicas(&d, "fra1"), 3);

    let mut p = policy(4, &[], &["eu"]);
    p.site_bounds = [
        ("fra1".to_owned(), SiteBounds { min: 0, max: 1 }),
        ("sin1".to_owned(), SiteBounds { min: 1, max: 0 }),
    ]
    .into();
    let d = solve(&world(), SERVICE, &p, &HashMap::new());
    assert_eq!(
        (
            replicas(&d, "fra1"),
            replicas(&d, "sin1"),
            replicas(&d, "lon2")
        ),
        (1, 1, 2)
    );
}

#[test]
fn validation_names_the_field() {
    let w = world();
    assert!(matches!(
        validate(&w, "nope.", &policy(1, &[], &[])),
        Err(PolicyError::UnknownService(_))
    ));
    let err = validate(&w, SERVICE, &policy(0, &[], &[])).unwrap_err();
    assert!(err.to_string().starts_with("policy.replicas:"), "{err}");
    let err = validate(&w, SERVICE, &policy(1, &["mars"], &[])).unwrap_err();
    assert!(
        err.to_string().starts_with("policy.allowed_regions[0]:"),
        "{err}"
    );
}

#[test]
fn unchanged_inputs_give_the_same_decision() {
    let p = policy(5, &[], &[]);
    assert_eq!(
        solve(&world(), SERVICE, &p, &HashMap::new()),
        solve(&world(), SERVICE, &p, &HashMap::new())
    );
}
