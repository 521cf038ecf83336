//! Gray (canary) shifting: which endpoints form the canary arm, the share in force at a
//! given time, and the A/B verdict that rolls a bad canary back.
//!
//! Selection itself happens per query on the frontends (`GrayRule` in the snapshot):
//! deterministic per client key, so a client keeps its arm, and monotone in the share, so
//! the canary cohort only grows as a ramp rises. This module decides what the rule says.

use isobar_store::world::{Endpoint, Gray, Verdict};

/// The salt of a rule's arm hash: derived from the service and rule names, so two rules
/// pick independent cohorts and renaming a rule reshuffles on purpose.
pub fn salt(service: &str, rule: &str) -> u64 {
    isobar_proto::hash::client_key_device(&format!("gray:{service}:{rule}"))
}

/// Whether `endpoint` belongs to the canary arm of `gray`.
pub fn is_canary(gray: &Gray, endpoint: &Endpoint) -> bool {
    if !gray.pops.is_empty() {
        return gray.pops.contains(&endpoint.pop);
    }
    !gray.labels.is_empty()
        && gray
            .labels
            .iter()
            .all(|(k, v)| endpoint.labels.get(k) == Some(v))
}

/// The share in force at `now_ms`, percent: the last ramp step already reached, else the
/// rule's `percent` (a ramp may start above or below it, but only rises afterwards).
pub fn share_percent(gray: &Gray, now_ms: i64) -> f64 {
    gray.ramp
        .iter()
        .rev()
        .find(|step| step.at_unix_s.saturating_mul(1000) <= now_ms)
        .map_or(gray.percent, |step| step.percent)
        .clamp(0.0, 100.0)
}

/// Parts per million for the wire.
pub fn share_ppm(percent: f64) -> u32 {
    (percent.clamp(0.0, 100.0) * 10_000.0).round() as u32
}

/// What one arm's endpoints measured: probe samples and client reports together.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ArmHealth {
    /// Samples behind the figures.
    pub samples: u64,
    /// Failed share, percent (probe loss, client connect failures).
    pub error_percent: f64,
    /// Median round-trip time, ms (0 when unknown).
    pub rtt_ms: f64,
}

impl ArmHealth {
    /// Folds another measurement into this one, weighted by samples.
    pub fn add(&mut self, other: ArmHealth) {
        let total = self.samples + other.samples;
        if total == 0 {
            return;
        }
        let w = |h: &ArmHealth| h.samples as f64 / total as f64;
        self.error_percent = self.error_percent * w(self) + other.error_percent * w(&other);
        self.rtt_ms = self.rtt_ms * w(self) + other.rtt_ms * w(&other);
        self.samples = total;
    }
}

/// Why a canary is rolled back, or `None` when it may stay (including when either arm has
/// too few samples to judge).
pub fn verdict(rule: &Verdict, baseline: ArmHealth, canary: ArmHealth) -> Option<String> {
    let min = u64::from(rule.min_samples);
    if baseline.samples < min || canary.samples < min {
        return None;
    }
    let excess = canary.error_percent - baseline.error_percent;
    if excess > rule.max_error_delta_percent {
        return Some(format!(
            "canary error rate {:.1} % exceeds the baseline's {:.1} % by more than {:.1} points",
            canary.error_percent, baseline.error_percent, rule.max_error_delta_percent
        ));
    }
    if baseline.rtt_ms > 0.0 && canary.rtt_ms / baseline.rtt_ms > rule.max_latency_ratio {
        return Some(format!(
            "canary latency {:.1} ms is {:.2}× the baseline's {:.1} ms (limit {:.2}×)",
            canary.rtt_ms,
            canary.rtt_ms / baseline.rtt_ms,
            baseline.rtt_ms,
            rule.max_latency_ratio
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use isobar_store::world::RampStep;

    fn rule() -> Gray {
        Gray {
            name: "v2".into(),
            labels: [("version".to_owned(), "v2".to_owned())].into(),
            pops: vec![],
            percent: 5.0,
            ramp: vec![
                RampStep {
                    at_unix_s: 100,
                    percent: 20.0,
                },
                RampStep {
                    at_unix_s: 200,
                    percent: 50.0,
                },
            ],
            cohort: Default::default(),
            verdict: None,
        }
    }

    #[test]
    fn the_ramp_rises_at_its_steps() {
        let g = rule();
        assert_eq!(share_percent(&g, 99_999), 5.0);
        assert_eq!(share_percent(&g, 100_000), 20.0);
        assert_eq!(share_percent(&g, 250_000), 50.0);
        assert_eq!(share_ppm(20.0), 200_000);
    }

    #[test]
    fn verdict_needs_samples_and_a_real_difference() {
        let v = Verdict {
            max_error_delta_percent: 5.0,
            max_latency_ratio: 1.5,
            min_samples: 10,
        };
        let good = ArmHealth {
            samples: 100,
            error_percent: 1.0,
            rtt_ms: 20.0,
        };
        let few = ArmHealth {
            samples: 3,
            error_percent: 90.0,
            rtt_ms: 20.0,
        };
        assert_eq!(verdict(&v, good, few), None, "too few samples to judge");
        let failing = ArmHealth {
            error_percent: 30.0,
            ..good
        };
        assert!(verdict(&v, good, failing).unwrap().contains("error rate"));
        let slow = ArmHealth {
            rtt_ms: 40.0,
            ..good
        };
        assert!(verdict(&v, good, slow).unwrap().contains("latency"));
        let same = ArmHealth {
            error_percent: 2.0,
            rtt_ms: 25.0,
            ..good
        };
        assert_eq!(verdict(&v, good, same), None);
    }
}
