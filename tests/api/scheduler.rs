//! Scheduled and manual syncs: the trigger toward n8n (a real local HTTP server plays n8n), the
//! scheduler's exactly-once ticks on a controllable clock, the policies, and the watchdog.

use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgConnection;
use syncbridge::{
    admin,
    config::Config,
    domain::SourceType,
    scheduler::{self, SchedulerSettings},
    tasks::{self, JobContext},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use crate::helpers::{ADMIN_TOKEN, TestApp, count, test_config};

/// 32 bytes, base64: the key tests seal credentials with.
const TEST_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn config() -> Config {
    let mut config = test_config();
    config.encryption_key = Some(TEST_KEY.to_string().into());
    config.worker.poll_interval_ms = 20;
    config.worker.retry_base_ms = 50;
    config.worker.retry_max_secs = 1;
    config.n8n.timeout_secs = 2;
    config.n8n.connect_timeout_secs = 1;
    config
}

struct World {
    app: TestApp,
    tenant_id: Uuid,
    n8n: MockServer,
}

async fn world() -> World {
    let app = TestApp::spawn_configured(crate::helpers::TestDb::migrated().await, None, |c| {
        c.encryption_key = Some(TEST_KEY.to_string().into());
    })
    .await;
    let tenant = admin::create_tenant(&app.db.pool, "Scheduled Co")
        .await
        .unwrap();
    World {
        app,
        tenant_id: tenant.id,
        n8n: MockServer::start().await,
    }
}

impl World {
    async fn integration(&self, source: SourceType) -> Uuid {
        admin::create_integration(
            &self.app.db.pool,
            self.tenant_id,
            source,
            &format!("{source} {}", Uuid::new_v4()),
            None,
        )
        .await
        .unwrap()
        .id
    }

    fn hook(&self, name: &str) -> String {
        format!("{}/webhook/{name}", self.n8n.uri())
    }

    async fn patch(&self, id: Uuid, body: Value) -> reqwest::Response {
        self.app
            .client
            .patch(self.app.url(&format!("/api/admin/integrations/{id}")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `GET /api/admin/integrations/{id}`.
    async fn settings(&self, id: Uuid) -> Value {
        self.app
            .get_json(&format!("/api/admin/integrations/{id}"), ADMIN_TOKEN)
            .await
    }

    async fn configure(&self, id: Uuid, body: Value) -> Value {
        let response = self.patch(id, body).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{:?}",
            response.text().await
        );
        response.json().await.unwrap()
    }

    /// `POST /api/admin/integrations/{id}/sync`; returns the new sync log id.
    async fn manual_sync(&self, id: Uuid, body: Value) -> Uuid {
        let response = self
            .app
            .client
            .post(self.app.url(&format!("/api/admin/integrations/{id}/sync")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "{:?}",
            response.text().await
        );
        let body: Value = response.json().await.unwrap();
        body["sync_log_id"].as_str().unwrap().parse().unwrap()
    }

    async fn owner(&self) -> PgConnection {
        self.app.db.owner().await
    }

    async fn count(&self, sql: &str) -> i64 {
        count(&mut self.owner().await, sql).await
    }

    async fn sync_log(&self, id: Uuid) -> Value {
        sqlx::query_scalar("SELECT to_jsonb(l) FROM integration_sync_logs l WHERE id = $1")
            .bind(id)
            .fetch_one(&mut self.owner().await)
            .await
            .unwrap()
    }

    /// Runs a worker with `config` until no job is waiting to run (retries included).
    async fn work(&self, config: &Config) {
        crate::helpers::work_until_done(
            &self.app.db,
            config,
            "SELECT count(*) FROM jobs WHERE state IN ('available', 'scheduled', 'running', 'retryable')",
        )
        .await;
    }

    /// An integration of `source` with a webhook URL and the given settings.
    async fn scheduled(&self, source: SourceType, settings: Value) -> Uuid {
        let id = self.integration(source).await;
        let mut body = json!({"webhook_url": self.hook("x")});
        body.as_object_mut()
            .unwrap()
            .extend(settings.as_object().unwrap().clone());
        self.configure(id, body).await;
        id
    }

    async fn trigger_job(&self, sync_log_id: Uuid) -> (String, i32, Value) {
        sqlx::query_as(
            "SELECT state, attempt, errors FROM jobs WHERE kind = 'sync.trigger'
             AND args->>'sync_log_id' = $1",
        )
        .bind(sync_log_id.to_string())
        .fetch_one(&mut self.owner().await)
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn the_trigger_carries_the_documented_body_and_headers_and_n8n_can_deliver_to_it() {
    let w = world().await;
    let id = w.integration(SourceType::Hubspot).await;
    Mock::given(method("POST"))
        .and(path("/webhook/hubspot"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"message": "Workflow was started"})),
        )
        .mount(&w.n8n)
        .await;
    let settings = w
        .configure(
            id,
            json!({
                "webhook_url": w.hook("hubspot"),
                "credentials": {"kind": "header", "name": "X-N8N-Key", "value": "n8n-header-secret"},
            }),
        )
        .await;
    assert_eq!(settings["auth"], "header");
    assert!(!settings.to_string().contains("n8n-header-secret"));

    let sync_log_id = w.manual_sync(id, json!({})).await;
    let log = w.sync_log(sync_log_id).await;
    assert_eq!(log["status"], "pending");
    assert_eq!(log["trigger"], "manual");
    let config = config();
    w.work(&config).await;

    let requests = w.n8n.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.headers["x-n8n-key"], "n8n-header-secret");
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(
        request.headers["idempotency-key"],
        sync_log_id.to_string().as_str()
    );
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({
            "integration_id": id,
            "sync_log_id": sync_log_id,
            "source_type": "hubspot",
            "data_types": ["contacts", "deals"],
            "data_type": null,
            "sync_mode": "incremental",
            "since": null,
            "since_by_data_type": {"contacts": null, "deals": null},
            "callback_url": config.callback_url(),
        })
    );
    let log = w.sync_log(sync_log_id).await;
    assert!(log["triggered_at"].is_string(), "{log}");
    assert_eq!(w.trigger_job(sync_log_id).await.0, "completed");

    // n8n answers with a batch for that sync: the webhook takes it and the sync runs.
    let key = admin::create_api_key(&w.app.db.pool, id, None)
        .await
        .unwrap();
    let delivery = w
        .app
        .client
        .post(w.app.url("/api/webhooks/n8n"))
        .bearer_auth(&key.key.plaintext)
        .json(&json!({
            "integration_id": body["integration_id"],
            "sync_log_id": body["sync_log_id"],
            "source_type": body["source_type"],
            "data_type": "contacts",
            "records": crate::helpers::sample("hubspot_contacts")["records"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        delivery.status(),
        StatusCode::ACCEPTED,
        "{:?}",
        delivery.text().await
    );
    assert_eq!(w.sync_log(sync_log_id).await["status"], "running");

    // Incremental syncs ask for changes since each data type's cursor minus the overlap (5 min
    // by default; tests/api/truth.rs follows cursors through real syncs); full ones for
    // everything; a request may narrow the data types.
    let cursor: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO integration_cursors (tenant_id, integration_id, data_type, cursor_at)
         SELECT tenant_id, id, 'deals', date_trunc('second', now()) - interval '1 hour'
         FROM integration_sources WHERE id = $1
         RETURNING cursor_at",
    )
    .bind(id)
    .fetch_one(&mut w.owner().await)
    .await
    .unwrap();
    sqlx::query("UPDATE integration_sync_logs SET status = 'success' WHERE id = $1")
        .bind(sync_log_id)
        .execute(&mut w.owner().await)
        .await
        .unwrap();
    let second = w.manual_sync(id, json!({"data_types": ["deals"]})).await;
    w.work(&config).await;
    let body: Value =
        serde_json::from_slice(&w.n8n.received_requests().await.unwrap()[1].body).unwrap();
    assert_eq!(body["sync_log_id"], json!(second));
    assert_eq!(body["data_types"], json!(["deals"]));
    assert_eq!(body["data_type"], "deals");
    let since: DateTime<Utc> = body["since"].as_str().unwrap().parse().unwrap();
    assert_eq!(since, cursor - chrono::Duration::minutes(5));
    assert_eq!(body["since_by_data_type"], json!({"deals": body["since"]}));
    sqlx::query("UPDATE integration_sync_logs SET status = 'success' WHERE id = $1")
        .bind(second)
        .execute(&mut w.owner().await)
        .await
        .unwrap();
    w.manual_sync(id, json!({"sync_mode": "full"})).await;
    w.work(&config).await;
    let body: Value =
        serde_json::from_slice(&w.n8n.received_requests().await.unwrap()[2].body).unwrap();
    assert_eq!(body["sync_mode"], "full");
    assert_eq!(body["since"], Value::Null);
}

#[tokio::test]
async fn manual_trigger_refusals_have_codes() {
    let w = world().await;
    let id = w.integration(SourceType::Jira).await;
    let post = |body: Value, id: String| {
        let client = w.app.client.clone();
        let url = w.app.url(&format!("/api/admin/integrations/{id}/sync"));
        async move {
            let r = client
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_string(),
                body,
            )
        }
    };
    let (status, code, _) = post(json!({}), id.to_string()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "webhook_url_missing")
    );
    let (status, code, _) = post(json!({}), Uuid::new_v4().to_string()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "integration_not_found")
    );
    let (status, code, _) = post(json!({"sync_mode": "sometimes"}), id.to_string()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
    );

    w.configure(id, json!({"webhook_url": w.hook("jira")}))
        .await;
    let first = w.manual_sync(id, json!({})).await;
    let (status, code, body) = post(json!({}), id.to_string()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "sync_in_progress")
    );
    assert_eq!(body["error"]["details"]["sync_log_id"], json!(first));
    let forced = w.manual_sync(id, json!({"force": true})).await;
    assert_ne!(forced, first);

    admin::set_integration_status(
        &w.app.db.pool,
        id,
        syncbridge::domain::IntegrationStatus::Paused,
    )
    .await
    .unwrap();
    let (status, code, _) = post(json!({"force": true}), id.to_string()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "integration_paused")
    );
    let unauthorised = w
        .app
        .client
        .post(w.app.url(&format!("/api/admin/integrations/{id}/sync")))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn n8n_503_then_200_makes_one_triggered_sync() {
    let w = world().await;
    let id = w.integration(SourceType::ZohoCrm).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("n8n is restarting"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&w.n8n)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&w.n8n)
        .await;
    w.configure(id, json!({"webhook_url": w.hook("zoho")}))
        .await;
    let sync_log_id = w.manual_sync(id, json!({})).await;
    w.work(&config()).await;

    assert_eq!(w.n8n.received_requests().await.unwrap().len(), 2);
    let (state, attempt, errors) = w.trigger_job(sync_log_id).await;
    assert_eq!((state.as_str(), attempt), ("completed", 2));
    assert!(
        errors[0]["error"].as_str().unwrap().contains("503"),
        "{errors}"
    );
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM integration_sync_logs WHERE integration_id = '{id}'"
        ))
        .await,
        1
    );
    let log = w.sync_log(sync_log_id).await;
    assert_eq!(log["status"], "pending");
    assert!(log["triggered_at"].is_string());
}

