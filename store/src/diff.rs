//! Human-readable differences between two worlds, one line per changed item.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::world::{ClientGroup, Endpoint, Location, Pop, Region, Service, World, Zone};

/// Whether an item appeared, disappeared or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    /// Present only in the new world (`+`).
    Added,
    /// Present only in the old world (`-`).
    Removed,
    /// Present in both, different (`~`).
    Modified,
}

/// The item a change is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The `[defaults]` section.
    Defaults,
    /// The `[health]` section.
    Health,
    /// A region by name.
    Region(String),
    /// A PoP by name.
    Pop(String),
    /// A zone by name.
    Zone(String),
    /// A service by name.
    Service(String),
    /// A client group by name.
    ClientGroup(String),
    /// The `[httpdns]` section.
    Httpdns,
    /// An HTTPDNS account by id.
    Account(String),
}

/// One difference, displayed as one line: `+ pop fra1`, `- service www.example.com.`,
/// `~ pop fra1: capacity 100 -> 200`, `~ zone demo.isobar.test.: +1 -2 records`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub op: ChangeOp,
    /// To what.
    pub item: Item,
    /// For modifications, what changed (`capacity 100 -> 200`), in field order.
    pub details: Vec<String>,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Defaults => f.write_str("defaults"),
            Self::Health => f.write_str("health"),
            Self::Region(name) => write!(f, "region {name}"),
            Self::Pop(name) => write!(f, "pop {name}"),
            Self::Zone(name) => write!(f, "zone {name}"),
            Self::Service(name) => write!(f, "service {name}"),
            Self::ClientGroup(name) => write!(f, "client_group {name}"),
            Self::Httpdns => f.write_str("httpdns"),
            Self::Account(id) => write!(f, "account {id}"),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.op {
            ChangeOp::Added => '+',
            ChangeOp::Removed => '-',
            ChangeOp::Modified => '~',
        };
        write!(f, "{sign} {}", self.item)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details.join(", "))?;
        }
        Ok(())
    }
}

/// The changes that turn `old` into `new`, in section order and by name within a section.
/// Empty when the worlds are equal.
pub fn diff(old: &World, new: &World) -> Vec<Change> {
    let mut out = Vec::new();
    let d = &mut Details::default();
    d.field("ttl", &old.defaults.ttl, &new.defaults.ttl);
    d.field("answers", &old.defaults.answers, &new.defaults.answers);
    d.field(
        "location",
        &OptLocation(old.defaults.location),
        &OptLocation(new.defaults.location),
    );
    d.field(
        "cell_degrees",
        &old.defaults.cell_degrees,
        &new.defaults.cell_degrees,
    );
    d.flush(&mut out, Item::Defaults);
    let (oh, nh) = (&old.health, &new.health);
    d.field("interval_ms", &oh.interval_ms, &nh.interval_ms);
    d.field("timeout_ms", &oh.timeout_ms, &nh.timeout_ms);
    d.field("fall", &oh.fall, &nh.fall);
    d.field("rise", &oh.rise, &nh.rise);
    d.flush(&mut out, Item::Health);

    named(
        &mut out,
        &old.regions,
        &new.regions,
        |r| &r.name,
        Item::Region,
        region_details,
    );
    named(
        &mut out,
        &old.pops,
        &new.pops,
        |p| &p.name,
        Item::Pop,
        pop_details,
    );
    named(
        &mut out,
        &old.zones,
        &new.zones,
        |z| &z.name,
        Item::Zone,
        zone_details,
    );
    named(
        &mut out,
        &old.services,
        &new.services,
        |s| &s.name,
        Item::Service,
        service_details,
    );
    named(
        &mut out,
        &old.client_groups,
        &new.client_groups,
        |g| &g.name,
        Item::ClientGroup,
        group_details,
    );
    if old.httpdns != new.httpdns {
        out.push(Change {
            op: ChangeOp::Modified,
            item: Item::Httpdns,
            details: Vec::new(),
        });
    }
    named(
        &mut out,
        &old.accounts,
        &new.accounts,
        |a| &a.id,
        Item::Account,
        account_details,
    );
    out
}

/// Never shows a secret, only that it changed.
fn account_details(
    d: &mut Details,
    old: &crate::world::HttpdnsAccount,
    new: &crate::world::HttpdnsAccount,
) {
    if old.secret != new.secret {
        d.0.push("secret changed".into());
    }
    d.field(
        "unsigned_allowed",
        &old.unsigned_allowed,
        &new.unsigned_allowed,
    );
}

