//! Measurement windows per (vantage, target): RTT min/median/p95, loss and jitter, plus the
//! latest load of every node.
//!
//! Each window keeps the most recent [`WINDOW_SAMPLES`] samples no older than [`WINDOW_MS`],
//! so memory is bounded by `vantages × targets × WINDOW_SAMPLES × 24 bytes` and statistics
//! always describe the recent past. Statistics are computed when asked for, not on ingest:
//! ingest must sustain tens of thousands of results per second on one core.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Most samples a window keeps. 1000 samples bound the loss estimate's standard error to
/// about one point at 10 % loss.
pub const WINDOW_SAMPLES: usize = 1000;
/// Oldest sample a window keeps, milliseconds.
pub const WINDOW_MS: i64 = 60_000;
/// Most nodes whose load is kept; beyond this, reports from new nodes are ignored.
const MAX_NODES: usize = 10_000;

/// One probe result as the window keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When the probe was sent, Unix milliseconds (prober clock).
    pub at_ms: i64,
    /// The prober's per-target sequence number.
    pub seq: u64,
    /// Round-trip time, microseconds (0 on failure).
    pub rtt_us: u32,
    /// Whether the probe succeeded.
    pub success: bool,
}

/// Statistics of one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowStats {
    /// Samples in the window (received results, successful or not).
    pub samples: u32,
    /// Smallest RTT of the successful samples, microseconds.
    pub rtt_min_us: u32,
    /// Median RTT, microseconds.
    pub rtt_median_us: u32,
    /// 95th-percentile RTT (nearest rank), microseconds.
    pub rtt_p95_us: u32,
    /// Failed plus never-reported probes (sequence gaps), percent of the probes sent.
    pub loss_percent: f64,
    /// Mean absolute difference of consecutive successful RTTs, microseconds.
    pub jitter_us: f64,
    /// The newest sample's time, Unix milliseconds.
    pub last_at_ms: i64,
}

/// The latest load a node reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// When it was measured, Unix milliseconds.
    pub at_ms: i64,
    /// CPU busy fraction, 0..=1.
    pub cpu: f64,
    /// One-minute load average.
    pub load_average: f64,
    /// Open TCP connections.
    pub open_connections: u64,
    /// Operator-defined load figure, 0 = idle, 1 = full.
    pub custom: f64,
}

/// Every window and node load.
#[derive(Debug, Default)]
pub struct Measurements {
    /// vantage → target → window; nested so lookups take `&str` without allocating.
    windows: HashMap<String, HashMap<String, Window>>,
    loads: HashMap<String, Load>,
}

#[derive(Debug, Default)]
struct Window {
    samples: VecDeque<Sample>,
}

// === impl Measurements ===

impl Measurements {
    /// Adds one sample to the (vantage, target) window.
    pub fn record(&mut self, vantage: &str, target: &str, sample: Sample) {
        let targets = match self.windows.get_mut(vantage) {
            Some(t) => t,
            None => self.windows.entry(vantage.to_owned()).or_default(),
        };
        let window = match targets.get_mut(target) {
            Some(w) => w,
            None => targets.entry(target.to_owned()).or_default(),
        };
        window.push(sample);
    }

    /// Stores a node's latest load (ignored when older than what is held).
    pub fn record_load(&mut self, node: &str, load: Load) {
        let room = self.loads.len() < MAX_NODES;
        match self.loads.get_mut(node) {
            Some(held) if held.at_ms <= load.at_ms => *held = load,
            Some(_) => {}
            None if room => {
                self.loads.insert(node.to_owned(), load);
            }
            None => {}
        }
    }

    /// Forgets windows of targets not in `keep` (after a config change).
    pub fn retain_targets(&mut self, keep: impl Fn(&str) -> bool) {
        for targets in self.windows.values_mut() {
            targets.retain(|id, _| keep(id));
        }
        self.windows.retain(|_, t| !t.is_empty());
    }

    /// Statistics of every window, ordered by (vantage, target), optionally filtered.
    pub fn stats(
        &self,
        vantage: Option<&str>,
        target: Option<&str>,
    ) -> BTreeMap<(String, String), WindowStats> {
        let mut out = BTreeMap::new();
        for (v, targets) in &self.windows {
            if vantage.is_some_and(|want| want != v) {
                continue;
            }
            for (t, window) in targets {
                if target.is_some_and(|want| want != t) {
                    continue;
                }
                out.insert((v.clone(), t.clone()), window.stats());
            }
        }
        out
    }

