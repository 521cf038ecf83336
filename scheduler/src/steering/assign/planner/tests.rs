//! The planner must agree with the plain per-service solver it scales up.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::steering::assign::{GroupIn, PopIn, assign};
use crate::steering::cost::{NoReports, group_costs};

#[derive(Debug, Clone)]
struct Case {
    pops: Vec<(f64, f64)>,
    measured: Vec<(usize, usize, f64)>,
    signals: Vec<PopSignals>,
    groups: Vec<Option<(f64, f64)>>,
    services: Vec<ServiceSpec>,
    params: Params,
    near: usize,
    down: usize,
}

fn location() -> impl Strategy<Value = (f64, f64)> {
    (-60.0f64..70.0, -180.0f64..180.0)
}

fn case() -> impl Strategy<Value = Case> {
    (2usize..20, 1usize..60, 1usize..4).prop_flat_map(|(n, g, s)| {
        let service = (
            prop::collection::vec(prop::bool::weighted(0.7), n),
            prop::collection::vec(prop::option::weighted(0.7, 0.0f64..300.0), n),
            (0.0f64..2.0, 0.0f64..20.0, 0.0f64..100.0),
            prop::collection::vec((0..g as u32, 0.0f64..100.0), 0..g),
        )
            .prop_map(
                |(deployed, capacity, (rtt, loss, load), demand)| ServiceSpec {
                    deployed,
                    capacity,
                    weights: CostWeights { rtt, loss, load },
                    demand,
                    exact: Vec::new(),
                    params: None,
                },
            );
        (
            prop::collection::vec(location(), n),
            prop::collection::vec((0..n, 0..n, 1.0f64..200.0), 0..n * 2),
            prop::collection::vec((0.0f64..5.0, 0.0f64..1.2), n),
            prop::collection::vec(prop::option::weighted(0.9, location()), g),
            prop::collection::vec(service, s),
            (0.0f64..0.3, 0.0f64..0.3, 1usize..5, 1usize..8, 0..n),
        )
            .prop_map(
                move |(
                    pops,
                    measured,
                    signals,
                    groups,
                    services,
                    (headroom, hysteresis, k, near, down),
                )| Case {
                    pops,
                    measured,
                    signals: signals
                        .into_iter()
                        .map(|(loss_percent, utilisation)| PopSignals {
                            loss_percent,
                            utilisation,
                        })
                        .collect(),
                    groups,
                    services,
                    params: Params {
                        headroom,
                        hysteresis,
                        candidates: k,
                    },
                    near,
                    down,
                },
            )
    })
}

impl Case {
    fn names(&self) -> Vec<String> {
        (0..self.pops.len()).map(|p| format!("p{p}")).collect()
    }

    fn latency(&self) -> LatencyModel {
        let names = self.names();
        let pops: Vec<(&str, (f64, f64))> = names
            .iter()
            .map(String::as_str)
            .zip(self.pops.iter().copied())
            .collect();
        let measured: BTreeMap<(String, String), f64> = self
            .measured
            .iter()
            .map(|&(a, b, rtt)| ((names[a].clone(), names[b].clone()), rtt))
            .collect();
        LatencyModel::new(&pops, Some(&measured))
    }

    fn planner(&self) -> Planner {
        let mut planner = Planner::new(
            self.groups.clone(),
            self.latency(),
            self.signals.clone(),
            self.params,
            self.near,
        );
        planner.full(self.services.clone());
        planner
    }

    /// The plain solver over every group for service `s`, with `down` PoPs not serving.
    fn assign(&self, s: usize, down: Option<usize>, previous: Option<&Assignment>) -> Assignment {
        let spec = &self.services[s];
        let latency = self.latency();
        let mut demand = vec![0.0; self.groups.len()];
        for &(g, d) in &spec.demand {
            demand[g as usize] += d.max(0.0);
        }
        let groups: Vec<GroupIn<'_>> = self
            .groups
            .iter()
            .zip(&demand)
            .map(|(&location, &demand)| GroupIn {
                label: "cell:0",
                location,
                demand,
            })
            .collect();
        let pops: Vec<PopIn<'_>> = (0..self.pops.len())
            .map(|p| PopIn {
                name: "p",
                location: self.pops[p],
                failure_domain: "x",
                capacity: spec.capacity[p],
                serving: spec.deployed[p] && Some(p) != down,
            })
            .collect();
        let costs: Vec<Vec<f64>> = self
            .groups
            .iter()
            .map(|&loc| {
                group_costs(
                    &latency,
                    "cell:0",
                    loc,
                    &self.signals,
                    &spec.weights,
                    &NoReports,
                )
            })
            .collect();
        assign(&groups, &pops, &|g, p| costs[g][p], &self.params, previous)
    }
}

