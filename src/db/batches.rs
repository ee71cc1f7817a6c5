//! SQL of delivered batches and their stored chunks, for the sync lifecycle (`sync::chunk`,
//! `sync::replay`, `sync::retention`). Each function runs in the caller's transaction.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{BatchState, DataType, SourceType, SyncMode};

/// The jobs of every unsettled, unprocessed chunk: the ones to ask the queue about
/// (`jobs::admin::unrunnable`) when looking for chunks whose job will never run them.
pub async fn pending_chunk_jobs(conn: &mut PgConnection) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT job_id AS "job_id!" FROM ingest_batch_chunks
         WHERE processed_at IS NULL AND failed_at IS NULL AND job_id IS NOT NULL"#
    )
    .fetch_all(conn)
    .await
}

/// An unsettled, unprocessed chunk and the job it waits for.
pub struct ChunkOfJob {
    pub batch_id: Uuid,
    pub chunk_index: i32,
    pub job_id: i64,
}

/// Up to `limit` chunks of `job_ids` that are still unsettled and unprocessed, locked (`SKIP
/// LOCKED`: concurrent callers take different ones).
pub async fn lock_chunks_of_jobs(
    conn: &mut PgConnection,
    job_ids: &[i64],
    limit: i64,
) -> Result<Vec<ChunkOfJob>, sqlx::Error> {
    sqlx::query_as!(
        ChunkOfJob,
        r#"SELECT batch_id, chunk_index, job_id AS "job_id!" FROM ingest_batch_chunks
         WHERE job_id = ANY($1) AND processed_at IS NULL AND failed_at IS NULL
         ORDER BY batch_id, chunk_index
         LIMIT $2
         FOR UPDATE SKIP LOCKED"#,
        job_ids,
        limit
    )
    .fetch_all(conn)
    .await
}

/// A chunk just marked settled, and where its records are counted.
pub struct SettledChunk {
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    pub sync_log_id: Uuid,
    pub record_offset: i32,
    pub record_count: i32,
}

/// Marks an unprocessed, unsettled chunk settled; `None` when it was processed or settled.
pub async fn mark_chunk_settled(
    conn: &mut PgConnection,
    batch_id: Uuid,
    chunk: i32,
) -> Result<Option<SettledChunk>, sqlx::Error> {
    sqlx::query_as!(
        SettledChunk,
        "UPDATE ingest_batch_chunks c SET failed_at = now()
         FROM ingest_batches b
         WHERE c.batch_id = $1 AND c.chunk_index = $2 AND b.id = c.batch_id
           AND c.processed_at IS NULL AND c.failed_at IS NULL
         RETURNING b.tenant_id, b.integration_id, b.sync_log_id, c.record_offset, c.record_count",
        batch_id,
        chunk
    )
    .fetch_optional(conn)
    .await
}

/// Counts a settled chunk of `records` in its batch (processed and failed; `code` the batch's
/// failure reason unless it has one). True when the batch has ended with it.
pub async fn count_settled_chunk(
    conn: &mut PgConnection,
    batch_id: Uuid,
    records: i32,
    code: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"UPDATE ingest_batches
         SET jobs_done = jobs_done + 1, chunks_failed = chunks_failed + 1,
             failure_reason = COALESCE(failure_reason, $3),
             records_processed = records_processed + $2, records_failed = records_failed + $2,
             state = CASE WHEN jobs_done + 1 >= jobs_total THEN 'failed' ELSE 'processing' END,
             processed_at = CASE WHEN jobs_done + 1 >= jobs_total THEN now() END
         WHERE id = $1
         RETURNING jobs_done >= jobs_total AS "ended!""#,
        batch_id,
        records,
        code
    )
    .fetch_one(conn)
    .await
}

/// Uncounts a settled chunk of `records` from its batch, which is processing again. Returns the
/// batch's sync log and whether the batch had ended.
pub async fn uncount_settled_chunk(
    conn: &mut PgConnection,
    batch_id: Uuid,
    records: i32,
) -> Result<(Uuid, bool), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE ingest_batches
         SET jobs_done = jobs_done - 1, chunks_failed = chunks_failed - 1,
             failure_reason = CASE WHEN chunks_failed > 1 THEN failure_reason END,
             records_processed = records_processed - $2, records_failed = records_failed - $2,
             state = 'processing', processed_at = NULL
         WHERE id = $1
         RETURNING sync_log_id, jobs_done + 1 >= jobs_total AS "ended!""#,
        batch_id,
        records
    )
    .fetch_one(conn)
    .await
    .map(|r| (r.sync_log_id, r.ended))
}

