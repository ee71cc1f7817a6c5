//! Webhook ingestion benchmark: sustained accept rate, latency, server memory, one large batch.
//!
//! `cargo bench --bench ingest` starts a private, durable PostgreSQL in `target/bench-pg` (or uses
//! `DATABASE_URL`), creates a fresh database, runs the real `syncbridge web` binary as a child
//! process (so its peak RSS is the server's alone), and posts from this process:
//! - `BENCH_CLIENTS` (16) clients posting `BENCH_BATCHES` (480) batches of 1,000 HubSpot-like
//!   contacts of ~1 KB each: records/s, MB/s, p50/p99 latency, the server's peak RSS;
//! - the sustained rate again against fresh servers with metrics off and on, alternating
//!   (`BENCH_METRICS_RUNS` (4) pairs, in ABBA order, of `BENCH_METRICS_BATCHES` (240) batches): the cost of metrics;
//! - one 10,000-record batch, 5 times: the median time to accept it;
//! - against a fresh server process, one ~16 MiB batch: the server's peak RSS while it is in flight;
//! - against fresh server processes, `BENCH_HOSTILE` (48) concurrent ~30 MiB bodies with no valid
//!   key, once with a wrong key in the header and once with a wrong key in the body: the server's
//!   peak RSS (bodies before their caller is known are bounded by
//!   `ingest.max_unauthenticated_bodies`).
//!
//! No worker runs, so accepted jobs only pile up; the backlog bound is raised out of the way.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{BenchDb, Server, env_or, envelope, median};
use syncbridge::{admin, domain::SourceType};
use uuid::Uuid;

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

#[tokio::main]
async fn main() {
    let clients = env_or("BENCH_CLIENTS", 16);
    let batches = env_or("BENCH_BATCHES", 480);
    let per_batch = 1_000;

    let bench = BenchDb::create("ingest_bench").await;
    let pool = bench.pool.clone();
    let database_url = bench.url.clone();
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
    let server = Server::start(&database_url, "web", &[]).await;
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

    // 1b. The cost of metrics: metrics off and on, alternating fresh servers so drift in the
    // machine (or the growing tables) falls on both alike; medians of each.
    let ab_runs = env_or("BENCH_METRICS_RUNS", 4);
    let ab_batches = env_or("BENCH_METRICS_BATCHES", 240);
    let (mut off, mut on) = (vec![], vec![]);
    for run in 1..=ab_runs {
        // ABBA: the tables grow with every run, so the order alternates too.
        let order = if run % 2 == 1 {
            ["false", "true"]
        } else {
            ["true", "false"]
        };
        for enabled in order {
            let rates = if enabled == "true" { &mut on } else { &mut off };
            let server = Server::start(
                &database_url,
                "web",
                &[("SYNCBRIDGE__METRICS__ENABLED", enabled)],
            )
            .await;
            for i in 0..4 {
                post(&client, &server.base, &key, bodies[i].clone()).await;
            }
            let (rate, ..) =
                sustained(&client, &server.base, &key, &bodies, clients, ab_batches).await;
            eprintln!("metrics {enabled}, run {run}: {rate:.0} records/s");
            rates.push(rate);
            server.stop();
        }
    }
    let ab_runs = off.len();
    let (metrics_off, metrics_on) = (median(off), median(on));

    // 2. One 10,000-record batch, alone.
    let big = envelope(integration.id, 0, 10_000);
    let mut ten_k = Vec::new();
    for _ in 0..5 {
        ten_k.push(post(&client, &server.base, &key, big.clone()).await);
    }
    ten_k.sort();
    server.stop();

    // 3. A fresh server, one ~16 MiB batch in flight.
    let server = Server::start(&database_url, "web", &[]).await;
    let idle_rss = server.peak_rss_mib();
    let n16 = (16.0 * 1024.0 * 1024.0 / mean_record) as usize;
    let sixteen = envelope(integration.id, 0, n16);
    let sixteen_len = sixteen.len();
    let t16 = post(&client, &server.base, &key, sixteen).await;
    let rss_16 = server.peak_rss_mib();
    server.stop();

    // 4. Fresh servers, many concurrent ~30 MiB bodies with no valid key.
    let hostile = env_or("BENCH_HOSTILE", 48);
    let n30 = (30.0 * 1024.0 * 1024.0 / mean_record) as usize;
    let thirty = envelope(integration.id, 0, n30);
    let in_header = bytes::Bytes::from(thirty.clone());
    let in_body = {
        let mut b = b"{\"api_key\": \"sbk_not_a_valid_key_0123456789\", ".to_vec();
        b.extend_from_slice(&thirty[1..]);
        bytes::Bytes::from(b)
    };
    drop(thirty);
    let mut hostile_rss = Vec::new();
    for (label, body, header_key) in [("header", in_header, true), ("body", in_body, false)] {
        let server = Server::start(&database_url, "web", &[]).await;
        let idle = server.peak_rss_mib();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..hostile {
            let (client, base, body) = (client.clone(), server.base.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let mut request = client
                    .post(format!("{base}/api/webhooks/n8n"))
                    .header("content-type", "application/json")
                    .body(body);
                if header_key {
                    request = request.bearer_auth("sbk_not_a_valid_key_0123456789");
                }
                // A refusal before the body is read may close the connection mid-upload.
                request
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }));
        }
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        for t in tasks {
            *statuses.entry(t.await.unwrap()).or_default() += 1;
        }
        let rss = server.peak_rss_mib();
        eprintln!(
            "{hostile} bodies of {:.1} MiB, wrong key in the {label}: peak RSS {rss:.0} MiB (idle {idle:.0}), answers {statuses:?}, {:.1} s",
            body.len() as f64 / 1048576.0,
            started.elapsed().as_secs_f64()
        );
        hostile_rss.push((label, body.len(), rss, idle));
        server.stop();
    }

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
        "| sustained accept, metrics off / on (alternating servers, {ab_batches} batches, median of {ab_runs}) | {metrics_off:.0} / {metrics_on:.0} records/s (on/off {:.3}) |",
        metrics_on / metrics_off
    );
    println!(
        "| accept one 10,000-record batch (median of 5) | {:.0} ms |",
        percentile(&ten_k, 0.5)
    );
    println!(
        "| one {:.1} MiB batch ({n16} records) in flight: server peak RSS | {rss_16:.0} MiB (idle {idle_rss:.0} MiB), accepted in {:.0} ms |",
        sixteen_len as f64 / 1048576.0,
        t16.as_secs_f64() * 1000.0
    );
    for (label, len, rss, idle) in &hostile_rss {
        println!(
            "| {hostile} concurrent {:.1} MiB bodies, wrong key in the {label}: server peak RSS | {rss:.0} MiB (idle {idle:.0} MiB) |",
            *len as f64 / 1048576.0
        );
    }
    println!(
        "| stored chunks | {:.1} MiB for {} records received ({live} rows, {dead} dead) |",
        stored as f64 / 1048576.0,
        runs * batches * per_batch + 4 * per_batch + 5 * 10_000 + n16
    );

    bench.finish().await;
}
