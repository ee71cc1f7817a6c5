//! The console's working pages past the first ones (`console.rs` has the harness): editing an
//! integration (the schedule read back, `If-Match` semantics), its API keys, mappings with a
//! live preview, paging through sync logs, errors and records, one job and selected jobs, what
//! the dashboard flags, a failed record's error in a browser, and the pages at a phone's width.

use fantoccini::Locator;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use syncbridge::admin;

use crate::{
    console::{Browser, csrf_of, fetch, post, session, tenant_token},
    helpers::{self, ADMIN_TOKEN, TestApp},
};

/// The `href` of the link whose `id` is `id`, as a browser reads it (entities decoded).
fn href_of(page: &str, id: &str) -> Option<String> {
    let at = page.find(&format!("id=\"{id}\""))?;
    let tag_start = page[..at].rfind('<')?;
    let tag_end = at + page[at..].find('>')?;
    let tag = &page[tag_start..tag_end];
    let href = tag.split("href=\"").nth(1)?.split('"').next()?;
    Some(href.replace("&#38;", "&").replace("&amp;", "&"))
}

/// How many times `needle` occurs in `page`.
fn occurrences(page: &str, needle: &str) -> usize {
    page.matches(needle).count()
}

#[tokio::test]
async fn in_a_browser_an_integration_is_edited_its_schedule_read_back_and_a_concurrent_change_kept()
{
    // Credentials are kept sealed: the app has a key to seal them with.
    let app = TestApp::spawn_configured(helpers::TestDb::migrated().await, None, |c| {
        c.encryption_key = Some(
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
                .to_string()
                .into(),
        );
    })
    .await;
    let h = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let token = tenant_token(&app, h.tenant_id).await;
    let browser = Browser::start().await;
    browser.sign_in(&app, &token).await;
    let edit = app.url(&format!("/integrations/{}/edit", h.integration_id));
    browser.client.goto(&edit).await.unwrap();
    assert_eq!(browser.text("#credentials-state").await, "Not set.");

    // The schedule reads back as it is typed, in its time zone, with its next three runs.
    let field = |id: &'static str| {
        let client = browser.client.clone();
        async move { client.find(Locator::Id(id)).await.unwrap() }
    };
    let type_into = |id: &'static str, text: &'static str| {
        let client = browser.client.clone();
        async move {
            let found = client.find(Locator::Id(id)).await.unwrap();
            found.send_keys(text).await.unwrap();
        }
    };
    let submit = || {
        let client = browser.client.clone();
        async move {
            let button = client
                .find(Locator::Css("#integration-form button[type=submit]"))
                .await
                .unwrap();
            button.click().await.unwrap();
        }
    };
    type_into("schedule", "30 9 * * MON-FRI").await;
    let words = browser
        .wait_for_text("#schedule-reading", "At 09:30 AM, Monday through Friday")
        .await;
    assert!(words.contains("(UTC)"), "{words}");
    let next = browser
        .client
        .find_all(Locator::Css("#schedule-next li"))
        .await
        .unwrap();
    assert_eq!(next.len(), 3);
    let timezone = field("timezone").await;
    timezone.clear().await.unwrap();
    timezone.send_keys("Europe/Berlin").await.unwrap();
    browser
        .wait_for_text("#schedule-reading", "(Europe/Berlin)")
        .await;
    let first = browser.text("#schedule-next li").await;
    assert!(first.contains("09:30 CE"), "local time first: {first}");
    // A schedule the API refuses says why before the form is sent.
    let schedule = field("schedule").await;
    schedule.clear().await.unwrap();
    schedule.send_keys("* * * * * *").await.unwrap();
    browser
        .wait_for_text("#schedule-error", "at most once a minute")
        .await;
    schedule.clear().await.unwrap();
    schedule.send_keys("30 9 * * MON-FRI").await.unwrap();
    browser.wait_for_css("#schedule-words").await;
    type_into("auth_header", "X-N8N-Key").await;
    type_into("auth_value", "n8n-secret-value").await;
    submit().await;
    // Refused as the API refuses it: a schedule has nobody to ask without a webhook URL.
    browser.wait_for_text("#form-error", "webhook URL").await;
    assert!(
        !browser
            .client
            .source()
            .await
            .unwrap()
            .contains("n8n-secret-value")
    );
    type_into("webhook_url", "http://127.0.0.1:5678/webhook/hubspot").await;
    type_into("auth_value", "n8n-secret-value").await;
    submit().await;
    browser.wait_for_text("p.notice", "Saved HubSpot.").await;
    let settings = admin::settings::get(&app.db.pool, h.integration_id)
        .await
        .unwrap();
    assert_eq!(settings.schedule.as_deref(), Some("30 9 * * MON-FRI"));
    assert_eq!(settings.timezone, "Europe/Berlin");
    assert_eq!(settings.auth, "header");

    // Credentials are write-only: the form says they are set, never what they are.
    browser.client.goto(&edit).await.unwrap();
    assert!(
        browser
            .text("#credentials-state")
            .await
            .starts_with("Set (header auth)")
    );
    assert!(
        !browser
            .client
            .source()
            .await
            .unwrap()
            .contains("n8n-secret-value")
    );

    // Someone changes it meanwhile: this form's save is refused, their change kept.
    let theirs = app
        .client
        .patch(app.url(&format!("/api/v1/integrations/{}", h.integration_id)))
        .bearer_auth(&token)
        .json(&json!({"description": "theirs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::OK);
    let name = field("name").await;
    name.clear().await.unwrap();
    name.send_keys("Mine").await.unwrap();
    submit().await;
    browser
        .wait_for_text("#form-error", "Someone changed")
        .await;
    let (_, now) = helpers::get(
        &app,
        &format!("/api/v1/integrations/{}", h.integration_id),
        &token,
    )
    .await;
    assert_eq!(
        (&now["name"], &now["description"]),
        (&json!("HubSpot"), &json!("theirs"))
    );
    browser.client.close().await.unwrap();
}

#[tokio::test]
async fn an_integrations_api_keys_are_listed_added_once_and_revoked() {
    let app = TestApp::spawn().await;
    let h = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let token = tenant_token(&app, h.tenant_id).await;
    let (client, cookie) = session(&app, &token).await;
    let path = format!("/integrations/{}/keys", h.integration_id);
    let (status, page) = fetch(&client, &app, &path, &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(occurrences(&page, "/revoke\""), 1, "the one key there is");
    let csrf = csrf_of(&page);
    let added = client
        .post(app.url(&path))
        .header(header::COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str()), ("name", "n8n staging")])
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::OK);
    let page = added.text().await.unwrap();
    let key = page
        .split("<pre id=\"new-key\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    assert!(key.starts_with("sbk_"), "{key}");
    assert!(page.contains("n8n staging"));
    let (_, again) = fetch(&client, &app, &path, &cookie).await;
    assert!(!again.contains(&key), "shown once");
    assert_eq!(occurrences(&again, "/revoke\""), 2);

    // Each delivery its own records: the same body again would be a duplicate.
    let deliver = |key: String, record: &str| {
        let app = &app;
        let body = json!({"integration_id": h.integration_id, "data_type": "contacts",
                          "source_type": "hubspot", "final": true, "records": [{"id": record}]});
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
    assert_eq!(deliver(key.clone(), "c1").await, StatusCode::ACCEPTED);
    let (_, keys) = helpers::get(
        &app,
        &format!("/api/v1/integrations/{}/keys", h.integration_id),
        &token,
    )
    .await;
    let new_id = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "n8n staging")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = post(
        &client,
        &app,
        &format!("{path}/{new_id}/revoke"),
        &cookie,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(revoked, StatusCode::SEE_OTHER);
    assert_eq!(deliver(key, "c2").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        deliver(h.key.clone(), "c3").await,
        StatusCode::ACCEPTED,
        "the other key works"
    );
    let (_, page) = fetch(&client, &app, &path, &cookie).await;
    assert_eq!(
        occurrences(&page, "/revoke\""),
        1,
        "the revoked one has no button"
    );
}

#[tokio::test]
async fn in_a_browser_a_mapping_target_is_refused_then_set_and_previewed_live() {
    let app = TestApp::spawn().await;
    let h = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let token = tenant_token(&app, h.tenant_id).await;
    helpers::deliver(
        &app,
        &h,
        "contacts",
        vec![json!({"id": "c1", "properties": {"email": "ada@northwind.io", "mobile": "+49 1"}})],
        false,
    )
    .await;
    let browser = Browser::start().await;
    browser.sign_in(&app, &token).await;
    browser
        .client
        .goto(&app.url(&format!(
            "/mappings?integration_id={}&data_type=contacts",
            h.integration_id
        )))
        .await
        .unwrap();
    assert!(browser.text("#target-email").await.contains("preset"));

    let field = |id: &'static str| {
        let client = browser.client.clone();
        async move { client.find(Locator::Id(id)).await.unwrap() }
    };
    field("m-target").await.send_keys("phone").await.unwrap();
    field("m-mapping")
        .await
        .send_keys(r#"{"source": "properties.mobile", "ops": [{"op": "frobnicate"}]}"#)
        .await
        .unwrap();
    field("save-target").await.click().await.unwrap();
    let refused = browser.wait_for_text("#mapping-error", "phone").await;
    assert!(
        refused.contains("frobnicate"),
        "the server's reason: {refused}"
    );
    let mapping = field("m-mapping").await;
    mapping.clear().await.unwrap();
    mapping
        .send_keys(r#"{"source": "properties.mobile"}"#)
        .await
        .unwrap();
    field("save-target").await.click().await.unwrap();
    browser
        .wait_for_text("#mapping-notice", "Saved phone.")
        .await;
    let row = browser.text("#target-phone").await;
    assert!(
        row.contains("override") && row.contains("properties.mobile"),
        "{row}"
    );

    // Pasted records are previewed as they are typed, nothing stored.
    field("preview-records")
        .await
        .send_keys(
            r#"[{"id": "p1", "properties": {"mobile": "+1 555"}}, {"id": "p2", "properties": {"createdate": "someday"}}]"#,
        )
        .await
        .unwrap();
    let preview = browser.wait_for_text("#preview-result", "+1 555").await;
    assert!(preview.contains("invalid_date"), "{preview}");
    // The last stored batch, as n8n sent it.
    field("preview-last-batch").await.click().await.unwrap();
    let preview = browser
        .wait_for_text("#preview-result", "of the last stored batch")
        .await;
    assert!(
        preview.contains("ada@northwind.io") && preview.contains("+49 1"),
        "{preview}"
    );
    let stored = helpers::count(
        &mut app.db.owner().await,
        "SELECT count(*) FROM external_contacts",
    )
    .await;
    assert_eq!(stored, 0, "previews store nothing");
    browser.client.close().await.unwrap();
}

#[tokio::test]
async fn sync_logs_errors_and_records_page_past_the_first_page_and_filter() {
    let app = TestApp::spawn().await;
    let h = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let token = tenant_token(&app, h.tenant_id).await;
    // 105 closed syncs, an hour apart, the newest half an hour ago (arranged as the table's
    // owner: the application's role sees rows through row level security only).
    let mut owner = app.db.owner().await;
    sqlx::query(
        "INSERT INTO integration_sync_logs
             (tenant_id, integration_id, trigger, status, failure_reason, created_at, completed_at)
         SELECT $1, $2, 'manual',
                CASE WHEN n % 10 = 5 THEN 'failed' ELSE 'success' END,
                CASE WHEN n % 10 = 5 THEN 'source_error' END,
                now() - interval '30 minutes' - n * interval '1 hour', now() - n * interval '1 hour'
         FROM generate_series(0, 104) n",
    )
    .bind(h.tenant_id)
    .bind(h.integration_id)
    .execute(&mut owner)
    .await
    .unwrap();
    let (client, cookie) = session(&app, &token).await;
    let rows = |page: &str| occurrences(page, "<td><a href=\"/syncs/");
    let (_, first) = fetch(&client, &app, "/syncs", &cookie).await;
    assert_eq!(rows(&first), 100);
    let older = href_of(&first, "older-syncs").expect("a link to older syncs");
    let (_, second) = fetch(&client, &app, &older, &cookie).await;
    assert_eq!(rows(&second), 5);
    assert!(!second.contains("id=\"older-syncs\""));
    let (status, page) = fetch(&client, &app, "/syncs?cursor=not-ours", &cookie).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("not one this console made"));
    for (since, expected) in [("1h", 1), ("24h", 24), ("7d", 100)] {
        let (_, page) = fetch(&client, &app, &format!("/syncs?since={since}"), &cookie).await;
        assert_eq!(rows(&page), expected, "since {since}");
    }
    // By status (one in ten failed), with time, and by integration (another has none).
    let (_, page) = fetch(&client, &app, "/syncs?status=failed", &cookie).await;
    assert_eq!(rows(&page), 10, "hours 5, 15, … 95");
    assert_eq!(occurrences(&page, "source_error"), 10);
    let (_, page) = fetch(&client, &app, "/syncs?status=failed&since=24h", &cookie).await;
    assert_eq!(rows(&page), 2, "hours 5 and 15");
    let other = admin::create_integration(
        &app.db.pool,
        h.tenant_id,
        syncbridge::domain::SourceType::Zendesk,
        "Other",
        None,
    )
    .await
    .unwrap();
    let (_, page) = fetch(
        &client,
        &app,
        &format!("/syncs?integration_id={}", other.id),
        &cookie,
    )
    .await;
    assert_eq!(rows(&page), 0);
    assert!(page.contains("No sync matches."));

    // A sync's errors past the 50 its page shows.
    let sync_id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM integration_sync_logs ORDER BY created_at DESC LIMIT 1")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    sqlx::query(
        "INSERT INTO integration_sync_errors
             (tenant_id, integration_id, sync_log_id, record_index, external_id, field, code, message)
         SELECT $1, $2, $3, n, 'r' || n, 'email', 'invalid_email', 'not an email'
         FROM generate_series(1, 60) n",
    )
    .bind(h.tenant_id)
    .bind(h.integration_id)
    .bind(sync_id)
    .execute(&mut owner)
    .await
    .unwrap();
    let error_rows = |page: &str| occurrences(page, "<code>invalid_email</code>");
    let (_, page) = fetch(&client, &app, &format!("/syncs/{sync_id}"), &cookie).await;
    assert_eq!(error_rows(&page), 50);
    let more = href_of(&page, "more-errors").expect("a link to more errors");
    let (_, rest) = fetch(&client, &app, &more, &cookie).await;
    assert_eq!(error_rows(&rest), 10, "{more}");
    assert!(rest.contains(">r60<") && !rest.contains(">r50<"));

    // Records by integration and by account, paged.
    admin::tenant_api::create_account(
        &app.db.pool,
        h.tenant_id,
        "Northwind",
        &["northwind.io".into()],
    )
    .await
    .unwrap();
    let contacts = |n: usize, domain: &str| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": format!("{domain}-{i}"), "properties": {"email": format!("p{i}@{domain}")}}))
            .collect()
    };
    let mut alpha = contacts(101, "northwind.io");
    alpha.extend(contacts(2, "other.com"));
    helpers::deliver(&app, &h, "contacts", alpha, false).await;
    let beta = {
        let made = admin::create_integration(
            &app.db.pool,
            h.tenant_id,
            syncbridge::domain::SourceType::Hubspot,
            "Beta",
            None,
        )
        .await
        .unwrap();
        let key = admin::create_api_key(&app.db.pool, made.id, None)
            .await
            .unwrap();
        helpers::HubspotIntegration {
            tenant_id: h.tenant_id,
            integration_id: made.id,
            key: key.key.plaintext,
        }
    };
    let mut beta_contacts = contacts(2, "northwind.io");
    for (i, c) in beta_contacts.iter_mut().enumerate() {
        c["id"] = json!(format!("beta-{i}"));
    }
    helpers::deliver(&app, &beta, "contacts", beta_contacts, false).await;
    helpers::drain(&app.db).await;
    let account: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM accounts WHERE name = 'Northwind'")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    let record_rows = |page: &str| occurrences(page, "<td><a href=\"/records/contacts/");
    let walk = |query: String| {
        let (client, cookie, app) = (&client, &cookie, &app);
        async move {
            let mut seen = Vec::new();
            let mut next = Some(format!("/records?{query}"));
            while let Some(path) = next.take() {
                assert!(seen.len() < 5, "pages never end: {path}");
                let (status, page) = fetch(client, app, &path, cookie).await;
                assert_eq!(status, StatusCode::OK, "{path}");
                seen.push(record_rows(&page));
                next = href_of(&page, "more-records");
            }
            seen
        }
    };
    assert_eq!(
        walk(format!(
            "data_type=contacts&integration_id={}",
            h.integration_id
        ))
        .await,
        vec![100, 3]
    );
    assert_eq!(
        walk(format!("data_type=contacts&account_id={account}")).await,
        vec![100, 3]
    );
    assert_eq!(
        walk(format!(
            "data_type=contacts&account_id={account}&integration_id={}",
            beta.integration_id
        ))
        .await,
        vec![2]
    );
}

