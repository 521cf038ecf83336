//! Bounded drop-oldest queue of measurements between the probe loops and the reporter.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use isobar_proto::v1::{Measurement, NodeLoad};
use tokio::sync::Notify;

/// At most one "dropped measurements" warning per this period, so an outage does not flood the
/// log with one line per probe.
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);

/// Holds measurements until the reporter can send them.
///
/// When full, the oldest measurement is dropped: after an outage the scheduler gains more from
/// the freshest view of the network than from a stale one.
#[derive(Debug)]
pub(crate) struct Buffer {
    capacity: usize,
    batch: usize,
    state: Mutex<State>,
    batch_ready: Notify,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Measurement>,
    dropped_total: u64,
    dropped_unreported: u64,
    last_warn: Option<Instant>,
    /// The latest node load not yet sent; a newer sample replaces it.
    load: Option<NodeLoad>,
}

impl Buffer {
    /// A buffer of `capacity` measurements that signals [`Buffer::batch_ready`] once `batch`
    /// are pending.
    pub(crate) fn new(capacity: usize, batch: usize) -> Self {
        Self {
            capacity,
            batch,
            state: Mutex::new(State {
                // Grows on demand: a prober with few targets never needs the full bound.
                queue: VecDeque::with_capacity(capacity.min(batch)),
                dropped_total: 0,
                dropped_unreported: 0,
                last_warn: None,
                load: None,
            }),
            batch_ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section is a single VecDeque operation plus counters, so the state is
        // consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a measurement, dropping the oldest one if the buffer is full.
    pub(crate) fn push(&self, m: Measurement) {
        let pending = {
            let mut s = self.lock();
            if s.queue.len() >= self.capacity {
                s.queue.pop_front();
                s.dropped_total += 1;
                s.dropped_unreported += 1;
                let now = Instant::now();
                if s.last_warn
                    .is_none_or(|t| now.duration_since(t) >= DROP_WARN_EVERY)
                {
                    tracing::warn!(
                        dropped = s.dropped_unreported,
                        dropped_total = s.dropped_total,
                        capacity = self.capacity,
                        "measurement buffer full, dropped oldest measurements"
                    );
                    s.dropped_unreported = 0;
                    s.last_warn = Some(now);
                }
            }
            s.queue.push_back(m);
            s.queue.len()
        };
        if pending >= self.batch {
            self.batch_ready.notify_one();
        }
    }

    /// Removes and returns up to `max` of the oldest measurements.
    pub(crate) fn take(&self, max: usize) -> Vec<Measurement> {
        let mut s = self.lock();
        let n = max.min(s.queue.len());
        s.queue.drain(..n).collect()
    }

    /// Replaces the pending node load.
    pub(crate) fn set_load(&self, load: NodeLoad) {
        self.lock().load = Some(load);
    }

    /// Takes the pending node load, if any.
    pub(crate) fn take_loads(&self) -> Vec<NodeLoad> {
        self.lock().load.take().into_iter().collect()
    }

    /// Whether a node load is waiting.
    pub(crate) fn has_load(&self) -> bool {
        self.lock().load.is_some()
    }

    /// Number of measurements waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Measurements dropped because the buffer was full, since it was created.
    #[cfg(test)]
    pub(crate) fn dropped_total(&self) -> u64 {
        self.lock().dropped_total
    }

    /// Completes once a full batch is pending (or was, since the last wake-up).
    pub(crate) async fn batch_ready(&self) {
        self.batch_ready.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(seq: u64) -> Measurement {
        Measurement {
            target_id: "t".to_owned(),
            seq,
            ..Measurement::default()
        }
    }

    fn seqs(v: &[Measurement]) -> Vec<u64> {
        v.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn keeps_newest_and_counts_dropped_when_full() {
        let b = Buffer::new(3, 500);
        for seq in 1..=5 {
            b.push(m(seq));
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.dropped_total(), 2);
        assert_eq!(seqs(&b.take(10)), [3, 4, 5]);
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn take_returns_oldest_first_and_at_most_max() {
        let b = Buffer::new(10, 500);
        for seq in 1..=4 {
            b.push(m(seq));
        }
        assert_eq!(seqs(&b.take(3)), [1, 2, 3]);
        assert_eq!(seqs(&b.take(3)), [4]);
        assert!(b.take(3).is_empty());
    }

    #[tokio::test]
    async fn signals_when_a_batch_is_pending() {
        let b = Buffer::new(10, 2);
        b.push(m(1));
        let early = tokio::time::timeout(Duration::from_millis(50), b.batch_ready()).await;
        assert!(early.is_err(), "signalled with one measurement pending");
        b.push(m(2));
        tokio::time::timeout(Duration::from_secs(1), b.batch_ready())
            .await
            .expect("no signal with a full batch pending");
    }
}
