//! The database layer: connecting (to `DATABASE_URL` or the embedded server), migrating, and the
//! two ways application code may touch tenant data: a tenant-scoped or a system transaction.
//!
//! Every pooled connection runs as `syncbridge_app`, a role that sees nothing until a transaction
//! names its tenant, so a query that forgets to scope itself finds no rows rather than every
//! tenant's. Application SQL lives in this module's submodules.

pub mod accounts;
pub mod api_keys;
pub mod batches;
pub mod console_sessions;
pub mod cursors;
pub mod external_rows;
pub mod integrations;
pub mod mappings;
pub mod records;
pub mod schedule_ticks;
pub mod stats;
pub mod sweeps;
pub mod sync_errors;
pub mod sync_logs;
pub mod tenant_tokens;
pub mod tenants;
pub mod vocab;

/// The private PostgreSQL (its own crate, so the queue's tests use it too).
pub use embedded_pg as embedded;

use std::{str::FromStr, time::Duration};

use anyhow::{Context, Result};
use secrecy::ExposeSecret;
use sqlx::{
    Executor, PgPool, Postgres, Transaction,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

use crate::config::DatabaseConfig;
use embedded::{EmbeddedOptions, EmbeddedPostgres};

/// The migrations compiled into this binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The role pooled connections run as: sees only the rows of the transaction's tenant.
pub const APP_ROLE: &str = "syncbridge_app";
/// The role of cross-tenant system work, taken for one transaction at a time.
pub const SYSTEM_ROLE: &str = "syncbridge_system";

/// Where the database is: the server to connect to and, when it is ours, the embedded server.
#[derive(Debug)]
pub struct Database {
    pub connect_options: PgConnectOptions,
    pub embedded: Option<EmbeddedPostgres>,
    /// The embedded server's data directory was created by this start: it holds nothing yet.
    pub created: bool,
}

impl Database {
    /// Uses `database.url` when set; otherwise starts (or joins) the embedded PostgreSQL.
    pub async fn locate(config: &DatabaseConfig) -> Result<Self> {
        if let Some(url) = &config.url {
            let connect_options = PgConnectOptions::from_str(url.expose_secret())
                .context("DATABASE_URL is not a valid PostgreSQL URL")?;
            return Ok(Self {
                connect_options,
                embedded: None,
                created: false,
            });
        }
        let embedded_config = &config.embedded;
        let options = EmbeddedOptions {
            data_dir: embedded_config.data_dir.clone(),
            bin_dir: (!embedded_config.bin_dir.as_os_str().is_empty())
                .then(|| embedded_config.bin_dir.clone()),
            run_as: embedded_config.run_as.clone(),
            database: embedded_config.database.clone(),
            durable: true,
        };
        let created = !embedded_config.data_dir.join("PG_VERSION").is_file();
        let server = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&options))
            .await?
            .context("cannot start the embedded PostgreSQL")?;
        let connect_options = server.ensure_database().await?;
        tracing::info!(db.data_dir = %server.data_dir().display(), "using the embedded PostgreSQL");
        Ok(Self {
            connect_options,
            embedded: Some(server),
            created,
        })
    }

    /// Stops the embedded server when this was its last user; a no-op for `DATABASE_URL`.
    pub async fn shutdown(self) -> Result<()> {
        if let Some(server) = self.embedded {
            let stopped = tokio::task::spawn_blocking(move || server.stop()).await??;
            if stopped {
                tracing::info!("embedded PostgreSQL stopped");
            }
        }
        Ok(())
    }
}

/// The application pool: every connection runs as [`APP_ROLE`] outside transactions too (which
/// isolation no longer needs: every scoped transaction sets its role itself, see [`set_tenant`]
/// and [`system_tx`]; this only keeps stray statements of a direct connection, even a
/// superuser's, to the restricted role).
pub fn connect(options: PgConnectOptions, config: &DatabaseConfig) -> PgPool {
    pool_options(config).connect_lazy_with(options)
}

/// Pool settings shared by the service and the tests.
pub fn pool_options(config: &DatabaseConfig) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("SET ROLE syncbridge_app").await?;
                Ok(())
            })
        })
}