#[tokio::test]
async fn retry_after_from_n8n_sets_the_next_attempt() {
    let w = world().await;
    let id = w.integration(SourceType::Zendesk).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "120"))
        .mount(&w.n8n)
        .await;
    w.configure(id, json!({"webhook_url": w.hook("zendesk")}))
        .await;
    let sync_log_id = w.manual_sync(id, json!({})).await;

    // Run the worker until the first attempt has failed; the retry then waits 120 s, not the
    // 50 ms base backoff of this configuration.
    let config = config();
    let worker = jobs::Worker::new(
        w.app.db.pool.clone(),
        JobContext::new(w.app.db.pool.clone(), &config).unwrap(),
        tasks::registry(&config.worker),
        tasks::worker_config(&config),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.trigger_job(sync_log_id).await.0 != "retryable" {
        assert!(
            Instant::now() < deadline,
            "the job never failed its attempt"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let wait_secs: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM scheduled_at - (errors->-1->>'at')::timestamptz)::float8
         FROM jobs WHERE kind = 'sync.trigger'",
    )
    .fetch_one(&mut w.owner().await)
    .await
    .unwrap();
    assert!(
        (119.0..=121.0).contains(&wait_secs),
        "next attempt in {wait_secs} s"
    );
    assert_eq!(w.n8n.received_requests().await.unwrap().len(), 1);
    assert_eq!(w.sync_log(sync_log_id).await["status"], "pending");
}

