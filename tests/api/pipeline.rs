//! The worker pipeline end to end: POST a batch, run the worker, read the rows and the sync log.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgConnection;
use syncbridge::{admin, domain::SourceType};
use uuid::Uuid;

use crate::helpers::{self, TestApp, count, test_config};

pub(crate) struct World {
    pub(crate) app: TestApp,
    pub(crate) tenant_id: Uuid,
    accounts: std::collections::HashMap<&'static str, Uuid>,
}

pub(crate) async fn world() -> World {
    let app = TestApp::spawn().await;
    let tenant = admin::create_tenant(&app.db.pool, "Acme CS").await.unwrap();
    let mut accounts = std::collections::HashMap::new();
    for (name, domains) in [
        ("Northwind", vec!["https://www.northwind.io/"]),
        ("Acme Logistics", vec!["acme-logistics.com"]),
        ("Globex Ltd", vec!["globex.co.uk"]),
        ("Shared One", vec!["shared.io"]),
        ("Shared Two", vec!["shared.io"]),
    ] {
        let domains: Vec<String> = domains.into_iter().map(String::from).collect();
        let account = admin::add_account(&app.db.pool, tenant.id, name, &domains)
            .await
            .unwrap();
        accounts.insert(name, account.id);
    }
    World {
        app,
        tenant_id: tenant.id,
        accounts,
    }
}

impl World {
    pub(crate) async fn integration(&self, source: SourceType) -> (Uuid, String) {
        let integration = admin::create_integration(
            &self.app.db.pool,
            self.tenant_id,
            source,
            &format!("{source} {}", Uuid::new_v4()),
            None,
        )
        .await
        .unwrap();
        let key = admin::create_api_key(&self.app.db.pool, integration.id, None)
            .await
            .unwrap();
        (integration.id, key.key.plaintext)
    }

    pub(crate) async fn post(&self, key: &str, body: &Value) -> Value {
        let response = self
            .app
            .client
            .post(self.app.url("/api/webhooks/n8n"))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
        response.json().await.unwrap()
    }

    pub(crate) async fn owner(&self) -> PgConnection {
        self.app.db.owner().await
    }

    pub(crate) async fn count(&self, sql: &str) -> i64 {
        count(&mut self.owner().await, sql).await
    }

    /// Runs a worker until no ingestion job is left to run.
    pub(crate) async fn drain(&self) {
        let mut config = test_config();
        config.worker.poll_interval_ms = 20;
        helpers::work_until_done(
            &self.app.db,
            &config,
            "SELECT count(*) FROM jobs WHERE queue = 'ingest'
             AND state IN ('available', 'scheduled', 'running', 'retryable')",
        )
        .await;
        assert_eq!(
            self.count("SELECT count(*) FROM jobs WHERE queue = 'ingest' AND state <> 'completed'")
                .await,
            0,
            "every ingestion job completed"
        );
    }
}

fn sample(name: &str, integration_id: Uuid) -> Value {
    let mut body = helpers::sample(name);
    body["integration_id"] = json!(integration_id);
    body.as_object_mut().unwrap().remove("sync_log_id");
    body.as_object_mut().unwrap().remove("api_key");
    body["final"] = json!(true);
    body
}

/// The admin URL of `integration`'s mappings, then `path`.
fn mappings_url(w: &World, integration: Uuid, path: &str) -> String {
    w.app.url(&format!(
        "/api/admin/integrations/{integration}/mappings{path}"
    ))
}

/// `request` with the admin token, sent.
fn as_admin(
    request: reqwest::RequestBuilder,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
    request.bearer_auth(crate::helpers::ADMIN_TOKEN).send()
}

/// One row of a table as JSON, by external id (typed columns rendered by PostgreSQL).
pub(crate) async fn row(w: &World, table: &str, external_id: &str) -> Value {
    row_in(w, table, None, external_id).await
}

/// [`row`] of one integration, for external ids that several integrations hold.
async fn row_in(w: &World, table: &str, integration: Option<Uuid>, external_id: &str) -> Value {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT to_jsonb(t) FROM {table} t
         WHERE external_id = $1 AND ($2::uuid IS NULL OR integration_id = $2)"
    )))
    .bind(external_id)
    .bind(integration)
    .fetch_one(&mut w.owner().await)
    .await
    .unwrap()
}

