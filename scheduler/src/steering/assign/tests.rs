//! Property and scenario tests of the capacity-aware assignment.

use proptest::prelude::*;

use super::*;

/// A random single-service world: costs per (group, PoP), capacities, serving flags, demand.
#[derive(Debug, Clone)]
struct World {
    costs: Vec<Vec<f64>>,
    capacity: Vec<Option<f64>>,
    serving: Vec<bool>,
    demand: Vec<f64>,
    params: Params,
}

impl World {
    fn groups(&self) -> Vec<GroupIn<'static>> {
        self.demand
            .iter()
            .map(|&demand| GroupIn {
                label: "cell:0",
                location: None,
                demand,
            })
            .collect()
    }

    fn pops(&self) -> Vec<PopIn<'static>> {
        (0..self.capacity.len())
            .map(|p| PopIn {
                name: "pop",
                location: (0.0, 0.0),
                failure_domain: if p % 2 == 0 { "even" } else { "odd" },
                capacity: self.capacity[p],
                serving: self.serving[p],
            })
            .collect()
    }

    fn solve(&self, previous: Option<&Assignment>) -> Assignment {
        let costs = &self.costs;
        assign(
            &self.groups(),
            &self.pops(),
            &|g, p| costs[g][p],
            &self.params,
            previous,
        )
    }

    fn usable(&self, p: usize) -> f64 {
        usable(self.capacity[p], self.params.headroom)
    }

    fn total_usable(&self) -> f64 {
        (0..self.capacity.len())
            .filter(|&p| self.serving[p])
            .map(|p| self.usable(p))
            .sum()
    }

    /// Scales demand so that it fills `fill` (≤ 1) of the serving PoPs' usable capacity.
    fn fitted(mut self, fill: f64) -> Self {
        let total: f64 = self.demand.iter().sum();
        let usable = self.total_usable();
        if total > 0.0 && usable.is_finite() && total > usable * fill {
            let scale = usable * fill / total;
            for d in &mut self.demand {
                *d *= scale;
            }
        }
        self
    }

    /// Every PoP bounded, at least one serving, and `factor` (> 1) times more demand than
    /// the serving PoPs can take.
    fn overfitted(mut self, factor: f64) -> Self {
        for c in &mut self.capacity {
            c.get_or_insert(50.0);
        }
        self.serving[0] = true;
        if self.demand.iter().all(|&d| d <= 0.0) {
            self.demand[0] = 1.0;
        }
        let total: f64 = self.demand.iter().sum();
        let scale = (self.total_usable() * factor / total).max(1.0);
        for d in &mut self.demand {
            *d *= scale;
        }
        self
    }
}

fn world() -> impl Strategy<Value = World> {
    world_with(1)
}

/// Worlds with at least `min_pops` PoPs.
fn world_with(min_pops: usize) -> impl Strategy<Value = World> {
    (min_pops..9, 1usize..30).prop_flat_map(|(pops, groups)| {
        (
            prop::collection::vec(prop::collection::vec(1.0f64..300.0, pops), groups),
            prop::collection::vec(prop::option::weighted(0.8, 0.0f64..500.0), pops),
            prop::collection::vec(prop::bool::weighted(0.8), pops),
            prop::collection::vec(prop_oneof![1 => Just(0.0), 4 => 0.0f64..200.0], groups),
            (0.0f64..0.5, 0.0f64..0.3, 1usize..5),
        )
            .prop_map(
                |(costs, capacity, serving, demand, (headroom, hysteresis, k))| World {
                    costs,
                    capacity,
                    serving,
                    demand,
                    params: Params {
                        headroom,
                        hysteresis,
                        candidates: k,
                    },
                },
            )
    })
}

fn tol(usable: f64) -> f64 {
    1e-6 * usable.max(1.0)
}

