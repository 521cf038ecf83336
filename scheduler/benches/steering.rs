//! Steering assignment at scale: 100 000 client groups × 500 PoPs × 1 000 services, one core.
//!
//! `taskset -c 1 cargo bench -p isobar-scheduler --bench steering`
//!
//! The world is synthetic and seeded: 50 metros with 10 PoPs each, groups clustered around
//! the metros (80 %) or anywhere (20 %), some measured PoP-to-PoP RTTs, loss and load on
//! every PoP. Services: half deployed everywhere, 30 % in 20–35 metros, 20 % in 3–8 metros;
//! each has demand in 1–5 % of the groups (70 % of it near its metros when regional) and a
//! capacity per PoP of 1.3–2.5× what the PoP draws in the unbounded map, but 0.5–1× for
//! 15 % of the (service, PoP) pairs, which therefore bind and spill to their neighbours.
//! Peer, same run: the naive "nearest serving PoP, no capacity" map over the same demand.

use std::sync::OnceLock;

use isobar_scheduler::steering::assign::{Params, Planner, ServiceSpec};
use isobar_scheduler::steering::cost::{CostWeights, LatencyModel, PopSignals, unit};

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

const METROS: usize = 50;
const POPS_PER_METRO: usize = 10;
const POPS: usize = METROS * POPS_PER_METRO;
const GROUPS: usize = 100_000;
const SERVICES: usize = 1_000;
/// Near-list length kept per group.
const NEAR: usize = 24;

fn main() {
    let w = world();
    let pairs: usize = w.specs.iter().map(|s| s.demand.len()).sum();
    let binding: usize = w
        .specs
        .iter()
        .zip(w.solved.plans())
        .map(|(spec, plan)| {
            (0..POPS)
                .filter(|&p| {
                    let usable = spec.capacity[p].map_or(f64::INFINITY, |c| c * 0.9);
                    plan.assignment.load[p] >= usable * (1.0 - 1e-6)
                })
                .count()
        })
        .sum();
    let split: usize = w
        .solved
        .plans()
        .iter()
        .flat_map(|p| &p.assignment.groups)
        .filter(|l| l.len() > 1)
        .count();
    let overloaded: usize = w
        .solved
        .plans()
        .iter()
        .map(|p| p.assignment.overloaded.len())
        .sum();
    let mut down = w.solved.clone();
    let changed = down.pop_down(w.busiest).len();
    let mut down = w.solved.clone();
    let changed_median = down.pop_down(w.median).len();
    eprintln!(
        "world: {GROUPS} groups, {POPS} PoPs, {SERVICES} services, {pairs} (service, group) pairs \
         with demand; {split} groups split over several PoPs; {binding} (service, PoP) at usable capacity, {overloaded} overloaded (service, PoP); PoP {} down moves {changed} groups, \
         median PoP {} down moves {changed_median}",
        w.busiest, w.median
    );
    divan::main();
}

/// The seeded world, the specs and the solved planner, built once.
struct World {
    groups: Vec<Option<(f64, f64)>>,
    latency: LatencyModel,
    signals: Vec<PopSignals>,
    specs: Vec<ServiceSpec>,
    pop_locations: Vec<(f64, f64)>,
    solved: Planner,
    /// The PoP carrying the most (service, group) pairs.
    busiest: u32,
    /// The PoP at the median of the pairs carried, among PoPs carrying any.
    median: u32,
}

fn clamp_location(lat: f64, lon: f64) -> (f64, f64) {
    let lon = if lon > 180.0 {
        lon - 360.0
    } else if lon < -180.0 {
        lon + 360.0
    } else {
        lon
    };
    (lat.clamp(-89.0, 89.0), lon)
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(build)
}

