//! Enqueueing: one job or many in one statement, on any executor, so a caller's open transaction
//! commits its business rows and its jobs together (or neither).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sqlx::{Arguments, Encode, PgConnection, PgExecutor, Postgres, Type, postgres::PgArguments};

use crate::{Error, job::Job};

/// The channel workers LISTEN on unless configured otherwise; the payload is the queue name.
pub const DEFAULT_CHANNEL: &str = "syncbridge_jobs";
/// At most one NOTIFY per queue per process in this window: a NOTIFY serialises commits, so one
/// per insert would cap enqueue throughput. Workers also poll, so a skipped one costs little.
const NOTIFY_DEBOUNCE: Duration = Duration::from_millis(5);

/// A job ready to be inserted.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub queue: String,
    pub args: serde_json::Value,
    pub priority: i16,
    pub max_attempts: i32,
    pub timeout: Option<Duration>,
    pub retry_delay: Option<Duration>,
    pub unique_key: Option<String>,
    pub tag: Option<String>,
    /// `None`: run now. In the future: the job waits in `scheduled`.
    pub run_at: Option<DateTime<Utc>>,
}

impl NewJob {
    pub fn new<J: Job>(job: &J) -> Result<Self, Error> {
        Ok(Self {
            kind: J::KIND.to_string(),
            queue: J::QUEUE.to_string(),
            args: serde_json::to_value(job)?,
            priority: J::PRIORITY,
            max_attempts: J::MAX_ATTEMPTS,
            timeout: Some(J::TIMEOUT),
            retry_delay: job.retry_delay(),
            unique_key: job.unique_key(),
            tag: job.tag(),
            run_at: None,
        })
    }

    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    fn runs_now(&self) -> bool {
        self.run_at.is_none_or(|at| at <= Utc::now())
    }
}

fn millis(d: Option<Duration>) -> Option<i32> {
    d.map(|d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX))
}

const LIVE_STATES: &str = "('available', 'scheduled', 'running', 'retryable')";

const SINGLE_INSERT: &str = "INSERT INTO jobs (kind, queue, args, state, priority, max_attempts, timeout_ms,
                       retry_delay_ms, unique_key, tag, scheduled_at)
     VALUES ($1, $2, $3,
             CASE WHEN $10::timestamptz IS NULL OR $10 <= now() THEN 'available' ELSE 'scheduled' END,
             $4, $5, $6, $7, $8, $9, COALESCE($10, now()))
     RETURNING id";

/// The same insert, yielding to a live job holding the unique key.
const SINGLE_INSERT_UNIQUE: &str = "INSERT INTO jobs (kind, queue, args, state, priority, max_attempts, timeout_ms,
                       retry_delay_ms, unique_key, tag, scheduled_at)
     VALUES ($1, $2, $3,
             CASE WHEN $10::timestamptz IS NULL OR $10 <= now() THEN 'available' ELSE 'scheduled' END,
             $4, $5, $6, $7, $8, $9, COALESCE($10, now()))
     ON CONFLICT (unique_key)
         WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable')
         DO NOTHING
     RETURNING id";

/// The engine as one database's users share it: the channel its workers LISTEN on (so two
/// applications, or two test suites, can share a server without waking each other's workers)
/// and the memory of its recent NOTIFYs. Enqueueing, workers, maintenance and the admin's retries
/// all take it; a process holds one per database, so NOTIFYs are debounced per database.
#[derive(Clone, Debug)]
pub struct Queue(Arc<QueueInner>);

#[derive(Debug)]
struct QueueInner {
    channel: String,
    /// When this process last sent a NOTIFY per queue name.
    last_notify: Mutex<HashMap<String, Instant>>,
}

impl Default for Queue {
    fn default() -> Self {
        Self::with_channel(DEFAULT_CHANNEL)
    }
}

impl Queue {
    /// A queue whose workers listen on `channel`: 1 to 63 characters, lowercase letters, digits
    /// and `_` (a PostgreSQL identifier that needs no quoting).
    pub fn new(channel: &str) -> Result<Self, Error> {
        let valid = !channel.is_empty()
            && channel.len() <= 63
            && channel
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "the queue's channel must be 1 to 63 lowercase letters, digits or `_`, not {channel:?}"
            )));
        }
        Ok(Self::with_channel(channel))
    }

    fn with_channel(channel: &str) -> Self {
        Self(Arc::new(QueueInner {
            channel: channel.to_string(),
            last_notify: Mutex::new(HashMap::new()),
        }))
    }

    /// The channel its workers LISTEN on.
    pub fn channel(&self) -> &str {
        &self.0.channel
    }

    /// Inserts one job and returns its id, or the id of the live job holding its unique key.
    pub async fn enqueue(&self, conn: &mut PgConnection, job: &NewJob) -> Result<i64, Error> {
        enqueue(self, conn, job).await
    }

    /// Inserts many jobs in one statement; see [`Enqueued`].
    pub async fn enqueue_many(
        &self,
        conn: &mut PgConnection,
        jobs: &[NewJob],
    ) -> Result<Enqueued, Error> {
        enqueue_many(self, conn, jobs).await
    }

    /// Wakes idle workers of `queue` when the enclosing transaction commits, at most once per
    /// [`NOTIFY_DEBOUNCE`] per queue name for this database in this process.
    pub(crate) async fn notify(&self, conn: &mut PgConnection, queue: &str) -> Result<(), Error> {
        let due = {
            let mut last = self.0.last_notify.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            match last.get(queue) {
                Some(at) if now.duration_since(*at) < NOTIFY_DEBOUNCE => false,
                _ => {
                    last.insert(queue.to_string(), now);
                    true
                }
            }
        };
        if due {
            self.notify_now(conn, queue).await?;
        }
        Ok(())
    }

    /// Wakes idle workers of `queue` when the enclosing transaction (or statement) ends.
    pub(crate) async fn notify_now<'e>(
        &self,
        conn: impl PgExecutor<'e>,
        queue: &str,
    ) -> Result<(), Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(self.channel())
            .bind(queue)
            .execute(conn)
            .await?;
        Ok(())
    }
}

