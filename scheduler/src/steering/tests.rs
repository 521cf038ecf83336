use std::collections::BTreeSet;

use isobar_proto::geo::{cell_count, cell_index};
use isobar_proto::v1::{AnswerSet, ServiceMap};

use super::solve;
use crate::fixtures::world;

/// The addresses of an answer's heaviest route: each site's first live node of the family,
/// in route order, up to the answer count (the fixtures have one node per site and family,
/// so this is what every frontend picks).
fn addresses(map: &ServiceMap, set: &AnswerSet, v6: bool) -> Vec<String> {
    let Some(route) = set.routes.iter().max_by_key(|r| r.weight) else {
        return if v6 {
            set.ipv6.clone()
        } else {
            set.ipv4.clone()
        };
    };
    route
        .sites
        .iter()
        .filter_map(|&s| {
            map.sites[s as usize]
                .nodes
                .iter()
                .find(|n| !n.down && n.address.contains(':') == v6)
                .map(|n| n.address.clone())
        })
        .take(map.answer_count as usize)
        .collect()
}

struct At {
    ipv4: Vec<String>,
    ipv6: Vec<String>,
}

fn answer(map: &ServiceMap, idx: u32) -> At {
    let set = &map.answers[idx as usize];
    At {
        ipv4: addresses(map, set, false),
        ipv6: addresses(map, set, true),
    }
}

fn answer_at(map: &ServiceMap, lat: f64, lon: f64) -> At {
    let idx = if map.cell_answers.is_empty() {
        map.default_answer
    } else {
        map.cell_answers[cell_index(5.0, lat, lon) as usize]
    };
    answer(map, idx)
}

#[test]
fn nearest_pop_first_then_next_nearest() {
    let snapshot = solve(&world(), 1, &BTreeSet::new()).expect("solves");
    let map = &snapshot.services[0];
    assert_eq!(map.cell_answers.len(), cell_count(5.0));
    // Berlin: Frankfurt first, London second.
    assert_eq!(
        answer_at(map, 52.5, 13.4).ipv4,
        vec!["192.0.2.1", "192.0.2.2"]
    );
    // New York: Ashburn first, then London (nearer than Frankfurt).
    assert_eq!(
        answer_at(map, 40.7, -74.0).ipv4,
        vec!["198.51.100.1", "192.0.2.2"]
    );
    // Singapore.
    assert_eq!(answer_at(map, 1.3, 103.8).ipv4[0], "203.0.113.1");
    // IPv6 only exists in Frankfurt.
    assert_eq!(answer_at(map, 1.3, 103.8).ipv6, vec!["2001:db8::1"]);
    assert_eq!(map.ttl, 20);
}

#[test]
fn a_down_target_leaves_every_answer() {
    let down = BTreeSet::from(["tcp://127.0.0.1:1001".to_owned()]);
    let snapshot = solve(&world(), 1, &down).expect("solves");
    let map = &snapshot.services[0];
    for i in 0..map.answers.len() as u32 {
        let set = answer(map, i);
        assert!(
            !set.ipv4.contains(&"192.0.2.1".to_owned()),
            "{:?}",
            set.ipv4
        );
        assert!(set.ipv6.is_empty());
    }
    assert_eq!(
        answer_at(map, 52.5, 13.4).ipv4,
        vec!["192.0.2.2", "198.51.100.1"]
    );
}

