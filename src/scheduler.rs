//! The scheduler: turns integration schedules into syncs, each tick exactly once however many
//! scheduler processes run, closes syncs that n8n went silent on (the watchdog), and settles
//! the chunks of dead jobs (`sync::chunk`). It only enqueues work: a `TriggerSync` job asks n8n
//! to start the workflow.
//!
//! Exactly once does not rest on leader election: the tick's row in
//! `integration_schedule_ticks` (primary key integration + tick time) is inserted in the
//! transaction that creates the sync and its job, under a lock on the integration's row, so a
//! second scheduler finds the tick taken and creates nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    db::{self, system_tx, tenant_tx},
    domain::{
        DataType, FailureReason, IntegrationStatus, MissedTicks, OnRunning, SyncTrigger,
        TickOutcome,
        schedule::{self, Schedule},
    },
    sync::{SyncRequest, create_sync, fail_sync, lock_integration, open_sync},
    telemetry::metrics,
};

#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    pub interval: Duration,
    /// A tick found later than this after it was due was missed.
    pub missed_grace: Duration,
    pub watchdog_timeout: Duration,
    pub trigger_max_attempts: i32,
    /// The queue trigger jobs are enqueued on.
    pub queue: jobs::Queue,
}

impl SchedulerSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            interval: Duration::from_millis(config.scheduler.interval_ms.max(10)),
            missed_grace: Duration::from_secs(config.scheduler.missed_grace_secs),
            watchdog_timeout: Duration::from_secs(config.scheduler.watchdog_timeout_secs),
            trigger_max_attempts: config.n8n.trigger_attempts(),
            queue: config.jobs.queue(),
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
    /// Chunks of dead jobs settled as failed.
    pub chunks_settled: u64,
}

/// Runs rounds every `interval` until shutdown.
pub async fn run(pool: PgPool, settings: SchedulerSettings, shutdown: CancellationToken) {
    tracing::info!(
        scheduler.interval_ms = settings.interval.as_millis() as u64,
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
                    round.triggered = report.triggered.len(),
                    round.skipped_running = report.skipped_running,
                    round.skipped_missed = report.skipped_missed,
                    round.timed_out = report.timed_out,
                    round.chunks_settled = report.chunks_settled,
                    "scheduler round"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error.message = %format!("{e:#}"), "scheduler round failed; trying again next interval")
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
    let candidates = db::integrations::scheduled(&mut tx).await?;
    tx.commit().await?;

    for candidate in candidates {
        let integration_id = candidate.id;
        let schedule = match Schedule::parse(&candidate.schedule, &candidate.timezone) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(integration.id = %integration_id, error.message = %e, "stored schedule is not valid; skipped");
                continue;
            }
        };
        let jitter = schedule::jitter(integration_id, candidate.jitter_secs.max(0) as u32);
        let due_until = now - chrono::Duration::from_std(jitter).unwrap_or_default();
        let Some(tick) = schedule.latest_tick(candidate.anchor, due_until) else {
            continue;
        };
        match fire(
            pool,
            settings,
            candidate.tenant_id,
            integration_id,
            tick,
            jitter,
            now,
        )
        .await
        {
            Ok(Some(Fired::Triggered(sync_log_id, _))) => report.triggered.push(sync_log_id),
            Ok(Some(Fired::SkippedRunning)) => report.skipped_running += 1,
            Ok(Some(Fired::SkippedMissed)) => report.skipped_missed += 1,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(integration.id = %integration_id, schedule.tick = %tick, error.message = %format!("{e:#}"), "schedule tick failed; retried next round");
            }
        }
    }
    report.timed_out = watchdog(pool, settings.watchdog_timeout, now).await?;
    report.chunks_settled = crate::sync::chunk::settle_dead_chunks(pool, &settings.queue).await?;
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
    if integration.sync_schedule.is_none() || integration.status != IntegrationStatus::Active {
        return Ok(None);
    }
    let last_tick = db::schedule_ticks::last_tick(&mut tx, integration_id).await?;
    if last_tick.is_some_and(|last| last >= tick) {
        return Ok(None);
    }

    let due_at = tick + chrono::Duration::from_std(jitter).unwrap_or_default();
    let missed = (now - due_at).to_std().unwrap_or_default() > settings.missed_grace;
    let (missed_policy, on_running) = (integration.sync_missed_ticks, integration.sync_on_running);

    let (outcome, detail, fired) = if missed && missed_policy == MissedTicks::Skip {
        (
            TickOutcome::SkippedMissed,
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
                TickOutcome::SkippedRunning,
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
                    &settings.queue,
                    &integration,
                    &request,
                    settings.trigger_max_attempts,
                )
                .await?;
                (
                    TickOutcome::Triggered,
                    None,
                    Fired::Triggered(sync_log_id, job_id),
                )
            }
        }
    };
    let (sync_log_id, job_id) = match &fired {
        Fired::Triggered(sync, job) => (Some(*sync), Some(*job)),
        _ => (None, None),
    };
    let tick_row = db::schedule_ticks::SettledTick {
        tenant_id,
        integration_id,
        tick_at: tick,
        outcome,
        sync_log_id,
        job_id,
        detail: detail.as_deref(),
    };
    let inserted = db::schedule_ticks::insert(&mut tx, &tick_row).await?;
    if !inserted {
        // Someone else settled this tick: undo the sync and job created above.
        tx.rollback().await?;
        return Ok(None);
    }
    tx.commit().await?;
    let lag = (Utc::now() - due_at).to_std().unwrap_or_default();
    if let Some(id) = sync_log_id {
        metrics::sync_started(SyncTrigger::Schedule.as_str());
        metrics::scheduler_tick("triggered", lag);
        tracing::info!(integration.id = %integration_id, schedule.tick = %tick, sync.id = %id, "scheduled sync triggered");
    } else {
        metrics::scheduler_tick("skipped", lag);
        tracing::info!(integration.id = %integration_id, schedule.tick = %tick, schedule.outcome = %outcome, schedule.detail = detail.as_deref().unwrap_or(""), "schedule tick skipped");
    }
    Ok(Some(fired))
}

/// Closes syncs that have had no delivery for `timeout` as failed (`timed_out`). Any number of
/// schedulers may run it at once: a sync is closed by whoever locks it first.
pub async fn watchdog(
    pool: &PgPool,
    timeout: Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let mut tx = system_tx(pool).await?;
    let cutoff = now - chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
    let silent = crate::db::sync_logs::silent_since(&mut tx, cutoff).await?;
    let mut closed = 0;
    for crate::db::sync_logs::Silent {
        id: sync_log_id,
        integration_id,
        missing,
    } in silent
    {
        let waiting = if missing.is_empty() {
            String::new()
        } else {
            format!(
                " while waiting for the final batch of {}",
                DataType::list(&missing)
            )
        };
        let summary = format!(
            "no batch was delivered for {} s{waiting}; closed by the watchdog (batches that still arrive are stored, processed and counted as late)",
            timeout.as_secs()
        );
        if fail_sync(&mut tx, sync_log_id, FailureReason::TimedOut, &summary, now).await? {
            metrics::watchdog_closed();
            closed += 1;
            tracing::warn!(sync.id = %sync_log_id, integration.id = %integration_id, sync.missing = ?missing, "sync timed out: n8n delivered nothing for too long");
        }
    }
    tx.commit().await?;
    Ok(closed)
}
