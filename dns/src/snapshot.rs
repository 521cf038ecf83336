//! The validated, indexed form of a pushed `Snapshot` that every query is answered from.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;
use isobar_proto::geo::cell_count;
use isobar_proto::v1::{AnswerSet, HttpdnsAccount, HttpdnsSettings, ServiceMap, Snapshot};

use crate::cidr::{CidrConflict, Overrides};
use crate::dynamic::{Gray, MAX_ANSWER_COUNT, Routes, Site};
use crate::name::{FastMap, NameKey, parse_absolute};
use crate::wire::WireRecord;
use crate::zone::Zone;

/// Largest TTL a resolver must honour (RFC 2181 §8).
const MAX_TTL: u32 = i32::MAX as u32;

/// Why a snapshot cannot be served. The frontend keeps serving the previous one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    /// Version 0 means "none" on the wire and cannot be installed.
    #[error("snapshot version 0 is reserved for \"no snapshot\"")]
    ZeroVersion,
    /// The geographic grid is unusable.
    #[error("grid: {0}")]
    Grid(String),
    /// A zone is malformed.
    #[error("zone {zone}: {message}")]
    Zone {
        /// The zone origin as sent.
        zone: String,
        /// What is wrong.
        message: String,
    },
    /// A GSLB service map is malformed.
    #[error("service {service}: {message}")]
    Service {
        /// The service name as sent.
        service: String,
        /// What is wrong.
        message: String,
    },
    /// A client group's CIDR or AS number is malformed.
    #[error("override group {group}: {message}")]
    Override {
        /// The group name.
        group: String,
        /// What is wrong.
        message: String,
    },
}

/// One answer of a service: addresses in order (primary first), parsed once.
#[derive(Debug)]
pub struct Answer {
    ipv4: Vec<Ipv4Addr>,
    ipv6: Vec<Ipv6Addr>,
    pops: Vec<String>,
    /// The same addresses as pre-encoded DNS records (owner = service name, TTL =
    /// service TTL), so a DNS response copies them instead of building records per query.
    a_wire: Vec<WireRecord>,
    aaaa_wire: Vec<WireRecord>,
    /// The dynamic form (weighted routes over the service's sites); empty for a static
    /// answer.
    pub(crate) routes: Routes,
}

impl Answer {
    /// IPv4 addresses, primary first.
    pub fn ipv4(&self) -> &[Ipv4Addr] {
        &self.ipv4
    }

    /// IPv6 addresses, primary first.
    pub fn ipv6(&self) -> &[Ipv6Addr] {
        &self.ipv6
    }

    /// The PoPs the addresses come from.
    pub fn pops(&self) -> &[String] {
        &self.pops
    }

    /// The pre-encoded A or AAAA records (empty for any other type).
    pub(crate) fn wire(&self, rtype: RecordType) -> &[WireRecord] {
        match rtype {
            RecordType::A => &self.a_wire,
            RecordType::AAAA => &self.aaaa_wire,
            _ => &[],
        }
    }
}

/// The steering map of one GSLB name, ready for selection.
#[derive(Debug)]
pub struct Service {
    name: Name,
    ttl: u32,
    use_ecs: bool,
    pub(crate) answers: Vec<Arc<Answer>>,
    /// Answer index per grid cell; empty when every cell gets the default.
    pub(crate) cell_answers: Box<[u32]>,
    /// Answer index per override group (by the snapshot's group index), if any.
    pub(crate) group_answers: Box<[Option<u32>]>,
    /// Whether some group with AS numbers has an answer here. Only then does a query need an
    /// ASN lookup, and only then must a non-ASN answer's scope stay inside the ASN network.
    pub(crate) asn_mapped: bool,
    pub(crate) default_answer: u32,
    /// Sites that dynamic answers pick nodes from.
    pub(crate) sites: Box<[Site]>,
    /// Addresses per family in a dynamic answer.
    pub(crate) answer_count: usize,
    /// The canary rule and the canary arm's map, if any.
    pub(crate) gray: Option<Box<(Gray, Service)>>,
}