/// The structural promises of every assignment.
fn check_shape(w: &World, a: &Assignment) -> Result<(), TestCaseError> {
    let any_serving = w.serving.iter().any(|&s| s);
    prop_assert_eq!(a.groups.len(), w.demand.len());
    prop_assert_eq!(a.load.len(), w.capacity.len());
    for list in &a.groups {
        prop_assert_eq!(list.is_empty(), !any_serving);
        if list.is_empty() {
            continue;
        }
        let sum: f64 = list.iter().map(|&(_, x)| x).sum();
        prop_assert!((sum - 1.0).abs() <= 1e-9, "weights sum to {sum}: {list:?}");
        for (i, &(p, x)) in list.iter().enumerate() {
            prop_assert!(x > 0.0, "weight {x}");
            prop_assert!(w.serving[p as usize], "non-serving PoP {p} in {list:?}");
            prop_assert!(list[..i].iter().all(|&(q, _)| q != p), "PoP {p} twice");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn weights_sum_to_one_and_only_serving_pops_appear(w in world()) {
        let a = w.solve(None);
        check_shape(&w, &a)?;
        let again = w.solve(Some(&a));
        check_shape(&w, &again)?;
    }

    #[test]
    fn capacity_with_headroom_is_never_exceeded_when_demand_fits(w in world(), fill in 0.05f64..1.0) {
        let w = w.fitted(fill);
        let a = w.solve(None);
        check_shape(&w, &a)?;
        for (p, &load) in a.load.iter().enumerate() {
            let usable = w.usable(p);
            prop_assert!(load <= usable + tol(usable), "PoP {p}: {load} > {usable}");
        }
        prop_assert!(a.overloaded.is_empty(), "{:?}", a.overloaded);
        prop_assert_eq!(a.unserved_demand, 0.0);
    }

    #[test]
    fn demand_that_does_not_fit_fills_every_pop_and_reports_the_excess(w in world(), factor in 1.01f64..3.0) {
        let w = w.overfitted(factor);
        let a = w.solve(None);
        let demand: f64 = w.demand.iter().sum();
        let usable = w.total_usable();
        prop_assert!(demand > usable);
        // Nothing is dropped: every qps of demand is on some PoP.
        let load: f64 = a.load.iter().sum();
        prop_assert!((load - demand).abs() <= 1e-6 * demand.max(1.0));
        prop_assert!(!a.overloaded.is_empty());
        prop_assert!((a.unserved_demand - (demand - usable)).abs() <= 1e-6 * demand.max(1.0),
            "unserved {} vs {}", a.unserved_demand, demand - usable);
    }

    #[test]
    fn re_solving_unchanged_inputs_returns_the_same_assignment(w in world()) {
        let first = w.solve(None);
        let second = w.solve(Some(&first));
        prop_assert_eq!(&second, &first);
        let third = w.solve(Some(&second));
        prop_assert_eq!(&third, &first);
    }

    #[test]
    fn a_pop_going_down_moves_its_groups_and_stays_within_capacity(
        w in world(),
        fill in 0.05f64..1.0,
        down in any::<prop::sample::Index>(),
    ) {
        let mut w = w.fitted(fill);
        let first = w.solve(None);
        let down = down.index(w.serving.len());
        w.serving[down] = false;
        let w = w.fitted(fill);
        let second = w.solve(Some(&first));
        check_shape(&w, &second)?;
        prop_assert_eq!(second.load[down], 0.0);
        for (p, &load) in second.load.iter().enumerate() {
            let usable = w.usable(p);
            prop_assert!(load <= usable + tol(usable), "PoP {p}: {load} > {usable}");
        }
    }

    #[test]
    fn a_cost_change_below_the_hysteresis_moves_no_group(
        w in world(),
        wiggle in prop::collection::vec(-1.0f64..1.0, 0..300),
    ) {
        let mut w = w.fitted(0.7);
        w.params.hysteresis = 0.1;
        let first = w.solve(None);
        // ±3 % per cost: no PoP can now look more than 10 % better than the chosen one.
        let mut changed = w.clone();
        for (i, cost) in changed.costs.iter_mut().flatten().enumerate() {
            *cost *= 1.0 + 0.03 * wiggle.get(i).copied().unwrap_or(0.5);
        }
        let second = changed.solve(Some(&first));
        for (g, (a, b)) in first.groups.iter().zip(&second.groups).enumerate() {
            let mut a = a.clone();
            let mut b = b.clone();
            a.sort_by_key(|&(p, _)| p);
            b.sort_by_key(|&(p, _)| p);
            prop_assert_eq!(a, b, "group {} moved", g);
        }
    }

    #[test]
    fn a_cost_change_above_the_hysteresis_moves_the_group(w in world(), pick in any::<prop::sample::Index>()) {
        let mut w = w;
        w.params.hysteresis = 0.1;
        w.capacity = vec![None; w.capacity.len()];
        let first = w.solve(None);
        let g = pick.index(w.demand.len());
        let (home, _) = first.groups[g].first().copied().unwrap_or((0, 0.0));
        let Some(q) = (0..w.capacity.len()).find(|&p| w.serving[p] && p as u32 != home) else {
            return Ok(());
        };
        let mut changed = w.clone();
        // q becomes 20 % cheaper than the group's current PoP.
        changed.costs[g][q] = w.costs[g][home as usize] * 0.8;
        let second = changed.solve(Some(&first));
        prop_assert_eq!(&second.groups[g], &vec![(q as u32, 1.0)]);
        // Every other group stays put.
        for other in (0..w.demand.len()).filter(|&o| o != g) {
            prop_assert_eq!(&second.groups[other], &first.groups[other]);
        }
    }

    #[test]
    fn excess_of_a_cut_pop_goes_to_the_next_cheapest_pops_cheapest_moves_first(
        w in world_with(2),
        cut in 0.0f64..0.9,
    ) {
        let mut w = w;
        w.capacity = vec![None; w.capacity.len()];
        w.serving[0] = true;
        w.serving[1] = true;
        let first = w.solve(None);
        // The most loaded PoP loses capacity: it can now carry `cut` of its load.
        let (hot, &load) = first
            .load
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .unwrap();
        prop_assume!(load > 1.0);
        let mut cut_world = w.clone();
        cut_world.capacity[hot] = Some(load * cut / (1.0 - w.params.headroom));
        let second = cut_world.solve(None);
        let usable = cut_world.usable(hot);
        prop_assert!((second.load[hot] - usable).abs() <= tol(usable), "{} vs {usable}", second.load[hot]);

        // Next-cheapest serving PoP of group g, other than `hot`.
        let next = |g: usize| {
            (0..w.capacity.len())
                .filter(|&p| w.serving[p] && p != hot)
                .min_by(|&a, &b| w.costs[g][a].total_cmp(&w.costs[g][b]).then(a.cmp(&b)))
                .unwrap()
        };
        let mut moved_max = f64::NEG_INFINITY;
        let mut kept_min = f64::INFINITY;
        for (g, list) in second.groups.iter().enumerate() {
            if w.demand[g] <= 0.0 || first.groups[g] != vec![(hot as u32, 1.0)] {
                continue;
            }
            let delta = w.costs[g][next(g)] - w.costs[g][hot];
            if list == &first.groups[g] {
                kept_min = kept_min.min(delta);
                continue;
            }
            moved_max = moved_max.max(delta);
            for &(p, _) in list {
                prop_assert!(p as usize == hot || p as usize == next(g), "group {g} went to {p}: {list:?}");
            }
        }
        prop_assert!(moved_max <= kept_min, "a costlier move ({moved_max}) went before a cheaper one ({kept_min})");
    }
}

fn pop(capacity: Option<f64>, serving: bool, domain: &'static str) -> PopIn<'static> {
    PopIn {
        name: "p",
        location: (0.0, 0.0),
        failure_domain: domain,
        capacity,
        serving,
    }
}

fn group(demand: f64) -> GroupIn<'static> {
    GroupIn {
        label: "cell:1",
        location: None,
        demand,
    }
}

#[test]
fn no_serving_pop_leaves_every_group_empty() {
    let pops = [pop(Some(10.0), false, "a"), pop(None, false, "b")];
    let a = assign(
        &[group(3.0), group(0.0)],
        &pops,
        &|_, p| p as f64,
        &Params::default(),
        None,
    );
    assert_eq!(a.groups, vec![Vec::new(), Vec::new()]);
    assert_eq!(a.unserved_demand, 3.0);
}

#[test]
fn a_full_pop_spills_to_the_next_and_a_new_group_avoids_it() {
    // Three PoPs at costs 10 / 20 / 30 for everyone; PoP 0 can take 90 qps (100 − 10 %).
    let pops = [
        pop(Some(100.0), true, "a"),
        pop(Some(100.0), true, "b"),
        pop(None, true, "c"),
    ];
    let a = assign(
        &[group(60.0), group(60.0), group(0.0)],
        &pops,
        &|_, p| 10.0 * (p + 1) as f64,
        &Params::default(),
        None,
    );
    assert_eq!(a.load, vec![90.0, 30.0, 0.0]);
    // Equal cost increases: the lower group index moves first.
    assert_eq!(a.groups[0], vec![(0, 0.5), (1, 0.5)]);
    assert_eq!(a.groups[1], vec![(0, 1.0)]);
    // The zero-demand group lands on PoP 1, the cheapest one with room.
    assert_eq!(a.groups[2], vec![(1, 1.0)]);
    assert!(a.overloaded.is_empty());
}

#[test]
fn equal_costs_break_ties_by_pop_index() {
    let pops = [
        pop(None, false, "a"),
        pop(None, true, "b"),
        pop(None, true, "c"),
    ];
    let a = assign(&[group(1.0)], &pops, &|_, _| 5.0, &Params::default(), None);
    assert_eq!(a.groups[0], vec![(1, 1.0)]);
}

#[test]
fn candidates_widen_when_the_nearest_are_full() {
    // One candidate per group, and it is full: the excess still finds PoP 2.
    let pops = [
        pop(Some(10.0), true, "a"),
        pop(Some(0.0), true, "a"),
        pop(None, true, "b"),
    ];
    let params = Params {
        headroom: 0.0,
        candidates: 1,
        ..Params::default()
    };
    let a = assign(&[group(25.0)], &pops, &|_, p| p as f64, &params, None);
    assert_eq!(a.load, vec![10.0, 0.0, 15.0]);
    assert_eq!(a.groups[0], vec![(0, 0.4), (2, 0.6)]);
}

#[test]
fn fallbacks_prefer_another_failure_domain() {
    let pops = [
        pop(None, true, "eu"),
        pop(None, true, "eu"),
        pop(None, false, "us"),
        pop(None, true, "us"),
    ];
    let order = fallbacks(&pops, 0, &|p| p as f64, 3);
    assert_eq!(order, vec![3, 1]);
}
