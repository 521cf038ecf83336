//! The HTTP/1 fast path (`httpdns::h1`) over raw TCP: every response compared byte for byte
//! (the `date` value aside) with what the same routes answer through hyper and axum alone,
//! keep-alive, pipelining, HTTP/1.0, the hand-over to hyper for other routes and oversized
//! heads, the header timeout and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use isobar_dns::Engine;
use isobar_dns::httpdns::HttpdnsFrontend;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::httpdns::{alibaba_engine, limit, settings};
use crate::support::*;

/// The frontend's routes (HTTPDNS, DoH, `/healthz`, RUM reports, HTTPDNS `/metrics`) on the
/// production accept loop, with the fast paths or without them (also used by `http2.rs`).
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _rum: isobar_dns::rum::RumReceiver,
}

impl Server {
    pub(crate) async fn start(engine: Arc<Engine>, fast: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let httpdns = HttpdnsFrontend::new(Arc::clone(&engine));
        let counters = Arc::clone(&httpdns);
        let (queue, rum) = isobar_dns::rum::queue(64);
        let router = isobar_dns::http::router_with(Arc::clone(&engine), &httpdns)
            .merge(isobar_dns::rum::router(engine, queue))
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let page = counters.metrics().render_prometheus();
                    async move { page }
                }),
            );
        let stop = CancellationToken::new();
        let task = tokio::spawn(isobar_dns::httpdns::serve::serve_with(
            listener,
            router,
            fast.then_some(httpdns),
            None,
            stop.clone(),
        ));
        Self {
            addr,
            stop,
            task,
            _rum: rum,
        }
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// Reads one response off `stream` (`buf` keeps what follows it); `None` at EOF. The `date`
/// value is blanked. A response to `HEAD` has no body whatever its `content-length`.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>, is_head: bool) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end + 4].to_vec()).unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .filter(|_| !is_head)
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                buf.drain(..end + 4 + len);
                let head: String = head
                    .split_inclusive("\r\n")
                    .map(|l| {
                        if l.to_ascii_lowercase().starts_with("date: ") {
                            "date: <date>\r\n"
                        } else {
                            l
                        }
                    })
                    .collect();
                return Some(head + &body);
            }
        }
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("no response within 5 s")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `requests` on one connection — all in one write when `pipelined`, else each after
/// the previous answer — and returns the responses, then `"EOF"` if the server closed.
async fn conversation(addr: SocketAddr, requests: &[Vec<u8>], pipelined: bool) -> Vec<String> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    if pipelined {
        let _ = stream.write_all(&requests.concat()).await;
        for request in requests {
            match read_response(&mut stream, &mut buf, request.starts_with(b"HEAD")).await {
                Some(r) => out.push(r),
                None => break,
            }
        }
    } else {
        for request in requests {
            if stream.write_all(request).await.is_err() {
                break;
            }
            match read_response(&mut stream, &mut buf, request.starts_with(b"HEAD")).await {
                Some(r) => out.push(r),
                None => break,
            }
        }
    }
    // Did the server close? (It must answer, or close, quickly.)
    let mut byte = [0u8; 1];
    if let Ok(Ok(0)) =
        tokio::time::timeout(Duration::from_millis(100), stream.read(&mut byte)).await
    {
        out.push("EOF".into());
    }
    out
}

/// The same conversation against the fast path and against hyper alone gives the same bytes.
/// An account's remaining TTL may tick between the two, so a mismatch is tried once more.
async fn same(fast: &Server, plain: &Server, requests: &[Vec<u8>], pipelined: bool) -> Vec<String> {
    for attempt in 0..2 {
        let a = conversation(fast.addr, requests, pipelined).await;
        let b = conversation(plain.addr, requests, pipelined).await;
        if a == b || attempt == 1 {
            assert_eq!(a, b, "fast path (left) and hyper (right) differ");
            return a;
        }
    }
    unreachable!()
}

fn get(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").into_bytes()
}

fn body(response: &str) -> Value {
    serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap()
}

const HOST: &str = "www.demo.isobar.test";

