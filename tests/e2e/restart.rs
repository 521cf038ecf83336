//! A frontend keeps serving its last good snapshot without a scheduler, across a restart.

use std::net::SocketAddr;

use hickory_proto::rr::RecordType;
use isobar::Role;

use crate::support::{Listeners, addresses, eventually, options, query, udp, world_toml};

#[tokio::test]
async fn frontend_survives_restart_without_scheduler() {
    let listeners = Listeners::start_all(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("world.toml");
    std::fs::write(&config, world_toml(&listeners)).expect("write");

    // A full stack runs long enough for the frontend to persist a snapshot.
    let full = isobar::start(options(dir.path(), &config), None)
        .await
        .expect("start");
    let engine = full.engine.clone().expect("engine");
    eventually(std::time::Duration::from_secs(10), || async {
        engine.version() > 0
    })
    .await;
    let served = engine.version();
    eventually(std::time::Duration::from_secs(5), || async {
        dir.path().join("snapshot-test.pb").exists()
    })
    .await;
    full.stop().await;

    // Now only the frontends, pointed at a scheduler that is not there.
    let mut alone = options(dir.path(), &config);
    alone.roles = [Role::Dns, Role::Http].into();
    alone.config = None;
    alone.scheduler_url = Some("http://127.0.0.1:9".into());
    let frontend = isobar::start(alone, None)
        .await
        .expect("frontend starts without scheduler");
    assert_eq!(
        frontend.engine.as_ref().expect("engine").version(),
        served,
        "persisted snapshot loaded"
    );
    let dns: SocketAddr = frontend.dns.expect("dns");
    let resp = udp(
        dns,
        &query("www.example.test.", RecordType::A, Some("192.0.2.1/24")),
    )
    .await;
    assert_eq!(addresses(&resp)[0], "192.0.2.10");
    frontend.stop().await;
}
