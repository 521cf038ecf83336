//! The RUM book: what app clients measured towards our PoPs (real-user monitoring), kept per
//! (client group, PoP) for the steering cost model.
//!
//! Frontends forward client measurements (`Telemetry/ReportClientRtt`): a client group label
//! (`cell:N`, `group:NAME`, `unknown`), the address the client connected to, its TCP connect
//! time or failure, and when. The book maps the address to its PoP through the world's
//! endpoints and the placement's ready endpoints (an address no PoP serves is rejected), and
//! keeps per (group, PoP):
//! - `rtt_ms`: an exponentially weighted moving average ([`EWMA_ALPHA`]) of the connect
//!   times of successful samples; [`FAILED_RTT_MS`] while only failures were seen;
//! - `failure_ratio`: the same average over failures (1) and successes (0);
//! - `samples`: how many samples went in; and the scheduler time of the last one.
//!
//! Bounds: an entry not updated for [`ENTRY_TTL_MS`] expires; samples measured longer ago than
//! that are rejected as stale; at most `max_entries` entries, the least recently updated
//! evicted first. Time is passed in explicitly (`now_ms`), so the book is deterministic.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use isobar_proto::v1::ClientRttSample;
use isobar_store::world::World;

use crate::steering::ReadyEndpoints;
use crate::steering::cost::{ClientReports, ClientRtt};

/// An entry not updated for this long expires (10 minutes).
pub const ENTRY_TTL_MS: i64 = 10 * 60 * 1000;
/// Default bound on (group, PoP) entries.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
/// Weight of a new sample in the moving averages.
pub const EWMA_ALPHA: f64 = 0.2;
/// Largest connect time accepted, milliseconds (the frontend's bound too).
pub const MAX_CONNECT_MS: f64 = 60_000.0;
/// RTT reported for an entry that has seen only failures: a typical SDK connect timeout, so
/// the PoP looks far away as well as failing.
pub const FAILED_RTT_MS: f64 = 3_000.0;
/// How far ahead of the scheduler's clock a sample's time may be (client clocks drift).
pub const MAX_FUTURE_MS: i64 = 24 * 60 * 60 * 1000;
/// Longest group label or network name accepted, bytes.
const MAX_LABEL_LEN: usize = 256;

/// Why a sample was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rejection {
    /// The group label is not `cell:N`, `group:NAME` or `unknown`.
    InvalidGroup,
    /// The target is not an IP address.
    InvalidTarget,
    /// No PoP serves the target address.
    UnknownTarget,
    /// A successful sample's connect time is not within 0..=60000 ms.
    InvalidConnectMs,
    /// Measured longer ago than the entry lifetime.
    Stale,
    /// Measured more than a day in the future.
    Future,
}

impl Rejection {
    /// Every reason, in metric order.
    pub const ALL: [Rejection; 6] = [
        Rejection::InvalidGroup,
        Rejection::InvalidTarget,
        Rejection::UnknownTarget,
        Rejection::InvalidConnectMs,
        Rejection::Stale,
        Rejection::Future,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::InvalidGroup => "invalid_group",
            Rejection::InvalidTarget => "invalid_target",
            Rejection::UnknownTarget => "unknown_target",
            Rejection::InvalidConnectMs => "invalid_connect_ms",
            Rejection::Stale => "stale",
            Rejection::Future => "future",
        }
    }
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RumCounters {
    /// Samples taken.
    pub accepted: u64,
    /// Samples refused, by reason.
    pub rejected: BTreeMap<Rejection, u64>,
    /// Entries evicted to stay within the bound.
    pub evicted: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    rtt_ms: Option<f64>,
    failure_ratio: f64,
    samples: u64,
    last_ms: i64,
}

impl Entry {
    /// Folds one sample in (EWMA over RTT and failures).
    fn fold(&mut self, sample: &ClientRttSample, failure: f64, now_ms: i64) {
        if sample.ok {
            self.rtt_ms = Some(match self.rtt_ms {
                Some(old) => old + EWMA_ALPHA * (sample.connect_ms - old),
                None => sample.connect_ms,
            });
        }
        self.failure_ratio += EWMA_ALPHA * (failure - self.failure_ratio);
        self.samples = self.samples.saturating_add(1);
        self.last_ms = self.last_ms.max(now_ms);
    }

