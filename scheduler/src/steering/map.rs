//! One service's steering map: client groups → capacity-aware weighted routes over sites.
//!
//! For one arm of one service (all its endpoints, or a gray arm's) this builds the sites
//! (PoPs with serving endpoints, whose nodes frontends hash onto with Maglev), prices the
//! client groups at their near serving PoPs with the cost model through the solve's shared
//! [`Planner`] lists, assigns the groups' demand within capacity ([`super::assign`]), and
//! turns each group's weighted PoP list into routes: the primary PoP, then fallbacks from
//! other failure domains first, never an unserving PoP.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use isobar_proto::v1::{AnswerSet, Node, Route, ServiceMap, Site};
use isobar_store::world::{Endpoint, Service, World};

use super::assign::{self, Assignment, Params, Planner, PopIn, ServiceSpec, Standalone};
use super::cost::{self, ClientReports, PopSignals};

/// Route weights are sent as integers out of this.
pub const WEIGHT_SCALE: f64 = 10_000.0;

/// The client groups every service is solved for, with their locations.
#[derive(Debug, Clone)]
pub struct Groups {
    /// Labels: `cell:N` for every grid cell, then `group:NAME` per override group, then
    /// `unknown`.
    pub labels: Vec<String>,
    /// Location per group (`None` for `unknown` without a default location).
    pub locations: Vec<Option<(f64, f64)>>,
    /// Number of grid cells (the first `cells` groups).
    pub cells: usize,
    /// Override group names, in order after the cells.
    pub overrides: Vec<String>,
}

impl Groups {
    /// The groups of `world`: grid cells, override groups (at their region's centre), and
    /// `unknown` (at the default location, if any).
    pub fn of(world: &World) -> Self {
        let d = world.defaults.cell_degrees;
        let cells = isobar_proto::geo::cell_count(d);
        let mut labels = Vec::with_capacity(cells + world.client_groups.len() + 1);
        let mut locations = Vec::with_capacity(labels.capacity());
        for c in 0..cells as u32 {
            labels.push(format!("cell:{c}"));
            locations.push(Some(isobar_proto::geo::cell_center(d, c)));
        }
        let mut overrides = Vec::new();
        for group in &world.client_groups {
            if let Some(region) = world.region(&group.region) {
                labels.push(format!("group:{}", group.name));
                locations.push(Some((region.lat, region.lon)));
                overrides.push(group.name.clone());
            }
        }
        labels.push("unknown".to_owned());
        locations.push(world.defaults.location.map(|l| (l.lat, l.lon)));
        Self {
            labels,
            locations,
            cells,
            overrides,
        }
    }

    /// Index of the `unknown` group.
    pub fn unknown(&self) -> usize {
        self.labels.len() - 1
    }
}

/// What every arm of one solve shares: the candidate lists and which groups carry reports.
///
/// The planner's lists depend on the groups' locations, the latency model and the PoP
/// signals, which are the same for every service of a solve, so `solve_full` builds them
/// once; each arm then prices only its groups' near PoPs with its own weights and serving
/// set. Groups with client reports are priced at every PoP instead (a report changes the
/// cost of one (group, PoP) pair, which the shared lists do not know); there are few.
pub struct Shared<'a> {
    /// Candidate lists over the solve's groups (index = group) and `world.pops`.
    pub planner: &'a Planner,
    /// The groups whose clients reported, ascending.
    pub reported: &'a [usize],
    /// Price every group at every PoP and assign with [`assign::assign`]: the reference the
    /// planner path is tested against.
    #[cfg(test)]
    pub dense: bool,
}

/// Everything the arm solver reads besides the world.
pub struct ArmInputs<'a> {
    /// Demand per group label, queries per second (already scaled to the arm's share).
    pub demand: &'a dyn Fn(usize) -> f64,
    /// Probe loss and load per PoP name.
    pub signals: &'a BTreeMap<String, PopSignals>,
    /// The solve's shared lists; its latency model is over `world.pops` (index = PoP index
    /// in the world).
    pub shared: &'a Shared<'a>,
    /// Client reports.
    pub reports: &'a dyn ClientReports,
    /// The arm's previous assignment, for hysteresis.
    pub previous: Option<&'a Assignment>,
}

/// One PoP's part in an arm: capacity, whether it serves, and its load after assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct PopUse {
    /// PoP name.
    pub pop: String,
    /// Whether it has serving endpoints for the arm.
    pub serving: bool,
    /// Capacity for the arm, queries per second (`None` = unbounded).
    pub capacity: Option<f64>,
    /// Demand assigned, queries per second.
    pub load: f64,
}

impl PopUse {
    /// Load over capacity (0 when unbounded).
    pub fn utilisation(&self) -> f64 {
        match self.capacity {
            Some(c) if c > 0.0 => self.load / c,
            Some(_) => f64::INFINITY,
            None => 0.0,
        }
    }
}

