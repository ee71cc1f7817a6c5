//! The queue engine against a real PostgreSQL: retries, timeouts, panics, uniqueness,
//! transactional exactly-once, crash recovery, racing rescuers and leaders, shutdown, admin.
//! `cargo test -p syncbridge-jobs` runs them; the server is `DATABASE_URL`, else the private one
//! in `target/tmp/pg` that the application's tests use too (`jobs::testing`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, TimeZone, Utc};
use jobs::{
    Backoff, BulkAction, Job, JobError, JobFilter, JobMeta, JobState, Maintenance,
    MaintenanceConfig, MissedTicks, NewJob, Periodic, PlainJob, Registry, TransactionalJob, Worker,
    WorkerConfig, enqueue_due_tick,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

use jobs::testing::{SCHEMA, TestDatabase};

/// The queue every enqueue here goes through: one per process, as in the service, so its NOTIFY
/// debounce works as it does there. Its tables are in [`SCHEMA`], not `public`, so a statement of
/// the engine that named a table without its schema fails here; the raw SQL below names
/// `jobs_test` (that schema) for the same reason.
fn queue() -> &'static jobs::Queue {
    static QUEUE: std::sync::OnceLock<jobs::Queue> = std::sync::OnceLock::new();
    QUEUE.get_or_init(|| jobs::Queue::new(jobs::DEFAULT_CHANNEL, SCHEMA).unwrap())
}

/// A database of the test's own, on the test server.
async fn test_db() -> TestDatabase {
    TestDatabase::create(&std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pg")).await
}

async fn count<'e>(executor: impl sqlx::PgExecutor<'e>, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(executor)
        .await
        .unwrap()
}

/// A job that only counts its runs.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Ping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}
impl Job for Ping {
    const KIND: &'static str = "test_ping";
}

#[derive(Clone)]
struct Ctx {
    runs: Arc<AtomicUsize>,
}

#[derive(Serialize, Deserialize)]
struct AlwaysFails;
impl Job for AlwaysFails {
    const KIND: &'static str = "test_always_fails";
    const MAX_ATTEMPTS: i32 = 3;
}
impl PlainJob<Ctx> for AlwaysFails {
    async fn run(&self, ctx: &Ctx, _: &JobMeta) -> Result<(), JobError> {
        ctx.runs.fetch_add(1, Ordering::SeqCst);
        Err(JobError::retry("boom"))
    }
}

