//! The sync lifecycle, its one home: sync logs from creation to their final state, the batches
//! and chunks that feed them, and what closes, fails, reopens, discards or replays them. The
//! state diagrams, with who makes each transition, are in `docs/SYNC_LIFECYCLE.md`.
//!
//! Callers own the transaction: every function here takes the connection of one, so the
//! scheduler, the webhook, the worker pipeline and the admin commands compose them with their
//! own writes.

pub mod chunk;
pub mod kinds;
pub mod replay;
pub mod retention;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    db::{self, tenant_tx},
    domain::{
        DataType, FailureReason, IntegrationStatus, MissedTicks, OnRunning, SourceType, SyncMode,
        SyncStatus, SyncTrigger,
    },
};
pub use kinds::{FinalizeSync, INGEST_QUEUE, ProcessChunk, RunRetention, TriggerSync, job_tag};

/// The external table a data type lands in.
pub(crate) fn external_table(data_type: DataType) -> &'static str {
    match data_type {
        DataType::Contacts => "external_contacts",
        DataType::Tickets => "external_tickets",
        DataType::Deals => "external_deals",
    }
}

/// The newest sync of the integration that is still pending or running.
pub(crate) async fn open_sync(
    conn: &mut PgConnection,
    integration_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM integration_sync_logs
         WHERE integration_id = $1 AND status IN ('pending', 'running')
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(integration_id)
    .fetch_optional(conn)
    .await
}

/// What a new sync asks of n8n. `None`s take the integration's settings.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub trigger: SyncTrigger,
    pub sync_mode: Option<SyncMode>,
    pub data_types: Option<Vec<DataType>>,
    pub scheduled_for: Option<DateTime<Utc>>,
    /// A failed or partial sync this one repeats (trigger `retry`): its mode and data types are
    /// the defaults.
    pub retry_of: Option<Uuid>,
}

/// What starting a sync reads of its integration, from the row locked for it.
#[derive(sqlx::FromRow)]
pub(crate) struct LockedIntegration {
    pub(crate) id: Uuid,
    pub(crate) tenant_id: Uuid,
    pub(crate) status: IntegrationStatus,
    pub(crate) source_type: SourceType,
    pub(crate) n8n_webhook_url: Option<String>,
    pub(crate) sync_schedule: Option<String>,
    pub(crate) sync_mode: SyncMode,
    pub(crate) sync_data_types: Vec<DataType>,
    pub(crate) sync_missed_ticks: MissedTicks,
    pub(crate) sync_on_running: OnRunning,
}

/// The integration's row, locked until the transaction ends against schedulers and operators
/// starting a sync of it. `FOR NO KEY UPDATE`, not `FOR UPDATE`: chunks being written hold the
/// row `FOR KEY SHARE` and need not be waited for.
pub(crate) async fn lock_integration(
    tx: &mut PgConnection,
    integration_id: Uuid,
) -> Result<Option<LockedIntegration>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, tenant_id, status, source_type, n8n_webhook_url, sync_schedule, sync_mode,
                sync_data_types, sync_missed_ticks, sync_on_running
         FROM integration_sources WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(integration_id)
    .fetch_optional(tx)
    .await
}