/// An arm's solution: the map content and what explain / what-if report.
#[derive(Debug, Clone)]
pub struct ArmSolution {
    /// The map (name, ttl and use_ecs are the caller's to fill).
    pub map: ServiceMap,
    /// The assignment, for the next solve's hysteresis.
    pub assignment: Assignment,
    /// Per PoP of the world, in world order.
    pub pops: Vec<PopUse>,
}

/// The serving endpoints of `service` per PoP: (PoP index, endpoints in address order).
pub fn endpoints_by_pop<'s>(world: &World, endpoints: &[&'s Endpoint]) -> Vec<Vec<&'s Endpoint>> {
    let mut by_pop: Vec<Vec<&Endpoint>> = vec![Vec::new(); world.pops.len()];
    let index: HashMap<&str, usize> = world
        .pops
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    for endpoint in endpoints {
        if let Some(&i) = index.get(endpoint.pop.as_str()) {
            by_pop[i].push(endpoint);
        }
    }
    for list in &mut by_pop {
        list.sort_by(|a, b| a.address.cmp(&b.address));
    }
    by_pop
}

/// Capacity of one PoP for one service: the sum of its serving endpoints' capacities when
/// any endpoint there declares one (reported ready replicas carry the service's
/// `replica_capacity`), else the PoP's own capacity, else unbounded.
pub fn capacity(
    world: &World,
    pop: usize,
    all: &[&Endpoint],
    serving: &[&Endpoint],
) -> Option<f64> {
    if all.iter().any(|e| e.capacity.is_some()) {
        return Some(serving.iter().filter_map(|e| e.capacity).sum());
    }
    let declared = world.pops[pop].capacity;
    (declared > 0).then_some(declared as f64)
}

/// Solves one arm: `all[p]` are the arm's endpoints in PoP `p`, `serving[p]` those that may
/// take traffic (healthy, not drained).
pub fn solve_arm(
    world: &World,
    service: &Service,
    groups: &Groups,
    all: &[Vec<&Endpoint>],
    serving: &[Vec<&Endpoint>],
    inputs: &ArmInputs<'_>,
) -> ArmSolution {
    let steering = &service.steering;
    let weights = cost::CostWeights {
        rtt: steering.cost.rtt,
        loss: steering.cost.loss,
        load: steering.cost.load,
    };
    let signals: Vec<PopSignals> = world
        .pops
        .iter()
        .map(|p| inputs.signals.get(&p.name).copied().unwrap_or_default())
        .collect();
    let pops_in: Vec<PopIn<'_>> = world
        .pops
        .iter()
        .enumerate()
        .map(|(i, p)| PopIn {
            name: &p.name,
            location: (p.lat, p.lon),
            failure_domain: p.failure_domain.as_deref().unwrap_or(&p.name),
            capacity: capacity(world, i, &all[i], &serving[i]),
            serving: !serving[i].is_empty(),
        })
        .collect();
    let params = Params {
        headroom: steering.headroom,
        hysteresis: steering.hysteresis,
        ..Params::default()
    };
    let pricing = Pricing::new(groups, &pops_in, &signals, &weights, params, inputs);
    let assignment = pricing.assign(groups, &pops_in, &params, inputs.previous);

    // Sites: every serving PoP, in world order. A site lists all the arm's endpoints in the
    // PoP at their configured weights, the unserving ones marked down: the frontends' primary
    // Maglev table then never changes on a health event, and only the keys of the nodes that
    // went down (or came back) move (isobar_proto::maglev).
    let mut sites = Vec::new();
    let mut site_of = vec![u32::MAX; world.pops.len()];
    let mut families = Vec::new();
    for (i, endpoints) in serving.iter().enumerate() {
        if endpoints.is_empty() {
            continue;
        }
        site_of[i] = sites.len() as u32;
        let serves = |e: &Endpoint| endpoints.iter().any(|s| std::ptr::eq(*s, e));
        let nodes: Vec<Node> = all[i]
            .iter()
            .filter(|e| e.address.parse::<IpAddr>().is_ok())
            .map(|e| Node {
                address: e.address.clone(),
                weight: e.weight.max(1),
                down: !serves(e),
            })
            .collect();
        let has = |v6: bool| {
            nodes.iter().any(|n| {
                !n.down
                    && n.address
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| ip.is_ipv6() == v6)
            })
        };
        families.push((has(false), has(true)));
        sites.push(Site {
            pop: world.pops[i].name.clone(),
            nodes,
        });
    }

    let count = service.answers(&world.defaults) as usize;
    let mut table = AnswerTable::default();
    let mut answer_of = Vec::with_capacity(groups.labels.len());
    for (g, split) in assignment.groups.iter().enumerate() {
        let routes: Vec<Route> = split
            .iter()
            .filter_map(|&(pop, weight)| {
                let units = (weight * WEIGHT_SCALE).round() as u32;
                (units > 0).then(|| Route {
                    weight: units,
                    sites: route_sites(&pricing, &pops_in, &site_of, &families, g, pop, count),
                })
            })
            .collect();
        let pops = routes
            .iter()
            .max_by_key(|r| r.weight)
            .map(|r| {
                r.sites
                    .iter()
                    .map(|&s| sites[s as usize].pop.clone())
                    .collect()
            })
            .unwrap_or_default();
        answer_of.push(table.intern(AnswerSet {
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            pops,
            routes,
        }));
    }

    let default_answer = answer_of[groups.unknown()];
    let mut cell_answers = answer_of[..groups.cells].to_vec();
    if cell_answers.iter().all(|&a| a == default_answer) {
        cell_answers.clear();
    }
    let group_answers = groups
        .overrides
        .iter()
        .enumerate()
        .map(|(i, name)| (name.clone(), answer_of[groups.cells + i]))
        .collect();
    let pops = pops_in
        .iter()
        .zip(&assignment.load)
        .map(|(p, &load)| PopUse {
            pop: p.name.to_owned(),
            serving: p.serving,
            capacity: p.capacity,
            load,
        })
        .collect();
    ArmSolution {
        map: ServiceMap {
            answers: table.sets,
            cell_answers,
            group_answers,
            default_answer,
            sites,
            answer_count: count as u32,
            ..ServiceMap::default()
        },
        assignment,
        pops,
    }
}

