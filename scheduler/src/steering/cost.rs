//! The steering cost model: what serving one client group from one PoP is estimated to
//! cost, in "milliseconds-equivalent" units.
//!
//! `cost(g, p) = w.rtt · rtt(g, p) + w.loss · loss%(p) + w.load · utilisation(p)`
//! (`+ w.loss · 100 · failure_ratio(g, p)` when clients reported failures). With the default
//! weights, one percent of probe loss costs as much as 10 ms of RTT and a fully loaded PoP
//! (utilisation 1.0) as much as 50 ms, so load only wins over distance between PoPs that are
//! close to each other.
//!
//! RTT comes from three sources, best last:
//! 1. geography: great-circle distance with the constants of [`DistanceRtt`] (the
//!    placement solver's model: light in fibre at 2/3 c covers ~200 km/ms, so 0.01 ms of RTT
//!    per km; × 1.5 path inflation gives 0.015 ms/km, i.e. ~67 km of distance per ms of RTT,
//!    plus 2 ms base). The distance is computed from unit vectors (`2R·asin(chord/2)`, equal
//!    to the haversine up to rounding), so a caller that keeps a group's unit vector pays one
//!    square root and one arcsine per PoP;
//! 2. measured core latency (Vivaldi estimates or mesh medians between PoPs): the estimate
//!    is `min(geo(g, p), geo(g, q) + measured(q, p))` where `q` is the group's nearest PoP,
//!    so measurements only correct the geographic guess and clients never need probing;
//! 3. client reports (RUM): a report with at least [`MIN_REPORT_SAMPLES`] samples replaces
//!    the estimate for that (group, PoP), and its failure ratio adds a loss penalty.

use std::collections::BTreeMap;

use crate::placement::DistanceRtt;

/// Mean Earth radius, km (as in `isobar_proto::geo`).
const EARTH_RADIUS_KM: f64 = 6371.0;

/// Client reports with fewer samples than this are ignored (the estimate is kept).
pub const MIN_REPORT_SAMPLES: u64 = 5;

/// RTT assumed for a group with no known location (`unknown`): the same for every PoP, so
/// its order follows loss and load penalties, then PoP index.
pub const UNKNOWN_RTT_MS: f64 = 100.0;

/// Per-service weights of the cost terms. Cost is in milliseconds-equivalent: `rtt` is per
/// millisecond of RTT, `loss` per percent of packet loss, `load` per unit of utilisation
/// (0 = idle, 1 = at capacity).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostWeights {
    /// Cost per millisecond of round-trip time.
    pub rtt: f64,
    /// Cost per percent of loss (probe loss, or client-reported failures).
    pub loss: f64,
    /// Cost per unit of utilisation above 0.
    pub load: f64,
}

impl Default for CostWeights {
    /// 1 per ms, 10 per loss percent (1 % loss ≈ 10 ms), 50 per unit utilisation (a PoP at
    /// capacity ≈ 50 ms farther away than an idle one).
    fn default() -> Self {
        Self {
            rtt: 1.0,
            loss: 10.0,
            load: 50.0,
        }
    }
}

/// What clients of one group measured towards one PoP (real-user monitoring).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientRtt {
    /// Median round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// Share of failed requests, 0–1.
    pub failure_ratio: f64,
    /// How many reports the figures summarise.
    pub samples: u64,
}

/// Client-measured RTT (RUM) per (group label, PoP name); implemented by the RUM book, which
/// returns only fresh reports.
pub trait ClientReports {
    /// The report for clients of `group` (`cell:N`, `group:NAME` or `unknown`) towards `pop`.
    fn rtt(&self, group: &str, pop: &str) -> Option<ClientRtt>;

    /// What clients reported towards one endpoint address, over every group (the gray
    /// verdict compares arms with it). The default knows nothing.
    fn target(&self, _address: &str) -> Option<ClientRtt> {
        None
    }

    /// The labels of the groups with at least one report, so a solver can price exactly
    /// those groups from reports and every other from the model alone. `None` (the default)
    /// means the implementer cannot list them: the solver then asks [`Self::rtt`] about
    /// every group at every PoP, which is slower but never ignores a report.
    fn groups(&self) -> Option<Vec<String>> {
        None
    }
}

