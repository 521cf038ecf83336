//! Dynamic answers: weighted routes over sites, Maglev node picks, gray arms — through the
//! engine and over real UDP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::rr::RecordType;
use isobar_dns::{ClientKey, EcsSubnet, Engine};
use isobar_proto::v1::{AnswerSet, GrayRule, Node, Route, ServiceMap, Site, Snapshot};

use crate::support::{WWW, addrs, dns_server, echoed_ecs, geo_db, query, snapshot, udp};

/// `count` IPv4 nodes 10.<site>.0.<i> of weight 100, those in `down` marked down.
fn site(pop: &str, octet: u8, count: u8, down: &[u8]) -> Site {
    Site {
        pop: pop.into(),
        nodes: (1..=count)
            .map(|i| Node {
                address: format!("10.{octet}.0.{i}"),
                weight: 100,
                down: down.contains(&i),
            })
            .collect(),
    }
}

fn routes(routes: &[(u32, &[u32])]) -> AnswerSet {
    AnswerSet {
        routes: routes
            .iter()
            .map(|(weight, sites)| Route {
                weight: *weight,
                sites: sites.to_vec(),
            })
            .collect(),
        ..AnswerSet::default()
    }
}

/// One answer for every client (no cell map).
fn dynamic_map(sites: Vec<Site>, answer: AnswerSet, count: u32) -> ServiceMap {
    ServiceMap {
        name: WWW.into(),
        ttl: 30,
        use_ecs: true,
        answers: vec![answer],
        sites,
        answer_count: count,
        ..ServiceMap::default()
    }
}

fn snapshot_with(version: u64, map: ServiceMap) -> Snapshot {
    let mut s = snapshot(version, "192.0.2.1");
    s.services[0] = map;
    s
}

fn engine(version: u64, map: ServiceMap) -> std::sync::Arc<Engine> {
    let engine = Engine::new(Some(geo_db()));
    engine.install(&snapshot_with(version, map)).unwrap();
    engine
}

/// The n-th distinct /24 (n < 2^24), as an ECS client.
fn subnet_client(n: u32) -> ClientKey {
    let addr = Ipv4Addr::from((n + (11 << 16)) << 8);
    ClientKey {
        source: IpAddr::from([127, 0, 0, 1]),
        subnet: Some(EcsSubnet {
            addr: IpAddr::V4(addr),
            source_prefix: 24,
        }),
        device: None,
    }
}

fn primary(engine: &Engine, client: ClientKey) -> Ipv4Addr {
    engine.resolve_service(WWW, client).unwrap().ipv4()[0]
}

#[test]
fn maglev_keeps_each_subnet_on_its_node_and_a_lost_node_moves_only_its_subnets() {
    let nodes = 20;
    let before = engine(
        1,
        dynamic_map(vec![site("fra1", 1, nodes, &[])], routes(&[(1, &[0])]), 1),
    );
    let after = engine(
        1,
        dynamic_map(vec![site("fra1", 1, nodes, &[7])], routes(&[(1, &[0])]), 1),
    );
    let lost: Ipv4Addr = "10.1.0.7".parse().unwrap();
    let clients = 20_000;
    let mut per_node: BTreeMap<Ipv4Addr, u32> = BTreeMap::new();
    let mut after_per_node: BTreeMap<Ipv4Addr, u32> = BTreeMap::new();
    let (mut moved, mut moved_others) = (0, 0);
    for n in 0..clients {
        let client = subnet_client(n);
        let a = primary(&before, client);
        assert_eq!(
            a,
            primary(&before, client),
            "the same subnet always gets the same node"
        );
        *per_node.entry(a).or_default() += 1;
        let b = primary(&after, client);
        assert_ne!(b, lost, "a down node is never answered");
        *after_per_node.entry(b).or_default() += 1;
        moved += u32::from(a != b);
        if a != lost && a != b {
            moved_others += 1;
        }
    }
    assert_eq!(per_node.len(), nodes as usize, "every node gets clients");
    let avg = f64::from(clients) / f64::from(nodes);
    let max = f64::from(*per_node.values().max().unwrap());
    assert!(max / avg < 1.15, "balanced: max/avg = {}", max / avg);
    // A health change moves exactly the lost node's subnets (≈ 1/20 of them), no other.
    assert_eq!(moved_others, 0, "subnets of up nodes moved");
    assert_eq!(moved, per_node[&lost]);
    // Its subnets spread over the others, which stay balanced.
    let avg = f64::from(clients) / f64::from(nodes - 1);
    let max = f64::from(*after_per_node.values().max().unwrap());
    assert!(
        max / avg < 1.15,
        "balanced with one down: max/avg = {}",
        max / avg
    );

    // The node coming back takes back exactly its subnets.
    after
        .install(&snapshot_with(
            2,
            dynamic_map(vec![site("fra1", 1, nodes, &[])], routes(&[(1, &[0])]), 1),
        ))
        .unwrap();
    assert!(
        (0..clients)
            .all(|n| primary(&after, subnet_client(n)) == primary(&before, subnet_client(n)))
    );
}