/// The sites of a route of group `g` with primary `primary`: the primary, then fallback
/// PoPs (another failure domain first, then by the group's cost) as long as a family still
/// lacks `count` sites offering it, so every family the service has gets fallbacks.
fn route_sites(
    pricing: &Pricing<'_>,
    pops: &[PopIn<'_>],
    site_of: &[u32],
    families: &[(bool, bool)],
    g: usize,
    primary: u32,
    count: usize,
) -> Vec<u32> {
    let first = site_of[primary as usize];
    let mut sites = vec![first];
    let (mut v4, mut v6) = (
        usize::from(families[first as usize].0),
        usize::from(families[first as usize].1),
    );
    let offered = |v6: bool| {
        families
            .iter()
            .filter(|f| if v6 { f.1 } else { f.0 })
            .count()
    };
    let (want4, want6) = (count.min(offered(false)), count.min(offered(true)));
    if v4 >= want4 && v6 >= want6 {
        return sites;
    }
    pricing.fallbacks(pops, g, primary, count, &mut |p| {
        let site = site_of[p as usize];
        let (has4, has6) = families[site as usize];
        if (has4 && v4 < want4) || (has6 && v6 < want6) {
            sites.push(site);
            v4 += usize::from(has4);
            v6 += usize::from(has6);
        }
        v4 < want4 || v6 < want6
    });
    sites
}

/// Where an arm's costs come from.
enum Pricing<'a> {
    /// The solve's planner: each group priced at its near PoPs (every PoP for reported
    /// groups), with failure domains interned for the fallback order.
    Planner {
        arm: Box<Standalone<'a>>,
        /// Per PoP: its failure domain's index.
        domain: Vec<usize>,
        /// Per failure domain: its serving PoPs.
        serving_in: Vec<usize>,
        /// Serving PoPs in all.
        serving: usize,
    },
    /// Every group priced at every PoP (the reference the planner path must match).
    #[cfg(test)]
    Dense {
        /// Per group, the cost at every PoP.
        rows: Vec<Vec<f64>>,
        /// Per group, its demand.
        demand: Vec<f64>,
    },
}

