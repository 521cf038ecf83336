//! Target health from many vantages: rise/fall per vantage, a quorum across vantages,
//! broken-vantage detection, flap damping and operator overrides.
//!
//! Each prober (a *vantage*, normally a PoP) keeps its own rise/fall view of every target it
//! probes: a view goes down after `fall` consecutive failures and up after `rise` consecutive
//! successes, and starts up (optimistic start, as Route 53 and gdnsd do). A target's probe
//! verdict is a vote among the vantages whose views are fresh: it is down when at least
//! `quorum` of them see it down (default: a strict majority of those reporting), so one
//! observer's broken network cannot drain anything. A vantage that sees most of its targets
//! down while most of its peers do not is judged broken itself and its votes are set aside.
//! A target nobody reports on keeps its state: silence is not evidence.
//!
//! On top of the verdict, flap damping (after RFC 2439) holds a target down after it went
//! down `flap_suppress` times in quick succession, until it has been stable long enough; an
//! operator override (force up, force down, drain) beats both. Every change of the effective
//! state carries its reason.
//!
//! The table is pure: callers pass the time in, nothing here reads a clock.

mod damping;
mod metrics;
mod reason;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use isobar_store::world::HealthSettings;

use self::damping::Damper;
pub use self::metrics::{ChangeCounts, ReasonClass};
use self::reason::vote_reason;

/// Smallest number of targets a vantage must report on before it can be judged broken: with
/// one target, "most of its targets" is indistinguishable from that target dying.
const MIN_TARGETS_FOR_BROKEN: usize = 2;
/// Floor of the automatic staleness bound, milliseconds.
const MIN_STALE_MS: i64 = 3_000;

/// Whether a target may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Serving.
    Up,
    /// Not serving.
    Down,
}

/// An operator's decision that beats the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideMode {
    /// Serve whatever the probes say.
    ForceUp,
    /// Do not serve, whatever the probes say.
    ForceDown,
    /// Take out of service for maintenance (not served; reported as drained).
    Drain,
}

/// An override in force on one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// What the operator decided.
    pub mode: OverrideMode,
    /// Why, in the operator's words.
    pub reason: String,
    /// Who set it.
    pub actor: String,
    /// When, Unix milliseconds.
    pub since_unix_ms: i64,
}

/// One vantage's rise/fall view of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VantageView {
    /// What this vantage concludes.
    pub state: State,
    /// Consecutive failed probes.
    pub consecutive_failures: u32,
    /// Consecutive successful probes.
    pub consecutive_successes: u32,
    /// Last result received, Unix milliseconds.
    pub last_seen_ms: i64,
    /// The last failure's reason.
    pub last_error: String,
}

/// One target's health and the evidence behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetHealth {
    /// Effective state: what steering uses.
    pub state: State,
    /// Why it is in that state.
    pub reason: String,
    /// When it entered that state, Unix milliseconds.
    pub since_unix_ms: i64,
    /// The vantages' verdict alone, before damping and overrides.
    pub probe_state: State,
    /// Whether flap damping holds it down.
    pub damped: bool,
    /// The current flap penalty (each down transition adds 1; halves every half-life).
    pub flap_penalty: f64,
    /// The operator override in force, if any.
    pub override_: Option<Override>,
    /// Each vantage's view.
    pub vantages: BTreeMap<String, VantageView>,
}

/// A vantage as the health model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VantageStatus {
    /// Targets it holds a view of.
    pub targets: usize,
    /// Of those, how many it sees down.
    pub down: usize,
    /// Whether its votes are set aside.
    pub broken: bool,
    /// Last result received from it, Unix milliseconds.
    pub last_seen_ms: i64,
}

/// Counters for dashboards and alerts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthCounters {
    /// Effective up → down changes since start.
    pub went_down: u64,
    /// Effective down → up changes since start.
    pub went_up: u64,
    /// Probe results accepted.
    pub observations: u64,
    /// Times a vantage was judged broken.
    pub vantages_judged_broken: u64,
    /// Effective changes by new state and reason class.
    pub changes: ChangeCounts,
}

/// A change of a target's effective state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The target that changed.
    pub target: String,
    /// Its new state.
    pub to: State,
    /// Why.
    pub reason: String,
    /// What drove it, coarsely (for metrics).
    pub class: ReasonClass,
}

/// The target is not configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown probe target {0}")]
pub struct UnknownTarget(pub String);

