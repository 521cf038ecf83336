//! The store's behaviour, run against SQLite (a temp file) always and against PostgreSQL when
//! `ISOBAR_TEST_POSTGRES_URL` is set (each test then gets its own fresh database).

mod common;

use std::collections::BTreeSet;

use isobar_store::config::{parse_world, to_toml};
use isobar_store::world::{Endpoint, World};
use isobar_store::{LostSite, PlacementRisk, SiteRemoval, Store, StoreError};
use sqlx::{AssertSqlSafe, Connection};

use common::{WORLD, edit, parse};

const POSTGRES_ENV: &str = "ISOBAR_TEST_POSTGRES_URL";

/// A scratch database: a SQLite file in a temp dir, or a PostgreSQL database created for
/// one test and dropped afterwards (also when the test panics).
struct TestDb {
    url: String,
    backend: &'static str,
    postgres: Option<(String, String)>, // (admin url, database name)
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("isobar.db").display());
        Self {
            url,
            backend: "sqlite",
            postgres: None,
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Option<Self> {
        let Ok(admin) = std::env::var(POSTGRES_ENV) else {
            eprintln!("{POSTGRES_ENV} is not set: skipping the PostgreSQL run");
            return None;
        };
        let name = format!("isobar_t_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to admin database");
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let (base, query) = match admin.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (admin.as_str(), String::new()),
        };
        let prefix = base.rsplit_once('/').map_or(base, |(prefix, _)| prefix);
        Some(Self {
            url: format!("{prefix}/{name}{query}"),
            backend: "postgres",
            postgres: Some((admin.clone(), name)),
            _dir: None,
        })
    }

    async fn open(&self) -> Store {
        let store = Store::open(&self.url).await.expect("open store");
        assert_eq!(store.backend_name(), self.backend);
        store
    }

    /// Runs SQL on the database behind the store's back (to sabotage or inspect it).
    async fn raw(&self, sql: &str) {
        match self.backend {
            "sqlite" => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("raw connect");
                sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .execute(&mut conn)
                    .await
                    .expect("raw sql");
            }
            _ => {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("raw connect");
                sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .execute(&mut conn)
                    .await
                    .expect("raw sql");
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop may run inside a runtime (or while unwinding), so use a private one on a thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .map_err(std::io::Error::other)?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test database: {dropped:?}");
        }
    }
}

/// Stamps every listed test out once per backend.
macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = super::TestDb::sqlite();
                    super::$test(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(db) = super::TestDb::postgres().await {
                        super::$test(&db).await;
                    }
                }
            )*
        }
    };
}

suite!(
    an_empty_store_has_the_default_world_at_version_zero,
    apply_then_load_gives_the_same_world,
    versions_bump_once_per_change_and_never_on_no_op_or_dry_run,
    applies_are_audited_with_actor_and_diff,
    export_parse_apply_is_a_no_op,
    a_bad_config_or_a_failed_write_changes_nothing,
    concurrent_appliers_get_distinct_versions,
    placements_and_site_status_round_trip,
    placement_risk_is_replaced_per_service_and_released_with_the_placement,
    another_node_sees_the_new_version,
    asn_client_groups_round_trip,
);

fn world() -> World {
    parse(WORLD).expect("fixture parses").world
}

/// The fixture world with fra1's capacity changed.
fn world_with_capacity(capacity: u64) -> World {
    parse(&edit("capacity = 1000", &format!("capacity = {capacity}")))
        .expect("fixture parses")
        .world
}

async fn an_empty_store_has_the_default_world_at_version_zero(db: &TestDb) {
    let store = db.open().await;
    assert_eq!(store.load_world().await.unwrap(), (World::default(), 0));
    assert_eq!(store.config_version().await.unwrap(), 0);
    assert!(store.list_audit(10).await.unwrap().is_empty());
    assert!(store.load_placements().await.unwrap().is_empty());
    assert!(store.load_site_status().await.unwrap().is_empty());
}