#[tokio::test]
async fn n8n_404_kills_the_job_and_fails_the_sync_with_the_answer() {
    let w = world().await;
    let id = w.integration(SourceType::Salesforce).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"code": 404, "message": "The requested webhook \"sf\" is not registered."}),
        ))
        .mount(&w.n8n)
        .await;
    w.configure(id, json!({"webhook_url": w.hook("sf")})).await;
    let sync_log_id = w.manual_sync(id, json!({})).await;
    w.work(&config()).await;

    let (state, attempt, _) = w.trigger_job(sync_log_id).await;
    assert_eq!(
        (state.as_str(), attempt),
        ("failed", 1),
        "a 404 is not retried"
    );
    let log = w.sync_log(sync_log_id).await;
    assert_eq!(log["status"], "failed");
    assert_eq!(log["failure_reason"], "trigger_rejected");
    let summary = log["error_summary"].as_str().unwrap();
    assert!(
        summary.contains("404") && summary.contains("is not registered"),
        "{summary}"
    );
    let (last_status, failed_syncs): (String, i64) = sqlx::query_as(
        "SELECT last_sync_status, failed_syncs FROM integration_sources WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&mut w.owner().await)
    .await
    .unwrap();
    assert_eq!((last_status.as_str(), failed_syncs), ("failed", 1));

    // The operator fixes the workflow and retries the dead job: the same sync is triggered and
    // no longer counts as failed.
    w.n8n.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&w.n8n)
        .await;
    let job_id: i64 = sqlx::query_scalar("SELECT id FROM jobs WHERE kind = 'sync.trigger'")
        .fetch_one(&mut w.owner().await)
        .await
        .unwrap();
    let filter = jobs::JobFilter {
        ids: vec![job_id],
        ..jobs::JobFilter::default()
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
    w.work(&config()).await;
    let log = w.sync_log(sync_log_id).await;
    assert_eq!(log["status"], "pending", "{log}");
    assert_eq!(log["failure_reason"], Value::Null);
    assert!(log["triggered_at"].is_string());
    assert_eq!(w.n8n.received_requests().await.unwrap().len(), 1);
    let failed_syncs = w
        .count(&format!(
            "SELECT failed_syncs FROM integration_sources WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(failed_syncs, 0);
}

#[tokio::test]
async fn a_failed_sync_is_retried_as_a_new_sync_with_its_settings() {
    let w = world().await;
    let id = w.scheduled(SourceType::Hubspot, json!({})).await;
    let failed = w
        .manual_sync(id, json!({"sync_mode": "full", "data_types": ["deals"]}))
        .await;
    sqlx::query("UPDATE integration_sync_logs SET status = 'failed', failure_reason = 'timed_out' WHERE id = $1")
        .bind(failed)
        .execute(&mut w.owner().await)
        .await
        .unwrap();
    let retry = w.manual_sync(id, json!({"retry_of": failed})).await;
    let log = w.sync_log(retry).await;
    assert_eq!(log["trigger"], "retry");
    assert_eq!(log["sync_mode"], "full");
    assert_eq!(log["data_types"], json!(["deals"]));

    // Only closed, unsuccessful syncs of this integration are retried.
    for (retry_of, status, code) in [
        (retry, StatusCode::CONFLICT, "sync_not_retryable"),
        (Uuid::new_v4(), StatusCode::NOT_FOUND, "sync_log_not_found"),
    ] {
        let response = w
            .app
            .client
            .post(w.app.url(&format!("/api/admin/integrations/{id}/sync")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"retry_of": retry_of, "force": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code);
    }
}

#[tokio::test]
async fn a_silent_n8n_times_out_and_exhausted_attempts_fail_the_sync() {
    let w = world().await;
    let id = w.integration(SourceType::Intercom).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&w.n8n)
        .await;
    w.configure(id, json!({"webhook_url": w.hook("intercom")}))
        .await;
    let mut config = config();
    config.n8n.timeout_secs = 1;
    config.n8n.trigger_max_attempts = 2;
    let request = syncbridge::sync::SyncRequest {
        trigger: syncbridge::domain::SyncTrigger::Manual,
        sync_mode: None,
        data_types: None,
        scheduled_for: None,
        retry_of: None,
    };
    let (sync_log_id, _) = syncbridge::sync::request_sync(
        &w.app.db.pool,
        &jobs::Queue::default(),
        None,
        id,
        &request,
        false,
        2,
    )
    .await
    .unwrap();
    // n8n answers after 5 s; the job's errors say each attempt gave up after 1 s.
    w.work(&config).await;

    let (state, attempt, errors) = w.trigger_job(sync_log_id).await;
    assert_eq!((state.as_str(), attempt), ("failed", 2));
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within 1 s"),
        "{errors}"
    );
    let log = w.sync_log(sync_log_id).await;
    assert_eq!(log["status"], "failed");
    assert_eq!(log["failure_reason"], "trigger_failed");
    assert!(
        log["error_summary"]
            .as_str()
            .unwrap()
            .contains("after 2 attempts")
    );
}

#[tokio::test]
async fn deny_listed_urls_are_refused_at_save_and_at_send() {
    let w = world().await;
    let id = w.integration(SourceType::Hubspot).await;
    for (url, code) in [
        (
            "http://169.254.169.254/latest/meta-data/",
            "webhook_url_denied",
        ),
        (
            "http://metadata.google.internal/computeMetadata/v1/",
            "webhook_url_denied",
        ),
        ("http://[::ffff:169.254.169.254]/", "webhook_url_denied"),
        ("file:///etc/passwd", "invalid_webhook_url"),
        ("not a url", "invalid_webhook_url"),
    ] {
        let response = w.patch(id, json!({"webhook_url": url})).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{url}: {body}");
    }
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM integration_sources WHERE id = '{id}' AND n8n_webhook_url IS NOT NULL"
        ))
        .await,
        0
    );

    // Saved while allowed (n8n on this host); a deny list that covers loopback refuses it at send
    // time, after DNS, and n8n never hears of it.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&w.n8n)
        .await;
    let by_name = w.hook("x").replace("127.0.0.1", "localhost");
    w.configure(id, json!({"webhook_url": by_name})).await;
    let sync_log_id = w.manual_sync(id, json!({})).await;
    let mut config = config();
    config.n8n.deny = vec!["127.0.0.0/8".into(), "::1/128".into()];
    w.work(&config).await;
    assert_eq!(w.n8n.received_requests().await.unwrap().len(), 0);
    let (state, _, _) = w.trigger_job(sync_log_id).await;
    assert_eq!(state, "failed");
    let log = w.sync_log(sync_log_id).await;
    assert_eq!(log["status"], "failed");
    assert_eq!(log["failure_reason"], "trigger_rejected");
    assert!(
        log["error_summary"].as_str().unwrap().contains("deny list"),
        "{log}"
    );
}

