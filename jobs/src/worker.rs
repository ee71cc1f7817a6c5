//! The worker: registers itself, claims jobs in batches, runs them within per-queue limits,
//! completes them in batches, records failures with their next attempt time, heartbeats, and on
//! shutdown drains within a deadline and releases what is left.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::{
    PgPool,
    postgres::{PgListener, PgPoolOptions},
};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    Error,
    backoff::Backoff,
    job::{JobError, JobMeta},
    metrics::{self, Finished},
    queue::Queue,
    registry::{Handler, Registry},
};

/// How a worker behaves; the defaults suit production.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Most jobs claimed by one query.
    pub fetch_batch: usize,
    /// The fallback poll when no notification arrives.
    pub poll_interval: Duration,
    pub heartbeat_interval: Duration,
    /// Time an attempt may take when its job set none.
    pub default_timeout: Duration,
    /// Running jobs get this long to finish on shutdown before they are released.
    pub shutdown_deadline: Duration,
    /// Most completions written by one statement.
    pub completion_batch: usize,
    pub backoff: Backoff,
    /// How long writing an attempt's outcome (completion, failure, release) is retried while the
    /// database does not answer. An outcome still unwritten then is left to the rescuer: the
    /// attempt's lease (its timeout plus `MaintenanceConfig::stale_after`) runs out.
    pub settle_for: Duration,
    /// The queue whose channel the worker LISTENs on.
    pub queue: Queue,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            fetch_batch: 200,
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(5),
            default_timeout: Duration::from_secs(300),
            shutdown_deadline: Duration::from_secs(30),
            completion_batch: 2_000,
            backoff: Backoff::default(),
            settle_for: Duration::from_secs(300),
            queue: Queue::default(),
        }
    }
}

/// A unique identity per process start, so a restarted process never inherits (and strands) the
/// jobs of its previous life.
pub(crate) fn new_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &nonce[..8])
}

#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    id: i64,
    kind: String,
    queue: String,
    args: serde_json::Value,
    attempt: i32,
    max_attempts: i32,
    timeout_ms: Option<i32>,
    retry_delay_ms: Option<i32>,
    tag: Option<String>,
}

struct Shared<C> {
    /// The application's pool: transactional jobs run in its transactions.
    pool: PgPool,
    /// The engine's own connections for claims, completions and failures, with
    /// `synchronous_commit = off`: each of those may be lost in a database crash (not an
    /// application crash) without harm, since a lost claim makes the job available again and a
    /// lost completion gets the job rescued and run again, which a plain job allows by definition.
    /// A transactional job's completion commits synchronously with its effects, and that commit
    /// flushes the WAL of its claim too. Enqueues never use it.
    queue_pool: PgPool,
    ctx: C,
    registry: Registry<C>,
    config: WorkerConfig,
    worker_id: String,
    kinds: Vec<String>,
    completions: mpsc::UnboundedSender<(i64, i32)>,
    /// Cancelled when the shutdown deadline passes: running jobs stop and are released.
    hard_stop: CancellationToken,
}

/// A worker process's job runner.
pub struct Worker<C> {
    pool: PgPool,
    queue_pool: PgPool,
    ctx: C,
    registry: Registry<C>,
    config: WorkerConfig,
    worker_id: String,
}

