//! Maintenance, run by one elected leader among any number of processes: promoting due jobs,
//! rescuing the jobs of dead workers, pruning finished jobs, and enqueueing periodic (cron) jobs.

use std::{str::FromStr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    Error,
    metrics::Sampler,
    {enqueue::NewJob, queue::Queue},
};

#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// How often the leader runs its duties (and others try to become leader).
    pub interval: Duration,
    /// A leader that has not renewed for this long is replaced. The leader renews every
    /// `interval` on a timer of its own (slow duties do not delay it), so a lease of a few
    /// intervals hands over soon after a leader dies: a candidate takes over once the leader
    /// missed about `lease / interval` renewals.
    pub lease: Duration,
    /// A worker whose heartbeat is older than this is dead; its running jobs are rescued. An
    /// attempt running longer than its timeout plus this is rescued too, however alive its
    /// worker: the worker stops an attempt at its timeout, so such an attempt's outcome was lost.
    pub stale_after: Duration,
    /// The timeout of jobs that carry none (`WorkerConfig::default_timeout`).
    pub default_timeout: Duration,
    pub keep_completed: Duration,
    pub keep_failed: Duration,
    /// Pruning scans the table (no index serves it, on purpose), so it runs this seldom.
    pub prune_every: Duration,
    /// Most rows one maintenance statement touches, so no statement holds locks for long.
    pub batch: i64,
    /// The queue whose workers promoted and periodic jobs wake.
    pub queue: Queue,
    /// How often the leader samples the queue's gauges (see `metrics`) and runs the samplers.
    pub sample_every: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            lease: Duration::from_secs(3),
            stale_after: Duration::from_secs(20),
            default_timeout: Duration::from_secs(300),
            keep_completed: Duration::from_secs(24 * 3600),
            keep_failed: Duration::from_secs(7 * 24 * 3600),
            prune_every: Duration::from_secs(60),
            batch: 10_000,
            queue: Queue::default(),
            sample_every: Duration::from_secs(15),
        }
    }
}

/// How late a tick may be enqueued and still count as on time.
const MISSED_GRACE: Duration = Duration::from_secs(60);

/// What to do with ticks that passed while nothing ran. Either way, several missed ticks never
/// produce several jobs. The one policy of every schedule: the engine's periodic jobs and the
/// application's integration schedules (which store it as text: `skip`, `run_latest`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum MissedTicks {
    /// Forget them; only a tick that is due now runs.
    Skip,
    /// Run once, for the latest missed tick.
    RunLatest,
}

impl MissedTicks {
    pub const ALL: &'static [MissedTicks] = &[MissedTicks::Skip, MissedTicks::RunLatest];

    pub fn as_str(self) -> &'static str {
        match self {
            MissedTicks::Skip => "skip",
            MissedTicks::RunLatest => "run_latest",
        }
    }
}

impl std::fmt::Display for MissedTicks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that is not a missed-tick policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown missed-tick policy `{0}`; expected one of: skip, run_latest")]
pub struct UnknownMissedTicks(pub String);

impl std::str::FromStr for MissedTicks {
    type Err = UnknownMissedTicks;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MissedTicks::ALL
            .iter()
            .copied()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMissedTicks(s.to_string()))
    }
}

// Stored as its text, like the application's other vocabularies.
impl sqlx::Type<sqlx::Postgres> for MissedTicks {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for MissedTicks {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(<&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?.parse()?)
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for MissedTicks {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
    }
}

/// A job enqueued on a cron schedule.
#[derive(Clone)]
pub struct Periodic {
    pub name: String,
    pub schedule: cron::Schedule,
    pub missed: MissedTicks,
    /// Builds the job for one tick.
    pub make: Arc<dyn Fn(DateTime<Utc>) -> NewJob + Send + Sync>,
}

impl std::fmt::Debug for Periodic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Periodic")
            .field("name", &self.name)
            .field("schedule", &self.schedule.to_string())
            .field("missed", &self.missed)
            .finish()
    }
}

impl Periodic {
    /// `expression` is in the `cron` crate's syntax: seconds first (6 or 7 fields).
    pub fn new(
        name: impl Into<String>,
        expression: &str,
        missed: MissedTicks,
        make: impl Fn(DateTime<Utc>) -> NewJob + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let schedule = cron::Schedule::from_str(expression)
            .map_err(|e| Error::Schedule(format!("`{expression}`: {e}")))?;
        Ok(Self {
            name: name.into(),
            schedule,
            missed,
            make: Arc::new(make),
        })
    }

