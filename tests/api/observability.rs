//! What operators read: the request log lines and that no secret ever reaches the log, even at
//! `debug`; and what ships beside the service: the Prometheus alert rules pass promtool (and
//! their unit tests), and the rules, the Grafana dashboard and docs/METRICS.md name exactly the
//! series the service exports.

use std::{collections::BTreeSet, path::Path, process::Command};

use regex::Regex;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

use crate::helpers::{self, ADMIN_TOKEN, CapturedLogs, TestApp, TestDb};

const METRICS_TOKEN: &str = "metrics-token-never-logged-0001";
const ENCRYPTION_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const N8N_SECRET: &str = "n8n-header-secret-never-logged";

/// A whole scenario (a delivery, an API key made and used, a tenant token used on the API and to
/// sign in to the console, credentials sent to n8n by a manual sync, a metrics scrape, refusals)
/// logged at `debug` in the production JSON shape: no key, token, credential or database URL is
/// in the log, and every request left its one line.
#[tokio::test(flavor = "current_thread")]
async fn no_secret_reaches_the_log_even_at_debug() {
    let captured = CapturedLogs::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestApp::spawn_configured(TestDb::migrated().await, None, |c| {
        c.metrics.token = Some(METRICS_TOKEN.to_string().into());
        c.encryption_key = Some(ENCRYPTION_KEY.to_string().into());
    })
    .await;
    let h = helpers::hubspot_integration(&app.db.pool, "Secretive Co").await;
    let contacts = vec![json!({"id": "c1", "properties": {"email": "a@secretive.example"}})];
    let receipt = helpers::deliver(&app, &h, "contacts", contacts, false).await;
    // A wrong key, and the right one in the body instead of a header.
    let refused = app
        .client
        .post(app.url("/api/webhooks/n8n"))
        .bearer_auth(format!("{}x", h.key))
        .json(
            &json!({"integration_id": h.integration_id, "data_type": "contacts",
                      "source_type": "hubspot", "records": []}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let token = syncbridge::admin::tokens::create(&app.db.pool, h.tenant_id, None, false)
        .await
        .unwrap()
        .token
        .plaintext;
    let listed = app
        .client
        .get(app.url("/api/v1/integrations"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let made: Value = app
        .client
        .post(app.url(&format!("/api/v1/integrations/{}/keys", h.integration_id)))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_key = made["key"]
        .as_str()
        .expect("the new key, shown once")
        .to_string();
    let signed_in = app
        .client
        .post(app.url("/sign-in"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert!(signed_in.status().is_success() || signed_in.status().is_redirection());

    let n8n = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&n8n)
        .await;
    helpers::manual_sync_at(
        &app,
        h.integration_id,
        &n8n,
        json!({"credentials": {"kind": "header", "name": "X-N8N-Key", "value": N8N_SECRET}}),
    )
    .await;
    // The workers unseal the credentials with the same key.
    let mut config = helpers::test_config();
    config.encryption_key = Some(ENCRYPTION_KEY.to_string().into());
    config.worker.poll_interval_ms = 20;
    helpers::work_until_done(
        &app.db,
        &config,
        "SELECT count(*) FROM jobs WHERE state IN ('available', 'scheduled', 'running', 'retryable')",
    )
    .await;
    let scraped = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);

    let logs = captured.text();
    // The capture saw the work: a request line per request, naming route and request id.
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "request")
        .collect();
    let webhook_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l["http.route"] == "/api/webhooks/n8n")
        .collect();
    assert_eq!(webhook_lines.len(), 2, "{logs}");
    assert_eq!(webhook_lines[0]["http.status"], 202);
    assert_eq!(webhook_lines[1]["http.status"], 401);
    assert_eq!(webhook_lines[1]["error.code"], "invalid_api_key");
    assert!(
        webhook_lines
            .iter()
            .all(|l| l["request.id"].as_str().is_some_and(|id| !id.is_empty()))
    );
    assert!(
        lines
            .iter()
            .any(|l| l["http.route"] == "/api/admin/integrations/{id}/sync")
    );
    assert!(logs.contains("n8n accepted the sync trigger"));
    assert!(logs.contains(receipt["batch_id"].as_str().unwrap()));

    for (what, secret) in [
        ("the webhook key", h.key.as_str()),
        ("the key made on the API", new_key.as_str()),
        ("the tenant token", token.as_str()),
        ("the admin token", ADMIN_TOKEN),
        ("the metrics token", METRICS_TOKEN),
        ("the n8n credential", N8N_SECRET),
        ("the encryption key", ENCRYPTION_KEY),
        ("the database URL", &app.db.url()),
    ] {
        assert!(!logs.contains(secret), "{what} was logged");
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every metric name the service and its queue engine record.
fn exported() -> BTreeSet<String> {
    syncbridge::telemetry::metrics::NAMES
        .iter()
        .copied()
        .chain(jobs::metrics::NAMES.iter().map(|(name, _, _)| *name))
        .map(str::to_string)
        .collect()
}

/// The metric names `text` uses, a histogram's `_bucket`, `_count` and `_sum` series by their
/// histogram's name.
fn names_in(text: &str) -> BTreeSet<String> {
    let name = Regex::new(r"\bsyncbridge_[a-z0-9_]+").unwrap();
    let exported = exported();
    name.find_iter(text)
        .map(|m| {
            let n = m.as_str();
            for suffix in ["_bucket", "_count", "_sum"] {
                if let Some(base) = n.strip_suffix(suffix)
                    && exported.contains(base)
                {
                    return base.to_string();
                }
            }
            n.to_string()
        })
        .collect()
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(root().join("examples/prometheus"))
        .output()
        .expect("promtool runs (Debian's `prometheus` package provides it; .ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    promtool(&["test", "rules", "alerts_test.yml"]);
}

#[test]
fn the_rules_the_dashboard_and_the_docs_name_only_exported_series() {
    let exported = exported();
    let read = |path: &str| std::fs::read_to_string(root().join(path)).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("examples/grafana/syncbridge.json")).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for (file, text) in [
        (
            "examples/prometheus/alerts.yml",
            read("examples/prometheus/alerts.yml"),
        ),
        ("examples/grafana/syncbridge.json", exprs.join("\n")),
    ] {
        let unknown: Vec<String> = names_in(&text).difference(&exported).cloned().collect();
        assert!(
            unknown.is_empty(),
            "{file} names series the service does not export: {unknown:?}"
        );
    }
    // The reference lists every series, and no other.
    let documented = names_in(&read("docs/METRICS.md"));
    assert_eq!(
        exported.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "series docs/METRICS.md lacks"
    );
    assert_eq!(
        documented.difference(&exported).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "series docs/METRICS.md names that are not exported"
    );
}

/// A worker process serves its own `/metrics` on `metrics.worker_listen`, without a token: the
/// records it processed are counted there (the web role that accepted them is another process).
#[tokio::test]
async fn a_worker_process_serves_its_own_metrics_on_its_listener() {
    use std::io::{BufRead, BufReader};
    let app = TestApp::spawn().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_syncbridge"))
        .arg("worker")
        .env("DATABASE_URL", app.db.url())
        .env_remove("SYNCBRIDGE_ENV")
        .env("SYNCBRIDGE__METRICS__WORKER_LISTEN", &address)
        .env("SYNCBRIDGE__WORKER__POLL_INTERVAL_MS", "50")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = worker.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let served = format!("metrics served on http://{address}/metrics");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("the worker says where its metrics are");
        if line.contains(&served) {
            break;
        }
    }

    let h = helpers::hubspot_integration(&app.db.pool, "Worker Metrics Co").await;
    let contacts = vec![json!({"id": "c1", "properties": {"email": "a@worker.example"}})];
    helpers::deliver(&app, &h, "contacts", contacts, false).await;
    let created = r#"syncbridge_records_processed_total{data_type="contacts",outcome="created"} 1"#;
    // The worker's counters move before its job's commit: once no job is left, they are set.
    helpers::until_none_left(
        &app.db,
        "SELECT count(*) FROM jobs WHERE state IN ('available', 'scheduled', 'running', 'retryable')",
        std::time::Duration::from_secs(60),
    )
    .await
    .expect("the worker processes the delivery");
    let page = app
        .client
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(created), "{page}");
    assert!(page.contains("syncbridge_build_info{version="));
    // The listener serves nothing but /metrics.
    let other = app
        .client
        .get(format!("http://{address}/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(worker.wait().unwrap().success());
}