fn build() -> World {
    let mut rng = Rng(0x15_0ba2);
    let metros: Vec<(f64, f64)> = (0..METROS)
        .map(|_| (rng.range(-40.0, 60.0), rng.range(-180.0, 180.0)))
        .collect();
    let pop_locations: Vec<(f64, f64)> = (0..POPS)
        .map(|p| {
            let (lat, lon) = metros[p / POPS_PER_METRO];
            clamp_location(lat + rng.range(-1.5, 1.5), lon + rng.range(-1.5, 1.5))
        })
        .collect();
    let names: Vec<String> = (0..POPS).map(|p| format!("pop{p:03}")).collect();
    let pops: Vec<(&str, (f64, f64))> = names
        .iter()
        .map(String::as_str)
        .zip(pop_locations.iter().copied())
        .collect();
    // Measured core RTTs for 2 000 random pairs: geography ×0.8–1.3.
    let plain = LatencyModel::new(&pops, None);
    let measured = (0..2000)
        .map(|_| {
            let (a, b) = (rng.below(POPS), rng.below(POPS));
            let rtt = plain.geo_ms(pop_locations[a], b) * rng.range(0.8, 1.3);
            ((names[a].clone(), names[b].clone()), rtt)
        })
        .collect();
    let latency = LatencyModel::new(&pops, Some(&measured));
    let signals: Vec<PopSignals> = (0..POPS)
        .map(|_| PopSignals {
            loss_percent: rng.range(0.0, 1.0),
            utilisation: rng.range(0.0, 0.8),
        })
        .collect();

    // Groups: 80 % around a metro, 20 % anywhere; remember the home metro.
    let mut home: Vec<Option<usize>> = Vec::with_capacity(GROUPS);
    let groups: Vec<Option<(f64, f64)>> = (0..GROUPS)
        .map(|_| {
            if rng.below(5) > 0 {
                let m = rng.below(METROS);
                home.push(Some(m));
                let (lat, lon) = metros[m];
                Some(clamp_location(
                    lat + rng.range(-8.0, 8.0),
                    lon + rng.range(-8.0, 8.0),
                ))
            } else {
                home.push(None);
                Some((rng.range(-55.0, 70.0), rng.range(-180.0, 180.0)))
            }
        })
        .collect();
    let mut by_metro: Vec<Vec<u32>> = vec![Vec::new(); METROS];
    for (g, m) in home.iter().enumerate() {
        if let Some(m) = m {
            by_metro[*m].push(g as u32);
        }
    }

    let profiles = [
        CostWeights::default(),
        CostWeights {
            rtt: 1.0,
            loss: 10.0,
            load: 0.0,
        },
        CostWeights {
            rtt: 1.0,
            loss: 10.0,
            load: 150.0,
        },
    ];
    let specs: Vec<ServiceSpec> = (0..SERVICES)
        .map(|s| {
            let kind = rng.below(10);
            let metros = match kind {
                0..5 => METROS,
                5..8 => 20 + rng.below(16),
                _ => 3 + rng.below(6),
            };
            let footprint = pick(&mut rng, METROS, metros);
            let mut deployed = vec![false; POPS];
            for &m in &footprint {
                deployed[m * POPS_PER_METRO..(m + 1) * POPS_PER_METRO].fill(true);
            }
            let count = (GROUPS as f64 * rng.range(0.01, 0.05)) as usize;
            let demand: Vec<(u32, f64)> = (0..count)
                .map(|_| {
                    let g = if kind < 5 || rng.below(10) >= 7 {
                        rng.below(GROUPS) as u32
                    } else {
                        let m = &by_metro[footprint[rng.below(footprint.len())]];
                        m[rng.below(m.len())]
                    };
                    let u = rng.range(0.0, 1.0);
                    (g, 1.0 + 100.0 * u * u * u)
                })
                .collect();
            ServiceSpec {
                deployed,
                capacity: Vec::new(),
                weights: profiles[s % profiles.len()],
                demand,
                exact: Vec::new(),
                params: None,
            }
        })
        .collect();

    // Capacities from the unbounded map: 1.3–2.5× what a PoP draws as the nearest, but
    // 0.5–1× for 15 % of the (service, PoP) pairs, so those bind and spill.
    let mut unbounded = planner(&groups, &latency, &signals);
    unbounded.full(specs.clone());
    let specs: Vec<ServiceSpec> = specs
        .into_iter()
        .zip(unbounded.plans())
        .map(|(mut spec, plan)| {
            let total: f64 = plan.demand.iter().sum();
            let serving = spec.deployed.iter().filter(|&&d| d).count().max(1) as f64;
            spec.capacity = (0..POPS)
                .map(|p| {
                    spec.deployed[p].then(|| {
                        let draw = plan.assignment.load[p].max(0.2 * total / serving);
                        let factor = if rng.below(100) < 15 {
                            rng.range(0.5, 1.0)
                        } else {
                            rng.range(1.3, 2.5)
                        };
                        draw * factor
                    })
                })
                .collect();
            spec
        })
        .collect();

    let mut solved = planner(&groups, &latency, &signals);
    solved.full(specs.clone());
    let mut carried = vec![0usize; POPS];
    for plan in solved.plans() {
        for list in &plan.assignment.groups {
            for &(p, _) in list {
                carried[p as usize] += 1;
            }
        }
    }
    let busiest = (0..POPS).max_by_key(|&p| (carried[p], p)).unwrap_or(0) as u32;
    let mut by_load: Vec<usize> = (0..POPS).filter(|&p| carried[p] > 0).collect();
    by_load.sort_by_key(|&p| (carried[p], p));
    let median = by_load.get(by_load.len() / 2).copied().unwrap_or(0) as u32;
    World {
        groups,
        latency,
        signals,
        specs,
        pop_locations,
        solved,
        busiest,
        median,
    }
}

