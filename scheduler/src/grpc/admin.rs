//! `isobar.v1.Admin`: apply and export the world config, read state.

use std::collections::BTreeMap;
use std::sync::Arc;

use isobar_proto::v1::admin_server::Admin;
use isobar_proto::v1::{
    ApplyConfigRequest, ApplyConfigResponse, ConfirmDrainRequest, ConfirmDrainResponse,
    ExplainRequest, Explanation, ExportConfigRequest, ExportConfigResponse, ExportZoneRequest,
    ExportZoneResponse, GetMeasurementsRequest, GetStateRequest, ImportZoneRequest, Measurements,
    SetHealthOverrideRequest, State, TargetHealth, WhatIfRequest, WhatIfResult,
};
use tonic::{Request, Response, Status};

use crate::{Scheduler, SchedulerError};

pub(super) struct AdminService {
    scheduler: Arc<Scheduler>,
    /// The GeoIP database explain locates clients with (the frontends' one).
    geo: Option<Arc<isobar_dns::GeoDb>>,
    /// The ASN database explain matches ASN client groups with (the frontends' one).
    asn: Option<Arc<isobar_dns::AsnDb>>,
}

impl AdminService {
    pub(super) fn new(
        scheduler: Arc<Scheduler>,
        geo: Option<Arc<isobar_dns::GeoDb>>,
        asn: Option<Arc<isobar_dns::AsnDb>>,
    ) -> Self {
        Self {
            scheduler,
            geo,
            asn,
        }
    }
}

/// Maps explain / what-if errors onto gRPC codes.
fn explain_status(err: crate::steering::explain::ExplainError) -> Status {
    use crate::steering::explain::ExplainError;
    match &err {
        ExplainError::UnknownService(_) => Status::not_found(err.to_string()),
        ExplainError::Invalid { .. } => Status::invalid_argument(err.to_string()),
        ExplainError::Snapshot(_) | ExplainError::Solve(_) => {
            tracing::error!(error = %err, "internal error");
            Status::internal(err.to_string())
        }
    }
}

/// Who is calling, for the audit log: the `x-isobar-actor` header, else the peer address.
pub(super) fn actor<T>(request: &Request<T>) -> String {
    let named = request
        .metadata()
        .get("x-isobar-actor")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let peer = request
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into());
    match named {
        Some(name) => format!("{name} ({peer})"),
        None => format!("grpc ({peer})"),
    }
}

/// Maps scheduler errors onto gRPC codes.
pub(super) fn status_from(err: SchedulerError) -> Status {
    match &err {
        SchedulerError::Config(_) => Status::invalid_argument(err.to_string()),
        SchedulerError::Policy(crate::placement::PolicyError::UnknownService(_)) => {
            Status::not_found(err.to_string())
        }
        SchedulerError::Policy(_) => Status::invalid_argument(err.to_string()),
        SchedulerError::NoPlacement(_) | SchedulerError::UnknownService(_) => {
            Status::not_found(err.to_string())
        }
        SchedulerError::Zone(crate::zonefile::ZoneError::UnknownZone(_)) => {
            Status::not_found(err.to_string())
        }
        SchedulerError::Zone(_) => Status::invalid_argument(err.to_string()),
        SchedulerError::Store(_) | SchedulerError::Solve(_) => {
            tracing::error!(error = %err, "internal error");
            Status::internal(err.to_string())
        }
    }
}

