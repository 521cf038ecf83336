//! A hand-written HTTP/1.x fast path for the HTTPDNS `GET` routes, below hyper and axum.
//!
//! **Why.** An HTTPDNS answer costs the engine a few hundred nanoseconds, but through hyper's
//! HTTP/1 dispatcher and axum it cost ≈ 4–5 µs of user space per request (request and header
//! map allocation, routing, extensions, the per-request header-read timer, the encoder),
//! which kept HTTP/1.1 keep-alive below 0.8× nginx (BENCHMARKS.md, "HTTPDNS"). Here a
//! request is parsed in place with `httparse`, answered by the same
//! [`HttpdnsFrontend::answer`] the router's handlers call, and its response written into one
//! reused buffer: one read and one write per request, or per batch of pipelined requests.
//!
//! **What it covers.** `GET /d` and `GET /{account}/{d,resolve,sign_d,sign_resolve,ss}`
//! over HTTP/1.0 and 1.1, plain or over TLS without ALPN `h2`: no body (no
//! `Transfer-Encoding`, no `Content-Length` but `0`), no `Expect`, no `Upgrade`, an
//! origin-form target made only of URI characters (`#` and non-ASCII excluded). Responses
//! carry the headers hyper writes for the router's answer (`content-type`, `cache-control`,
//! `retry-after` on a 429, `content-length`, `connection` when hyper adds it, `date`), in
//! its order; keep-alive follows hyper's rules (HTTP/1.1 unless `Connection: close`,
//! HTTP/1.0 only with `Connection: keep-alive`); pipelined requests are answered in order.
//!
//! **Everything else is handed over.** At the first request that is not one of those — any
//! other method or path, a body, a parse error, a head over [`MAX_HEAD`] bytes or
//! [`MAX_HEADERS`] headers — the connection goes to hyper with every byte not yet consumed
//! ([`End::HandOver`], read back through [`Replay`]), so the rest of the routes (DoH,
//! `/metrics`, RUM reports, `/healthz`) and hyper's error answers (400, 431) are exactly
//! what they were. A connection that opens with the HTTP/2 preface (h2c by prior knowledge)
//! leaves at once as [`End::Http2`], for [`super::h2`]; TLS with ALPN `h2` never enters here.
//!
//! **Timeouts.** A connection must deliver each complete request head within the header
//! timeout of when we started waiting for it (hyper's `header_read_timeout` semantics, idle
//! keep-alive included), but the timer is not re-armed per request: one sleep per
//! connection fires at the earliest possible deadline and, if requests completed since, is
//! moved to the current one. On shutdown the current request is answered with
//! `connection: close` and the connection closes; an idle one closes at once.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::alibaba::Reply;
use super::h2::PREFACE;
use super::metrics::{Code, Endpoint};
use super::{DEVICE_HEADER, HttpdnsFrontend};

/// The longest request head the fast path waits for; a longer one is handed to hyper
/// (which has its own, larger limit and answers 431 beyond it).
pub const MAX_HEAD: usize = 16 * 1024;
/// The most header lines the fast path parses; more hand the request to hyper.
pub const MAX_HEADERS: usize = 64;
/// Spare room ensured before each read.
const READ_CHUNK: usize = 4096;

/// How a connection left the fast path.
pub enum End<S> {
    /// Closed: EOF, an I/O error, a timeout, `Connection: close`, or shutdown.
    Closed,
    /// The connection opened with the HTTP/2 preface (h2c by prior knowledge): `io`
    /// replays it, for [`super::h2`].
    Http2 {
        /// The connection, with the bytes read so far (the preface first) in front.
        io: Replay<S>,
    },
    /// The rest is for hyper: `io` replays the bytes not consumed yet.
    HandOver {
        /// The connection, with the unconsumed bytes in front.
        io: Replay<S>,
        /// Whether the fast path answered requests first (then only HTTP/1 may follow;
        /// otherwise the bytes may be an HTTP/2 preface).
        answered: bool,
    },
}