fn named<T: PartialEq>(
    out: &mut Vec<Change>,
    old: &[T],
    new: &[T],
    name: fn(&T) -> &String,
    item: fn(String) -> Item,
    details: fn(&mut Details, &T, &T),
) {
    let old: BTreeMap<&String, &T> = old.iter().map(|t| (name(t), t)).collect();
    let new: BTreeMap<&String, &T> = new.iter().map(|t| (name(t), t)).collect();
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).copied().collect();
    for key in names {
        let change = |op, details| Change {
            op,
            item: item(key.clone()),
            details,
        };
        match (old.get(key), new.get(key)) {
            (Some(_), None) => out.push(change(ChangeOp::Removed, Vec::new())),
            (None, Some(_)) => out.push(change(ChangeOp::Added, Vec::new())),
            (Some(o), Some(n)) if o != n => {
                let mut d = Details::default();
                details(&mut d, o, n);
                if d.0.is_empty() {
                    d.0.push("changed".into());
                }
                out.push(change(ChangeOp::Modified, d.0));
            }
            _ => {}
        }
    }
}

/// Accumulates `field old -> new` descriptions.
#[derive(Default)]
struct Details(Vec<String>);

impl Details {
    fn field<T: PartialEq + fmt::Display + ?Sized>(&mut self, name: &str, old: &T, new: &T) {
        if old != new {
            self.0.push(format!("{name} {old} -> {new}"));
        }
    }

    fn flush(&mut self, out: &mut Vec<Change>, item: Item) {
        if !self.0.is_empty() {
            out.push(Change {
                op: ChangeOp::Modified,
                item,
                details: std::mem::take(&mut self.0),
            });
        }
    }
}

fn region_details(d: &mut Details, o: &Region, n: &Region) {
    d.field("lat", &o.lat, &n.lat);
    d.field("lon", &o.lon, &n.lon);
}

fn pop_details(d: &mut Details, o: &Pop, n: &Pop) {
    d.field("region", &o.region, &n.region);
    d.field("lat", &o.lat, &n.lat);
    d.field("lon", &o.lon, &n.lon);
    d.field("capacity", &o.capacity, &n.capacity);
    d.field("replica_slots", &o.replica_slots, &n.replica_slots);
    d.field("labels", &Labels(&o.labels), &Labels(&n.labels));
    d.field(
        "failure_domain",
        &OptText(o.failure_domain.as_deref()),
        &OptText(n.failure_domain.as_deref()),
    );
}

fn zone_details(d: &mut Details, o: &Zone, n: &Zone) {
    let old: BTreeSet<&String> = o.records.iter().collect();
    let new: BTreeSet<&String> = n.records.iter().collect();
    let added = new.difference(&old).count();
    let removed = old.difference(&new).count();
    if added + removed > 0 {
        d.0.push(format!("+{added} -{removed} records"));
    }
    d.field(
        "file",
        &OptText(o.file.as_deref()),
        &OptText(n.file.as_deref()),
    );
}

fn service_details(d: &mut Details, o: &Service, n: &Service) {
    d.field("ttl", &OptNum(o.ttl), &OptNum(n.ttl));
    d.field("answers", &OptNum(o.answers), &OptNum(n.answers));
    d.field("ecs", &o.ecs, &n.ecs);
    d.field("demand", &List(&o.demand), &List(&n.demand));
    let json = |v: &dyn erased::Json| v.text();
    d.field("steering", &json(&o.steering), &json(&n.steering));
    d.field("gray", &json(&o.gray), &json(&n.gray));
    let key = |e: &Endpoint| format!("{}/{}", e.pop, e.address);
    let old: BTreeMap<String, &Endpoint> = o.endpoints.iter().map(|e| (key(e), e)).collect();
    let new: BTreeMap<String, &Endpoint> = n.endpoints.iter().map(|e| (key(e), e)).collect();
    for (k, e) in &old {
        match new.get(k) {
            None => d.0.push(format!("-endpoint {k}")),
            Some(ne) if ne != e => {
                let mut sub = Details::default();
                sub.field(
                    "check",
                    &OptText(e.check.as_deref()),
                    &OptText(ne.check.as_deref()),
                );
                sub.field(
                    "probe",
                    &OptText(e.probe.as_ref().map(probe_text).as_deref()),
                    &OptText(ne.probe.as_ref().map(probe_text).as_deref()),
                );
                sub.field("weight", &e.weight, &ne.weight);
                sub.field("labels", &Labels(&e.labels), &Labels(&ne.labels));
                sub.field(
                    "capacity",
                    &OptText(e.capacity.map(|c| c.to_string()).as_deref()),
                    &OptText(ne.capacity.map(|c| c.to_string()).as_deref()),
                );
                d.0.extend(sub.0.into_iter().map(|s| format!("endpoint {k} {s}")));
            }
            Some(_) => {}
        }
    }
    for k in new.keys().filter(|k| !old.contains_key(*k)) {
        d.0.push(format!("+endpoint {k}"));
    }
}

