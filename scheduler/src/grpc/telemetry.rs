//! `isobar.v1.Telemetry`: probe targets out, measurements in.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use isobar_proto::v1::telemetry_server::Telemetry;
use isobar_proto::v1::{
    ClientRttAck, ClientRttReport, DemandAck, DemandReport, MeasurementBatch, ReportSummary,
    TargetSet, WatchTargetsRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::Scheduler;

/// Most measurements accepted in one batch; larger batches are rejected whole.
const MAX_BATCH: usize = 10_000;
/// Most client RTT samples accepted in one report; larger reports are rejected whole.
const MAX_CLIENT_RTT_BATCH: usize = 10_000;

pub(super) struct TelemetryService {
    scheduler: Arc<Scheduler>,
    shutdown: CancellationToken,
}

impl TelemetryService {
    pub(super) fn new(scheduler: Arc<Scheduler>, shutdown: CancellationToken) -> Self {
        Self {
            scheduler,
            shutdown,
        }
    }
}

type TargetStream = std::pin::Pin<Box<dyn Stream<Item = Result<TargetSet, Status>> + Send>>;

#[tonic::async_trait]
impl Telemetry for TelemetryService {
    type WatchTargetsStream = TargetStream;

    async fn watch_targets(
        &self,
        request: Request<WatchTargetsRequest>,
    ) -> Result<Response<Self::WatchTargetsStream>, Status> {
        let vantage = request.into_inner().vantage;
        if vantage.is_empty() {
            return Err(Status::invalid_argument("vantage: must not be empty"));
        }
        tracing::info!(%vantage, "prober watching targets");
        let rx = self.scheduler.watch_targets();
        // Each vantage gets the common set minus its own mesh responder.
        let stream = super::steering::watch_stream(rx, self.shutdown.clone(), |_| true)
            .map(move |set| Ok(crate::probing::targets_for(&set, &vantage)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report(
        &self,
        request: Request<Streaming<MeasurementBatch>>,
    ) -> Result<Response<ReportSummary>, Status> {
        let mut stream = request.into_inner();
        let mut summary = ReportSummary::default();
        loop {
            let batch = tokio::select! {
                () = self.shutdown.cancelled() => break,
                next = stream.next() => match next {
                    None => break,
                    Some(Err(status)) => return Err(status),
                    Some(Ok(batch)) => batch,
                },
            };
            if batch.measurements.len() > MAX_BATCH {
                return Err(Status::invalid_argument(format!(
                    "measurements: batch of {} exceeds the limit of {MAX_BATCH}",
                    batch.measurements.len()
                )));
            }
            if batch.vantage.is_empty() {
                return Err(Status::invalid_argument("vantage: must not be empty"));
            }
            if batch.loads.len() > MAX_BATCH {
                return Err(Status::invalid_argument(format!(
                    "loads: batch of {} exceeds the limit of {MAX_BATCH}",
                    batch.loads.len()
                )));
            }
            let (accepted, rejected) = self.scheduler.ingest(&batch);
            summary.accepted += accepted;
            summary.rejected += rejected;
        }
        Ok(Response::new(summary))
    }

    async fn report_demand(
        &self,
        request: Request<DemandReport>,
    ) -> Result<Response<DemandAck>, Status> {
        super::placement::report_demand(&self.scheduler, request.into_inner())
    }

    async fn report_client_rtt(
        &self,
        request: Request<ClientRttReport>,
    ) -> Result<Response<ClientRttAck>, Status> {
        let report = request.into_inner();
        if report.frontend.is_empty() {
            return Err(Status::invalid_argument("frontend: must not be empty"));
        }
        if report.samples.len() > MAX_CLIENT_RTT_BATCH {
            return Err(Status::invalid_argument(format!(
                "samples: report of {} exceeds the limit of {MAX_CLIENT_RTT_BATCH}",
                report.samples.len()
            )));
        }
        let (accepted, rejected) = self.scheduler.ingest_client_rtt(&report.samples);
        tracing::debug!(frontend = %report.frontend, accepted, rejected, "client RTT report");
        Ok(Response::new(ClientRttAck { accepted, rejected }))
    }
}
