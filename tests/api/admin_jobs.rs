//! The queue's admin HTTP API as operators use it (the engine's own tests are in `jobs/tests/`).

use jobs::NewJob;
use serde_json::Value;
use sqlx::PgPool;
use syncbridge::tasks::Ping;

use crate::helpers::{ADMIN_TOKEN, TestApp};

async fn job_state(pool: &PgPool, id: i64) -> String {
    sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn enqueue_one(pool: &PgPool, job: NewJob) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    jobs::Queue::default()
        .enqueue(&mut conn, &job)
        .await
        .unwrap()
}

/// An authorised admin request; returns the JSON answer.
async fn admin(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request = app
        .client
        .request(method, app.url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn admin_http_api_lists_retries_cancels_and_counts_jobs() {
    let app = TestApp::spawn().await;
    let pool = &app.db.pool;
    let dead = enqueue_one(pool, NewJob::new(&Ping::default()).unwrap().tag("tenant:x")).await;
    sqlx::query("UPDATE jobs SET state = 'failed', attempt = 1, max_attempts = 1, finalized_at = now() WHERE id = $1")
        .bind(dead)
        .execute(pool)
        .await
        .unwrap();
    let waiting = enqueue_one(pool, NewJob::new(&Ping::default()).unwrap()).await;

    let client = &app.client;
    let res = client
        .get(app.url("/api/admin/jobs?state=dead"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_admin_token");
    let res = client
        .get(app.url("/api/admin/jobs"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let body = admin(
        &app,
        reqwest::Method::GET,
        "/api/admin/jobs?state=dead",
        None,
    )
    .await;
    let listed: Vec<i64> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [dead]);

    let res = client
        .get(app.url("/api/admin/jobs?state=zombie"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_filter"
    );

    let res = client
        .post(app.url("/api/admin/jobs/retry"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        422,
        "an empty selection must not retry everything"
    );

    let filter = serde_json::json!({"filter": {"states": ["dead"], "tag": "tenant:x"}});
    let body = admin(
        &app,
        reqwest::Method::POST,
        "/api/admin/jobs/retry",
        Some(filter),
    )
    .await;
    assert_eq!(body["retried"], 1);
    assert_eq!(job_state(pool, dead).await, "available");

    let ids = serde_json::json!({ "ids": [waiting] });
    let body = admin(
        &app,
        reqwest::Method::POST,
        "/api/admin/jobs/cancel",
        Some(ids),
    )
    .await;
    assert_eq!(body["cancelled"], 1);
    assert_eq!(job_state(pool, waiting).await, "cancelled");

    let body = admin(&app, reqwest::Method::GET, "/api/admin/jobs/stats", None).await;
    let queues = body["queues"].as_array().unwrap();
    let count_of = |state: &str| {
        queues
            .iter()
            .find(|q| q["state"] == state)
            .map_or(0, |q| q["count"].as_i64().unwrap())
    };
    assert_eq!(count_of("available"), 1);
    assert_eq!(count_of("cancelled"), 1);
    let oldest = queues.iter().find(|q| q["state"] == "available").unwrap();
    assert!(oldest["oldest_available_age_secs"].as_f64().unwrap() >= 0.0);
}
