//! `isobar.v1.Steering`: pushes every new snapshot to each subscribed frontend.

use std::sync::Arc;

use futures::Stream;
use isobar_proto::v1::steering_server::Steering;
use isobar_proto::v1::{Snapshot, WatchSnapshotRequest};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::Scheduler;

pub(super) struct SteeringService {
    scheduler: Arc<Scheduler>,
    shutdown: CancellationToken,
}

impl SteeringService {
    pub(super) fn new(scheduler: Arc<Scheduler>, shutdown: CancellationToken) -> Self {
        Self {
            scheduler,
            shutdown,
        }
    }
}

type SnapshotStream = std::pin::Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl Steering for SteeringService {
    type WatchSnapshotStream = SnapshotStream;

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