/// Creates a pending sync log and its `TriggerSync` job in the caller's (tenant) transaction,
/// which holds the integration's row. Returns the sync log id and the job id.
pub(crate) async fn create_sync(
    tx: &mut PgConnection,
    integration: &LockedIntegration,
    request: &SyncRequest,
    max_attempts: i32,
) -> anyhow::Result<(Uuid, i64)> {
    let (integration_id, tenant_id) = (integration.id, integration.tenant_id);
    let mode = request.sync_mode.unwrap_or(integration.sync_mode);
    let stored_types = &integration.sync_data_types;
    let data_types: Vec<DataType> = match &request.data_types {
        Some(types) if !types.is_empty() => types.clone(),
        _ if !stored_types.is_empty() => stored_types.clone(),
        _ => integration.source_type.default_data_types().to_vec(),
    };
    let single = (data_types.len() == 1).then(|| data_types[0]);
    // The id is made here so the job (which names the sync) and the sync log (which names its
    // job) are each written once, in the same transaction.
    let sync_log_id = Uuid::new_v4();
    let job = jobs::NewJob::new(&TriggerSync {
        tenant_id,
        integration_id,
        sync_log_id,
    })?
    .max_attempts(max_attempts)
    .unique_key(format!("trigger:{sync_log_id}"))
    .tag(job_tag(tenant_id, integration_id));
    let job_id = jobs::enqueue(&mut *tx, &job).await?;
    sqlx::query(
        "INSERT INTO integration_sync_logs
             (id, tenant_id, integration_id, trigger, sync_mode, data_type, data_types, status,
              scheduled_for, trigger_job_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9)",
    )
    .bind(sync_log_id)
    .bind(tenant_id)
    .bind(integration_id)
    .bind(request.trigger)
    .bind(mode)
    .bind(single)
    .bind(&data_types)
    .bind(request.scheduled_for)
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    Ok((sync_log_id, job_id))
}

/// Why a sync could not be requested.
#[derive(Debug, thiserror::Error)]
pub enum SyncRequestError {
    #[error("no integration {0}")]
    NotFound(Uuid),
    #[error("integration {0} is paused; resume it first")]
    Paused(Uuid),
    #[error(
        "integration {0} has no n8n webhook URL; set one with `syncbridge integrations set {0} --webhook-url URL`"
    )]
    NoWebhookUrl(Uuid),
    #[error(
        "sync {sync_log_id} of this integration is still open; wait for it, or force a new one"
    )]
    SyncOpen { sync_log_id: Uuid },
    #[error("sync {0} is not a sync of this integration")]
    RetryNotFound(Uuid),
    #[error("sync {id} is {status}; only failed or partial syncs are retried")]
    NotRetryable { id: Uuid, status: SyncStatus },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for SyncRequestError {
    fn from(e: sqlx::Error) -> Self {
        Self::Other(e.into())
    }
}

/// A sync started by an operator (manual) or a retry: checks the integration can be triggered,
/// then creates the sync and its job. `force` starts it even while another sync is open.
pub async fn request_sync(
    pool: &PgPool,
    integration_id: Uuid,
    request: &SyncRequest,
    force: bool,
    max_attempts: i32,
) -> Result<(Uuid, i64), SyncRequestError> {
    let integration = crate::db::admin::integration(pool, integration_id)
        .await?
        .ok_or(SyncRequestError::NotFound(integration_id))?;
    let mut tx = tenant_tx(pool, integration.tenant_id).await?;
    let integration = lock_integration(&mut tx, integration_id)
        .await?
        .ok_or(SyncRequestError::NotFound(integration_id))?;
    if integration.status == IntegrationStatus::Paused {
        return Err(SyncRequestError::Paused(integration_id));
    }
    if integration.n8n_webhook_url.is_none() {
        return Err(SyncRequestError::NoWebhookUrl(integration_id));
    }
    let mut request = request.clone();
    if let Some(previous) = request.retry_of {
        let found: Option<(SyncStatus, SyncMode, Option<Vec<DataType>>)> = sqlx::query_as(
            "SELECT status, sync_mode, data_types FROM integration_sync_logs
             WHERE id = $1 AND integration_id = $2",
        )
        .bind(previous)
        .bind(integration_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (status, mode, types) = found.ok_or(SyncRequestError::RetryNotFound(previous))?;
        if !matches!(status, SyncStatus::Failed | SyncStatus::Partial) {
            return Err(SyncRequestError::NotRetryable {
                id: previous,
                status,
            });
        }
        request.trigger = SyncTrigger::Retry;
        request.sync_mode = request.sync_mode.or(Some(mode));
        if request.data_types.is_none() {
            request.data_types = types;
        }
    }
    if !force {
        let open = open_sync(&mut tx, integration_id).await?;
        if let Some(sync_log_id) = open {
            return Err(SyncRequestError::SyncOpen { sync_log_id });
        }
    }
    let created = create_sync(&mut tx, &integration, &request, max_attempts).await?;
    tx.commit().await?;
    Ok(created)
}

/// Reopens a sync whose trigger had failed, when an operator retries its dead trigger job: the
/// sync never started, so it goes back to pending and no longer counts as a failed sync.
pub async fn reopen_untriggered(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let reopened: Option<Uuid> = sqlx::query_scalar(
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
    )
    .bind(sync_log_id)
    .fetch_optional(conn)
    .await?;
    Ok(reopened.is_some())
}

/// Closes a pending or running sync as failed with a machine-readable reason, and counts it on
/// the integration. False when the sync was already closed.
pub async fn fail_sync(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    reason: FailureReason,
    summary: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let failed: Option<Uuid> = sqlx::query_scalar(
        "WITH failed AS (
             UPDATE integration_sync_logs
             SET status = 'failed', failure_reason = $2, error_summary = $3, completed_at = $4,
                 duration_ms = (extract(epoch FROM $4 - COALESCE(started_at, created_at)) * 1000)::bigint
             WHERE id = $1 AND status IN ('pending', 'running')
             RETURNING id, integration_id)
         UPDATE integration_sources i
         SET last_sync_at = $4, last_sync_status = 'failed', last_sync_log_id = failed.id,
             total_syncs = total_syncs + 1, failed_syncs = failed_syncs + 1
         FROM failed WHERE i.id = failed.integration_id
         RETURNING failed.id",
    )
    .bind(sync_log_id)
    .bind(reason)
    .bind(summary)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(failed.is_some())
}

