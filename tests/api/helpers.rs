//! Test harness: one real PostgreSQL per test run, a fresh database per test, and a running app.
//!
//! The server is `DATABASE_URL` when given, otherwise the same embedded mechanism the service uses,
//! in `target/tmp/pg` (not durable: fsync off), left running between runs for speed (`.ci/run`
//! stops it). Migrations are applied once into a template database named after their checksums;
//! each test then gets `CREATE DATABASE … TEMPLATE`, which takes milliseconds, so tests run in
//! parallel without sharing rows.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use jobs::testing::TestServer;
use sha2::{Digest, Sha256};
use sqlx::{
    Connection, Executor, PgConnection, PgExecutor, PgPool,
    postgres::{PgConnectOptions, PgSslMode},
};
use syncbridge::{
    config::{Config, DatabaseConfig},
    db::{self, MIGRATOR, embedded::quote_ident},
    http,
};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

static TEMPLATE: OnceCell<String> = OnceCell::const_new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The test server, shared with the queue crate's tests (`jobs::testing`).
fn cluster() -> &'static TestServer {
    jobs::testing::server(&PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pg"))
}

/// The configuration tests run the service with: the defaults, with a small pool.
pub fn test_config() -> Config {
    let figment = Config::figment().expect("config sources");
    let mut config = Config::from_figment(figment).expect("default config");
    config.database.max_connections = 5;
    config.database.acquire_timeout_secs = 5;
    config
}

pub fn database_config() -> DatabaseConfig {
    test_config().database
}

async fn admin_connection() -> PgConnection {
    PgConnection::connect_with(&cluster().admin)
        .await
        .expect("connect to the test PostgreSQL")
}

/// The name of a database holding every migration of this build, created once per migration set.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let mut hasher = Sha256::new();
            for m in MIGRATOR.iter().chain(jobs::migrator().iter()) {
                hasher.update(m.version.to_le_bytes());
                hasher.update(&*m.checksum);
            }
            let name = format!("sbtpl_{}", &hex::encode(hasher.finalize())[..16]);
            let mut conn = admin_connection().await;
            // Serialises template creation across test processes.
            sqlx::query("SELECT pg_advisory_lock(727274)")
                .execute(&mut conn)
                .await
                .unwrap();
            jobs::testing::drop_stale_databases(&mut conn, "sbtest").await;
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            if !exists {
                let building = format!("{name}_building");
                execute(
                    &mut conn,
                    &format!("DROP DATABASE IF EXISTS {}", quote_ident(&building)),
                )
                .await;
                execute(
                    &mut conn,
                    &format!("CREATE DATABASE {}", quote_ident(&building)),
                )
                .await;
                db::migrate(
                    &cluster().admin.clone().database(&building),
                    &jobs::Queue::default(),
                )
                .await
                .expect("migrations apply to an empty database");
                execute(
                    &mut conn,
                    &format!(
                        "ALTER DATABASE {} RENAME TO {}",
                        quote_ident(&building),
                        quote_ident(&name)
                    ),
                )
                .await;
            }
            sqlx::query("SELECT pg_advisory_unlock(727274)")
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.ok();
            name
        })
        .await
}

