//! Liveness and readiness as a load balancer sees them.

use reqwest::StatusCode;
use serde_json::Value;
use syncbridge::db;
use uuid::Uuid;

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

    db::migrate(&app.db.owner_options, &jobs::Queue::default())
        .await
        .unwrap();
    // The pool's first connections failed (no role yet); new ones succeed after migrating.
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// `/readyz` against a pool that would wait `acquire_timeout` (here 60 s) for a connection:
/// the probe must answer 503 on its own budget, before a load balancer's probe timeout (here the
/// client's 5 s) gives up on it.
async fn assert_probe_refuses_quickly(options: sqlx::postgres::PgConnectOptions) {
    let db = TestDb::migrated().await;
    let mut config = database_config();
    config.acquire_timeout_secs = 60;
    let pool = db::connect(options, &config);
    let app = TestApp::spawn_with_pool(db, Some(pool)).await;
    let res = app
        .client
        .get(app.url("/readyz"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .expect("/readyz answers before a probe's timeout");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "database_unavailable");
}

#[tokio::test]
async fn readyz_is_unavailable_at_once_when_the_database_refuses_connections() {
    assert_probe_refuses_quickly(unreachable_options()).await;
}

#[tokio::test]
async fn readyz_is_unavailable_at_once_when_the_database_hangs() {
    // A peer that accepts connections and never says a word, as a database host does whose
    // PostgreSQL is frozen or whose packets are dropped after the handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let options = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("postgres")
        .database("nothing")
        .ssl_mode(sqlx::postgres::PgSslMode::Disable);
    assert_probe_refuses_quickly(options).await;
    held.abort();
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

/// Sends `head` and then `body_part` of a larger body on a raw connection, and reads the answer
/// (which must come without the rest of the body).
async fn partial_request(app: &TestApp, head: &str, body_part: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body_part.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The server answers and closes (it cannot read the rest of a body it abandoned); a
    // deadline turns a hang into a failure.
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if n == 0 {
                break;
            }
            if let Some((headers, body)) = text.split_once("\r\n\r\n") {
                let length = headers.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                });
                if length.is_some_and(|l| body.len() >= l) {
                    break;
                }
            }
        }
    })
    .await
    .expect("an answer within 30 s");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap();
    let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A request that outlasts `http.request_timeout_secs` (here a body that stops half-way) is
/// abandoned with 408 in the JSON error shape; a body over the admin API's limit is 413.
#[tokio::test]
async fn timeouts_and_body_limits_answer_in_the_error_shape() {
    let app = TestApp::spawn_configured(TestDb::migrated().await, None, |config| {
        config.http.request_timeout_secs = 1;
    })
    .await;
    let id = Uuid::new_v4();
    let head = format!(
        "PATCH /api/admin/integrations/{id} HTTP/1.1\r\nHost: test\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n",
        ADMIN_TOKEN
    );
    let (status, body) = partial_request(&app, &head, "{\"schedule\": ").await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"]["code"], "request_timeout");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request_timeout_secs")
    );

    let big = format!("{{\"records\": [\"{}\"]}}", "x".repeat(3 * 1024 * 1024));
    let res = app
        .client
        .post(app.url(&format!(
            "/api/admin/integrations/{id}/mappings/contacts/preview"
        )))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(body["error"]["details"]["limit_bytes"], 2 * 1024 * 1024);
}

#[tokio::test]
async fn migrating_twice_changes_nothing() {
    let db = TestDb::migrated().await;
    let before = schema(&db).await;
    assert!(before.contains("integration_cursors.cursor_at"), "{before}");
    db::migrate(&db.owner_options, &jobs::Queue::default())
        .await
        .unwrap();
    assert_eq!(schema(&db).await, before);
    assert_eq!(
        db::readiness(&db.pool, &jobs::Queue::default()).await,
        db::Readiness::Ready
    );
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

/// Path parameters that do not parse are refused in the error shape, never as axum's text.
#[tokio::test]
async fn malformed_path_parameters_get_a_json_error() {
    let app = TestApp::spawn().await;
    for (path, admin, code) in [
        ("/api/batches/not-a-uuid", false, "invalid_batch_id"),
        ("/api/batches/%FF", false, "invalid_path"),
        (
            "/api/admin/integrations/not-a-uuid",
            true,
            "invalid_integration_id",
        ),
        ("/api/admin/integrations/%FF%FE", true, "invalid_path"),
        (
            "/api/admin/integrations/00000000-0000-0000-0000-000000000000/mappings/leads/preview",
            true,
            "invalid_data_type",
        ),
    ] {
        let mut request = if path.ends_with("preview") {
            app.client.post(app.url(path)).json(&serde_json::json!([]))
        } else {
            app.client.get(app.url(path))
        };
        if admin {
            request = request.bearer_auth(ADMIN_TOKEN);
        }
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
}