/// A down endpoint in a PoP that still serves stays in its site at its configured weight,
/// marked down: the frontends' primary Maglev table keeps its shape and only that
/// endpoint's clients move.
#[test]
fn a_down_endpoint_stays_listed_at_its_weight_marked_down() {
    let mut w = world();
    let mut extra = w.services[0].endpoints[0].clone();
    assert_eq!(extra.pop, "fra1");
    extra.address = "192.0.2.11".into();
    extra.check = Some("127.0.0.1:1011".into());
    extra.weight = 300;
    w.services[0].endpoints.push(extra);
    let node = |down: &BTreeSet<String>, address: &str| {
        let snapshot = solve(&w, 1, down).expect("solves");
        snapshot.services[0]
            .sites
            .iter()
            .flat_map(|s| &s.nodes)
            .find(|n| n.address == address)
            .cloned()
            .expect("listed")
    };
    let down = BTreeSet::from(["tcp://127.0.0.1:1011".to_owned()]);
    let listed = node(&down, "192.0.2.11");
    assert!(listed.down);
    assert_eq!(listed.weight, 300);
    let up = node(&BTreeSet::new(), "192.0.2.11");
    assert!(!up.down);
    assert_eq!(up.weight, 300);
    assert!(!node(&down, "192.0.2.1").down);
}

#[test]
fn all_down_fails_open() {
    let down: BTreeSet<String> = (1001..=1004)
        .map(|p| format!("tcp://127.0.0.1:{p}"))
        .collect();
    let snapshot = solve(&world(), 1, &down).expect("solves");
    assert_eq!(
        answer_at(&snapshot.services[0], 52.5, 13.4).ipv4,
        vec!["192.0.2.1", "192.0.2.2"]
    );
}

#[test]
fn override_groups_and_unknown_location() {
    let snapshot = solve(&world(), 1, &BTreeSet::new()).expect("solves");
    let map = &snapshot.services[0];
    let office = map.group_answers["office"];
    assert_eq!(answer(map, office).ipv4[0], "203.0.113.1");
    // No default location: PoPs in name order (fra1, iad1, lon2, sin1).
    assert_eq!(
        answer(map, map.default_answer).ipv4,
        vec!["192.0.2.1", "198.51.100.1"]
    );
}

#[test]
fn soa_serial_rises_with_the_config_version() {
    let first = solve(&world(), 1, &BTreeSet::new()).expect("solves");
    let second = solve(&world(), 2, &BTreeSet::new()).expect("solves");
    assert_eq!(first.zones[0].serial, 8);
    assert_eq!(second.zones[0].serial, 9);
}

#[test]
fn solving_is_deterministic() {
    let a = solve(&world(), 3, &BTreeSet::new()).expect("solves");
    let b = solve(&world(), 3, &BTreeSet::new()).expect("solves");
    assert_eq!(a, b);
}

fn gray_world(percent: f64) -> isobar_store::world::World {
    let mut w = world();
    let service = &mut w.services[0];
    let mut canary = service.endpoints[0].clone();
    canary.address = "192.0.2.99".into();
    canary.labels.insert("version".into(), "v2".into());
    service.endpoints.push(canary);
    service.gray = Some(isobar_store::world::Gray {
        name: "v2".into(),
        labels: [("version".to_owned(), "v2".to_owned())].into(),
        pops: vec![],
        percent,
        ramp: vec![],
        cohort: Default::default(),
        verdict: Some(isobar_store::world::Verdict {
            max_error_delta_percent: 5.0,
            max_latency_ratio: 1.5,
            min_samples: 5,
        }),
    });
    w.normalize();
    w
}

struct Reports;

impl super::cost::ClientReports for Reports {
    fn rtt(&self, _group: &str, _pop: &str) -> Option<super::cost::ClientRtt> {
        None
    }

    fn target(&self, address: &str) -> Option<super::cost::ClientRtt> {
        let failing = address == "192.0.2.99";
        Some(super::cost::ClientRtt {
            rtt_ms: 10.0,
            failure_ratio: if failing { 1.0 } else { 0.0 },
            samples: 10,
        })
    }
}