/// Topping up an answer from the site's next Maglev entries skips down nodes: with 3 of 6
/// nodes down and 4 addresses asked for, every answer is the 3 up nodes, over the engine and
/// over real UDP.
#[tokio::test]
async fn top_up_never_answers_a_down_node() {
    let map = dynamic_map(
        vec![site("fra1", 1, 6, &[1, 3, 5])],
        routes(&[(1, &[0])]),
        4,
    );
    let engine = engine(1, map);
    let up: BTreeSet<Ipv4Addr> = ["10.1.0.2", "10.1.0.4", "10.1.0.6"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    for n in 0..2_000 {
        let got = engine
            .resolve_service(WWW, subnet_client(n))
            .unwrap()
            .ipv4()
            .to_vec();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), up, "{got:?}");
    }
    let server = dns_server(std::sync::Arc::clone(&engine)).await;
    let resp = udp(
        server.local_addr(),
        &query(WWW, RecordType::A, true, Some("198.51.100.0/24")),
    )
    .await;
    let got: BTreeSet<IpAddr> = addrs(&resp.answers).into_iter().collect();
    assert_eq!(got, up.iter().map(|a| IpAddr::V4(*a)).collect());
}

#[tokio::test]
async fn answers_carry_one_node_per_site_in_route_order_and_the_scope_covers_the_key() {
    let map = dynamic_map(
        vec![site("fra1", 1, 4, &[]), site("lon1", 2, 4, &[1, 2, 3])],
        routes(&[(1, &[0, 1])]),
        2,
    );
    let engine = engine(1, map);
    let server = dns_server(std::sync::Arc::clone(&engine)).await;
    let msg = query(WWW, RecordType::A, true, Some("198.51.100.0/24"));
    let resp = udp(server.local_addr(), &msg).await;
    let got = addrs(&resp.answers);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].to_string().starts_with("10.1.0."),
        "primary from fra1: {got:?}"
    );
    assert_eq!(
        got[1].to_string(),
        "10.2.0.4",
        "fallback from lon1, its only live node"
    );
    // The node depends on the /24, so the answer is scoped to it (RFC 7871).
    assert_eq!(echoed_ecs(&resp).map(|e| e.2), Some(24));
    // The engine gives the same for the same client.
    let via_engine = engine
        .resolve_service(
            WWW,
            ClientKey {
                source: "127.0.0.1".parse().unwrap(),
                subnet: Some(EcsSubnet {
                    addr: "198.51.100.0".parse().unwrap(),
                    source_prefix: 24,
                }),
                device: None,
            },
        )
        .unwrap();
    let engine_addrs: Vec<IpAddr> = via_engine.ipv4().iter().map(|a| IpAddr::V4(*a)).collect();
    assert_eq!(engine_addrs, got);
    assert_eq!(via_engine.pops(), ["fra1", "lon1"]);
}

#[test]
fn a_weighted_split_is_realized_within_one_percent() {
    let map = dynamic_map(
        vec![site("fra1", 1, 1, &[]), site("lon1", 2, 1, &[])],
        routes(&[(7_000, &[0, 1]), (3_000, &[1, 0])]),
        2,
    );
    let engine = engine(1, map);
    let clients = 100_000;
    let fra = (0..clients)
        .filter(|&n| primary(&engine, subnet_client(n)) == Ipv4Addr::new(10, 1, 0, 1))
        .count();
    let share = fra as f64 / f64::from(clients);
    assert!((share - 0.7).abs() < 0.01, "fra1 share {share}");
}

fn gray_map(share_ppm: u32) -> ServiceMap {
    let mut map = dynamic_map(vec![site("fra1", 1, 2, &[])], routes(&[(1, &[0])]), 1);
    map.gray = Some(Box::new(GrayRule {
        name: "v2".into(),
        share_ppm,
        salt: 42,
        cohort_cidrs: vec!["100.64.0.0/16".into()],
        cohort_countries: vec!["FR".into()],
        cohort_devices: vec!["tester-phone".into()],
        canary: Some(Box::new(dynamic_map(
            vec![site("fra1", 9, 2, &[])],
            routes(&[(1, &[0])]),
            1,
        ))),
    }));
    map
}