/// The plan's lists must be `expected`'s lists for the groups with demand: the same PoPs in
/// the same order, weights equal within `slack`.
fn check_plan(plan: &Plan, expected: &Assignment, slack: f64) -> Result<(), TestCaseError> {
    for (i, &g) in plan.groups.iter().enumerate() {
        let (got, want) = (&plan.assignment.groups[i], &expected.groups[g as usize]);
        let same = got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|(a, b)| a.0 == b.0 && (a.1 - b.1).abs() <= slack);
        prop_assert!(same, "group {}: {:?} vs {:?}", g, got, want);
    }
    for (p, (a, b)) in plan.assignment.load.iter().zip(&expected.load).enumerate() {
        prop_assert!(
            (a - b).abs() <= 1e-6 * b.abs().max(1.0),
            "PoP {p}: load {a} vs {b}"
        );
    }
    let (a, b) = (plan.assignment.unserved_demand, expected.unserved_demand);
    prop_assert!((a - b).abs() <= 1e-6 * b.max(1.0), "unserved {a} vs {b}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_planner_solves_every_service_as_the_plain_solver_does(c in case()) {
        let planner = c.planner();
        for s in 0..c.services.len() {
            let expected = c.assign(s, None, None);
            check_plan(planner.plan(s), &expected, 0.0)?;
            prop_assert_eq!(&planner.plan(s).assignment.load, &expected.load);
            prop_assert_eq!(&planner.plan(s).assignment.overloaded, &expected.overloaded);
            // Groups without demand get the plain solver's answer on lookup.
            for g in 0..c.groups.len() {
                prop_assert_eq!(planner.route(s, g as u32), expected.groups[g].clone(), "group {}", g);
            }
        }
    }

    #[test]
    fn re_solving_with_the_previous_plans_matches_the_plain_solver(c in case()) {
        let mut planner = c.planner();
        let before: Vec<Plan> = planner.plans().to_vec();
        planner.full(c.services.clone());
        for (s, previous) in before.iter().enumerate() {
            let first = c.assign(s, None, None);
            let again = c.assign(s, None, Some(&first));
            check_plan(planner.plan(s), &again, 0.0)?;
            prop_assert_eq!(planner.plan(s), previous);
        }
    }

    #[test]
    fn a_pop_going_down_re_solves_like_a_full_solve_with_the_previous_plan(c in case()) {
        let mut planner = c.planner();
        let changed = planner.pop_down(c.down as u32);
        prop_assert!(!planner.is_up(c.down as u32));
        for s in 0..c.services.len() {
            let first = c.assign(s, None, None);
            let after = c.assign(s, Some(c.down), Some(&first));
            // Loads are updated by difference, so weights may differ in the last bits.
            check_plan(planner.plan(s), &after, 1e-9)?;
            // Exactly the groups whose lists changed are reported.
            for (i, &g) in planner.plan(s).groups.iter().enumerate() {
                let moved = planner.plan(s).assignment.groups[i] != first.groups[g as usize];
                prop_assert_eq!(moved, changed.contains(&(s as u32, g)), "group {}", g);
            }
            for g in 0..c.groups.len() {
                prop_assert!(planner.route(s, g as u32).iter().all(|&(p, _)| p as usize != c.down));
            }
        }
        // Up again: the PoP is eligible again and the state is a valid plan.
        planner.pop_up(c.down as u32);
        prop_assert!(planner.is_up(c.down as u32));
    }
}