/// Locks the batch; false when there is none.
pub async fn lock(conn: &mut PgConnection, batch_id: Uuid) -> Result<bool, sqlx::Error> {
    let found: Option<Uuid> = sqlx::query_scalar!(
        "SELECT id FROM ingest_batches WHERE id = $1 FOR UPDATE",
        batch_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

/// A chunk not yet processed nor settled, and its job.
pub struct UnfinishedChunk {
    pub chunk_index: i32,
    pub record_count: i32,
    pub job_id: Option<i64>,
}

/// The batch's chunks that are neither processed nor settled, in order.
pub async fn unfinished_chunks(
    conn: &mut PgConnection,
    batch_id: Uuid,
) -> Result<Vec<UnfinishedChunk>, sqlx::Error> {
    sqlx::query_as!(
        UnfinishedChunk,
        "SELECT chunk_index, record_count, job_id FROM ingest_batch_chunks
         WHERE batch_id = $1 AND processed_at IS NULL AND failed_at IS NULL
         ORDER BY chunk_index",
        batch_id
    )
    .fetch_all(conn)
    .await
}

/// A batch of a sync, as a replay copies it.
pub struct StoredBatch {
    pub id: Uuid,
    pub data_type: DataType,
    pub source_type: String,
    pub record_count: i32,
    pub jobs_total: i32,
    pub content_hash: Vec<u8>,
    pub delivery_seq: i64,
    pub chunks_deleted: bool,
}

/// The batches of a sync, in delivery order.
pub async fn of_sync(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<Vec<StoredBatch>, sqlx::Error> {
    sqlx::query_as!(
        StoredBatch,
        r#"SELECT id, data_type AS "data_type: DataType", source_type, record_count, jobs_total,
                  content_hash, delivery_seq, chunks_deleted_at IS NOT NULL AS "chunks_deleted!"
           FROM ingest_batches WHERE sync_log_id = $1 ORDER BY delivery_seq"#,
        sync_log_id
    )
    .fetch_all(conn)
    .await
}

/// Inserts a copy of `batch` into sync `sync_log_id` (incremental, not final, the same place in
/// delivery order; `processed` at once when it has no records). Returns its id.
pub async fn insert_copy(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    integration_id: Uuid,
    sync_log_id: Uuid,
    batch: &StoredBatch,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO ingest_batches
             (tenant_id, integration_id, sync_log_id, data_type, source_type, sync_mode,
              content_hash, record_count, jobs_total, delivery_seq, state, processed_at)
         VALUES ($1, $2, $3, $4, $5, 'incremental', $6, $7, $8, $9,
                 CASE WHEN $8 = 0 THEN 'processed' ELSE 'received' END,
                 CASE WHEN $8 = 0 THEN now() END)
         RETURNING id",
        tenant_id,
        integration_id,
        sync_log_id,
        batch.data_type.as_str(),
        &batch.source_type,
        &batch.content_hash,
        batch.record_count,
        batch.jobs_total,
        batch.delivery_seq
    )
    .fetch_one(conn)
    .await
}

/// The indexes of the batch's stored chunks.
pub async fn chunk_indexes(
    conn: &mut PgConnection,
    batch_id: Uuid,
) -> Result<Vec<i32>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT chunk_index FROM ingest_batch_chunks WHERE batch_id = $1 ORDER BY chunk_index",
        batch_id
    )
    .fetch_all(conn)
    .await
}

/// Copies the chunks `indexes` of batch `from` into batch `to`, unprocessed, each with its job
/// from `job_ids`.
pub async fn copy_chunks(
    conn: &mut PgConnection,
    from: Uuid,
    to: Uuid,
    indexes: &[i32],
    job_ids: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO ingest_batch_chunks
             (tenant_id, batch_id, chunk_index, record_offset, record_count, payload,
              payload_encoding, job_id)
         SELECT c.tenant_id, $2, c.chunk_index, c.record_offset, c.record_count, c.payload,
                c.payload_encoding, u.job_id
         FROM ingest_batch_chunks c
         JOIN unnest($3::int4[], $4::int8[]) AS u(chunk_index, job_id)
           ON u.chunk_index = c.chunk_index
         WHERE c.batch_id = $1",
        from,
        to,
        indexes,
        job_ids
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the chunks of up to `limit` ended batches delivered before `before` (unfinished
/// batches keep theirs: their records are still to be counted) and marks the batches. Returns
/// (batches, chunks).
pub async fn delete_old_chunks(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query!(
        r#"WITH old AS (
             SELECT id FROM ingest_batches
             WHERE chunks_deleted_at IS NULL AND received_at < $1
               AND state IN ('processed', 'failed')
             ORDER BY received_at LIMIT $2
             FOR UPDATE SKIP LOCKED),
         gone AS (DELETE FROM ingest_batch_chunks c USING old WHERE c.batch_id = old.id
                  RETURNING 1),
         marked AS (UPDATE ingest_batches b SET chunks_deleted_at = now() FROM old
                    WHERE b.id = old.id RETURNING 1)
         SELECT (SELECT count(*) FROM marked) AS "batches!", (SELECT count(*) FROM gone) AS "chunks!""#,
        before,
        limit
    )
    .fetch_one(conn)
    .await
    .map(|r| (r.batches, r.chunks))
}

/// The data types of the sync's batches.
pub async fn data_types_of_sync(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<Vec<DataType>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT DISTINCT data_type AS "data_type: DataType" FROM ingest_batches
           WHERE sync_log_id = $1"#,
        sync_log_id
    )
    .fetch_all(conn)
    .await
}

