//! Operator actions on jobs: list and count by filter, retry, cancel or delete any number of
//! jobs by ids or by filter (server-side, in batches), pause and resume queues, and statistics.
//! Every statement is fixed text (its schema aside) with bound parameters: filters are never
//! interpolated.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use crate::{Error, queue::Queue};

/// The states of a job; see the crate README for the diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Available,
    Scheduled,
    Running,
    Retryable,
    Completed,
    /// Dead: out of attempts, or failed permanently. Admins can retry it.
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        Self::Available,
        Self::Scheduled,
        Self::Running,
        Self::Retryable,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Retryable => "retryable",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = if s == "dead" { "failed" } else { s };
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown job state `{s}`; expected one of: dead, {}",
                    Self::ALL.map(|s| s.as_str()).join(", ")
                ))
            })
    }
}

/// Which jobs an admin action applies to; empty fields match everything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobFilter {
    #[serde(default)]
    pub ids: Vec<i64>,
    #[serde(default)]
    pub states: Vec<JobState>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub tag: Option<String>,
}

impl JobFilter {
    /// True when it names no jobs at all, i.e. would match every job.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.states.is_empty()
            && self.queue.is_none()
            && self.kind.is_none()
            && self.tag.is_none()
    }

    fn states(&self) -> Option<Vec<&'static str>> {
        (!self.states.is_empty()).then(|| self.states.iter().map(|s| s.as_str()).collect())
    }

    fn ids(&self) -> Option<&[i64]> {
        (!self.ids.is_empty()).then_some(self.ids.as_slice())
    }
}

/// Binds a [`JobFilter`] to $1..$5 of a statement built on `filter!()`, in that one order.
macro_rules! bind_filter {
    ($query:expr, $filter:expr) => {
        $query
            .bind($filter.ids())
            .bind($filter.states())
            .bind(&$filter.queue)
            .bind(&$filter.kind)
            .bind(&$filter.tag)
    };
}

/// The filter as SQL over parameters $1..$5; every admin statement shares it (a macro, so that
/// `concat!` makes each statement one fixed text).
macro_rules! filter {
    () => {
        "($1::bigint[] IS NULL OR id = ANY($1))
         AND ($2::text[] IS NULL OR state = ANY($2))
         AND ($3::text IS NULL OR queue = $3)
         AND ($4::text IS NULL OR kind = $4)
         AND ($5::text IS NULL OR tag = $5)"
    };
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobSummary {
    pub id: i64,
    pub kind: String,
    pub queue: String,
    pub state: String,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub tag: Option<String>,
    pub unique_key: Option<String>,
    pub args: serde_json::Value,
    pub scheduled_at: DateTime<Utc>,
    pub attempted_at: Option<DateTime<Utc>>,
    pub attempted_by: Option<String>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Every failed attempt: `{attempt, at, error, worker?}`.
    pub errors: serde_json::Value,
}

const LIST: &str = concat!(
    "SELECT id, kind, queue, state, priority, attempt, max_attempts, tag, unique_key, args,
            scheduled_at, attempted_at, attempted_by, finalized_at, created_at, errors
     FROM {jobs} WHERE ",
    filter!(),
    " AND ($6::bigint IS NULL OR id < $6)
     ORDER BY id DESC LIMIT $7"
);

const COUNT: &str = concat!("SELECT count(*) FROM {jobs} WHERE ", filter!());

/// Jobs matching `filter`, newest first, `limit` at most, older than `before_id` when paging.
pub async fn list(
    pool: &PgPool,
    queue: &Queue,
    filter: &JobFilter,
    limit: i64,
    before_id: Option<i64>,
) -> Result<Vec<JobSummary>, Error> {
    Ok(
        bind_filter!(sqlx::query_as::<_, JobSummary>(queue.sql(LIST)), filter)
            .bind(before_id)
            .bind(limit.clamp(1, 10_000))
            .fetch_all(pool)
            .await?,
    )
}

/// How many jobs match `filter`.
pub async fn count(pool: &PgPool, queue: &Queue, filter: &JobFilter) -> Result<i64, Error> {
    Ok(bind_filter!(sqlx::query_scalar(queue.sql(COUNT)), filter)
        .fetch_one(pool)
        .await?)
}

/// An action applied in batches; each variant says which states it may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// Dead, cancelled, retryable or scheduled → available now, with at least one attempt left.
    Retry,
    /// Not yet finished → cancelled. A running job's result is then ignored.
    Cancel,
    /// Anything not running → gone.
    Delete,
}

