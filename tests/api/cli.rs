//! The operator's bootstrap commands, run as the real binary against a test database.

use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use sqlx::Row;
use uuid::Uuid;

use crate::helpers::TestDb;

pub(crate) fn syncbridge(db: &TestDb, args: &[&str]) -> Output {
    syncbridge_with(db, args, &[])
}

/// Runs the binary with `env` added to the test environment.
fn syncbridge_with(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_syncbridge"))
        .args(args)
        .envs(env.iter().copied())
        .env("DATABASE_URL", db.url())
        .env_remove("SYNCBRIDGE_ENV")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run syncbridge")
}

/// Runs a command that must succeed and returns its stdout, trimmed.
pub(crate) fn ok(db: &TestDb, args: &[&str]) -> String {
    let out = syncbridge(db, args);
    assert!(
        out.status.success(),
        "syncbridge {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn bootstrap_commands_create_a_tenant_integration_key_and_account() {
    let db = TestDb::migrated().await;
    let tenant: Uuid = ok(&db, &["tenants", "create", "Acme Success"])
        .parse()
        .unwrap();
    let integration: Uuid = ok(
        &db,
        &[
            "integrations",
            "create",
            "--tenant",
            "acme success",
            "--source",
            "hubspot",
            "--name",
            "HubSpot EU",
        ],
    )
    .parse()
    .unwrap();
    let integration_id = integration.to_string();
    let key = ok(
        &db,
        &[
            "keys",
            "create",
            "--integration",
            &integration_id,
            "--name",
            "n8n prod",
        ],
    );
    let tenant_id = tenant.to_string();
    let account: Uuid = ok(
        &db,
        &[
            "accounts",
            "add",
            "--tenant",
            &tenant_id,
            "--name",
            "Northwind",
            "--domain",
            "https://www.Northwind.io/",
            "--domain",
            "northwind.de",
        ],
    )
    .parse()
    .unwrap();

    let mut conn = db.owner().await;
    let row =
        sqlx::query("SELECT tenant_id, source_type, status FROM integration_sources WHERE id = $1")
            .bind(integration)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(row.get::<Uuid, _>(0), tenant);
    assert_eq!(row.get::<String, _>(1), "hubspot");
    assert_eq!(row.get::<String, _>(2), "active");

    // Only the hash of the key is stored, findable by its public prefix.
    let row = sqlx::query("SELECT key_prefix, key_hash, name, tenant_id FROM integration_api_keys WHERE integration_id = $1")
        .bind(integration)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let prefix: String = row.get(0);
    let hash: Vec<u8> = row.get(1);
    assert!(key.starts_with(&format!("{prefix}_")), "{key} / {prefix}");
    assert_eq!(hash, Sha256::digest(key.as_bytes()).to_vec());
    assert_eq!(row.get::<Option<String>, _>(2).as_deref(), Some("n8n prod"));
    assert_eq!(row.get::<Uuid, _>(3), tenant);
    let stored_anywhere: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM integration_api_keys k WHERE k::text LIKE '%' || $1 || '%')",
    )
    .bind(&key[prefix.len() + 1..])
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        !stored_anywhere,
        "the secret part of the key is stored in clear"
    );

    let domains: Vec<String> = sqlx::query_scalar("SELECT domains FROM accounts WHERE id = $1")
        .bind(account)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(domains, ["northwind.io", "northwind.de"]);
}