impl<C: Clone + Send + Sync + 'static> Worker<C> {
    pub fn new(pool: PgPool, ctx: C, registry: Registry<C>, config: WorkerConfig) -> Self {
        let options = pool
            .connect_options()
            .as_ref()
            .clone()
            .options([("synchronous_commit", "off")]);
        let queue_pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy_with(options);
        Self {
            pool,
            queue_pool,
            ctx,
            registry,
            config,
            worker_id: new_worker_id(),
        }
    }

    /// Runs every job that is available now, and every job they make available, until no job of
    /// its queues is left to run now (jobs scheduled for later, and paused queues, are left as
    /// they are); then returns how many attempts ran. Each round claims up to each queue's
    /// concurrency and waits for all of them. Deterministic where [`Worker::run`] polls: for
    /// tests and one-off tools, never beside a running worker of the same registry.
    pub async fn drain(self) -> Result<usize, Error> {
        let (queues, shared, completer) = self.start().await?;
        let mut ran = 0;
        loop {
            let mut round = tokio::task::JoinSet::new();
            for (queue, concurrency) in &queues {
                for job in claim(&shared, queue, *concurrency).await? {
                    let shared = shared.clone();
                    round.spawn(async move { execute(&shared, job).await });
                }
            }
            if round.is_empty() {
                break;
            }
            ran += round.len();
            while round.join_next().await.is_some() {}
        }
        finish(shared, completer).await?;
        Ok(ran)
    }

    /// Registers the worker and starts its completer: what [`Worker::run`] and
    /// [`Worker::drain`] share. Returns the queues with their concurrency.
    async fn start(
        self,
    ) -> Result<
        (
            Vec<(String, usize)>,
            Arc<Shared<C>>,
            tokio::task::JoinHandle<()>,
        ),
        Error,
    > {
        let queues: Vec<(String, usize)> = self
            .registry
            .queues
            .iter()
            .map(|(q, n)| (q.clone(), *n))
            .collect();
        let queue_names: Vec<String> = queues.iter().map(|(q, _)| q.clone()).collect();
        register(
            &self.pool,
            &self.config.queue,
            &self.worker_id,
            &queue_names,
        )
        .await?;
        let (completions_tx, completions_rx) = mpsc::unbounded_channel();
        let kinds = self.registry.kinds();
        let shared = Arc::new(Shared {
            pool: self.pool,
            queue_pool: self.queue_pool.clone(),
            ctx: self.ctx,
            registry: self.registry,
            config: self.config,
            worker_id: self.worker_id,
            kinds,
            completions: completions_tx,
            hard_stop: CancellationToken::new(),
        });
        let completer = tokio::spawn(complete_batches(
            self.queue_pool,
            shared.config.queue.clone(),
            completions_rx,
            shared.config.completion_batch,
            shared.config.settle_for,
        ));
        Ok((queues, shared, completer))
    }

    /// Runs until `shutdown` fires, then drains and deregisters.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let (queues, shared, completer) = self.start().await?;
        let queue_names: Vec<String> = queues.iter().map(|(q, _)| q.clone()).collect();
        tracing::info!(worker.id = %shared.worker_id, worker.queues = ?queue_names, worker.kinds = ?shared.kinds, "worker started");

        let wakeups: Arc<HashMap<String, Arc<Notify>>> = Arc::new(
            queue_names
                .iter()
                .map(|q| (q.clone(), Arc::new(Notify::new())))
                .collect(),
        );
        let background = CancellationToken::new();
        let listener = tokio::spawn(listen(
            shared.pool.clone(),
            shared.config.queue.channel().to_string(),
            wakeups.clone(),
            background.clone(),
        ));
        let heartbeat = tokio::spawn(heartbeat(shared.clone(), background.clone()));

        let jobs = TaskTracker::new();
        let mut fetchers = Vec::new();
        for (queue, concurrency) in queues {
            let wake = wakeups[&queue].clone();
            fetchers.push(tokio::spawn(fetch_loop(
                shared.clone(),
                queue,
                concurrency,
                wake,
                jobs.clone(),
                shutdown.clone(),
            )));
        }

        shutdown.cancelled().await;
        for f in fetchers {
            let _ = f.await;
        }
        jobs.close();
        let deadline = shared.config.shutdown_deadline;
        if tokio::time::timeout(deadline, jobs.wait()).await.is_err() {
            tracing::warn!(
                worker.id = %shared.worker_id,
                jobs.running = jobs.len(),
                "jobs still running at the shutdown deadline; releasing them to other workers"
            );
            shared.hard_stop.cancel();
            jobs.wait().await;
        }
        background.cancel();
        let _ = listener.await;
        let _ = heartbeat.await;
        let worker_id = shared.worker_id.clone();
        finish(shared, completer).await?;
        tracing::info!(worker.id = %worker_id, "worker stopped");
        Ok(())
    }
}

