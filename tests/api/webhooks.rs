//! `POST /api/webhooks/n8n` and `GET /api/batches/{id}`: what n8n sees, and what was stored.

use std::io::Write;

use base64::{Engine, engine::general_purpose::STANDARD};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use syncbridge::{
    admin, config::Config, crypto::Sealer, domain::SourceType, sync::chunk::decode_chunk,
};
use uuid::Uuid;

use crate::helpers::{SAMPLES, TestApp, TestDb, count, sample};

const GLOBAL_KEY: &str = "global-webhook-key-0123456789";

fn encryption_key() -> String {
    STANDARD.encode([42u8; 32])
}

/// One tenant with a HubSpot integration and its key, served by a test app.
struct Fixture {
    app: TestApp,
    tenant_id: Uuid,
    integration_id: Uuid,
    key: String,
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

async fn fixture_with(configure: impl FnOnce(&mut Config)) -> Fixture {
    let db = TestDb::migrated().await;
    let app = TestApp::spawn_configured(db, None, |c| {
        c.webhook_api_key = Some(GLOBAL_KEY.to_string().into());
        c.encryption_key = Some(encryption_key().into());
        configure(c);
    })
    .await;
    let h = crate::helpers::hubspot_integration(&app.db.pool, "Acme").await;
    Fixture {
        app,
        tenant_id: h.tenant_id,
        integration_id: h.integration_id,
        key: h.key,
    }
}

impl Fixture {
    async fn integration(&self, source: SourceType, name: &str) -> (Uuid, String) {
        let integration =
            admin::create_integration(&self.app.db.pool, self.tenant_id, source, name, None)
                .await
                .unwrap();
        let key = admin::create_api_key(&self.app.db.pool, integration.id, None)
            .await
            .unwrap();
        (integration.id, key.key.plaintext)
    }

    /// A HubSpot contacts envelope for this integration with `n` small records.
    fn envelope(&self, n: usize) -> Value {
        let records: Vec<Value> = (0..n)
            .map(
                |i| json!({"id": i.to_string(), "properties": {"email": format!("p{i}@acme.com")}}),
            )
            .collect();
        json!({
            "integration_id": self.integration_id,
            "data_type": "contacts",
            "source_type": "hubspot",
            "records": records,
        })
    }

    fn post(&self) -> reqwest::RequestBuilder {
        self.app.client.post(self.app.url("/api/webhooks/n8n"))
    }

    async fn deliver(&self, body: &Value) -> reqwest::Response {
        self.post()
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Arranges rows as the table owner, in plain SQL.
    async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut self.app.db.owner().await)
            .await
            .unwrap();
    }

    async fn count(&self, sql: &str) -> i64 {
        count(&mut self.app.db.owner().await, sql).await
    }
}

async fn error_of(response: reqwest::Response) -> (StatusCode, String, Value) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    (status, code, body)
}

/// Asserts the response is the refusal `status` with `code`, and returns its body.
async fn refused(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    let (got_status, got_code, body) = error_of(response).await;
    assert_eq!((got_status, got_code.as_str()), (status, code), "{body}");
    body
}

#[tokio::test]
async fn sample_batches_from_every_source_are_stored_and_queued() {
    let fx = fixture().await;
    let samples = SAMPLES;
    for (name, source) in samples {
        let (integration_id, key) = fx.integration(source, name).await;
        let mut body = sample(name);
        body["integration_id"] = json!(integration_id);
        body.as_object_mut().unwrap().remove("sync_log_id");
        let records = body["records"].as_array().unwrap().len();
        let response = fx
            .post()
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{name}");
        let location = response.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_string();
        let receipt: Value = response.json().await.unwrap();
        assert_eq!(receipt["records"], records, "{name}");
        assert_eq!(receipt["jobs"], 1);
        assert_eq!(receipt["duplicate"], false);
        assert_eq!(receipt["status_url"], location);

        // The first chunk holds the records byte for byte as they were sent.
        let batch_id: Uuid = receipt["batch_id"].as_str().unwrap().parse().unwrap();
        let (payload, encoding): (Vec<u8>, String) = sqlx::query_as(
            "SELECT payload, payload_encoding FROM ingest_batch_chunks WHERE batch_id = $1 AND chunk_index = 0",
        )
        .bind(batch_id)
        .fetch_one(&mut fx.app.db.owner().await)
        .await
        .unwrap();
        let stored: Value =
            serde_json::from_slice(&decode_chunk(&payload, &encoding).unwrap()).unwrap();
        assert_eq!(stored, body["records"], "{name}");

        let status = fx.app.get_json(&location, &key).await;
        assert_eq!(status["state"], "received");
        assert_eq!(status["progress"]["records_total"], records);
        assert_eq!(status["progress"]["records_done"], 0);
        assert_eq!(status["progress"]["jobs_total"], 1);
        assert_eq!(status["sync_log_id"], receipt["sync_log_id"]);
    }
    assert_eq!(fx.count("SELECT count(*) FROM ingest_batches").await, 9);
    assert_eq!(
        fx.count(
            "SELECT count(*) FROM jobs WHERE kind = 'ingest.process_chunk' AND queue = 'ingest'
             AND state = 'available' AND tag LIKE 'tenant:%/integration:%'"
        )
        .await,
        9
    );
    assert_eq!(
        fx.count("SELECT count(*) FROM integration_sync_logs WHERE trigger = 'webhook' AND status = 'running'")
            .await,
        9
    );
}

