//! Tenant isolation, proven in plain SQL as the role the service runs as.

use sqlx::{Connection, Executor, PgConnection, Row};
use syncbridge::db;
use uuid::Uuid;

use crate::helpers::{TestDb, count};

/// Every table that holds tenant data, read from the catalog so a new table cannot be missed.
async fn tenant_tables(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.table_name::text FROM information_schema.columns c
         JOIN information_schema.tables t USING (table_schema, table_name)
         WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE'
         ORDER BY 1",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

/// One row in every tenant table for a new tenant, written as the owner.
async fn seed_tenant(conn: &mut PgConnection, name: &str) -> Uuid {
    let tenant: Uuid = sqlx::query_scalar("INSERT INTO tenants (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let statements = [
        "INSERT INTO accounts (tenant_id, name, domains) VALUES ($1, 'Acme', '{acme.com}')",
        "INSERT INTO integration_sources (tenant_id, source_type, name) VALUES ($1, 'hubspot', 'HubSpot')",
        "INSERT INTO integration_api_keys (tenant_id, integration_id, key_prefix, key_hash)
            SELECT $1, id, 'sbk_' || substr(md5(random()::text), 1, 10), sha256('k'::bytea)
            FROM integration_sources WHERE tenant_id = $1",
        "INSERT INTO tenant_api_tokens (tenant_id, token_prefix, token_hash)
            VALUES ($1, 'sbt_' || substr(md5(random()::text), 1, 10), sha256('t'::bytea))",
        "INSERT INTO console_sessions (tenant_id, token_id, install, secret_hash, csrf_token, expires_at)
            SELECT $1, id, false, sha256(id::text::bytea), 'csrf', now() + interval '1 hour'
            FROM tenant_api_tokens WHERE tenant_id = $1",
        "INSERT INTO integration_field_mappings (tenant_id, integration_id, data_type, target_field, mapping)
            SELECT $1, id, 'contacts', 'email', '{\"source\": \"properties.email\"}' FROM integration_sources WHERE tenant_id = $1",
        "INSERT INTO integration_sync_logs (tenant_id, integration_id, trigger)
            SELECT $1, id, 'webhook' FROM integration_sources WHERE tenant_id = $1",
        "INSERT INTO ingest_batches (tenant_id, integration_id, sync_log_id, data_type, source_type,
                                     content_hash, record_count)
            SELECT $1, integration_id, id, 'contacts', 'hubspot', sha256('p'::bytea), 0
            FROM integration_sync_logs WHERE tenant_id = $1",
        "INSERT INTO ingest_batch_chunks (tenant_id, batch_id, chunk_index, record_offset, record_count,
                                          payload, payload_encoding)
            SELECT $1, id, 0, 0, 0, '[]'::bytea, 'identity' FROM ingest_batches WHERE tenant_id = $1",
        "INSERT INTO integration_sync_errors (tenant_id, integration_id, sync_log_id, code, message)
            SELECT $1, integration_id, id, 'invalid_email', 'bad email' FROM integration_sync_logs WHERE tenant_id = $1",
        "INSERT INTO integration_schedule_ticks (tenant_id, integration_id, tick_at, outcome, sync_log_id)
            SELECT $1, integration_id, now(), 'triggered', id FROM integration_sync_logs WHERE tenant_id = $1",
        "INSERT INTO integration_cursors (tenant_id, integration_id, data_type, cursor_at, sync_log_id)
            SELECT $1, integration_id, 'contacts', now(), id FROM integration_sync_logs WHERE tenant_id = $1",
        "INSERT INTO integration_sync_sweeps (tenant_id, sync_log_id, data_type, live_rows, seen_rows, state)
            SELECT $1, id, 'contacts', 10, 2, 'skipped' FROM integration_sync_logs WHERE tenant_id = $1",
        "INSERT INTO external_contacts (tenant_id, integration_id, external_id, email)
            SELECT $1, id, '51', 'dana@acme.com' FROM integration_sources WHERE tenant_id = $1",
        "INSERT INTO external_tickets (tenant_id, integration_id, external_id, subject)
            SELECT $1, id, 'T-1', 'Broken' FROM integration_sources WHERE tenant_id = $1",
        "INSERT INTO external_deals (tenant_id, integration_id, external_id, name, amount)
            SELECT $1, id, 'D-1', 'Renewal', 48000 FROM integration_sources WHERE tenant_id = $1",
    ];
    for sql in statements {
        sqlx::query(sql)
            .bind(tenant)
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    tenant
}

