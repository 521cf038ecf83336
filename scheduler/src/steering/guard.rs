//! Failover guardrails: which PoPs of a service are drained, held, or still waiting to fail
//! back, as a pure step from the previous guard state.
//!
//! - **Drain budget.** Health may take at most `max_drain_percent` of a service's capacity
//!   out of rotation within `drain_window_s`. A PoP that goes down beyond that budget is
//!   *held*: kept serving (its endpoints as if healthy) and reported, until an operator
//!   confirms the drain or the window frees budget. This is the guard against a broken
//!   probe fleet or a bad health rule emptying a service.
//! - **Failback.** A drained PoP whose endpoints are healthy again takes traffic only after
//!   staying healthy for `failback_s`.
//! - **Minimum healthy share.** When the serving share of capacity falls below
//!   `min_healthy_percent`, the caller applies the service's all-down policy.

use std::collections::BTreeMap;

use isobar_store::world::Guard;

/// What the guard remembers about one service between solves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardState {
    /// Drained PoPs: PoP → when it was drained (Unix ms).
    pub drained: BTreeMap<String, i64>,
    /// Drained PoPs that are healthy again: PoP → since when (Unix ms).
    pub recovering: BTreeMap<String, i64>,
    /// Drains inside the window: (when, PoP, share of capacity in percent).
    pub recent: Vec<(i64, String, f64)>,
}

/// One PoP as the guard sees it.
#[derive(Debug, Clone)]
pub struct PopHealth<'a> {
    /// PoP name.
    pub pop: &'a str,
    /// Whether any of the service's endpoints there is healthy.
    pub healthy: bool,
    /// Its share of the service's capacity, percent.
    pub share: f64,
}

/// The guard's verdict for one PoP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopState {
    /// Healthy and in rotation.
    Serving,
    /// Unhealthy and out of rotation.
    Drained,
    /// Unhealthy but kept in rotation: draining it would exceed the drain budget.
    Held,
    /// Healthy again, waiting out the failback window.
    Recovering,
}

impl PopState {
    /// Whether the PoP takes traffic.
    pub fn serves(self) -> bool {
        matches!(self, PopState::Serving | PopState::Held)
    }

    /// Lowercase name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            PopState::Serving => "serving",
            PopState::Drained => "drained",
            PopState::Held => "held",
            PopState::Recovering => "recovering",
        }
    }
}

/// Steps the guard: the state per PoP (in `pops` order) and the next guard state.
/// `confirmed` lifts the drain budget (an operator confirmed the drains of this service).
pub fn step(
    guard: &Guard,
    previous: &GuardState,
    pops: &[PopHealth<'_>],
    confirmed: bool,
    now_ms: i64,
) -> (Vec<PopState>, GuardState) {
    let window_ms = i64::from(guard.drain_window_s) * 1000;
    let failback_ms = i64::from(guard.failback_s) * 1000;
    let mut next = GuardState {
        drained: BTreeMap::new(),
        recovering: BTreeMap::new(),
        recent: previous
            .recent
            .iter()
            .filter(|(at, _, _)| now_ms - at < window_ms)
            .cloned()
            .collect(),
    };
    let mut used: f64 = next.recent.iter().map(|(_, _, share)| share).sum();
    let mut states = Vec::with_capacity(pops.len());
    for pop in pops {
        let was_drained = previous.drained.get(pop.pop).copied();
        let state = match (pop.healthy, was_drained) {
            (true, None) => PopState::Serving,
            (true, Some(since)) => {
                let healthy_since = previous.recovering.get(pop.pop).copied().unwrap_or(now_ms);
                if now_ms - healthy_since >= failback_ms {
                    PopState::Serving
                } else {
                    next.drained.insert(pop.pop.to_owned(), since);
                    next.recovering.insert(pop.pop.to_owned(), healthy_since);
                    PopState::Recovering
                }
            }
            (false, Some(since)) => {
                next.drained.insert(pop.pop.to_owned(), since);
                PopState::Drained
            }
            (false, None) => {
                // A tiny tolerance so that "100 %" admits every drain despite rounding.
                if confirmed || used + pop.share <= guard.max_drain_percent + 1e-9 {
                    used += pop.share;
                    next.recent.push((now_ms, pop.pop.to_owned(), pop.share));
                    next.drained.insert(pop.pop.to_owned(), now_ms);
                    PopState::Drained
                } else {
                    PopState::Held
                }
            }
        };
        states.push(state);
    }
    (states, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max_drain: f64, failback_s: u32) -> Guard {
        Guard {
            max_drain_percent: max_drain,
            drain_window_s: 60,
            min_healthy_percent: 0.0,
            failback_s,
        }
    }

    fn pops(healthy: &[bool]) -> Vec<PopHealth<'static>> {
        const NAMES: [&str; 4] = ["a", "b", "c", "d"];
        healthy
            .iter()
            .zip(NAMES)
            .map(|(&healthy, pop)| PopHealth {
                pop,
                healthy,
                share: 25.0,
            })
            .collect()
    }

    #[test]
    fn drains_beyond_the_budget_are_held_until_confirmed_or_the_window_passes() {
        let g = guard(30.0, 0);
        let (states, state) = step(
            &g,
            &GuardState::default(),
            &pops(&[false, false, true, true]),
            false,
            0,
        );
        assert_eq!(states[0], PopState::Drained);
        assert_eq!(
            states[1],
            PopState::Held,
            "a second 25 % drain exceeds 30 %"
        );
        // Still inside the window: still held.
        let (states, state2) = step(
            &g,
            &state,
            &pops(&[false, false, true, true]),
            false,
            30_000,
        );
        assert_eq!(states[1], PopState::Held);
        // An operator confirms: drained.
        let (states, _) = step(
            &g,
            &state2,
            &pops(&[false, false, true, true]),
            true,
            31_000,
        );
        assert_eq!(states[1], PopState::Drained);
        // Or the window passes and frees budget.
        let (states, _) = step(
            &g,
            &state2,
            &pops(&[false, false, true, true]),
            false,
            61_000,
        );
        assert_eq!(states[1], PopState::Drained);
    }

    #[test]
    fn failback_waits_for_the_stabilization_window() {
        let g = guard(100.0, 10);
        let (_, s) = step(&g, &GuardState::default(), &pops(&[false, true]), false, 0);
        let (states, s) = step(&g, &s, &pops(&[true, true]), false, 1_000);
        assert_eq!(states[0], PopState::Recovering);
        let (states, s) = step(&g, &s, &pops(&[true, true]), false, 10_999);
        assert_eq!(states[0], PopState::Recovering);
        let (states, _) = step(&g, &s, &pops(&[true, true]), false, 11_000);
        assert_eq!(states[0], PopState::Serving);
        // A relapse during recovery restarts the clock.
        let (_, s) = step(&g, &GuardState::default(), &pops(&[false]), false, 0);
        let (_, s) = step(&g, &s, &pops(&[true]), false, 1_000);
        let (states, s) = step(&g, &s, &pops(&[false]), false, 2_000);
        assert_eq!(states[0], PopState::Drained);
        let (states, _) = step(&g, &s, &pops(&[true]), false, 11_500);
        assert_eq!(states[0], PopState::Recovering);
    }

    #[test]
    fn unchanged_inputs_give_the_same_state() {
        let g = guard(50.0, 5);
        let (a, s1) = step(
            &g,
            &GuardState::default(),
            &pops(&[false, true, false]),
            false,
            0,
        );
        let (b, s2) = step(&g, &s1, &pops(&[false, true, false]), false, 0);
        assert_eq!(a, b);
        assert_eq!(s1, s2);
    }
}
