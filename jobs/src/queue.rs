//! The engine's handle on one database: the schema its tables live in, the channel its workers
//! LISTEN on, its statements rendered for that schema (once each), its migrations, and the memory
//! of its recent NOTIFYs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use sqlx::{
    AssertSqlSafe, Connection, Executor, PgConnection, PgExecutor, PgPool, SqlSafeStr, SqlStr,
};

use crate::{
    Error,
    enqueue::{Enqueued, NewJob},
};

/// The channel workers LISTEN on unless configured otherwise; the payload is the queue name.
pub const DEFAULT_CHANNEL: &str = "syncbridge_jobs";
/// The schema the engine's tables live in unless configured otherwise.
pub const DEFAULT_SCHEMA: &str = "public";
/// The engine's own migrations table (in its schema), so its history never mixes with the
/// application's.
pub const MIGRATIONS_TABLE: &str = "_syncbridge_jobs_migrations";
/// At most one NOTIFY per queue per process in this window: a NOTIFY serialises commits, so one
/// per insert would cap enqueue throughput. Workers also poll, so a skipped one costs little.
const NOTIFY_DEBOUNCE: Duration = Duration::from_millis(5);

/// The tables a statement template may name, as `{jobs}`, `{job_workers}`, …; rendering puts
/// the schema in front. A statement that named a table bare would use the connection's
/// `search_path` instead: the engine's tests run in a schema of their own to catch that.
const TABLES: [&str; 6] = [
    "jobs",
    "job_workers",
    "job_leader",
    "job_queues",
    "job_schedules",
    MIGRATIONS_TABLE,
];

/// The tables the engine's users read and write (all but the migrations table).
const WORKING_TABLES: [&str; 5] = [
    "jobs",
    "job_workers",
    "job_leader",
    "job_queues",
    "job_schedules",
];

/// The engine as one database's users share it: its schema (two applications, or two test
/// suites, can keep queues of their own in one database), the channel its workers LISTEN on (so
/// they do not wake each other's workers), the statements rendered for that schema, and the
/// memory of its recent NOTIFYs. Enqueueing, workers, maintenance and the admin actions all take
/// it; a process holds one per database, so NOTIFYs are debounced per database.
#[derive(Clone, Debug)]
pub struct Queue(Arc<QueueInner>);

#[derive(Debug)]
struct QueueInner {
    channel: String,
    schema: String,
    /// When this process last sent a NOTIFY per queue name.
    last_notify: Mutex<HashMap<String, Instant>>,
    /// Every statement rendered so far, by template (or bulk shape): each is rendered once.
    statements: RwLock<HashMap<StatementKey, SqlStr>>,
}

/// Which statement: a static template (by address and length: its text is fixed, so the
/// address names it) or a shape of the bulk insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum StatementKey {
    Template(usize, usize),
    Bulk(u16),
}

impl Default for Queue {
    fn default() -> Self {
        Self::new(DEFAULT_CHANNEL, DEFAULT_SCHEMA).expect("the defaults are valid")
    }
}

impl Queue {
    /// A queue whose workers listen on `channel` and whose tables live in `schema`. Both are 1 to
    /// 63 lowercase letters, digits and `_`, not starting with a digit (PostgreSQL identifiers
    /// that need no quoting); the schema may not start with `pg_` (reserved).
    pub fn new(channel: &str, schema: &str) -> Result<Self, Error> {
        check_identifier("channel", channel)?;
        check_identifier("schema", schema)?;
        if schema.starts_with("pg_") {
            return Err(Error::InvalidArgument(format!(
                "the queue's schema may not start with `pg_` (reserved by PostgreSQL): {schema:?}"
            )));
        }
        Ok(Self(Arc::new(QueueInner {
            channel: channel.to_string(),
            schema: schema.to_string(),
            last_notify: Mutex::new(HashMap::new()),
            statements: RwLock::new(HashMap::new()),
        })))
    }

    /// The channel its workers LISTEN on.
    pub fn channel(&self) -> &str {
        &self.0.channel
    }

    /// The schema its tables live in.
    pub fn schema(&self) -> &str {
        &self.0.schema
    }

    /// `table` qualified with the queue's schema, e.g. `public.jobs`, for tools and tests that
    /// read the engine's tables themselves.
    pub fn table(&self, table: &str) -> String {
        format!("{}.{table}", self.0.schema)
    }

    /// The statement of `template` for this queue's schema, rendered on first use.
    pub(crate) fn sql(&self, template: &'static str) -> SqlStr {
        self.statement(
            StatementKey::Template(template.as_ptr() as usize, template.len()),
            || self.render(template),
        )
    }

    /// The statement `key` names, built by `build` on first use.
    pub(crate) fn statement(&self, key: StatementKey, build: impl FnOnce() -> String) -> SqlStr {
        let cached = self
            .0
            .statements
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(sql) = cached {
            return sql;
        }
        let sql = AssertSqlSafe(Arc::<str>::from(build())).into_sql_str();
        self.0
            .statements
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(sql)
            .clone()
    }