async fn apply_then_load_gives_the_same_world(db: &TestDb) {
    let store = db.open().await;
    let world = world();
    let outcome = store.apply_world(&world, "alice", false).await.unwrap();
    assert!(outcome.changed);
    assert_eq!(outcome.config_version, 1);
    let lines: Vec<String> = outcome.changes.iter().map(ToString::to_string).collect();
    assert!(lines.contains(&"+ pop fra1".to_owned()), "{lines:?}");
    assert!(
        lines.contains(&"+ service www.demo.isobar.test.".to_owned()),
        "{lines:?}"
    );
    assert_eq!(store.load_world().await.unwrap(), (world, 1));
}

async fn asn_client_groups_round_trip(db: &TestDb) {
    let store = db.open().await;
    let with_asns = |asns: &str| {
        parse(&format!(
            "{WORLD}\n[[client_groups]]\nname = \"isp\"\nregion = \"us\"\nasns = {asns}\n"
        ))
        .expect("fixture parses")
        .world
    };
    let world = with_asns("[3320, 4200000000]");
    store.apply_world(&world, "alice", false).await.unwrap();
    let (loaded, version) = store.load_world().await.unwrap();
    assert_eq!(loaded, world);
    let isp = loaded
        .client_groups
        .iter()
        .find(|g| g.name == "isp")
        .unwrap();
    assert_eq!(isp.asns, [3320, 4_200_000_000]);
    assert!(isp.cidrs.is_empty());
    // Groups without AS numbers load with none.
    let office = loaded
        .client_groups
        .iter()
        .find(|g| g.name == "office")
        .unwrap();
    assert!(office.asns.is_empty());

    let changed = with_asns("[3320]");
    let outcome = store.apply_world(&changed, "alice", false).await.unwrap();
    assert_eq!(outcome.config_version, version + 1);
    let lines: Vec<String> = outcome.changes.iter().map(ToString::to_string).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("client_group isp")
                && l.contains("asns [3320, 4200000000] -> [3320]")),
        "{lines:?}"
    );
    assert_eq!(store.load_world().await.unwrap(), (changed, version + 1));
}

async fn versions_bump_once_per_change_and_never_on_no_op_or_dry_run(db: &TestDb) {
    let store = db.open().await;
    let first = world();
    assert_eq!(
        store
            .apply_world(&first, "alice", false)
            .await
            .unwrap()
            .config_version,
        1
    );

    let again = store.apply_world(&first, "alice", false).await.unwrap();
    assert!(!again.changed);
    assert!(again.changes.is_empty());
    assert_eq!(again.config_version, 1);

    let second = world_with_capacity(2000);
    let dry = store.apply_world(&second, "alice", true).await.unwrap();
    assert!(!dry.changed);
    assert_eq!(dry.config_version, 1);
    let lines: Vec<String> = dry.changes.iter().map(ToString::to_string).collect();
    assert_eq!(lines, ["~ pop fra1: capacity 1000 -> 2000"]);
    assert_eq!(
        store.load_world().await.unwrap(),
        (first, 1),
        "a dry run writes nothing"
    );

    let applied = store.apply_world(&second, "alice", false).await.unwrap();
    assert!(applied.changed);
    assert_eq!(applied.config_version, 2);
    assert_eq!(store.config_version().await.unwrap(), 2);
    assert_eq!(store.load_world().await.unwrap(), (second, 2));
}