#[tokio::test]
async fn every_sample_lands_mapped_and_matched_with_the_presets() {
    let w = world().await;
    let samples = helpers::SAMPLES;
    for (name, source) in samples {
        let (integration, key) = w.integration(source).await;
        w.post(&key, &sample(name, integration)).await;
    }
    w.drain().await;

    let northwind = json!(w.accounts["Northwind"]);
    let acme = json!(w.accounts["Acme Logistics"]);
    let globex = json!(w.accounts["Globex Ltd"]);

    // Zoho CRM: lookups are objects, dates carry +05:30 and are stored in UTC.
    let priya = row(&w, "external_contacts", "5725767000000415001").await;
    assert_eq!(priya["email"], "priya.raman@acme-logistics.com");
    assert_eq!(priya["email_domain"], "acme-logistics.com");
    assert_eq!(priya["company_name"], "Acme Logistics");
    assert_eq!(priya["source_updated_at"], "2024-03-11T09:15:22+00:00");
    assert_eq!(
        (priya["account_id"].clone(), priya["match_method"].clone()),
        (acme.clone(), json!("exact_domain"))
    );
    assert_eq!(priya["properties"]["owner_email"], "arun@csm-vendor.io");
    let ravi = row(&w, "external_contacts", "5725767000000415022").await;
    assert_eq!(ravi["email"], "ravi.k+crm@gmail.com");
    assert_eq!(
        (ravi["account_id"].clone(), ravi["match_method"].clone()),
        (Value::Null, json!("none"))
    );
    assert_eq!(ravi["match_reason"], "free_mail_domain");
    assert_eq!(ravi["first_name"], Value::Null);

    // Zoho CRM deals: a lookup name matches an account by name; stage → won/closed.
    let globex_deal = row(&w, "external_deals", "5725767000000611009").await;
    assert_eq!(globex_deal["amount"], 18500.0);
    assert_eq!(globex_deal["close_date"], "2024-03-01");
    assert_eq!(
        (
            globex_deal["is_won"].clone(),
            globex_deal["is_closed"].clone()
        ),
        (json!(true), json!(true))
    );
    assert_eq!(
        (
            globex_deal["account_id"].clone(),
            globex_deal["match_method"].clone()
        ),
        (globex.clone(), json!("name"))
    );
    let acme_deal = row(&w, "external_deals", "5725767000000611044").await;
    assert_eq!(
        (acme_deal["amount"].clone(), acme_deal["is_won"].clone()),
        (Value::Null, json!(false))
    );
    assert_eq!(acme_deal["account_id"], acme);

    // Zoho Desk: exact domain, and a subdomain of a known domain.
    let vat = row(&w, "external_tickets", "1892000000143217").await;
    assert_eq!(
        (vat["ticket_number"].clone(), vat["status"].clone()),
        (json!("10231"), json!("On Hold"))
    );
    assert_eq!(
        (vat["account_id"].clone(), vat["match_method"].clone()),
        (globex.clone(), json!("exact_domain"))
    );
    assert_eq!(vat["due_at"], "2024-03-12T13:20:11+00:00");
    let seats = row(&w, "external_tickets", "1892000000143299").await;
    assert_eq!(
        (seats["account_id"].clone(), seats["match_method"].clone()),
        (acme.clone(), json!("registrable_domain"))
    );
    assert_eq!(seats["closed_at"], "2024-03-06T17:30:12+00:00");

    // Jira: +0000 offsets, nested fields, a reporter without email.
    let export = row(&w, "external_tickets", "10482").await;
    assert_eq!(export["ticket_number"], "SUP-231");
    assert_eq!(export["opened_at"], "2024-03-08T11:02:17+00:00");
    assert_eq!(export["source_updated_at"], "2024-03-11T09:15:22.481+00:00");
    assert_eq!(
        (export["status"].clone(), export["priority"].clone()),
        (json!("In Progress"), json!("High"))
    );
    assert_eq!(
        (export["account_id"].clone(), export["match_method"].clone()),
        (northwind.clone(), json!("registrable_domain"))
    );
    let former = row(&w, "external_tickets", "10490").await;
    assert_eq!(
        (former["account_id"].clone(), former["match_reason"].clone()),
        (Value::Null, json!("no_email_or_company"))
    );

    // Salesforce: date-only close dates, website-based matching.
    let expansion = row(&w, "external_deals", "0065g00000XyZabAAF").await;
    assert_eq!(
        (
            expansion["amount"].clone(),
            expansion["probability"].clone()
        ),
        (json!(125000.0), json!(80.0))
    );
    assert_eq!(expansion["close_date"], "2024-05-15");
    assert_eq!(
        (
            expansion["account_id"].clone(),
            expansion["match_method"].clone()
        ),
        (northwind.clone(), json!("exact_domain"))
    );
    assert_eq!(
        row(&w, "external_deals", "0065g00000XyZacAAF").await["account_id"],
        globex
    );

    // HubSpot: string amounts become numbers, "" becomes NULL; no email falls back to the name.
    let renewal = row(&w, "external_deals", "14823001").await;
    assert_eq!(renewal["amount"], 48000.0);
    assert_eq!(renewal["close_date"], "2024-04-30");
    assert_eq!(renewal["account_id"], acme);
    let pilot = row(&w, "external_deals", "14823077").await;
    assert_eq!(
        (pilot["amount"].clone(), pilot["close_date"].clone()),
        (Value::Null, Value::Null)
    );
    let dana = row(&w, "external_contacts", "51").await;
    assert_eq!(dana["full_name"], "Dana Lee");
    assert_eq!(
        (dana["account_id"].clone(), dana["match_method"].clone()),
        (northwind.clone(), json!("registrable_domain"))
    );
    let sam = row(&w, "external_contacts", "1201").await;
    assert_eq!(
        (sam["account_id"].clone(), sam["match_method"].clone()),
        (northwind.clone(), json!("name"))
    );

    // Zendesk: uppercase email; a ticket without any email.
    let sso = row(&w, "external_tickets", "35436").await;
    assert_eq!(sso["requester_email"], "it-admin@acme-logistics.com");
    assert_eq!(
        (sso["channel"].clone(), sso["account_id"].clone()),
        (json!("email"), acme.clone())
    );
    assert_eq!(
        row(&w, "external_tickets", "35440").await["match_method"],
        "none"
    );

    // Intercom: epoch seconds, uppercase email, a disposable domain.
    let marco = row(&w, "external_contacts", "65f0c2a1e4b0a1b2c3d4e5f6").await;
    assert_eq!(marco["email"], "marco@globex.co.uk");
    assert_eq!(marco["source_created_at"], "2024-02-29T13:30:00+00:00");
    assert_eq!(
        (marco["first_name"].clone(), marco["last_name"].clone()),
        (json!("Marco"), json!("Rossi"))
    );
    assert_eq!(marco["account_id"], globex);
    let temp = row(&w, "external_contacts", "65f0c2a1e4b0a1b2c3d4e5f7").await;
    assert_eq!(temp["match_reason"], "free_mail_domain");

    // Every sync closed successfully with consistent counts.
    assert_eq!(
        w.count("SELECT count(*) FROM integration_sync_logs WHERE status = 'success'")
            .await,
        9
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM integration_sync_logs
             WHERE records_received <> records_created + records_updated + records_unchanged
                                      + records_skipped + records_failed
                OR completed_at IS NULL OR duration_ms IS NULL OR records_per_second IS NULL"
        )
        .await,
        0
    );
    assert_eq!(
        w.count("SELECT sum(records_created)::bigint FROM integration_sync_logs")
            .await,
        18
    );
    assert_eq!(
        w.count("SELECT count(*) FROM integration_sources WHERE last_sync_status = 'success' AND total_syncs = 1")
            .await,
        9
    );
    assert_eq!(
        w.count("SELECT count(*) FROM integration_synced_records")
            .await,
        18
    );
    assert_eq!(
        w.count("SELECT count(*) FROM ingest_batches WHERE state = 'processed'")
            .await,
        9
    );
}

