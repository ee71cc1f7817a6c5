//! Test support (feature `testing`): a real PostgreSQL for tests and a database of each test's
//! own with the engine's tables. The server is `DATABASE_URL` when given, else a private one
//! (`embedded_pg`, not durable) in the directory the caller names, left running between runs and
//! shared by every test process that names the same directory.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

use embedded_pg::{EmbeddedOptions, EmbeddedPostgres, quote_ident};
use sqlx::{Connection, Executor, PgConnection, PgPool, postgres::PgConnectOptions};

/// The server tests run against.
pub struct TestServer {
    /// Connects as the superuser (or `DATABASE_URL`'s user) to its `postgres` database.
    pub admin: PgConnectOptions,
    /// The private server's socket directory, to build URLs for child processes; `None` with
    /// `DATABASE_URL`.
    pub socket_dir: Option<PathBuf>,
    _embedded: Option<EmbeddedPostgres>,
}

/// The schema [`TestDatabase`] puts the engine's tables in: not `public`, so that a statement
/// naming a table without its schema fails in the engine's tests.
pub const SCHEMA: &str = "jobs_test";

static SERVER: OnceLock<TestServer> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The process's test server: `DATABASE_URL`, else the private one in `data_dir`, started (or
/// joined) on first use.
pub fn server(data_dir: &Path) -> &'static TestServer {
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return TestServer {
                admin: PgConnectOptions::from_str(&url).expect("DATABASE_URL parses"),
                socket_dir: None,
                _embedded: None,
            };
        }
        let data_dir = data_dir.to_path_buf();
        // On a thread of its own: this may run inside a test's runtime, which must not block.
        let embedded = std::thread::spawn(move || {
            EmbeddedPostgres::start(&EmbeddedOptions {
                data_dir,
                bin_dir: None,
                run_as: "postgres".into(),
                database: "postgres".into(),
                durable: false,
            })
        })
        .join()
        .expect("embedded start thread")
        .expect("the test PostgreSQL starts");
        TestServer {
            admin: embedded.connect_options("postgres"),
            socket_dir: Some(embedded.data_dir().to_path_buf()),
            _embedded: Some(embedded),
        }
    })
}

/// A fresh database with the engine's migrations applied in [`SCHEMA`], for one test.
pub struct TestDatabase {
    pub name: String,
    /// Connects as the login user.
    pub options: PgConnectOptions,
    pub pool: PgPool,
}

impl TestDatabase {
    /// Creates it on the server (see the module's documentation; `data_dir` is where a private
    /// server lives, e.g. `Path::new(env!("CARGO_TARGET_TMPDIR")).join("pg")`).
    pub async fn create(data_dir: &Path) -> Self {
        let server = server(data_dir);
        let mut admin = PgConnection::connect_with(&server.admin)
            .await
            .expect("connect to the test PostgreSQL");
        if COUNTER.load(Ordering::SeqCst) == 0 {
            drop_stale_databases(&mut admin, "jobstest").await;
        }
        let name = format!(
            "jobstest_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE {}",
                quote_ident(&name)
            )))
            .await
            .expect("create the test database");
        let options = server.admin.clone().database(&name);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect_with(options.clone())
            .await
            .expect("connect to the test database");
        crate::Queue::new(crate::DEFAULT_CHANNEL, SCHEMA)
            .expect("the test schema is a valid name")
            .migrate(&pool)
            .await
            .expect("migrate the test database");
        Self {
            name,
            options,
            pool,
        }
    }

    /// A connection of its own, as the login user.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect_with(&self.options)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        drop_database_now(&server_admin(), &self.name);
    }
}

fn server_admin() -> PgConnectOptions {
    SERVER
        .get()
        .expect("a test database implies its server")
        .admin
        .clone()
}

/// Drops database `name` before returning, whatever still holds connections to it (`FORCE`), so
/// that a process running hundreds of tests (`cargo test`) does not leave hundreds of databases
/// on the disk until the next run sweeps them. Best effort: a database left behind is swept by
/// [`drop_stale_databases`] once its process is gone.
///
/// For a `Drop` impl: it blocks on a thread and runtime of its own, since a test's runtime may be
/// the one calling and cannot be blocked on.
pub fn drop_database_now(admin: &PgConnectOptions, name: &str) {
    let admin = admin.clone();
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name));
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async move {
            let mut conn = PgConnection::connect_with(&admin).await.ok()?;
            conn.execute(sqlx::AssertSqlSafe(sql)).await.ok()?;
            conn.close().await.ok()
        })
    })
    .join();
    if !matches!(dropped, Ok(Some(()))) {
        eprintln!("test database {name} was not dropped; the next run sweeps it");
    }
}

/// Drops the test databases named `<prefix>_<pid>_…` whose process is gone (a test process
/// cannot drop its databases when it ends).
pub async fn drop_stale_databases(conn: &mut PgConnection, prefix: &str) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1 || '_')")
            .bind(prefix)
            .fetch_all(&mut *conn)
            .await
            .expect("list test databases");
    for name in names {
        let pid = name.split('_').nth(1).unwrap_or_default();
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            conn.execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&name)
            )))
            .await
            .expect("drop a stale test database");
        }
    }
}
