//! Unit tests of explain and what-if over the solver fixtures and a small GeoIP database.

use std::sync::Arc;

use isobar_dns::{AsnDb, ClientKey, Decision, Engine, GeoDb};
use isobar_store::world::World;

use super::*;
use crate::fixtures::world;
use crate::steering::cost::NoReports;
use crate::steering::{Solved, solve_full};

/// Berlin (v4 and v6), New York and Singapore, like the demo database.
fn geo() -> Arc<GeoDb> {
    let mut writer = mmdb_writer::Writer::new("GeoIP2-City");
    for (cidr, lat, lon) in [
        ("192.0.2.0/24", 52.52, 13.40),
        ("2001:db8:1::/48", 52.52, 13.40),
        ("198.51.100.0/24", 40.71, -74.01),
        ("203.0.113.0/24", 1.29, 103.85),
    ] {
        let record = serde_json::json!({
            "location": { "latitude": lat, "longitude": lon, "accuracy_radius": 50 },
        });
        writer
            .insert(cidr.parse::<ipnet::IpNet>().unwrap(), &record)
            .expect("insert");
    }
    Arc::new(GeoDb::from_bytes(writer.to_bytes().expect("mmdb")).expect("geo"))
}

/// The fixture world with a capacity per PoP and declared demand on a Berlin-ish override
/// group, so what-if has load to move.
fn loaded_world(capacity: u64, demand: f64) -> World {
    let mut w = world();
    for pop in &mut w.pops {
        pop.capacity = capacity;
    }
    w.client_groups.push(isobar_store::world::ClientGroup {
        name: "berlin-office".into(),
        cidrs: vec!["192.0.2.128/25".into()],
        asns: Vec::new(),
        region: "eu".into(),
        demand: Some(demand),
    });
    w.normalize();
    w
}

fn solved(world: &World, inputs: &Inputs) -> Solved {
    let mut s = solve_full(world, 1, inputs, &NoReports, None).expect("solves");
    s.snapshot.version = 7;
    s
}

fn view<'a>(world: &'a World, inputs: &'a Inputs, s: &'a Solved) -> View<'a> {
    View {
        world,
        config_version: 1,
        snapshot: &s.snapshot,
        inputs,
        reports: &NoReports,
        state: &s.state,
    }
}

fn query(client: &str, ecs: &str, device: &str) -> ExplainQuery {
    ExplainQuery::parse("WWW.example.test", client, ecs, device).expect("query")
}

/// The key a frontend would see for `q` (no device).
fn client_key(q: &ExplainQuery) -> ClientKey {
    ClientKey {
        source: q.client,
        subnet: q.ecs.map(|(addr, source_prefix)| isobar_dns::EcsSubnet {
            addr,
            source_prefix,
        }),
        device: None,
    }
}

#[test]
fn berlin_client_is_located_and_steered_to_the_cheapest_pop() {
    let w = world();
    let inputs = Inputs::default();
    let s = solved(&w, &inputs);
    let e = explain(
        &view(&w, &inputs, &s),
        Some(geo()),
        None,
        &query("192.0.2.7", "", ""),
    )
    .unwrap();
    let group = e.group.as_ref().unwrap();
    assert_eq!(group.decided_by, "geoip");
    assert!(group.located && (group.lat - 52.52).abs() < 1e-9);
    let cell = isobar_proto::geo::cell_index(w.defaults.cell_degrees, 52.52, 13.40);
    assert_eq!(group.label, format!("cell:{cell}"));
    // Frankfurt is nearest Berlin, London next, then Ashburn, then Singapore.
    let order: Vec<&str> = e.pops.iter().map(|p| p.pop.as_str()).collect();
    assert_eq!(order, ["fra1", "lon2", "iad1", "sin1"]);
    assert!(e.pops.windows(2).all(|p| p[0].cost <= p[1].cost));
    let fra = &e.pops[0];
    assert_eq!(fra.state, "serving");
    assert_eq!(fra.capacity, Some(1000.0));
    assert!((fra.cost - (fra.rtt_ms + fra.loss_penalty + fra.load_penalty)).abs() < 1e-9);
    assert!(!fra.client_report);
    assert_eq!(e.weights[0].pop, "fra1");
    assert!((e.weights.iter().map(|w| w.weight).sum::<f64>() - 1.0).abs() < 1e-9);
    let answer = e.answer.as_ref().unwrap();
    assert_eq!(answer.pops[0], "fra1");
    assert_eq!(answer.ipv4[0], "192.0.2.1");
    assert_eq!(answer.ttl, 20);
    assert!(e.gray.is_none());
    assert_eq!(e.snapshot_version, 7);
}

