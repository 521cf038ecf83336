//! Risk control: per-site removal budget, grace period for silent sites, bounded failback.

use std::collections::BTreeMap;

use isobar_proto::v1::{Condition, PlacementDecision, RiskControl, SiteAssignment};
use isobar_store::world::World;
use isobar_store::{LostSite, PlacementRisk, SiteRemoval};

use super::{AuditEvent, ServiceState};

/// Risk-control settings; a policy's `risk` overrides them field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiskDefaults {
    /// Replica removals allowed per site per window.
    pub max_removals_per_window: u32,
    /// The removal window, milliseconds.
    pub removal_window_ms: i64,
    /// How long a silent site keeps its replicas, milliseconds.
    pub grace_ms: i64,
    /// How long a recovered site waits before each failback step, milliseconds.
    pub stabilization_ms: i64,
    /// Replicas moved back per step.
    pub failback_per_window: u32,
}

impl Default for RiskDefaults {
    /// 1 removal per site per 30 min; 5 min grace (Karmada's `tolerationSeconds` is 300);
    /// 5 min stabilization; 1 replica back per step.
    fn default() -> Self {
        Self {
            max_removals_per_window: 1,
            removal_window_ms: 30 * 60 * 1000,
            grace_ms: 5 * 60 * 1000,
            stabilization_ms: 5 * 60 * 1000,
            failback_per_window: 1,
        }
    }
}

impl RiskDefaults {
    /// These defaults with a policy's non-zero overrides applied.
    pub fn effective(&self, risk: Option<&RiskControl>) -> Self {
        let Some(r) = risk else { return *self };
        let secs = |v: u32, d: i64| if v == 0 { d } else { i64::from(v) * 1000 };
        Self {
            max_removals_per_window: if r.max_removals_per_window == 0 {
                self.max_removals_per_window
            } else {
                r.max_removals_per_window
            },
            removal_window_ms: secs(r.removal_window_seconds, self.removal_window_ms),
            grace_ms: secs(r.grace_period_seconds, self.grace_ms),
            stabilization_ms: secs(r.stabilization_seconds, self.stabilization_ms),
            failback_per_window: if r.failback_replicas_per_window == 0 {
                self.failback_per_window
            } else {
                r.failback_replicas_per_window
            },
        }
    }
}

/// A site declared lost for one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lost {
    /// When the grace period ran out.
    pub since_ms: i64,
    /// When it reported again, if it did.
    pub recovered_ms: Option<i64>,
}

/// Per-site ceilings from silence and recovery; records newly lost and recovered sites.
pub(super) fn ceilings(
    state: &mut ServiceState,
    service: &str,
    risk: &RiskDefaults,
    started_ms: i64,
    now_ms: i64,
    events: &mut Vec<AuditEvent>,
) -> BTreeMap<String, u32> {
    let silent = |at_ms: i64| now_ms.saturating_sub(at_ms.max(started_ms)) > risk.grace_ms;
    // Every reporting site silent at once is the orchestrator or its link, not the sites:
    // evicting everything then is the storm this exists to prevent (karmada#5150).
    let all_silent = !state.reports.is_empty() && state.reports.values().all(|r| silent(r.at_ms));
    for (site, report) in &state.reports {
        if silent(report.at_ms) && !all_silent {
            match state.lost.get_mut(site) {
                None => {
                    state.lost.insert(
                        site.clone(),
                        Lost {
                            since_ms: now_ms,
                            recovered_ms: None,
                        },
                    );
                    events.push(AuditEvent {
                        action: "placement.site_lost",
                        detail: serde_json::json!({
                            "service": service,
                            "site": site,
                            "last_report_unix_ms": report.at_ms,
                            "grace_ms": risk.grace_ms,
                        }),
                    });
                }
                Some(lost) => lost.recovered_ms = None,
            }
        } else if let Some(lost) = state.lost.get_mut(site)
            && lost.recovered_ms.is_none()
            && report.at_ms > lost.since_ms
        {
            lost.recovered_ms = Some(report.at_ms);
            events.push(AuditEvent {
                action: "placement.site_recovered",
                detail: serde_json::json!({ "service": service, "site": site }),
            });
        }
    }
    state
        .lost
        .iter()
        .map(|(site, lost)| {
            let ceiling = match lost.recovered_ms {
                None => 0,
                Some(at) if risk.stabilization_ms > 0 => {
                    let steps = now_ms.saturating_sub(at) / risk.stabilization_ms;
                    u32::try_from(steps)
                        .unwrap_or(u32::MAX)
                        .saturating_mul(risk.failback_per_window)
                }
                Some(_) => u32::MAX,
            };
            (site.clone(), ceiling)
        })
        .collect()
}

