//! The durable store: one handle over a SQLite or PostgreSQL pool, chosen by URL.
//!
//! The queries are written once in `backend.rs` and compiled for each concrete driver (the
//! generic `Any` driver mis-decodes SQLite booleans and gives every pooled connection its own
//! in-memory database). Both backends run the same SQL text with `$n` placeholders; only
//! transaction start and row locking differ.

mod rows;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tracing::info;

use crate::config;
use crate::diff::Change;
use crate::error::StoreError;
use crate::world::World;

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// How long to wait for a pooled connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SQLite waits on a locked database (another writer) before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on any one PostgreSQL statement, lock waits included.
const POSTGRES_STATEMENT_TIMEOUT: &str = "30s";
/// Pool sizes. SQLite has one writer at a time anyway; readers share WAL snapshots.
const SQLITE_MAX_CONNECTIONS: u32 = 4;
const POSTGRES_MAX_CONNECTIONS: u32 = 8;

/// A handle on the store. Cloning is cheap: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

#[derive(Debug, Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The result of [`Store::apply_world`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Whether a new version was written (never on a dry run).
    pub changed: bool,
    /// The version in force afterwards.
    pub config_version: u64,
    /// What differs between the stored world and the applied one (on a dry run: what would).
    pub changes: Vec<Change>,
}

/// One audit-log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Increasing id.
    pub id: i64,
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What, e.g. "apply_config".
    pub action: String,
    /// Details, JSON text.
    pub detail: String,
    /// The config version in force after the action.
    pub config_version: u64,
}

/// A stored placement. `policy` and `decision` are opaque to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRow {
    /// The service.
    pub service: String,
    /// The placement policy, encoded by the scheduler.
    pub policy: String,
    /// The placement decision, encoded by the scheduler.
    pub decision: String,
    /// The decision's version.
    pub version: u64,
    /// Last write, Unix milliseconds.
    pub updated_at: i64,
}

/// The latest status report for one service at one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteStatusRow {
    /// The service.
    pub service: String,
    /// The site (PoP).
    pub site: String,
    /// Replicas ready there.
    pub ready_replicas: u32,
    /// The ready endpoints, JSON text.
    pub endpoints: String,
    /// When it was reported, Unix milliseconds.
    pub reported_at: i64,
}

/// A service's placement risk-control memory: what a scheduler restart must not forget.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementRisk {
    /// The service.
    pub service: String,
    /// Replica removals still inside some removal window, oldest first.
    pub removals: Vec<SiteRemoval>,
    /// Sites declared lost for this service.
    pub lost: Vec<LostSite>,
}

/// Replicas removed from one site at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRemoval {
    /// The site (PoP).
    pub site: String,
    /// When, Unix milliseconds.
    pub removed_at: i64,
    /// How many replicas (at least 1).
    pub replicas: u32,
}

/// A site that stopped reporting past its grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostSite {
    /// The site (PoP).
    pub site: String,
    /// When it was declared lost, Unix milliseconds.
    pub lost_since: i64,
    /// When it reported again, if it has; failback is paced from here.
    pub recovered_at: Option<i64>,
}

/// An operator's health override on one probe target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthOverrideRow {
    /// The probe target id.
    pub target_id: String,
    /// `force_up`, `force_down` or `drain`.
    pub mode: String,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
    /// When, Unix milliseconds.
    pub created_at: i64,
}

/// Runs the same backend function on whichever pool the store holds.
macro_rules! dispatch {
    ($self:ident, $($f:ident)::+($($arg:expr),*)) => {
        match &$self.db {
            Db::Sqlite(pool) => sqlite::$($f)::+(pool, $($arg),*).await,
            Db::Postgres(pool) => postgres::$($f)::+(pool, $($arg),*).await,
        }
    };
}

