//! Full placement solve: 1 000 services × 500 sites, one core; fresh, and again against
//! the previous decisions after the world changed (the minimum-move step at work).
//!
//! `cargo bench -p isobar-scheduler --bench placement`

use std::collections::{BTreeMap, HashMap};

use isobar_proto::v1::{LatencyObjective, PlacementDecision, PlacementPolicy, SiteBounds};
use isobar_scheduler::placement::{
    DemandPoint, DistanceRtt, SolveInput, moves_between, replicas_by_site, solve,
};
use isobar_store::world::{Pop, Region, World};

fn main() {
    divan::main();
}

const SITES: usize = 500;
const SERVICES: usize = 1000;
const REGIONS: usize = 50;

/// 50 regions on a band around the globe, 10 sites each, 40 replica slots per site.
fn world() -> World {
    let regions: Vec<Region> = (0..REGIONS)
        .map(|r| Region {
            name: format!("r{r:02}"),
            lat: -50.0 + (r % 10) as f64 * 11.0,
            lon: -170.0 + (r / 10) as f64 * 70.0 + (r % 10) as f64 * 3.0,
        })
        .collect();
    let pops = (0..SITES)
        .map(|i| {
            let r = &regions[i % REGIONS];
            Pop {
                name: format!("s{i:03}"),
                region: r.name.clone(),
                lat: r.lat + (i / REGIONS) as f64 * 0.3,
                lon: r.lon + (i / REGIONS) as f64 * 0.4,
                capacity: 10_000,
                replica_slots: 40,
                labels: BTreeMap::from([(
                    "tier".to_owned(),
                    if i % 3 == 0 { "edge" } else { "core" }.to_owned(),
                )]),
                failure_domain: None,
            }
        })
        .collect();
    World {
        regions,
        pops,
        ..World::default()
    }
}

/// Each service: 4–20 replicas, demand from 8 client groups in 3–5 regions, a 40 ms
/// objective for every other service, a per-site bound for every fifth.
fn services(world: &World) -> Vec<(String, PlacementPolicy, Vec<DemandPoint>)> {
    (0..SERVICES)
        .map(|s| {
            let mut policy = PlacementPolicy {
                replicas: 4 + (s % 17) as u32,
                ..Default::default()
            };
            if s % 2 == 0 {
                policy.latency = Some(LatencyObjective {
                    max_rtt_ms: 40,
                    fraction: 0.9,
                });
            }
            if s % 5 == 0 {
                policy
                    .site_bounds
                    .insert(format!("s{:03}", s % SITES), SiteBounds { min: 1, max: 3 });
            }
            let demand = (0..8)
                .map(|g| {
                    let r = &world.regions[(s * 7 + g * 13) % (3 + s % 3) % REGIONS + (s % 40)];
                    DemandPoint {
                        location: (r.lat + g as f64 * 0.5, r.lon - g as f64 * 0.5),
                        weight: 1.0 + ((s + g) % 9) as f64,
                    }
                })
                .collect();
            (format!("svc{s}.example.test."), policy, demand)
        })
        .collect()
}

type Services = [(String, PlacementPolicy, Vec<DemandPoint>)];

/// Every service solved in turn, each seeing the slots the earlier ones took, against its
/// previous decision if given.
fn solve_all(
    world: &World,
    services: &Services,
    previous: Option<&[PlacementDecision]>,
) -> Vec<PlacementDecision> {
    let rtt = DistanceRtt::default();
    let ceilings = BTreeMap::new();
    let mut used: HashMap<String, u32> = HashMap::new();
    let mut out = Vec::with_capacity(services.len());
    for (k, (name, policy, demand)) in services.iter().enumerate() {
        let d = solve(&SolveInput {
            world,
            service: name,
            policy,
            used: &used,
            demand,
            rtt: &rtt,
            ceilings: &ceilings,
            previous: previous.map(|p| &p[k]),
        });
        for s in &d.sites {
            *used.entry(s.site.clone()).or_insert(0) += s.replicas;
        }
        out.push(d);
    }
    out
}

/// CPU time this thread has used, milliseconds (`/proc/thread-self/stat`, 10 ms ticks): on
/// a shared machine wall time also counts other processes' turns on the core.
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks * 10
}

/// Prints the CPU time per run of `f` over enough runs for the 10 ms ticks not to matter.
fn report_cpu(name: &str, mut f: impl FnMut()) {
    let (runs, start) = (10, cpu_ms());
    for _ in 0..runs {
        f();
    }
    println!("{name}: {} ms CPU per run", (cpu_ms() - start) / runs);
}

/// Every service solved in turn, each seeing the slots the earlier ones took.
#[divan::bench(sample_count = 10)]
fn full_solve_1000_services_500_sites(bencher: divan::Bencher) {
    let world = world();
    let services = services(&world);
    report_cpu("full_solve", || {
        divan::black_box(solve_all(&world, &services, None));
    });
    bencher.bench_local(|| divan::black_box(solve_all(&world, &services, None)));
}

/// The same after a change, against the previous decisions: one more site in every
/// region (550 sites) and every service's demand shifted by one client group, so every
/// solve runs the minimum-move step.
#[divan::bench(sample_count = 10)]
fn resolve_against_previous_1000_services_550_sites(bencher: divan::Bencher) {
    let world = world();
    let services = services(&world);
    let previous = solve_all(&world, &services, None);
    let mut changed = world.clone();
    for r in 0..REGIONS {
        let mut pop = changed.pops[r].clone();
        pop.name = format!("n{r:03}");
        pop.lat += 0.1;
        changed.pops.push(pop);
    }
    changed.pops.sort_by(|a, b| a.name.cmp(&b.name));
    let shifted: Vec<_> = services
        .iter()
        .map(|(name, policy, demand)| {
            let mut demand = demand.clone();
            let first = demand[0].weight;
            for g in 0..demand.len() - 1 {
                demand[g].weight = demand[g + 1].weight;
            }
            let last = demand.len() - 1;
            demand[last].weight = first;
            (name.clone(), policy.clone(), demand)
        })
        .collect();
    let moves: u64 = solve_all(&changed, &shifted, Some(&previous))
        .iter()
        .map(|d| u64::from(d.moves))
        .sum();
    let fresh: u64 = solve_all(&changed, &shifted, None)
        .iter()
        .zip(&previous)
        .map(|(d, p)| u64::from(moves_between(&replicas_by_site(p), &replicas_by_site(d))))
        .sum();
    println!(
        "moves after the change: {moves} against the previous decisions, {fresh} for fresh ones"
    );
    report_cpu("fresh solve of the changed world (peer)", || {
        divan::black_box(solve_all(&changed, &shifted, None));
    });
    report_cpu("resolve against previous", || {
        divan::black_box(solve_all(&changed, &shifted, Some(&previous)));
    });
    bencher.bench_local(|| divan::black_box(solve_all(&changed, &shifted, Some(&previous))));
}
