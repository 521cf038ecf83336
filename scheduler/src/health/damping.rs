//! Flap damping after RFC 2439: a decaying penalty per down transition, with hysteresis.

/// The penalty a suppressed target must decay below before it is released, as a fraction of
/// the suppress threshold; the gap keeps a target from toggling around one threshold.
const REUSE_FRACTION: f64 = 0.25;

/// One target's flap history.
#[derive(Debug, Clone, Default)]
pub(super) struct Damper {
    penalty: f64,
    updated_ms: i64,
    suppressed: bool,
}

impl Damper {
    /// The penalty at `now_ms`, decayed exponentially with `half_life_ms`.
    pub(super) fn penalty(&self, now_ms: i64, half_life_ms: u32) -> f64 {
        if self.penalty == 0.0 || half_life_ms == 0 {
            return if half_life_ms == 0 { 0.0 } else { self.penalty };
        }
        let elapsed = (now_ms - self.updated_ms).max(0) as f64;
        self.penalty * 0.5f64.powf(elapsed / f64::from(half_life_ms))
    }

    /// Counts one down transition.
    pub(super) fn penalize(&mut self, now_ms: i64, half_life_ms: u32) {
        self.penalty = self.penalty(now_ms, half_life_ms) + 1.0;
        self.updated_ms = now_ms;
    }

    /// Updates and returns whether the target is held down; `suppress` 0 disables damping.
    pub(super) fn update(&mut self, now_ms: i64, half_life_ms: u32, suppress: u32) -> bool {
        if suppress == 0 {
            self.suppressed = false;
            return false;
        }
        let penalty = self.penalty(now_ms, half_life_ms);
        // Half a flap of slack: `suppress` downs in quick succession have decayed a little by
        // the last one, and must still count as `suppress`.
        let threshold = f64::from(suppress) - 0.5;
        if penalty >= threshold {
            self.suppressed = true;
        } else if penalty < threshold * REUSE_FRACTION {
            self.suppressed = false;
        }
        self.suppressed
    }

    /// Whether the last update held the target down.
    pub(super) fn suppressed(&self) -> bool {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppresses_after_repeated_downs_and_releases_after_decay() {
        let mut d = Damper::default();
        d.penalize(0, 1000);
        d.penalize(10, 1000);
        assert!(!d.update(10, 1000, 3), "two flaps stay below three");
        d.penalize(20, 1000);
        assert!(d.update(20, 1000, 3), "three quick flaps suppress");
        // Released below a quarter of 2.5: 3 → 0.625 takes about 2.26 half-lives.
        assert!(d.update(2100, 1000, 3));
        assert!(!d.update(2400, 1000, 3));
        assert!(!d.update(2100, 1000, 0));
    }
}
