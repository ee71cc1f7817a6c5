//! The platform API's accounts through HTTP: added with normalised domains, warned about when
//! another account claims a domain or name, listed with their matched records, changed, deleted
//! (their records unmatched), and never reachable from another tenant.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use syncbridge::admin::tokens;

use crate::helpers::{self, HubspotIntegration, TestApp};

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn deliver(app: &TestApp, h: &HubspotIntegration, emails: &[&str]) {
    let records: Vec<Value> = emails
        .iter()
        .enumerate()
        .map(|(n, e)| json!({"id": format!("c{n}"), "properties": {"email": e}}))
        .collect();
    helpers::deliver(app, h, "contacts", records, false).await;
    helpers::drain(&app.db).await;
}

fn code(body: &Value) -> (&str, &Value) {
    (
        body["error"]["code"].as_str().unwrap_or("-"),
        &body["error"]["details"]["field"],
    )
}

#[tokio::test]
async fn accounts_are_added_warned_about_counted_changed_and_deleted() {
    let app = TestApp::spawn().await;
    let a = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let b = helpers::hubspot_integration(&app.db.pool, "Beta").await;
    let token = tokens::create(&app.db.pool, a.tenant_id, None, false)
        .await
        .unwrap()
        .token
        .plaintext;
    let b_token = tokens::create(&app.db.pool, b.tenant_id, None, false)
        .await
        .unwrap()
        .token
        .plaintext;

    let (status, northwind) = call(&app, Method::POST, "/api/v1/accounts", &token,
        Some(json!({"name": " Northwind ", "domains": ["https://www.Northwind.io/about", "northwind.io", "NW.example"]}))).await;
    assert_eq!(status, StatusCode::CREATED, "{northwind}");
    assert_eq!(northwind["name"], "Northwind");
    assert_eq!(northwind["domains"], json!(["northwind.io", "nw.example"]));
    assert_eq!(northwind["warnings"], json!([]));
    let (_, globex) = call(
        &app,
        Method::POST,
        "/api/v1/accounts",
        &token,
        Some(json!({"name": "Globex", "domains": ["globex.com"]})),
    )
    .await;

    // Another account claiming a domain, or the name, is accepted with a warning naming it.
    let (status, twin) = call(
        &app,
        Method::POST,
        "/api/v1/accounts",
        &token,
        Some(json!({"name": "northwind", "domains": ["nw.example"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let warnings = twin["warnings"].as_array().unwrap();
    let codes: Vec<&str> = warnings
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["domain_claimed", "name_claimed"]);
    assert!(warnings.iter().all(|w| w["account_id"] == northwind["id"]));
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("nw.example")
    );

    // Bad fields are 422 naming the field.
    for (body, field) in [
        (json!({"name": "  ", "domains": []}), "name"),
        (
            json!({"name": "X", "domains": ["ok.io", "nodot"]}),
            "domains[1]",
        ),
    ] {
        let (status, err) = call(&app, Method::POST, "/api/v1/accounts", &token, Some(body)).await;
        assert_eq!(
            (status, code(&err)),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                ("invalid_field", &json!(field))
            )
        );
    }
    let (status, err) = call(
        &app,
        Method::POST,
        "/api/v1/accounts",
        &token,
        Some(json!({"domains": []})),
    )
    .await;
    assert_eq!(
        (status, code(&err).0),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
    );

    // Listed by name with their matched records.
    let twin_id = twin["id"].as_str().unwrap().to_string();
    let (_, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/v1/accounts/{twin_id}"),
        &token,
        None,
    )
    .await;
    deliver(
        &app,
        &a,
        &[
            "dana@northwind.io",
            "eve@eu.northwind.io",
            "gil@globex.com",
            "x@gmail.com",
        ],
    )
    .await;
    let (status, list) = call(&app, Method::GET, "/api/v1/accounts", &token, None).await;
    assert_eq!(status, StatusCode::OK);
    let rows: Vec<(&str, &Value)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), &a["contacts"]))
        .collect();
    assert_eq!(rows, [("Globex", &json!(1)), ("Northwind", &json!(2))]);

    // Changed: what is not given stays.
    let path = format!("/api/v1/accounts/{}", globex["id"].as_str().unwrap());
    let (status, renamed) = call(
        &app,
        Method::PATCH,
        &path,
        &token,
        Some(json!({"name": "Globex Corp"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(
        (&renamed["name"], &renamed["domains"]),
        (&json!("Globex Corp"), &json!(["globex.com"]))
    );
    let (_, redomained) = call(
        &app,
        Method::PATCH,
        &path,
        &token,
        Some(json!({"domains": ["globex.co.uk"]})),
    )
    .await;
    assert_eq!(
        (&redomained["name"], &redomained["domains"]),
        (&json!("Globex Corp"), &json!(["globex.co.uk"]))
    );

    // Another tenant's token, or an unknown id, finds nothing.
    for (method, body) in [
        (Method::PATCH, Some(json!({"name": "Mine"}))),
        (Method::DELETE, None),
    ] {
        let (status, err) = call(&app, method, &path, &b_token, body).await;
        assert_eq!(
            (status, code(&err).0),
            (StatusCode::NOT_FOUND, "account_not_found")
        );
    }
    let (_, theirs) = call(&app, Method::GET, "/api/v1/accounts", &b_token, None).await;
    assert_eq!(theirs["data"], json!([]));

    // Deleted: answered as it was; its records are unmatched at once.
    let path = format!("/api/v1/accounts/{}", northwind["id"].as_str().unwrap());
    let (status, deleted) = call(&app, Method::DELETE, &path, &token, None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["contacts"], 2);
    let (_, records) = call(
        &app,
        Method::GET,
        "/api/v1/records/contacts?domain=northwind.io",
        &token,
        None,
    )
    .await;
    let records = records["data"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let (_, all) = call(
        &app,
        Method::GET,
        "/api/v1/records/contacts?limit=200",
        &token,
        None,
    )
    .await;
    let unmatched: Vec<&Value> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["match_reason"] == "account_deleted")
        .collect();
    assert_eq!(unmatched.len(), 2);
    assert!(
        unmatched
            .iter()
            .all(|r| r["account_id"].is_null() && r["match_method"] == "none")
    );
    let (status, err) = call(&app, Method::DELETE, &path, &token, None).await;
    assert_eq!(
        (status, code(&err).0),
        (StatusCode::NOT_FOUND, "account_not_found")
    );
}