/// No client reports: costs come from estimates only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReports;

impl ClientReports for NoReports {
    fn rtt(&self, _group: &str, _pop: &str) -> Option<ClientRtt> {
        None
    }

    fn groups(&self) -> Option<Vec<String>> {
        Some(Vec::new())
    }
}

/// Per-PoP signals from probes and node load.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PopSignals {
    /// Probe loss towards the PoP, percent (0–100).
    pub loss_percent: f64,
    /// Node utilisation, 0 = idle, 1 = at capacity (may exceed 1).
    pub utilisation: f64,
}

/// The PoP-only part of the cost: loss and load penalties.
pub fn pop_penalty(weights: &CostWeights, signals: &PopSignals) -> f64 {
    weights.loss * signals.loss_percent.max(0.0) + weights.load * signals.utilisation.max(0.0)
}

/// The cost of serving a client at `rtt_ms` from a PoP with `signals`; a usable client
/// `report` replaces the RTT and adds its failure ratio as loss.
pub fn cost(
    weights: &CostWeights,
    rtt_ms: f64,
    signals: &PopSignals,
    report: Option<ClientRtt>,
) -> f64 {
    let penalty = pop_penalty(weights, signals);
    match report {
        Some(r) if usable(&r) => {
            let failures = r.failure_ratio.clamp(0.0, 1.0);
            modelled_cost(weights, r.rtt_ms, penalty) + weights.loss * 100.0 * failures
        }
        _ => modelled_cost(weights, rtt_ms, penalty),
    }
}

/// The cost without client reports, from an RTT and a precomputed [`pop_penalty`]: what
/// [`cost`] returns when there is no usable report, bit for bit.
#[inline]
pub fn modelled_cost(weights: &CostWeights, rtt_ms: f64, penalty: f64) -> f64 {
    weights.rtt * rtt_ms + penalty
}

fn usable(report: &ClientRtt) -> bool {
    report.samples >= MIN_REPORT_SAMPLES && report.rtt_ms.is_finite() && report.rtt_ms >= 0.0
}

/// Estimates RTT from a client location to each PoP: geography, corrected by measured
/// PoP-to-PoP latency where known (see the module doc).
#[derive(Debug, Clone)]
pub struct LatencyModel {
    distance: DistanceRtt,
    names: Vec<String>,
    locations: Vec<(f64, f64)>,
    units: Vec<[f64; 3]>,
    /// Measured RTT between PoPs, row-major `n × n`; `INFINITY` where unknown.
    core: Vec<f64>,
}

impl LatencyModel {
    /// A model over `pops` (name, (lat, lon)), in the index order the solver uses.
    /// `measured` holds PoP-to-PoP RTTs in ms keyed by (from, to) name; each pair is taken
    /// as symmetric, the smaller figure wins when both directions are given, and unknown
    /// names or non-positive or non-finite figures are ignored.
    pub fn new(
        pops: &[(&str, (f64, f64))],
        measured: Option<&BTreeMap<(String, String), f64>>,
    ) -> Self {
        let n = pops.len();
        let names: Vec<String> = pops.iter().map(|(name, _)| (*name).to_owned()).collect();
        let mut core = vec![f64::INFINITY; n * n];
        if let Some(measured) = measured {
            let index: BTreeMap<&str, usize> =
                pops.iter().enumerate().map(|(i, (n, _))| (*n, i)).collect();
            for ((from, to), &rtt) in measured {
                let (Some(&a), Some(&b)) = (index.get(from.as_str()), index.get(to.as_str()))
                else {
                    continue;
                };
                if rtt.is_finite() && rtt > 0.0 {
                    core[a * n + b] = core[a * n + b].min(rtt);
                    core[b * n + a] = core[b * n + a].min(rtt);
                }
            }
        }
        for i in 0..n {
            core[i * n + i] = 0.0;
        }
        Self {
            distance: DistanceRtt::default(),
            names,
            locations: pops.iter().map(|(_, loc)| *loc).collect(),
            units: pops.iter().map(|(_, loc)| unit(*loc)).collect(),
            core,
        }
    }