#[test]
fn the_answer_is_the_frontend_engines_answer() {
    let w = world();
    let inputs = Inputs::default();
    let s = solved(&w, &inputs);
    let engine = Engine::new(Some(geo()));
    engine.install(&s.snapshot).unwrap();
    for (client, ecs) in [
        ("192.0.2.7", ""),
        ("127.0.0.1", "198.51.100.0/24"),
        ("127.0.0.1", "203.0.113.0/24"),
        ("2001:db8:1::5", ""),
        ("10.9.9.9", ""),
        ("100.64.0.1", ""),
    ] {
        let q = query(client, ecs, "");
        let e = explain(&view(&w, &inputs, &s), Some(geo()), None, &q).unwrap();
        let key = client_key(&q);
        let direct = engine.resolve_service("www.example.test.", key).unwrap();
        let answer = e.answer.unwrap();
        let v4: Vec<String> = direct.ipv4().iter().map(ToString::to_string).collect();
        assert_eq!(answer.ipv4, v4, "{client} {ecs}");
        assert_eq!(answer.pops, direct.pops(), "{client} {ecs}");
        assert_eq!(answer.ecs_scope, u32::from(direct.scope_prefix()));
    }
}

#[test]
fn override_and_unknown_clients_name_their_group() {
    let w = world();
    let inputs = Inputs::default();
    let s = solved(&w, &inputs);
    let v = view(&w, &inputs, &s);
    let office = explain(&v, Some(geo()), None, &query("10.1.2.3", "", "")).unwrap();
    let g = office.group.unwrap();
    assert_eq!(
        (g.label.as_str(), g.decided_by.as_str()),
        ("group:office", "override")
    );
    // The office group sits in the ap region: Singapore first.
    assert_eq!(office.pops[0].pop, "sin1");
    assert_eq!(office.answer.unwrap().pops[0], "sin1");

    let nowhere = explain(&v, Some(geo()), None, &query("100.64.0.1", "", "")).unwrap();
    let g = nowhere.group.unwrap();
    assert_eq!(
        (g.label.as_str(), g.decided_by.as_str()),
        ("unknown", "default")
    );
    assert!(!g.located);
}

/// AS64500 holds the New York GeoIP network; AS64999 (no group) the Singapore one.
fn asn() -> Arc<AsnDb> {
    let mut writer = mmdb_writer::Writer::new("GeoLite2-ASN");
    for (cidr, asn) in [("198.51.100.0/24", 64500), ("203.0.113.0/24", 64999)] {
        // A struct, not `json!`: the number must be an MMDB uint32, as in the real databases.
        #[derive(serde::Serialize)]
        struct As {
            autonomous_system_number: u32,
            autonomous_system_organization: &'static str,
        }
        let record = As {
            autonomous_system_number: asn,
            autonomous_system_organization: "Example Transit",
        };
        writer
            .insert(cidr.parse::<ipnet::IpNet>().unwrap(), &record)
            .expect("insert");
    }
    Arc::new(AsnDb::from_bytes(writer.to_bytes().expect("mmdb")).expect("asn"))
}

