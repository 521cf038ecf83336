//! The HTTP/2 fast path (`httpdns::h2`) over h2c: every exchange compared header for header
//! (the `date` value aside), in order, and byte for byte in its body with what the same
//! routes answer through hyper and axum alone; the router's other routes with request bodies
//! and trailers, flow control with a tiny client window, many concurrent streams, a preface
//! split across writes, and shutdown.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Method, Request};
use bytes::Bytes;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::http1::Server;
use crate::httpdns::{alibaba_engine, limit, settings};
use crate::support::*;

const HOST: &str = "www.demo.isobar.test";

type Client = h2::client::SendRequest<Bytes>;

/// An h2c client on `io`; `window` is its per-stream receive window.
async fn client_on<T>(io: T, window: Option<u32>) -> (Client, tokio::task::JoinHandle<bool>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = h2::client::Builder::new();
    if let Some(window) = window {
        builder.initial_window_size(window);
    }
    let (client, conn) = builder.handshake(io).await.unwrap();
    // Whether the connection ended cleanly.
    let conn = tokio::spawn(async move { conn.await.is_ok() });
    (client, conn)
}

async fn client(addr: SocketAddr) -> Client {
    client_on(TcpStream::connect(addr).await.unwrap(), None)
        .await
        .0
}

/// One request; `body` (if any) is sent in one data frame. Returns the status, the response
/// headers in wire order (`date` blanked), the body and any trailers, as text.
async fn exchange(
    client: &Client,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> String {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://x{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut client = client.clone().ready().await.unwrap();
    let (response, mut send) = client
        .send_request(request.body(()).unwrap(), body.is_none())
        .unwrap();
    if let Some(body) = body {
        send.send_data(body.into(), true).unwrap();
    }
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("no response within 5 s")
        .unwrap();
    let mut out = format!("{}\n", response.status().as_u16());
    for (name, value) in response.headers() {
        let value = if name == "date" {
            "<date>"
        } else {
            value.to_str().unwrap()
        };
        out.push_str(&format!("{name}: {value}\n"));
    }
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        bytes.extend_from_slice(&chunk);
    }
    out.push('\n');
    out.push_str(&String::from_utf8_lossy(&bytes));
    if let Some(trailers) = body.trailers().await.unwrap() {
        out.push_str(&format!("\ntrailers: {trailers:?}"));
    }
    out
}

/// A request as the tests list them.
#[derive(Clone)]
struct Req {
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
}

fn get(path: &str) -> Req {
    Req {
        method: Method::GET,
        path: path.into(),
        headers: Vec::new(),
        body: None,
    }
}

impl Req {
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    fn body(mut self, body: &[u8]) -> Self {
        self.body = Some(body.to_vec());
        self
    }
}

/// The requests, one after the other on one new connection (`window` as in
/// [`client_on`]).
async fn conversation(addr: SocketAddr, requests: &[Req], window: Option<u32>) -> Vec<String> {
    let (client, _) = client_on(TcpStream::connect(addr).await.unwrap(), window).await;
    let mut out = Vec::new();
    for r in requests {
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        out.push(exchange(&client, r.method.clone(), &r.path, &headers, r.body.clone()).await);
    }
    out
}

/// The same conversation against the fast path and against hyper alone gives the same
/// answers. An account's remaining TTL may tick between the two, so a mismatch is tried
/// once more.
async fn same(fast: &Server, plain: &Server, requests: &[Req], window: Option<u32>) -> Vec<String> {
    for attempt in 0..2 {
        let a = conversation(fast.addr, requests, window).await;
        let b = conversation(plain.addr, requests, window).await;
        if a == b || attempt == 1 {
            assert_eq!(a, b, "fast path (left) and hyper (right) differ");
            return a;
        }
    }
    unreachable!()
}

fn body(answer: &str) -> Value {
    serde_json::from_str(answer.split_once("\n\n").unwrap().1).unwrap()
}

fn doh_post() -> Req {
    let doh = query(&format!("{HOST}."), RecordType::A, false, None)
        .to_vec()
        .unwrap();
    get("/dns-query")
        .method(Method::POST)
        .header("content-type", "application/dns-message")
        .body(&doh)
}