/// What a stored delivery answers: its batch, sync, records and jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub batch_id: Uuid,
    pub sync_log_id: Uuid,
    pub records: i32,
    pub jobs: i32,
}

/// The integration's batch delivered with this idempotency key.
pub async fn by_idempotency_key(
    conn: &mut PgConnection,
    integration_id: Uuid,
    key: &str,
) -> Result<Option<Receipt>, sqlx::Error> {
    sqlx::query_as!(
        Receipt,
        "SELECT id AS batch_id, sync_log_id, record_count AS records, jobs_total AS jobs
         FROM ingest_batches WHERE integration_id = $1 AND idempotency_key = $2",
        integration_id,
        key
    )
    .fetch_optional(conn)
    .await
}

/// The sync's batch with this content.
pub async fn by_content(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    content_hash: &[u8],
) -> Result<Option<Receipt>, sqlx::Error> {
    sqlx::query_as!(
        Receipt,
        "SELECT id AS batch_id, sync_log_id, record_count AS records, jobs_total AS jobs
         FROM ingest_batches WHERE sync_log_id = $1 AND content_hash = $2",
        sync_log_id,
        content_hash
    )
    .fetch_optional(conn)
    .await
}

/// The integration's latest unkeyed batch with this content received since `since`.
pub async fn recent_by_content(
    conn: &mut PgConnection,
    integration_id: Uuid,
    content_hash: &[u8],
    since: DateTime<Utc>,
) -> Result<Option<Receipt>, sqlx::Error> {
    sqlx::query_as!(
        Receipt,
        "SELECT id AS batch_id, sync_log_id, record_count AS records, jobs_total AS jobs
         FROM ingest_batches
         WHERE integration_id = $1 AND content_hash = $2 AND received_at >= $3
           AND idempotency_key IS NULL
         ORDER BY received_at DESC LIMIT 1",
        integration_id,
        content_hash,
        since
    )
    .fetch_optional(conn)
    .await
}

/// Serialises, until the transaction ends, the deliveries that take the same advisory `key`.
pub async fn lock_delivery(conn: &mut PgConnection, key: i64) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT FROM pg_advisory_xact_lock($1)", key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records received and not yet processed of the tenant's open batches.
pub async fn pending_records(conn: &mut PgConnection, tenant_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE(sum(record_count - records_processed), 0)::bigint AS "pending!"
           FROM ingest_batches
           WHERE tenant_id = $1 AND state IN ('received', 'processing')"#,
        tenant_id
    )
    .fetch_one(conn)
    .await
}

/// A batch as a delivery creates it.
pub struct NewBatchRow<'a> {
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    pub sync_log_id: Uuid,
    pub data_type: DataType,
    pub source_type: &'a str,
    pub sync_mode: SyncMode,
    pub idempotency_key: Option<&'a str>,
    pub content_hash: &'a [u8],
    pub is_final: bool,
    pub record_count: i32,
    pub jobs_total: i32,
    /// On a final batch: how many batches its data type has in the sync.
    pub batch_count: Option<i32>,
    /// The delivery's bytes as received (after transport decompression).
    pub body_bytes: i64,
}

/// Inserts the batch (processed at once when it holds no record); `None` when a concurrent copy
/// of the delivery holds its idempotency key or content already.
pub async fn insert(
    conn: &mut PgConnection,
    batch: &NewBatchRow<'_>,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO ingest_batches
             (tenant_id, integration_id, sync_log_id, data_type, source_type, sync_mode,
              idempotency_key, content_hash, is_final, record_count, jobs_total, state, processed_at,
              batch_count, body_bytes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                 CASE WHEN $10 = 0 THEN 'processed' ELSE 'received' END,
                 CASE WHEN $10 = 0 THEN now() END, $12, $13)
         ON CONFLICT DO NOTHING
         RETURNING id",
        batch.tenant_id,
        batch.integration_id,
        batch.sync_log_id,
        batch.data_type.as_str(),
        batch.source_type,
        batch.sync_mode.as_str(),
        batch.idempotency_key,
        batch.content_hash,
        batch.is_final,
        batch.record_count,
        batch.jobs_total,
        batch.batch_count,
        batch.body_bytes
    )
    .fetch_optional(conn)
    .await
}

