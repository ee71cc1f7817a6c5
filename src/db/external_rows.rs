//! SQL of the external tables (`external_contacts`, `external_tickets`, `external_deals`): the
//! pipeline's probe and bulk upsert, a full sync's marking of unchanged rows as seen, and its
//! sweep.
//!
//! These statements are the few that stay dynamic: one table per data type, and the upsert's
//! column list is the data type's mapped columns. Each is built once per shape (table, and for
//! inserts whether conflicts update) from the closed lists in this module and in
//! `mapping::columns`, never from input, and kept for the life of the process; the tests run
//! every shape (`tests/api/pipeline.rs` syncs each data type, first and again).

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{domain::DataType, mapping::columns};

/// The external table a data type lands in.
pub fn table(data_type: DataType) -> &'static str {
    match data_type {
        DataType::Contacts => "external_contacts",
        DataType::Tickets => "external_tickets",
        DataType::Deals => "external_deals",
    }
}

/// The derived domain column of a table, next to the email it comes from.
pub fn domain_column(data_type: DataType) -> Option<(&'static str, &'static str)> {
    match data_type {
        DataType::Contacts => Some(("email_domain", "email")),
        DataType::Tickets => Some(("requester_domain", "requester_email")),
        DataType::Deals => None,
    }
}

/// One statement per data type, built on first use.
type PerType = [OnceLock<String>; 3];

fn per_type(
    cells: &'static PerType,
    data_type: DataType,
    build: impl FnOnce() -> String,
) -> &'static str {
    let at = match data_type {
        DataType::Contacts => 0,
        DataType::Tickets => 1,
        DataType::Deals => 2,
    };
    cells[at].get_or_init(build)
}

