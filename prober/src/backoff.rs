//! Exponential reconnect backoff with full jitter.

use std::time::Duration;

const BASE: Duration = Duration::from_millis(100);
const CAP: Duration = Duration::from_secs(5);

/// Delay before the next reconnect attempt: uniformly random in `[0, min(CAP, BASE * 2^n)]`.
///
/// Full jitter keeps a fleet of probers that lost the scheduler at the same moment from
/// reconnecting in lock step.
#[derive(Debug)]
pub(crate) struct Backoff {
    ceiling: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self { ceiling: BASE }
    }

    /// The delay to wait now; doubles the ceiling for the next failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling_ms = u64::try_from(self.ceiling.as_millis()).unwrap_or(u64::MAX);
        self.ceiling = (self.ceiling * 2).min(CAP);
        Duration::from_millis(rand::random_range(0..=ceiling_ms))
    }

    /// Forget past failures after a connection proved healthy.
    pub(crate) fn reset(&mut self) {
        self.ceiling = BASE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_ceiling_capped_at_five_seconds() {
        let mut b = Backoff::new();
        let ceilings = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for ceiling in ceilings {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(ceiling), "{d:?} > {ceiling} ms");
        }
        b.reset();
        assert!(b.next_delay() <= BASE);
    }

    #[test]
    fn delays_are_jittered() {
        let mut b = Backoff::new();
        for _ in 0..6 {
            b.next_delay();
        }
        // At the 5 s cap, 20 draws from [0, 5000] ms being all equal is practically impossible.
        let draws: Vec<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(draws.iter().any(|d| *d != draws[0]), "{draws:?}");
    }
}
