//! HTTP/2 connections (h2c by prior knowledge, or TLS with ALPN `h2`) served on the `h2`
//! crate directly, with the HTTPDNS `GET` routes answered inline.
//!
//! **Why.** Through hyper, every HTTP/2 request became a spawned task running hyper's
//! per-stream future and axum's routing, extractors and handler: ≈ 20 % of the CPU of an
//! HTTPDNS `GET` under load, on top of the `h2` codec itself, which kept HTTP/2 well below
//! nginx (BENCHMARKS.md, "HTTPDNS"). `h2` is the HTTP/2 implementation hyper itself runs on;
//! here we drive its connection ourselves, so the hot route skips the task, hyper's request
//! conversion and the router.
//!
//! **What is answered inline.** A `GET` whose headers end the stream (no body) to `/d` or
//! `/{account}/{d,resolve,sign_d,sign_resolve,ss}` (the routes of [`super::h1`]): the same
//! [`HttpdnsFrontend::answer`] the router's handlers call, with the response headers hyper
//! sends for the router's answer over HTTP/2, in its order (`content-type`,
//! `cache-control`, `retry-after` on a 429, `content-length`, `date`). Requests that arrive
//! together are answered together after the connection has read all it can, so their
//! responses leave in one write, as hyper's did.
//!
//! **Everything else** — DoH, `/metrics`, RUM reports, `/healthz`, other methods, requests
//! with a body, unknown paths — runs the router in a task of its own, as under hyper: the
//! request body is read through [`RecvBody`] (which returns flow-control capacity as the
//! router consumes data, and passes trailers), and the response is sent as hyper's
//! `H2Stream` does it (connection headers stripped, `date` and `content-length` added,
//! data sent as the peer's window allows, then trailers); a client's `RST_STREAM` drops the
//! handler.
//!
//! **Bounds.** hyper's HTTP/2 server settings: at most [`MAX_CONCURRENT_STREAMS`] streams
//! per connection (so at most that many answers or tasks in flight), 16 KiB of request
//! headers, 1 MiB receive windows, a 400 KiB send buffer per stream. The connection
//! preface must arrive within the handshake timeout. On shutdown the connection sends
//! `GOAWAY`, finishes the streams it accepted for up to the drain timeout, then closes.

use std::cell::RefCell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::h2::server::SendResponse;
use ::h2::{Reason, RecvStream, SendStream};
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, Request, Response, StatusCode};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::debug;

use super::alibaba::Reply;
use super::h1::{route, uri_char};
use super::metrics::Code;
use super::{DEVICE_HEADER, HttpdnsFrontend};