#[tokio::test]
async fn httpdns_answers_over_h2c_are_hyper_s_header_for_header() {
    let engine = alibaba_engine(settings());
    let fast = Server::start(Arc::clone(&engine), true).await;
    let plain = Server::start(engine, false).await;
    let d = format!("/open/d?host={HOST}&ip=198.51.100.7");
    let singles = [
        get(&format!("/d?host={HOST}&ip=198.51.100.7")),
        get(&format!("{d}&query=4,6")),
        get(&format!("/open/resolve?host={HOST},dyn.demo.isobar.test")),
        get("/open/ss?region=eu"),
        get("/open/ss?region=nowhere"),
        get(&format!("/nobody/d?host={HOST}")),
        get(&format!("/100000/d?host={HOST}")),
        get("/open/d?host=bad..name"),
        get("/open/d?host=%77ww.demo.isobar.test&ip=10.0.0.1"),
        get(&format!("/open/d?host={HOST}")).header("x-device-id", "dev-1"),
        get(&format!("/open/d?host={HOST}")).header("x-device-id", "has space"),
        get(&d).header("x-padding", &"a".repeat(8_000)),
    ];
    for request in &singles {
        let answers = same(&fast, &plain, std::slice::from_ref(request), None).await;
        assert!(
            answers[0].contains("\ncontent-type: application/json\n"),
            "{answers:?}"
        );
    }
    // All on one connection, with the header order spelled out once.
    let answers = same(&fast, &plain, &singles, None).await;
    let (head, _) = answers[0].split_once("\n\n").unwrap();
    let names: Vec<&str> = head
        .lines()
        .skip(1)
        .map(|l| l.split_once(':').unwrap().0)
        .collect();
    assert_eq!(
        names,
        ["content-type", "cache-control", "content-length", "date"],
        "{head}"
    );
    assert!(head.contains("\ncache-control: max-age=30\n"), "{head}");
    assert_eq!(body(&answers[0])["client_ip"], json!("198.51.100.7"));
    let metrics = same(&fast, &plain, &[get("/metrics")], None).await;
    assert!(metrics[0].contains("httpdns_requests_total"), "{metrics:?}");
    fast.stop().await;
    plain.stop().await;
}

#[tokio::test]
async fn rate_limited_answers_carry_retry_after_as_through_hyper() {
    let d = get(&format!("/open/d?host={HOST}"));
    let requests = [d.clone(), d.clone(), d];
    // Fresh servers (and buckets) per attempt: a bucket refills a token a second, so on a
    // loaded machine one conversation may see a refill the other does not, and a retry on
    // the same servers would find their buckets already spent.
    let mut answers = Vec::new();
    for attempt in 0..3 {
        let mut s = settings();
        s.per_client = limit(1, 2);
        let engine = alibaba_engine(s);
        let fast = Server::start(Arc::clone(&engine), true).await;
        let plain = Server::start(engine, false).await;
        let a = conversation(fast.addr, &requests, None).await;
        let b = conversation(plain.addr, &requests, None).await;
        fast.stop().await;
        plain.stop().await;
        if a == b || attempt == 2 {
            assert_eq!(a, b, "fast path (left) and hyper (right) differ");
            answers = a;
            break;
        }
    }
    assert!(answers[1].starts_with("200\n"), "{answers:?}");
    assert!(
        answers[2].starts_with(
            "429\ncontent-type: application/json\ncache-control: no-store\n\
             retry-after: 1\ncontent-length: "
        ),
        "{answers:?}"
    );
    assert_eq!(body(&answers[2])["code"], json!("TooManyRequests"));
}

#[tokio::test]
async fn other_routes_bodies_and_methods_over_h2c_behave_as_before() {
    let engine = alibaba_engine(settings());
    let fast = Server::start(Arc::clone(&engine), true).await;
    let plain = Server::start(engine, false).await;
    let doh = query(&format!("{HOST}."), RecordType::A, false, None)
        .to_vec()
        .unwrap();
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &doh);
    let requests = [
        doh_post(),
        get(&format!("/dns-query?dns={encoded}")).header("accept", "application/dns-message"),
        get(&format!("/resolve?name={HOST}&type=A")),
        get("/healthz"),
        get("/metrics"),
        get("/nothing/here"),
        get(&format!("/open/d/?host={HOST}")),
        get(&format!("/open/d?host={HOST}&ip=198.51.100.7")).method(Method::HEAD),
        get(&format!("/open/d?host={HOST}")).method(Method::POST),
        get(&format!("/open/d?host={HOST}")).method(Method::DELETE),
        // A GET with a body is the router's.
        get(&format!("/open/d?host={HOST}&ip=198.51.100.9")).body(b"abc"),
        get("/open/report")
            .method(Method::POST)
            .header("content-type", "application/json")
            .body(b"{}"),
        get("/open/report")
            .method(Method::POST)
            .header("content-type", "application/json")
            .body(b"{\"host\": 5"),
    ];
    for request in &requests {
        same(&fast, &plain, std::slice::from_ref(request), None).await;
    }
    let answers = same(&fast, &plain, &requests, None).await;
    assert!(
        answers[0].contains("content-type: application/dns-message"),
        "{}",
        answers[0]
    );
    assert!(answers[1].starts_with("200\n"), "{}", answers[1]);
    assert!(answers[5].starts_with("404\n"), "{}", answers[5]);
    assert!(
        answers[7].starts_with("200\n") && answers[7].ends_with("\n\n"),
        "{}",
        answers[7]
    );
    assert_eq!(body(&answers[10])["client_ip"], json!("198.51.100.9"));
    assert!(answers[11].starts_with("4"), "{}", answers[11]);
    fast.stop().await;
    plain.stop().await;
}

