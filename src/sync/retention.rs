//! Retention of what the lifecycle leaves behind: stored chunks (kept for replay, personal data
//! included), per-record errors and schedule ticks, each deleted after its configured age by the
//! periodic `sync.retention` job, a bounded batch per statement so no statement holds locks long.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::db::system_tx;

/// How long each kind of record is kept.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Chunks of batches that ended (processed or failed), counted from their delivery.
    pub keep_chunks: Duration,
    pub keep_sync_errors: Duration,
    /// Ticks older than this go, except each integration's newest, which the scheduler reads.
    pub keep_ticks: Duration,
}

impl RetentionSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        let days = |d: u32| Duration::from_secs(u64::from(d) * 24 * 3600);
        Self {
            keep_chunks: days(config.ingest.keep_chunks_days),
            keep_sync_errors: days(config.ingest.keep_sync_errors_days),
            keep_ticks: days(config.scheduler.keep_ticks_days),
        }
    }
}

/// What one pass deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Batches whose chunks were deleted.
    pub batches: u64,
    pub chunks: u64,
    pub sync_errors: u64,
    pub ticks: u64,
}

/// Rows per statement.
const BATCH: i64 = 1_000;

/// Runs `sql` (a `DELETE` of at most `$2` rows older than `$1`) until it deletes fewer than a
/// batch, a transaction each; returns the rows deleted.
async fn delete_in_batches(
    pool: &PgPool,
    sql: &'static str,
    before: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let mut total = 0;
    loop {
        let mut tx = system_tx(pool).await?;
        let deleted = sqlx::query(sql)
            .bind(before)
            .bind(BATCH)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Deletes everything past its retention as of `now`.
pub async fn prune(
    pool: &PgPool,
    settings: &RetentionSettings,
    now: DateTime<Utc>,
) -> anyhow::Result<Pruned> {
    let before = |keep: Duration| now - chrono::Duration::from_std(keep).unwrap_or_default();
    let mut pruned = Pruned::default();
    loop {
        let mut tx = system_tx(pool).await?;
        // Chunks of unfinished batches are never deleted: their records are still to be counted.
        let (batches, chunks): (i64, i64) = sqlx::query_as(
            "WITH old AS (
                 SELECT id FROM ingest_batches
                 WHERE chunks_deleted_at IS NULL AND received_at < $1
                   AND state IN ('processed', 'failed')
                 ORDER BY received_at LIMIT $2
                 FOR UPDATE SKIP LOCKED),
             gone AS (DELETE FROM ingest_batch_chunks c USING old WHERE c.batch_id = old.id
                      RETURNING 1),
             marked AS (UPDATE ingest_batches b SET chunks_deleted_at = now() FROM old
                        WHERE b.id = old.id RETURNING 1)
             SELECT (SELECT count(*) FROM marked), (SELECT count(*) FROM gone)",
        )
        .bind(before(settings.keep_chunks))
        .bind(BATCH)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        pruned.batches += batches as u64;
        pruned.chunks += chunks as u64;
        if batches < BATCH {
            break;
        }
    }
    pruned.sync_errors = delete_in_batches(
        pool,
        "DELETE FROM integration_sync_errors WHERE id IN (
             SELECT id FROM integration_sync_errors WHERE created_at < $1 LIMIT $2)",
        before(settings.keep_sync_errors),
    )
    .await?;
    pruned.ticks = delete_in_batches(
        pool,
        "DELETE FROM integration_schedule_ticks WHERE (integration_id, tick_at) IN (
             SELECT t.integration_id, t.tick_at FROM integration_schedule_ticks t
             WHERE t.tick_at < $1
               AND t.tick_at < (SELECT max(n.tick_at) FROM integration_schedule_ticks n
                                WHERE n.integration_id = t.integration_id)
             LIMIT $2)",
        before(settings.keep_ticks),
    )
    .await?;
    if pruned != Pruned::default() {
        tracing::info!(
            batches = pruned.batches,
            chunks = pruned.chunks,
            sync_errors = pruned.sync_errors,
            ticks = pruned.ticks,
            "retention deleted what was past its age"
        );
    }
    Ok(pruned)
}
