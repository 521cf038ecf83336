//! Zone management: `isobar zone export|import` through the real binary (gRPC and `--db`),
//! and configs swapped under continuous query load without one failed or mixed answer.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use isobar_proto::v1::admin_client::AdminClient;
use isobar_proto::v1::{ApplyConfigRequest, ImportZoneRequest};
use tokio::net::UdpSocket;

use crate::support::{Stack, addresses, eventually, query, udp, world_toml};

const BIN: &str = env!("CARGO_BIN_EXE_isobar");

/// Runs the binary off the runtime thread (the servers under test share this runtime).
async fn isobar(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN).args(&args).output().expect("run isobar");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn zone_export_import_round_trips_and_changes_what_dns_serves() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = stack.grpc_url();

    let (ok, exported, err) = isobar(args(&[
        "zone",
        "export",
        "example.test",
        "--server",
        &server,
    ]))
    .await;
    assert!(ok, "{err}");
    assert!(
        exported.contains("$ORIGIN example.test.\n$TTL 3600\n@ 3600 IN SOA "),
        "{exported}"
    );
    assert!(
        exported.contains("\nstatic 300 IN A 192.0.2.200\n"),
        "{exported}"
    );

    // Re-importing the export is a no-op: the round trip is exact.
    let file = dir.path().join("example.test.zone");
    std::fs::write(&file, &exported).expect("write");
    let path = file.display().to_string();
    let (ok, out, err) = isobar(args(&["zone", "import", &path, "--server", &server])).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("no changes"), "{out}");

    // An edited file replaces the zone's records in one change that DNS then serves.
    let edited = exported.replace("192.0.2.200", "192.0.2.201") + "new 60 IN TXT \"hi\"\n";
    std::fs::write(&file, &edited).expect("write");
    let (ok, out, err) = isobar(args(&[
        "zone",
        "import",
        &path,
        "--zone",
        "example.test.",
        "--server",
        &server,
    ]))
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("imported"), "{out}");
    let dns = stack.dns();
    eventually(Duration::from_secs(10), || async {
        let msg = udp(dns, &query("static.example.test.", RecordType::A, None)).await;
        addresses(&msg) == ["192.0.2.201"]
    })
    .await;
    let txt = udp(dns, &query("new.example.test.", RecordType::TXT, None)).await;
    assert_eq!(txt.answers.len(), 1);

    // A bad line is refused naming file and line, and nothing changes.
    std::fs::write(&file, format!("{edited}bad 60 IN A 300.1.1.1\n")).expect("write");
    let (ok, _, err) = isobar(args(&["zone", "import", &path, "--server", &server])).await;
    assert!(!ok);
    let line = edited.lines().count() + 1;
    assert!(err.contains(&format!("{path}:{line}:")), "{err}");
    let (_, again, _) = isobar(args(&[
        "zone",
        "export",
        "example.test.",
        "--server",
        &server,
    ]))
    .await;
    let sorted = |text: &str| {
        let mut lines: Vec<String> = strip_header(text).lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        sorted(&again),
        sorted(&edited),
        "the bad import changed nothing"
    );
    stack.running.stop().await;
}

/// The export without its first (comment) line, which names the config version.
fn strip_header(text: &str) -> &str {
    text.split_once('\n').map_or(text, |(_, rest)| rest)
}

#[tokio::test]
async fn zone_commands_work_directly_against_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("isobar.db").display());
    let zone = dir.path().join("z.zone");
    std::fs::write(
        &zone,
        "$ORIGIN fresh.test.\n$TTL 120\n@ SOA ns1 hostmaster 5 7200 900 1209600 300\n\
         @ NS ns1\nns1 A 192.0.2.53\nwww CNAME ns1\n",
    )
    .expect("write");
    let path = zone.display().to_string();
    let (ok, out, err) = isobar(args(&["zone", "import", &path, "--db", &db])).await;
    assert!(ok, "{err}");
    assert!(out.contains("config version 1"), "{out}");
    let (ok, exported, err) = isobar(args(&["zone", "export", "fresh.test.", "--db", &db])).await;
    assert!(ok, "{err}");
    assert!(
        exported.contains("\nwww 120 IN CNAME ns1.fresh.test.\n"),
        "{exported}"
    );
    std::fs::write(&zone, &exported).expect("write");
    let (ok, out, err) = isobar(args(&["zone", "import", &path, "--db", &db])).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("no changes (config version 1)"), "{out}");
    let (ok, _, err) = isobar(args(&["zone", "export", "nope.test.", "--db", &db])).await;
    assert!(!ok && err.contains("no zone nope.test."), "{err}");
}

