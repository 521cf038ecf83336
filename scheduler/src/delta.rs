//! The scheduler's side of snapshot deltas: which update a frontend gets next — a delta from
//! the version it holds, or the whole snapshot when a delta would not be smaller — with each
//! (base, version) update computed once and shared by every watcher at that base.
//!
//! The diff and apply themselves live in [`isobar_proto::delta`], shared with the frontends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use isobar_proto::delta::{diff, keys_unique};
use isobar_proto::v1::{Snapshot, SnapshotUpdate, snapshot_update};
use prost::Message;

/// Updates kept. Watchers that keep up share the newest entry; a few more serve stragglers
/// one or two versions behind without diffing again.
const CACHE_ENTRIES: usize = 16;

/// What to send a watcher that holds `held` (None: nothing usable) so it reaches `new`.
pub(crate) fn choose(held: Option<&Snapshot>, new: &Snapshot) -> SnapshotUpdate {
    let full = || SnapshotUpdate {
        kind: Some(snapshot_update::Kind::Full(new.clone())),
    };
    let Some(old) = held.filter(|old| old.version < new.version) else {
        return full();
    };
    if !keys_unique(old) || !keys_unique(new) {
        // A delta keyed by name cannot describe a snapshot that lists a name twice; the
        // frontend rejects such a snapshot anyway, and must see it to say so.
        return full();
    }
    let delta = diff(old, new);
    if delta.encoded_len() >= new.encoded_len() {
        return full();
    }
    SnapshotUpdate {
        kind: Some(snapshot_update::Kind::Delta(delta)),
    }
}

/// The updates computed recently, keyed by (held version, new version), bounded.
#[derive(Default)]
pub(crate) struct DeltaCache {
    entries: Mutex<VecDeque<(u64, u64, Arc<SnapshotUpdate>)>>,
}

