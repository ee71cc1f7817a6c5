//! `GET /api/v1/stats` through HTTP: each dashboard number from known deliveries of one tenant
//! (another tenant's never counted), and the plans of its sync-log queries at scale.

use reqwest::StatusCode;
use serde_json::{Value, json};
use syncbridge::admin::{self, tokens};

use crate::helpers::{self, HubspotIntegration, TestApp, test_config};

/// Delivers contacts `ids` (a `bad` first name fails its record) as a new sync; the body's bytes.
async fn deliver(app: &TestApp, h: &HubspotIntegration, ids: &[(&str, bool)], open: bool) -> usize {
    let records: Vec<Value> = ids
        .iter()
        .map(|(id, bad)| {
            json!({"id": id, "properties": {"email": format!("{id}@northwind.io"),
                   "firstname": if *bad { "Da\u{0}na" } else { "Dana" }}})
        })
        .collect();
    let body = json!({"integration_id": h.integration_id, "data_type": "contacts",
                      "source_type": "hubspot", "final": !open, "records": records});
    let bytes = serde_json::to_vec(&body).unwrap().len();
    let response = app
        .client
        .post(app.url("/api/webhooks/n8n"))
        .bearer_auth(&h.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    bytes
}

#[tokio::test]
async fn the_dashboard_numbers_count_what_the_tenant_did() {
    let app = TestApp::spawn().await;
    let a = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let b = helpers::hubspot_integration(&app.db.pool, "Beta").await;
    let paused = admin::create_integration(
        &app.db.pool,
        a.tenant_id,
        syncbridge::domain::SourceType::Jira,
        "Jira",
        None,
    )
    .await
    .unwrap();
    admin::set_integration_status(
        &app.db.pool,
        paused.id,
        syncbridge::domain::IntegrationStatus::Paused,
    )
    .await
    .unwrap();
    let token = tokens::create(&app.db.pool, a.tenant_id, None, true)
        .await
        .unwrap()
        .token
        .plaintext;

    let mut bytes = deliver(&app, &a, &[("c0", false), ("c1", false)], false).await;
    bytes += deliver(&app, &a, &[("c2", false), ("c3", true)], false).await;
    bytes += deliver(&app, &a, &[("c4", false)], true).await;
    deliver(
        &app,
        &b,
        &[("x0", false), ("x1", false), ("x2", false)],
        false,
    )
    .await;
    let mut config = test_config();
    config.worker.poll_interval_ms = 20;
    helpers::work_until_done(
        &app.db,
        &config,
        "SELECT count(*) FROM jobs WHERE queue = 'ingest' AND state IN ('available', 'scheduled', 'running', 'retryable')",
    )
    .await;
    // A sync that failed ten days ago: in the chart, not in the last 7 days.
    let mut owner = app.db.owner().await;
    sqlx::query("SET ROLE syncbridge_system")
        .execute(&mut owner)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO integration_sync_logs (tenant_id, integration_id, trigger, status, created_at)
         VALUES ($1, $2, 'schedule', 'failed', now() - interval '10 days')",
    )
    .bind(a.tenant_id)
    .bind(a.integration_id)
    .execute(&mut owner)
    .await
    .unwrap();

    let response = app
        .client
        .get(app.url("/api/v1/stats"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stats: Value = response.json().await.unwrap();
    assert_eq!(
        stats["integrations"],
        json!({"total": 2, "active": 1, "paused": 1, "failing": 0})
    );
    assert_eq!(
        stats["records"],
        json!({"contacts": 4, "tickets": 0, "deals": 0})
    );
    assert_eq!(stats["syncs_last_24h"], 3);
    assert_eq!(stats["failed_syncs_last_7d"], 0);
    assert_eq!(
        stats["success_rate_last_7d"], 0.5,
        "one success, one partial, one still open"
    );
    assert_eq!(stats["window_days"], 30);
    assert_eq!(stats["received"], json!({"records": 5, "bytes": bytes}));
    let days = stats["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    let today = &days[29];
    assert_eq!(today["day"], json!(chrono::Utc::now().date_naive()));
    assert_eq!(
        [
            &today["syncs"],
            &today["succeeded"],
            &today["partial"],
            &today["open"],
            &today["records_received"]
        ],
        [&json!(3), &json!(1), &json!(1), &json!(1), &json!(5)]
    );
    assert_eq!(
        (&days[19]["syncs"], &days[19]["failed"]),
        (&json!(1), &json!(1)),
        "ten days ago"
    );
    assert_eq!(
        days.iter()
            .map(|d| d["syncs"].as_i64().unwrap())
            .sum::<i64>(),
        4
    );

    let response = app
        .client
        .get(app.url("/api/v1/stats?days=7"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let week: Value = response.json().await.unwrap();
    assert_eq!(week["days"].as_array().unwrap().len(), 7);
    for days in ["0", "91", "many"] {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/stats?days={days}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "days={days}");
    }
}

/// With 200,000 sync logs of one tenant over a year (and 50,000 of another), the chart's query
/// reads the tenant's window through the index, never the table.
#[tokio::test]
async fn the_sync_chart_reads_its_window_through_the_index() {
    let db = helpers::TestDb::migrated().await;
    let a = helpers::hubspot_integration(&db.pool, "Alpha").await;
    let b = helpers::hubspot_integration(&db.pool, "Beta").await;
    let mut owner = db.owner().await;
    sqlx::query("SET ROLE syncbridge_system")
        .execute(&mut owner)
        .await
        .unwrap();
    for (h, n) in [(&a, 200_000), (&b, 50_000)] {
        sqlx::query(
            "INSERT INTO integration_sync_logs (tenant_id, integration_id, trigger, status, created_at)
             SELECT $1, $2, 'schedule', 'success', now() - (i % 365) * interval '1 day'
             FROM generate_series(1, $3) i",
        )
        .bind(h.tenant_id)
        .bind(h.integration_id)
        .bind(n)
        .execute(&mut owner)
        .await
        .unwrap();
    }
    sqlx::query("ANALYZE integration_sync_logs")
        .execute(&mut owner)
        .await
        .unwrap();
    let plan: Value = sqlx::query_scalar(
        "EXPLAIN (FORMAT JSON)
         SELECT (created_at AT TIME ZONE 'UTC')::date, count(*) FROM integration_sync_logs
         WHERE tenant_id = $1 AND created_at >= now() - interval '30 days' GROUP BY 1",
    )
    .bind(a.tenant_id)
    .fetch_one(&mut owner)
    .await
    .unwrap();
    let text = plan.to_string();
    assert!(!text.contains("Seq Scan"), "{text}");
    assert!(
        text.contains("integration_sync_logs_tenant_created_idx"),
        "{text}"
    );
}