#[test]
fn a_gray_rule_splits_the_labelled_endpoints_and_a_failing_canary_is_rolled_back() {
    let w = gray_world(20.0);
    let inputs = super::Inputs {
        now_ms: 1_000,
        ..Default::default()
    };
    let solved = super::solve_full(&w, 1, &inputs, &super::cost::NoReports, None).expect("solves");
    let map = &solved.snapshot.services[0];
    let gray = map.gray.as_ref().expect("the rule is served");
    assert_eq!(gray.share_ppm, 200_000);
    let canary = gray.canary.as_ref().expect("canary map");
    let addresses = |m: &ServiceMap| -> Vec<String> {
        m.sites
            .iter()
            .flat_map(|s| {
                s.nodes
                    .iter()
                    .filter(|n| !n.down)
                    .map(|n| n.address.clone())
            })
            .collect()
    };
    assert_eq!(addresses(canary), vec!["192.0.2.99"]);
    assert!(!addresses(map).contains(&"192.0.2.99".to_owned()));
    assert!(solved.events.is_empty(), "{:?}", solved.events);

    let solved = super::solve_full(&w, 1, &inputs, &Reports, None).expect("solves");
    assert!(
        matches!(&solved.events[..], [super::SteeringEvent::Rollback { rule, reason, .. }] if rule == "v2" && reason.contains("client reports")),
        "{:?}",
        solved.events
    );
}

#[test]
fn at_zero_percent_the_canary_endpoints_serve_nobody() {
    let w = gray_world(0.0);
    let solved = solve(&w, 1, &BTreeSet::new()).expect("solves");
    let map = &solved.services[0];
    assert!(map.gray.is_none());
    assert!(
        map.sites
            .iter()
            .all(|s| s.nodes.iter().all(|n| n.address != "192.0.2.99"))
    );
}

mod properties {
    use std::collections::BTreeSet;

    use isobar_store::world::AllDown;
    use proptest::prelude::*;

    use crate::fixtures::world;
    use crate::steering::{Inputs, solve_full};

    const PORTS: [u16; 4] = [1001, 1002, 1003, 1004];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// No unhealthy endpoint is served unless the all-down policy says so; route
        /// weights are positive; re-solving unchanged inputs gives the same result.
        #[test]
        fn unhealthy_endpoints_serve_only_under_the_all_down_policy(
            down_mask in 0u8..16,
            policy in 0usize..3,
        ) {
            let mut w = world();
            w.services[0].steering.all_down = [AllDown::ServeAll, AllDown::Fallback, AllDown::Refuse][policy];
            w.services[0].steering.fallback = vec!["192.0.2.250".into()];
            let down: BTreeSet<String> = PORTS
                .iter()
                .enumerate()
                .filter(|(i, _)| down_mask & (1 << i) != 0)
                .map(|(_, p)| format!("tcp://127.0.0.1:{p}"))
                .collect();
            let down_addrs: BTreeSet<&str> = w.services[0]
                .endpoints
                .iter()
                .filter(|e| e.target_id().is_some_and(|id| down.contains(&id)))
                .map(|e| e.address.as_str())
                .collect();
            let inputs = Inputs { down: down.clone(), now_ms: 5, ..Inputs::default() };
            let a = solve_full(&w, 1, &inputs, &crate::steering::cost::NoReports, None).unwrap();
            let b = solve_full(&w, 1, &inputs, &crate::steering::cost::NoReports, Some(&a.state)).unwrap();
            prop_assert_eq!(&a.snapshot, &b.snapshot);
            let map = &a.snapshot.services[0];
            let served: BTreeSet<&str> = map
                .sites
                .iter()
                .flat_map(|s| s.nodes.iter().filter(|n| !n.down).map(|n| n.address.as_str()))
                .collect();
            let all_down = down_mask == 0b1111;
            if !all_down {
                prop_assert!(served.is_disjoint(&down_addrs), "served {:?} down {:?}", served, down_addrs);
                for set in &map.answers {
                    prop_assert!(!set.routes.is_empty());
                    prop_assert!(set.routes.iter().all(|r| r.weight > 0 && !r.sites.is_empty()));
                }
            } else {
                match policy {
                    0 => prop_assert_eq!(served.len(), w.services[0].endpoints.len()),
                    1 => {
                        prop_assert!(served.is_empty());
                        prop_assert_eq!(&map.answers[0].ipv4, &vec!["192.0.2.250".to_owned()]);
                    }
                    _ => {
                        prop_assert!(served.is_empty());
                        prop_assert!(map.answers[0].ipv4.is_empty() && map.answers[0].ipv6.is_empty());
                    }
                }
            }
        }
    }
}

