//! The platform API's sync history through HTTP: keyset pages that stay stable while syncs
//! start, filters, one sync with its counts, batches and paged per-record errors, closing an
//! open sync and reprocessing a closed one, and none of it reachable with another tenant's token.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};
use syncbridge::admin::tokens;
use uuid::Uuid;

use crate::helpers::{self, HubspotIntegration, TestApp, get};

struct Tenant {
    hubspot: HubspotIntegration,
    token: String,
}

async fn tenant(app: &TestApp, name: &str) -> Tenant {
    let hubspot = helpers::hubspot_integration(&app.db.pool, name).await;
    let token = tokens::create(&app.db.pool, hubspot.tenant_id, None, false)
        .await
        .unwrap()
        .token
        .plaintext;
    Tenant { hubspot, token }
}

fn contact(n: usize, first_name: &str) -> Value {
    json!({"id": format!("c{n}"), "properties": {
        "email": format!("person{n}@northwind.io"), "firstname": first_name}})
}

/// Delivers `records` as one batch of a new sync (final unless `open`); the sync log id.
async fn deliver(app: &TestApp, t: &Tenant, records: Vec<Value>, open: bool) -> String {
    helpers::deliver(app, &t.hubspot, "contacts", records, open).await["sync_log_id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn work(app: &TestApp) {
    helpers::drain(&app.db).await;
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn sync_pages_stay_stable_while_syncs_start_and_filters_narrow_them() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "Alpha").await;
    let b = tenant(&app, "Beta").await;
    let mut delivered = Vec::new();
    for n in 0..5 {
        delivered.push(deliver(&app, &a, vec![contact(n, "Dana")], false).await);
    }
    deliver(&app, &b, vec![contact(9, "Bo")], false).await;
    work(&app).await;

    // Two per page; a sync that starts between pages does not shift the later pages.
    let (status, first) = get(&app, "/api/v1/syncs?limit=2", &a.token).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let mut seen = ids(&first);
    let newcomer = deliver(&app, &a, vec![contact(7, "Eve")], false).await;
    let mut cursor = first["next_cursor"].as_str().map(String::from);
    while let Some(c) = cursor {
        let (status, page) =
            get(&app, &format!("/api/v1/syncs?limit=2&cursor={c}"), &a.token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(ids(&page));
        cursor = page["next_cursor"].as_str().map(String::from);
    }
    let newest_first: Vec<String> = delivered.iter().rev().cloned().collect();
    assert_eq!(
        seen, newest_first,
        "every sync once, newest first, the newcomer on no later page"
    );
    let (_, fresh) = get(&app, "/api/v1/syncs?limit=1", &a.token).await;
    assert_eq!(ids(&fresh), std::slice::from_ref(&newcomer));

    // Filters.
    let (_, open) = get(&app, "/api/v1/syncs?status=open", &a.token).await;
    assert_eq!(ids(&open), [newcomer]);
    let (_, done) = get(
        &app,
        "/api/v1/syncs?status=success&trigger=webhook",
        &a.token,
    )
    .await;
    assert_eq!(ids(&done).len(), 5);
    let path = format!("/api/v1/syncs?integration_id={}", b.hubspot.integration_id);
    let (_, foreign) = get(&app, &path, &a.token).await;
    assert!(
        ids(&foreign).is_empty(),
        "another tenant's integration shows nothing"
    );
    let (_, later) = get(&app, "/api/v1/syncs?since=2999-01-01T00:00:00Z", &a.token).await;
    assert!(ids(&later).is_empty());
    for (query, code) in [
        ("status=bogus", "invalid_query"),
        ("trigger=cron", "invalid_query"),
        ("limit=0", "invalid_query"),
        ("limit=500", "invalid_query"),
        ("since=yesterday", "invalid_query"),
        ("cursor=not-ours", "invalid_cursor"),
        ("colour=red", "invalid_query"),
    ] {
        let (status, body) = get(&app, &format!("/api/v1/syncs?{query}"), &a.token).await;
        assert_eq!(
            (status, body["error"]["code"].as_str().unwrap()),
            (StatusCode::BAD_REQUEST, code),
            "{query}"
        );
    }
    let (_, theirs) = get(&app, "/api/v1/syncs", &b.token).await;
    assert_eq!(ids(&theirs).len(), 1);
}

#[tokio::test]
async fn a_sync_shows_its_counts_batches_and_errors_and_the_lifecycle_actions_work() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "Alpha").await;
    let b = tenant(&app, "Beta").await;
    let mut records: Vec<Value> = (0..2).map(|n| contact(n, "Dana")).collect();
    records.extend((2..5).map(|n| contact(n, "Da\u{0}na")));
    let partial = deliver(&app, &a, records, false).await;
    work(&app).await;

    let (status, sync) = get(&app, &format!("/api/v1/syncs/{partial}"), &a.token).await;
    assert_eq!(status, StatusCode::OK, "{sync}");
    assert_eq!(sync["status"], "partial");
    assert_eq!(
        [
            &sync["records_received"],
            &sync["records_created"],
            &sync["records_failed"]
        ],
        [&json!(5), &json!(2), &json!(3)]
    );
    assert_eq!(sync["accounted"], true);
    assert!(sync["duration_ms"].is_number() && sync["completed_at"].is_string());
    let batches = sync["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(
        (&batches[0]["state"], &batches[0]["record_count"]),
        (&json!("processed"), &json!(5))
    );
    assert_eq!(batches[0]["jobs_done"], batches[0]["jobs_total"]);
    let errors = sync["errors"].as_array().unwrap();
    // One error per field at fault: the first name and the full name made of it.
    assert_eq!(errors.len(), 6, "{errors:#?}");
    assert!(
        errors.iter().all(|e| e["code"] == "nul_character"),
        "{errors:?}"
    );
    assert_eq!(
        (
            &errors[0]["external_id"],
            &errors[0]["field"],
            &errors[0]["record_index"]
        ),
        (&json!("c2"), &json!("first_name"), &json!(2))
    );
    assert_eq!(sync["errors_next_cursor"], Value::Null);

    // Errors a page at a time.
    let path = format!("/api/v1/syncs/{partial}/errors?limit=4");
    let (_, page) = get(&app, &path, &a.token).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 4);
    let next = page["next_cursor"].as_str().unwrap().to_string();
    let (_, rest) = get(&app, &format!("{path}&cursor={next}"), &a.token).await;
    let all: BTreeSet<(&str, &str)> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["data"].as_array().unwrap())
        .map(|e| {
            (
                e["external_id"].as_str().unwrap(),
                e["field"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(all.len(), 6, "each error once across the pages");
    let records: BTreeSet<&str> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(records, BTreeSet::from(["c2", "c3", "c4"]));
    assert_eq!(rest["next_cursor"], Value::Null);

    // Another tenant's token finds none of it.
    for path in [
        format!("/api/v1/syncs/{partial}"),
        format!("/api/v1/syncs/{partial}/errors"),
    ] {
        let (status, body) = get(&app, &path, &b.token).await;
        assert_eq!(
            (status, body["error"]["code"].as_str().unwrap()),
            (StatusCode::NOT_FOUND, "sync_log_not_found")
        );
    }
    for action in ["close", "reprocess"] {
        let (status, body) = post(
            &app,
            &format!("/api/v1/syncs/{partial}/{action}"),
            &b.token,
            json!({"reason": "x"}),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str().unwrap()),
            (StatusCode::NOT_FOUND, "sync_log_not_found"),
            "{action}"
        );
    }
    let (status, body) = get(&app, &format!("/api/v1/syncs/{}", Uuid::nil()), &a.token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (StatusCode::NOT_FOUND, "sync_log_not_found")
    );

    // Reprocess the closed sync: a replay with the same records.
    let (status, replay) = post(
        &app,
        &format!("/api/v1/syncs/{partial}/reprocess"),
        &a.token,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replay}");
    assert_eq!(replay["replay_of"], json!(partial));
    assert_eq!(
        (&replay["batches"], &replay["records"]),
        (&json!(1), &json!(5))
    );
    work(&app).await;
    let replay_id = replay["sync_log_id"].as_str().unwrap();
    let (_, replayed) = get(&app, &format!("/api/v1/syncs/{replay_id}"), &a.token).await;
    assert_eq!(
        (&replayed["trigger"], &replayed["replay_of"]),
        (&json!("replay"), &json!(partial))
    );
    assert_eq!(replayed["records_received"], 5);

    // Close an open sync by hand; closing it again, or reprocessing an open one, is a conflict.
    let open = deliver(&app, &a, vec![contact(8, "Fay")], true).await;
    let (status, body) = post(
        &app,
        &format!("/api/v1/syncs/{open}/reprocess"),
        &a.token,
        json!({}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (StatusCode::CONFLICT, "sync_in_progress")
    );
    let (status, closed) = post(
        &app,
        &format!("/api/v1/syncs/{open}/close"),
        &a.token,
        json!({"reason": "n8n gave up"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(closed["failure_reason"], "closed_by_admin");
    assert!(closed["completed_at"].is_string());
    let (status, body) = post(
        &app,
        &format!("/api/v1/syncs/{open}/close"),
        &a.token,
        json!({"reason": "again"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (StatusCode::CONFLICT, "sync_log_closed")
    );
    let (status, body) = post(
        &app,
        &format!("/api/v1/syncs/{open}/close"),
        &a.token,
        json!({}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
    );
}