/// One batch of a bulk action: the next `$8` matching jobs after id `$7` in the states `$6`
/// allows, locked, then the action's statement over them.
macro_rules! bulk {
    ($action:expr) => {
        concat!(
            "WITH batch AS (
                 SELECT id FROM {jobs}
                 WHERE ",
            filter!(),
            " AND state = ANY($6) AND id > $7
                 ORDER BY id LIMIT $8
                 FOR UPDATE SKIP LOCKED
             ), done AS (",
            $action,
            ")
             SELECT (SELECT max(id) FROM batch), (SELECT count(*) FROM done),
                    ARRAY(SELECT DISTINCT queue FROM done)"
        )
    };
}

const BULK_RETRY: &str = bulk!(
    "UPDATE {jobs} SET state = 'available', scheduled_at = now(), finalized_at = NULL,
            max_attempts = GREATEST(max_attempts, attempt + 1)
     FROM batch WHERE jobs.id = batch.id
       AND (jobs.unique_key IS NULL OR NOT EXISTS (
            SELECT 1 FROM {jobs} live WHERE live.unique_key = jobs.unique_key
              AND live.state IN ('available', 'scheduled', 'running', 'retryable')
              AND live.id <> jobs.id))
     RETURNING jobs.id, jobs.queue"
);
const BULK_CANCEL: &str = bulk!(
    "UPDATE {jobs} SET state = 'cancelled', finalized_at = now()
     FROM batch WHERE jobs.id = batch.id RETURNING jobs.id, jobs.queue"
);
const BULK_DELETE: &str =
    bulk!("DELETE FROM {jobs} USING batch WHERE jobs.id = batch.id RETURNING jobs.id, jobs.queue");

impl BulkAction {
    fn statement(self) -> &'static str {
        match self {
            Self::Retry => BULK_RETRY,
            Self::Cancel => BULK_CANCEL,
            Self::Delete => BULK_DELETE,
        }
    }

    /// Whether the action changes jobs in `state` (so a count of a filter on such states is
    /// exactly what it will touch).
    pub fn touches(self, state: JobState) -> bool {
        self.allowed_states().contains(&state.as_str())
    }

    fn allowed_states(self) -> &'static [&'static str] {
        match self {
            Self::Retry => &["failed", "cancelled", "retryable", "scheduled"],
            Self::Cancel => &["available", "scheduled", "running", "retryable"],
            Self::Delete => &[
                "available",
                "scheduled",
                "retryable",
                "completed",
                "failed",
                "cancelled",
            ],
        }
    }
}

/// Cancels the jobs among `ids` that have not finished (available, scheduled, running or
/// retryable), in the caller's transaction, so that it can settle what those jobs were doing in
/// the same commit: a running attempt cancelled here cannot complete afterwards (completions are
/// fenced on `state = 'running'`). Returns how many were cancelled.
pub async fn cancel_unfinished(
    conn: &mut PgConnection,
    queue: &Queue,
    ids: &[i64],
) -> Result<u64, Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(queue.sql(
        "UPDATE {jobs} SET state = 'cancelled', finalized_at = now()
         WHERE id = ANY($1) AND state IN ('available', 'scheduled', 'running', 'retryable')",
    ))
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Applies `action` to every job matching `filter` (and allowed for the action), `batch` rows per
/// statement, calling `progress` with the running total. Returns how many jobs it changed.
pub async fn apply(
    pool: &PgPool,
    queue: &Queue,
    action: BulkAction,
    filter: &JobFilter,
    batch: i64,
    mut progress: impl FnMut(u64),
) -> Result<u64, Error> {
    let mut cursor = 0_i64;
    let mut total = 0_u64;
    loop {
        let (last, changed, queues): (Option<i64>, i64, Vec<String>) =
            bind_filter!(sqlx::query_as(queue.sql(action.statement())), filter)
                .bind(action.allowed_states())
                .bind(cursor)
                .bind(batch.max(1))
                .fetch_one(pool)
                .await?;
        total += changed as u64;
        if action == BulkAction::Retry {
            for name in queues {
                queue.notify_now(pool, &name).await?;
            }
        }
        progress(total);
        match last {
            Some(last) => cursor = last,
            None => break,
        }
    }
    Ok(total)
}