#[test]
fn clients_return_to_a_recovered_pop() {
    let w = world();
    let down = super::Inputs {
        down: BTreeSet::from(["tcp://127.0.0.1:1001".to_owned()]),
        now_ms: 1_000,
        ..Default::default()
    };
    let up = super::Inputs {
        now_ms: 2_000,
        ..Default::default()
    };
    let reports = super::cost::NoReports;
    let first = super::solve_full(&w, 1, &up, &reports, None).unwrap();
    let failed = super::solve_full(&w, 1, &down, &reports, Some(&first.state)).unwrap();
    assert_eq!(
        answer_at(&failed.snapshot.services[0], 52.5, 13.4).ipv4[0],
        "192.0.2.2"
    );
    let back = super::solve_full(&w, 1, &up, &reports, Some(&failed.state)).unwrap();
    assert_eq!(
        answer_at(&back.snapshot.services[0], 52.5, 13.4).ipv4[0],
        "192.0.2.1"
    );
}

/// The runtime solve goes through the planner; these check it against the dense reference
/// (every group priced at every PoP, `assign::assign` per arm) on random small worlds.
mod planner_path {
    use std::collections::{BTreeMap, BTreeSet};

    use isobar_store::world::{ClientGroup, Endpoint, Gray, Location, Pop, Region, Service};
    use proptest::prelude::*;

    use crate::fixtures::world;
    use crate::steering::cost::{ClientReports, ClientRtt, PopSignals};
    use crate::steering::{Inputs, solve_full, solve_full_dense};

    /// Client reports from a table; `listed` says whether they can name their groups.
    struct Table {
        rtt: BTreeMap<(String, String), ClientRtt>,
        listed: bool,
    }

    impl ClientReports for Table {
        fn rtt(&self, group: &str, pop: &str) -> Option<ClientRtt> {
            self.rtt.get(&(group.to_owned(), pop.to_owned())).copied()
        }

        fn groups(&self) -> Option<Vec<String>> {
            self.listed
                .then(|| self.rtt.keys().map(|(g, _)| g.clone()).collect())
        }
    }

    /// One service: endpoints (PoP, IPv6, capacity, canary), cost weights, headroom,
    /// hysteresis, answer count.
    type ServiceCase = (
        Vec<(usize, bool, Option<f64>, bool)>,
        (f64, f64, f64),
        f64,
        f64,
        u32,
    );

    #[derive(Debug, Clone)]
    struct Case {
        pops: Vec<((f64, f64), Option<u8>, u64)>,
        services: Vec<ServiceCase>,
        gray: Option<f64>,
        groups: Vec<(usize, Option<f64>)>,
        location: Option<(f64, f64)>,
        cell_degrees: f64,
        demand: Vec<(usize, usize, f64)>,
        signals: Vec<(f64, f64)>,
        core: Vec<(usize, usize, f64)>,
        reports: Vec<(usize, usize, f64, f64, u64)>,
        listed: bool,
        down: Vec<usize>,
    }

    fn location() -> impl Strategy<Value = (f64, f64)> {
        (-60.0f64..70.0, -180.0f64..180.0)
    }