    /// `template` with each `{table}` of [`TABLES`] qualified with the schema.
    pub(crate) fn render(&self, template: &str) -> String {
        let mut sql = template.to_string();
        for table in TABLES {
            let placeholder = format!("{{{table}}}");
            if sql.contains(&placeholder) {
                sql = sql.replace(&placeholder, &self.table(table));
            }
        }
        sql
    }

    /// Applies the engine's pending migrations in the queue's schema (created if missing),
    /// recorded in its [`MIGRATIONS_TABLE`] there.
    pub async fn migrate(&self, pool: &PgPool) -> Result<(), Error> {
        // A connection of its own, closed afterwards: its search_path points at the schema so
        // that the migrations' unqualified names land there.
        let mut conn = pool.acquire().await?.detach();
        let schema = self.schema();
        if schema != DEFAULT_SCHEMA {
            conn.execute(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .await?;
        }
        conn.execute(AssertSqlSafe(format!("SET search_path TO {schema}")))
            .await?;
        let result = crate::migrator().run(&mut conn).await;
        conn.close().await.ok();
        result?;
        Ok(())
    }

    /// The versions of the engine's migrations applied in this schema, for readiness checks.
    pub async fn applied_migrations(&self, pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
        sqlx::query_scalar(self.sql(
            "SELECT version FROM {_syncbridge_jobs_migrations} WHERE success ORDER BY version",
        ))
        .fetch_all(pool)
        .await
    }

    /// Lets `roles` use the queue: the schema, read and write on its tables, read on its
    /// migration history. Run by the tables' owner after [`Queue::migrate`]; an application
    /// whose connections run as another role needs it when the schema is not `public` (whose
    /// default privileges the application grants itself).
    pub async fn grant(&self, conn: &mut PgConnection, roles: &[&str]) -> Result<(), Error> {
        if roles.is_empty() {
            return Ok(());
        }
        let roles = roles
            .iter()
            .map(|r| format!("\"{}\"", r.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(", ");
        let tables = WORKING_TABLES.map(|t| self.table(t)).join(", ");
        let schema = self.schema();
        if schema != DEFAULT_SCHEMA {
            conn.execute(AssertSqlSafe(format!(
                "GRANT USAGE ON SCHEMA {schema} TO {roles}"
            )))
            .await?;
        }
        conn.execute(AssertSqlSafe(format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {roles}"
        )))
        .await?;
        conn.execute(AssertSqlSafe(format!(
            "GRANT SELECT ON {} TO {roles}",
            self.table(MIGRATIONS_TABLE)
        )))
        .await?;
        Ok(())
    }

    /// Inserts one job and returns its id, or the id of the live job holding its unique key.
    pub async fn enqueue(&self, conn: &mut PgConnection, job: &NewJob) -> Result<i64, Error> {
        crate::enqueue::enqueue(self, conn, job).await
    }

    /// Inserts many jobs in one statement; see [`Enqueued`].
    pub async fn enqueue_many(
        &self,
        conn: &mut PgConnection,
        jobs: &[NewJob],
    ) -> Result<Enqueued, Error> {
        crate::enqueue::enqueue_many(self, conn, jobs).await
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

fn check_identifier(what: &str, name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "the queue's {what} must be 1 to 63 lowercase letters, digits or `_`, not starting with a digit, not {name:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_name_their_tables_in_the_schema() {
        let queue = Queue::new("c", "engine").unwrap();
        assert_eq!(
            queue.render(
                "SELECT 1 FROM {jobs} j JOIN {job_queues} q ON q.name = j.queue WHERE j.x = '{}'"
            ),
            "SELECT 1 FROM engine.jobs j JOIN engine.job_queues q ON q.name = j.queue WHERE j.x = '{}'"
        );
    }

    #[test]
    fn a_template_is_rendered_once() {
        let queue = Queue::new("c", "engine").unwrap();
        const T: &str = "SELECT * FROM {jobs}";
        let a = queue.sql(T);
        let b = queue.sql(T);
        assert_eq!(a.as_str(), "SELECT * FROM engine.jobs");
        assert!(
            std::ptr::eq(a.as_str(), b.as_str()),
            "the second use reuses the first text"
        );
    }

    #[test]
    fn names_that_would_need_quoting_are_refused() {
        for bad in [
            "",
            "Jobs",
            "1jobs",
            "jobs-x",
            "jobs.x",
            "a\"b",
            &"x".repeat(64),
        ] {
            assert!(Queue::new(bad, "public").is_err(), "channel {bad:?}");
            assert!(Queue::new("c", bad).is_err(), "schema {bad:?}");
        }
        assert!(Queue::new("c", "pg_jobs").is_err());
        assert!(Queue::new("syncbridge_jobs", "engine_2").is_ok());
    }
}
