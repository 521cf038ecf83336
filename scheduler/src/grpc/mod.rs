//! The scheduler's gRPC surface: telemetry ingest, snapshot watch, placement and admin,
//! plus the standard health and reflection services, on one listener.

mod admin;
mod auth;
mod health;
mod placement;
mod steering;
mod telemetry;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use isobar_proto::v1::admin_server::AdminServer;
use isobar_proto::v1::placement_server::PlacementServer;
use isobar_proto::v1::steering_server::SteeringServer;
use isobar_proto::v1::telemetry_server::TelemetryServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

pub use auth::{BearerAuth, ListenerAuthError, check_listener_auth};

use crate::Scheduler;

/// Largest gRPC message accepted (a config apply carries whole zone files).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Serves every scheduler service on `listener` until `shutdown` is cancelled.
///
/// With a token, every Isobar service requires `authorization: Bearer <token>`; health and
/// reflection stay open. Call [`check_listener_auth`] before binding: a listener off
/// loopback must have a token.
pub async fn serve(
    listener: TcpListener,
    scheduler: Arc<Scheduler>,
    token: Option<String>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    serve_tls(listener, scheduler, token, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is set (see [`tls::ServerTls::load`]); plaintext
/// connections to a TLS listener fail their handshake.
pub async fn serve_tls(
    listener: TcpListener,
    scheduler: Arc<Scheduler>,
    token: Option<String>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    serve_with_geo(listener, scheduler, token, tls, None, None, shutdown).await
}

/// [`serve_tls`], with the GeoIP and ASN databases `Admin.Explain` locates clients with:
/// give it the frontends' databases so explain answers exactly as they do.
pub async fn serve_with_geo(
    listener: TcpListener,
    scheduler: Arc<Scheduler>,
    token: Option<String>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    geo: Option<Arc<isobar_dns::GeoDb>>,
    asn: Option<Arc<isobar_dns::AsnDb>>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let auth = BearerAuth::new(token);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for name in [
        "isobar.v1.Telemetry",
        "isobar.v1.Steering",
        "isobar.v1.Placement",
        "isobar.v1.Admin",
        "",
    ] {
        health_reporter
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(isobar_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| panic_free_reflection_error(&e))
        .ok();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(isobar_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| panic_free_reflection_error(&e))
        .ok();

    let telemetry = TelemetryServer::with_interceptor(
        telemetry::TelemetryService::new(Arc::clone(&scheduler), shutdown.clone()),
        auth.clone(),
    );
    let steering = SteeringServer::with_interceptor(
        steering::SteeringService::new(Arc::clone(&scheduler), shutdown.clone()),
        auth.clone(),
    );
    let placement = PlacementServer::with_interceptor(
        placement::PlacementService::new(Arc::clone(&scheduler), shutdown.clone()),
        auth.clone(),
    );
    let admin = AdminServer::new(admin::AdminService::new(Arc::clone(&scheduler), geo, asn))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let admin = tonic::service::interceptor::InterceptedService::new(admin, auth);

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .timeout(std::time::Duration::from_secs(30))
        .concurrency_limit_per_connection(256)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(telemetry)
        .add_service(steering)
        .add_service(placement)
        .add_service(admin)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await
}

fn panic_free_reflection_error(err: &tonic_reflection::server::Error) {
    tracing::error!(error = %err, "gRPC reflection disabled: descriptor set rejected");
}

/// The address a listener will be reachable at, for logs.
pub fn describe(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