/// Holds back removals beyond each site's budget: the site keeps what it may not lose yet.
pub(super) fn limit_removals(
    state: &mut ServiceState,
    world: &World,
    previous: &PlacementDecision,
    decision: &mut PlacementDecision,
    risk: &RiskDefaults,
    now_ms: i64,
    events: &mut Vec<AuditEvent>,
) {
    let service = decision.service.clone();
    let mut deferred = 0;
    for old in &previous.sites {
        let new = decision
            .sites
            .iter()
            .find(|s| s.site == old.site)
            .map_or(0, |s| s.replicas);
        if new >= old.replicas {
            continue;
        }
        let wanted = old.replicas - new;
        let lost = state
            .lost
            .get(&old.site)
            .is_some_and(|l| l.recovered_ms.is_none());
        let (allowed, why) = if world.pop(&old.site).is_none() {
            (wanted, "site removed from the config")
        } else if lost {
            (wanted, "site silent past its grace period")
        } else {
            let history = state.removals.entry(old.site.clone()).or_default();
            while history
                .front()
                .is_some_and(|&t| t <= now_ms - risk.removal_window_ms)
            {
                history.pop_front();
            }
            let budget = risk
                .max_removals_per_window
                .saturating_sub(history.len() as u32);
            let allowed = wanted.min(budget);
            for _ in 0..allowed {
                history.push_back(now_ms);
            }
            (allowed, "rebalance")
        };
        if allowed > 0 {
            events.push(AuditEvent {
                action: "placement.remove",
                detail: serde_json::json!({
                    "service": service,
                    "site": old.site,
                    "from": old.replicas,
                    "to": old.replicas - allowed,
                    "reason": why,
                }),
            });
        }
        let keep = old.replicas - allowed;
        if keep > new {
            deferred += keep - new;
            let note = format!(
                "removal deferred: at most {} per site per {} s",
                risk.max_removals_per_window,
                risk.removal_window_ms / 1000
            );
            match decision.sites.iter_mut().find(|s| s.site == old.site) {
                Some(s) => {
                    s.replicas = keep;
                    s.reason = format!("{}; {note}", s.reason);
                }
                None => decision.sites.push(SiteAssignment {
                    site: old.site.clone(),
                    replicas: keep,
                    weight: 0.0,
                    group: old.group.clone(),
                    reason: note,
                }),
            }
        }
    }
    if deferred > 0 {
        decision.sites.sort_by(|a, b| a.site.cmp(&b.site));
        decision.placed = decision.sites.iter().map(|s| s.replicas).sum();
        let total = f64::from(decision.placed.max(1));
        for s in &mut decision.sites {
            s.weight = f64::from(s.replicas) / total;
        }
        decision.conditions.push(Condition {
            r#type: "RemovalDeferred".into(),
            message: format!(
                "{deferred} replicas stay where the solver would remove them until the sites' removal budgets allow"
            ),
        });
    }
}

/// Conditions for lost sites and silent reporters; forgets sites that fully failed back.
pub(super) fn finish(
    state: &mut ServiceState,
    ceilings: &BTreeMap<String, u32>,
    decision: &mut PlacementDecision,
    events: &mut Vec<AuditEvent>,
) {
    let service = decision.service.clone();
    let mut done = Vec::new();
    for (site, lost) in &state.lost {
        let placed = decision
            .sites
            .iter()
            .find(|s| &s.site == site)
            .map_or(0, |s| s.replicas);
        match lost.recovered_ms {
            None => decision.conditions.push(Condition {
                r#type: "SiteUnreachable".into(),
                message: format!(
                    "{site} stopped reporting past its grace period; its replicas are placed elsewhere"
                ),
            }),
            Some(_) if ceilings.get(site).is_some_and(|&c| placed < c) => done.push(site.clone()),
            Some(_) => decision.conditions.push(Condition {
                r#type: "FailbackInProgress".into(),
                message: format!("{site} recovered; replicas return at a bounded rate"),
            }),
        }
    }
    for site in done {
        state.lost.remove(&site);
        events.push(AuditEvent {
            action: "placement.failback_complete",
            detail: serde_json::json!({ "service": service, "site": site }),
        });
    }
}

/// Forgets removals older than the window: they no longer count against any budget, and
/// keeping them would only grow what is persisted.
pub(super) fn prune(state: &mut ServiceState, risk: &RiskDefaults, now_ms: i64) {
    for history in state.removals.values_mut() {
        while history
            .front()
            .is_some_and(|&t| t <= now_ms - risk.removal_window_ms)
        {
            history.pop_front();
        }
    }
    state.removals.retain(|_, h| !h.is_empty());
}

/// The risk memory in the store's shape: removals grouped by (site, instant).
pub(super) fn memory(state: &ServiceState, service: &str) -> PlacementRisk {
    let mut removals: Vec<SiteRemoval> = Vec::new();
    for (site, history) in &state.removals {
        for &at in history {
            match removals.last_mut() {
                Some(last) if last.site == *site && last.removed_at == at => last.replicas += 1,
                _ => removals.push(SiteRemoval {
                    site: site.clone(),
                    removed_at: at,
                    replicas: 1,
                }),
            }
        }
    }
    let lost = state
        .lost
        .iter()
        .map(|(site, l)| LostSite {
            site: site.clone(),
            lost_since: l.since_ms,
            recovered_at: l.recovered_ms,
        })
        .collect();
    PlacementRisk {
        service: service.to_owned(),
        removals,
        lost,
    }
}

/// Puts stored risk memory back; the inverse of [`memory`].
pub(super) fn restore(state: &mut ServiceState, stored: &PlacementRisk) {
    state.removals.clear();
    let mut removals: Vec<&SiteRemoval> = stored.removals.iter().collect();
    // Budgets pop from the front, so each site's history must be oldest first.
    removals.sort_by_key(|r| r.removed_at);
    for r in removals {
        let history = state.removals.entry(r.site.clone()).or_default();
        history.extend(std::iter::repeat_n(r.removed_at, r.replicas as usize));
    }
    state.lost = stored
        .lost
        .iter()
        .map(|l| {
            (
                l.site.clone(),
                Lost {
                    since_ms: l.lost_since,
                    recovered_ms: l.recovered_at,
                },
            )
        })
        .collect();
}
