//! Target watcher: follows `WatchTargets` and keeps one probe loop running per listed target.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use isobar_proto::v1::{ProbeTarget, TargetSet, WatchTargetsRequest};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Endpoint;

use crate::backoff::Backoff;
use crate::buffer::Buffer;
use crate::client::{self, BearerAuth, LinkError};
use crate::probe;

/// Most targets one prober runs; beyond this a set is truncated, so a runaway configuration
/// cannot exhaust sockets or tasks on the probe host.
const MAX_TARGETS: usize = 10_000;

/// Follows the scheduler's target set for `vantage` until `shutdown`, then stops every probe
/// loop and returns once they have all finished.
///
/// The running probe set survives a lost stream: probes keep measuring (into the buffer) while
/// the watcher reconnects, and the set received on reconnect is applied like any other.
pub(crate) async fn watch(
    endpoint: Endpoint,
    auth: BearerAuth,
    vantage: String,
    buffer: Arc<Buffer>,
    shutdown: CancellationToken,
) {
    let mut probes = ProbeSet::new(buffer, &shutdown);
    let mut backoff = Backoff::new();
    loop {
        match watch_once(
            &endpoint,
            &auth,
            &vantage,
            &mut probes,
            &mut backoff,
            &shutdown,
        )
        .await
        {
            None => break,
            Some(e) => e.log("watch targets"),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    probes.stop_all().await;
}

/// One connection's worth of watching. `None` means shutdown, `Some` why the stream ended.
async fn watch_once(
    endpoint: &Endpoint,
    auth: &BearerAuth,
    vantage: &str,
    probes: &mut ProbeSet,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Option<LinkError> {
    let mut client = match client::connect(endpoint, auth, shutdown).await? {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    let request = WatchTargetsRequest {
        vantage: vantage.to_owned(),
    };
    let mut stream = tokio::select! {
        biased;
        () = shutdown.cancelled() => return None,
        res = client.watch_targets(request) => match res {
            Ok(resp) => resp.into_inner(),
            Err(status) => return Some(LinkError::Stream(status)),
        },
    };
    loop {
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            next = stream.message() => next,
        };
        match next {
            Ok(Some(set)) => {
                // A delivered set proves the connection and the credentials work.
                backoff.reset();
                probes.apply(set);
            }
            Ok(None) => return Some(LinkError::Closed),
            Err(status) => return Some(LinkError::Stream(status)),
        }
    }
}

/// The probe loops currently running, keyed by target id.
struct ProbeSet {
    running: HashMap<String, Running>,
    tasks: TaskTracker,
    buffer: Arc<Buffer>,
    shutdown: CancellationToken,
}

struct Running {
    target: ProbeTarget,
    seq: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl ProbeSet {
    fn new(buffer: Arc<Buffer>, shutdown: &CancellationToken) -> Self {
        Self {
            running: HashMap::new(),
            tasks: TaskTracker::new(),
            buffer,
            shutdown: shutdown.clone(),
        }
    }

    /// Makes the running loops match `set` exactly.
    fn apply(&mut self, set: TargetSet) {
        let listed = set.targets.len();
        let mut wanted: HashMap<String, ProbeTarget> = HashMap::with_capacity(listed);
        for target in set.targets {
            if target.id.is_empty() {
                tracing::warn!(address = %target.address, "ignoring probe target without id");
                continue;
            }
            if wanted.len() >= MAX_TARGETS {
                tracing::warn!(
                    listed,
                    limit = MAX_TARGETS,
                    "too many probe targets, ignoring the rest"
                );
                break;
            }
            match wanted.entry(target.id.clone()) {
                Entry::Vacant(slot) => {
                    slot.insert(target);
                }
                Entry::Occupied(_) => {
                    tracing::warn!(target_id = %target.id, "duplicate probe target id, keeping the first");
                }
            }
        }

        let before = self.running.len();
        // Removed targets stop first and at once, before any new loop is spawned.
        self.running.retain(|id, r| {
            let keep = wanted.contains_key(id);
            if !keep {
                r.stop.cancel();
            }
            keep
        });
        let stopped = before - self.running.len();
        let (mut started, mut restarted) = (0usize, 0usize);
        for (id, target) in wanted {
            let seq = match self.running.get(&id) {
                Some(r) if r.target == target => continue,
                Some(r) => {
                    r.stop.cancel();
                    restarted += 1;
                    Arc::clone(&r.seq)
                }
                None => {
                    started += 1;
                    Arc::new(AtomicU64::new(0))
                }
            };
            let stop = self.shutdown.child_token();
            self.tasks.spawn(probe::run_loop(
                target.clone(),
                Arc::clone(&seq),
                Arc::clone(&self.buffer),
                stop.clone(),
            ));
            self.running.insert(id, Running { target, seq, stop });
        }
        tracing::info!(
            version = set.version,
            targets = self.running.len(),
            started,
            stopped,
            restarted,
            "applied probe target set"
        );
    }

    /// Stops every loop and waits until all of them, including ones stopped earlier, finished.
    async fn stop_all(self) {
        for r in self.running.values() {
            r.stop.cancel();
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}
