//! The one selection code shared by DNS and HTTPDNS: snapshot + client address in, answer out.
//!
//! Decision order for a GSLB name: the longest CIDR override whose group this service maps
//! → the ASN group (the client's AS number per the ASN database) this service maps → the
//! GeoIP cell (`cell_answers[cell]`, or the default when the map is empty) → the default
//! answer. The ECS scope returned with an answer is the prefix length of the map entry that
//! decided it (the override, the ASN network, or the GeoIP network, located or not), raised
//! when needed so that the scoped prefix holds no more specific override and, when the
//! service maps ASN groups, reaches no further than the ASN network holding the client: a
//! resolver caches the answer for the whole scoped prefix, so the scope must never cover a
//! client that would have been answered differently.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use isobar_proto::geo::cell_index;
use isobar_proto::v1::Snapshot;

use crate::asn::AsnDb;
use crate::demand::{DemandTable, service_index};
use crate::dynamic::{self, Picks};
use crate::geo::GeoDb;
use crate::gray_stats::GrayTable;
use crate::name::{NameKey, parse_absolute};
use crate::snapshot::{Answer, Service, ServingSnapshot, SnapshotError};
use isobar_proto::hash::{client_key_addr, client_key_bits};

/// An EDNS Client Subnet as received (RFC 7871), already validated by the frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcsSubnet {
    /// The subnet address, zero beyond `source_prefix`.
    pub addr: IpAddr,
    /// SOURCE PREFIX-LENGTH. 0 means the resolver asks us not to steer on its clients.
    pub source_prefix: u8,
}

/// Who is asking: the transport peer and, when the query carried one, its ECS subnet.
///
/// Both are kept because a service with `use_ecs = false` steers on the peer even when
/// the query carries ECS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientKey {
    /// The UDP/TCP source address (or the HTTPDNS client address).
    pub source: IpAddr,
    /// The ECS option of the query, if any.
    pub subnet: Option<EcsSubnet>,
    /// A device identity's hash (`isobar_proto::hash::client_key_device`), given by
    /// HTTPDNS clients. When present it replaces the address as the consistent-hashing and
    /// gray-cohort key, so a device keeps its node and its arm across networks.
    pub device: Option<u64>,
}

impl ClientKey {
    /// A client known only by its address.
    pub fn from_addr(source: IpAddr) -> Self {
        Self {
            source,
            subnet: None,
            device: None,
        }
    }
}

/// What decided an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A CIDR override group (its index among the snapshot's override groups).
    Override(u32),
    /// An ASN client group (its index among the snapshot's override groups, which it shares
    /// with the CIDR groups).
    Asn(u32),
    /// The GeoIP location's grid cell.
    GeoCell(u32),
    /// The default answer (location unknown, no GeoIP database, or no per-cell map).
    Default,
}

/// The answer for one client and one GSLB name, composed for that client.
#[derive(Debug, Clone)]
pub struct ServiceAnswer {
    ipv4: Vec<Ipv4Addr>,
    ipv6: Vec<Ipv6Addr>,
    pops: Vec<String>,
    ttl: u32,
    scope_prefix: u8,
    decision: Decision,
    canary: bool,
}

impl ServiceAnswer {
    /// IPv4 addresses, primary first.
    pub fn ipv4(&self) -> &[Ipv4Addr] {
        &self.ipv4
    }

    /// IPv6 addresses, primary first.
    pub fn ipv6(&self) -> &[Ipv6Addr] {
        &self.ipv6
    }

    /// The PoPs the addresses come from, primary first.
    pub fn pops(&self) -> &[String] {
        &self.pops
    }

    /// Service TTL, seconds.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// ECS SCOPE PREFIX-LENGTH to return (RFC 7871 §7.2.1).
    pub fn scope_prefix(&self) -> u8 {
        self.scope_prefix
    }

    /// What decided the answer.
    pub fn decision(&self) -> Decision {
        self.decision
    }

    /// Whether the client is in the service's gray (canary) arm.
    pub fn canary(&self) -> bool {
        self.canary
    }
}

