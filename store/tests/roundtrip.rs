//! Property: exporting a valid world and parsing the export gives the same world back.

use std::collections::BTreeMap;

use isobar_store::config::{parse_world, to_toml};
use isobar_store::world::{
    ClientGroup, Defaults, Endpoint, HealthSettings, HttpdnsAccount, HttpdnsSettings, Location,
    Pop, RateLimit, Region, Service, World, Zone,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

const REGIONS: [&str; 4] = ["eu", "us", "ap", "sa"];

fn no_files(path: &str) -> std::io::Result<String> {
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        path.to_owned(),
    ))
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map("[a-z][a-z0-9_.-]{0,6}", "[ -~]{0,8}", 0..3)
}

/// A master-file string body with quotes, backslashes and semicolons in it.
fn txt_body() -> impl Strategy<Value = String> {
    "[ -~]{0,24}"
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One record line in loose master-file syntax, relative to the zone.
fn record() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..20u8, any::<[u8; 4]>(), 0..100_000u32)
            .prop_map(|(n, ip, ttl)| format!("a{n} {ttl} A {}", std::net::Ipv4Addr::from(ip))),
        (0..20u8, any::<u128>())
            .prop_map(|(n, ip)| format!("v{n} IN AAAA {}", std::net::Ipv6Addr::from(ip))),
        (0..20u8, vec(txt_body(), 1..4)).prop_map(|(n, strings)| {
            let strings: Vec<String> = strings.iter().map(|s| quoted(s)).collect();
            format!("t{n} TXT {}", strings.join(" "))
        }),
        (any::<u16>(), 0..5u8).prop_map(|(pref, n)| format!("@ MX {pref} mx{n}")),
        (any::<u16>(), any::<u16>(), any::<u16>())
            .prop_map(|(p, w, port)| format!("_svc._tcp SRV {p} {w} {port} host")),
        ("[a-z0-9.-]{1,20}", prop::bool::ANY).prop_map(|(ca, critical)| format!(
            "@ CAA {} issue {}",
            if critical { 128 } else { 0 },
            quoted(&ca)
        )),
        (0..20u8).prop_map(|n| format!("{n} PTR host{n}.example.net.")),
        (0..5u8).prop_map(|n| format!("sub{n} NS ns.sub{n}")),
    ]
}

fn location() -> impl Strategy<Value = (f64, f64)> {
    (-90.0..=90.0f64, -180.0..=180.0f64)
}