/// Serves HTTPDNS requests from `io` (a fresh connection from `peer`) until the
/// connection ends or a request needs hyper.
pub async fn serve<S>(
    mut io: S,
    peer: IpAddr,
    frontend: &HttpdnsFrontend,
    header_timeout: Duration,
    stop: &CancellationToken,
) -> End<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(512);
    let mut answered = false;
    let mut waiting_since = Instant::now();
    let deadline = tokio::time::sleep_until((waiting_since + header_timeout).into());
    tokio::pin!(deadline);
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    loop {
        // Answer every complete request in the buffer, in order.
        let mut start = 0;
        let mut close = false;
        let mut hand_over = false;
        let mut progressed = false;
        while start < buf.len() {
            match next(&buf[start..]) {
                Next::Partial => {
                    hand_over = buf.len() - start >= MAX_HEAD;
                    break;
                }
                Next::Other => {
                    // A connection's first bytes may be (the start of) the HTTP/2 preface.
                    let preface = !answered && start == 0;
                    if preface && buf.starts_with(PREFACE) {
                        return End::Http2 {
                            io: Replay::new(buf, io),
                        };
                    }
                    hand_over = !(preface && PREFACE.starts_with(&buf));
                    break;
                }
                Next::Get(req) => {
                    let keep_alive = req.keep_alive && !stop.is_cancelled();
                    let reply = frontend.answer(
                        req.endpoint,
                        req.account,
                        peer,
                        req.query,
                        req.device_header,
                    );
                    encode(&mut out, &reply, req.http10, keep_alive);
                    start += req.len;
                    progressed = true;
                    if !keep_alive {
                        close = true;
                        break;
                    }
                }
            }
        }
        buf.drain(..start);
        answered |= progressed;
        if !out.is_empty() {
            if io.write_all(&out).await.is_err() || io.flush().await.is_err() {
                return End::Closed;
            }
            out.clear();
        }
        if close {
            let _ = io.shutdown().await;
            return End::Closed;
        }
        if hand_over {
            return End::HandOver {
                io: Replay::new(buf, io),
                answered,
            };
        }
        if progressed {
            waiting_since = Instant::now();
        }
        // Wait for more bytes, the header deadline or shutdown.
        buf.reserve(READ_CHUNK);
        loop {
            tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => match read {
                    Ok(n) if n > 0 => break,
                    _ => return End::Closed,
                },
                () = &mut deadline => {
                    let due = waiting_since + header_timeout;
                    if Instant::now() >= due {
                        return End::Closed;
                    }
                    deadline.as_mut().reset(due.into());
                }
                () = &mut cancelled => return End::Closed,
            }
        }
    }
}

/// One request the fast path answers; borrows the read buffer.
struct Get<'b> {
    /// Bytes of the head (the whole request: it has no body).
    len: usize,
    endpoint: Endpoint,
    account: Option<&'b str>,
    query: &'b str,
    device_header: Option<&'b str>,
    http10: bool,
    keep_alive: bool,
}

enum Next<'b> {
    /// A request for the fast path.
    Get(Get<'b>),
    /// The head is not complete yet.
    Partial,
    /// Anything else: hyper's.
    Other,
}

/// Classifies the request at the start of `pending` (not empty).
fn next(pending: &[u8]) -> Next<'_> {
    // Any other method goes to hyper without waiting for the whole head.
    let n = pending.len().min(4);
    if pending[..n] != b"GET "[..n] {
        return Next::Other;
    }
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(pending, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Next::Partial,
        Err(_) => return Next::Other,
    };
    let (Some(target), Some(version)) = (req.path, req.version) else {
        return Next::Other;
    };
    if !target.bytes().all(uri_char) {
        return Next::Other;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some((account, endpoint)) = route(path) else {
        return Next::Other;
    };
    // hyper's keep-alive rules (proto/h1/role.rs): HTTP/1.1 unless a `Connection` line says
    // `close`; HTTP/1.0 only with `keep-alive`; a `close` is never undone.
    let http10 = version == 0;
    let mut keep_alive = !http10;
    let mut saw_close = false;
    let mut device_header = None;
    for header in req.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("connection") {
            if saw_close || has_token(header.value, "close") {
                saw_close = true;
                keep_alive = false;
            } else if !keep_alive {
                keep_alive = has_token(header.value, "keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if header.value != b"0" {
                return Next::Other;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return Next::Other;
        } else if device_header.is_none() && name.eq_ignore_ascii_case(DEVICE_HEADER) {
            // As `HeaderValue::to_str` in the router's handler: visible ASCII, else "\0".
            device_header = Some(visible_ascii(header.value).unwrap_or("\u{0}"));
        }
    }
    Next::Get(Get {
        len,
        endpoint,
        account,
        query,
        device_header,
        http10,
        keep_alive,
    })
}

/// The endpoint of an HTTPDNS path, as the router matches it: `/d`, or `/{account}/{name}`
/// with a non-empty account segment (raw, not percent-decoded, as the handlers read it).
pub(super) fn route(path: &str) -> Option<(Option<&str>, Endpoint)> {
    let rest = path.strip_prefix('/')?;
    let Some((account, name)) = rest.split_once('/') else {
        return (rest == "d").then_some((None, Endpoint::D));
    };
    if account.is_empty() {
        return None;
    }
    let endpoint = match name {
        "d" => Endpoint::D,
        "resolve" => Endpoint::Resolve,
        "sign_d" => Endpoint::SignD,
        "sign_resolve" => Endpoint::SignResolve,
        "ss" => Endpoint::Ss,
        _ => return None,
    };
    Some((Some(account), endpoint))
}

/// RFC 3986 characters of a path and query (unreserved, sub-delims, `:@/?%`): a subset of
/// what `http::Uri` accepts, so a target the fast path takes means the same to the router.
pub(super) fn uri_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'?'
                | b'%'
        )
}

