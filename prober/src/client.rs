//! Connections to the scheduler: the bearer-token interceptor and the connect step.

use isobar_proto::v1::telemetry_client::TelemetryClient;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::ProberError;

/// A Telemetry client whose every request carries the configured credentials.
pub(crate) type Client = TelemetryClient<InterceptedService<Channel, BearerAuth>>;

/// Why a stream to the scheduler ended; always followed by a reconnect.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// No connection could be established.
    #[error("connect to scheduler: {0}")]
    Connect(#[source] tonic::transport::Error),
    /// The scheduler rejected or broke off the stream.
    #[error("stream failed: {}: {}", .0.code(), .0.message())]
    Stream(#[source] Status),
    /// The scheduler ended a stream it should keep open.
    #[error("scheduler closed the stream")]
    Closed,
}

impl LinkError {
    /// Logs the failure; credential problems are errors because only an operator can fix them.
    pub(crate) fn log(&self, stream: &'static str) {
        match self {
            Self::Stream(s)
                if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) =>
            {
                tracing::error!(stream, error = %self, "scheduler refused the prober's credentials");
            }
            _ => tracing::warn!(stream, error = %self, "scheduler stream lost, reconnecting"),
        }
    }
}

/// Opens a fresh connection, or returns `None` if `shutdown` fires first.
///
/// Each stream gets its own connection so one failing never tears down the other; the endpoint
/// bounds the attempt with its connect timeout.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    auth: &BearerAuth,
    shutdown: &CancellationToken,
) -> Option<Result<Client, LinkError>> {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => None,
        res = endpoint.connect() => Some(
            res.map(|ch| TelemetryClient::with_interceptor(ch, auth.clone()))
                .map_err(LinkError::Connect),
        ),
    }
}

/// Adds `authorization: Bearer <token>` to each request when a token is configured.
///
/// The header value is built once at startup so a malformed token fails `run` instead of every
/// request.
#[derive(Clone, Debug)]
pub(crate) struct BearerAuth {
    header: Option<MetadataValue<Ascii>>,
}

impl BearerAuth {
    pub(crate) fn new(token: Option<&str>) -> Result<Self, ProberError> {
        let header = token
            .map(|t| {
                let mut value: MetadataValue<Ascii> = format!("Bearer {t}")
                    .parse()
                    .map_err(|_| ProberError::InvalidToken)?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        Ok(Self { header })
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_header_only_with_token() {
        let mut with = BearerAuth::new(Some("abc")).unwrap();
        let req = with.call(Request::new(())).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer abc");

        let mut without = BearerAuth::new(None).unwrap();
        let req = without.call(Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
    }

    #[test]
    fn rejects_token_with_newline() {
        assert!(matches!(
            BearerAuth::new(Some("a\nb")),
            Err(ProberError::InvalidToken)
        ));
    }
}
