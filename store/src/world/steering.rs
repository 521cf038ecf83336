//! Steering settings of a service: capacity model, cost weights, guardrails, all-down policy,
//! and the gray (canary) rule.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `[services.steering]`: how one service's clients are assigned to PoPs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steering {
    /// Fraction of each PoP's capacity kept free (0..1).
    #[serde(default = "default_headroom")]
    pub headroom: f64,
    /// Relative cost improvement a client group needs before it is moved off its current
    /// PoP (0..1): answers do not flap on small measurement changes.
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f64,
    /// Queries per second one ready replica reported through the placement API can take;
    /// unset = reported replicas add no capacity bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_capacity: Option<f64>,
    /// Cost weights: ms-equivalents per ms of RTT, per loss percent, per unit utilisation.
    #[serde(default)]
    pub cost: CostWeights,
    /// What to answer when no endpoint is healthy.
    #[serde(default)]
    pub all_down: AllDown,
    /// Addresses served under `all_down = "fallback"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
    /// Guardrails on draining capacity.
    #[serde(default)]
    pub guard: Guard,
}

impl Default for Steering {
    fn default() -> Self {
        Self {
            headroom: default_headroom(),
            hysteresis: default_hysteresis(),
            replica_capacity: None,
            cost: CostWeights::default(),
            all_down: AllDown::default(),
            fallback: Vec::new(),
            guard: Guard::default(),
        }
    }
}

impl Steering {
    /// Whether every field has its default (so it is left out of exports).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_headroom() -> f64 {
    0.1
}

fn default_hysteresis() -> f64 {
    0.1
}

/// Cost weights of the steering cost model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostWeights {
    /// Per millisecond of estimated RTT.
    #[serde(default = "one")]
    pub rtt: f64,
    /// Per percent of packet loss (or client-reported connect failures).
    #[serde(default = "ten")]
    pub loss: f64,
    /// Per unit of utilisation (load / capacity).
    #[serde(default = "fifty")]
    pub load: f64,
}

impl Default for CostWeights {
    fn default() -> Self {
        Self {
            rtt: one(),
            loss: ten(),
            load: fifty(),
        }
    }
}

fn one() -> f64 {
    1.0
}

fn ten() -> f64 {
    10.0
}

fn fifty() -> f64 {
    50.0
}

/// The all-down policy: what a service answers when none of its endpoints is healthy (or
/// the healthy share falls below the guard's minimum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllDown {
    /// Serve every endpoint as if healthy: an answer that may work beats none (Route 53,
    /// gdnsd and PowerDNS behave so).
    #[default]
    ServeAll,
    /// Serve the `fallback` addresses.
    Fallback,
    /// Answer with no address (NODATA), so clients fail fast.
    Refuse,
}

/// Guardrails on failover.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// Most of the service's capacity (percent) health may drain within one window without
    /// an operator's confirmation; beyond it, further PoPs stay in rotation (held).
    #[serde(default = "hundred")]
    pub max_drain_percent: f64,
    /// The drain window, seconds.
    #[serde(default = "drain_window")]
    pub drain_window_s: u32,
    /// Below this healthy share of capacity (percent) the all-down policy applies.
    #[serde(default)]
    pub min_healthy_percent: f64,
    /// A recovered PoP takes traffic again only after being healthy this long, seconds.
    #[serde(default)]
    pub failback_s: u32,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            max_drain_percent: hundred(),
            drain_window_s: drain_window(),
            min_healthy_percent: 0.0,
            failback_s: 0,
        }
    }
}

fn hundred() -> f64 {
    100.0
}

fn drain_window() -> u32 {
    300
}

/// `[services.gray]`: a canary rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gray {
    /// Rule name (metrics, audit); changing it restarts the counters.
    pub name: String,
    /// Endpoints in the canary arm: those whose labels include all of these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Or: the endpoints of these PoPs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pops: Vec<String>,
    /// Share of clients in the canary arm, percent.
    #[serde(default)]
    pub percent: f64,
    /// Optional ramp: the share rises to each step's percent at its time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ramp: Vec<RampStep>,
    /// Clients always in the canary arm.
    #[serde(default, skip_serializing_if = "Cohort::is_empty")]
    pub cohort: Cohort,
    /// Automatic rollback thresholds; unset = no automatic verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

/// One step of a gray ramp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampStep {
    /// Unix seconds from which the step applies.
    pub at_unix_s: i64,
    /// Share from then on, percent.
    pub percent: f64,
}

/// Explicit canary members.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cohort {
    /// Client prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<String>,
    /// HTTPDNS device IDs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// ISO 3166-1 alpha-2 country codes (GeoIP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries: Vec<String>,
}

impl Cohort {
    /// Whether no client is listed.
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty() && self.devices.is_empty() && self.countries.is_empty()
    }
}

/// A/B verdict: roll the canary back when it is worse than the baseline by more than these.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// Largest tolerated excess error rate, percentage points (probe failures and
    /// client-reported connect failures).
    #[serde(default = "five")]
    pub max_error_delta_percent: f64,
    /// Largest tolerated latency ratio canary / baseline (median RTT).
    #[serde(default = "latency_ratio")]
    pub max_latency_ratio: f64,
    /// Samples each arm needs before a verdict.
    #[serde(default = "min_samples")]
    pub min_samples: u32,
}

fn five() -> f64 {
    5.0
}

fn latency_ratio() -> f64 {
    1.5
}

fn min_samples() -> u32 {
    20
}