/// The audited actor: the name the caller gave ("alice via grpc (peer)"), else the peer.
fn named_actor(given: &str, peer_actor: String) -> String {
    if given.is_empty() {
        peer_actor
    } else {
        format!("{given} via {peer_actor}")
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn apply_config(
        &self,
        request: Request<ApplyConfigRequest>,
    ) -> Result<Response<ApplyConfigResponse>, Status> {
        let peer_actor = actor(&request);
        let req = request.into_inner();
        let actor = named_actor(&req.actor, peer_actor);
        let source = if req.source_name.is_empty() {
            "config"
        } else {
            req.source_name.as_str()
        };
        let files: BTreeMap<String, String> = req.files.into_iter().collect();
        let applied = self
            .scheduler
            .apply_config(source, &req.toml, &files, req.dry_run, &actor)
            .await
            .map_err(status_from)?;
        Ok(Response::new(ApplyConfigResponse {
            changed: applied.changed,
            config_version: applied.config_version,
            diff: applied.diff,
        }))
    }

    async fn export_config(
        &self,
        _request: Request<ExportConfigRequest>,
    ) -> Result<Response<ExportConfigResponse>, Status> {
        let (world, config_version) = self.scheduler.world();
        Ok(Response::new(ExportConfigResponse {
            toml: isobar_store::config::to_toml(&world),
            config_version,
        }))
    }

    async fn get_state(
        &self,
        _request: Request<GetStateRequest>,
    ) -> Result<Response<State>, Status> {
        let (_, config_version) = self.scheduler.world();
        let snapshot_version = self.scheduler.watch_snapshots().borrow().version;
        let targets = self
            .scheduler
            .health_report()
            .into_iter()
            .map(|(id, h)| super::health::target_health(id, h))
            .collect();
        let (vantages, health_counters) = super::health::vantages_and_counters(&self.scheduler);
        Ok(Response::new(State {
            config_version,
            snapshot_version,
            targets,
            vantages,
            health_counters,
        }))
    }

    async fn set_health_override(
        &self,
        request: Request<SetHealthOverrideRequest>,
    ) -> Result<Response<TargetHealth>, Status> {
        let peer_actor = actor(&request);
        let req = request.into_inner();
        let actor = named_actor(&req.actor, peer_actor);
        super::health::set_override(&self.scheduler, req, actor)
            .await
            .map(Response::new)
    }

    async fn get_measurements(
        &self,
        request: Request<GetMeasurementsRequest>,
    ) -> Result<Response<Measurements>, Status> {
        Ok(Response::new(super::health::measurements(
            &self.scheduler,
            request.get_ref(),
        )))
    }

    async fn import_zone(
        &self,
        request: Request<ImportZoneRequest>,
    ) -> Result<Response<ApplyConfigResponse>, Status> {
        let peer_actor = actor(&request);
        let req = request.into_inner();
        let actor = named_actor(&req.actor, peer_actor);
        let source = if req.source_name.is_empty() {
            "zone"
        } else {
            &req.source_name
        };
        let zone = Some(req.zone.as_str()).filter(|z| !z.is_empty());
        let applied = self
            .scheduler
            .import_zone(zone, source, &req.text, req.dry_run, &actor)
            .await
            .map_err(status_from)?;
        Ok(Response::new(ApplyConfigResponse {
            changed: applied.changed,
            config_version: applied.config_version,
            diff: applied.diff,
        }))
    }

    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<Explanation>, Status> {
        let req = request.into_inner();
        let query = crate::steering::explain::ExplainQuery::parse(
            &req.name,
            &req.client,
            &req.ecs,
            &req.device,
        )
        .map_err(explain_status)?;
        let scheduler = Arc::clone(&self.scheduler);
        let (geo, asn) = (self.geo.clone(), self.asn.clone());
        // Building an engine over the snapshot is CPU work: keep it off the async workers.
        tokio::task::spawn_blocking(move || scheduler.explain(geo, asn, &query))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map(Response::new)
            .map_err(explain_status)
    }

    async fn what_if(
        &self,
        request: Request<WhatIfRequest>,
    ) -> Result<Response<WhatIfResult>, Status> {
        let req = request.into_inner();
        let scheduler = Arc::clone(&self.scheduler);
        tokio::task::spawn_blocking(move || scheduler.what_if(&req.fail, &req.groups))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map(Response::new)
            .map_err(explain_status)
    }

    async fn confirm_drain(
        &self,
        request: Request<ConfirmDrainRequest>,
    ) -> Result<Response<ConfirmDrainResponse>, Status> {
        let peer_actor = actor(&request);
        let req = request.into_inner();
        let actor = named_actor(&req.actor, peer_actor);
        if req.service.trim().is_empty() {
            return Err(Status::invalid_argument("service: empty"));
        }
        self.scheduler
            .confirm_drain(&req.service, &actor)
            .await
            .map_err(status_from)?;
        Ok(Response::new(ConfirmDrainResponse {
            service: req.service,
        }))
    }

    async fn export_zone(
        &self,
        request: Request<ExportZoneRequest>,
    ) -> Result<Response<ExportZoneResponse>, Status> {
        let (text, config_version) = self
            .scheduler
            .export_zone(&request.get_ref().zone)
            .map_err(status_from)?;
        Ok(Response::new(ExportZoneResponse {
            text,
            config_version,
        }))
    }
}