/// Flushes the completions, closes the queue's pool and deregisters the worker. Every sender of
/// completions is gone once `shared` (the last reference) is: the completer writes what it has and
/// ends.
async fn finish<C>(
    shared: Arc<Shared<C>>,
    completer: tokio::task::JoinHandle<()>,
) -> Result<(), Error> {
    let (pool, queue_pool, queue, worker_id) = (
        shared.pool.clone(),
        shared.queue_pool.clone(),
        shared.config.queue.clone(),
        shared.worker_id.clone(),
    );
    drop(shared);
    let _ = completer.await;
    queue_pool.close().await;
    deregister(&pool, &queue, &worker_id).await
}

async fn register(
    pool: &PgPool,
    queue: &Queue,
    worker_id: &str,
    queues: &[String],
) -> Result<(), Error> {
    sqlx::query(queue.sql(
        "INSERT INTO {job_workers} (id, hostname, pid, queues) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
    ))
    .bind(worker_id)
    .bind(worker_id.rsplitn(3, '-').nth(2).unwrap_or_default())
    .bind(std::process::id() as i32)
    .bind(queues)
    .execute(pool)
    .await?;
    Ok(())
}

async fn deregister(pool: &PgPool, queue: &Queue, worker_id: &str) -> Result<(), Error> {
    sqlx::query(queue.sql("DELETE FROM {job_workers} WHERE id = $1"))
        .bind(worker_id)
        .execute(pool)
        .await?;
    Ok(())
}

async fn fetch_loop<C: Clone + Send + Sync + 'static>(
    shared: Arc<Shared<C>>,
    queue: String,
    concurrency: usize,
    wake: Arc<Notify>,
    jobs: TaskTracker,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    let slot_freed = Arc::new(Notify::new());
    while !shutdown.is_cancelled() {
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                () = slot_freed.notified() => {}
                () = shutdown.cancelled() => break,
            }
            continue;
        }
        let want = free.min(shared.config.fetch_batch);
        let claimed = match claim(&shared, &queue, want).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(job.queue = %queue, error.message = %e, "claiming jobs failed; retrying after the poll interval");
                tokio::select! {
                    () = tokio::time::sleep(shared.config.poll_interval) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        let got = claimed.len();
        for job in claimed {
            let permit = slots
                .clone()
                .try_acquire_owned()
                .expect("claimed no more jobs than free slots");
            let shared = shared.clone();
            let slot_freed = slot_freed.clone();
            jobs.spawn(async move {
                execute(&shared, job).await;
                drop(permit);
                slot_freed.notify_one();
            });
        }
        if got == want {
            // Possibly more waiting: claim again as soon as there is room.
            continue;
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(shared.config.poll_interval) => {}
            () = shutdown.cancelled() => break,
        }
    }
}

async fn claim<C>(shared: &Shared<C>, queue: &str, limit: usize) -> Result<Vec<Claimed>, Error> {
    let claimed = sqlx::query_as::<_, Claimed>(shared.config.queue.sql(
        "WITH picked AS (
             SELECT id FROM {jobs}
             WHERE state = 'available' AND queue = $1 AND scheduled_at <= now() AND kind = ANY($4)
               AND NOT EXISTS (SELECT 1 FROM {job_queues} q WHERE q.name = $1 AND q.paused_at IS NOT NULL)
             ORDER BY priority, scheduled_at, id
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         )
         UPDATE {jobs} j
         SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), attempted_by = $3
         FROM picked WHERE j.id = picked.id
         RETURNING j.id, j.kind, j.queue, j.args, j.attempt, j.max_attempts, j.timeout_ms,
                   j.retry_delay_ms, j.tag",
    ))
    .bind(queue)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(&shared.worker_id)
    .bind(&shared.kinds)
    .fetch_all(&shared.queue_pool)
    .await?;
    metrics::claimed(queue, claimed.len());
    Ok(claimed)
}

