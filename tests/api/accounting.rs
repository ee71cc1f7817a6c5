//! Every accepted record accounted for: poison values fail one record and never their chunk,
//! what no record could become is refused at the door, and the counts of every batch and sync
//! add up.

use reqwest::StatusCode;
use serde_json::{Value, json};
use syncbridge::{admin, domain::SourceType};
use uuid::Uuid;

use crate::pipeline::{World, world};

/// Records per poisoned batch: two chunks (1,000 + 500), the poison in the first.
const RECORDS: usize = 1_500;
const POISON_AT: usize = 700;

fn contact(i: usize) -> String {
    json!({
        "id": format!("c{i}"),
        "properties": {
            "email": format!("person{i}@northwind.io"),
            "firstname": format!("First{i}"),
            "lastname": "Last",
            "createdate": "2024-01-18T09:01:11.215Z",
            "lastmodifieddate": "2024-03-10T22:04:17.912Z"
        }
    })
    .to_string()
}

fn deal(i: usize) -> String {
    json!({
        "id": format!("d{i}"),
        "properties": {"dealname": format!("Deal {i}"), "amount": "1200.50", "dealstage": "won"}
    })
    .to_string()
}

/// A webhook body as text, so a record may hold escapes a JSON builder would not write.
fn body_text(integration: Uuid, data_type: &str, records: &[String]) -> String {
    format!(
        r#"{{"integration_id":"{integration}","data_type":"{data_type}","source_type":"hubspot","final":true,"records":[{}]}}"#,
        records.join(",")
    )
}

