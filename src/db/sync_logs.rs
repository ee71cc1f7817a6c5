//! SQL of sync logs written by the sync lifecycle's newer paths (settling chunks, reopening,
//! listing, replays). Each function runs in the caller's transaction.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{DataType, FailureReason, SyncMode, SyncStatus, SyncTrigger};

/// Counts a settled chunk of `records` as failed in the sync (and its batch as processed when
/// it has ended).
pub async fn count_settled_chunk(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    records: i64,
    batch_done: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE integration_sync_logs
         SET records_failed = records_failed + $2, chunks_failed = chunks_failed + 1,
             batches_processed = batches_processed + $3
         WHERE id = $1",
    )
    .bind(sync_log_id)
    .bind(records)
    .bind(i32::from(batch_done))
    .execute(conn)
    .await?;
    Ok(())
}

/// What [`uncount_settled_chunk`] found: the sync's integration, its status before, and (when
/// it had closed for `processing_failed` and is now reopened) the records its closing counted.
pub type Uncounted = (Uuid, SyncStatus, Option<i64>);

/// Takes a settled chunk of `records` back out of the sync's failed count; a sync closed for
/// `processing_failed` is `running` again.
pub async fn uncount_settled_chunk(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    records: i64,
    batch_was_done: bool,
) -> Result<Option<Uncounted>, sqlx::Error> {
    sqlx::query_as(
        "WITH before AS (
             SELECT id, status, failure_reason IS NOT DISTINCT FROM 'processing_failed' AS reopen,
                    records_created + records_updated + records_unchanged AS synced
             FROM integration_sync_logs WHERE id = $1 FOR UPDATE)
         UPDATE integration_sync_logs l
         SET records_failed = l.records_failed - $2, chunks_failed = l.chunks_failed - 1,
             batches_processed = l.batches_processed - CASE WHEN $3 THEN 1 ELSE 0 END,
             status = CASE WHEN b.reopen THEN 'running' ELSE l.status END,
             failure_reason = CASE WHEN b.reopen THEN NULL ELSE l.failure_reason END,
             error_summary = CASE WHEN b.reopen THEN NULL ELSE l.error_summary END,
             completed_at = CASE WHEN b.reopen THEN NULL ELSE l.completed_at END,
             duration_ms = CASE WHEN b.reopen THEN NULL ELSE l.duration_ms END
         FROM before b WHERE l.id = b.id
         RETURNING l.integration_id, b.status, CASE WHEN b.reopen THEN b.synced END",
    )
    .bind(sync_log_id)
    .bind(records)
    .bind(batch_was_done)
    .fetch_optional(conn)
    .await
}

/// Takes a reopened sync's closing (status `was`, `synced` records) back out of its
/// integration's counters.
pub async fn uncount_closing(
    conn: &mut PgConnection,
    integration_id: Uuid,
    sync_log_id: Uuid,
    was: SyncStatus,
    synced: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE integration_sources
         SET total_syncs = GREATEST(total_syncs - 1, 0),
             failed_syncs = GREATEST(failed_syncs - CASE WHEN $2 = 'failed' THEN 1 ELSE 0 END, 0),
             total_records_synced = GREATEST(total_records_synced - $3, 0),
             last_sync_status = CASE WHEN last_sync_log_id = $4 THEN 'running' ELSE last_sync_status END
         WHERE id = $1",
    )
    .bind(integration_id)
    .bind(was)
    .bind(synced)
    .bind(sync_log_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// One sync log, as admins list it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct SyncSummary {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub trigger: SyncTrigger,
    pub sync_mode: SyncMode,
    pub status: SyncStatus,
    pub failure_reason: Option<FailureReason>,
    pub created_at: DateTime<Utc>,
    pub last_batch_at: Option<DateTime<Utc>>,
    pub final_received: bool,
    pub batches_received: i32,
    pub batches_processed: i32,
    pub records_received: i64,
    pub records_created: i64,
    pub records_updated: i64,
    pub records_unchanged: i64,
    pub records_skipped: i64,
    pub records_failed: i64,
}

/// Sync logs, newest first: only open ones with `open_only`, of one integration if given.
pub async fn list(
    conn: &mut PgConnection,
    open_only: bool,
    integration: Option<Uuid>,
    limit: i64,
) -> Result<Vec<SyncSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, integration_id, trigger, sync_mode, status, failure_reason, created_at,
                last_batch_at, final_received_at IS NOT NULL AS final_received, batches_received,
                batches_processed, records_received, records_created, records_updated,
                records_unchanged, records_skipped, records_failed
         FROM integration_sync_logs
         WHERE (NOT $1 OR status IN ('pending', 'running'))
           AND ($2::uuid IS NULL OR integration_id = $2)
         ORDER BY created_at DESC LIMIT $3",
    )
    .bind(open_only)
    .bind(integration)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The sync's status, its row locked; `None` when there is none.
pub async fn lock_status(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<Option<SyncStatus>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM integration_sync_logs WHERE id = $1 FOR UPDATE")
        .bind(sync_log_id)
        .fetch_optional(conn)
        .await
}

/// What a replay copies of the sync it re-runs.
#[derive(sqlx::FromRow)]
pub struct Replayed {
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    pub status: SyncStatus,
    pub data_type: Option<DataType>,
    pub data_types: Option<Vec<DataType>>,
}

/// The sync a replay re-runs, locked against deletion (`FOR SHARE`).
pub async fn for_replay(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<Option<Replayed>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tenant_id, integration_id, status, data_type, data_types
         FROM integration_sync_logs WHERE id = $1 FOR SHARE",
    )
    .bind(sync_log_id)
    .fetch_optional(conn)
    .await
}

/// Inserts the `running` replay `id` of `of`: incremental, its final batch in already.
pub async fn insert_replay(
    conn: &mut PgConnection,
    id: Uuid,
    of: Uuid,
    original: &Replayed,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO integration_sync_logs
             (id, tenant_id, integration_id, trigger, sync_mode, data_type, data_types, status,
              started_at, final_received_at, last_batch_at, replay_of)
         VALUES ($1, $2, $3, $4, 'incremental', $5, $6, 'running', now(), now(), now(), $7)",
    )
    .bind(id)
    .bind(original.tenant_id)
    .bind(original.integration_id)
    .bind(SyncTrigger::Replay)
    .bind(original.data_type)
    .bind(&original.data_types)
    .bind(of)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets what a replay received: its batches, those already processed (empty), its records.
pub async fn set_received(
    conn: &mut PgConnection,
    id: Uuid,
    batches: i32,
    processed: i32,
    records: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE integration_sync_logs
         SET batches_received = $2, batches_processed = $3, records_received = $4
         WHERE id = $1",
    )
    .bind(id)
    .bind(batches)
    .bind(processed)
    .bind(records)
    .execute(conn)
    .await?;
    Ok(())
}
