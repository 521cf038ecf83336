//! Health in Prometheus text format: per-target state, state changes by reason class, vantages.

use std::fmt::Write as _;

use super::{HealthTable, OverrideMode, State};

/// What drove a change of a target's effective state, coarse enough to be a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonClass {
    /// The vantages' quorum verdict (including a vantage going stale or being set aside).
    Probes,
    /// An operator override was set or cleared.
    Override,
    /// Flap damping held the target down, or released it.
    FlapDamping,
}

impl ReasonClass {
    /// Every class, in label order.
    pub const ALL: [Self; 3] = [Self::Probes, Self::Override, Self::FlapDamping];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Probes => "probes",
            Self::Override => "override",
            Self::FlapDamping => "flap_damping",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Probes => 0,
            Self::Override => 1,
            Self::FlapDamping => 2,
        }
    }
}

/// Effective-state changes since start, by new state and reason class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCounts {
    /// `[to up, to down]` per class, indexed by [`ReasonClass::index`].
    counts: [[u64; 2]; 3],
}

impl ChangeCounts {
    /// Changes to `to` driven by `class`.
    pub fn get(&self, to: State, class: ReasonClass) -> u64 {
        self.counts[class.index()][usize::from(to == State::Down)]
    }

    pub(super) fn count(&mut self, to: State, class: ReasonClass) {
        self.counts[class.index()][usize::from(to == State::Down)] += 1;
    }

    /// Moves one change already counted under `from` to `into`.
    pub(super) fn reclassify(&mut self, to: State, from: ReasonClass, into: ReasonClass) {
        let slot = &mut self.counts[from.index()][usize::from(to == State::Down)];
        *slot = slot.saturating_sub(1);
        self.count(to, into);
    }
}

/// The detailed state label of a target: why it is served or not.
fn state_label(effective: State, damped: bool, override_: Option<OverrideMode>) -> &'static str {
    match (override_, damped, effective) {
        (Some(mode), _, _) => mode.as_str(),
        (None, true, _) => "damped",
        (None, false, State::Up) => "up",
        (None, false, State::Down) => "down",
    }
}

/// Escapes a label value per the text exposition format (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

impl HealthTable {
    /// Health as Prometheus text (exposition format 0.0.4): every target's effective state
    /// with its detailed state as a label, totals, state changes by reason class and the
    /// vantages set aside as broken. Targets and vantages come out sorted, so the page is
    /// stable between scrapes.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let mut targets: Vec<(&String, &super::Target)> = self.targets.iter().collect();
        targets.sort_by(|a, b| a.0.cmp(b.0));

        header(
            &mut out,
            "isobar_health_target_up",
            "gauge",
            "Whether a probe target is served (1) or not (0); state says why: up, down, damped, force_up, force_down or drain.",
        );
        let (mut up, mut down, mut overridden) = (0u64, 0u64, 0u64);
        for (id, t) in &targets {
            let mode = t.override_.as_ref().map(|o| o.mode);
            let label = state_label(t.effective, t.damper.suppressed(), mode);
            let _ = writeln!(
                out,
                "isobar_health_target_up{{target=\"{}\",state=\"{label}\"}} {}",
                escape(id),
                u8::from(t.effective == State::Up)
            );
            match t.effective {
                State::Up => up += 1,
                State::Down => down += 1,
            }
            overridden += u64::from(mode.is_some());
        }
        header(
            &mut out,
            "isobar_health_target_last_change_timestamp_seconds",
            "gauge",
            "When a probe target entered its current state, Unix seconds.",
        );
        for (id, t) in &targets {
            let _ = writeln!(
                out,
                "isobar_health_target_last_change_timestamp_seconds{{target=\"{}\"}} {:.3}",
                escape(id),
                t.since_unix_ms as f64 / 1000.0
            );
        }
        header(
            &mut out,
            "isobar_health_targets",
            "gauge",
            "Probe targets by effective state; overridden counts those under an operator override.",
        );
        for (state, n) in [("up", up), ("down", down), ("overridden", overridden)] {
            let _ = writeln!(out, "isobar_health_targets{{state=\"{state}\"}} {n}");
        }

        let c = &self.counters;
        header(
            &mut out,
            "isobar_health_state_changes_total",
            "counter",
            "Effective state changes of probe targets, by new state and reason class.",
        );
        for class in ReasonClass::ALL {
            for to in [State::Up, State::Down] {
                let _ = writeln!(
                    out,
                    "isobar_health_state_changes_total{{to=\"{}\",reason=\"{}\"}} {}",
                    to.as_str(),
                    class.as_str(),
                    c.changes.get(to, class)
                );
            }
        }
        header(
            &mut out,
            "isobar_health_observations_total",
            "counter",
            "Probe results accepted for configured targets.",
        );
        let _ = writeln!(out, "isobar_health_observations_total {}", c.observations);

        header(
            &mut out,
            "isobar_health_vantage_broken",
            "gauge",
            "Whether a vantage's votes are set aside because it sees most targets down while its peers do not.",
        );
        let mut vantages: Vec<&String> = self.vantages.keys().collect();
        vantages.sort();
        for name in &vantages {
            let _ = writeln!(
                out,
                "isobar_health_vantage_broken{{vantage=\"{}\"}} {}",
                escape(name),
                u8::from(self.broken.contains(*name))
            );
        }
        header(
            &mut out,
            "isobar_health_vantages_broken",
            "gauge",
            "Vantages whose votes are set aside now.",
        );
        let _ = writeln!(out, "isobar_health_vantages_broken {}", self.broken.len());
        header(
            &mut out,
            "isobar_health_vantages_judged_broken_total",
            "counter",
            "Times a vantage was judged broken.",
        );
        let _ = writeln!(
            out,
            "isobar_health_vantages_judged_broken_total {}",
            c.vantages_judged_broken
        );
        out
    }
}
