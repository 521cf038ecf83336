//! HTTP(S) GET probe: expected status, optional body match, extra headers, and a host name
//! that sets both the `Host` header and the TLS SNI while connecting to the configured address.
//!
//! reqwest with rustls (ring provider, the one tonic already uses here) does the HTTP/1.1 and
//! TLS work: it is the most used Rust HTTP client, keeps up with hyper and rustls releases,
//! and its `resolve` override gives exactly "name for SNI and Host, address for the socket".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// Most of the body read for a `body` match; health pages are small.
const MAX_BODY: usize = 64 * 1024;

/// Probes one URL.
#[derive(Debug)]
pub(super) struct HttpProbe {
    client: reqwest::Client,
    url: String,
    expect: StatusMatch,
    body: Option<String>,
}

/// An expected status: exact (`200`) or a class (`2xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusMatch {
    Exact(u16),
    Class(u16),
}

impl HttpProbe {
    /// `address` is `ip:port` to connect to. Params: `scheme` (`http` or `https`), `path`
    /// (default `/`), `host` (Host header and SNI; default the address), `expect_status`
    /// (default `2xx`), `body` (substring the body must contain), `header.<name>` (extra
    /// request headers), `tls_verify` (`false` accepts any certificate), and the timeout.
    pub(super) fn new(
        address: &str,
        params: &HashMap<String, String>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let addr: SocketAddr = address
            .parse()
            .map_err(|_| format!("invalid address {address:?}, expected ip:port"))?;
        let scheme = params.get("scheme").map_or("http", String::as_str);
        if scheme != "http" && scheme != "https" {
            return Err(format!("scheme {scheme:?}: use http or https"));
        }
        let path = params.get("path").map_or("/", String::as_str);
        if !path.starts_with('/') {
            return Err(format!("path {path:?}: must start with /"));
        }
        let expect = match params.get("expect_status").map(String::as_str) {
            None => StatusMatch::Class(2),
            Some(s) => parse_status(s)?,
        };
        let mut headers = HeaderMap::new();
        for (k, v) in params {
            if let Some(name) = k.strip_prefix("header.") {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("header {name:?}: invalid name"))?;
                let value = HeaderValue::from_str(v)
                    .map_err(|_| format!("header {name}: invalid value"))?;
                headers.insert(name, value);
            }
        }
        let verify = params.get("tls_verify").is_none_or(|v| v != "false");
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            // A fresh connection per probe: a pooled one would hide a dead listener.
            .pool_max_idle_per_host(0)
            .connect_timeout(timeout)
            .timeout(timeout)
            .danger_accept_invalid_certs(!verify)
            .user_agent(concat!("isobar-prober/", env!("CARGO_PKG_VERSION")));
        let url_host = match params.get("host") {
            Some(host) => {
                builder = builder.resolve(host, addr);
                host.clone()
            }
            None => addr.to_string(),
        };
        let url = match params.get("host") {
            Some(_) => format!("{scheme}://{url_host}:{}{path}", addr.port()),
            None => format!("{scheme}://{url_host}{path}"),
        };
        let client = builder.build().map_err(|e| format!("http client: {e}"))?;
        Ok(Self {
            client,
            url,
            expect,
            body: params.get("body").cloned(),
        })
    }

    /// Performs one GET; the RTT is the time to the response headers.
    pub(super) async fn run(&self) -> Result<Duration, String> {
        let start = Instant::now();
        let mut response = self.client.get(&self.url).send().await.map_err(describe)?;
        let rtt = start.elapsed();
        let status = response.status().as_u16();
        let ok = match self.expect {
            StatusMatch::Exact(code) => status == code,
            StatusMatch::Class(class) => status / 100 == class,
        };
        if !ok {
            return Err(format!("status {status}"));
        }
        if let Some(needle) = &self.body {
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(describe)? {
                body.extend_from_slice(&chunk);
                if body.len() >= MAX_BODY {
                    break;
                }
            }
            if !String::from_utf8_lossy(&body).contains(needle.as_str()) {
                return Err("body does not match".to_owned());
            }
        }
        Ok(rtt)
    }
}

fn parse_status(s: &str) -> Result<StatusMatch, String> {
    let bad = || format!("expect_status {s:?}: use a code like 200 or a class like 2xx");
    if let Some(class) = s.strip_suffix("xx") {
        let class: u16 = class.parse().map_err(|_| bad())?;
        return if (1..=5).contains(&class) {
            Ok(StatusMatch::Class(class))
        } else {
            Err(bad())
        };
    }
    let code: u16 = s.parse().map_err(|_| bad())?;
    if (100..=599).contains(&code) {
        Ok(StatusMatch::Exact(code))
    } else {
        Err(bad())
    }
}