#[test]
fn an_asn_group_decides_when_the_asn_database_is_given_and_is_named_missing_otherwise() {
    let mut w = world();
    w.client_groups.push(isobar_store::world::ClientGroup {
        name: "transit".into(),
        cidrs: Vec::new(),
        asns: vec![64500],
        region: "eu".into(),
        demand: Some(40.0),
    });
    w.normalize();
    let inputs = Inputs::default();
    let s = solved(&w, &inputs);
    // The snapshot carries the group's AS numbers to the frontends.
    let transit = s.snapshot.overrides.iter().find(|o| o.group == "transit");
    assert_eq!(transit.unwrap().asns, [64500]);
    let v = view(&w, &inputs, &s);
    let q = query("127.0.0.1", "198.51.100.0/24", "");

    let e = explain(&v, Some(geo()), Some(asn()), &q).unwrap();
    let g = e.group.as_ref().unwrap();
    assert_eq!(
        (g.label.as_str(), g.decided_by.as_str()),
        ("group:transit", "asn")
    );
    assert_eq!(
        (g.asn, g.asn_organization.as_str()),
        (64500, "Example Transit")
    );
    assert_eq!(g.prefix_len, 24);
    assert!(!g.asn_db_missing);
    assert_eq!(g.demand, 40.0);
    // The group stands at the eu region's centre, though GeoIP puts the client in New York.
    assert_eq!(e.pops[0].pop, "fra1");
    let answer = e.answer.as_ref().unwrap();
    assert_eq!(answer.pops[0], "fra1");
    let engine = Engine::with_asn(Some(geo()), Some(asn()));
    engine.install(&s.snapshot).unwrap();
    let key = client_key(&q);
    let direct = engine.resolve_service("www.example.test.", key).unwrap();
    assert_eq!(direct.decision(), Decision::Asn(1));
    assert_eq!(answer.pops, direct.pops());
    assert_eq!(answer.ecs_scope, u32::from(direct.scope_prefix()));

    // An AS no group lists: GeoIP decides, and the AS is still shown.
    let sg = explain(&v, Some(geo()), Some(asn()), &query("203.0.113.9", "", "")).unwrap();
    let g = sg.group.unwrap();
    assert_eq!((g.decided_by.as_str(), g.asn), ("geoip", 64999));

    // Without the ASN database explain cannot see ASN groups, and says so.
    let blind = explain(&v, Some(geo()), None, &q).unwrap();
    let g = blind.group.unwrap();
    assert_eq!(g.decided_by, "geoip");
    assert!(g.asn_db_missing);
    assert_eq!(g.asn, 0);
    // Without ASN groups in the snapshot, a missing database is no gap.
    let plain = world();
    let s = solved(&plain, &inputs);
    let e = explain(&view(&plain, &inputs, &s), Some(geo()), None, &q).unwrap();
    assert!(!e.group.unwrap().asn_db_missing);
}

