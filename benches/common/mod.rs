//! Shared by the benchmarks: a fresh database on a private durable PostgreSQL, realistic
//! HubSpot-like contacts, and the real `syncbridge` binary run as a child process.

#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, PgPool, postgres::PgConnectOptions};
use syncbridge::{
    config::DatabaseConfig,
    db::{
        self,
        embedded::{EmbeddedOptions, EmbeddedPostgres, quote_ident},
    },
};
use uuid::Uuid;

pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A HubSpot v3 contact padded to about 1 KB, as a real export with custom properties is.
pub fn contact(i: usize) -> Value {
    json!({
        "id": format!("{}", 51_000_000 + i),
        "properties": {
            "email": format!("person{i}@customer{}.example.com", i % 997),
            "firstname": format!("First{i}"),
            "lastname": format!("Last{i}"),
            "company": format!("Customer {} GmbH", i % 997),
            "phone": "+49 30 1234567",
            "jobtitle": "Head of Customer Operations",
            "lifecyclestage": "customer",
            "hs_lead_status": "CONNECTED",
            "createdate": "2024-03-11T09:15:22.481Z",
            "lastmodifieddate": "2024-11-02T17:45:03.112Z",
            "city": "Berlin", "country": "Germany", "industry": "COMPUTER_SOFTWARE",
            "annualrevenue": "4800000", "numberofemployees": "120",
            "hs_analytics_source": "ORGANIC_SEARCH",
            "notes_last_contacted": "2024-10-28T08:00:00Z",
            "description": "Enterprise customer on the annual plan; renewal discussion scheduled with procurement and the champion in Q1, expansion to two more teams is likely.",
            "website": format!("https://www.customer{}.example.com/", i % 997),
            // Varied, poorly compressible text, as free-text fields and ids are in real exports.
            "hs_object_source_detail": noise(i, 160),
            "hs_analytics_first_url": format!("https://www.vendor.example/pricing?utm={}", noise(i + 7, 24)),
        },
        "createdAt": "2024-03-11T09:15:22.481Z",
        "updatedAt": "2024-11-02T17:45:03.112Z",
        "archived": false
    })
}

/// `len` hex digits derived from `seed` (splitmix64): different for every record.
pub fn noise(seed: usize, len: usize) -> String {
    let mut x = seed as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.push_str(&format!("{:016x}", z ^ (z >> 31)));
    }
    out.truncate(len);
    out
}

pub fn envelope(integration_id: Uuid, first: usize, n: usize) -> Vec<u8> {
    let records: Vec<Value> = (first..first + n).map(contact).collect();
    serde_json::to_vec(&json!({
        "integration_id": integration_id,
        "data_type": "contacts",
        "source_type": "hubspot",
        "records": records,
    }))
    .unwrap()
}

/// A database of one benchmark run, dropped by [`BenchDb::finish`].
pub struct BenchDb {
    server: Option<EmbeddedPostgres>,
    admin_options: PgConnectOptions,
    name: String,
    /// Connects as the login user (owner of the tables).
    pub owner_options: PgConnectOptions,
    /// For child processes.
    pub url: String,
    /// Runs as the service role, like the service's own pool.
    pub pool: PgPool,
}

impl BenchDb {
    pub async fn create(prefix: &str) -> Self {
        let (server_pg, admin_options, socket_dir) = match std::env::var("DATABASE_URL") {
            Ok(url) => (
                None,
                url.parse::<sqlx::postgres::PgConnectOptions>().unwrap(),
                None,
            ),
            Err(_) => {
                let data_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-pg");
                let server = EmbeddedPostgres::start(&EmbeddedOptions {
                    data_dir,
                    bin_dir: None,
                    run_as: "postgres".into(),
                    database: "postgres".into(),
                    durable: true,
                })
                .expect("embedded PostgreSQL for the benchmark");
                let admin = server.connect_options("postgres");
                let dir = server.data_dir().to_path_buf();
                (Some(server), admin, Some(dir))
            }
        };
        let name = format!("{prefix}_{}", std::process::id());
        let mut conn = PgConnection::connect_with(&admin_options).await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {}",
            quote_ident(&name)
        )))
        .await
        .unwrap();
        let options = admin_options.clone().database(&name);
        db::migrate(&options, &jobs::Queue::default())
            .await
            .unwrap();
        let database_url = match &socket_dir {
            Some(dir) => format!(
                "postgres://postgres@localhost/{name}?host={}&port=5432&sslmode=disable",
                dir.display()
            ),
            None => {
                let base = std::env::var("DATABASE_URL").unwrap();
                let (head, query) = base.split_once('?').unwrap_or((&base, ""));
                let head = &head[..head.rfind('/').unwrap()];
                if query.is_empty() {
                    format!("{head}/{name}")
                } else {
                    format!("{head}/{name}?{query}")
                }
            }
        };

        let config = DatabaseConfig {
            url: None,
            max_connections: 4,
            min_connections: 0,
            acquire_timeout_secs: 10,
            embedded: syncbridge::config::Config::from_figment(
                syncbridge::config::Config::figment().unwrap(),
            )
            .unwrap()
            .database
            .embedded,
        };
        Self {
            server: server_pg,
            admin_options,
            name,
            owner_options: options.clone(),
            url: database_url,
            pool: db::connect(options, &config),
        }
    }

    pub async fn finish(self) {
        self.pool.close().await;
        let mut conn = PgConnection::connect_with(&self.admin_options)
            .await
            .unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            quote_ident(&self.name)
        )))
        .await
        .unwrap();
        if let Some(server) = self.server {
            server.stop().unwrap();
        }
    }
}

/// NaN for a measurement left out.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    /// Runs `syncbridge <command>` (e.g. `web`, `serve`) with `env` on top of benchmark settings.
    pub async fn start(database_url: &str, command: &str, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // BENCH_SERVER_BIN runs another build's server under this benchmark (A/B comparisons).
        let bin = std::env::var("BENCH_SERVER_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_syncbridge").to_string());
        // Reaped by `stop`, which every path of this benchmark calls.
        #[allow(clippy::zombie_processes)]
        let child = Command::new(bin)
            .arg(command)
            .env("DATABASE_URL", database_url)
            .env("PORT", port.to_string())
            .env_remove("SYNCBRIDGE_ENV")
            .env("RUST_LOG", "warn")
            .env("SYNCBRIDGE__DATABASE__MAX_CONNECTIONS", "20")
            .env("SYNCBRIDGE__INGEST__RATE_LIMIT_PER_SECOND", "100000")
            .env("SYNCBRIDGE__INGEST__RATE_LIMIT_BURST", "100000")
            .env(
                "SYNCBRIDGE__INGEST__MAX_PENDING_RECORDS_PER_TENANT",
                "1000000000",
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .expect("start syncbridge web");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                return Self { child, base };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("syncbridge {command} did not become ready");
    }

    /// The server's peak resident set so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb / 1024.0
    }

    pub fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}