impl Service {
    /// The GSLB name (lowercase, absolute).
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Answer TTL in seconds.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Whether EDNS Client Subnet is trusted for this name.
    pub fn use_ecs(&self) -> bool {
        self.use_ecs
    }

    /// The sites dynamic answers pick from.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// The name of the gray rule, if the service has one.
    pub fn gray_rule(&self) -> Option<&str> {
        self.gray.as_ref().map(|g| g.0.name.as_str())
    }
}

/// An immutable, validated snapshot with the indexes the query path needs.
#[derive(Debug)]
pub struct ServingSnapshot {
    version: u64,
    config_version: u64,
    generated_unix_ms: i64,
    cell_degrees: f64,
    zones: Vec<Zone>,
    zone_index: FastMap<Box<[u8]>, usize>,
    services: Vec<Service>,
    service_index: FastMap<Box<[u8]>, usize>,
    overrides: Overrides,
    /// AS number → override group index, for groups that list AS numbers.
    asn_groups: FastMap<u32, u32>,
    accounts: Vec<HttpdnsAccount>,
    httpdns: Option<HttpdnsSettings>,
}

impl ServingSnapshot {
    /// The state before any snapshot arrived: version 0, no zones, nothing to answer.
    pub fn empty() -> Self {
        Self {
            version: 0,
            config_version: 0,
            generated_unix_ms: 0,
            cell_degrees: isobar_proto::geo::DEFAULT_CELL_DEGREES,
            zones: Vec::new(),
            zone_index: FastMap::default(),
            services: Vec::new(),
            service_index: FastMap::default(),
            overrides: Overrides::default(),
            asn_groups: FastMap::default(),
            accounts: Vec::new(),
            httpdns: None,
        }
    }

    /// Validates `snapshot` completely and builds the query-path indexes.
    pub fn from_proto(snapshot: &Snapshot) -> Result<Self, SnapshotError> {
        if snapshot.version == 0 {
            return Err(SnapshotError::ZeroVersion);
        }
        let mut out = Self::empty();
        out.version = snapshot.version;
        out.config_version = snapshot.config_version;
        out.generated_unix_ms = snapshot.generated_unix_ms;
        // HTTPDNS data is validated where it is indexed (`crate::httpdns`).
        out.accounts = snapshot.accounts.clone();
        out.httpdns = snapshot.httpdns.clone();
        let grid = snapshot.grid.map(|g| g.cell_degrees);
        if let Some(d) = grid {
            if !(d.is_finite() && d > 0.0 && d <= 180.0) {
                return Err(SnapshotError::Grid(format!(
                    "cell_degrees {d} is not in (0, 180]"
                )));
            }
            out.cell_degrees = d;
        }

        for data in &snapshot.zones {
            let (key, zone) = Zone::build(data)?;
            if out.zone_index.insert(key, out.zones.len()).is_some() {
                return Err(SnapshotError::Zone {
                    zone: data.origin.clone(),
                    message: "listed twice".into(),
                });
            }
            out.zones.push(zone);
        }

        for entry in &snapshot.overrides {
            let err = |message: String| SnapshotError::Override {
                group: entry.group.clone(),
                message,
            };
            if entry.group.is_empty() {
                return Err(err("empty group name".into()));
            }
            let group = out.overrides.group_index(&entry.group);
            for cidr in &entry.cidrs {
                let net: IpNet = cidr
                    .parse()
                    .map_err(|_| err(format!("{cidr:?} is not a CIDR prefix")))?;
                if net.trunc() != net {
                    return Err(err(format!("{cidr} has host bits set")));
                }
                out.overrides
                    .insert(net, group)
                    .map_err(|CidrConflict::TwoGroups(other)| {
                        err(format!("{cidr} is also listed by group {other}"))
                    })?;
            }
            for &asn in &entry.asns {
                // AS 0 is never announced and AS_TRANS stands for any 4-byte AS (RFC 6793).
                if asn == 0 || asn == 23456 {
                    return Err(err(format!("AS{asn} cannot name a client group")));
                }
                if let Some(&other) = out.asn_groups.get(&asn)
                    && other != group
                {
                    let other = out.overrides.groups()[other as usize].clone();
                    return Err(err(format!("AS{asn} is also listed by group {other}")));
                }
                out.asn_groups.insert(asn, group);
            }
        }

        for map in &snapshot.services {
            out.add_service(map, grid)
                .map_err(|message| SnapshotError::Service {
                    service: map.name.clone(),
                    message,
                })?;
        }
        Ok(out)
    }