async fn applies_are_audited_with_actor_and_diff(db: &TestDb) {
    let store = db.open().await;
    store.apply_world(&world(), "alice", false).await.unwrap();
    store.apply_world(&world(), "alice", false).await.unwrap(); // no-op: no audit row
    store
        .apply_world(&world_with_capacity(5), "bob", false)
        .await
        .unwrap();
    store
        .append_audit(
            "carol",
            "place",
            &serde_json::json!({ "service": "www.demo.isobar.test." }),
        )
        .await
        .unwrap();

    let audit = store.list_audit(10).await.unwrap();
    let summary: Vec<(&str, &str, u64)> = audit
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.config_version))
        .collect();
    assert_eq!(
        summary,
        [
            ("carol", "place", 2),
            ("bob", "apply_config", 2),
            ("alice", "apply_config", 1)
        ],
        "newest first"
    );
    let diff: Vec<String> = serde_json::from_str(&audit[1].detail).unwrap();
    assert_eq!(diff, ["~ pop fra1: capacity 1000 -> 5"]);
    let first: Vec<String> = serde_json::from_str(&audit[2].detail).unwrap();
    assert!(
        first.contains(&"+ zone demo.isobar.test.".to_owned()),
        "{first:?}"
    );
    let detail: serde_json::Value = serde_json::from_str(&audit[0].detail).unwrap();
    assert_eq!(detail["service"], "www.demo.isobar.test.");
    assert!(audit[0].id > audit[1].id && audit[1].id > audit[2].id);
    assert!(audit.iter().all(|e| e.at_ms > 1_600_000_000_000));
    assert_eq!(store.list_audit(1).await.unwrap(), audit[..1]);
}

async fn export_parse_apply_is_a_no_op(db: &TestDb) {
    let store = db.open().await;
    store.apply_world(&world(), "alice", false).await.unwrap();
    let (stored, version) = store.load_world().await.unwrap();
    let exported = to_toml(&stored);
    let no_files = |path: &str| {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            path.to_owned(),
        ))
    };
    let reparsed = parse_world("export.toml", &exported, &no_files).unwrap();
    let outcome = store
        .apply_world(&reparsed.world, "alice", false)
        .await
        .unwrap();
    assert!(!outcome.changed, "changes: {:?}", outcome.changes);
    assert_eq!(outcome.config_version, version);
}

async fn a_bad_config_or_a_failed_write_changes_nothing(db: &TestDb) {
    let store = db.open().await;
    let good = world();
    store.apply_world(&good, "alice", false).await.unwrap();
    let audit_before = store.list_audit(100).await.unwrap();

    // A config that does not parse never reaches the store.
    assert!(parse(&edit("region = \"us\"", "region = \"mars\"")).is_err());

    // A world that breaks a rule is refused before any write.
    let mut invalid = good.clone();
    invalid.services[0].endpoints[0].pop = "nowhere".into();
    match store.apply_world(&invalid, "mallory", false).await {
        Err(StoreError::InvalidWorld(message)) => {
            assert_eq!(message, "services[0].endpoints[0].pop: unknown pop nowhere");
        }
        other => panic!("expected InvalidWorld, got {other:?}"),
    }

    // A write failing half-way (after other tables were already replaced) rolls back.
    let sabotage = match db.backend {
        "sqlite" => {
            "CREATE TRIGGER sabotage BEFORE INSERT ON endpoints WHEN NEW.address = '192.0.2.99' \
             BEGIN SELECT RAISE(ABORT, 'sabotaged'); END;"
        }
        _ => {
            "CREATE FUNCTION sabotage() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.address = '192.0.2.99' THEN RAISE EXCEPTION 'sabotaged'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER sabotage BEFORE INSERT ON endpoints FOR EACH ROW EXECUTE FUNCTION sabotage();"
        }
    };
    db.raw(sabotage).await;
    let mut doomed = world_with_capacity(7);
    doomed.regions[0].lat = 1.0;
    doomed.services[0].endpoints.push(Endpoint {
        pop: "fra1".into(),
        address: "192.0.2.99".into(),
        check: None,
        probe: None,
        weight: 1,
        labels: Default::default(),
        capacity: None,
    });
    match store.apply_world(&doomed, "mallory", false).await {
        Err(StoreError::Database { context, error }) => {
            assert_eq!(context, "apply world: insert endpoint");
            assert!(error.to_string().contains("sabotaged"), "{error}");
        }
        other => panic!("expected a database error, got {other:?}"),
    }

    assert_eq!(store.load_world().await.unwrap(), (good, 1));
    assert_eq!(store.config_version().await.unwrap(), 1);
    assert_eq!(store.list_audit(100).await.unwrap(), audit_before);
}