/// Opens a transaction as the service's role scoped to `tenant`, exactly as `db::tenant_tx` does.
async fn begin_as_tenant(conn: &mut PgConnection, tenant: Option<Uuid>) {
    conn.execute("BEGIN; SET LOCAL ROLE syncbridge_app")
        .await
        .unwrap();
    if let Some(tenant) = tenant {
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn every_tenant_table_has_forced_row_level_security_with_both_policies() {
    let db = TestDb::migrated().await;
    let mut conn = db.owner().await;
    let tables = tenant_tables(&mut conn).await;
    assert_eq!(tables.len(), 17, "{tables:?}");
    for table in &tables {
        let row = sqlx::query(
            "SELECT relrowsecurity, relforcerowsecurity,
                    (SELECT array_agg(polname::text ORDER BY polname) FROM pg_policy WHERE polrelid = c.oid) AS policies
             FROM pg_class c WHERE oid = $1::regclass",
        )
        .bind(table)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert!(row.get::<bool, _>(0), "{table}: row level security off");
        assert!(
            row.get::<bool, _>(1),
            "{table}: row level security not forced"
        );
        let policies: Vec<String> = row.get(2);
        assert_eq!(policies, ["system_access", "tenant_isolation"], "{table}");
    }
}

#[tokio::test]
async fn tenant_a_sees_none_of_tenant_bs_rows_in_any_table() {
    let db = TestDb::migrated().await;
    let mut conn = db.owner().await;
    let a = seed_tenant(&mut conn, "Tenant A").await;
    let b = seed_tenant(&mut conn, "Tenant B").await;
    let tables = tenant_tables(&mut conn).await;

    for table in &tables {
        let total = count(&mut conn, format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(total, 2, "{table}: the fixture writes one row per tenant");
    }

    begin_as_tenant(&mut conn, Some(a)).await;
    for table in &tables {
        let of_b = count(
            &mut conn,
            format!("SELECT count(*) FROM {table} WHERE tenant_id = '{b}'"),
        )
        .await;
        assert_eq!(of_b, 0, "{table}: tenant A sees tenant B's rows");
        let visible = count(&mut conn, format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(
            visible, 1,
            "{table}: tenant A should see exactly its own row"
        );
        // Updates and deletes aimed at B's rows touch nothing.
        let updated = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET updated_at = now() WHERE tenant_id = '{b}'"
        )))
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(updated, 0, "{table}: tenant A updated B's rows");
    }
    // The synced-records view runs with the caller's rights, so RLS filters it too.
    let synced = count(&mut conn, "SELECT count(*) FROM integration_synced_records").await;
    let own = count(
        &mut conn,
        format!("SELECT count(*) FROM integration_synced_records WHERE tenant_id = '{a}'"),
    )
    .await;
    assert_eq!((synced, own), (3, 3), "one contact, ticket and deal of A's");
    conn.execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn tenant_a_cannot_write_rows_for_tenant_b() {
    let db = TestDb::migrated().await;
    let mut conn = db.owner().await;
    let a = seed_tenant(&mut conn, "Tenant A").await;
    let b = seed_tenant(&mut conn, "Tenant B").await;
    let a_integration: Uuid =
        sqlx::query_scalar("SELECT id FROM integration_sources WHERE tenant_id = $1")
            .bind(a)
            .fetch_one(&mut conn)
            .await
            .unwrap();

    let attempts = [
        format!("INSERT INTO accounts (tenant_id, name) VALUES ('{b}', 'Sneaky')"),
        format!(
            "INSERT INTO integration_sources (tenant_id, source_type, name) VALUES ('{b}', 'jira', 'Sneaky')"
        ),
        format!(
            "INSERT INTO external_contacts (tenant_id, integration_id, external_id) VALUES ('{b}', '{a_integration}', 'x')"
        ),
        "INSERT INTO tenants (name) VALUES ('New tenant')".to_string(),
        // Moving one's own row to another tenant is a write for that tenant too.
        format!("UPDATE accounts SET tenant_id = '{b}' WHERE tenant_id = '{a}'"),
    ];
    for sql in attempts {
        begin_as_tenant(&mut conn, Some(a)).await;
        let err = conn
            .execute(sqlx::AssertSqlSafe(sql.clone()))
            .await
            .expect_err(&sql);
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {err}");
        conn.execute("ROLLBACK").await.unwrap();
    }

    // Its own writes still work.
    begin_as_tenant(&mut conn, Some(a)).await;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "INSERT INTO accounts (tenant_id, name) VALUES ('{a}', 'Fine')"
    )))
    .await
    .unwrap();
    conn.execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn without_a_tenant_the_service_role_sees_nothing() {
    let db = TestDb::migrated().await;
    let mut conn = db.owner().await;
    seed_tenant(&mut conn, "Tenant A").await;
    let tables = tenant_tables(&mut conn).await;
    begin_as_tenant(&mut conn, None).await;
    for table in &tables {
        let visible = count(&mut conn, format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(visible, 0, "{table}");
    }
    conn.execute("ROLLBACK").await.unwrap();
    conn.close().await.unwrap();

    // The application pool runs as that role: a query outside tenant_tx finds nothing.
    let pooled: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(pooled, 0);
}

#[tokio::test]
async fn tenant_and_system_transactions_scope_what_the_pool_sees() {
    let db = TestDb::migrated().await;
    let mut conn = db.owner().await;
    let a = seed_tenant(&mut conn, "Tenant A").await;
    seed_tenant(&mut conn, "Tenant B").await;

    let mut tx = db::tenant_tx(&db.pool, a).await.unwrap();
    let seen: Vec<Uuid> = sqlx::query_scalar("SELECT tenant_id FROM accounts")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, vec![a]);
    tx.commit().await.unwrap();

    let mut tx = db::system_tx(&db.pool).await.unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(all, 2);
    tx.commit().await.unwrap();

    // The system role was for that transaction only.
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(after, 0);
}