/// A case whose services all share the first one's weights and deployment (capacities and
/// demand still differ), so [`Planner::full`] solves them with a shared cheapest-PoP memo.
fn shared_case() -> impl Strategy<Value = Case> {
    case().prop_map(|mut c| {
        let first = c.services[0].clone();
        if c.services.len() == 1 {
            let mut twin = first.clone();
            twin.capacity = twin.capacity.iter().map(|c| c.map(|c| c / 2.0)).collect();
            twin.demand.reverse();
            c.services.push(twin);
        }
        for s in &mut c.services {
            s.weights = first.weights;
            s.deployed = first.deployed.clone();
        }
        c
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn services_sharing_a_memo_are_solved_as_the_plain_solver_does(c in shared_case()) {
        let mut planner = c.planner();
        let (class, count) = planner.memo_classes();
        prop_assert_eq!(count, 1);
        prop_assert!(class.iter().all(|&m| m == Some(0)));
        for s in 0..c.services.len() {
            let expected = c.assign(s, None, None);
            check_plan(planner.plan(s), &expected, 0.0)?;
            prop_assert_eq!(&planner.plan(s).assignment.load, &expected.load);
        }
        // Again with the previous plans: the memo is rebuilt per solve.
        planner.full(c.services.clone());
        for s in 0..c.services.len() {
            let first = c.assign(s, None, None);
            let again = c.assign(s, None, Some(&first));
            check_plan(planner.plan(s), &again, 0.0)?;
        }
    }
}

#[test]
fn memo_classes_group_services_by_weights_and_deployment_only() {
    let c = Case {
        pops: vec![(0.0, 0.0), (10.0, 10.0), (20.0, 20.0)],
        measured: Vec::new(),
        signals: vec![PopSignals::default(); 3],
        groups: vec![Some((1.0, 1.0)), Some((19.0, 19.0))],
        services: Vec::new(),
        params: Params::default(),
        near: 2,
        down: 0,
    };
    let spec = |deployed: Vec<bool>, rtt: f64, demand: f64| ServiceSpec {
        deployed,
        capacity: Vec::new(),
        weights: CostWeights {
            rtt,
            ..CostWeights::default()
        },
        demand: vec![(0, demand), (1, demand)],
        exact: Vec::new(),
        params: None,
    };
    let all = vec![true; 3];
    let two = vec![true, true, false];
    let mut planner = c.planner();
    planner.full(vec![
        spec(all.clone(), 1.0, 5.0),
        spec(two.clone(), 1.0, 5.0),
        spec(all.clone(), 2.0, 5.0),
        spec(all.clone(), 1.0, 9.0),
        spec(two.clone(), 1.0, 1.0),
        spec(all.clone(), 3.0, 5.0),
    ]);
    let (class, count) = planner.memo_classes();
    assert_eq!(count, 2);
    // Services 0 and 3 (everywhere, rtt 1) share one memo, 1 and 4 (two PoPs) another;
    // 2 and 5 have weights of their own and no memo.
    assert_eq!(class[0], class[3]);
    assert_eq!(class[1], class[4]);
    assert_ne!(class[0], class[1]);
    assert!(class[0].is_some() && class[1].is_some());
    assert_eq!((class[2], class[5]), (None, None));
}

/// A group split over its nearest PoP and a previous PoP outside its (single) candidate,
/// whose nearest PoP then shrinks: the plain solver spills to the previous PoP, which its
/// list holds, even though a cheaper PoP now has room — and so must the planner, which
/// finds spill targets without building lists.
#[test]
fn a_spill_goes_to_a_listed_previous_pop_as_in_the_plain_solver() {
    let spec = |capacity: [f64; 3], demand: Vec<(u32, f64)>| ServiceSpec {
        deployed: vec![true; 3],
        capacity: capacity.iter().map(|&c| Some(c)).collect(),
        weights: CostWeights::default(),
        demand,
        exact: Vec::new(),
        params: None,
    };
    let first_case = Case {
        pops: vec![(0.0, 0.0), (0.0, 10.0), (0.0, 11.0)],
        measured: Vec::new(),
        signals: vec![PopSignals::default(); 3],
        // Group 0 by PoP 0; group 1 fills PoP 1 in the first solve.
        groups: vec![Some((0.0, 0.0)), Some((0.0, 10.0))],
        services: vec![spec([5.0, 5.0, 100.0], vec![(0, 10.0), (1, 5.0)])],
        params: Params {
            headroom: 0.0,
            hysteresis: 0.1,
            candidates: 1,
        },
        near: 3,
        down: 0,
    };
    let mut planner = first_case.planner();
    let first = first_case.assign(0, None, None);
    let split: Vec<u32> = first.groups[0].iter().map(|&(p, _)| p).collect();
    assert_eq!(
        split,
        [0, 2],
        "group 0 spills past the full PoP 1: {first:?}"
    );

    // PoP 0 shrinks and group 1 leaves, so PoP 1 has room; PoP 1 is cheaper than PoP 2 by
    // less than the hysteresis, so group 0 keeps its split until the spill.
    let mut second_case = first_case.clone();
    second_case.services = vec![spec([2.0, 5.0, 100.0], vec![(0, 10.0)])];
    planner.full(second_case.services.clone());
    let expected = second_case.assign(0, None, Some(&first));
    let pops: Vec<u32> = expected.groups[0].iter().map(|&(p, _)| p).collect();
    assert_eq!(
        pops,
        [0, 2],
        "the plain solver spills to the listed PoP 2: {expected:?}"
    );
    check_plan(planner.plan(0), &expected, 0.0).unwrap();
}