/// A stored chunk of a batch: its records' place in the batch and their encoded payload.
pub struct NewChunk<'a> {
    pub index: i32,
    pub record_offset: i32,
    pub record_count: i32,
    pub payload: &'a [u8],
    /// The job that processes it.
    pub job_id: i64,
}

/// Stores the batch's chunks in one statement.
pub async fn insert_chunks(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    batch_id: Uuid,
    encoding: &str,
    chunks: &[NewChunk<'_>],
) -> Result<(), sqlx::Error> {
    let indexes: Vec<i32> = chunks.iter().map(|c| c.index).collect();
    let offsets: Vec<i32> = chunks.iter().map(|c| c.record_offset).collect();
    let counts: Vec<i32> = chunks.iter().map(|c| c.record_count).collect();
    let payloads: Vec<&[u8]> = chunks.iter().map(|c| c.payload).collect();
    let job_ids: Vec<i64> = chunks.iter().map(|c| c.job_id).collect();
    sqlx::query!(
        "INSERT INTO ingest_batch_chunks
             (tenant_id, batch_id, chunk_index, record_offset, record_count, payload,
              payload_encoding, job_id)
         SELECT $1, $2, i, o, n, p, $3, j
         FROM unnest($4::int4[], $5::int4[], $6::int4[], $7::bytea[], $8::int8[])
              AS t(i, o, n, p, j)",
        tenant_id,
        batch_id,
        encoding,
        &indexes,
        &offsets,
        &counts,
        payloads as _,
        &job_ids
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A chunk claimed for processing.
pub struct ClaimedChunk {
    pub record_offset: i32,
    pub record_count: i32,
    pub payload: Vec<u8>,
    pub payload_encoding: String,
    /// It had been settled as failed (its job had died) and is taken back.
    pub was_settled: bool,
}

/// Claims the chunk for processing by marking it processed; `None` when it was processed before.
/// A chunk settled as failed is claimed too (its settlement undone by the caller), under the
/// chunk's row lock.
pub async fn claim_chunk(
    conn: &mut PgConnection,
    batch_id: Uuid,
    chunk: i32,
) -> Result<Option<ClaimedChunk>, sqlx::Error> {
    sqlx::query_as!(
        ClaimedChunk,
        r#"UPDATE ingest_batch_chunks c SET processed_at = now(), failed_at = NULL
           FROM (SELECT batch_id, chunk_index, failed_at FROM ingest_batch_chunks
                 WHERE batch_id = $1 AND chunk_index = $2 FOR UPDATE) o
           WHERE c.batch_id = o.batch_id AND c.chunk_index = o.chunk_index
             AND c.processed_at IS NULL
           RETURNING c.record_offset, c.record_count, c.payload, c.payload_encoding,
                     o.failed_at IS NOT NULL AS "was_settled!""#,
        batch_id,
        chunk
    )
    .fetch_optional(conn)
    .await
}

/// What processing a chunk needs to know of its batch.
pub struct ChunkContext {
    pub integration_id: Uuid,
    pub sync_log_id: Uuid,
    pub data_type: DataType,
    pub sync_mode: SyncMode,
    pub source_type: SourceType,
    pub delivery_seq: i64,
    /// Whether an earlier sync of the integration wrote rows.
    pub earlier_rows: bool,
}

/// The batch's context; its integration's row is locked as a foreign key would (a deletion
/// waits for the chunk, then removes its rows).
pub async fn chunk_context(
    conn: &mut PgConnection,
    batch_id: Uuid,
) -> Result<ChunkContext, sqlx::Error> {
    sqlx::query_as!(
        ChunkContext,
        r#"SELECT b.integration_id, b.sync_log_id, b.data_type AS "data_type: DataType",
                  b.sync_mode AS "sync_mode: SyncMode", i.source_type AS "source_type: SourceType",
                  b.delivery_seq,
                  EXISTS (SELECT 1 FROM integration_sync_logs l
                          WHERE l.integration_id = b.integration_id AND l.id <> b.sync_log_id
                            AND l.records_created > 0) AS "earlier_rows!"
           FROM ingest_batches b JOIN integration_sources i ON i.id = b.integration_id
           WHERE b.id = $1
           FOR KEY SHARE OF i"#,
        batch_id
    )
    .fetch_one(conn)
    .await
}

/// What processing one chunk did to its records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub processed: i64,
    pub created: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub skipped: i64,
    pub failed: i64,
    pub unmatched: i64,
}

/// Counts a processed chunk into its batch; true when the batch has ended with it.
pub async fn count_chunk(
    conn: &mut PgConnection,
    batch_id: Uuid,
    counts: &Counts,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"UPDATE ingest_batches
           SET jobs_done = jobs_done + 1,
               records_processed = records_processed + $2,
               records_created = records_created + $3,
               records_updated = records_updated + $4,
               records_unchanged = records_unchanged + $5,
               records_skipped = records_skipped + $6,
               records_failed = records_failed + $7,
               records_unmatched = records_unmatched + $8,
               state = CASE WHEN jobs_done + 1 < jobs_total THEN 'processing'
                            WHEN chunks_failed > 0 THEN 'failed' ELSE 'processed' END,
               processed_at = CASE WHEN jobs_done + 1 >= jobs_total THEN now() END
           WHERE id = $1
           RETURNING jobs_done >= jobs_total AS "done!""#,
        batch_id,
        counts.processed as i32,
        counts.created as i32,
        counts.updated as i32,
        counts.unchanged as i32,
        counts.skipped as i32,
        counts.failed as i32,
        counts.unmatched as i32
    )
    .fetch_one(conn)
    .await
}

/// A batch's progress, as its deliverer asks for it.
pub struct Progress {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub sync_log_id: Uuid,
    pub data_type: DataType,
    pub state: BatchState,
    pub failure_reason: Option<String>,
    pub is_final: bool,
    pub record_count: i32,
    pub jobs_total: i32,
    pub jobs_done: i32,
    pub records_processed: i32,
    pub records_created: i32,
    pub records_updated: i32,
    pub records_unchanged: i32,
    pub records_skipped: i32,
    pub records_failed: i32,
    pub records_unmatched: i32,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
}

pub async fn progress(conn: &mut PgConnection, id: Uuid) -> Result<Option<Progress>, sqlx::Error> {
    sqlx::query_as!(
        Progress,
        r#"SELECT id, integration_id, sync_log_id, data_type AS "data_type: DataType",
                  state AS "state: BatchState", failure_reason, is_final, record_count,
                  jobs_total, jobs_done, records_processed, records_created, records_updated,
                  records_unchanged, records_skipped, records_failed, records_unmatched,
                  received_at, processed_at
           FROM ingest_batches WHERE id = $1"#,
        id
    )
    .fetch_optional(conn)
    .await
}

/// A batch of a sync and how far its processing is, as the platform API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct BatchProgress {
    pub id: Uuid,
    pub data_type: DataType,
    pub state: BatchState,
    pub is_final: bool,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    pub record_count: i32,
    pub records_processed: i32,
    pub records_created: i32,
    pub records_updated: i32,
    pub records_unchanged: i32,
    pub records_skipped: i32,
    pub records_failed: i32,
    /// Its chunks (one job each), how many are done, and how many were settled as failed.
    pub jobs_total: i32,
    pub jobs_done: i32,
    pub chunks_failed: i32,
}