#[tokio::test]
async fn listing_shows_what_was_created() {
    let db = TestDb::migrated().await;
    let tenant = ok(&db, &["tenants", "create", "Globex"]);
    let integration = ok(
        &db,
        &[
            "integrations",
            "create",
            "--tenant",
            &tenant,
            "--source",
            "zoho_desk",
            "--name",
            "Desk",
        ],
    );
    let tenants = ok(&db, &["tenants", "list"]);
    assert_eq!(tenants.lines().next(), Some("id\tname\tcreated"));
    assert!(tenants.contains(&format!("{tenant}\tGlobex")));
    let as_json: serde_json::Value =
        serde_json::from_str(&ok(&db, &["tenants", "list", "--json"])).unwrap();
    assert_eq!(as_json["name"], "Globex");
    let listed = ok(&db, &["integrations", "list", "--tenant", "Globex"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(
        lines[0],
        "id\tsource\tstatus\tname\tschedule\tnext_tick\tlast_sync\tlast_status\tsyncs\tcontacts\ttickets\tdeals"
    );
    assert_eq!(
        lines[1],
        format!("{integration}\tzoho_desk\tactive\tDesk\t-\t-\t-\t-\t0\t0\t0\t0")
    );
    // The JSON lines are the API's summaries.
    let as_json: serde_json::Value = serde_json::from_str(&ok(
        &db,
        &["integrations", "list", "--tenant", "Globex", "--json"],
    ))
    .unwrap();
    assert_eq!(
        (&as_json["id"], &as_json["total_syncs"], &as_json["version"]),
        (
            &serde_json::json!(integration),
            &serde_json::json!(0),
            &serde_json::json!(1)
        )
    );
    for listing in [
        vec!["jobs", "stats", "--json"],
        vec!["mappings", "list", "--integration", &integration, "--json"],
        vec!["syncs", "list", "--json"],
    ] {
        assert_eq!(ok(&db, &listing), "", "{listing:?}: nothing yet, no header");
    }
    assert!(ok(&db, &["syncs", "list"]).starts_with("id\tintegration\ttrigger"));
}

#[tokio::test]
async fn mistakes_are_refused_with_a_clear_message_and_a_failing_exit() {
    let db = TestDb::migrated().await;
    ok(&db, &["tenants", "create", "Initech"]);
    let cases: [(&[&str], &str); 5] = [
        (&["tenants", "create", "initech"], "already exists"),
        (
            &[
                "integrations",
                "create",
                "--tenant",
                "Nobody",
                "--source",
                "jira",
                "--name",
                "J",
            ],
            "no tenant `Nobody`",
        ),
        (
            &[
                "integrations",
                "create",
                "--tenant",
                "Initech",
                "--source",
                "jirra",
                "--name",
                "J",
            ],
            "zoho_crm",
        ),
        (
            &[
                "keys",
                "create",
                "--integration",
                "6f1c2d0e-8a41-4c7e-9b0a-1d2e3f405a61",
            ],
            "no integration",
        ),
        (
            &[
                "accounts",
                "add",
                "--tenant",
                "Initech",
                "--name",
                "X",
                "--domain",
                "not a domain",
            ],
            "not a domain name",
        ),
    ];
    for (args, expected) in cases {
        let out = syncbridge(&db, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn admin_commands_on_an_unmigrated_shared_database_say_to_migrate() {
    let db = TestDb::empty().await;
    let out = syncbridge(&db, &["tenants", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("syncbridge migrate"));

    ok(&db, &["migrate"]);
    ok(&db, &["tenants", "create", "After migrate"]);
}

#[tokio::test]
async fn operators_list_retry_cancel_and_count_jobs_from_the_command_line() {
    let db = TestDb::migrated().await;
    let mut conn = db.owner().await;
    let dead: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO jobs (kind, state, attempt, max_attempts, finalized_at, errors)
         SELECT 'ping', 'failed', 3, 3, now(), '[{\"attempt\": 3, \"error\": \"peer said 500\"}]'
         FROM generate_series(1, 3) RETURNING id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let waiting: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (kind, queue) VALUES ('ping', 'reports') RETURNING id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();

    let listed = ok(&db, &["jobs", "list", "--state", "dead"]);
    assert_eq!(
        listed.lines().count(),
        4,
        "a header and three jobs: {listed}"
    );
    assert!(listed.contains("peer said 500"), "{listed}");

    let out = syncbridge(&db, &["jobs", "retry"]);
    assert!(
        !out.status.success(),
        "a retry naming no jobs must be refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("name the jobs"));
    let out = syncbridge(&db, &["jobs", "list", "--state", "zombie"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dead"));

    assert_eq!(ok(&db, &["jobs", "retry", "--all-dead"]), "3");
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = ANY($1)")
        .bind(&dead)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(states, ["available"; 3]);

    assert_eq!(ok(&db, &["jobs", "cancel", &waiting.to_string()]), "1");
    let stats = ok(&db, &["jobs", "stats"]);
    assert!(stats.contains("default\tavailable\t3"), "{stats}");
    assert!(stats.contains("reports\tcancelled\t1"), "{stats}");

    ok(&db, &["jobs", "pause", "reports"]);
    let paused: bool =
        sqlx::query_scalar("SELECT paused_at IS NOT NULL FROM job_queues WHERE name = 'reports'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(paused);
}

#[tokio::test]
async fn signing_secrets_are_stored_sealed_and_integrations_pause() {
    let db = TestDb::migrated().await;
    ok(&db, &["tenants", "create", "Globex"]);
    let integration = ok(
        &db,
        &[
            "integrations",
            "create",
            "--tenant",
            "globex",
            "--source",
            "jira",
            "--name",
            "Jira",
        ],
    );
    let args = [
        "integrations",
        "signing-secret",
        "--integration",
        &integration,
    ];

    // Without an encryption key there is nowhere safe to keep the secret: refused, clearly.
    let out = syncbridge(&db, &args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SYNCBRIDGE_ENCRYPTION_KEY"));

    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]);
    let out = syncbridge_with(&db, &args, &[("SYNCBRIDGE_ENCRYPTION_KEY", &key)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let mut conn = db.owner().await;
    let (sealed, key_id): (Vec<u8>, String) = sqlx::query_as(
        "SELECT signing_secret_encrypted, signing_secret_key_id FROM integration_sources",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(key_id.len(), 8);
    let sealer = syncbridge::crypto::Sealer::from_base64(&key).unwrap();
    let id: Uuid = integration.parse().unwrap();
    let opened = sealer
        .open(
            &key_id,
            &sealed,
            &syncbridge::crypto::signing_secret_context(id),
        )
        .unwrap();
    assert!(String::from_utf8(opened).unwrap().contains(&secret));
    assert!(!sealed.windows(10).any(|w| w == &secret.as_bytes()[6..16]));

    ok(
        &db,
        &["integrations", "pause", "--integration", &integration],
    );
    let status: String = sqlx::query_scalar("SELECT status FROM integration_sources")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(status, "paused");
    ok(
        &db,
        &["integrations", "resume", "--integration", &integration],
    );
    ok(
        &db,
        &[
            "integrations",
            "signing-secret",
            "--integration",
            &integration,
            "--remove",
        ],
    );
    let (status, removed): (String, bool) =
        sqlx::query_as("SELECT status, signing_secret_encrypted IS NULL FROM integration_sources")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((status.as_str(), removed), ("active", true));
}

#[tokio::test]
async fn mappings_are_validated_when_set_and_previewed_on_samples() {
    let db = TestDb::migrated().await;
    ok(&db, &["tenants", "create", "Initech"]);
    let integration = ok(
        &db,
        &[
            "integrations",
            "create",
            "--tenant",
            "initech",
            "--source",
            "hubspot",
            "--name",
            "HS",
        ],
    );
    let set = |target: &str, mapping: &str| {
        syncbridge(
            &db,
            &[
                "mappings",
                "set",
                "--integration",
                &integration,
                "--data-type",
                "contacts",
                "--target",
                target,
                "--mapping",
                mapping,
            ],
        )
    };
    let bad = set(
        "title",
        r#"{"source": "x", "ops": [{"op": "regex_extract", "pattern": "("}]}"#,
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad regex"));
    let bad = set("favourite_colour", r#"{"source": "x"}"#);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown target `favourite_colour`"));
    let good = set(
        "title",
        r#"{"source": "properties.jobtitle", "ops": [{"op": "uppercase"}]}"#,
    );
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let listed = ok(&db, &["mappings", "list", "--integration", &integration]);
    assert!(
        listed.starts_with("data_type\ttarget\tmapping\tenabled\ncontacts\ttitle\t"),
        "{listed}"
    );

    let sample = format!(
        "{}/tests/fixtures/samples/hubspot_contacts.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let dir = tempfile::tempdir().unwrap();
    let with_title = dir.path().join("sample.json");
    let mut body: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sample).unwrap()).unwrap();
    body["records"][0]["properties"]["jobtitle"] = serde_json::json!("cto");
    body["records"][1]["properties"]["createdate"] = serde_json::json!("someday");
    std::fs::write(&with_title, body.to_string()).unwrap();
    let preview: serde_json::Value = serde_json::from_str(&ok(
        &db,
        &[
            "mappings",
            "preview",
            "--integration",
            &integration,
            "--file",
            with_title.to_str().unwrap(),
        ],
    ))
    .unwrap();
    assert_eq!(preview[0]["outcome"], "mapped");
    assert_eq!(preview[0]["row"]["title"], "CTO");
    assert_eq!(preview[0]["row"]["email"], "dana@eu.northwind.io");
    assert_eq!(preview[1]["outcome"], "failed");
    assert_eq!(preview[1]["errors"][0]["code"], "invalid_date");
    assert_eq!(preview[1]["errors"][0]["field"], "source_created_at");
    // Nothing was written by the preview.
    let mut conn = db.owner().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM external_contacts")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn operators_set_the_webhook_schedule_and_credentials_and_start_a_sync() {
    let db = TestDb::migrated().await;
    ok(&db, &["tenants", "create", "Cron Co"]);
    let integration = ok(
        &db,
        &[
            "integrations",
            "create",
            "--tenant",
            "Cron Co",
            "--source",
            "zoho_desk",
            "--name",
            "Desk",
        ],
    );
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let secret = "cli-header-secret-91b2";
    let out = syncbridge_with(
        &db,
        &[
            "integrations",
            "set",
            &integration,
            "--webhook-url",
            "https://n8n.example.com/webhook/zoho-desk",
            "--schedule",
            "0 */2 * * *",
            "--timezone",
            "Europe/Berlin",
            "--mode",
            "full",
            "--missed",
            "skip",
            "--auth",
            "header",
            "--auth-name",
            "X-N8N-Key",
        ],
        &[
            ("SYNCBRIDGE_ENCRYPTION_KEY", key),
            ("SYNCBRIDGE_N8N_AUTH_SECRET", secret),
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("next scheduled sync"), "{stderr}");
    let settings: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(settings["schedule"], "0 */2 * * *");
    assert_eq!(settings["timezone"], "Europe/Berlin");
    assert_eq!(settings["sync_mode"], "full");
    assert_eq!(settings["missed_ticks"], "skip");
    assert_eq!(settings["auth"], "header");
    assert!(!stdout.contains(secret) && !stderr.contains(secret));

    // A secret on the command line is not accepted; a bad schedule says what is wrong.
    let out = syncbridge_with(
        &db,
        &[
            "integrations",
            "set",
            &integration,
            "--auth",
            "basic",
            "--auth-name",
            "u",
        ],
        &[("SYNCBRIDGE_ENCRYPTION_KEY", key)],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SYNCBRIDGE_N8N_AUTH_SECRET"));
    let out = syncbridge(
        &db,
        &[
            "integrations",
            "set",
            &integration,
            "--schedule",
            "0 9 * * 1",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("MON-FRI"));
    let out = syncbridge(
        &db,
        &[
            "integrations",
            "set",
            &integration,
            "--webhook-url",
            "http://169.254.169.254/",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("deny list"));

    let sync_log: Uuid = ok(&db, &["sync", &integration]).parse().unwrap();
    let mut conn = db.owner().await;
    let (trigger, status, mode): (String, String, String) = sqlx::query_as(
        "SELECT trigger, status, sync_mode FROM integration_sync_logs WHERE id = $1",
    )
    .bind(sync_log)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (trigger.as_str(), status.as_str(), mode.as_str()),
        ("manual", "pending", "full")
    );
    // A second one while the first is open is refused unless forced.
    let out = syncbridge(&db, &["sync", &integration]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still open"));
    let forced: Uuid = ok(
        &db,
        &["sync", &integration, "--force", "--mode", "incremental"],
    )
    .parse()
    .unwrap();
    assert_ne!(forced, sync_log);
}

/// The operator's read and clean-up commands: keys listed and revoked, accounts listed and
/// removed, a tenant's numbers, an integration deleted with what it held.
#[tokio::test]
async fn keys_accounts_stats_and_deletion_from_the_command_line() {
    let db = TestDb::migrated().await;
    ok(&db, &["tenants", "create", "Delta"]);
    let integration = ok(
        &db,
        &[
            "integrations",
            "create",
            "--tenant",
            "Delta",
            "--source",
            "hubspot",
            "--name",
            "H",
        ],
    );
    let key = ok(
        &db,
        &[
            "keys",
            "create",
            "--integration",
            &integration,
            "--name",
            "prod",
        ],
    );
    let table = ok(&db, &["keys", "list", "--integration", &integration]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "id\tprefix\tname\tcreated\tlast_used\trevoked");
    assert_eq!(lines.len(), 2);
    let fields: Vec<&str> = lines[1].split('\t').collect();
    assert!(
        key.starts_with(fields[1]) && fields[2] == "prod" && fields[5] == "-",
        "{table}"
    );
    assert!(
        !table.contains(key.rsplit('_').next().unwrap()),
        "never the key itself"
    );
    ok(
        &db,
        &["keys", "revoke", "--integration", &integration, fields[0]],
    );
    let listed: serde_json::Value = serde_json::from_str(&ok(
        &db,
        &["keys", "list", "--integration", &integration, "--json"],
    ))
    .unwrap();
    assert!(listed["revoked_at"].is_string());

    let account = ok(
        &db,
        &[
            "accounts",
            "add",
            "--tenant",
            "Delta",
            "--name",
            "Northwind",
            "--domain",
            "northwind.io",
        ],
    );
    let table = ok(&db, &["accounts", "list", "--tenant", "Delta"]);
    assert_eq!(
        table.lines().nth(1).unwrap(),
        format!("{account}\tNorthwind\tnorthwind.io\t0\t0\t0")
    );
    ok(&db, &["accounts", "remove", "--tenant", "Delta", &account]);
    assert_eq!(
        ok(&db, &["accounts", "list", "--tenant", "Delta"])
            .lines()
            .count(),
        1
    );

    let stats: serde_json::Value =
        serde_json::from_str(&ok(&db, &["stats", "--tenant", "Delta", "--days", "7"])).unwrap();
    assert_eq!(stats["integrations"]["total"], 1);
    assert_eq!(stats["days"].as_array().unwrap().len(), 7);

    // Renamed, and one sync shown as the API shows it.
    ok(
        &db,
        &[
            "integrations",
            "set",
            &integration,
            "--name",
            "HubSpot EU",
            "--description",
            "eu",
        ],
    );
    let listed = ok(&db, &["integrations", "list", "--tenant", "Delta"]);
    assert!(listed.contains("\tactive\tHubSpot EU\t"), "{listed}");
    let mut system = db.owner().await;
    sqlx::query("SET ROLE syncbridge_system")
        .execute(&mut system)
        .await
        .unwrap();
    let sync_id: Uuid = sqlx::query_scalar(
        "INSERT INTO integration_sync_logs (tenant_id, integration_id, trigger, status,
                                            records_received, records_created, records_failed)
         SELECT tenant_id, id, 'manual', 'partial', 3, 2, 1 FROM integration_sources WHERE id = $1
         RETURNING id",
    )
    .bind(Uuid::parse_str(&integration).unwrap())
    .fetch_one(&mut system)
    .await
    .unwrap();
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&db, &["syncs", "show", &sync_id.to_string()])).unwrap();
    assert_eq!(
        (&shown["status"], &shown["accounted"]),
        (&serde_json::json!("partial"), &serde_json::json!(true))
    );
    assert_eq!(shown["batches"], serde_json::json!([]));
    assert!(
        !syncbridge(&db, &["syncs", "show", &Uuid::new_v4().to_string()])
            .status
            .success()
    );

    let removed: serde_json::Value =
        serde_json::from_str(&ok(&db, &["integrations", "delete", &integration])).unwrap();
    assert_eq!(removed["api_keys"], 1);
    assert_eq!(
        ok(
            &db,
            &["integrations", "list", "--tenant", "Delta", "--json"]
        ),
        ""
    );
    let again = syncbridge(&db, &["integrations", "delete", &integration]);
    assert!(!again.status.success());
}

#[tokio::test]
async fn records_are_listed_filtered_and_shown_from_the_command_line() {
    let app = crate::helpers::TestApp::spawn().await;
    let h = crate::helpers::hubspot_integration(&app.db.pool, "Records Co").await;
    let contacts = (1..=3)
        .map(|n| {
            serde_json::json!({"id": format!("c{n}"),
                               "properties": {"email": format!("P{n}@Northwind.io")}})
        })
        .collect();
    crate::helpers::deliver(&app, &h, "contacts", contacts, false).await;
    crate::helpers::drain(&app.db).await;
    let db = &app.db;

    let table = ok(
        db,
        &["records", "list", "--tenant", "Records Co", "contacts"],
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "id\texternal_id\tintegration\taccount\tmatch\temail\tdomain\tupdated\tdeleted"
    );
    assert_eq!(lines.len(), 4, "{table}");
    let external: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    let mut sorted = external.clone();
    sorted.sort();
    assert_eq!(sorted, ["c1", "c2", "c3"]);
    // Pages are read until the limit, in the API's change order.
    let limited = ok(
        db,
        &[
            "records",
            "list",
            "--tenant",
            "Records Co",
            "contacts",
            "--limit",
            "2",
        ],
    );
    assert_eq!(limited.lines().skip(1).collect::<Vec<_>>(), lines[1..3]);
    let found: serde_json::Value = serde_json::from_str(&ok(
        db,
        &[
            "records",
            "list",
            "--tenant",
            "Records Co",
            "contacts",
            "--email",
            "p2@northwind.IO",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(found["external_id"], "c2");
    assert!(found.get("raw").is_none(), "raw only on the single record");
    let id = found["id"].as_str().unwrap();
    let shown: serde_json::Value = serde_json::from_str(&ok(
        db,
        &["records", "show", "--tenant", "Records Co", "contacts", id],
    ))
    .unwrap();
    assert_eq!(shown["raw"]["id"], "c2");
    assert_eq!(
        ok(
            db,
            &[
                "records",
                "list",
                "--tenant",
                "Records Co",
                "deals",
                "--json"
            ]
        ),
        ""
    );

    let out = syncbridge(
        db,
        &[
            "records",
            "list",
            "--tenant",
            "Records Co",
            "contacts",
            "--deleted",
            "gone",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`exclude`, `include` or `only`"));
    let out = syncbridge(
        db,
        &["records", "show", "--tenant", "Records Co", "tickets", id],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no tickets record"));
}

/// `syncbridge sync --wait` as a child process that runs while the test plays n8n.
fn spawn_syncbridge(db: &TestDb, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_syncbridge"))
        .args(args)
        .env("DATABASE_URL", db.url())
        .env_remove("SYNCBRIDGE_ENV")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run syncbridge")
}

#[tokio::test]
async fn sync_wait_follows_the_sync_until_it_closes_and_says_how_it_ended() {
    use serde_json::json;
    let app = crate::helpers::TestApp::spawn().await;
    let h = crate::helpers::hubspot_integration(&app.db.pool, "Waiting Co").await;
    let (n8n, mut triggers) = crate::helpers::n8n_passing_on_triggers().await;
    let integration = h.integration_id.to_string();
    ok(
        &app.db,
        &[
            "integrations",
            "set",
            &integration,
            "--webhook-url",
            &format!("{}/webhook/hubspot", n8n.uri()),
        ],
    );
    let mut config = crate::helpers::test_config();
    config.worker.poll_interval_ms = 20;
    let jobs = crate::helpers::RunningJobs::start(&app.db, &config);

    let waiting = spawn_syncbridge(
        &app.db,
        &["sync", &integration, "--data-types", "contacts", "--wait"],
    );
    let sync_log_id = crate::helpers::next_trigger(&mut triggers).await;
    let contacts = vec![
        json!({"id": "c1", "properties": {"email": "c1@northwind.io"}}),
        json!({"id": "c2", "properties": {"email": "c2@northwind.io"}}),
    ];
    crate::helpers::deliver_for_sync(&app, &h, &sync_log_id, contacts).await;
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        waiting.wait_with_output(),
    )
    .await
    .expect("sync --wait returns once the sync closes")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), sync_log_id);
    assert!(
        stderr.contains(&format!("sync {sync_log_id} success"))
            && stderr.contains("2 received, 2 created"),
        "{stderr}"
    );

    // A sync n8n never delivers for: the wait gives up at its timeout, failing, and says so.
    let out = spawn_syncbridge(
        &app.db,
        &[
            "sync",
            &integration,
            "--data-types",
            "contacts",
            "--wait",
            "--timeout",
            "1",
        ],
    )
    .wait_with_output()
    .await
    .unwrap();
    jobs.stop().await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("after 1s (it goes on"), "{stderr}");
}