    /// The latest load of every node.
    pub fn loads(&self) -> BTreeMap<String, Load> {
        self.loads.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

// === impl Window ===

impl Window {
    fn push(&mut self, sample: Sample) {
        // A prober restart begins its sequence numbers again; old samples would look like a
        // huge gap, so start over.
        if self
            .samples
            .back()
            .is_some_and(|last| sample.seq < last.seq)
        {
            self.samples.clear();
        }
        if self.samples.len() == WINDOW_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        while self
            .samples
            .front()
            .is_some_and(|s| sample.at_ms - s.at_ms > WINDOW_MS)
        {
            self.samples.pop_front();
        }
    }

    fn stats(&self) -> WindowStats {
        window_stats(self.samples.iter().copied())
    }
}

/// Computes [`WindowStats`] over samples in arrival order.
pub fn window_stats(samples: impl IntoIterator<Item = Sample>) -> WindowStats {
    let mut rtts = Vec::new();
    let (mut received, mut failed) = (0u64, 0u64);
    let (mut min_seq, mut max_seq) = (u64::MAX, 0u64);
    let mut last_at_ms = i64::MIN;
    let mut previous_rtt: Option<u32> = None;
    let (mut jitter_sum, mut jitter_n) = (0u64, 0u64);
    for s in samples {
        received += 1;
        min_seq = min_seq.min(s.seq);
        max_seq = max_seq.max(s.seq);
        last_at_ms = last_at_ms.max(s.at_ms);
        if s.success {
            if let Some(prev) = previous_rtt {
                jitter_sum += u64::from(prev.abs_diff(s.rtt_us));
                jitter_n += 1;
            }
            previous_rtt = Some(s.rtt_us);
            rtts.push(s.rtt_us);
        } else {
            failed += 1;
        }
    }
    if received == 0 {
        return WindowStats::default();
    }
    // Probes whose results never arrived (lost batches, a prober that skipped) count as lost.
    let sent = if max_seq >= min_seq && min_seq > 0 {
        (max_seq - min_seq + 1).max(received)
    } else {
        received
    };
    let lost = sent - received + failed;
    rtts.sort_unstable();
    let rank = |q: f64| -> u32 {
        if rtts.is_empty() {
            return 0;
        }
        // Nearest-rank percentile.
        let idx = ((q * rtts.len() as f64).ceil() as usize).clamp(1, rtts.len()) - 1;
        rtts[idx]
    };
    WindowStats {
        samples: u32::try_from(received).unwrap_or(u32::MAX),
        rtt_min_us: rtts.first().copied().unwrap_or(0),
        rtt_median_us: rank(0.5),
        rtt_p95_us: rank(0.95),
        loss_percent: lost as f64 * 100.0 / sent as f64,
        jitter_us: if jitter_n == 0 {
            0.0
        } else {
            jitter_sum as f64 / jitter_n as f64
        },
        last_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(seq: u64, rtt_us: u32) -> Sample {
        Sample {
            at_ms: seq as i64 * 10,
            seq,
            rtt_us,
            success: true,
        }
    }

    #[test]
    fn percentiles_loss_and_jitter() {
        let mut samples: Vec<Sample> = (1..=100).map(|i| ok(i, i as u32 * 100)).collect();
        // Seq 101 failed, 102 never arrived, 103 fine.
        samples.push(Sample {
            success: false,
            rtt_us: 0,
            ..ok(101, 0)
        });
        samples.push(ok(103, 50));
        let s = window_stats(samples);
        assert_eq!(s.samples, 102);
        assert_eq!(s.rtt_min_us, 50);
        assert_eq!(s.rtt_median_us, 5_000);
        assert_eq!(s.rtt_p95_us, 9_500);
        assert!((s.loss_percent - 2.0 * 100.0 / 103.0).abs() < 1e-9, "{s:?}");
        // 99 steps of 100 µs, then 10 000 → 50.
        let expected = (99.0 * 100.0 + 9_950.0) / 100.0;
        assert!((s.jitter_us - expected).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn window_is_bounded_in_count_and_age_and_resets_on_restart() {
        let mut m = Measurements::default();
        for seq in 1..=(WINDOW_SAMPLES as u64 + 10) {
            m.record("fra1", "t", ok(seq, 1));
        }
        let s = m.stats(None, None)[&("fra1".into(), "t".into())];
        assert_eq!(s.samples as usize, WINDOW_SAMPLES);
        assert_eq!(s.loss_percent, 0.0);
        m.record(
            "fra1",
            "t",
            Sample {
                at_ms: 10_000_000,
                ..ok(1_000_000, 1)
            },
        );
        assert_eq!(
            m.stats(Some("fra1"), Some("t"))
                .values()
                .next()
                .unwrap()
                .samples,
            1
        );
        m.record("fra1", "t", ok(1, 7));
        let s = m.stats(Some("fra1"), Some("t"));
        assert_eq!(s.values().next().unwrap().rtt_min_us, 7, "restart clears");
        m.retain_targets(|id| id != "t");
        assert!(m.stats(None, None).is_empty());
    }

    #[test]
    fn keeps_the_newest_load() {
        let mut m = Measurements::default();
        let load = |at_ms, cpu| Load {
            at_ms,
            cpu,
            ..Load::default()
        };
        m.record_load("fra1", load(10, 0.5));
        m.record_load("fra1", load(5, 0.9));
        assert_eq!(m.loads()["fra1"].cpu, 0.5);
        m.record_load("fra1", load(20, 0.1));
        assert_eq!(m.loads()["fra1"].cpu, 0.1);
    }
}