    fn summary(&self) -> ClientRtt {
        ClientRtt {
            rtt_ms: self.rtt_ms.unwrap_or(FAILED_RTT_MS),
            failure_ratio: self.failure_ratio,
            samples: self.samples,
        }
    }
}

/// Target address → PoP, from the world's endpoints, cached per config version.
#[derive(Debug, Default)]
struct PopIndex {
    config_version: Option<u64>,
    pops: HashMap<IpAddr, String>,
}

/// Client reports per (group, PoP); see the module doc.
#[derive(Debug)]
pub struct RumBook {
    groups: HashMap<String, HashMap<String, Entry>>,
    /// Per target address over every group, for the gray verdict. Bounded by the world:
    /// only endpoint and ready-replica addresses are accepted.
    targets: HashMap<IpAddr, Entry>,
    len: usize,
    max_entries: usize,
    index: PopIndex,
    counters: RumCounters,
    /// The last view handed out and until when it stays exact (the next expiry).
    cached: Option<(RumView, i64)>,
}

impl Default for RumBook {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ENTRIES)
    }
}

impl RumBook {
    /// An empty book holding at most `max_entries` (group, PoP) entries (at least 1).
    pub fn new(max_entries: usize) -> Self {
        Self {
            groups: HashMap::new(),
            targets: HashMap::new(),
            len: 0,
            max_entries: max_entries.max(1),
            index: PopIndex::default(),
            counters: RumCounters::default(),
            cached: None,
        }
    }

    /// Points target addresses at PoPs through `world`'s endpoints (rebuilt only when
    /// `config_version` changed).
    pub fn index_world(&mut self, world: &World, config_version: u64) {
        if self.index.config_version == Some(config_version) {
            return;
        }
        let mut pops = HashMap::new();
        for service in &world.services {
            for endpoint in &service.endpoints {
                if let Ok(addr) = endpoint.address.parse::<IpAddr>() {
                    pops.entry(addr.to_canonical())
                        .or_insert_with(|| endpoint.pop.clone());
                }
            }
        }
        self.index = PopIndex {
            config_version: Some(config_version),
            pops,
        };
    }

    /// Takes `samples` measured by clients, at scheduler time `now_ms`; `ready` adds the
    /// placement's ready endpoints (service → site → addresses) to the world's. Returns
    /// (accepted, rejected).
    pub fn ingest(
        &mut self,
        samples: &[ClientRttSample],
        ready: &ReadyEndpoints,
        now_ms: i64,
    ) -> (u64, u64) {
        self.expire(now_ms);
        let mut accepted = 0;
        let mut rejected = 0;
        for sample in samples {
            match self.take(sample, ready, now_ms) {
                Ok(()) => accepted += 1,
                Err(reason) => {
                    rejected += 1;
                    *self.counters.rejected.entry(reason).or_default() += 1;
                }
            }
        }
        self.counters.accepted += accepted;
        if accepted > 0 {
            self.cached = None;
        }
        (accepted, rejected)
    }