#[tokio::test]
async fn one_job_shows_its_attempts_and_is_retried_and_selected_jobs_are_retried() {
    use syncbridge::tasks::Ping;
    let app = TestApp::spawn().await;
    helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let mut conn = app.db.pool.acquire().await.unwrap();
    let queue = jobs::Queue::default();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            queue
                .enqueue(&mut conn, &jobs::NewJob::new(&Ping::default()).unwrap())
                .await
                .unwrap(),
        );
    }
    drop(conn);
    sqlx::query(
        "UPDATE jobs SET state = 'failed', attempt = 2, max_attempts = 2, finalized_at = now(),
                errors = '[{\"attempt\": 1, \"at\": \"2026-12-01T10:00:00Z\", \"error\": \"peer said 500\", \"worker\": \"w-1\"},
                           {\"attempt\": 2, \"at\": \"2026-12-01T10:05:00Z\", \"error\": \"peer said 503\", \"worker\": \"w-2\"}]'
         WHERE id = ANY($1)",
    )
    .bind(&ids[..3])
    .execute(&app.db.pool)
    .await
    .unwrap();
    let (client, cookie) = session(&app, ADMIN_TOKEN).await;
    let state_of = |id: i64| {
        let pool = app.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT state FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };

    let (_, page) = fetch(&client, &app, &format!("/jobs/{}", ids[0]), &cookie).await;
    assert!(page.contains("peer said 500") && page.contains("peer said 503"));
    assert!(page.contains("w-2") && page.contains("2 of 2"));
    assert!(page.contains("id=\"retry-job\"") && !page.contains("id=\"cancel-job\""));
    let csrf = csrf_of(&page);
    let retried = post(
        &client,
        &app,
        &format!("/jobs/{}/retry", ids[0]),
        &cookie,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(retried, StatusCode::SEE_OTHER);
    assert_eq!(state_of(ids[0]).await, "available");

    // The still available fourth job is cancelled from its page.
    let cancelled = post(
        &client,
        &app,
        &format!("/jobs/{}/cancel", ids[3]),
        &cookie,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(cancelled, StatusCode::SEE_OTHER);
    assert_eq!(state_of(ids[3]).await, "cancelled");

    // Of the two dead ones left, the one ticked is retried; the other stays dead.
    let (_, list) = fetch(&client, &app, "/jobs?state=failed", &cookie).await;
    assert!(list.contains(&format!("id=\"select-{}\"", ids[1])));
    let selected = client
        .post(app.url("/jobs/selected"))
        .header(header::COOKIE, &cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={csrf}&state=failed&id={}&action=retry",
            ids[1]
        ))
        .send()
        .await
        .unwrap();
    let location = selected.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(location, "/jobs?state=failed&done=1");
    assert_eq!(state_of(ids[1]).await, "available");
    assert_eq!(state_of(ids[2]).await, "failed");
    let (_, list) = fetch(&client, &app, &location, &cookie).await;
    assert!(list.contains("1 jobs changed."));
    // Without the session's CSRF token, nothing.
    let forged = client
        .post(app.url("/jobs/selected"))
        .header(header::COOKIE, &cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!(
            "csrf=forged&state=failed&id={}&action=retry",
            ids[2]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(state_of(ids[2]).await, "failed");

    // Retry all that match the filter: a queue's dead jobs only, counted before.
    let mut conn = app.db.pool.acquire().await.unwrap();
    let mut others = Vec::new();
    for _ in 0..3 {
        let mut job = jobs::NewJob::new(&Ping::default()).unwrap();
        job.queue = "other".into();
        others.push(queue.enqueue(&mut conn, &job).await.unwrap());
    }
    drop(conn);
    sqlx::query("UPDATE jobs SET state = 'failed', finalized_at = now() WHERE id = ANY($1)")
        .bind(&others)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (_, list) = fetch(&client, &app, "/jobs?state=failed&queue=other", &cookie).await;
    assert!(
        list.contains("id=\"tab-failed\">3<"),
        "the tab counts the filter's"
    );
    let confirm = href_of(&list, "retry-all").unwrap();
    let (_, page) = fetch(&client, &app, &confirm, &cookie).await;
    assert!(page.contains("<strong>3</strong> jobs"), "{page}");
    let done = client
        .post(app.url("/jobs/bulk"))
        .header(header::COOKIE, &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("action", "retry"),
            ("state", "failed"),
            ("queue", "other"),
            ("kind", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        done.headers()[header::LOCATION],
        "/jobs?state=failed&queue=other&done=3"
    );
    for id in others {
        assert_eq!(state_of(id).await, "available");
    }
    assert_eq!(
        state_of(ids[2]).await,
        "failed",
        "another queue's stays dead"
    );
}

#[tokio::test]
async fn the_dashboard_flags_dead_jobs_and_a_sync_open_longer_than_its_schedule() {
    use syncbridge::tasks::Ping;
    let app = TestApp::spawn().await;
    let h = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let token = tenant_token(&app, h.tenant_id).await;
    let (client, cookie) = session(&app, &token).await;
    let (_, page) = fetch(&client, &app, "/", &cookie).await;
    assert!(!page.contains("id=\"attention\""), "nothing to flag yet");

    let mut conn = app.db.pool.acquire().await.unwrap();
    let job = jobs::NewJob::new(&Ping::default())
        .unwrap()
        .tag(syncbridge::sync::job_tag(h.tenant_id, h.integration_id));
    let id = jobs::Queue::default()
        .enqueue(&mut conn, &job)
        .await
        .unwrap();
    drop(conn);
    sqlx::query("UPDATE jobs SET state = 'failed', finalized_at = now() WHERE id = $1")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    helpers::deliver(&app, &h, "contacts", vec![json!({"id": "c1"})], true).await;
    let mut owner = app.db.owner().await;
    sqlx::query("UPDATE integration_sources SET sync_schedule = '@hourly'")
        .execute(&mut owner)
        .await
        .unwrap();
    let (_, page) = fetch(&client, &app, "/", &cookie).await;
    assert!(page.contains("1 dead jobs"), "{page}");
    assert!(
        !page.contains("longer than its schedule"),
        "open for seconds only"
    );
    sqlx::query("UPDATE integration_sync_logs SET created_at = now() - interval '2 hours'")
        .execute(&mut owner)
        .await
        .unwrap();
    let (_, page) = fetch(&client, &app, "/", &cookie).await;
    assert!(
        page.contains("sync open for 2 h, longer than its schedule"),
        "{page}"
    );
}

#[tokio::test]
async fn in_a_browser_a_running_sync_is_live_on_the_list_and_a_failed_records_error_is_shown() {
    let app = TestApp::spawn().await;
    let h = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let token = tenant_token(&app, h.tenant_id).await;
    let receipt = helpers::deliver(
        &app,
        &h,
        "contacts",
        vec![
            json!({"id": "c1", "properties": {"email": "ada@northwind.io"}}),
            json!({"id": "c2", "properties": {"createdate": "someday"}}),
        ],
        false,
    )
    .await;
    let sync_id = receipt["sync_log_id"].as_str().unwrap().to_string();
    let browser = Browser::start().await;
    browser.sign_in(&app, &token).await;
    browser
        .client
        .goto(&app.url("/integrations"))
        .await
        .unwrap();
    let live = format!("#live-{}", h.integration_id);
    browser.wait_for_text(&live, "running").await;
    // A worker processes it: the list follows by itself, no reload.
    let mut config = helpers::test_config();
    config.worker.poll_interval_ms = 20;
    let jobs = helpers::RunningJobs::start(&app.db, &config);
    browser.wait_for_text(&live, "partial").await;
    jobs.stop().await;
    browser
        .client
        .find(Locator::Css(&format!("{live} .badge")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_css("#errors").await;
    assert!(
        browser
            .client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with(&sync_id)
    );
    let errors = browser.text("#errors tbody").await;
    assert!(
        errors.contains("c2")
            && errors.contains("source_created_at")
            && errors.contains("invalid_date"),
        "{errors}"
    );
    assert_eq!(browser.text("#count-failed").await, "1");
    assert_eq!(browser.text("#count-created").await, "1");
    browser.client.close().await.unwrap();
}

/// Every main page fits a phone's width (tables scroll inside their frame, the page does not),
/// and at a laptop's. With `SYNCBRIDGE_SCREENSHOTS=<dir>` it saves each page there too (how
/// docs/screenshots/ is made).
#[tokio::test]
async fn in_a_browser_the_main_pages_fit_a_phone_and_a_laptop() {
    let app = TestApp::spawn().await;
    let h = helpers::hubspot_integration(&app.db.pool, "Northwind").await;
    let token = tenant_token(&app, h.tenant_id).await;
    admin::tenant_api::create_account(
        &app.db.pool,
        h.tenant_id,
        "Northwind",
        &["northwind.io".into()],
    )
    .await
    .unwrap();
    let contacts: Vec<Value> = (1..=40)
        .map(|n| json!({"id": format!("c{n}"), "properties": {"email": format!("person{n}@northwind.io"), "firstname": format!("Person {n}")}}))
        .collect();
    helpers::deliver(&app, &h, "contacts", contacts, false).await;
    let receipt = helpers::deliver(
        &app,
        &h,
        "contacts",
        vec![json!({"id": "bad", "properties": {"createdate": "someday"}})],
        false,
    )
    .await;
    helpers::drain(&app.db).await;
    let sync_id = receipt["sync_log_id"].as_str().unwrap().to_string();
    let pages = [
        ("dashboard", "/".to_string()),
        ("integrations", "/integrations".to_string()),
        ("sync", format!("/syncs/{sync_id}")),
        ("syncs", "/syncs".to_string()),
        ("records", "/records".to_string()),
        (
            "mappings",
            format!("/mappings?integration_id={}", h.integration_id),
        ),
        ("edit", format!("/integrations/{}/edit", h.integration_id)),
    ];
    let shots = std::env::var_os("SYNCBRIDGE_SCREENSHOTS").map(std::path::PathBuf::from);
    let browser = Browser::start().await;
    browser.sign_in(&app, &token).await;
    for (width, height, device) in [(390_u32, 844_u32, "phone"), (1280, 900, "laptop")] {
        browser.client.set_window_size(width, height).await.unwrap();
        for (name, path) in &pages {
            browser.client.goto(&app.url(path)).await.unwrap();
            browser.wait_for_css("main h1").await;
            let overflow = browser
                .client
                .execute(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                    vec![],
                )
                .await
                .unwrap();
            // What sticks out, named in the failure.
            let wide = browser
                .client
                .execute(
                    "return [...document.querySelectorAll('body *')]
                        .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth
                                     && !e.closest('.table-wrap'))
                        .map(e => e.tagName + '.' + e.className + '#' + e.id).slice(0, 10)",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(
                overflow,
                json!(0),
                "{name} scrolls sideways at {device} width: {wide}"
            );
            if let Some(dir) = &shots {
                std::fs::create_dir_all(dir).unwrap();
                let png = browser.client.screenshot().await.unwrap();
                std::fs::write(dir.join(format!("{name}-{device}.png")), png).unwrap();
            }
        }
    }
    // The keyboard reaches the page: the first Tab stop is the console's own first link.
    use fantoccini::actions::{InputSource, KeyAction, KeyActions};
    browser.client.goto(&app.url("/")).await.unwrap();
    browser.wait_for_css("main h1").await;
    // The page, not whatever held focus before it, receives the key (under a loaded machine
    // the window can still be handing focus over when the first key arrives).
    browser
        .client
        .execute("window.focus(); document.activeElement?.blur();", vec![])
        .await
        .unwrap();
    let tab = char::from(fantoccini::key::Key::Tab);
    let press = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: tab })
        .then(KeyAction::Up { value: tab });
    browser.client.perform_actions(press).await.unwrap();
    let focused = browser
        .client
        .execute("return document.activeElement.outerHTML", vec![])
        .await
        .unwrap();
    let focused = focused.as_str().unwrap_or_default();
    assert!(
        focused.starts_with("<a") && focused.contains(">syncbridge</a>"),
        "the first Tab stop is {focused}"
    );
    browser.client.close().await.unwrap();
}
