//! Snapshot deltas: what changed between two steering snapshots ([`diff`], on the
//! scheduler) and that change applied to the older one ([`apply`], on the frontends).
//!
//! Both sides use this one definition, so `apply(old, &diff(old, new))` equals `new` up to
//! the order of the keyed lists: services are keyed by name, zones by origin, and [`apply`]
//! returns both sorted by key (the frontends index them and never depend on their order).
//! Service maps and zones are compared and replaced whole; their fields are not looked at.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::v1::{Snapshot, SnapshotDelta};

/// Why a delta cannot be applied to a snapshot. Nothing is changed when this is returned;
/// the frontend resynchronises with a full snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaError {
    /// The delta was computed against another version than the one held.
    BaseMismatch {
        /// The version held.
        held: u64,
        /// The version the delta starts from.
        base: u64,
    },
    /// The delta would not move the version forward.
    NotNewer {
        /// The version the delta starts from.
        base: u64,
        /// The version it claims to produce.
        version: u64,
    },
    /// A service name or zone origin is listed twice, in the base or among the upserts.
    Duplicate {
        /// "service" or "zone".
        kind: &'static str,
        /// The name or origin.
        key: String,
    },
    /// A removed service or zone is not in the base.
    UnknownRemoval {
        /// "service" or "zone".
        kind: &'static str,
        /// The name or origin.
        key: String,
    },
    /// The same service or zone is both upserted and removed.
    Conflict {
        /// "service" or "zone".
        kind: &'static str,
        /// The name or origin.
        key: String,
    },
}

impl fmt::Display for DeltaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BaseMismatch { held, base } => {
                write!(
                    f,
                    "delta starts from version {base}, but version {held} is held"
                )
            }
            Self::NotNewer { base, version } => {
                write!(
                    f,
                    "delta goes from version {base} to {version}, not forward"
                )
            }
            Self::Duplicate { kind, key } => write!(f, "{kind} {key:?} is listed twice"),
            Self::UnknownRemoval { kind, key } => {
                write!(
                    f,
                    "delta removes {kind} {key:?}, which the base does not hold"
                )
            }
            Self::Conflict { kind, key } => {
                write!(f, "delta both replaces and removes {kind} {key:?}")
            }
        }
    }
}

impl std::error::Error for DeltaError {}

/// Whether every service name and zone origin of `snapshot` is distinct, so that a delta
/// keyed by them can describe it. A snapshot that fails this must be sent whole.
pub fn keys_unique(snapshot: &Snapshot) -> bool {
    let mut names = BTreeSet::new();
    let mut origins = BTreeSet::new();
    snapshot.services.iter().all(|s| names.insert(&s.name))
        && snapshot.zones.iter().all(|z| origins.insert(&z.origin))
}

/// The delta that turns `old` into `new`: every service and zone of `new` that `old` lacks
/// or holds differently (whole), the keys of those `new` dropped, and the globals (grid,
/// overrides, accounts, HTTPDNS settings) when any of them changed. Both snapshots must
/// pass [`keys_unique`]; otherwise the delta describes only the last entry of each
/// duplicated key.
pub fn diff(old: &Snapshot, new: &Snapshot) -> SnapshotDelta {
    let (upsert_services, removed_services) = changes(&old.services, &new.services, |s| &s.name);
    let (upsert_zones, removed_zones) = changes(&old.zones, &new.zones, |z| &z.origin);
    let replace_globals = old.grid != new.grid
        || old.overrides != new.overrides
        || old.accounts != new.accounts
        || old.httpdns != new.httpdns;
    SnapshotDelta {
        base_version: old.version,
        version: new.version,
        config_version: new.config_version,
        generated_unix_ms: new.generated_unix_ms,
        upsert_services,
        removed_services,
        upsert_zones,
        removed_zones,
        replace_globals,
        grid: if replace_globals { new.grid } else { None },
        overrides: if replace_globals {
            new.overrides.clone()
        } else {
            Vec::new()
        },
        accounts: if replace_globals {
            new.accounts.clone()
        } else {
            Vec::new()
        },
        httpdns: if replace_globals {
            new.httpdns.clone()
        } else {
            None
        },
    }
}

/// `base` with `delta` applied: the snapshot at `delta.version`, services sorted by name and
/// zones by origin. All or nothing: on error `base` is untouched and no snapshot results.
pub fn apply(base: &Snapshot, delta: &SnapshotDelta) -> Result<Snapshot, DeltaError> {
    apply_owned(base.clone(), delta.clone())
}