#[tokio::test]
async fn schedules_are_validated_with_a_message_that_says_what_is_wrong() {
    let w = world().await;
    let id = w.integration(SourceType::Hubspot).await;
    for (body, code, says) in [
        (
            json!({"schedule": "@hourly"}),
            "webhook_url_required",
            "webhook URL",
        ),
        (
            json!({"webhook_url": w.hook("h"), "schedule": "0 9 * * 1-5"}),
            "invalid_schedule",
            "MON-FRI",
        ),
        (
            json!({"webhook_url": w.hook("h"), "schedule": "99 * * * *"}),
            "invalid_schedule",
            "99",
        ),
        (
            json!({"webhook_url": w.hook("h"), "schedule": "* * * * * *"}),
            "invalid_schedule",
            "once a minute",
        ),
        (
            json!({"webhook_url": w.hook("h"), "schedule": "@daily", "timezone": "Europe/Atlantis"}),
            "invalid_timezone",
            "IANA",
        ),
        (
            json!({"webhook_url": w.hook("h"), "credentials": {"kind": "header", "name": "X-Key", "value": ""}}),
            "invalid_credentials",
            "empty",
        ),
        (
            json!({"webhook_url": w.hook("h"), "jitter_secs": 100000}),
            "invalid_jitter",
            "86400",
        ),
        (
            json!({"webhook_url": w.hook("h"), "missed_ticks": "sometimes"}),
            "invalid_body",
            "missed_ticks",
        ),
    ] {
        let response = w.patch(id, body.clone()).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let settings = w
        .configure(
            id,
            json!({"webhook_url": w.hook("h"), "schedule": "30 9 * * MON-FRI", "timezone": "Europe/Berlin",
                   "sync_mode": "full", "data_types": ["contacts"], "missed_ticks": "skip",
                   "on_running": "queue", "jitter_secs": 30}),
        )
        .await;
    assert_eq!(settings["schedule"], "30 9 * * MON-FRI");
    assert_eq!(settings["timezone"], "Europe/Berlin");
    assert_eq!(settings["sync_mode"], "full");
    assert_eq!(settings["missed_ticks"], "skip");
    assert_eq!(settings["on_running"], "queue");
    let next: DateTime<Utc> = settings["next_tick"].as_str().unwrap().parse().unwrap();
    let berlin = next.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(berlin.format("%H:%M").to_string(), "09:30");
    // Removing the schedule keeps the rest.
    let settings = w.configure(id, json!({"schedule": null})).await;
    assert_eq!(settings["schedule"], Value::Null);
    assert_eq!(settings["next_tick"], Value::Null);
    assert_eq!(settings["sync_mode"], "full");
}

fn scheduler_settings() -> SchedulerSettings {
    SchedulerSettings {
        interval: Duration::from_millis(10),
        missed_grace: Duration::from_secs(60),
        // Simulated clocks run ahead of the database's: keep the watchdog out of these tests.
        watchdog_timeout: Duration::from_secs(30 * 24 * 3600),
        trigger_max_attempts: 3,
        queue: jobs::Queue::default(),
    }
}

/// The first whole minute at least a minute after the database's clock: schedules saved now
/// count their ticks from then.
async fn minute_ahead(w: &World) -> DateTime<Utc> {
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut w.owner().await)
        .await
        .unwrap();
    now.duration_trunc(chrono::Duration::minutes(1)).unwrap() + chrono::Duration::minutes(2)
}