prop_compose! {
    fn world()(
        region_count in 1..=REGIONS.len(),
        region_locations in vec(location(), REGIONS.len()),
        pops in vec((location(), 0..=i64::MAX as u64, any::<u32>(), labels(), 0..4usize), 0..5),
        zones in vec(vec(record(), 0..8), 1..3),
        services in vec((0..2usize, prop::option::of(any::<u32>().prop_map(|t| t % 86_400)),
            prop::option::of(1..8u32), any::<bool>(), vec(any::<u16>(), 0..4), labels()), 0..4),
        groups in vec((vec(any::<[u8; 3]>(), 0..3), 0..4usize, vec(1..1000u32, 0..3)), 0..3),
        defaults in (1..100_000u32, 1..8u32, prop::option::of(location()), 0.1..=90.0f64),
        health in (50..10_000u32, 10..5_000u32, 1..10u32, 1..10u32),
        accounts in btree_map("[A-Za-z0-9_-]{1,12}", ("[!-~]{0,16}", any::<bool>()), 0..3),
        per_client in (0..1000u32, 1..2000u32),
    ) -> World {
        let regions: Vec<Region> = REGIONS[..region_count]
            .iter()
            .zip(&region_locations)
            .map(|(name, (lat, lon))| Region { name: (*name).into(), lat: *lat, lon: *lon })
            .collect();
        let pops: Vec<Pop> = pops
            .into_iter()
            .enumerate()
            .map(|(i, ((lat, lon), capacity, slots, labels, region))| Pop {
                name: format!("pop{i}"),
                region: regions[region % regions.len()].name.clone(),
                lat, lon, capacity, replica_slots: slots, labels,
                failure_domain: (i % 3 == 0).then(|| format!("metro{}", i / 3)),
            })
            .collect();
        let zones: Vec<Zone> = zones
            .into_iter()
            .enumerate()
            .map(|(i, records)| Zone { name: format!("z{i}.test."), file: None, records })
            .collect();
        let services: Vec<Service> = services
            .into_iter()
            .enumerate()
            .map(|(i, (zone, ttl, answers, ecs, hosts, labels))| Service {
                name: format!("svc{i}.z{}.test.", zone % zones.len()),
                ttl,
                answers,
                ecs,
                demand: regions.iter().take(i % 3).map(|r| r.name.clone()).collect(),
                endpoints: if pops.is_empty() { Vec::new() } else {
                    hosts.iter().enumerate().map(|(j, host)| Endpoint {
                        pop: pops[j % pops.len()].name.clone(),
                        address: format!("10.{}.{}.{j}", i, host % 256),
                        check: (host % 2 == 0).then(|| format!("10.{}.{}.{j}:{}", i, host % 256, host / 2)),
                        probe: None,
                        weight: u32::from(*host),
                        labels: labels.clone(),
                        capacity: (host % 3 == 0).then(|| f64::from(*host) * 10.0),
                    }).collect()
                },
                steering: isobar_store::world::Steering {
                    headroom: 0.05 * (i % 4) as f64,
                    all_down: if i % 2 == 0 {
                        isobar_store::world::AllDown::ServeAll
                    } else {
                        isobar_store::world::AllDown::Refuse
                    },
                    ..Default::default()
                },
                gray: None,
            })
            .collect();
        let client_groups: Vec<ClientGroup> = groups
            .into_iter()
            .enumerate()
            .map(|(i, (nets, region, asns))| {
                let mut cidrs: Vec<String> = nets
                    .iter()
                    .enumerate()
                    .map(|(j, n)| format!("{}.{}.{}.0/24", 100 + i * 10 + j, n[1], n[2]))
                    .collect();
                cidrs.dedup();
                // Distinct across groups (4-byte private range, one block per group), and
                // at least one prefix or AS number per group.
                let mut asns: Vec<u32> = asns.iter().map(|a| 4_200_000_000 + i as u32 * 1000 + a).collect();
                asns.sort_unstable();
                asns.dedup();
                if cidrs.is_empty() && asns.is_empty() {
                    asns.push(64_512 + i as u32);
                }
                ClientGroup {
                    name: format!("group{i}"),
                    cidrs,
                    asns,
                    region: regions[region % regions.len()].name.clone(),
                    demand: (i % 2 == 0).then_some(12.5 * i as f64),
                }
            })
            .collect();
        let (ttl, answers, location, cell_degrees) = defaults;
        let (interval_ms, timeout_ms, fall, rise) = health;
        World {
            defaults: Defaults { ttl, answers, location: location.map(|(lat, lon)| Location { lat, lon }), cell_degrees },
            health: HealthSettings { interval_ms, timeout_ms, fall, rise, ..HealthSettings::default() },
            regions, pops, zones, services, client_groups,
            httpdns: HttpdnsSettings {
                per_client: RateLimit { rate: per_client.0, burst: per_client.1 },
                ..HttpdnsSettings::default()
            },
            accounts: accounts
                .into_iter()
                // An account without a secret must allow unsigned requests.
                .map(|(id, (secret, unsigned))| {
                    let unsigned_allowed = unsigned || secret.is_empty();
                    HttpdnsAccount { id, secret, unsigned_allowed }
                })
                .collect(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn export_and_parse_is_the_identity(raw in world()) {
        // The generated world is loose (relative names, no SOA); parsing normalizes it.
        let world = parse_world("raw.toml", &to_toml(&raw), &no_files)
            .unwrap_or_else(|e| panic!("generated world rejected: {e}\n{}", to_toml(&raw)))
            .world;
        let exported = to_toml(&world);
        let again = parse_world("exported.toml", &exported, &no_files)
            .unwrap_or_else(|e| panic!("export rejected: {e}\n{exported}"));
        prop_assert_eq!(&again.world, &world);
        prop_assert_eq!(to_toml(&again.world), exported);
    }
}