    fn add_service(&mut self, map: &ServiceMap, grid: Option<f64>) -> Result<(), String> {
        if !map.name.ends_with('.') {
            return Err("name is not absolute (no trailing dot)".into());
        }
        let name = parse_absolute(&map.name)
            .ok_or("not a valid domain name")?
            .to_lowercase();
        let key = NameKey::new(&name).ok_or("name too long")?;
        if self.service_index.contains_key(key.as_bytes()) {
            return Err("listed twice".into());
        }
        if map.ttl > MAX_TTL {
            return Err(format!("ttl {} exceeds {MAX_TTL} (RFC 2181 §8)", map.ttl));
        }
        let mut service = self.build_service(map, name.clone(), map.ttl, map.use_ecs, grid)?;
        if let Some(rule) = &map.gray {
            let gray = Gray::build(rule)?;
            let canary = rule.canary.as_ref().ok_or("gray rule has no canary map")?;
            let canary = self
                .build_service(canary, name, map.ttl, map.use_ecs, grid)
                .map_err(|e| format!("gray canary: {e}"))?;
            service.gray = Some(Box::new((gray, canary)));
        }
        let zone = self
            .find_zone_index(&key)
            .ok_or("is outside every zone of the snapshot")?;
        let index = self.services.len();
        self.zones[zone]
            .add_service(&key, index)
            .map_err(|e| format!("{e} (zone {})", self.zones[zone].origin()))?;
        self.service_index.insert(key.as_bytes().into(), index);
        self.services.push(service);
        Ok(())
    }

