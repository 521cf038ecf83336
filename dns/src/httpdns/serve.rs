//! Serving the frontend's HTTP routes: HTTP/1.1 keep-alive and HTTP/2 on one port, plain
//! (h2c by prior knowledge) or over TLS (rustls, ALPN `h2` / `http/1.1`).
//!
//! The accept loop is ours so that it is bounded: at most [`MAX_CONNECTIONS`] open
//! connections (more are closed at once), TLS handshakes time out after
//! [`HANDSHAKE_TIMEOUT`], HTTP/1 headers after [`HEADER_TIMEOUT`]; on shutdown, connections
//! finish their in-flight requests for up to [`DRAIN_TIMEOUT`]. Connections are served by
//! hyper-util's protocol-sniffing builder and TLS by tokio-rustls (both from the hyper and
//! rustls projects, already what tonic and reqwest run on), with the `ring` provider.
//!
//! With an HTTPDNS frontend ([`serve_with`]), HTTP/1.x connections (plain, or TLS without
//! ALPN `h2`) start in [`super::h1`]'s fast path, which answers the HTTPDNS `GET` routes
//! itself and hands the connection to hyper, unread bytes included, at the first other
//! request; HTTP/2 connections (the h2c preface, or TLS with ALPN `h2`) are served by
//! [`super::h2`] on the `h2` crate, which answers those routes inline and runs the router
//! for the others. Without a frontend ([`serve`]), hyper serves every connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::future::RouteFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::{HttpdnsFrontend, h1, h2};

/// Open connections at most; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 10_000;
/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/1 request headers must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(String),
    /// The key file holds no PEM private key.
    #[error("{0}: no PEM private key found")]
    NoKey(String),
    /// rustls refused the pair.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A server config from PEM files, offering `h2` then `http/1.1` over ALPN.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|error| TlsError::Read {
            path: p.display().to_string(),
            error,
        })
    };
    tls_config(
        &read(cert)?,
        &read(key)?,
        &cert.display().to_string(),
        &key.display().to_string(),
    )
}

/// A server config from PEM text (`cert_name` and `key_name` name them in errors).
pub fn tls_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_name: &str,
    key_name: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate(cert_name.to_owned()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_name.to_owned()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey(key_name.to_owned()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` on `listener` (TLS when `tls` is set) until `shutdown`, then drains.
/// Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<ServerConfig>>,
    shutdown: CancellationToken,
) {
    serve_with(listener, router, None, tls, shutdown).await;
}

/// [`serve`], with `httpdns`'s `GET` routes answered by the fast paths ([`super::h1`] on
/// HTTP/1.x, [`super::h2`] on HTTP/2) instead of `router` (which must route them to the
/// same frontend).
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    httpdns: Option<Arc<HttpdnsFrontend>>,
    tls: Option<Arc<ServerConfig>>,
    shutdown: CancellationToken,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tasks = TaskTracker::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builders = Arc::new(Builders {
        h1: builder.clone().http1_only(),
        auto: builder,
    });
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %err, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "HTTP connection limit reached; closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let builders = Arc::clone(&builders);
        let acceptor = acceptor.clone();
        let stop = shutdown.clone();
        let httpdns = httpdns.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let conn = Conn {
                builders: &builders,
                peer,
                fast: httpdns.as_deref(),
                router,
                stop: &stop,
            };
            match acceptor {
                None => conn.serve(stream, false).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                            conn.serve(tls, h2).await;
                        }
                        Ok(Err(err)) => debug!(%peer, error = %err, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        debug!("HTTP connections still open after the drain timeout");
    }
}

/// hyper's connection builders: `auto` sniffs HTTP/2's preface, `h1` is for a connection
/// the fast path already spoke HTTP/1 on.
struct Builders {
    auto: Builder<TokioExecutor>,
    h1: Builder<TokioExecutor>,
}

/// One accepted connection and what serving it needs.
struct Conn<'a> {
    builders: &'a Builders,
    peer: SocketAddr,
    /// The HTTPDNS frontend of the fast paths, if any.
    fast: Option<&'a HttpdnsFrontend>,
    router: Router,
    stop: &'a CancellationToken,
}

impl Conn<'_> {
    /// Serves the connection: through the fast paths when there is a frontend (HTTP/2 when
    /// ALPN chose `h2` or the client opens with the h2c preface, else HTTP/1 until a
    /// request it does not take), else through hyper.
    async fn serve<S>(self, io: S, alpn_h2: bool)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(frontend) = self.fast else {
            return self.hyper(&self.builders.auto, io).await;
        };
        if alpn_h2 {
            return self.h2(frontend, io).await;
        }
        match h1::serve(io, self.peer.ip(), frontend, HEADER_TIMEOUT, self.stop).await {
            h1::End::Closed => {}
            h1::End::Http2 { io } => self.h2(frontend, io).await,
            h1::End::HandOver { io, answered } => {
                let builder = if answered {
                    &self.builders.h1
                } else {
                    &self.builders.auto
                };
                self.hyper(builder, io).await;
            }
        }
    }

    /// Serves an HTTP/2 connection (its preface not read yet) with [`super::h2`].
    async fn h2<S>(&self, frontend: &HttpdnsFrontend, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        h2::serve(
            io,
            self.peer,
            frontend,
            &self.router,
            HANDSHAKE_TIMEOUT,
            DRAIN_TIMEOUT,
            self.stop,
        )
        .await;
    }

    /// Serves the connection (from its next unread byte) with hyper and the router.
    async fn hyper<S>(&self, builder: &Builder<TokioExecutor>, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = connection_service(self.router.clone(), self.peer);
        drive(builder, TokioIo::new(io), service, self.stop).await;
    }
}

/// Serves one connection; on shutdown, stops taking requests and finishes the current ones.
async fn drive<I>(
    builder: &Builder<TokioExecutor>,
    io: I,
    service: ConnService,
    stop: &CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

type ConnService = TowerToHyperService<WithPeer>;

fn connection_service(router: Router, peer: SocketAddr) -> ConnService {
    TowerToHyperService::new(WithPeer { router, peer })
}

/// The router, with the connection's peer added to every request as `ConnectInfo`.
#[derive(Clone)]
struct WithPeer {
    router: Router,
    peer: SocketAddr,
}

impl tower::Service<hyper::Request<Incoming>> for WithPeer {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<hyper::Request<Incoming>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut req: hyper::Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        self.router.call(req)
    }
}
