//! The HTTPDNS frontend through a real axum server and a real HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;

use isobar_dns::Engine;
use serde_json::{Value, json};
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use crate::support::*;
use isobar_proto::v1::{
    AnswerSet, GrayRule, HttpdnsAccount, HttpdnsSettings, Node, RateLimit, Route, ServiceIps,
    ServiceMap, Site, Snapshot,
};

struct HttpServer {
    base: String,
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    async fn start(engine: Arc<Engine>) -> Self {
        Self::start_with(engine, None).await
    }

    /// Serves the frontend's routes through the production accept loop (HTTP/1.1 and h2c,
    /// or TLS when `tls` is given).
    async fn start_with(engine: Arc<Engine>, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{addr}");
        let stop = CancellationToken::new();
        let httpdns = isobar_dns::httpdns::HttpdnsFrontend::new(Arc::clone(&engine));
        let counters = Arc::clone(&httpdns);
        let router = isobar_dns::http::router_with(engine, &httpdns).route(
            "/metrics",
            axum::routing::get(move || {
                let page = counters.metrics().render_prometheus();
                async move { page }
            }),
        );
        let task = tokio::spawn(isobar_dns::httpdns::serve::serve_with(
            listener,
            router,
            Some(httpdns),
            tls,
            stop.clone(),
        ));
        Self {
            base,
            addr,
            stop,
            task,
        }
    }

    async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let resp = reqwest::get(format!("{}{path_and_query}", self.base))
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Status, the headers we check, and the body.
    async fn fetch(&self, path_and_query: &str) -> (u16, Headers, Value) {
        fetch_with(
            &reqwest::Client::new(),
            &format!("{}{path_and_query}", self.base),
        )
        .await
    }

