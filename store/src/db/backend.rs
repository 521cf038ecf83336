// include!d by db/mod.rs. The store's queries, written once and compiled per backend: `db/mod.rs` includes this file
// into `mod sqlite` and `mod postgres`, each of which first defines `DB`, `BEGIN_WRITE`,
// `BEGIN_READ` and `LOCK_CONFIG`. Every statement uses `$n` placeholders and SQL that both
// SQLite and PostgreSQL accept. (An included file cannot carry `//!` docs.)

use sqlx::Pool;

use super::rows::{WorldRows, to_signed, to_unsigned};
use super::{ApplyOutcome, AuditEntry, HealthOverrideRow, PlacementRow, SiteStatusRow, now_ms};
use crate::diff::diff;
use crate::error::{Context, StoreError};
use crate::world::World;

type Conn = <DB as sqlx::Database>::Connection;

/// Deletion order respects foreign keys (children first).
const CLEAR_WORLD: [&str; 8] = [
    "DELETE FROM endpoints",
    "DELETE FROM services",
    "DELETE FROM client_groups",
    "DELETE FROM pops",
    "DELETE FROM regions",
    "DELETE FROM zone_records",
    "DELETE FROM zones",
    "DELETE FROM settings",
];

pub(super) async fn config_version(pool: &Pool<DB>) -> Result<u64, StoreError> {
    let version: i64 = sqlx::query_scalar("SELECT version FROM config_state WHERE id = 1")
        .fetch_one(pool)
        .await
        .context("read config version")?;
    to_unsigned("config_state", "version", version)
}

pub(super) async fn load_world(pool: &Pool<DB>) -> Result<(World, u64), StoreError> {
    let mut tx = pool
        .begin_with(BEGIN_READ)
        .await
        .context("load world: begin")?;
    let version = read_version(&mut tx, "SELECT version FROM config_state WHERE id = 1").await?;
    let world = read_world(&mut tx).await?;
    tx.commit().await.context("load world: end")?;
    Ok((world, version))
}

pub(super) async fn apply_world(
    pool: &Pool<DB>,
    new: &World,
    actor: &str,
    dry_run: bool,
) -> Result<ApplyOutcome, StoreError> {
    if dry_run {
        let (old, version) = load_world(pool).await?;
        return Ok(ApplyOutcome {
            changed: false,
            config_version: version,
            changes: diff(&old, new),
        });
    }
    // Dropping `tx` on any error below rolls the whole apply back.
    let mut tx = pool
        .begin_with(BEGIN_WRITE)
        .await
        .context("apply world: begin")?;
    let version = read_version(&mut tx, LOCK_CONFIG).await?;
    let old = read_world(&mut tx).await?;
    let changes = diff(&old, new);
    if changes.is_empty() {
        tx.rollback().await.context("apply world: end")?;
        return Ok(ApplyOutcome {
            changed: false,
            config_version: version,
            changes,
        });
    }
    write_world(&mut tx, new).await?;
    let next = version + 1;
    let now = now_ms();
    sqlx::query("UPDATE config_state SET version = $1, updated_at = $2 WHERE id = 1")
        .bind(to_signed("config version", next)?)
        .bind(now)
        .execute(&mut *tx)
        .await
        .context("apply world: bump version")?;
    let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
    let detail = serde_json::Value::from(lines).to_string();
    sqlx::query(
        "INSERT INTO audit_log (at_ms, actor, action, detail, config_version) \
         VALUES ($1, $2, 'apply_config', $3, $4)",
    )
    .bind(now)
    .bind(actor)
    .bind(detail)
    .bind(to_signed("config version", next)?)
    .execute(&mut *tx)
    .await
    .context("apply world: audit")?;
    tx.commit().await.context("apply world: commit")?;
    Ok(ApplyOutcome {
        changed: true,
        config_version: next,
        changes,
    })
}

async fn read_version(conn: &mut Conn, sql: &'static str) -> Result<u64, StoreError> {
    let version: i64 = sqlx::query_scalar(sql)
        .fetch_one(&mut *conn)
        .await
        .context("read config version")?;
    to_unsigned("config_state", "version", version)
}

