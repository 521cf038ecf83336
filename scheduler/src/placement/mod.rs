//! Compute placement: where replicas of a service should run.
//!
//! [`solve`] is a pure function of (world, policy, demand, capacity, RTT model, risk-control
//! ceilings, previous decision) → decision. It covers what Karmada's `PropagationPolicy`
//! offers — label include/exclude, ordered fallback groups with overflow, spread
//! constraints, per-site minimum and maximum, Duplicated vs Divided, static weights or
//! weights from available capacity — plus demand-driven placement: replicas follow the
//! query rates the frontends observe per client group, under a latency objective ("95 % of
//! demand within 30 ms"). When the eligible sites cannot hold the request the decision is
//! partial and carries an `Infeasible` condition — never a silent shortfall.
//!
//! Time-dependent risk control (removal rate limit, grace period, failback) lives in
//! [`crate::placement_state`], which feeds [`solve`] ceilings and floors.

mod moves;
mod objectives;
mod rtt;
mod solve;
mod validate;

use std::collections::{BTreeMap, HashMap};

use isobar_proto::v1::{PlacementDecision, PlacementPolicy};
use isobar_store::world::World;

pub use rtt::{DistanceRtt, RttModel};
pub use solve::solve;
pub use validate::validate;

/// Why a policy cannot be placed at all. Each names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The service is not configured.
    #[error("unknown service {0}")]
    UnknownService(String),
    /// A field has an invalid value.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field, e.g. `policy.replicas`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The most replicas one policy may ask for.
pub const MAX_REPLICAS: u32 = 100_000;

/// Demand from one client group: where the clients are and how many queries they send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemandPoint {
    /// (latitude, longitude) standing for the group's clients.
    pub location: (f64, f64),
    /// Queries per second (any consistent unit).
    pub weight: f64,
}

/// Everything [`solve`] decides from.
pub struct SolveInput<'a> {
    /// The world in force.
    pub world: &'a World,
    /// The service being placed (absolute name).
    pub service: &'a str,
    /// Its policy; [`validate`] it first.
    pub policy: &'a PlacementPolicy,
    /// Replica slots other services already hold, per site.
    pub used: &'a HashMap<String, u32>,
    /// Observed demand for this service. Empty: the policy's demand regions, else the
    /// service's configured ones, else the allowed regions, else every region, each
    /// weighing the same.
    pub demand: &'a [DemandPoint],
    /// Round-trip time estimates for the latency objective and overflow order.
    pub rtt: &'a dyn RttModel,
    /// Per-site ceilings set by risk control (an unreachable site: 0; a recovering one: its
    /// failback allowance). Sites not listed are unconstrained.
    pub ceilings: &'a BTreeMap<String, u32>,
    /// The decision in force, if any: among equally good decisions the solver picks the one
    /// with the fewest moves against it (see `moves.rs`), so re-solving unchanged inputs
    /// changes nothing and a change moves only the replicas it must.
    pub previous: Option<&'a PlacementDecision>,
}

/// Replicas per site of a decision.
pub fn replicas_by_site(decision: &PlacementDecision) -> BTreeMap<String, u32> {
    decision
        .sites
        .iter()
        .map(|s| (s.site.clone(), s.replicas))
        .collect()
}

/// Replicas added plus removed between two site maps.
pub fn moves_between(old: &BTreeMap<String, u32>, new: &BTreeMap<String, u32>) -> u32 {
    let sites: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    sites
        .into_iter()
        .map(|s| {
            let (a, b) = (
                old.get(s).copied().unwrap_or(0),
                new.get(s).copied().unwrap_or(0),
            );
            a.abs_diff(b)
        })
        .sum()
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