fn contacts(integration: Uuid, records: Vec<Value>) -> Value {
    json!({
        "integration_id": integration,
        "data_type": "contacts",
        "source_type": "custom",
        "records": records,
    })
}

#[tokio::test]
async fn redelivery_and_rerun_change_nothing() {
    let w = world().await;
    let (integration, key) = w.integration(SourceType::Custom).await;
    let records: Vec<Value> = (0..30)
        .map(|i| json!({"id": i, "email": format!("p{i}@northwind.io"), "first_name": "P"}))
        .collect();
    let first = w.post(&key, &contacts(integration, records.clone())).await;
    w.drain().await;
    let snapshot = "SELECT string_agg(id::text || updated_at::text, ',' ORDER BY external_id) FROM external_contacts";
    let before: String = sqlx::query_scalar(snapshot)
        .fetch_one(&mut w.owner().await)
        .await
        .unwrap();

    // The same content again: a duplicate delivery, nothing queued.
    let again = w.post(&key, &contacts(integration, records.clone())).await;
    assert_eq!(
        (again["duplicate"].clone(), again["batch_id"].clone()),
        (json!(true), first["batch_id"].clone())
    );

    // The completed job retried by an admin: the chunk is already processed.
    // Rerun every completed chunk job, as an admin retry or a duplicate run would.
    sqlx::query("UPDATE jobs SET state = 'available', finalized_at = NULL, scheduled_at = now() WHERE queue = 'ingest'")
        .execute(&mut w.owner().await)
        .await
        .unwrap();
    w.drain().await;
    let after: String = sqlx::query_scalar(snapshot)
        .fetch_one(&mut w.owner().await)
        .await
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(
        w.count("SELECT records_created FROM integration_sync_logs")
            .await,
        30,
        "nothing counted twice"
    );

    // A new delivery of the same records in a new sync: all unchanged, nothing rewritten.
    let mut body = contacts(integration, records);
    body["final"] = json!(true);
    let resync = w
        .app
        .client
        .post(w.app.url("/api/webhooks/n8n"))
        .bearer_auth(&key)
        .header("idempotency-key", "second-sync")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resync.status(), StatusCode::ACCEPTED);
    let resync: Value = resync.json().await.unwrap();
    w.drain().await;
    let (unchanged, created, status): (i64, i64, String) = sqlx::query_as(
        "SELECT records_unchanged, records_created, status FROM integration_sync_logs WHERE id = $1",
    )
    .bind(Uuid::parse_str(resync["sync_log_id"].as_str().unwrap()).unwrap())
    .fetch_one(&mut w.owner().await)
    .await
    .unwrap();
    assert_eq!((unchanged, created, status.as_str()), (30, 0, "success"));
    let after: String = sqlx::query_scalar(snapshot)
        .fetch_one(&mut w.owner().await)
        .await
        .unwrap();
    assert_eq!(before, after);

    // Changed records are updated in place: each keeps its internal id.
    let ids = "SELECT string_agg(id::text, ',' ORDER BY external_id) FROM external_contacts";
    let ids_before: String = sqlx::query_scalar(ids)
        .fetch_one(&mut w.owner().await)
        .await
        .unwrap();
    let changed: Vec<Value> = (0..30)
        .map(|i| json!({"id": i, "email": format!("p{i}@northwind.io"), "first_name": "Q"}))
        .collect();
    w.post(&key, &contacts(integration, changed)).await;
    w.drain().await;
    assert_eq!(
        w.count("SELECT count(*) FROM external_contacts WHERE first_name = 'Q'")
            .await,
        30
    );
    let ids_after: String = sqlx::query_scalar(ids)
        .fetch_one(&mut w.owner().await)
        .await
        .unwrap();
    assert_eq!(ids_before, ids_after);
}

