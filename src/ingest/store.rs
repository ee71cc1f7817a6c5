//! Storing a delivery: sync log, batch, chunks and jobs in one tenant transaction, or nothing.
//!
//! Idempotency, in order: the delivery's key (`Idempotency-Key` or `webhook-id`) within its
//! integration; else the content hash within the named sync log; else, for a delivery that names
//! neither, the same content from the same integration within the dedupe window. The unique
//! indexes on `ingest_batches` settle races between concurrent copies of one delivery: the loser
//! rolls back everything it wrote (including a sync log it created) and answers as a duplicate.

use chrono::{DateTime, Utc};
use jobs::NewJob;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    db::{self, tenant_tx},
    domain::{DataType, FailureReason, SyncMode, SyncStatus},
    ingest::envelope::SourceError,
    sync::{
        FinalizeSync,
        chunk::{CHUNK_ENCODING, Chunk, enqueue_chunk_jobs},
        job_tag,
    },
};

/// A validated delivery, ready to store.
#[derive(Debug)]
pub struct NewBatch<'a> {
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    pub sync_log_id: Option<Uuid>,
    pub data_type: DataType,
    pub source_type: &'a str,
    pub sync_mode: SyncMode,
    pub is_final: bool,
    /// What the workflow reported when fetching failed: the sync fails at once.
    pub source_error: Option<&'a SourceError>,
    /// On a final batch: how many batches its data type has in the sync.
    pub batch_count: Option<u32>,
    pub idempotency_key: Option<&'a str>,
    pub content_hash: [u8; 32],
    pub record_count: usize,
    pub chunks: &'a [Chunk],
    /// The delivery's bytes as received (after transport decompression).
    pub body_bytes: usize,
}

pub use crate::db::batches::Receipt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Accepted(Receipt),
    /// The delivery was seen before; nothing was written.
    Duplicate(Receipt),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sync log {0} does not exist for this integration")]
    SyncLogNotFound(Uuid),
    #[error("sync log {id} is already closed ({status}); start a new sync for new batches")]
    SyncLogClosed { id: Uuid, status: SyncStatus },
    #[error("sync log {id} asked for {}, not for {got}", DataType::list(expected))]
    DataTypeMismatch {
        id: Uuid,
        expected: Vec<DataType>,
        got: DataType,
    },
    #[error(
        "the tenant has {pending} received records not yet processed (limit {limit}); retry later"
    )]
    BacklogFull { pending: i64, limit: i64 },
    #[error(transparent)]
    Database(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e.into())
    }
}

impl From<jobs::Error> for StoreError {
    fn from(e: jobs::Error) -> Self {
        match e {
            jobs::Error::Database(e) => e.into(),
            other => Self::Database(other.into()),
        }
    }
}

pub struct Limits {
    pub max_pending_records_per_tenant: i64,
    pub dedupe_window_secs: u64,
}

