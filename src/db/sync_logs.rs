//! SQL of sync logs written by the sync lifecycle's newer paths (settling chunks, reopening,
//! listing, replays). Each function runs in the caller's transaction.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{
    DataType, FailureReason, IntegrationStatus, SourceType, SyncMode, SyncStatus, SyncTrigger,
};

/// Counts a settled chunk of `records` as failed in the sync (and its batch as processed when
/// it has ended).
pub async fn count_settled_chunk(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    records: i64,
    batch_done: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE integration_sync_logs
         SET records_failed = records_failed + $2, chunks_failed = chunks_failed + 1,
             batches_processed = batches_processed + $3
         WHERE id = $1",
        sync_log_id,
        records,
        i32::from(batch_done)
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What [`uncount_settled_chunk`] found.
pub struct Uncounted {
    pub integration_id: Uuid,
    /// The sync's status before.
    pub status: SyncStatus,
    /// When it had closed for `processing_failed` and is now reopened: the records its closing
    /// counted.
    pub reopened_synced: Option<i64>,
}

/// Takes a settled chunk of `records` back out of the sync's failed count; a sync closed for
/// `processing_failed` is `running` again.
pub async fn uncount_settled_chunk(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    records: i64,
    batch_was_done: bool,
) -> Result<Option<Uncounted>, sqlx::Error> {
    sqlx::query_as!(
        Uncounted,
        r#"WITH before AS (
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
         RETURNING l.integration_id, b.status AS "status!: SyncStatus",
                   CASE WHEN b.reopen THEN b.synced END AS reopened_synced"#,
        sync_log_id,
        records,
        batch_was_done
    )
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
    sqlx::query!(
        "UPDATE integration_sources
         SET total_syncs = GREATEST(total_syncs - 1, 0),
             failed_syncs = GREATEST(failed_syncs - CASE WHEN $2 = 'failed' THEN 1 ELSE 0 END, 0),
             total_records_synced = GREATEST(total_records_synced - $3, 0),
             last_sync_status = CASE WHEN last_sync_log_id = $4 THEN 'running' ELSE last_sync_status END
         WHERE id = $1",
        integration_id,
        was.as_str(),
        synced,
        sync_log_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One sync log, as admins list it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncSummary {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub trigger: SyncTrigger,
    pub sync_mode: SyncMode,
    pub status: SyncStatus,
    pub failure_reason: Option<FailureReason>,
    pub error_summary: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_batch_at: Option<DateTime<Utc>>,
    /// The data types asked for, and those whose final batch has arrived.
    pub data_types: Vec<DataType>,
    pub final_data_types: Vec<DataType>,
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
    sqlx::query_as!(
        SyncSummary,
        r#"SELECT id, integration_id, trigger AS "trigger: SyncTrigger",
                sync_mode AS "sync_mode: SyncMode", status AS "status: SyncStatus",
                failure_reason AS "failure_reason: FailureReason", error_summary,
                created_at, last_batch_at,
                COALESCE(data_types, CASE WHEN data_type IS NOT NULL THEN ARRAY[data_type] END, '{}')
                    AS "data_types!: Vec<DataType>",
                final_data_types AS "final_data_types: Vec<DataType>",
                final_received_at IS NOT NULL AS "final_received!", batches_received,
                batches_processed, records_received, records_created, records_updated,
                records_unchanged, records_skipped, records_failed
         FROM integration_sync_logs
         WHERE (NOT $1 OR status IN ('pending', 'running'))
           AND ($2::uuid IS NULL OR integration_id = $2)
         ORDER BY created_at DESC LIMIT $3"#,
        open_only,
        integration,
        limit
    )
    .fetch_all(conn)
    .await
}

/// The sync's status, its row locked; `None` when there is none.
pub async fn lock_status(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<Option<SyncStatus>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT status AS "status: SyncStatus" FROM integration_sync_logs WHERE id = $1 FOR UPDATE"#,
        sync_log_id
    )
    .fetch_optional(conn)
    .await
}

/// What a replay copies of the sync it re-runs.
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
    sqlx::query_as!(
        Replayed,
        r#"SELECT tenant_id, integration_id, status AS "status: SyncStatus",
                  data_type AS "data_type: DataType", data_types AS "data_types: Vec<DataType>"
           FROM integration_sync_logs WHERE id = $1 FOR SHARE"#,
        sync_log_id
    )
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
    sqlx::query!(
        "INSERT INTO integration_sync_logs
             (id, tenant_id, integration_id, trigger, sync_mode, data_type, data_types, status,
              started_at, final_received_at, last_batch_at, replay_of)
         VALUES ($1, $2, $3, $4, 'incremental', $5, $6, 'running', now(), now(), now(), $7)",
        id,
        original.tenant_id,
        original.integration_id,
        SyncTrigger::Replay.as_str(),
        original.data_type.map(|d| d.as_str()),
        &original.data_types as _,
        of
    )
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
    sqlx::query!(
        "UPDATE integration_sync_logs
         SET batches_received = $2, batches_processed = $3, records_received = $4
         WHERE id = $1",
        id,
        batches,
        processed,
        records
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The newest sync of the integration that is still pending or running.
pub async fn open_of_integration(
    conn: &mut PgConnection,
    integration_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT id FROM integration_sync_logs
         WHERE integration_id = $1 AND status IN ('pending', 'running')
         ORDER BY created_at DESC LIMIT 1",
        integration_id
    )
    .fetch_optional(conn)
    .await
}

/// Inserts a `pending` sync log (its id made by the caller, so its trigger job can name it).
#[allow(clippy::too_many_arguments)]
pub async fn insert_pending(
    conn: &mut PgConnection,
    id: Uuid,
    tenant_id: Uuid,
    integration_id: Uuid,
    trigger: SyncTrigger,
    mode: SyncMode,
    data_types: &[DataType],
    scheduled_for: Option<DateTime<Utc>>,
    trigger_job_id: i64,
) -> Result<(), sqlx::Error> {
    let single = (data_types.len() == 1).then(|| data_types[0]);
    sqlx::query!(
        "INSERT INTO integration_sync_logs
             (id, tenant_id, integration_id, trigger, sync_mode, data_type, data_types, status,
              scheduled_for, trigger_job_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9)",
        id,
        tenant_id,
        integration_id,
        trigger.as_str(),
        mode.as_str(),
        single.map(|d| d.as_str()),
        data_types as _,
        scheduled_for,
        trigger_job_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A sync of the integration a retry repeats: its status, mode and data types.
pub async fn retry_source(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    integration_id: Uuid,
) -> Result<Option<(SyncStatus, SyncMode, Option<Vec<DataType>>)>, sqlx::Error> {
    sqlx::query!(
        r#"SELECT status AS "status: SyncStatus", sync_mode AS "sync_mode: SyncMode",
                  data_types AS "data_types: Vec<DataType>"
           FROM integration_sync_logs WHERE id = $1 AND integration_id = $2"#,
        sync_log_id,
        integration_id
    )
    .fetch_optional(conn)
    .await
    .map(|row| row.map(|r| (r.status, r.sync_mode, r.data_types)))
}

/// Reopens a sync whose trigger had failed, when an operator retries its dead trigger job: the
/// sync never started, so it goes back to pending and no longer counts as a failed sync.
pub async fn reopen_untriggered(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let reopened: Option<Uuid> = sqlx::query_scalar!(
        "WITH reopened AS (
             UPDATE integration_sync_logs
             SET status = 'pending', failure_reason = NULL, error_summary = NULL,
                 completed_at = NULL, duration_ms = NULL
             WHERE id = $1 AND status = 'failed' AND triggered_at IS NULL
               AND failure_reason IN ('trigger_failed', 'trigger_rejected')
             RETURNING id, integration_id)
         UPDATE integration_sources i
         SET total_syncs = GREATEST(total_syncs - 1, 0), failed_syncs = GREATEST(failed_syncs - 1, 0),
             last_sync_status = CASE WHEN last_sync_log_id = reopened.id THEN 'pending' ELSE last_sync_status END
         FROM reopened WHERE i.id = reopened.integration_id
         RETURNING reopened.id",
        sync_log_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(reopened.is_some())
}

/// A sync failed by [`fail_sync`]: what its metrics are labelled with.
#[derive(Debug)]
pub struct Failed {
    pub source_type: String,
    /// From its creation to its close.
    pub open_ms: i64,
}

/// Closes a pending or running sync as failed with a machine-readable reason, and counts it on
/// the integration. `None` when the sync was already closed.
pub async fn fail_sync(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    reason: FailureReason,
    summary: &str,
    now: DateTime<Utc>,
) -> Result<Option<Failed>, sqlx::Error> {
    sqlx::query_as!(
        Failed,
        r#"WITH failed AS (
             UPDATE integration_sync_logs
             SET status = 'failed', failure_reason = $2, error_summary = $3, completed_at = $4,
                 duration_ms = (extract(epoch FROM $4 - COALESCE(started_at, created_at)) * 1000)::bigint
             WHERE id = $1 AND status IN ('pending', 'running')
             RETURNING id, integration_id,
                       (extract(epoch FROM $4 - created_at) * 1000)::bigint AS open_ms)
         UPDATE integration_sources i
         SET last_sync_at = $4, last_sync_status = 'failed', last_sync_log_id = failed.id,
             total_syncs = total_syncs + 1, failed_syncs = failed_syncs + 1
         FROM failed WHERE i.id = failed.integration_id
         RETURNING i.source_type, failed.open_ms AS "open_ms!""#,
        sync_log_id,
        reason.as_str(),
        summary,
        now
    )
    .fetch_optional(&mut *conn)
    .await
}

/// What closing a sync returns.
#[derive(Debug)]
pub struct Closed {
    pub integration_id: Uuid,
    pub status: SyncStatus,
    pub sync_mode: SyncMode,
    pub trigger: SyncTrigger,
    /// When the sync started: its trigger, or its first batch when the workflow started it.
    pub start_at: DateTime<Utc>,
    /// Records created, updated or unchanged.
    pub synced: i64,
    pub source_type: String,
    /// From its creation to its close.
    pub open_ms: i64,
}

/// Closes an open sync: when it is done (its final batch in, every batch ended), or at once with
/// `by_admin` (the operator's reason). `None` when it was not closed.
pub async fn close(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    by_admin: Option<&str>,
) -> Result<Option<Closed>, sqlx::Error> {
    sqlx::query_as!(
        Closed,
        r#"UPDATE integration_sync_logs
         SET status = CASE
                 WHEN $2 THEN CASE
                     WHEN records_created + records_updated + records_unchanged + records_skipped > 0
                     THEN 'partial' ELSE 'failed' END
                 WHEN records_failed = 0 THEN 'success'
                 WHEN records_created + records_updated + records_unchanged + records_skipped > 0 THEN 'partial'
                 ELSE 'failed' END,
             failure_reason = CASE WHEN $2 THEN 'closed_by_admin'
                                   WHEN chunks_failed > 0 THEN 'processing_failed' END,
             completed_at = now(),
             duration_ms = (extract(epoch FROM now() - COALESCE(started_at, created_at)) * 1000)::bigint,
             records_per_second = records_received
                 / GREATEST(extract(epoch FROM now() - COALESCE(started_at, created_at)), 0.001),
             error_summary = CASE
                 WHEN $2 THEN 'closed by an operator: ' || $3
                 WHEN chunks_failed > 0 THEN records_failed || ' of ' || records_received
                     || ' records failed, ' || chunks_failed
                     || ' chunks of them unprocessed; see integration_sync_errors'
                 WHEN records_failed > 0
                 THEN records_failed || ' of ' || records_received || ' records failed; see integration_sync_errors'
                 END
         WHERE id = $1 AND status IN ('pending', 'running')
           AND ($2 OR (final_received_at IS NOT NULL AND batches_processed >= batches_received))
         RETURNING integration_id, status AS "status: SyncStatus",
                   sync_mode AS "sync_mode: SyncMode", trigger AS "trigger: SyncTrigger",
                   COALESCE(triggered_at, started_at, created_at) AS "start_at!",
                   records_created + records_updated + records_unchanged AS "synced!",
                   (SELECT source_type FROM integration_sources i
                    WHERE i.id = integration_sync_logs.integration_id) AS "source_type!",
                   (extract(epoch FROM now() - created_at) * 1000)::bigint AS "open_ms!""#,
        sync_log_id,
        by_admin.is_some(),
        by_admin.unwrap_or_default()
    )
    .fetch_optional(conn)
    .await
}

/// Counts a closed sync (status, `synced` records) on its integration's last-sync fields.
pub async fn count_closing(
    conn: &mut PgConnection,
    integration_id: Uuid,
    sync_log_id: Uuid,
    status: SyncStatus,
    synced: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE integration_sources
         SET last_sync_at = now(), last_sync_status = $2, last_sync_log_id = $3,
             last_successful_sync_at = CASE WHEN $2 = 'success' THEN now() ELSE last_successful_sync_at END,
             total_syncs = total_syncs + 1,
             failed_syncs = failed_syncs + CASE WHEN $2 = 'failed' THEN 1 ELSE 0 END,
             total_records_synced = total_records_synced + $4
         WHERE id = $1",
        integration_id,
        status.as_str(),
        sync_log_id,
        synced
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The sync's integration and start (its trigger, or its first batch).
pub async fn integration_and_start(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<Option<(Uuid, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query!(
        r#"SELECT integration_id, COALESCE(triggered_at, started_at, created_at) AS "start_at!"
           FROM integration_sync_logs WHERE id = $1"#,
        sync_log_id
    )
    .fetch_optional(conn)
    .await
    .map(|row| row.map(|r| (r.integration_id, r.start_at)))
}

/// Records when n8n was asked to run the sync (taken before the request: the sync's start).
pub async fn set_triggered(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE integration_sync_logs SET triggered_at = $2 WHERE id = $1",
        sync_log_id,
        at
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What a delivery naming a sync checks of it.
pub struct ForDelivery {
    pub integration_id: Uuid,
    pub status: SyncStatus,
    /// The data types the sync asked for (its one type for a workflow-started sync).
    pub data_types: Vec<DataType>,
    pub failure_reason: Option<FailureReason>,
}

pub async fn for_delivery(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<Option<ForDelivery>, sqlx::Error> {
    sqlx::query_as!(
        ForDelivery,
        r#"SELECT integration_id, status AS "status: SyncStatus",
                  COALESCE(data_types, CASE WHEN data_type IS NOT NULL THEN ARRAY[data_type] END,
                           '{}') AS "data_types!: Vec<DataType>",
                  failure_reason AS "failure_reason: FailureReason"
           FROM integration_sync_logs WHERE id = $1"#,
        sync_log_id
    )
    .fetch_optional(conn)
    .await
}

/// Counts a stored delivery of `records` records of `data_type` into its sync. A data type is
/// delivered once its final batch is in together with as many batches as that one's
/// `batch_count`; the sync's final batch is in (and it may close once every batch is processed)
/// when every data type it asked for is. True when this delivery completed the sync.
pub async fn count_delivery(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    data_type: DataType,
    records: i64,
    empty: bool,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"WITH delivered AS (
             SELECT COALESCE(bool_or(is_final), false)
                    AND count(*) >= COALESCE(max(batch_count), 0) AS complete
             FROM ingest_batches WHERE sync_log_id = $1 AND data_type = $4),
         finals AS (
             SELECT l.id, l.final_received_at IS NULL AS was_incomplete,
                    CASE WHEN d.complete AND NOT $4 = ANY(l.final_data_types)
                         THEN array_append(l.final_data_types, $4) ELSE l.final_data_types END AS types,
                    COALESCE(l.data_types, ARRAY[l.data_type], ARRAY[$4]) AS wanted
             FROM integration_sync_logs l, delivered d WHERE l.id = $1)
         UPDATE integration_sync_logs l
         SET records_received = l.records_received + $2,
             batches_received = l.batches_received + 1,
             batches_processed = l.batches_processed + CASE WHEN $3 THEN 1 ELSE 0 END,
             final_data_types = f.types,
             final_received_at = CASE WHEN f.wanted <@ f.types THEN COALESCE(l.final_received_at, now())
                                      ELSE l.final_received_at END,
             status = CASE WHEN l.status = 'pending' THEN 'running' ELSE l.status END,
             started_at = COALESCE(l.started_at, now()),
             last_batch_at = now(),
             late_batches = l.late_batches + CASE WHEN l.status IN ('pending', 'running') THEN 0 ELSE 1 END
         FROM finals f WHERE l.id = f.id
         RETURNING f.was_incomplete AND f.wanted <@ f.types AS "completed!""#,
        sync_log_id,
        records,
        empty,
        data_type.as_str()
    )
    .fetch_one(conn)
    .await
}

/// Keeps what the source answered, as the workflow reported it, on the sync it failed.
pub async fn set_source_error(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    data_type: DataType,
    status: Option<u16>,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE integration_sync_logs
         SET source_error = COALESCE(source_error, jsonb_build_object(
                 'data_type', $2::text, 'status', $3::int, 'message', $4::text))
         WHERE id = $1",
        sync_log_id,
        data_type.as_str(),
        status.map(i32::from),
        message
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An open sync the watchdog closes, and the data types whose final batch it still lacks.
pub struct Silent {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub missing: Vec<DataType>,
}

/// Open syncs with no delivery since `cutoff`, oldest first (1,000 at most), locked; rows
/// another scheduler holds are skipped.
pub async fn silent_since(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
) -> Result<Vec<Silent>, sqlx::Error> {
    sqlx::query_as!(
        Silent,
        r#"SELECT id, integration_id,
                ARRAY(SELECT unnest(COALESCE(data_types, ARRAY[data_type]))
                      EXCEPT SELECT unnest(final_data_types) ORDER BY 1)
                    AS "missing!: Vec<DataType>"
         FROM integration_sync_logs
         WHERE status IN ('pending', 'running') AND COALESCE(last_batch_at, created_at) < $1
         ORDER BY COALESCE(last_batch_at, created_at)
         LIMIT 1000
         FOR UPDATE SKIP LOCKED"#,
        cutoff
    )
    .fetch_all(conn)
    .await
}

/// Inserts the `running` sync log of a delivery that names no sync (a workflow started by n8n).
pub async fn insert_webhook_started(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    integration_id: Uuid,
    mode: SyncMode,
    data_type: DataType,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO integration_sync_logs
             (tenant_id, integration_id, trigger, sync_mode, data_type, status, started_at)
         VALUES ($1, $2, 'webhook', $3, $4, 'running', now())
         RETURNING id",
        tenant_id,
        integration_id,
        mode.as_str(),
        data_type.as_str()
    )
    .fetch_one(conn)
    .await
}

/// Counts a processed chunk into its sync (`batch_done`: its batch ended with it); a pending
/// sync is running from its first processed chunk.
pub async fn count_chunk(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    counts: &super::batches::Counts,
    batch_done: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE integration_sync_logs
         SET records_created = records_created + $2,
             records_updated = records_updated + $3,
             records_unchanged = records_unchanged + $4,
             records_skipped = records_skipped + $5,
             records_failed = records_failed + $6,
             records_unmatched = records_unmatched + $7,
             batches_processed = batches_processed + $8,
             status = CASE WHEN status = 'pending' THEN 'running' ELSE status END
         WHERE id = $1",
        sync_log_id,
        counts.created,
        counts.updated,
        counts.unchanged,
        counts.skipped,
        counts.failed,
        counts.unmatched,
        i32::from(batch_done)
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What triggering a sync reads of it and its integration.
pub struct TriggerTarget {
    pub integration_status: IntegrationStatus,
    pub url: Option<String>,
    pub auth_kind: String,
    pub credentials_encrypted: Option<Vec<u8>>,
    pub credentials_key_id: Option<String>,
    pub source_type: SourceType,
    pub sync_status: SyncStatus,
    pub sync_mode: SyncMode,
    pub data_types: Option<Vec<DataType>>,
    pub triggered_at: Option<DateTime<Utc>>,
}

pub async fn trigger_target(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<Option<TriggerTarget>, sqlx::Error> {
    sqlx::query_as!(
        TriggerTarget,
        r#"SELECT i.status AS "integration_status: IntegrationStatus", i.n8n_webhook_url AS url,
                  i.n8n_auth_kind AS auth_kind, i.credentials_encrypted, i.credentials_key_id,
                  i.source_type AS "source_type: SourceType",
                  l.status AS "sync_status: SyncStatus", l.sync_mode AS "sync_mode: SyncMode",
                  l.data_types AS "data_types: Vec<DataType>", l.triggered_at
           FROM integration_sync_logs l JOIN integration_sources i ON i.id = l.integration_id
           WHERE l.id = $1"#,
        sync_log_id
    )
    .fetch_optional(conn)
    .await
}

/// A sync log with every count, as the platform API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SyncLog {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub trigger: SyncTrigger,
    pub sync_mode: SyncMode,
    pub status: SyncStatus,
    /// Why it failed as a whole, when it did.
    pub failure_reason: Option<FailureReason>,
    pub error_summary: Option<String>,
    /// The data types asked for, and those whose final batch has arrived.
    pub data_types: Vec<DataType>,
    pub final_data_types: Vec<DataType>,
    /// The sync this one replays (trigger `replay`).
    pub replay_of: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub last_batch_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub records_per_second: Option<f64>,
    pub batches_received: i32,
    pub batches_processed: i32,
    /// Chunks settled as failed (their job died, or their batch was discarded).
    pub chunks_failed: i32,
    /// `received = created + updated + unchanged + skipped + failed` once the sync has closed.
    pub records_received: i64,
    pub records_created: i64,
    pub records_updated: i64,
    pub records_unchanged: i64,
    pub records_skipped: i64,
    pub records_failed: i64,
    /// Of the stored records, those no account matched.
    pub records_unmatched: i64,
}

/// Which sync logs a page holds; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct SyncFilter {
    /// Only this sync log.
    pub only: Option<Uuid>,
    pub integration_id: Option<Uuid>,
    pub statuses: Option<Vec<SyncStatus>>,
    pub trigger: Option<SyncTrigger>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

/// Up to `limit` sync logs the transaction sees (its tenant's) matching `filter`, newest first,
/// after the `(created_at, id)` of the previous page's last: a keyset page, stable while new
/// syncs are created (they sort before every page already read).
pub async fn page(
    conn: &mut PgConnection,
    filter: &SyncFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<SyncLog>, sqlx::Error> {
    let statuses: Option<Vec<String>> = filter
        .statuses
        .as_ref()
        .map(|s| s.iter().map(|s| s.as_str().to_string()).collect());
    let (after_at, after_id) = after.unzip();
    sqlx::query_as!(
        SyncLog,
        r#"SELECT id, integration_id, trigger AS "trigger: SyncTrigger",
                sync_mode AS "sync_mode: SyncMode", status AS "status: SyncStatus",
                failure_reason AS "failure_reason: FailureReason", error_summary,
                COALESCE(data_types, CASE WHEN data_type IS NOT NULL THEN ARRAY[data_type] END, '{}')
                    AS "data_types!: Vec<DataType>",
                final_data_types AS "final_data_types: Vec<DataType>", replay_of,
                created_at, started_at, completed_at, last_batch_at, duration_ms,
                records_per_second, batches_received, batches_processed, chunks_failed,
                records_received, records_created, records_updated, records_unchanged,
                records_skipped, records_failed, records_unmatched
         FROM integration_sync_logs
         WHERE ($1::uuid IS NULL OR integration_id = $1)
           AND ($9::uuid IS NULL OR id = $9)
           AND ($2::text[] IS NULL OR status = ANY($2))
           AND ($3::text IS NULL OR trigger = $3)
           AND ($4::timestamptz IS NULL OR created_at >= $4)
           AND ($5::timestamptz IS NULL OR created_at < $5)
           AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::uuid))
         ORDER BY created_at DESC, id DESC
         LIMIT $8"#,
        filter.integration_id,
        statuses.as_deref(),
        filter.trigger.map(|t| t.as_str()),
        filter.since,
        filter.until,
        after_at,
        after_id,
        limit,
        filter.only
    )
    .fetch_all(conn)
    .await
}

/// One sync log the transaction sees, by id.
pub async fn one(conn: &mut PgConnection, id: Uuid) -> Result<Option<SyncLog>, sqlx::Error> {
    let only = SyncFilter {
        only: Some(id),
        ..SyncFilter::default()
    };
    Ok(page(conn, &only, None, 1).await?.pop())
}

/// The tenant of a sync log (system work: the caller names only the sync).
pub async fn tenant_of(conn: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT tenant_id FROM integration_sync_logs WHERE id = $1",
        id
    )
    .fetch_optional(conn)
    .await
}

/// Open (pending or running) syncs of every tenant, by source type, for the `syncbridge_syncs_open`
/// gauge; as the system role, since the sampler works for no tenant.
pub async fn open_by_source_type(pool: &sqlx::PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL ROLE syncbridge_system")
        .execute(&mut *tx)
        .await?;
    let open = sqlx::query!(
        r#"SELECT i.source_type, count(*) AS "open!"
         FROM integration_sync_logs s JOIN integration_sources i ON i.id = s.integration_id
         WHERE s.status IN ('pending', 'running')
         GROUP BY i.source_type"#
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(open.into_iter().map(|r| (r.source_type, r.open)).collect())
}
