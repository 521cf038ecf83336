//! Config through the admin API: round trip, rejected files, tokens, health and reflection.

use isobar_proto::v1::admin_client::AdminClient;
use isobar_proto::v1::placement_client::PlacementClient;
use isobar_proto::v1::{
    ApplyConfigRequest, ExportConfigRequest, GetStateRequest, PlaceRequest, PlacementPolicy,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{Stack, options};

async fn admin(stack: &Stack) -> AdminClient<Channel> {
    AdminClient::connect(stack.grpc_url())
        .await
        .expect("connect")
}

#[tokio::test]
async fn export_then_apply_is_a_no_op() {
    let stack = Stack::start().await;
    let mut admin = admin(&stack).await;
    let exported = admin
        .export_config(ExportConfigRequest {})
        .await
        .expect("export")
        .into_inner();
    assert!(exported.toml.contains("www.example.test."));
    let applied = admin
        .apply_config(ApplyConfigRequest {
            source_name: "exported.toml".into(),
            toml: exported.toml.clone(),
            ..Default::default()
        })
        .await
        .expect("apply")
        .into_inner();
    assert!(!applied.changed, "diff: {:?}", applied.diff);
    assert_eq!(applied.config_version, exported.config_version);
    stack.running.stop().await;
}

#[tokio::test]
async fn a_bad_config_names_file_line_and_field_and_changes_nothing() {
    let stack = Stack::start().await;
    let mut admin = admin(&stack).await;
    let before = admin
        .export_config(ExportConfigRequest {})
        .await
        .expect("export")
        .into_inner();
    let bad = before
        .toml
        .replacen("replica_slots = 4", "replica_slots = \"many\"", 1);
    let line = bad
        .lines()
        .position(|l| l.contains("\"many\""))
        .expect("edited line")
        + 1;
    let err = admin
        .apply_config(ApplyConfigRequest {
            source_name: "bad.toml".into(),
            toml: bad,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with(&format!("bad.toml:{line}:")),
        "{}",
        err.message()
    );
    assert!(err.message().contains("replica_slots"), "{}", err.message());

    let unknown = before
        .toml
        .replacen("[defaults]", "[defaults]\nfrobnicate = 1", 1);
    let err = admin
        .apply_config(ApplyConfigRequest {
            source_name: "typo.toml".into(),
            toml: unknown,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("frobnicate"), "{}", err.message());

    let after = admin
        .export_config(ExportConfigRequest {})
        .await
        .expect("export")
        .into_inner();
    assert_eq!(after.config_version, before.config_version);
    assert_eq!(after.toml, before.toml);
    stack.running.stop().await;
}

#[tokio::test]
async fn dry_run_shows_the_diff_without_applying() {
    let stack = Stack::start().await;
    let mut admin = admin(&stack).await;
    let before = admin
        .export_config(ExportConfigRequest {})
        .await
        .expect("export")
        .into_inner();
    let changed = before.toml.replacen("ttl = 20", "ttl = 60", 1);
    let resp = admin
        .apply_config(ApplyConfigRequest {
            source_name: "w.toml".into(),
            toml: changed,
            dry_run: true,
            ..Default::default()
        })
        .await
        .expect("dry run")
        .into_inner();
    assert!(!resp.changed);
    assert!(
        resp.diff.iter().any(|l| l.contains("60")),
        "{:?}",
        resp.diff
    );
    let state = admin
        .get_state(GetStateRequest {})
        .await
        .expect("state")
        .into_inner();
    assert_eq!(state.config_version, before.config_version);
    stack.running.stop().await;
}

#[tokio::test]
async fn a_token_guards_state_changes_and_off_loopback_needs_one() {
    let listeners = crate::support::Listeners::start_all(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("world.toml");
    std::fs::write(&config, crate::support::world_toml(&listeners)).expect("write");

    let mut open = options(dir.path(), &config);
    open.grpc = "0.0.0.0:0".parse().expect("addr");
    let refused = isobar::start(open, None)
        .await
        .err()
        .expect("refuses to start without a token");
    assert!(refused.to_string().contains("without a token"), "{refused}");

    let mut guarded = options(dir.path(), &config);
    guarded.token = Some("s3cret".into());
    let running = isobar::start(guarded, None)
        .await
        .expect("starts with a token");
    let url = format!("http://{}", running.grpc.expect("grpc"));
    let mut client = PlacementClient::connect(url.clone())
        .await
        .expect("connect");
    let place = || PlaceRequest {
        service: "www.example.test".into(),
        policy: Some(PlacementPolicy {
            replicas: 1,
            ..Default::default()
        }),
    };
    assert_eq!(
        client.place(place()).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut request = tonic::Request::new(place());
    request
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().expect("ascii"));
    assert!(client.place(request).await.is_ok());

    // The frontends in the same process authenticate with the same token.
    let engine = running.engine.clone().expect("engine");
    crate::support::eventually(std::time::Duration::from_secs(10), || async {
        engine.version() > 0
    })
    .await;

    // Health and reflection stay open.
    let channel = Channel::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "isobar.v1.Placement".into(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let services = list_services(channel).await;
    for expected in [
        "isobar.v1.Placement",
        "isobar.v1.Steering",
        "isobar.v1.Telemetry",
        "isobar.v1.Admin",
    ] {
        assert!(
            services.iter().any(|s| s == expected),
            "{expected} missing from {services:?}"
        );
    }
    running.stop().await;
}

async fn list_services(channel: Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let Some(Ok(resp)) = futures::StreamExt::next(&mut stream).await else {
        panic!("no reflection answer")
    };
    match resp.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}
