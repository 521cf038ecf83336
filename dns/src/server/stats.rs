//! Counters of the DNS frontend, readable at any time and rendered for Prometheus.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::respond::Outcome;

/// What the DNS frontend has done since it started. Every field only grows.
#[derive(Debug, Default)]
pub struct DnsStats {
    pub(crate) udp_queries: AtomicU64,
    pub(crate) tcp_queries: AtomicU64,
    rcodes: [AtomicU64; 6],
    pub(crate) truncated: AtomicU64,
    pub(crate) in_flight_dropped: AtomicU64,
    pub(crate) rrl_dropped: AtomicU64,
    pub(crate) rrl_slipped: AtomicU64,
    pub(crate) tcp_rejected: AtomicU64,
    pub(crate) tcp_idle_closed: AtomicU64,
    pub(crate) ignored: AtomicU64,
}

/// RCODE labels counted separately; anything else is "other".
const RCODES: [&str; 6] = [
    "noerror", "formerr", "servfail", "nxdomain", "refused", "other",
];

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DnsStatsSnapshot {
    /// Queries received over UDP (answered or not).
    pub udp_queries: u64,
    /// Queries received over TCP.
    pub tcp_queries: u64,
    /// Responses with NOERROR, FORMERR, SERVFAIL, NXDOMAIN, REFUSED, and any other RCODE.
    pub rcodes: [u64; 6],
    /// Responses sent with TC because the answer did not fit (slips not included).
    pub truncated: u64,
    /// Queries dropped because the in-flight cap was reached.
    pub in_flight_dropped: u64,
    /// Responses dropped by response rate limiting.
    pub rrl_dropped: u64,
    /// Responses replaced by an empty TC answer by response rate limiting.
    pub rrl_slipped: u64,
    /// TCP connections closed at once because the connection cap was reached.
    pub tcp_rejected: u64,
    /// TCP connections closed for idleness.
    pub tcp_idle_closed: u64,
    /// Packets not answered at all: shorter than a header, or responses.
    pub ignored: u64,
}

impl DnsStats {
    pub(crate) fn count(&self, outcome: &Outcome) {
        let i = match outcome.rcode {
            0 => 0,
            1 => 1,
            2 => 2,
            3 => 3,
            5 => 4,
            _ => 5,
        };
        self.rcodes[i].fetch_add(1, Ordering::Relaxed);
        if outcome.truncated {
            self.truncated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> DnsStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsStatsSnapshot {
            udp_queries: get(&self.udp_queries),
            tcp_queries: get(&self.tcp_queries),
            rcodes: std::array::from_fn(|i| get(&self.rcodes[i])),
            truncated: get(&self.truncated),
            in_flight_dropped: get(&self.in_flight_dropped),
            rrl_dropped: get(&self.rrl_dropped),
            rrl_slipped: get(&self.rrl_slipped),
            tcp_rejected: get(&self.tcp_rejected),
            tcp_idle_closed: get(&self.tcp_idle_closed),
            ignored: get(&self.ignored),
        }
    }

    /// The counters in the Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let s = self.snapshot();
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        counter(
            "isobar_dns_queries_total",
            "DNS queries received.",
            &[
                ("{transport=\"udp\"}", s.udp_queries),
                ("{transport=\"tcp\"}", s.tcp_queries),
            ],
        );
        let rcodes: Vec<(String, u64)> = RCODES
            .iter()
            .zip(s.rcodes)
            .map(|(name, v)| (format!("{{rcode=\"{name}\"}}"), v))
            .collect();
        let rcodes: Vec<(&str, u64)> = rcodes.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        counter(
            "isobar_dns_responses_total",
            "DNS responses by RCODE.",
            &rcodes,
        );
        counter(
            "isobar_dns_truncated_total",
            "Responses sent with TC because the answer did not fit.",
            &[("", s.truncated)],
        );
        counter(
            "isobar_dns_dropped_total",
            "Queries or responses not sent, by reason.",
            &[
                ("{reason=\"in_flight_cap\"}", s.in_flight_dropped),
                ("{reason=\"rrl\"}", s.rrl_dropped),
                ("{reason=\"malformed\"}", s.ignored),
            ],
        );
        counter(
            "isobar_dns_rrl_slipped_total",
            "Rate-limited responses sent as empty TC answers.",
            &[("", s.rrl_slipped)],
        );
        counter(
            "isobar_dns_tcp_closed_total",
            "TCP connections closed by a bound, by reason.",
            &[
                ("{reason=\"connection_cap\"}", s.tcp_rejected),
                ("{reason=\"idle\"}", s.tcp_idle_closed),
            ],
        );
        out
    }
}