    /// Validates one map (a service's, or its canary arm's) into a [`Service`].
    fn build_service(
        &self,
        map: &ServiceMap,
        name: Name,
        ttl: u32,
        use_ecs: bool,
        grid: Option<f64>,
    ) -> Result<Service, String> {
        let count = map.answers.len();
        if count == 0 {
            return Err("has no answers".into());
        }
        let check = |what: &str, i: u32| {
            if (i as usize) < count {
                Ok(i)
            } else {
                Err(format!(
                    "{what} answer index {i} is out of range ({count} answers)"
                ))
            }
        };
        check("default", map.default_answer)?;
        if !map.cell_answers.is_empty() {
            let d = grid.ok_or("has cell answers but the snapshot has no grid")?;
            let cells = cell_count(d);
            if map.cell_answers.len() != cells {
                return Err(format!(
                    "{} cell answers, expected 0 or {cells} for a {d}° grid",
                    map.cell_answers.len()
                ));
            }
            for &i in &map.cell_answers {
                check("cell", i)?;
            }
        }
        // Groups without a CIDR in this snapshot can never match; they are skipped rather
        // than rejected so a group whose prefixes were all removed does not block a push.
        let mut group_answers = vec![None; self.overrides.groups().len()];
        for (group, &i) in &map.group_answers {
            check(&format!("group {group}"), i)?;
            if let Some(g) = self.overrides.find_group(group) {
                group_answers[g as usize] = Some(i);
            }
        }
        let asn_mapped = self
            .asn_groups
            .values()
            .any(|&g| group_answers[g as usize].is_some());
        let sites = map
            .sites
            .iter()
            .map(|site| Site::build(&name, ttl, site))
            .collect::<Result<Vec<_>, _>>()?;
        let answers = map
            .answers
            .iter()
            .enumerate()
            .map(|(i, set)| {
                parse_answer(&name, ttl, set, &sites).map_err(|e| format!("answer {i}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let answer_count = match map.answer_count {
            0 => 1,
            n if n as usize > MAX_ANSWER_COUNT => {
                return Err(format!("answer_count {n} exceeds {MAX_ANSWER_COUNT}"));
            }
            n => n as usize,
        };
        Ok(Service {
            name,
            ttl,
            use_ecs,
            answers,
            cell_answers: map.cell_answers.clone().into_boxed_slice(),
            group_answers: group_answers.into_boxed_slice(),
            asn_mapped,
            default_answer: map.default_answer,
            sites: sites.into_boxed_slice(),
            answer_count,
            gray: None,
        })
    }

    /// Snapshot version (0 = nothing installed yet).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The configuration version the snapshot was computed from.
    pub fn config_version(&self) -> u64 {
        self.config_version
    }

    /// When the scheduler generated it, Unix milliseconds.
    pub fn generated_unix_ms(&self) -> i64 {
        self.generated_unix_ms
    }

    /// HTTPDNS accounts, as pushed.
    pub fn accounts(&self) -> &[HttpdnsAccount] {
        &self.accounts
    }

    /// HTTPDNS settings (service IPs, rate limits), as pushed; `None` = defaults.
    pub fn httpdns(&self) -> Option<&HttpdnsSettings> {
        self.httpdns.as_ref()
    }

    /// Grid cell size in degrees.
    pub fn cell_degrees(&self) -> f64 {
        self.cell_degrees
    }

    /// Every zone served.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// Every GSLB service.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The service named `name` (any case, trailing dot optional).
    pub fn service(&self, name: &str) -> Option<&Service> {
        let key = NameKey::new(&parse_absolute(name)?)?;
        self.find_service(&key)
    }

    /// The zone that holds `name` (longest matching origin), if any.
    pub fn zone_for(&self, name: &str) -> Option<&Zone> {
        let key = NameKey::new(&parse_absolute(name)?)?;
        self.find_zone(&key)
    }

    pub(crate) fn find_service(&self, key: &NameKey) -> Option<&Service> {
        self.service_index
            .get(key.as_bytes())
            .map(|&i| &self.services[i])
    }

    pub(crate) fn service_at(&self, index: usize) -> &Service {
        &self.services[index]
    }

    pub(crate) fn find_zone(&self, key: &NameKey) -> Option<&Zone> {
        self.find_zone_index(key).map(|i| &self.zones[i])
    }

    fn find_zone_index(&self, key: &NameKey) -> Option<usize> {
        // Longest suffix first: a child zone served here wins over its parent.
        (0..=key.labels()).find_map(|skip| self.zone_index.get(key.suffix(skip)).copied())
    }

    pub(crate) fn overrides(&self) -> &Overrides {
        &self.overrides
    }

    /// The override group that lists AS number `asn`, if any.
    pub(crate) fn asn_group(&self, asn: u32) -> Option<u32> {
        self.asn_groups.get(&asn).copied()
    }

    /// Whether any client group lists AS numbers.
    pub fn has_asn_groups(&self) -> bool {
        !self.asn_groups.is_empty()
    }
}

fn parse_answer(
    owner: &Name,
    ttl: u32,
    set: &AnswerSet,
    sites: &[Site],
) -> Result<Arc<Answer>, String> {
    let ipv4 = set
        .ipv4
        .iter()
        .map(|s| {
            s.parse::<Ipv4Addr>()
                .map_err(|_| format!("{s:?} is not an IPv4 address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ipv6 = set
        .ipv6
        .iter()
        .map(|s| {
            s.parse::<Ipv6Addr>()
                .map_err(|_| format!("{s:?} is not an IPv6 address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let a: Vec<Record> = ipv4
        .iter()
        .map(|&ip| Record::from_rdata(owner.clone(), ttl, RData::A(A(ip))))
        .collect();
    let aaaa: Vec<Record> = ipv6
        .iter()
        .map(|&ip| Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(ip))))
        .collect();
    let encode = |records: &[Record]| -> Result<Vec<WireRecord>, String> {
        records.iter().map(WireRecord::new).collect()
    };
    Ok(Arc::new(Answer {
        ipv4,
        ipv6,
        pops: set.pops.clone(),
        a_wire: encode(&a)?,
        aaaa_wire: encode(&aaaa)?,
        routes: Routes::build(&set.routes, sites)?,
    }))
}
