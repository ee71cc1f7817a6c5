//! `/metrics` end to end, in a test process of its own (the recorder is the process's, so no
//! other test may move its counters): a sync is delivered, processed and closed, a manual sync
//! is triggered at a local n8n, and the scrape's counters moved by exactly what they caused.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::collections::BTreeMap;

use helpers::{ADMIN_TOKEN, TestApp, TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

const METRICS_TOKEN: &str = "metrics-token-for-tests-0123";

/// Every sample of a scrape, by its series (`name{labels}` as exposed).
type Scrape = BTreeMap<String, f64>;

async fn scrape(app: &TestApp) -> Scrape {
    let response = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    parse(&response.text().await.unwrap())
}

fn parse(page: &str) -> Scrape {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse::<f64>().unwrap())
        })
        .collect()
}

/// How much `series` moved between two scrapes (a series absent before counts from 0).
fn moved(before: &Scrape, after: &Scrape, series: &str) -> f64 {
    let value = |s: &Scrape| s.get(series).copied().unwrap_or(0.0);
    assert!(
        after.contains_key(series),
        "no series {series} in the scrape; it has:\n{}",
        after
            .keys()
            .filter(|k| k.starts_with(series.split('{').next().unwrap()))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    value(after) - value(before)
}

#[tokio::test]
async fn a_sync_moves_the_counters_by_exactly_its_records_and_jobs() {
    syncbridge::telemetry::metrics::install();
    // Load refusals carry their integration (the process's policy, set once).
    syncbridge::telemetry::metrics::configure(&syncbridge::config::MetricsConfig {
        integration_labels: true,
        ..helpers::test_config().metrics
    });
    let app = TestApp::spawn_configured(TestDb::migrated().await, None, |c| {
        c.metrics.token = Some(METRICS_TOKEN.to_string().into());
        // Two deliveries in a burst, then one a second: a run of them is refused.
        c.ingest.rate_limit_burst = 2;
        c.ingest.rate_limit_per_second = 1;
    })
    .await;

    // The page is the token's only.
    let anonymous = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_token");
    let wrong = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_token");

    let h = helpers::hubspot_integration(&app.db.pool, "Metrics Co").await;
    let before = scrape(&app).await;

    // One delivery of four contacts, one of them bad, from an n8n execution with its own id.
    let records: Vec<Value> = (1..=3)
        .map(|n| json!({"id": format!("c{n}"), "properties": {"email": format!("p{n}@metrics.example")}}))
        .chain([json!({"id": "bad", "properties": {"createdate": "someday"}})])
        .collect();
    let body = serde_json::to_vec(
        &json!({"integration_id": h.integration_id, "data_type": "contacts",
        "source_type": "hubspot", "final": true, "records": records}),
    )
    .unwrap();
    let delivered = app
        .client
        .post(app.url("/api/webhooks/n8n"))
        .header("x-api-key", &h.key)
        .header("content-type", "application/json")
        .header("x-request-id", "n8n-execution-4711")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), StatusCode::ACCEPTED);
    assert_eq!(delivered.headers()["x-request-id"], "n8n-execution-4711");
    // A delivery with a wrong key is refused and counted with its code; its error body names
    // the request.
    let refused = app
        .client
        .post(app.url("/api/webhooks/n8n"))
        .header("x-api-key", "sbk_not_a_key_of_anyone")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let made_id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let refusal: Value = refused.json().await.unwrap();
    assert_eq!(refusal["error"]["request_id"], made_id.as_str());
    let code = refusal["error"]["code"].as_str().unwrap().to_string();

    // The chunk job carries the delivery's request id.
    let mut owner = app.db.owner().await;
    let carried: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT args->>'request_id' FROM jobs WHERE kind = 'ingest.process_chunk'",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap();
    assert_eq!(carried, vec![Some("n8n-execution-4711".to_string())]);

    helpers::drain(&app.db).await;

    // A manual sync, triggered at a local n8n that accepts it.
    let n8n = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&n8n)
        .await;
    helpers::manual_sync_at(&app, h.integration_id, &n8n, json!({})).await;
    helpers::drain(&app.db).await;

    let after = scrape(&app).await;
    let m = |series: &str| moved(&before, &after, series);
    let webhook = r#"method="POST",route="/api/webhooks/n8n""#;
    assert_eq!(
        m(r#"syncbridge_webhook_requests_total{status="202",code=""}"#),
        1.0
    );
    assert_eq!(
        m(&format!(
            r#"syncbridge_webhook_requests_total{{status="401",code="{code}"}}"#
        )),
        1.0
    );
    assert_eq!(
        m(&format!(
            r#"syncbridge_http_requests_total{{{webhook},status="202",code=""}}"#
        )),
        1.0
    );
    assert_eq!(m("syncbridge_webhook_accept_duration_seconds_count"), 2.0);
    assert_eq!(m("syncbridge_webhook_body_bytes_total"), body.len() as f64);
    assert_eq!(
        m(r#"syncbridge_webhook_records_total{data_type="contacts"}"#),
        4.0
    );
    for (outcome, n) in [("created", 3.0), ("failed", 1.0), ("unmatched", 3.0)] {
        assert_eq!(
            m(&format!(
                r#"syncbridge_records_processed_total{{data_type="contacts",outcome="{outcome}"}}"#
            )),
            n,
            "{outcome}"
        );
    }
    assert_eq!(
        m(r#"syncbridge_chunk_duration_seconds_count{data_type="contacts"}"#),
        1.0
    );
    for kind in ["ingest.process_chunk", "sync.trigger"] {
        let queue = if kind == "sync.trigger" {
            "default"
        } else {
            "ingest"
        };
        for counter in ["enqueued", "completed"] {
            assert_eq!(
                m(&format!(
                    r#"syncbridge_jobs_{counter}_total{{queue="{queue}",kind="{kind}"}}"#
                )),
                1.0,
                "{counter} {kind}"
            );
        }
    }
    assert_eq!(
        m(r#"syncbridge_syncs_started_total{trigger="webhook"}"#),
        1.0
    );
    assert_eq!(
        m(r#"syncbridge_syncs_started_total{trigger="manual"}"#),
        1.0
    );
    assert_eq!(
        m(r#"syncbridge_syncs_closed_total{status="partial",source_type="hubspot"}"#),
        1.0
    );
    assert_eq!(
        m(r#"syncbridge_sync_duration_seconds_count{status="partial",source_type="hubspot"}"#),
        1.0
    );
    assert_eq!(
        m(r#"syncbridge_n8n_trigger_attempts_total{outcome="accepted"}"#),
        1.0
    );
    assert!(after.contains_key(&format!(
        r#"syncbridge_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    )));
    assert!(after.contains_key(r#"syncbridge_db_pool_connections{state="idle"}"#));

    // The leader's sample: the manual sync is open (n8n never delivered) and a new delivery's
    // chunk waits; after its processing its gauges go back to 0.
    let open_batch = json!({"integration_id": h.integration_id, "data_type": "contacts",
        "source_type": "hubspot", "final": false, "records": [{"id": "c9"}]});
    helpers::post_delivery(&app, &h, &open_batch).await;
    let config = helpers::test_config();
    let maintenance = jobs::Maintenance::new(
        app.db.pool.clone(),
        syncbridge::tasks::maintenance_config(&config),
        Vec::new(),
    )
    .with_sampler(syncbridge::sync::OpenSyncs);
    maintenance.sample().await.unwrap();
    let sampled = scrape(&app).await;
    let waiting =
        r#"syncbridge_jobs{queue="ingest",kind="ingest.process_chunk",state="available"}"#;
    assert_eq!(sampled[waiting], 1.0);
    assert_eq!(
        sampled[r#"syncbridge_syncs_open{source_type="hubspot"}"#],
        2.0
    );
    assert!(sampled[r#"syncbridge_jobs_oldest_available_age_seconds{queue="ingest"}"#] >= 0.0);
    helpers::drain(&app.db).await;
    maintenance.sample().await.unwrap();
    let drained = scrape(&app).await;
    assert_eq!(drained[waiting], 0.0);

    // Deliveries in a row until the rate limit refuses one: each refusal is counted with its
    // integration.
    let mut refused = 0;
    for _ in 0..5 {
        let answer = app
            .client
            .post(app.url("/api/webhooks/n8n"))
            .header("x-api-key", &h.key)
            .json(&open_batch)
            .send()
            .await
            .unwrap();
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    assert!(refused >= 1);
    let limited = scrape(&app).await;
    assert_eq!(
        moved(
            &drained,
            &limited,
            &format!(
                r#"syncbridge_webhook_refusals_total{{reason="rate_limited",integration="{}"}}"#,
                h.integration_id
            )
        ),
        f64::from(refused)
    );
}