    async fn text(&self, path: &str) -> String {
        reqwest::get(format!("{}{path}", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

#[derive(Debug)]
struct Headers {
    cache_control: String,
    retry_after: Option<u32>,
    version: reqwest::Version,
}

async fn fetch_with(client: &reqwest::Client, url: &str) -> (u16, Headers, Value) {
    let resp = client.get(url).send().await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let headers = Headers {
        cache_control: header("cache-control").unwrap_or_default(),
        retry_after: header("retry-after").map(|v| v.parse().unwrap()),
        version: resp.version(),
    };
    let status = resp.status().as_u16();
    (status, headers, resp.json().await.unwrap())
}

#[tokio::test]
async fn resolves_v4_v6_and_both_for_an_explicit_client_ip() {
    let http = HttpServer::start(engine_with(1)).await;
    let host = "www.demo.isobar.test";

    let (status, body) = http.get(&format!("/d?host={host}&ip=198.51.100.7")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"host": host, "ips": ["192.0.2.10", "192.0.2.11"], "ipsv6": [],
               "ttl": 30, "origin_ttl": 30, "client_ip": "198.51.100.7"})
    );

    let (_, body) = http
        .get(&format!("/d?host={host}&ip=198.51.100.7&query=6"))
        .await;
    assert_eq!(body["ips"], json!([]));
    assert_eq!(body["ipsv6"], json!(["2001:db8::10"]));

    let (_, body) = http
        .get(&format!("/d?host={host}&ip=203.0.113.7&query=4,6&x=1"))
        .await;
    assert_eq!(body["ips"], json!(["192.0.2.20"]));
    assert_eq!(body["ipsv6"], json!(["2001:db8::20"]));

    // The override applies to HTTPDNS clients too, and an IPv6 client is located.
    let (_, body) = http.get(&format!("/d?host={host}&ip=100.64.1.1")).await;
    assert_eq!(body["ips"], json!(["192.0.2.30"]));
    let (_, body) = http
        .get(&format!("/d?host={host}&ip=2001:db8::7&query=4,6"))
        .await;
    assert_eq!(body["ips"], json!(["192.0.2.10", "192.0.2.11"]));
    assert_eq!(body["client_ip"], json!("2001:db8::7"));
    http.stop().await;
}

#[tokio::test]
async fn without_ip_the_peer_address_is_the_client() {
    let http = HttpServer::start(engine_with(1)).await;
    let (status, body) = http.get("/d?host=WWW.demo.isobar.test.").await;
    assert_eq!(status, 200);
    assert_eq!(body["client_ip"], json!("127.0.0.1"));
    // 127.0.0.0/8 is New York in the fixture database.
    assert_eq!(body["ips"], json!(["192.0.2.20"]));
    assert_eq!(body["host"], json!("WWW.demo.isobar.test."));
    http.stop().await;
}

#[tokio::test]
async fn in_zone_names_that_are_not_gslb_names_get_static_records_or_empty_lists() {
    let http = HttpServer::start(engine_with(1)).await;
    let (status, body) = http.get("/d?host=ns1.demo.isobar.test&query=4,6").await;
    assert_eq!(status, 200);
    assert_eq!(body["ips"], json!(["192.0.2.53"]));
    assert_eq!(body["ipsv6"], json!([]));
    assert_eq!(body["ttl"], json!(3600));

    for host in ["txt.demo.isobar.test", "missing.demo.isobar.test"] {
        let (status, body) = http.get(&format!("/d?host={host}")).await;
        assert_eq!(status, 200, "{host}");
        assert_eq!(body["ips"], json!([]), "{host}");
        assert_eq!(body["ttl"], json!(300), "negative TTL for {host}");
    }
    http.stop().await;
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let http = HttpServer::start(engine_with(1)).await;
    let cases = [
        ("/d", 400, "InvalidHost"),
        ("/d?host=", 400, "InvalidHost"),
        ("/d?host=bad%20host", 400, "InvalidHost"),
        ("/d?host=a..b", 400, "InvalidHost"),
        ("/d?host=www.example.com", 400, "InvalidHost"),
        (
            "/d?host=www.demo.isobar.test&ip=300.1.1.1",
            400,
            "InvalidIp",
        ),
        ("/d?host=www.demo.isobar.test&query=5", 400, "InvalidQuery"),
        (
            "/d?host=www.demo.isobar.test&query=4,6,8",
            400,
            "InvalidQuery",
        ),
    ];
    for (path, status, code) in cases {
        let (got, body) = http.get(path).await;
        assert_eq!(got, status, "{path}");
        assert_eq!(body["code"], json!(code), "{path}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}"
        );
    }
    let (_, body) = http.get("/d?host=www.example.com").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not in any zone")
    );
    http.stop().await;
}

#[tokio::test]
async fn not_ready_until_the_first_snapshot() {
    let engine = Engine::new(Some(geo_db()));
    let http = HttpServer::start(engine.clone()).await;

    let (status, body) = http.get("/healthz").await;
    assert_eq!((status, body), (503, json!({"snapshot_version": 0})));
    let (status, body) = http.get("/d?host=www.demo.isobar.test").await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], json!("NotReady"));

    engine.install(&snapshot(7, "192.0.2.7")).unwrap();
    let (status, body) = http.get("/healthz").await;
    assert_eq!((status, body), (200, json!({"snapshot_version": 7})));
    let (status, body) = http.get("/d?host=www.demo.isobar.test&ip=192.0.2.1").await;
    assert_eq!(status, 200);
    assert_eq!(body["ips"], json!(["192.0.2.7"]));
    http.stop().await;
}

#[tokio::test]
async fn d_ip_picks_the_same_client_group_as_dns_including_asn_groups() {
    let engine = Engine::with_asn(Some(geo_db()), Some(asn_db()));
    engine.install(&asn_snapshot(1)).unwrap();
    let http = HttpServer::start(engine).await;
    for (ip, want) in [
        // AS64500: the ASN group, over the Paris GeoIP cell.
        ("198.51.97.1", "192.0.2.40"),
        // The "office" override inside AS64500's network.
        ("203.0.113.130", "192.0.2.30"),
        // No AS: the Frankfurt GeoIP cell.
        ("198.51.100.7", "192.0.2.10"),
    ] {
        let (status, body) = http
            .get(&format!("/d?host=www.demo.isobar.test&ip={ip}"))
            .await;
        assert_eq!(status, 200, "{ip}: {body}");
        assert_eq!(body["ips"][0], json!(want), "{ip}: {body}");
    }
    http.stop().await;
}