/// `value` as text when it is visible ASCII or tabs (what `HeaderValue::to_str` accepts).
fn visible_ascii(value: &[u8]) -> Option<&str> {
    if value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

/// Whether a comma-separated header value holds `token` (case-insensitive), as hyper reads
/// `Connection`.
fn has_token(value: &[u8], token: &str) -> bool {
    visible_ascii(value).is_some_and(|text| {
        text.split(',')
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    })
}

/// Appends the response to `reply`, with hyper's status line, header names and order.
fn encode(out: &mut Vec<u8>, reply: &Reply, http10: bool, keep_alive: bool) {
    let status = reply.code.status();
    if status == 200 && !http10 {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        push_number(out, u64::from(status));
        out.push(b' ');
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("<none>");
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-type: application/json\r\ncache-control: ");
    if reply.code == Code::Ok {
        out.extend_from_slice(b"max-age=");
        push_number(out, u64::from(reply.max_age));
    } else {
        out.extend_from_slice(b"no-store");
    }
    out.extend_from_slice(b"\r\n");
    if reply.retry_after > 0 {
        out.extend_from_slice(b"retry-after: ");
        push_number(out, u64::from(reply.retry_after));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    push_number(out, reply.body.len() as u64);
    out.extend_from_slice(b"\r\n");
    match (http10, keep_alive) {
        (true, true) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        (false, false) => out.extend_from_slice(b"connection: close\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"date: ");
    push_date(out);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(reply.body.as_bytes());
}

fn push_number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

thread_local! {
    /// The `date` value of the current second (formatted once per second per thread).
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            *cached = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// A connection with bytes already read from it in front: reads return those first, then
/// read the connection; writes go straight through.
pub struct Replay<S> {
    head: Vec<u8>,
    pos: usize,
    io: S,
}

impl<S> Replay<S> {
    /// `io`, whose next reads return `head` first.
    pub fn new(head: Vec<u8>, io: S) -> Self {
        Self { head, pos: 0, io }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.head.len() {
            let n = (this.head.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.head.len() {
                this.head = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(raw: &[u8]) -> Get<'_> {
        match next(raw) {
            Next::Get(g) => g,
            Next::Partial => panic!("partial: {:?}", String::from_utf8_lossy(raw)),
            Next::Other => panic!("other: {:?}", String::from_utf8_lossy(raw)),
        }
    }

    fn is_other(raw: &[u8]) -> bool {
        matches!(next(raw), Next::Other)
    }

    #[test]
    fn httpdns_gets_are_taken_with_their_account_query_and_device() {
        let raw = b"GET /acc/d?host=a.test&ip=1.2.3.4 HTTP/1.1\r\nHost: x\r\nX-Device-Id: dev-1\r\n\r\nGET";
        let g = get(raw);
        assert_eq!(g.len, raw.len() - 3);
        assert_eq!(g.endpoint, Endpoint::D);
        assert_eq!(g.account, Some("acc"));
        assert_eq!(g.query, "host=a.test&ip=1.2.3.4");
        assert_eq!(g.device_header, Some("dev-1"));
        assert!(g.keep_alive && !g.http10);
        let g = get(b"GET /d?host=a HTTP/1.1\r\n\r\n");
        assert_eq!((g.account, g.endpoint), (None, Endpoint::D));
        for (path, endpoint) in [
            ("resolve", Endpoint::Resolve),
            ("sign_d", Endpoint::SignD),
            ("sign_resolve", Endpoint::SignResolve),
            ("ss", Endpoint::Ss),
        ] {
            let raw = format!("GET /a/{path} HTTP/1.1\r\n\r\n");
            let g = get(raw.as_bytes());
            assert_eq!((g.account, g.endpoint, g.query), (Some("a"), endpoint, ""));
        }
        // A device id that is not visible ASCII reaches the handler as "\0", as through axum.
        let g = get(b"GET /a/d HTTP/1.1\r\nx-device-id: \xff\r\n\r\n");
        assert_eq!(g.device_header, Some("\u{0}"));
    }

    #[test]
    fn keep_alive_follows_hyper() {
        assert!(!get(b"GET /a/d HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(
            !get(b"GET /a/d HTTP/1.1\r\nConnection: Close\r\nConnection: keep-alive\r\n\r\n")
                .keep_alive
        );
        let g = get(b"GET /a/d HTTP/1.0\r\n\r\n");
        assert!(g.http10 && !g.keep_alive);
        assert!(get(b"GET /a/d HTTP/1.0\r\nConnection: foo, Keep-Alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn everything_else_is_for_hyper_and_partial_heads_wait() {
        assert!(matches!(next(b"GE"), Next::Partial));
        assert!(matches!(next(b"GET /a/d HTTP/1.1\r\nHost"), Next::Partial));
        assert!(is_other(b"POST /a/report HTTP/1.1\r\n"));
        assert!(is_other(b"HEAD /a/d HTTP/1.1\r\n\r\n"));
        assert!(is_other(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        for path in [
            "/dns-query?dns=AAAB",
            "/metrics",
            "/a/report",
            "/a/d/",
            "//d",
            "/a/b/d",
            "/a/d#frag",
            "/a/d?host=\"x\"",
            "http://h/a/d",
        ] {
            let raw = format!("GET {path} HTTP/1.1\r\n\r\n");
            assert!(is_other(raw.as_bytes()), "{path}");
        }
        for header in [
            "Content-Length: 5",
            "Transfer-Encoding: chunked",
            "Expect: 100-continue",
            "Upgrade: h2c",
        ] {
            let raw = format!("GET /a/d HTTP/1.1\r\n{header}\r\n\r\n");
            assert!(is_other(raw.as_bytes()), "{header}");
        }
        assert!(!get(b"GET /a/d HTTP/1.1\r\nContent-Length: 0\r\n\r\n").http10);
        assert!(is_other(b"GET /a/d HTTP/1.1\r\nbad header\r\n\r\n"));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("h{i}: v\r\n"))
            .collect();
        assert!(is_other(
            format!("GET /a/d HTTP/1.1\r\n{many}\r\n").as_bytes()
        ));
    }

    #[test]
    fn responses_match_what_hyper_writes_for_the_router() {
        let ok = Reply {
            code: Code::Ok,
            body: "{}".into(),
            max_age: 42,
            retry_after: 0,
        };
        let mut out = Vec::new();
        encode(&mut out, &ok, false, true);
        let text = String::from_utf8(out).unwrap();
        let (head, date_and_body) = text.split_once("date: ").unwrap();
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
             cache-control: max-age=42\r\ncontent-length: 2\r\n"
        );
        assert!(date_and_body.ends_with(" GMT\r\n\r\n{}"), "{date_and_body}");

        let limited = Reply {
            code: Code::TooManyRequests,
            body: "{\"code\":\"x\"}".into(),
            max_age: 0,
            retry_after: 3,
        };
        let mut out = Vec::new();
        encode(&mut out, &limited, true, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(
            "HTTP/1.0 429 Too Many Requests\r\ncontent-type: application/json\r\n\
             cache-control: no-store\r\nretry-after: 3\r\ncontent-length: 12\r\n\
             connection: keep-alive\r\ndate: "
        ));
        let mut out = Vec::new();
        encode(&mut out, &limited, false, false);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("\r\nconnection: close\r\n")
        );
    }
}
