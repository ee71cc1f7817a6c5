//! End-to-end pipeline benchmark: webhook → queue → map, match, upsert → sync closed.
//!
//! `cargo bench --bench pipeline` runs the real `syncbridge serve` (web, worker, scheduler in one
//! process) as a child process against a fresh database on a private durable PostgreSQL with a
//! tenant of 1,000 accounts, then:
//! 1. posts `BENCH_RECORDS` (100,000) HubSpot-like contacts of ~1.15 KB in batches of 1,000 into an
//!    empty tenant and times from the first POST until the sync log closes;
//! 2. re-syncs the same records with half of them changed (new sync), timed the same way;
//! 3. as a baseline, upserts `BENCH_BASELINE` (5,000) of the same records the seed's way: mapped
//!    in this process, one `INSERT … ON CONFLICT DO UPDATE` statement and one transaction each.

mod common;

use std::time::{Duration, Instant};

use common::{BenchDb, Server, contact, env_or, median};
use serde_json::{Value, json};
use syncbridge::{
    admin,
    domain::{DataType, SourceType},
    mapping::{self, Outcome},
};
use uuid::Uuid;

const PER_BATCH: usize = 1_000;

/// The records of every batch of one sync, serialised before the clock starts so the benchmark
/// process spends no CPU on JSON while it measures the service.
fn batches(n: usize, changed: bool) -> Vec<std::sync::Arc<String>> {
    (0..n / PER_BATCH)
        .map(|b| {
            let records: Vec<Value> = (b * PER_BATCH..(b + 1) * PER_BATCH)
                .map(|i| {
                    let mut c = contact(i);
                    if changed && i % 2 == 0 {
                        c["properties"]["lifecyclestage"] = json!("evangelist");
                    }
                    c
                })
                .collect();
            std::sync::Arc::new(serde_json::to_string(&records).unwrap())
        })
        .collect()
}