#[tokio::test]
async fn httpdns_answers_are_byte_for_byte_hyper_s_on_keep_alive_and_http10() {
    let engine = alibaba_engine(settings());
    let fast = Server::start(Arc::clone(&engine), true).await;
    let plain = Server::start(engine, false).await;
    let d = format!("/open/d?host={HOST}&ip=198.51.100.7");
    let singles = [
        get(&format!("/d?host={HOST}&ip=198.51.100.7"), ""),
        get(&format!("{d}&query=4,6"), ""),
        get(
            &format!("/open/resolve?host={HOST},dyn.demo.isobar.test"),
            "",
        ),
        get("/open/ss?region=eu", ""),
        get("/open/ss?region=nowhere", ""),
        get(&format!("/nobody/d?host={HOST}"), ""),
        get(&format!("/100000/d?host={HOST}"), ""),
        get("/open/d?host=bad..name", ""),
        get("/open/d?host=%77ww.demo.isobar.test&ip=10.0.0.1", ""),
        get(&format!("/open/d?host={HOST}"), "X-Device-Id: dev-1\r\n"),
        get(
            &format!("/open/d?host={HOST}"),
            "x-device-id: has space\r\n",
        ),
        get(&d, "Connection: close\r\n"),
        format!("GET {d} HTTP/1.0\r\n\r\n").into_bytes(),
    ];
    for request in &singles {
        let answers = same(&fast, &plain, std::slice::from_ref(request), false).await;
        assert!(answers[0].starts_with("HTTP/1."), "{answers:?}");
    }
    let answers = same(&fast, &plain, &[get(&d, "Connection: close\r\n")], false).await;
    assert!(
        answers[0].contains("\r\nconnection: close\r\n"),
        "{answers:?}"
    );
    assert_eq!(answers[1], "EOF");
    // HTTP/1.0 closes unless asked to keep the connection.
    let answers = same(
        &fast,
        &plain,
        &[format!("GET {d} HTTP/1.0\r\n\r\n").into_bytes()],
        false,
    )
    .await;
    assert!(answers[0].starts_with("HTTP/1.0 200 OK\r\n"), "{answers:?}");
    assert_eq!(answers.last().unwrap(), "EOF");
    let ka = format!("GET {d} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").into_bytes();
    let answers = same(&fast, &plain, &[ka.clone(), ka], false).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(
        answers[1].contains("\r\nconnection: keep-alive\r\n"),
        "{answers:?}"
    );

    // Several requests on one keep-alive connection.
    let requests: Vec<Vec<u8>> = (1..=5)
        .map(|i| get(&format!("/open/d?host={HOST}&ip=198.51.100.{i}"), ""))
        .collect();
    let answers = same(&fast, &plain, &requests, false).await;
    assert_eq!(answers.len(), 5);
    for (i, answer) in answers.iter().enumerate() {
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("\r\ncache-control: max-age="), "{answer}");
        assert_eq!(
            body(answer)["client_ip"],
            json!(format!("198.51.100.{}", i + 1))
        );
    }
    // The fast path counted what it answered, like the router.
    let metrics = same(&fast, &plain, &[get("/metrics", "")], false).await;
    assert!(metrics[0].contains("HTTP/1.1 200 OK"), "{metrics:?}");
    fast.stop().await;
    plain.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_across_the_hand_over() {
    let engine = alibaba_engine(settings());
    let fast = Server::start(Arc::clone(&engine), true).await;
    let plain = Server::start(engine, false).await;
    let d = |i: u8| get(&format!("/open/d?host={HOST}&ip=198.51.100.{i}"), "");
    let doh = query(&format!("{HOST}."), RecordType::A, false, None)
        .to_vec()
        .unwrap();
    let mut post = format!(
        "POST /dns-query HTTP/1.1\r\nHost: x\r\nContent-Type: application/dns-message\r\n\
         Content-Length: {}\r\n\r\n",
        doh.len()
    )
    .into_bytes();
    post.extend_from_slice(&doh);
    let report = b"POST /open/report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                   Content-Length: 2\r\n\r\n{}"
        .to_vec();
    let requests = vec![d(1), d(2), post, d(3), get("/metrics", ""), report, d(4)];
    for pipelined in [true, false] {
        let answers = same(&fast, &plain, &requests, pipelined).await;
        assert_eq!(answers.len(), requests.len(), "{answers:?}");
        for (i, n) in [(0, 1), (1, 2), (3, 3), (6, 4)] {
            assert_eq!(
                body(&answers[i])["client_ip"],
                json!(format!("198.51.100.{n}"))
            );
        }
        assert!(
            answers[2].contains("application/dns-message"),
            "{}",
            answers[2]
        );
        assert!(
            answers[4].contains("httpdns_requests_total"),
            "{}",
            answers[4]
        );
        assert!(answers[5].starts_with("HTTP/1.1 4"), "{}", answers[5]);
    }
    fast.stop().await;
    plain.stop().await;
}