fn realized_share(engine: &Engine) -> f64 {
    let page = engine.render_gray_prometheus();
    let line = page
        .lines()
        .find(|l| l.starts_with("isobar_gray_canary_share{"))
        .expect("the realized split is exported");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn gray_shares_are_realized_within_one_percent_and_the_cohort_only_grows() {
    let clients = 100_000;
    let canary_of = |engine: &Engine| -> BTreeSet<u32> {
        (0..clients)
            .filter(|&n| {
                engine
                    .resolve_service(WWW, subnet_client(n))
                    .unwrap()
                    .canary()
            })
            .collect()
    };
    let engine = engine(1, gray_map(50_000));
    let at5 = canary_of(&engine);
    let share5 = realized_share(&engine);
    assert!((share5 - 0.05).abs() < 0.01, "realized {share5} at 5 %");
    assert!(
        (at5.len() as f64 / f64::from(clients) - 0.05).abs() < 0.01,
        "{} clients in the canary at 5 %",
        at5.len()
    );
    // The same clients, the same arm: selection is deterministic per client key.
    assert_eq!(at5, canary_of(&engine));

    engine
        .install(&snapshot_with(2, gray_map(200_000)))
        .unwrap();
    let at20 = canary_of(&engine);
    assert!(
        (at20.len() as f64 / f64::from(clients) - 0.20).abs() < 0.01,
        "{} clients in the canary at 20 %",
        at20.len()
    );
    assert!(at5.is_subset(&at20), "the canary cohort only grows");
    // The metric counts over the rule's life (5 % then 20 % traffic, 2 × 100k queries
    // at 5 % and 100k at 20 %).
    let expected = (2.0 * 0.05 + 0.20) / 3.0;
    assert!((realized_share(&engine) - expected).abs() < 0.01);
}

#[tokio::test]
async fn cohorts_are_in_the_canary_whatever_the_share() {
    let engine = engine(1, gray_map(0));
    let canary_addr = |v4: &[Ipv4Addr]| v4[0].octets()[1] == 9;
    // CIDR cohort.
    let cidr = engine
        .resolve_service(WWW, ClientKey::from_addr("100.64.3.4".parse().unwrap()))
        .unwrap();
    assert!(cidr.canary() && canary_addr(cidr.ipv4()));
    // Country cohort: the test database puts 198.51.96.0/24 in France.
    let france = engine
        .resolve_service(WWW, ClientKey::from_addr("198.51.96.7".parse().unwrap()))
        .unwrap();
    assert!(france.canary());
    // Device cohort: the device is in the canary from any network.
    for source in ["203.0.113.9", "198.51.100.9"] {
        let device = engine
            .resolve_service(
                WWW,
                ClientKey {
                    source: source.parse().unwrap(),
                    subnet: None,
                    device: Some(isobar_proto::hash::client_key_device("tester-phone")),
                },
            )
            .unwrap();
        assert!(device.canary(), "device from {source}");
    }
    // Everyone else is in the baseline at 0 %.
    let other = engine
        .resolve_service(WWW, ClientKey::from_addr("203.0.113.9".parse().unwrap()))
        .unwrap();
    assert!(!other.canary() && !canary_addr(other.ipv4()));
    // Over real UDP with ECS, the cohort prefix decides and the scope covers it.
    let server = dns_server(std::sync::Arc::clone(&engine)).await;
    let resp = udp(
        server.local_addr(),
        &query(WWW, RecordType::A, true, Some("100.64.3.0/24")),
    )
    .await;
    assert_eq!(
        addrs(&resp.answers)[0].to_string().split('.').nth(1),
        Some("9")
    );
}

#[test]
fn a_device_keeps_its_node_across_networks() {
    let engine = engine(
        1,
        dynamic_map(vec![site("fra1", 1, 50, &[])], routes(&[(1, &[0])]), 1),
    );
    let device = Some(isobar_proto::hash::client_key_device("device-123"));
    let picks: BTreeSet<Ipv4Addr> = ["203.0.113.9", "198.51.100.9", "100.64.1.1"]
        .iter()
        .map(|source| {
            let key = ClientKey {
                source: source.parse().unwrap(),
                subnet: None,
                device,
            };
            primary(&engine, key)
        })
        .collect();
    assert_eq!(picks.len(), 1, "{picks:?}");
}
