//! Reporter: drains the measurement buffer into a `Telemetry/Report` client stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use isobar_proto::v1::{MeasurementBatch, ReportSummary};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tonic::{Response, Status};

use crate::MAX_BATCH;
use crate::backoff::Backoff;
use crate::buffer::Buffer;
use crate::client::{self, BearerAuth, LinkError};

/// A stream that stayed up this long counts as healthy and resets the backoff. Client streams
/// have no early acknowledgement, so elapsed time is the only signal that the scheduler is
/// accepting rather than rejecting us.
const HEALTHY_AFTER: Duration = Duration::from_secs(2);

/// On shutdown, how long to wait for the scheduler to acknowledge the last batch.
const FLUSH_TIMEOUT: Duration = Duration::from_millis(300);

/// Batches queued between the reporter and the gRPC body. One keeps at most one batch outside
/// the buffer, which bounds what a broken stream can lose beyond what gRPC already holds.
const STREAM_QUEUE: usize = 1;

/// What the reporter sends and how often.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) vantage: String,
    pub(crate) batch_interval: Duration,
}

/// Sends buffered measurements until `shutdown`, reconnecting with backoff on failure.
pub(crate) async fn run(
    endpoint: Endpoint,
    auth: BearerAuth,
    settings: Settings,
    buffer: Arc<Buffer>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    loop {
        let opened = Instant::now();
        match stream_once(&endpoint, &auth, &settings, &buffer, &shutdown).await {
            None => return,
            Some(Ok(summary)) => tracing::info!(
                accepted = summary.accepted,
                rejected = summary.rejected,
                "scheduler closed the report stream, reopening"
            ),
            Some(Err(e)) => e.log("report"),
        }
        if opened.elapsed() >= HEALTHY_AFTER {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One report stream. `None` means shutdown; otherwise how the stream ended.
///
/// Measurements leave the buffer only once the stream has room for them, so while the
/// scheduler is unreachable everything stays buffered. A batch already handed to a stream
/// that then fails is lost (at-most-once delivery): the scheduler may have accepted it, and
/// sending it again would double count.
async fn stream_once(
    endpoint: &Endpoint,
    auth: &BearerAuth,
    settings: &Settings,
    buffer: &Buffer,
    shutdown: &CancellationToken,
) -> Option<Result<ReportSummary, LinkError>> {
    let mut client = match client::connect(endpoint, auth, shutdown).await? {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let call = client.report(ReceiverStream::new(rx));
    tokio::pin!(call);
    let batch = |measurements| MeasurementBatch {
        vantage: settings.vantage.clone(),
        measurements,
        loads: buffer.take_loads(),
    };

    let mut ticker = tokio::time::interval(settings.batch_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    'stream: loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break 'stream,
            res = &mut call => return Some(ended(res)),
            _ = ticker.tick() => {}
            () = buffer.batch_ready() => {}
        }
        // Send what is pending now, then keep going only while full batches are waiting (a
        // backlog after an outage); partial batches wait for the next tick.
        let mut first = true;
        while (first && (buffer.len() > 0 || buffer.has_load())) || buffer.len() >= MAX_BATCH {
            first = false;
            let permit = tokio::select! {
                biased;
                () = shutdown.cancelled() => break 'stream,
                res = &mut call => return Some(ended(res)),
                permit = tx.reserve() => match permit {
                    Ok(p) => p,
                    // gRPC dropped the body: the call is failing and will say why next poll.
                    Err(_) => break,
                },
            };
            permit.send(batch(buffer.take(MAX_BATCH)));
        }
    }

    // Shutdown: hand over one last batch if the stream has room, end the stream and wait
    // briefly for the summary, so what is already in flight is not cut off.
    if let Ok(permit) = tx.try_reserve() {
        let last = buffer.take(MAX_BATCH);
        if !last.is_empty() {
            permit.send(batch(last));
        }
    }
    drop(tx);
    match tokio::time::timeout(FLUSH_TIMEOUT, call).await {
        Ok(Ok(resp)) => {
            tracing::debug!(accepted = resp.get_ref().accepted, "report stream closed");
        }
        Ok(Err(status)) => tracing::debug!(%status, "report stream failed while closing"),
        Err(_) => tracing::debug!("scheduler did not acknowledge the last report in time"),
    }
    None
}

fn ended(res: Result<Response<ReportSummary>, Status>) -> Result<ReportSummary, LinkError> {
    res.map(Response::into_inner).map_err(LinkError::Stream)
}
