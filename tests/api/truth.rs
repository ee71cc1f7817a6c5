//! Syncs that tell the truth, through the real admin API, trigger, webhook and worker: cursors per
//! data type taken at the sync's start, completion per requested data type, source errors
//! reported by the workflow, and the sweep guard of full syncs.

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

use crate::helpers::{ADMIN_TOKEN, TestApp, count, run_all_jobs};

struct World {
    app: TestApp,
    n8n: MockServer,
    integration: Uuid,
    key: String,
}

/// A HubSpot integration whose n8n webhook is a local server that accepts every trigger; the
/// test plays the workflow, delivering what its stand-in source holds.
async fn world() -> World {
    let app = TestApp::spawn().await;
    let n8n = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&n8n)
        .await;
    let h = crate::helpers::hubspot_integration(&app.db.pool, "Truthful Co").await;
    let (integration, key) = (h.integration_id, h.key);
    let w = World {
        app,
        n8n,
        integration,
        key,
    };
    let response = w
        .app
        .client
        .patch(w.app.url(&format!("/api/admin/integrations/{integration}")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"webhook_url": format!("{}/webhook/hubspot", w.n8n.uri())}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    w
}

/// A HubSpot record as the search API returns it, last modified at `at`.
fn record(data_type: &str, id: &str, at: DateTime<Utc>) -> Value {
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    match data_type {
        "contacts" => json!({"id": id, "properties": {
            "email": format!("person{id}@northwind.io"), "firstname": format!("P{id}"),
            "lastmodifieddate": at}, "updatedAt": at}),
        _ => json!({"id": id, "properties": {"dealname": format!("Deal {id}"), "amount": "100",
            "hs_lastmodifieddate": at}, "updatedAt": at}),
    }
}

impl World {
    /// Requests a sync through the admin API and runs its trigger; returns the body n8n got.
    async fn start(&self, request: Value) -> Value {
        let response = self
            .app
            .client
            .post(self.app.url(&format!(
                "/api/admin/integrations/{}/sync",
                self.integration
            )))
            .bearer_auth(ADMIN_TOKEN)
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "{:?}",
            response.text().await
        );
        let sync_log_id = response.json::<Value>().await.unwrap()["sync_log_id"].clone();
        self.work().await;
        let requests = self.n8n.received_requests().await.unwrap();
        let body: Value = serde_json::from_slice(&requests.last().unwrap().body).unwrap();
        assert_eq!(body["sync_log_id"], sync_log_id);
        body
    }

    /// What the workflow posts for `data_type`: the records of `source` changed since the
    /// trigger's `since` for that type (all of them when it is null).
    fn fetched(trigger: &Value, data_type: &str, source: &[(Value, DateTime<Utc>)]) -> Vec<Value> {
        let since = trigger["since_by_data_type"][data_type]
            .as_str()
            .map(|s| s.parse::<DateTime<Utc>>().unwrap());
        source
            .iter()
            .filter(|(_, at)| since.is_none_or(|since| *at >= since))
            .map(|(r, _)| r.clone())
            .collect()
    }

    async fn deliver_raw(
        &self,
        trigger: &Value,
        data_type: &str,
        extra: Value,
    ) -> reqwest::Response {
        let mut envelope = json!({
            "integration_id": trigger["integration_id"],
            "sync_log_id": trigger["sync_log_id"],
            "source_type": "hubspot",
            "data_type": data_type,
            "sync_mode": trigger["sync_mode"],
        });
        for (k, v) in extra.as_object().unwrap() {
            envelope[k] = v.clone();
        }
        self.app
            .client
            .post(self.app.url("/api/webhooks/n8n"))
            .bearer_auth(&self.key)
            .json(&envelope)
            .send()
            .await
            .unwrap()
    }

    async fn deliver(&self, trigger: &Value, data_type: &str, records: Vec<Value>, last: bool) {
        let response = self
            .deliver_raw(
                trigger,
                data_type,
                json!({"records": records, "final": last}),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "{:?}",
            response.text().await
        );
    }

    async fn work(&self) {
        run_all_jobs(&self.app).await;
    }

    async fn sync(&self, trigger: &Value) -> Value {
        sqlx::query_scalar(
            "SELECT to_jsonb(l) FROM integration_sync_logs l WHERE id = $1::text::uuid",
        )
        .bind(trigger["sync_log_id"].as_str().unwrap())
        .fetch_one(&mut self.app.db.owner().await)
        .await
        .unwrap()
    }

    async fn cursor(&self, data_type: &str) -> Option<DateTime<Utc>> {
        sqlx::query_scalar(
            "SELECT cursor_at FROM integration_cursors WHERE integration_id = $1 AND data_type = $2",
        )
        .bind(self.integration)
        .bind(data_type)
        .fetch_optional(&mut self.app.db.owner().await)
        .await
        .unwrap()
    }

    async fn count(&self, sql: &str) -> i64 {
        count(&mut self.app.db.owner().await, sql).await
    }

    async fn live_contacts(&self) -> i64 {
        self.count("SELECT count(*) FROM external_contacts WHERE deleted_at IS NULL")
            .await
    }
}

