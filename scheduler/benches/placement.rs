//! Full placement solve: 1 000 services × 500 sites, one core.
//!
//! `cargo bench -p isobar-scheduler --bench placement`

use std::collections::{BTreeMap, HashMap};

use isobar_proto::v1::{LatencyObjective, PlacementPolicy, SiteBounds};
use isobar_scheduler::placement::{DemandPoint, DistanceRtt, SolveInput, solve};
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

/// Every service solved in turn, each seeing the slots the earlier ones took.
#[divan::bench(sample_count = 10)]
fn full_solve_1000_services_500_sites(bencher: divan::Bencher) {
    let world = world();
    let services = services(&world);
    let rtt = DistanceRtt::default();
    let ceilings = BTreeMap::new();
    bencher.bench_local(|| {
        let mut used: HashMap<String, u32> = HashMap::new();
        let mut placed = 0u64;
        for (name, policy, demand) in &services {
            let d = solve(&SolveInput {
                world: &world,
                service: name,
                policy,
                used: &used,
                demand,
                rtt: &rtt,
                ceilings: &ceilings,
                previous: None,
            });
            for s in &d.sites {
                *used.entry(s.site.clone()).or_insert(0) += s.replicas;
            }
            placed += u64::from(d.placed);
        }
        divan::black_box(placed)
    });
}