#[tokio::test]
async fn other_routes_over_http1_behave_as_before() {
    let engine = alibaba_engine(settings());
    let fast = Server::start(Arc::clone(&engine), true).await;
    let plain = Server::start(engine, false).await;
    for request in [
        get("/healthz", ""),
        get("/metrics", ""),
        get(&format!("/resolve?name={HOST}&type=A"), ""),
        get("/nothing/here", ""),
        get(&format!("/open/d/?host={HOST}"), ""),
        format!("HEAD /open/d?host={HOST}&ip=198.51.100.7 HTTP/1.1\r\nHost: x\r\n\r\n")
            .into_bytes(),
        format!("POST /open/d?host={HOST} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .into_bytes(),
        format!("GET /open/d?host={HOST} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            .into_bytes(),
        b"GET /open/d HTTP/1.1\r\nbroken header line\r\n\r\n".to_vec(),
        b"GET /open/d?host=\"quoted\" HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ] {
        same(&fast, &plain, &[request], false).await;
    }
    fast.stop().await;
    plain.stop().await;
}

#[tokio::test]
async fn oversized_heads_go_to_hyper_which_answers_or_refuses_them() {
    let engine = alibaba_engine(settings());
    let fast = Server::start(Arc::clone(&engine), true).await;
    let plain = Server::start(engine, false).await;
    let d = format!("/open/d?host={HOST}&ip=198.51.100.7");
    // Over the fast path's limit, within hyper's: answered as usual.
    let big = get(&d, &format!("X-Padding: {}\r\n", "a".repeat(20_000)));
    let answers = same(&fast, &plain, &[big], false).await;
    assert!(answers[0].starts_with("HTTP/1.1 200 OK\r\n"), "{answers:?}");
    // Over hyper's: 431, then the connection closes.
    let huge = get(&d, &format!("X-Padding: {}\r\n", "a".repeat(500_000)));
    let answers = conversation(fast.addr, &[huge], true).await;
    assert!(
        answers[0].starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answers:?}"
    );
    // More header lines than the fast path parses: hyper answers.
    let many: String = (0..80).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answers = same(&fast, &plain, &[get(&d, &many)], false).await;
    assert!(answers[0].starts_with("HTTP/1.1 200 OK\r\n"), "{answers:?}");
    // The server still answers.
    let answers = conversation(fast.addr, &[get(&d, "")], false).await;
    assert!(answers[0].starts_with("HTTP/1.1 200 OK\r\n"), "{answers:?}");
    fast.stop().await;
    plain.stop().await;
}

#[tokio::test]
async fn the_fast_path_keeps_rate_limits_and_their_retry_after() {
    let mut s = settings();
    s.per_client = limit(1, 2);
    let fast = Server::start(alibaba_engine(s), true).await;
    let d = get(&format!("/open/d?host={HOST}"), "");
    let answers = conversation(fast.addr, &[d.clone(), d.clone(), d], true).await;
    assert!(answers[1].starts_with("HTTP/1.1 200 OK\r\n"), "{answers:?}");
    assert!(
        answers[2].starts_with(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
             cache-control: no-store\r\nretry-after: 1\r\n"
        ),
        "{answers:?}"
    );
    assert_eq!(body(&answers[2])["code"], json!("TooManyRequests"));
    fast.stop().await;
}

#[tokio::test]
async fn slow_or_idle_connections_time_out_and_busy_ones_do_not() {
    let frontend = HttpdnsFrontend::new(alibaba_engine(settings()));
    let stop = CancellationToken::new();
    let timeout = Duration::from_millis(300);
    let peer = "127.0.0.1".parse().unwrap();
    let serve = |io| {
        let frontend = Arc::clone(&frontend);
        let stop = stop.clone();
        tokio::spawn(async move {
            let end = isobar_dns::httpdns::h1::serve(io, peer, &frontend, timeout, &stop).await;
            matches!(end, isobar_dns::httpdns::h1::End::Closed)
        })
    };
    let request = get(&format!("/open/d?host={HOST}"), "");

    // Requests every 100 ms for 1 s, well past the timeout: the connection stays.
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let task = serve(server);
    let mut buf = [0u8; 4096];
    for _ in 0..10 {
        client.write_all(&request).await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then idle: closed within the timeout (plus the one step it may lag).
    let started = std::time::Instant::now();
    assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());
    assert!(task.await.unwrap());

    // A head that never completes is dropped too.
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let task = serve(server);
    client.write_all(b"GET /open/d?host=").await.unwrap();
    assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    assert!(task.await.unwrap());

    // Shutdown closes an idle connection at once.
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let task = serve(server);
    client.write_all(&request).await.unwrap();
    let _ = client.read(&mut buf).await.unwrap();
    stop.cancel();
    let closed = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
    assert_eq!(closed.unwrap().unwrap(), 0);
    assert!(task.await.unwrap());
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_promptly() {
    let fast = Server::start(alibaba_engine(settings()), true).await;
    let mut stream = TcpStream::connect(fast.addr).await.unwrap();
    stream
        .write_all(&get(&format!("/open/d?host={HOST}"), ""))
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert!(read_response(&mut stream, &mut buf, false).await.is_some());
    let started = std::time::Instant::now();
    fast.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(read_response(&mut stream, &mut buf, false).await.is_none());
}
