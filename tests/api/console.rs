//! The console (`/`): its security over plain HTTP (sign-in, cookie flags, CSRF, CSP, assets),
//! then in a real Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`):
//! signing in, the dashboard's numbers against the stats API, escaping, tenant isolation by URL,
//! and a sync started with Sync now followed live to its end without a reload.

use std::{process::Stdio, time::Duration};

use tokio::io::AsyncBufReadExt;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use syncbridge::admin::tokens;

use crate::helpers::{self, ADMIN_TOKEN, TestApp};

/// The `name=value` of the session cookie a sign-in answer sets.
pub(crate) fn session_of(response: &reqwest::Response) -> String {
    response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// The CSRF token a page's forms carry.
pub(crate) fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no form with a CSRF token: {page}"))
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

/// `GET path` with the session cookie: status and page.
pub(crate) async fn fetch(
    client: &reqwest::Client,
    app: &TestApp,
    path: &str,
    session: &str,
) -> (StatusCode, String) {
    let response = client
        .get(app.url(path))
        .header(header::COOKIE, session)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// A form posted with the session cookie: the status.
pub(crate) async fn post(
    client: &reqwest::Client,
    app: &TestApp,
    path: &str,
    session: &str,
    form: &[(&str, &str)],
) -> StatusCode {
    client
        .post(app.url(path))
        .header(header::COOKIE, session)
        .form(form)
        .send()
        .await
        .unwrap()
        .status()
}

/// A client that follows no redirect, to see the console's own answers.
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A read-write API token of the tenant.
pub(crate) async fn tenant_token(app: &TestApp, tenant_id: uuid::Uuid) -> String {
    tokens::create(&app.db.pool, tenant_id, None, false)
        .await
        .unwrap()
        .token
        .plaintext
}

/// A browser-less session: the client (following no redirect) and its cookie.
pub(crate) async fn session(app: &TestApp, token: &str) -> (reqwest::Client, String) {
    let client = plain_client();
    let signed_in = client
        .post(app.url("/sign-in"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let cookie = session_of(&signed_in);
    (client, cookie)
}

#[tokio::test]
async fn the_console_signs_in_with_a_token_and_guards_every_change() {
    let app = TestApp::spawn().await;
    let h = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let client = plain_client();

    // Without a session every page, fragment included, sends the browser to sign in.
    let id = h.integration_id;
    for path in [
        "/".to_string(),
        "/integrations".into(),
        "/integrations/schedule?schedule=@daily".into(),
        format!("/integrations/{id}/edit"),
        format!("/integrations/{id}/keys"),
        format!("/mappings?integration_id={id}"),
        "/records".into(),
        "/syncs".into(),
        "/jobs".into(),
        "/jobs/1".into(),
        "/tokens".into(),
        "/accounts".into(),
    ] {
        let response = client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(response.headers()[header::LOCATION], "/sign-in", "{path}");
    }
    let response = client.get(app.url("/sign-in")).send().await.unwrap();
    let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");

    let wrong = client
        .post(app.url("/sign-in"))
        .form(&[("token", "not-a-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("neither the admin token")
    );

    // Another site's page cannot sign the visitor in (to a tenant of its choosing), whether the
    // browser says where the form came from or only its origin shows it.
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
    ] {
        let forged = client
            .post(app.url("/sign-in"))
            .header(name, value)
            .form(&[("token", ADMIN_TOKEN)])
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN, "{name}");
        assert!(forged.headers().get(header::SET_COOKIE).is_none());
    }
    let signed_in = client
        .post(app.url("/sign-in"))
        // Its own origin (a browser in Chromium's tests sends `Sec-Fetch-Site` too).
        .header("origin", app.url("").trim_end_matches('/'))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let cookie = signed_in.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain http: no Secure flag");
    let session = session_of(&signed_in);
    let behind_https = client
        .post(app.url("/sign-in"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert!(
        behind_https.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );

    // An operator first chooses a tenant; a change without the session's CSRF token is refused.
    let page = fetch(&client, &app, "/", &session).await.1;
    assert!(
        page.contains("Choose a tenant") && page.contains("Alpha"),
        "{page}"
    );
    let csrf = csrf_of(&page);
    let pause = format!("/integrations/{}/pause", h.integration_id);
    let forged = post(&client, &app, &pause, &session, &[("csrf", "forged")]).await;
    assert_eq!(forged, StatusCode::FORBIDDEN);
    let chosen = post(
        &client,
        &app,
        "/tenant",
        &session,
        &[
            ("csrf", csrf.as_str()),
            ("tenant_id", &h.tenant_id.to_string()),
        ],
    )
    .await;
    assert_eq!(chosen, StatusCode::SEE_OTHER);
    let paused = post(&client, &app, &pause, &session, &[("csrf", csrf.as_str())]).await;
    assert_eq!(paused, StatusCode::SEE_OTHER);
    let (_, integration) = helpers::get(
        &app,
        &format!("/api/v1/integrations/{}", h.integration_id),
        &tenant_token(&app, h.tenant_id).await,
    )
    .await;
    assert_eq!(integration["status"], "paused");

    // A read-only token's session sees and changes nothing.
    let reader = tokens::create(&app.db.pool, h.tenant_id, None, true)
        .await
        .unwrap();
    let read_only = client
        .post(app.url("/sign-in"))
        .form(&[("token", reader.token.plaintext.as_str())])
        .send()
        .await
        .unwrap();
    let reader_session = session_of(&read_only);
    let page = fetch(&client, &app, "/integrations", &reader_session)
        .await
        .1;
    assert!(
        page.contains("read-only") && !page.contains("Sync now"),
        "{page}"
    );
    let reader_csrf = csrf_of(&page);
    let refused = post(
        &client,
        &app,
        &format!("/integrations/{}/resume", h.integration_id),
        &reader_session,
        &[("csrf", reader_csrf.as_str())],
    )
    .await;
    assert_eq!(refused, StatusCode::FORBIDDEN);
    // Revoking the token ends its sessions.
    tokens::revoke(&app.db.pool, h.tenant_id, reader.info.id)
        .await
        .unwrap();
    let after = fetch(&client, &app, "/integrations", &reader_session).await;
    assert_eq!(after.0, StatusCode::SEE_OTHER);

    // Signed out: the cookie no longer opens anything.
    let out = post(
        &client,
        &app,
        "/sign-out",
        &session,
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(out, StatusCode::SEE_OTHER);
    let after = fetch(&client, &app, "/", &session).await;
    assert_eq!(after.0, StatusCode::SEE_OTHER);

    for (asset, kind) in [
        ("/assets/htmx.min.js", "text/javascript"),
        ("/assets/console.css", "text/css"),
        ("/assets/htmx.LICENSE", "text/plain"),
    ] {
        let response = client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{asset}"
        );
    }
}

/// A headless Chromium behind its chromedriver, both ended when dropped (a test that fails
/// never closes its session, and killing chromedriver alone leaves its Chromium running), with a
/// profile directory of its own that goes with them.
pub(crate) struct Browser {
    pub(crate) client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

/// chromedriver in a process group of its own, killed with the Chromium it started when dropped.
struct Driver(tokio::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let group = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Browser {
    pub(crate) async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            // A group of its own, with the Chromium it starts: see `Drop`.
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) is installed");
        // It says on stdout when it listens: wait for that line, within a deadline.
        let mut lines = tokio::io::BufReader::new(driver.stdout.take().unwrap()).lines();
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("started successfully") {
                    return;
                }
            }
            panic!("chromedriver ended before it listened");
        })
        .await
        .expect("chromedriver listens within 20 s");
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--window-size=1280,900",
                            format!("--user-data-dir={}", profile.path().display())]}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Browser {
            client,
            _driver: Driver(driver),
            _profile: profile,
        }
    }

    pub(crate) async fn sign_in(&self, app: &TestApp, token: &str) {
        self.client.goto(&app.url("/")).await.unwrap();
        let field = self.client.find(Locator::Id("token")).await.unwrap();
        field.send_keys(token).await.unwrap();
        self.client
            .find(Locator::Css("form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_for_css("header.top").await;
    }

    /// The text of `css`. A part htmx swaps in while it is read is read again from the new
    /// page (a few times at most).
    pub(crate) async fn text(&self, css: &str) -> String {
        let mut tries = 0;
        loop {
            let found = self.client.find(Locator::Css(css)).await;
            let read = match found {
                Ok(element) => element.text().await,
                Err(e) => Err(e),
            };
            match read {
                Ok(text) => return text,
                Err(e) if tries < 5 && e.to_string().contains("stale element") => tries += 1,
                Err(e) => panic!("{css}: {e}"),
            }
        }
    }

    /// Waits (20 s at most) until the text of `css` contains `needle` (htmx swaps it in).
    pub(crate) async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.client.find(Locator::Css(css)).await;
            let text = match found {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{css} did not come to say {needle:?} within 20 s: {text:?}"
            );
            // Between two reads of the page: the browser does the waiting, on its own clock.
            tokio::task::yield_now().await;
        }
    }

    /// Waits (20 s at most) until `css` is on the page.
    pub(crate) async fn wait_for_css(&self, css: &str) {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} did not appear: {e}"));
    }
}