// === The Alibaba dialect: /{account}/... ===

const SECRET: &str = "IAmASecret";
const DYN: &str = "dyn.demo.isobar.test";

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub(crate) fn limit(rate: u32, burst: u32) -> Option<RateLimit> {
    Some(RateLimit { rate, burst })
}

/// A service answered dynamically from eight nodes of one site, with a 50 % gray arm
/// answered from four other nodes: the client key (device, else subnet) picks both.
fn dynamic_service() -> ServiceMap {
    let site = |pop: &str, first: u8, n: u8| Site {
        pop: pop.into(),
        nodes: (first..first + n)
            .map(|i| Node {
                address: format!("192.0.2.{i}"),
                weight: 1,
                down: false,
            })
            .collect(),
    };
    let dynamic = |pop, first, n| ServiceMap {
        answers: vec![AnswerSet {
            routes: vec![Route {
                weight: 1,
                sites: vec![0],
            }],
            ..Default::default()
        }],
        sites: vec![site(pop, first, n)],
        answer_count: 1,
        ..Default::default()
    };
    ServiceMap {
        name: format!("{DYN}."),
        ttl: 30,
        use_ecs: true,
        gray: Some(Box::new(GrayRule {
            name: "canary".into(),
            share_ppm: 500_000,
            salt: 7,
            canary: Some(Box::new(dynamic("canary", 200, 4))),
            ..Default::default()
        })),
        ..dynamic("fra", 100, 8)
    }
}

/// The fixture snapshot plus accounts, HTTPDNS settings and the dynamic service.
/// Accounts: `100000` (secret, signed only), `open` (unsigned allowed, no secret), `both`.
fn alibaba_snapshot(version: u64, settings: HttpdnsSettings) -> Snapshot {
    let mut s = snapshot(version, "192.0.2.1");
    let account = |id: &str, secret: &str, unsigned_allowed| HttpdnsAccount {
        id: id.into(),
        secret: secret.into(),
        unsigned_allowed,
    };
    s.accounts = vec![
        account("100000", SECRET, false),
        account("open", "", true),
        account("both", SECRET, true),
    ];
    s.httpdns = Some(settings);
    s.services.push(dynamic_service());
    s
}

pub(crate) fn settings() -> HttpdnsSettings {
    HttpdnsSettings {
        service_ips: vec![ServiceIps {
            region: "eu".into(),
            ipv4: vec!["192.0.2.80".into(), "192.0.2.81".into()],
            ipv6: vec!["2001:db8::80".into()],
        }],
        per_client: limit(0, 0),
        per_account: limit(0, 0),
    }
}

pub(crate) fn alibaba_engine(settings: HttpdnsSettings) -> Arc<Engine> {
    let engine = Engine::new(Some(geo_db()));
    engine.install(&alibaba_snapshot(1, settings)).unwrap();
    engine
}

fn signed(path: &str, host: &str, t: i64, secret: &str) -> String {
    let t = t.to_string();
    let s = isobar_dns::httpdns::sign::sign(host, secret, &t);
    format!("{path}?host={host}&t={t}&s={s}")
}

