//! DNS over HTTPS against the DNS frontend: RFC 8484 GET and POST and the JSON form, through
//! a real axum server, compared with the real UDP server of the same engine.

use std::sync::Arc;

use base64::Engine as _;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use isobar_dns::Engine;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::*;

struct DohServer {
    base: String,
    client: reqwest::Client,
    http2: bool,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl DohServer {
    /// The whole HTTP frontend router (DoH must be wired into it) on the production accept
    /// loop (HTTP/1.1 and h2c); `client` speaks HTTP/1.1, or HTTP/2 with prior knowledge.
    async fn start(engine: Arc<Engine>, http2: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let router = isobar_dns::http::router(engine);
        let task = tokio::spawn(isobar_dns::httpdns::serve::serve(
            listener,
            router,
            None,
            stop.clone(),
        ));
        let client = if http2 {
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap()
        } else {
            reqwest::Client::new()
        };
        Self {
            base,
            client,
            http2,
            stop,
            task,
        }
    }

    /// RFC 8484 GET; returns the status, Cache-Control and the body.
    async fn get_wire(&self, msg: &Message) -> (u16, Option<String>, Vec<u8>) {
        let encoded =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(msg.to_vec().unwrap());
        self.send(
            self.client
                .get(format!("{}/dns-query?dns={encoded}", self.base))
                .header("accept", "application/dns-message"),
        )
        .await
    }

    /// RFC 8484 POST with `content_type`.
    async fn post(&self, body: Vec<u8>, content_type: &str) -> (u16, Option<String>, Vec<u8>) {
        self.send(
            self.client
                .post(format!("{}/dns-query", self.base))
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    async fn get_path(&self, path_and_query: &str) -> (u16, Option<String>, Vec<u8>) {
        self.send(
            self.client
                .get(format!("{}{path_and_query}", self.base))
                .header("accept", "application/dns-json"),
        )
        .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Option<String>, Vec<u8>) {
        let resp = request.send().await.unwrap();
        let expected = if self.http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(resp.version(), expected);
        let status = resp.status().as_u16();
        let cache = resp
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, cache, resp.bytes().await.unwrap().to_vec())
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// A section as a sorted list of records (order inside a section carries no meaning for
/// the comparison; the records themselves must be identical).
fn set(records: &[Record]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = records.iter().map(|r| r.to_bytes().unwrap()).collect();
    out.sort();
    out
}

fn assert_same_answer(doh: &Message, udp: &Message, what: &str) {
    assert_eq!(
        doh.metadata.response_code, udp.metadata.response_code,
        "{what}: rcode"
    );
    assert_eq!(doh.metadata.id, udp.metadata.id, "{what}: id echoed");
    assert_eq!(doh.metadata.authoritative, udp.metadata.authoritative);
    assert_eq!(set(&doh.answers), set(&udp.answers), "{what}: answer");
    assert_eq!(
        set(&doh.authorities),
        set(&udp.authorities),
        "{what}: authority"
    );
    assert_eq!(
        set(&doh.additionals),
        set(&udp.additionals),
        "{what}: additional"
    );
    assert_eq!(echoed_ecs(doh), echoed_ecs(udp), "{what}: ECS scope");
}

/// What the JSON form should say for a record, formatted independently of the server.
fn json_data(record: &Record) -> (String, u64, u64, String) {
    let data = match &record.data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| format!("\"{}\"", String::from_utf8_lossy(s)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    (
        record.name.to_ascii(),
        u64::from(u16::from(record.record_type())),
        u64::from(record.ttl),
        data,
    )
}

fn json_section(body: &Value, key: &str) -> Vec<(String, u64, u64, String)> {
    let mut out: Vec<_> = body[key]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap().to_owned(),
                        r["type"].as_u64().unwrap(),
                        r["TTL"].as_u64().unwrap(),
                        r["data"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn udp_section(records: &[Record]) -> Vec<(String, u64, u64, String)> {
    let mut out: Vec<_> = records.iter().map(json_data).collect();
    out.sort();
    out
}

#[tokio::test]
async fn wire_get_and_post_answer_exactly_like_udp_over_http1_and_h2c() {
    for http2 in [false, true] {
        wire_answers_like_udp(http2).await;
    }
}

async fn wire_answers_like_udp(http2: bool) {
    let engine = engine_with(1);
    let dns = dns_server(Arc::clone(&engine)).await;
    let doh = DohServer::start(engine, http2).await;

    let cases = [
        // GSLB name with ECS from Europe and from America, and without ECS (the client,
        // 127.0.0.1, is located in New York by the fixture database).
        (WWW, RecordType::A, Some("198.51.100.0/24")),
        (WWW, RecordType::AAAA, Some("203.0.113.0/24")),
        (WWW, RecordType::A, None),
        // Static data: TXT, a delegation (referral with glue), the apex NS with glue.
        ("txt.demo.isobar.test.", RecordType::TXT, None),
        ("host.sub.demo.isobar.test.", RecordType::A, None),
        (ZONE, RecordType::NS, None),
        // NXDOMAIN and NODATA.
        (
            "nope.demo.isobar.test.",
            RecordType::A,
            Some("198.51.100.0/24"),
        ),
        ("txt.demo.isobar.test.", RecordType::A, None),
    ];
    let mut geo_answers = Vec::new();
    for (qname, qtype, ecs) in cases {
        let what = format!("{qname} {qtype} ecs={ecs:?}");
        let msg = query(qname, qtype, true, ecs);
        let from_udp = udp(dns.local_addr(), &msg).await;

        let (status, cache, body) = doh.get_wire(&msg).await;
        assert_eq!(status, 200, "{what}");
        let from_get = Message::from_vec(&body).unwrap();
        assert_same_answer(&from_get, &from_udp, &format!("GET {what}"));

        let (status, cache_post, body) = doh
            .post(msg.to_vec().unwrap(), "application/dns-message")
            .await;
        assert_eq!(status, 200, "{what}");
        let from_post = Message::from_vec(&body).unwrap();
        assert_same_answer(&from_post, &from_udp, &format!("POST {what}"));

        // Cache-Control: the smallest answer TTL, else the negative TTL (SOA MINIMUM 300
        // is below the SOA's own TTL of 3600).
        let expected = match from_udp.answers.iter().map(|r| r.ttl).min() {
            Some(ttl) => ttl,
            None if from_udp
                .authorities
                .iter()
                .any(|r| r.record_type() == RecordType::SOA) =>
            {
                300
            }
            None => 0,
        };
        assert_eq!(cache, Some(format!("max-age={expected}")), "{what}");
        assert_eq!(cache_post, cache, "{what}");
        if qname == WWW {
            geo_answers.push(addrs(&from_udp.answers));
        }
    }
    // The comparison is not vacuous: the three GSLB clients got their own answers.
    assert_eq!(geo_answers[0], ips(&["192.0.2.10", "192.0.2.11"]));
    assert_eq!(geo_answers[1], ips(&["2001:db8::20"]));
    assert_eq!(geo_answers[2], ips(&["192.0.2.20"]));

    doh.stop().await;
    dns.shutdown().await;
}

#[tokio::test]
async fn json_form_carries_the_same_records_as_udp() {
    let engine = engine_with(1);
    let dns = dns_server(Arc::clone(&engine)).await;
    let doh = DohServer::start(engine, false).await;

    let cases = [
        (WWW, "A", RecordType::A, Some("198.51.100.0/24")),
        (WWW, "28", RecordType::AAAA, Some("203.0.113.0/24")),
        // No ECS: the HTTP peer is the client, as the UDP source is.
        (WWW, "a", RecordType::A, None),
        ("txt.demo.isobar.test.", "txt", RecordType::TXT, None),
        (ZONE, "NS", RecordType::NS, None),
        ("nope.demo.isobar.test.", "A", RecordType::A, None),
    ];
    for (i, (qname, type_param, qtype, ecs)) in cases.into_iter().enumerate() {
        let what = format!("{qname} {qtype} ecs={ecs:?}");
        let from_udp = udp(dns.local_addr(), &query(qname, qtype, ecs.is_some(), ecs)).await;
        // Both spellings of the endpoint, alternately.
        let path = if i % 2 == 0 { "/dns-query" } else { "/resolve" };
        let mut url = format!("{path}?name={qname}&type={type_param}");
        if let Some(ecs) = ecs {
            url.push_str(&format!("&edns_client_subnet={ecs}"));
        }
        let (status, cache, body) = doh.get_path(&url).await;
        assert_eq!(status, 200, "{what}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["Status"].as_u64().unwrap(),
            u64::from(u16::from(from_udp.metadata.response_code)),
            "{what}"
        );
        assert_eq!(body["RD"], Value::Bool(true));
        assert_eq!(body["TC"], Value::Bool(false));
        assert_eq!(
            body["Question"][0]["name"].as_str().unwrap(),
            qname,
            "{what}"
        );
        assert_eq!(
            body["Question"][0]["type"].as_u64().unwrap(),
            u64::from(u16::from(qtype))
        );
        assert_eq!(
            json_section(&body, "Answer"),
            udp_section(&from_udp.answers),
            "{what}"
        );
        assert_eq!(
            json_section(&body, "Authority"),
            udp_section(&from_udp.authorities),
            "{what}"
        );
        assert_eq!(
            json_section(&body, "Additional"),
            udp_section(&from_udp.additionals),
            "{what}"
        );
        match (ecs, echoed_ecs(&from_udp)) {
            (Some(_), Some((addr, _, scope))) => assert_eq!(
                body["edns_client_subnet"].as_str().unwrap(),
                format!("{addr}/{scope}"),
                "{what}"
            ),
            _ => assert!(body.get("edns_client_subnet").is_none(), "{what}"),
        }
        let min_ttl = from_udp.answers.iter().map(|r| r.ttl).min().unwrap_or(300);
        assert_eq!(cache, Some(format!("max-age={min_ttl}")), "{what}");
        if qname == "nope.demo.isobar.test." {
            assert_eq!(from_udp.metadata.response_code, ResponseCode::NXDomain);
        }
    }

    doh.stop().await;
    dns.shutdown().await;
}

#[tokio::test]
async fn http_level_errors_have_statuses_and_codes_dns_errors_stay_200() {
    let doh = DohServer::start(engine_with(1), false).await;
    let code = |body: &[u8]| -> String {
        serde_json::from_slice::<Value>(body).unwrap()["code"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let (status, cache, body) = doh.get_path("/dns-query?dns=***").await;
    assert_eq!((status, code(&body).as_str()), (400, "InvalidBase64"));
    assert_eq!(cache.as_deref(), Some("no-store"));
    // Shorter than a header: not a DNS exchange at all.
    let (status, _, body) = doh.get_path("/dns-query?dns=AAAA").await;
    assert_eq!((status, code(&body).as_str()), (400, "MalformedQuery"));
    let (status, _, body) = doh.get_path("/dns-query").await;
    assert_eq!((status, code(&body).as_str()), (400, "MissingParameter"));

    let packet = query(WWW, RecordType::A, false, None).to_vec().unwrap();
    let (status, _, body) = doh.post(packet.clone(), "application/json").await;
    assert_eq!(
        (status, code(&body).as_str()),
        (415, "UnsupportedMediaType")
    );
    let (status, _, body) = doh.post(vec![0; 65536], "application/dns-message").await;
    assert_eq!((status, code(&body).as_str()), (413, "PayloadTooLarge"));

    let (status, _, body) = doh.get_path("/resolve?name=a..b&type=A").await;
    assert_eq!((status, code(&body).as_str()), (400, "InvalidName"));
    let (status, _, body) = doh
        .get_path(&format!("/resolve?name={WWW}&type=BOGUS"))
        .await;
    assert_eq!((status, code(&body).as_str()), (400, "InvalidType"));

    // A header followed by garbage is a DNS-level error: FORMERR inside a 200.
    let mut garbage = packet[..12].to_vec();
    garbage[5] = 1; // QDCOUNT = 1, but no question follows
    garbage.extend_from_slice(&[0xff; 3]);
    let (status, _, body) = doh.post(garbage, "application/dns-message").await;
    assert_eq!(status, 200);
    let formerr = Message::from_vec(&body).unwrap();
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);

    // Outside every zone: REFUSED, still a DNS answer.
    let (status, _, body) = doh
        .get_wire(&query("example.org.", RecordType::A, false, None))
        .await;
    assert_eq!(status, 200);
    let refused = Message::from_vec(&body).unwrap();
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);

    doh.stop().await;
}