async fn read_world(conn: &mut Conn) -> Result<World, StoreError> {
    let rows = WorldRows {
        settings: sqlx::query_as("SELECT key, value FROM settings")
            .fetch_all(&mut *conn)
            .await
            .context("load world: settings")?,
        regions: sqlx::query_as("SELECT name, lat, lon FROM regions")
            .fetch_all(&mut *conn)
            .await
            .context("load world: regions")?,
        pops: sqlx::query_as(
            "SELECT name, region, lat, lon, capacity, replica_slots, labels, failure_domain FROM pops",
        )
        .fetch_all(&mut *conn)
        .await
        .context("load world: pops")?,
        zones: sqlx::query_scalar("SELECT name FROM zones")
            .fetch_all(&mut *conn)
            .await
            .context("load world: zones")?,
        records: sqlx::query_as("SELECT zone, position, text FROM zone_records")
            .fetch_all(&mut *conn)
            .await
            .context("load world: zone records")?,
        services: sqlx::query_as(
            "SELECT name, ttl, answers, ecs, demand, steering, gray FROM services",
        )
            .fetch_all(&mut *conn)
            .await
            .context("load world: services")?,
        endpoints: sqlx::query_as(
            "SELECT service, pop, address, check_target, weight, labels, probe, capacity \
             FROM endpoints",
        )
        .fetch_all(&mut *conn)
        .await
        .context("load world: endpoints")?,
        client_groups: sqlx::query_as(
            "SELECT name, cidrs, region, demand, asns FROM client_groups",
        )
        .fetch_all(&mut *conn)
        .await
        .context("load world: client groups")?,
    };
    rows.into_world()
}

