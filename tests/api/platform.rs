//! The platform API (`/api/v1`) through HTTP: who may call (tenant tokens, read-only tokens, the
//! admin token naming a tenant), what each tenant sees (its own integrations, keys and tokens,
//! another tenant's ids being 404), and keys and tokens made, listed and revoked.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use syncbridge::admin::{self, tokens};
use uuid::Uuid;

use crate::helpers::{self, ADMIN_TOKEN, HubspotIntegration, TestApp, code, get, test_config};

/// A request to the platform API with `token`, and the answer's status and JSON body.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    tenant_header: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(tenant) = tenant_header {
        request = request.header("Syncbridge-Tenant", tenant);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

struct Tenant {
    hubspot: HubspotIntegration,
    token: String,
    token_id: Uuid,
}

async fn tenant(app: &TestApp, name: &str) -> Tenant {
    let hubspot = helpers::hubspot_integration(&app.db.pool, name).await;
    let created = tokens::create(&app.db.pool, hubspot.tenant_id, Some("backend"), false)
        .await
        .unwrap();
    Tenant {
        hubspot,
        token: created.token.plaintext,
        token_id: created.info.id,
    }
}

#[tokio::test]
async fn a_tenant_token_sees_its_tenant_and_every_foreign_id_is_not_found() {
    let app = TestApp::spawn().await;
    let (a, b) = (tenant(&app, "Alpha").await, tenant(&app, "Beta").await);

    let (status, body) = get(&app, "/api/v1/integrations", &a.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = body["data"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{body}");
    let one = &listed[0];
    assert_eq!(one["id"], json!(a.hubspot.integration_id));
    assert_eq!(
        (&one["name"], &one["source_type"], &one["status"]),
        (&json!("HubSpot"), &json!("hubspot"), &json!("active"))
    );
    assert_eq!(
        (&one["total_syncs"], &one["contacts"]),
        (&json!(0), &json!(0))
    );
    assert_eq!(
        (&one["last_sync_at"], &one["next_tick"]),
        (&Value::Null, &Value::Null)
    );

    let (_, body) = get(&app, "/api/v1/integrations", &b.token).await;
    assert_eq!(body["data"][0]["id"], json!(b.hubspot.integration_id));
    assert_eq!(body["data"].as_array().unwrap().len(), 1);

    // Every route, with A's token and B's ids: not found, as if they did not exist.
    let b_key = admin::tenant_api::create_key(
        &app.db.pool,
        b.hubspot.tenant_id,
        b.hubspot.integration_id,
        None,
    )
    .await
    .unwrap()
    .unwrap();
    let bi = b.hubspot.integration_id;
    for (method, path, body, expected) in [
        (
            Method::GET,
            format!("/api/v1/integrations/{bi}"),
            None,
            "integration_not_found",
        ),
        (
            Method::GET,
            format!("/api/v1/integrations/{bi}/keys"),
            None,
            "integration_not_found",
        ),
        (
            Method::POST,
            format!("/api/v1/integrations/{bi}/keys"),
            Some(json!({})),
            "integration_not_found",
        ),
        (
            Method::DELETE,
            format!("/api/v1/integrations/{bi}/keys/{}", b_key.info.id),
            None,
            "api_key_not_found",
        ),
        (
            Method::DELETE,
            format!("/api/v1/tokens/{}", b.token_id),
            None,
            "token_not_found",
        ),
    ] {
        let (status, answer) = call(&app, method.clone(), &path, Some(&a.token), None, body).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::NOT_FOUND, expected),
            "{method} {path}"
        );
    }
    // B's key and token were not touched.
    let (status, _) = get(&app, "/api/v1/tokens", &b.token).await;
    assert_eq!(status, StatusCode::OK);
    let keys = admin::tenant_api::keys(&app.db.pool, b.hubspot.tenant_id, bi)
        .await
        .unwrap()
        .unwrap();
    assert!(keys.iter().all(|k| k.revoked_at.is_none()));

    // Malformed ids are 400 naming the parameter.
    let (status, body) = get(&app, "/api/v1/integrations/nope", &a.token).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_integration_id")
    );
    let path = format!(
        "/api/v1/integrations/{}/keys/nope",
        a.hubspot.integration_id
    );
    let (status, body) = call(&app, Method::DELETE, &path, Some(&a.token), None, None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    assert_eq!(body["error"]["details"]["parameter"], "key_id");
}