    fn take(
        &mut self,
        sample: &ClientRttSample,
        ready: &ReadyEndpoints,
        now_ms: i64,
    ) -> Result<(), Rejection> {
        if !valid_group(&sample.group) {
            return Err(Rejection::InvalidGroup);
        }
        let addr = sample
            .target
            .parse::<IpAddr>()
            .map_err(|_| Rejection::InvalidTarget)?
            .to_canonical();
        if sample.ok && !(0.0..=MAX_CONNECT_MS).contains(&sample.connect_ms) {
            return Err(Rejection::InvalidConnectMs);
        }
        if sample.at_unix_ms < now_ms.saturating_sub(ENTRY_TTL_MS) {
            return Err(Rejection::Stale);
        }
        if sample.at_unix_ms > now_ms.saturating_add(MAX_FUTURE_MS) {
            return Err(Rejection::Future);
        }
        let pop = self
            .index
            .pops
            .get(&addr)
            .cloned()
            .or_else(|| ready_pop(ready, addr))
            .ok_or(Rejection::UnknownTarget)?;

        let exists = self
            .groups
            .get(&sample.group)
            .is_some_and(|pops| pops.contains_key(&pop));
        if !exists && self.len >= self.max_entries {
            self.evict_oldest();
        }
        let failure = if sample.ok { 0.0 } else { 1.0 };
        let fresh = Entry {
            rtt_ms: sample.ok.then_some(sample.connect_ms),
            failure_ratio: failure,
            samples: 1,
            last_ms: now_ms,
        };
        self.targets
            .entry(addr)
            .and_modify(|e| e.fold(sample, failure, now_ms))
            .or_insert(fresh);
        let pops = self.groups.entry(sample.group.clone()).or_default();
        match pops.get_mut(&pop) {
            Some(entry) => {
                if sample.ok {
                    entry.rtt_ms = Some(match entry.rtt_ms {
                        Some(old) => old + EWMA_ALPHA * (sample.connect_ms - old),
                        None => sample.connect_ms,
                    });
                }
                entry.failure_ratio += EWMA_ALPHA * (failure - entry.failure_ratio);
                entry.samples = entry.samples.saturating_add(1);
                entry.last_ms = entry.last_ms.max(now_ms);
            }
            None => {
                pops.insert(
                    pop,
                    Entry {
                        rtt_ms: sample.ok.then_some(sample.connect_ms),
                        failure_ratio: failure,
                        samples: 1,
                        last_ms: now_ms,
                    },
                );
                self.len += 1;
            }
        }
        Ok(())
    }

    /// Drops entries not updated for [`ENTRY_TTL_MS`].
    pub fn expire(&mut self, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(ENTRY_TTL_MS);
        self.retain(|entry| entry.last_ms >= cutoff);
        let before = self.targets.len();
        self.targets.retain(|_, entry| entry.last_ms >= cutoff);
        if self.targets.len() != before {
            self.cached = None;
        }
    }

    /// Evicts the least recently updated eighth of the entries (at least one), so a full
    /// book does not pay a scan per new entry.
    fn evict_oldest(&mut self) {
        let mut times: Vec<i64> = self
            .groups
            .values()
            .flat_map(|pops| pops.values().map(|e| e.last_ms))
            .collect();
        if times.is_empty() {
            return;
        }
        let k = (times.len() / 8).max(1) - 1;
        let (_, &mut cutoff, _) = times.select_nth_unstable(k);
        let before = self.len;
        // Ties at the cutoff may take a few more; never fewer than one.
        self.retain(|entry| entry.last_ms > cutoff);
        self.counters.evicted += (before - self.len) as u64;
    }

    fn retain(&mut self, keep: impl Fn(&Entry) -> bool) {
        let before = self.len;
        let mut len = 0;
        self.groups.retain(|_, pops| {
            pops.retain(|_, entry| keep(entry));
            len += pops.len();
            !pops.is_empty()
        });
        self.len = len;
        if len != before {
            self.cached = None;
        }
    }

    /// The fresh entries at `now_ms`, as the cost model reads them. Cheap when nothing
    /// changed since the last call: the view is shared.
    pub fn view(&mut self, now_ms: i64) -> RumView {
        if let Some((view, valid_until)) = &self.cached
            && now_ms < *valid_until
        {
            return view.clone();
        }
        self.expire(now_ms);
        let mut next_expiry = i64::MAX;
        let groups = self
            .groups
            .iter()
            .map(|(group, pops)| {
                let pops = pops
                    .iter()
                    .map(|(pop, entry)| {
                        next_expiry = next_expiry.min(entry.last_ms.saturating_add(ENTRY_TTL_MS));
                        (pop.clone(), entry.summary())
                    })
                    .collect();
                (group.clone(), pops)
            })
            .collect();
        let targets = self
            .targets
            .iter()
            .map(|(addr, entry)| (addr.to_string(), entry.summary()))
            .collect();
        let view = RumView {
            groups: Arc::new(groups),
            targets: Arc::new(targets),
            len: self.len,
        };
        self.cached = Some((view.clone(), next_expiry));
        view
    }