/// Pauses `name`: its workers claim nothing until it is resumed.
pub async fn pause_queue(pool: &PgPool, queue: &Queue, name: &str) -> Result<(), Error> {
    sqlx::query(queue.sql(
        "INSERT INTO {job_queues} (name, paused_at) VALUES ($1, now())
         ON CONFLICT (name) DO UPDATE SET paused_at = now(), updated_at = now()",
    ))
    .bind(name)
    .execute(pool)
    .await?;
    Ok(())
}

/// Resumes `name` and wakes its idle workers on `queue`'s channel.
pub async fn resume_queue(pool: &PgPool, queue: &Queue, name: &str) -> Result<(), Error> {
    sqlx::query(
        queue.sql("UPDATE {job_queues} SET paused_at = NULL, updated_at = now() WHERE name = $1"),
    )
    .bind(name)
    .execute(pool)
    .await?;
    queue.notify_now(pool, name).await?;
    Ok(())
}

/// Jobs per queue and state, with the age of the oldest available job of each queue.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct QueueStats {
    pub queue: String,
    pub state: String,
    pub count: i64,
    /// Seconds the oldest runnable job has waited (available rows only).
    pub oldest_available_age_secs: Option<f64>,
    pub paused: bool,
}

pub async fn stats(pool: &PgPool, queue: &Queue) -> Result<Vec<QueueStats>, Error> {
    Ok(sqlx::query_as::<_, QueueStats>(queue.sql(
        "SELECT j.queue, j.state, count(*) AS count,
                CASE WHEN j.state = 'available'
                     THEN extract(epoch FROM now() - min(j.scheduled_at))::float8 END
                    AS oldest_available_age_secs,
                coalesce(bool_or(q.paused_at IS NOT NULL), false) AS paused
         FROM {jobs} j LEFT JOIN {job_queues} q ON q.name = j.queue
         GROUP BY j.queue, j.state
         ORDER BY j.queue, j.state",
    ))
    .fetch_all(pool)
    .await?)
}

/// A job that will not run again unless an admin retries it: dead (`failed`), `cancelled`, or
/// gone (deleted or pruned; `state` is then `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrunnable {
    pub id: i64,
    pub state: Option<JobState>,
    /// The error of its last failed attempt, if it had one.
    pub last_error: Option<String>,
}

/// Which of `ids` will not run again (see [`Unrunnable`]), in the order of `ids`, so that a
/// caller tracking work by job id can settle what those jobs were for.
pub async fn unrunnable(
    conn: &mut PgConnection,
    queue: &Queue,
    ids: &[i64],
) -> Result<Vec<Unrunnable>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, Option<String>, Option<String>)> = sqlx::query_as(queue.sql(
        "SELECT i.id, j.state, j.errors -> -1 ->> 'error'
         FROM unnest($1::bigint[]) WITH ORDINALITY AS i(id, n)
         LEFT JOIN {jobs} j ON j.id = i.id
         WHERE j.id IS NULL OR j.state IN ('failed', 'cancelled')
         ORDER BY i.n",
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|(id, state, last_error)| {
            Ok(Unrunnable {
                id,
                state: state.as_deref().map(str::parse).transpose()?,
                last_error,
            })
        })
        .collect()
}