async fn ticks(w: &World, id: Uuid) -> Vec<(DateTime<Utc>, String)> {
    sqlx::query_as(
        "SELECT tick_at, outcome FROM integration_schedule_ticks WHERE integration_id = $1 ORDER BY tick_at",
    )
    .bind(id)
    .fetch_all(&mut w.owner().await)
    .await
    .unwrap()
}

/// The ticks a scheduler running from `start` to `end` fires: those before the first round
/// collapse into one (the latest), every later one fires once.
async fn expected_ticks(
    w: &World,
    id: Uuid,
    expression: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let anchor: DateTime<Utc> =
        sqlx::query_scalar("SELECT schedule_changed_at FROM integration_sources WHERE id = $1")
            .bind(id)
            .fetch_one(&mut w.owner().await)
            .await
            .unwrap();
    let schedule = syncbridge::domain::schedule::Schedule::parse(expression, "UTC").unwrap();
    let mut all = Vec::new();
    let mut t = anchor;
    while let Some(next) = schedule.next_tick(t).filter(|n| *n <= end) {
        all.push(next);
        t = next;
    }
    let mut fired: Vec<DateTime<Utc>> = all
        .iter()
        .rfind(|t| **t <= start)
        .copied()
        .into_iter()
        .collect();
    fired.extend(all.into_iter().filter(|t| *t > start));
    fired
}