#[tokio::test]
async fn in_a_browser_the_dashboard_shows_the_stats_apis_numbers_and_names_are_text() {
    let app = TestApp::spawn().await;
    let a = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let b = helpers::hubspot_integration(&app.db.pool, "Beta").await;
    let token = tenant_token(&app, a.tenant_id).await;
    let contacts = (1..=3)
        .map(|n| json!({"id": format!("c{n}"), "properties": {"email": format!("p{n}@northwind.io")}}))
        .collect();
    helpers::deliver(&app, &a, "contacts", contacts, false).await;
    let b_sync = helpers::deliver(&app, &b, "contacts", vec![json!({"id": "x"})], false).await;
    helpers::drain(&app.db).await;
    // A name that would run if it were not escaped.
    let hostile = "<script>alert(1)</script>";
    let made = app
        .client
        .post(app.url("/api/v1/integrations"))
        .bearer_auth(&token)
        .json(&json!({"source_type": "custom", "name": hostile}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);

    let browser = Browser::start().await;
    browser.sign_in(&app, &token).await;
    let (_, stats) = helpers::get(&app, "/api/v1/stats", &token).await;
    for (id, value) in [
        ("stat-integrations", &stats["integrations"]["total"]),
        ("stat-contacts", &stats["records"]["contacts"]),
        ("stat-tickets", &stats["records"]["tickets"]),
        ("stat-deals", &stats["records"]["deals"]),
        ("stat-syncs-24h", &stats["syncs_last_24h"]),
        ("stat-failed-7d", &stats["failed_syncs_last_7d"]),
    ] {
        assert_eq!(
            browser.text(&format!("#{id}")).await,
            value.to_string(),
            "{id}"
        );
    }
    assert_eq!(stats["records"]["contacts"], 3);
    let bars = browser
        .client
        .find_all(Locator::Css("svg.chart rect.received"))
        .await
        .unwrap();
    assert_eq!(bars.len(), 1, "one day with records received");

    browser
        .client
        .find(Locator::LinkText("Integrations"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_css("table").await;
    let table = browser.text("table").await;
    assert!(table.contains(hostile), "the name shows as text: {table}");
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "no script ran"
    );
    let source = browser.client.source().await.unwrap();
    assert!(source.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    // Records: searched by email (any case), one opened with its raw payload.
    browser
        .client
        .goto(&app.url("/records?data_type=contacts&email=P2@Northwind.IO"))
        .await
        .unwrap();
    let rows = browser
        .client
        .find_all(Locator::Css("#records tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    browser
        .client
        .find(Locator::LinkText("c2"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_css("#raw").await;
    let raw = browser
        .client
        .find(Locator::Id("raw"))
        .await
        .unwrap()
        .prop("textContent")
        .await
        .unwrap()
        .unwrap();
    assert!(
        raw.contains("\"c2\"") && raw.contains("p2@northwind.io"),
        "{raw}"
    );

    // Beta's sync by URL is not there for Alpha.
    let b_sync = b_sync["sync_log_id"].as_str().unwrap();
    browser
        .client
        .goto(&app.url(&format!("/syncs/{b_sync}")))
        .await
        .unwrap();
    assert!(browser.text("main").await.contains("no such sync"));
    // Nor is Beta itself, on any page that names an integration.
    for page in ["edit", "delete", "keys"] {
        browser
            .client
            .goto(&app.url(&format!("/integrations/{}/{page}", b.integration_id)))
            .await
            .unwrap();
        assert!(
            browser.text("main").await.contains("no such integration"),
            "{page}"
        );
    }
    browser
        .client
        .goto(&app.url(&format!("/mappings?integration_id={}", b.integration_id)))
        .await
        .unwrap();
    assert!(browser.text("main").await.contains("no such integration"));
    browser.client.close().await.unwrap();
}

#[tokio::test]
async fn in_a_browser_sync_now_is_followed_live_to_success() {
    let app = TestApp::spawn().await;
    let h = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let (n8n, mut triggers) = helpers::n8n_passing_on_triggers().await;
    let token = tenant_token(&app, h.tenant_id).await;
    let set = app
        .client
        .patch(app.url(&format!("/api/v1/integrations/{}", h.integration_id)))
        .bearer_auth(&token)
        .json(
            &json!({"webhook_url": format!("{}/webhook/hubspot", n8n.uri()),
                      "data_types": ["contacts"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    let mut config = helpers::test_config();
    config.worker.poll_interval_ms = 20;
    let jobs = helpers::RunningJobs::start(&app.db, &config);

    let browser = Browser::start().await;
    browser.sign_in(&app, &token).await;
    browser
        .client
        .goto(&app.url("/integrations"))
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Css(&format!(
            "#integration-{} form[action$='/sync'] button",
            h.integration_id
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_css("#sync-status").await;
    let status = browser.text("#sync-status").await;
    assert!(matches!(status.as_str(), "pending" | "running"), "{status}");
    let url = browser.client.current_url().await.unwrap();

    let sync_log_id = helpers::next_trigger(&mut triggers).await;
    assert!(url.path().ends_with(&sync_log_id), "{url}");
    let contacts: Vec<Value> = (1..=2)
        .map(|n| json!({"id": format!("c{n}"), "properties": {"email": format!("p{n}@northwind.io")}}))
        .collect();
    helpers::deliver_for_sync(&app, &h, &sync_log_id, contacts).await;

    // The page follows the sync by itself (htmx polls its progress) until it closes.
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("#sync-status.success"))
        .await
        .expect("the page says success within 30 s, by itself");
    assert_eq!(
        browser.client.current_url().await.unwrap(),
        url,
        "no reload"
    );
    assert_eq!(browser.text("#count-received").await, "2");
    assert_eq!(browser.text("#count-created").await, "2");
    assert!(
        browser
            .text("#invariant")
            .await
            .contains("received = created")
    );
    jobs.stop().await;
    browser.client.close().await.unwrap();
}

#[tokio::test]
async fn in_a_browser_an_integration_is_added_with_its_key_once_and_deleted_after_confirmation() {
    let app = TestApp::spawn().await;
    let h = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let token = tenant_token(&app, h.tenant_id).await;
    let browser = Browser::start().await;
    browser.sign_in(&app, &token).await;
    browser
        .client
        .goto(&app.url("/integrations/new"))
        .await
        .unwrap();
    let fill = |id: &'static str, value: &'static str| {
        let client = browser.client.clone();
        async move {
            client
                .find(Locator::Id(id))
                .await
                .unwrap()
                .send_keys(value)
                .await
                .unwrap();
        }
    };
    browser
        .client
        .find(Locator::Css("#source_type option[value='zendesk']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    fill("name", "Zendesk EU").await;
    fill("schedule", "every tuesday").await;
    fill("auth_header", "X-N8N-Key").await;
    fill("auth_value", "n8n-secret-value").await;
    browser
        .client
        .find(Locator::Css("form.form-grid button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Refused as the API refuses it, the form kept but never the secret.
    browser.wait_for_css("#form-error").await;
    assert!(browser.text("#form-error").await.contains("every tuesday"));
    let source = browser.client.source().await.unwrap();
    assert!(!source.contains("n8n-secret-value"));
    let name = browser.client.find(Locator::Id("name")).await.unwrap();
    assert_eq!(name.prop("value").await.unwrap().unwrap(), "Zendesk EU");
    let schedule = browser.client.find(Locator::Id("schedule")).await.unwrap();
    schedule.clear().await.unwrap();
    browser
        .client
        .find(Locator::Id("auth_header"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Css("form.form-grid button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_css("#api-key").await;
    let key = browser.text("#api-key").await;
    assert!(key.starts_with("sbk_"), "{key}");
    assert_eq!(browser.text("#header-value").await, format!("Bearer {key}"));
    assert!(
        browser
            .text("#callback-url")
            .await
            .ends_with("/api/webhooks/n8n")
    );
    // The key works for n8n's deliveries, and is not shown again.
    let (_, listed) = helpers::get(&app, "/api/v1/integrations", &token).await;
    let added = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "Zendesk EU")
        .unwrap()
        .clone();
    let added_id = added["id"].as_str().unwrap().to_string();
    let delivered = app
        .client
        .post(app.url("/api/webhooks/n8n"))
        .bearer_auth(&key)
        .json(&json!({"integration_id": added_id, "data_type": "tickets",
                      "source_type": "zendesk", "final": true,
                      "records": [{"id": 1, "subject": "Broken"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), StatusCode::ACCEPTED);
    browser
        .client
        .goto(&app.url("/integrations"))
        .await
        .unwrap();
    assert!(!browser.client.source().await.unwrap().contains(&key));

    // Delete: the confirmation says what goes, then it is gone.
    browser
        .client
        .goto(&app.url(&format!("/integrations/{added_id}/delete")))
        .await
        .unwrap();
    let footprint = browser.text("#footprint").await;
    assert!(
        footprint.contains("1 sync logs and 1 batches"),
        "{footprint}"
    );
    assert!(footprint.contains("1 API keys"), "{footprint}");
    browser
        .client
        .find(Locator::Css("button.danger"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_css("p.notice").await;
    assert!(browser.text("p.notice").await.starts_with("Deleted"));
    let (status, _) = helpers::get(&app, &format!("/api/v1/integrations/{added_id}"), &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    browser.client.close().await.unwrap();
}

#[tokio::test]
async fn in_a_browser_an_operator_retries_all_dead_jobs_after_seeing_how_many() {
    use syncbridge::tasks::Ping;
    let app = TestApp::spawn().await;
    helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    // More dead jobs than a page shows, so the count must be the server's.
    let mut conn = app.db.pool.acquire().await.unwrap();
    let queue = jobs::Queue::default();
    for _ in 0..60 {
        queue
            .enqueue(&mut conn, &jobs::NewJob::new(&Ping::default()).unwrap())
            .await
            .unwrap();
    }
    drop(conn);
    sqlx::query(
        "UPDATE jobs SET state = 'failed', attempt = 1, max_attempts = 1, finalized_at = now(),
                errors = '[{\"attempt\": 1, \"error\": \"peer said 500\"}]'",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();

    let browser = Browser::start().await;
    browser.sign_in(&app, ADMIN_TOKEN).await;
    browser.client.goto(&app.url("/jobs")).await.unwrap();
    assert_eq!(browser.text("#tab-failed").await, "60");
    let rows = browser
        .client
        .find_all(Locator::Css("#jobs tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 50, "a page shows 50");
    assert!(browser.text("#jobs").await.contains("peer said 500"));
    browser
        .client
        .find(Locator::Id("retry-all"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_css("#bulk-count").await;
    assert!(
        browser
            .text("#bulk-count")
            .await
            .contains("retries 60 jobs")
    );
    browser
        .client
        .find(Locator::Id("confirm-bulk"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_css("#no-jobs").await;
    assert_eq!(browser.text("#tab-failed").await, "0");
    let dead = helpers::count(
        &app.db.pool,
        "SELECT count(*) FROM jobs WHERE state = 'failed'",
    )
    .await;
    assert_eq!(dead, 0);

    // A tenant's session does not reach the jobs.
    let token = tokens::create(
        &app.db.pool,
        syncbridge::admin::list_tenants(&app.db.pool).await.unwrap()[0].id,
        None,
        false,
    )
    .await
    .unwrap()
    .token
    .plaintext;
    browser.client.delete_all_cookies().await.unwrap();
    browser.sign_in(&app, &token).await;
    browser.client.goto(&app.url("/jobs")).await.unwrap();
    assert!(
        browser
            .text("main")
            .await
            .contains("sign in with the admin token")
    );
    browser.client.close().await.unwrap();
}

#[tokio::test]
async fn accounts_and_tokens_are_added_warned_about_and_revoked_from_the_console() {
    let app = TestApp::spawn().await;
    let h = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let token = tenant_token(&app, h.tenant_id).await;
    let (client, session) = session(&app, &token).await;
    let csrf = csrf_of(&fetch(&client, &app, "/accounts", &session).await.1);

    let add = |name: &'static str, domains: &'static str| {
        let (client, url, session, csrf) = (
            client.clone(),
            app.url("/accounts"),
            session.clone(),
            csrf.clone(),
        );
        async move {
            let response = client
                .post(url)
                .header(header::COOKIE, session)
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("name", name),
                    ("domains", domains),
                ])
                .send()
                .await
                .unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    let (status, page) = add("Northwind", "https://www.Northwind.io/, northwind.de").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Added Northwind.") && page.contains("northwind.io, northwind.de"));
    let (status, page) = add("Northwind Traders", "northwind.io").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("northwind.io"), "{page}");
    assert!(
        page.contains("claim"),
        "another account claims the domain: {page}"
    );
    let (status, page) = add("  ", "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");

    let made = client
        .post(app.url("/tokens"))
        .header(header::COOKIE, &session)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "reporting"),
            ("read_only", "1"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let shown = made
        .split("<pre id=\"new-token\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    assert!(shown.starts_with("sbt_"), "{shown}");
    let (_, listed) = helpers::get(&app, "/api/v1/tokens", &token).await;
    let reporting = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "reporting")
        .unwrap()
        .clone();
    assert_eq!(reporting["read_only"], true);
    let (_, page) = fetch(&client, &app, "/tokens", &session).await;
    assert!(!page.contains(&shown), "shown once");
    let revoked = post(
        &client,
        &app,
        &format!("/tokens/{}/revoke", reporting["id"].as_str().unwrap()),
        &session,
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(revoked, StatusCode::SEE_OTHER);
    let (status, _) = helpers::get(&app, "/api/v1/tokens", &shown).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_syncs_page_closes_it_and_reprocesses_it_and_says_why_when_it_cannot() {
    let app = TestApp::spawn().await;
    let h = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let token = tenant_token(&app, h.tenant_id).await;
    let receipt = helpers::deliver(&app, &h, "contacts", vec![json!({"id": "c1"})], true).await;
    helpers::drain(&app.db).await;
    let sync_id = receipt["sync_log_id"].as_str().unwrap().to_string();
    let (client, session) = session(&app, &token).await;
    let path = format!("/syncs/{sync_id}");
    let (_, page) = fetch(&client, &app, &path, &session).await;
    assert!(
        page.contains("id=\"close-sync\"") && !page.contains("reprocess-sync"),
        "open"
    );
    let csrf = csrf_of(&page);

    let closed = post(
        &client,
        &app,
        &format!("{path}/close"),
        &session,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(closed, StatusCode::SEE_OTHER);
    let (_, sync) = helpers::get(&app, &format!("/api/v1/syncs/{sync_id}"), &token).await;
    assert_eq!(
        (&sync["status"], &sync["failure_reason"]),
        (&json!("partial"), &json!("closed_by_admin"))
    );
    let (_, page) = fetch(&client, &app, &path, &session).await;
    assert!(
        page.contains("reprocess-sync") && !page.contains("close-sync"),
        "closed"
    );

    // Closing it again says why not, on its page.
    let again = client
        .post(app.url(&format!("{path}/close")))
        .header(header::COOKIE, &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    let location = again.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    let (_, page) = fetch(&client, &app, &location, &session).await;
    assert!(page.contains("already closed"), "{page}");

    let replay = client
        .post(app.url(&format!("{path}/reprocess")))
        .header(header::COOKIE, &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    let location = replay.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        location.starts_with("/syncs/") && !location.contains(&sync_id),
        "{location}"
    );
    let (_, page) = fetch(&client, &app, &location, &session).await;
    assert!(
        page.contains(&format!("replays <a href=\"/syncs/{sync_id}\">")),
        "{page}"
    );
}

#[tokio::test]
async fn an_operators_session_ends_when_the_admin_token_changes() {
    use secrecy::SecretString;
    use syncbridge::admin::console;
    let app = TestApp::spawn().await;
    let h = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let pool = &app.db.pool;
    let old = SecretString::from("old-admin-token-0123456789");
    let new = SecretString::from("new-admin-token-0123456789");
    let operator = console::sign_in(pool, Some(&old), "old-admin-token-0123456789")
        .await
        .unwrap()
        .unwrap();
    assert!(operator.session.install);
    let found = console::session(pool, Some(&old), &operator.secret)
        .await
        .unwrap();
    assert_eq!(found.map(|s| s.id), Some(operator.session.id));
    // Rotated, or removed: the operator's session is gone at its next request.
    assert!(
        console::session(pool, Some(&new), &operator.secret)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        console::session(pool, None, &operator.secret)
            .await
            .unwrap()
            .is_none()
    );
    // A tenant token's session does not depend on the admin token.
    let token = tokens::create(pool, h.tenant_id, None, false)
        .await
        .unwrap()
        .token
        .plaintext;
    let tenant = console::sign_in(pool, Some(&old), &token)
        .await
        .unwrap()
        .unwrap();
    assert!(
        console::session(pool, Some(&new), &tenant.secret)
            .await
            .unwrap()
            .is_some()
    );
    // What is stored is a digest of the session's secret with the token, not the token's own
    // digest (which a guess at a weak admin token could be checked against).
    let mut owner = app.db.owner().await;
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT admin_binding FROM console_sessions WHERE install")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!(stored.len(), 32);
    use sha2::Digest;
    assert_ne!(
        stored,
        sha2::Sha256::digest(b"old-admin-token-0123456789").to_vec()
    );
}