/// The batches of a sync the transaction sees, in delivery order, with their progress.
pub async fn progress_of_sync(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<Vec<BatchProgress>, sqlx::Error> {
    sqlx::query_as!(
        BatchProgress,
        r#"SELECT id, data_type AS "data_type: DataType", state AS "state: BatchState", is_final,
                  received_at, processed_at, record_count, records_processed, records_created,
                  records_updated, records_unchanged, records_skipped, records_failed,
                  jobs_total, jobs_done, chunks_failed
           FROM ingest_batches WHERE sync_log_id = $1 ORDER BY delivery_seq"#,
        sync_log_id
    )
    .fetch_all(conn)
    .await
}

/// The first stored chunk (payload and encoding) of the integration's latest batch of
/// `data_type` whose chunks are still kept: sample records for a mapping preview.
pub async fn latest_chunk(
    conn: &mut PgConnection,
    integration_id: Uuid,
    data_type: DataType,
) -> Result<Option<(Vec<u8>, String)>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT c.payload, c.payload_encoding
         FROM ingest_batches b
         JOIN ingest_batch_chunks c ON c.batch_id = b.id AND c.chunk_index = 0
         WHERE b.integration_id = $1 AND b.data_type = $2
         ORDER BY b.received_at DESC LIMIT 1",
        integration_id,
        data_type.as_str()
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.payload, r.payload_encoding)))
}
