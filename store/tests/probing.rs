//! Probing settings in the world config: per-endpoint probe specs, the mesh, landmarks and
//! quorum settings parse, validate, survive the store and export; health overrides persist
//! with an audit row.

mod common;

use common::{WORLD, error, parse};
use isobar_store::Store;
use isobar_store::config::to_toml;
use isobar_store::world::CheckKind;

const PROBING: &str = r#"
[health]
interval_ms = 500
timeout_ms = 400
fall = 3
rise = 2
quorum = 2
broken_vantage_percent = 60
flap_suppress = 4
mesh = { fra1 = "10.0.0.1:7070", iad1 = "10.0.1.1:7070" }
landmarks = [
  { region = "eu", address = "192.0.2.200" },
  { region = "us", address = "198.51.100.7:7070", kind = "udp_echo", interval_ms = 50 },
]
"#;

fn world_with(health: &str, endpoint_extra: &str) -> String {
    let text = WORLD.replacen(
        "[health]\ninterval_ms = 1000\ntimeout_ms = 800\nfall = 3\nrise = 2\n",
        health,
        1,
    );
    text.replacen(
        "check = \"192.0.2.1:80\"\n",
        &format!("check = \"192.0.2.1:80\"\n{endpoint_extra}"),
        1,
    )
}

const HTTP_PROBE: &str = "probe = { kind = \"https\", interval_ms = 250, params = { path = \"/healthz\", host = \"www.example.test\", expect_status = \"200\", \"header.x-probe\" = \"isobar\" } }\n";

#[test]
fn probing_settings_parse_and_export_identically() {
    let parsed = parse(&world_with(PROBING, HTTP_PROBE)).expect("valid");
    let w = &parsed.world;
    assert_eq!(w.health.quorum, 2);
    assert_eq!(w.health.mesh["iad1"], "10.0.1.1:7070");
    assert_eq!(
        w.health.landmarks[0].kind,
        CheckKind::Icmp,
        "landmarks default to icmp"
    );
    assert_eq!(w.health.landmarks[1].interval_ms, Some(50));
    let e = &w.service("www.demo.isobar.test.").unwrap().endpoints[0];
    let spec = e.probe.as_ref().expect("probe spec");
    assert_eq!(spec.kind, CheckKind::Https);
    assert_eq!(spec.params["header.x-probe"], "isobar");
    assert_eq!(e.target_id().as_deref(), Some("https://192.0.2.1:80"));

    let again = parse(&to_toml(w)).expect("export reparses");
    assert_eq!(&again.world, w);
    // Defaults stay out of exports, so older worlds export as before.
    let plain = parse(WORLD).unwrap();
    let exported = to_toml(&plain.world);
    assert!(
        !exported.contains("flap") && !exported.contains("probe"),
        "{exported}"
    );
}

#[test]
fn probing_settings_are_validated() {
    let cases = [
        (
            world_with("[health]\nmesh = { nowhere = \"10.0.0.1:1\" }\n", ""),
            "unknown pop \"nowhere\"",
        ),
        (
            world_with("[health]\nmesh = { fra1 = \"10.0.0.1\" }\n", ""),
            "is not an address:port",
        ),
        (
            world_with(
                "[health]\nlandmarks = [{ region = \"mars\", address = \"10.0.0.1\" }]\n",
                "",
            ),
            "unknown region \"mars\"",
        ),
        (
            world_with(
                "[health]\nlandmarks = [{ region = \"eu\", address = \"10.0.0.1:1\", kind = \"dns\" }]\n",
                "",
            ),
            "dns is not a landmark kind",
        ),
        (
            world_with("[health]\nbroken_vantage_percent = 101\n", ""),
            "must be at most 100",
        ),
        (
            world_with(
                "",
                "probe = { kind = \"tcp\", params = { path = \"/\" } }\n",
            ),
            "\"path\" is not a tcp parameter",
        ),
        (
            world_with("", "probe = { kind = \"udp_echo\", interval_ms = 1 }\n"),
            "must be at least 5, got 1",
        ),
        (
            world_with("", "probe = { kind = \"gopher\" }\n"),
            "unknown variant `gopher`",
        ),
    ];
    for (text, needle) in cases {
        let message = error(&text);
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    // ICMP checks may name a bare address.
    let icmp = WORLD.replacen(
        "check = \"192.0.2.1:80\"\n",
        "check = \"192.0.2.1\"\nprobe = { kind = \"icmp\" }\n",
        1,
    );
    parse(&icmp).expect("bare address for icmp");
}

#[tokio::test]
async fn probe_specs_and_overrides_survive_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    let world = parse(&world_with(PROBING, HTTP_PROBE)).unwrap().world;
    store.apply_world(&world, "test", false).await.unwrap();
    let (loaded, _) = store.load_world().await.unwrap();
    assert_eq!(loaded, world);

    let id = "https://192.0.2.1:80";
    assert!(
        store
            .set_health_override(id, Some(("drain", "maintenance")), "alice")
            .await
            .unwrap()
    );
    let rows = store.load_health_overrides().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].mode.as_str(), rows[0].actor.as_str()),
        ("drain", "alice")
    );
    assert!(store.set_health_override(id, None, "bob").await.unwrap());
    assert!(
        !store.set_health_override(id, None, "bob").await.unwrap(),
        "nothing to clear"
    );
    assert!(store.load_health_overrides().await.unwrap().is_empty());
    let audit = store.list_audit(10).await.unwrap();
    let overrides: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "health_override")
        .collect();
    assert_eq!(overrides.len(), 2, "set and clear audited, the no-op not");
    assert_eq!(overrides[0].actor, "bob");
    assert!(
        overrides[1].detail.contains("maintenance"),
        "{:?}",
        overrides[1]
    );
}