/// Short, stable error strings for grouping failures.
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timeout".to_owned();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    if text.contains("Connection refused") {
        "connection refused".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A one-route HTTP/1.1 server answering `status` and `body`, recording request heads.
    async fn server(
        status: u16,
        body: &'static str,
    ) -> (SocketAddr, tokio::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let _ = tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .await;
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        (addr, rx)
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn checks_status_body_host_and_headers() {
        let (addr, mut seen) = server(200, "all good").await;
        let p = params(&[
            ("path", "/healthz"),
            ("host", "www.example.test"),
            ("body", "good"),
            ("header.x-probe", "isobar"),
        ]);
        let probe = HttpProbe::new(&addr.to_string(), &p, Duration::from_secs(2)).unwrap();
        probe.run().await.expect("healthy");
        let head = seen.recv().await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /healthz http/1.1"), "{head}");
        assert!(
            head.contains(&format!("host: www.example.test:{}", addr.port())),
            "{head}"
        );
        assert!(head.contains("x-probe: isobar"), "{head}");

        let p = params(&[("body", "missing")]);
        let probe = HttpProbe::new(&addr.to_string(), &p, Duration::from_secs(2)).unwrap();
        assert_eq!(probe.run().await.unwrap_err(), "body does not match");

        let (addr, _seen) = server(503, "").await;
        let probe =
            HttpProbe::new(&addr.to_string(), &params(&[]), Duration::from_secs(2)).unwrap();
        assert_eq!(probe.run().await.unwrap_err(), "status 503");
        let p = params(&[("expect_status", "503")]);
        let probe = HttpProbe::new(&addr.to_string(), &p, Duration::from_secs(2)).unwrap();
        probe.run().await.expect("503 expected");
    }

    #[test]
    fn rejects_bad_params() {
        let t = Duration::from_secs(1);
        for bad in [
            params(&[("expect_status", "abc")]),
            params(&[("expect_status", "7xx")]),
            params(&[("path", "healthz")]),
            params(&[("scheme", "ftp")]),
            params(&[("header.bad name", "x")]),
        ] {
            assert!(HttpProbe::new("127.0.0.1:80", &bad, t).is_err(), "{bad:?}");
        }
        assert!(HttpProbe::new("localhost:80", &params(&[]), t).is_err());
    }
}

#[cfg(test)]
mod tls_tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::LazyConfigAcceptor;
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio_rustls::rustls::{self, ServerConfig};

    use super::*;

    /// An HTTPS server with a self-signed certificate that reports the SNI each client sent.
    async fn tls_server() -> (SocketAddr, tokio::sync::mpsc::Receiver<Option<String>>) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert = rcgen::generate_simple_self_signed(vec!["www.example.test".to_owned()])
            .expect("certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let config = Arc::new(
            ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(vec![cert.cert.der().clone()], key)
                .expect("server config"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (config, tx) = (Arc::clone(&config), tx.clone());
                tokio::spawn(async move {
                    let acceptor =
                        LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
                    let Ok(start) = acceptor.await else { return };
                    let sni = start.client_hello().server_name().map(str::to_owned);
                    let _ = tx.send(sni).await;
                    let Ok(mut tls) = start.into_stream(config).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn https_sends_the_configured_sni_and_verifies_certificates_by_default() {
        let (addr, mut sni) = tls_server().await;
        let params = |verify: bool| -> HashMap<String, String> {
            let mut p: HashMap<String, String> = [
                ("scheme", "https"),
                ("host", "www.example.test"),
                ("body", "ok"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
            if !verify {
                p.insert("tls_verify".into(), "false".into());
            }
            p
        };
        let probe =
            HttpProbe::new(&addr.to_string(), &params(false), Duration::from_secs(2)).unwrap();
        probe.run().await.expect("https with verification off");
        assert_eq!(
            sni.recv().await.unwrap().as_deref(),
            Some("www.example.test")
        );

        // A self-signed certificate fails verification, which is on unless turned off.
        let probe =
            HttpProbe::new(&addr.to_string(), &params(true), Duration::from_secs(2)).unwrap();
        let err = probe.run().await.expect_err("self-signed rejected");
        assert!(err.to_lowercase().contains("certificate"), "{err}");
    }
}