/// Behind a pooler in transaction mode a transaction can land on a server connection where
/// nobody ran the pool's `SET ROLE`: it runs as the login user. That user must see nothing by
/// itself, and the service's scoped transactions must set their role themselves.
#[tokio::test]
async fn a_connection_that_never_set_a_role_sees_no_tenant_and_scoped_transactions_still_work() {
    let options = crate::helpers::database_of_a_plain_login().await;
    // A pool without the service's `SET ROLE` on connect: what a pooler may hand over.
    let bare = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await
        .unwrap();
    let mut tx = db::system_tx(&bare).await.unwrap();
    let mut tenants = Vec::new();
    for name in ["Acme", "Globex"] {
        let tenant: Uuid =
            sqlx::query_scalar("INSERT INTO tenants (name) VALUES ($1) RETURNING id")
                .bind(name)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        sqlx::query("INSERT INTO accounts (tenant_id, name, domains) VALUES ($1, $2, '{}')")
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await
            .unwrap();
        tenants.push(tenant);
    }
    tx.commit().await.unwrap();

    let mut plain = PgConnection::connect_with(&options).await.unwrap();
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut plain)
        .await
        .unwrap();
    assert!(role.starts_with("sbtest_login_"), "{role}");
    for table in ["tenants", "accounts"] {
        assert_eq!(
            count(&mut plain, format!("SELECT count(*) FROM {table}")).await,
            0,
            "the login user read {table} without a role"
        );
    }
    let refused = sqlx::query(
        "INSERT INTO accounts (tenant_id, name, domains) VALUES ($1, 'Intruder', '{}')",
    )
    .bind(tenants[0])
    .execute(&mut plain)
    .await
    .unwrap_err();
    assert_eq!(
        refused
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("42501"),
        "{refused}"
    );

    // The service's own transactions set their role, whatever the connection's session says.
    let mut tx = db::tenant_tx(&bare, tenants[0]).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM accounts")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(names, ["Acme"]);
    tx.commit().await.unwrap();
    let mut tx = db::system_tx(&bare).await.unwrap();
    assert_eq!(count(&mut *tx, "SELECT count(*) FROM accounts").await, 2);
    tx.commit().await.unwrap();
    // And leave nothing behind on the connection for the next transaction.
    let mut conn = bare.acquire().await.unwrap();
    assert_eq!(count(&mut *conn, "SELECT count(*) FROM accounts").await, 0);
}