    fn case() -> impl Strategy<Value = Case> {
        (2usize..9, 1usize..4).prop_flat_map(|(n, s)| {
            let endpoint = (
                0..n,
                prop::bool::weighted(0.3),
                prop::option::weighted(0.3, 5.0f64..200.0),
                prop::bool::weighted(0.2),
            );
            let service = (
                prop::collection::vec(endpoint, 1..2 * n),
                (0.0f64..2.0, 0.0f64..20.0, 0.0f64..100.0),
                0.0f64..0.3,
                0.0f64..0.3,
                1u32..4,
            );
            (
                prop::collection::vec(
                    (
                        location(),
                        prop::option::of(0u8..3),
                        prop_oneof![Just(0u64), 50u64..800],
                    ),
                    n,
                ),
                prop::collection::vec(service, s),
                prop::option::of(1.0f64..60.0),
                (
                    prop::collection::vec((0..3usize, prop::option::of(1.0f64..100.0)), 0..3),
                    prop::option::of(location()),
                    prop_oneof![Just(30.0), Just(20.0)],
                ),
                prop::collection::vec((0..s, 0usize..700, 0.0f64..300.0), 0..40),
                prop::collection::vec((0.0f64..3.0, 0.0f64..1.2), n),
                prop::collection::vec((0..n, 0..n, 1.0f64..150.0), 0..n),
                (
                    prop::collection::vec(
                        (0usize..700, 0..n, 0.0f64..200.0, 0.0f64..0.5, 0u64..20),
                        0..10,
                    ),
                    any::<bool>(),
                ),
                prop::collection::vec(0usize..20, 0..3),
            )
                .prop_map(
                    |(
                        pops,
                        services,
                        gray,
                        (groups, location, cell_degrees),
                        demand,
                        signals,
                        core,
                        (reports, listed),
                        down,
                    )| Case {
                        pops,
                        services,
                        gray,
                        groups,
                        location,
                        cell_degrees,
                        demand,
                        signals,
                        core,
                        reports,
                        listed,
                        down,
                    },
                )
        })
    }

    /// A group label of the world for a random number: a cell, an override group or
    /// `unknown`.
    fn label(w: &isobar_store::world::World, x: usize) -> String {
        let cells = isobar_proto::geo::cell_count(w.defaults.cell_degrees);
        let extra = w.client_groups.len() + 1;
        match x % (cells + extra) {
            c if c < cells => format!("cell:{c}"),
            c if c - cells < w.client_groups.len() => {
                format!("group:{}", w.client_groups[c - cells].name)
            }
            _ => "unknown".to_owned(),
        }
    }