#[tokio::test]
async fn a_first_sync_that_repeats_records_across_batches_updates_them() {
    let w = world().await;
    let (integration, key) = w.integration(SourceType::Custom).await;
    let record = |i: i32, name: &str| json!({"id": i, "email": format!("p{i}@northwind.io"), "first_name": name});
    let first = w
        .post(
            &key,
            &contacts(integration, (0..4).map(|i| record(i, "P")).collect()),
        )
        .await;
    w.drain().await;
    // The integration's first sync, so its batches are inserted without a conflict check first;
    // the second batch repeats record 2 changed and record 3 as it was.
    let mut second = contacts(
        integration,
        vec![record(2, "Changed"), record(3, "P"), record(4, "P")],
    );
    second["sync_log_id"] = first["sync_log_id"].clone();
    second["final"] = json!(true);
    w.post(&key, &second).await;
    w.drain().await;

    let counts: (String, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT status, records_received, records_created, records_updated, records_unchanged,
                records_failed
         FROM integration_sync_logs WHERE id = $1",
    )
    .bind(Uuid::parse_str(first["sync_log_id"].as_str().unwrap()).unwrap())
    .fetch_one(&mut w.owner().await)
    .await
    .unwrap();
    assert_eq!(counts, ("success".into(), 7, 5, 1, 1, 0));
    assert_eq!(
        row_in(&w, "external_contacts", Some(integration), "2").await["first_name"],
        "Changed"
    );
    assert_eq!(w.count("SELECT count(*) FROM external_contacts").await, 5);
}

#[tokio::test]
async fn bad_records_fail_alone_and_the_sync_is_partial() {
    let w = world().await;
    let (integration, key) = w.integration(SourceType::Custom).await;
    let mut records: Vec<Value> = (0..1_000)
        .map(|i| {
            json!({"id": format!("c{i}"), "email": format!("p{i}@acme-logistics.com"),
                        "source_created_at": "2024-03-11T09:15:22Z"})
        })
        .collect();
    records[10]["source_created_at"] = json!("not a date");
    records[500].as_object_mut().unwrap().remove("id");
    records[999]["first_name"] = json!({"an": "object"});
    // A repeated external id: the last occurrence wins, the earlier is skipped.
    records[20]["id"] = json!("c21");
    let mut body = contacts(integration, records);
    body["final"] = json!(true);
    w.post(&key, &body).await;
    w.drain().await;
    let (status, received, created, skipped, failed): (String, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT status, records_received, records_created, records_skipped, records_failed
         FROM integration_sync_logs",
        )
        .fetch_one(&mut w.owner().await)
        .await
        .unwrap();
    assert_eq!(
        (status.as_str(), received, created, skipped, failed),
        ("partial", 1_000, 996, 1, 3)
    );
    let errors: Vec<(i32, Option<String>, String, String)> = sqlx::query_as(
        "SELECT record_index, external_id, field, code FROM integration_sync_errors ORDER BY record_index",
    )
    .fetch_all(&mut w.owner().await)
    .await
    .unwrap();
    assert_eq!(
        errors,
        vec![
            (
                10,
                Some("c10".into()),
                "source_created_at".into(),
                "invalid_date".into()
            ),
            (500, None, "external_id".into(), "required".into()),
            (
                999,
                Some("c999".into()),
                "first_name".into(),
                "not_text".into()
            ),
        ]
    );
    assert_eq!(w.count("SELECT count(*) FROM external_contacts").await, 996);
}