/// The client connection preface of h2c by prior knowledge (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Concurrent streams a client may open on one connection (hyper's default).
pub const MAX_CONCURRENT_STREAMS: u32 = 200;
/// The largest request header list accepted, in HPACK-decoded bytes (hyper's default).
pub const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Receive windows, per stream and per connection (hyper's defaults).
const WINDOW: u32 = 1024 * 1024;
/// Largest frame we accept (the protocol's default, as hyper).
const MAX_FRAME_SIZE: u32 = 16 * 1024;
/// Response bytes buffered per stream beyond the peer's window (hyper's default).
const MAX_SEND_BUFFER: usize = 400 * 1024;
/// Streams we may reset for protocol errors before the connection is closed (hyper's).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The streams accepted but not answered yet: at most [`MAX_CONCURRENT_STREAMS`].
type Accepted = Vec<(Request<RecvStream>, SendResponse<Bytes>)>;

/// Serves one HTTP/2 connection from `peer` (its preface not read yet) until it closes, or
/// until `stop`, after which it drains for up to `drain_timeout`.
pub async fn serve<S>(
    io: S,
    peer: SocketAddr,
    frontend: &HttpdnsFrontend,
    router: &Router,
    handshake_timeout: Duration,
    drain_timeout: Duration,
    stop: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = ::h2::server::Builder::new()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .handshake::<_, Bytes>(io);
    let mut conn = tokio::select! {
        done = tokio::time::timeout(handshake_timeout, handshake) => match done {
            Ok(Ok(conn)) => conn,
            Ok(Err(err)) => {
                debug!(%peer, error = %err, "HTTP/2 handshake failed");
                return;
            }
            Err(_) => {
                debug!(%peer, "HTTP/2 handshake timed out");
                return;
            }
        },
        () = stop.cancelled() => return,
    };
    let streams = Streams {
        peer,
        frontend,
        router,
        tasks: TaskTracker::new(),
    };
    let mut accepted: Accepted = Vec::new();
    let stopped = tokio::select! {
        () = poll_fn(|cx| streams.poll_serve(&mut conn, &mut accepted, cx)) => false,
        () = stop.cancelled() => true,
    };
    if stopped {
        conn.graceful_shutdown();
        let drain = poll_fn(|cx| streams.poll_serve(&mut conn, &mut accepted, cx));
        if tokio::time::timeout(drain_timeout, drain).await.is_err() {
            debug!(%peer, "HTTP/2 connection still busy after the drain timeout");
        }
    }
    drop(conn);
    // The router's tasks end once their streams are gone; wait for the ones running.
    streams.tasks.close();
    let _ = tokio::time::timeout(drain_timeout, streams.tasks.wait()).await;
}

/// What answering a connection's streams needs.
struct Streams<'a> {
    peer: SocketAddr,
    frontend: &'a HttpdnsFrontend,
    router: &'a Router,
    /// The router's tasks for this connection's streams.
    tasks: TaskTracker,
}

impl Streams<'_> {
    /// Drives the connection until it closes: takes every stream the peer has opened, and
    /// when the connection has nothing more to read, answers them (so the answers go out
    /// in the connection's next write, together).
    fn poll_serve<S>(
        &self,
        conn: &mut ::h2::server::Connection<S, Bytes>,
        accepted: &mut Accepted,
        cx: &mut Context<'_>,
    ) -> Poll<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok(stream))) => accepted.push(stream),
                Poll::Ready(Some(Err(err))) => {
                    debug!(peer = %self.peer, error = %err, "HTTP/2 connection error");
                    return Poll::Ready(());
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending if accepted.is_empty() => return Poll::Pending,
                // Polling again writes the answers out.
                Poll::Pending => {
                    for (request, respond) in accepted.drain(..) {
                        self.respond(request, respond);
                    }
                }
            }
        }
    }

    /// Answers a fast-path request inline, or starts the router on any other.
    fn respond(&self, request: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let fast = (request.method() == Method::GET && request.body().is_end_stream())
            .then(|| request.uri().path())
            .filter(|path| path.bytes().all(uri_char))
            .and_then(route);
        let Some((account, endpoint)) = fast else {
            let router = self.router.clone();
            self.tasks
                .spawn(serve_router(router, self.peer, request, respond));
            return;
        };
        // As the router's handler reads the request (`HttpdnsFrontend::handle`).
        let device_header = request
            .headers()
            .get(DEVICE_HEADER)
            .map(|v| v.to_str().unwrap_or("\u{0}"));
        let query = request.uri().query().unwrap_or_default();
        let reply = self
            .frontend
            .answer(endpoint, account, self.peer.ip(), query, device_header);
        let empty = reply.body.is_empty();
        let head = response_head(&reply);
        match respond.send_response(head, empty) {
            Ok(mut body) if !empty => {
                // Buffered by `h2` until the peer's window takes it (a few hundred bytes).
                let _ = body.send_data(Bytes::from(reply.body), true);
            }
            Ok(_) => {}
            Err(err) => {
                debug!(peer = %self.peer, error = %err, "HTTP/2 response not sent");
                respond.send_reset(Reason::INTERNAL_ERROR);
            }
        }
    }
}