async fn concurrent_appliers_get_distinct_versions(db: &TestDb) {
    const APPLIERS: u64 = 4;
    // Separate handles, as separate scheduler nodes would have.
    let mut tasks = Vec::new();
    for i in 0..APPLIERS {
        let store = db.open().await;
        tasks.push(tokio::spawn(async move {
            let world = world_with_capacity(100 + i);
            store.apply_world(&world, &format!("node{i}"), false).await
        }));
    }
    let mut versions = BTreeSet::new();
    for task in tasks {
        let outcome = task.await.unwrap().unwrap();
        assert!(outcome.changed, "every world differs from every other");
        assert!(
            versions.insert(outcome.config_version),
            "version {} given twice",
            outcome.config_version
        );
    }
    assert_eq!(versions, (1..=APPLIERS).collect());

    let store = db.open().await;
    let (world, version) = store.load_world().await.unwrap();
    assert_eq!(version, APPLIERS);
    let capacity = world.pop("fra1").unwrap().capacity;
    assert!((100..100 + APPLIERS).contains(&capacity));
    let audit = store.list_audit(100).await.unwrap();
    let audited: BTreeSet<u64> = audit.iter().map(|e| e.config_version).collect();
    assert_eq!(audited, versions, "one audit row per version");
    // The last applier's diff starts from what the previous one stored.
    let last: Vec<String> = serde_json::from_str(&audit[0].detail).unwrap();
    assert_eq!(last.len(), 1, "{last:?}");
    assert!(last[0].starts_with("~ pop fra1: capacity 10"), "{last:?}");
}