/// [`apply`] consuming both: what the delta leaves alone is moved, not copied (a frontend
/// holding a large snapshot saves copying every unchanged service map). On error both are
/// dropped and no snapshot results.
pub fn apply_owned(base: Snapshot, delta: SnapshotDelta) -> Result<Snapshot, DeltaError> {
    if delta.base_version != base.version {
        return Err(DeltaError::BaseMismatch {
            held: base.version,
            base: delta.base_version,
        });
    }
    if delta.version <= delta.base_version {
        return Err(DeltaError::NotNewer {
            base: delta.base_version,
            version: delta.version,
        });
    }
    let services = merge(
        "service",
        base.services,
        delta.upsert_services,
        &delta.removed_services,
        |s| &s.name,
    )?;
    let zones = merge(
        "zone",
        base.zones,
        delta.upsert_zones,
        &delta.removed_zones,
        |z| &z.origin,
    )?;
    let (grid, overrides, accounts, httpdns) = if delta.replace_globals {
        (delta.grid, delta.overrides, delta.accounts, delta.httpdns)
    } else {
        (base.grid, base.overrides, base.accounts, base.httpdns)
    };
    Ok(Snapshot {
        version: delta.version,
        config_version: delta.config_version,
        generated_unix_ms: delta.generated_unix_ms,
        grid,
        zones,
        services,
        overrides,
        accounts,
        httpdns,
    })
}

/// The entries of `new` that `old` lacks or holds differently (by `key`), and the keys of
/// `old` that `new` dropped, in key order.
fn changes<T: Clone + PartialEq>(
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> &String,
) -> (Vec<T>, Vec<String>) {
    let before: BTreeMap<&String, &T> = old.iter().map(|item| (key(item), item)).collect();
    let after: BTreeSet<&String> = new.iter().map(&key).collect();
    let upserts = new
        .iter()
        .filter(|item| before.get(key(item)) != Some(item))
        .cloned()
        .collect();
    let removed = before
        .keys()
        .filter(|k| !after.contains(*k))
        .map(|k| (*k).clone())
        .collect();
    (upserts, removed)
}

