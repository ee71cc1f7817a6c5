//! The n8n workflow templates in `examples/n8n/`: each parses, is wired trigger → fetch (paged,
//! filtered by `since`) → batch → POST to the callback with Header Auth and Retry On Fail, and the
//! body its batching step builds from a real trigger is accepted by the webhook.

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::{Value, json};
use syncbridge::{db::admin, domain::SourceType};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

use crate::helpers::{ADMIN_TOKEN, TestApp, count, sample, test_config};

/// Template file → the source it syncs and the sample payload of that source.
const TEMPLATES: [(&str, SourceType, &str); 5] = [
    (
        "zoho-crm-contacts",
        SourceType::ZohoCrm,
        "zoho_crm_contacts",
    ),
    (
        "zoho-desk-tickets",
        SourceType::ZohoDesk,
        "zoho_desk_tickets",
    ),
    ("jira-issues", SourceType::Jira, "jira_tickets"),
    (
        "salesforce-opportunities",
        SourceType::Salesforce,
        "salesforce_deals",
    ),
    ("hubspot-deals", SourceType::Hubspot, "hubspot_deals"),
];

fn template(name: &str) -> Value {
    let path = format!("{}/examples/n8n/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// The nodes from the trigger onwards, following each node's first main output.
fn path_from_trigger(workflow: &Value) -> Vec<Value> {
    let nodes: HashMap<&str, &Value> = workflow["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n))
        .collect();
    let triggers: Vec<&&Value> = nodes
        .values()
        .filter(|n| n["type"] == "n8n-nodes-base.webhook")
        .collect();
    assert_eq!(triggers.len(), 1, "one Webhook trigger");
    let mut path = vec![(*triggers[0]).clone()];
    let mut current = triggers[0]["name"].as_str().unwrap().to_string();
    while let Some(next) = workflow["connections"][&current]["main"][0][0]["node"].as_str() {
        assert!(path.len() < 20, "the connections loop");
        let node = nodes
            .get(next)
            .unwrap_or_else(|| panic!("connection to unknown node {next}"));
        path.push((*node).clone());
        current = next.to_string();
    }
    path
}

#[tokio::test]
async fn every_template_is_wired_and_posts_a_body_the_webhook_accepts() {
    let app = TestApp::spawn().await;
    let n8n = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&n8n)
        .await;
    let tenant = admin::create_tenant(&app.db.pool, "Templates Co")
        .await
        .unwrap();

    for (name, source, sample_name) in TEMPLATES {
        let workflow = template(name);
        assert!(
            workflow["name"]
                .as_str()
                .unwrap()
                .starts_with("syncbridge: "),
            "{name}"
        );
        let path = path_from_trigger(&workflow);
        let kinds: Vec<&str> = path.iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "n8n-nodes-base.webhook",
                "n8n-nodes-base.httpRequest",
                "n8n-nodes-base.code",
                "n8n-nodes-base.httpRequest"
            ],
            "{name}"
        );
        let (trigger, fetch, batch, deliver) = (&path[0], &path[1], &path[2], &path[3]);

        // The trigger takes a POST and answers at once, before the workflow runs.
        assert_eq!(trigger["parameters"]["httpMethod"], "POST", "{name}");
        assert_eq!(
            trigger["parameters"]["responseMode"], "onReceived",
            "{name}"
        );

        // The fetch pages through the source and filters by `since`.
        let fetch_text = fetch["parameters"].to_string();
        assert!(
            fetch["parameters"]["options"]["pagination"]["pagination"].is_object(),
            "{name}: no pagination"
        );
        assert!(
            fetch_text.contains("json.body.since"),
            "{name}: the fetch ignores `since`"
        );

        // Batches of at most the documented size, the last one final, every envelope field.
        let code = batch["parameters"]["jsCode"].as_str().unwrap();
        assert!(code.contains("const size = 1000;"), "{name}");
        for field in [
            "integration_id:",
            "sync_log_id:",
            "source_type:",
            "data_type:",
            "sync_mode:",
            "final:",
            "records:",
        ] {
            assert!(code.contains(field), "{name}: the batch lacks {field}");
        }
        assert!(
            code.contains("n === batches.length - 1"),
            "{name}: the last batch is not final"
        );
        let data_type = code
            .split("data_type: '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap();
        let records_field = code
            .split("page.json.")
            .nth(1)
            .and_then(|rest| {
                rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
            })
            .unwrap();

        // The POST goes to the callback with Header Auth and n8n's Retry On Fail.
        let p = &deliver["parameters"];
        assert_eq!(p["method"], "POST", "{name}");
        assert!(
            p["url"]
                .as_str()
                .unwrap()
                .contains("json.body.callback_url"),
            "{name}"
        );
        assert_eq!(p["authentication"], "genericCredentialType", "{name}");
        assert_eq!(p["genericAuthType"], "httpHeaderAuth", "{name}");
        assert_eq!(p["jsonBody"], "={{ JSON.stringify($json) }}", "{name}");
        assert_eq!(deliver["retryOnFail"], true, "{name}");
        let tries = deliver["maxTries"].as_i64().unwrap();
        assert!(
            (2..=5).contains(&tries),
            "{name}: n8n allows at most 5 tries"
        );
        assert!(
            deliver["waitBetweenTries"].as_i64().unwrap() <= 5000,
            "{name}"
        );

        // A real trigger for an integration of this source, as n8n receives it ...
        let integration = admin::create_integration(&app.db.pool, tenant.id, source, name, None)
            .await
            .unwrap();
        let key = admin::create_api_key(&app.db.pool, integration.id, None)
            .await
            .unwrap();
        let response = app
            .client
            .patch(app.url(&format!("/api/admin/integrations/{}", integration.id)))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"webhook_url": format!("{}/webhook/{name}", n8n.uri())}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let response = app
            .client
            .post(app.url(&format!("/api/admin/integrations/{}/sync", integration.id)))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"data_types": [data_type]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        run_triggers(&app).await;
        let received = n8n.received_requests().await.unwrap();
        let trigger_body: Value = serde_json::from_slice(&received.last().unwrap().body).unwrap();

        // ... and the batch the template builds from it and one page of the source's records.
        let page = json!({ records_field: sample(sample_name)["records"] });
        let records = page[records_field].clone();
        let envelope = json!({
            "integration_id": trigger_body["integration_id"],
            "sync_log_id": trigger_body["sync_log_id"],
            "source_type": trigger_body["source_type"],
            "data_type": data_type,
            "sync_mode": trigger_body["sync_mode"],
            "final": true,
            "records": records,
        });
        let delivered = app
            .client
            // The trigger's callback_url is this app: the worker was told its public URL.
            .post(trigger_body["callback_url"].as_str().unwrap())
            .header("Authorization", format!("Bearer {}", key.key.plaintext))
            .json(&envelope)
            .send()
            .await
            .unwrap();
        assert_eq!(
            delivered.status(),
            StatusCode::ACCEPTED,
            "{name}: {:?}",
            delivered.text().await
        );
        let received_records = count(
            &mut app.db.owner().await,
            format!(
                "SELECT records_received FROM integration_sync_logs WHERE id = '{}' AND final_received_at IS NOT NULL",
                trigger_body["sync_log_id"].as_str().unwrap()
            ),
        )
        .await;
        assert_eq!(
            received_records as usize,
            records.as_array().unwrap().len(),
            "{name}"
        );
    }
}

async fn run_triggers(app: &TestApp) {
    let mut config = test_config();
    config.worker.poll_interval_ms = 20;
    config.n8n.public_base_url = app.url("/");
    crate::helpers::work_until_done(
        &app.db,
        &config,
        "SELECT count(*) FROM jobs WHERE kind = 'sync.trigger' AND state <> 'completed'",
    )
    .await;
}