#[tokio::test]
async fn who_may_call_and_what_a_refusal_says() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "Alpha").await;
    let reader = tokens::create(&app.db.pool, a.hubspot.tenant_id, None, true)
        .await
        .unwrap();
    let revoked = tokens::create(&app.db.pool, a.hubspot.tenant_id, None, false)
        .await
        .unwrap();
    tokens::revoke(&app.db.pool, a.hubspot.tenant_id, revoked.info.id)
        .await
        .unwrap();
    let list = "/api/v1/integrations";

    for (token, expected) in [
        (None, "missing_token"),
        (Some("not-a-token"), "invalid_token"),
        (Some(a.hubspot.key.as_str()), "invalid_token"),
        (Some(revoked.token.plaintext.as_str()), "token_revoked"),
    ] {
        let (status, body) = call(&app, Method::GET, list, token, None, None).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNAUTHORIZED, expected),
            "{token:?}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    // A read-only token reads, and changes nothing.
    let (status, _) = get(&app, list, &reader.token.plaintext).await;
    assert_eq!(status, StatusCode::OK);
    let writes = [
        (Method::POST, "/api/v1/tokens".to_string()),
        (Method::DELETE, format!("/api/v1/tokens/{}", a.token_id)),
        (
            Method::POST,
            format!("/api/v1/integrations/{}/keys", a.hubspot.integration_id),
        ),
    ];
    for (method, path) in &writes {
        let (status, body) = call(
            &app,
            method.clone(),
            path,
            Some(&reader.token.plaintext),
            None,
            Some(json!({})),
        )
        .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "read_only_token"),
            "{method} {path}"
        );
    }
    let (_, body) = get(&app, "/api/v1/tokens", &a.token).await;
    assert_eq!(
        body["data"].as_array().unwrap().len(),
        3,
        "nothing was created or revoked"
    );

    // The admin token acts for the tenant it names.
    let tenant_id = a.hubspot.tenant_id.to_string();
    for (header, status, expected) in [
        (None, StatusCode::BAD_REQUEST, "tenant_required"),
        (Some("acme"), StatusCode::BAD_REQUEST, "invalid_tenant_id"),
        (
            Some(&*Uuid::new_v4().to_string()),
            StatusCode::NOT_FOUND,
            "tenant_not_found",
        ),
    ] {
        let (got, body) = call(&app, Method::GET, list, Some(ADMIN_TOKEN), header, None).await;
        assert_eq!((got, code(&body)), (status, expected), "{header:?}");
    }
    let (status, body) = call(
        &app,
        Method::GET,
        list,
        Some(ADMIN_TOKEN),
        Some(&tenant_id),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0]["id"], json!(a.hubspot.integration_id));
}

