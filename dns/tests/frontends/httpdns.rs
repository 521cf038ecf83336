//! The HTTPDNS frontend through a real axum server and a real HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;

use isobar_dns::Engine;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::*;

struct HttpServer {
    base: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    async fn start(engine: Arc<Engine>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let app =
            isobar_dns::http::router(engine).into_make_service_with_connect_info::<SocketAddr>();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .unwrap();
        });
        Self { base, stop, task }
    }

    async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let resp = reqwest::get(format!("{}{path_and_query}", self.base))
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
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