#[tokio::test]
async fn three_schedulers_over_many_ticks_create_exactly_one_sync_per_tick() {
    let w = world().await;
    let every_minute = w
        .scheduled(
            SourceType::Hubspot,
            json!({"schedule": "every 1m", "on_running": "queue"}),
        )
        .await;
    let every_five = w
        .scheduled(
            SourceType::Jira,
            json!({"schedule": "*/5 * * * *", "on_running": "queue"}),
        )
        .await;
    let start = minute_ahead(&w).await;
    // 30 simulated minutes in 7-second steps, three schedulers interleaved on the same clock.
    let steps: Vec<DateTime<Utc>> = (0..=(30 * 60 / 7))
        .map(|i| start + chrono::Duration::seconds(i * 7))
        .collect();
    let end = *steps.last().unwrap();
    let settings = scheduler_settings();
    let mut instances = Vec::new();
    for offset in 0..3 {
        let (pool, settings, steps) = (w.app.db.pool.clone(), settings.clone(), steps.clone());
        instances.push(tokio::spawn(async move {
            let mut triggered = 0;
            for now in steps {
                let now = now + chrono::Duration::milliseconds(offset * 300);
                triggered += scheduler::run_round(&pool, &settings, now)
                    .await
                    .unwrap()
                    .triggered
                    .len();
            }
            triggered
        }));
    }
    let mut triggered = 0;
    for instance in instances {
        triggered += instance.await.unwrap();
    }

    let minute_ticks = ticks(&w, every_minute).await;
    let minute_expected = expected_ticks(&w, every_minute, "every 1m", start, end).await;
    assert_eq!(
        minute_ticks.iter().map(|t| t.0).collect::<Vec<_>>(),
        minute_expected
    );
    assert_eq!(minute_ticks.len() as i64, (end - start).num_minutes() + 1);
    assert!(
        minute_ticks
            .iter()
            .all(|(_, outcome)| outcome == "triggered")
    );
    let five_ticks = ticks(&w, every_five).await;
    assert_eq!(
        five_ticks.iter().map(|t| t.0).collect::<Vec<_>>(),
        expected_ticks(&w, every_five, "*/5 * * * *", start, end).await
    );
    assert!(five_ticks.len() >= 6, "{five_ticks:?}");
    assert_eq!(triggered, minute_ticks.len() + five_ticks.len());

    // One sync and one trigger job per tick, none twice.
    let logs = w
        .count("SELECT count(*) FROM integration_sync_logs WHERE trigger = 'schedule'")
        .await;
    assert_eq!(logs as usize, triggered);
    let distinct = w
        .count("SELECT count(DISTINCT (integration_id, scheduled_for)) FROM integration_sync_logs")
        .await;
    assert_eq!(distinct as usize, triggered);
    assert_eq!(
        w.count("SELECT count(*) FROM jobs WHERE kind = 'sync.trigger'")
            .await as usize,
        triggered
    );
}

#[tokio::test]
async fn a_scheduler_that_was_down_catches_up_by_policy() {
    let w = world().await;
    let run_latest = w
        .scheduled(
            SourceType::Hubspot,
            json!({"schedule": "@hourly", "missed_ticks": "run_latest"}),
        )
        .await;
    let skip = w
        .scheduled(
            SourceType::Zendesk,
            json!({"schedule": "@hourly", "missed_ticks": "skip"}),
        )
        .await;
    let settings = scheduler_settings();
    let start = minute_ahead(&w).await;
    let next_hour =
        start.duration_trunc(chrono::Duration::hours(1)).unwrap() + chrono::Duration::hours(1);
    // Down for three ticks; back 10 minutes after the third.
    let back = next_hour + chrono::Duration::hours(2) + chrono::Duration::minutes(10);
    let report = scheduler::run_round(&w.app.db.pool, &settings, back)
        .await
        .unwrap();
    assert_eq!(report.triggered.len(), 1);
    assert_eq!(report.skipped_missed, 1);
    let latest = next_hour + chrono::Duration::hours(2);
    assert_eq!(
        ticks(&w, run_latest).await,
        vec![(latest, "triggered".to_string())]
    );
    assert_eq!(
        ticks(&w, skip).await,
        vec![(latest, "skipped_missed".to_string())]
    );
    let log = w.sync_log(report.triggered[0]).await;
    assert_eq!(log["trigger"], "schedule");
    assert_eq!(
        log["scheduled_for"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        latest
    );
    // A second round at the same moment changes nothing.
    let again = scheduler::run_round(&w.app.db.pool, &settings, back)
        .await
        .unwrap();
    assert_eq!(again, scheduler::RoundReport::default());
    // The next tick, on time, runs for both (the caught-up sync was closed meanwhile).
    sqlx::query("UPDATE integration_sync_logs SET status = 'success'")
        .execute(&mut w.owner().await)
        .await
        .unwrap();
    let on_time = latest + chrono::Duration::hours(1) + chrono::Duration::seconds(2);
    let report = scheduler::run_round(&w.app.db.pool, &settings, on_time)
        .await
        .unwrap();
    assert_eq!(report.triggered.len(), 2);
}

#[tokio::test]
async fn paused_integrations_are_never_triggered() {
    let w = world().await;
    let id = w
        .scheduled(
            SourceType::Hubspot,
            json!({"schedule": "every 1m", "on_running": "queue"}),
        )
        .await;
    admin::set_integration_status(
        &w.app.db.pool,
        id,
        syncbridge::domain::IntegrationStatus::Paused,
    )
    .await
    .unwrap();
    let start = minute_ahead(&w).await;
    for minute in 0..5 {
        let now = start + chrono::Duration::minutes(minute) + chrono::Duration::seconds(1);
        scheduler::run_round(&w.app.db.pool, &scheduler_settings(), now)
            .await
            .unwrap();
    }
    assert!(ticks(&w, id).await.is_empty());
    assert_eq!(w.count("SELECT count(*) FROM jobs").await, 0);

    admin::set_integration_status(
        &w.app.db.pool,
        id,
        syncbridge::domain::IntegrationStatus::Active,
    )
    .await
    .unwrap();
    // Resumed: the schedule runs again.
    let after = start + chrono::Duration::minutes(6) + chrono::Duration::seconds(1);
    let report = scheduler::run_round(&w.app.db.pool, &scheduler_settings(), after)
        .await
        .unwrap();
    assert_eq!(report.triggered.len(), 1);
    assert_eq!(ticks(&w, id).await.len(), 1);
}

#[tokio::test]
async fn a_tick_while_a_sync_is_open_is_skipped_and_recorded() {
    let w = world().await;
    let id = w
        .scheduled(SourceType::Jira, json!({"schedule": "every 1m"}))
        .await;
    let settings = scheduler_settings();
    let start = minute_ahead(&w).await;
    let at = |m: i64| start + chrono::Duration::minutes(m) + chrono::Duration::seconds(1);
    let first = scheduler::run_round(&w.app.db.pool, &settings, at(0))
        .await
        .unwrap();
    assert_eq!(first.triggered.len(), 1);
    let second = scheduler::run_round(&w.app.db.pool, &settings, at(1))
        .await
        .unwrap();
    assert_eq!((second.triggered.len(), second.skipped_running), (0, 1));
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM integration_schedule_ticks WHERE outcome = 'skipped_running'",
    )
    .fetch_one(&mut w.owner().await)
    .await
    .unwrap();
    assert!(detail.contains(&first.triggered[0].to_string()), "{detail}");
    sqlx::query("UPDATE integration_sync_logs SET status = 'success'")
        .execute(&mut w.owner().await)
        .await
        .unwrap();
    let third = scheduler::run_round(&w.app.db.pool, &settings, at(2))
        .await
        .unwrap();
    assert_eq!(third.triggered.len(), 1);
    let outcomes: Vec<String> = ticks(&w, id).await.into_iter().map(|t| t.1).collect();
    assert_eq!(outcomes, ["triggered", "skipped_running", "triggered"]);
}

