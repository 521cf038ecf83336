//! Query counts per gray arm: the realized split of every canary rule, as a metric.
//!
//! One table per served snapshot, indexed like `ServingSnapshot::services`; counters move
//! to the next snapshot's table while the same (service, rule) pair is served, so the
//! split is counted over the rule's life, not one snapshot's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::snapshot::ServingSnapshot;

/// Baseline and canary query counters of one rule.
#[derive(Debug, Default)]
struct Arms {
    baseline: AtomicU64,
    canary: AtomicU64,
}

/// (service, rule, counters) of one service with a rule.
type Entry = (String, String, Arc<Arms>);

/// The counters of one snapshot's gray rules.
#[derive(Debug, Default)]
pub(crate) struct GrayTable {
    version: u64,
    /// Per service index: (service, rule, counters) when the service has a rule.
    entries: Box<[Option<Entry>]>,
}

impl GrayTable {
    /// The table for `snapshot`, keeping the counters of rules `old` already counted.
    pub(crate) fn for_snapshot(snapshot: &ServingSnapshot, old: &GrayTable) -> Self {
        let entries = snapshot
            .services()
            .iter()
            .map(|service| {
                let rule = service.gray_rule()?;
                let name = service.name().to_ascii();
                let arms = old
                    .entries
                    .iter()
                    .flatten()
                    .find(|(s, r, _)| *s == name && r == rule)
                    .map_or_else(Arc::default, |(_, _, arms)| Arc::clone(arms));
                Some((name, rule.to_owned(), arms))
            })
            .collect();
        Self {
            version: snapshot.version(),
            entries,
        }
    }

    /// The snapshot version the table indexes.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Counts one query of service `index` in the canary or baseline arm.
    pub(crate) fn record(&self, index: usize, canary: bool) {
        if let Some(Some((_, _, arms))) = self.entries.get(index) {
            let counter = if canary { &arms.canary } else { &arms.baseline };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (service, rule, baseline, canary) for every rule.
    pub(crate) fn split(&self) -> Vec<(String, String, u64, u64)> {
        self.entries
            .iter()
            .flatten()
            .map(|(service, rule, arms)| {
                (
                    service.clone(),
                    rule.clone(),
                    arms.baseline.load(Ordering::Relaxed),
                    arms.canary.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}
