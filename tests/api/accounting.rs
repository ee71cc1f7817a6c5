//! Every accepted record accounted for: poison values fail one record and never their chunk,
//! what no record could become is refused at the door, and the counts of every batch and sync
//! add up.

use reqwest::StatusCode;
use serde_json::{Value, json};
use syncbridge::{db::admin, domain::SourceType};
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
        admin::set_mapping(
            &w.app.db.pool,
            integration,
            syncbridge::domain::DataType::Contacts,
            "properties.note",
            &json!({"source": "properties.note"}),
            true,
        )
        .await
        .unwrap();
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
    let (status, received, created, updated, unchanged, skipped, failed): (
        String,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT status, records_received, records_created, records_updated, records_unchanged,
                records_skipped, records_failed
         FROM integration_sync_logs WHERE id = $1",
    )
    .bind(
        p.receipt["sync_log_id"]
            .as_str()
            .unwrap()
            .parse::<Uuid>()
            .unwrap(),
    )
    .fetch_one(&mut w.owner().await)
    .await
    .unwrap();
    assert_eq!(status, "partial", "{class}");
    assert_eq!((received, failed), (RECORDS as i64, 1), "{class}");
    assert_eq!(
        received,
        created + updated + unchanged + skipped + failed,
        "{class}: the invariant holds"
    );
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
        .bind(
            p.receipt["batch_id"]
                .as_str()
                .unwrap()
                .parse::<Uuid>()
                .unwrap(),
        )
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
    let chunk = &syncbridge::ingest::envelope::chunks(&raws, 1_000).unwrap()[0];
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