fn body(integration: Uuid, sync_log: Option<&str>, records: &str, is_final: bool) -> Vec<u8> {
    let sync_log = sync_log
        .map(|id| format!(r#""sync_log_id":"{id}","#))
        .unwrap_or_default();
    format!(
        r#"{{"integration_id":"{integration}",{sync_log}"data_type":"contacts","source_type":"hubspot","final":{is_final},"records":{records}}}"#
    )
    .into_bytes()
}

async fn post(client: &reqwest::Client, base: &str, key: &str, body: Vec<u8>) -> Value {
    let response = client
        .post(format!("{base}/api/webhooks/n8n"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    response.json().await.unwrap()
}

/// Delivers `n` records as one sync (8 concurrent clients) and waits until the sync log closes.
/// Returns (records/s, the sync log's counts).
async fn sync(
    bench: &BenchDb,
    client: &reqwest::Client,
    base: &str,
    key: &str,
    integration: Uuid,
    n: usize,
    changed: bool,
) -> (f64, Value) {
    let bodies = std::sync::Arc::new(batches(n, changed));
    let batches = bodies.len();
    let started = Instant::now();
    let first = post(
        client,
        base,
        key,
        body(integration, None, &bodies[0], batches == 1),
    )
    .await;
    let sync_log = first["sync_log_id"].as_str().unwrap().to_string();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, base, key, sync_log, next, bodies) = (
            client.clone(),
            base.to_string(),
            key.to_string(),
            sync_log.clone(),
            next.clone(),
            bodies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b + 1 >= batches {
                    break;
                }
                post(
                    &client,
                    &base,
                    &key,
                    body(integration, Some(&sync_log), &bodies[b], false),
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    if batches > 1 {
        post(
            client,
            base,
            key,
            body(integration, Some(&sync_log), &bodies[batches - 1], true),
        )
        .await;
    }
    let id = Uuid::parse_str(&sync_log).unwrap();
    loop {
        // The service role sees rows only inside a tenant or system transaction.
        let mut tx = syncbridge::db::system_tx(&bench.pool).await.unwrap();
        let row: (String, Value) =
            sqlx::query_as("SELECT status, to_jsonb(l) FROM integration_sync_logs l WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        tx.commit().await.unwrap();
        if row.0 != "running" && row.0 != "pending" {
            return (n as f64 / started.elapsed().as_secs_f64(), row.1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The seed's way: one statement and one transaction per record.
async fn baseline(bench: &BenchDb, tenant: Uuid, integration: Uuid, n: usize) -> f64 {
    let set = mapping::compile(SourceType::Hubspot, DataType::Contacts, &[]).unwrap();
    let records: Vec<(Value, mapping::MappedRecord)> = (0..n)
        .map(|i| {
            let raw = contact(i);
            match set.apply(&raw) {
                Outcome::Mapped(m) => (raw, m),
                other => panic!("{other:?}"),
            }
        })
        .collect();
    let started = Instant::now();
    for (raw, m) in &records {
        let mut tx = syncbridge::db::tenant_tx(&bench.pool, tenant)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO external_contacts (tenant_id, integration_id, external_id, email, first_name,
                 last_name, company_name, lifecycle_stage, source_created_at, source_updated_at,
                 properties, raw)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::timestamptz, $10::timestamptz, $11, $12)
             ON CONFLICT (tenant_id, integration_id, external_id) DO UPDATE SET
                 email = EXCLUDED.email, first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
                 company_name = EXCLUDED.company_name, lifecycle_stage = EXCLUDED.lifecycle_stage,
                 source_created_at = EXCLUDED.source_created_at, source_updated_at = EXCLUDED.source_updated_at,
                 properties = EXCLUDED.properties, raw = EXCLUDED.raw, last_synced_at = now()",
        )
        .bind(tenant)
        .bind(integration)
        .bind(&m.external_id)
        .bind(&m.columns[0])
        .bind(&m.columns[1])
        .bind(&m.columns[2])
        .bind(&m.columns[6])
        .bind(&m.columns[7])
        .bind(&m.columns[8])
        .bind(&m.columns[9])
        .bind(Value::Object(m.properties.clone()))
        .bind(raw)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_RECORDS", 100_000);
    let baseline_n = env_or("BENCH_BASELINE", 5_000);
    let runs = env_or("BENCH_RUNS", 1);
    let bench = BenchDb::create("pipeline_bench").await;
    let tenant = admin::create_tenant(&bench.pool, "Bench").await.unwrap();
    for i in 0..1_000 {
        let domains = vec![format!("customer{i}.example.com")];
        admin::add_account(
            &bench.pool,
            tenant.id,
            &format!("Customer {i} GmbH"),
            &domains,
        )
        .await
        .unwrap();
    }
    let server = Server::start(
        &bench.url,
        "serve",
        &[(
            "SYNCBRIDGE__WORKER__INGEST_CONCURRENCY",
            &std::env::var("BENCH_INGEST_CONCURRENCY").unwrap_or_else(|_| "4".into()),
        )],
    )
    .await;
    let client = reqwest::Client::new();

    let (mut first, mut second, mut base) = (vec![], vec![], vec![]);
    for run in 1..=runs {
        let integration = admin::create_integration(
            &bench.pool,
            tenant.id,
            SourceType::Hubspot,
            &format!("HubSpot {run}"),
            None,
        )
        .await
        .unwrap();
        let key = admin::create_api_key(&bench.pool, integration.id, None)
            .await
            .unwrap()
            .key
            .plaintext;
        let (rate, counts) = sync(
            &bench,
            &client,
            &server.base,
            &key,
            integration.id,
            n,
            false,
        )
        .await;
        eprintln!(
            "run {run}: initial sync {rate:.0} records/s: {}",
            counts_line(&counts)
        );
        first.push(rate);
        let (rate, counts) =
            sync(&bench, &client, &server.base, &key, integration.id, n, true).await;
        eprintln!(
            "run {run}: re-sync, half changed, {rate:.0} records/s: {}",
            counts_line(&counts)
        );
        second.push(rate);

        let seed_way = admin::create_integration(
            &bench.pool,
            tenant.id,
            SourceType::Hubspot,
            &format!("Seed {run}"),
            None,
        )
        .await
        .unwrap();
        let rate = baseline(&bench, tenant.id, seed_way.id, baseline_n).await;
        eprintln!("run {run}: baseline {rate:.0} records/s");
        base.push(rate);
    }
    server.stop();

    let (first, second, base) = (median(first), median(second), median(base));
    println!("| measurement ({runs} run(s), median) | result |");
    println!("|---|---|");
    println!("| initial sync of {n} contacts (POST → sync closed) | {first:.0} records/s |");
    println!("| re-sync of the same {n}, half changed | {second:.0} records/s |");
    println!(
        "| baseline: one statement and one transaction per record ({baseline_n}) | {base:.0} records/s |"
    );
    println!(
        "| ratio to baseline | {:.1}× initial, {:.1}× re-sync |",
        first / base,
        second / base
    );
    bench.finish().await;
}

fn counts_line(log: &Value) -> String {
    format!(
        "status {}, received {}, created {}, updated {}, unchanged {}, skipped {}, failed {}, unmatched {}",
        log["status"],
        log["records_received"],
        log["records_created"],
        log["records_updated"],
        log["records_unchanged"],
        log["records_skipped"],
        log["records_failed"],
        log["records_unmatched"]
    )
}
