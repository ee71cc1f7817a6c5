//! Tenant isolation of the whole platform API: every `/api/v1` route the OpenAPI document lists
//! (so a route added later is walked too) is called by another tenant with the first tenant's
//! real ids. Each route with an id answers 404, as for an id that never existed, and changes
//! nothing; each listing shows none of the first tenant's ids.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use syncbridge::admin::tokens;

use crate::helpers::{self, TestApp, get};

/// A valid body for a route that needs one, so that the answer is about the ids, not the body.
fn body_for(method: &Method, path: &str) -> Option<Value> {
    let body = match (method.as_str(), path.rsplit('/').next().unwrap_or_default()) {
        ("PATCH", "{integration_id}") => json!({"description": "taken over"}),
        ("PATCH", "{account_id}") => json!({"name": "taken over"}),
        ("PUT", "{target}") => json!({"source": "properties.email"}),
        ("POST", "preview") => json!({"records": [{"id": "x"}]}),
        ("POST", "close") => json!({"reason": "taken over"}),
        ("POST", _) | ("PUT", _) | ("PATCH", _) => json!({}),
        _ => return None,
    };
    Some(body)
}

#[tokio::test]
async fn another_tenant_reaches_none_of_a_tenants_resources_on_any_route() {
    let app = TestApp::spawn().await;
    let a = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let b = helpers::hubspot_integration(&app.db.pool, "Beta").await;
    let a_token = tokens::create(&app.db.pool, a.tenant_id, None, false)
        .await
        .unwrap();
    let b_token = tokens::create(&app.db.pool, b.tenant_id, None, false)
        .await
        .unwrap()
        .token
        .plaintext;
    let a_plain = &a_token.token.plaintext;

    // Alpha holds one of everything: a synced record (so a sync), an account, a key, a token
    // and a mapping override.
    let receipt = helpers::deliver(
        &app,
        &a,
        "contacts",
        vec![json!({"id": "c1", "properties": {"email": "ada@northwind.io"}})],
        false,
    )
    .await;
    helpers::drain(&app.db).await;
    let (_, records) = get(&app, "/api/v1/records/contacts", a_plain).await;
    let account = app
        .client
        .post(app.url("/api/v1/accounts"))
        .bearer_auth(a_plain)
        .json(&json!({"name": "Northwind", "domains": ["northwind.io"]}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let (_, keys) = get(
        &app,
        &format!("/api/v1/integrations/{}/keys", a.integration_id),
        a_plain,
    )
    .await;
    let put = app
        .client
        .put(app.url(&format!(
            "/api/v1/integrations/{}/mappings/contacts/email",
            a.integration_id
        )))
        .bearer_auth(a_plain)
        .json(&json!({"source": "properties.email"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let ids: BTreeMap<&str, String> = [
        ("integration_id", a.integration_id.to_string()),
        (
            "key_id",
            keys["data"][0]["id"].as_str().unwrap().to_string(),
        ),
        ("account_id", account["id"].as_str().unwrap().to_string()),
        (
            "sync_id",
            receipt["sync_log_id"].as_str().unwrap().to_string(),
        ),
        (
            "record_id",
            records["data"][0]["id"].as_str().unwrap().to_string(),
        ),
        ("token_id", a_token.info.id.to_string()),
    ]
    .into();
    let (_, before) = get(
        &app,
        &format!("/api/v1/integrations/{}", a.integration_id),
        a_plain,
    )
    .await;

    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut walked = 0;
    let mut with_ids = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut concrete = path.clone();
            let mut has_id = false;
            for part in path.split('/') {
                let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) else {
                    continue;
                };
                let value = match name {
                    "data_type" => "contacts".to_string(),
                    "target" => "email".to_string(),
                    id => {
                        has_id = true;
                        ids.get(id)
                            .unwrap_or_else(|| panic!("{path}: give Alpha a `{id}` to walk it"))
                            .clone()
                    }
                };
                concrete = concrete.replace(part, &value);
            }
            if !has_id && method != Method::GET {
                // Creates something in the caller's own tenant: nothing of Alpha's is named.
                continue;
            }
            let mut request = app
                .client
                .request(method.clone(), app.url(&concrete))
                .bearer_auth(&b_token);
            if let Some(body) = body_for(&method, path) {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            walked += 1;
            if has_id {
                with_ids += 1;
                assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {text}");
                let code = serde_json::from_str::<Value>(&text).unwrap()["error"]["code"]
                    .as_str()
                    .unwrap()
                    .to_string();
                assert!(code.ends_with("_not_found"), "{method} {path}: {code}");
            } else {
                assert_eq!(status, StatusCode::OK, "{method} {path}: {text}");
                for (name, id) in &ids {
                    assert!(!text.contains(id), "{method} {path} shows Alpha's {name}");
                }
            }
        }
    }
    assert!(
        walked >= 28 && with_ids >= 22,
        "{walked} routes, {with_ids} with ids"
    );

    // Nothing of Alpha's changed, and Alpha still reaches all of it.
    let (status, after) = get(
        &app,
        &format!("/api/v1/integrations/{}", a.integration_id),
        a_plain,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after, before);
    let (_, keys_after) = get(
        &app,
        &format!("/api/v1/integrations/{}/keys", a.integration_id),
        a_plain,
    )
    .await;
    assert!(keys_after["data"][0]["revoked_at"].is_null());
    let (status, _) = get(&app, &format!("/api/v1/syncs/{}", ids["sync_id"]), a_plain).await;
    assert_eq!(status, StatusCode::OK);
    let (_, accounts) = get(&app, "/api/v1/accounts", a_plain).await;
    assert_eq!(accounts["data"][0]["name"], "Northwind");
    let (status, _) = get(&app, "/api/v1/tokens", a_plain).await;
    assert_eq!(status, StatusCode::OK, "Alpha's token still works");
}