pub async fn store(
    pool: &PgPool,
    queue: &jobs::Queue,
    batch: &NewBatch<'_>,
    limits: &Limits,
) -> Result<Stored, StoreError> {
    let mut tx = tenant_tx(pool, batch.tenant_id).await?;

    if let Some(receipt) = by_idempotency_key(&mut tx, batch).await? {
        return Ok(Stored::Duplicate(receipt));
    }

    let pending = db::batches::pending_records(&mut tx, batch.tenant_id).await?;
    if pending >= limits.max_pending_records_per_tenant {
        return Err(StoreError::BacklogFull {
            pending,
            limit: limits.max_pending_records_per_tenant,
        });
    }

    let sync_log_id = match batch.sync_log_id {
        Some(id) => {
            let Some(log) = db::sync_logs::for_delivery(&mut tx, id).await? else {
                return Err(StoreError::SyncLogNotFound(id));
            };
            if log.integration_id != batch.integration_id {
                return Err(StoreError::SyncLogNotFound(id));
            }
            if let Some(receipt) = by_content(&mut tx, batch, Some(id)).await? {
                return Ok(Stored::Duplicate(receipt));
            }
            // A sync the watchdog closed for silence, or one failed by a source error while
            // another data type was still being delivered, takes its late batches: the records
            // are real, and losing them would be worse than a sync log that says they were late.
            let takes_late = matches!(
                log.failure_reason,
                Some(FailureReason::TimedOut | FailureReason::SourceError)
            );
            if !log.status.is_open() && !takes_late {
                return Err(StoreError::SyncLogClosed {
                    id,
                    status: log.status,
                });
            }
            if !log.data_types.is_empty() && !log.data_types.contains(&batch.data_type) {
                return Err(StoreError::DataTypeMismatch {
                    id,
                    expected: log.data_types,
                    got: batch.data_type,
                });
            }
            id
        }
        None => {
            if batch.idempotency_key.is_none() {
                // Serialises concurrent copies of one unkeyed delivery so the window check below
                // sees the winner's commit.
                db::batches::lock_delivery(
                    &mut tx,
                    advisory_key(batch.integration_id, &batch.content_hash),
                )
                .await?;
                if let Some(receipt) = recent_same_content(&mut tx, batch, limits).await? {
                    return Ok(Stored::Duplicate(receipt));
                }
            }
            let started = db::sync_logs::insert_webhook_started(
                &mut tx,
                batch.tenant_id,
                batch.integration_id,
                batch.sync_mode,
                batch.data_type,
            )
            .await?;
            crate::telemetry::metrics::sync_started(crate::domain::SyncTrigger::Webhook.as_str());
            started
        }
    };

    let jobs_total = batch.chunks.len() as i32;
    let empty = batch.record_count == 0;
    let row = db::batches::NewBatchRow {
        tenant_id: batch.tenant_id,
        integration_id: batch.integration_id,
        sync_log_id,
        data_type: batch.data_type,
        source_type: batch.source_type,
        sync_mode: batch.sync_mode,
        idempotency_key: batch.idempotency_key,
        content_hash: &batch.content_hash,
        is_final: batch.is_final,
        record_count: batch.record_count as i32,
        jobs_total,
        batch_count: batch
            .is_final
            .then_some(batch.batch_count)
            .flatten()
            .map(|n| n as i32),
        body_bytes: i64::try_from(batch.body_bytes).unwrap_or(i64::MAX),
    };
    let inserted = db::batches::insert(&mut tx, &row).await?;
    let Some(batch_id) = inserted else {
        // A concurrent copy of this delivery committed first.
        tx.rollback().await?;
        let mut tx = tenant_tx(pool, batch.tenant_id).await?;
        let found = match by_idempotency_key(&mut tx, batch).await? {
            Some(r) => Some(r),
            None => by_content(&mut tx, batch, Some(sync_log_id)).await?,
        };
        return found.map(Stored::Duplicate).ok_or_else(|| {
            StoreError::Database(anyhow::anyhow!(
                "batch insert conflicted but no earlier batch was found"
            ))
        });
    };

    if !batch.chunks.is_empty() {
        let indexes: Vec<i32> = batch.chunks.iter().map(|c| c.index).collect();
        let job_ids = enqueue_chunk_jobs(
            &mut tx,
            queue,
            batch.tenant_id,
            batch.integration_id,
            batch_id,
            &indexes,
        )
        .await?;
        let chunks: Vec<db::batches::NewChunk<'_>> = batch
            .chunks
            .iter()
            .zip(&job_ids)
            .map(|(c, &job_id)| db::batches::NewChunk {
                index: c.index,
                record_offset: c.record_offset,
                record_count: c.record_count,
                payload: &c.payload,
                job_id,
            })
            .collect();
        db::batches::insert_chunks(&mut tx, batch.tenant_id, batch_id, CHUNK_ENCODING, &chunks)
            .await?;
    }
    let completed = db::sync_logs::count_delivery(
        &mut tx,
        sync_log_id,
        batch.data_type,
        batch.record_count as i64,
        empty,
    )
    .await?;
    if completed && batch.source_error.is_none() {
        // Every requested type is in: closes the sync if every batch is already processed (an
        // empty or late last batch); otherwise the last chunk job closes it.
        let finalize = NewJob::new(&FinalizeSync {
            tenant_id: batch.tenant_id,
            sync_log_id,
        })?
        .tag(job_tag(batch.tenant_id, batch.integration_id));
        queue.enqueue(&mut tx, &finalize).await?;
    }
    if let Some(error) = batch.source_error {
        let summary = error.summary(batch.data_type.as_str());
        crate::sync::fail_sync(
            &mut tx,
            sync_log_id,
            FailureReason::SourceError,
            &summary,
            Utc::now(),
        )
        .await?;
        db::sync_logs::set_source_error(
            &mut tx,
            sync_log_id,
            batch.data_type,
            error.status,
            &error.message,
        )
        .await?;
        tracing::warn!(sync.id = %sync_log_id, integration.id = %batch.integration_id, %summary, "the workflow reported a source error; sync failed");
    }
    tx.commit().await?;

    Ok(Stored::Accepted(Receipt {
        batch_id,
        sync_log_id,
        records: batch.record_count as i32,
        jobs: jobs_total,
    }))
}

async fn by_idempotency_key(
    conn: &mut PgConnection,
    batch: &NewBatch<'_>,
) -> Result<Option<Receipt>, sqlx::Error> {
    match batch.idempotency_key {
        Some(key) => db::batches::by_idempotency_key(conn, batch.integration_id, key).await,
        None => Ok(None),
    }
}

async fn by_content(
    conn: &mut PgConnection,
    batch: &NewBatch<'_>,
    sync_log_id: Option<Uuid>,
) -> Result<Option<Receipt>, sqlx::Error> {
    match sync_log_id {
        Some(id) => db::batches::by_content(conn, id, &batch.content_hash).await,
        None => Ok(None),
    }
}

async fn recent_same_content(
    conn: &mut PgConnection,
    batch: &NewBatch<'_>,
    limits: &Limits,
) -> Result<Option<Receipt>, sqlx::Error> {
    let since: DateTime<Utc> =
        Utc::now() - chrono::Duration::seconds(limits.dedupe_window_secs as i64);
    db::batches::recent_by_content(conn, batch.integration_id, &batch.content_hash, since).await
}

/// 64 bits of (integration, content) for a transaction-level advisory lock.
fn advisory_key(integration_id: Uuid, content_hash: &[u8; 32]) -> i64 {
    let mut bytes = [0u8; 8];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = content_hash[i] ^ integration_id.as_bytes()[i];
    }
    i64::from_le_bytes(bytes)
}