#[derive(Serialize, Deserialize)]
struct Sleeper {
    ms: u64,
}
impl Job for Sleeper {
    const KIND: &'static str = "test_sleeper";
    const MAX_ATTEMPTS: i32 = 1;
    const TIMEOUT: Duration = Duration::from_millis(300);
}
impl PlainJob<Ctx> for Sleeper {
    async fn run(&self, ctx: &Ctx, _: &JobMeta) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        ctx.runs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Panics;
impl Job for Panics {
    const KIND: &'static str = "test_panics";
    const MAX_ATTEMPTS: i32 = 1;
}
impl PlainJob<Ctx> for Panics {
    async fn run(&self, _: &Ctx, _: &JobMeta) -> Result<(), JobError> {
        panic!("kaboom")
    }
}

impl PlainJob<Ctx> for Ping {
    async fn run(&self, ctx: &Ctx, _: &JobMeta) -> Result<(), JobError> {
        ctx.runs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Writes one effect row; may fail after writing, or hang after writing, on its first attempt.
#[derive(Serialize, Deserialize)]
struct WriteEffect {
    note: String,
    fail_first: bool,
    hang_first: bool,
}
impl Job for WriteEffect {
    const KIND: &'static str = "test_write_effect";
    const MAX_ATTEMPTS: i32 = 5;
}
impl TransactionalJob<Ctx> for WriteEffect {
    async fn run(&self, ctx: &Ctx, meta: &JobMeta, tx: &mut PgConnection) -> Result<(), JobError> {
        sqlx::query("INSERT INTO test_effects (job_id, note) VALUES ($1, $2)")
            .bind(meta.id)
            .bind(&self.note)
            .execute(&mut *tx)
            .await?;
        ctx.runs.fetch_add(1, Ordering::SeqCst);
        if meta.attempt == 1 && self.hang_first {
            std::future::pending::<()>().await;
        }
        if meta.attempt == 1 && self.fail_first {
            return Err(JobError::retry("failing after writing"));
        }
        Ok(())
    }
}

fn registry() -> Registry<Ctx> {
    Registry::new()
        .queue("default", 20)
        .plain::<AlwaysFails>()
        .plain::<Sleeper>()
        .plain::<Panics>()
        .plain::<Ping>()
        .transactional::<WriteEffect>()
}

fn fast_worker_config() -> WorkerConfig {
    WorkerConfig {
        poll_interval: Duration::from_millis(50),
        heartbeat_interval: Duration::from_millis(200),
        shutdown_deadline: Duration::from_secs(5),
        backoff: Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
            jitter: 0.0,
        },
        queue: queue().clone(),
        ..WorkerConfig::default()
    }
}

fn fast_maintenance() -> MaintenanceConfig {
    MaintenanceConfig {
        interval: Duration::from_millis(20),
        lease: Duration::from_secs(2),
        stale_after: Duration::from_secs(1),
        queue: queue().clone(),
        ..MaintenanceConfig::default()
    }
}

/// A worker and a maintenance loop over `pool`, stopped (and awaited) by `stop`.
struct Running {
    shutdown: CancellationToken,
    worker: tokio::task::JoinHandle<Result<(), jobs::Error>>,
    maintenance: tokio::task::JoinHandle<()>,
    ctx: Ctx,
}

impl Running {
    fn start(pool: &PgPool, config: WorkerConfig) -> Self {
        let ctx = Ctx {
            runs: Arc::new(AtomicUsize::new(0)),
        };
        let shutdown = CancellationToken::new();
        let worker = Worker::new(pool.clone(), ctx.clone(), registry(), config);
        let worker = tokio::spawn(worker.run(shutdown.clone()));
        let maintenance = Maintenance::new(pool.clone(), fast_maintenance(), Vec::new());
        let maintenance = tokio::spawn(maintenance.run(shutdown.clone()));
        Self {
            shutdown,
            worker,
            maintenance,
            ctx,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.worker.await.unwrap().unwrap();
        self.maintenance.await.unwrap();
    }
}

async fn enqueue_one(pool: &PgPool, job: NewJob) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    queue().enqueue(&mut conn, &job).await.unwrap()
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    state: String,
    attempt: i32,
    errors: Value,
}

async fn job_row(pool: &PgPool, id: i64) -> Row {
    sqlx::query_as("SELECT state, attempt, errors FROM jobs_test.jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits (bounded) until the job reaches one of `states`; the bound only turns a hang into a failure.
async fn wait_for_state(pool: &PgPool, id: i64, states: &[&str]) -> Row {
    for _ in 0..600 {
        let row = job_row(pool, id).await;
        if states.contains(&row.state.as_str()) {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "job {id} never reached {states:?}: {:?}",
        job_row(pool, id).await
    );
}

/// A table for transactional jobs to write to, created by the owner like any migration's table.
async fn effects_table(db: &TestDatabase) {
    let mut owner = db.connect().await;
    sqlx::query("CREATE TABLE test_effects (job_id bigint NOT NULL, note text NOT NULL)")
        .execute(&mut owner)
        .await
        .unwrap();
}

fn error_times(errors: &Value) -> Vec<DateTime<Utc>> {
    errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn failing_job_retries_with_growing_backoff_then_is_dead() {
    let db = test_db().await;
    let running = Running::start(&db.pool, fast_worker_config());
    let id = enqueue_one(&db.pool, NewJob::new(&AlwaysFails).unwrap()).await;

    let row = wait_for_state(&db.pool, id, &["failed"]).await;
    assert_eq!(row.attempt, 3);
    let errors = row.errors.as_array().unwrap();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors.iter().all(|e| e["error"] == "boom"));
    assert_eq!(
        errors
            .iter()
            .map(|e| e["attempt"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // The backoff was kept in the database: 100 ms after the first failure, 200 ms after the second.
    let at = error_times(&row.errors);
    assert!(
        at[1] - at[0] >= chrono::Duration::milliseconds(100),
        "{at:?}"
    );
    assert!(
        at[2] - at[1] >= chrono::Duration::milliseconds(200),
        "{at:?}"
    );
    assert_eq!(running.ctx.runs.load(Ordering::SeqCst), 3);
    running.stop().await;
}

#[tokio::test]
async fn an_attempt_over_its_timeout_fails() {
    let db = test_db().await;
    let running = Running::start(&db.pool, fast_worker_config());
    let id = enqueue_one(&db.pool, NewJob::new(&Sleeper { ms: 10_000 }).unwrap()).await;
    let row = wait_for_state(&db.pool, id, &["failed"]).await;
    let message = row.errors[0]["error"].as_str().unwrap().to_string();
    assert!(message.contains("timed out after 300 ms"), "{message}");
    running.stop().await;
}

#[tokio::test]
async fn a_panic_fails_the_attempt_and_the_worker_goes_on() {
    let db = test_db().await;
    let running = Running::start(&db.pool, fast_worker_config());
    let panicking = enqueue_one(&db.pool, NewJob::new(&Panics).unwrap()).await;
    let row = wait_for_state(&db.pool, panicking, &["failed"]).await;
    assert!(
        row.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("panicked: kaboom")
    );

    let after = enqueue_one(&db.pool, NewJob::new(&Ping::default()).unwrap()).await;
    wait_for_state(&db.pool, after, &["completed"]).await;
    running.stop().await;
}

#[tokio::test]
async fn a_second_enqueue_of_a_live_unique_job_returns_the_first() {
    let db = test_db().await;
    let job = NewJob::new(&Ping::default()).unwrap().unique_key("sync:42");
    let first = enqueue_one(&db.pool, job.clone()).await;
    let second = enqueue_one(&db.pool, job.clone()).await;
    assert_eq!(first, second);

    // In bulk: duplicates inside the batch and against the live job collapse, nothing fails.
    let batch = vec![
        job.clone(),
        NewJob::new(&Ping::default()).unwrap().unique_key("sync:43"),
        NewJob::new(&Ping::default()).unwrap().unique_key("sync:43"),
        NewJob::new(&Ping::default()).unwrap(),
    ];
    let mut conn = db.pool.acquire().await.unwrap();
    let result = queue().enqueue_many(&mut conn, &batch).await.unwrap();
    assert_eq!(result.inserted, 2, "sync:43 once and the keyless job");
    assert!(result.ids.contains(&first));
    let total = count(&db.pool, "SELECT count(*) FROM jobs_test.jobs").await;
    assert_eq!(total, 3);

    // A finished job frees its key.
    sqlx::query(
        "UPDATE jobs_test.jobs SET state = 'completed', finalized_at = now() WHERE id = $1",
    )
    .bind(first)
    .execute(&db.pool)
    .await
    .unwrap();
    let third = enqueue_one(&db.pool, job).await;
    assert_ne!(third, first);
}

#[tokio::test]
async fn bulk_enqueue_stores_every_column_whether_jobs_share_it_or_not() {
    let db = test_db().await;
    let mut conn = db.pool.acquire().await.unwrap();
    // Identical jobs: every column is the same (sent once each).
    let same = vec![NewJob::new(&Ping::default()).unwrap().tag("t:1"); 3];
    let result = queue().enqueue_many(&mut conn, &same).await.unwrap();
    assert_eq!(result.inserted, 3);
    let mut ids = result.ids.clone();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three distinct jobs");
    // Mixed: some columns differ per job, others do not.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let mixed = vec![
        NewJob::new(&Ping {
            note: Some("a".into()),
        })
        .unwrap()
        .max_attempts(3),
        NewJob::new(&Ping {
            note: Some("b".into()),
        })
        .unwrap()
        .run_at(later)
        .tag("t:2"),
        NewJob::new(&Ping::default()).unwrap().unique_key("k:1"),
    ];
    let result = queue().enqueue_many(&mut conn, &mixed).await.unwrap();
    assert_eq!(result.inserted, 3);
    type Stored = (
        serde_json::Value,
        String,
        i32,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Stored> = sqlx::query_as(
        "SELECT args, state, max_attempts, tag, unique_key FROM jobs_test.jobs WHERE id = ANY($1) ORDER BY id",
    )
    .bind(&result.ids)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(rows[0].0["note"], "a");
    assert_eq!((rows[0].1.as_str(), rows[0].2), ("available", 3));
    assert_eq!(rows[1].0["note"], "b");
    assert_eq!(rows[1].1, "scheduled");
    assert_eq!(rows[1].3.as_deref(), Some("t:2"));
    assert_eq!(
        (rows[2].3.as_deref(), rows[2].4.as_deref()),
        (None, Some("k:1"))
    );
    let tagged = count(
        &db.pool,
        "SELECT count(*) FROM jobs_test.jobs WHERE tag = 't:1' AND state = 'available'",
    )
    .await;
    assert_eq!(tagged, 3);
}

#[tokio::test]
async fn bulk_enqueue_returns_each_jobs_id_in_the_order_given() {
    let db = test_db().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let jobs: Vec<NewJob> = (0..2_000)
        .map(|i| {
            NewJob::new(&Ping {
                note: Some(i.to_string()),
            })
            .unwrap()
        })
        .collect();
    let result = queue().enqueue_many(&mut conn, &jobs).await.unwrap();
    let notes: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, args->>'note' FROM jobs_test.jobs WHERE id = ANY($1)")
            .bind(&result.ids)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let notes: std::collections::HashMap<i64, String> = notes.into_iter().collect();
    for (i, id) in result.ids.iter().enumerate() {
        assert_eq!(notes[id], i.to_string(), "ids[{i}] is the job of jobs[{i}]");
    }
    assert_eq!(result.ids.len(), 2_000);
}

#[tokio::test]
async fn enqueue_inside_a_rolled_back_transaction_leaves_no_job() {
    let db = test_db().await;
    let mut tx = db.pool.begin().await.unwrap();
    queue()
        .enqueue(&mut tx, &NewJob::new(&Ping::default()).unwrap())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let total = count(&db.pool, "SELECT count(*) FROM jobs_test.jobs").await;
    assert_eq!(total, 0);
}

#[tokio::test]
async fn a_transactional_job_that_fails_leaves_no_effect_and_its_retry_takes_effect_once() {
    let db = test_db().await;
    effects_table(&db).await;
    let running = Running::start(&db.pool, fast_worker_config());
    let id = enqueue_one(
        &db.pool,
        NewJob::new(&WriteEffect {
            note: "once".into(),
            fail_first: true,
            hang_first: false,
        })
        .unwrap(),
    )
    .await;
    let row = wait_for_state(&db.pool, id, &["completed"]).await;
    assert_eq!(row.attempt, 2);
    assert_eq!(row.errors.as_array().unwrap().len(), 1);
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM test_effects WHERE job_id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        effects, 1,
        "the failed attempt's write must have rolled back"
    );
    assert_eq!(running.ctx.runs.load(Ordering::SeqCst), 2);
    running.stop().await;
}

#[tokio::test]
async fn jobs_of_a_killed_worker_are_rescued_and_take_effect_exactly_once() {
    let db = test_db().await;
    effects_table(&db).await;
    let id = enqueue_one(
        &db.pool,
        NewJob::new(&WriteEffect {
            note: "survives a crash".into(),
            fail_first: false,
            hang_first: true,
        })
        .unwrap(),
    )
    .await;

    // Worker A runs on a runtime of its own, which is then dropped without any cleanup:
    // no completion, no release, no deregistration, its connections simply vanish.
    let owner = db.options.clone();
    let doomed = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        {
            let _inside = rt.enter();
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(5)
                .connect_lazy_with(owner);
            let ctx = Ctx {
                runs: Arc::new(AtomicUsize::new(0)),
            };
            let worker = Worker::new(pool, ctx, registry(), fast_worker_config());
            rt.spawn(worker.run(CancellationToken::new()));
        }
        rt
    })
    .join()
    .unwrap();
    let row = wait_for_state(&db.pool, id, &["running"]).await;
    assert_eq!(row.attempt, 1);
    doomed.shutdown_background();

    // Worker B (with the rescuer) finds the job stranded, rescues it and runs it to completion.
    let running = Running::start(&db.pool, fast_worker_config());
    let row = wait_for_state(&db.pool, id, &["completed"]).await;
    assert_eq!(row.attempt, 2);
    assert!(
        row.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("stopped heartbeating"),
        "{:?}",
        row.errors
    );
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM test_effects WHERE job_id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(effects, 1);
    running.stop().await;
}

#[tokio::test]
async fn an_attempt_that_outlived_its_lease_is_rescued_though_its_worker_lives() {
    // A worker that lost a database connection mid-attempt, and could not write the outcome, is
    // still heartbeating: its attempt is taken back once its timeout plus stale_after passed.
    let db = test_db().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(enqueue_one(&db.pool, NewJob::new(&Ping { note: None }).unwrap()).await);
    }
    let mut owner = db.connect().await;
    sqlx::query(
        "INSERT INTO jobs_test.job_workers (id, hostname, pid, queues) VALUES ('alive', 'h', 1, '{}')",
    )
    .execute(&mut owner)
    .await
    .unwrap();
    for (id, age_ms) in [(ids[0], 60_000), (ids[1], 500)] {
        sqlx::query(
            "UPDATE jobs_test.jobs SET state = 'running', attempt = 1, attempted_by = 'alive', timeout_ms = 1000,
                             attempted_at = now() - $2 * interval '1 millisecond'
             WHERE id = $1",
        )
        .bind(id)
        .bind(age_ms)
        .execute(&mut owner)
        .await
        .unwrap();
    }
    let rescued = jobs::rescue_stale(
        &db.pool,
        queue(),
        Duration::from_secs(1),
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(rescued, 1);
    let old = job_row(&db.pool, ids[0]).await;
    assert_eq!(old.state, "retryable");
    assert!(
        old.errors
            .to_string()
            .contains("outlived its timeout and lease"),
        "{}",
        old.errors
    );
    assert_eq!(
        job_row(&db.pool, ids[1]).await.state,
        "running",
        "within its lease"
    );
}

#[tokio::test]
async fn a_rescuer_racing_completions_never_reruns_a_completed_job() {
    let db = test_db().await;
    // 50 jobs "running" on a worker that never registered (so: dead), claimed long ago.
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO jobs_test.jobs (kind, state, attempt, attempted_by, attempted_at)
         SELECT 'test_ping', 'running', 1, 'ghost', now() - interval '1 hour' FROM generate_series(1, 50)
         RETURNING id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let completer = {
        let (pool, ids, barrier) = (db.pool.clone(), ids.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            let mut completed = Vec::new();
            for id in ids {
                // The completer's fenced statement, one job at a time to interleave with the rescuer.
                let done = sqlx::query(
                    "UPDATE jobs_test.jobs SET state = 'completed', finalized_at = now()
                     WHERE id = $1 AND attempt = 1 AND state = 'running'",
                )
                .bind(id)
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected();
                if done == 1 {
                    completed.push(id);
                }
            }
            completed
        })
    };
    let rescuer = {
        let (pool, barrier) = (db.pool.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            jobs::rescue_stale(
                &pool,
                queue(),
                Duration::from_secs(1),
                Duration::from_secs(300),
            )
            .await
            .unwrap()
        })
    };
    let completed = completer.await.unwrap();
    let rescued = rescuer.await.unwrap();
    assert_eq!(
        completed.len() as u64 + rescued,
        50,
        "each job is either completed or rescued"
    );
    for id in ids {
        let row = job_row(&db.pool, id).await;
        if completed.contains(&id) {
            assert_eq!(
                row.state, "completed",
                "job {id} was completed, then changed"
            );
            assert_eq!(row.errors, serde_json::json!([]));
        } else {
            assert_eq!(row.state, "retryable");
        }
    }
}

/// Who holds the maintenance lease, and until when.
async fn leader(pool: &PgPool) -> Option<(String, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT leader_id, expires_at FROM jobs_test.job_leader WHERE name = 'maintenance'",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_leader_stuck_in_its_duties_keeps_renewing_its_lease() {
    let db = test_db().await;
    let config = MaintenanceConfig {
        interval: Duration::from_millis(50),
        lease: Duration::from_millis(200),
        ..fast_maintenance()
    };
    let shutdown = CancellationToken::new();
    let first = Maintenance::new(db.pool.clone(), config.clone(), Vec::new());
    let first = tokio::spawn(first.run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let leader_id = loop {
        if let Some((id, _)) = leader(&db.pool).await {
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nobody took the lead"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // The leader's duties (rescue, promote) now wait on this lock for many leases; a candidate
    // stands by, ready to take over a lapsed lease.
    let mut locker = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE jobs_test.jobs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let locked_at: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let second = Maintenance::new(db.pool.clone(), config.clone(), Vec::new());
    let second = tokio::spawn(second.run(shutdown.clone()));
    let renewed_past = locked_at + chrono::Duration::milliseconds(10 * 200);
    loop {
        let (id, expires_at) = leader(&db.pool).await.expect("the lease row stays");
        assert_eq!(
            id, leader_id,
            "the lead changed hands while its holder was alive"
        );
        if expires_at > renewed_past {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck leader stopped renewing its lease (expires {expires_at}, locked at {locked_at})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    locker.rollback().await.unwrap();
    shutdown.cancel();
    first.await.unwrap();
    second.await.unwrap();
    assert_eq!(
        leader(&db.pool).await,
        None,
        "a clean stop gives the lease up"
    );
}

#[tokio::test]
async fn three_leaders_racing_one_cron_schedule_produce_one_job_per_tick() {
    let db = test_db().await;
    let periodic = Periodic::new(
        "every-second",
        "* * * * * *",
        MissedTicks::RunLatest,
        |_| NewJob::new(&Ping::default()).unwrap(),
    )
    .unwrap();
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    // A controllable clock: every leader sees the same instants, advancing 500 ms per round.
    let rounds = 40;
    let barrier = Arc::new(Barrier::new(3));
    let mut leaders = Vec::new();
    for _ in 0..3 {
        let (pool, periodic, barrier) = (db.pool.clone(), periodic.clone(), barrier.clone());
        leaders.push(tokio::spawn(async move {
            let mut enqueued = Vec::new();
            for round in 0..rounds {
                let now = start + chrono::Duration::milliseconds(500 * round);
                barrier.wait().await;
                if let Some(tick) = enqueue_due_tick(&pool, queue(), &periodic, now)
                    .await
                    .unwrap()
                {
                    enqueued.push(tick);
                }
            }
            enqueued
        }));
    }
    let mut ticks = Vec::new();
    for leader in leaders {
        ticks.extend(leader.await.unwrap());
    }
    ticks.sort();
    let unique: std::collections::BTreeSet<_> = ticks.iter().collect();
    assert_eq!(
        ticks.len(),
        unique.len(),
        "a tick was enqueued twice: {ticks:?}"
    );
    // The first round only registers the schedule; ticks 1 s .. 19 s follow.
    assert_eq!(ticks.len(), 19, "{ticks:?}");
    let jobs = count(
        &db.pool,
        "SELECT count(*) FROM jobs_test.jobs WHERE kind = 'test_ping'",
    )
    .await;
    assert_eq!(jobs, 19);
}

#[tokio::test]
async fn missed_ticks_follow_the_schedules_policy() {
    let db = test_db().await;
    let hourly = |name: &str, missed| {
        Periodic::new(name, "0 0 * * * *", missed, |_| {
            NewJob::new(&Ping::default()).unwrap()
        })
        .unwrap()
    };
    let run_latest = hourly("catch-up", MissedTicks::RunLatest);
    let skip = hourly("skip", MissedTicks::Skip);
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 8, 0, 0).unwrap();
    // Down from 08:00 until 13:20: five ticks passed while nothing ran.
    let back = Utc.with_ymd_and_hms(2026, 1, 1, 13, 20, 0).unwrap();
    for p in [&run_latest, &skip] {
        assert_eq!(
            enqueue_due_tick(&db.pool, queue(), p, t0).await.unwrap(),
            None
        );
    }
    assert_eq!(
        enqueue_due_tick(&db.pool, queue(), &run_latest, back)
            .await
            .unwrap(),
        Some(Utc.with_ymd_and_hms(2026, 1, 1, 13, 0, 0).unwrap()),
        "run once, for the latest missed tick"
    );
    assert_eq!(
        enqueue_due_tick(&db.pool, queue(), &skip, back)
            .await
            .unwrap(),
        None
    );
    // Both carry on normally with the next tick.
    let next = Utc.with_ymd_and_hms(2026, 1, 1, 14, 0, 1).unwrap();
    for p in [&run_latest, &skip] {
        assert!(
            enqueue_due_tick(&db.pool, queue(), p, next)
                .await
                .unwrap()
                .is_some()
        );
    }
    let jobs = count(&db.pool, "SELECT count(*) FROM jobs_test.jobs").await;
    assert_eq!(jobs, 3);
}

#[tokio::test]
async fn shutdown_lets_running_jobs_finish() {
    let db = test_db().await;
    let running = Running::start(&db.pool, fast_worker_config());
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(enqueue_one(&db.pool, NewJob::new(&Sleeper { ms: 150 }).unwrap()).await);
    }
    for id in &ids {
        wait_for_state(&db.pool, *id, &["running", "completed"]).await;
    }
    let ctx = running.ctx.clone();
    running.stop().await;
    assert_eq!(ctx.runs.load(Ordering::SeqCst), 5);
    for id in ids {
        assert_eq!(job_row(&db.pool, id).await.state, "completed");
    }
    let workers = count(&db.pool, "SELECT count(*) FROM jobs_test.job_workers").await;
    assert_eq!(workers, 0, "a stopped worker deregisters");
}

#[tokio::test]
async fn jobs_still_running_at_the_deadline_are_released_for_another_worker() {
    let db = test_db().await;
    let config = WorkerConfig {
        shutdown_deadline: Duration::from_millis(100),
        ..fast_worker_config()
    };
    let running = Running::start(&db.pool, config);
    let id = enqueue_one(
        &db.pool,
        NewJob::new(&Sleeper { ms: 60_000 })
            .unwrap()
            .max_attempts(3),
    )
    .await;
    wait_for_state(&db.pool, id, &["running"]).await;
    sqlx::query("UPDATE jobs_test.jobs SET timeout_ms = 120000 WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    running.stop().await;
    let row = job_row(&db.pool, id).await;
    assert_eq!(row.state, "available");
    assert_eq!(row.attempt, 0, "an interrupted attempt does not count");
}

#[tokio::test]
async fn admin_retry_by_filter_revives_ten_thousand_dead_jobs() {
    let db = test_db().await;
    sqlx::query(
        "INSERT INTO jobs_test.jobs (kind, queue, state, attempt, max_attempts, finalized_at, tag)
         SELECT 'test_ping', 'default', 'failed', 3, 3, now(), 'tenant:a' FROM generate_series(1, 10000)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO jobs_test.jobs (kind, state, attempt, max_attempts, finalized_at, tag)
         SELECT 'test_ping', 'failed', 3, 3, now(), 'tenant:b' FROM generate_series(1, 10)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let filter = JobFilter {
        states: vec![JobState::Failed],
        tag: Some("tenant:a".into()),
        ..JobFilter::default()
    };
    let mut progress = Vec::new();
    let retried = jobs::admin::apply(&db.pool, queue(), BulkAction::Retry, &filter, 3_000, |n| {
        progress.push(n)
    })
    .await
    .unwrap();
    assert_eq!(retried, 10_000);
    assert!(progress.len() >= 4, "worked in batches: {progress:?}");
    let (available, max_attempts): (i64, i32) = sqlx::query_as(
        "SELECT count(*), min(max_attempts) FROM jobs_test.jobs WHERE tag = 'tenant:a' AND state = 'available'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(available, 10_000);
    assert_eq!(max_attempts, 4, "a revived job gets one more attempt");
    let untouched = count(
        &db.pool,
        "SELECT count(*) FROM jobs_test.jobs WHERE tag = 'tenant:b' AND state = 'failed'",
    )
    .await;
    assert_eq!(untouched, 10);
}

#[tokio::test]
async fn a_paused_queue_starts_nothing_until_resumed() {
    let db = test_db().await;
    jobs::admin::pause_queue(&db.pool, queue(), "default")
        .await
        .unwrap();
    let id = enqueue_one(&db.pool, NewJob::new(&Ping::default()).unwrap()).await;
    let drain = || {
        let ctx = Ctx {
            runs: Arc::new(AtomicUsize::new(0)),
        };
        Worker::new(db.pool.clone(), ctx, registry(), fast_worker_config()).drain()
    };
    // A worker that runs everything it may run now runs nothing.
    assert_eq!(drain().await.unwrap(), 0);
    assert_eq!(job_row(&db.pool, id).await.state, "available");
    jobs::admin::resume_queue(&db.pool, queue(), "default")
        .await
        .unwrap();
    assert_eq!(drain().await.unwrap(), 1);
    assert_eq!(job_row(&db.pool, id).await.state, "completed");
}

#[tokio::test]
async fn retention_prunes_only_finished_jobs_past_their_time() {
    let db = test_db().await;
    sqlx::query(
        "INSERT INTO jobs_test.jobs (kind, state, finalized_at) VALUES
            ('test_ping', 'completed', now() - interval '25 hours'),
            ('test_ping', 'completed', now() - interval '1 hour'),
            ('test_ping', 'failed',    now() - interval '8 days'),
            ('test_ping', 'failed',    now() - interval '2 days'),
            ('test_ping', 'cancelled', now() - interval '8 days')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO jobs_test.jobs (kind, state, created_at) VALUES ('test_ping', 'available', now() - interval '30 days')")
        .execute(&db.pool)
        .await
        .unwrap();
    let pruned = jobs::prune(
        &db.pool,
        &MaintenanceConfig {
            queue: queue().clone(),
            ..MaintenanceConfig::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(pruned, 3);
    let left: Vec<(String, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT state, finalized_at FROM jobs_test.jobs ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let states: Vec<&str> = left.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(states, ["completed", "failed", "available"]);
}

/// A queue's NOTIFYs go to its own channel, and each queue (one per database) debounces its own:
/// enqueueing on two databases at once wakes the listeners of both.
#[tokio::test]
async fn notifications_go_to_the_queues_channel_and_each_database_is_woken() {
    let (a, b) = (test_db().await, test_db().await);
    let mut listeners = Vec::new();
    for db in [&a, &b] {
        let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool)
            .await
            .unwrap();
        listener.listen("team_a_jobs").await.unwrap();
        listeners.push(listener);
    }
    for db in [&a, &b] {
        let queue = jobs::Queue::new("team_a_jobs", SCHEMA).unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        queue
            .enqueue(&mut conn, &NewJob::new(&Ping::default()).unwrap())
            .await
            .unwrap();
    }
    for listener in &mut listeners {
        let woken = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("a NOTIFY within 10 s")
            .unwrap();
        assert_eq!(woken.payload(), "default");
    }
}

/// A worker listens on its queue's channel: with a poll interval far beyond the deadline, only
/// the notification can have started the job in time.
#[tokio::test]
async fn a_worker_is_woken_on_its_queues_channel() {
    let db = test_db().await;
    let queue = jobs::Queue::new("other_app_jobs", SCHEMA).unwrap();
    let config = WorkerConfig {
        poll_interval: Duration::from_secs(600),
        queue: queue.clone(),
        ..fast_worker_config()
    };
    let ctx = Ctx {
        runs: Arc::new(AtomicUsize::new(0)),
    };
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(db.pool.clone(), ctx.clone(), registry(), config).run(shutdown.clone()),
    );
    // The worker's first claim finds nothing; wait until it is registered and idle.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&db.pool, "SELECT count(*) FROM jobs_test.job_workers").await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut conn = db.pool.acquire().await.unwrap();
    let id = queue
        .enqueue(&mut conn, &NewJob::new(&Ping::default()).unwrap())
        .await
        .unwrap();
    drop(conn);
    wait_for_state(&db.pool, id, &["completed"]).await;
    shutdown.cancel();
    worker.await.unwrap().unwrap();
}

/// Two queues in two schemas of one database share nothing: each has its own tables and
/// migration history, a worker of one never sees the other's jobs, and migrating again is a
/// no-op. (Every other test here runs in `jobs_test`; the application runs in `public`.)
#[tokio::test]
async fn queues_in_different_schemas_of_one_database_keep_their_jobs_apart() {
    let db = test_db().await;
    let other = jobs::Queue::new("other_app_jobs", "other_app").unwrap();
    other.migrate(&db.pool).await.unwrap();
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema, table_name FROM information_schema.tables
         WHERE table_name IN ('jobs', 'job_workers', '_syncbridge_jobs_migrations')
         ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let expected: Vec<(String, String)> = ["jobs_test", "other_app"]
        .iter()
        .flat_map(|s| {
            ["_syncbridge_jobs_migrations", "job_workers", "jobs"]
                .map(|t| (s.to_string(), t.to_string()))
        })
        .collect();
    assert_eq!(tables, expected, "nothing lands in public");

    let versions: Vec<i64> = jobs::migrator().iter().map(|m| m.version).collect();
    assert_eq!(other.applied_migrations(&db.pool).await.unwrap(), versions);
    assert_eq!(
        queue().applied_migrations(&db.pool).await.unwrap(),
        versions
    );
    other.migrate(&db.pool).await.unwrap();
    assert_eq!(other.applied_migrations(&db.pool).await.unwrap(), versions);

    let mut conn = db.pool.acquire().await.unwrap();
    let theirs = other
        .enqueue(&mut conn, &NewJob::new(&Ping::default()).unwrap())
        .await
        .unwrap();
    let ours = queue()
        .enqueue(&mut conn, &NewJob::new(&Ping::default()).unwrap())
        .await
        .unwrap();
    drop(conn);
    let everything = JobFilter::default();
    for q in [queue(), &other] {
        assert_eq!(
            jobs::admin::count(&db.pool, q, &everything).await.unwrap(),
            1
        );
    }

    let ctx = Ctx {
        runs: Arc::new(AtomicUsize::new(0)),
    };
    let config = WorkerConfig {
        queue: other.clone(),
        ..fast_worker_config()
    };
    let done = Worker::new(db.pool.clone(), ctx.clone(), registry(), config)
        .drain()
        .await
        .unwrap();
    assert_eq!(done, 1, "the other schema's worker ran its one job");
    let state: String = sqlx::query_scalar("SELECT state FROM other_app.jobs WHERE id = $1")
        .bind(theirs)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(state, "completed");
    assert_eq!(
        job_row(&db.pool, ours).await.state,
        "available",
        "ours was not touched"
    );
    assert_eq!(ctx.runs.load(Ordering::SeqCst), 1);
}

/// What a caller tracking work by job id asks: which of these will never run again? Dead,
/// cancelled and deleted jobs, in the order asked, with the dead one's last error; a live job is
/// not among them.
#[tokio::test]
async fn unrunnable_names_dead_cancelled_and_gone_jobs_in_the_order_asked() {
    let db = test_db().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let jobs = vec![NewJob::new(&Ping::default()).unwrap(); 4];
    let ids = queue().enqueue_many(&mut conn, &jobs).await.unwrap().ids;
    let (live, cancelled, dead, gone) = (ids[0], ids[1], ids[2], ids[3]);
    let n = jobs::admin::cancel_unfinished(&mut conn, queue(), &[cancelled])
        .await
        .unwrap();
    assert_eq!(n, 1);
    sqlx::query(
        "UPDATE jobs_test.jobs SET state = 'failed', finalized_at = now(),
             errors = '[{\"attempt\": 1, \"error\": \"first\"}, {\"attempt\": 2, \"error\": \"last\"}]'
         WHERE id = $1",
    )
    .bind(dead)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("DELETE FROM jobs_test.jobs WHERE id = $1")
        .bind(gone)
        .execute(&mut *conn)
        .await
        .unwrap();
    let asked = [gone, live, dead, cancelled];
    let found = jobs::admin::unrunnable(&mut conn, queue(), &asked)
        .await
        .unwrap();
    let seen: Vec<(i64, Option<JobState>, Option<&str>)> = found
        .iter()
        .map(|u| (u.id, u.state, u.last_error.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (gone, None, None),
            (dead, Some(JobState::Failed), Some("last")),
            (cancelled, Some(JobState::Cancelled), None),
        ]
    );
}