/// One client's tally: answers seen per question, and every failure.
#[derive(Default)]
struct Tally {
    queries: u64,
    failures: Vec<String>,
    static_answers: BTreeSet<Vec<String>>,
    office_answers: BTreeSet<Vec<String>>,
}

/// Queries in a loop over one socket until `stop`, alternating a zone record and a GSLB name.
async fn client(dns: std::net::SocketAddr, stop: Arc<AtomicBool>) -> Tally {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 4096];
    let mut id: u16 = 0;
    while !stop.load(Ordering::Relaxed) {
        let is_static = id.is_multiple_of(2);
        let mut msg = if is_static {
            query("static.example.test.", RecordType::A, None)
        } else {
            query("www.example.test.", RecordType::A, Some("10.10.1.0/24"))
        };
        id = id.wrapping_add(1);
        msg.metadata.id = id;
        tally.queries += 1;
        socket
            .send_to(&msg.to_vec().expect("encode"), dns)
            .await
            .expect("send");
        let got = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await;
        let response = match got {
            Ok(Ok(n)) => Message::from_vec(&buf[..n]).expect("decode"),
            other => {
                tally
                    .failures
                    .push(format!("query {id}: no answer ({other:?})"));
                continue;
            }
        };
        if response.metadata.id != id || response.metadata.response_code != ResponseCode::NoError {
            tally.failures.push(format!(
                "query {id}: id {} rcode {:?}",
                response.metadata.id, response.metadata.response_code
            ));
            continue;
        }
        let answer = addresses(&response);
        if is_static {
            tally.static_answers.insert(answer);
        } else {
            tally.office_answers.insert(answer);
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configs_swap_atomically_under_query_load() {
    let stack = Stack::start().await;
    let old = world_toml(&stack.listeners);
    // The new world changes a zone record and moves the office group from Asia to Europe.
    let new = old.replace("192.0.2.200", "192.0.2.201").replace(
        "cidrs = [\"10.10.0.0/16\"]\nregion = \"ap\"",
        "cidrs = [\"10.10.0.0/16\"]\nregion = \"eu\"",
    );
    assert_ne!(old, new);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client(stack.dns(), Arc::clone(&stop))))
        .collect();

    let mut admin = AdminClient::connect(stack.grpc_url())
        .await
        .expect("connect");
    let engine = stack.running.engine.as_ref().expect("engine");
    let applies: u32 = 20;
    for i in 0..applies {
        let version = engine.version();
        let toml = if i.is_multiple_of(2) { &new } else { &old };
        let applied = admin
            .apply_config(ApplyConfigRequest {
                source_name: format!("swap-{i}.toml"),
                toml: toml.clone(),
                ..Default::default()
            })
            .await
            .expect("apply")
            .into_inner();
        assert!(applied.changed);
        // Let the new snapshot reach the frontend and be served for a moment.
        eventually(Duration::from_secs(10), || async {
            engine.version() > version
        })
        .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // A zone import is swapped in the same way.
    let version = engine.version();
    admin
        .import_zone(ImportZoneRequest {
            zone: "example.test.".into(),
            text: "@ 60 IN SOA ns1 hostmaster 1 7200 900 1209600 300\n@ 60 IN NS ns1\n\
                   ns1 60 IN A 127.0.0.1\nstatic 60 IN A 192.0.2.201\n"
                .into(),
            source_name: "swap.zone".into(),
            ..Default::default()
        })
        .await
        .expect("import");
    eventually(Duration::from_secs(10), || async {
        engine.version() > version
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    let mut static_seen = BTreeSet::new();
    let mut office_seen = BTreeSet::new();
    for handle in clients {
        let tally = handle.await.expect("client");
        assert!(tally.failures.is_empty(), "{:?}", tally.failures);
        total += tally.queries;
        static_seen.extend(tally.static_answers);
        office_seen.extend(tally.office_answers);
    }
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Every answer is the old or the new data, never a mix or an empty answer, and both
    // were served (the swaps really happened under load).
    assert_eq!(
        static_seen,
        BTreeSet::from([strings(&["192.0.2.200"]), strings(&["192.0.2.201"])])
    );
    assert_eq!(
        office_seen,
        BTreeSet::from([
            strings(&["203.0.113.10", "192.0.2.10"]),
            strings(&["192.0.2.10", "198.51.100.10"]),
        ])
    );
    assert!(total >= 2000, "only {total} queries ran during the swaps");
    eprintln!("{total} queries during {applies} applies and 1 zone import: 0 failures");
    stack.running.stop().await;
}