    /// Number of PoPs.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when the model has no PoPs.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// PoP `pop`'s name.
    pub fn name(&self, pop: usize) -> &str {
        &self.names[pop]
    }

    /// PoP `pop`'s location.
    pub fn location(&self, pop: usize) -> (f64, f64) {
        self.locations[pop]
    }

    /// PoP `pop`'s unit vector (see [`unit`]).
    pub fn pop_unit(&self, pop: usize) -> [f64; 3] {
        self.units[pop]
    }

    /// Geographic RTT estimate from `from` to PoP `pop`, ms.
    pub fn geo_ms(&self, from: (f64, f64), pop: usize) -> f64 {
        self.geo_ms_unit(&unit(from), pop)
    }

    /// [`Self::geo_ms`] from a precomputed [`unit`] vector.
    #[inline]
    pub fn geo_ms_unit(&self, from: &[f64; 3], pop: usize) -> f64 {
        let to = &self.units[pop];
        let (dx, dy, dz) = (from[0] - to[0], from[1] - to[1], from[2] - to[2]);
        let chord = (dx * dx + dy * dy + dz * dz).sqrt();
        let km = 2.0 * EARTH_RADIUS_KM * (chord / 2.0).min(1.0).asin();
        self.distance.base_ms + self.distance.ms_per_km * km
    }

    /// Measured RTT between two PoPs, if known (0 for a PoP to itself).
    pub fn measured_ms(&self, a: usize, b: usize) -> Option<f64> {
        let rtt = self.core[a * self.len() + b];
        rtt.is_finite().then_some(rtt)
    }

    /// The geographic model (base and ms per km) behind [`Self::geo_ms`].
    pub fn distance(&self) -> DistanceRtt {
        self.distance
    }

    /// The PoP nearest to `from` by geography and its [`Self::geo_ms`]; ties go to the
    /// lower index. `None` without PoPs.
    pub fn nearest(&self, from: (f64, f64)) -> Option<(usize, f64)> {
        self.nearest_among(&unit(from), 0..self.len())
    }

    /// [`Self::nearest`] from a [`unit`] vector, restricted to `pops` (which must hold the
    /// true nearest PoP for the result to match it), so callers can prefilter cheaply.
    pub fn nearest_among(
        &self,
        from: &[f64; 3],
        pops: impl IntoIterator<Item = usize>,
    ) -> Option<(usize, f64)> {
        pops.into_iter()
            .map(|p| (p, self.geo_ms_unit(from, p)))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
    }

    /// Estimated RTT to `pop` from a location whose nearest PoP is `nearest` at
    /// `nearest_ms` and whose geographic RTT to `pop` is `geo_ms`:
    /// `min(geo_ms, nearest_ms + measured(nearest, pop))`.
    pub fn corrected(&self, geo_ms: f64, nearest: usize, nearest_ms: f64, pop: usize) -> f64 {
        geo_ms.min(nearest_ms + self.core[nearest * self.len() + pop])
    }

    /// Estimated RTT from `location` to every PoP, in PoP index order. `None` (unknown
    /// location) gives [`UNKNOWN_RTT_MS`] everywhere.
    pub fn rtt_row(&self, location: Option<(f64, f64)>) -> Vec<f64> {
        let Some(from) = location else {
            return vec![UNKNOWN_RTT_MS; self.len()];
        };
        let from = unit(from);
        let geo: Vec<f64> = (0..self.len())
            .map(|p| self.geo_ms_unit(&from, p))
            .collect();
        let Some((q, q_ms)) = self.nearest_among(&from, 0..self.len()) else {
            return geo;
        };
        geo.iter()
            .enumerate()
            .map(|(p, &g)| self.corrected(g, q, q_ms, p))
            .collect()
    }
}

