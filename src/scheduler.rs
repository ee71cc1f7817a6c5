//! The scheduler: turns integration schedules into syncs, each tick exactly once however many
//! scheduler processes run, and closes syncs that n8n went silent on (the watchdog). It only
//! enqueues: a `TriggerSync` job asks n8n to start the workflow.
//!
//! Exactly once does not rest on leader election: the tick's row in
//! `integration_schedule_ticks` (primary key integration + tick time) is inserted in the
//! transaction that creates the sync and its job, under a lock on the integration's row, so a
//! second scheduler finds the tick taken and creates nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    db::{system_tx, tenant_tx},
    domain::{
        DataType, MissedTicks, OnRunning, SourceType, SyncMode, SyncTrigger,
        schedule::{self, Schedule},
    },
    tasks::{TriggerSync, ingest::job_tag},
};

#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    pub interval: Duration,
    /// A tick found later than this after it was due was missed.
    pub missed_grace: Duration,
    pub watchdog_timeout: Duration,
    pub trigger_max_attempts: i32,
}

impl SchedulerSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            interval: Duration::from_millis(config.scheduler.interval_ms.max(10)),
            missed_grace: Duration::from_secs(config.scheduler.missed_grace_secs),
            watchdog_timeout: Duration::from_secs(config.scheduler.watchdog_timeout_secs),
            trigger_max_attempts: config.n8n.trigger_attempts(),
        }
    }
}

/// What one scheduler round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub triggered: Vec<Uuid>,
    pub skipped_running: usize,
    pub skipped_missed: usize,
    pub timed_out: usize,
}

/// Runs rounds every `interval` until shutdown.
pub async fn run(pool: PgPool, settings: SchedulerSettings, shutdown: CancellationToken) {
    tracing::info!(
        interval_ms = settings.interval.as_millis() as u64,
        "scheduler started"
    );
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        match run_round(&pool, &settings, Utc::now()).await {
            Ok(report) if report != RoundReport::default() => {
                tracing::info!(
                    triggered = report.triggered.len(),
                    skipped_running = report.skipped_running,
                    skipped_missed = report.skipped_missed,
                    timed_out = report.timed_out,
                    "scheduler round"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "scheduler round failed; trying again next interval")
            }
        }
    }
    tracing::info!("scheduler stopped");
}

/// One round at `now`: every due tick of every active schedule, then the watchdog.
pub async fn run_round(
    pool: &PgPool,
    settings: &SchedulerSettings,
    now: DateTime<Utc>,
) -> anyhow::Result<RoundReport> {
    let mut report = RoundReport::default();
    let mut tx = system_tx(pool).await?;
    let candidates: Vec<(Uuid, Uuid, String, String, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT i.id, i.tenant_id, i.sync_schedule, i.sync_timezone, i.sync_jitter_secs,
                GREATEST(COALESCE(i.schedule_changed_at, i.created_at), t.last_tick)
         FROM integration_sources i
         LEFT JOIN LATERAL (SELECT max(tick_at) AS last_tick FROM integration_schedule_ticks
                            WHERE integration_id = i.id) t ON true
         WHERE i.sync_schedule IS NOT NULL AND i.status = 'active'",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    for (integration_id, tenant_id, expression, timezone, jitter_secs, anchor) in candidates {
        let schedule = match Schedule::parse(&expression, &timezone) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%integration_id, error = %e, "stored schedule is not valid; skipped");
                continue;
            }
        };
        let jitter = schedule::jitter(integration_id, jitter_secs.max(0) as u32);
        let due_until = now - chrono::Duration::from_std(jitter).unwrap_or_default();
        let Some(tick) = schedule.latest_tick(anchor, due_until) else {
            continue;
        };
        match fire(pool, settings, tenant_id, integration_id, tick, jitter, now).await {
            Ok(Some(Fired::Triggered(sync_log_id, _))) => report.triggered.push(sync_log_id),
            Ok(Some(Fired::SkippedRunning)) => report.skipped_running += 1,
            Ok(Some(Fired::SkippedMissed)) => report.skipped_missed += 1,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%integration_id, %tick, error = %format!("{e:#}"), "schedule tick failed; retried next round");
            }
        }
    }
    report.timed_out = watchdog(pool, settings.watchdog_timeout, now).await?;
    Ok(report)
}