async fn enqueue(queue: &Queue, conn: &mut PgConnection, job: &NewJob) -> Result<i64, Error> {
    // A conflicting insert by a concurrent transaction can leave neither a new row nor a visible
    // old one; trying again then sees the outcome of that transaction.
    for _ in 0..5 {
        let sql = if job.unique_key.is_some() {
            SINGLE_INSERT_UNIQUE
        } else {
            SINGLE_INSERT
        };
        let inserted: Option<i64> = sqlx::query_scalar(sql)
            .bind(&job.kind)
            .bind(&job.queue)
            .bind(&job.args)
            .bind(job.priority)
            .bind(job.max_attempts)
            .bind(millis(job.timeout))
            .bind(millis(job.retry_delay))
            .bind(&job.unique_key)
            .bind(&job.tag)
            .bind(job.run_at)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(id) = inserted {
            if job.runs_now() {
                queue.notify(&mut *conn, &job.queue).await?;
            }
            return Ok(id);
        }
        let key = job.unique_key.as_deref().unwrap_or_default();
        if let Some(id) = live_job_with_key(&mut *conn, key).await? {
            return Ok(id);
        }
    }
    Err(Error::UniqueContention(
        job.unique_key.clone().unwrap_or_default(),
    ))
}

async fn live_job_with_key<'e>(conn: impl PgExecutor<'e>, key: &str) -> Result<Option<i64>, Error> {
    let sql = format!("SELECT id FROM jobs WHERE unique_key = $1 AND state IN {LIVE_STATES}");
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .fetch_optional(conn)
        .await?)
}

/// What a bulk enqueue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// Ids of every job asked for: the newly inserted ones first, in the order of the jobs given
    /// (rows are inserted in the order of the arrays and ids grow with each row), then live ones
    /// holding a unique key. Without unique keys, `ids[i]` is the job of `jobs[i]`.
    pub ids: Vec<i64>,
    /// How many rows were new.
    pub inserted: usize,
}

