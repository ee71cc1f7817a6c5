//! The engine's metrics, through the `metrics` facade (the application installs the exporter):
//! counters and histograms recorded where jobs change state, and gauges of the whole queue that
//! the maintenance leader samples, so N processes do not each run the same counting query.
//!
//! Names and labels are listed in [`NAMES`]; their meaning is in the crate's README.

use std::{collections::HashMap, future::Future, pin::Pin, sync::Mutex, time::Duration};

use sqlx::PgPool;

use crate::{Error, queue::Queue};

pub const ENQUEUED: &str = "syncbridge_jobs_enqueued_total";
pub const COMPLETED: &str = "syncbridge_jobs_completed_total";
pub const RETRIED: &str = "syncbridge_jobs_retried_total";
pub const DEAD: &str = "syncbridge_jobs_dead_total";
pub const RESCUED: &str = "syncbridge_jobs_rescued_total";
pub const RUN_DURATION: &str = "syncbridge_jobs_run_duration_seconds";
pub const CLAIM_BATCH: &str = "syncbridge_jobs_claim_batch_size";
pub const IN_STATE: &str = "syncbridge_jobs";
pub const OLDEST_AVAILABLE: &str = "syncbridge_jobs_oldest_available_age_seconds";

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric of the engine with its kind and what it counts, for the exporter's `# HELP`.
pub const NAMES: &[(&str, Kind, &str)] = &[
    (ENQUEUED, Kind::Counter, "Jobs inserted, by queue and kind"),
    (
        COMPLETED,
        Kind::Counter,
        "Job attempts that completed the job, by queue and kind",
    ),
    (
        RETRIED,
        Kind::Counter,
        "Failed attempts that left the job to retry, by queue and kind",
    ),
    (
        DEAD,
        Kind::Counter,
        "Jobs that failed for good (last attempt or permanent error), by queue and kind",
    ),
    (
        RESCUED,
        Kind::Counter,
        "Running jobs taken back from workers that stopped heartbeating or outlived their lease",
    ),
    (
        RUN_DURATION,
        Kind::Histogram,
        "Duration of job attempts, by queue, kind and outcome (completed, failed)",
    ),
    (
        CLAIM_BATCH,
        Kind::Histogram,
        "Jobs claimed by one claim query that found any, by queue",
    ),
    (
        IN_STATE,
        Kind::Gauge,
        "Jobs by queue, kind and live state (available, scheduled, running, retryable) and dead \
         (failed), sampled by the maintenance leader",
    ),
    (
        OLDEST_AVAILABLE,
        Kind::Gauge,
        "Age of the oldest job waiting to run, by queue, sampled by the maintenance leader",
    ),
];

pub(crate) fn enqueued(queue: &str, kind: &str, n: u64) {
    if n > 0 {
        metrics::counter!(ENQUEUED, "queue" => queue.to_string(), "kind" => kind.to_string())
            .increment(n);
    }
}

pub(crate) fn finished(queue: &str, kind: &str, outcome: Finished, elapsed: Duration) {
    let (name, run) = match outcome {
        Finished::Completed => (COMPLETED, "completed"),
        Finished::Retried => (RETRIED, "failed"),
        Finished::Dead => (DEAD, "failed"),
    };
    metrics::counter!(name, "queue" => queue.to_string(), "kind" => kind.to_string()).increment(1);
    metrics::histogram!(RUN_DURATION, "queue" => queue.to_string(), "kind" => kind.to_string(), "outcome" => run)
        .record(elapsed.as_secs_f64());
}

pub(crate) enum Finished {
    Completed,
    Retried,
    Dead,
}

pub(crate) fn rescued(n: u64) {
    if n > 0 {
        metrics::counter!(RESCUED).increment(n);
    }
}

/// Claims that found nothing (a poll of an idle queue) are not recorded: they say nothing of
/// batch sizes.
pub(crate) fn claimed(queue: &str, n: usize) {
    if n == 0 {
        return;
    }
    metrics::histogram!(CLAIM_BATCH, "queue" => queue.to_string()).record(n as f64);
}

/// Labels of one gauge series.
pub type Labels = Vec<(&'static str, String)>;

/// A gauge family set from a sample of the whole table: a series missing from a new sample (no
/// job of that kind is in that state any more) goes to 0 instead of keeping its last value, and
/// [`SampledGauge::clear`] zeroes them all when this process stops sampling (it lost the
/// leadership: the new leader reports them now, and a sum over processes stays right).
pub struct SampledGauge {
    name: &'static str,
    reported: Mutex<Vec<Labels>>,
}

impl SampledGauge {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            reported: Mutex::new(Vec::new()),
        }
    }

    pub fn set_all(&self, sample: HashMap<Labels, f64>) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        for gone in reported.iter().filter(|l| !sample.contains_key(*l)) {
            metrics::gauge!(self.name, gone).set(0.0);
        }
        for (labels, value) in &sample {
            metrics::gauge!(self.name, labels).set(*value);
        }
        *reported = sample.into_keys().collect();
    }

    pub fn clear(&self) {
        self.set_all(HashMap::new());
    }
}

/// What the leader samples besides the engine's own gauges (the application's open syncs, say).
pub trait Sampler: Send + Sync {
    fn sample<'a>(
        &'a self,
        pool: &'a PgPool,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;
    /// This process stopped sampling: zero what it reported.
    fn clear(&self);
}

static IN_STATE_GAUGE: SampledGauge = SampledGauge::new(IN_STATE);
static OLDEST_GAUGE: SampledGauge = SampledGauge::new(OLDEST_AVAILABLE);

/// Counts the live and dead jobs by queue, kind and state, and the oldest available job's age by
/// queue. Every state counted has a partial index (`jobs_fetch_idx`, `jobs_waiting_idx`,
/// `jobs_running_idx`, `jobs_dead_tag_idx`), so no completed history is read.
pub(crate) async fn sample(pool: &PgPool, queue: &Queue) -> Result<(), Error> {
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(queue.sql(
        "SELECT queue, kind, state, count(*) FROM {jobs}
         WHERE state IN ('available', 'scheduled', 'running', 'retryable', 'failed')
         GROUP BY queue, kind, state",
    ))
    .fetch_all(pool)
    .await?;
    IN_STATE_GAUGE.set_all(
        rows.into_iter()
            .map(|(queue, kind, state, n)| {
                (
                    vec![("queue", queue), ("kind", kind), ("state", state)],
                    n as f64,
                )
            })
            .collect(),
    );
    let oldest: Vec<(String, f64)> = sqlx::query_as(queue.sql(
        "SELECT queue, extract(epoch FROM now() - min(scheduled_at))::float8 FROM {jobs}
         WHERE state = 'available' GROUP BY queue",
    ))
    .fetch_all(pool)
    .await?;
    OLDEST_GAUGE.set_all(
        oldest
            .into_iter()
            .map(|(queue, age)| (vec![("queue", queue)], age.max(0.0)))
            .collect(),
    );
    Ok(())
}

pub(crate) fn clear_samples() {
    IN_STATE_GAUGE.clear();
    OLDEST_GAUGE.clear();
}
