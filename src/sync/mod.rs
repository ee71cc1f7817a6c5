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
        DataType, FailureReason, IntegrationStatus, SweepState, SyncMode, SyncStatus, SyncTrigger,
        sweep::{skipped_reason, sweep_allowed},
    },
    telemetry::metrics,
};
pub use db::sync_logs::reopen_untriggered;
pub(crate) use db::{
    integrations::{LockedIntegration, lock_for_sync as lock_integration},
    sync_logs::open_of_integration as open_sync,
};
pub use kinds::{FinalizeSync, INGEST_QUEUE, ProcessChunk, RunRetention, TriggerSync, job_tag};

/// Closes a pending or running sync as failed with a machine-readable reason, and counts it on
/// the integration and in the metrics. False when the sync was already closed.
pub async fn fail_sync(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    reason: FailureReason,
    summary: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let failed = db::sync_logs::fail_sync(conn, sync_log_id, reason, summary, now).await?;
    if let Some(failed) = &failed {
        metrics::sync_closed(
            SyncStatus::Failed.as_str(),
            &failed.source_type,
            millis(failed.open_ms),
        );
    }
    Ok(failed.is_some())
}

fn millis(ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis(ms.max(0) as u64)
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

/// Creates a pending sync log and its `TriggerSync` job in the caller's (tenant) transaction,
/// which holds the integration's row. Returns the sync log id and the job id.
pub(crate) async fn create_sync(
    tx: &mut PgConnection,
    queue: &jobs::Queue,
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
    // The id is made here so the job (which names the sync) and the sync log (which names its
    // job) are each written once, in the same transaction.
    let sync_log_id = Uuid::new_v4();
    let job = jobs::NewJob::new(&TriggerSync {
        tenant_id,
        integration_id,
        sync_log_id,
        request_id: crate::telemetry::request_id(),
    })?
    .max_attempts(max_attempts)
    .unique_key(format!("trigger:{sync_log_id}"))
    .tag(job_tag(tenant_id, integration_id));
    let job_id = queue.enqueue(&mut *tx, &job).await?;
    db::sync_logs::insert_pending(
        tx,
        sync_log_id,
        tenant_id,
        integration_id,
        request.trigger,
        mode,
        &data_types,
        request.scheduled_for,
        job_id,
    )
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
/// `tenant_id`: the caller's tenant (another tenant's integration is `NotFound`); `None`: the
/// install's operator.
pub async fn request_sync(
    pool: &PgPool,
    queue: &jobs::Queue,
    tenant_id: Option<Uuid>,
    integration_id: Uuid,
    request: &SyncRequest,
    force: bool,
    max_attempts: i32,
) -> Result<(Uuid, i64), SyncRequestError> {
    let tenant_id = match tenant_id {
        Some(tenant_id) => tenant_id,
        None => {
            let mut tx = db::system_tx(pool).await?;
            let found = db::integrations::by_id(&mut tx, integration_id).await?;
            tx.commit().await.map_err(anyhow::Error::from)?;
            found
                .ok_or(SyncRequestError::NotFound(integration_id))?
                .tenant_id
        }
    };
    let mut tx = tenant_tx(pool, tenant_id).await?;
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
        let found = db::sync_logs::retry_source(&mut tx, previous, integration_id).await?;
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
    let created = create_sync(&mut tx, queue, &integration, &request, max_attempts).await?;
    tx.commit().await?;
    metrics::sync_started(request.trigger.as_str());
    Ok(created)
}

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
    let Some(closed) = db::sync_logs::close(tx, sync_log_id, by_admin).await? else {
        return Ok(None);
    };
    let (integration_id, status) = (closed.integration_id, closed.status);
    // A replay re-ran old deliveries and an operator's close ends a sync whatever it lacked:
    // neither says the source was read up to the sync's start.
    let completed = by_admin.is_none() && closed.trigger != SyncTrigger::Replay;
    if completed && matches!(status, SyncStatus::Success | SyncStatus::Partial) {
        let moved = db::cursors::advance_for_sync(tx, sync_log_id).await?;
        tracing::debug!(sync.id = %sync_log_id, cursors.moved = ?moved, "cursors advanced");
    }
    if completed && status == SyncStatus::Success && closed.sync_mode == SyncMode::Full {
        sweep(tx, sync_log_id, integration_id, closed.start_at).await?;
    }
    db::sync_logs::count_closing(tx, integration_id, sync_log_id, status, closed.synced).await?;
    metrics::sync_closed(status.as_str(), &closed.source_type, millis(closed.open_ms));
    tracing::info!(sync.id = %sync_log_id, integration.id = %integration_id, sync.status = %status, "sync closed");
    Ok(Some(status))
}

/// The full sync's sweep of each data type it delivered: soft-deletes the rows it did not see,
/// unless it saw fewer than the integration's `sweep_min_seen_percent` of the live ones; either
/// way the decision is recorded in `integration_sync_sweeps`.
async fn sweep(
    tx: &mut PgConnection,
    sync_log_id: Uuid,
    integration_id: Uuid,
    since: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let min_percent = db::integrations::sweep_min_seen_percent(tx, integration_id).await?;
    for data_type in db::batches::data_types_of_sync(tx, sync_log_id).await? {
        let (live, seen) =
            db::external_rows::live_and_seen(tx, data_type, integration_id, since).await?;
        let (state, deleted, reason) = if sweep_allowed(live, seen, min_percent) {
            let deleted =
                db::external_rows::sweep_unseen(tx, data_type, integration_id, since).await?;
            (SweepState::Applied, deleted as i64, None)
        } else {
            tracing::warn!(sync.id = %sync_log_id, integration.id = %integration_id, sweep.data_type = %data_type, sweep.live = live, sweep.seen = seen, "sweep skipped: the full sync saw too few rows");
            let reason = skipped_reason(live, seen, min_percent);
            (SweepState::Skipped, 0, Some(reason))
        };
        db::sweeps::record(
            tx,
            sync_log_id,
            data_type,
            (live, seen, deleted),
            state,
            reason.as_deref(),
        )
        .await?;
    }
    Ok(())
}

/// Applies the sweeps a full sync skipped (it saw too few rows), on an operator's word: the
/// rows of each such data type that no delivery wrote or saw since the sync started are
/// soft-deleted now. Returns every sweep of the sync as it then stands.
pub async fn apply_skipped_sweeps(
    pool: &PgPool,
    sync_log_id: Uuid,
    by: &str,
) -> Result<Vec<db::sweeps::Sweep>, SyncAdminError> {
    let mut tx = crate::db::system_tx(pool).await?;
    let mut sweeps = db::sweeps::of_sync_locked(&mut tx, sync_log_id).await?;
    if !sweeps.iter().any(|s| s.state == SweepState::Skipped) {
        db::sync_logs::lock_status(&mut tx, sync_log_id)
            .await?
            .ok_or(SyncAdminError::NotFound(sync_log_id))?;
        return Err(SyncAdminError::NoSkippedSweep(sync_log_id));
    }
    let (integration_id, since) = db::sync_logs::integration_and_start(&mut tx, sync_log_id)
        .await?
        .ok_or(SyncAdminError::NotFound(sync_log_id))?;
    for sweep in sweeps.iter_mut().filter(|s| s.state == SweepState::Skipped) {
        let deleted =
            db::external_rows::sweep_unseen(&mut tx, sweep.data_type, integration_id, since)
                .await?;
        *sweep =
            db::sweeps::mark_applied(&mut tx, sync_log_id, sweep.data_type, deleted as i64, by)
                .await?;
        tracing::info!(sync.id = %sync_log_id, sweep.data_type = %sweep.data_type, sweep.deleted = deleted, "skipped sweep applied by an operator");
    }
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(sweeps)
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
    if let Some(db::sync_logs::Uncounted {
        integration_id,
        status: was,
        reopened_synced: Some(synced),
    }) = uncounted
        && !was.is_open()
    {
        db::sync_logs::uncount_closing(tx, integration_id, sync_log_id, was, synced).await?;
        tracing::info!(sync.id = %sync_log_id, "sync reopened: a chunk it had failed is processed after all");
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

/// The tenant of a sync log, for an operator who names only the sync.
pub async fn tenant_of_sync(pool: &PgPool, sync_log_id: Uuid) -> anyhow::Result<Option<Uuid>> {
    let mut tx = crate::db::system_tx(pool).await?;
    let tenant = db::sync_logs::tenant_of(&mut tx, sync_log_id).await?;
    tx.commit().await?;
    Ok(tenant)
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
    #[error("sync {0} skipped no sweep; there is nothing to apply")]
    NoSkippedSweep(Uuid),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for SyncAdminError {
    fn from(e: sqlx::Error) -> Self {
        Self::Other(e.into())
    }
}

/// [`close_by_admin`] for a caller who names only the sync: of `tenant_id` (another tenant's
/// sync is `NotFound`), or of any tenant for the install's operator (`None`).
pub async fn close_open_sync(
    pool: &PgPool,
    tenant_id: Option<Uuid>,
    sync_log_id: Uuid,
    reason: &str,
) -> Result<SyncStatus, SyncAdminError> {
    let mut tx = crate::db::scoped_tx(pool, tenant_id).await?;
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

/// The `syncbridge_syncs_open` gauge (pending or running syncs by source type), sampled by the
/// queue's maintenance leader so N processes do not each count them.
pub struct OpenSyncs;

static OPEN_SYNCS: jobs::metrics::SampledGauge =
    jobs::metrics::SampledGauge::new(metrics::SYNCS_OPEN);

impl jobs::metrics::Sampler for OpenSyncs {
    fn sample<'a>(
        &'a self,
        pool: &'a PgPool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), jobs::Error>> + Send + 'a>>
    {
        Box::pin(async move {
            let open = db::sync_logs::open_by_source_type(pool).await?;
            OPEN_SYNCS.set_all(
                open.into_iter()
                    .map(|(source_type, n)| (vec![("source_type", source_type)], n as f64))
                    .collect(),
            );
            Ok(())
        })
    }

    fn clear(&self) {
        OPEN_SYNCS.clear();
    }
}