#[tokio::test]
async fn keys_and_tokens_are_shown_once_listed_and_revoked() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "Alpha").await;
    let keys = format!("/api/v1/integrations/{}/keys", a.hubspot.integration_id);

    let (status, created) = call(
        &app,
        Method::POST,
        &keys,
        Some(&a.token),
        None,
        Some(json!({"name": "n8n prod"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["name"], "n8n prod");

    // The key delivers, and its use shows in the list (which never shows a secret).
    let mut body = helpers::sample("hubspot_contacts");
    body["integration_id"] = json!(a.hubspot.integration_id);
    body.as_object_mut().unwrap().remove("sync_log_id");
    body.as_object_mut().unwrap().remove("api_key");
    let deliver = |key: String, body: Value| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/api/webhooks/n8n"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        deliver(key.clone(), body.clone()).await,
        StatusCode::ACCEPTED
    );
    let (_, listed) = get(&app, &keys, &a.token).await;
    let listed = listed["data"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "the fixture's key and the new one");
    assert_eq!(listed[0]["id"], created["id"], "newest first");
    assert!(listed[0]["last_used_at"].is_string());
    assert!(
        !serde_json::to_string(&listed)
            .unwrap()
            .contains(key.rsplit('_').next().unwrap())
    );
    assert!(listed.iter().all(|k| k.get("key").is_none()));

    // Revoked: deliveries with it are refused at once; revoking again changes nothing.
    let one = format!("{keys}/{}", created["id"].as_str().unwrap());
    let (status, revoked) = call(&app, Method::DELETE, &one, Some(&a.token), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(deliver(key, body).await, StatusCode::UNAUTHORIZED);
    let (_, again) = call(&app, Method::DELETE, &one, Some(&a.token), None, None).await;
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);

    // Tokens: made over the API (shown once), usable, and revoked by a token of the tenant.
    let (status, made) = call(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(&a.token),
        None,
        Some(json!({"name": "reports", "read_only": true})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let token = made["token"].as_str().unwrap().to_string();
    assert_eq!(made["read_only"], true);
    let (status, _) = get(&app, "/api/v1/integrations", &token).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(&a.token),
        None,
        Some(json!({"scope": "all"})),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
    );
    let path = format!("/api/v1/tokens/{}", made["id"].as_str().unwrap());
    let (status, _) = call(&app, Method::DELETE, &path, Some(&a.token), None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get(&app, "/api/v1/integrations", &token).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "token_revoked")
    );
}

/// The summary counts what the integration did: its syncs, its last sync and its live records,
/// and shows when its schedule fires next.
#[tokio::test]
async fn an_integration_summary_shows_its_syncs_records_and_next_tick() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "Alpha").await;
    let mut body = helpers::sample("hubspot_contacts");
    body["integration_id"] = json!(a.hubspot.integration_id);
    body["final"] = json!(true);
    body.as_object_mut().unwrap().remove("sync_log_id");
    body.as_object_mut().unwrap().remove("api_key");
    let records = body["records"].as_array().unwrap().len();
    let response = app
        .client
        .post(app.url("/api/webhooks/n8n"))
        .bearer_auth(&a.hubspot.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let sync_log_id = response.json::<Value>().await.unwrap()["sync_log_id"].clone();
    let mut config = test_config();
    config.worker.poll_interval_ms = 20;
    helpers::work_until_done(
        &app.db,
        &config,
        "SELECT count(*) FROM jobs WHERE state IN ('available', 'scheduled', 'running', 'retryable')",
    )
    .await;
    let n8n = wiremock::MockServer::start().await;
    let response = app
        .client
        .patch(app.url(&format!("/api/admin/integrations/{}", a.hubspot.integration_id)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"webhook_url": format!("{}/webhook/hubspot", n8n.uri()), "schedule": "0 3 * * *"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );

    let path = format!("/api/v1/integrations/{}", a.hubspot.integration_id);
    let (status, one) = get(&app, &path, &a.token).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(
        (&one["total_syncs"], &one["failed_syncs"]),
        (&json!(1), &json!(0))
    );
    assert_eq!(one["last_sync_status"], "success");
    assert_eq!(one["last_sync_log_id"], sync_log_id);
    assert_eq!(
        (&one["contacts"], &one["deals"]),
        (&json!(records), &json!(0))
    );
    assert_eq!(one["webhook_url_set"], true);
    assert_eq!(one["schedule"], "0 3 * * *");
    let next: chrono::DateTime<chrono::Utc> = one["next_tick"].as_str().unwrap().parse().unwrap();
    assert!(next > chrono::Utc::now());
    assert_eq!(
        next.format("%H:%M").to_string(),
        "03:00",
        "UTC is the default time zone"
    );
}

#[tokio::test]
async fn integrations_are_created_changed_paused_and_deleted_with_what_they_hold() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "Alpha").await;
    let b = tenant(&app, "Beta").await;
    let (status, made) = call(
        &app,
        Method::POST,
        "/api/v1/integrations",
        Some(&a.token),
        None,
        Some(json!({"source_type": "zendesk", "name": " Zendesk EU ", "description": "support"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(
        (&made["name"], &made["source_type"], &made["status"]),
        (&json!("Zendesk EU"), &json!("zendesk"), &json!("active"))
    );
    for (body, status, expected) in [
        (
            json!({"source_type": "zendesk", "name": "zendesk eu"}),
            StatusCode::CONFLICT,
            "integration_name_taken",
        ),
        (
            json!({"source_type": "notion", "name": "N"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"source_type": "jira", "name": "  "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"name": "No type"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"source_type": "jira", "name": "J", "colour": "blue"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        // A refused setting leaves no integration behind.
        (
            json!({"source_type": "jira", "name": "J", "webhook_url": "https://n8n.example/x",
                   "schedule": "every tuesday"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_schedule",
        ),
        (
            json!({"source_type": "jira", "name": "J", "schedule": "@hourly"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "webhook_url_required",
        ),
        (
            json!({"source_type": "jira", "name": "J",
                   "credentials": {"kind": "header", "name": "X-Key", "value": "s3cret"}}),
            StatusCode::CONFLICT,
            "encryption_key_missing",
        ),
    ] {
        let (got, err) = call(
            &app,
            Method::POST,
            "/api/v1/integrations",
            Some(&a.token),
            None,
            Some(body.clone()),
        )
        .await;
        assert_eq!((got, code(&err)), (status, expected), "{body}");
    }
    let (_, listed) = get(&app, "/api/v1/integrations", &a.token).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");

    // Created with its settings in one step: scheduled at once.
    let (status, scheduled) = call(
        &app,
        Method::POST,
        "/api/v1/integrations",
        Some(&a.token),
        None,
        Some(
            json!({"source_type": "jira", "name": "Jira", "sync_mode": "full",
                    "webhook_url": "https://n8n.example.com/webhook/jira",
                    "schedule": "@daily", "timezone": "Europe/Berlin"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{scheduled}");
    assert_eq!(
        (
            &scheduled["webhook_url_set"],
            &scheduled["schedule"],
            &scheduled["timezone"]
        ),
        (&json!(true), &json!("@daily"), &json!("Europe/Berlin"))
    );
    assert!(scheduled["next_tick"].is_string(), "{scheduled}");

    // Changed: name, description and sync settings in one PATCH; what is not given stays.
    let n8n = wiremock::MockServer::start().await;
    let path = format!("/api/v1/integrations/{}", a.hubspot.integration_id);
    let (status, changed) = call(
        &app,
        Method::PATCH,
        &path,
        Some(&a.token),
        None,
        Some(json!({
        "name": "HubSpot EU", "description": "contacts and deals",
        "webhook_url": format!("{}/webhook/hubspot", n8n.uri()), "schedule": "@hourly"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        (&changed["name"], &changed["description"]),
        (&json!("HubSpot EU"), &json!("contacts and deals"))
    );
    assert_eq!(
        (&changed["schedule"], &changed["webhook_url_set"]),
        (&json!("@hourly"), &json!(true))
    );
    assert!(changed["next_tick"].is_string());
    let (_, kept) = call(
        &app,
        Method::PATCH,
        &path,
        Some(&a.token),
        None,
        Some(json!({"description": null})),
    )
    .await;
    assert_eq!(
        (&kept["name"], &kept["description"], &kept["schedule"]),
        (&json!("HubSpot EU"), &Value::Null, &json!("@hourly"))
    );
    for (body, expected) in [
        (json!({"colour": "red"}), "invalid_body"),
        (json!({"name": null}), "invalid_field"),
        (json!({"schedule": "61 * * * *"}), "invalid_schedule"),
    ] {
        let (status, err) = call(
            &app,
            Method::PATCH,
            &path,
            Some(&a.token),
            None,
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::UNPROCESSABLE_ENTITY, expected),
            "{body}"
        );
    }
    let (status, err) = call(
        &app,
        Method::PATCH,
        &path,
        Some(&a.token),
        None,
        Some(json!({"name": "Zendesk EU"})),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "integration_name_taken")
    );

    // Paused: deliveries are refused until it is resumed.
    let deliver = || async {
        app.client
            .post(app.url("/api/webhooks/n8n"))
            .bearer_auth(&a.hubspot.key)
            .json(
                &json!({"integration_id": a.hubspot.integration_id, "data_type": "contacts",
                          "source_type": "hubspot", "final": true,
                          "records": [{"id": "c1", "properties": {"email": "c1@northwind.io"}}]}),
            )
            .send()
            .await
            .unwrap()
            .status()
    };
    let (_, paused) = call(
        &app,
        Method::POST,
        &format!("{path}/pause"),
        Some(&a.token),
        None,
        None,
    )
    .await;
    assert_eq!(paused["status"], "paused");
    assert_eq!(deliver().await, StatusCode::CONFLICT);
    let (_, resumed) = call(
        &app,
        Method::POST,
        &format!("{path}/resume"),
        Some(&a.token),
        None,
        None,
    )
    .await;
    assert_eq!(resumed["status"], "active");
    assert_eq!(deliver().await, StatusCode::ACCEPTED);
    let mut config = test_config();
    config.worker.poll_interval_ms = 20;
    helpers::work_until_done(&app.db, &config,
        "SELECT count(*) FROM jobs WHERE queue = 'ingest' AND state IN ('available', 'scheduled', 'running', 'retryable')").await;

    // Deleted, with what it held; another tenant cannot.
    for method in [Method::DELETE, Method::PATCH] {
        let (status, err) = call(&app, method, &path, Some(&b.token), None, Some(json!({}))).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::NOT_FOUND, "integration_not_found")
        );
    }
    let (status, removed) = call(&app, Method::DELETE, &path, Some(&a.token), None, None).await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(
        removed,
        json!({"contacts": 1, "tickets": 0, "deals": 0, "syncs": 1, "batches": 1, "api_keys": 1})
    );
    let (status, err) = call(&app, Method::GET, &path, Some(&a.token), None, None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "integration_not_found")
    );
    assert_eq!(
        deliver().await,
        StatusCode::UNAUTHORIZED,
        "its keys went with it"
    );
    let (_, records) = call(
        &app,
        Method::GET,
        "/api/v1/records/contacts",
        Some(&a.token),
        None,
        None,
    )
    .await;
    assert_eq!(records["data"], json!([]));
    let (_, syncs) = call(
        &app,
        Method::GET,
        "/api/v1/syncs",
        Some(&a.token),
        None,
        None,
    )
    .await;
    assert_eq!(syncs["data"], json!([]));
}

/// A manual sync over the API: started at once (202, still open), refused while one is open, and
/// with `wait_secs` answered when it closes.
#[tokio::test]
async fn a_sync_started_over_the_api_can_be_waited_for() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "Alpha").await;
    let (n8n, mut triggers) = helpers::n8n_passing_on_triggers().await;
    let path = format!("/api/v1/integrations/{}", a.hubspot.integration_id);
    let (status, _) = call(
        &app,
        Method::PATCH,
        &path,
        Some(&a.token),
        None,
        Some(json!({"webhook_url": format!("{}/webhook/hubspot", n8n.uri())})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let sync = format!("{path}/sync");

    let (status, started) = call(&app, Method::POST, &sync, Some(&a.token), None, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(
        (&started["closed"], &started["sync"]["status"]),
        (&json!(false), &json!("pending"))
    );
    assert_eq!(started["sync"]["trigger"], "manual");
    let (status, refused) = call(&app, Method::POST, &sync, Some(&a.token), None, None).await;
    assert_eq!(
        (status, code(&refused)),
        (StatusCode::CONFLICT, "sync_in_progress")
    );
    assert_eq!(
        refused["error"]["details"]["sync_log_id"],
        started["sync_log_id"]
    );
    let (status, err) = call(
        &app,
        Method::POST,
        &sync,
        Some(&a.token),
        None,
        Some(json!({"wait_secs": 60})),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field")
    );

    // Waited for: once n8n is asked to start the sync, it delivers its final batch while the
    // request waits.
    let mut config = test_config();
    config.worker.poll_interval_ms = 20;
    let jobs = helpers::RunningJobs::start(&app.db, &config);
    let waiting = call(
        &app,
        Method::POST,
        &sync,
        Some(&a.token),
        None,
        Some(json!({"force": true, "wait_secs": 20, "data_types": ["contacts"]})),
    );
    let deliver = async {
        let first = started["sync_log_id"].as_str().unwrap();
        let sync_log_id = loop {
            let id = helpers::next_trigger(&mut triggers).await;
            if id != first {
                break id;
            }
        };
        let contact = json!({"id": "c1", "properties": {"email": "c1@northwind.io"}});
        helpers::deliver_for_sync(&app, &a.hubspot, &sync_log_id, vec![contact]).await;
        sync_log_id
    };
    let ((status, answer), sync_log_id) = tokio::join!(waiting, deliver);
    jobs.stop().await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["sync_log_id"], json!(sync_log_id));
    assert_eq!(
        (&answer["closed"], &answer["sync"]["status"]),
        (&json!(true), &json!("success"))
    );
    assert_eq!(answer["sync"]["records_created"], 1);
}

/// An integration's mapping over the API: the preset with its overrides, one target overridden
/// (validated) and returned to the preset.
#[tokio::test]
async fn the_effective_mapping_shows_preset_and_overrides_and_a_target_returns_to_the_preset() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "Alpha").await;
    let b = tenant(&app, "Beta").await;
    let base = format!(
        "/api/v1/integrations/{}/mappings/contacts",
        a.hubspot.integration_id
    );
    let email = |m: &Value| {
        m["effective"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["target"] == "email")
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (status, preset) = call(&app, Method::GET, &base, Some(&a.token), None, None).await;
    assert_eq!(status, StatusCode::OK, "{preset}");
    assert_eq!(email(&preset)["origin"], "preset");
    let preset_email = email(&preset)["mapping"].clone();

    let spec = json!({"source": "properties.work_email"});
    let (status, changed) = call(
        &app,
        Method::PUT,
        &format!("{base}/email"),
        Some(&a.token),
        None,
        Some(spec.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        email(&changed),
        json!({"target": "email", "mapping": spec, "origin": "override"})
    );
    let (status, err) = call(
        &app,
        Method::PUT,
        &format!("{base}/email"),
        Some(&a.token),
        None,
        Some(json!({"source": "properties.x", "transform": "lowercase"})),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_mapping")
    );

    // The overrides of every data type, and a dry run with the override: the work email wins.
    let all = format!("/api/v1/integrations/{}/mappings", a.hubspot.integration_id);
    let (status, listed) = get(&app, &all, &a.token).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(
        listed["data"],
        json!([{"data_type": "contacts", "target": "email", "mapping": spec, "enabled": true}])
    );
    let reader = tokens::create(&app.db.pool, a.hubspot.tenant_id, None, true)
        .await
        .unwrap()
        .token
        .plaintext;
    let sample = json!({"records": [{"id": "c1", "properties": {
        "email": "home@example.com", "work_email": "Ada@Northwind.io"}}]});
    let (status, preview) = call(
        &app,
        Method::POST,
        &format!("{base}/preview"),
        Some(&reader),
        None,
        Some(sample.clone()),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a read-only token may preview: {preview}"
    );
    assert_eq!(preview["truncated"], false);
    assert_eq!(
        preview["results"][0]["row"]["email"], "Ada@Northwind.io",
        "{preview}"
    );
    let (status, err) = call(
        &app,
        Method::PUT,
        &format!("{base}/email"),
        Some(&reader),
        None,
        Some(spec.clone()),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::FORBIDDEN, "read_only_token")
    );
    let (status, err) = call(
        &app,
        Method::POST,
        &format!("{base}/preview"),
        Some(&a.token),
        None,
        Some(json!({"records": vec![json!({"id": "x"}); 101]})),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_many_records")
    );

    let (status, back) = call(
        &app,
        Method::DELETE,
        &format!("{base}/email"),
        Some(&a.token),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&email(&back)["origin"], &email(&back)["mapping"]),
        (&json!("preset"), &preset_email)
    );
    let (status, err) = call(
        &app,
        Method::DELETE,
        &format!("{base}/email"),
        Some(&a.token),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "mapping_not_found")
    );

    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, Some(spec.clone())),
        (Method::DELETE, None),
    ] {
        let path = if method == Method::GET {
            base.clone()
        } else {
            format!("{base}/email")
        };
        let (status, err) = call(&app, method.clone(), &path, Some(&b.token), None, body).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::NOT_FOUND, "integration_not_found"),
            "{method}"
        );
    }
    let path = format!(
        "/api/v1/integrations/{}/mappings/leads",
        a.hubspot.integration_id
    );
    let (status, err) = call(&app, Method::GET, &path, Some(&a.token), None, None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "invalid_data_type")
    );
}

/// `PATCH` an integration with `If-Match` (when given): status, `ETag` and body.
async fn patch_if_match(
    app: &TestApp,
    path: &str,
    token: &str,
    if_match: Option<&str>,
    body: Value,
) -> (StatusCode, Option<String>, Value) {
    let mut request = app.client.patch(app.url(path)).bearer_auth(token);
    if let Some(tag) = if_match {
        request = request.header("If-Match", tag);
    }
    let response = request.json(&body).send().await.unwrap();
    let status = response.status();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    (status, etag, response.json().await.unwrap())
}

async fn etag_of(app: &TestApp, path: &str, token: &str) -> String {
    let response = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.headers()["etag"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_settings_write_with_a_stale_etag_is_refused_and_a_sync_does_not_make_it_stale() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "Alpha").await;
    let path = format!("/api/v1/integrations/{}", a.hubspot.integration_id);
    let read = etag_of(&app, &path, &a.token).await;
    let (_, body) = get(&app, &path, &a.token).await;
    assert_eq!(read, format!("\"{}\"", body["version"]));

    let (status, written, body) = patch_if_match(
        &app,
        &path,
        &a.token,
        Some(&read),
        json!({"description": "first", "sync_mode": "full"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let written = written.unwrap();
    assert_ne!(written, read);
    // A second admin who read before the first wrote: refused, and nothing of it is applied.
    let (status, _, body) = patch_if_match(
        &app,
        &path,
        &a.token,
        Some(&read),
        json!({"description": "second", "name": "Renamed"}),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PRECONDITION_FAILED, "version_mismatch")
    );
    assert_eq!(body["error"]["details"]["etag"], json!(written));
    let (_, now) = get(&app, &path, &a.token).await;
    assert_eq!(
        (now["description"].as_str(), now["name"].as_str()),
        (Some("first"), Some("HubSpot"))
    );

    // What syncs and pausing write is not what an edit edits: the version stays.
    helpers::deliver(
        &app,
        &a.hubspot,
        "contacts",
        vec![json!({"id": "c1"})],
        false,
    )
    .await;
    helpers::drain(&app.db).await;
    for action in ["pause", "resume"] {
        let (status, _) = call(
            &app,
            Method::POST,
            &format!("{path}/{action}"),
            Some(&a.token),
            None,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, now) = get(&app, &path, &a.token).await;
    assert_eq!(now["total_syncs"], 1);
    assert_eq!(etag_of(&app, &path, &a.token).await, written);

    // `*`, a list holding the current tag, and no `If-Match` all apply; a weak tag never does.
    for (if_match, expected) in [
        (
            Some(format!("W/{written}")),
            StatusCode::PRECONDITION_FAILED,
        ),
        (Some(format!("\"0\", {written}")), StatusCode::OK),
        (Some("*".to_string()), StatusCode::OK),
        (None, StatusCode::OK),
    ] {
        let (status, _, body) = patch_if_match(
            &app,
            &path,
            &a.token,
            if_match.as_deref(),
            json!({"jitter_secs": 5}),
        )
        .await;
        assert_eq!(status, expected, "{if_match:?}: {body}");
    }
    let (status, _, body) =
        patch_if_match(&app, &path, &a.token, Some("3"), json!({"jitter_secs": 5})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_if_match")
    );

    // Two writes from one read, at once: exactly one applies.
    let read = etag_of(&app, &path, &a.token).await;
    let (first, second) = tokio::join!(
        patch_if_match(
            &app,
            &path,
            &a.token,
            Some(&read),
            json!({"description": "left"})
        ),
        patch_if_match(
            &app,
            &path,
            &a.token,
            Some(&read),
            json!({"description": "right"})
        ),
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::PRECONDITION_FAILED],
        "{first:?} {second:?}"
    );

    // The admin route's settings carry the same version and take the same precondition.
    let admin_path = format!("/api/admin/integrations/{}", a.hubspot.integration_id);
    let current = etag_of(&app, &path, &a.token).await;
    assert_eq!(etag_of(&app, &admin_path, ADMIN_TOKEN).await, current);
    let (status, _, body) = patch_if_match(
        &app,
        &admin_path,
        ADMIN_TOKEN,
        Some(&read),
        json!({"jitter_secs": 9}),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PRECONDITION_FAILED, "version_mismatch")
    );
    let (status, written, _) = patch_if_match(
        &app,
        &admin_path,
        ADMIN_TOKEN,
        Some(&current),
        json!({"jitter_secs": 9}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(written.unwrap(), etag_of(&app, &path, &a.token).await);
}