async fn placements_and_site_status_round_trip(db: &TestDb) {
    let store = db.open().await;
    store
        .save_placement("www.a.test.", "policy-1", "decision-1", 1)
        .await
        .unwrap();
    store
        .save_placement("api.a.test.", "p", "d", 3)
        .await
        .unwrap();
    store
        .save_placement("www.a.test.", "policy-2", "decision-2", 2)
        .await
        .unwrap();
    let placements = store.load_placements().await.unwrap();
    let rows: Vec<(&str, &str, &str, u64)> = placements
        .iter()
        .map(|p| {
            (
                p.service.as_str(),
                p.policy.as_str(),
                p.decision.as_str(),
                p.version,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("api.a.test.", "p", "d", 3),
            ("www.a.test.", "policy-2", "decision-2", 2)
        ]
    );
    assert!(store.delete_placement("api.a.test.").await.unwrap());
    assert!(!store.delete_placement("api.a.test.").await.unwrap());
    assert_eq!(store.load_placements().await.unwrap().len(), 1);

    store
        .save_site_status("www.a.test.", "fra1", 2, r#"[{"address":"192.0.2.1"}]"#)
        .await
        .unwrap();
    store
        .save_site_status("www.a.test.", "iad1", 1, "[]")
        .await
        .unwrap();
    store
        .save_site_status("www.a.test.", "fra1", 3, "[]")
        .await
        .unwrap();
    let status = store.load_site_status().await.unwrap();
    let rows: Vec<(&str, &str, u32, &str)> = status
        .iter()
        .map(|s| {
            (
                s.service.as_str(),
                s.site.as_str(),
                s.ready_replicas,
                s.endpoints.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("www.a.test.", "fra1", 3, "[]"),
            ("www.a.test.", "iad1", 1, "[]")
        ]
    );
}

async fn placement_risk_is_replaced_per_service_and_released_with_the_placement(db: &TestDb) {
    let store = db.open().await;
    let removal = |site: &str, removed_at: i64, replicas: u32| SiteRemoval {
        site: site.into(),
        removed_at,
        replicas,
    };
    let www = |removals: Vec<SiteRemoval>, lost: Vec<LostSite>| PlacementRisk {
        service: "www.a.test.".into(),
        removals,
        lost,
    };
    let first = www(
        vec![removal("fra1", 1_000, 1), removal("lon2", 1_000, 2)],
        vec![LostSite {
            site: "sin1".into(),
            lost_since: 900,
            recovered_at: None,
        }],
    );
    let api = PlacementRisk {
        service: "api.a.test.".into(),
        removals: vec![removal("iad1", 5, 1)],
        lost: vec![],
    };
    store
        .save_placement("www.a.test.", "p", "d", 1)
        .await
        .unwrap();
    store.save_placement_risk(&first).await.unwrap();
    store.save_placement_risk(&api).await.unwrap();
    assert_eq!(
        store.load_placement_risk().await.unwrap(),
        [api.clone(), first]
    );

    // A rewrite replaces the service's rows: no stale removal or lost site survives it,
    // and a recovery instant (NULL before) round-trips.
    let second = www(
        vec![removal("fra1", 2_000, 1), removal("fra1", 1_000, 1)],
        vec![LostSite {
            site: "sin1".into(),
            lost_since: 900,
            recovered_at: Some(1_500),
        }],
    );
    store.save_placement_risk(&second).await.unwrap();
    let loaded = store.load_placement_risk().await.unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(
        loaded[1].removals,
        [removal("fra1", 1_000, 1), removal("fra1", 2_000, 1)],
        "oldest first"
    );
    assert_eq!(loaded[1].lost, second.lost);

    // Releasing the placement forgets its risk memory; the other service keeps its own.
    assert!(store.delete_placement("www.a.test.").await.unwrap());
    assert_eq!(store.load_placement_risk().await.unwrap(), [api]);
}

async fn another_node_sees_the_new_version(db: &TestDb) {
    let node_a = db.open().await;
    let node_b = db.open().await;
    assert_eq!(node_b.config_version().await.unwrap(), 0);
    node_a.apply_world(&world(), "alice", false).await.unwrap();
    assert_eq!(node_b.config_version().await.unwrap(), 1);
    assert_eq!(node_b.load_world().await.unwrap().0, world());
}

#[tokio::test]
async fn a_sqlite_file_keeps_everything_across_reopen() {
    let db = TestDb::sqlite();
    let store = db.open().await;
    store.apply_world(&world(), "alice", false).await.unwrap();
    store
        .save_placement("www.demo.isobar.test.", "p", "d", 4)
        .await
        .unwrap();
    store
        .save_site_status("www.demo.isobar.test.", "fra1", 2, "[]")
        .await
        .unwrap();
    store.close().await;

    let reopened = db.open().await;
    assert_eq!(reopened.load_world().await.unwrap(), (world(), 1));
    assert_eq!(reopened.load_placements().await.unwrap()[0].version, 4);
    assert_eq!(
        reopened.load_site_status().await.unwrap()[0].ready_replicas,
        2
    );
    assert_eq!(reopened.list_audit(10).await.unwrap().len(), 1);

    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_bare_path_opens_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bare.db");
    let store = Store::open(path.to_str().unwrap()).await.unwrap();
    assert_eq!(store.backend_name(), "sqlite");
    store.apply_world(&world(), "alice", false).await.unwrap();
    store.close().await;
    assert!(path.exists());
    let reopened = Store::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    assert_eq!(reopened.config_version().await.unwrap(), 1);
}

#[tokio::test]
async fn an_in_memory_store_works_on_its_single_connection() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    store.apply_world(&world(), "alice", false).await.unwrap();
    let clone = store.clone();
    assert_eq!(clone.load_world().await.unwrap(), (world(), 1));
}

#[tokio::test]
async fn unknown_url_schemes_are_refused() {
    let err = Store::open("mysql://localhost/isobar").await.unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("unsupported database url \"mysql://localhost/isobar\"")
    );
}
