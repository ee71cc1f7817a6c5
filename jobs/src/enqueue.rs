//! Enqueueing: one job or many in one statement, on any executor, so a caller's open transaction
//! commits its business rows and its jobs together (or neither).

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{Arguments, Encode, PgConnection, Postgres, Type, postgres::PgArguments};

use crate::{
    Error,
    job::Job,
    queue::{Queue, StatementKey},
};

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

const SINGLE_INSERT: &str = "INSERT INTO {jobs} (kind, queue, args, state, priority, max_attempts,
                       timeout_ms, retry_delay_ms, unique_key, tag, scheduled_at)
     VALUES ($1, $2, $3,
             CASE WHEN $10::timestamptz IS NULL OR $10 <= now() THEN 'available' ELSE 'scheduled' END,
             $4, $5, $6, $7, $8, $9, COALESCE($10, now()))
     RETURNING id";

/// The same insert, yielding to a live job holding the unique key.
const SINGLE_INSERT_UNIQUE: &str = "INSERT INTO {jobs} (kind, queue, args, state, priority, max_attempts,
                       timeout_ms, retry_delay_ms, unique_key, tag, scheduled_at)
     VALUES ($1, $2, $3,
             CASE WHEN $10::timestamptz IS NULL OR $10 <= now() THEN 'available' ELSE 'scheduled' END,
             $4, $5, $6, $7, $8, $9, COALESCE($10, now()))
     ON CONFLICT (unique_key)
         WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable')
         DO NOTHING
     RETURNING id";

const LIVE_WITH_KEY: &str = "SELECT id FROM {jobs}
     WHERE unique_key = $1 AND state IN ('available', 'scheduled', 'running', 'retryable')";

const LIVE_WITH_KEYS: &str = "SELECT id FROM {jobs}
     WHERE unique_key = ANY($1) AND state IN ('available', 'scheduled', 'running', 'retryable')";

pub(crate) async fn enqueue(
    queue: &Queue,
    conn: &mut PgConnection,
    job: &NewJob,
) -> Result<i64, Error> {
    // A conflicting insert by a concurrent transaction can leave neither a new row nor a visible
    // old one; trying again then sees the outcome of that transaction.
    for _ in 0..5 {
        let sql = queue.sql(if job.unique_key.is_some() {
            SINGLE_INSERT_UNIQUE
        } else {
            SINGLE_INSERT
        });
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
            crate::metrics::enqueued(&job.queue, &job.kind, 1);
            if job.runs_now() {
                queue.notify(&mut *conn, &job.queue).await?;
            }
            return Ok(id);
        }
        let key = job.unique_key.as_deref().unwrap_or_default();
        let live: Option<i64> = sqlx::query_scalar(queue.sql(LIVE_WITH_KEY))
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(id) = live {
            return Ok(id);
        }
    }
    Err(Error::UniqueContention(
        job.unique_key.clone().unwrap_or_default(),
    ))
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
/// The statement depends on the jobs: which columns go as one value and which as arrays (see
/// [`BulkColumns`]), and whether any job has a unique key. That shape is a bitmask; its text is
/// built once per shape and queue ([`bulk_insert_sql`], cached by the [`Queue`]), so PostgreSQL
/// prepares it once per shape too. `tests/queue.rs`
/// (`bulk_enqueue_stores_every_column_whether_jobs_share_it_or_not`) runs the uniform, mixed and
/// all-array shapes, with and without unique keys.
pub(crate) async fn enqueue_many(
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
    let mut b = BulkColumns::default();
    b.column(jobs.iter().map(|j| j.kind.clone()).collect())?;
    b.column(jobs.iter().map(|j| j.queue.clone()).collect())?;
    b.column(jobs.iter().map(|j| j.args.to_string()).collect())?;
    b.column(jobs.iter().map(|j| j.priority).collect())?;
    b.column(jobs.iter().map(|j| j.max_attempts).collect())?;
    b.column(jobs.iter().map(|j| millis(j.timeout)).collect())?;
    b.column(jobs.iter().map(|j| millis(j.retry_delay)).collect())?;
    b.column(jobs.iter().map(|j| j.unique_key.clone()).collect())?;
    b.column(jobs.iter().map(|j| j.tag.clone()).collect())?;
    b.column(jobs.iter().map(|j| j.run_at).collect())?;
    if b.arrays == 0 {
        b.args
            .add(i32::try_from(n).unwrap_or(i32::MAX))
            .map_err(sqlx::Error::Encode)?;
    }
    // Speculative insertion for ON CONFLICT costs about a third of the insert time, so a batch
    // without unique keys does without it.
    let any_unique = jobs.iter().any(|j| j.unique_key.is_some());
    let shape = b.arrays | if any_unique { UNIQUE_BIT } else { 0 };
    let sql = engine.statement(StatementKey::Bulk(shape), || bulk_insert_sql(engine, shape));
    let (mut ids, inserted_keys): (Vec<i64>, Vec<String>) = sqlx::query_as_with(sql, b.args)
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
        let existing: Vec<i64> = sqlx::query_scalar(engine.sql(LIVE_WITH_KEYS))
            .bind(&missing)
            .fetch_all(&mut *conn)
            .await?;
        ids.extend(existing);
    }
    // A job was inserted unless its unique key was held (or taken by an earlier job of the call).
    let mut counted: HashMap<(&str, &str), u64> = HashMap::new();
    let mut keys_counted = std::collections::HashSet::new();
    for job in jobs {
        let new = match job.unique_key.as_deref() {
            None => true,
            Some(key) => inserted_keys.contains(key) && keys_counted.insert(key),
        };
        if new {
            *counted.entry((&job.queue, &job.kind)).or_default() += 1;
        }
    }
    for ((queue, kind), n) in counted {
        crate::metrics::enqueued(queue, kind, n);
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

/// The bulk insert's columns, in the order [`enqueue_many`] binds them: name and type.
const BULK_COLUMNS: [(&str, &str); 10] = [
    ("kind", "text"),
    ("queue", "text"),
    ("args", "text"),
    ("priority", "int2"),
    ("max_attempts", "int4"),
    ("timeout_ms", "int4"),
    ("retry_delay_ms", "int4"),
    ("unique_key", "text"),
    ("tag", "text"),
    ("run_at", "timestamptz"),
];
/// The shape's bit for "some job has a unique key" (the columns take bits 0 to 9).
const UNIQUE_BIT: u16 = 1 << BULK_COLUMNS.len();

/// The bulk insert of one shape: bit `i` set means column `i` of [`BULK_COLUMNS`] is an array
/// (parameter `$i+1`), clear means one value for every row; with no array, the row count is the
/// last parameter.
pub(crate) fn bulk_insert_sql(queue: &Queue, shape: u16) -> String {
    let mut arrays = Vec::new();
    let mut names = Vec::new();
    let [
        kind,
        queue_name,
        args,
        priority,
        max_attempts,
        timeout,
        retry_delay,
        unique_key,
        tag,
        run_at,
    ] = std::array::from_fn(|i| {
        let (name, pg_type) = BULK_COLUMNS[i];
        let param = i + 1;
        if shape & (1 << i) != 0 {
            arrays.push(format!("${param}::{pg_type}[]"));
            names.push(name);
            format!("t.{name}")
        } else {
            format!("${param}::{pg_type}")
        }
    });
    let from = if arrays.is_empty() {
        format!(
            "generate_series(1, ${}::int4) AS t(n)",
            BULK_COLUMNS.len() + 1
        )
    } else {
        format!("unnest({}) AS t({})", arrays.join(", "), names.join(", "))
    };
    let on_conflict = if shape & UNIQUE_BIT != 0 {
        "ON CONFLICT (unique_key)
             WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable')
             DO NOTHING"
    } else {
        ""
    };
    // The ids come back as two arrays in one row: decoding one row per job costs the client more
    // than the insert costs the server, and the server waits on the socket meanwhile.
    format!(
        "WITH inserted AS (
         INSERT INTO {jobs} (kind, queue, args, state, priority, max_attempts, timeout_ms,
                           retry_delay_ms, unique_key, tag, scheduled_at)
         SELECT {kind}, {queue_name}, ({args})::jsonb,
                CASE WHEN {run_at} IS NULL OR {run_at} <= now() THEN 'available' ELSE 'scheduled' END,
                {priority}, {max_attempts}, {timeout}, {retry_delay}, {unique_key}, {tag},
                COALESCE({run_at}, now())
         FROM {from}
         {on_conflict}
         RETURNING id, unique_key)
         SELECT COALESCE(array_agg(id ORDER BY id), '{{}}'),
                COALESCE(array_agg(unique_key) FILTER (WHERE unique_key IS NOT NULL), '{{}}')
         FROM inserted",
        jobs = queue.table("jobs"),
    )
}

