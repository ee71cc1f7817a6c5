//! The platform API's records through HTTP: contacts, tickets and deals filtered by integration,
//! account, email, domain, change time and deletion, paged in change order (a record that
//! changes moves to the end, no other is seen twice), one record with its raw payload, and none
//! of another tenant's.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};
use syncbridge::admin::{self, tokens};

use crate::helpers::{self, HubspotIntegration, TestApp, get};

async fn deliver(app: &TestApp, h: &HubspotIntegration, data_type: &str, records: Vec<Value>) {
    helpers::deliver(app, h, data_type, records, false).await;
    helpers::drain(&app.db).await;
}

fn contact(n: usize, email: &str) -> Value {
    json!({"id": format!("c{n}"), "properties": {"email": email, "firstname": format!("P{n}")}})
}

fn external_ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|r| r["external_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn records_are_filtered_paged_in_change_order_and_shown_with_their_payload() {
    let app = TestApp::spawn().await;
    let a = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let b = helpers::hubspot_integration(&app.db.pool, "Beta").await;
    let token = tokens::create(&app.db.pool, a.tenant_id, None, true)
        .await
        .unwrap()
        .token
        .plaintext;
    let b_token = tokens::create(&app.db.pool, b.tenant_id, None, false)
        .await
        .unwrap()
        .token
        .plaintext;
    let northwind = admin::add_account(
        &app.db.pool,
        a.tenant_id,
        "Northwind",
        &["northwind.io".into()],
    )
    .await
    .unwrap();
    let mut contacts: Vec<Value> = (0..4)
        .map(|n| contact(n, &format!("p{n}@northwind.io")))
        .collect();
    contacts.push(contact(4, "solo@gmail.com"));
    deliver(&app, &a, "contacts", contacts).await;
    deliver(&app, &b, "contacts", vec![contact(0, "other@northwind.io")]).await;

    // Pages of two, in change order; a record changed meanwhile moves to the end.
    let (status, first) = get(&app, "/api/v1/records/contacts?limit=2", &token).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let mut seen = external_ids(&first);
    assert_eq!(seen.len(), 2);
    let changed = seen[0].clone();
    let n: usize = changed[1..].parse().unwrap();
    deliver(
        &app,
        &a,
        "contacts",
        vec![contact(n, &format!("renamed{n}@northwind.io"))],
    )
    .await;
    let mut cursor = first["next_cursor"].as_str().map(String::from);
    while let Some(c) = cursor {
        let (_, page) = get(
            &app,
            &format!("/api/v1/records/contacts?limit=2&cursor={c}"),
            &token,
        )
        .await;
        seen.extend(external_ids(&page));
        cursor = page["next_cursor"].as_str().map(String::from);
    }
    assert_eq!(
        seen.len(),
        6,
        "five records, the changed one twice: {seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&changed),
        "the changed record comes again, last"
    );
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), 5);

    // Filters.
    let (_, by_email) = get(
        &app,
        "/api/v1/records/contacts?email=SOLO@gmail.com",
        &token,
    )
    .await;
    assert_eq!(external_ids(&by_email), ["c4"]);
    let solo = &by_email["data"][0];
    assert_eq!(
        (&solo["match_method"], &solo["match_reason"]),
        (&json!("none"), &json!("free_mail_domain"))
    );
    assert_eq!(solo["fields"]["first_name"], "P4");
    assert!(solo.get("raw").is_none(), "lists leave the payload out");
    let path = format!("/api/v1/records/contacts?account_id={}", northwind.id);
    let (_, matched) = get(&app, &path, &token).await;
    assert_eq!(external_ids(&matched).len(), 4);
    assert!(
        matched["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["match_method"] == "exact_domain")
    );
    let (_, by_domain) = get(
        &app,
        "/api/v1/records/contacts?domain=northwind.io&limit=200",
        &token,
    )
    .await;
    assert_eq!(external_ids(&by_domain).len(), 4);
    let path = format!(
        "/api/v1/records/contacts?integration_id={}",
        b.integration_id
    );
    let (_, foreign) = get(&app, &path, &token).await;
    assert!(external_ids(&foreign).is_empty());
    let (_, future) = get(
        &app,
        "/api/v1/records/contacts?updated_since=2999-01-01T00:00:00Z",
        &token,
    )
    .await;
    assert!(external_ids(&future).is_empty());
    let (_, deals) = get(&app, "/api/v1/records/deals", &token).await;
    assert!(external_ids(&deals).is_empty());
    for (path, code) in [
        ("/api/v1/records/leads", "invalid_data_type"),
        ("/api/v1/records/contacts?deleted=maybe", "invalid_query"),
        ("/api/v1/records/contacts?cursor=xyz", "invalid_cursor"),
        ("/api/v1/records/contacts?limit=-1", "invalid_query"),
    ] {
        let (status, body) = get(&app, path, &token).await;
        assert_eq!(
            (status, body["error"]["code"].as_str().unwrap()),
            (StatusCode::BAD_REQUEST, code),
            "{path}"
        );
    }

    // Soft-deleted records are left out unless asked for.
    let mut owner = app.db.owner().await;
    sqlx::query("SET ROLE syncbridge_system")
        .execute(&mut owner)
        .await
        .unwrap();
    sqlx::query("UPDATE external_contacts SET deleted_at = now() WHERE external_id = 'c4' AND tenant_id = $1")
        .bind(a.tenant_id)
        .execute(&mut owner)
        .await
        .unwrap();
    let (_, live) = get(&app, "/api/v1/records/contacts?limit=200", &token).await;
    assert_eq!(external_ids(&live).len(), 4);
    let (_, all) = get(
        &app,
        "/api/v1/records/contacts?limit=200&deleted=include",
        &token,
    )
    .await;
    assert_eq!(external_ids(&all).len(), 5);
    let (_, gone) = get(&app, "/api/v1/records/contacts?deleted=only", &token).await;
    assert_eq!(external_ids(&gone), ["c4"]);
    assert!(gone["data"][0]["deleted_at"].is_string());

    // One record, with the payload as the source sent it; not another tenant's, not another type.
    let id = solo["id"].as_str().unwrap();
    let (status, one) = get(&app, &format!("/api/v1/records/contacts/{id}"), &token).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["raw"]["properties"]["email"], "solo@gmail.com");
    assert_eq!(one["raw"]["id"], "c4");
    for (path, who) in [
        (format!("/api/v1/records/contacts/{id}"), &b_token),
        (format!("/api/v1/records/deals/{id}"), &token),
    ] {
        let (status, body) = get(&app, &path, who).await;
        assert_eq!(
            (status, body["error"]["code"].as_str().unwrap()),
            (StatusCode::NOT_FOUND, "record_not_found"),
            "{path}"
        );
    }
    let (_, theirs) = get(&app, "/api/v1/records/contacts", &b_token).await;
    assert_eq!(external_ids(&theirs), ["c0"]);
}