#[tokio::test]
async fn jitter_delays_each_integrations_ticks_by_its_own_offset() {
    let w = world().await;
    let id = w
        .scheduled(
            SourceType::Hubspot,
            json!({"schedule": "every 1m", "jitter_secs": 50, "on_running": "queue"}),
        )
        .await;
    let offset = syncbridge::domain::schedule::jitter(id, 50);
    let offset = chrono::Duration::from_std(offset).unwrap();
    let first = minute_ahead(&w).await;
    let settings = scheduler_settings();
    let report = scheduler::run_round(&w.app.db.pool, &settings, first + offset)
        .await
        .unwrap();
    assert_eq!(report.triggered.len(), 1);
    let next = first + chrono::Duration::minutes(1);
    if offset > chrono::Duration::zero() {
        let early = next + offset - chrono::Duration::milliseconds(500);
        let report = scheduler::run_round(&w.app.db.pool, &settings, early)
            .await
            .unwrap();
        assert!(
            report.triggered.is_empty(),
            "fired before its offset of {offset}"
        );
    }
    let report = scheduler::run_round(&w.app.db.pool, &settings, next + offset)
        .await
        .unwrap();
    assert_eq!(report.triggered.len(), 1);
    let fired: Vec<DateTime<Utc>> = ticks(&w, id).await.into_iter().map(|t| t.0).collect();
    assert_eq!(fired, vec![first, next]);
}

#[tokio::test]
async fn changing_a_schedule_takes_effect_at_the_next_tick() {
    let w = world().await;
    let id = w
        .scheduled(
            SourceType::Hubspot,
            json!({"schedule": "@daily", "on_running": "queue"}),
        )
        .await;
    let settings = scheduler_settings();
    let start = minute_ahead(&w).await;
    let report = scheduler::run_round(
        &w.app.db.pool,
        &settings,
        start + chrono::Duration::seconds(1),
    )
    .await
    .unwrap();
    assert!(
        report.triggered.is_empty(),
        "a daily schedule has no tick in the next minutes"
    );
    w.configure(id, json!({"schedule": "every 1m"})).await;
    let report = scheduler::run_round(
        &w.app.db.pool,
        &settings,
        start + chrono::Duration::seconds(1),
    )
    .await
    .unwrap();
    assert_eq!(report.triggered.len(), 1);
}

