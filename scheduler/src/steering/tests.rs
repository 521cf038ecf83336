use std::collections::BTreeSet;

use isobar_proto::geo::{cell_count, cell_index};
use isobar_proto::v1::{AnswerSet, ServiceMap};

use super::solve;
use crate::fixtures::world;

fn answer_at(map: &ServiceMap, lat: f64, lon: f64) -> &AnswerSet {
    let idx = if map.cell_answers.is_empty() {
        map.default_answer
    } else {
        map.cell_answers[cell_index(5.0, lat, lon) as usize]
    };
    &map.answers[idx as usize]
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
    for set in &map.answers {
        assert!(!set.ipv4.contains(&"192.0.2.1".to_owned()), "{set:?}");
        assert!(set.ipv6.is_empty());
    }
    assert_eq!(
        answer_at(map, 52.5, 13.4).ipv4,
        vec!["192.0.2.2", "198.51.100.1"]
    );
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
    assert_eq!(map.answers[office as usize].ipv4[0], "203.0.113.1");
    // No default location: PoPs in name order (fra1, iad1, lon2, sin1).
    assert_eq!(
        map.answers[map.default_answer as usize].ipv4,
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