    /// The latest tick at or before `now`.
    fn latest_tick(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // `after` is exclusive: start just past `now` and step back once.
        self.schedule
            .after(&(now + chrono::Duration::milliseconds(1)))
            .next_back()
    }
}

/// Leader election and the leader's duties, for one process.
pub struct Maintenance {
    pool: PgPool,
    config: MaintenanceConfig,
    periodic: Vec<Periodic>,
    samplers: Vec<Box<dyn Sampler>>,
    id: String,
}

impl Maintenance {
    pub fn new(pool: PgPool, config: MaintenanceConfig, periodic: Vec<Periodic>) -> Self {
        Self {
            pool,
            config,
            periodic,
            samplers: Vec::new(),
            id: crate::worker::new_worker_id(),
        }
    }

    /// Adds what the leader samples, every `sample_every`, besides the engine's own gauges.
    pub fn with_sampler(mut self, sampler: impl Sampler + 'static) -> Self {
        self.samplers.push(Box::new(sampler));
        self
    }

    /// Samples the engine's gauges and runs the samplers once.
    pub async fn sample(&self) -> Result<(), Error> {
        crate::metrics::sample(&self.pool, &self.config.queue).await?;
        for sampler in &self.samplers {
            sampler.sample(&self.pool).await?;
        }
        Ok(())
    }

    fn clear_samples(&self) {
        crate::metrics::clear_samples();
        for sampler in &self.samplers {
            sampler.clear();
        }
    }

    /// Competes for leadership every interval and, while leader, runs the duties; gives the
    /// lease up on shutdown so another process takes over at once.
    pub async fn run(self, shutdown: CancellationToken) {
        // The election runs beside the duties, not between them: a round of duties slower
        // than the lease (a big rescue, a locked table) must not hand the lead to another
        // process, or the lease would have to be long and a dead leader's successor slow.
        let (leading_tx, mut leading_rx) = tokio::sync::watch::channel(false);
        let stop_electing = CancellationToken::new();
        // Also when this future is dropped unfinished: no election may outlive its participant.
        let _stop_electing_on_drop = stop_electing.clone().drop_guard();
        let election = tokio::spawn(elect(
            self.pool.clone(),
            self.config.queue.clone(),
            self.id.clone(),
            self.config.interval,
            self.config.lease,
            leading_tx,
            stop_electing.clone(),
        ));
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading = false;
        let mut last_prune: Option<std::time::Instant> = None;
        let mut last_sample: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
                // Duties start as soon as the lead is won, not at the next tick.
                changed = leading_rx.changed() => if changed.is_err() { break },
            }
            let now_leading = *leading_rx.borrow_and_update();
            if now_leading != leading {
                tracing::info!(maintenance.id = %self.id, maintenance.leader = now_leading, "job maintenance leadership changed");
                leading = now_leading;
                if !leading {
                    self.clear_samples();
                    last_sample = None;
                }
            }
            if !leading {
                continue;
            }
            if last_sample.is_none_or(|at| at.elapsed() >= self.config.sample_every) {
                last_sample = Some(std::time::Instant::now());
                if let Err(e) = self.sample().await {
                    tracing::warn!(error.message = %e, "sampling the queue's gauges failed; trying again next interval");
                }
            }
            if let Err(e) = self.run_duties(Utc::now()).await {
                tracing::warn!(error.message = %e, "job maintenance failed; trying again next interval");
            }
            if last_prune.is_none_or(|at| at.elapsed() >= self.config.prune_every) {
                last_prune = Some(std::time::Instant::now());
                match prune(&self.pool, &self.config).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(jobs.count = n, "pruned finished jobs past their retention")
                    }
                    Err(e) => tracing::warn!(error.message = %e, "pruning finished jobs failed"),
                }
            }
        }
        stop_electing.cancel();
        let _ = election.await;
        if leading {
            self.clear_samples();
        }
        // Whether or not this process believed it led: the lease it may hold goes at once.
        let _ = sqlx::query(
            self.config
                .queue
                .sql("DELETE FROM {job_leader} WHERE name = 'maintenance' AND leader_id = $1"),
        )
        .bind(&self.id)
        .execute(&self.pool)
        .await;
    }

    /// One round of the leader's frequent duties, at `now` for the periodic schedules.
    pub async fn run_duties(&self, now: DateTime<Utc>) -> Result<(), Error> {
        rescue_stale(
            &self.pool,
            &self.config.queue,
            self.config.stale_after,
            self.config.default_timeout,
        )
        .await?;
        promote_due(&self.pool, &self.config.queue, self.config.batch).await?;
        for periodic in &self.periodic {
            enqueue_due_tick(&self.pool, &self.config.queue, periodic, now).await?;
        }
        Ok(())
    }
}