enum Outcome {
    /// Plain job done: its completion is batched.
    Done,
    /// Transactional job done: completed in its own transaction already.
    Committed,
    /// The job is no longer ours (rescued or cancelled meanwhile): nothing to record.
    Lost,
    Failed(JobError),
    /// The shutdown deadline passed mid-run.
    Released,
}

async fn execute<C: Clone + Send + Sync + 'static>(shared: &Arc<Shared<C>>, job: Claimed) {
    let meta = JobMeta {
        id: job.id,
        kind: job.kind.clone(),
        queue: job.queue.clone(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        tag: job.tag.clone(),
    };
    let timeout = job
        .timeout_ms
        .map(|ms| Duration::from_millis(ms.max(1) as u64))
        .unwrap_or(shared.config.default_timeout);
    let started = Instant::now();
    let outcome = match shared.registry.handlers.get(job.kind.as_str()).cloned() {
        None => Outcome::Failed(JobError::permanent(format!(
            "no handler registered for kind {}",
            job.kind
        ))),
        Some(handler) => {
            let task_shared = shared.clone();
            let args = job.args.clone();
            let task_meta = meta.clone();
            // Its own task, so a panic fails the attempt instead of the worker.
            let mut run = tokio::spawn(async move {
                run_attempt(task_shared, handler, task_meta, args, timeout).await
            });
            let joined = tokio::select! {
                joined = &mut run => Some(joined),
                () = shared.hard_stop.cancelled() => None,
            };
            match joined {
                None => {
                    // Dropping the attempt rolls back a transactional job's effects.
                    run.abort();
                    let _ = run.await;
                    Outcome::Released
                }
                Some(Ok(outcome)) => outcome,
                Some(Err(e)) if e.is_panic() => {
                    Outcome::Failed(JobError::retry(format!("panicked: {}", panic_message(e))))
                }
                Some(Err(e)) => Outcome::Failed(JobError::retry(format!("task failed: {e}"))),
            }
        }
    };
    let elapsed = started.elapsed();
    let elapsed_ms = elapsed.as_millis() as u64;
    let result = match outcome {
        Outcome::Done => {
            let _ = shared.completions.send((job.id, job.attempt));
            metrics::finished(&job.queue, &job.kind, Finished::Completed, elapsed);
            Ok(())
        }
        Outcome::Committed => {
            metrics::finished(&job.queue, &job.kind, Finished::Completed, elapsed);
            Ok(())
        }
        Outcome::Lost => Ok(()),
        Outcome::Released => {
            settle(shared, job.id, || {
                release(
                    &shared.queue_pool,
                    &shared.config.queue,
                    job.id,
                    job.attempt,
                )
            })
            .await
        }
        Outcome::Failed(error) => {
            tracing::warn!(job.id = job.id, job.kind = %job.kind, job.attempt = job.attempt, job.duration_ms = elapsed_ms, error.message = %error, "job attempt failed");
            let dead = matches!(error, JobError::Permanent(_)) || job.attempt >= job.max_attempts;
            let settled = settle(shared, job.id, || record_failure(shared, &job, &error)).await;
            if settled.is_ok() {
                let outcome = if dead {
                    Finished::Dead
                } else {
                    Finished::Retried
                };
                metrics::finished(&job.queue, &job.kind, outcome, elapsed);
            }
            settled
        }
    };
    if let Err(e) = result {
        // The attempt's lease runs out (timeout + stale_after) and the rescuer returns the job.
        tracing::error!(job.id = job.id, error.message = %e, "could not record the outcome of a job; the rescuer will take it when its lease ends");
    }
}

