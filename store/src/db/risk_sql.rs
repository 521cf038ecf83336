// include!d by db/mod.rs inside `mod sqlite::risk` and `mod postgres::risk`, after `DB` and
// `BEGIN_WRITE` are in scope. Placement risk-control memory: removal history and lost sites,
// written once for both backends like `backend.rs`. (An included file cannot carry `//!`.)

use std::collections::BTreeMap;

use sqlx::Pool;

use crate::db::rows::to_unsigned;
use crate::db::{LostSite, PlacementRisk, SiteRemoval};
use crate::error::{Context, StoreError};

/// Replaces every risk row of `risk.service` in one transaction, so a crash never leaves a
/// removal history from one instant beside lost sites from another.
pub(in crate::db) async fn save_placement_risk(
    pool: &Pool<DB>,
    risk: &PlacementRisk,
) -> Result<(), StoreError> {
    let mut tx = pool
        .begin_with(BEGIN_WRITE)
        .await
        .context("save placement risk: begin")?;
    clear(&mut tx, &risk.service).await?;
    for r in &risk.removals {
        sqlx::query(
            "INSERT INTO placement_removals (service, site, removed_at, replicas) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&risk.service)
        .bind(&r.site)
        .bind(r.removed_at)
        .bind(i64::from(r.replicas))
        .execute(&mut *tx)
        .await
        .context("save placement risk: insert removal")?;
    }
    for l in &risk.lost {
        sqlx::query(
            "INSERT INTO placement_lost_sites (service, site, lost_since, recovered_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&risk.service)
        .bind(&l.site)
        .bind(l.lost_since)
        .bind(l.recovered_at)
        .execute(&mut *tx)
        .await
        .context("save placement risk: insert lost site")?;
    }
    tx.commit().await.context("save placement risk: commit")?;
    Ok(())
}

/// Deletes the placement of `service` and its risk memory together.
pub(in crate::db) async fn delete_placement(
    pool: &Pool<DB>,
    service: &str,
) -> Result<bool, StoreError> {
    let mut tx = pool
        .begin_with(BEGIN_WRITE)
        .await
        .context("delete placement: begin")?;
    let deleted = sqlx::query("DELETE FROM placements WHERE service = $1")
        .bind(service)
        .execute(&mut *tx)
        .await
        .context("delete placement")?
        .rows_affected()
        > 0;
    clear(&mut tx, service).await?;
    tx.commit().await.context("delete placement: commit")?;
    Ok(deleted)
}

async fn clear(
    conn: &mut <DB as sqlx::Database>::Connection,
    service: &str,
) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM placement_removals WHERE service = $1",
        "DELETE FROM placement_lost_sites WHERE service = $1",
    ] {
        sqlx::query(sql)
            .bind(service)
            .execute(&mut *conn)
            .await
            .context("clear placement risk")?;
    }
    Ok(())
}

/// Every service's risk memory, by service; removals oldest first.
pub(in crate::db) async fn load_placement_risk(
    pool: &Pool<DB>,
) -> Result<Vec<PlacementRisk>, StoreError> {
    let removals: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT service, site, removed_at, replicas FROM placement_removals \
         ORDER BY service, removed_at, site",
    )
    .fetch_all(pool)
    .await
    .context("load placement removals")?;
    let lost: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT service, site, lost_since, recovered_at FROM placement_lost_sites \
         ORDER BY service, site",
    )
    .fetch_all(pool)
    .await
    .context("load lost sites")?;
    let mut by_service: BTreeMap<String, PlacementRisk> = BTreeMap::new();
    for (service, site, removed_at, replicas) in removals {
        let replicas = to_unsigned("placement_removals", "replicas", replicas)?;
        service_entry(&mut by_service, service)
            .removals
            .push(SiteRemoval {
                site,
                removed_at,
                replicas,
            });
    }
    for (service, site, lost_since, recovered_at) in lost {
        service_entry(&mut by_service, service).lost.push(LostSite {
            site,
            lost_since,
            recovered_at,
        });
    }
    Ok(by_service.into_values().collect())
}

fn service_entry(map: &mut BTreeMap<String, PlacementRisk>, service: String) -> &mut PlacementRisk {
    map.entry(service.clone()).or_insert_with(|| PlacementRisk {
        service,
        ..PlacementRisk::default()
    })
}