#[tokio::test]
async fn signed_requests_pass_and_each_signature_failure_has_its_code_and_status() {
    let http = HttpServer::start(alibaba_engine(settings())).await;
    let host = "www.demo.isobar.test";
    let now = now_unix();

    let (status, headers, body) = http
        .fetch(&format!(
            "{}&ip=198.51.100.7",
            signed("/100000/sign_d", host, now + 600, SECRET)
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ips"], json!(["192.0.2.10", "192.0.2.11"]));
    assert_eq!(body["origin_ttl"], json!(30));
    let ttl = body["ttl"].as_u64().unwrap();
    assert!((1..=30).contains(&ttl), "remaining ttl {ttl}");
    assert_eq!(headers.cache_control, format!("max-age={ttl}"));

    let batch = "www.demo.isobar.test,noecs.demo.isobar.test";
    let (status, _, body) = http
        .fetch(&signed("/100000/sign_resolve", batch, now + 600, SECRET))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dns"].as_array().unwrap().len(), 2);

    let cases = [
        // Correctly signed but expired.
        (
            signed("/100000/sign_d", host, now - 5, SECRET),
            403,
            "SignatureExpired",
        ),
        // Valid signature, but more than 24 h ahead.
        (
            signed("/100000/sign_d", host, now + 86_400 + 120, SECRET),
            400,
            "InvalidDuration",
        ),
        // Wrong secret, and a signature over other hosts than the ones asked for.
        (
            signed("/100000/sign_d", host, now + 600, "other"),
            403,
            "InvalidSignature",
        ),
        (
            signed(
                "/100000/sign_resolve",
                "www.demo.isobar.test",
                now + 600,
                SECRET,
            )
            .replace("host=www.demo.isobar.test", &format!("host={batch}")),
            403,
            "InvalidSignature",
        ),
        (
            format!("/100000/sign_d?host={host}&t={}", now + 600),
            400,
            "MissingSignature",
        ),
        (
            format!("/100000/sign_d?host={host}&s=abc"),
            400,
            "MissingSignature",
        ),
        (
            format!("/100000/sign_d?host={host}&t=soon&s=abc"),
            400,
            "InvalidTimestamp",
        ),
        // Signed-only account on the unsigned interface; an account without a secret.
        (
            format!("/100000/d?host={host}"),
            403,
            "UnsignedInterfaceDisabled",
        ),
        (
            format!("/100000/resolve?host={host}"),
            403,
            "UnsignedInterfaceDisabled",
        ),
        (
            signed("/open/sign_d", host, now + 600, ""),
            403,
            "InvalidSignature",
        ),
        (
            "/nobody/d?host=www.demo.isobar.test".into(),
            403,
            "InvalidAccount",
        ),
        ("/open/d?host=bad..name".into(), 400, "InvalidHost"),
        ("/open/d?host=www.example.com".into(), 400, "InvalidHost"),
        (
            "/open/d?host=www.demo.isobar.test&ip=1.2.3".into(),
            400,
            "InvalidIp",
        ),
        (
            "/open/d?host=www.demo.isobar.test&query=5".into(),
            400,
            "InvalidQuery",
        ),
        ("/open/d?host=%zz".into(), 400, "InvalidQuery"),
        (
            "/open/d?host=www.demo.isobar.test&did=a%20b".into(),
            400,
            "InvalidDeviceId",
        ),
    ];
    for (path, want_status, want_code) in cases {
        let (status, headers, body) = http.fetch(&path).await;
        assert_eq!(status, want_status, "{path}: {body}");
        assert_eq!(body["code"], json!(want_code), "{path}: {body}");
        assert_eq!(headers.cache_control, "no-store", "{path}");
    }
    // The unsigned interface works for an account that allows it, signed or not.
    let (status, _, _) = http.fetch(&format!("/both/d?host={host}")).await;
    assert_eq!(status, 200);
    let (status, _, _) = http
        .fetch(&signed("/both/sign_d", host, now + 60, SECRET))
        .await;
    assert_eq!(status, 200);

    // Every outcome was counted per endpoint and code.
    let metrics = http.text("/metrics").await;
    for line in [
        "isobar_httpdns_requests_total{endpoint=\"sign_d\",code=\"ok\"} 2",
        "isobar_httpdns_requests_total{endpoint=\"sign_d\",code=\"SignatureExpired\"} 1",
        "isobar_httpdns_requests_total{endpoint=\"d\",code=\"UnsignedInterfaceDisabled\"} 1",
        "isobar_httpdns_requests_total{endpoint=\"sign_resolve\",code=\"InvalidSignature\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    http.stop().await;
}

#[tokio::test]
async fn batches_answer_per_host_and_type_within_their_limits() {
    let http = HttpServer::start(alibaba_engine(settings())).await;
    let (status, headers, body) = http
        .fetch("/open/resolve?host=www.demo.isobar.test,ns1.demo.isobar.test&ip=198.51.100.7&query=4,6")
        .await;
    assert_eq!(status, 200, "{body}");
    let entries = body["dns"].as_array().unwrap();
    let summary: Vec<(String, u64, Value)> = entries
        .iter()
        .map(|e| {
            assert_eq!(e["client_ip"], json!("198.51.100.7"));
            assert!(e["ttl"].as_u64().unwrap() >= 1);
            assert!(e["ttl"].as_u64() <= e["origin_ttl"].as_u64());
            (
                e["host"].as_str().unwrap().to_owned(),
                e["type"].as_u64().unwrap(),
                e["ips"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "www.demo.isobar.test".into(),
                1,
                json!(["192.0.2.10", "192.0.2.11"])
            ),
            ("www.demo.isobar.test".into(), 28, json!(["2001:db8::10"])),
            ("ns1.demo.isobar.test".into(), 1, json!(["192.0.2.53"])),
            ("ns1.demo.isobar.test".into(), 28, json!([])),
        ]
    );
    let min_ttl = entries
        .iter()
        .map(|e| e["ttl"].as_u64().unwrap())
        .min()
        .unwrap();
    assert_eq!(headers.cache_control, format!("max-age={min_ttl}"));

    // One host for five client addresses: one entry each, each answered for its client.
    let ips = "198.51.100.7,203.0.113.7,100.64.1.1,198.51.96.1,2001:db8::7";
    let (status, _, body) = http
        .fetch(&format!("/open/resolve?host=www.demo.isobar.test&ip={ips}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let firsts: Vec<(&str, &str)> = body["dns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["client_ip"].as_str().unwrap(),
                e["ips"][0].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        firsts,
        vec![
            ("198.51.100.7", "192.0.2.10"),
            ("203.0.113.7", "192.0.2.20"),
            ("100.64.1.1", "192.0.2.30"),
            ("198.51.96.1", "192.0.2.10"),
            ("2001:db8::7", "192.0.2.10"),
        ]
    );

    let six_hosts = ["www.demo.isobar.test"; 6].join(",");
    for path in [
        format!("/open/resolve?host={six_hosts}"),
        format!("/open/resolve?host=www.demo.isobar.test&ip={ips},192.0.2.9"),
        "/open/resolve?host=www.demo.isobar.test,ns1.demo.isobar.test&ip=192.0.2.1,192.0.2.2"
            .into(),
    ] {
        let (status, _, body) = http.fetch(&path).await;
        assert_eq!(
            (status, &body["code"]),
            (400, &json!("LimitExceeded")),
            "{path}"
        );
    }
    // d takes one host; the comma list is not a host name.
    let (status, _, body) = http
        .fetch("/open/d?host=www.demo.isobar.test,ns1.demo.isobar.test")
        .await;
    assert_eq!((status, &body["code"]), (400, &json!("InvalidHost")));
    http.stop().await;
}

#[tokio::test]
async fn d_answers_both_families_for_query_4_6_with_a_remaining_ttl() {
    let http = HttpServer::start(alibaba_engine(settings())).await;
    let path = "/open/d?host=www.demo.isobar.test&ip=203.0.113.7&query=4,6";
    let (status, headers, body) = http.fetch(path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ips"], json!(["192.0.2.20"]));
    assert_eq!(body["ipsv6"], json!(["2001:db8::20"]));
    assert_eq!(body["client_ip"], json!("203.0.113.7"));
    assert_eq!(body["origin_ttl"], json!(30));
    let first = body["ttl"].as_u64().unwrap();
    assert_eq!(headers.cache_control, format!("max-age={first}"));
    // The same client counts down (modulo the window) as time passes.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (_, _, body) = http.fetch(path).await;
    let later = body["ttl"].as_u64().unwrap();
    let elapsed = (first + 30 - later) % 30;
    assert!((2..=3).contains(&elapsed), "ttl {first} then {later}");
    // The account-less /d keeps answering the full TTL.
    let (_, headers, body) = http.fetch("/d?host=www.demo.isobar.test").await;
    assert_eq!(body["ttl"], json!(30));
    assert_eq!(headers.cache_control, "max-age=30");
    http.stop().await;
}

#[tokio::test]
async fn ss_answers_the_service_ips_of_a_region() {
    let http = HttpServer::start(alibaba_engine(settings())).await;
    let (status, headers, body) = http.fetch("/open/ss?region=eu").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"service_ip": ["192.0.2.80", "192.0.2.81"], "service_ipv6": ["2001:db8::80"]})
    );
    assert!(headers.cache_control.starts_with("max-age="));
    for path in ["/open/ss?region=mars", "/open/ss"] {
        let (status, _, body) = http.fetch(path).await;
        assert_eq!(
            (status, &body["code"]),
            (400, &json!("InvalidRegion")),
            "{path}"
        );
    }
    let (status, _, body) = http.fetch("/nobody/ss?region=eu").await;
    assert_eq!((status, &body["code"]), (403, &json!("InvalidAccount")));
    http.stop().await;
}

#[tokio::test]
async fn a_device_keeps_its_node_and_gray_arm_when_its_address_changes() {
    let http = HttpServer::start(alibaba_engine(settings())).await;
    let client = reqwest::Client::new();
    let addresses = [
        "198.51.100.7",
        "203.0.113.9",
        "100.64.1.1",
        "2001:db8::7",
        "192.0.2.99",
    ];
    let mut nodes = std::collections::BTreeSet::new();
    let mut canary = 0;
    for device in 0..24 {
        let did = format!("device-{device}");
        let mut seen = std::collections::BTreeSet::new();
        for (i, ip) in addresses.iter().enumerate() {
            // Half the requests carry the id as a parameter, half as the header.
            let url = format!("{}/open/d?host={DYN}&ip={ip}", http.base);
            let req = if i % 2 == 0 {
                client.get(format!("{url}&did={did}"))
            } else {
                client.get(url).header("X-Device-Id", &did)
            };
            let body: Value = req.send().await.unwrap().json().await.unwrap();
            seen.insert(body["ips"][0].as_str().unwrap().to_owned());
        }
        assert_eq!(seen.len(), 1, "{did} moved between nodes: {seen:?}");
        let node = seen.pop_first().unwrap();
        canary += usize::from(node.starts_with("192.0.2.2"));
        nodes.insert(node);
    }
    // Devices spread over nodes and over both arms.
    assert!(nodes.len() >= 4, "{nodes:?}");
    assert!(
        (4..=20).contains(&canary),
        "{canary} of 24 devices in the canary arm"
    );

    // Without a device id the address (its subnet) is the key, so addresses spread too.
    let mut by_address = std::collections::BTreeSet::new();
    for i in 0..24 {
        let (_, _, body) = http
            .fetch(&format!("/open/d?host={DYN}&ip=10.{i}.0.1"))
            .await;
        by_address.insert(body["ips"][0].as_str().unwrap().to_owned());
    }
    assert!(by_address.len() >= 3, "{by_address:?}");
    http.stop().await;
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let mut s = settings();
    s.per_client = limit(1, 3);
    let http = HttpServer::start(alibaba_engine(s)).await;
    let path = "/open/d?host=www.demo.isobar.test";
    for _ in 0..3 {
        let (status, _, _) = http.fetch(path).await;
        assert_eq!(status, 200);
    }
    let (status, headers, body) = http.fetch(path).await;
    assert_eq!(status, 429);
    assert_eq!(body["code"], json!("TooManyRequests"));
    assert_eq!(headers.retry_after, Some(1));
    assert_eq!(headers.cache_control, "no-store");
    // The limit is per client address, whatever the path: /d counts too.
    let (status, _, _) = http.fetch("/d?host=www.demo.isobar.test").await;
    assert_eq!(status, 429);
    // One token comes back per second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _, _) = http.fetch(path).await;
    assert_eq!(status, 200);
    http.stop().await;

    // Per account: two accounts, one throttled, the other not.
    let mut s = settings();
    s.per_account = limit(1, 2);
    let http = HttpServer::start(alibaba_engine(s)).await;
    for _ in 0..2 {
        assert_eq!(http.fetch(path).await.0, 200);
    }
    let (status, _, body) = http.fetch(path).await;
    assert_eq!((status, &body["code"]), (429, &json!("TooManyRequests")));
    assert_eq!(http.fetch("/both/d?host=www.demo.isobar.test").await.0, 200);
    http.stop().await;
}

#[tokio::test]
async fn serves_http1_keep_alive_h2c_and_tls_with_alpn_h2() {
    let engine = alibaba_engine(settings());
    let path = "/open/d?host=www.demo.isobar.test&ip=198.51.100.7";

    let http = HttpServer::start(Arc::clone(&engine)).await;
    let h1 = reqwest::Client::builder().http1_only().build().unwrap();
    for _ in 0..3 {
        let (status, headers, body) = fetch_with(&h1, &format!("{}{path}", http.base)).await;
        assert_eq!((status, headers.version), (200, reqwest::Version::HTTP_11));
        assert_eq!(body["ips"][0], json!("192.0.2.10"));
    }
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let (status, headers, body) = fetch_with(&h2c, &format!("{}{path}", http.base)).await;
    assert_eq!((status, headers.version), (200, reqwest::Version::HTTP_2));
    assert_eq!(body["ips"][0], json!("192.0.2.10"));
    http.stop().await;

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    let tls = isobar_dns::httpdns::serve::tls_config(
        cert_pem.as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
        "cert.pem",
        "key.pem",
    )
    .unwrap();
    let https = HttpServer::start_with(engine, Some(tls)).await;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", https.addr)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}{path}", https.addr.port());
    let (status, headers, body) = fetch_with(&client, &url).await;
    assert_eq!((status, headers.version), (200, reqwest::Version::HTTP_2));
    assert_eq!(body["ips"][0], json!("192.0.2.10"));
    // TLS with ALPN http/1.1: the HTTP/1 fast path, then hyper for another route.
    let tls_h1 = reqwest::Client::builder()
        .use_rustls_tls()
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", https.addr)
        .build()
        .unwrap();
    for _ in 0..3 {
        let (status, headers, body) = fetch_with(&tls_h1, &url).await;
        assert_eq!((status, headers.version), (200, reqwest::Version::HTTP_11));
        assert_eq!(body["ips"][0], json!("192.0.2.10"));
        assert!(headers.cache_control.starts_with("max-age="), "{headers:?}");
    }
    let healthz = tls_h1
        .get(format!("https://localhost:{}/healthz", https.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    let (status, _, body) = fetch_with(&tls_h1, &url).await;
    assert_eq!((status, &body["ips"][0]), (200, &json!("192.0.2.10")));
    // Plain HTTP to the TLS port gets no answer.
    assert!(
        reqwest::get(format!("http://{}{path}", https.addr))
            .await
            .is_err()
    );
    https.stop().await;

    // Bad PEM is a clear error.
    let err =
        isobar_dns::httpdns::serve::tls_config(b"junk", b"junk", "c.pem", "k.pem").unwrap_err();
    assert!(err.to_string().contains("c.pem"), "{err}");
}