/// Writes an attempt's outcome, retrying with backoff while the database does not answer (a
/// restart, a failover) for up to `settle_for`. Every outcome write is fenced on the attempt, so
/// writing one twice, or after the rescuer took the job, changes nothing. Without this, a
/// worker that outlived a database crash kept its jobs `running` for good: it was alive and
/// heartbeating, so the rescuer never took them.
async fn settle<C, F, Fut>(shared: &Shared<C>, job_id: i64, write: F) -> Result<(), Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let started = Instant::now();
    let mut tries = 0;
    loop {
        match write().await {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() < shared.config.settle_for => {
                tries += 1;
                let delay = SETTLE_BACKOFF.delay(tries);
                tracing::warn!(job.id = job_id, error.message = %e, retry.in_ms = delay.as_millis() as u64, "writing a job's outcome failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Retries of outcome writes: from 100 ms, doubling, at most 5 s apart.
const SETTLE_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    max: Duration::from_secs(5),
    jitter: 0.25,
};

async fn run_attempt<C: Clone + Send + Sync + 'static>(
    shared: Arc<Shared<C>>,
    handler: Handler<C>,
    meta: JobMeta,
    args: serde_json::Value,
    timeout: Duration,
) -> Outcome {
    let timed_out = || {
        Outcome::Failed(JobError::retry(format!(
            "timed out after {} ms",
            timeout.as_millis()
        )))
    };
    match handler {
        Handler::Plain(f) => {
            match tokio::time::timeout(timeout, f(shared.ctx.clone(), meta, args)).await {
                Ok(Ok(())) => Outcome::Done,
                Ok(Err(e)) => Outcome::Failed(e),
                Err(_) => timed_out(),
            }
        }
        Handler::Transactional(f) => {
            let mut tx = match shared.pool.begin().await {
                Ok(tx) => tx,
                Err(e) => return Outcome::Failed(e.into()),
            };
            match tokio::time::timeout(timeout, f(&shared.ctx, &meta, args, &mut tx)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Outcome::Failed(e),
                Err(_) => return timed_out(),
            }
            // The completion commits with the job's effects, fenced: if the job is no longer
            // ours, the effects roll back with it.
            let owned = sqlx::query(shared.config.queue.sql(
                "UPDATE {jobs} SET state = 'completed', finalized_at = now()
                 WHERE id = $1 AND attempt = $2 AND state = 'running'",
            ))
            .bind(meta.id)
            .bind(meta.attempt)
            .execute(&mut *tx)
            .await;
            match owned {
                Ok(done) if done.rows_affected() == 1 => match tx.commit().await {
                    Ok(()) => Outcome::Committed,
                    Err(e) => Outcome::Failed(e.into()),
                },
                Ok(_) => Outcome::Lost,
                Err(e) => Outcome::Failed(e.into()),
            }
        }
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".into())
}

async fn record_failure<C>(
    shared: &Shared<C>,
    job: &Claimed,
    error: &JobError,
) -> Result<(), Error> {
    let (permanent, explicit_delay) = match error {
        JobError::Permanent(_) => (true, None),
        JobError::Retry { after, .. } => (false, *after),
    };
    let delay = job
        .retry_delay_ms
        .map(|ms| Duration::from_millis(ms.max(0) as u64))
        .or(explicit_delay)
        .unwrap_or_else(|| shared.config.backoff.delay(job.attempt));
    sqlx::query(shared.config.queue.sql(
        "UPDATE {jobs} SET
             state = CASE WHEN $3 OR attempt >= max_attempts THEN 'failed' ELSE 'retryable' END,
             scheduled_at = CASE WHEN $3 OR attempt >= max_attempts THEN scheduled_at
                                 ELSE now() + $4 * interval '1 millisecond' END,
             finalized_at = CASE WHEN $3 OR attempt >= max_attempts THEN now() END,
             errors = errors || jsonb_build_array(jsonb_build_object(
                 'attempt', attempt, 'at', now(), 'error', $5::text, 'worker', $6::text))
         WHERE id = $1 AND attempt = $2 AND state = 'running'",
    ))
    .bind(job.id)
    .bind(job.attempt)
    .bind(permanent)
    .bind(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
    .bind(error.to_string())
    .bind(&shared.worker_id)
    .execute(&shared.queue_pool)
    .await?;
    Ok(())
}

/// Gives a running job back to the queue without counting the interrupted attempt.
async fn release(pool: &PgPool, queue: &Queue, id: i64, attempt: i32) -> Result<(), Error> {
    sqlx::query(queue.sql(
        "UPDATE {jobs} SET state = 'available', attempt = attempt - 1, scheduled_at = now(),
                           attempted_by = NULL
         WHERE id = $1 AND attempt = $2 AND state = 'running'",
    ))
    .bind(id)
    .bind(attempt)
    .execute(pool)
    .await?;
    Ok(())
}

/// Writes completions of plain jobs many rows per statement; whatever arrives while one
/// statement runs goes into the next. Ends, flushed, when every sender is dropped.
async fn complete_batches(
    pool: PgPool,
    queue: Queue,
    mut rx: mpsc::UnboundedReceiver<(i64, i32)>,
    max_batch: usize,
    settle_for: Duration,
) {
    let mut buffer = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut buffer, max_batch).await > 0 {
        let (ids, attempts): (Vec<i64>, Vec<i32>) = buffer.drain(..).unzip();
        let mut tries = 0;
        let started = Instant::now();
        loop {
            // No join with the arrays: with statistics taken while the table was nearly empty,
            // the planner nest-loops such a join over every running row (measured: one statement
            // ran for minutes). `id = ANY` is an index condition or, at worst, one hashed pass;
            // the attempt fence is then looked up per matched row.
            let result = sqlx::query(queue.sql(
                "UPDATE {jobs} SET state = 'completed', finalized_at = now()
                 WHERE id = ANY($1) AND state = 'running'
                   AND attempt = ($2::int4[])[array_position($1::bigint[], id)]",
            ))
            .bind(&ids)
            .bind(&attempts)
            .execute(&pool)
            .await;
            match result {
                Ok(_) => break,
                Err(e) if started.elapsed() < settle_for => {
                    tries += 1;
                    let delay = SETTLE_BACKOFF.delay(tries);
                    tracing::warn!(error.message = %e, jobs.count = ids.len(), retry.in_ms = delay.as_millis() as u64, "completing jobs failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    // Their leases run out and the rescuer returns them; they may run again.
                    tracing::error!(error.message = %e, jobs.count = ids.len(), "could not complete jobs");
                    break;
                }
            }
        }
    }
}

async fn heartbeat<C>(shared: Arc<Shared<C>>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(shared.config.heartbeat_interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let result = sqlx::query(
            shared
                .config
                .queue
                .sql("UPDATE {job_workers} SET heartbeat_at = now() WHERE id = $1"),
        )
        .bind(&shared.worker_id)
        .execute(&shared.pool)
        .await;
        match result {
            Ok(r) if r.rows_affected() == 0 => {
                // Declared dead while alive (e.g. a long pause): its jobs were rescued; come back.
                tracing::warn!(worker.id = %shared.worker_id, "worker row was removed; registering again");
                let _ = sqlx::query(shared.config.queue.sql(
                    "INSERT INTO {job_workers} (id, hostname, pid, queues) VALUES ($1, '', $2, '{}')
                     ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
                ))
                .bind(&shared.worker_id)
                .bind(std::process::id() as i32)
                .execute(&shared.pool)
                .await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error.message = %e, "heartbeat failed"),
        }
    }
}

/// Routes NOTIFY wake-ups to the queues' fetch loops; reconnects when the connection drops.
async fn listen(
    pool: PgPool,
    channel: String,
    wakeups: Arc<HashMap<String, Arc<Notify>>>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error.message = %e, "cannot open the job notification listener; polling only");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        if let Err(e) = listener.listen(&channel).await {
            tracing::warn!(error.message = %e, "cannot LISTEN for jobs; polling only");
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                received = listener.recv() => match received {
                    Ok(n) => {
                        if let Some(wake) = wakeups.get(n.payload()) {
                            wake.notify_one();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error.message = %e, "job notification listener lost; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}