/// A probe spec on one line, for diff output.
fn probe_text(p: &crate::world::ProbeSpec) -> String {
    serde_json::to_string(p).unwrap_or_else(|_| format!("{p:?}"))
}

fn group_details(d: &mut Details, o: &ClientGroup, n: &ClientGroup) {
    d.field("cidrs", &List(&o.cidrs), &List(&n.cidrs));
    d.field("asns", &List(&o.asns), &List(&n.asns));
    d.field("region", &o.region, &n.region);
}

#[derive(PartialEq)]
struct OptNum(Option<u32>);

impl fmt::Display for OptNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("default"),
        }
    }
}

#[derive(PartialEq)]
struct OptText<'a>(Option<&'a str>);

impl fmt::Display for OptText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.unwrap_or("none"))
    }
}

#[derive(PartialEq)]
struct OptLocation(Option<Location>);

impl fmt::Display for OptLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(l) => write!(f, "({}, {})", l.lat, l.lon),
            None => f.write_str("none"),
        }
    }
}

#[derive(PartialEq)]
struct List<'a, T>(&'a [T]);

impl<T: fmt::Display> fmt::Display for List<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{item}")?;
        }
        f.write_str("]")
    }
}

#[derive(PartialEq)]
struct Labels<'a>(&'a BTreeMap<String, String>);

impl fmt::Display for Labels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "{{{}}}", pairs.join(", "))
    }
}

/// Compact JSON of a settings value, for `old -> new` lines.
mod erased {
    pub(super) trait Json {
        fn text(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn text(&self) -> String {
            serde_json::to_string(self).unwrap_or_else(|e| format!("<{e}>"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop(name: &str, capacity: u64) -> Pop {
        Pop {
            name: name.into(),
            region: "eu".into(),
            lat: 50.0,
            lon: 8.0,
            capacity,
            replica_slots: 4,
            labels: BTreeMap::new(),
            failure_domain: None,
        }
    }

    fn zone(records: &[&str]) -> Zone {
        Zone {
            name: "demo.isobar.test.".into(),
            file: None,
            records: records.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn equal_worlds_have_no_changes() {
        let world = World {
            pops: vec![pop("fra1", 100)],
            ..World::default()
        };
        assert!(diff(&world, &world.clone()).is_empty());
    }

    #[test]
    fn each_kind_of_change_reads_as_one_line() {
        let old = World {
            pops: vec![pop("fra1", 100), pop("ams1", 10)],
            zones: vec![zone(&["a", "b", "c"])],
            ..World::default()
        };
        let mut new = World {
            pops: vec![pop("fra1", 200), pop("lhr1", 10)],
            zones: vec![zone(&["a", "d"])],
            ..World::default()
        };
        new.defaults.ttl = 60;
        new.services.push(Service {
            name: "www.demo.isobar.test.".into(),
            ttl: None,
            answers: None,
            ecs: true,
            demand: Vec::new(),
            endpoints: Vec::new(),
            steering: Default::default(),
            gray: None,
        });
        let lines: Vec<String> = diff(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "~ defaults: ttl 30 -> 60",
                "- pop ams1",
                "~ pop fra1: capacity 100 -> 200",
                "+ pop lhr1",
                "~ zone demo.isobar.test.: +1 -2 records",
                "+ service www.demo.isobar.test.",
            ]
        );
    }

    #[test]
    fn endpoint_changes_are_named_by_pop_and_address() {
        let endpoint = |address: &str, weight| Endpoint {
            pop: "fra1".into(),
            address: address.into(),
            check: None,
            probe: None,
            weight,
            labels: BTreeMap::new(),
            capacity: None,
        };
        let service = |endpoints| Service {
            name: "www.example.com.".into(),
            ttl: Some(30),
            answers: None,
            ecs: true,
            demand: Vec::new(),
            endpoints,
            steering: Default::default(),
            gray: None,
        };
        let old = World {
            services: vec![service(vec![
                endpoint("192.0.2.1", 100),
                endpoint("192.0.2.2", 100),
            ])],
            ..World::default()
        };
        let mut new_service = service(vec![endpoint("192.0.2.1", 50), endpoint("192.0.2.3", 100)]);
        new_service.ttl = None;
        let new = World {
            services: vec![new_service],
            ..World::default()
        };
        let lines: Vec<String> = diff(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "~ service www.example.com.: ttl 30 -> default, endpoint fra1/192.0.2.1 weight 100 -> 50, \
              -endpoint fra1/192.0.2.2, +endpoint fra1/192.0.2.3"
            ]
        );
    }
}