/// `base` keyed by `key`, minus `removed`, with `upserts` added or replacing, in key order.
fn merge<T>(
    kind: &'static str,
    base: Vec<T>,
    upserts: Vec<T>,
    removed: &[String],
    key: impl Fn(&T) -> &String,
) -> Result<Vec<T>, DeltaError> {
    let duplicate = |k: &String| DeltaError::Duplicate {
        kind,
        key: k.clone(),
    };
    let mut merged: BTreeMap<String, T> = BTreeMap::new();
    for item in base {
        let k = key(&item).clone();
        if merged.contains_key(&k) {
            return Err(duplicate(&k));
        }
        merged.insert(k, item);
    }
    let mut upserted = BTreeSet::new();
    for item in &upserts {
        if !upserted.insert(key(item)) {
            return Err(duplicate(key(item)));
        }
    }
    for k in removed {
        if upserted.contains(k) {
            return Err(DeltaError::Conflict {
                kind,
                key: k.clone(),
            });
        }
        if merged.remove(k).is_none() {
            return Err(DeltaError::UnknownRemoval {
                kind,
                key: k.clone(),
            });
        }
    }
    drop(upserted);
    for item in upserts {
        merged.insert(key(&item).clone(), item);
    }
    Ok(merged.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{
        AnswerSet, ClientGroupOverride, GeoGrid, HttpdnsAccount, ServiceMap, ZoneData,
    };

    fn service(name: &str, addr: &str) -> ServiceMap {
        ServiceMap {
            name: name.into(),
            ttl: 30,
            answers: vec![AnswerSet {
                ipv4: vec![addr.into()],
                ..Default::default()
            }],
            cell_answers: vec![0; 16],
            ..Default::default()
        }
    }

    fn zone(origin: &str, serial: u32) -> ZoneData {
        ZoneData {
            origin: origin.into(),
            serial,
            records: vec![vec![1, 2, 3]],
        }
    }

    fn snapshot(version: u64, services: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            version,
            config_version: 7,
            generated_unix_ms: 1_000 + version as i64,
            grid: Some(GeoGrid { cell_degrees: 45.0 }),
            zones: vec![zone("a.test.", 1), zone("b.test.", 1)],
            services: services.iter().map(|(n, a)| service(n, a)).collect(),
            overrides: vec![ClientGroupOverride {
                group: "office".into(),
                cidrs: vec!["10.0.0.0/8".into()],
                asns: vec![64_512],
            }],
            accounts: vec![HttpdnsAccount {
                id: "100".into(),
                secret: "s".into(),
                unsigned_allowed: true,
            }],
            httpdns: None,
        }
    }

    #[test]
    fn one_changed_service_travels_alone_and_applies_back() {
        let old = snapshot(1, &[("a.", "192.0.2.1"), ("b.", "192.0.2.2")]);
        let new = snapshot(2, &[("a.", "192.0.2.1"), ("b.", "192.0.2.9")]);
        let delta = diff(&old, &new);
        assert_eq!((delta.base_version, delta.version), (1, 2));
        let names: Vec<_> = delta.upsert_services.iter().map(|s| &s.name).collect();
        assert_eq!(names, ["b."]);
        assert!(delta.removed_services.is_empty() && delta.upsert_zones.is_empty());
        assert!(!delta.replace_globals && delta.overrides.is_empty());
        assert_eq!(apply(&old, &delta).unwrap(), new);
    }

    #[test]
    fn additions_removals_zones_and_globals() {
        let old = snapshot(5, &[("a.", "192.0.2.1"), ("b.", "192.0.2.2")]);
        let mut new = snapshot(9, &[("b.", "192.0.2.2"), ("c.", "192.0.2.3")]);
        new.zones = vec![zone("b.test.", 2), zone("c.test.", 1)];
        new.accounts.clear();
        let delta = diff(&old, &new);
        assert_eq!(delta.removed_services, ["a."]);
        assert_eq!(delta.removed_zones, ["a.test."]);
        assert_eq!(delta.upsert_zones.len(), 2);
        assert!(delta.replace_globals);
        let applied = apply(&old, &delta).unwrap();
        assert_eq!(applied, new);
        assert!(applied.accounts.is_empty());
    }

    #[test]
    fn changed_as_numbers_replace_the_globals() {
        let old = snapshot(1, &[("a.", "192.0.2.1")]);
        let mut new = snapshot(2, &[("a.", "192.0.2.1")]);
        new.overrides[0].asns.push(3320);
        let delta = diff(&old, &new);
        assert!(delta.replace_globals);
        assert_eq!(delta.overrides[0].asns, [64_512, 3320]);
        assert_eq!(apply(&old, &delta).unwrap(), new);
    }

    #[test]
    fn a_delta_for_another_base_or_going_backwards_is_refused() {
        let old = snapshot(3, &[("a.", "192.0.2.1")]);
        let new = snapshot(4, &[("a.", "192.0.2.2")]);
        let mut delta = diff(&old, &new);
        let other = snapshot(2, &[("a.", "192.0.2.1")]);
        assert_eq!(
            apply(&other, &delta),
            Err(DeltaError::BaseMismatch { held: 2, base: 3 })
        );
        delta.version = 3;
        let err = apply(&old, &delta).unwrap_err();
        assert_eq!(
            err,
            DeltaError::NotNewer {
                base: 3,
                version: 3
            }
        );
        assert!(err.to_string().contains("not forward"), "{err}");
    }

    #[test]
    fn inconsistent_deltas_are_refused_whole() {
        let old = snapshot(1, &[("a.", "192.0.2.1")]);
        let new = snapshot(2, &[("a.", "192.0.2.2")]);
        let good = diff(&old, &new);

        let mut twice = good.clone();
        twice.upsert_services.push(service("a.", "192.0.2.3"));
        assert!(matches!(
            apply(&old, &twice),
            Err(DeltaError::Duplicate {
                kind: "service",
                ..
            })
        ));

        let mut unknown = good.clone();
        unknown.removed_zones.push("nope.test.".into());
        let err = apply(&old, &unknown).unwrap_err();
        assert_eq!(
            err,
            DeltaError::UnknownRemoval {
                kind: "zone",
                key: "nope.test.".into()
            }
        );
        assert!(err.to_string().contains("nope.test."), "{err}");

        let mut both = good;
        both.removed_services.push("a.".into());
        assert!(matches!(
            apply(&old, &both),
            Err(DeltaError::Conflict {
                kind: "service",
                ..
            })
        ));
    }

    #[test]
    fn duplicate_keys_are_detected() {
        let fine = snapshot(1, &[("a.", "192.0.2.1"), ("b.", "192.0.2.1")]);
        assert!(keys_unique(&fine));
        let dup = snapshot(1, &[("a.", "192.0.2.1"), ("a.", "192.0.2.2")]);
        assert!(!keys_unique(&dup));
        let delta = diff(&fine, &snapshot(2, &[]));
        assert!(matches!(
            apply(
                &dup,
                &SnapshotDelta {
                    base_version: 1,
                    ..delta
                }
            ),
            Err(DeltaError::Duplicate {
                kind: "service",
                ..
            })
        ));
    }
}