async fn write_world(conn: &mut Conn, world: &World) -> Result<(), StoreError> {
    let rows = WorldRows::from_world(world)?;
    for sql in CLEAR_WORLD {
        sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .context("apply world: clear tables")?;
    }
    for (key, value) in rows.settings {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2)")
            .bind(key)
            .bind(value)
            .execute(&mut *conn)
            .await
            .context("apply world: insert setting")?;
    }
    for (name, lat, lon) in rows.regions {
        sqlx::query("INSERT INTO regions (name, lat, lon) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(lat)
            .bind(lon)
            .execute(&mut *conn)
            .await
            .context("apply world: insert region")?;
    }
    for (name, region, lat, lon, capacity, slots, labels, failure_domain) in rows.pops {
        sqlx::query(
            "INSERT INTO pops (name, region, lat, lon, capacity, replica_slots, labels, \
             failure_domain) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(name)
        .bind(region)
        .bind(lat)
        .bind(lon)
        .bind(capacity)
        .bind(slots)
        .bind(labels)
        .bind(failure_domain)
        .execute(&mut *conn)
        .await
        .context("apply world: insert pop")?;
    }
    for name in rows.zones {
        sqlx::query("INSERT INTO zones (name) VALUES ($1)")
            .bind(name)
            .execute(&mut *conn)
            .await
            .context("apply world: insert zone")?;
    }
    for (zone, position, text) in rows.records {
        sqlx::query("INSERT INTO zone_records (zone, position, text) VALUES ($1, $2, $3)")
            .bind(zone)
            .bind(position)
            .bind(text)
            .execute(&mut *conn)
            .await
            .context("apply world: insert zone record")?;
    }
    for (name, ttl, answers, ecs, demand, steering, gray) in rows.services {
        sqlx::query(
            "INSERT INTO services (name, ttl, answers, ecs, demand, steering, gray) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(name)
        .bind(ttl)
        .bind(answers)
        .bind(ecs)
        .bind(demand)
        .bind(steering)
        .bind(gray)
        .execute(&mut *conn)
        .await
        .context("apply world: insert service")?;
    }
    for (service, pop, address, check, weight, labels, probe, capacity) in rows.endpoints {
        sqlx::query(
            "INSERT INTO endpoints (service, pop, address, check_target, weight, labels, probe, \
             capacity) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(service)
        .bind(pop)
        .bind(address)
        .bind(check)
        .bind(weight)
        .bind(labels)
        .bind(probe)
        .bind(capacity)
        .execute(&mut *conn)
        .await
        .context("apply world: insert endpoint")?;
    }
    for (name, cidrs, region, demand, asns) in rows.client_groups {
        sqlx::query(
            "INSERT INTO client_groups (name, cidrs, region, demand, asns) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name)
        .bind(cidrs)
        .bind(region)
        .bind(demand)
        .bind(asns)
        .execute(&mut *conn)
        .await
        .context("apply world: insert client group")?;
    }
    Ok(())
}

pub(super) async fn append_audit(
    pool: &Pool<DB>,
    actor: &str,
    action: &str,
    detail: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (at_ms, actor, action, detail, config_version) \
         VALUES ($1, $2, $3, $4, (SELECT version FROM config_state WHERE id = 1))",
    )
    .bind(at_ms)
    .bind(actor)
    .bind(action)
    .bind(detail)
    .execute(pool)
    .await
    .context("append audit entry")?;
    Ok(())
}

pub(super) async fn list_audit(pool: &Pool<DB>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
    let rows: Vec<(i64, i64, String, String, String, i64)> = sqlx::query_as(
        "SELECT id, at_ms, actor, action, detail, config_version FROM audit_log \
         ORDER BY id DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .context("list audit entries")?;
    rows.into_iter()
        .map(|(id, at_ms, actor, action, detail, version)| {
            Ok(AuditEntry {
                id,
                at_ms,
                actor,
                action,
                detail,
                config_version: to_unsigned("audit_log", "config_version", version)?,
            })
        })
        .collect()
}

pub(super) async fn save_placement(
    pool: &Pool<DB>,
    service: &str,
    policy: &str,
    decision: &str,
    version: u64,
    at_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO placements (service, policy, decision, version, updated_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (service) DO UPDATE SET policy = excluded.policy, \
         decision = excluded.decision, version = excluded.version, updated_at = excluded.updated_at",
    )
    .bind(service)
    .bind(policy)
    .bind(decision)
    .bind(to_signed("placement version", version)?)
    .bind(at_ms)
    .execute(pool)
    .await
    .context("save placement")?;
    Ok(())
}

pub(super) async fn load_placements(pool: &Pool<DB>) -> Result<Vec<PlacementRow>, StoreError> {
    let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT service, policy, decision, version, updated_at FROM placements ORDER BY service",
    )
    .fetch_all(pool)
    .await
    .context("load placements")?;
    rows.into_iter()
        .map(|(service, policy, decision, version, updated_at)| {
            Ok(PlacementRow {
                service,
                policy,
                decision,
                version: to_unsigned("placements", "version", version)?,
                updated_at,
            })
        })
        .collect()
}

pub(super) async fn save_site_status(
    pool: &Pool<DB>,
    service: &str,
    site: &str,
    ready_replicas: u32,
    endpoints: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO site_status (service, site, ready_replicas, endpoints, reported_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (service, site) DO UPDATE SET ready_replicas = excluded.ready_replicas, \
         endpoints = excluded.endpoints, reported_at = excluded.reported_at",
    )
    .bind(service)
    .bind(site)
    .bind(i64::from(ready_replicas))
    .bind(endpoints)
    .bind(at_ms)
    .execute(pool)
    .await
    .context("save site status")?;
    Ok(())
}

pub(super) async fn load_site_status(pool: &Pool<DB>) -> Result<Vec<SiteStatusRow>, StoreError> {
    let rows: Vec<(String, String, i64, String, i64)> = sqlx::query_as(
        "SELECT service, site, ready_replicas, endpoints, reported_at FROM site_status \
         ORDER BY service, site",
    )
    .fetch_all(pool)
    .await
    .context("load site status")?;
    rows.into_iter()
        .map(|(service, site, ready, endpoints, reported_at)| {
            Ok(SiteStatusRow {
                service,
                site,
                ready_replicas: to_unsigned("site_status", "ready_replicas", ready)?,
                endpoints,
                reported_at,
            })
        })
        .collect()
}

pub(super) async fn set_health_override(
    pool: &Pool<DB>,
    target_id: &str,
    set: Option<(&str, &str)>,
    actor: &str,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await.context("health override: begin")?;
    let changed = match set {
        Some((mode, reason)) => {
            sqlx::query(
                "INSERT INTO health_overrides (target_id, mode, reason, actor, created_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (target_id) DO UPDATE SET mode = excluded.mode, \
                 reason = excluded.reason, actor = excluded.actor, created_at = excluded.created_at",
            )
            .bind(target_id)
            .bind(mode)
            .bind(reason)
            .bind(actor)
            .bind(at_ms)
            .execute(&mut *tx)
            .await
            .context("health override: save")?;
            true
        }
        None => {
            sqlx::query("DELETE FROM health_overrides WHERE target_id = $1")
                .bind(target_id)
                .execute(&mut *tx)
                .await
                .context("health override: clear")?
                .rows_affected()
                > 0
        }
    };
    if changed {
        let detail = serde_json::json!({
            "target_id": target_id,
            "mode": set.map_or("clear", |(mode, _)| mode),
            "reason": set.map_or("", |(_, reason)| reason),
        });
        sqlx::query(
            "INSERT INTO audit_log (at_ms, actor, action, detail, config_version) \
             VALUES ($1, $2, $3, $4, (SELECT version FROM config_state WHERE id = 1))",
        )
        .bind(at_ms)
        .bind(actor)
        .bind("health_override")
        .bind(detail.to_string())
        .execute(&mut *tx)
        .await
        .context("health override: audit")?;
    }
    tx.commit().await.context("health override: commit")?;
    Ok(changed)
}

pub(super) async fn load_health_overrides(
    pool: &Pool<DB>,
) -> Result<Vec<HealthOverrideRow>, StoreError> {
    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT target_id, mode, reason, actor, created_at FROM health_overrides \
         ORDER BY target_id",
    )
    .fetch_all(pool)
    .await
    .context("load health overrides")?;
    Ok(rows
        .into_iter()
        .map(
            |(target_id, mode, reason, actor, created_at)| HealthOverrideRow {
                target_id,
                mode,
                reason,
                actor,
                created_at,
            },
        )
        .collect())
}
