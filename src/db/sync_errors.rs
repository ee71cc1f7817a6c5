//! SQL of per-record errors (`integration_sync_errors`) written by the sync lifecycle. Each
//! function runs in the caller's transaction.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::batches::SettledChunk;

/// The one error row of a settled chunk: its first record's index, `code` and `message`.
pub async fn insert_for_chunk(
    conn: &mut PgConnection,
    batch_id: Uuid,
    chunk: &SettledChunk,
    code: &str,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO integration_sync_errors
             (tenant_id, integration_id, sync_log_id, batch_id, record_index, code, message)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        chunk.tenant_id,
        chunk.integration_id,
        chunk.sync_log_id,
        batch_id,
        chunk.record_offset,
        code,
        message
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the error row of the chunk starting at `offset` with one of `codes`; found through
/// the sync log's index (the table is large: its retention is days).
pub async fn delete_for_chunk(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    batch_id: Uuid,
    offset: i32,
    codes: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM integration_sync_errors
         WHERE sync_log_id = $1 AND batch_id = $2 AND record_index = $3 AND code = ANY($4)",
        sync_log_id,
        batch_id,
        offset,
        codes as _
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes up to `limit` error rows written before `before`; returns how many.
pub async fn delete_older_than(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "DELETE FROM integration_sync_errors WHERE id IN (
             SELECT id FROM integration_sync_errors WHERE created_at < $1 LIMIT $2)",
        before,
        limit
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// A record's error as the pipeline found it.
pub struct NewRecordError<'a> {
    pub index: i32,
    pub external_id: Option<&'a str>,
    /// The target field, empty when the error is the record's as a whole.
    pub field: &'a str,
    pub code: &'a str,
    pub message: &'a str,
}

/// Where a chunk's records' errors are counted.
#[derive(Clone, Copy)]
pub struct ErrorsOf {
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    pub sync_log_id: Uuid,
    pub batch_id: Uuid,
}

/// Stores the errors of a chunk's records in one statement, up to `max_per_sync` rows for the
/// whole sync (beyond it they are only counted).
pub async fn insert_for_records(
    conn: &mut PgConnection,
    of: ErrorsOf,
    errors: &[NewRecordError<'_>],
    max_per_sync: i64,
) -> Result<(), sqlx::Error> {
    if errors.is_empty() {
        return Ok(());
    }
    let indexes: Vec<i32> = errors.iter().map(|e| e.index).collect();
    let external_ids: Vec<Option<String>> = errors
        .iter()
        .map(|e| e.external_id.map(storable_text))
        .collect();
    let fields: Vec<Option<String>> = errors
        .iter()
        .map(|e| (!e.field.is_empty()).then(|| storable_text(e.field)))
        .collect();
    let codes: Vec<&str> = errors.iter().map(|e| e.code).collect();
    let messages: Vec<String> = errors.iter().map(|e| storable_text(e.message)).collect();
    sqlx::query!(
        "INSERT INTO integration_sync_errors
             (tenant_id, integration_id, sync_log_id, batch_id, record_index, external_id, field,
              code, message)
         SELECT $1, $2, $3, $4, i, e, f, c, m
         FROM unnest($5::int4[], $6::text[], $7::text[], $8::text[], $9::text[])
              AS t(i, e, f, c, m)
         LIMIT greatest(0, $10 - (SELECT count(*) FROM integration_sync_errors
                                  WHERE sync_log_id = $3))",
        of.tenant_id,
        of.integration_id,
        of.sync_log_id,
        of.batch_id,
        &indexes,
        &external_ids as &[Option<String>],
        &fields as &[Option<String>],
        &codes as &[&str],
        &messages,
        max_per_sync
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Text from a record, as a `text` column can hold it: NUL, which PostgreSQL refuses, becomes
/// U+FFFD (an error row must be storable even when the record was not).
fn storable_text(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

/// A per-record error, as the platform API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SyncError {
    pub id: i64,
    pub batch_id: Option<Uuid>,
    /// The record's place in its batch.
    pub record_index: Option<i32>,
    pub external_id: Option<String>,
    /// The field at fault, when one is.
    pub field: Option<String>,
    pub code: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

/// Up to `limit` errors of a sync the transaction sees, oldest first, after id `after` (a
/// keyset page over the sync log's index).
pub async fn page(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<SyncError>, sqlx::Error> {
    sqlx::query_as!(
        SyncError,
        "SELECT id, batch_id, record_index, external_id, field, code, message, created_at
         FROM integration_sync_errors
         WHERE sync_log_id = $1 AND ($2::bigint IS NULL OR id > $2)
         ORDER BY id LIMIT $3",
        sync_log_id,
        after,
        limit
    )
    .fetch_all(conn)
    .await
}