impl<'a> Pricing<'a> {
    fn new(
        groups: &Groups,
        pops: &[PopIn<'_>],
        signals: &[PopSignals],
        weights: &cost::CostWeights,
        params: Params,
        inputs: &ArmInputs<'a>,
    ) -> Self {
        let shared = inputs.shared;
        let latency = shared.planner.latency();
        let row = |g: usize| {
            cost::group_costs(
                latency,
                &groups.labels[g],
                groups.locations[g],
                signals,
                weights,
                inputs.reports,
            )
        };
        #[cfg(test)]
        if shared.dense {
            return Self::Dense {
                rows: (0..groups.labels.len()).map(row).collect(),
                demand: (0..groups.labels.len()).map(inputs.demand).collect(),
            };
        }
        let spec = ServiceSpec {
            deployed: pops.iter().map(|p| p.serving).collect(),
            capacity: pops.iter().map(|p| p.capacity).collect(),
            weights: *weights,
            demand: (0..groups.labels.len())
                .map(|g| (g as u32, (inputs.demand)(g)))
                .filter(|&(_, d)| assign::clean_demand(d) > 0.0)
                .collect(),
            exact: shared
                .reported
                .iter()
                .map(|&g| (g as u32, row(g)))
                .collect(),
            params: Some(params),
        };
        let mut names: Vec<&str> = Vec::new();
        let domain: Vec<usize> = pops
            .iter()
            .map(|p| {
                names
                    .iter()
                    .position(|&d| d == p.failure_domain)
                    .unwrap_or_else(|| {
                        names.push(p.failure_domain);
                        names.len() - 1
                    })
            })
            .collect();
        let mut serving_in = vec![0; names.len()];
        for (p, &d) in pops.iter().zip(&domain) {
            serving_in[d] += usize::from(p.serving);
        }
        Self::Planner {
            arm: Box::new(shared.planner.standalone(spec)),
            domain,
            serving_in,
            serving: pops.iter().filter(|p| p.serving).count(),
        }
    }

    #[cfg_attr(not(test), allow(unused_variables))]
    fn assign(
        &self,
        groups: &Groups,
        pops: &[PopIn<'_>],
        params: &Params,
        previous: Option<&Assignment>,
    ) -> Assignment {
        match self {
            Self::Planner { arm, .. } => arm.assign(previous),
            #[cfg(test)]
            Self::Dense { rows, demand } => {
                let group_in: Vec<assign::GroupIn<'_>> = (0..rows.len())
                    .map(|g| assign::GroupIn {
                        label: &groups.labels[g],
                        location: groups.locations[g],
                        demand: demand[g],
                    })
                    .collect();
                assign::assign(&group_in, pops, &|g, p| rows[g][p], params, previous)
            }
        }
    }

    /// Calls `visit` with the fallback PoPs of group `g` for primary `primary` in the order
    /// of [`assign::fallbacks`] (serving PoPs in another failure domain, then in the same,
    /// each by cost then index) until it returns false. The planner path reads them from the
    /// group's cheapest PoPs, widening the list only when a family needs PoPs further away.
    #[cfg_attr(not(test), allow(unused_variables))]
    fn fallbacks(
        &self,
        pops: &[PopIn<'_>],
        g: usize,
        primary: u32,
        count: usize,
        visit: &mut dyn FnMut(u32) -> bool,
    ) {
        match self {
            Self::Planner {
                arm,
                domain,
                serving_in,
                serving,
            } => {
                let home = domain[primary as usize];
                let mut k = (2 * count + 2).min(*serving);
                let mut list = arm.cheapest(g as u32, k);
                // Other domains first, then the primary's, each a filtered prefix of the
                // group's cheapest PoPs.
                let phases = [
                    (false, serving - serving_in[home]),
                    (true, serving_in[home].saturating_sub(1)),
                ];
                for (same, total) in phases {
                    let mut done = 0;
                    while done < total {
                        let mut seen = 0;
                        for &(p, _) in &list {
                            if p == primary || (domain[p as usize] == home) != same {
                                continue;
                            }
                            seen += 1;
                            if seen > done {
                                done += 1;
                                if !visit(p) {
                                    return;
                                }
                            }
                        }
                        if done < total {
                            if k >= *serving {
                                break;
                            }
                            k = (k * 4).min(*serving);
                            list = arm.cheapest(g as u32, k);
                        }
                    }
                }
            }
            #[cfg(test)]
            Self::Dense { rows, .. } => {
                for p in assign::fallbacks(pops, primary, &|p| rows[g][p], pops.len()) {
                    if !visit(p) {
                        return;
                    }
                }
            }
        }
    }
}

/// A map with one static answer: `addresses` for every client (all-down fallback, or no
/// address at all for "refuse").
pub fn static_map(addresses: &[String]) -> ServiceMap {
    let (ipv4, ipv6): (Vec<String>, Vec<String>) = addresses
        .iter()
        .filter(|a| a.parse::<IpAddr>().is_ok())
        .cloned()
        .partition(|a| a.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv4()));
    ServiceMap {
        answers: vec![AnswerSet {
            ipv4,
            ipv6,
            ..AnswerSet::default()
        }],
        ..ServiceMap::default()
    }
}

/// Deduplicates answer sets so each distinct answer is stored once.
#[derive(Default)]
struct AnswerTable {
    sets: Vec<AnswerSet>,
    index: HashMap<Vec<(u32, Vec<u32>)>, u32>,
}

impl AnswerTable {
    fn intern(&mut self, set: AnswerSet) -> u32 {
        let key: Vec<(u32, Vec<u32>)> = set
            .routes
            .iter()
            .map(|r| (r.weight, r.sites.clone()))
            .collect();
        if let Some(&idx) = self.index.get(&key) {
            return idx;
        }
        let idx = self.sets.len() as u32;
        self.sets.push(set);
        self.index.insert(key, idx);
        idx
    }
}