async fn post_text(w: &World, key: &str, body: String) -> (StatusCode, Value) {
    let response = w
        .app
        .client
        .post(w.app.url("/api/webhooks/n8n"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// A HubSpot integration of a new tenant on `pool`, and its API key.
async fn hubspot_integration(pool: &sqlx::PgPool, tenant: &str) -> (Uuid, String) {
    let tenant = admin::create_tenant(pool, tenant).await.unwrap();
    let integration =
        admin::create_integration(pool, tenant.id, SourceType::Hubspot, "HubSpot", None)
            .await
            .unwrap();
    let key = admin::create_api_key(pool, integration.id, None)
        .await
        .unwrap()
        .key
        .plaintext;
    (integration.id, key)
}

/// Stores a mapping of contacts' `target` from `source` for `integration`.
async fn map_contacts(w: &World, integration: Uuid, target: &str, source: &str) {
    admin::set_mapping(
        &w.app.db.pool,
        None,
        integration,
        syncbridge::domain::DataType::Contacts,
        target,
        &json!({ "source": source }),
        true,
    )
    .await
    .unwrap();
}

/// One poisoned batch: its integration and what the webhook answered.
struct Poisoned {
    class: &'static str,
    code: &'static str,
    integration: Uuid,
    table: &'static str,
    receipt: Value,
}

async fn post_poisoned(
    w: &World,
    class: &'static str,
    code: &'static str,
    data_type: &'static str,
    poison: String,
) -> Poisoned {
    let (integration, key) = w.integration(SourceType::Hubspot).await;
    if class == "nul in a property" {
        map_contacts(w, integration, "properties.note", "properties.note").await;
    }
    let make = if data_type == "deals" { deal } else { contact };
    let mut records: Vec<String> = (0..RECORDS).map(make).collect();
    records[POISON_AT] = poison;
    let (status, receipt) = post_text(w, &key, body_text(integration, data_type, &records)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{class}: {receipt}");
    Poisoned {
        class,
        code,
        integration,
        table: if data_type == "deals" {
            "external_deals"
        } else {
            "external_contacts"
        },
        receipt,
    }
}

/// Asserts the sync of `p` closed partial with 1,499 stored and one failed with `p.code`.
async fn assert_one_failed(w: &World, p: &Poisoned) {
    let class = p.class;
    let stored = w
        .count(&format!(
            "SELECT count(*) FROM {} WHERE integration_id = '{}'",
            p.table, p.integration
        ))
        .await;
    assert_eq!(
        stored,
        RECORDS as i64 - 1,
        "{class}: the other records are stored"
    );
    let (status, _, received, .., failed) = sync_counts(w, &p.receipt["sync_log_id"]).await;
    assert_eq!(status, "partial", "{class}");
    assert_eq!((received, failed), (RECORDS as i64, 1), "{class}");
    let errors: Vec<(i32, Option<String>, String)> = sqlx::query_as(
        "SELECT record_index, external_id, code FROM integration_sync_errors
         WHERE integration_id = $1",
    )
    .bind(p.integration)
    .fetch_all(&mut w.owner().await)
    .await
    .unwrap();
    // One record; each of its bad fields has a row (a NUL in `firstname` spoils `full_name` too).
    assert!(!errors.is_empty(), "{class}");
    assert!(
        errors
            .iter()
            .all(|e| e.0 == POISON_AT as i32 && e.2 == p.code),
        "{class}: {errors:?}"
    );
    let batch_state: String = sqlx::query_scalar("SELECT state FROM ingest_batches WHERE id = $1")
        .bind(uuid(&p.receipt["batch_id"]))
        .fetch_one(&mut w.owner().await)
        .await
        .unwrap();
    assert_eq!(batch_state, "processed", "{class}");
}

#[tokio::test]
async fn one_poison_value_fails_its_record_and_never_its_chunk() {
    let w = world().await;
    let long = "x".repeat(2_000);
    let mut poisoned = vec![
        post_poisoned(
            &w,
            "nul in a mapped text",
            "nul_character",
            "contacts",
            r#"{"id":"c700","properties":{"email":"p@northwind.io","firstname":"Da\u0000na"}}"#
                .into(),
        )
        .await,
        post_poisoned(
            &w,
            "nul in a property",
            "nul_character",
            "contacts",
            r#"{"id":"c700","properties":{"email":"p@northwind.io","note":{"deep":["a\u0000b"]}}}"#
                .into(),
        )
        .await,
        post_poisoned(
            &w,
            "year zero",
            "date_out_of_range",
            "contacts",
            r#"{"id":"c700","properties":{"email":"p@northwind.io","createdate":"0000-01-01T00:00:00Z"}}"#
                .into(),
        )
        .await,
        post_poisoned(
            &w,
            "an amount of 1e16",
            "number_out_of_range",
            "deals",
            r#"{"id":"d700","properties":{"dealname":"Too big","amount":"1e16"}}"#.into(),
        )
        .await,
        post_poisoned(
            &w,
            "an over-long indexed text",
            "value_too_long",
            "contacts",
            format!(r#"{{"id":"c700","properties":{{"email":"{long}@northwind.io"}}}}"#),
        )
        .await,
    ];
    // What the checks before the insert do not know, the database refuses: the chunk is halved
    // down to the one record it refuses.
    let mut owner = w.owner().await;
    sqlx::query(
        "ALTER TABLE external_contacts
         ADD CONSTRAINT test_no_poison CHECK (title IS DISTINCT FROM 'poison')",
    )
    .execute(&mut owner)
    .await
    .unwrap();
    poisoned.push(
        post_poisoned(
            &w,
            "a value the database refuses",
            "rejected_by_database",
            "contacts",
            r#"{"id":"c700","properties":{"email":"p@northwind.io","jobtitle":"poison"}}"#.into(),
        )
        .await,
    );
    w.drain().await;
    for p in &poisoned {
        assert_one_failed(&w, p).await;
    }
}

#[tokio::test]
async fn what_no_record_could_become_is_refused_at_the_door_naming_it() {
    let w = world().await;
    let (integration, key) = w.integration(SourceType::Hubspot).await;
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    for (poison, path) in [
        (
            r#"{"id":"c700","properties":{"firstname":"\ud800"}}"#.to_string(),
            "records[700].properties.firstname",
        ),
        (
            r#"{"id":"c700","properties":{"score":1e400}}"#.to_string(),
            "records[700].properties.score",
        ),
        (
            format!(r#"{{"id":"c700","nested":{deep}}}"#),
            "records[700].nested",
        ),
    ] {
        let mut records: Vec<String> = (0..RECORDS).map(contact).collect();
        records[POISON_AT] = poison;
        let (status, answer) =
            post_text(&w, &key, body_text(integration, "contacts", &records)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_body");
        let got = answer["error"]["details"]["path"].as_str().unwrap();
        assert!(got.starts_with(path), "{got} names {path}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            ["surrogate", "out of range", "127 levels"]
                .iter()
                .any(|m| message.contains(m)),
            "the message says what is wrong: {message}"
        );
    }
    assert_eq!(
        w.count("SELECT count(*) FROM ingest_batches").await,
        0,
        "nothing was accepted"
    );
}

#[tokio::test]
async fn a_stored_record_the_worker_cannot_parse_fails_alone() {
    // Chunks stored before the webhook checked records (or written by hand) may hold JSON that
    // serde_json refuses; the worker fails that record, not the chunk.
    let w = world().await;
    let (integration, key) = w.integration(SourceType::Hubspot).await;
    let records: Vec<String> = (0..10).map(contact).collect();
    let (status, receipt) = post_text(&w, &key, body_text(integration, "contacts", &records)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut stored = records.clone();
    stored[3] = r#"{"id":"c3","properties":{"firstname":"\udc00"}}"#.into();
    let raws: Vec<&serde_json::value::RawValue> = stored
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    let chunk = &syncbridge::sync::chunk::chunks(&raws, 1_000).unwrap()[0];
    sqlx::query("UPDATE ingest_batch_chunks SET payload = $1 WHERE batch_id = $2")
        .bind(&chunk.payload)
        .bind(
            receipt["batch_id"]
                .as_str()
                .unwrap()
                .parse::<Uuid>()
                .unwrap(),
        )
        .execute(&mut w.owner().await)
        .await
        .unwrap();
    w.drain().await;
    assert_eq!(w.count("SELECT count(*) FROM external_contacts").await, 9);
    let code: String =
        sqlx::query_scalar("SELECT code FROM integration_sync_errors WHERE record_index = 3")
            .fetch_one(&mut w.owner().await)
            .await
            .unwrap();
    assert_eq!(code, "invalid_json");
}

/// Runs a worker until no ingestion job is runnable, allowing dead ones (unlike `World::drain`).
async fn work(w: &World) {
    let mut config = crate::helpers::test_config();
    config.worker.poll_interval_ms = 20;
    config.worker.retry_base_ms = 10;
    crate::helpers::work_until_done(
        &w.app.db,
        &config,
        "SELECT count(*) FROM jobs WHERE queue = 'ingest'
         AND state IN ('available', 'scheduled', 'running', 'retryable')",
    )
    .await;
}

async fn scheduler_round(w: &World) -> syncbridge::scheduler::RoundReport {
    let settings =
        syncbridge::scheduler::SchedulerSettings::from_config(&crate::helpers::test_config());
    syncbridge::scheduler::run_round(&w.app.db.pool, &settings, chrono::Utc::now())
        .await
        .unwrap()
}

/// (status, failure_reason, received, created, updated, unchanged, skipped, failed)
type SyncCounts = (String, Option<String>, i64, i64, i64, i64, i64, i64);

async fn sync_counts(w: &World, sync_log_id: &Value) -> SyncCounts {
    let counts: SyncCounts = sqlx::query_as(
        "SELECT status, failure_reason, records_received, records_created, records_updated,
                records_unchanged, records_skipped, records_failed
         FROM integration_sync_logs WHERE id = $1",
    )
    .bind(sync_log_id.as_str().unwrap().parse::<Uuid>().unwrap())
    .fetch_one(&mut w.owner().await)
    .await
    .unwrap();
    let (_, _, received, created, updated, unchanged, skipped, failed) = &counts;
    assert_eq!(
        *received,
        created + updated + unchanged + skipped + failed,
        "received = created + updated + unchanged + skipped + failed: {counts:?}"
    );
    counts
}

async fn backlog(w: &World) -> i64 {
    w.count(
        "SELECT COALESCE(sum(record_count - records_processed), 0)::bigint FROM ingest_batches
         WHERE state IN ('received', 'processing')",
    )
    .await
}

fn uuid(v: &Value) -> Uuid {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_dead_chunk_fails_its_batch_closes_the_sync_and_a_retry_restores_it() {
    let w = world().await;
    let (integration, key) = w.integration(SourceType::Hubspot).await;
    let records: Vec<String> = (0..RECORDS).map(contact).collect();
    let (status, receipt) = post_text(&w, &key, body_text(integration, "contacts", &records)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let batch_id = uuid(&receipt["batch_id"]);
    // The second chunk's stored bytes are damaged: its job fails permanently.
    let mut owner = w.owner().await;
    let payload: Vec<u8> = sqlx::query_scalar(
        "SELECT payload FROM ingest_batch_chunks WHERE batch_id = $1 AND chunk_index = 1",
    )
    .bind(batch_id)
    .fetch_one(&mut owner)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE ingest_batch_chunks SET payload = '\\x00'::bytea
         WHERE batch_id = $1 AND chunk_index = 1",
    )
    .bind(batch_id)
    .execute(&mut owner)
    .await
    .unwrap();
    work(&w).await;
    assert_eq!(
        w.count(
            "SELECT count(*) FROM jobs WHERE kind = 'ingest.process_chunk' AND state = 'failed'"
        )
        .await,
        1
    );
    assert_eq!(
        backlog(&w).await,
        500,
        "the dead chunk still holds the backlog"
    );

    let report = scheduler_round(&w).await;
    assert_eq!(report.chunks_settled, 1);
    let (batch_state, batch_reason, failed): (String, Option<String>, i32) = sqlx::query_as(
        "SELECT state, failure_reason, records_failed FROM ingest_batches WHERE id = $1",
    )
    .bind(batch_id)
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(
        (batch_state.as_str(), batch_reason.as_deref(), failed),
        ("failed", Some("processing_failed"), 500)
    );
    let progress = w
        .app
        .get_json(&format!("/api/batches/{batch_id}"), &key)
        .await;
    assert_eq!(
        (
            &progress["state"],
            &progress["failure_reason"],
            &progress["progress"]["percent"],
            &progress["counts"]["failed"]
        ),
        (
            &json!("failed"),
            &json!("processing_failed"),
            &json!(100.0),
            &json!(500)
        ),
        "n8n sees the batch ended: {progress}"
    );
    let (status, reason, received, created, _, _, _, failed) =
        sync_counts(&w, &receipt["sync_log_id"]).await;
    assert_eq!(
        (
            status.as_str(),
            reason.as_deref(),
            received,
            created,
            failed
        ),
        ("partial", Some("processing_failed"), 1_500, 1_000, 500)
    );
    let (index, code): (i32, String) =
        sqlx::query_as("SELECT record_index, code FROM integration_sync_errors")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!((index, code.as_str()), (1_000, "processing_failed"));
    assert_eq!(backlog(&w).await, 0, "the backlog is released");
    assert_eq!(scheduler_round(&w).await.chunks_settled, 0, "settled once");
    assert_eq!(
        w.count("SELECT count(*) FROM integration_cursors").await,
        0,
        "records never processed: the next incremental sync must fetch them again"
    );

    // The operator repairs the cause and retries the dead job: everything it closed reopens,
    // and the sync closes again, counted once.
    sqlx::query(
        "UPDATE ingest_batch_chunks SET payload = $2 WHERE batch_id = $1 AND chunk_index = 1",
    )
    .bind(batch_id)
    .bind(&payload)
    .execute(&mut owner)
    .await
    .unwrap();
    let filter = jobs::JobFilter {
        states: vec![jobs::JobState::Failed],
        ..Default::default()
    };
    let retried = jobs::admin::apply(
        &w.app.db.pool,
        &jobs::Queue::default(),
        jobs::BulkAction::Retry,
        &filter,
        100,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(retried, 1);
    work(&w).await;
    let (status, reason, received, created, _, _, _, failed) =
        sync_counts(&w, &receipt["sync_log_id"]).await;
    assert_eq!(
        (status.as_str(), reason, received, created, failed),
        ("success", None, 1_500, 1_500, 0)
    );
    assert_eq!(
        w.count("SELECT count(*) FROM external_contacts").await,
        1_500
    );
    assert_eq!(
        w.count("SELECT count(*) FROM integration_sync_errors")
            .await,
        0
    );
    let batch_state: String = sqlx::query_scalar("SELECT state FROM ingest_batches WHERE id = $1")
        .bind(batch_id)
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(batch_state, "processed");
    assert_eq!(
        w.count("SELECT count(*) FROM integration_cursors WHERE data_type = 'contacts'")
            .await,
        1,
        "complete now: the cursor moves"
    );
    let (total, failed_syncs, synced, last): (i64, i64, i64, String) = sqlx::query_as(
        "SELECT total_syncs, failed_syncs, total_records_synced, last_sync_status
         FROM integration_sources WHERE id = $1",
    )
    .bind(integration)
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(
        (total, failed_syncs, synced, last.as_str()),
        (1, 0, 1_500, "success")
    );
}

#[tokio::test]
async fn operators_list_and_close_open_syncs_and_discard_batches() {
    let w = world().await;
    let db = &w.app.db;
    // A workflow that never sent its final batch: the sync stays open.
    let (hanging, key) = w.integration(SourceType::Hubspot).await;
    let body = body_text(
        hanging,
        "contacts",
        &(0..5).map(contact).collect::<Vec<_>>(),
    )
    .replace(r#""final":true,"#, "");
    let (_, open) = post_text(&w, &key, body).await;
    // A batch an operator gives up on before it is processed.
    let (doomed, key) = w.integration(SourceType::Hubspot).await;
    let (_, discarded) = post_text(
        &w,
        &key,
        body_text(
            doomed,
            "contacts",
            &(0..1_200).map(contact).collect::<Vec<_>>(),
        ),
    )
    .await;

    let listed = crate::cli::ok(db, &["syncs", "list", "--open"]);
    let open_id = open["sync_log_id"].as_str().unwrap();
    assert_eq!(
        listed.lines().count(),
        3,
        "a header and two syncs: {listed}"
    );
    let line = listed.lines().find(|l| l.starts_with(open_id)).unwrap();
    assert!(
        line.contains("running") && line.contains("(no final batch of contacts)"),
        "{line}"
    );

    let batch = discarded["batch_id"].as_str().unwrap();
    let out = crate::cli::ok(db, &["batches", "discard", batch, "--reason", "bad export"]);
    assert_eq!(out, "1200");
    let (status, reason, received, _, _, _, _, failed) =
        sync_counts(&w, &discarded["sync_log_id"]).await;
    assert_eq!(
        (status.as_str(), reason.as_deref(), received, failed),
        ("failed", Some("processing_failed"), 1_200, 1_200)
    );
    let codes: Vec<String> = sqlx::query_scalar(
        "SELECT code FROM integration_sync_errors WHERE batch_id = $1 ORDER BY record_index",
    )
    .bind(uuid(&discarded["batch_id"]))
    .fetch_all(&mut w.owner().await)
    .await
    .unwrap();
    assert_eq!(
        codes,
        ["batch_discarded", "batch_discarded"],
        "one row per chunk"
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM jobs WHERE kind = 'ingest.process_chunk' AND state = 'cancelled'"
        )
        .await,
        2
    );

    let closed = crate::cli::ok(
        db,
        &[
            "syncs",
            "close",
            open_id,
            "--reason",
            "workflow deleted in n8n",
        ],
    );
    // Nothing of it was processed yet: it stored nothing, so it failed.
    assert_eq!(closed, "failed");
    let again = crate::cli::syncbridge(db, &["syncs", "close", open_id, "--reason", "twice"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already closed"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        crate::cli::ok(db, &["syncs", "list", "--open", "--json"]),
        ""
    );

    // Its batch is processed afterwards and still counted; the discarded jobs never run.
    work(&w).await;
    let (status, reason, received, created, ..) = sync_counts(&w, &open["sync_log_id"]).await;
    assert_eq!(
        (status.as_str(), reason.as_deref(), received, created),
        ("failed", Some("closed_by_admin"), 5, 5)
    );
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM external_contacts WHERE integration_id = '{doomed}'"
        ))
        .await,
        0
    );
    assert_eq!(backlog(&w).await, 0);
}

#[tokio::test]
async fn a_rescued_old_chunk_never_overwrites_a_newer_delivery() {
    let w = world().await;
    let (integration, key) = w.integration(SourceType::Hubspot).await;
    let version = |title: &str| {
        (0..10)
            .map(|i| {
                json!({"id": format!("c{i}"), "properties": {
                    "email": format!("p{i}@northwind.io"), "jobtitle": title}})
                .to_string()
            })
            .collect::<Vec<_>>()
    };
    let (_, old) = post_text(
        &w,
        &key,
        body_text(integration, "contacts", &version("old")),
    )
    .await;
    // Its job waits for a retry, as after a worker crashed mid-chunk ...
    let mut owner = w.owner().await;
    sqlx::query(
        "UPDATE jobs SET state = 'scheduled', scheduled_at = now() + interval '1 hour'
         WHERE args->>'batch_id' = $1",
    )
    .bind(old["batch_id"].as_str().unwrap())
    .execute(&mut owner)
    .await
    .unwrap();
    // ... while a later delivery of the same records is processed first.
    let (_, new) = post_text(
        &w,
        &key,
        body_text(integration, "contacts", &version("new")),
    )
    .await;
    let mut config = crate::helpers::test_config();
    config.worker.poll_interval_ms = 20;
    crate::helpers::work_until_done(
        &w.app.db,
        &config,
        "SELECT count(*) FROM jobs WHERE queue = 'ingest' AND state IN ('available', 'running')",
    )
    .await;
    // Then the old chunk runs after all: rescued from a dead worker.
    sqlx::query(
        "UPDATE jobs SET state = 'running', attempt = 1, attempted_by = 'crashed-worker',
                         attempted_at = now() - interval '1 hour'
         WHERE args->>'batch_id' = $1",
    )
    .bind(old["batch_id"].as_str().unwrap())
    .execute(&mut owner)
    .await
    .unwrap();
    work(&w).await;
    let titles: Vec<String> = sqlx::query_scalar("SELECT DISTINCT title FROM external_contacts")
        .fetch_all(&mut owner)
        .await
        .unwrap();
    assert_eq!(titles, ["new"], "the later delivery's version stays");
    let (status, _, received, created, updated, unchanged, skipped, failed) =
        sync_counts(&w, &old["sync_log_id"]).await;
    assert_eq!(status, "success");
    assert_eq!(
        (received, created, updated, unchanged, skipped, failed),
        (10, 0, 0, 0, 10, 0),
        "the old versions count as skipped"
    );
    let (_, _, _, created, ..) = sync_counts(&w, &new["sync_log_id"]).await;
    assert_eq!(created, 10);
}

#[tokio::test]
async fn retention_deletes_what_is_past_its_age_and_keeps_the_rest() {
    use syncbridge::sync::retention::{RetentionSettings, prune};
    let w = world().await;
    let (integration, key) = w.integration(SourceType::Hubspot).await;
    let records: Vec<String> = (0..1_200).map(contact).collect();
    let (_, old) = post_text(&w, &key, body_text(integration, "contacts", &records)).await;
    let (_, recent) = post_text(&w, &key, body_text(integration, "contacts", &records[..3])).await;
    let (_, unfinished) = post_text(
        &w,
        &key,
        body_text(integration, "contacts", &records[..2]).replace(r#""final":true,"#, ""),
    )
    .await;
    let mut owner = w.owner().await;
    // The unfinished batch's job never ran: its chunk stays whatever its age.
    sqlx::query("UPDATE jobs SET state = 'cancelled' WHERE args->>'batch_id' = $1")
        .bind(unfinished["batch_id"].as_str().unwrap())
        .execute(&mut owner)
        .await
        .unwrap();
    work(&w).await;
    sqlx::query("UPDATE ingest_batches SET received_at = now() - interval '8 days' WHERE id <> $1")
        .bind(uuid(&recent["batch_id"]))
        .execute(&mut owner)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO integration_sync_errors (tenant_id, integration_id, sync_log_id, code, message, created_at)
         SELECT tenant_id, integration_id, id, 'x', 'old', now() - interval '31 days' FROM integration_sync_logs
         UNION ALL
         SELECT tenant_id, integration_id, id, 'x', 'recent', now() FROM integration_sync_logs",
    )
    .execute(&mut owner)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO integration_schedule_ticks (tenant_id, integration_id, tick_at, outcome)
         SELECT $1, $2, now() - d * interval '1 day', 'skipped_missed' FROM unnest('{40, 35, 31}'::int[]) d",
    )
    .bind(w.tenant_id)
    .bind(integration)
    .execute(&mut owner)
    .await
    .unwrap();

    let settings = RetentionSettings::from_config(&crate::helpers::test_config());
    let pruned = prune(&w.app.db.pool, &settings, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        (pruned.batches, pruned.chunks),
        (1, 2),
        "the old batch's two chunks"
    );
    assert_eq!(pruned.sync_errors, 3, "one old error row per sync");
    assert_eq!(pruned.ticks, 2, "the newest tick stays for the scheduler");
    let kept: Vec<Uuid> =
        sqlx::query_scalar("SELECT DISTINCT batch_id FROM ingest_batch_chunks ORDER BY 1")
            .fetch_all(&mut owner)
            .await
            .unwrap();
    let mut expected = vec![uuid(&recent["batch_id"]), uuid(&unfinished["batch_id"])];
    expected.sort();
    assert_eq!(kept, expected);
    assert_eq!(
        w.count("SELECT count(*) FROM integration_sync_errors WHERE message = 'recent'")
            .await,
        3
    );
    assert_eq!(
        prune(&w.app.db.pool, &settings, chrono::Utc::now())
            .await
            .unwrap(),
        Default::default(),
        "nothing is left to delete"
    );
    // A sync whose chunks are gone cannot be replayed, and says why.
    let out = crate::cli::syncbridge(
        &w.app.db,
        &["syncs", "reprocess", old["sync_log_id"].as_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deleted by retention"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn reprocessing_a_sync_after_a_mapping_fix_updates_its_rows_as_a_new_sync() {
    let w = world().await;
    let (integration, key) = w.integration(SourceType::Hubspot).await;
    let records: Vec<String> = (0..1_100)
        .map(|i| {
            json!({"id": format!("c{i}"), "properties": {
                "email": format!("p{i}@northwind.io"), "jobtitle": "Engineer", "job_function": "R&D"}})
            .to_string()
        })
        .collect();
    let (_, first) = post_text(&w, &key, body_text(integration, "contacts", &records)).await;
    work(&w).await;
    let open = crate::cli::syncbridge(
        &w.app.db,
        &["syncs", "reprocess", first["sync_log_id"].as_str().unwrap()],
    );
    assert!(
        open.status.success(),
        "{}",
        String::from_utf8_lossy(&open.stderr)
    );
    let unchanged_replay: Value = json!(String::from_utf8(open.stdout).unwrap().trim());
    work(&w).await;
    let (status, _, received, _, updated, unchanged, ..) = sync_counts(&w, &unchanged_replay).await;
    assert_eq!(
        (status.as_str(), received, updated, unchanged),
        ("success", 1_100, 0, 1_100)
    );

    // The title should have been the job function: fixed, then replayed.
    map_contacts(&w, integration, "title", "properties.job_function").await;
    let replay: Value = json!(crate::cli::ok(
        &w.app.db,
        &["syncs", "reprocess", first["sync_log_id"].as_str().unwrap()],
    ));
    work(&w).await;
    let (status, _, received, created, updated, ..) = sync_counts(&w, &replay).await;
    assert_eq!(
        (status.as_str(), received, created, updated),
        ("success", 1_100, 0, 1_100)
    );
    let (trigger, mode, of): (String, String, Uuid) = sqlx::query_as(
        "SELECT trigger, sync_mode, replay_of FROM integration_sync_logs WHERE id = $1",
    )
    .bind(uuid(&replay))
    .fetch_one(&mut w.owner().await)
    .await
    .unwrap();
    assert_eq!(
        (trigger.as_str(), mode.as_str(), of),
        ("replay", "incremental", uuid(&first["sync_log_id"]))
    );
    assert_eq!(
        w.count("SELECT count(*) FROM external_contacts WHERE title = 'R&D'")
            .await,
        1_100
    );
    let (_, _, _, created, ..) = sync_counts(&w, &first["sync_log_id"]).await;
    assert_eq!(created, 1_100, "the original sync is as it was");
    let cursor_of_first = format!(
        "SELECT count(*) FROM integration_cursors WHERE sync_log_id = '{}'",
        uuid(&first["sync_log_id"])
    );
    assert_eq!(
        w.count(&cursor_of_first).await,
        1,
        "a replay read nothing new from the source: the cursor stays the original's"
    );
    // An open sync is not replayed.
    let (_, running) = post_text(
        &w,
        &key,
        body_text(integration, "contacts", &records[..1]).replace(r#""final":true,"#, ""),
    )
    .await;
    let out = crate::cli::syncbridge(
        &w.app.db,
        &[
            "syncs",
            "reprocess",
            running["sync_log_id"].as_str().unwrap(),
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("still running"));
}

#[tokio::test]
async fn an_immediate_database_crash_mid_ingest_loses_and_strands_nothing() {
    use std::sync::Arc;
    use syncbridge::db::embedded::{EmbeddedOptions, EmbeddedPostgres};

    // A durable cluster of this test's own: it is crashed twice, which the shared one must not be.
    let data_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("crash-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let _stop_on_panic = StopOnPanic(data_dir.clone());
    let options = EmbeddedOptions {
        data_dir: data_dir.clone(),
        bin_dir: None,
        run_as: "postgres".into(),
        database: "syncbridge".into(),
        durable: true,
    };
    let server = Arc::new(
        tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&options))
            .await
            .unwrap()
            .expect("the drill's PostgreSQL starts"),
    );
    let connect = server.ensure_database().await.unwrap();
    syncbridge::db::migrate(&connect, &jobs::Queue::default())
        .await
        .unwrap();
    let db = crate::helpers::TestDb {
        name: "syncbridge".into(),
        owner_options: connect.clone(),
        pool: syncbridge::db::connect(connect, &crate::helpers::database_config()),
    };
    let app = crate::helpers::TestApp::spawn_on(db).await;
    let pool = app.db.pool.clone();
    let (integration, key) = hubspot_integration(&pool, "Drill").await;

    // A worker and the queue's maintenance run throughout, as in production.
    let mut config = crate::helpers::test_config();
    config.worker.poll_interval_ms = 50;
    config.worker.retry_base_ms = 50;
    config.worker.retry_max_secs = 1;
    config.worker.heartbeat_interval_secs = 1;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = jobs::Worker::new(
        pool.clone(),
        syncbridge::tasks::JobContext::new(pool.clone(), &config).unwrap(),
        syncbridge::tasks::registry(&config.worker),
        syncbridge::tasks::worker_config(&config),
    );
    let maintenance = jobs::Maintenance::new(
        pool.clone(),
        jobs::MaintenanceConfig {
            interval: std::time::Duration::from_millis(50),
            stale_after: std::time::Duration::from_secs(3),
            ..jobs::MaintenanceConfig::default()
        },
        Vec::new(),
    );
    let running = tokio::spawn(worker.run(shutdown.clone()));
    let maintaining = tokio::spawn(maintenance.run(shutdown.clone()));

    // Four clients deliver 48 batches of 500, each retried with its idempotency key until
    // accepted, as n8n's Retry On Fail does; the database crashes twice meanwhile.
    const BATCHES: usize = 48;
    const PER_BATCH: usize = 500;
    let (accepted, mut accepted_rx) = tokio::sync::watch::channel(0usize);
    let accepted = Arc::new(accepted);
    let mut clients = Vec::new();
    for client in 0..4 {
        let (url, key, accepted) = (app.url("/api/webhooks/n8n"), key.clone(), accepted.clone());
        let http = reqwest::Client::new();
        clients.push(tokio::spawn(async move {
            use backon::{ConstantBuilder, Retryable};
            for b in (client..BATCHES).step_by(4) {
                let records: Vec<String> =
                    (b * PER_BATCH..(b + 1) * PER_BATCH).map(contact).collect();
                let body = body_text(integration, "contacts", &records);
                let deliver = || async {
                    http.post(&url)
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .header("idempotency-key", format!("drill-{b}"))
                        .body(body.clone())
                        .send()
                        .await?
                        .error_for_status()
                };
                // n8n's Retry On Fail: a pause between tries, 120 s at most.
                deliver
                    .retry(
                        ConstantBuilder::default()
                            .with_delay(std::time::Duration::from_millis(200))
                            .with_max_times(600),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("batch {b} never accepted: {e}"));
                accepted.send_modify(|n| *n += 1);
            }
        }));
    }
    for after in [12, 30] {
        tokio::time::timeout(
            std::time::Duration::from_secs(120),
            accepted_rx.wait_for(|n| *n >= after),
        )
        .await
        .expect("deliveries stalled")
        .unwrap();
        let server = server.clone();
        tokio::task::spawn_blocking(move || server.crash_and_restart())
            .await
            .unwrap()
            .expect("the drill's PostgreSQL restarts");
    }
    for c in clients {
        c.await.unwrap();
    }

    // Recovery: every accepted record is stored and no job stays running.
    if let Err(unfinished) = crate::helpers::until_none_left(
        &app.db,
        "SELECT (SELECT count(*) FROM jobs WHERE state IN ('available', 'scheduled', 'running', 'retryable'))
              + (SELECT count(*) FROM ingest_batches WHERE state <> 'processed')",
        std::time::Duration::from_secs(180),
    )
    .await
    {
        panic!("{unfinished} jobs or batches never finished after the crashes");
    }
    let mut owner = app.db.owner().await;
    let stored = crate::helpers::count(&mut owner, "SELECT count(*) FROM external_contacts").await;
    assert_eq!(
        stored,
        (BATCHES * PER_BATCH) as i64,
        "every accepted record is stored"
    );
    let batches = crate::helpers::count(&mut owner, "SELECT count(*) FROM ingest_batches").await;
    assert_eq!(batches, BATCHES as i64, "each batch was stored once");
    let not_success = crate::helpers::count(
        &mut owner,
        "SELECT count(*) FROM integration_sync_logs
         WHERE status <> 'success'
            OR records_received <> records_created + records_updated + records_unchanged
                                   + records_skipped + records_failed",
    )
    .await;
    assert_eq!(
        not_success, 0,
        "every sync closed complete and its counts add up"
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
    maintaining.await.unwrap();
    drop(owner);
    app.db.pool.close().await;
    drop(app);
    let server = Arc::try_unwrap(server).expect("no one else holds the drill's server");
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// JSON fragments a mutated record may carry in place of a valid value: what sources really send
/// (NUL, huge numbers, odd dates, long text, wrong types). The worker must account for each.
fn fragments() -> Vec<String> {
    let mut f: Vec<String> = [
        r#""plain""#,
        r#""\u0000""#,
        r#""a\u0000b""#,
        r#""\ud83d\ude00""#,
        "1e16",
        "1e308",
        "-0",
        "0.1",
        "123456789012345678901234567890",
        r#""0000-01-01T00:00:00Z""#,
        r#""9999-12-31T23:59:59Z""#,
        r#""+10000-01-01T00:00:00Z""#,
        r#""2024-02-30""#,
        r#""not a date""#,
        "null",
        "true",
        "{}",
        "[]",
        r#"{"a":[1,{"b":null}]}"#,
        r#""  ""#,
        r#""""#,
        r#""ünïcödé ✓""#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    f.push(format!("{}1{}", "[".repeat(100), "]".repeat(100)));
    f.push(format!("\"{}\"", "x".repeat(3_000)));
    f.push(format!("\"{}@northwind.io\"", "y".repeat(1_500)));
    f
}

/// What no record can become: the webhook refuses the whole delivery.
const REFUSED: [&str; 5] = [
    r#""\ud800""#,
    r#""\udc00x""#,
    "1e400",
    "-1e400",
    // 128 levels with the record's own object.
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
];

/// One generated envelope: per record, a fragment index (or none) for each of its seven fields;
/// and, for some envelopes, one field of one record given a fragment from [`REFUSED`].
type Envelope = (Vec<Vec<Option<usize>>>, Option<(usize, usize, usize)>);

fn envelopes() -> Vec<Envelope> {
    use proptest::{
        prelude::*,
        strategy::ValueTree,
        test_runner::{Config, TestRunner},
    };
    let n = fragments().len();
    let field = prop_oneof![8 => Just(None), 1 => (0..n).prop_map(Some)];
    let record = proptest::collection::vec(field, 7);
    let refused = proptest::option::weighted(0.25, (0..80usize, 0..7usize, 0..REFUSED.len()));
    let envelope = (proptest::collection::vec(record, 1..80), refused);
    let mut runner = TestRunner::new(Config::default());
    (0..32)
        .map(|_| envelope.new_tree(&mut runner).unwrap().current())
        .collect()
}

#[tokio::test]
async fn every_record_of_every_accepted_random_envelope_is_stored_or_counted_failed() {
    let fragments = fragments();
    let app = crate::helpers::TestApp::spawn_configured(
        crate::helpers::TestDb::migrated().await,
        None,
        // Small chunks: a batch spans several jobs.
        |c| c.ingest.records_per_job = 25,
    )
    .await;
    let (integration, key) = hubspot_integration(&app.db.pool, "Fuzz").await;
    let cases = envelopes();
    let mut accepted = Vec::new();
    for (case, (records, refused)) in cases.iter().enumerate() {
        let refused = refused.map(|(r, slot, f)| (r % records.len(), slot, REFUSED[f]));
        let texts: Vec<String> = records
            .iter()
            .enumerate()
            .map(|(i, fields)| {
                let value = |slot: usize, normal: String| match refused {
                    Some((r, s, bad)) if r == i && s == slot => bad.to_string(),
                    _ => fields[slot].map_or(normal, |f| fragments[f].clone()),
                };
                format!(
                    r#"{{"id":{},"properties":{{"email":{},"firstname":{},"company":{},"createdate":{},"lastmodifieddate":{}}},"archived":{}}}"#,
                    // Ids repeat across envelopes, so later ones update earlier rows.
                    value(0, format!("\"r{}\"", i % 50)),
                    value(1, format!("\"p{i}@northwind.io\"")),
                    value(2, "\"Ana\"".into()),
                    value(3, "\"Northwind\"".into()),
                    value(4, "\"2024-01-18T09:01:11.215Z\"".into()),
                    value(5, "\"2024-03-10T22:04:17.912Z\"".into()),
                    value(6, "false".into()),
                )
            })
            .collect();
        let body = body_text(integration, "contacts", &texts);
        let response = app
            .client
            .post(app.url("/api/webhooks/n8n"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .header("idempotency-key", format!("case-{case}"))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        if refused.is_none() {
            assert!(status.is_success(), "case {case}: {status} {answer}");
        }
        if status.is_success() {
            accepted.push((uuid(&answer["batch_id"]), texts));
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "case {case}: {answer}");
            assert_eq!(
                answer["error"]["code"], "invalid_body",
                "case {case}: {answer}"
            );
        }
    }
    assert!(!accepted.is_empty(), "some envelopes are accepted");
    assert_eq!(
        crate::helpers::count(
            &mut app.db.owner().await,
            "SELECT count(*) FROM ingest_batches"
        )
        .await,
        accepted.len() as i64,
        "a refused envelope stores nothing"
    );

    let mut config = crate::helpers::test_config();
    config.worker.poll_interval_ms = 20;
    crate::helpers::work_until_done(
        &app.db,
        &config,
        "SELECT count(*) FROM jobs WHERE queue = 'ingest'
         AND state IN ('available', 'scheduled', 'running', 'retryable')",
    )
    .await;
    let mut owner = app.db.owner().await;
    assert_eq!(
        crate::helpers::count(
            &mut owner,
            "SELECT count(*) FROM jobs WHERE state <> 'completed'"
        )
        .await,
        0,
        "bad data never fails a job"
    );
    let mapping = syncbridge::mapping::compile(
        SourceType::Hubspot,
        syncbridge::domain::DataType::Contacts,
        &[],
    )
    .unwrap();
    for (batch_id, texts) in &accepted {
        let (state, count, done): (String, i32, i32) = sqlx::query_as(
            "SELECT state, record_count, records_created + records_updated + records_unchanged
                                         + records_skipped + records_failed
             FROM ingest_batches WHERE id = $1",
        )
        .bind(batch_id)
        .fetch_one(&mut owner)
        .await
        .unwrap();
        assert_eq!(
            (state.as_str(), done),
            ("processed", count),
            "batch {batch_id}"
        );
        let failed: Vec<i32> = sqlx::query_scalar(
            "SELECT DISTINCT record_index FROM integration_sync_errors WHERE batch_id = $1",
        )
        .bind(batch_id)
        .fetch_all(&mut owner)
        .await
        .unwrap();
        for (i, text) in texts.iter().enumerate() {
            if failed.contains(&(i as i32)) {
                continue;
            }
            let record: Value = serde_json::from_str(text).unwrap_or_else(|e| {
                panic!("record {i} of {batch_id} was accepted unparsable: {e}")
            });
            if record["archived"] == json!(true) {
                continue; // skipped by the preset, counted as skipped
            }
            let syncbridge::mapping::Outcome::Mapped(mapped) = mapping.apply(&record) else {
                panic!("record {i} of {batch_id} failed mapping but has no error row: {text}");
            };
            let stored = crate::helpers::count(
                &mut owner,
                format!(
                    "SELECT count(*) FROM external_contacts WHERE external_id = '{}'",
                    mapped.external_id.replace('\'', "''")
                ),
            )
            .await;
            assert_eq!(
                stored, 1,
                "record {i} of {batch_id} is neither stored nor failed: {text}"
            );
        }
    }
    let (records, failed): (i64, i64) = sqlx::query_as(
        "SELECT sum(records_received)::bigint, sum(records_failed)::bigint FROM integration_sync_logs",
    )
    .fetch_one(&mut owner)
    .await
    .unwrap();
    eprintln!(
        "{} of {} envelopes accepted: {records} records, {failed} failed",
        accepted.len(),
        cases.len()
    );
    assert!(
        failed > 0 && failed < records,
        "the envelopes mix good and bad records"
    );
    let broken = crate::helpers::count(
        &mut owner,
        "SELECT count(*) FROM integration_sync_logs
         WHERE status IN ('pending', 'running')
            OR records_received <> records_created + records_updated + records_unchanged
                                   + records_skipped + records_failed",
    )
    .await;
    assert_eq!(broken, 0, "every sync closed and its counts add up");
}

#[tokio::test]
async fn a_refused_value_in_a_resync_is_isolated_by_the_next_attempt() {
    // An upsert's first attempt runs without savepoints; when the database refuses a value the
    // checks did not know, the attempt fails and the next one isolates the record.
    let w = world().await;
    let (integration, key) = w.integration(SourceType::Hubspot).await;
    let records: Vec<String> = (0..RECORDS).map(contact).collect();
    post_text(&w, &key, body_text(integration, "contacts", &records)).await;
    work(&w).await;
    let mut owner = w.owner().await;
    sqlx::query(
        "ALTER TABLE external_contacts
         ADD CONSTRAINT test_no_poison CHECK (title IS DISTINCT FROM 'poison')",
    )
    .execute(&mut owner)
    .await
    .unwrap();
    let mut again = records.clone();
    again[POISON_AT] =
        r#"{"id":"c700","properties":{"email":"p@northwind.io","jobtitle":"poison"}}"#.into();
    again[POISON_AT + 1] =
        r#"{"id":"c701","properties":{"email":"p@northwind.io","jobtitle":"fine"}}"#.into();
    let (_, second) = post_text(&w, &key, body_text(integration, "contacts", &again)).await;
    work(&w).await;
    let (status, _, received, created, updated, unchanged, _, failed) =
        sync_counts(&w, &second["sync_log_id"]).await;
    assert_eq!(
        (
            status.as_str(),
            received,
            created,
            updated,
            unchanged,
            failed
        ),
        ("partial", 1_500, 0, 1, 1_498, 1)
    );
    let code: String = sqlx::query_scalar(
        "SELECT code FROM integration_sync_errors WHERE sync_log_id = $1 AND record_index = 700",
    )
    .bind(uuid(&second["sync_log_id"]))
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(code, "rejected_by_database");
    let history: Value = sqlx::query_scalar(
        "SELECT errors FROM jobs WHERE args->>'batch_id' = $1 AND args->>'chunk' = '0'",
    )
    .bind(second["batch_id"].as_str().unwrap())
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert!(
        history[0]["error"]
            .as_str()
            .unwrap()
            .contains("the next attempt isolates"),
        "{history}"
    );
    assert_eq!(
        row_title(&w, "c701").await,
        "fine",
        "the refused record's neighbours are written"
    );
}

async fn row_title(w: &World, external_id: &str) -> String {
    sqlx::query_scalar("SELECT title FROM external_contacts WHERE external_id = $1")
        .bind(external_id)
        .fetch_one(&mut w.owner().await)
        .await
        .unwrap()
}

/// Stops the drill's server when its test fails half-way; a passing test stops it itself.
struct StopOnPanic(std::path::PathBuf);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        use syncbridge::db::embedded::{default_search_dirs, find_binaries};
        if !std::thread::panicking() {
            return;
        }
        let Ok(bins) = find_binaries(None, &default_search_dirs()) else {
            return;
        };
        let mut stop = if nix::unistd::geteuid().is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bins.pg_ctl);
            c
        } else {
            std::process::Command::new(&bins.pg_ctl)
        };
        let _ = stop
            .arg("stop")
            .arg("-D")
            .arg(&self.0)
            .args(["-m", "immediate"])
            .status();
    }
}
