//! The n8n workflows in `examples/n8n/`: each is what `build.mjs` makes, is wired trigger → a chain
//! per data type (plan, paced paged fetch, batch, wait on 429, error report) → delivery with Header
//! Auth and Retry On Fail; their node tests (`tests/workflows/`, run under the machine's `node`)
//! pass; and each, run against the vendor stand-ins for a trigger syncbridge really sent, posts a
//! whole sync that syncbridge's webhook and worker take and close.

use std::{
    collections::HashMap,
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use reqwest::StatusCode;
use serde_json::{Value, json};
use syncbridge::{admin, domain::SourceType};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

use crate::helpers::{ADMIN_TOKEN, TestApp, count, run_all_jobs};

/// Workflow file → the source it syncs and the data types it delivers.
const WORKFLOWS: [(&str, SourceType, &[&str]); 5] = [
    ("hubspot", SourceType::Hubspot, &["contacts", "deals"]),
    ("zoho-crm", SourceType::ZohoCrm, &["contacts", "deals"]),
    ("zoho-desk-tickets", SourceType::ZohoDesk, &["tickets"]),
    ("jira-issues", SourceType::Jira, &["tickets"]),
    (
        "salesforce-opportunities",
        SourceType::Salesforce,
        &["deals"],
    ),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn workflow(name: &str) -> Value {
    let path = root().join(format!("examples/n8n/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not JSON: {e}"))
}

/// `node` with `args` in the repository root; panics with its output when it fails.
fn node(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> String {
    let mut child = Command::new("node")
        .args(args)
        .current_dir(root())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the machine's node (Node.js 20) runs the workflow tests");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "node {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

struct Graph<'a> {
    nodes: HashMap<&'a str, &'a Value>,
    connections: &'a Value,
}

impl<'a> Graph<'a> {
    fn new(workflow: &'a Value) -> Self {
        let nodes = workflow["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["name"].as_str().unwrap(), n))
            .collect();
        Graph {
            nodes,
            connections: &workflow["connections"],
        }
    }

    fn node(&self, name: &str) -> &'a Value {
        self.nodes
            .get(name)
            .unwrap_or_else(|| panic!("no node {name:?}"))
    }

    /// The nodes output `output` of `from` leads to.
    fn next(&self, from: &str, output: usize) -> Vec<&'a str> {
        self.connections[from]["main"][output]
            .as_array()
            .map(|targets| {
                targets
                    .iter()
                    .map(|t| {
                        let name = t["node"].as_str().unwrap();
                        self.node(name);
                        self.nodes.get_key_value(name).unwrap().0
                    })
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[test]
fn every_workflow_is_built_fresh_and_wired_to_page_wait_and_report_errors() {
    node(&["examples/n8n/build.mjs", "--check"], None, &[]);
    for (name, _, types) in WORKFLOWS {
        let workflow = workflow(name);
        assert!(
            workflow["name"]
                .as_str()
                .unwrap()
                .starts_with("syncbridge: "),
            "{name}"
        );
        let g = Graph::new(&workflow);
        let trigger = g.node("Sync requested");
        assert_eq!(trigger["type"], "n8n-nodes-base.webhook");
        assert_eq!(trigger["parameters"]["httpMethod"], "POST", "{name}");
        assert_eq!(
            trigger["parameters"]["responseMode"], "onReceived",
            "{name}: the trigger must answer before the workflow runs"
        );
        let mut plans = g.next("Sync requested", 0);
        plans.sort();
        let mut expected: Vec<String> = types.iter().map(|t| format!("Plan {t}")).collect();
        expected.sort();
        assert_eq!(plans, expected, "{name}: a chain per data type");

        for t in types {
            let fetch = format!("Fetch {t}");
            assert_eq!(g.next(&format!("Plan {t}"), 0), [fetch.as_str()]);
            let f = g.node(&fetch);
            let pagination = &f["parameters"]["options"]["pagination"]["pagination"];
            assert!(pagination.is_object(), "{name} {t}: not paged");
            assert!(
                pagination["requestInterval"].as_u64().unwrap() >= 100,
                "{name} {t}: pages are not paced"
            );
            let complete = pagination["completeExpression"].as_str().unwrap();
            assert!(
                complete.contains("$response.statusCode === 429")
                    && complete.contains("$response.statusCode < 300"),
                "{name} {t}: an error page must not complete the pagination quietly: {complete}"
            );
            assert_eq!(
                f["parameters"]["options"]["response"]["response"]["fullResponse"], true,
                "{name} {t}: the batch step needs each page's status"
            );
            let since = f["parameters"].to_string();
            assert!(since.contains("$json.since"), "{name} {t}: ignores since");
            // Every call of the source routes its failure to the type's error report.
            let report = format!("Report {t} error");
            assert_eq!(g.next(&fetch, 1), [report.as_str()], "{name} {t}");
            assert_eq!(g.next(&report, 0), ["Deliver to syncbridge"], "{name} {t}");
            assert_eq!(g.next(&fetch, 0), [format!("Batch {t}").as_str()]);
            let batch = g.node(&format!("Batch {t}"))["parameters"]["jsCode"]
                .as_str()
                .unwrap();
            for needle in [
                "final: true, batch_count: sent",
                "retry-after",
                "data_type: '",
            ] {
                assert!(batch.contains(needle), "{name} {t}: batch lacks {needle}");
            }
            let size: usize = batch
                .split("const size = ")
                .nth(1)
                .and_then(|rest| rest.split(';').next())
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=1000).contains(&size), "{name} {t}: batches of {size}");
            let limited = format!("{t} rate limited?");
            assert_eq!(g.next(&format!("Batch {t}"), 0), [limited.as_str()]);
            assert_eq!(g.next(&limited, 0), [format!("Wait {t}").as_str()]);
            assert_eq!(g.next(&format!("Wait {t}"), 0), [fetch.as_str()]);
        }
        for (node_name, node) in &g.nodes {
            let calls_source = node["type"] == "n8n-nodes-base.httpRequest"
                && node["parameters"]["authentication"] == "predefinedCredentialType";
            if calls_source {
                assert_eq!(node["onError"], "continueErrorOutput", "{name} {node_name}");
                assert!(
                    g.next(node_name, 1)
                        .iter()
                        .all(|n| n.starts_with("Report ")),
                    "{name} {node_name}: its error output reports"
                );
                assert!(!g.next(node_name, 1).is_empty(), "{name} {node_name}");
            }
        }

        let deliver = g.node("Deliver to syncbridge");
        let p = &deliver["parameters"];
        assert_eq!(p["method"], "POST", "{name}");
        assert!(
            p["url"]
                .as_str()
                .unwrap()
                .contains("json.body.callback_url")
        );
        assert_eq!(p["authentication"], "genericCredentialType", "{name}");
        assert_eq!(p["genericAuthType"], "httpHeaderAuth", "{name}");
        assert_eq!(p["jsonBody"], "={{ JSON.stringify($json.envelope) }}");
        assert_eq!(p["options"]["batching"]["batch"]["batchSize"], 1);
        assert_eq!(deliver["retryOnFail"], true, "{name}");
        assert!((2..=5).contains(&deliver["maxTries"].as_i64().unwrap()));
        assert!(deliver["waitBetweenTries"].as_i64().unwrap() <= 5000);
    }
}

#[test]
fn the_workflows_pass_their_node_tests() {
    let out = node(&["--test", "tests/workflows/"], None, &[]);
    assert!(out.contains("# fail 0"), "{out}");
}

#[tokio::test]
async fn every_workflow_delivers_a_whole_sync_that_syncbridge_takes_and_closes() {
    let app = TestApp::spawn().await;
    let n8n = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&n8n)
        .await;
    let tenant = admin::create_tenant(&app.db.pool, "Workflows Co")
        .await
        .unwrap();
    admin::add_account(
        &app.db.pool,
        tenant.id,
        "Acme Logistics",
        &["acme-logistics.com".to_string()],
    )
    .await
    .unwrap();
    const PER_TYPE: i64 = 120;

    for (name, source, types) in WORKFLOWS {
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
            .json(&json!({"sync_mode": "full"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        run_all_jobs(&app).await;
        let received = n8n.received_requests().await.unwrap();
        let trigger = &received.last().unwrap().body;
        let trigger_body: Value = serde_json::from_slice(trigger).unwrap();
        assert_eq!(trigger_body["data_types"], json!(types), "{name}");

        // Off the runtime's thread: the workflow posts to this test's own server.
        let (trigger_bytes, plaintext) = (trigger.to_vec(), key.key.plaintext.clone());
        tokio::task::spawn_blocking(move || {
            node(
                &["tests/workflows/deliver.mjs", name, &PER_TYPE.to_string()],
                Some(&trigger_bytes),
                &[("SYNCBRIDGE_KEY", &plaintext)],
            )
        })
        .await
        .unwrap();
        run_all_jobs(&app).await;
        let log: Value = sqlx::query_scalar(
            "SELECT to_jsonb(l) FROM integration_sync_logs l WHERE id = $1::text::uuid",
        )
        .bind(trigger_body["sync_log_id"].as_str().unwrap())
        .fetch_one(&mut app.db.owner().await)
        .await
        .unwrap();
        let mut finals: Vec<&str> = log["final_data_types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        finals.sort();
        assert_eq!(finals, types, "{name}: {log}");
        assert!(
            matches!(log["status"].as_str(), Some("success" | "partial")),
            "{name}: {log}"
        );
        let n = |k: &str| log[k].as_i64().unwrap();
        assert_eq!(
            n("records_received"),
            PER_TYPE * types.len() as i64,
            "{name}"
        );
        assert_eq!(
            n("records_received"),
            n("records_created")
                + n("records_updated")
                + n("records_unchanged")
                + n("records_skipped")
                + n("records_failed"),
            "{name}: {log}"
        );
        if source == SourceType::Hubspot {
            // The workflow looked up each deal's company, so every deal matches its account.
            let unmatched = count(
                &mut app.db.owner().await,
                format!(
                    "SELECT count(*) FROM external_deals WHERE integration_id = '{}' AND account_id IS NULL AND deleted_at IS NULL",
                    integration.id
                ),
            )
            .await;
            assert_eq!(unmatched, 0, "{name}: deals without their account");
        }
    }
}