/// One query's choice: the arm's map, the answer index in it, and the client key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chosen<'s> {
    /// The map answered from: the service's, or its canary arm's.
    pub(crate) arm: &'s Service,
    pub(crate) index: u32,
    pub(crate) decision: Decision,
    pub(crate) scope: u8,
    pub(crate) key: u64,
    pub(crate) canary: bool,
}

impl<'s> Chosen<'s> {
    pub(crate) fn answer(&self) -> &'s Answer {
        &self.arm.answers[self.index as usize]
    }

    /// The nodes of a dynamic answer for one family; `None` for a static answer.
    pub(crate) fn picks(&self, v6: bool) -> Option<Picks> {
        let answer = self.answer();
        if answer.routes.is_empty() {
            return None;
        }
        let route = answer.routes.route(self.key);
        Some(dynamic::pick(
            &self.arm.sites,
            route,
            v6,
            self.key,
            self.arm.answer_count,
        ))
    }
}

/// Holds the served snapshot and the GeoIP and ASN databases; shared by every frontend.
pub struct Engine {
    geo: Option<Arc<GeoDb>>,
    asn: Option<Arc<AsnDb>>,
    current: ArcSwap<ServingSnapshot>,
    /// Serializes installs so two racing pushes cannot install out of order. Never taken on
    /// the query path, which only loads `current`.
    install: Mutex<()>,
    /// Query counters for the served snapshot (same version), drained by the demand reporter.
    demand: ArcSwap<DemandTable>,
    /// Queries per gray arm, for the realized-split metric.
    gray: ArcSwap<GrayTable>,
}

impl Engine {
    /// An engine with no snapshot yet (version 0), using `geo` to locate clients.
    pub fn new(geo: Option<Arc<GeoDb>>) -> Arc<Self> {
        Self::with_asn(geo, None)
    }

    /// An engine with no snapshot yet, using `geo` to locate clients and `asn` to match
    /// them to ASN client groups (which never match without it).
    pub fn with_asn(geo: Option<Arc<GeoDb>>, asn: Option<Arc<AsnDb>>) -> Arc<Self> {
        Arc::new(Self {
            geo,
            asn,
            current: ArcSwap::from_pointee(ServingSnapshot::empty()),
            install: Mutex::new(()),
            demand: ArcSwap::from_pointee(DemandTable::default()),
            gray: ArcSwap::from_pointee(GrayTable::default()),
        })
    }

    /// Validates and installs `snapshot` if it is newer than the one served, atomically for
    /// readers. Returns the version served afterwards. An invalid snapshot changes nothing.
    pub fn install(&self, snapshot: &Snapshot) -> Result<u64, SnapshotError> {
        if snapshot.version == 0 {
            return Err(SnapshotError::ZeroVersion);
        }
        // A poisoned lock only means another install panicked; the guarded state is `()`.
        let _guard = self.install.lock().unwrap_or_else(|p| p.into_inner());
        let served = self.current.load().version();
        if snapshot.version <= served {
            return Ok(served);
        }
        let built = ServingSnapshot::from_proto(snapshot)?;
        let table = Arc::new(DemandTable::for_snapshot(&built));
        let old = self.demand.swap(Arc::clone(&table));
        let gray = Arc::new(GrayTable::for_snapshot(&built, &self.gray.load()));
        self.gray.store(gray);
        self.current.store(Arc::new(built));
        // Queries still on the old snapshot now miss the version check and go uncounted;
        // what the old table holds moves over.
        table.carry_from(&old);
        Ok(snapshot.version)
    }

    /// The version served (0 = none yet).
    pub fn version(&self) -> u64 {
        self.current.load().version()
    }

    /// The snapshot served now. Hold it for the whole of one query so every lookup of that
    /// query sees the same version.
    pub fn current(&self) -> Arc<ServingSnapshot> {
        self.current.load_full()
    }

    /// Moves the query counts gathered since the last call into `into`, keyed by
    /// (service, client group label).
    pub fn drain_demand(&self, into: &mut std::collections::BTreeMap<(String, String), u64>) {
        self.demand.load().drain(into);
    }

    /// The realized split of every gray rule served: (service, rule, baseline queries,
    /// canary queries), counted since the rule first appeared.
    pub fn gray_split(&self) -> Vec<(String, String, u64, u64)> {
        self.gray.load().split()
    }