/// integration, status, mode, started, records synced.
type ClosedSync = (Uuid, SyncStatus, SyncMode, Option<DateTime<Utc>>, i64);

/// Closes the sync when its final batch has arrived and every batch is processed: status, timings,
/// the full-sync sweep, the integration's last-sync fields. Does nothing otherwise, or when
/// another transaction closed it first.
pub async fn close_sync_if_done(
    tx: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<(), sqlx::Error> {
    close(tx, sync_log_id, None).await.map(|_| ())
}

/// Closes an open sync now, on an operator's word, whatever it still waits for: `partial` when
/// it stored records, else `failed`, with reason `closed_by_admin` and `reason` as its summary;
/// never swept. Batches still being processed go on counting into it. Returns the status it
/// closed with, or `None` when it was not open (or does not exist).
pub async fn close_by_admin(
    tx: &mut PgConnection,
    sync_log_id: Uuid,
    reason: &str,
) -> Result<Option<SyncStatus>, sqlx::Error> {
    close(tx, sync_log_id, Some(reason)).await
}

async fn close(
    tx: &mut PgConnection,
    sync_log_id: Uuid,
    by_admin: Option<&str>,
) -> Result<Option<SyncStatus>, sqlx::Error> {
    let closed: Option<ClosedSync> = sqlx::query_as(
        "UPDATE integration_sync_logs
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
         RETURNING integration_id, status, sync_mode, started_at,
                   records_created + records_updated + records_unchanged",
    )
    .bind(sync_log_id)
    .bind(by_admin.is_some())
    .bind(by_admin.unwrap_or_default())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((integration_id, status, sync_mode, started_at, synced)) = closed else {
        return Ok(None);
    };
    if status == SyncStatus::Success && sync_mode == SyncMode::Full {
        let data_types: Vec<DataType> = sqlx::query_scalar(
            "SELECT DISTINCT data_type FROM ingest_batches WHERE sync_log_id = $1",
        )
        .bind(sync_log_id)
        .fetch_all(&mut *tx)
        .await?;
        for data_type in data_types {
            // Rows this sync wrote or saw carry a last_synced_at after it started.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {} SET deleted_at = now()
                 WHERE integration_id = $1 AND deleted_at IS NULL AND last_synced_at < $2",
                external_table(data_type)
            )))
            .bind(integration_id)
            .bind(started_at.unwrap_or_else(Utc::now))
            .execute(&mut *tx)
            .await?;
        }
    }
    sqlx::query(
        "UPDATE integration_sources
         SET last_sync_at = now(), last_sync_status = $2, last_sync_log_id = $3,
             last_successful_sync_at = CASE WHEN $2 = 'success' THEN now() ELSE last_successful_sync_at END,
             total_syncs = total_syncs + 1,
             failed_syncs = failed_syncs + CASE WHEN $2 = 'failed' THEN 1 ELSE 0 END,
             total_records_synced = total_records_synced + $4
         WHERE id = $1",
    )
    .bind(integration_id)
    .bind(status)
    .bind(sync_log_id)
    .bind(synced)
    .execute(&mut *tx)
    .await?;
    tracing::info!(%sync_log_id, %integration_id, %status, "sync closed");
    Ok(Some(status))
}