/// The response head hyper sends over HTTP/2 for the router's answer to `reply`
/// (`into_response` in the parent module, then the `content-length` axum's route sets,
/// then hyper's `date`).
fn response_head(reply: &Reply) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() =
        StatusCode::from_u16(reply.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.reserve(5);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let cache = if reply.code == Code::Ok {
        max_age(reply.max_age)
    } else {
        HeaderValue::from_static("no-store")
    };
    headers.insert(header::CACHE_CONTROL, cache);
    if reply.retry_after > 0 {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(reply.retry_after));
    }
    if !reply.body.is_empty() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(reply.body.len()));
    }
    headers.insert(header::DATE, date());
    response
}

/// `max-age=<seconds>`.
fn max_age(seconds: u32) -> HeaderValue {
    let mut text = String::with_capacity(8 + 10);
    text.push_str("max-age=");
    text.push_str(itoa::Buffer::new().format(seconds));
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("max-age=0"))
}

thread_local! {
    /// The `date` value of the current second (built once per second per thread).
    static DATE: RefCell<(u64, HeaderValue)> =
        const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
}

/// The current `date` header value, in hyper's format.
fn date() -> HeaderValue {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, value)| {
        if *cached != second
            && let Ok(fresh) = HeaderValue::from_str(&httpdate::fmt_http_date(now))
        {
            *cached = second;
            *value = fresh;
        }
        value.clone()
    })
}

/// Runs the router on one request and sends its response, as hyper's `H2Stream` does.
async fn serve_router(
    router: Router,
    peer: SocketAddr,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let content_length = content_length(request.headers());
    let (mut parts, recv) = request.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    let body = RecvBody::new(recv, content_length);
    let request = Request::from_parts(parts, axum::body::Body::new(body));
    let mut handler = pin!(router.oneshot(request));
    // The handler is dropped if the client resets the stream meanwhile.
    let response = poll_fn(|cx| {
        if let Poll::Ready(response) = handler.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        respond.poll_reset(cx).map(|_| None)
    })
    .await;
    let Some(Ok(response)) = response else {
        return;
    };
    let (mut parts, body) = response.into_parts();
    strip_connection_headers(&mut parts.headers);
    parts.headers.entry(header::DATE).or_insert_with(date);
    let empty = body.is_end_stream();
    if !empty && let Some(len) = body.size_hint().exact() {
        parts
            .headers
            .entry(header::CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(len));
    }
    match respond.send_response(Response::from_parts(parts, ()), empty) {
        Ok(send) if !empty => {
            if let Err(err) = pipe(body, send).await {
                debug!(%peer, error = %err, "HTTP/2 response body not sent");
            }
        }
        Ok(_) => {}
        Err(err) => {
            debug!(%peer, error = %err, "HTTP/2 response not sent");
            respond.send_reset(Reason::INTERNAL_ERROR);
        }
    }
}

/// Sends `body` on `send` as the peer's window allows (hyper's `PipeToSendStream`): each
/// data frame waits for some send capacity, so at most one frame beyond the window is
/// buffered; trailers end the stream when the body has them.
async fn pipe(body: axum::body::Body, mut send: SendStream<Bytes>) -> Result<(), axum::BoxError> {
    let mut body = pin!(body);
    loop {
        let frame = poll_fn(|cx| {
            if let Poll::Ready(reason) = send.poll_reset(cx) {
                return Poll::Ready(Err(reset_error(reason)));
            }
            body.as_mut().poll_frame(cx).map(Ok)
        })
        .await?;
        let frame = match frame {
            None => return Ok(send.send_data(Bytes::new(), true)?),
            Some(Err(err)) => {
                send.send_reset(Reason::INTERNAL_ERROR);
                return Err(err.into());
            }
            Some(Ok(frame)) => frame,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.reserve_capacity(0);
                    send.send_trailers(trailers)?;
                    return Ok(());
                }
                continue;
            }
        };
        let end = body.is_end_stream();
        if !data.is_empty() {
            // A small claim: `send_data` raises it to what it buffers.
            send.reserve_capacity(1);
            poll_fn(|cx| {
                while send.capacity() == 0 {
                    if let Poll::Ready(reason) = send.poll_reset(cx) {
                        return Poll::Ready(Err(reset_error(reason)));
                    }
                    match ready!(send.poll_capacity(cx)) {
                        Some(Ok(_)) => {}
                        Some(Err(err)) => return Poll::Ready(Err(err.into())),
                        None => return Poll::Ready(Err("HTTP/2 stream closed".into())),
                    }
                }
                Poll::Ready(Ok(()))
            })
            .await?;
        }
        send.send_data(data, end)?;
        if end {
            return Ok(());
        }
    }
}

