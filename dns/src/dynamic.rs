//! Per-query answer composition: weighted routes over sites, Maglev node picks, gray arms.
//!
//! The scheduler sends, per client group, a weighted split over routes (an ordered list of
//! sites: primary PoP first, then fallbacks in other failure domains). Per query the frontend
//! hashes the client key (subnet, or device ID), picks a route by the split, then one node
//! from each site of the route through that site's Maglev table. Everything here is built once
//! per snapshot; a query only hashes and indexes, without locks or allocation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;
use isobar_proto::hash::{SPLIT_SALT, client_key_device, mix};
use isobar_proto::maglev::Maglev;
use isobar_proto::v1::{GrayRule, Route as RouteProto, Site as SiteProto};

use crate::wire::WireRecord;

/// Most addresses per family one answer carries.
pub const MAX_ANSWER_COUNT: usize = 16;

/// One family's nodes of a site, with their pre-encoded records and Maglev table.
#[derive(Debug)]
pub(crate) struct SiteFamily {
    pub(crate) addrs: Vec<IpAddr>,
    /// Nodes that may be answered: weight above 0 and not down.
    live: usize,
    pub(crate) wire: Vec<WireRecord>,
    /// The health-aware table: down nodes own no slot, and every other node keeps the slots
    /// it has with all nodes up (isobar_proto::maglev).
    table: Maglev,
}

/// One node as a site family is built from it.
struct NodeIn<'a> {
    ip: IpAddr,
    name: &'a str,
    weight: u32,
    down: bool,
}

impl SiteFamily {
    fn build(owner: &Name, ttl: u32, nodes: &[NodeIn<'_>]) -> Result<Self, String> {
        let mut wire = Vec::with_capacity(nodes.len());
        for node in nodes {
            let rdata = match node.ip {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            wire.push(WireRecord::new(&Record::from_rdata(
                owner.clone(),
                ttl,
                rdata,
            ))?);
        }
        let named: Vec<(&str, u32)> = nodes.iter().map(|n| (n.name, n.weight)).collect();
        let down: Vec<bool> = nodes.iter().map(|n| n.down).collect();
        Ok(Self {
            addrs: nodes.iter().map(|n| n.ip).collect(),
            live: nodes.iter().filter(|n| n.weight > 0 && !n.down).count(),
            wire,
            table: Maglev::with_health(&named, &down, None),
        })
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }
}

/// One PoP's nodes for one service.
#[derive(Debug)]
pub struct Site {
    pop: String,
    pub(crate) v4: SiteFamily,
    pub(crate) v6: SiteFamily,
}

impl Site {
    /// Validates and builds a site; `owner` and `ttl` are the service's. Down nodes (and
    /// nodes of weight 0, which have no share) are never picked; down nodes keep their place
    /// in the primary Maglev table, so only their own clients move while they are down.
    pub(crate) fn build(owner: &Name, ttl: u32, site: &SiteProto) -> Result<Self, String> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for node in &site.nodes {
            let ip: IpAddr = node.address.parse().map_err(|_| {
                format!("site {}: {:?} is not an IP address", site.pop, node.address)
            })?;
            let entry = NodeIn {
                ip,
                name: node.address.as_str(),
                weight: node.weight,
                down: node.down,
            };
            if ip.is_ipv4() { &mut v4 } else { &mut v6 }.push(entry);
        }
        Ok(Self {
            pop: site.pop.clone(),
            v4: SiteFamily::build(owner, ttl, &v4)?,
            v6: SiteFamily::build(owner, ttl, &v6)?,
        })
    }

    /// The PoP name.
    pub fn pop(&self) -> &str {
        &self.pop
    }

    pub(crate) fn family(&self, v6: bool) -> &SiteFamily {
        if v6 { &self.v6 } else { &self.v4 }
    }

    /// Whether the pick in this site depends on the client key.
    fn spreads(&self) -> bool {
        self.v4.live > 1 || self.v6.live > 1
    }
}

/// One weighted route of a dynamic answer.
#[derive(Debug)]
pub(crate) struct Route {
    /// Cumulative weight up to and including this route.
    upto: u64,
    pub(crate) sites: Box<[u32]>,
}

/// The dynamic part of an answer: a weighted split over routes.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    routes: Box<[Route]>,
    total: u64,
    /// Whether the chosen addresses depend on the client key (split or multi-node sites).
    keyed: bool,
}

