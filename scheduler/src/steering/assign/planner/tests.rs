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
