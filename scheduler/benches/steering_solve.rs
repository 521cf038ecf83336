//! The runtime steering solve, end to end: `steering::solve_full` on a medium world
//! (10 368 grid cells of 2.5° × 100 PoPs × 100 services, one core), next to the planner
//! alone on the same inputs, so the difference is what snapshot assembly costs on top of
//! the solver (guardrails, per-group routes and fallbacks, answer interning).
//!
//! `taskset -c 1 cargo bench -p isobar-scheduler --bench steering_solve`
//!
//! The world is synthetic and seeded: 20 metros with 5 PoPs each; services deployed in
//! 3–20 metros with one or two endpoints per PoP, demand in 1–5 % of the cells (clustered
//! near the footprint for regional services), endpoint capacities of 0.5–2.5× an even
//! share of the service's demand, so some PoPs bind and spill.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use isobar_scheduler::steering::assign::{Params, Planner, ServiceSpec};
use isobar_scheduler::steering::cost::{CostWeights, LatencyModel, NoReports, PopSignals};
use isobar_scheduler::steering::map::Groups;
use isobar_scheduler::steering::{Inputs, SteeringState, solve_full};
use isobar_store::world::{Endpoint, Pop, Service, World};

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

const METROS: usize = 20;
const POPS_PER_METRO: usize = 5;
const POPS: usize = METROS * POPS_PER_METRO;
const SERVICES: usize = 100;
const CELL_DEGREES: f64 = 2.5;
/// Near-list length, as `solve_full` keeps.
const NEAR: usize = isobar_scheduler::steering::NEAR_POPS;

fn main() {
    let b = bench();
    let cells = isobar_proto::geo::cell_count(CELL_DEGREES);
    let pairs: usize = b.inputs.demand.values().map(BTreeMap::len).sum();
    eprintln!(
        "world: {cells} cells, {POPS} PoPs, {SERVICES} services, {pairs} (service, cell) pairs with demand"
    );
    divan::main();
}

struct Bench {
    world: World,
    inputs: Inputs,
    previous: SteeringState,
}

fn bench() -> &'static Bench {
    static BENCH: OnceLock<Bench> = OnceLock::new();
    BENCH.get_or_init(build)
}

fn build() -> Bench {
    let mut rng = Rng(0x15_0ba2);
    let mut world = World::default();
    world.defaults.cell_degrees = CELL_DEGREES;
    let metros: Vec<(f64, f64)> = (0..METROS)
        .map(|_| (rng.range(-40.0, 60.0), rng.range(-180.0, 180.0)))
        .collect();
    world.pops = (0..POPS)
        .map(|p| {
            let (lat, lon) = metros[p / POPS_PER_METRO];
            Pop {
                name: format!("pop{p:03}"),
                region: String::new(),
                lat: (lat + rng.range(-1.5, 1.5)).clamp(-89.0, 89.0),
                lon: lon + rng.range(-1.5, 1.5),
                capacity: 0,
                replica_slots: 0,
                labels: BTreeMap::new(),
                failure_domain: Some(format!("metro{}", p / POPS_PER_METRO)),
            }
        })
        .collect();
    let groups = Groups::of(&world);
    let cells = groups.cells;
    let mut inputs = Inputs::default();
    for s in 0..SERVICES {
        let name = format!("svc{s:03}.example.test.");
        let footprint: Vec<usize> = {
            let k = 3 + rng.below(18);
            let mut all: Vec<usize> = (0..METROS).collect();
            for i in 0..k {
                let j = i + rng.below(METROS - i);
                all.swap(i, j);
            }
            all.truncate(k);
            all
        };
        let count = (cells as f64 * rng.range(0.01, 0.05)) as usize;
        let mut demand: BTreeMap<String, f64> = BTreeMap::new();
        for _ in 0..count {
            let cell = if footprint.len() < 10 && rng.below(10) < 7 {
                let (lat, lon) = metros[footprint[rng.below(footprint.len())]];
                isobar_proto::geo::cell_index(
                    CELL_DEGREES,
                    lat + rng.range(-8.0, 8.0),
                    lon + rng.range(-8.0, 8.0),
                )
            } else {
                rng.below(cells) as u32
            };
            let u = rng.range(0.0, 1.0);
            *demand.entry(format!("cell:{cell}")).or_default() += 1.0 + 100.0 * u * u * u;
        }
        let total: f64 = demand.values().sum();
        let pops = footprint.len() * POPS_PER_METRO;
        let mut endpoints = Vec::new();
        for &m in &footprint {
            for p in m * POPS_PER_METRO..(m + 1) * POPS_PER_METRO {
                for i in 0..1 + rng.below(2) {
                    endpoints.push(Endpoint {
                        pop: format!("pop{p:03}"),
                        address: format!("10.{s}.{p}.{i}"),
                        check: None,
                        probe: None,
                        weight: 100,
                        labels: BTreeMap::new(),
                        capacity: Some(total / pops as f64 * rng.range(0.5, 2.5)),
                    });
                }
            }
        }
        world.services.push(Service {
            name: name.clone(),
            ttl: None,
            answers: None,
            ecs: false,
            demand: Vec::new(),
            endpoints,
            steering: Default::default(),
            gray: None,
        });
        inputs.demand.insert(name, demand);
    }
    world.normalize();
    inputs.signals = world
        .pops
        .iter()
        .map(|p| {
            let signals = PopSignals {
                loss_percent: rng.range(0.0, 1.0),
                utilisation: rng.range(0.0, 0.8),
            };
            (p.name.clone(), signals)
        })
        .collect();
    for _ in 0..400 {
        let (a, b) = (rng.below(POPS), rng.below(POPS));
        let rtt = rng.range(5.0, 200.0);
        inputs.core_rtt.insert(
            (world.pops[a].name.clone(), world.pops[b].name.clone()),
            rtt,
        );
    }
    let previous = solve_full(&world, 1, &inputs, &NoReports, None)
        .expect("solves")
        .state;
    Bench {
        world,
        inputs,
        previous,
    }
}