/// `k` distinct indices below `n`.
fn pick(rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    for i in 0..k.min(n) {
        let j = i + rng.below(n - i);
        all.swap(i, j);
    }
    all.truncate(k.min(n));
    all
}

fn planner(
    groups: &[Option<(f64, f64)>],
    latency: &LatencyModel,
    signals: &[PopSignals],
) -> Planner {
    Planner::new(
        groups.to_vec(),
        latency.clone(),
        signals.to_vec(),
        Params::default(),
        NEAR,
    )
}

/// Shared lists: nearest PoP and the 24 lowest-RTT PoPs of 100 000 groups over 500 PoPs
/// (once per latency model; health changes do not rebuild them).
#[divan::bench(sample_count = 5, sample_size = 1)]
fn shared_lists_100k_groups_500_pops(bencher: divan::Bencher) {
    let w = world();
    bencher.bench_local(|| divan::black_box(planner(&w.groups, &w.latency, &w.signals)));
}

/// Every service solved from scratch (no previous plans) on the shared lists.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn full_1000_services_cold(bencher: divan::Bencher) {
    let w = world();
    bencher
        .with_inputs(|| {
            let mut p = w.solved.clone();
            p.clear();
            (p, w.specs.clone())
        })
        .bench_local_values(|(mut p, specs)| {
            p.full(specs);
            p
        });
}

/// Every service re-solved against its previous plan (the steady-state recompute).
#[divan::bench(sample_count = 5, sample_size = 1)]
fn full_1000_services_with_previous(bencher: divan::Bencher) {
    let w = world();
    bencher
        .with_inputs(|| (w.solved.clone(), w.specs.clone()))
        .bench_local_values(|(mut p, specs)| {
            p.full(specs);
            p
        });
}

/// Shared lists plus every service from scratch: the whole recompute after a change to the
/// latency model.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn full_including_shared_lists(bencher: divan::Bencher) {
    let w = world();
    bencher
        .with_inputs(|| w.specs.clone())
        .bench_local_values(|specs| {
            let mut p = planner(&w.groups, &w.latency, &w.signals);
            p.full(specs);
            p
        });
}

/// Incremental: the PoP carrying the most (service, group) pairs goes down.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn pop_down_busiest(bencher: divan::Bencher) {
    let w = world();
    bencher
        .with_inputs(|| w.solved.clone())
        .bench_local_values(|mut p| {
            let changed = p.pop_down(w.busiest);
            (p, changed)
        });
}

/// Incremental: a PoP at the median of the pairs carried goes down.
#[divan::bench(sample_count = 20, sample_size = 1)]
fn pop_down_median(bencher: divan::Bencher) {
    let w = world();
    bencher
        .with_inputs(|| w.solved.clone())
        .bench_local_values(|mut p| {
            let changed = p.pop_down(w.median);
            (p, changed)
        });
}

/// Peer: the naive map — for every (service, group with demand), the nearest serving PoP
/// by great-circle distance, no capacity, no shared lists.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn naive_nearest_pop_no_capacity(bencher: divan::Bencher) {
    let w = world();
    let units: Vec<[f64; 3]> = w.pop_locations.iter().map(|&l| unit(l)).collect();
    bencher.bench_local(|| {
        let mut out: Vec<Vec<u32>> = Vec::with_capacity(w.specs.len());
        for spec in &w.specs {
            let serving: Vec<usize> = (0..POPS).filter(|&p| spec.deployed[p]).collect();
            let mut nearest = Vec::with_capacity(spec.demand.len());
            for &(g, _) in &spec.demand {
                let u = unit(w.groups[g as usize].unwrap_or((0.0, 0.0)));
                let best = serving
                    .iter()
                    .copied()
                    .max_by(|&a, &b| {
                        let (va, vb) = (units[a], units[b]);
                        let da = u[0] * va[0] + u[1] * va[1] + u[2] * va[2];
                        let db = u[0] * vb[0] + u[1] * vb[1] + u[2] * vb[2];
                        da.total_cmp(&db).then(b.cmp(&a))
                    })
                    .unwrap_or(0);
                nearest.push(best as u32);
            }
            out.push(nearest);
        }
        divan::black_box(out)
    });
}
