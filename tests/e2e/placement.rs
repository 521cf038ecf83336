//! Placement over real gRPC: place, watch, and a watch update when a PoP leaves the config.

use std::time::Duration;

use futures::StreamExt;
use isobar_proto::v1::admin_client::AdminClient;
use isobar_proto::v1::placement_client::PlacementClient;
use isobar_proto::v1::{ApplyConfigRequest, PlaceRequest, PlacementPolicy, WatchPlacementRequest};
use tonic::Code;

use crate::support::{Stack, world_toml};

fn replicas(d: &isobar_proto::v1::PlacementDecision, site: &str) -> u32 {
    d.sites
        .iter()
        .find(|s| s.site == site)
        .map_or(0, |s| s.replicas)
}

#[tokio::test]
async fn place_then_watch_sees_a_removed_pop() {
    let stack = Stack::start().await;
    let mut client = PlacementClient::connect(stack.grpc_url())
        .await
        .expect("connect");
    let policy = PlacementPolicy {
        replicas: 6,
        ..Default::default()
    };
    let decision = client
        .place(PlaceRequest {
            service: "www.example.test".into(),
            policy: Some(policy),
        })
        .await
        .expect("place")
        .into_inner();
    assert_eq!(decision.placed, 6);
    assert_eq!(
        (
            replicas(&decision, "fra1"),
            replicas(&decision, "iad1"),
            replicas(&decision, "sin1")
        ),
        (2, 2, 2)
    );

    let mut watch = client
        .watch_placement(WatchPlacementRequest {
            service: "www.example.test.".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("current decision").expect("ok");
    assert_eq!(first.version, decision.version);

    // Remove sin1 (and its endpoints) from the config.
    let toml = world_toml(&stack.listeners);
    let without_sin = remove_pop(&toml, "sin1");
    let applied = AdminClient::connect(stack.grpc_url())
        .await
        .expect("connect")
        .apply_config(ApplyConfigRequest {
            source_name: "world.toml".into(),
            toml: without_sin,
            ..Default::default()
        })
        .await
        .expect("apply")
        .into_inner();
    assert!(applied.changed);
    assert!(
        applied.diff.iter().any(|l| l.contains("sin1")),
        "{:?}",
        applied.diff
    );

    let update = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("update in time")
        .expect("stream open")
        .expect("ok");
    assert_eq!(update.version, decision.version + 1);
    assert_eq!(replicas(&update, "sin1"), 0);
    assert_eq!(
        update.placed, 6,
        "ap's share overflows to the remaining PoPs"
    );
    stack.running.stop().await;
}

#[tokio::test]
async fn placement_errors_use_grpc_codes() {
    let stack = Stack::start().await;
    let mut client = PlacementClient::connect(stack.grpc_url())
        .await
        .expect("connect");
    let unknown = client
        .place(PlaceRequest {
            service: "nope.example.test".into(),
            policy: Some(PlacementPolicy {
                replicas: 1,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let invalid = client
        .place(PlaceRequest {
            service: "www.example.test".into(),
            policy: Some(PlacementPolicy {
                replicas: 0,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("policy.replicas"),
        "{}",
        invalid.message()
    );
    // More than the 12 slots: a partial decision with a condition, not an error.
    let partial = client
        .place(PlaceRequest {
            service: "www.example.test".into(),
            policy: Some(PlacementPolicy {
                replicas: 20,
                ..Default::default()
            }),
        })
        .await
        .expect("partial decision")
        .into_inner();
    assert_eq!(partial.placed, 12);
    assert_eq!(partial.conditions[0].r#type, "Infeasible");
    stack.running.stop().await;
}

/// Drops the `[[pops]]` table named `pop` and every endpoint line in it.
pub fn remove_pop(toml: &str, pop: &str) -> String {
    let mut out = String::new();
    for block in toml.split("\n\n") {
        if block.trim_start().starts_with("[[pops]]")
            && block.contains(&format!("name = \"{pop}\""))
        {
            continue;
        }
        let kept: Vec<&str> = block
            .lines()
            .filter(|l| !l.contains(&format!("pop = \"{pop}\"")))
            .collect();
        out.push_str(&kept.join("\n"));
        out.push_str("\n\n");
    }
    out
}