/// The planner's inputs for the same world: what `solve_full` hands it per service.
fn specs(b: &Bench, groups: &Groups) -> Vec<ServiceSpec> {
    let index: BTreeMap<&str, u32> = groups
        .labels
        .iter()
        .enumerate()
        .map(|(g, l)| (l.as_str(), g as u32))
        .collect();
    b.world
        .services
        .iter()
        .map(|service| {
            let mut capacity = vec![None; POPS];
            for e in &service.endpoints {
                let p: usize = e.pop[3..].parse().expect("pop name");
                *capacity[p].get_or_insert(0.0) += e.capacity.unwrap_or(0.0);
            }
            ServiceSpec {
                deployed: capacity.iter().map(Option::is_some).collect(),
                capacity,
                weights: CostWeights::default(),
                demand: b.inputs.demand[&service.name]
                    .iter()
                    .map(|(label, &d)| (index[label.as_str()], d))
                    .collect(),
                exact: Vec::new(),
                params: None,
            }
        })
        .collect()
}

fn planner(b: &Bench, groups: &Groups) -> Planner {
    let pops: Vec<(&str, (f64, f64))> = b
        .world
        .pops
        .iter()
        .map(|p| (p.name.as_str(), (p.lat, p.lon)))
        .collect();
    let signals = b
        .world
        .pops
        .iter()
        .map(|p| b.inputs.signals[&p.name])
        .collect();
    Planner::new(
        groups.locations.clone(),
        LatencyModel::new(&pops, Some(&b.inputs.core_rtt)),
        signals,
        Params::default(),
        NEAR,
    )
}

/// The whole runtime solve from scratch: snapshot, state and reports for every service.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn solve_full_cold() -> usize {
    let b = bench();
    let solved = solve_full(&b.world, 1, &b.inputs, &NoReports, None).expect("solves");
    solved.snapshot.services.len()
}

/// The steady-state runtime solve: the same inputs with the previous state (hysteresis).
#[divan::bench(sample_count = 5, sample_size = 1)]
fn solve_full_with_previous() -> usize {
    let b = bench();
    let solved = solve_full(&b.world, 1, &b.inputs, &NoReports, Some(&b.previous)).expect("solves");
    solved.snapshot.services.len()
}

/// The planner alone: shared lists, then every service over every cell as `solve_full`
/// assigns it (groups without demand included), without routes or snapshot.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn planner_every_group(bencher: divan::Bencher) {
    let b = bench();
    let groups = Groups::of(&b.world);
    bencher
        .with_inputs(|| specs(b, &groups))
        .bench_local_values(|specs| {
            let planner = planner(b, &groups);
            specs
                .into_iter()
                .map(|spec| planner.standalone(spec).assign(None))
                .collect::<Vec<_>>()
        });
}

/// The planner alone, groups with demand only (what `benches/steering.rs` measures at
/// scale): shared lists plus `Planner::full`.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn planner_demand_only(bencher: divan::Bencher) {
    let b = bench();
    let groups = Groups::of(&b.world);
    bencher
        .with_inputs(|| specs(b, &groups))
        .bench_local_values(|specs| {
            let mut planner = planner(b, &groups);
            planner.full(specs);
            planner
        });
}
