//! Small worlds for the solvers' unit tests.

use std::collections::BTreeMap;

use isobar_store::world::{ClientGroup, Endpoint, Pop, Region, Service, World, Zone};

fn pop(name: &str, region: &str, lat: f64, lon: f64, slots: u32) -> Pop {
    Pop {
        name: name.into(),
        region: region.into(),
        lat,
        lon,
        capacity: 1000,
        replica_slots: slots,
        labels: BTreeMap::from([(
            "tier".to_owned(),
            if name.ends_with('2') { "edge" } else { "core" }.to_owned(),
        )]),
        failure_domain: None,
    }
}

fn endpoint(pop: &str, address: &str, port: u16) -> Endpoint {
    Endpoint {
        pop: pop.into(),
        address: address.into(),
        check: Some(format!("127.0.0.1:{port}")),
        probe: None,
        weight: 100,
        labels: BTreeMap::new(),
        capacity: None,
    }
}

/// Three regions, four PoPs (two in Europe), one service with v4 and v6 endpoints.
pub(crate) fn world() -> World {
    let mut world = World {
        regions: vec![
            Region { name: "eu".into(), lat: 50.0, lon: 10.0 },
            Region { name: "na".into(), lat: 39.0, lon: -77.0 },
            Region { name: "ap".into(), lat: 1.35, lon: 103.8 },
        ],
        pops: vec![
            pop("fra1", "eu", 50.11, 8.68, 4),
            pop("lon2", "eu", 51.51, -0.13, 4),
            pop("iad1", "na", 38.95, -77.45, 4),
            pop("sin1", "ap", 1.35, 103.82, 2),
        ],
        zones: vec![Zone {
            name: "example.test.".into(),
            file: None,
            records: vec![
                "example.test. 3600 IN NS ns1.example.test.".into(),
                "example.test. 3600 IN SOA ns1.example.test. hostmaster.example.test. 7 7200 900 1209600 300".into(),
                "ns1.example.test. 3600 IN A 192.0.2.53".into(),
            ],
        }],
        services: vec![Service {
            name: "www.example.test.".into(),
            ttl: Some(20),
            answers: Some(2),
            ecs: true,
            demand: vec![],
            endpoints: vec![
                endpoint("fra1", "192.0.2.1", 1001),
                endpoint("lon2", "192.0.2.2", 1002),
                endpoint("iad1", "198.51.100.1", 1003),
                endpoint("sin1", "203.0.113.1", 1004),
                endpoint("fra1", "2001:db8::1", 1001),
            ],
            steering: Default::default(),
            gray: None,
        }],
        client_groups: vec![ClientGroup {
            name: "office".into(),
            cidrs: vec!["10.0.0.0/8".into()],
            asns: Vec::new(),
            region: "ap".into(),
            demand: None,
        }],
        ..World::default()
    };
    world.normalize();
    world
}
