//! Liveness and readiness as a load balancer sees them.

use reqwest::StatusCode;
use serde_json::Value;
use syncbridge::db;

use crate::helpers::{ADMIN_TOKEN, TestApp, TestDb, database_config, unreachable_options};

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

    // A known route with a method it does not take: 405, the same JSON shape, and `Allow`.
    let res = app
        .client
        .delete(app.url("/api/webhooks/n8n"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "POST");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn migrating_twice_changes_nothing() {
    let db = TestDb::migrated().await;
    let before = schema(&db).await;
    assert!(before.contains("integration_cursors.cursor_at"), "{before}");
    db::migrate(&db.owner_options).await.unwrap();
    assert_eq!(schema(&db).await, before);
    assert_eq!(db::readiness(&db.pool).await, db::Readiness::Ready);
}

/// The schema as the catalog describes it (columns, constraints, indexes, policies, triggers)
/// and the migrations recorded as applied.
async fn schema(db: &TestDb) -> String {
    sqlx::query_scalar(
        "SELECT concat_ws(E'\\n',
             (SELECT string_agg(table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
                                || ' ' || coalesce(column_default, ''), E'\\n' ORDER BY table_name, column_name)
              FROM information_schema.columns WHERE table_schema = 'public'),
             (SELECT string_agg(conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid), E'\\n'
                                ORDER BY conrelid::regclass::text, conname)
              FROM pg_constraint WHERE connamespace = 'public'::regnamespace),
             (SELECT string_agg(indexdef, E'\\n' ORDER BY indexdef) FROM pg_indexes WHERE schemaname = 'public'),
             (SELECT string_agg(tablename || ' ' || policyname, E'\\n' ORDER BY tablename, policyname)
              FROM pg_policies WHERE schemaname = 'public'),
             (SELECT string_agg(tgrelid::regclass || ' ' || tgname, E'\\n' ORDER BY tgrelid::regclass::text, tgname)
              FROM pg_trigger WHERE NOT tgisinternal),
             (SELECT string_agg(version || ' ' || success, E'\\n' ORDER BY version) FROM _sqlx_migrations))",
    )
    .fetch_one(&mut db.owner().await)
    .await
    .unwrap()
}

#[tokio::test]
async fn malformed_admin_input_gets_a_json_error() {
    let app = TestApp::spawn().await;
    let query = app
        .client
        .get(app.url("/api/admin/jobs?limit=many"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), StatusCode::BAD_REQUEST);
    let body: Value = query.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_query", "{body}");
    let retry = app
        .client
        .post(app.url("/api/admin/jobs/retry"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"ids\": [1,")
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = retry.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_body", "{body}");

    // A NUL in a mapping's target or constant can never be stored: refused, not a 500.
    let tenant = syncbridge::admin::create_tenant(&app.db.pool, "Nul Co")
        .await
        .unwrap();
    let integration = syncbridge::admin::create_integration(
        &app.db.pool,
        tenant.id,
        syncbridge::domain::SourceType::Hubspot,
        "HubSpot",
        None,
    )
    .await
    .unwrap();
    for (target, mapping) in [
        (
            "properties.a%00b",
            serde_json::json!({"source": "properties.a"}),
        ),
        (
            "title",
            serde_json::json!({"source": "title", "ops": [{"op": "default", "value": "x\u{0}y"}]}),
        ),
    ] {
        let put = app
            .client
            .put(app.url(&format!(
                "/api/admin/integrations/{}/mappings/contacts/{target}",
                integration.id
            )))
            .bearer_auth(ADMIN_TOKEN)
            .json(&mapping)
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), StatusCode::UNPROCESSABLE_ENTITY, "{target}");
        let body: Value = put.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_mapping", "{body}");
    }
}

#[tokio::test]
async fn admin_routes_answer_503_while_the_database_is_away() {
    let db = TestDb::migrated().await;
    let mut config = database_config();
    config.acquire_timeout_secs = 1;
    let pool = db::connect(unreachable_options(), &config);
    let app = TestApp::spawn_with_pool(db, Some(pool)).await;
    let id = uuid::Uuid::new_v4();
    let requests = [
        app.client.get(app.url("/api/admin/jobs")),
        app.client.get(app.url("/api/admin/jobs/stats")),
        app.client
            .post(app.url("/api/admin/jobs/retry"))
            .json(&serde_json::json!({"ids": [1]})),
        app.client
            .post(app.url(&format!(
                "/api/admin/integrations/{id}/mappings/contacts/preview"
            )))
            .json(&serde_json::json!({"records": [{"id": "1"}]})),
    ];
    for request in requests {
        let res = request.bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        let url = res.url().to_string();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{url}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "database_unavailable", "{url}");
    }
}
