//! Retention of what the lifecycle leaves behind: stored chunks (kept for replay, personal data
//! included), per-record errors and schedule ticks, each deleted after its configured age by the
//! periodic `sync.retention` job, a bounded batch per statement so no statement holds locks long.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::db::{self, system_tx};

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

/// Runs `$delete(conn, before, BATCH)` (rows deleted) in a transaction each until it deletes
/// fewer than a batch; the total. A macro: the deletes are async functions of a borrowed
/// connection, which a plain function cannot take as a parameter without boxing.
macro_rules! in_batches {
    ($pool:expr, $delete:path, $before:expr) => {{
        let mut total = 0u64;
        loop {
            let mut tx = system_tx($pool).await?;
            let deleted = $delete(&mut tx, $before, BATCH).await?;
            tx.commit().await?;
            total += deleted;
            if deleted < BATCH as u64 {
                break total;
            }
        }
    }};
}

/// Deletes everything past its retention as of `now`.
pub async fn prune(
    pool: &PgPool,
    settings: &RetentionSettings,
    now: DateTime<Utc>,
) -> anyhow::Result<Pruned> {
    let before = |keep: Duration| now - chrono::Duration::from_std(keep).unwrap_or_default();
    let mut pruned = Pruned::default();
    // A transaction per batch of rows, so no statement holds its locks for long.
    loop {
        let mut tx = system_tx(pool).await?;
        let (batches, chunks) =
            db::batches::delete_old_chunks(&mut tx, before(settings.keep_chunks), BATCH).await?;
        tx.commit().await?;
        pruned.batches += batches as u64;
        pruned.chunks += chunks as u64;
        if batches < BATCH {
            break;
        }
    }
    pruned.sync_errors = in_batches!(
        pool,
        db::sync_errors::delete_older_than,
        before(settings.keep_sync_errors)
    );
    pruned.ticks = in_batches!(
        pool,
        db::schedule_ticks::delete_older_than,
        before(settings.keep_ticks)
    );
    if pruned != Pruned::default() {
        tracing::info!(
            retention.batches = pruned.batches,
            retention.chunks = pruned.chunks,
            retention.sync_errors = pruned.sync_errors,
            retention.ticks = pruned.ticks,
            "retention deleted what was past its age"
        );
    }
    Ok(pruned)
}