/// The parameters of a bulk insert. A column whose value is the same for every job (the kind and
/// queue of a batch, usually most columns) is sent once as a scalar parameter; the others as
/// arrays that one `unnest` turns into rows. Measured: a third less server time for a batch of
/// one kind than with every column as an array, and less for the client to encode.
#[derive(Default)]
struct BulkColumns {
    args: PgArguments,
    /// Bit `i`: column `i` went as an array.
    arrays: u16,
    bound: usize,
}

impl BulkColumns {
    /// Binds the next column's `values`: one value when they are all equal, else the array.
    fn column<T>(&mut self, values: Vec<T>) -> Result<(), Error>
    where
        T: PartialEq + for<'t> Encode<'t, Postgres> + Type<Postgres>,
        Vec<T>: for<'t> Encode<'t, Postgres> + Type<Postgres>,
    {
        if values.windows(2).all(|w| w[0] == w[1]) {
            let value = values.into_iter().next();
            self.args.add(value).map_err(sqlx::Error::Encode)?;
        } else {
            self.args.add(values).map_err(sqlx::Error::Encode)?;
            self.arrays |= 1 << self.bound;
        }
        self.bound += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bulk_shape_numbers_its_parameters_in_binding_order() {
        let queue = Queue::default();
        for shape in 0..(UNIQUE_BIT << 1) {
            let sql = bulk_insert_sql(&queue, shape);
            let params = BULK_COLUMNS.len() + usize::from(shape & !UNIQUE_BIT == 0);
            for p in 1..=params {
                assert!(
                    sql.contains(&format!("${p}::")),
                    "shape {shape:#b} lacks ${p}"
                );
            }
            assert!(
                !sql.contains(&format!("${}", params + 1)),
                "shape {shape:#b}"
            );
            assert_eq!(sql.contains("ON CONFLICT"), shape & UNIQUE_BIT != 0);
        }
    }
}