impl Routes {
    pub(crate) fn build(routes: &[RouteProto], sites: &[Site]) -> Result<Self, String> {
        let mut out = Vec::with_capacity(routes.len());
        let mut total = 0u64;
        let mut keyed = routes.len() > 1;
        for (i, route) in routes.iter().enumerate() {
            if route.weight == 0 {
                return Err(format!("route {i} has weight 0"));
            }
            if route.sites.is_empty() {
                return Err(format!("route {i} lists no site"));
            }
            for &s in &route.sites {
                let site = sites
                    .get(s as usize)
                    .ok_or_else(|| format!("route {i}: site index {s} out of range"))?;
                keyed |= site.spreads();
            }
            total += u64::from(route.weight);
            out.push(Route {
                upto: total,
                sites: route.sites.clone().into_boxed_slice(),
            });
        }
        Ok(Self {
            routes: out.into_boxed_slice(),
            total,
            keyed,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub(crate) fn keyed(&self) -> bool {
        self.keyed
    }

    /// The route for `key`: a point in [0, total) by multiply-shift, then the first route
    /// whose cumulative weight exceeds it.
    pub(crate) fn route(&self, key: u64) -> &Route {
        let point = ((mix(key, SPLIT_SALT) >> 32) * self.total) >> 32;
        let i = self.routes.partition_point(|r| r.upto <= point);
        &self.routes[i.min(self.routes.len() - 1)]
    }
}

/// The nodes picked for one query and family: (site index, node index) in answer order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Picks {
    len: usize,
    items: [(u32, u32); MAX_ANSWER_COUNT],
}

impl Picks {
    pub(crate) fn new() -> Self {
        Self {
            len: 0,
            items: [(0, 0); MAX_ANSWER_COUNT],
        }
    }

    pub(crate) fn as_slice(&self) -> &[(u32, u32)] {
        &self.items[..self.len]
    }

    fn push(&mut self, item: (u32, u32)) {
        if self.len < MAX_ANSWER_COUNT && !self.as_slice().contains(&item) {
            self.items[self.len] = item;
            self.len += 1;
        }
    }
}

/// Picks up to `count` addresses of one family for `key` along `route`: one node per site
/// in route order (the site's Maglev pick), then, while short, further distinct nodes of
/// the sites in the same order. Down nodes own no slot of a site's table, so neither step
/// can return one.
pub(crate) fn pick(sites: &[Site], route: &Route, v6: bool, key: u64, count: usize) -> Picks {
    let count = count.min(MAX_ANSWER_COUNT);
    // The Maglev table salts the key itself (isobar_proto::maglev).
    let hashed = key;
    let mut picks = Picks::new();
    for &s in route.sites.iter() {
        if picks.len >= count {
            return picks;
        }
        let family = sites[s as usize].family(v6);
        if let Some(node) = family.table.pick(hashed) {
            picks.push((s, node));
        }
    }
    let mut more = [0u32; MAX_ANSWER_COUNT];
    for &s in route.sites.iter() {
        if picks.len >= count {
            break;
        }
        let family = sites[s as usize].family(v6);
        if family.is_empty() {
            continue;
        }
        let want = (count - picks.len + 1).min(MAX_ANSWER_COUNT);
        let got = family.table.pick_n(hashed, want, &mut more[..want]);
        for &node in &more[..got] {
            if picks.len >= count {
                break;
            }
            picks.push((s, node));
        }
    }
    picks
}

/// A gray (canary) rule as served.
#[derive(Debug)]
pub(crate) struct Gray {
    pub(crate) name: String,
    share_ppm: u32,
    salt: u64,
    cidrs: Vec<IpNet>,
    countries: Vec<[u8; 2]>,
    devices: Vec<u64>,
}

impl Gray {
    pub(crate) fn build(rule: &GrayRule) -> Result<Self, String> {
        if rule.share_ppm > 1_000_000 {
            return Err(format!("gray share {} ppm exceeds 100 %", rule.share_ppm));
        }
        let cidrs = rule
            .cohort_cidrs
            .iter()
            .map(|c| {
                c.parse::<IpNet>()
                    .map(|n| n.trunc())
                    .map_err(|_| format!("gray cohort {c:?} is not a CIDR prefix"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let countries = rule
            .cohort_countries
            .iter()
            .map(|c| match c.as_bytes() {
                [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok([*a, *b]),
                _ => Err(format!("gray cohort country {c:?} is not an ISO 3166 code")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut devices: Vec<u64> = rule
            .cohort_devices
            .iter()
            .map(|d| client_key_device(d))
            .collect();
        devices.sort_unstable();
        Ok(Self {
            name: rule.name.clone(),
            share_ppm: rule.share_ppm,
            salt: rule.salt,
            cidrs,
            countries,
            devices,
        })
    }

    /// Whether the share alone splits clients (neither 0 % nor 100 %).
    pub(crate) fn keyed(&self) -> bool {
        self.share_ppm > 0 && self.share_ppm < 1_000_000
    }

    pub(crate) fn needs_country(&self) -> bool {
        !self.countries.is_empty()
    }

    /// Whether the client is in the canary arm. `addr` is the steering address, `country`
    /// its GeoIP country (looked up only when the rule has countries).
    pub(crate) fn canary(
        &self,
        key: u64,
        addr: IpAddr,
        device: Option<u64>,
        country: Option<[u8; 2]>,
    ) -> bool {
        if let Some(d) = device
            && self.devices.binary_search(&d).is_ok()
        {
            return true;
        }
        if self.cidrs.iter().any(|n| n.contains(&addr)) {
            return true;
        }
        if let Some(c) = country
            && self.countries.contains(&c)
        {
            return true;
        }
        // The threshold only rises with the share, so a client in the arm at 5 % stays in
        // it at 20 %: the cohort only grows.
        mix(key, self.salt) % 1_000_000 < u64::from(self.share_ppm)
    }

    /// The longest cohort prefix that overlaps `addr`'s `bits`-long prefix: the ECS scope
    /// must cover it, or a resolver would cache one arm's answer for the other's clients.
    pub(crate) fn scope_floor(&self, addr: IpAddr, bits: u8) -> u8 {
        let Ok(net) = IpNet::new(addr, bits) else {
            return 0;
        };
        let net = net.trunc();
        self.cidrs
            .iter()
            .filter(|c| c.contains(&net) || net.contains(*c))
            .map(|c| c.prefix_len().max(bits))
            .max()
            .unwrap_or(0)
    }
}

/// Addresses of `picks` in `family` order, for the HTTP answers.
pub(crate) fn v4_of(sites: &[Site], picks: &Picks) -> Vec<Ipv4Addr> {
    picks
        .as_slice()
        .iter()
        .filter_map(|&(s, n)| match sites[s as usize].v4.addrs[n as usize] {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// IPv6 counterpart of [`v4_of`].
pub(crate) fn v6_of(sites: &[Site], picks: &Picks) -> Vec<Ipv6Addr> {
    picks
        .as_slice()
        .iter()
        .filter_map(|&(s, n)| match sites[s as usize].v6.addrs[n as usize] {
            IpAddr::V6(v6) => Some(v6),
            IpAddr::V4(_) => None,
        })
        .collect()
}

/// The wire record of one pick.
pub(crate) fn wire_of(sites: &[Site], pick: (u32, u32), rtype: RecordType) -> &WireRecord {
    let family = sites[pick.0 as usize].family(rtype == RecordType::AAAA);
    &family.wire[pick.1 as usize]
}