/// Soft-deletes the integration's rows of `data_type` that no delivery wrote or saw since `since`
/// (rows a sync wrote or saw carry a later `last_synced_at`): the sweep after a full sync.
/// Returns the rows soft-deleted.
pub async fn sweep_unseen(
    conn: &mut PgConnection,
    data_type: DataType,
    integration_id: Uuid,
    since: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    static SQL: PerType = [const { OnceLock::new() }; 3];
    let sql = per_type(&SQL, data_type, || {
        format!(
            "UPDATE {} SET deleted_at = now()
             WHERE integration_id = $1 AND deleted_at IS NULL AND last_synced_at < $2",
            table(data_type)
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(integration_id)
        .bind(since)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
}

/// The integration's live rows of `data_type`, and how many of them a delivery wrote or saw at
/// or after `since`.
pub async fn live_and_seen(
    conn: &mut PgConnection,
    data_type: DataType,
    integration_id: Uuid,
    since: DateTime<Utc>,
) -> Result<(i64, i64), sqlx::Error> {
    static SQL: PerType = [const { OnceLock::new() }; 3];
    let sql = per_type(&SQL, data_type, || {
        format!(
            "SELECT count(*), count(*) FILTER (WHERE last_synced_at >= $2)
             FROM {} WHERE integration_id = $1 AND deleted_at IS NULL",
            table(data_type)
        )
    });
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(integration_id)
        .bind(since)
        .fetch_one(conn)
        .await
}

/// Marks rows a full sync found unchanged as seen by its sync, so its sweep keeps them.
pub async fn mark_seen(
    conn: &mut PgConnection,
    target: Target,
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    static SQL: PerType = [const { OnceLock::new() }; 3];
    let sql = per_type(&SQL, target.data_type, || {
        format!(
            "UPDATE {} SET last_synced_at = now(), last_sync_log_id = $3
             WHERE tenant_id = $1 AND integration_id = $2 AND id = ANY($4)",
            table(target.data_type)
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(target.tenant_id)
        .bind(target.integration_id)
        .bind(target.sync_log_id)
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Where the rows of one upsert go.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    pub sync_log_id: Uuid,
    pub data_type: DataType,
}

/// What the probe finds of a stored row.
#[derive(sqlx::FromRow)]
pub struct StoredRow {
    pub id: Uuid,
    pub external_id: String,
    pub content_hash: Option<Vec<u8>>,
    pub deleted: bool,
    pub delivery_seq: i64,
}

/// The stored rows of these external ids, one unique-index probe per id.
pub async fn probe(
    conn: &mut PgConnection,
    target: Target,
    external_ids: &[&str],
) -> Result<Vec<StoredRow>, sqlx::Error> {
    static SQL: PerType = [const { OnceLock::new() }; 3];
    let sql = per_type(&SQL, target.data_type, || {
        // One probe per id, forced by LATERAL … LIMIT 1. Both plain forms went quadratic as the
        // table grew: `external_id = ANY($3)` became a filter on a tenant-index scan, and a join
        // on the unnested ids a hash join over all the integration's rows.
        format!(
            "SELECT e.id, e.external_id, e.content_hash, e.deleted_at IS NOT NULL AS deleted,
                    e.delivery_seq
             FROM unnest($3::text[]) AS k(external_id),
                  LATERAL (SELECT id, external_id, content_hash, deleted_at, delivery_seq
                           FROM {}
                           WHERE tenant_id = $1 AND integration_id = $2
                             AND external_id = k.external_id
                           LIMIT 1) e",
            table(target.data_type)
        )
    });
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(target.tenant_id)
        .bind(target.integration_id)
        .bind(external_ids)
        .fetch_all(conn)
        .await
}

/// What an insert does with a row whose external id is already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// The statement fails with a unique violation.
    Fail,
    /// The row is updated, unless its content hash is the same and it is not soft-deleted, or
    /// a later delivery wrote it.
    Update,
}

/// A mapped record ready to store.
pub struct NewRow<'a> {
    pub external_id: &'a str,
    pub account_id: Option<Uuid>,
    pub match_method: &'a str,
    pub match_reason: Option<&'a str>,
    /// The record's properties as JSON text.
    pub properties: &'a str,
    /// The record as received.
    pub raw: &'a str,
    pub content_hash: &'a [u8],
    /// Its place in delivery order.
    pub delivery_seq: i64,
    /// The table's domain column (see [`domain_column`]), when it has one.
    pub domain: Option<&'a str>,
    /// The data type's mapped columns (`mapping::columns`), in order, as text.
    pub columns: &'a [Option<String>],
}

/// The insert statement of a data type.
fn insert_sql(data_type: DataType, on_conflict: OnConflict) -> &'static str {
    static FAIL: PerType = [const { OnceLock::new() }; 3];
    static UPDATE: PerType = [const { OnceLock::new() }; 3];
    let cells = match on_conflict {
        OnConflict::Fail => &FAIL,
        OnConflict::Update => &UPDATE,
    };
    per_type(cells, data_type, || build_insert(data_type, on_conflict))
}

fn build_insert(data_type: DataType, on_conflict: OnConflict) -> String {
    let table = table(data_type);
    let cols = columns(data_type);
    let mut column_names = vec![
        "id",
        "external_id",
        "account_id",
        "match_method",
        "match_reason",
        "properties",
        "raw",
        "content_hash",
        "delivery_seq",
    ];
    let mut select = vec![
        "t.id".to_string(),
        "t.external_id".into(),
        "t.account_id".into(),
        "t.match_method".into(),
        "t.match_reason".into(),
        "t.properties::jsonb".into(),
        "t.raw::json".into(),
        "t.content_hash".into(),
        "t.delivery_seq".into(),
    ];
    let mut unnest = vec![
        "$4::uuid[]".to_string(),
        "$5::text[]".into(),
        "$6::uuid[]".into(),
        "$7::text[]".into(),
        "$8::text[]".into(),
        "$9::text[]".into(),
        "$10::text[]".into(),
        "$11::bytea[]".into(),
        "$12::int8[]".into(),
    ];
    let mut aliases = vec![
        "id".to_string(),
        "external_id".into(),
        "account_id".into(),
        "match_method".into(),
        "match_reason".into(),
        "properties".into(),
        "raw".into(),
        "content_hash".into(),
        "delivery_seq".into(),
    ];
    let mut next = 13;
    if let Some((domain, _)) = domain_column(data_type) {
        column_names.push(domain);
        select.push("t.domain".into());
        unnest.push(format!("${next}::text[]"));
        aliases.push("domain".into());
        next += 1;
    }
    for (i, (name, ty)) in cols.iter().enumerate() {
        column_names.push(name);
        select.push(format!("t.c{i}::{}", ty.sql()));
        unnest.push(format!("${next}::text[]"));
        aliases.push(format!("c{i}"));
        next += 1;
    }
    let conflict = if on_conflict == OnConflict::Update {
        let updates: Vec<String> = column_names
            .iter()
            .filter(|c| !matches!(**c, "id" | "external_id"))
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .chain([
                "last_sync_log_id = EXCLUDED.last_sync_log_id".to_string(),
                "last_synced_at = now()".into(),
                "deleted_at = NULL".into(),
            ])
            .collect();
        format!(
            "ON CONFLICT (tenant_id, integration_id, external_id) DO UPDATE SET {}
             WHERE {table}.delivery_seq <= EXCLUDED.delivery_seq
               AND ({table}.content_hash IS DISTINCT FROM EXCLUDED.content_hash
                    OR {table}.deleted_at IS NOT NULL)",
            updates.join(", ")
        )
    } else {
        String::new()
    };
    format!(
        "INSERT INTO {table} (tenant_id, integration_id, last_sync_log_id, {})
         SELECT $1, $2, $3, {} FROM unnest({}) AS t({})
         {conflict}
         RETURNING (xmax = 0) AS inserted",
        column_names.join(", "),
        select.join(", "),
        unnest.join(", "),
        aliases.join(", "),
    )
}

/// Inserts `rows` in one statement. With [`OnConflict::Update`] an existing row whose content
/// hash is the same (and that is not soft-deleted) is left as it is and not returned. Returns,
/// per written row, whether it was inserted.
pub async fn insert(
    conn: &mut PgConnection,
    target: Target,
    rows: &[NewRow<'_>],
    on_conflict: OnConflict,
) -> Result<Vec<bool>, sqlx::Error> {
    let data_type = target.data_type;
    let mut query =
        sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(insert_sql(data_type, on_conflict)))
            .bind(target.tenant_id)
            .bind(target.integration_id)
            .bind(target.sync_log_id)
            // Time-ordered ids (UUIDv7) for the rows this creates: each lands on the primary key's
            // rightmost leaf, which PostgreSQL appends to without a descent, instead of on a random
            // page of an index that outgrows memory as the table grows. Updated rows keep theirs.
            .bind(rows.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.external_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.account_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.match_method).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.match_reason).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.properties).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.raw).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.content_hash).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.delivery_seq).collect::<Vec<_>>());
    if domain_column(data_type).is_some() {
        query = query.bind(rows.iter().map(|r| r.domain).collect::<Vec<_>>());
    }
    for i in 0..columns(data_type).len() {
        query = query.bind(
            rows.iter()
                .map(|r| r.columns[i].as_deref())
                .collect::<Vec<_>>(),
        );
    }
    query.fetch_all(conn).await
}
