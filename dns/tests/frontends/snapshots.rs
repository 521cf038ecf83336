//! Snapshot validation: every defect is rejected with a message naming it, and a rejected
//! snapshot leaves the served one in place.

use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use isobar_dns::{ClientKey, Decision, Engine, ServingSnapshot, SnapshotError};
use isobar_proto::v1::{ClientGroupOverride, Snapshot};

use crate::support::*;

fn rejected(mutate: impl FnOnce(&mut Snapshot)) -> SnapshotError {
    let mut s = snapshot(1, "192.0.2.1");
    mutate(&mut s);
    ServingSnapshot::from_proto(&s).expect_err("snapshot accepted")
}

fn message(err: &SnapshotError) -> String {
    err.to_string()
}

#[test]
fn the_fixture_is_valid() {
    let s = ServingSnapshot::from_proto(&snapshot(1, "192.0.2.1")).unwrap();
    assert_eq!(s.version(), 1);
    assert_eq!(s.zones().len(), 1);
    assert_eq!(s.services().len(), 2);
    assert!(s.service("WWW.demo.isobar.test").is_some());
    assert!(s.zone_for("deep.www.demo.isobar.test.").is_some());
    assert!(s.zone_for("example.com").is_none());
}

#[test]
fn service_defects() {
    let e = rejected(|s| s.services[0].answers[1].ipv4[0] = "192.0.2.300".into());
    assert!(
        message(&e).contains("\"192.0.2.300\" is not an IPv4 address"),
        "{e}"
    );
    let e = rejected(|s| s.services[0].answers[1].ipv6[0] = "192.0.2.1".into());
    assert!(message(&e).contains("not an IPv6 address"), "{e}");
    let e = rejected(|s| s.services[0].default_answer = 9);
    assert!(
        message(&e).contains("default answer index 9 is out of range"),
        "{e}"
    );
    let e = rejected(|s| s.services[0].cell_answers[17] = 4);
    assert!(message(&e).contains("cell answer index 4"), "{e}");
    let e = rejected(|s| {
        s.services[0].group_answers.insert("office".into(), 12);
    });
    assert!(message(&e).contains("group office answer index 12"), "{e}");
    let e = rejected(|s| s.services[0].cell_answers.truncate(100));
    assert!(
        message(&e).contains("100 cell answers, expected 0 or 2592"),
        "{e}"
    );
    let e = rejected(|s| s.services[0].name = "www.example.com.".into());
    assert!(message(&e).contains("outside every zone"), "{e}");
    let e = rejected(|s| s.services[0].name = "www.demo.isobar.test".into());
    assert!(message(&e).contains("not absolute"), "{e}");
    let e = rejected(|s| s.services[1].name = "WWW.demo.isobar.test.".into());
    assert!(message(&e).contains("listed twice"), "{e}");
    let e = rejected(|s| s.services[0].name = "x.sub.demo.isobar.test.".into());
    assert!(message(&e).contains("below a delegation"), "{e}");
    let e = rejected(|s| s.services[0].name = "ns1.demo.isobar.test.".into());
    assert!(message(&e).contains("also has static A records"), "{e}");
    let e = rejected(|s| s.services[0].answers.clear());
    assert!(message(&e).contains("no answers"), "{e}");
    let e = rejected(|s| s.grid = None);
    assert!(message(&e).contains("no grid"), "{e}");
    let e = rejected(|s| s.grid.as_mut().unwrap().cell_degrees = f64::NAN);
    assert!(matches!(e, SnapshotError::Grid(_)), "{e}");
}

#[test]
fn zone_defects() {
    let e = rejected(|s| s.zones[0].records.push(vec![1, 2, 3]));
    assert!(message(&e).contains("record 10: does not decode"), "{e}");
    let e = rejected(|s| {
        let mut bytes = s.zones[0].records[3].clone();
        bytes.push(0);
        s.zones[0].records[3] = bytes;
    });
    assert!(message(&e).contains("trailing bytes"), "{e}");
    let e = rejected(|s| {
        let outside = Record::from_rdata(
            name("www.example.com."),
            60,
            RData::A(A([192, 0, 2, 1].into())),
        );
        s.zones[0].records.push(wire(outside));
    });
    assert!(message(&e).contains("outside the zone"), "{e}");
    let e = rejected(|s| {
        let clash = Record::from_rdata(
            name("alias.demo.isobar.test."),
            60,
            RData::A(A([192, 0, 2, 1].into())),
        );
        s.zones[0].records.push(wire(clash));
    });
    assert!(message(&e).contains("CNAME and other data"), "{e}");
    let e = rejected(|s| {
        s.zones[0].records.remove(0);
    });
    assert!(message(&e).contains("no SOA"), "{e}");
    let e = rejected(|s| s.zones.push(zone(1)));
    assert!(message(&e).contains("listed twice"), "{e}");
    let e = rejected(|s| s.version = 0);
    assert_eq!(e, SnapshotError::ZeroVersion);
}

#[test]
fn override_defects() {
    let e = rejected(|s| s.overrides[0].cidrs.push("10.0.0.1/8".into()));
    assert!(message(&e).contains("10.0.0.1/8 has host bits set"), "{e}");
    let e = rejected(|s| s.overrides[0].cidrs.push("not-a-cidr".into()));
    assert!(message(&e).contains("not a CIDR prefix"), "{e}");
    let e = rejected(|s| {
        s.overrides.push(ClientGroupOverride {
            group: "lab".into(),
            cidrs: vec!["100.64.0.0/10".into()],
            asns: Vec::new(),
        })
    });
    assert!(message(&e).contains("also listed by group office"), "{e}");
}

#[test]
fn a_rejected_snapshot_leaves_the_served_one_in_place() {
    let engine = engine_with(3);
    let mut bad = snapshot(4, "192.0.2.4");
    bad.services[0].default_answer = 99;
    assert!(engine.install(&bad).is_err());
    assert_eq!(engine.version(), 3);
    let client = ClientKey::from_addr("192.0.2.9".parse().unwrap());
    let answer = engine.resolve_service(WWW, client).unwrap();
    assert_eq!(
        answer.ipv4(),
        ["192.0.2.1".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert_eq!(answer.decision(), Decision::Default);
}

#[test]
fn a_single_answer_service_is_scoped_to_everyone_outside_the_overrides() {
    let engine = Engine::new(Some(geo_db()));
    let mut s = snapshot(1, "192.0.2.1");
    s.services[0].cell_answers.clear();
    engine.install(&s).unwrap();
    let frankfurt = ClientKey::from_addr("198.51.100.7".parse().unwrap());
    let answer = engine
        .resolve_service("www.demo.isobar.test", frankfurt)
        .unwrap();
    assert_eq!(answer.decision(), Decision::Default);
    // Only the overrides narrow it: 198.51.100.7 shares its first 4 bits with the
    // 203.0.113.128/25 override, so /5 is the widest prefix that leaves it out.
    assert_eq!(answer.scope_prefix(), 5);
    assert!(
        engine
            .resolve_service("nope.demo.isobar.test", frankfurt)
            .is_none()
    );
}