    /// How many (group, PoP) entries the book holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the book holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counters since start.
    pub fn counters(&self) -> &RumCounters {
        &self.counters
    }

    /// The book's part of `GET /metrics` (Prometheus text format).
    pub fn render_prometheus(&self) -> String {
        use std::fmt::Write;
        let c = &self.counters;
        let mut out = String::new();
        out.push_str(
            "# HELP isobar_rum_samples_total Client RTT samples received by the scheduler, by outcome.\n\
             # TYPE isobar_rum_samples_total counter\n",
        );
        let _ = writeln!(
            out,
            "isobar_rum_samples_total{{outcome=\"accepted\",reason=\"\"}} {}",
            c.accepted
        );
        for reason in Rejection::ALL {
            let _ = writeln!(
                out,
                "isobar_rum_samples_total{{outcome=\"rejected\",reason=\"{}\"}} {}",
                reason.as_str(),
                c.rejected.get(&reason).copied().unwrap_or(0)
            );
        }
        out.push_str(
            "# HELP isobar_rum_entries Client RTT summaries held, per (client group, PoP).\n\
             # TYPE isobar_rum_entries gauge\n",
        );
        let _ = writeln!(out, "isobar_rum_entries {}", self.len);
        out.push_str(
            "# HELP isobar_rum_evicted_total Client RTT summaries evicted to stay within the bound.\n\
             # TYPE isobar_rum_evicted_total counter\n",
        );
        let _ = writeln!(out, "isobar_rum_evicted_total {}", c.evicted);
        out
    }
}

/// The PoP (site) whose ready endpoints include `addr`.
fn ready_pop(ready: &ReadyEndpoints, addr: IpAddr) -> Option<String> {
    ready.values().find_map(|sites| {
        sites.iter().find_map(|(site, addresses)| {
            addresses
                .iter()
                .any(|a| a.parse::<IpAddr>().is_ok_and(|a| a.to_canonical() == addr))
                .then(|| site.clone())
        })
    })
}

/// `cell:<digits>`, `group:<non-empty>` or `unknown`, within the length bound.
fn valid_group(label: &str) -> bool {
    if label.len() > MAX_LABEL_LEN {
        return false;
    }
    if label == "unknown" {
        return true;
    }
    if let Some(cell) = label.strip_prefix("cell:") {
        return !cell.is_empty() && cell.parse::<u32>().is_ok();
    }
    label
        .strip_prefix("group:")
        .is_some_and(|g| !g.is_empty() && !g.chars().any(char::is_control))
}

/// A read-only copy of the book's fresh entries, shared cheaply (what the steering cost
/// model reads through [`ClientReports`]).
#[derive(Debug, Clone, Default)]
pub struct RumView {
    groups: Arc<HashMap<String, HashMap<String, ClientRtt>>>,
    targets: Arc<HashMap<String, ClientRtt>>,
    len: usize,
}

impl RumView {
    /// How many (group, PoP) entries it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl ClientReports for RumView {
    fn rtt(&self, group: &str, pop: &str) -> Option<ClientRtt> {
        self.groups.get(group)?.get(pop).copied()
    }

    fn target(&self, address: &str) -> Option<ClientRtt> {
        let canonical = address.parse::<IpAddr>().ok()?.to_canonical().to_string();
        self.targets.get(&canonical).copied()
    }

