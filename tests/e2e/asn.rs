//! ASN client groups over the real stack: the `asn_db` option reaches the frontends and the
//! scheduler's explain, a DNS query from the ASN's network gets the group's answer, and
//! explain names the group (or says it has no ASN database to check).

use std::time::Duration;

use hickory_proto::rr::RecordType;
use isobar_proto::v1::admin_client::AdminClient;
use isobar_proto::v1::{ExplainRequest, Explanation};

use crate::support::{Listeners, addresses, eventually, options, query, udp, world_toml};

const WWW: &str = "www.example.test.";
/// The New York network of the e2e GeoIP database, which the ASN database gives AS64500.
const NEW_YORK_ECS: &str = "198.51.100.0/24";

/// A stack whose world puts AS64500 in a client group at the ap region (Singapore), with
/// the ASN database given when `asn_db` is set.
async fn start(asn_db: bool) -> (isobar::Running, Listeners, tempfile::TempDir) {
    let listeners = Listeners::start_all(3).await;
    let world = world_toml(&listeners)
        + r#"
[[client_groups]]
name = "transit"
asns = [64500]
region = "ap"
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("world.toml");
    std::fs::write(&config, world).expect("write config");
    let mut opts = options(dir.path(), &config);
    if asn_db {
        let path = dir.path().join("asn.mmdb");
        let db = isobar::demo::asn_database(&[
            ("198.51.100.0/24", 64500, "Example Transit"),
            ("192.0.2.0/24", 64999, "Elsewhere"),
        ])
        .expect("asn mmdb");
        std::fs::write(&path, db).expect("write asn mmdb");
        opts.asn_db = Some(path);
    }
    let running = isobar::start(opts, None).await.expect("stack starts");
    let engine = running.engine.clone().expect("engine");
    eventually(Duration::from_secs(10), || {
        let engine = engine.clone();
        async move { engine.version() > 0 }
    })
    .await;
    (running, listeners, dir)
}

/// `isobar explain` for a client behind a resolver that sends `ecs`.
async fn explain(running: &isobar::Running, ecs: &str) -> Explanation {
    let url = format!("http://{}", running.grpc.expect("grpc"));
    let mut admin = AdminClient::connect(url).await.expect("admin");
    let request = ExplainRequest {
        name: WWW.into(),
        client: "127.0.0.1".into(),
        ecs: ecs.into(),
        device: String::new(),
    };
    admin.explain(request).await.expect("explain").into_inner()
}

#[tokio::test]
async fn an_asn_group_steers_its_clients_and_explain_names_it() {
    let (running, _listeners, _dir) = start(true).await;
    let dns = running.dns.expect("dns");

    // GeoIP says New York (iad1), but AS64500's group stands in Singapore: sin1 first.
    let r = udp(dns, &query(WWW, RecordType::A, Some(NEW_YORK_ECS))).await;
    assert_eq!(addresses(&r)[0], "203.0.113.10");
    // AS64999 is in no group: GeoIP's Berlin cell decides (fra1).
    let r = udp(dns, &query(WWW, RecordType::A, Some("192.0.2.0/24"))).await;
    assert_eq!(addresses(&r)[0], "192.0.2.10");

    let e = explain(&running, NEW_YORK_ECS).await;
    let group = e.group.expect("group");
    assert_eq!(
        (group.label.as_str(), group.decided_by.as_str()),
        ("group:transit", "asn")
    );
    assert_eq!(
        (group.asn, group.asn_organization.as_str()),
        (64500, "Example Transit")
    );
    assert_eq!(group.prefix_len, 24);
    assert!(!group.asn_db_missing);
    let answer = e.answer.expect("answer");
    assert_eq!(answer.ipv4[0], "203.0.113.10");
    assert_eq!(answer.ecs_scope, 24);
    let text = isobar::steer_cmd::explain_text(&Explanation {
        group: Some(group),
        ..Default::default()
    });
    assert!(text.contains("group group:transit by asn"), "{text}");
    assert!(text.contains("asn: AS64500 (Example Transit)"), "{text}");
    running.stop().await;
}

#[tokio::test]
async fn without_an_asn_database_explain_says_it_cannot_check_asn_groups() {
    let (running, _listeners, _dir) = start(false).await;
    let e = explain(&running, NEW_YORK_ECS).await;
    let group = e.group.expect("group");
    assert_eq!(group.decided_by, "geoip");
    assert!(group.asn_db_missing);
    let text = isobar::steer_cmd::explain_text(&Explanation {
        group: Some(group),
        ..Default::default()
    });
    assert!(text.contains("no ASN database (--asn-db)"), "{text}");
    // The frontend, equally without one, answers from GeoIP: iad1.
    let dns = running.dns.expect("dns");
    let r = udp(dns, &query(WWW, RecordType::A, Some(NEW_YORK_ECS))).await;
    assert_eq!(addresses(&r)[0], "198.51.100.10");
    running.stop().await;
}

#[tokio::test]
async fn a_city_database_given_as_the_asn_database_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listeners = Listeners::start_all(3).await;
    let config = dir.path().join("world.toml");
    std::fs::write(&config, world_toml(&listeners)).expect("write config");
    let mut opts = options(dir.path(), &config);
    opts.asn_db = opts.geoip.clone();
    let err = match isobar::start(opts, None).await {
        Ok(_) => panic!("a City database was accepted as the ASN database"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("opening ASN database"), "{err}");
    assert!(err.contains("not an ASN database"), "{err}");
}
