//! Queue engine benchmark: drain, bulk enqueue, single enqueue (1 and 16 tasks), pickup latency.
//!
//! `cargo bench --bench queue` starts a private, durable PostgreSQL in `target/bench-pg` (or uses
//! `DATABASE_URL`), creates a fresh database, and runs every measurement `BENCH_RUNS` times
//! (default 3), printing each figure's median. Results are recorded in `jobs/README.md`.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

mod common;

use common::{BenchDb, median};
use jobs::{Job, JobError, JobMeta, NewJob, PlainJob, Registry, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};
use sqlx::{Executor, PgPool, postgres::PgPoolOptions};
use tokio_util::sync::CancellationToken;

/// The queue every enqueue here goes through: one per process, as in the service, so its NOTIFY
/// debounce works as it does there.
fn queue() -> &'static jobs::Queue {
    static QUEUE: std::sync::OnceLock<jobs::Queue> = std::sync::OnceLock::new();
    QUEUE.get_or_init(jobs::Queue::default)
}

#[derive(Clone, Default)]
struct Ctx {
    done: Arc<AtomicUsize>,
    latencies_us: Arc<Mutex<Vec<i64>>>,
}

#[derive(Serialize, Deserialize)]
struct Noop;
impl Job for Noop {
    const KIND: &'static str = "bench_noop";
}
impl PlainJob<Ctx> for Noop {
    async fn run(&self, ctx: &Ctx, _: &JobMeta) -> Result<(), JobError> {
        ctx.done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Records enqueue → start latency; `enqueued_us` is wall-clock microseconds.
#[derive(Serialize, Deserialize)]
struct Stamp {
    enqueued_us: i64,
}
impl Job for Stamp {
    const KIND: &'static str = "bench_stamp";
}
impl PlainJob<Ctx> for Stamp {
    async fn run(&self, ctx: &Ctx, _: &JobMeta) -> Result<(), JobError> {
        let now = chrono::Utc::now().timestamp_micros();
        ctx.latencies_us
            .lock()
            .unwrap()
            .push(now - self.enqueued_us);
        Ok(())
    }
}

fn last(v: &[f64]) -> f64 {
    v.last().copied().unwrap_or(f64::NAN)
}

async fn reset(pool: &PgPool) {
    pool.execute("TRUNCATE jobs, job_workers, job_leader, job_queues, job_schedules")
        .await
        .unwrap();
}

/// Jobs whose arguments differ, as real batches' do (a chunk index, a record id).
#[derive(Serialize, Deserialize)]
struct Numbered {
    n: usize,
}
impl Job for Numbered {
    const KIND: &'static str = "bench_numbered";
}

/// Enqueues `n` jobs 10,000 per statement: identical no-op jobs, or (`distinct`) jobs whose
/// arguments differ, so that column goes as an array while the uniform ones go once.
async fn bulk_insert(pool: &PgPool, n: usize, distinct: bool) -> Duration {
    let chunks: Vec<Vec<NewJob>> = (0..n.div_ceil(10_000))
        .map(|c| {
            (0..10_000.min(n - c * 10_000))
                .map(|i| {
                    if distinct {
                        NewJob::new(&Numbered { n: c * 10_000 + i }).unwrap()
                    } else {
                        NewJob::new(&Noop).unwrap()
                    }
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    for chunk in &chunks {
        let mut conn = pool.acquire().await.unwrap();
        queue().enqueue_many(&mut conn, chunk).await.unwrap();
    }
    started.elapsed()
}

async fn drain(pool: &PgPool, n: usize) -> Duration {
    let ctx = Ctx::default();
    let registry = Registry::new().queue("default", 1_000).plain::<Noop>();
    let config = WorkerConfig {
        fetch_batch: 1_000,
        poll_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(
        Worker::new(pool.clone(), ctx.clone(), registry, config).run(shutdown.clone()),
    );
    while ctx.done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Completions are batched: wait until the database says every job is completed.
    loop {
        let completed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'completed'")
                .fetch_one(pool)
                .await
                .unwrap();
        if completed as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    elapsed
}

/// `tasks` concurrent tasks each enqueue `per_task` jobs, each job committed on its own: as an
/// autocommit statement, or (`explicit_tx`) inside BEGIN … COMMIT as a caller's transaction would.
async fn single_enqueue(
    pool: &PgPool,
    tasks: usize,
    per_task: usize,
    explicit_tx: bool,
) -> Duration {
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            let job = NewJob::new(&Noop).unwrap();
            for _ in 0..per_task {
                if explicit_tx {
                    let mut tx = pool.begin().await.unwrap();
                    queue().enqueue(&mut tx, &job).await.unwrap();
                    tx.commit().await.unwrap();
                } else {
                    let mut conn = pool.acquire().await.unwrap();
                    queue().enqueue(&mut conn, &job).await.unwrap();
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    started.elapsed()
}

/// Enqueues `n` jobs one at a time, `gap` apart, to idle workers; returns (average, p99) in ms.
async fn pickup(pool: &PgPool, n: usize, gap: Duration) -> (f64, f64) {
    let ctx = Ctx::default();
    let registry = Registry::new().queue("default", 20).plain::<Stamp>();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(pool.clone(), ctx.clone(), registry, WorkerConfig::default())
            .run(shutdown.clone()),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..n {
        let job = NewJob::new(&Stamp {
            enqueued_us: chrono::Utc::now().timestamp_micros(),
        })
        .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        queue().enqueue(&mut conn, &job).await.unwrap();
        drop(conn);
        tokio::time::sleep(gap).await;
    }
    while ctx.latencies_us.lock().unwrap().len() < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    let mut l = ctx.latencies_us.lock().unwrap().clone();
    l.sort_unstable();
    let avg = l.iter().sum::<i64>() as f64 / l.len() as f64 / 1000.0;
    let p99 = l[(l.len() * 99 / 100).min(l.len() - 1)] as f64 / 1000.0;
    (avg, p99)
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let n: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);

    // `BENCH_ONLY=bulk,drain` runs a subset while tuning one path; the table needs every part.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wants = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);

    let bench = BenchDb::create("queue_bench").await;
    // The owner, not the service role: the benchmark truncates the queue tables between runs.
    let pool = PgPoolOptions::new()
        .max_connections(24)
        .test_before_acquire(false)
        .connect_with(bench.owner_options.clone())
        .await
        .unwrap();

    let (mut bulk, mut drained, mut single1, mut single16, mut avg, mut p99) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut bulk_distinct = vec![];
    let (mut single1_tx, mut single16_tx) = (vec![], vec![]);
    for run in 1..=runs {
        reset(&pool).await;
        let t = bulk_insert(&pool, n, true).await;
        bulk_distinct.push(n as f64 / t.as_secs_f64());
        reset(&pool).await;
        let t = bulk_insert(&pool, n, false).await;
        bulk.push(n as f64 / t.as_secs_f64());
        if wants("drain") {
            let t = drain(&pool, n).await;
            drained.push(n as f64 / t.as_secs_f64());
        }
        if wants("single") {
            reset(&pool).await;
            let per = 3_000;
            single1.push(per as f64 / single_enqueue(&pool, 1, per, false).await.as_secs_f64());
            single16.push(
                (16 * per) as f64 / single_enqueue(&pool, 16, per, false).await.as_secs_f64(),
            );
            single1_tx.push(per as f64 / single_enqueue(&pool, 1, per, true).await.as_secs_f64());
            single16_tx
                .push((16 * per) as f64 / single_enqueue(&pool, 16, per, true).await.as_secs_f64());
        }
        if wants("pickup") {
            reset(&pool).await;
            let (a, p) = pickup(&pool, 300, Duration::from_millis(10)).await;
            avg.push(a);
            p99.push(p);
        }
        eprintln!(
            "run {run}: bulk {:.0}/s (distinct args {:.0}/s), drain {:.0}/s, single(1) {:.0}/s, single(16) {:.0}/s, \
             single in BEGIN/COMMIT (1) {:.0}/s (16) {:.0}/s, pickup avg {:.2} ms p99 {:.2} ms",
            last(&bulk),
            last(&bulk_distinct),
            last(&drained),
            last(&single1),
            last(&single16),
            last(&single1_tx),
            last(&single16_tx),
            last(&avg),
            last(&p99)
        );
    }

    // Table health after a full drain: size and dead tuples left for autovacuum.
    reset(&pool).await;
    bulk_insert(&pool, n, false).await;
    if wants("drain") {
        drain(&pool, n).await;
    }
    let (size, dead, live): (i64, i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('jobs'), n_dead_tup, n_live_tup
         FROM pg_stat_user_tables WHERE relname = 'jobs'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    println!("| measurement ({runs} runs, median) | result |");
    println!("|---|---|");
    println!("| drain {n} no-op jobs | {:.0} jobs/s |", median(drained));
    println!("| bulk enqueue {n} | {:.0} jobs/s |", median(bulk));
    println!(
        "| bulk enqueue {n}, distinct args | {:.0} jobs/s |",
        median(bulk_distinct)
    );
    println!(
        "| single enqueue, one per transaction, 1 task | {:.0} jobs/s |",
        median(single1)
    );
    println!(
        "| single enqueue, one per transaction, 16 tasks | {:.0} jobs/s |",
        median(single16)
    );
    println!(
        "| single enqueue in an explicit BEGIN/COMMIT, 1 task | {:.0} jobs/s |",
        median(single1_tx)
    );
    println!(
        "| single enqueue in an explicit BEGIN/COMMIT, 16 tasks | {:.0} jobs/s |",
        median(single16_tx)
    );
    println!(
        "| pickup latency, idle workers, average | {:.2} ms |",
        median(avg)
    );
    println!(
        "| pickup latency, idle workers, p99 | {:.2} ms |",
        median(p99)
    );
    println!(
        "| jobs table after draining {n} | {:.1} MiB, {live} live / {dead} dead tuples |",
        size as f64 / 1048576.0
    );

    pool.close().await;
    bench.finish().await;
}
