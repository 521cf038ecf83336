//! The one selection code shared by DNS and HTTPDNS: snapshot + client address in, answer out.
//!
//! Decision order for a GSLB name: the longest CIDR override whose group this service maps
//! → the GeoIP cell (`cell_answers[cell]`, or the default when the map is empty) → the
//! default answer. The ECS scope returned with an answer is the prefix length of the map
//! entry that decided it (the override, or the GeoIP network, located or not), raised when
//! needed so that the scoped prefix holds no more specific override: a resolver caches the
//! answer for the whole scoped prefix, so the scope must never cover a client that would
//! have been answered differently.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use isobar_proto::geo::cell_index;
use isobar_proto::v1::Snapshot;

use crate::demand::{DemandTable, service_index};
use crate::geo::GeoDb;
use crate::name::{NameKey, parse_absolute};
use crate::snapshot::{Answer, Service, ServingSnapshot, SnapshotError};

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
}

impl ClientKey {
    /// A client known only by its address.
    pub fn from_addr(source: IpAddr) -> Self {
        Self {
            source,
            subnet: None,
        }
    }
}

/// What decided an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A CIDR override group (its index among the snapshot's override groups).
    Override(u32),
    /// The GeoIP location's grid cell.
    GeoCell(u32),
    /// The default answer (location unknown, no GeoIP database, or no per-cell map).
    Default,
}

/// The answer for one client and one GSLB name.
#[derive(Debug, Clone)]
pub struct ServiceAnswer {
    answer: Arc<Answer>,
    ttl: u32,
    scope_prefix: u8,
    decision: Decision,
}

impl ServiceAnswer {
    /// IPv4 addresses, primary first.
    pub fn ipv4(&self) -> &[Ipv4Addr] {
        self.answer.ipv4()
    }

    /// IPv6 addresses, primary first.
    pub fn ipv6(&self) -> &[Ipv6Addr] {
        self.answer.ipv6()
    }

    /// The answer with its PoPs and prebuilt records.
    pub fn answer(&self) -> &Answer {
        &self.answer
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
}

/// Holds the served snapshot and the GeoIP database; shared by every frontend.
pub struct Engine {
    geo: Option<Arc<GeoDb>>,
    current: ArcSwap<ServingSnapshot>,
    /// Serializes installs so two racing pushes cannot install out of order. Never taken on
    /// the query path, which only loads `current`.
    install: Mutex<()>,
    /// Query counters for the served snapshot (same version), drained by the demand reporter.
    demand: ArcSwap<DemandTable>,
}

impl Engine {
    /// An engine with no snapshot yet (version 0), using `geo` to locate clients.
    pub fn new(geo: Option<Arc<GeoDb>>) -> Arc<Self> {
        Arc::new(Self {
            geo,
            current: ArcSwap::from_pointee(ServingSnapshot::empty()),
            install: Mutex::new(()),
            demand: ArcSwap::from_pointee(DemandTable::default()),
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

    /// The GeoIP database, if one was given.
    pub fn geo(&self) -> Option<&GeoDb> {
        self.geo.as_deref()
    }

    /// Answers the GSLB name `name` (any case, trailing dot optional) for `client`, or
    /// `None` when `name` is not a GSLB name of the served snapshot.
    pub fn resolve_service(&self, name: &str, client: ClientKey) -> Option<ServiceAnswer> {
        let snapshot = self.current();
        let key = NameKey::new(&parse_absolute(name)?)?;
        let service = snapshot.find_service(&key)?;
        Some(self.select(&snapshot, service, client))
    }

    /// Picks `service`'s answer for `client` in `snapshot` (which must hold `service`).
    pub(crate) fn select(
        &self,
        snapshot: &ServingSnapshot,
        service: &Service,
        client: ClientKey,
    ) -> ServiceAnswer {
        let (index, decision, scope_prefix) = self.choose(snapshot, service, client);
        ServiceAnswer {
            answer: Arc::clone(&service.answers[index as usize]),
            ttl: service.ttl(),
            scope_prefix,
            decision,
        }
    }

    /// Picks the index of `service`'s answer for `client`, what decided it, and the ECS
    /// scope. Borrowing the answer from the snapshot by index keeps the DNS path free of
    /// reference-count traffic.
    pub(crate) fn choose(
        &self,
        snapshot: &ServingSnapshot,
        service: &Service,
        client: ClientKey,
    ) -> (u32, Decision, u8) {
        // RFC 7871 §7.1.2: SOURCE PREFIX-LENGTH 0 opts out of tailoring; the answer then
        // follows the resolver's own address and is valid for all its clients (scope 0).
        let (addr, scoped) = match client.subnet {
            Some(s) if service.use_ecs() && s.source_prefix > 0 => (s.addr, true),
            Some(_) => (client.source.to_canonical(), false),
            None => (client.source.to_canonical(), true),
        };
        let matched = snapshot.overrides().lookup(addr);
        let group_answer = matched.longest.and_then(|(group, len)| {
            let index = service
                .group_answers
                .get(group as usize)
                .copied()
                .flatten()?;
            Some((index, group, len))
        });

        let (index, decision, prefix) = if let Some((index, group, len)) = group_answer {
            (index, Decision::Override(group), len)
        } else if service.cell_answers.is_empty() {
            // One answer for every location: no need to locate, and the answer is valid for
            // every address outside the overrides.
            (service.default_answer, Decision::Default, 0)
        } else if let Some(geo) = self.geo() {
            let found = geo.locate(addr);
            match found.location {
                Some((lat, lon)) => {
                    let cell = cell_index(snapshot.cell_degrees(), lat, lon);
                    // Validation made the map exactly one entry per cell of this grid.
                    let index = service.cell_answers.get(cell as usize).copied();
                    let index = index.unwrap_or(service.default_answer);
                    (index, Decision::GeoCell(cell), found.prefix_len)
                }
                None => (service.default_answer, Decision::Default, found.prefix_len),
            }
        } else {
            (service.default_answer, Decision::Default, 0)
        };

        let scope_prefix = if scoped { prefix.max(matched.floor) } else { 0 };
        let demand = self.demand.load();
        if demand.version() == snapshot.version()
            && let Some(i) = service_index(snapshot, service)
        {
            demand.record(i, decision);
        }
        (index, decision, scope_prefix)
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("geo", &self.geo)
            .field("version", &self.version())
            .finish()
    }
}