/// Takes or renews the lease every `interval` and publishes whether this process leads. A
/// failed attempt counts as not leading: the lease may lapse meanwhile, and two leaders at once
/// are safe (every duty is idempotent or a compare-and-set) but wasteful.
async fn elect(
    pool: PgPool,
    queue: Queue,
    id: String,
    interval: Duration,
    lease: Duration,
    leading: tokio::sync::watch::Sender<bool>,
    stop: CancellationToken,
) {
    // A lease shorter than two renewals would lapse between them.
    let lease = lease.max(interval * 2);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        // An answer later than the lease may describe a lease already taken over.
        let now_leading =
            match tokio::time::timeout(lease, try_lead(&pool, &queue, &id, lease)).await {
                Ok(Ok(now_leading)) => now_leading,
                Ok(Err(e)) => {
                    tracing::warn!(error.message = %e, "leader election failed");
                    false
                }
                Err(_) => {
                    tracing::warn!(
                        maintenance.lease_ms = lease.as_millis() as u64,
                        "leader election got no answer within the lease"
                    );
                    false
                }
            };
        leading.send_if_modified(|was| std::mem::replace(was, now_leading) != now_leading);
    }
}

/// Takes or renews the leader lease; true while this process holds it.
pub(crate) async fn try_lead(
    pool: &PgPool,
    queue: &Queue,
    id: &str,
    lease: Duration,
) -> Result<bool, Error> {
    let leader: Option<String> = sqlx::query_scalar(queue.sql(
        "INSERT INTO {job_leader} AS l (name, leader_id, expires_at)
         VALUES ('maintenance', $1, now() + $2 * interval '1 millisecond')
         ON CONFLICT (name) DO UPDATE
             SET leader_id = excluded.leader_id,
                 expires_at = excluded.expires_at,
                 elected_at = CASE WHEN l.leader_id = excluded.leader_id
                                   THEN l.elected_at ELSE now() END
             WHERE l.leader_id = excluded.leader_id OR l.expires_at < now()
         RETURNING leader_id",
    ))
    .bind(id)
    .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .fetch_optional(pool)
    .await?;
    Ok(leader.as_deref() == Some(id))
}

/// Scheduled and retryable jobs whose time has come become available; their queues are woken.
pub(crate) async fn promote_due(pool: &PgPool, queue: &Queue, batch: i64) -> Result<u64, Error> {
    let queues: Vec<String> = sqlx::query_scalar(queue.sql(
        "WITH due AS (
             SELECT id FROM {jobs}
             WHERE state IN ('scheduled', 'retryable') AND scheduled_at <= now()
             ORDER BY scheduled_at LIMIT $1
             FOR UPDATE SKIP LOCKED
         ), promoted AS (
             UPDATE {jobs} SET state = 'available' FROM due WHERE jobs.id = due.id
             RETURNING jobs.queue
         )
         SELECT DISTINCT queue FROM promoted",
    ))
    .bind(batch)
    .fetch_all(pool)
    .await?;
    for name in &queues {
        queue.notify_now(pool, name).await?;
    }
    Ok(queues.len() as u64)
}