fn at(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_record_changed_during_a_sync_arrives_with_the_next_one_and_cursors_are_per_type() {
    let w = world().await;
    let mut contacts = vec![(
        record("contacts", "1", Utc::now() - Duration::hours(3)),
        Utc::now() - Duration::hours(3),
    )];

    // The first sync fetches everything, then a contact changes in the source while the sync is
    // still being delivered and processed.
    let first = w.start(json!({"data_types": ["contacts"]})).await;
    assert_eq!(first["since"], Value::Null);
    assert_eq!(first["since_by_data_type"], json!({"contacts": null}));
    let fetched = World::fetched(&first, "contacts", &contacts);
    let changed_at = Utc::now();
    contacts.push((record("contacts", "2", changed_at), changed_at));
    // One just before the trigger too: the overlap fetches it again, and it counts unchanged.
    w.deliver(&first, "contacts", fetched, true).await;
    w.work().await;
    let log = w.sync(&first).await;
    assert_eq!(log["status"], "success", "{log}");
    let started = at(&log["triggered_at"]);
    assert!(started < changed_at && changed_at < at(&log["completed_at"]));
    assert_eq!(w.cursor("contacts").await, Some(started));

    // The next incremental sync asks from the first one's start, minus the 5 minute overlap:
    // the contact changed meanwhile is fetched (the old rule, the close time, missed it).
    let second = w.start(json!({"data_types": ["contacts"]})).await;
    let since = at(&second["since"]);
    assert_eq!(since, started - Duration::minutes(5));
    assert_eq!(second["since_by_data_type"]["contacts"], second["since"]);
    contacts[0].1 = started - Duration::minutes(1);
    let fetched = World::fetched(&second, "contacts", &contacts);
    assert_eq!(
        fetched.len(),
        2,
        "the changed contact and the one inside the overlap"
    );
    w.deliver(&second, "contacts", fetched, true).await;
    w.work().await;
    let log = w.sync(&second).await;
    assert_eq!(log["status"], "success", "{log}");
    assert_eq!(
        (
            log["records_created"].as_i64(),
            log["records_unchanged"].as_i64()
        ),
        (Some(1), Some(1)),
        "{log}"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM external_contacts WHERE external_id = '2'")
            .await,
        1
    );
    let contacts_cursor = w.cursor("contacts").await.unwrap();
    assert_eq!(contacts_cursor, at(&log["triggered_at"]));

    // A deals-only sync moves the deals cursor and leaves the contacts' alone.
    let deals = w.start(json!({"data_types": ["deals"]})).await;
    assert_eq!(deals["since_by_data_type"], json!({"deals": null}));
    let now = Utc::now();
    w.deliver(&deals, "deals", vec![record("deals", "10", now)], true)
        .await;
    w.work().await;
    let log = w.sync(&deals).await;
    assert_eq!(log["status"], "success", "{log}");
    assert_eq!(w.cursor("deals").await, Some(at(&log["triggered_at"])));
    assert_eq!(w.cursor("contacts").await, Some(contacts_cursor));

    // A sync of both carries each type's own since, and the single one is the earliest.
    let both = w.start(json!({})).await;
    let by_type = &both["since_by_data_type"];
    assert_eq!(
        at(&by_type["contacts"]),
        contacts_cursor - Duration::minutes(5)
    );
    assert_eq!(
        at(&by_type["deals"]),
        w.cursor("deals").await.unwrap() - Duration::minutes(5)
    );
    assert_eq!(both["since"], by_type["contacts"]);

    // Operators see the cursors with the integration's settings.
    let settings = w
        .app
        .get_json(
            &format!("/api/admin/integrations/{}", w.integration),
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(at(&settings["cursors"]["contacts"]), contacts_cursor);
    assert_eq!(
        at(&settings["cursors"]["deals"]),
        w.cursor("deals").await.unwrap()
    );
    assert_eq!(settings["sweep_min_seen_percent"], 50);
}

#[tokio::test]
async fn a_two_type_sync_stays_open_until_both_types_are_final() {
    let w = world().await;
    let trigger = w.start(json!({})).await;
    assert_eq!(trigger["data_types"], json!(["contacts", "deals"]));
    let now = Utc::now();
    w.deliver(
        &trigger,
        "contacts",
        vec![record("contacts", "1", now), record("contacts", "2", now)],
        true,
    )
    .await;
    w.work().await;
    let log = w.sync(&trigger).await;
    assert_eq!(
        log["status"], "running",
        "contacts alone is half the sync: {log}"
    );
    assert_eq!(log["final_data_types"], json!(["contacts"]));
    assert_eq!(log["final_received_at"], Value::Null);
    assert_eq!(
        w.cursor("contacts").await,
        None,
        "nothing moves before the sync closes"
    );

    // Listed as open, with the type it still waits for.
    let listed = crate::cli::ok(&w.app.db, &["syncs", "list", "--open", "--json"]);
    let listed: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(listed["data_types"], json!(["contacts", "deals"]));
    assert_eq!(listed["final_data_types"], json!(["contacts"]));

    // The watchdog, when it comes, names what is missing.
    let timeout = std::time::Duration::from_secs(3600);
    let later = Utc::now() + Duration::hours(2);
    let copy = w
        .start(json!({"force": true, "data_types": ["deals", "contacts"]}))
        .await;
    w.deliver(&copy, "deals", vec![], true).await;
    syncbridge::scheduler::watchdog(&w.app.db.pool, timeout, later)
        .await
        .unwrap();
    let timed_out = w.sync(&copy).await;
    assert_eq!(timed_out["failure_reason"], "timed_out", "{timed_out}");
    assert!(
        timed_out["error_summary"]
            .as_str()
            .unwrap()
            .contains("while waiting for the final batch of contacts"),
        "{timed_out}"
    );

    // The first sync, timed out too by that round, takes its late deals all the same.
    w.deliver(&trigger, "deals", vec![record("deals", "7", now)], true)
        .await;
    w.work().await;
    assert_eq!(
        w.count("SELECT count(*) FROM external_deals WHERE external_id = '7'")
            .await,
        1
    );
}

#[tokio::test]
async fn both_finals_close_the_sync_and_move_both_cursors() {
    let w = world().await;
    let trigger = w.start(json!({})).await;
    let now = Utc::now();
    w.deliver(&trigger, "deals", vec![record("deals", "1", now)], false)
        .await;
    w.deliver(
        &trigger,
        "contacts",
        vec![record("contacts", "1", now)],
        true,
    )
    .await;
    w.work().await;
    assert_eq!(w.sync(&trigger).await["status"], "running");
    w.deliver(&trigger, "deals", vec![record("deals", "2", now)], true)
        .await;
    w.work().await;
    let log = w.sync(&trigger).await;
    assert_eq!(log["status"], "success", "{log}");
    assert_eq!(log["records_created"], 3);
    let started = at(&log["triggered_at"]);
    assert_eq!(w.cursor("contacts").await, Some(started));
    assert_eq!(w.cursor("deals").await, Some(started));
}

#[tokio::test]
async fn a_final_batch_that_overtakes_the_others_waits_for_its_batch_count() {
    let w = world().await;
    let trigger = w.start(json!({"data_types": ["contacts"]})).await;
    let now = Utc::now();
    // n8n posts a workflow's batches concurrently: the last of three arrives first.
    let response = w
        .deliver_raw(
            &trigger,
            "contacts",
            json!({"records": [record("contacts", "3", now)], "final": true, "batch_count": 3}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    w.deliver(
        &trigger,
        "contacts",
        vec![record("contacts", "1", now)],
        false,
    )
    .await;
    w.work().await;
    let log = w.sync(&trigger).await;
    assert_eq!(
        log["status"], "running",
        "one batch is still on its way: {log}"
    );
    assert_eq!(log["final_data_types"], json!([]));
    // The missing one is empty: nothing to process, and its arrival closes the sync.
    w.deliver(&trigger, "contacts", vec![], false).await;
    w.work().await;
    let log = w.sync(&trigger).await;
    assert_eq!(log["status"], "success", "{log}");
    assert_eq!(log["batches_received"], 3);
    let response = w
        .deliver_raw(
            &trigger,
            "contacts",
            json!({"records": [], "final": true, "batch_count": 0}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_reported_source_error_fails_the_sync_at_once_with_no_sweep_and_no_cursor_move() {
    let w = world().await;
    let now = Utc::now();
    let full = w
        .start(json!({"sync_mode": "full", "data_types": ["contacts"]}))
        .await;
    let all: Vec<Value> = (1..=3)
        .map(|i| record("contacts", &i.to_string(), now))
        .collect();
    w.deliver(&full, "contacts", all.clone(), true).await;
    w.work().await;
    assert_eq!(w.sync(&full).await["status"], "success");
    let cursor = w.cursor("contacts").await;
    assert!(cursor.is_some());

    // A full sync gets one page, then HubSpot answers 429 and the workflow reports it.
    let failing = w
        .start(json!({"sync_mode": "full", "data_types": ["contacts"]}))
        .await;
    w.deliver(&failing, "contacts", all[..1].to_vec(), false)
        .await;
    let response = w
        .deliver_raw(
            &failing,
            "contacts",
            json!({"records": [], "error": {"status": 429,
                "message": "You have reached your secondly limit."}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // Failed at once, in the delivery's own transaction: no worker has run yet.
    let log = w.sync(&failing).await;
    assert_eq!(
        (log["status"].as_str(), log["failure_reason"].as_str()),
        (Some("failed"), Some("source_error")),
        "{log}"
    );
    assert_eq!(
        log["error_summary"],
        "fetching contacts failed: the source answered 429: You have reached your secondly limit."
    );
    assert_eq!(
        log["source_error"],
        json!({"data_type": "contacts", "status": 429, "message": "You have reached your secondly limit."})
    );
    w.work().await;
    assert_eq!(w.live_contacts().await, 3, "no sweep ran");
    assert_eq!(
        w.cursor("contacts").await,
        cursor,
        "the cursor did not move"
    );
    let log = w.sync(&failing).await;
    assert_eq!(log["status"], "failed");
    assert_eq!(
        log["records_unchanged"], 1,
        "the page it got is still processed"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM integration_sync_sweeps")
            .await,
        1,
        "only the first full sync decided a sweep"
    );

    // The integration is free to sync again at once, without waiting for the watchdog.
    let again = w.start(json!({"data_types": ["contacts"]})).await;
    assert_eq!(again["sync_mode"], "incremental");

    // A report without a message is refused, with its place named.
    let response = w
        .deliver_raw(
            &again,
            "contacts",
            json!({"records": [], "error": {"status": 500}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_body");
    assert_eq!(body["error"]["details"]["path"], "error.message");
}

#[tokio::test]
async fn a_full_sync_that_saw_too_few_rows_skips_its_sweep_until_an_operator_applies_it() {
    let w = world().await;
    let now = Utc::now();
    let all: Vec<Value> = (1..=10)
        .map(|i| record("contacts", &i.to_string(), now))
        .collect();
    let full = json!({"sync_mode": "full", "data_types": ["contacts"]});
    let first = w.start(full.clone()).await;
    w.deliver(&first, "contacts", all.clone(), true).await;
    w.work().await;
    assert_eq!(w.live_contacts().await, 10);

    // 4 of 10 (40 %) is below the default 50 %: nothing is soft-deleted.
    let partial_view = w.start(full.clone()).await;
    w.deliver(&partial_view, "contacts", all[..4].to_vec(), true)
        .await;
    w.work().await;
    let log = w.sync(&partial_view).await;
    assert_eq!(log["status"], "success", "{log}");
    assert_eq!(w.live_contacts().await, 10);
    let (state, live, seen, reason): (String, i64, i64, String) = sqlx::query_as(
        "SELECT state, live_rows, seen_rows, reason FROM integration_sync_sweeps
         WHERE sync_log_id = $1::text::uuid AND data_type = 'contacts'",
    )
    .bind(partial_view["sync_log_id"].as_str().unwrap())
    .fetch_one(&mut w.app.db.owner().await)
    .await
    .unwrap();
    assert_eq!((state.as_str(), live, seen), ("skipped", 10, 4));
    assert!(reason.contains("4 of 10 live rows (40.0 %)"), "{reason}");

    // The operator, having checked that the other six are gone, applies it.
    let id = partial_view["sync_log_id"].as_str().unwrap();
    let out = crate::cli::ok(&w.app.db, &["syncs", "sweep", id]);
    assert!(out.contains("contacts\tapplied\t6 soft-deleted"), "{out}");
    assert_eq!(w.live_contacts().await, 4);
    let refused = crate::cli::syncbridge(&w.app.db, &["syncs", "sweep", id]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("nothing to apply"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // 3 of 4 (75 %) sweeps on its own; the share is a setting of the integration.
    let enough = w.start(full.clone()).await;
    w.deliver(&enough, "contacts", all[..3].to_vec(), true)
        .await;
    w.work().await;
    assert_eq!(w.live_contacts().await, 3);
    let response = w
        .app
        .client
        .patch(
            w.app
                .url(&format!("/api/admin/integrations/{}", w.integration)),
        )
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"sweep_min_seen_percent": 101}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let response = w
        .app
        .client
        .patch(
            w.app
                .url(&format!("/api/admin/integrations/{}", w.integration)),
        )
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"sweep_min_seen_percent": 0, "data_types": ["tickets"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "data_type_not_supported");
}