/// Takes `records` of a settled chunk out of the sync's failed count because the chunk is being
/// processed after all; a sync that closed for such chunks reopens (`running`), its closing
/// uncounted on the integration, and closes again when the chunk's batch is done.
pub(crate) async fn reopen_for_processing(
    tx: &mut PgConnection,
    sync_log_id: Uuid,
    records: i64,
    batch_was_done: bool,
) -> Result<(), sqlx::Error> {
    let uncounted =
        db::sync_logs::uncount_settled_chunk(tx, sync_log_id, records, batch_was_done).await?;
    if let Some((integration_id, was, Some(synced))) = uncounted
        && !was.is_open()
    {
        db::sync_logs::uncount_closing(tx, integration_id, sync_log_id, was, synced).await?;
        tracing::info!(%sync_log_id, "sync reopened: a chunk it had failed is processed after all");
    }
    Ok(())
}

pub use db::sync_logs::SyncSummary;

/// Sync logs, newest first: only open ones with `open_only`, of one integration if given.
pub async fn list_syncs(
    pool: &PgPool,
    open_only: bool,
    integration: Option<Uuid>,
    limit: i64,
) -> anyhow::Result<Vec<SyncSummary>> {
    let mut tx = crate::db::system_tx(pool).await?;
    let syncs = db::sync_logs::list(&mut tx, open_only, integration, limit).await?;
    tx.commit().await?;
    Ok(syncs)
}

/// Why an operator's action on a sync was refused.
#[derive(Debug, thiserror::Error)]
pub enum SyncAdminError {
    #[error("no sync log {0}")]
    NotFound(Uuid),
    #[error("sync {id} is already closed ({status})")]
    NotOpen { id: Uuid, status: SyncStatus },
    #[error("sync {id} is still {status}; reprocess it once it has closed")]
    StillOpen { id: Uuid, status: SyncStatus },
    #[error(
        "the stored chunks of sync {0} were deleted by retention (`ingest.keep_chunks_days`); it cannot be replayed"
    )]
    ChunksDeleted(Uuid),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for SyncAdminError {
    fn from(e: sqlx::Error) -> Self {
        Self::Other(e.into())
    }
}

/// [`close_by_admin`] for an operator who names only the sync: finds its tenant, closes it.
pub async fn close_open_sync(
    pool: &PgPool,
    sync_log_id: Uuid,
    reason: &str,
) -> Result<SyncStatus, SyncAdminError> {
    let mut tx = crate::db::system_tx(pool).await?;
    let status = db::sync_logs::lock_status(&mut tx, sync_log_id)
        .await?
        .ok_or(SyncAdminError::NotFound(sync_log_id))?;
    let closed =
        close_by_admin(&mut tx, sync_log_id, reason)
            .await?
            .ok_or(SyncAdminError::NotOpen {
                id: sync_log_id,
                status,
            })?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(closed)
}
