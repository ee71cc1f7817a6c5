//! Liveness and readiness as a load balancer sees them.

use reqwest::StatusCode;
use serde_json::Value;
use syncbridge::db;

use crate::helpers::{TestApp, TestDb, database_config, unreachable_options};

#[tokio::test]
async fn healthz_answers_ok() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn readyz_is_ready_when_every_migration_is_applied() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn readyz_is_unavailable_until_the_database_is_migrated() {
    let app = TestApp::spawn_on(TestDb::empty().await).await;
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "migrations_pending");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("syncbridge migrate")
    );

    db::migrate(&app.db.owner_options).await.unwrap();
    // The pool's first connections failed (no role yet); new ones succeed after migrating.
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn readyz_is_unavailable_when_the_database_cannot_be_reached() {
    let db = TestDb::migrated().await;
    let mut config = database_config();
    config.acquire_timeout_secs = 1;
    let pool = db::connect(unreachable_options(), &config);
    let app = TestApp::spawn_with_pool(db, Some(pool)).await;
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "database_unavailable");
}

#[tokio::test]
async fn unknown_routes_get_a_json_error() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .get(app.url("/no/such/thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/no/such/thing")
    );
}

#[tokio::test]
async fn migrating_twice_changes_nothing() {
    let db = TestDb::migrated().await;
    db::migrate(&db.owner_options).await.unwrap();
    assert_eq!(db::readiness(&db.pool).await, db::Readiness::Ready);
}