#[test]
fn bad_requests_name_the_field() {
    let field = |r: Result<ExplainQuery, ExplainError>| match r {
        Err(ExplainError::Invalid { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field(ExplainQuery::parse("a.test", "not-an-ip", "", "")),
        "client"
    );
    assert_eq!(
        field(ExplainQuery::parse(
            "a.test",
            "192.0.2.1",
            "192.0.2.0/99",
            ""
        )),
        "ecs"
    );
    assert_eq!(field(ExplainQuery::parse(" ", "192.0.2.1", "", "")), "name");

    let w = world();
    let inputs = Inputs::default();
    let s = solved(&w, &inputs);
    let v = view(&w, &inputs, &s);
    let q = ExplainQuery::parse("nope.example.test", "192.0.2.1", "", "").unwrap();
    assert!(matches!(
        explain(&v, None, None, &q),
        Err(ExplainError::UnknownService(_))
    ));
    for bad in [
        "pop=nowhere",
        "region=mars",
        "endpoint=192.0.2.99",
        "rack=7",
        "fra1",
    ] {
        match what_if(&v, &[bad.to_owned()], &[]) {
            Err(ExplainError::Invalid {
                field: "fail",
                message,
            }) => {
                assert!(!message.is_empty(), "{bad}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert!(what_if(&v, &[], &[]).is_err());
}

#[test]
fn what_if_moves_a_failed_pops_load_and_reports_overload() {
    // 600 q/s declared near Berlin; 1000 q/s per PoP with 10 % headroom: fra1 alone
    // carries it, and without fra1 London takes it.
    let w = loaded_world(1000, 600.0);
    let inputs = Inputs::default();
    let s = solved(&w, &inputs);
    let before_state = s.state.clone();
    let v = view(&w, &inputs, &s);
    let r = what_if(&v, &["pop=fra1".to_owned()], &[]).unwrap();
    assert_eq!(r.failed_pops, ["fra1"]);
    assert!(
        r.failed_targets.iter().any(|t| t.contains("1001")),
        "{:?}",
        r.failed_targets
    );
    let svc = &r.services[0];
    let pop = |name: &str| svc.pops.iter().find(|p| p.pop == name).unwrap();
    assert!(
        (pop("fra1").load_before - 600.0).abs() < 1e-6,
        "{:?}",
        svc.pops
    );
    assert_eq!(pop("fra1").load_after, 0.0);
    assert_eq!(pop("fra1").state_after, "drained");
    assert!(
        (pop("lon2").load_after - 600.0).abs() < 1e-6,
        "{:?}",
        svc.pops
    );
    assert!(svc.overloaded.is_empty());
    let group = svc
        .groups
        .iter()
        .find(|g| g.group == "group:berlin-office")
        .unwrap();
    assert_eq!(group.before[0].pop, "fra1");
    assert_eq!(group.after[0].pop, "lon2");
    assert_eq!(svc.all_down, "");
    // A requested group is listed first, even without demand or a change.
    let sin_cell = format!(
        "cell:{}",
        isobar_proto::geo::cell_index(w.defaults.cell_degrees, 1.29, 103.85)
    );
    let r = what_if(
        &v,
        &["pop=fra1".to_owned()],
        std::slice::from_ref(&sin_cell),
    )
    .unwrap();
    assert_eq!(r.services[0].groups[0].group, sin_cell);
    assert_eq!(r.services[0].groups[0].after[0].pop, "sin1");
    assert!(matches!(
        what_if(&v, &["pop=fra1".to_owned()], &["bogus".to_owned()]),
        Err(ExplainError::Invalid {
            field: "groups",
            ..
        })
    ));
    // Live state is untouched: what-if borrows it.
    assert_eq!(s.state, before_state);

    // Tight capacities: 3000 q/s fits the four PoPs' 4 × 900 usable q/s, not the other
    // three's 2700: without fra1 someone is overloaded and demand goes unserved.
    let w = loaded_world(1000, 3000.0);
    let s = solved(&w, &inputs);
    let v = view(&w, &inputs, &s);
    let r = what_if(&v, &["pop=fra1".to_owned()], &[]).unwrap();
    let svc = &r.services[0];
    assert!(svc.unserved_before < 1e-9, "{}", svc.unserved_before);
    assert!(!svc.overloaded.is_empty(), "{:?}", svc.pops);
    assert!(svc.unserved_after > 0.0);
    for name in &svc.overloaded {
        let p = svc.pops.iter().find(|p| &p.pop == name).unwrap();
        assert!(p.utilisation_after > 0.9, "{p:?}");
    }

    // A whole region: every European PoP fails, Ashburn takes over.
    let r = what_if(&v, &["region=eu".to_owned()], &[]).unwrap();
    assert_eq!(r.failed_pops, ["fra1", "lon2"]);
    let group = r.services[0]
        .groups
        .iter()
        .find(|g| g.group == "group:berlin-office")
        .unwrap();
    assert!(
        group
            .after
            .iter()
            .all(|w| w.pop != "fra1" && w.pop != "lon2")
    );
}

#[test]
fn what_if_everything_down_reports_the_all_down_policy() {
    let w = world();
    let inputs = Inputs::default();
    let s = solved(&w, &inputs);
    let v = view(&w, &inputs, &s);
    let fails: Vec<String> = ["eu", "na", "ap"]
        .iter()
        .map(|r| format!("region={r}"))
        .collect();
    let r = what_if(&v, &fails, &[]).unwrap();
    assert_eq!(r.services[0].all_down, "serve-all");
}