/// Inserts many jobs in one statement (`unnest` of arrays). Jobs whose unique key is held by a
/// live job (or by an earlier job in the same call) are not inserted; their live id is returned.
///
/// The statement is built here, at run time: which columns go as one value and which as arrays
/// depends on the jobs (see [`BulkColumns`]). Its text is a function of that shape alone (which
/// columns are arrays, whether any job has a unique key), so PostgreSQL prepares it once per
/// shape; `tests/queue.rs` (`bulk_enqueue_stores_every_column_whether_jobs_share_it_or_not`) runs
/// the uniform, mixed and all-array shapes.
async fn enqueue_many(
    engine: &Queue,
    conn: &mut PgConnection,
    jobs: &[NewJob],
) -> Result<Enqueued, Error> {
    if jobs.is_empty() {
        return Ok(Enqueued {
            ids: Vec::new(),
            inserted: 0,
        });
    }
    let n = jobs.len();
    // Speculative insertion for ON CONFLICT costs about a third of the insert time, so a batch
    // without unique keys does without it.
    let any_unique = jobs.iter().any(|j| j.unique_key.is_some());
    let mut b = BulkColumns::default();
    let kind = b.column(
        "kind",
        "text",
        jobs.iter().map(|j| j.kind.clone()).collect(),
    )?;
    let queue = b.column(
        "queue",
        "text",
        jobs.iter().map(|j| j.queue.clone()).collect(),
    )?;
    let args = b.column(
        "args",
        "text",
        jobs.iter().map(|j| j.args.to_string()).collect(),
    )?;
    let priority = b.column(
        "priority",
        "int2",
        jobs.iter().map(|j| j.priority).collect(),
    )?;
    let max_attempts = b.column(
        "max_attempts",
        "int4",
        jobs.iter().map(|j| j.max_attempts).collect(),
    )?;
    let timeout = b.column(
        "timeout_ms",
        "int4",
        jobs.iter().map(|j| millis(j.timeout)).collect(),
    )?;
    let retry_delay = b.column(
        "retry_delay_ms",
        "int4",
        jobs.iter().map(|j| millis(j.retry_delay)).collect(),
    )?;
    let unique_key = b.column(
        "unique_key",
        "text",
        jobs.iter().map(|j| j.unique_key.clone()).collect(),
    )?;
    let tag = b.column("tag", "text", jobs.iter().map(|j| j.tag.clone()).collect())?;
    let run_at = b.column(
        "run_at",
        "timestamptz",
        jobs.iter().map(|j| j.run_at).collect(),
    )?;
    let from = b.from(n)?;
    // The ids come back as two arrays in one row: decoding one row per job costs the client more
    // than the insert costs the server, and the server waits on the socket meanwhile.
    let sql = format!(
        "WITH inserted AS (
         INSERT INTO jobs (kind, queue, args, state, priority, max_attempts, timeout_ms,
                           retry_delay_ms, unique_key, tag, scheduled_at)
         SELECT {kind}, {queue}, ({args})::jsonb,
                CASE WHEN {run_at} IS NULL OR {run_at} <= now() THEN 'available' ELSE 'scheduled' END,
                {priority}, {max_attempts}, {timeout}, {retry_delay}, {unique_key}, {tag},
                COALESCE({run_at}, now())
         FROM {from}
         {}
         RETURNING id, unique_key)
         SELECT COALESCE(array_agg(id ORDER BY id), '{{}}'),
                COALESCE(array_agg(unique_key) FILTER (WHERE unique_key IS NOT NULL), '{{}}')
         FROM inserted",
        if any_unique {
            "ON CONFLICT (unique_key)
             WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable')
             DO NOTHING"
        } else {
            ""
        }
    );
    let (mut ids, inserted_keys): (Vec<i64>, Vec<String>) =
        sqlx::query_as_with(sqlx::AssertSqlSafe(sql), b.args)
            .fetch_one(&mut *conn)
            .await?;

    let inserted = ids.len();
    let inserted_keys: std::collections::HashSet<&str> =
        inserted_keys.iter().map(String::as_str).collect();
    let mut missing: Vec<&str> = jobs
        .iter()
        .filter_map(|j| j.unique_key.as_deref())
        .filter(|k| !inserted_keys.contains(k))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        let sql =
            format!("SELECT id FROM jobs WHERE unique_key = ANY($1) AND state IN {LIVE_STATES}");
        let existing: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(&missing)
            .fetch_all(&mut *conn)
            .await?;
        ids.extend(existing);
    }
    if inserted > 0 {
        let mut notified: Vec<&str> = jobs
            .iter()
            .filter(|j| j.runs_now())
            .map(|j| j.queue.as_str())
            .collect();
        notified.sort_unstable();
        notified.dedup();
        for name in notified {
            engine.notify(&mut *conn, name).await?;
        }
    }
    Ok(Enqueued { ids, inserted })
}

/// The columns of a bulk insert. A column whose value is the same for every job (the kind and
/// queue of a batch, usually most columns) is sent once as a scalar parameter; the others as
/// arrays that one `unnest` turns into rows. Measured: a third less server time for a batch of
/// one kind than with every column as an array, and less for the client to encode.
#[derive(Default)]
struct BulkColumns {
    args: PgArguments,
    arrays: Vec<String>,
    names: Vec<&'static str>,
}

impl BulkColumns {
    /// Binds `values` and returns the SQL expression of the column.
    fn column<T>(
        &mut self,
        name: &'static str,
        pg_type: &str,
        values: Vec<T>,
    ) -> Result<String, Error>
    where
        T: PartialEq + for<'t> Encode<'t, Postgres> + Type<Postgres>,
        Vec<T>: for<'t> Encode<'t, Postgres> + Type<Postgres>,
    {
        if values.windows(2).all(|w| w[0] == w[1]) {
            let value = values.into_iter().next();
            self.args.add(value).map_err(sqlx::Error::Encode)?;
            Ok(format!("${}::{pg_type}", self.args.len()))
        } else {
            self.args.add(values).map_err(sqlx::Error::Encode)?;
            self.arrays
                .push(format!("${}::{pg_type}[]", self.args.len()));
            self.names.push(name);
            Ok(format!("t.{name}"))
        }
    }

    /// The row source: the unnest of the array columns, or `n` rows when every column is uniform.
    fn from(&mut self, n: usize) -> Result<String, Error> {
        if self.arrays.is_empty() {
            self.args
                .add(i32::try_from(n).unwrap_or(i32::MAX))
                .map_err(sqlx::Error::Encode)?;
            Ok(format!(
                "generate_series(1, ${}::int4) AS t(n)",
                self.args.len()
            ))
        } else {
            Ok(format!(
                "unnest({}) AS t({})",
                self.arrays.join(", "),
                self.names.join(", ")
            ))
        }
    }
}