#[tokio::test]
async fn batches_are_split_into_jobs_of_the_configured_size() {
    let fx = fixture().await;
    let body = fx.envelope(2_500);
    let response = fx.deliver(&body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // The jobs name the request that delivered them (made here: the test sent none).
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(receipt["jobs"], 3);
    let chunks: Vec<(i32, i32, Vec<u8>)> = sqlx::query_as(
        "SELECT record_offset, record_count, payload FROM ingest_batch_chunks ORDER BY chunk_index",
    )
    .fetch_all(&mut fx.app.db.owner().await)
    .await
    .unwrap();
    assert_eq!(
        chunks.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
        vec![(0, 1_000), (1_000, 1_000), (2_000, 500)]
    );
    let last: Vec<Value> =
        serde_json::from_slice(&decode_chunk(&chunks[2].2, "zstd").unwrap()).unwrap();
    assert_eq!(last[0], body["records"][2_000]);
    assert_eq!(last[499], body["records"][2_499]);
    let args: Vec<Value> =
        sqlx::query_scalar("SELECT args FROM jobs ORDER BY (args->>'chunk')::int")
            .fetch_all(&mut fx.app.db.owner().await)
            .await
            .unwrap();
    assert_eq!(
        args,
        (0..3)
            .map(
                |i| json!({"tenant_id": fx.tenant_id, "batch_id": receipt["batch_id"], "chunk": i,
                           "request_id": request_id})
            )
            .collect::<Vec<_>>()
    );
    let (received, batches): (i64, i32) =
        sqlx::query_as("SELECT records_received, batches_received FROM integration_sync_logs")
            .fetch_one(&mut fx.app.db.owner().await)
            .await
            .unwrap();
    assert_eq!((received, batches), (2_500, 1));
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_bodies_are_accepted_and_bounded() {
    let fx = fixture_with(|c| c.ingest.max_body_bytes = 200_000).await;
    let body = serde_json::to_vec(&fx.envelope(100)).unwrap();
    let response = fx
        .post()
        .bearer_auth(&fx.key)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(gzip(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.json::<Value>().await.unwrap()["records"], 100);

    let response = fx
        .post()
        .bearer_auth(&fx.key)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    refused(response, StatusCode::BAD_REQUEST, "invalid_gzip").await;

    // Small on the wire, too large once inflated.
    let bomb = gzip(&serde_json::to_vec(&fx.envelope(5_000)).unwrap());
    assert!(bomb.len() < 200_000);
    let response = fx
        .post()
        .bearer_auth(&fx.key)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    let body = refused(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(body["error"]["details"]["limit_bytes"], 200_000);
    assert_eq!(fx.count("SELECT count(*) FROM ingest_batches").await, 1);
}

#[tokio::test]
async fn keys_are_taken_from_headers_body_or_the_global_key() {
    let fx = fixture().await;
    let send = |builder: reqwest::RequestBuilder, body: Value| async move {
        builder.json(&body).send().await.unwrap()
    };
    // Each delivery differs (record count) so none is a duplicate of another.
    let r = send(fx.post().bearer_auth(&fx.key), fx.envelope(1)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = send(fx.post().header("x-api-key", &fx.key), fx.envelope(2)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut in_body = fx.envelope(3);
    in_body["api_key"] = json!(fx.key);
    let r = send(fx.post(), in_body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = send(fx.post().bearer_auth(GLOBAL_KEY), fx.envelope(4)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut global_in_body = fx.envelope(5);
    global_in_body["api_key"] = json!(GLOBAL_KEY);
    let r = send(fx.post(), global_in_body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(fx.count("SELECT count(*) FROM ingest_batches").await, 5);

    // The global key still needs an integration that exists.
    let mut unknown = fx.envelope(1);
    unknown["integration_id"] = json!(Uuid::new_v4());
    refused(
        send(fx.post().bearer_auth(GLOBAL_KEY), unknown).await,
        StatusCode::NOT_FOUND,
        "integration_not_found",
    )
    .await;

    refused(
        send(fx.post(), fx.envelope(1)).await,
        StatusCode::UNAUTHORIZED,
        "missing_api_key",
    )
    .await;
    refused(
        send(fx.post().bearer_auth("sbk_nope"), fx.envelope(1)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
    // The key with its last character changed (to one it is not: keys are random).
    let last = if fx.key.ends_with('x') { "y" } else { "x" };
    let wrong_secret = format!("{}{last}", &fx.key[..fx.key.len() - 1]);
    refused(
        send(fx.post().bearer_auth(&wrong_secret), fx.envelope(1)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
    refused(
        send(
            fx.post().header(header::AUTHORIZATION, "Basic abc"),
            fx.envelope(1),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_authorization",
    )
    .await;
    // The scheme name is case-insensitive (RFC 9110).
    let lowercase = send(
        fx.post()
            .header(header::AUTHORIZATION, format!("bearer {}", fx.key)),
        fx.envelope(7),
    )
    .await;
    assert_eq!(lowercase.status(), StatusCode::ACCEPTED);

    // A key reaches its own integration only.
    let (_, other_key) = fx.integration(SourceType::Hubspot, "Other").await;
    refused(
        send(fx.post().bearer_auth(&other_key), fx.envelope(6)).await,
        StatusCode::FORBIDDEN,
        "integration_forbidden",
    )
    .await;

    // A revoked key stops working.
    fx.exec("UPDATE integration_api_keys SET revoked_at = now()")
        .await;
    refused(
        fx.deliver(&fx.envelope(7)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
    assert_eq!(fx.count("SELECT count(*) FROM ingest_batches").await, 6);
}

#[tokio::test]
async fn malformed_and_unsupported_requests_are_refused_with_their_codes() {
    let fx = fixture_with(|c| {
        c.ingest.max_body_bytes = 50_000;
        c.ingest.max_records = 100;
    })
    .await;
    let raw = |body: &'static str| {
        fx.post()
            .bearer_auth(&fx.key)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
    };
    refused(
        raw("{\"integration_id\": ").send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_body",
    )
    .await;

    let mut not_array = fx.envelope(1);
    not_array["records"] = json!({"id": 1});
    let body = refused(
        fx.deliver(&not_array).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    )
    .await;
    assert_eq!(body["error"]["details"]["path"], "records");

    let mut not_object = fx.envelope(2);
    not_object["records"][1] = json!("just a string");
    let (status, _, body) = error_of(fx.deliver(&not_object).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["details"]["path"], "records[1]");

    let mut no_records = fx.envelope(0);
    no_records.as_object_mut().unwrap().remove("records");
    let (status, _, body) = error_of(fx.deliver(&no_records).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("records")
    );

    let response = fx
        .post()
        .bearer_auth(&fx.key)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(serde_json::to_vec(&fx.envelope(1)).unwrap())
        .send()
        .await
        .unwrap();
    refused(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let response = fx
        .post()
        .bearer_auth(&fx.key)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, "br")
        .body(serde_json::to_vec(&fx.envelope(1)).unwrap())
        .send()
        .await
        .unwrap();
    refused(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_encoding",
    )
    .await;

    let body = refused(
        fx.deliver(&fx.envelope(2_000)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert!(body["error"]["message"].as_str().unwrap().contains("50000"));

    let body = refused(
        fx.deliver(&fx.envelope(101)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_records",
    )
    .await;
    assert_eq!(body["error"]["details"]["limit"], 100);

    let mut bad_type = fx.envelope(1);
    bad_type["data_type"] = json!("leads");
    let body = refused(
        fx.deliver(&bad_type).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_data_type",
    )
    .await;
    assert_eq!(body["error"]["details"]["field"], "data_type");

    let mut bad_mode = fx.envelope(1);
    bad_mode["sync_mode"] = json!("sometimes");
    refused(
        fx.deliver(&bad_mode).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_sync_mode",
    )
    .await;

    let mut wrong_source = fx.envelope(1);
    wrong_source["source_type"] = json!("salesforce");
    refused(
        fx.deliver(&wrong_source).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "source_type_mismatch",
    )
    .await;

    fx.exec("UPDATE integration_sources SET sync_data_types = '{tickets}'")
        .await;
    refused(
        fx.deliver(&fx.envelope(1)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "data_type_not_enabled",
    )
    .await;
    assert_eq!(fx.count("SELECT count(*) FROM ingest_batches").await, 0);
    assert_eq!(fx.count("SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn sync_logs_must_belong_to_the_integration_and_be_open() {
    let fx = fixture().await;
    let first: Value = fx.deliver(&fx.envelope(1)).await.json().await.unwrap();
    let sync_log_id = first["sync_log_id"].clone();

    // Later batches of the same sync name it and add to its counts.
    let mut second = fx.envelope(2);
    second["sync_log_id"] = sync_log_id.clone();
    second["final"] = json!(true);
    let response = fx.deliver(&second).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        response.json::<Value>().await.unwrap()["sync_log_id"],
        sync_log_id
    );
    let (received, batches, final_set): (i64, i32, bool) = sqlx::query_as(
        "SELECT records_received, batches_received, final_received_at IS NOT NULL FROM integration_sync_logs",
    )
    .fetch_one(&mut fx.app.db.owner().await)
    .await
    .unwrap();
    assert_eq!((received, batches, final_set), (3, 2, true));

    let mut unknown = fx.envelope(3);
    unknown["sync_log_id"] = json!(Uuid::new_v4());
    refused(
        fx.deliver(&unknown).await,
        StatusCode::NOT_FOUND,
        "sync_log_not_found",
    )
    .await;

    // Another integration's sync log is as good as unknown.
    let (other, other_key) = fx.integration(SourceType::Hubspot, "Other").await;
    let mut foreign = fx.envelope(3);
    foreign["integration_id"] = json!(other);
    foreign["sync_log_id"] = sync_log_id.clone();
    let response = fx
        .post()
        .bearer_auth(&other_key)
        .json(&foreign)
        .send()
        .await
        .unwrap();
    refused(response, StatusCode::NOT_FOUND, "sync_log_not_found").await;

    // A type the source has, but not one this sync is of ...
    let mut deals = fx.envelope(3);
    deals["sync_log_id"] = sync_log_id.clone();
    deals["data_type"] = json!("deals");
    refused(
        fx.deliver(&deals).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "data_type_mismatch",
    )
    .await;
    // ... and one HubSpot integrations do not provide at all.
    let mut tickets = fx.envelope(3);
    tickets["data_type"] = json!("tickets");
    let body = refused(
        fx.deliver(&tickets).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "data_type_not_supported",
    )
    .await;
    assert_eq!(body["error"]["details"]["field"], "data_type");

    fx.exec("UPDATE integration_sync_logs SET status = 'success', completed_at = now()")
        .await;
    let mut late = fx.envelope(4);
    late["sync_log_id"] = sync_log_id.clone();
    refused(
        fx.deliver(&late).await,
        StatusCode::CONFLICT,
        "sync_log_closed",
    )
    .await;
    // A repeat of a batch it already has is still recognised after the sync closed.
    let response = fx.deliver(&second).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["duplicate"], true);
}

#[tokio::test]
async fn paused_integrations_refuse_deliveries() {
    let fx = fixture().await;
    admin::set_integration_status(
        &fx.app.db.pool,
        fx.integration_id,
        syncbridge::domain::IntegrationStatus::Paused,
    )
    .await
    .unwrap();
    refused(
        fx.deliver(&fx.envelope(1)).await,
        StatusCode::CONFLICT,
        "integration_paused",
    )
    .await;
    assert_eq!(fx.count("SELECT count(*) FROM ingest_batches").await, 0);
}

#[tokio::test]
async fn a_final_batch_may_be_empty() {
    let fx = fixture().await;
    let mut body = fx.envelope(0);
    body["final"] = json!(true);
    let response = fx.deliver(&body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(
        (receipt["records"].clone(), receipt["jobs"].clone()),
        (json!(0), json!(0))
    );
    let status: Value = fx
        .app
        .client
        .get(fx.app.url(receipt["status_url"].as_str().unwrap()))
        .bearer_auth(&fx.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "processed");
    assert_eq!(status["final"], true);
    assert_eq!(status["progress"]["percent"], 100.0);
    // No chunk to process; one job to close the sync.
    assert_eq!(
        fx.count("SELECT count(*) FROM jobs WHERE kind = 'ingest.finalize_sync'")
            .await,
        1
    );
    assert_eq!(fx.count("SELECT count(*) FROM jobs").await, 1);
    assert_eq!(
        fx.count("SELECT count(*) FROM integration_sync_logs WHERE final_received_at IS NOT NULL AND batches_processed = 1")
            .await,
        1
    );
}

#[tokio::test]
async fn repeated_deliveries_are_recognised_by_each_route() {
    let fx = fixture().await;
    let check_duplicate = |first: Value, again: Value| {
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["batch_id"], first["batch_id"]);
        assert_eq!(again["sync_log_id"], first["sync_log_id"]);
        assert_eq!(again["records"], first["records"]);
    };

    // 1. Idempotency-Key, even when the content differs (n8n re-ran the node).
    let keyed = |body: &Value| {
        fx.post()
            .bearer_auth(&fx.key)
            .header("idempotency-key", "run-1/page-1")
            .json(body)
            .send()
    };
    let first = keyed(&fx.envelope(3)).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    let again = keyed(&fx.envelope(2)).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    check_duplicate(first, again.json().await.unwrap());

    // 2. webhook-id (Standard Webhooks' stable id) when no Idempotency-Key is sent.
    let by_id = |body: &Value| {
        fx.post()
            .bearer_auth(&fx.key)
            .header("webhook-id", "msg_2")
            .json(body)
            .send()
    };
    let first: Value = by_id(&fx.envelope(4)).await.unwrap().json().await.unwrap();
    assert_eq!(first["duplicate"], false);
    let again = by_id(&fx.envelope(4)).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    check_duplicate(first, again.json().await.unwrap());

    // 3. The same content within a named sync log.
    let opener: Value = fx.deliver(&fx.envelope(1)).await.json().await.unwrap();
    let mut page = fx.envelope(5);
    page["sync_log_id"] = opener["sync_log_id"].clone();
    let first: Value = fx.deliver(&page).await.json().await.unwrap();
    assert_eq!(first["duplicate"], false);
    let again = fx.deliver(&page).await;
    assert_eq!(again.status(), StatusCode::OK);
    check_duplicate(first, again.json().await.unwrap());

    // 4. No key and no sync log: the same content from the same integration, shortly after.
    let first: Value = fx.deliver(&fx.envelope(6)).await.json().await.unwrap();
    let again = fx.deliver(&fx.envelope(6)).await;
    assert_eq!(again.status(), StatusCode::OK);
    check_duplicate(first, again.json().await.unwrap());

    // Nothing was counted twice: 5 batches (3, 4, 1, 5, 6 records), one job each.
    assert_eq!(fx.count("SELECT count(*) FROM ingest_batches").await, 5);
    assert_eq!(fx.count("SELECT count(*) FROM jobs").await, 5);
    assert_eq!(
        fx.count("SELECT sum(records_received)::bigint FROM integration_sync_logs")
            .await,
        19
    );
    assert_eq!(
        fx.count("SELECT count(*) FROM integration_sync_logs").await,
        4
    );
}

#[tokio::test]
async fn concurrent_copies_of_one_delivery_store_one_batch() {
    let fx = fixture().await;
    let body = fx.envelope(50);
    for header in [Some("copy-key"), None] {
        let sends = (0..8).map(|_| {
            let mut request = fx.post().bearer_auth(&fx.key).json(&body);
            if let Some(key) = header {
                request = request.header("idempotency-key", key);
            }
            async move { request.send().await.unwrap() }
        });
        let answers = futures_util::future::join_all(sends).await;
        let mut ids = Vec::new();
        let mut accepted = 0;
        for answer in answers {
            if answer.status() == StatusCode::ACCEPTED {
                accepted += 1;
            } else {
                assert_eq!(answer.status(), StatusCode::OK);
            }
            ids.push(answer.json::<Value>().await.unwrap()["batch_id"].clone());
        }
        assert_eq!(accepted, 1);
        ids.dedup();
        assert_eq!(ids.len(), 1, "every copy answers with the one batch");
    }
    assert_eq!(fx.count("SELECT count(*) FROM ingest_batches").await, 2);
    assert_eq!(
        fx.count("SELECT count(*) FROM integration_sync_logs").await,
        2
    );
    assert_eq!(
        fx.count("SELECT sum(records_received)::bigint FROM integration_sync_logs")
            .await,
        100
    );
}

#[tokio::test]
async fn sixteen_concurrent_batches_of_one_sync_are_all_counted() {
    let fx = fixture_with(|c| c.database.max_connections = 16).await;
    let opener: Value = fx.deliver(&fx.envelope(1)).await.json().await.unwrap();
    let sends = (0..16).map(|i| {
        let mut body = fx.envelope(10 + i);
        body["sync_log_id"] = opener["sync_log_id"].clone();
        let request = fx.post().bearer_auth(&fx.key).json(&body);
        async move { request.send().await.unwrap().status() }
    });
    let statuses = futures_util::future::join_all(sends).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::ACCEPTED),
        "{statuses:?}"
    );
    let expected: i64 = 1 + (0..16).map(|i| 10 + i).sum::<i64>();
    let (received, batches): (i64, i32) =
        sqlx::query_as("SELECT records_received, batches_received FROM integration_sync_logs")
            .fetch_one(&mut fx.app.db.owner().await)
            .await
            .unwrap();
    assert_eq!((received, batches), (expected, 17));
    assert_eq!(
        fx.count("SELECT sum(record_count)::bigint FROM ingest_batches")
            .await,
        expected
    );
    assert_eq!(fx.count("SELECT count(*) FROM jobs").await, 17);
}

#[tokio::test]
async fn a_batch_of_100000_records_is_accepted() {
    let fx = fixture().await;
    let response = fx.deliver(&fx.envelope(100_000)).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(
        (receipt["records"].clone(), receipt["jobs"].clone()),
        (json!(100_000), json!(100))
    );
    assert_eq!(
        fx.count("SELECT sum(record_count)::bigint FROM ingest_batch_chunks")
            .await,
        100_000
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let fx = fixture_with(|c| {
        c.ingest.rate_limit_per_second = 1;
        c.ingest.rate_limit_burst = 2;
    })
    .await;
    assert_eq!(
        fx.deliver(&fx.envelope(1)).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        fx.deliver(&fx.envelope(2)).await.status(),
        StatusCode::ACCEPTED
    );
    let response = fx.deliver(&fx.envelope(3)).await;
    let retry_after: u64 = response.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    refused(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // The bucket is per integration: another one is not throttled.
    let (other, other_key) = fx.integration(SourceType::Hubspot, "Other").await;
    let mut body = fx.envelope(3);
    body["integration_id"] = json!(other);
    let response = fx
        .post()
        .bearer_auth(&other_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_full_backlog_answers_503_with_retry_after() {
    let fx = fixture_with(|c| {
        c.ingest.max_pending_records_per_tenant = 100;
        c.ingest.backpressure_retry_after_secs = 17;
    })
    .await;
    assert_eq!(
        fx.deliver(&fx.envelope(100)).await.status(),
        StatusCode::ACCEPTED
    );
    let response = fx.deliver(&fx.envelope(1)).await;
    assert_eq!(response.headers()[header::RETRY_AFTER], "17");
    let body = refused(response, StatusCode::SERVICE_UNAVAILABLE, "backlog_full").await;
    assert_eq!(body["error"]["details"]["pending_records"], 100);
    // Once the worker has processed the backlog, deliveries flow again.
    fx.exec("UPDATE ingest_batches SET state = 'processed', records_processed = record_count")
        .await;
    assert_eq!(
        fx.deliver(&fx.envelope(1)).await.status(),
        StatusCode::ACCEPTED
    );
}

fn signed(
    fx: &Fixture,
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> reqwest::RequestBuilder {
    let signature = secrets
        .iter()
        .map(|s| {
            standardwebhooks::Webhook::new(s)
                .unwrap()
                .sign(id, timestamp, body)
                .unwrap()
        })
        .collect::<Vec<_>>()
        .join(" ");
    fx.post()
        .bearer_auth(&fx.key)
        .header(header::CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_vec())
}

#[tokio::test]
async fn signatures_are_verified_when_the_integration_has_a_secret() {
    let fx = fixture().await;
    let sealer = Sealer::from_base64(&encryption_key()).unwrap();
    let secret = admin::set_signing_secret(
        &fx.app.db.pool,
        &sealer,
        fx.integration_id,
        chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    assert!(secret.starts_with("whsec_"));
    let now = chrono::Utc::now().timestamp();
    let body = serde_json::to_vec(&fx.envelope(2)).unwrap();
    let stranger = format!("whsec_{}", STANDARD.encode([0u8; 32]));

    let r = signed(&fx, &[&secret], "msg_1", now, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Tampered: one byte of the body changed after signing.
    let mut tampered = body.clone();
    let at = tampered.len() - 5;
    tampered[at] = b'9';
    let sig = standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .sign("msg_2", now, &body)
        .unwrap();
    let r = fx
        .post()
        .bearer_auth(&fx.key)
        .header(header::CONTENT_TYPE, "application/json")
        .header("webhook-id", "msg_2")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", sig)
        .body(tampered)
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::UNAUTHORIZED, "invalid_signature").await;

    let r = signed(&fx, &[&secret], "msg_3", now - 600, &body)
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::UNAUTHORIZED, "signature_expired").await;

    let r = fx.deliver(&fx.envelope(3)).await;
    refused(r, StatusCode::UNAUTHORIZED, "signature_required").await;

    let r = signed(&fx, &[&stranger], "msg_4", now, &body)
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::UNAUTHORIZED, "invalid_signature").await;

    // Rotation: the sender may sign with several secrets; the old secret keeps working until its
    // grace period ends.
    let rotated = admin::set_signing_secret(
        &fx.app.db.pool,
        &sealer,
        fx.integration_id,
        chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    let body5 = serde_json::to_vec(&fx.envelope(5)).unwrap();
    let r = signed(&fx, &[&stranger, &rotated], "msg_5", now, &body5)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body6 = serde_json::to_vec(&fx.envelope(6)).unwrap();
    let r = signed(&fx, &[&secret], "msg_6", now, &body6)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "previous secret within its grace period"
    );
    admin::set_signing_secret(
        &fx.app.db.pool,
        &sealer,
        fx.integration_id,
        chrono::Duration::zero(),
    )
    .await
    .unwrap();
    let body7 = serde_json::to_vec(&fx.envelope(7)).unwrap();
    let r = signed(&fx, &[&secret], "msg_7", now, &body7)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a secret two rotations old"
    );
    assert_eq!(fx.count("SELECT count(*) FROM ingest_batches").await, 3);
}

#[tokio::test]
async fn a_database_that_cannot_commit_gets_503_and_nothing_is_half_stored() {
    let fx = fixture().await;
    // Fail the transaction after the batch row and jobs were written, as a server going away
    // mid-transaction would.
    sqlx::raw_sql(
        "CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'server going away' USING ERRCODE = 'admin_shutdown'; END $$;
         CREATE TRIGGER fail_commit AFTER UPDATE ON integration_sync_logs
             FOR EACH ROW EXECUTE FUNCTION fail_commit();",
    )
    .execute(&mut fx.app.db.owner().await)
    .await
    .unwrap();
    let response = fx.deliver(&fx.envelope(10)).await;
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    refused(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
    )
    .await;
    assert_eq!(fx.count("SELECT count(*) FROM ingest_batches").await, 0);
    assert_eq!(
        fx.count("SELECT count(*) FROM ingest_batch_chunks").await,
        0
    );
    assert_eq!(fx.count("SELECT count(*) FROM jobs").await, 0);
    assert_eq!(
        fx.count("SELECT count(*) FROM integration_sync_logs").await,
        0
    );

    // A pool that is closed (the database gone): 503 as well, never a 2xx.
    fx.app.db.pool.close().await;
    refused(
        fx.deliver(&fx.envelope(11)).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
    )
    .await;
}

#[tokio::test]
async fn batch_status_is_for_the_integrations_keys() {
    let fx = fixture().await;
    let receipt: Value = fx.deliver(&fx.envelope(3)).await.json().await.unwrap();
    let url = fx.app.url(receipt["status_url"].as_str().unwrap());
    let get = |key: Option<&str>, url: &str| {
        let mut request = fx.app.client.get(url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let by_global: Value = get(Some(GLOBAL_KEY), &url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_global["batch_id"], receipt["batch_id"]);
    assert_eq!(by_global["counts"]["created"], 0);

    refused(
        get(None, &url).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "missing_api_key",
    )
    .await;
    let (_, other_key) = fx.integration(SourceType::Hubspot, "Other").await;
    refused(
        get(Some(&other_key), &url).await.unwrap(),
        StatusCode::FORBIDDEN,
        "integration_forbidden",
    )
    .await;
    let unknown = fx.app.url(&format!("/api/batches/{}", Uuid::new_v4()));
    refused(
        get(Some(&fx.key), &unknown).await.unwrap(),
        StatusCode::NOT_FOUND,
        "batch_not_found",
    )
    .await;
    let bad = fx.app.url("/api/batches/not-a-uuid");
    refused(
        get(Some(&fx.key), &bad).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_batch_id",
    )
    .await;
}

/// The webhook refuses on what it can check cheapest before looking further: an unknown key in a
/// header, or a paused integration, is refused whatever the body holds (it is not parsed); a key
/// in the body is only looked for once the body is in.
#[tokio::test]
async fn refusals_come_from_the_cheapest_check_that_fails() {
    let f = fixture().await;
    let garbage = "{ this is not json";
    let res = f
        .post()
        .bearer_auth("sbk_unknown_key_0123456789")
        .header(header::CONTENT_TYPE, "application/json")
        .body(garbage)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await.1, "invalid_api_key");
    admin::set_integration_status(
        &f.app.db.pool,
        f.integration_id,
        syncbridge::domain::IntegrationStatus::Paused,
    )
    .await
    .unwrap();
    let res = f
        .post()
        .bearer_auth(&f.key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(garbage)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await.1, "integration_paused");
    // With no header key, the body must be read first: a body that is not JSON says so.
    let res = f
        .post()
        .header(header::CONTENT_TYPE, "application/json")
        .body(garbage)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await.1, "invalid_body");
}

/// Bodies whose key is in the body are handled `ingest.max_unauthenticated_bodies` at a time:
/// while one such body is still arriving, the next waits, and deliveries with a header key do
/// not.
#[tokio::test]
async fn bodies_before_their_caller_is_known_are_handled_a_few_at_a_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture_with(|c| c.ingest.max_unauthenticated_bodies = 1).await;
    let mut body = f.envelope(1);
    body["api_key"] = json!(f.key);
    let body = body.to_string();
    // A: its body stops half-way, holding the one permit.
    let mut stalled = tokio::net::TcpStream::connect(f.app.addr).await.unwrap();
    let head = format!(
        "POST /api/webhooks/n8n HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled
        .write_all(&body.as_bytes()[..body.len() / 2])
        .await
        .unwrap();
    // B: a complete body keyed in the body (with a wrong key: refused after one lookup, as soon
    // as it is looked at) waits for A.
    let mut wrong = f.envelope(1);
    wrong["api_key"] = json!("sbk_wrong_key_0123456789");
    let waiting = tokio::spawn({
        let request = f
            .post()
            .header(header::CONTENT_TYPE, "application/json")
            .body(wrong.to_string());
        async move {
            let status = request.send().await.unwrap().status();
            (status, std::time::Instant::now())
        }
    });
    // C: a header key goes through meanwhile, storing a batch.
    let res = f
        .post()
        .bearer_auth(&f.key)
        .json(&f.envelope(2))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    // A completes and is stored; only then is B looked at.
    let released = std::time::Instant::now();
    stalled
        .write_all(&body.as_bytes()[body.len() / 2..])
        .await
        .unwrap();
    let mut answer = String::new();
    stalled.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let (status, answered) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        answered > released,
        "B was answered only after A released its permit"
    );
}