/// The unit vector of a (lat, lon) position in degrees.
pub fn unit((lat, lon): (f64, f64)) -> [f64; 3] {
    let (lat, lon) = (lat.to_radians(), lon.to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

/// The cost of serving group `label` at `location` from every PoP of `latency`, in PoP
/// index order. `signals` is indexed like the PoPs (missing entries count as no penalty).
pub fn group_costs(
    latency: &LatencyModel,
    label: &str,
    location: Option<(f64, f64)>,
    signals: &[PopSignals],
    weights: &CostWeights,
    reports: &dyn ClientReports,
) -> Vec<f64> {
    latency
        .rtt_row(location)
        .into_iter()
        .enumerate()
        .map(|(p, rtt)| {
            let signal = signals.get(p).copied().unwrap_or_default();
            cost(weights, rtt, &signal, reports.rtt(label, latency.name(p)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRA: (f64, f64) = (50.11, 8.68);
    const LON: (f64, f64) = (51.51, -0.13);
    const IAD: (f64, f64) = (38.95, -77.45);
    const PARIS: (f64, f64) = (48.86, 2.35);

    fn model(measured: &[(&str, &str, f64)]) -> LatencyModel {
        let map: BTreeMap<(String, String), f64> = measured
            .iter()
            .map(|(a, b, r)| (((*a).to_owned(), (*b).to_owned()), *r))
            .collect();
        LatencyModel::new(&[("fra", FRA), ("lon", LON), ("iad", IAD)], Some(&map))
    }

    struct OneReport(ClientRtt);
    impl ClientReports for OneReport {
        fn rtt(&self, group: &str, pop: &str) -> Option<ClientRtt> {
            (group == "cell:7" && pop == "iad").then_some(self.0)
        }
    }

    #[test]
    fn geography_orders_pops_by_distance() {
        let row = model(&[]).rtt_row(Some(PARIS));
        assert!(row[1] < row[0] && row[0] < row[2], "{row:?}");
        // Paris–Ashburn is ~6 200 km: ~95 ms with the 0.015 ms/km model.
        assert!((80.0..110.0).contains(&row[2]), "{row:?}");
    }

    #[test]
    fn measured_core_latency_lowers_but_never_raises_the_estimate() {
        let plain = model(&[]).rtt_row(Some(PARIS));
        // Paris' nearest PoP is London; a fast London–Ashburn path pulls Ashburn closer.
        let fast = model(&[("lon", "iad", 60.0)]).rtt_row(Some(PARIS));
        assert!(fast[2] < plain[2] - 20.0, "{fast:?} vs {plain:?}");
        assert_eq!(fast[2], plain[1] + 60.0);
        // A slow measured path does not make the geographic estimate worse.
        let slow = model(&[("iad", "lon", 300.0)]).rtt_row(Some(PARIS));
        assert_eq!(slow, plain);
    }

    #[test]
    fn unknown_location_is_flat() {
        let row = model(&[]).rtt_row(None);
        assert_eq!(row, vec![UNKNOWN_RTT_MS; 3]);
    }

    #[test]
    fn penalties_add_loss_and_load() {
        let w = CostWeights::default();
        let signals = PopSignals {
            loss_percent: 2.0,
            utilisation: 0.5,
        };
        assert_eq!(cost(&w, 10.0, &signals, None), 10.0 + 20.0 + 25.0);
    }

    #[test]
    fn a_client_report_replaces_the_estimate_once_it_has_enough_samples() {
        let latency = model(&[]);
        let signals = [PopSignals::default(); 3];
        let w = CostWeights::default();
        let report = |samples| {
            OneReport(ClientRtt {
                rtt_ms: 30.0,
                failure_ratio: 0.01,
                samples,
            })
        };
        let estimated = group_costs(&latency, "cell:7", Some(FRA), &signals, &w, &NoReports);
        let few = group_costs(&latency, "cell:7", Some(FRA), &signals, &w, &report(4));
        assert_eq!(few, estimated);
        let enough = group_costs(&latency, "cell:7", Some(FRA), &signals, &w, &report(5));
        // 30 ms plus 1 % failures at 10 per percent.
        assert!((enough[2] - 40.0).abs() < 1e-9, "{enough:?}");
        assert_eq!(enough[..2], estimated[..2]);
        // Another group is unaffected.
        let other = group_costs(&latency, "cell:8", Some(FRA), &signals, &w, &report(50));
        assert_eq!(other, estimated);
    }
}
