//! `isobar.v1.Steering`: pushes every new snapshot to each subscribed frontend, whole
//! (`WatchSnapshot`) or as deltas from the version the frontend holds (`WatchUpdates`).

use std::sync::Arc;

use futures::Stream;
use isobar_proto::v1::steering_server::Steering;
use isobar_proto::v1::{Snapshot, SnapshotUpdate, WatchSnapshotRequest};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::Scheduler;
use crate::delta::{DeltaCache, choose};

pub(super) struct SteeringService {
    scheduler: Arc<Scheduler>,
    shutdown: CancellationToken,
    /// Deltas shared by the watchers of this listener.
    deltas: Arc<DeltaCache>,
}

impl SteeringService {
    pub(super) fn new(scheduler: Arc<Scheduler>, shutdown: CancellationToken) -> Self {
        Self {
            scheduler,
            shutdown,
            deltas: Arc::default(),
        }
    }
}

type SnapshotStream = std::pin::Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send>>;
type UpdateStream = std::pin::Pin<Box<dyn Stream<Item = Result<SnapshotUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl Steering for SteeringService {
    type WatchSnapshotStream = SnapshotStream;
    type WatchUpdatesStream = UpdateStream;

    async fn watch_updates(
        &self,
        request: Request<WatchSnapshotRequest>,
    ) -> Result<Response<Self::WatchUpdatesStream>, Status> {
        let req = request.into_inner();
        tracing::info!(frontend = %req.frontend, have_version = req.have_version, "frontend subscribed to updates");
        let rx = self.scheduler.watch_snapshots();
        let stream = updates(
            rx,
            self.shutdown.clone(),
            req.have_version,
            Arc::clone(&self.deltas),
        );
        Ok(Response::new(Box::pin(futures::StreamExt::map(stream, Ok))))
    }

    async fn watch_snapshot(
        &self,
        request: Request<WatchSnapshotRequest>,
    ) -> Result<Response<Self::WatchSnapshotStream>, Status> {
        let req = request.into_inner();
        tracing::info!(frontend = %req.frontend, have_version = req.have_version, "frontend subscribed");
        let have = req.have_version;
        let rx = self.scheduler.watch_snapshots();
        let stream = futures::StreamExt::map(
            watch_stream(rx, self.shutdown.clone(), move |s: &Arc<Snapshot>| {
                s.version > have
            }),
            |s| Ok((*s).clone()),
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The updates for one watcher that holds `have` (0 = nothing): the current snapshot whole
/// unless it is `have`, then for every newer one a delta from the one last sent. A slow
/// watcher skips versions (the watch channel keeps only the newest) and gets one delta from
/// what it holds to the newest, so nothing queues up per watcher. Ends on shutdown.
fn updates(
    rx: watch::Receiver<Arc<Snapshot>>,
    shutdown: CancellationToken,
    have: u64,
    deltas: Arc<DeltaCache>,
) -> impl Stream<Item = SnapshotUpdate> + Send {
    // The snapshot this watcher holds, once it is known; until then only its version. Taken
    // now rather than at the first poll, so a version published in between still reaches a
    // frontend that serves the current one as a delta.
    let current = Arc::clone(&rx.borrow());
    let mut held = (current.version == have).then_some(current);
    let mut held_version = have;
    let next = move |current: Arc<Snapshot>| {
        let update = if current.version < held_version {
            None
        } else if current.version == held_version {
            // The frontend already serves the current version: deltas start from it.
            held.get_or_insert(current);
            None
        } else {
            let update = match &held {
                Some(old) => deltas.update(old, &current),
                None => choose(None, &current),
            };
            held_version = current.version;
            held = Some(current);
            Some(update)
        };
        std::future::ready(update)
    };
    futures::StreamExt::filter_map(watch_stream(rx, shutdown, |_| true), next)
}

/// The current value of a watch channel (if `wanted`), then every later value; ends on
/// shutdown. A slow reader skips intermediate values and gets the newest, which is exactly
/// right for snapshots and target sets: only the latest matters.
pub(super) fn watch_stream<T: Clone + Send + Sync + 'static>(
    rx: watch::Receiver<T>,
    shutdown: CancellationToken,
    wanted: impl Fn(&T) -> bool + Send + 'static,
) -> impl Stream<Item = T> + Send {
    futures::stream::unfold(
        (rx, shutdown, wanted, true),
        |(mut rx, shutdown, wanted, first)| async move {
            if first {
                let current = rx.borrow_and_update().clone();
                if wanted(&current) {
                    return Some((current, (rx, shutdown, wanted, false)));
                }
            }
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return None,
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                        let current = rx.borrow_and_update().clone();
                        if wanted(&current) {
                            return Some((current, (rx, shutdown, wanted, false)));
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use isobar_proto::v1::{ServiceMap, snapshot_update::Kind};

    fn snapshot(version: u64, ttl_of_b: u32) -> Arc<Snapshot> {
        let service = |name: &str, ttl| ServiceMap {
            name: name.into(),
            ttl,
            cell_answers: vec![0; 2592],
            ..Default::default()
        };
        Arc::new(Snapshot {
            version,
            services: vec![service("a.", 30), service("b.", ttl_of_b)],
            ..Default::default()
        })
    }

    /// (kind, base, version) of an update.
    fn shape(update: SnapshotUpdate) -> (&'static str, u64, u64) {
        match update.kind {
            Some(Kind::Full(s)) => ("full", 0, s.version),
            Some(Kind::Delta(d)) => {
                assert_eq!(d.upsert_services.len(), 1, "only b. changes");
                ("delta", d.base_version, d.version)
            }
            None => panic!("empty update"),
        }
    }

    #[tokio::test]
    async fn whole_first_then_coalesced_deltas_from_what_each_watcher_holds() {
        let (tx, _) = watch::channel(snapshot(1, 1));
        let stop = CancellationToken::new();
        let cache = Arc::new(DeltaCache::default());
        let mut fresh = Box::pin(updates(tx.subscribe(), stop.clone(), 0, cache.clone()));
        assert_eq!(shape(fresh.next().await.unwrap()), ("full", 0, 1));

        tx.send_replace(snapshot(2, 2));
        assert_eq!(shape(fresh.next().await.unwrap()), ("delta", 1, 2));

        // A slow watcher: three versions pass while it does not read; it gets one delta
        // from what it holds to the newest.
        for v in 3..=5 {
            tx.send_replace(snapshot(v, v as u32));
        }
        assert_eq!(shape(fresh.next().await.unwrap()), ("delta", 2, 5));

        // A watcher that already serves the current version gets no whole snapshot; one
        // that holds something else gets the current one whole.
        let mut current = Box::pin(updates(tx.subscribe(), stop.clone(), 5, cache.clone()));
        let mut stale = Box::pin(updates(tx.subscribe(), stop.clone(), 3, cache.clone()));
        assert_eq!(shape(stale.next().await.unwrap()), ("full", 0, 5));
        tx.send_replace(snapshot(6, 6));
        assert_eq!(shape(current.next().await.unwrap()), ("delta", 5, 6));
        assert_eq!(shape(stale.next().await.unwrap()), ("delta", 5, 6));
        assert_eq!(shape(fresh.next().await.unwrap()), ("delta", 5, 6));

        // A frontend ahead of this scheduler waits for a newer version, then gets it whole.
        let mut ahead = Box::pin(updates(tx.subscribe(), stop.clone(), 7, cache));
        tx.send_replace(snapshot(7, 7));
        tx.send_replace(snapshot(8, 8));
        assert_eq!(shape(ahead.next().await.unwrap()), ("full", 0, 8));

        stop.cancel();
        assert!(fresh.next().await.is_none(), "streams end on shutdown");
    }
}