#[tokio::test]
async fn the_watchdog_closes_a_silent_sync_and_late_batches_are_still_processed() {
    let w = world().await;
    let id = w.integration(SourceType::Hubspot).await;
    let key = admin::create_api_key(&w.app.db.pool, id, None)
        .await
        .unwrap();
    w.configure(id, json!({"webhook_url": w.hook("x")})).await;
    let sync_log_id = w.manual_sync(id, json!({})).await;
    let records = crate::helpers::sample("hubspot_contacts")["records"].clone();
    let half = records.as_array().unwrap().len() / 2;
    let deliver = |records: Value, last: bool| {
        let client = w.app.client.clone();
        let url = w.app.url("/api/webhooks/n8n");
        let key = key.key.plaintext.clone();
        async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"integration_id": id, "sync_log_id": sync_log_id,
                              "source_type": "hubspot", "data_type": "contacts",
                              "records": records, "final": last}))
                .send()
                .await
                .unwrap()
        }
    };
    let first = deliver(json!(records.as_array().unwrap()[..half]), false).await;
    assert_eq!(
        first.status(),
        StatusCode::ACCEPTED,
        "{:?}",
        first.text().await
    );

    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut w.owner().await)
        .await
        .unwrap();
    let timeout = Duration::from_secs(7200);
    // Not yet silent for two hours: left open.
    assert_eq!(
        scheduler::watchdog(
            &w.app.db.pool,
            timeout,
            now + chrono::Duration::minutes(119)
        )
        .await
        .unwrap(),
        0
    );
    let later = now + chrono::Duration::minutes(121);
    assert_eq!(
        scheduler::watchdog(&w.app.db.pool, timeout, later)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        scheduler::watchdog(&w.app.db.pool, timeout, later)
            .await
            .unwrap(),
        0
    );
    let log = w.sync_log(sync_log_id).await;
    assert_eq!(log["status"], "failed");
    assert_eq!(log["failure_reason"], "timed_out");
    assert!(log["error_summary"].as_str().unwrap().contains("7200 s"));

    // n8n wakes up: the rest arrives late, is stored, processed, and reported.
    let late = deliver(json!(records.as_array().unwrap()[half..]), true).await;
    assert_eq!(
        late.status(),
        StatusCode::ACCEPTED,
        "{:?}",
        late.text().await
    );
    w.work(&config()).await;
    let log = w.sync_log(sync_log_id).await;
    assert_eq!(log["status"], "failed", "a timed-out sync stays failed");
    assert_eq!(log["late_batches"], 1);
    assert_eq!(log["batches_processed"], 2);
    assert_eq!(
        log["records_received"],
        json!(records.as_array().unwrap().len())
    );
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM external_contacts WHERE integration_id = '{id}'"
        ))
        .await as usize,
        records.as_array().unwrap().len()
    );
    let failed_syncs = w
        .count(&format!(
            "SELECT failed_syncs FROM integration_sources WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(failed_syncs, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn credentials_are_sealed_at_rest_and_never_logged_or_returned() {
    let captured = crate::helpers::CapturedLogs::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // A current-thread runtime: every task of this test logs to this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let w = world().await;
    let id = w.integration(SourceType::Hubspot).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&w.n8n)
        .await;
    let secret = "basic-pass-7f3a9c";
    let settings = w
        .configure(
            id,
            json!({"webhook_url": w.hook("x"),
                   "credentials": {"kind": "basic", "username": "syncbridge", "password": secret}}),
        )
        .await;
    assert_eq!(settings["auth"], "basic");
    let got = w.settings(id).await;
    assert!(!got.to_string().contains(secret) && !got.to_string().contains("syncbridge:"));

    let (sealed, key_id): (Vec<u8>, String) = sqlx::query_as(
        "SELECT credentials_encrypted, credentials_key_id FROM integration_sources WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&mut w.owner().await)
    .await
    .unwrap();
    assert!(
        !sealed
            .windows(secret.len())
            .any(|win| win == secret.as_bytes())
    );
    assert!(!String::from_utf8_lossy(&sealed).contains("syncbridge"));
    assert_eq!(key_id.len(), 8);

    w.manual_sync(id, json!({})).await;
    w.work(&config()).await;
    let requests = w.n8n.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("syncbridge:{secret}"))
    );
    assert_eq!(
        requests[0].headers["authorization"],
        expected.as_str(),
        "n8n got the credentials"
    );

    let logs = captured.text();
    assert!(
        logs.contains("n8n accepted the sync trigger"),
        "the capture saw the trigger"
    );
    assert!(!logs.contains(secret), "the secret was logged");
    let encoded = expected.trim_start_matches("Basic ");
    assert!(
        !logs.contains(encoded),
        "the encoded credentials were logged"
    );
    assert!(!logs.contains(TEST_KEY), "the encryption key was logged");
}

#[tokio::test]
async fn concurrent_settings_changes_of_one_integration_both_stay() {
    let w = world().await;
    let id = w.integration(SourceType::Hubspot).await;
    w.configure(id, json!({"webhook_url": w.hook("hubspot")}))
        .await;
    for round in 0..20 {
        w.configure(id, json!({"timezone": "UTC", "schedule": null}))
            .await;
        // Each PATCH changes a field the other one leaves as it found it.
        let (a, b) = tokio::join!(
            w.patch(id, json!({"timezone": "Europe/Berlin"})),
            w.patch(id, json!({"schedule": "@hourly"})),
        );
        assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
        let settings = w.settings(id).await;
        assert_eq!(
            (&settings["timezone"], &settings["schedule"]),
            (&json!("Europe/Berlin"), &json!("@hourly")),
            "round {round}: one change undid the other"
        );
    }
}
