//! Webhook ingestion benchmark: sustained accept rate, latency, server memory, one large batch.
//!
//! `cargo bench --bench ingest` starts a private, durable PostgreSQL in `target/bench-pg` (or uses
//! `DATABASE_URL`), creates a fresh database, runs the real `syncbridge web` binary as a child
//! process (so its peak RSS is the server's alone), and posts from this process:
//! - `BENCH_CLIENTS` (16) clients posting `BENCH_BATCHES` (480) batches of 1,000 HubSpot-like
//!   contacts of ~1 KB each: records/s, MB/s, p50/p99 latency, the server's peak RSS;
//! - one 10,000-record batch, 5 times: the median time to accept it;
//! - against a fresh server process, one ~16 MiB batch: the server's peak RSS while it is in flight.
//!
//! No worker runs, so accepted jobs only pile up; the backlog bound is raised out of the way.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use syncbridge::{
    config::DatabaseConfig,
    db::{
        self, admin,
        embedded::{EmbeddedOptions, EmbeddedPostgres, quote_ident},
    },
    domain::SourceType,
};
use uuid::Uuid;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A HubSpot v3 contact padded to about 1 KB, as a real export with custom properties is.
fn contact(i: usize) -> Value {
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
fn noise(seed: usize, len: usize) -> String {
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

fn envelope(integration_id: Uuid, first: usize, n: usize) -> Vec<u8> {
    let records: Vec<Value> = (first..first + n).map(contact).collect();
    serde_json::to_vec(&json!({
        "integration_id": integration_id,
        "data_type": "contacts",
        "source_type": "hubspot",
        "records": records,
    }))
    .unwrap()
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(database_url: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Reaped by `stop`, which every path of this benchmark calls.
        #[allow(clippy::zombie_processes)]
        let child = Command::new(env!("CARGO_BIN_EXE_syncbridge"))
            .arg("web")
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
        panic!("syncbridge web did not become ready");
    }

    /// The server's peak resident set so far, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb / 1024.0
    }

    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

async fn post(client: &reqwest::Client, base: &str, key: &str, body: Vec<u8>) -> Duration {
    let started = Instant::now();
    let response = client
        .post(format!("{base}/api/webhooks/n8n"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("idempotency-key", Uuid::new_v4().to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{text}");
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// One sustained run: `clients` tasks post `batches` batches; (records/s, MB/s, p50 ms, p99 ms).
async fn sustained(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    bodies: &Arc<Vec<Vec<u8>>>,
    clients: usize,
    batches: usize,
) -> (f64, f64, f64, f64) {
    let per_batch = 1_000;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, base, key, bodies, next) = (
            client.clone(),
            base.to_string(),
            key.to_string(),
            bodies.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= batches {
                    break latencies;
                }
                let body = bodies[i % bodies.len()].clone();
                latencies.push(post(&client, &base, &key, body).await);
            }
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let records = (batches * per_batch) as f64;
    let bytes: f64 = (0..batches)
        .map(|i| bodies[i % bodies.len()].len() as f64)
        .sum();
    (
        records / elapsed,
        bytes / elapsed / 1e6,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let clients = env_or("BENCH_CLIENTS", 16);
    let batches = env_or("BENCH_BATCHES", 480);
    let per_batch = 1_000;

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
    let name = format!("ingest_bench_{}", std::process::id());
    let mut conn = PgConnection::connect_with(&admin_options).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {}",
        quote_ident(&name)
    )))
    .await
    .unwrap();
    let options = admin_options.clone().database(&name);
    db::migrate(&options).await.unwrap();
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
    let pool = db::connect(options, &config);
    let tenant = admin::create_tenant(&pool, "Bench").await.unwrap();
    let integration =
        admin::create_integration(&pool, tenant.id, SourceType::Hubspot, "HubSpot", None)
            .await
            .unwrap();
    let key = admin::create_api_key(&pool, integration.id, None)
        .await
        .unwrap()
        .key
        .plaintext;

    // Distinct bodies, built before the clock starts so the clients spend no CPU on JSON.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..32)
            .map(|b| envelope(integration.id, b * per_batch, per_batch))
            .collect(),
    );
    let mean_record = bodies[0].len() as f64 / per_batch as f64;

    // 1. Sustained accept rate.
    let server = Server::start(&database_url).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    // Warm-up: connections, prepared statements.
    for i in 0..4 {
        post(&client, &server.base, &key, bodies[i].clone()).await;
    }
    let runs = env_or("BENCH_RUNS", 3);
    let (mut rates, mut mbs, mut p50s, mut p99s) = (vec![], vec![], vec![], vec![]);
    for run in 1..=runs {
        let (rate, mb, p50, p99) =
            sustained(&client, &server.base, &key, &bodies, clients, batches).await;
        eprintln!("run {run}: {rate:.0} records/s, {mb:.1} MB/s, p50 {p50:.1} ms, p99 {p99:.1} ms");
        rates.push(rate);
        mbs.push(mb);
        p50s.push(p50);
        p99s.push(p99);
    }
    let sustained_rss = server.peak_rss_mib();

    // 2. One 10,000-record batch, alone.
    let big = envelope(integration.id, 0, 10_000);
    let mut ten_k = Vec::new();
    for _ in 0..5 {
        ten_k.push(post(&client, &server.base, &key, big.clone()).await);
    }
    ten_k.sort();
    server.stop();

    // 3. A fresh server, one ~16 MiB batch in flight.
    let server = Server::start(&database_url).await;
    let idle_rss = server.peak_rss_mib();
    let n16 = (16.0 * 1024.0 * 1024.0 / mean_record) as usize;
    let sixteen = envelope(integration.id, 0, n16);
    let sixteen_len = sixteen.len();
    let t16 = post(&client, &server.base, &key, sixteen).await;
    let rss_16 = server.peak_rss_mib();
    server.stop();

    let (dead, live): (i64, i64) = sqlx::query_as(
        "SELECT n_dead_tup, n_live_tup FROM pg_stat_user_tables WHERE relname = 'ingest_batch_chunks'",
    )
    .fetch_one(&pool)
    .await
    .unwrap_or((0, 0));
    let stored: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('ingest_batch_chunks')")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);

    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| sustained accept, {clients} clients × {per_batch}-record batches (~{mean_record:.0} B/record), {batches} batches, median of {runs} | {:.0} records/s, {:.1} MB/s |",
        median(rates),
        median(mbs)
    );
    println!(
        "| latency per batch, median of {runs} runs | p50 {:.1} ms, p99 {:.1} ms |",
        median(p50s),
        median(p99s)
    );
    println!("| server peak RSS during the sustained run | {sustained_rss:.0} MiB |");
    println!(
        "| accept one 10,000-record batch (median of 5) | {:.0} ms |",
        percentile(&ten_k, 0.5)
    );
    println!(
        "| one {:.1} MiB batch ({n16} records) in flight: server peak RSS | {rss_16:.0} MiB (idle {idle_rss:.0} MiB), accepted in {:.0} ms |",
        sixteen_len as f64 / 1048576.0,
        t16.as_secs_f64() * 1000.0
    );
    println!(
        "| stored chunks | {:.1} MiB for {} records received ({live} rows, {dead} dead) |",
        stored as f64 / 1048576.0,
        runs * batches * per_batch + 4 * per_batch + 5 * 10_000 + n16
    );

    pool.close().await;
    let mut conn = PgConnection::connect_with(&admin_options).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {} WITH (FORCE)",
        quote_ident(&name)
    )))
    .await
    .unwrap();
    if let Some(server) = server_pg {
        server.stop().unwrap();
    }
}