    /// The realized gray splits in the Prometheus text format: queries per arm and the
    /// canary's realized share, per (service, rule).
    pub fn render_gray_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let split = self.gray_split();
        if split.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "# HELP isobar_gray_queries_total Queries answered per gray arm.\n\
             # TYPE isobar_gray_queries_total counter\n",
        );
        for (service, rule, baseline, canary) in &split {
            for (arm, n) in [("baseline", baseline), ("canary", canary)] {
                let _ = writeln!(
                    out,
                    "isobar_gray_queries_total{{service=\"{service}\",rule=\"{rule}\",arm=\"{arm}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP isobar_gray_canary_share Realized share of queries in the canary arm.\n\
             # TYPE isobar_gray_canary_share gauge\n",
        );
        for (service, rule, baseline, canary) in &split {
            let total = baseline + canary;
            let share = if total == 0 {
                0.0
            } else {
                *canary as f64 / total as f64
            };
            let _ = writeln!(
                out,
                "isobar_gray_canary_share{{service=\"{service}\",rule=\"{rule}\"}} {share}"
            );
        }
        out
    }

    /// The GeoIP database, if one was given.
    pub fn geo(&self) -> Option<&GeoDb> {
        self.geo.as_deref()
    }

    /// The ASN database, if one was given.
    pub fn asn(&self) -> Option<&AsnDb> {
        self.asn.as_deref()
    }

    /// The ASN group of `addr` in `snapshot` (group index, ASN network prefix length), when
    /// the ASN database knows its AS number and a group lists it.
    pub(crate) fn asn_group(&self, snapshot: &ServingSnapshot, addr: IpAddr) -> Option<(u32, u8)> {
        let found = self.asn()?.lookup(addr);
        Some((snapshot.asn_group(found.asn?)?, found.prefix_len))
    }

    /// Answers the GSLB name `name` (any case, trailing dot optional) for `client`, or
    /// `None` when `name` is not a GSLB name of the served snapshot.
    pub fn resolve_service(&self, name: &str, client: ClientKey) -> Option<ServiceAnswer> {
        let snapshot = self.current();
        let key = NameKey::new(&parse_absolute(name)?)?;
        let service = snapshot.find_service(&key)?;
        Some(self.select(&snapshot, service, client))
    }

    /// Picks `service`'s answer for `client` in `snapshot` (which must hold `service`) and
    /// composes its addresses.
    pub(crate) fn select(
        &self,
        snapshot: &ServingSnapshot,
        service: &Service,
        client: ClientKey,
    ) -> ServiceAnswer {
        let chosen = self.choose(snapshot, service, client);
        let answer = chosen.answer();
        let (ipv4, ipv6, pops) = match (chosen.picks(false), chosen.picks(true)) {
            (Some(v4), Some(v6)) => {
                let sites = &chosen.arm.sites;
                let mut pops: Vec<String> = Vec::new();
                for &(s, _) in v4.as_slice().iter().chain(v6.as_slice()) {
                    let pop = sites[s as usize].pop();
                    if !pops.iter().any(|p| p == pop) {
                        pops.push(pop.to_owned());
                    }
                }
                (dynamic::v4_of(sites, &v4), dynamic::v6_of(sites, &v6), pops)
            }
            _ => (
                answer.ipv4().to_vec(),
                answer.ipv6().to_vec(),
                answer.pops().to_vec(),
            ),
        };
        ServiceAnswer {
            ipv4,
            ipv6,
            pops,
            ttl: service.ttl(),
            scope_prefix: chosen.scope,
            decision: chosen.decision,
            canary: chosen.canary,
        }
    }

    /// Picks `service`'s answer for `client`: the arm (baseline or canary), the answer index,
    /// what decided it, the ECS scope and the client key that picks nodes. Borrowing from the
    /// snapshot keeps the DNS path free of allocation and reference-count traffic.
    pub(crate) fn choose<'s>(
        &self,
        snapshot: &'s ServingSnapshot,
        service: &'s Service,
        client: ClientKey,
    ) -> Chosen<'s> {
        // RFC 7871 §7.1.2: SOURCE PREFIX-LENGTH 0 opts out of tailoring; the answer then
        // follows the resolver's own address and is valid for all its clients (scope 0).
        let (addr, source_prefix, scoped) = match client.subnet {
            Some(s) if service.use_ecs() && s.source_prefix > 0 => (s.addr, s.source_prefix, true),
            Some(_) => (client.source.to_canonical(), 128, false),
            None => (client.source.to_canonical(), 128, true),
        };
        // The consistent-hashing and gray key: the device when known, else the client's
        // subnet (its first 24 / 56 bits at most, so one resolver-side subnet is one key).
        let key_bits = client_key_bits(&addr, source_prefix);
        let key = client
            .device
            .unwrap_or_else(|| client_key_addr(addr, key_bits));
        let mut keyed = false;
        let mut floor = 0;

        let (arm, canary) = match &service.gray {
            Some(gray) => {
                let (rule, canary_arm) = &**gray;
                let country = if rule.needs_country() {
                    self.geo().and_then(|g| g.country(addr))
                } else {
                    None
                };
                keyed |= rule.keyed();
                floor = rule.scope_floor(addr, key_bits);
                if rule.canary(key, addr, client.device, country) {
                    (canary_arm, true)
                } else {
                    (service, false)
                }
            }
            None => (service, false),
        };

        let matched = snapshot.overrides().lookup(addr);
        let group_answer = matched.longest.and_then(|(group, len)| {
            let index = arm.group_answers.get(group as usize).copied().flatten()?;
            Some((index, group, len))
        });

        // ASN groups, after CIDR overrides. A client of another AS gets an answer that holds
        // only inside its ASN network: a wider scope could reach into an ASN group's.
        let mut asn_floor = 0;
        let asn_answer = match (&self.asn, group_answer) {
            (Some(db), None) if arm.asn_mapped => {
                let found = db.lookup(addr);
                let hit = found
                    .asn
                    .and_then(|asn| snapshot.asn_group(asn))
                    .and_then(|group| {
                        let index = arm.group_answers.get(group as usize).copied().flatten()?;
                        Some((index, group, found.prefix_len))
                    });
                if hit.is_none() {
                    asn_floor = found.prefix_len;
                }
                hit
            }
            _ => None,
        };

        let (index, decision, prefix) = if let Some((index, group, len)) = group_answer {
            (index, Decision::Override(group), len)
        } else if let Some((index, group, len)) = asn_answer {
            (index, Decision::Asn(group), len)
        } else if arm.cell_answers.is_empty() {
            // One answer for every location: no need to locate, and the answer is valid for
            // every address outside the overrides.
            (arm.default_answer, Decision::Default, 0)
        } else if let Some(geo) = self.geo() {
            let found = geo.locate(addr);
            match found.location {
                Some((lat, lon)) => {
                    let cell = cell_index(snapshot.cell_degrees(), lat, lon);
                    // Validation made the map exactly one entry per cell of this grid.
                    let index = arm.cell_answers.get(cell as usize).copied();
                    let index = index.unwrap_or(arm.default_answer);
                    (index, Decision::GeoCell(cell), found.prefix_len)
                }
                None => (arm.default_answer, Decision::Default, found.prefix_len),
            }
        } else {
            (arm.default_answer, Decision::Default, 0)
        };
        keyed |= arm.answers[index as usize].routes.keyed();
        if keyed && client.device.is_none() {
            floor = floor.max(key_bits);
        }

        let scope = if scoped {
            prefix.max(matched.floor).max(floor).max(asn_floor)
        } else {
            0
        };
        let demand = self.demand.load();
        if demand.version() == snapshot.version()
            && let Some(i) = service_index(snapshot, service)
        {
            demand.record(i, decision);
            if service.gray.is_some() {
                let gray = self.gray.load();
                if gray.version() == snapshot.version() {
                    gray.record(i, canary);
                }
            }
        }
        Chosen {
            arm,
            index,
            decision,
            scope,
            key,
            canary,
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("geo", &self.geo)
            .field("asn", &self.asn)
            .field("version", &self.version())
            .finish()
    }
}