enum Fired {
    /// The sync log and its trigger job.
    Triggered(Uuid, i64),
    SkippedRunning,
    SkippedMissed,
}

/// Settles one tick of one integration, unless another scheduler did (then `None`).
async fn fire(
    pool: &PgPool,
    settings: &SchedulerSettings,
    tenant_id: Uuid,
    integration_id: Uuid,
    tick: DateTime<Utc>,
    jitter: Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Fired>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    // The row lock orders racing schedulers per integration; the tick's primary key is what
    // makes a second insert of the same tick impossible.
    let Some(integration) = lock_integration(&mut tx, integration_id).await? else {
        return Ok(None);
    };
    if integration.sync_schedule.is_none() || integration.status != "active" {
        return Ok(None);
    }
    let last_tick: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(tick_at) FROM integration_schedule_ticks WHERE integration_id = $1",
    )
    .bind(integration_id)
    .fetch_one(&mut *tx)
    .await?;
    if last_tick.is_some_and(|last| last >= tick) {
        return Ok(None);
    }

    let due_at = tick + chrono::Duration::from_std(jitter).unwrap_or_default();
    let missed = (now - due_at).to_std().unwrap_or_default() > settings.missed_grace;
    let missed_policy: MissedTicks = integration.sync_missed_ticks.parse()?;
    let on_running: OnRunning = integration.sync_on_running.parse()?;

    let (outcome, detail, fired) = if missed && missed_policy == MissedTicks::Skip {
        (
            "skipped_missed",
            Some(format!(
                "the tick passed {} s before a scheduler saw it; the policy is to skip missed ticks",
                (now - due_at).num_seconds()
            )),
            Fired::SkippedMissed,
        )
    } else {
        let open = open_sync(&mut tx, integration_id).await?;
        match open {
            Some(open) if on_running == OnRunning::Skip => (
                "skipped_running",
                Some(format!("sync {open} was still open")),
                Fired::SkippedRunning,
            ),
            _ => {
                let request = SyncRequest {
                    trigger: SyncTrigger::Schedule,
                    sync_mode: None,
                    data_types: None,
                    scheduled_for: Some(tick),
                    retry_of: None,
                };
                let (sync_log_id, job_id) = create_sync(
                    &mut tx,
                    &integration,
                    &request,
                    settings.trigger_max_attempts,
                )
                .await?;
                ("triggered", None, Fired::Triggered(sync_log_id, job_id))
            }
        }
    };
    let (sync_log_id, job_id) = match &fired {
        Fired::Triggered(sync, job) => (Some(*sync), Some(*job)),
        _ => (None, None),
    };
    let inserted = sqlx::query(
        "INSERT INTO integration_schedule_ticks
             (tenant_id, integration_id, tick_at, outcome, sync_log_id, job_id, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (integration_id, tick_at) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(integration_id)
    .bind(tick)
    .bind(outcome)
    .bind(sync_log_id)
    .bind(job_id)
    .bind(detail.as_deref())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // Someone else settled this tick: undo the sync and job created above.
        tx.rollback().await?;
        return Ok(None);
    }
    tx.commit().await?;
    if let Some(id) = sync_log_id {
        tracing::info!(%integration_id, %tick, sync_log_id = %id, "scheduled sync triggered");
    } else {
        tracing::info!(%integration_id, %tick, outcome, detail = detail.as_deref().unwrap_or(""), "schedule tick skipped");
    }
    Ok(Some(fired))
}

