use std::collections::{BTreeMap, HashMap};

use isobar_proto::v1::{
    Division, LatencyObjective, PlacementDecision, PlacementPolicy, SchedulingType, SiteAssignment,
    SiteBounds, SiteGroup, SiteSelector, SpreadConstraint, SpreadField, ValueList,
};
use isobar_store::world::World;

use super::{DemandPoint, DistanceRtt, PolicyError, SolveInput, validate};
use crate::fixtures::world;

/// The solver with no demand, no ceilings and no previous decision.
fn solve(
    world: &World,
    _service: &str,
    policy: &PlacementPolicy,
    used: &HashMap<String, u32>,
) -> PlacementDecision {
    solve_with(world, policy, used, &[], None)
}

fn solve_with(
    world: &World,
    policy: &PlacementPolicy,
    used: &HashMap<String, u32>,
    demand: &[DemandPoint],
    previous: Option<&PlacementDecision>,
) -> PlacementDecision {
    super::solve(&SolveInput {
        world,
        service: SERVICE,
        policy,
        used,
        demand,
        rtt: &DistanceRtt::default(),
        ceilings: &BTreeMap::new(),
        previous,
    })
}

fn labels(pairs: &[(&str, &str)]) -> SiteSelector {
    SiteSelector {
        match_labels: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

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
    p.exclude = vec![labels(&[("tier", "edge")])];
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

#[test]
fn overflow_from_a_full_first_group() {
    // Group "core" (fra1, iad1, sin1: 10 slots) is filled first; only the two replicas it
    // cannot hold go to the "edge" group (lon2).
    let mut p = policy(12, &[], &[]);
    p.groups = vec![
        SiteGroup {
            name: "core".into(),
            selectors: vec![labels(&[("tier", "core")])],
        },
        SiteGroup {
            name: "edge".into(),
            selectors: vec![labels(&[("tier", "edge")])],
        },
    ];
    let d = solve(&world(), SERVICE, &p, &HashMap::new());
    assert_eq!(d.placed, 12);
    assert_eq!(replicas(&d, "lon2"), 2, "{:?}", d.sites);
    let lon2 = d.sites.iter().find(|s| s.site == "lon2").expect("lon2");
    assert_eq!(lon2.group, "edge");
    assert!(lon2.reason.contains("overflow to edge"), "{}", lon2.reason);
    // When the first group can hold everything, the second stays empty.
    p.replicas = 6;
    let d = solve(&world(), SERVICE, &p, &HashMap::new());
    assert_eq!(replicas(&d, "lon2"), 0, "{:?}", d.sites);
    assert!(d.sites.iter().all(|s| s.group == "core"));
}

#[test]
fn a_partial_decision_when_capacity_is_short() {
    // 14 slots in the world, 20 asked for: place 14, say so.
    let d = solve(&world(), SERVICE, &policy(20, &[], &[]), &HashMap::new());
    assert_eq!((d.requested, d.placed), (20, 14));
    assert_eq!(d.conditions.len(), 1, "{:?}", d.conditions);
    assert_eq!(d.conditions[0].r#type, "Infeasible");
    assert!(
        d.conditions[0].message.contains("placed 14 of 20"),
        "{}",
        d.conditions[0].message
    );
}

#[test]
fn static_weights_and_available_capacity() {
    let mut p = policy(6, &[], &[]);
    p.division = Division::StaticWeights as i32;
    p.static_weights = [("fra1".to_owned(), 2), ("iad1".to_owned(), 1)].into();
    let d = solve(&world(), SERVICE, &p, &HashMap::new());
    assert_eq!((replicas(&d, "fra1"), replicas(&d, "iad1")), (4, 2));
    assert_eq!(d.sites.len(), 2, "sites without weight get nothing");

    // Karmada's example: 12 replicas over 6/12/18 available → 2/4/6. Here 14 free slots
    // (4, 4, 4, 2 with 2 used in fra1 → 2, 4, 4, 2) and 6 replicas.
    let mut p = policy(6, &[], &[]);
    p.division = Division::AvailableCapacity as i32;
    let used = HashMap::from([("fra1".to_owned(), 2)]);
    let d = solve(&world(), SERVICE, &p, &used);
    assert_eq!(d.placed, 6);
    assert_eq!(
        replicas(&d, "lon2") + replicas(&d, "iad1"),
        4,
        "{:?}",
        d.sites
    );
    assert_eq!(
        replicas(&d, "fra1") + replicas(&d, "sin1"),
        2,
        "{:?}",
        d.sites
    );
}

#[test]
fn aggregated_uses_as_few_sites_as_possible() {
    let mut p = policy(6, &[], &[]);
    p.division = Division::Aggregated as i32;
    let d = solve(&world(), SERVICE, &p, &HashMap::new());
    assert_eq!(d.sites.len(), 2, "{:?}", d.sites);
    assert_eq!(d.placed, 6);
}

#[test]
fn duplicated_runs_the_full_count_everywhere() {
    let mut p = policy(3, &["eu"], &[]);
    p.scheduling = SchedulingType::Duplicated as i32;
    let d = solve(&world(), SERVICE, &p, &HashMap::new());
    assert_eq!((replicas(&d, "fra1"), replicas(&d, "lon2")), (3, 3));
    assert_eq!((d.requested, d.placed), (6, 6));
    assert!(d.conditions.is_empty());
}

#[test]
fn spread_constraints_bound_the_regions_used() {
    // max 1 region: everything lands in one region even though demand is everywhere.
    let mut p = policy(4, &[], &[]);
    p.spread = vec![SpreadConstraint {
        field: SpreadField::Region as i32,
        max_groups: 1,
        ..Default::default()
    }];
    let d = solve(&world(), SERVICE, &p, &HashMap::new());
    let regions: std::collections::BTreeSet<&str> =
        d.sites.iter().map(|s| s.group.as_str()).collect();
    assert_eq!(regions.len(), 1, "{:?}", d.sites);
    assert_eq!(d.placed, 4);

    // min 3 regions although all demand is in eu.
    let mut p = policy(4, &[], &["eu"]);
    p.spread = vec![SpreadConstraint {
        field: SpreadField::Region as i32,
        min_groups: 3,
        ..Default::default()
    }];
    let d = solve(&world(), SERVICE, &p, &HashMap::new());
    let regions: std::collections::BTreeSet<&str> =
        d.sites.iter().map(|s| s.group.as_str()).collect();
    assert_eq!(regions.len(), 3, "{:?}", d.sites);
    assert_eq!(d.placed, 4);
    assert!(d.conditions.is_empty(), "{:?}", d.conditions);

    // Impossible: 4 regions wanted, 3 exist.
    p.spread[0].min_groups = 4;
    let d = solve(&world(), SERVICE, &p, &HashMap::new());
    assert_eq!(
        d.conditions[0].r#type, "SpreadUnsatisfied",
        "{:?}",
        d.conditions
    );
}

#[test]
fn match_in_selects_by_value_list() {
    let mut p = policy(4, &[], &[]);
    p.include = vec![SiteSelector {
        match_in: [(
            "region".to_owned(),
            ValueList {
                values: vec!["na".into(), "ap".into()],
            },
        )]
        .into(),
        ..Default::default()
    }];
    let d = solve(&world(), SERVICE, &p, &HashMap::new());
    assert!(
        d.sites.iter().all(|s| s.site == "iad1" || s.site == "sin1"),
        "{:?}",
        d.sites
    );
    assert_eq!(d.placed, 4);
}

#[test]
fn replicas_follow_observed_demand() {
    // Nine tenths of the queries come from around Singapore: most replicas go to ap, and
    // what sin1 (2 slots) cannot hold overflows to the nearest other site.
    let demand = [
        DemandPoint {
            location: (1.3, 103.8),
            weight: 90.0,
        },
        DemandPoint {
            location: (48.8, 2.3),
            weight: 10.0,
        },
    ];
    let d = solve_with(
        &world(),
        &policy(10, &[], &[]),
        &HashMap::new(),
        &demand,
        None,
    );
    assert_eq!(d.placed, 10);
    assert_eq!(replicas(&d, "sin1"), 2);
    assert_eq!(
        replicas(&d, "fra1") + replicas(&d, "lon2"),
        10 - 2,
        "{:?}",
        d.sites
    );
    assert!(
        d.sites
            .iter()
            .any(|s| s.reason.contains("overflow from ap")),
        "{:?}",
        d.sites
    );
}

#[test]
fn latency_objective_moves_a_replica_toward_uncovered_users() {
    // 96 % of the queries come from Europe, 4 % from Singapore: by demand alone all four
    // replicas go to eu. "99 % within 50 ms" needs a replica in sin1.
    let demand = [
        DemandPoint {
            location: (50.0, 10.0),
            weight: 96.0,
        },
        DemandPoint {
            location: (1.35, 103.8),
            weight: 4.0,
        },
    ];
    let mut p = policy(4, &[], &[]);
    let without = solve_with(&world(), &p, &HashMap::new(), &demand, None);
    assert_eq!(replicas(&without, "sin1"), 0, "{:?}", without.sites);
    p.latency = Some(LatencyObjective {
        max_rtt_ms: 50,
        fraction: 0.99,
    });
    let d = solve_with(&world(), &p, &HashMap::new(), &demand, None);
    assert_eq!(replicas(&d, "sin1"), 1, "{:?}", d.sites);
    assert_eq!(d.placed, 4);
    assert!(
        (d.demand_within_objective - 1.0).abs() < 1e-9,
        "{}",
        d.demand_within_objective
    );
    assert!(d.conditions.is_empty(), "{:?}", d.conditions);

    // With sin1 excluded no site is within 50 ms of Singapore: the decision says so.
    p.exclude = vec![labels(&[("site", "sin1")])];
    let d = solve_with(&world(), &p, &HashMap::new(), &demand, None);
    assert_eq!(
        d.conditions[0].r#type, "LatencyObjectiveUnmet",
        "{:?}",
        d.conditions
    );
    assert!((d.demand_within_objective - 0.96).abs() < 1e-9);
}

#[test]
fn validation_names_nested_fields() {
    let w = world();
    let mut p = policy(2, &[], &[]);
    p.groups = vec![SiteGroup {
        name: "g".into(),
        selectors: vec![],
    }];
    let err = validate(&w, SERVICE, &p).unwrap_err();
    assert!(
        err.to_string().starts_with("policy.groups[0].selectors:"),
        "{err}"
    );

    let mut p = policy(2, &[], &[]);
    p.site_bounds = [
        ("fra1".to_owned(), SiteBounds { min: 2, max: 0 }),
        ("iad1".to_owned(), SiteBounds { min: 1, max: 0 }),
    ]
    .into();
    let err = validate(&w, SERVICE, &p).unwrap_err();
    assert!(err.to_string().starts_with("policy.site_bounds:"), "{err}");

    let mut p = policy(2, &[], &[]);
    p.latency = Some(LatencyObjective {
        max_rtt_ms: 30,
        fraction: 1.5,
    });
    let err = validate(&w, SERVICE, &p).unwrap_err();
    assert!(
        err.to_string().starts_with("policy.latency.fraction:"),
        "{err}"
    );

    let mut p = policy(2, &[], &[]);
    p.division = Division::StaticWeights as i32;
    let err = validate(&w, SERVICE, &p).unwrap_err();
    assert!(
        err.to_string().starts_with("policy.static_weights:"),
        "{err}"
    );

    let mut p = policy(2, &[], &[]);
    p.spread = vec![SpreadConstraint {
        field: SpreadField::Label as i32,
        ..Default::default()
    }];
    let err = validate(&w, SERVICE, &p).unwrap_err();
    assert!(
        err.to_string().starts_with("policy.spread[0].label:"),
        "{err}"
    );

    let mut p = policy(2, &[], &[]);
    p.scheduling = 7;
    let err = validate(&w, SERVICE, &p).unwrap_err();
    assert!(err.to_string().starts_with("policy.scheduling:"), "{err}");
}

/// The fixture world with one more PoP, in name order.
fn world_with(name: &str, region: &str, (lat, lon): (f64, f64), slots: u32) -> World {
    let mut w = world();
    let mut pop = w.pop("fra1").expect("fra1").clone();
    pop.name = name.into();
    pop.region = region.into();
    (pop.lat, pop.lon, pop.replica_slots) = (lat, lon, slots);
    w.pops.push(pop);
    w.pops.sort_by(|a, b| a.name.cmp(&b.name));
    w
}

/// A decision in force with these counts (as if history had led there).
fn decision(sites: &[(&str, u32)]) -> PlacementDecision {
    PlacementDecision {
        sites: sites
            .iter()
            .map(|(site, replicas)| SiteAssignment {
                site: (*site).to_owned(),
                replicas: *replicas,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn counts(d: &PlacementDecision) -> Vec<(&str, u32)> {
    d.sites
        .iter()
        .map(|s| (s.site.as_str(), s.replicas))
        .collect()
}

const AMS: (f64, f64) = (52.37, 4.90);

fn point(lat: f64, lon: f64, weight: f64) -> DemandPoint {
    DemandPoint {
        location: (lat, lon),
        weight,
    }
}

#[test]
fn a_new_site_in_a_served_region_takes_nothing_from_the_others() {
    let p = policy(4, &[], &["eu"]);
    let before = solve_with(&world(), &p, &HashMap::new(), &[], None);
    assert_eq!(counts(&before), [("fra1", 2), ("lon2", 2)]);
    let grown = world_with("ams1", "eu", AMS, 4);
    // A fresh solve would spread over all three: ams1 is as good as the others.
    let fresh = solve_with(&grown, &p, &HashMap::new(), &[], None);
    assert_eq!(replicas(&fresh, "ams1"), 1, "{:?}", counts(&fresh));
    // Against the decision in force nothing moves: eu's replicas already run in eu.
    let after = solve_with(&grown, &p, &HashMap::new(), &[], Some(&before));
    assert_eq!(counts(&after), counts(&before));
    assert_eq!(after.moves, 0);
    let lon2 = after.sites.iter().find(|s| s.site == "lon2").expect("lon2");
    assert!(lon2.reason.contains("kept in place"), "{}", lon2.reason);
    // And that is a fixed point.
    let again = solve_with(&grown, &p, &HashMap::new(), &[], Some(&after));
    assert_eq!(again, after);
}

#[test]
fn a_new_weighted_site_takes_only_its_share() {
    // Weights 2:1 over six replicas: 4 + 2. lon2 joins with weight 1: exact shares 3, 1.5,
    // 1.5. iad1 may keep its 2 (a rounding of 1.5), so only fra1 gives lon2 one replica.
    let mut p = policy(6, &[], &[]);
    p.division = Division::StaticWeights as i32;
    p.static_weights = [("fra1".to_owned(), 2), ("iad1".to_owned(), 1)].into();
    let before = solve_with(&world(), &p, &HashMap::new(), &[], None);
    assert_eq!(counts(&before), [("fra1", 4), ("iad1", 2)]);
    p.static_weights.insert("lon2".into(), 1);
    let fresh = solve_with(&world(), &p, &HashMap::new(), &[], None);
    assert_eq!(counts(&fresh), [("fra1", 3), ("iad1", 2), ("lon2", 1)]);
    let after = solve_with(&world(), &p, &HashMap::new(), &[], Some(&before));
    assert_eq!(counts(&after), [("fra1", 3), ("iad1", 2), ("lon2", 1)]);
    assert_eq!(after.moves, 2, "one replica from fra1 to lon2");

    // A previous decision that rounded the other way keeps its rounding.
    let previous = decision(&[("fra1", 3), ("iad1", 1), ("lon2", 2)]);
    let kept = solve_with(&world(), &p, &HashMap::new(), &[], Some(&previous));
    assert_eq!(counts(&kept), [("fra1", 3), ("iad1", 1), ("lon2", 2)]);
    assert_eq!(kept.moves, 0);
}

#[test]
fn a_lost_site_moves_only_its_replicas() {
    // History left eu's five replicas unevenly: fra1 4, lon2 1 (plus ams1 1). lon2 goes.
    let grown = world_with("ams1", "eu", AMS, 4);
    let p = policy(6, &[], &["eu"]);
    let previous = decision(&[("ams1", 1), ("fra1", 4), ("lon2", 1)]);
    let kept = solve_with(&grown, &p, &HashMap::new(), &[], Some(&previous));
    assert_eq!(
        kept.moves,
        0,
        "an equally good decision stays: {:?}",
        counts(&kept)
    );
    let mut p = p.clone();
    p.exclude = vec![labels(&[("site", "lon2")])];
    let fresh = solve_with(&grown, &p, &HashMap::new(), &[], None);
    assert_eq!(counts(&fresh), [("ams1", 3), ("fra1", 3)]);
    let after = solve_with(&grown, &p, &HashMap::new(), &[], Some(&previous));
    assert_eq!(counts(&after), [("ams1", 2), ("fra1", 4)]);
    assert_eq!(after.moves, 2, "lon2's replica to ams1, nothing else");
}

#[test]
fn less_demand_somewhere_moves_only_the_shifted_share() {
    let (eu, na, ap) = (
        point(50.0, 10.0, 1.0),
        point(39.0, -77.0, 1.0),
        point(1.35, 103.8, 1.0),
    );
    let p = policy(6, &[], &[]);
    // History put eu's two replicas both on lon2.
    let previous = decision(&[("iad1", 2), ("lon2", 2), ("sin1", 2)]);
    let kept = solve_with(
        &world(),
        &p,
        &HashMap::new(),
        &[eu, na, ap],
        Some(&previous),
    );
    assert_eq!(kept.moves, 0, "{:?}", counts(&kept));
    // ap's demand goes: its two replicas go to eu and na, one each; lon2 keeps both.
    let after = solve_with(&world(), &p, &HashMap::new(), &[eu, na], Some(&previous));
    assert_eq!(
        counts(&after),
        [("fra1", 1), ("iad1", 3), ("lon2", 2)],
        "{:?}",
        after.sites
    );
    assert_eq!(after.moves, 4);
    let fresh = solve_with(&world(), &p, &HashMap::new(), &[eu, na], None);
    assert_eq!(counts(&fresh), [("fra1", 2), ("iad1", 3), ("lon2", 1)]);
}

#[test]
fn kept_replicas_still_meet_the_latency_objective() {
    // eu demand near Frankfurt plus a little near London, "all within 8 ms": both eu
    // sites are needed. A previous decision that ran everything on fra1 gives one up.
    let demand = [point(50.1, 8.7, 90.0), point(51.5, -0.1, 10.0)];
    let mut p = policy(4, &["eu"], &[]);
    p.latency = Some(LatencyObjective {
        max_rtt_ms: 8,
        fraction: 1.0,
    });
    let previous = decision(&[("fra1", 4)]);
    let d = solve_with(&world(), &p, &HashMap::new(), &demand, Some(&previous));
    assert!(replicas(&d, "lon2") >= 1, "{:?}", counts(&d));
    assert!(
        (d.demand_within_objective - 1.0).abs() < 1e-9,
        "{}",
        d.demand_within_objective
    );
    assert!(d.conditions.is_empty(), "{:?}", d.conditions);
}
