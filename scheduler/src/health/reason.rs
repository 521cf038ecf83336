//! The human-readable reason behind a vote: who sees the target down and why.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{State, Target, VantageView};

/// Describes the vote behind a verdict, naming the vantages that see the target down.
pub(super) fn vote_reason(
    t: &Target,
    verdict: State,
    down: usize,
    voters: usize,
    broken: &BTreeSet<String>,
    stale: i64,
    now_ms: i64,
) -> String {
    if voters == 0 {
        return if t.views.is_empty() {
            "no probe result yet".to_owned()
        } else {
            format!("no fresh votes; keeping {}", verdict.as_str())
        };
    }
    let mut seen_down: Vec<(&String, &VantageView)> = t
        .views
        .iter()
        .filter(|(name, v)| {
            v.state == State::Down && now_ms - v.last_seen_ms <= stale && !broken.contains(*name)
        })
        .collect();
    seen_down.sort_by(|a, b| a.0.cmp(b.0));
    let mut who = String::new();
    for (i, (name, v)) in seen_down.iter().enumerate() {
        let _ = write!(
            who,
            "{}{name}: {} consecutive failed probes, last: {}",
            if i == 0 { "" } else { ", " },
            v.consecutive_failures,
            v.last_error
        );
    }
    let set_aside = t.views.keys().filter(|n| broken.contains(*n)).count();
    let aside = if set_aside > 0 {
        format!("; {set_aside} broken vantage(s) set aside")
    } else {
        String::new()
    };
    match (verdict, down) {
        (State::Down, _) => format!("down from {down} of {voters} vantages ({who}){aside}"),
        (State::Up, 0) => format!("up from all {voters} vantages{aside}"),
        (State::Up, _) => {
            format!("up: down from only {down} of {voters} vantages, below quorum ({who}){aside}")
        }
    }
}