async fn execute(conn: &mut PgConnection, sql: &str) {
    conn.execute(sqlx::AssertSqlSafe(sql.to_string()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A fresh database owned, and migrated, by a login role of its own that is no superuser and
/// has been granted the service's roles, as a DBA sets up a managed database; returns the
/// options that log in as it (a superuser bypasses row level security, so isolation that must
/// hold for the login user is only provable with such a role).
pub async fn database_of_a_plain_login() -> PgConnectOptions {
    // The migrated template's first migration has created the service's roles (cluster-wide).
    template().await;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let role = format!("sbtest_login_{}_{n}", std::process::id());
    let name = format!("sbtest_{}_{n}_plain", std::process::id());
    let mut conn = admin_connection().await;
    for sql in [
        format!(
            "CREATE ROLE {} LOGIN NOSUPERUSER PASSWORD 'test-only'",
            quote_ident(&role)
        ),
        format!(
            "GRANT syncbridge_app, syncbridge_system TO {}",
            quote_ident(&role)
        ),
        format!(
            "CREATE DATABASE {} OWNER {}",
            quote_ident(&name),
            quote_ident(&role)
        ),
    ] {
        execute(&mut conn, &sql).await;
    }
    conn.close().await.ok();
    let options = cluster()
        .admin
        .clone()
        .database(&name)
        .username(&role)
        .password("test-only");
    db::migrate(&options, &jobs::Queue::default())
        .await
        .unwrap();
    options
}

/// A database of one test's own.
pub struct TestDb {
    pub name: String,
    /// Connects as the login user (the table owner; a superuser on the embedded server).
    pub owner_options: PgConnectOptions,
    /// The application pool: connections run as `syncbridge_app`.
    pub pool: PgPool,
}

impl TestDb {
    /// A fresh, fully migrated database.
    pub async fn migrated() -> Self {
        let template = template().await;
        Self::create(Some(template)).await
    }

    /// A fresh database with no migrations applied.
    pub async fn empty() -> Self {
        Self::create(None).await
    }

    async fn create(template: Option<&str>) -> Self {
        let name = format!(
            "sbtest_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = admin_connection().await;
        let sql = match template {
            Some(t) => format!(
                "CREATE DATABASE {} TEMPLATE {}",
                quote_ident(&name),
                quote_ident(t)
            ),
            None => format!("CREATE DATABASE {}", quote_ident(&name)),
        };
        execute(&mut conn, &sql).await;
        conn.close().await.ok();
        let owner_options = cluster().admin.clone().database(&name);
        let pool = db::connect(owner_options.clone(), &database_config());
        Self {
            name,
            owner_options,
            pool,
        }
    }

    /// A connection as the login user, for arranging and inspecting rows in plain SQL.
    pub async fn owner(&self) -> PgConnection {
        PgConnection::connect_with(&self.owner_options)
            .await
            .expect("owner connection")
    }

    /// `DATABASE_URL` for a child process to reach this database.
    pub fn url(&self) -> String {
        match &cluster().socket_dir {
            Some(dir) => format!(
                "postgres://postgres@localhost/{}?host={}&port=5432&sslmode=disable",
                self.name,
                dir.display()
            ),
            None => {
                let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
                let mut url = base.clone();
                if let Some(pos) = url.rfind('/') {
                    let query = url[pos..].find('?').map(|q| url[pos + q..].to_string());
                    url.truncate(pos + 1);
                    url.push_str(&self.name);
                    if let Some(q) = query {
                        url.push_str(&q);
                    }
                }
                url
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        jobs::testing::drop_database_now(&cluster().admin, &self.name);
    }
}

/// The admin token test apps accept.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The web process of one test, serving on a free port over its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: TestDb,
    shutdown: CancellationToken,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_on(TestDb::migrated().await).await
    }

    pub async fn spawn_on(db: TestDb) -> Self {
        Self::spawn_with_pool(db, None).await
    }

    /// Serves with `pool` instead of the database's own (e.g. one that cannot connect).
    pub async fn spawn_with_pool(db: TestDb, pool: Option<PgPool>) -> Self {
        Self::spawn_configured(db, pool, |_| {}).await
    }

    /// Serves with the test configuration as changed by `configure`.
    pub async fn spawn_configured(
        db: TestDb,
        pool: Option<PgPool>,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = test_config();
        config.http.port = 0;
        config.admin_token = Some(ADMIN_TOKEN.to_string().into());
        configure(&mut config);
        let listener = http::bind(&config.http).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let state = http::AppState::new(pool.unwrap_or_else(|| db.pool.clone()), &config)
            .expect("app state");
        let app = http::router(state, Duration::from_secs(config.http.request_timeout_secs));
        let shutdown = CancellationToken::new();
        tokio::spawn(http::serve(
            listener,
            app,
            shutdown.clone(),
            Duration::from_secs(5),
        ));
        Self {
            addr,
            client: reqwest::Client::new(),
            db,
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `GET path` with `token` as the bearer: the JSON answer.
    pub async fn get_json(&self, path: &str, token: &str) -> serde_json::Value {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// `GET path` with `token` as the bearer: the answer's status and JSON body.
pub async fn get(
    app: &TestApp,
    path: &str,
    token: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let response = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// The `error.code` of a refusal's body.
pub fn code(body: &serde_json::Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An options object pointing at a socket where no server listens.
pub fn unreachable_options() -> PgConnectOptions {
    PgConnectOptions::new()
        .socket("/nonexistent-syncbridge-socket-dir")
        .port(5432)
        .username("postgres")
        .database("nothing")
        .ssl_mode(PgSslMode::Disable)
}

/// The single number a `SELECT count(*) …` answers; for arranging and checking rows in tests.
pub async fn count<'e>(executor: impl PgExecutor<'e>, sql: impl Into<String>) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.into()))
        .fetch_one(executor)
        .await
        .unwrap()
}

/// Every sample payload in `tests/fixtures/samples/` (copied from `shared/samples/`), with the
/// source it comes from.
pub const SAMPLES: [(&str, syncbridge::domain::SourceType); 9] = {
    use syncbridge::domain::SourceType::*;
    [
        ("hubspot_contacts", Hubspot),
        ("hubspot_deals", Hubspot),
        ("intercom_contacts", Intercom),
        ("jira_tickets", Jira),
        ("salesforce_deals", Salesforce),
        ("zendesk_tickets", Zendesk),
        ("zoho_crm_contacts", ZohoCrm),
        ("zoho_crm_deals", ZohoCrm),
        ("zoho_desk_tickets", ZohoDesk),
    ]
};

/// A sample webhook body by name.
pub fn sample(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/tests/fixtures/samples/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Waits until `sql` (a `SELECT count(*)`) counts nothing, at most `limit`; else the last count.
/// The one place tests poll: what they wait for (jobs finished, batches processed) is a state of
/// the database that no notification announces.
pub async fn until_none_left(db: &TestDb, sql: &str, limit: Duration) -> Result<(), i64> {
    let deadline = std::time::Instant::now() + limit;
    let mut owner = db.owner().await;
    loop {
        let left = count(&mut owner, sql).await;
        if left == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(left);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs every job of `app` to its end (triggers reach n8n with `app` as their callback), with a
/// fast-polling worker.
pub async fn run_all_jobs(app: &TestApp) {
    let mut config = test_config();
    config.worker.poll_interval_ms = 20;
    config.n8n.public_base_url = app.url("/");
    work_until_done(
        &app.db,
        &config,
        "SELECT count(*) FROM jobs WHERE state IN ('available', 'scheduled', 'running', 'retryable')",
    )
    .await;
}

/// Runs a worker (and the queue's maintenance, which promotes retries) on `pool` with `config`
/// until `pending_sql` (a `SELECT count(*)`) counts nothing, at most 60 s.
pub async fn work_until_done(db: &TestDb, config: &Config, pending_sql: &str) {
    let jobs = RunningJobs::start(db, config);
    if let Err(left) = until_none_left(db, pending_sql, Duration::from_secs(60)).await {
        panic!("{left} jobs still pending: {pending_sql}");
    }
    jobs.stop().await;
}

/// The application's worker and a fast maintenance loop over `db`, running until [`stop`].
///
/// [`stop`]: RunningJobs::stop
pub struct RunningJobs {
    shutdown: CancellationToken,
    worker: tokio::task::JoinHandle<Result<(), jobs::Error>>,
    maintenance: tokio::task::JoinHandle<()>,
}

impl RunningJobs {
    pub fn start(db: &TestDb, config: &Config) -> Self {
        let worker = jobs::Worker::new(
            db.pool.clone(),
            syncbridge::tasks::JobContext::new(db.pool.clone(), config).unwrap(),
            syncbridge::tasks::registry(&config.worker),
            syncbridge::tasks::worker_config(config),
        );
        let maintenance = jobs::Maintenance::new(
            db.pool.clone(),
            jobs::MaintenanceConfig {
                interval: Duration::from_millis(20),
                ..syncbridge::tasks::maintenance_config(config)
            },
            Vec::new(),
        );
        let shutdown = CancellationToken::new();
        Self {
            worker: tokio::spawn(worker.run(shutdown.clone())),
            maintenance: tokio::spawn(maintenance.run(shutdown.clone())),
            shutdown,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.worker.await.unwrap().unwrap();
        self.maintenance.await.unwrap();
    }
}

/// A tenant named `tenant` with one HubSpot integration and its API key, the setup most webhook
/// tests start from.
pub struct HubspotIntegration {
    pub tenant_id: uuid::Uuid,
    pub integration_id: uuid::Uuid,
    pub key: String,
}

pub async fn hubspot_integration(pool: &PgPool, tenant: &str) -> HubspotIntegration {
    use syncbridge::{admin, domain::SourceType};
    let tenant = admin::create_tenant(pool, tenant).await.unwrap();
    let integration =
        admin::create_integration(pool, tenant.id, SourceType::Hubspot, "HubSpot", None)
            .await
            .unwrap();
    let key = admin::create_api_key(pool, integration.id, None)
        .await
        .unwrap();
    HubspotIntegration {
        tenant_id: tenant.id,
        integration_id: integration.id,
        key: key.key.plaintext,
    }
}

/// Runs a worker until no job is pending (the application's job kinds, fast polling).
pub async fn drain(db: &TestDb) {
    let mut config = test_config();
    config.worker.poll_interval_ms = 20;
    work_until_done(
        db,
        &config,
        "SELECT count(*) FROM jobs WHERE state IN ('available', 'scheduled', 'running', 'retryable')",
    )
    .await;
}

/// Delivers `records` of `data_type` to `h` as one batch of a new sync (final unless `open`),
/// expecting 202; the receipt.
pub async fn deliver(
    app: &TestApp,
    h: &HubspotIntegration,
    data_type: &str,
    records: Vec<serde_json::Value>,
    open: bool,
) -> serde_json::Value {
    let body = serde_json::json!({"integration_id": h.integration_id, "data_type": data_type,
                                  "source_type": "hubspot", "final": !open, "records": records});
    post_delivery(app, h, &body).await
}

/// Posts a webhook body with the integration's key, expecting 202; the receipt.
pub async fn post_delivery(
    app: &TestApp,
    h: &HubspotIntegration,
    body: &serde_json::Value,
) -> serde_json::Value {
    let response = app
        .client
        .post(app.url("/api/webhooks/n8n"))
        .bearer_auth(&h.key)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    response.json().await.unwrap()
}

/// An n8n that answers every trigger and hands the trigger's sync log id to the test, as a
/// workflow would start fetching for it.
pub async fn n8n_passing_on_triggers() -> (
    wiremock::MockServer,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (triggered, triggers) = tokio::sync::mpsc::unbounded_channel::<String>();
    let n8n = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(move |request: &wiremock::Request| {
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
            if let Some(id) = body["sync_log_id"].as_str() {
                let _ = triggered.send(id.to_string());
            }
            wiremock::ResponseTemplate::new(200)
        })
        .mount(&n8n)
        .await;
    (n8n, triggers)
}

/// The next sync log id n8n is asked to run, within 20 s.
pub async fn next_trigger(triggers: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(20), triggers.recv())
        .await
        .expect("n8n is asked to start a sync within 20 s")
        .expect("the n8n mock is alive")
}

/// Delivers the final batch of `contacts` for the sync n8n was asked to run, expecting 202.
pub async fn deliver_for_sync(
    app: &TestApp,
    h: &HubspotIntegration,
    sync_log_id: &str,
    contacts: Vec<serde_json::Value>,
) {
    let body = serde_json::json!({"integration_id": h.integration_id, "sync_log_id": sync_log_id,
                                  "data_type": "contacts", "source_type": "hubspot",
                                  "final": true, "records": contacts});
    post_delivery(app, h, &body).await;
}

/// A log writer for a test's own subscriber (`tracing::subscriber::set_default` on a
/// current-thread runtime, so every task of the test logs to it).
#[derive(Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Points the integration at `n8n` (an accepting local server) with `settings` added to the
/// PATCH (credentials, say), then starts a manual sync through the admin API (forced: another
/// sync of the integration may be open).
pub async fn manual_sync_at(
    app: &TestApp,
    integration_id: uuid::Uuid,
    n8n: &wiremock::MockServer,
    mut settings: serde_json::Value,
) {
    settings["webhook_url"] = format!("{}/webhook/sync", n8n.uri()).into();
    let patched = app
        .client
        .patch(app.url(&format!("/api/admin/integrations/{integration_id}")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), reqwest::StatusCode::OK);
    let manual = app
        .client
        .post(app.url(&format!("/api/admin/integrations/{integration_id}/sync")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        manual.status(),
        reqwest::StatusCode::ACCEPTED,
        "{:?}",
        manual.text().await
    );
}