/// The newest sync of the integration that is still pending or running.
async fn open_sync(
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
struct LockedIntegration {
    id: Uuid,
    tenant_id: Uuid,
    status: String,
    source_type: String,
    n8n_webhook_url: Option<String>,
    sync_schedule: Option<String>,
    sync_mode: String,
    sync_data_types: Vec<String>,
    sync_missed_ticks: String,
    sync_on_running: String,
}

/// The integration's row, locked until the transaction ends against schedulers and operators
/// starting a sync of it. `FOR NO KEY UPDATE`, not `FOR UPDATE`: chunks being written hold the
/// row `FOR KEY SHARE` and need not be waited for.
async fn lock_integration(
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
async fn create_sync(
    tx: &mut PgConnection,
    integration: &LockedIntegration,
    request: &SyncRequest,
    max_attempts: i32,
) -> anyhow::Result<(Uuid, i64)> {
    let (integration_id, tenant_id) = (integration.id, integration.tenant_id);
    let source_type: SourceType = integration.source_type.parse()?;
    let mode = match request.sync_mode {
        Some(m) => m,
        None => integration.sync_mode.parse()?,
    };
    let stored_types = &integration.sync_data_types;
    let data_types: Vec<DataType> = match &request.data_types {
        Some(types) if !types.is_empty() => types.clone(),
        _ if !stored_types.is_empty() => stored_types
            .iter()
            .map(|t| t.parse())
            .collect::<Result<_, _>>()?,
        _ => source_type.default_data_types().to_vec(),
    };
    let type_names: Vec<&str> = data_types.iter().map(|d| d.as_str()).collect();
    let single = (data_types.len() == 1).then(|| data_types[0].as_str());
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
    .bind(request.trigger.as_str())
    .bind(mode.as_str())
    .bind(single)
    .bind(&type_names)
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
    NotRetryable { id: Uuid, status: String },
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
    if integration.status == "paused" {
        return Err(SyncRequestError::Paused(integration_id));
    }
    if integration.n8n_webhook_url.is_none() {
        return Err(SyncRequestError::NoWebhookUrl(integration_id));
    }
    let mut request = request.clone();
    if let Some(previous) = request.retry_of {
        let found: Option<(String, String, Option<Vec<String>>)> = sqlx::query_as(
            "SELECT status, sync_mode, data_types FROM integration_sync_logs
             WHERE id = $1 AND integration_id = $2",
        )
        .bind(previous)
        .bind(integration_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (status, mode, types) = found.ok_or(SyncRequestError::RetryNotFound(previous))?;
        if !matches!(status.as_str(), "failed" | "partial") {
            return Err(SyncRequestError::NotRetryable {
                id: previous,
                status,
            });
        }
        request.trigger = SyncTrigger::Retry;
        if request.sync_mode.is_none() {
            request.sync_mode = Some(mode.parse().map_err(anyhow::Error::from)?);
        }
        if request.data_types.is_none() {
            request.data_types = types
                .map(|t| {
                    t.iter()
                        .map(|d| d.parse())
                        .collect::<Result<Vec<DataType>, _>>()
                })
                .transpose()
                .map_err(anyhow::Error::from)?;
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
    reason: &str,
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

/// Closes syncs that have had no delivery for `timeout` as failed (`timed_out`). Any number of
/// schedulers may run it at once: a sync is closed by whoever locks it first.
pub async fn watchdog(
    pool: &PgPool,
    timeout: Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let mut tx = system_tx(pool).await?;
    let silent: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT id, integration_id FROM integration_sync_logs
         WHERE status IN ('pending', 'running')
           AND COALESCE(last_batch_at, created_at) < $1 - $2 * interval '1 second'
         ORDER BY COALESCE(last_batch_at, created_at)
         LIMIT 1000
         FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .bind(timeout.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    let summary = format!(
        "no batch was delivered for {} s; closed by the watchdog (batches that still arrive are stored, processed and counted as late)",
        timeout.as_secs()
    );
    let mut closed = 0;
    for (sync_log_id, integration_id) in &silent {
        if fail_sync(&mut tx, *sync_log_id, "timed_out", &summary, now).await? {
            closed += 1;
            tracing::warn!(%sync_log_id, %integration_id, "sync timed out: n8n delivered nothing for too long");
        }
    }
    tx.commit().await?;
    Ok(closed)
}