    fn groups(&self) -> Option<Vec<String>> {
        Some(self.groups.keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_763_700_000_000;

    /// The fixture world: fra1 192.0.2.1 and 2001:db8::1, lon2 192.0.2.2, iad1
    /// 198.51.100.1, sin1 203.0.113.1.
    fn world() -> World {
        crate::fixtures::world()
    }

    fn book() -> RumBook {
        let mut book = RumBook::new(1000);
        book.index_world(&world(), 1);
        book
    }

    fn sample(group: &str, target: &str, ms: f64, ok: bool) -> ClientRttSample {
        ClientRttSample {
            group: group.into(),
            target: target.into(),
            connect_ms: ms,
            ok,
            network: "wifi".into(),
            at_unix_ms: NOW - 1000,
        }
    }

    #[test]
    fn averages_per_group_and_pop() {
        let mut book = book();
        let samples = [
            sample("cell:7", "192.0.2.1", 100.0, true),
            sample("cell:7", "192.0.2.1", 50.0, true),
            sample("cell:7", "192.0.2.1", 0.0, false),
            sample("cell:7", "198.51.100.1", 80.0, true),
            sample("group:office", "2001:db8::1", 10.0, true),
        ];
        assert_eq!(book.ingest(&samples, &ReadyEndpoints::new(), NOW), (5, 0));
        let view = book.view(NOW);
        let fra = view.rtt("cell:7", "fra1").unwrap();
        // 100 → 100 + 0.2·(50 − 100) = 90; the failure leaves the RTT alone.
        assert!((fra.rtt_ms - 90.0).abs() < 1e-9, "{fra:?}");
        // failures 0, 0, 1 → 0 + 0.2·(1 − 0) = 0.2
        assert!((fra.failure_ratio - 0.2).abs() < 1e-9, "{fra:?}");
        assert_eq!(fra.samples, 3);
        assert_eq!(view.rtt("cell:7", "iad1").unwrap().rtt_ms, 80.0);
        assert_eq!(view.rtt("group:office", "fra1").unwrap().rtt_ms, 10.0);
        assert_eq!(view.rtt("cell:7", "sin1"), None);
        assert_eq!(view.rtt("cell:8", "fra1"), None);
        assert_eq!(view.len(), 3);
        // The steering solve prices exactly the groups the view lists from their reports.
        let mut groups = view.groups().expect("the view lists its groups");
        groups.sort();
        assert_eq!(groups, vec!["cell:7", "group:office"]);
    }

    #[test]
    fn only_failures_look_far_and_failing() {
        let mut book = book();
        book.ingest(
            &[sample("unknown", "192.0.2.1", 0.0, false)],
            &ReadyEndpoints::new(),
            NOW,
        );
        let r = book.view(NOW).rtt("unknown", "fra1").unwrap();
        assert_eq!((r.rtt_ms, r.failure_ratio), (FAILED_RTT_MS, 1.0));
    }

    #[test]
    fn rejects_with_reasons() {
        let mut book = book();
        let mut stale = sample("cell:1", "192.0.2.1", 1.0, true);
        stale.at_unix_ms = NOW - ENTRY_TTL_MS - 1;
        let mut future = sample("cell:1", "192.0.2.1", 1.0, true);
        future.at_unix_ms = NOW + MAX_FUTURE_MS + 1;
        let samples = [
            sample("cell:x", "192.0.2.1", 1.0, true),
            sample("", "192.0.2.1", 1.0, true),
            sample("group:", "192.0.2.1", 1.0, true),
            sample("cell:1", "not-an-ip", 1.0, true),
            sample("cell:1", "198.51.100.9", 1.0, true),
            sample("cell:1", "192.0.2.1", -1.0, true),
            sample("cell:1", "192.0.2.1", f64::NAN, true),
            sample("cell:1", "192.0.2.1", 60_001.0, true),
            stale,
            future,
        ];
        assert_eq!(book.ingest(&samples, &ReadyEndpoints::new(), NOW), (0, 10));
        let r = &book.counters().rejected;
        assert_eq!(r[&Rejection::InvalidGroup], 3);
        assert_eq!(r[&Rejection::InvalidTarget], 1);
        assert_eq!(r[&Rejection::UnknownTarget], 1);
        assert_eq!(r[&Rejection::InvalidConnectMs], 3);
        assert_eq!(r[&Rejection::Stale], 1);
        assert_eq!(r[&Rejection::Future], 1);
        assert!(book.is_empty());
        // A failed sample needs no connect time.
        assert_eq!(
            book.ingest(
                &[sample("cell:1", "192.0.2.1", f64::NAN, false)],
                &ReadyEndpoints::new(),
                NOW
            ),
            (1, 0)
        );
    }

    #[test]
    fn ready_endpoints_map_to_their_site() {
        let mut book = book();
        let mut ready = ReadyEndpoints::new();
        ready
            .entry("api.example.test.".into())
            .or_default()
            .insert("sin1".into(), vec!["203.0.113.99".into()]);
        let s = [sample("cell:3", "203.0.113.99", 7.0, true)];
        assert_eq!(book.ingest(&s, &ReadyEndpoints::new(), NOW), (0, 1));
        assert_eq!(book.ingest(&s, &ready, NOW), (1, 0));
        assert_eq!(book.view(NOW).rtt("cell:3", "sin1").unwrap().rtt_ms, 7.0);
    }

    #[test]
    fn entries_expire_after_ten_minutes() {
        let mut book = book();
        book.ingest(
            &[sample("cell:1", "192.0.2.1", 5.0, true)],
            &ReadyEndpoints::new(),
            NOW,
        );
        assert!(
            book.view(NOW + ENTRY_TTL_MS)
                .rtt("cell:1", "fra1")
                .is_some()
        );
        assert!(
            book.view(NOW + ENTRY_TTL_MS + 1)
                .rtt("cell:1", "fra1")
                .is_none()
        );
        assert!(book.is_empty());
    }

    #[test]
    fn bounded_evicting_least_recently_updated() {
        let mut book = RumBook::new(16);
        book.index_world(&world(), 1);
        let none = ReadyEndpoints::new();
        for i in 0..16 {
            let s = sample(&format!("cell:{i}"), "192.0.2.1", 1.0, true);
            book.ingest(&[s], &none, NOW + i);
        }
        assert_eq!(book.len(), 16);
        // Refresh cell:0 so cell:1 and cell:2 are now the oldest.
        book.ingest(&[sample("cell:0", "192.0.2.1", 1.0, true)], &none, NOW + 20);
        book.ingest(
            &[sample("cell:99", "192.0.2.1", 1.0, true)],
            &none,
            NOW + 21,
        );
        assert!(book.len() <= 16);
        assert_eq!(book.len(), 15, "an eighth of 16 is 2: cell:1 and cell:2");
        let view = book.view(NOW + 21);
        assert!(view.rtt("cell:0", "fra1").is_some());
        assert!(view.rtt("cell:1", "fra1").is_none());
        assert!(view.rtt("cell:2", "fra1").is_none());
        assert!(view.rtt("cell:99", "fra1").is_some());
        assert_eq!(book.counters().evicted, 2);
    }

    #[test]
    fn a_report_changes_the_steering_cost_for_its_group_only() {
        use crate::steering::cost::{CostWeights, LatencyModel, group_costs};
        let latency = LatencyModel::new(&[("fra1", (50.1, 8.7)), ("iad1", (38.9, -77.4))], None);
        let near_fra = Some((48.8, 2.3));
        let costs = |view: &RumView, label: &str| {
            group_costs(
                &latency,
                label,
                near_fra,
                &[],
                &CostWeights::default(),
                view,
            )
        };
        let mut book = book();
        let before = costs(&book.view(NOW), "cell:7");
        let slow: Vec<_> = (0..10)
            .map(|_| sample("cell:7", "192.0.2.1", 400.0, true))
            .collect();
        book.ingest(&slow, &ReadyEndpoints::new(), NOW);
        let view = book.view(NOW);
        let after = costs(&view, "cell:7");
        assert!(after[0] > before[0] + 300.0, "{before:?} → {after:?}");
        assert_eq!(after[1], before[1], "other PoPs keep their estimate");
        assert_eq!(
            costs(&view, "cell:8"),
            before,
            "other groups are unaffected"
        );
    }
}
