//! Target health from probe results: rise/fall hysteresis per target.
//!
//! A target starts `Up` (optimistic start, as Route 53 and gdnsd do, so a fresh scheduler
//! does not blackhole every name until the first probes arrive). It goes `Down` after `fall`
//! consecutive failed probes and comes back `Up` after `rise` consecutive successes. A
//! target nobody reports on keeps its last state: a silent prober is not evidence that the
//! endpoint died. Quorum across vantages arrives with the probing issue; today every vantage's
//! result feeds the same counters.

use std::collections::{BTreeMap, HashMap};

use isobar_store::world::HealthSettings;

/// Whether a target may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Serving.
    Up,
    /// Not serving.
    Down,
}

/// One target's health and the evidence behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    /// Current state.
    pub state: State,
    /// Why it is in that state.
    pub reason: String,
    /// When it entered that state, Unix milliseconds.
    pub since_unix_ms: i64,
    consecutive_failures: u32,
    consecutive_successes: u32,
}

/// A state change caused by an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The target that changed.
    pub target: String,
    /// Its new state.
    pub to: State,
    /// Why.
    pub reason: String,
}

/// Health of every configured target.
#[derive(Debug, Clone, Default)]
pub struct HealthTable {
    settings: HealthSettings,
    targets: HashMap<String, TargetHealth>,
}

// === impl State ===

impl State {
    /// Lowercase name for APIs and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
        }
    }
}

// === impl HealthTable ===

impl HealthTable {
    /// A table for the given settings and target ids, every target optimistically up.
    pub fn new(
        settings: HealthSettings,
        targets: impl IntoIterator<Item = String>,
        now_ms: i64,
    ) -> Self {
        let mut table = Self {
            settings,
            targets: HashMap::new(),
        };
        table.reconfigure(table.settings.clone(), targets, now_ms);
        table
    }

    /// Adopts new settings and a new target set: known targets keep their state, new ones
    /// start up, removed ones are forgotten.
    pub fn reconfigure(
        &mut self,
        settings: HealthSettings,
        targets: impl IntoIterator<Item = String>,
        now_ms: i64,
    ) {
        self.settings = settings;
        let mut next = HashMap::new();
        for id in targets {
            let health = self.targets.remove(&id).unwrap_or_else(|| TargetHealth {
                state: State::Up,
                reason: "no probe result yet".to_owned(),
                since_unix_ms: now_ms,
                consecutive_failures: 0,
                consecutive_successes: 0,
            });
            next.insert(id, health);
        }
        self.targets = next;
    }

    /// Records one probe result. Returns the transition it caused, if any; `None` also for
    /// targets that are not configured (the caller counts those as rejected).
    pub fn observe(
        &mut self,
        target: &str,
        success: bool,
        error: &str,
        now_ms: i64,
    ) -> Option<Transition> {
        let fall = self.settings.fall.max(1);
        let rise = self.settings.rise.max(1);
        let health = self.targets.get_mut(target)?;
        if success {
            if health.state == State::Up && health.consecutive_successes == 0 {
                // Replace "no probe result yet" (or a past recovery) with current evidence.
                health.reason = "probes succeeding".to_owned();
            }
            health.consecutive_failures = 0;
            health.consecutive_successes = health.consecutive_successes.saturating_add(1);
            if health.state == State::Down && health.consecutive_successes >= rise {
                health.state = State::Up;
                health.reason = format!("{rise} consecutive successful probes");
                health.since_unix_ms = now_ms;
                return Some(Transition {
                    target: target.to_owned(),
                    to: State::Up,
                    reason: health.reason.clone(),
                });
            }
        } else {
            health.consecutive_successes = 0;
            health.consecutive_failures = health.consecutive_failures.saturating_add(1);
            if health.state == State::Up && health.consecutive_failures >= fall {
                health.state = State::Down;
                health.reason = format!("{fall} consecutive failed probes, last: {error}");
                health.since_unix_ms = now_ms;
                return Some(Transition {
                    target: target.to_owned(),
                    to: State::Down,
                    reason: health.reason.clone(),
                });
            }
        }
        None
    }

    /// Whether a target is known to this table.
    pub fn contains(&self, target: &str) -> bool {
        self.targets.contains_key(target)
    }

    /// The set of targets currently down (what the steering solver needs).
    pub fn down_set(&self) -> std::collections::BTreeSet<String> {
        self.targets
            .iter()
            .filter(|(_, h)| h.state == State::Down)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every target's health, ordered by id.
    pub fn report(&self) -> BTreeMap<String, TargetHealth> {
        self.targets
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> HealthTable {
        let settings = HealthSettings {
            interval_ms: 500,
            timeout_ms: 400,
            fall: 3,
            rise: 2,
        };
        HealthTable::new(settings, ["t".to_owned()], 0)
    }

    #[test]
    fn goes_down_after_fall_failures_and_up_after_rise_successes() {
        let mut t = table();
        assert_eq!(t.observe("t", true, "", 0), None);
        assert_eq!(t.report()["t"].reason, "probes succeeding");
        assert_eq!(t.observe("t", false, "refused", 1), None);
        assert_eq!(t.observe("t", false, "refused", 2), None);
        let down = t
            .observe("t", false, "refused", 3)
            .expect("third failure flips");
        assert_eq!(down.to, State::Down);
        assert!(t.down_set().contains("t"));
        assert_eq!(t.observe("t", true, "", 4), None);
        assert_eq!(t.observe("t", true, "", 5).map(|tr| tr.to), Some(State::Up));
        assert!(t.down_set().is_empty());
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut t = table();
        t.observe("t", false, "x", 1);
        t.observe("t", false, "x", 2);
        t.observe("t", true, "", 3);
        t.observe("t", false, "x", 4);
        t.observe("t", false, "x", 5);
        assert!(
            t.down_set().is_empty(),
            "only two consecutive failures since the success"
        );
    }

    #[test]
    fn reconfigure_keeps_known_state_and_drops_removed_targets() {
        let mut t = table();
        for i in 0..3 {
            t.observe("t", false, "x", i);
        }
        t.reconfigure(
            HealthSettings::default(),
            ["t".to_owned(), "u".to_owned()],
            10,
        );
        assert!(t.down_set().contains("t"));
        assert!(t.contains("u"));
        t.reconfigure(HealthSettings::default(), ["u".to_owned()], 11);
        assert!(!t.contains("t"));
        assert_eq!(t.observe("t", false, "x", 12), None);
    }
}