fn reset_error(reason: Result<Reason, ::h2::Error>) -> axum::BoxError {
    match reason {
        Ok(reason) => ::h2::Error::from(reason).into(),
        Err(err) => err.into(),
    }
}

/// hyper's `content_length_parse_all`: the `content-length` when every value agrees.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.to_str().ok()?.split(',') {
            let n: u64 = part.trim().parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

/// Removes the headers HTTP/2 forbids in a response, as hyper does (RFC 9113 §8.2.2).
fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in [
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
    ] {
        headers.remove(name);
    }
    if let Some(connection) = headers.remove(header::CONNECTION)
        && let Ok(names) = connection.to_str()
    {
        for name in names.split(',') {
            headers.remove(name.trim());
        }
    }
}

/// A request body read from an HTTP/2 stream, as hyper's `Incoming`: data frames, then
/// trailers; each frame's bytes are released to the peer's window once handed over.
pub struct RecvBody {
    recv: RecvStream,
    data_done: bool,
    /// Bytes still announced by `content-length`.
    remaining: Option<u64>,
}

impl RecvBody {
    /// The body of a stream whose request announced `content_length`.
    pub fn new(recv: RecvStream, content_length: Option<u64>) -> Self {
        let remaining = content_length.or_else(|| recv.is_end_stream().then_some(0));
        Self {
            recv,
            data_done: false,
            remaining,
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = ::h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ::h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(remaining) = &mut this.remaining {
                        *remaining = remaining.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // RST_STREAM(NO_ERROR) after an early response ends the body (RFC 9113
                // §8.1), as in hyper.
                Some(Err(err)) if err.reason() == Some(Reason::NO_ERROR) => {
                    return Poll::Ready(None);
                }
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(err) if err.reason() == Some(Reason::NO_ERROR) => Poll::Ready(None),
            Err(err) => Poll::Ready(Some(Err(err))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_carry_hyper_s_headers_in_hyper_s_order() {
        let ok = Reply {
            code: Code::Ok,
            body: "{}".into(),
            max_age: 42,
            retry_after: 0,
        };
        let head = response_head(&ok);
        let names: Vec<_> = head.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["content-type", "cache-control", "content-length", "date"]
        );
        assert_eq!(head.headers()["cache-control"], "max-age=42");
        assert_eq!(head.headers()["content-length"], "2");
        let limited = Reply {
            code: Code::TooManyRequests,
            body: "{}".into(),
            max_age: 0,
            retry_after: 3,
        };
        let head = response_head(&limited);
        assert_eq!(head.status(), 429);
        let names: Vec<_> = head.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "cache-control",
                "retry-after",
                "content-length",
                "date"
            ]
        );
        assert_eq!(head.headers()["cache-control"], "no-store");
        assert_eq!(max_age(0), "max-age=0");
        assert_eq!(max_age(u32::MAX), "max-age=4294967295");
    }

    #[test]
    fn content_length_is_read_as_hyper_does() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_length(&headers), None);
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(content_length(&headers), Some(5));
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("5, 5"));
        assert_eq!(content_length(&headers), Some(5));
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("6"));
        assert_eq!(content_length(&headers), None);
    }
}