/// Running jobs of workers that stopped heartbeating (or deregistered without finishing them),
/// and attempts that outlived their lease (timeout plus `stale_after`) on a live worker, go back
/// to retryable, or to failed at their last attempt. Fenced on `state = 'running'` in the same
/// statement, so a completion that wins the row lock is never undone.
pub async fn rescue_stale(
    pool: &PgPool,
    queue: &Queue,
    stale_after: Duration,
    default_timeout: Duration,
) -> Result<u64, Error> {
    let stale_ms = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
    let timeout_ms = i64::try_from(default_timeout.as_millis()).unwrap_or(i64::MAX);
    let rescued = sqlx::query(queue.sql(
        "WITH lost AS (
             SELECT id, attempted_at < now() - (COALESCE(timeout_ms, $2) + $1) * interval '1 millisecond'
                        AS lease_ended
             FROM {jobs}
             WHERE state = 'running' AND attempted_by IS NOT NULL
               AND attempted_at < now() - $1 * interval '1 millisecond'
               AND (NOT EXISTS (SELECT 1 FROM {job_workers} w
                                WHERE w.id = jobs.attempted_by
                                  AND w.heartbeat_at >= now() - $1 * interval '1 millisecond')
                    OR attempted_at < now() - (COALESCE(timeout_ms, $2) + $1) * interval '1 millisecond')
             FOR UPDATE SKIP LOCKED)
         UPDATE {jobs} SET
             state = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'retryable' END,
             scheduled_at = now(),
             finalized_at = CASE WHEN attempt >= max_attempts THEN now() END,
             errors = errors || jsonb_build_array(jsonb_build_object(
                 'attempt', attempt, 'at', now(),
                 'error', CASE WHEN lost.lease_ended
                     THEN 'the attempt on ' || coalesce(attempted_by, '?')
                          || ' outlived its timeout and lease without an outcome; job rescued'
                     ELSE 'worker ' || coalesce(attempted_by, '?') || ' stopped heartbeating; job rescued'
                     END))
         FROM lost WHERE jobs.id = lost.id AND jobs.state = 'running'",
    ))
    .bind(stale_ms)
    .bind(timeout_ms)
    .execute(pool)
    .await?
    .rows_affected();
    sqlx::query(queue.sql(
        "DELETE FROM {job_workers} WHERE heartbeat_at < now() - $1 * interval '1 millisecond'",
    ))
    .bind(stale_ms)
    .execute(pool)
    .await?;
    crate::metrics::rescued(rescued);
    if rescued > 0 {
        tracing::warn!(
            jobs.count = rescued,
            "rescued jobs of workers that stopped heartbeating"
        );
    }
    Ok(rescued)
}

/// Deletes completed jobs older than their retention, and failed or cancelled ones older than
/// theirs, a batch at a time.
pub async fn prune(pool: &PgPool, config: &MaintenanceConfig) -> Result<u64, Error> {
    let mut total = 0;
    for (states, keep) in [
        (&["completed"][..], config.keep_completed),
        (&["failed", "cancelled"][..], config.keep_failed),
    ] {
        let deleted = sqlx::query(config.queue.sql(
            "DELETE FROM {jobs} WHERE id IN (
                 SELECT id FROM {jobs}
                 WHERE state = ANY($1) AND finalized_at < now() - $2 * interval '1 millisecond'
                 LIMIT $3)",
        ))
        .bind(states)
        .bind(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
        .bind(config.batch)
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
    }
    Ok(total)
}

/// Enqueues the job of the schedule's latest tick at or before `now`, unless that tick (or a later
/// one) was enqueued already. Advancing `job_schedules.last_tick` and inserting the job share one
/// transaction and the advance is a compare-and-set, so racing leaders produce one job per tick.
/// Returns the tick enqueued, if any.
pub async fn enqueue_due_tick(
    pool: &PgPool,
    queue: &Queue,
    periodic: &Periodic,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, Error> {
    let Some(tick) = periodic.latest_tick(now) else {
        return Ok(None);
    };
    let mut tx = pool.begin().await?;
    let last: Option<DateTime<Utc>> = sqlx::query_scalar(
        queue.sql("SELECT last_tick FROM {job_schedules} WHERE name = $1 FOR UPDATE"),
    )
    .bind(&periodic.name)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(last) = last else {
        // A new schedule starts from now: ticks before it existed are not missed ticks.
        sqlx::query(queue.sql(
            "INSERT INTO {job_schedules} (name, last_tick) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        ))
        .bind(&periodic.name)
        .bind(tick)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(None);
    };
    if tick <= last {
        return Ok(None);
    }
    // A tick that passed more than the grace ago passed while nothing ran: it was missed.
    let missed = (now - tick).to_std().unwrap_or_default() > MISSED_GRACE;
    let run = !missed || periodic.missed == MissedTicks::RunLatest;
    sqlx::query(
        queue.sql("UPDATE {job_schedules} SET last_tick = $2, updated_at = now() WHERE name = $1"),
    )
    .bind(&periodic.name)
    .bind(tick)
    .execute(&mut *tx)
    .await?;
    if run {
        let job = (periodic.make)(tick).unique_key(format!(
            "periodic:{}:{}",
            periodic.name,
            tick.to_rfc3339()
        ));
        queue.enqueue(&mut tx, &job).await?;
    }
    tx.commit().await?;
    Ok(run.then_some(tick))
}
