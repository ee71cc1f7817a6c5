//! The OpenAPI document (`GET /api/openapi.json`): a valid 3.1 document whose every reference
//! resolves, that names every route the code registers with exactly the methods the router
//! takes (asked of the running router, through the `Allow` of its 405), whose refusals name
//! only error codes the service has, and whose bodies are typed with the fields real answers have.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use syncbridge::http::error::ErrorCode;

use crate::helpers::TestApp;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let spec = oas3::from_json(&text).expect("the document parses as OpenAPI 3.1");
    assert_eq!(spec.validate_version().unwrap().major, 3);
    assert_eq!(spec.openapi, "3.1.0");
    serde_json::from_str(&text).unwrap()
}

/// Every path string the code registers with `.route(`, but the console's (HTML pages, not API).
fn registered_routes() -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    let mut stack = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/http"
    ))];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("console") {
                    stack.push(path);
                }
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, _) in text.match_indices(".route(") {
                let rest = text[i + ".route(".len()..].trim_start();
                if let Some(quoted) = rest.strip_prefix('"') {
                    routes.insert(quoted[..quoted.find('"').unwrap()].to_string());
                }
            }
        }
    }
    routes
}

#[tokio::test]
async fn every_route_is_documented_with_the_methods_the_router_takes() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let paths = doc["paths"].as_object().unwrap();
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    let registered = registered_routes();
    assert!(registered.len() >= 20, "found the routes: {registered:?}");
    assert_eq!(
        registered.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "routes missing from the document"
    );
    assert_eq!(
        documented.difference(&registered).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented paths no code registers"
    );

    for (path, item) in paths {
        let mut methods: BTreeSet<String> = METHODS
            .iter()
            .filter(|m| item.get(**m).is_some())
            .map(|m| m.to_uppercase())
            .collect();
        // axum answers HEAD wherever it answers GET.
        if methods.contains("GET") {
            methods.insert("HEAD".into());
        }
        let concrete = path
            .replace("{data_type}", "contacts")
            .replace("{target}", "email")
            .split('/')
            .map(|part| {
                if part.starts_with('{') {
                    uuid::Uuid::nil().to_string()
                } else {
                    part.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let response = app
            .client
            .request(Method::TRACE, app.url(&concrete))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        let allow: BTreeSet<String> = response.headers()["allow"]
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_string())
            .collect();
        assert_eq!(
            allow, methods,
            "{path}: the router's methods vs the document's"
        );
    }
}

#[tokio::test]
async fn the_document_is_whole_and_names_only_real_error_codes() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let text = doc.to_string();

    // Every reference resolves.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (i, _) in text.match_indices("\"$ref\":\"#/components/schemas/") {
        let rest = &text[i + "\"$ref\":\"#/components/schemas/".len()..];
        let name = &rest[..rest.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling reference to {name}");
    }
    assert!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
    );
    let codes: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let in_schema: BTreeSet<&str> = schemas["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(in_schema, codes, "the ErrorCode schema lists every code");

    for (path, item) in doc["paths"].as_object().unwrap() {
        let declared: BTreeSet<String> = path
            .split('/')
            .filter_map(|p| p.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
            .map(String::from)
            .collect();
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let where_ = format!("{method} {path}");
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{where_} has a summary"
            );
            let in_path: BTreeSet<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(in_path, declared, "{where_}: its path parameters");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{where_} answers a 2xx"
            );
            if path.starts_with("/api/v1/") {
                let says = |status: &str, code: &str| {
                    responses[status]["description"]
                        .as_str()
                        .is_some_and(|d| d.contains(&format!("`{code}`")))
                };
                assert!(
                    says("401", "invalid_token") && says("401", "jwt_expired"),
                    "{where_} names the token and JWT refusals"
                );
                assert!(says("503", "jwks_unavailable"), "{where_}");
            }
            for (status, response) in responses {
                if status.starts_with('2') {
                    continue;
                }
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{where_} {status} answers the error shape"
                );
                let description = response["description"].as_str().unwrap();
                let named: Vec<&str> = description
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .filter(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'))
                    .collect();
                assert!(!named.is_empty(), "{where_} {status} names its codes");
                for code in named {
                    assert!(
                        codes.contains(code),
                        "{where_} {status}: `{code}` is no error code"
                    );
                }
            }
        }
    }
}

/// The property names of a schema (following one `$ref`), for comparing with real answers.
fn properties(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let schema = match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => schema,
    };
    schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn bodies_are_typed_and_the_answers_have_the_documented_fields() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    // Free-form by nature: a mapping is the mapping language's JSON, the document is itself.
    let free_form = ["/api/openapi.json", "/mappings/{data_type}/{target}"];
    for (path, item) in doc["paths"].as_object().unwrap() {
        if free_form.iter().any(|f| path.ends_with(f)) {
            continue;
        }
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let mut schemas: Vec<(&str, &Value)> = Vec::new();
            for (status, response) in op["responses"].as_object().unwrap() {
                if let Some(schema) = response["content"]["application/json"].get("schema")
                    && status.starts_with('2')
                {
                    schemas.push(("answer", schema));
                }
            }
            if let Some(schema) = op["requestBody"]["content"]["application/json"].get("schema") {
                schemas.push(("body", schema));
            }
            for (what, schema) in schemas {
                let bare_object =
                    schema.get("$ref").is_none() && schema.get("properties").is_none();
                assert!(
                    !bare_object,
                    "{method} {path}: its {what} is an untyped object: {schema}"
                );
            }
        }
    }

    // What the routes really answer has the documented fields, no more and no fewer.
    let h = crate::helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let receipt = crate::helpers::deliver(
        &app,
        &h,
        "contacts",
        vec![serde_json::json!({"id": "c1"})],
        false,
    )
    .await;
    let admin = crate::helpers::ADMIN_TOKEN;
    let batch = format!("/api/batches/{}", receipt["batch_id"].as_str().unwrap());
    let settings = format!("/api/admin/integrations/{}", h.integration_id);
    let answer_schema = |path: &str, status: &str| {
        doc["paths"][path]
            .as_object()
            .and_then(|item| item.values().find_map(|op| op["responses"].get(status)))
            .map(|r| r["content"]["application/json"]["schema"].clone())
            .unwrap()
    };
    let fields = |value: &Value| -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    };
    assert_eq!(
        fields(&receipt),
        properties(&doc, &answer_schema("/api/webhooks/n8n", "202"))
    );
    for (path, documented, token) in [
        (batch.as_str(), "/api/batches/{id}", h.key.as_str()),
        (settings.as_str(), "/api/admin/integrations/{id}", admin),
        ("/api/admin/jobs/stats", "/api/admin/jobs/stats", admin),
        ("/api/admin/jobs", "/api/admin/jobs", admin),
        ("/healthz", "/healthz", admin),
    ] {
        let answer = app.get_json(path, token).await;
        assert_eq!(
            fields(&answer),
            properties(&doc, &answer_schema(documented, "200")),
            "{path}: {answer}"
        );
    }
    let response = app
        .client
        .post(app.url("/api/admin/jobs/retry"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"filter": {"states": ["failed"]}}))
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        fields(&answer),
        properties(&doc, &answer_schema("/api/admin/jobs/retry", "200"))
    );
}