#[tokio::test]
async fn custom_mappings_override_presets_and_ambiguity_is_recorded() {
    let w = world().await;
    let (integration, key) = w.integration(SourceType::Hubspot).await;
    sqlx::query(
        "INSERT INTO integration_field_mappings (tenant_id, integration_id, data_type, target_field, mapping)
         VALUES ($1, $2, 'contacts', 'title', '{\"source\": \"properties.role\", \"ops\": [{\"op\": \"uppercase\"}]}'),
                ($1, $2, 'contacts', 'properties.tier', '{\"source\": \"properties.tier\", \"ops\": [
                    {\"op\": \"enum_map\", \"map\": {\"1\": \"gold\"}, \"on_unmapped\": \"default\", \"default\": \"standard\"}]}')",
    )
    .bind(w.tenant_id)
    .bind(integration)
    .execute(&mut w.owner().await)
    .await
    .unwrap();
    let body = json!({
        "integration_id": integration, "data_type": "contacts", "source_type": "hubspot", "final": true,
        "records": [
            {"id": "1", "properties": {"email": "a@shared.io", "role": "cto", "tier": "1", "jobtitle": "ignored"}},
            {"id": "2", "properties": {"email": "b@x.northwind.io", "tier": "7"}},
            {"id": "3", "archived": true, "properties": {"email": "c@northwind.io"}}
        ]
    });
    w.post(&key, &body).await;
    w.drain().await;
    let one = row(&w, "external_contacts", "1").await;
    assert_eq!(one["title"], "CTO");
    assert_eq!(one["properties"]["tier"], "gold");
    assert_eq!(
        (one["account_id"].clone(), one["match_reason"].clone()),
        (Value::Null, json!("ambiguous_domain"))
    );
    let two = row(&w, "external_contacts", "2").await;
    assert_eq!(two["properties"]["tier"], "standard");
    assert_eq!(two["account_id"], json!(w.accounts["Northwind"]));
    // Archived HubSpot records are filtered: skipped, not stored, not failed.
    let (skipped, unmatched): (i64, i64) =
        sqlx::query_as("SELECT records_skipped, records_unmatched FROM integration_sync_logs")
            .fetch_one(&mut w.owner().await)
            .await
            .unwrap();
    assert_eq!((skipped, unmatched), (1, 1));
    assert_eq!(w.count("SELECT count(*) FROM external_contacts").await, 2);
}

#[tokio::test]
async fn full_syncs_soft_delete_only_after_success() {
    let w = world().await;
    let (integration, key) = w.integration(SourceType::Custom).await;
    let deliver = |ids: Vec<&str>, mode: &str, key_header: &str, bad: bool| {
        let records: Vec<Value> = ids
            .iter()
            .map(|id| {
                if bad && *id == "b" {
                    json!({"id": id, "source_updated_at": "garbage"})
                } else {
                    json!({"id": id, "email": format!("{id}@northwind.io")})
                }
            })
            .collect();
        let mut body = contacts(integration, records);
        body["final"] = json!(true);
        body["sync_mode"] = json!(mode);
        w.app
            .client
            .post(w.app.url("/api/webhooks/n8n"))
            .bearer_auth(&key)
            .header("idempotency-key", key_header.to_string())
            .json(&body)
            .send()
    };
    assert_eq!(
        deliver(vec!["a", "b", "c"], "incremental", "1", false)
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    w.drain().await;
    // A full sync that partly failed deletes nothing.
    deliver(vec!["a", "b"], "full", "2", true).await.unwrap();
    w.drain().await;
    assert_eq!(
        w.count("SELECT count(*) FROM external_contacts WHERE deleted_at IS NOT NULL")
            .await,
        0
    );
    // A successful full sync deletes what it did not see; an incremental one never does.
    deliver(vec!["a"], "incremental", "3", false).await.unwrap();
    w.drain().await;
    assert_eq!(
        w.count("SELECT count(*) FROM external_contacts WHERE deleted_at IS NOT NULL")
            .await,
        0
    );
    deliver(vec!["a", "b"], "full", "4", false).await.unwrap();
    w.drain().await;
    let deleted: Vec<String> = sqlx::query_scalar(
        "SELECT external_id FROM external_contacts WHERE deleted_at IS NOT NULL",
    )
    .fetch_all(&mut w.owner().await)
    .await
    .unwrap();
    assert_eq!(deleted, vec!["c".to_string()]);
    // A record that comes back is undeleted.
    deliver(vec!["c"], "incremental", "5", false).await.unwrap();
    w.drain().await;
    assert_eq!(
        w.count("SELECT count(*) FROM external_contacts WHERE deleted_at IS NOT NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn admins_set_and_preview_mappings_over_http() {
    let w = world().await;
    let (integration, _) = w.integration(SourceType::Hubspot).await;
    let url = |path: &str| mappings_url(&w, integration, path);

    let refused = as_admin(
        w.app
            .client
            .put(url("/contacts/title"))
            .json(&json!({"source": "x", "ops": [{"op": "date", "formats": ["someday"]}]})),
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_mapping");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("someday")
    );
    assert_eq!(body["error"]["details"]["target"], "title");

    let stored = as_admin(
        w.app
            .client
            .put(url("/contacts/title"))
            .json(&json!({"source": "properties.jobtitle", "ops": [{"op": "uppercase"}]})),
    )
    .await
    .unwrap();
    assert_eq!(stored.status(), StatusCode::OK);
    let listed: Value = as_admin(w.app.client.get(url("")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["mappings"][0]["target"], "title");

    let preview: Value = as_admin(w.app.client.post(url("/contacts/preview")).json(&json!({
        "records": [{"id": "9", "properties": {"email": "A@B.io", "jobtitle": "cfo"}}, {"properties": {}}]
    })))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(preview["results"][0]["row"]["title"], "CFO");
    assert_eq!(preview["results"][0]["row"]["email"], "a@b.io");
    assert_eq!(preview["results"][1]["errors"][0]["field"], "external_id");

    let unknown = as_admin(w.app.client.get(w.app.url(&format!(
        "/api/admin/integrations/{}/mappings",
        Uuid::new_v4()
    ))))
    .await
    .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let anonymous = w.app.client.get(url("")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

/// A mapping can make more than it is given; the preview's answer stays bounded by what it
/// holds (1 MiB of results), and a preview takes at most 100 records.
#[tokio::test]
async fn mapping_previews_are_bounded() {
    let w = world().await;
    let (integration, _) = w.integration(SourceType::Hubspot).await;
    let url = |path: &str| mappings_url(&w, integration, path);
    // Five copies of the field: 60 KB in, 300 KB out per record.
    let amplify = json!({"source": "big", "ops": [{"op": "concat", "separator": "",
        "paths": ["big", "big", "big", "big"]}]});
    let stored = as_admin(w.app.client.put(url("/contacts/title")).json(&amplify))
        .await
        .unwrap();
    assert_eq!(stored.status(), StatusCode::OK);
    let record = |i: usize, bytes: usize| json!({"id": i.to_string(), "big": "x".repeat(bytes)});

    let answer = as_admin(
        w.app
            .client
            .post(url("/contacts/preview"))
            .json(&(0..5).map(|i| record(i, 60_000)).collect::<Vec<_>>()),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let text = answer.text().await.unwrap();
    assert!(
        text.len() < 1_100_000,
        "the answer holds {} bytes",
        text.len()
    );
    let preview: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(preview["results"].as_array().unwrap().len(), 3);
    assert_eq!(
        preview["results"][0]["row"]["title"]
            .as_str()
            .unwrap()
            .len(),
        300_000
    );
    assert_eq!(preview["truncated"], true);
    assert_eq!(preview["omitted"], 2);

    // One record whose result alone is over the budget is named, not shown.
    let alone: Value = as_admin(
        w.app
            .client
            .post(url("/contacts/preview"))
            .json(&json!({"records": [record(0, 300_000), record(1, 10)]})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(alone["results"][0]["outcome"], "too_large");
    assert!(alone["results"][0]["bytes"].as_u64().unwrap() > 1_500_000);
    assert_eq!(alone["results"][1]["outcome"], "mapped");

    let many = as_admin(
        w.app
            .client
            .post(url("/contacts/preview"))
            .json(&(0..101).map(|i| record(i, 1)).collect::<Vec<_>>()),
    )
    .await
    .unwrap();
    assert_eq!(many.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = many.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_records");
    assert_eq!(body["error"]["details"]["limit"], 100);
}

#[tokio::test]
async fn the_matcher_cache_sees_account_changes_and_reuses_an_unchanged_tenant() {
    let w = world().await;
    let cache = syncbridge::pipeline::MatcherCache::default();
    let clues = syncbridge::matching::Clues {
        email: Some("ops@initech.example"),
        website: None,
        company_name: None,
    };
    let get = || async {
        let mut tx = syncbridge::db::tenant_tx(&w.app.db.pool, w.tenant_id)
            .await
            .unwrap();
        let matcher = cache.get(&mut tx, w.tenant_id).await.unwrap();
        tx.commit().await.unwrap();
        matcher
    };
    let first = get().await;
    assert_eq!(first.find(&clues).account_id, None);
    assert!(
        std::sync::Arc::ptr_eq(&first, &get().await),
        "unchanged: reused"
    );

    let initech = admin::add_account(
        &w.app.db.pool,
        w.tenant_id,
        "Initech",
        &["initech.example".into()],
    )
    .await
    .unwrap();
    let second = get().await;
    assert_eq!(second.find(&clues).account_id, Some(initech.id));

    // A changed domain (an update, same count of accounts) is seen too.
    sqlx::query("UPDATE accounts SET domains = '{initrode.example}' WHERE id = $1")
        .bind(initech.id)
        .execute(&mut w.owner().await)
        .await
        .unwrap();
    assert_eq!(get().await.find(&clues).account_id, None);
    // And so is the tenant's own list of never-matched domains.
    sqlx::query("UPDATE accounts SET domains = '{initech.example}' WHERE id = $1")
        .bind(initech.id)
        .execute(&mut w.owner().await)
        .await
        .unwrap();
    assert_eq!(get().await.find(&clues).account_id, Some(initech.id));
    sqlx::query("UPDATE tenants SET excluded_domains = '{initech.example}' WHERE id = $1")
        .bind(w.tenant_id)
        .execute(&mut w.owner().await)
        .await
        .unwrap();
    assert_eq!(get().await.find(&clues).account_id, None);
}

/// Processes chunk 0 of the batch `receipt` names in a transaction left open, as a worker in the
/// middle of its job.
async fn chunk_in_flight(w: &World, receipt: &Value) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let batch_id = Uuid::parse_str(receipt["batch_id"].as_str().unwrap()).unwrap();
    // As the worker runs a job: the application role, scoped to the tenant by the pipeline.
    let mut tx = w.app.db.pool.begin().await.unwrap();
    let counts = syncbridge::pipeline::process_chunk(
        &mut tx,
        w.tenant_id,
        batch_id,
        0,
        &syncbridge::tasks::pipeline_settings(&test_config().worker),
        &syncbridge::pipeline::MatcherCache::default(),
        false,
    )
    .await
    .unwrap()
    .expect("the chunk was not processed before");
    assert!(counts.created > 0);
    tx
}

/// Deletes row `id` with `sql`, as the tenant, while chunk 0 of the batch `receipt` names is being
/// written: asserts that the deletion waits for the chunk's transaction and then deletes the row.
async fn delete_during_chunk(w: &World, receipt: &Value, sql: &'static str, id: Uuid) {
    let worker = chunk_in_flight(w, receipt).await;
    let (pool, tenant) = (w.app.db.pool.clone(), w.tenant_id);
    let deletion = tokio::spawn(async move {
        let mut tx = syncbridge::db::tenant_tx(&pool, tenant).await.unwrap();
        let deleted = sqlx::query(sql).bind(id).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        deleted.rows_affected()
    });
    // The deletion's backend waits on a lock the chunk's transaction holds.
    let waiting = helpers::until_none_left(
        &w.app.db,
        "SELECT GREATEST(0, 1 - count(*)) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'DELETE%'",
        std::time::Duration::from_secs(30),
    )
    .await;
    assert_eq!(waiting, Ok(()), "{sql}: waits for the chunk in flight");
    assert!(!deletion.is_finished(), "{sql}");
    worker.commit().await.unwrap();
    assert_eq!(deletion.await.unwrap(), 1, "{sql}");
}

#[tokio::test]
async fn deleting_an_account_unmatches_its_rows_even_those_being_written() {
    let w = world().await;
    let acme = w.accounts["Acme Logistics"];
    // The sample's contacts, and one of Northwind's that is to keep its match.
    let body = |integration| {
        let mut body = sample("zoho_crm_contacts", integration);
        let mut northwind = body["records"][0].clone();
        northwind["id"] = json!("5725767000000415999");
        northwind["Email"] = json!("dana@northwind.io");
        body["records"].as_array_mut().unwrap().push(northwind);
        body
    };
    let (integration, key) = w.integration(SourceType::ZohoCrm).await;
    w.post(&key, &body(integration)).await;
    w.drain().await;
    let matched = "SELECT count(*) FROM external_contacts WHERE account_id IS NOT NULL";
    let acme_rows = format!("SELECT count(*) FROM external_contacts WHERE account_id = '{acme}'");
    let (acme_per_sync, matched_per_sync) = (w.count(&acme_rows).await, w.count(matched).await);
    assert!(acme_per_sync > 0 && matched_per_sync > acme_per_sync);

    // A second integration's chunk is being written with Acme's id when the account is deleted:
    // the deletion waits for it and then unmatches its rows too.
    let (second, second_key) = w.integration(SourceType::ZohoCrm).await;
    let receipt = w.post(&second_key, &body(second)).await;
    delete_during_chunk(&w, &receipt, "DELETE FROM accounts WHERE id = $1", acme).await;

    assert_eq!(w.count(&acme_rows).await, 0, "no row refers to the account");
    assert_eq!(
        w.count("SELECT count(*) FROM external_contacts WHERE match_reason = 'account_deleted'")
            .await,
        2 * acme_per_sync,
        "the rows of both integrations are unmatched"
    );
    assert_eq!(
        w.count(matched).await,
        2 * (matched_per_sync - acme_per_sync),
        "rows of other accounts keep their match"
    );
    let unmatched = row_in(
        &w,
        "external_contacts",
        Some(integration),
        "5725767000000415001",
    )
    .await;
    assert_eq!(
        (
            unmatched["match_method"].clone(),
            unmatched["match_reason"].clone()
        ),
        (json!("none"), json!("account_deleted"))
    );

    // A chunk after the deletion matches no row to the deleted account; re-syncing the record
    // matches it afresh (here: to nothing, the account is gone) instead of keeping the old reason.
    let mut again = body(integration);
    again["records"][0]["Last_Name"] = json!("Raman-Iyer");
    w.post(&key, &again).await;
    w.drain().await;
    let resynced = row_in(
        &w,
        "external_contacts",
        Some(integration),
        "5725767000000415001",
    )
    .await;
    assert_eq!(resynced["account_id"], Value::Null);
    assert_ne!(resynced["match_reason"], "account_deleted");

    // The id of an account never changes.
    let changed = sqlx::query("UPDATE accounts SET id = gen_random_uuid() WHERE tenant_id = $1")
        .bind(w.tenant_id)
        .execute(&mut w.owner().await)
        .await
        .unwrap_err();
    assert!(changed.to_string().contains("never change"), "{changed}");
}

#[tokio::test]
async fn deleting_an_integration_removes_its_rows_even_those_being_written() {
    let w = world().await;
    let (kept, kept_key) = w.integration(SourceType::Hubspot).await;
    w.post(&kept_key, &sample("hubspot_contacts", kept)).await;
    w.drain().await;
    let rows =
        |id: Uuid| format!("SELECT count(*) FROM external_contacts WHERE integration_id = '{id}'");
    let kept_rows = w.count(&rows(kept)).await;
    assert!(kept_rows > 0);
    let (doomed, doomed_key) = w.integration(SourceType::Hubspot).await;
    let receipt = w
        .post(&doomed_key, &sample("hubspot_contacts", doomed))
        .await;
    delete_during_chunk(
        &w,
        &receipt,
        "DELETE FROM integration_sources WHERE id = $1",
        doomed,
    )
    .await;
    w.drain().await;

    assert_eq!(w.count(&rows(doomed)).await, 0);
    assert_eq!(
        w.count(&rows(kept)).await,
        kept_rows,
        "the other integration's rows stay"
    );
    // The id of an integration never changes, even one nothing else refers to yet.
    let bare =
        admin::create_integration(&w.app.db.pool, w.tenant_id, SourceType::Jira, "Bare", None)
            .await
            .unwrap();
    let changed =
        sqlx::query("UPDATE integration_sources SET id = gen_random_uuid() WHERE id = $1")
            .bind(bare.id)
            .execute(&mut w.owner().await)
            .await
            .unwrap_err();
    assert!(changed.to_string().contains("never change"), "{changed}");
}

/// The external tables' statements are built at run time, one per table (and per conflict
/// handling for inserts): this runs each of them on each table. Per data type: a first,
/// incremental sync inserts expecting new rows; a full sync probes, upserts a changed row and,
/// having seen half of the live rows, sweeps the other; a second full sync finds the row unchanged
/// and marks it seen (and inserts a new one through the upsert).
#[tokio::test]
async fn every_data_type_runs_every_statement_shape() {
    let w = world().await;
    for (data_type, table) in [
        ("contacts", "external_contacts"),
        ("tickets", "external_tickets"),
        ("deals", "external_deals"),
    ] {
        let (integration, key) = w.integration(SourceType::Custom).await;
        let deliver = |records: Vec<Value>, mode: &'static str| {
            let body = json!({
                "integration_id": integration,
                "data_type": data_type,
                "source_type": "custom",
                "sync_mode": mode,
                "final": true,
                "records": records,
            });
            let key = key.clone();
            let w = &w;
            async move { w.post(&key, &body).await["sync_log_id"].clone() }
        };
        let sync_log = |id: Value| {
            let w = &w;
            async move {
                sqlx::query_as::<_, (String, i64, i64, i64)>(
                    "SELECT status, records_created, records_updated, records_unchanged
                     FROM integration_sync_logs WHERE id = $1::text::uuid",
                )
                .bind(id.as_str().unwrap().to_string())
                .fetch_one(&mut w.owner().await)
                .await
                .unwrap()
            }
        };
        let first = deliver(
            vec![
                json!({"id": "a", "name": "A"}),
                json!({"id": "b", "name": "B"}),
            ],
            "incremental",
        )
        .await;
        w.drain().await;
        assert_eq!(
            sync_log(first).await,
            ("success".into(), 2, 0, 0),
            "{data_type}"
        );

        let second = deliver(vec![json!({"id": "a", "name": "A, changed"})], "full").await;
        w.drain().await;
        assert_eq!(
            sync_log(second.clone()).await,
            ("success".into(), 0, 1, 0),
            "{data_type}"
        );
        let b = row(&w, table, "b").await;
        assert!(!b["deleted_at"].is_null(), "{data_type}: b was swept: {b}");
        let sweeps = w
            .count(&format!(
                "SELECT count(*) FROM integration_sync_sweeps
                 WHERE sync_log_id = '{}' AND state = 'applied' AND live_rows = 2
                   AND seen_rows = 1 AND deleted_rows = 1",
                second.as_str().unwrap()
            ))
            .await;
        assert_eq!(
            sweeps, 1,
            "{data_type}: the sweep counted live and seen rows"
        );

        // (With a new record: the same content again would be the same delivery.)
        let third = deliver(
            vec![
                json!({"id": "a", "name": "A, changed"}),
                json!({"id": "c", "name": "C"}),
            ],
            "full",
        )
        .await;
        w.drain().await;
        assert_eq!(
            sync_log(third.clone()).await,
            ("success".into(), 1, 0, 1),
            "{data_type}"
        );
        let a = row(&w, table, "a").await;
        assert_eq!(
            a["last_sync_log_id"], third,
            "{data_type}: the unchanged row was seen"
        );
        assert!(a["deleted_at"].is_null(), "{data_type}: {a}");
    }
}

/// `jobs.schema` moves the queue's tables out of `public`: migrating creates them there (and
/// nothing named like them in `public`), the application's roles may use them, and a delivery
/// is enqueued, processed and stored through them; readiness reads the engine's history there.
#[tokio::test]
async fn a_queue_in_a_schema_of_its_own_carries_a_delivery_end_to_end() {
    let db = helpers::TestDb::empty().await;
    let mut config = test_config();
    config.jobs.schema = "sb_queue".into();
    let queue = config.jobs.queue();
    syncbridge::db::migrate(&db.owner_options, &queue)
        .await
        .unwrap();
    let engine_tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables
         WHERE table_name IN ('jobs', 'job_workers', 'job_leader', 'job_queues', 'job_schedules')
         ORDER BY 1",
    )
    .fetch_all(&mut db.owner().await)
    .await
    .unwrap();
    assert_eq!(
        engine_tables,
        [
            "sb_queue.job_leader",
            "sb_queue.job_queues",
            "sb_queue.job_schedules",
            "sb_queue.job_workers",
            "sb_queue.jobs"
        ]
    );
    assert_eq!(
        syncbridge::db::readiness(&db.pool, &queue).await,
        syncbridge::db::Readiness::Ready
    );
    assert!(
        matches!(
            syncbridge::db::readiness(&db.pool, &jobs::Queue::default()).await,
            syncbridge::db::Readiness::MigrationsPending { .. }
        ),
        "the engine's history is in its schema, not in public"
    );

    let app = TestApp::spawn_configured(db, None, |c| c.jobs.schema = "sb_queue".into()).await;
    let h = helpers::hubspot_integration(&app.db.pool, "Schema Co").await;
    let body = sample("hubspot_contacts", h.integration_id);
    let records = body["records"].as_array().unwrap().len() as i64;
    let response = app
        .client
        .post(app.url("/api/webhooks/n8n"))
        .bearer_auth(&h.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    config.worker.poll_interval_ms = 20;
    helpers::work_until_done(
        &app.db,
        &config,
        "SELECT count(*) FROM sb_queue.jobs WHERE state IN ('available', 'scheduled', 'running', 'retryable')",
    )
    .await;
    let mut owner = app.db.owner().await;
    let stored = count(
        &mut owner,
        format!(
            "SELECT count(*) FROM external_contacts WHERE integration_id = '{}'",
            h.integration_id
        ),
    )
    .await;
    assert_eq!(stored, records);
    let completed = count(
        &mut owner,
        "SELECT count(*) FROM sb_queue.jobs WHERE queue = 'ingest' AND state = 'completed'",
    )
    .await;
    assert!(completed >= 1, "the chunk jobs ran from sb_queue.jobs");
}