/// Applies the pending migrations, as the login user (the owner of the tables): the
/// application's, then the queue engine's in `queue`'s schema, whose tables the application's
/// roles are then granted.
pub async fn migrate(options: &PgConnectOptions, queue: &jobs::Queue) -> Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .context("cannot connect to the database to migrate it")?;
    // The application's first: its roles and default privileges then cover the engine's tables.
    MIGRATOR
        .run(&pool)
        .await
        .context("database migration failed")?;
    queue
        .migrate(&pool)
        .await
        .context("job queue migration failed")?;
    // In `public` the default privileges already did this; in a schema of the queue's own they
    // cannot (they are per schema), so the roles get the engine's tables by name.
    let mut conn = pool.acquire().await?;
    queue
        .grant(&mut conn, &["syncbridge_app", "syncbridge_system"])
        .await
        .context("granting the job queue's tables failed")?;
    drop(conn);
    pool.close().await;
    Ok(())
}

/// Whether the database answers and every migration of this binary is applied.
#[derive(Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Unreachable(String),
    MigrationsPending { applied: usize, expected: usize },
}

/// How long the readiness probe waits for the database. A load balancer should learn within a
/// second that this process cannot serve, not after the pool's `acquire_timeout` (seconds of
/// connection retries), so the probe's answer is "unreachable" once this passes.
pub const PROBE_BUDGET: Duration = Duration::from_millis(800);

/// [`readiness`], but "unreachable" once `budget` passes without an answer.
pub async fn readiness_within(pool: &PgPool, queue: &jobs::Queue, budget: Duration) -> Readiness {
    match tokio::time::timeout(budget, readiness(pool, queue)).await {
        Ok(readiness) => readiness,
        Err(_) => Readiness::Unreachable(format!(
            "the database did not answer within {} ms",
            budget.as_millis()
        )),
    }
}

/// Whether the database answers (waiting as long as the pool's `acquire_timeout`) and every
/// migration is applied.
pub async fn readiness(pool: &PgPool, queue: &jobs::Queue) -> Readiness {
    let app =
        sqlx::query_scalar!("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await;
    let jobs_migrator = jobs::migrator();
    let mut applied_total = 0;
    let mut expected_total = 0;
    for (applied, migrator) in [
        (app, &MIGRATOR),
        (queue.applied_migrations(pool).await, &jobs_migrator),
    ] {
        let expected: Vec<i64> = migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| m.version)
            .collect();
        expected_total += expected.len();
        match applied {
            Ok(applied) => {
                applied_total += expected.iter().filter(|v| applied.contains(v)).count();
            }
            // No migration table yet, or the roles the first migration creates do not exist.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P01") | Some("22023")) => {}
            Err(e) => return Readiness::Unreachable(e.to_string()),
        }
    }
    if applied_total == expected_total {
        Readiness::Ready
    } else {
        Readiness::MigrationsPending {
            applied: applied_total,
            expected: expected_total,
        }
    }
}

/// Begins a transaction that sees and writes only `tenant_id`'s rows (row level security).
pub async fn tenant_tx(pool: &PgPool, tenant_id: Uuid) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    set_tenant(&mut tx, tenant_id).await?;
    Ok(tx)
}

/// Scopes the open transaction on `conn` to `tenant_id` (until it ends), as [`tenant_tx`] does;
/// for transactions begun elsewhere, such as a transactional job's. The role is set here too,
/// for the transaction only, rather than trusted from the connection's session: behind a pooler
/// in transaction mode the session `SET ROLE` of [`connect`] may have run on another server
/// connection (one round trip sets both).
pub async fn set_tenant(conn: &mut sqlx::PgConnection, tenant_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT FROM set_config('role', 'syncbridge_app', true) AS r, set_config('app.tenant_id', $1, true) AS t",
        tenant_id.to_string()
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Begins a transaction of `tenant_id` ([`tenant_tx`]), or for system work when `None` (the
/// install's operator): what functions use that act for either a tenant's caller or an operator,
/// so another tenant's rows are invisible to the first, as if they did not exist.
pub async fn scoped_tx(
    pool: &PgPool,
    tenant_id: Option<Uuid>,
) -> Result<Transaction<'static, Postgres>> {
    match tenant_id {
        Some(tenant_id) => tenant_tx(pool, tenant_id).await,
        None => system_tx(pool).await,
    }
}

/// Begins a transaction for cross-tenant system work (key lookup, workers, admin CLI).
pub async fn system_tx(pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    tx.execute("SET LOCAL ROLE syncbridge_system").await?;
    Ok(tx)
}