impl DeltaCache {
    /// [`choose`], computed once per (held, new) pair however many watchers ask.
    pub(crate) fn update(&self, held: &Snapshot, new: &Snapshot) -> SnapshotUpdate {
        let key = (held.version, new.version);
        // The lock is held while diffing, so watchers asking for the same pair wait for the
        // one computation instead of repeating it. A poisoned lock only holds a cache.
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, _, update)) = entries.iter().find(|(b, v, _)| (*b, *v) == key) {
            return (**update).clone();
        }
        let update = Arc::new(choose(Some(held), new));
        if entries.len() == CACHE_ENTRIES {
            entries.pop_front();
        }
        entries.push_back((key.0, key.1, Arc::clone(&update)));
        drop(entries);
        Arc::unwrap_or_clone(update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isobar_proto::delta::apply;
    use isobar_proto::v1::{
        AnswerSet, ClientGroupOverride, GeoGrid, HttpdnsAccount, ServiceMap, ZoneData,
    };
    use proptest::prelude::*;

    /// Keys of the pool services and zones are drawn from; each key has a few variants.
    const KEYS: usize = 8;
    const VARIANTS: u32 = 3;

    fn service(key: usize, variant: u32) -> ServiceMap {
        ServiceMap {
            name: format!("s{key}.example.test."),
            ttl: 10 + variant,
            answers: (0..=variant)
                .map(|i| AnswerSet {
                    ipv4: vec![format!("192.0.2.{}", key as u32 * 10 + i)],
                    pops: vec![format!("pop{i}")],
                    ..Default::default()
                })
                .collect(),
            cell_answers: (0..64)
                .map(|c| (c + key as u32 + variant) % (variant + 1))
                .collect(),
            default_answer: variant,
            ..Default::default()
        }
    }

    fn zone(key: usize, variant: u32) -> ZoneData {
        ZoneData {
            origin: format!("z{key}.test."),
            serial: variant,
            records: vec![vec![key as u8, variant as u8]; variant as usize + 1],
        }
    }

    /// A snapshot: for each key absent or one variant, listed in the given order, with one
    /// of a few variants of each global.
    #[allow(clippy::too_many_arguments)]
    fn build(
        version: u64,
        services: &[Option<u32>],
        service_order: &[usize],
        zones: &[Option<u32>],
        zone_order: &[usize],
        globals: (u32, u32, u32, bool),
    ) -> Snapshot {
        Snapshot {
            version,
            config_version: version / 2,
            generated_unix_ms: version as i64 * 1000,
            grid: Some(GeoGrid {
                cell_degrees: [5.0, 10.0][globals.0 as usize % 2],
            }),
            zones: zone_order
                .iter()
                .filter_map(|&k| zones[k].map(|v| zone(k, v)))
                .collect(),
            services: service_order
                .iter()
                .filter_map(|&k| services[k].map(|v| service(k, v)))
                .collect(),
            overrides: (0..globals.1)
                .map(|i| ClientGroupOverride {
                    group: format!("g{i}"),
                    cidrs: vec![format!("10.{i}.0.0/16")],
                    // Odd counts list an AS number, so deltas must carry those too.
                    asns: (globals.1 % 2 == 1)
                        .then_some(64_512 + i)
                        .into_iter()
                        .collect(),
                })
                .collect(),
            accounts: (0..globals.2)
                .map(|i| HttpdnsAccount {
                    id: format!("{}", 100 + i),
                    secret: "s".into(),
                    unsigned_allowed: i % 2 == 0,
                })
                .collect(),
            httpdns: globals.3.then(Default::default),
        }
    }

    fn snapshot_at(version: u64) -> impl Strategy<Value = Snapshot> {
        let keyed = || proptest::collection::vec(proptest::option::of(0..VARIANTS), KEYS);
        let order = || Just((0..KEYS).collect::<Vec<_>>()).prop_shuffle();
        (
            keyed(),
            order(),
            keyed(),
            order(),
            (0u32..2, 0u32..3, 0u32..2, any::<bool>()),
        )
            .prop_map(move |(s, so, z, zo, g)| build(version, &s, &so, &z, &zo, g))
    }

    /// The snapshot with its keyed lists in key order, as `apply` returns them.
    fn normalized(mut s: Snapshot) -> Snapshot {
        s.services.sort_by(|a, b| a.name.cmp(&b.name));
        s.zones.sort_by(|a, b| a.origin.cmp(&b.origin));
        s
    }

    proptest! {
        #[test]
        fn applying_the_diff_gives_the_new_snapshot(
            old in snapshot_at(10),
            new in snapshot_at(11),
        ) {
            let delta = diff(&old, &new);
            let applied = apply(&old, &delta).expect("a diff applies to its base");
            prop_assert_eq!(applied, normalized(new.clone()));

            // Minimal: only what differs travels.
            let changed = new
                .services
                .iter()
                .filter(|s| !old.services.contains(s))
                .count();
            prop_assert_eq!(delta.upsert_services.len(), changed);
            let gone = old
                .services
                .iter()
                .filter(|s| !new.services.iter().any(|n| n.name == s.name))
                .count();
            prop_assert_eq!(delta.removed_services.len(), gone);
            let zones_changed = new.zones.iter().filter(|z| !old.zones.contains(z)).count();
            prop_assert_eq!(delta.upsert_zones.len(), zones_changed);

            // Whatever is chosen, the watcher reaches `new`.
            match choose(Some(&old), &new).kind {
                Some(snapshot_update::Kind::Delta(d)) => {
                    prop_assert_eq!(apply(&old, &d).unwrap(), normalized(new));
                }
                Some(snapshot_update::Kind::Full(full)) => prop_assert_eq!(full, new),
                None => prop_assert!(false, "an empty update"),
            }
        }

        #[test]
        fn a_snapshot_diffed_with_itself_changes_nothing(s in snapshot_at(3)) {
            let mut next = s.clone();
            next.version = 4;
            let delta = diff(&s, &next);
            prop_assert!(delta.upsert_services.is_empty() && delta.removed_services.is_empty());
            prop_assert!(delta.upsert_zones.is_empty() && delta.removed_zones.is_empty());
            prop_assert!(!delta.replace_globals);
            prop_assert_eq!(apply(&s, &delta).unwrap(), normalized(next));
        }
    }

    fn fifty(version: u64, changed: Option<usize>) -> Snapshot {
        let services: Vec<ServiceMap> = (0..50)
            .map(|k| {
                let mut s = service(k, 2);
                s.cell_answers = vec![1; 2592];
                if changed == Some(k) {
                    s.cell_answers[7] = 2;
                }
                s
            })
            .collect();
        Snapshot {
            version,
            services,
            zones: vec![zone(0, 1)],
            ..Default::default()
        }
    }

    #[test]
    fn one_changed_service_of_fifty_goes_as_a_small_delta() {
        let old = fifty(1, None);
        let new = fifty(2, Some(17));
        let update = choose(Some(&old), &new);
        let Some(snapshot_update::Kind::Delta(delta)) = &update.kind else {
            panic!("expected a delta, got {update:?}");
        };
        assert_eq!(delta.upsert_services.len(), 1);
        assert!(update.encoded_len() * 20 < new.encoded_len());
    }

    #[test]
    fn nothing_held_older_or_duplicated_names_get_the_whole_snapshot() {
        let new = fifty(5, Some(3));
        let is_full = |u: SnapshotUpdate| matches!(u.kind, Some(snapshot_update::Kind::Full(_)));
        assert!(is_full(choose(None, &new)));
        assert!(is_full(choose(Some(&fifty(6, None)), &new)));
        let mut dup = fifty(4, None);
        dup.services.push(dup.services[0].clone());
        assert!(is_full(choose(Some(&dup), &new)));
        // Everything changed: the delta is no smaller, so the snapshot goes whole.
        let mut other = fifty(4, None);
        other.services.iter_mut().for_each(|s| s.ttl += 1);
        other.zones[0].serial += 1;
        assert!(is_full(choose(Some(&other), &new)));
    }

    #[test]
    fn the_cache_serves_repeats_and_stays_bounded() {
        let cache = DeltaCache::default();
        let base = fifty(1, None);
        let first = cache.update(&base, &fifty(2, Some(1)));
        // Versions name contents: the same pair is answered from the cache, not diffed again.
        let again = cache.update(&base, &fifty(2, Some(9)));
        assert_eq!(first, again);
        assert_ne!(first, choose(Some(&base), &fifty(2, Some(9))));
        for v in 3..40 {
            cache.update(&base, &fifty(v, Some(v as usize % 50)));
        }
        assert_eq!(cache.entries.lock().unwrap().len(), CACHE_ENTRIES);
    }
}