    impl Case {
        /// The world, the inputs with every listed target up, and with some down.
        fn build(&self) -> (isobar_store::world::World, Inputs, Inputs, Table) {
            let mut w = world();
            w.defaults.cell_degrees = self.cell_degrees;
            w.defaults.location = self.location.map(|(lat, lon)| Location { lat, lon });
            w.regions = vec![
                Region {
                    name: "r0".into(),
                    lat: 48.0,
                    lon: 2.0,
                },
                Region {
                    name: "r1".into(),
                    lat: 35.0,
                    lon: 139.0,
                },
                Region {
                    name: "r2".into(),
                    lat: -23.0,
                    lon: -46.0,
                },
            ];
            let template = w.pops[0].clone();
            w.pops = self
                .pops
                .iter()
                .enumerate()
                .map(|(i, &((lat, lon), domain, capacity))| Pop {
                    name: format!("p{i}"),
                    region: "r0".into(),
                    lat,
                    lon,
                    capacity,
                    failure_domain: domain.map(|d| format!("d{d}")),
                    ..template.clone()
                })
                .collect();
            let template = w.services[0].clone();
            let mut port = 2000u16;
            w.services = self
                .services
                .iter()
                .enumerate()
                .map(
                    |(s, (endpoints, (rtt, loss, load), headroom, hysteresis, answers))| {
                        let mut service = Service {
                            name: format!("s{s}.example.test."),
                            answers: Some(*answers),
                            endpoints: endpoints
                                .iter()
                                .enumerate()
                                .map(|(i, &(pop, v6, capacity, canary))| {
                                    port += 1;
                                    Endpoint {
                                        pop: format!("p{pop}"),
                                        address: if v6 {
                                            format!("2001:db8::{s}:{i}")
                                        } else {
                                            format!("10.{s}.{pop}.{i}")
                                        },
                                        check: Some(format!("127.0.0.1:{port}")),
                                        probe: None,
                                        weight: 100,
                                        labels: if canary {
                                            [("version".to_owned(), "v2".to_owned())].into()
                                        } else {
                                            BTreeMap::new()
                                        },
                                        capacity,
                                    }
                                })
                                .collect(),
                            gray: None,
                            ..template.clone()
                        };
                        service.steering.cost.rtt = *rtt;
                        service.steering.cost.loss = *loss;
                        service.steering.cost.load = *load;
                        service.steering.headroom = *headroom;
                        service.steering.hysteresis = *hysteresis;
                        service
                    },
                )
                .collect();
            if let Some(percent) = self.gray {
                w.services[0].gray = Some(Gray {
                    name: "v2".into(),
                    labels: [("version".to_owned(), "v2".to_owned())].into(),
                    pops: vec![],
                    percent,
                    ramp: vec![],
                    cohort: Default::default(),
                    verdict: None,
                });
            }
            w.client_groups = self
                .groups
                .iter()
                .enumerate()
                .map(|(i, &(region, demand))| ClientGroup {
                    name: format!("g{i}"),
                    cidrs: vec![format!("10.{i}.0.0/16")],
                    asns: Vec::new(),
                    region: format!("r{region}"),
                    demand,
                })
                .collect();
            w.normalize();

            let mut up = Inputs {
                now_ms: 1_000,
                ..Inputs::default()
            };
            for &(s, x, qps) in &self.demand {
                let name = w.services[s].name.clone();
                *up.demand
                    .entry(name)
                    .or_default()
                    .entry(label(&w, x))
                    .or_default() += qps;
            }
            up.signals = w
                .pops
                .iter()
                .zip(&self.signals)
                .map(|(p, &(loss_percent, utilisation))| {
                    (
                        p.name.clone(),
                        PopSignals {
                            loss_percent,
                            utilisation,
                        },
                    )
                })
                .collect();
            up.core_rtt = self
                .core
                .iter()
                .map(|&(a, b, rtt)| ((format!("p{a}"), format!("p{b}")), rtt))
                .collect();
            let targets: Vec<String> = w
                .services
                .iter()
                .flat_map(|s| s.endpoints.iter().filter_map(Endpoint::target_id))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut down = up.clone();
            down.now_ms = 2_000;
            down.down = self
                .down
                .iter()
                .filter_map(|&i| targets.get(i % targets.len().max(1)).cloned())
                .collect();
            let reports = Table {
                rtt: self
                    .reports
                    .iter()
                    .map(|&(x, p, rtt_ms, failure_ratio, samples)| {
                        (
                            (label(&w, x), format!("p{}", p)),
                            ClientRtt {
                                rtt_ms,
                                failure_ratio,
                                samples,
                            },
                        )
                    })
                    .collect(),
                listed: self.listed,
            };
            (w, up, down, reports)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Snapshots, assignments, reports and events through the planner equal the dense
        /// path's: from scratch, then with targets down and the previous state (hysteresis),
        /// then back up again.
        #[test]
        fn the_planner_path_gives_the_dense_snapshot(c in case()) {
            let (w, up, down, reports) = c.build();
            let first = solve_full(&w, 1, &up, &reports, None).unwrap();
            let dense = solve_full_dense(&w, 1, &up, &reports, None).unwrap();
            prop_assert_eq!(&first.snapshot, &dense.snapshot);
            prop_assert_eq!(&first.state, &dense.state);
            prop_assert_eq!(&first.events, &dense.events);
            let failed = solve_full(&w, 1, &down, &reports, Some(&first.state)).unwrap();
            let dense = solve_full_dense(&w, 1, &down, &reports, Some(&first.state)).unwrap();
            prop_assert_eq!(&failed.snapshot, &dense.snapshot);
            prop_assert_eq!(&failed.state, &dense.state);
            let back = solve_full(&w, 1, &up, &reports, Some(&failed.state)).unwrap();
            let dense = solve_full_dense(&w, 1, &up, &reports, Some(&failed.state)).unwrap();
            prop_assert_eq!(&back.snapshot, &dense.snapshot);
            prop_assert_eq!(&back.state, &dense.state);
        }
    }
}