/// Health of every configured target.
#[derive(Debug, Clone, Default)]
pub struct HealthTable {
    settings: HealthSettings,
    targets: HashMap<String, Target>,
    vantages: HashMap<String, Vantage>,
    broken: BTreeSet<String>,
    counters: HealthCounters,
}

#[derive(Debug, Clone)]
struct Target {
    views: HashMap<String, VantageView>,
    verdict: State,
    /// (down votes, voters) behind the verdict, to rebuild the reason only when they change.
    votes: (usize, usize),
    effective: State,
    reason: String,
    since_unix_ms: i64,
    damper: Damper,
    override_: Option<Override>,
}

#[derive(Debug, Clone, Default)]
struct Vantage {
    targets: usize,
    down: usize,
    last_seen_ms: i64,
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

// === impl OverrideMode ===

impl OverrideMode {
    /// The name used in APIs, the CLI and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideMode::ForceUp => "force_up",
            OverrideMode::ForceDown => "force_down",
            OverrideMode::Drain => "drain",
        }
    }

    /// Parses [`OverrideMode::as_str`]'s names (also with `-`).
    pub fn parse(text: &str) -> Option<Self> {
        match text.replace('-', "_").as_str() {
            "force_up" => Some(OverrideMode::ForceUp),
            "force_down" => Some(OverrideMode::ForceDown),
            "drain" => Some(OverrideMode::Drain),
            _ => None,
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
            ..Self::default()
        };
        table.reconfigure(table.settings.clone(), targets, now_ms);
        table
    }

    /// Adopts new settings and a new target set: known targets keep their state, views and
    /// overrides, new ones start up, removed ones are forgotten.
    pub fn reconfigure(
        &mut self,
        settings: HealthSettings,
        targets: impl IntoIterator<Item = String>,
        now_ms: i64,
    ) -> Vec<Transition> {
        self.settings = settings;
        let mut next = HashMap::new();
        for id in targets {
            let target = self.targets.remove(&id).unwrap_or_else(|| Target {
                views: HashMap::new(),
                verdict: State::Up,
                votes: (0, 0),
                effective: State::Up,
                reason: "no probe result yet".to_owned(),
                since_unix_ms: now_ms,
                damper: Damper::default(),
                override_: None,
            });
            next.insert(id, target);
        }
        self.targets = next;
        // Views of removed targets went with them; recount what each vantage holds.
        for v in self.vantages.values_mut() {
            v.targets = 0;
            v.down = 0;
        }
        for t in self.targets.values() {
            for (name, view) in &t.views {
                let v = self.vantages.entry(name.clone()).or_default();
                v.targets += 1;
                v.down += usize::from(view.state == State::Down);
            }
        }
        let mut out = Vec::new();
        self.refresh_broken(now_ms);
        self.evaluate_all(now_ms, &mut out);
        out
    }

    /// Records one probe result from `vantage`, appending any effective-state changes to
    /// `out`. Returns false for targets that are not configured (the caller counts those as
    /// rejected).
    pub fn observe(
        &mut self,
        vantage: &str,
        target: &str,
        success: bool,
        error: &str,
        now_ms: i64,
        out: &mut Vec<Transition>,
    ) -> bool {
        let fall = self.settings.fall.max(1);
        let rise = self.settings.rise.max(1);
        let Some(t) = self.targets.get_mut(target) else {
            return false;
        };
        self.counters.observations += 1;
        let (view, new_view) = match t.views.get_mut(vantage) {
            Some(view) => (view, false),
            None => (
                t.views
                    .entry(vantage.to_owned())
                    .or_insert_with(|| VantageView {
                        state: State::Up,
                        consecutive_failures: 0,
                        consecutive_successes: 0,
                        last_seen_ms: now_ms,
                        last_error: String::new(),
                    }),
                true,
            ),
        };
        view.last_seen_ms = now_ms;
        let before = view.state;
        if success {
            view.consecutive_failures = 0;
            view.consecutive_successes = view.consecutive_successes.saturating_add(1);
            if view.state == State::Down && view.consecutive_successes >= rise {
                view.state = State::Up;
            }
        } else {
            view.consecutive_successes = 0;
            view.consecutive_failures = view.consecutive_failures.saturating_add(1);
            if error != view.last_error {
                error.clone_into(&mut view.last_error);
            }
            if view.state == State::Up && view.consecutive_failures >= fall {
                view.state = State::Down;
            }
        }
        let after = view.state;
        let v = match self.vantages.get_mut(vantage) {
            Some(v) => v,
            None => self.vantages.entry(vantage.to_owned()).or_default(),
        };
        v.last_seen_ms = now_ms;
        if new_view {
            v.targets += 1;
        }
        if before != after {
            if after == State::Down {
                v.down += 1;
            } else {
                v.down = v.down.saturating_sub(1);
            }
            if self.refresh_broken(now_ms) {
                self.evaluate_all(now_ms, out);
                return true;
            }
        }
        let target = target.to_owned();
        self.evaluate(&target, now_ms, out);
        true
    }

    /// Re-evaluates every target against the clock: views that went stale stop voting and
    /// damped targets whose penalty decayed are released. Call it about once a second.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        if self.refresh_broken(now_ms) {
            tracing::debug!(broken = ?self.broken, "broken vantages changed");
        }
        self.evaluate_all(now_ms, &mut out);
        out
    }

    /// Sets (`Some`) or clears (`None`) an operator override on `target`.
    pub fn set_override(
        &mut self,
        target: &str,
        ov: Option<Override>,
        now_ms: i64,
    ) -> Result<Option<Transition>, UnknownTarget> {
        let t = self
            .targets
            .get_mut(target)
            .ok_or_else(|| UnknownTarget(target.to_owned()))?;
        t.override_ = ov;
        // Force a fresh reason even if the votes did not change.
        t.votes = (usize::MAX, usize::MAX);
        let mut out = Vec::new();
        self.evaluate(target, now_ms, &mut out);
        let mut change = out.pop();
        if let Some(c) = change.as_mut().filter(|c| c.class != ReasonClass::Override) {
            // Clearing an override lands on the probe verdict, but the operator caused it.
            self.counters
                .changes
                .reclassify(c.to, c.class, ReasonClass::Override);
            c.class = ReasonClass::Override;
        }
        Ok(change)
    }

    /// Whether a target is known to this table.
    pub fn contains(&self, target: &str) -> bool {
        self.targets.contains_key(target)
    }

    /// The set of targets whose effective state is down (what the steering solver needs).
    pub fn down_set(&self) -> BTreeSet<String> {
        self.targets
            .iter()
            .filter(|(_, t)| t.effective == State::Down)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every target's health, ordered by id.
    pub fn report(&self, now_ms: i64) -> BTreeMap<String, TargetHealth> {
        let half_life = self.settings.flap_half_life_ms;
        self.targets
            .iter()
            .map(|(id, t)| {
                let health = TargetHealth {
                    state: t.effective,
                    reason: t.reason.clone(),
                    since_unix_ms: t.since_unix_ms,
                    probe_state: t.verdict,
                    damped: t.damper.suppressed(),
                    flap_penalty: t.damper.penalty(now_ms, half_life),
                    override_: t.override_.clone(),
                    vantages: t
                        .views
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                };
                (id.clone(), health)
            })
            .collect()
    }

    /// Every vantage that has reported, with whether it is judged broken.
    pub fn vantages(&self) -> BTreeMap<String, VantageStatus> {
        self.vantages
            .iter()
            .map(|(name, v)| {
                let status = VantageStatus {
                    targets: v.targets,
                    down: v.down,
                    broken: self.broken.contains(name),
                    last_seen_ms: v.last_seen_ms,
                };
                (name.clone(), status)
            })
            .collect()
    }

    /// Counters since start.
    pub fn counters(&self) -> HealthCounters {
        self.counters
    }

    fn stale_after(&self) -> i64 {
        match self.settings.stale_ms {
            0 => (4 * i64::from(self.settings.interval_ms)).max(MIN_STALE_MS),
            ms => i64::from(ms),
        }
    }

    /// Recomputes which vantages are broken; returns whether the set changed.
    ///
    /// A vantage is broken when it reports on enough targets, sees more than
    /// `broken_vantage_percent` of them down, and at least half of its fresh peers do not:
    /// a real outage is seen by everyone, a broken observer only by itself.
    fn refresh_broken(&mut self, now_ms: i64) -> bool {
        let pct = u64::from(self.settings.broken_vantage_percent.min(100));
        let stale = self.stale_after();
        let over = |v: &Vantage| {
            v.targets >= MIN_TARGETS_FOR_BROKEN && (v.down as u64) * 100 > pct * v.targets as u64
        };
        let fresh: Vec<(&String, bool)> = self
            .vantages
            .iter()
            .filter(|(_, v)| now_ms - v.last_seen_ms <= stale && v.targets > 0)
            .map(|(name, v)| (name, over(v)))
            .collect();
        let total_over = fresh.iter().filter(|(_, o)| *o).count();
        let mut broken = BTreeSet::new();
        for (name, is_over) in &fresh {
            if !is_over {
                continue;
            }
            let peers = fresh.len() - 1;
            let healthy_peers = peers - (total_over - 1);
            if peers > 0 && healthy_peers * 2 >= peers {
                broken.insert((*name).clone());
            }
        }
        if broken == self.broken {
            return false;
        }
        let newly = broken.difference(&self.broken).count() as u64;
        self.counters.vantages_judged_broken += newly;
        for name in broken.difference(&self.broken) {
            tracing::warn!(vantage = %name, "vantage sees most targets down while its peers do not; setting its votes aside");
        }
        self.broken = broken;
        true
    }

    fn evaluate_all(&mut self, now_ms: i64, out: &mut Vec<Transition>) {
        let ids: Vec<String> = self.targets.keys().cloned().collect();
        for id in ids {
            self.evaluate(&id, now_ms, out);
        }
    }

    /// Recomputes one target's verdict and effective state.
    fn evaluate(&mut self, id: &str, now_ms: i64, out: &mut Vec<Transition>) {
        let stale = self.stale_after();
        let quorum = self.settings.quorum;
        let suppress = self.settings.flap_suppress;
        let half_life = self.settings.flap_half_life_ms;
        let Some(t) = self.targets.get_mut(id) else {
            return;
        };
        let mut voters = 0usize;
        let mut down = 0usize;
        for (name, view) in &t.views {
            if now_ms - view.last_seen_ms > stale || self.broken.contains(name) {
                continue;
            }
            voters += 1;
            down += usize::from(view.state == State::Down);
        }
        let votes_changed = (down, voters) != t.votes;
        let previous_verdict = t.verdict;
        if voters > 0 {
            let needed = if quorum == 0 {
                voters / 2 + 1
            } else {
                quorum as usize
            };
            t.verdict = if down >= needed {
                State::Down
            } else {
                State::Up
            };
        }
        if previous_verdict == State::Up && t.verdict == State::Down {
            t.damper.penalize(now_ms, half_life);
        }
        let was_damped = t.damper.suppressed();
        let damped = t.damper.update(now_ms, half_life, suppress);
        // A target that damping held down and now lets go changes because of the damper.
        let verdict_class = if was_damped {
            ReasonClass::FlapDamping
        } else {
            ReasonClass::Probes
        };
        let (effective, why, class) = match (&t.override_, damped, t.verdict) {
            (Some(o), _, _) => {
                let state = if o.mode == OverrideMode::ForceUp {
                    State::Up
                } else {
                    State::Down
                };
                (
                    state,
                    format!("override {} by {}: {}", o.mode.as_str(), o.actor, o.reason),
                    ReasonClass::Override,
                )
            }
            (None, true, _) => (
                State::Down,
                format!(
                    "flapping: held down until stable (penalty {:.2}, suppress at {suppress})",
                    t.damper.penalty(now_ms, half_life)
                ),
                // Suppression starts on a down verdict: that change is the probes' doing.
                if t.verdict == State::Down {
                    ReasonClass::Probes
                } else {
                    ReasonClass::FlapDamping
                },
            ),
            (None, false, verdict) if votes_changed || t.effective != verdict => (
                verdict,
                vote_reason(t, verdict, down, voters, &self.broken, stale, now_ms),
                verdict_class,
            ),
            (None, false, verdict) => (verdict, String::new(), verdict_class),
        };
        t.votes = (down, voters);
        if !why.is_empty() {
            t.reason = why;
        }
        if effective != t.effective {
            t.effective = effective;
            t.since_unix_ms = now_ms;
            match effective {
                State::Down => self.counters.went_down += 1,
                State::Up => self.counters.went_up += 1,
            }
            self.counters.changes.count(effective, class);
            out.push(Transition {
                target: id.to_owned(),
                to: effective,
                reason: t.reason.clone(),
                class,
            });
        }
    }
}
