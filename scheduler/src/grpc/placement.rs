//! `isobar.v1.Placement`: where replicas of a service should run.

use std::sync::Arc;

use futures::Stream;
use isobar_proto::v1::placement_server::Placement;
use isobar_proto::v1::{
    DemandAck, DemandReport, GetPlacementRequest, PlaceRequest, PlacementDecision, ReleaseRequest,
    ReleaseResponse, ReportStatusResponse, StatusReport, WatchPlacementRequest,
};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::admin::{actor, status_from};
use crate::Scheduler;

pub(super) struct PlacementService {
    scheduler: Arc<Scheduler>,
    shutdown: CancellationToken,
}

impl PlacementService {
    pub(super) fn new(scheduler: Arc<Scheduler>, shutdown: CancellationToken) -> Self {
        Self {
            scheduler,
            shutdown,
        }
    }
}

type DecisionStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<PlacementDecision, Status>> + Send>>;

/// Service names are absolute and lowercase in the world; accept them without the dot.
fn service_name(raw: &str) -> Result<String, Status> {
    if raw.trim().is_empty() {
        return Err(Status::invalid_argument("service: must not be empty"));
    }
    let lower = raw.trim().to_ascii_lowercase();
    Ok(if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    })
}

#[tonic::async_trait]
impl Placement for PlacementService {
    type WatchPlacementStream = DecisionStream;

    async fn place(
        &self,
        request: Request<PlaceRequest>,
    ) -> Result<Response<PlacementDecision>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let service = service_name(&req.service)?;
        let policy = req
            .policy
            .ok_or_else(|| Status::invalid_argument("policy: required"))?;
        let decision = self
            .scheduler
            .place(&service, policy, &actor)
            .await
            .map_err(status_from)?;
        Ok(Response::new(decision))
    }

    async fn update_policy(
        &self,
        request: Request<PlaceRequest>,
    ) -> Result<Response<PlacementDecision>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let service = service_name(&req.service)?;
        let policy = req
            .policy
            .ok_or_else(|| Status::invalid_argument("policy: required"))?;
        let decision = self
            .scheduler
            .place_policy(&service, policy, &actor, true)
            .await
            .map_err(status_from)?;
        Ok(Response::new(decision))
    }

    async fn get_placement(
        &self,
        request: Request<GetPlacementRequest>,
    ) -> Result<Response<PlacementDecision>, Status> {
        let service = service_name(&request.into_inner().service)?;
        self.scheduler
            .placement(&service)
            .map(Response::new)
            .map_err(status_from)
    }

    async fn watch_placement(
        &self,
        request: Request<WatchPlacementRequest>,
    ) -> Result<Response<Self::WatchPlacementStream>, Status> {
        let raw = request.into_inner().service;
        let filter = if raw.trim().is_empty() {
            String::new()
        } else {
            service_name(&raw)?
        };
        // Subscribe before reading the current state so no change slips between the two.
        let rx = self.scheduler.watch_placements();
        let current = self.scheduler.placements(&filter);
        let scheduler = Arc::clone(&self.scheduler);
        let shutdown = self.shutdown.clone();
        let initial = futures::stream::iter(current.into_iter().map(Ok));
        let updates = futures::stream::unfold(
            (rx, shutdown, filter, scheduler),
            |(mut rx, shutdown, filter, scheduler)| async move {
                loop {
                    let next = tokio::select! {
                        () = shutdown.cancelled() => return None,
                        next = rx.recv() => next,
                    };
                    match next {
                        Ok(decision) if filter.is_empty() || decision.service == filter => {
                            return Some((
                                futures::stream::iter(vec![Ok(decision)]),
                                (rx, shutdown, filter, scheduler),
                            ));
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => {
                            // Too far behind: resend the current state rather than a partial history.
                            let current: Vec<_> =
                                scheduler.placements(&filter).into_iter().map(Ok).collect();
                            return Some((
                                futures::stream::iter(current),
                                (rx, shutdown, filter, scheduler),
                            ));
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            },
        );
        let stream = futures::StreamExt::chain(initial, futures::StreamExt::flatten(updates));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_status(
        &self,
        request: Request<StatusReport>,
    ) -> Result<Response<ReportStatusResponse>, Status> {
        let mut report = request.into_inner();
        report.service = service_name(&report.service)?;
        if report.site.is_empty() {
            return Err(Status::invalid_argument("site: must not be empty"));
        }
        if self.scheduler.world().0.pop(&report.site).is_none() {
            return Err(Status::not_found(format!(
                "site: unknown site {:?}",
                report.site
            )));
        }
        self.scheduler
            .report_status(&report)
            .await
            .map_err(status_from)?;
        Ok(Response::new(ReportStatusResponse {}))
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        let actor = actor(&request);
        let service = service_name(&request.into_inner().service)?;
        self.scheduler
            .release(&service, &actor)
            .await
            .map_err(status_from)?;
        Ok(Response::new(ReleaseResponse {}))
    }
}

/// Most demand entries accepted in one report.
const MAX_DEMAND_ENTRIES: usize = 100_000;

/// `Telemetry/ReportDemand`, served here because demand feeds placement.
pub(super) fn report_demand(
    scheduler: &Scheduler,
    report: DemandReport,
) -> Result<Response<DemandAck>, Status> {
    if report.frontend.trim().is_empty() {
        return Err(Status::invalid_argument("frontend: must not be empty"));
    }
    if report.demand.len() > MAX_DEMAND_ENTRIES {
        return Err(Status::invalid_argument(format!(
            "demand: {} entries exceed the limit of {MAX_DEMAND_ENTRIES}",
            report.demand.len()
        )));
    }
    let (accepted, rejected) = scheduler.report_demand(&report);
    Ok(Response::new(DemandAck { accepted, rejected }))
}
