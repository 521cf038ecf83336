//! TLS on the scheduler's gRPC listener, with certificates minted per test: TLS clients
//! that trust the CA get through, plaintext does not, and with mTLS neither does a TLS
//! client without a certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use isobar_proto::v1::GetStateRequest;
use isobar_proto::v1::admin_client::AdminClient;
use isobar_scheduler::Scheduler;
use isobar_scheduler::grpc::tls::{ServerTls, client_tls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{ClientTlsConfig, Endpoint};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate, all from that CA.
    fn mint() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        write("ca.pem", ca.pem());
        for (name, sans) in [
            ("server", vec!["127.0.0.1".to_owned()]),
            ("client", vec!["frontend".to_owned()]),
        ] {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(sans)
                .expect("params")
                .signed_by(&key, &ca)
                .expect("signed");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// Starts a scheduler serving TLS (mTLS with `client_ca`) on an ephemeral loopback port.
async fn serve(pki: &Pki, mtls: bool) -> (String, CancellationToken, tempfile::TempDir) {
    let db = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", db.path().join("s.db").display());
    let store = isobar_store::Store::open(&url).await.expect("store");
    let scheduler: Arc<Scheduler> = Scheduler::open(store).await.expect("scheduler");
    let tls = ServerTls {
        cert: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: mtls.then(|| pki.path("ca.pem")),
    }
    .load()
    .expect("tls files");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    tokio::spawn(isobar_scheduler::grpc::serve_tls(
        listener,
        scheduler,
        None,
        Some(tls),
        stop.clone(),
    ));
    (format!("{addr}"), stop, db)
}

/// One `Admin/GetState` call; `Err` carries why it failed.
async fn call(url: String, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let mut endpoint = Endpoint::from_shared(url)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    AdminClient::new(channel)
        .get_state(GetStateRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

fn ca_only(pki: &Pki) -> ClientTlsConfig {
    client_tls(Some(&pki.path("ca.pem")), None, None).expect("client tls")
}

#[tokio::test]
async fn tls_serves_trusting_clients_and_refuses_plaintext() {
    let pki = Pki::mint();
    let (addr, stop, _db) = serve(&pki, false).await;
    call(format!("https://{addr}"), Some(ca_only(&pki)))
        .await
        .expect("a client trusting the CA gets through");
    let plain = call(format!("http://{addr}"), None).await;
    assert!(plain.is_err(), "plaintext must be refused: {plain:?}");
    // A client that does not trust the CA is refused too.
    let other = Pki::mint();
    let untrusted = call(format!("https://{addr}"), Some(ca_only(&other))).await;
    assert!(untrusted.is_err(), "{untrusted:?}");
    stop.cancel();
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate() {
    let pki = Pki::mint();
    let (addr, stop, _db) = serve(&pki, true).await;
    let anonymous = call(format!("https://{addr}"), Some(ca_only(&pki))).await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
    let with_cert = client_tls(
        Some(&pki.path("ca.pem")),
        Some(&pki.path("client.pem")),
        Some(&pki.path("client.key")),
    )
    .expect("client tls");
    call(format!("https://{addr}"), Some(with_cert))
        .await
        .expect("a client with a certificate from the CA gets through");
    stop.cancel();
}

#[test]
fn unusable_files_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not pem").expect("write");
    let err = client_tls(Some(&junk), None, None).unwrap_err().to_string();
    assert!(err.contains("junk.pem") && err.contains("no PEM"), "{err}");
    let missing = ServerTls {
        cert: dir.path().join("missing.pem"),
        key: junk,
        client_ca: None,
    }
    .load()
    .unwrap_err()
    .to_string();
    assert!(missing.contains("missing.pem"), "{missing}");
    let half = client_tls(None, Some(Path::new("a.pem")), None).unwrap_err();
    assert!(half.to_string().contains("needs its key"), "{half}");
}