#[tokio::test]
async fn responses_larger_than_the_client_window_arrive_whole() {
    let engine = alibaba_engine(settings());
    let fast = Server::start(Arc::clone(&engine), true).await;
    let plain = Server::start(engine, false).await;
    let requests = [
        get(&format!(
            "/open/resolve?host={HOST},dyn.demo.isobar.test&query=4,6"
        )),
        get("/metrics"),
        doh_post(),
        get(&format!("/open/d?host={HOST}&ip=198.51.100.7")),
    ];
    // A 16-byte stream window: every answer needs WINDOW_UPDATEs to finish.
    let answers = same(&fast, &plain, &requests, Some(16)).await;
    for answer in &answers {
        let (_, body) = answer.split_once("\n\n").unwrap();
        assert!(body.len() > 16 * 3, "{answer}");
    }
    assert_eq!(body(&answers[3])["client_ip"], json!("198.51.100.7"));
    fast.stop().await;
}

#[tokio::test]
async fn many_concurrent_streams_on_one_connection_are_all_answered() {
    let fast = Server::start(alibaba_engine(settings()), true).await;
    let client = client(fast.addr).await;
    let doh = doh_post();
    // One exchange first, so that the client knows the server's settings.
    let path = format!("/open/d?host={HOST}");
    assert!(
        exchange(&client, Method::GET, &path, &[], None)
            .await
            .starts_with("200\n")
    );
    // More than the 200 concurrent streams the server allows: the client waits for room.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..400u32 {
        let client = client.clone();
        let doh = doh.clone();
        tasks.spawn(async move {
            if i % 10 == 0 {
                let headers = [("content-type", "application/dns-message")];
                let answer =
                    exchange(&client, Method::POST, "/dns-query", &headers, doh.body).await;
                assert!(answer.starts_with("200\n"), "{answer}");
            } else {
                let ip = format!("10.{}.{}.1", i / 256, i % 256);
                let path = format!("/open/d?host={HOST}&ip={ip}");
                let answer = exchange(&client, Method::GET, &path, &[], None).await;
                assert_eq!(body(&answer)["client_ip"], json!(ip));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    fast.stop().await;
}

/// A connection whose first `skip` written bytes are dropped (the test wrote them itself).
struct SkipWrite {
    io: TcpStream,
    skip: usize,
}

impl AsyncRead for SkipWrite {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for SkipWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            self.skip -= n;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_preface_split_across_writes_is_still_h2c() {
    let fast = Server::start(alibaba_engine(settings()), true).await;
    let mut tcp = TcpStream::connect(fast.addr).await.unwrap();
    // "PRI * HT", a pause, then the rest from the client.
    tcp.write_all(b"PRI * HT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (client, _) = client_on(SkipWrite { io: tcp, skip: 8 }, None).await;
    let path = format!("/open/d?host={HOST}&ip=198.51.100.7");
    let answer = exchange(&client, Method::GET, &path, &[], None).await;
    assert_eq!(body(&answer)["client_ip"], json!("198.51.100.7"));
    // HTTP/1 still works next to it, including a request line starting like the preface.
    let mut tcp = TcpStream::connect(fast.addr).await.unwrap();
    tcp.write_all(b"PRI /open/d HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)
        .await
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 405"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    fast.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_h2c_connections_and_finishes_streams_in_flight() {
    let fast = Server::start(alibaba_engine(settings()), true).await;
    // An idle connection (one answer, then nothing).
    let (idle, idle_conn) = client_on(TcpStream::connect(fast.addr).await.unwrap(), None).await;
    let path = format!("/open/d?host={HOST}");
    assert!(
        exchange(&idle, Method::GET, &path, &[], None)
            .await
            .starts_with("200\n")
    );
    // A DoH POST whose body is only half sent when shutdown starts.
    let (busy, busy_conn) = client_on(TcpStream::connect(fast.addr).await.unwrap(), None).await;
    let doh = doh_post().body.unwrap();
    let request = Request::builder()
        .method(Method::POST)
        .uri("http://x/dns-query")
        .header("content-type", "application/dns-message")
        .header("content-length", doh.len())
        .body(())
        .unwrap();
    let mut sender = busy.clone().ready().await.unwrap();
    let (response, mut send) = sender.send_request(request, false).unwrap();
    let half = doh.len() / 2;
    send.send_data(Bytes::copy_from_slice(&doh[..half]), false)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = std::time::Instant::now();
    let stopping = tokio::spawn(fast.stop());
    // The idle connection goes at once (GOAWAY, then close).
    let closed = tokio::time::timeout(Duration::from_secs(2), idle_conn).await;
    assert!(closed.expect("idle connection still open").unwrap());
    // The one in flight finishes its request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    send.send_data(Bytes::copy_from_slice(&doh[half..]), true)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(2), response)
        .await
        .expect("no answer to the request in flight")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    assert!(!bytes.is_empty());
    // Then the server is done, well within the drain timeout.
    tokio::time::timeout(Duration::from_secs(2), stopping)
        .await
        .expect("shutdown took too long")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let closed = tokio::time::timeout(Duration::from_secs(2), busy_conn).await;
    assert!(closed.expect("busy connection still open").is_ok());
}
