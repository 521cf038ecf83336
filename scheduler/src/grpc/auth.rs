//! Bearer-token authentication for the scheduler's gRPC services.

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` on every request when a token is configured.
#[derive(Clone)]
pub struct BearerAuth {
    token: Option<Arc<str>>,
}

/// A listener that would accept state changes from the network without a token.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to listen on {addr} without a token: only loopback listeners may run without one (set a token)"
)]
pub struct ListenerAuthError {
    /// The offending address.
    pub addr: SocketAddr,
}

/// Fails unless `addr` is a loopback address or a token is set.
pub fn check_listener_auth(addr: SocketAddr, token: Option<&str>) -> Result<(), ListenerAuthError> {
    if token.is_some_and(|t| !t.is_empty()) || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(ListenerAuthError { addr })
    }
}

// === impl BearerAuth ===

impl BearerAuth {
    /// `None` (or an empty token) disables the check.
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
        }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
            None => Err(Status::unauthenticated(
                "missing authorization: Bearer <token>",
            )),
        }
    }
}

/// Compares without an early exit, so response timing does not reveal the token prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn with_header(value: Option<&str>) -> Request<()> {
        let mut req = Request::new(());
        if let Some(v) = value {
            req.metadata_mut()
                .insert("authorization", v.parse().expect("ascii"));
        }
        req
    }

    #[test]
    fn token_is_required_when_configured() {
        let mut auth = BearerAuth::new(Some("s3cret".into()));
        assert!(auth.call(with_header(Some("Bearer s3cret"))).is_ok());
        assert_eq!(
            auth.call(with_header(Some("Bearer nope")))
                .map(|_| ())
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            auth.call(with_header(None)).map(|_| ()).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(BearerAuth::new(None).call(with_header(None)).is_ok());
    }

    #[test]
    fn only_loopback_may_run_without_token() {
        assert!(check_listener_auth("127.0.0.1:50051".parse().unwrap(), None).is_ok());
        assert!(check_listener_auth("[::1]:50051".parse().unwrap(), None).is_ok());
        assert!(check_listener_auth("0.0.0.0:50051".parse().unwrap(), None).is_err());
        assert!(check_listener_auth("0.0.0.0:50051".parse().unwrap(), Some("")).is_err());
        assert!(check_listener_auth("0.0.0.0:50051".parse().unwrap(), Some("t")).is_ok());
    }
}