impl Store {
    /// Opens (creating and migrating as needed) the store at `url`: `postgres://...` or
    /// `postgresql://...` for PostgreSQL; `sqlite:<path>`, `sqlite://<path>` or a bare path
    /// for a SQLite file (created if missing, WAL journal, foreign keys on); `sqlite::memory:`
    /// for a private in-memory database on a single connection.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Db::Postgres(open_postgres(url).await?)
        } else if url.starts_with("sqlite:") {
            let options =
                SqliteConnectOptions::from_str(url).map_err(|error| StoreError::Connect {
                    backend: "sqlite",
                    error,
                })?;
            Db::Sqlite(open_sqlite(options, url.starts_with("sqlite::memory:")).await?)
        } else if url.contains("://") {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        } else {
            Db::Sqlite(open_sqlite(SqliteConnectOptions::new().filename(url), false).await?)
        };
        let store = Self { db };
        info!(backend = store.backend_name(), "store opened");
        Ok(store)
    }

    /// "sqlite" or "postgres".
    pub fn backend_name(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }

    /// The config version in force; 0 for an empty store. One indexed read, cheap to poll.
    pub async fn config_version(&self) -> Result<u64, StoreError> {
        dispatch!(self, config_version())
    }

    /// The stored world (normalized) and its version, read from one consistent snapshot.
    /// An empty store gives `(World::default(), 0)`.
    pub async fn load_world(&self) -> Result<(World, u64), StoreError> {
        dispatch!(self, load_world())
    }

    /// Makes `world` the stored world. It is diffed against the stored one inside a write
    /// transaction that excludes other appliers; when they differ (and this is not a dry run)
    /// the world tables are replaced, the version goes up by exactly one and an
    /// "apply_config" audit entry records the diff, all in that one transaction. Nothing is
    /// written when nothing changes, on a dry run, or when any step fails.
    pub async fn apply_world(
        &self,
        world: &World,
        actor: &str,
        dry_run: bool,
    ) -> Result<ApplyOutcome, StoreError> {
        // Validate before sorting so error paths index the caller's own lists.
        config::validate(world).map_err(StoreError::InvalidWorld)?;
        let mut world = world.clone();
        world.normalize();
        let outcome = dispatch!(self, apply_world(&world, actor, dry_run))?;
        if outcome.changed {
            info!(
                config_version = outcome.config_version,
                changes = outcome.changes.len(),
                actor,
                "world applied"
            );
        }
        Ok(outcome)
    }

    /// Appends an audit entry stamped with the current config version.
    pub async fn append_audit(
        &self,
        actor: &str,
        action: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let detail = detail.to_string();
        dispatch!(self, append_audit(actor, action, &detail, now_ms()))
    }

    /// The latest `limit` audit entries, newest first.
    pub async fn list_audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        dispatch!(self, list_audit(limit))
    }

    /// Creates or replaces the placement of `service`.
    pub async fn save_placement(
        &self,
        service: &str,
        policy: &str,
        decision: &str,
        version: u64,
    ) -> Result<(), StoreError> {
        dispatch!(
            self,
            save_placement(service, policy, decision, version, now_ms())
        )
    }

    /// Every stored placement, by service name.
    pub async fn load_placements(&self) -> Result<Vec<PlacementRow>, StoreError> {
        dispatch!(self, load_placements())
    }

    /// Deletes the placement of `service` and its risk memory; whether there was one.
    pub async fn delete_placement(&self, service: &str) -> Result<bool, StoreError> {
        dispatch!(self, risk::delete_placement(service))
    }

    /// Replaces the risk-control memory of `risk.service` (removal history and lost sites)
    /// in one transaction.
    pub async fn save_placement_risk(&self, risk: &PlacementRisk) -> Result<(), StoreError> {
        dispatch!(self, risk::save_placement_risk(risk))
    }

    /// Every service's stored risk-control memory, by service name.
    pub async fn load_placement_risk(&self) -> Result<Vec<PlacementRisk>, StoreError> {
        dispatch!(self, risk::load_placement_risk())
    }

    /// Creates or replaces the status of `service` at `site`.
    pub async fn save_site_status(
        &self,
        service: &str,
        site: &str,
        ready_replicas: u32,
        endpoints: &str,
    ) -> Result<(), StoreError> {
        dispatch!(
            self,
            save_site_status(service, site, ready_replicas, endpoints, now_ms())
        )
    }

    /// Sets (`Some((mode, reason))`) or clears (`None`) the health override of `target_id`
    /// and writes the audit row, in one transaction. Returns whether anything changed.
    pub async fn set_health_override(
        &self,
        target_id: &str,
        set: Option<(&str, &str)>,
        actor: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self, set_health_override(target_id, set, actor, now_ms()))
    }

    /// Every stored health override, by target id.
    pub async fn load_health_overrides(&self) -> Result<Vec<HealthOverrideRow>, StoreError> {
        dispatch!(self, load_health_overrides())
    }

    /// Every stored site status, by service then site.
    pub async fn load_site_status(&self) -> Result<Vec<SiteStatusRow>, StoreError> {
        dispatch!(self, load_site_status())
    }
}

async fn open_sqlite(
    options: SqliteConnectOptions,
    in_memory: bool,
) -> Result<SqlitePool, StoreError> {
    let connect_error = |error| StoreError::Connect {
        backend: "sqlite",
        error,
    };
    let options = options
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    let pool = if in_memory {
        // An in-memory database lives and dies with its connection: keep exactly one, forever.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
    } else {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable in WAL mode except for the last commits on power loss.
            .synchronous(SqliteSynchronous::Normal);
        SqlitePoolOptions::new()
            .max_connections(SQLITE_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
    }
    .map_err(connect_error)?;
    SQLITE_MIGRATOR
        .run(&pool)
        .await
        .map_err(|error| StoreError::Migrate {
            backend: "sqlite",
            error,
        })?;
    Ok(pool)
}

async fn open_postgres(url: &str) -> Result<PgPool, StoreError> {
    let connect_error = |error| StoreError::Connect {
        backend: "postgres",
        error,
    };
    let options = PgConnectOptions::from_str(url)
        .map_err(connect_error)?
        .options([("statement_timeout", POSTGRES_STATEMENT_TIMEOUT)])
        .application_name("isobar");
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(connect_error)?;
    POSTGRES_MIGRATOR
        .run(&pool)
        .await
        .map_err(|error| StoreError::Migrate {
            backend: "postgres",
            error,
        })?;
    Ok(pool)
}

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

mod sqlite {
    type DB = sqlx::Sqlite;
    /// IMMEDIATE takes the write lock up front, so two appliers cannot both read version N.
    const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
    /// A deferred transaction reads one WAL snapshot.
    const BEGIN_READ: &str = "BEGIN";
    /// The write lock is already held.
    const LOCK_CONFIG: &str = "SELECT version FROM config_state WHERE id = 1";
    include!("backend.rs");
    pub(super) mod risk {
        use super::{BEGIN_WRITE, DB};
        include!("risk_sql.rs");
    }
}

mod postgres {
    type DB = sqlx::Postgres;
    const BEGIN_WRITE: &str = "BEGIN";
    /// One snapshot for all the world tables; READ COMMITTED would let an apply land between them.
    const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    /// Row lock on the singleton: concurrent appliers queue here, and the next one then reads
    /// the committed version and world (READ COMMITTED takes a fresh snapshot per statement).
    const LOCK_CONFIG: &str = "SELECT version FROM config_state WHERE id = 1 FOR UPDATE";
    include!("backend.rs");
    pub(super) mod risk {
        use super::{BEGIN_WRITE, DB};
        include!("risk_sql.rs");
    }
}
