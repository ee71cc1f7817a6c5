//! The worker pipeline: one stored chunk → mapped, deduplicated, matched, bulk-upserted rows,
//! counted into its batch and sync log, all in the processing job's own transaction.
//!
//! Exactly once: the job completes in this transaction (a transactional job), and the chunk is
//! claimed by setting `processed_at`, so a second run of the same chunk (admin retry of a completed
//! job, a duplicate) finds it processed and changes nothing. Errors in the data fail records, not
//! the job; database errors roll everything back and the job retries with backoff.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use serde_json::{Value, json, value::RawValue};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{DataType, SourceType, SyncMode},
    mapping::{self, FieldError, MappedRecord, MappingSet, Outcome, columns, storable},
    matching::{Clues, Matcher, email_domain},
    sync::{chunk::decode_chunk, close_sync_if_done, external_table as table},
};

#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Per-record errors kept per sync; beyond it they are only counted.
    pub max_errors_per_sync: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The stored data cannot be processed by any retry.
    #[error("{0}")]
    Corrupt(String),
    /// The database refused a value of the chunk's bulk statement, which ran without isolating
    /// its records: the next attempt isolates them (see `insert_isolating`).
    #[error("the database refused a record ({0}); the next attempt isolates the refused records")]
    Refused(String),
}

/// Per-chunk (and per-batch, per-sync) counts.
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

struct RecordError {
    index: i32,
    external_id: Option<String>,
    error: FieldError,
}

/// A mapped record ready for the database.
struct Row<'a> {
    /// The record's position in its batch.
    index: i32,
    /// Its place in delivery order: a stored row written by a later one is never overwritten.
    delivery: i64,
    record: MappedRecord,
    /// `record.properties` as JSON text, serialised once for the hash and the insert.
    properties: String,
    raw: &'a str,
    hash: [u8; 32],
    account_id: Option<Uuid>,
    method: &'static str,
    reason: Option<&'static str>,
    domain: Option<String>,
}

/// The derived domain column of a table, next to the email it comes from.
fn domain_column(data_type: DataType) -> Option<(&'static str, &'static str)> {
    match data_type {
        DataType::Contacts => Some(("email_domain", "email")),
        DataType::Tickets => Some(("requester_domain", "requester_email")),
        DataType::Deals => None,
    }
}

/// Loads an integration's mappings for a data type: its preset with stored overrides.
pub async fn load_mappings(
    tx: &mut PgConnection,
    integration_id: Uuid,
    source: SourceType,
    data_type: DataType,
) -> Result<Result<MappingSet, Vec<mapping::MappingProblem>>, sqlx::Error> {
    let stored: Vec<(String, Value, bool)> = sqlx::query_as(
        "SELECT target_field, mapping, enabled FROM integration_field_mappings
         WHERE integration_id = $1 AND data_type = $2 ORDER BY position, target_field",
    )
    .bind(integration_id)
    .bind(data_type.as_str())
    .fetch_all(&mut *tx)
    .await?;
    Ok(mapping::compile(source, data_type, &stored))
}

/// The tenant's accounts and never-matched domains.
pub async fn load_matcher(tx: &mut PgConnection, tenant_id: Uuid) -> Result<Matcher, sqlx::Error> {
    let accounts: Vec<(Uuid, String, Vec<String>)> =
        sqlx::query_as("SELECT id, name, domains FROM accounts")
            .fetch_all(&mut *tx)
            .await?;
    let blocked: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(own_domains || excluded_domains) FROM tenants WHERE id = $1",
    )
    .bind(tenant_id)
    .fetch_all(&mut *tx)
    .await?;
    Ok(Matcher::new(
        accounts
            .iter()
            .map(|(id, name, d)| (*id, name.as_str(), &d[..])),
        blocked.iter().map(String::as_str),
    ))
}

/// What identifies a tenant's matcher: its accounts' count and newest change, and the tenant's own
/// last change (its own and excluded domains).
type MatcherVersion = (i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The matchers of the tenants this process has worked for. Building one loads every account of
/// the tenant, measured at ~4 % of a 1,000-record chunk's time with 1,000 accounts; a chunk now
/// only asks whether the accounts changed and reuses the matcher when they did not.
#[derive(Clone, Default)]
pub struct MatcherCache(Arc<Mutex<HashMap<Uuid, CachedMatcher>>>);

type CachedMatcher = (MatcherVersion, Arc<Matcher>);

impl MatcherCache {
    /// The tenant's current matcher, as of `tx`'s snapshot (which must be scoped to the tenant).
    /// Its accounts stay until `tx` ends: deleting one waits for the lock taken here (see the
    /// migration `external_references`), so no row written in `tx` refers to a deleted account.
    pub async fn get(
        &self,
        tx: &mut PgConnection,
        tenant_id: Uuid,
    ) -> Result<Arc<Matcher>, sqlx::Error> {
        // A statement of its own: a statement's snapshot is taken before it could wait for the
        // lock, and the accounts must be read after any deletion it waited for.
        sqlx::query("SELECT lock_tenant_accounts($1, false)")
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        let version: MatcherVersion = sqlx::query_as(
            "SELECT count(*), max(updated_at), (SELECT updated_at FROM tenants WHERE id = $1)
             FROM accounts",
        )
        .bind(tenant_id)
        .fetch_one(&mut *tx)
        .await?;
        let cached = {
            let cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .get(&tenant_id)
                .filter(|(v, _)| *v == version)
                .map(|(_, m)| m.clone())
        };
        if let Some(matcher) = cached {
            return Ok(matcher);
        }
        let matcher = Arc::new(load_matcher(tx, tenant_id).await?);
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant_id, (version, matcher.clone()));
        Ok(matcher)
    }
}

/// Processes chunk `chunk` of `batch_id`. Returns `None` when it was processed before.
pub async fn process_chunk(
    tx: &mut PgConnection,
    tenant_id: Uuid,
    batch_id: Uuid,
    chunk: i32,
    settings: &PipelineSettings,
    matchers: &MatcherCache,
    isolate: bool,
) -> Result<Option<Counts>, PipelineError> {
    crate::db::set_tenant(tx, tenant_id).await?;
    // Claims the chunk. One settled as failed (its job had died; an operator retried the job)
    // is taken back first: its records leave the failed counts, and what its settling closed
    // reopens, once, under the chunk's row lock.
    let claimed: Option<(i32, i32, Vec<u8>, String, bool)> = sqlx::query_as(
        "UPDATE ingest_batch_chunks c SET processed_at = now(), failed_at = NULL
         FROM (SELECT batch_id, chunk_index, failed_at FROM ingest_batch_chunks
               WHERE batch_id = $1 AND chunk_index = $2 FOR UPDATE) o
         WHERE c.batch_id = o.batch_id AND c.chunk_index = o.chunk_index AND c.processed_at IS NULL
         RETURNING c.record_offset, c.record_count, c.payload, c.payload_encoding,
                   o.failed_at IS NOT NULL",
    )
    .bind(batch_id)
    .bind(chunk)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((offset, record_count, payload, encoding, was_settled)) = claimed else {
        return Ok(None);
    };
    if was_settled {
        crate::sync::chunk::take_back_settled(tx, batch_id, offset, record_count).await?;
    }
    // The integration row is locked as a foreign key would (a deletion waits for this chunk, then
    // removes its rows). `earlier_rows`: whether an earlier sync of the integration wrote rows.
    // Probing for existing rows first pays when many are unchanged (they are then not even sent);
    // without earlier rows there are none, and the probe only doubles the index lookups the
    // upsert makes anyway.
    let (integration_id, sync_log_id, data_type, sync_mode, source, delivery_seq, earlier_rows): (
        Uuid,
        Uuid,
        DataType,
        SyncMode,
        SourceType,
        i64,
        bool,
    ) = sqlx::query_as(
        "SELECT b.integration_id, b.sync_log_id, b.data_type, b.sync_mode, i.source_type,
                b.delivery_seq,
                EXISTS (SELECT 1 FROM integration_sync_logs l
                        WHERE l.integration_id = b.integration_id AND l.id <> b.sync_log_id
                          AND l.records_created > 0)
         FROM ingest_batches b JOIN integration_sources i ON i.id = b.integration_id
         WHERE b.id = $1
         FOR KEY SHARE OF i",
    )
    .bind(batch_id)
    .fetch_one(&mut *tx)
    .await?;
    let full_sync = sync_mode == SyncMode::Full;

    let bytes = decode_chunk(&payload, &encoding)
        .map_err(|e| PipelineError::Corrupt(format!("chunk {chunk} of batch {batch_id}: {e}")))?;
    // Kept raw: each record's text is stored as received and hashed as is, never re-serialised.
    let raws: Vec<&RawValue> = serde_json::from_slice(&bytes)
        .map_err(|e| PipelineError::Corrupt(format!("chunk {chunk} of batch {batch_id}: {e}")))?;

    let mappings = load_mappings(tx, integration_id, source, data_type).await?;
    let matcher = matchers.get(tx, tenant_id).await?;

    let mut counts = Counts {
        processed: raws.len() as i64,
        ..Counts::default()
    };
    let mut errors = Vec::new();
    let mut rows: Vec<Row<'_>> = Vec::with_capacity(raws.len());
    let mut position: HashMap<String, usize> = HashMap::with_capacity(raws.len());
    let cols = columns(data_type);
    let col = |name: &str| cols.iter().position(|(c, _)| *c == name);
    for (i, raw) in raws.iter().enumerate() {
        let index = offset + i as i32;
        // The webhook refuses what serde_json cannot parse; chunks stored before it did, or
        // written by hand, still fail one record and not the chunk.
        let record: Value = match serde_json::from_str(raw.get()) {
            Ok(record) => record,
            Err(e) => {
                counts.failed += 1;
                errors.push(RecordError {
                    index,
                    external_id: None,
                    error: FieldError {
                        field: String::new(),
                        code: "invalid_json",
                        message: format!("the record is not storable JSON: {e}"),
                    },
                });
                continue;
            }
        };
        let record = &record;
        let mapped = match &mappings {
            Err(problems) => Outcome::Failed {
                external_id: None,
                errors: problems
                    .iter()
                    .map(|p| FieldError {
                        field: p.target.clone(),
                        code: "mapping_invalid",
                        message: p.message.clone(),
                    })
                    .collect(),
            },
            Ok(set) => set.apply(record),
        };
        match mapped {
            Outcome::Skipped => counts.skipped += 1,
            Outcome::Failed {
                external_id,
                errors: field_errors,
            } => {
                counts.failed += 1;
                errors.extend(field_errors.into_iter().map(|error| RecordError {
                    index,
                    external_id: external_id.clone(),
                    error,
                }));
            }
            Outcome::Mapped(record_out) => {
                let unstorable = storable(data_type, &record_out);
                if !unstorable.is_empty() {
                    counts.failed += 1;
                    let external_id = Some(record_out.external_id);
                    errors.extend(unstorable.into_iter().map(|error| RecordError {
                        index,
                        external_id: external_id.clone(),
                        error,
                    }));
                    continue;
                }
                let mut record_out = record_out;
                let get = |name: &str| col(name).and_then(|c| record_out.columns[c].as_deref());
                let (email, website, company) = match data_type {
                    DataType::Contacts => (get("email"), None, get("company_name")),
                    DataType::Tickets => (get("requester_email"), None, None),
                    DataType::Deals => (
                        get("contact_email"),
                        get("company_domain"),
                        get("company_name"),
                    ),
                };
                let found = matcher.find(&Clues {
                    email,
                    website,
                    company_name: company,
                });
                let domain = domain_column(data_type)
                    .and_then(|(_, from)| get(from))
                    .and_then(email_domain);
                let raw = raw.get();
                let mut hasher = Sha256::new();
                for c in &record_out.columns {
                    hasher.update(c.as_deref().unwrap_or("\u{0}").as_bytes());
                    hasher.update([0xff]);
                }
                let properties =
                    Value::Object(std::mem::take(&mut record_out.properties)).to_string();
                hasher.update(properties.as_bytes());
                hasher.update([0xff]);
                hasher.update(raw.as_bytes());
                hasher.update(found.account_id.map(|a| a.to_string()).unwrap_or_default());
                let row = Row {
                    index,
                    delivery: delivery_order(delivery_seq, index),
                    properties,
                    raw,
                    hash: hasher.finalize().into(),
                    account_id: found.account_id,
                    method: found.method.as_str(),
                    reason: found.reason,
                    domain,
                    record: record_out,
                };
                // Last occurrence of an external id wins; the earlier ones count as skipped.
                match position.get(&row.record.external_id) {
                    Some(&at) => {
                        counts.skipped += 1;
                        rows[at] = row;
                    }
                    None => {
                        position.insert(row.record.external_id.clone(), rows.len());
                        rows.push(row);
                    }
                }
            }
        }
    }
    let probe_first = full_sync || earlier_rows;
    let target = (tenant_id, integration_id, sync_log_id, data_type);
    let written = upsert(tx, target, &rows, probe_first, isolate).await?;
    counts.created = written.created;
    counts.updated = written.updated;
    counts.unchanged = written.unchanged;
    counts.skipped += written.superseded;
    counts.failed += written.rejected.len() as i64;
    let rejected: std::collections::HashSet<i32> =
        written.rejected.iter().map(|r| r.index).collect();
    counts.unmatched = rows
        .iter()
        .filter(|r| r.account_id.is_none() && !rejected.contains(&r.index))
        .count() as i64;
    errors.extend(written.rejected);
    let unchanged_ids = written.unchanged_ids;
    if full_sync && !unchanged_ids.is_empty() {
        // A full sync sweeps what it did not see: unchanged rows were seen.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET last_synced_at = now(), last_sync_log_id = $3
             WHERE tenant_id = $1 AND integration_id = $2 AND id = ANY($4)",
            table(data_type)
        )))
        .bind(tenant_id)
        .bind(integration_id)
        .bind(sync_log_id)
        .bind(&unchanged_ids)
        .execute(&mut *tx)
        .await?;
    }

    record_errors(
        tx,
        tenant_id,
        integration_id,
        sync_log_id,
        batch_id,
        &errors,
        settings,
    )
    .await?;
    let batch_done: bool = sqlx::query_scalar(
        "UPDATE ingest_batches
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
         RETURNING jobs_done >= jobs_total",
    )
    .bind(batch_id)
    .bind(counts.processed as i32)
    .bind(counts.created as i32)
    .bind(counts.updated as i32)
    .bind(counts.unchanged as i32)
    .bind(counts.skipped as i32)
    .bind(counts.failed as i32)
    .bind(counts.unmatched as i32)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE integration_sync_logs
         SET records_created = records_created + $2,
             records_updated = records_updated + $3,
             records_unchanged = records_unchanged + $4,
             records_skipped = records_skipped + $5,
             records_failed = records_failed + $6,
             records_unmatched = records_unmatched + $7,
             batches_processed = batches_processed + $8,
             status = CASE WHEN status = 'pending' THEN 'running' ELSE status END
         WHERE id = $1",
    )
    .bind(sync_log_id)
    .bind(counts.created)
    .bind(counts.updated)
    .bind(counts.unchanged)
    .bind(counts.skipped)
    .bind(counts.failed)
    .bind(counts.unmatched)
    .bind(i32::from(batch_done))
    .execute(&mut *tx)
    .await?;
    if batch_done {
        close_sync_if_done(tx, sync_log_id).await?;
    }
    Ok(Some(counts))
}

/// A record's place in delivery order: its batch's delivery number, then its index in the batch
/// (below 2^20: batches hold at most `ingest.max_records`, 100,000 by default, and are refused
/// beyond 1,048,575).
pub fn delivery_order(delivery_seq: i64, index: i32) -> i64 {
    (delivery_seq << 20) | i64::from(index.clamp(0, (1 << 20) - 1))
}

/// What an upsert did.
#[derive(Default)]
struct Written {
    created: i64,
    updated: i64,
    unchanged: i64,
    /// The unchanged rows' ids, found only when probing first (full syncs mark them seen).
    unchanged_ids: Vec<Uuid>,
    /// Rows not written because a later delivery of the record is stored: counted as skipped.
    superseded: i64,
    /// Rows the database refused, each alone, with its reason.
    rejected: Vec<RecordError>,
}

/// Created and updated rows are upserted in one statement; unchanged ones (same content hash,
/// not deleted) are not written.
///
/// With `probe_first` the rows are looked up first (one unique-index probe each): unchanged ones
/// are not sent at all and their ids are known (full syncs mark them seen). Without it, they are
/// inserted as new, and the rows of a statement that finds one stored after all are upserted
/// with the probe.
async fn upsert(
    tx: &mut PgConnection,
    target: Target,
    rows: &[Row<'_>],
    probe_first: bool,
    isolate: bool,
) -> Result<Written, PipelineError> {
    let all = rows.iter().collect::<Vec<_>>();
    if probe_first {
        return upsert_probed(tx, target, &all, isolate).await;
    }
    let inserted = insert_isolating(tx, target, &all, OnConflict::Fail, true).await?;
    let mut written = Written {
        created: inserted.returned.len() as i64,
        rejected: inserted.rejected,
        ..Written::default()
    };
    if !inserted.conflicted.is_empty() {
        let rest = upsert_probed(tx, target, &inserted.conflicted, isolate).await?;
        written.created += rest.created;
        written.updated = rest.updated;
        written.unchanged = rest.unchanged;
        written.unchanged_ids = rest.unchanged_ids;
        written.superseded = rest.superseded;
        written.rejected.extend(rest.rejected);
    }
    Ok(written)
}

/// [`upsert`] with the existing rows probed first.
async fn upsert_probed(
    tx: &mut PgConnection,
    target: Target,
    rows: &[&Row<'_>],
    isolate: bool,
) -> Result<Written, PipelineError> {
    if rows.is_empty() {
        return Ok(Written::default());
    }
    let (tenant_id, integration_id, _, data_type) = target;
    let table = table(data_type);
    let ids: Vec<&str> = rows.iter().map(|r| r.record.external_id.as_str()).collect();
    let existing: Vec<StoredRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        // One unique-index probe per id, forced by LATERAL … LIMIT 1. Both plain forms went
        // quadratic as the table grew: `external_id = ANY($3)` became a filter on a tenant-index
        // scan, and a join on the unnested ids a hash join over all the integration's rows.
        "SELECT e.id, e.external_id, e.content_hash, e.deleted_at IS NOT NULL AS deleted,
                e.delivery_seq
         FROM unnest($3::text[]) AS k(external_id),
              LATERAL (SELECT id, external_id, content_hash, deleted_at, delivery_seq FROM {table}
                       WHERE tenant_id = $1 AND integration_id = $2 AND external_id = k.external_id
                       LIMIT 1) e"
    )))
    .bind(tenant_id)
    .bind(integration_id)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let existing: HashMap<&str, &StoredRow> = existing
        .iter()
        .map(|row| (row.external_id.as_str(), row))
        .collect();
    let mut unchanged = Vec::new();
    let mut superseded = 0;
    let changed: Vec<&Row<'_>> = rows
        .iter()
        .copied()
        .filter(|r| match existing.get(r.record.external_id.as_str()) {
            // A later delivery wrote the stored row (this chunk ran late: a retry, a rescue).
            Some(stored) if stored.delivery_seq > r.delivery => {
                superseded += 1;
                false
            }
            Some(stored)
                if !stored.deleted && stored.content_hash.as_deref() == Some(&r.hash[..]) =>
            {
                unchanged.push(stored.id);
                false
            }
            _ => true,
        })
        .collect();
    let inserted = insert_isolating(tx, target, &changed, OnConflict::Update, isolate).await?;
    let created = inserted.returned.iter().filter(|i| **i).count() as i64;
    let updated = inserted.returned.len() as i64 - created;
    // Sent but not written: stored meanwhile with the same content.
    let not_written = changed.len() - inserted.returned.len() - inserted.rejected.len();
    Ok(Written {
        created,
        updated,
        unchanged: (unchanged.len() + not_written) as i64,
        unchanged_ids: unchanged,
        superseded,
        rejected: inserted.rejected,
    })
}

/// What the probe finds of a stored row.
#[derive(sqlx::FromRow)]
struct StoredRow {
    id: Uuid,
    external_id: String,
    content_hash: Option<Vec<u8>>,
    deleted: bool,
    delivery_seq: i64,
}

/// Where the rows of one upsert go: tenant, integration, sync log, data type.
type Target = (Uuid, Uuid, Uuid, DataType);

/// What [`insert_isolating`] did.
#[derive(Default)]
struct Isolated<'r, 'a> {
    /// Per written row, whether it was inserted (else updated).
    returned: Vec<bool>,
    /// With [`OnConflict::Fail`]: the rows of statements that found a row stored already; none
    /// of them was written.
    conflicted: Vec<&'r Row<'a>>,
    rejected: Vec<RecordError>,
}

/// Inserts `rows` in one statement, inside a savepoint when `isolate`. When the database refuses
/// the data (a value it cannot store that the checks before did not catch), the rows are halved
/// and each half tried again, down to the single rows it refuses, which become per-record errors:
/// one bad record never loses its chunk. That costs about 2·log₂(n) statements per refused record.
///
/// Without `isolate` (an upsert's first attempt) there is no savepoint: the statement's failure
/// fails the attempt with [`PipelineError::Refused`], and the job's next attempt isolates. The
/// checks before the insert leave that rare, and a savepoint per chunk measured ~3 % of re-sync
/// throughput in the pipeline benchmark.
///
/// With [`OnConflict::Fail`] the rows are expected new: without earlier rows of the integration
/// (its first sync, usually its largest) that is almost always so, and a plain insert skips the
/// conflict check and speculative insertion an upsert makes per row (+6.5 % initial-sync
/// throughput in the pipeline benchmark). A statement that meets a stored row is rolled back and
/// its rows returned as `conflicted`, for the caller to upsert.
async fn insert_isolating<'r, 'a>(
    tx: &mut PgConnection,
    target: Target,
    rows: &[&'r Row<'a>],
    on_conflict: OnConflict,
    isolate: bool,
) -> Result<Isolated<'r, 'a>, PipelineError> {
    let mut out = Isolated::default();
    if !isolate && on_conflict == OnConflict::Update {
        if rows.is_empty() {
            return Ok(out);
        }
        return match insert_rows(tx, target, rows, on_conflict).await {
            Ok(returned) => {
                out.returned = returned;
                Ok(out)
            }
            Err(e) if matches!(refusal(&e), Refusal::Data) => Err(PipelineError::Refused(
                e.as_database_error()
                    .map_or(e.to_string(), |d| d.message().to_string()),
            )),
            Err(e) => Err(e.into()),
        };
    }
    let mut pending = vec![rows];
    while let Some(part) = pending.pop() {
        if part.is_empty() {
            continue;
        }
        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
        let result = insert_rows(&mut savepoint, target, part, on_conflict).await;
        let refused = match &result {
            Ok(_) => None,
            Err(e) => Some(refusal(e)),
        };
        match (result, refused) {
            (Ok(returned), _) => {
                savepoint.commit().await?;
                out.returned.extend(returned);
            }
            (Err(_), Some(Refusal::Conflict)) if on_conflict == OnConflict::Fail => {
                savepoint.rollback().await?;
                out.conflicted.extend_from_slice(part);
            }
            (Err(e), Some(Refusal::Data)) => {
                savepoint.rollback().await?;
                if let [row] = part {
                    out.rejected.push(RecordError {
                        index: row.index,
                        external_id: Some(row.record.external_id.clone()),
                        error: FieldError {
                            field: String::new(),
                            code: "rejected_by_database",
                            message: format!(
                                "the database refused the record: {}",
                                e.as_database_error()
                                    .map_or(e.to_string(), |d| d.message().to_string())
                            ),
                        },
                    });
                } else {
                    let (first, second) = part.split_at(part.len() / 2);
                    pending.push(second);
                    pending.push(first);
                }
            }
            (Err(e), _) => return Err(e.into()),
        }
    }
    Ok(out)
}

enum Refusal {
    /// A row with the same external id is stored.
    Conflict,
    /// A value the database cannot store: data exceptions (class 22), check and not-null
    /// violations, an index entry too large (54000).
    Data,
    /// Anything else (connection, deadlock, serialization): the job retries.
    Other,
}

fn refusal(e: &sqlx::Error) -> Refusal {
    let Some(code) = e.as_database_error().and_then(|d| d.code()) else {
        return Refusal::Other;
    };
    match &*code {
        "23505" => Refusal::Conflict,
        c if c.starts_with("22") || matches!(c, "23502" | "23514" | "54000") => Refusal::Data,
        _ => Refusal::Other,
    }
}

/// What an insert does with a row whose external id is already stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnConflict {
    /// The statement fails with a unique violation.
    Fail,
    /// The row is updated, unless its content hash is the same and it is not soft-deleted.
    Update,
}

/// One `INSERT` of `changed`; with [`OnConflict::Update`] an existing row whose content hash is
/// the same (and that is not soft-deleted) is left as it is and not returned. Returns, per
/// written row, whether it was inserted.
async fn insert_rows(
    tx: &mut PgConnection,
    (tenant_id, integration_id, sync_log_id, data_type): Target,
    changed: &[&Row<'_>],
    on_conflict: OnConflict,
) -> Result<Vec<bool>, sqlx::Error> {
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
    let sql = format!(
        "INSERT INTO {table} (tenant_id, integration_id, last_sync_log_id, {})
         SELECT $1, $2, $3, {} FROM unnest({}) AS t({})
         {conflict}
         RETURNING (xmax = 0) AS inserted",
        column_names.join(", "),
        select.join(", "),
        unnest.join(", "),
        aliases.join(", "),
    );
    let mut query = sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(integration_id)
        .bind(sync_log_id)
        // Time-ordered ids (UUIDv7) for the rows this creates: each lands on the primary key's
        // rightmost leaf, which PostgreSQL appends to without a descent, instead of on a random
        // page of an index that outgrows memory as the table grows. Updated rows keep theirs.
        .bind(changed.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(
            changed
                .iter()
                .map(|r| r.record.external_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(changed.iter().map(|r| r.account_id).collect::<Vec<_>>())
        .bind(changed.iter().map(|r| r.method).collect::<Vec<_>>())
        .bind(changed.iter().map(|r| r.reason).collect::<Vec<_>>())
        .bind(
            changed
                .iter()
                .map(|r| r.properties.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(changed.iter().map(|r| r.raw).collect::<Vec<_>>())
        .bind(changed.iter().map(|r| &r.hash[..]).collect::<Vec<_>>())
        .bind(changed.iter().map(|r| r.delivery).collect::<Vec<_>>());
    if domain_column(data_type).is_some() {
        query = query.bind(
            changed
                .iter()
                .map(|r| r.domain.as_deref())
                .collect::<Vec<_>>(),
        );
    }
    for i in 0..cols.len() {
        query = query.bind(
            changed
                .iter()
                .map(|r| r.record.columns[i].as_deref())
                .collect::<Vec<_>>(),
        );
    }
    query.fetch_all(&mut *tx).await
}

async fn record_errors(
    tx: &mut PgConnection,
    tenant_id: Uuid,
    integration_id: Uuid,
    sync_log_id: Uuid,
    batch_id: Uuid,
    errors: &[RecordError],
    settings: &PipelineSettings,
) -> Result<(), sqlx::Error> {
    if errors.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO integration_sync_errors
             (tenant_id, integration_id, sync_log_id, batch_id, record_index, external_id, field, code, message)
         SELECT $1, $2, $3, $4, i, e, f, c, m
         FROM unnest($5::int4[], $6::text[], $7::text[], $8::text[], $9::text[]) AS t(i, e, f, c, m)
         LIMIT greatest(0, $10 - (SELECT count(*) FROM integration_sync_errors WHERE sync_log_id = $3))",
    )
    .bind(tenant_id)
    .bind(integration_id)
    .bind(sync_log_id)
    .bind(batch_id)
    .bind(errors.iter().map(|e| e.index).collect::<Vec<_>>())
    .bind(
        errors
            .iter()
            .map(|e| e.external_id.as_deref().map(storable_text))
            .collect::<Vec<_>>(),
    )
    .bind(
        errors
            .iter()
            .map(|e| (!e.error.field.is_empty()).then(|| storable_text(&e.error.field)))
            .collect::<Vec<_>>(),
    )
    .bind(errors.iter().map(|e| e.error.code).collect::<Vec<_>>())
    .bind(
        errors
            .iter()
            .map(|e| storable_text(&e.error.message))
            .collect::<Vec<_>>(),
    )
    .bind(settings.max_errors_per_sync)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Text from a record, as a `text` column can hold it: NUL, which PostgreSQL refuses, becomes
/// U+FFFD (an error row must be storable even when the record was not).
fn storable_text(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

/// A dry run of an integration's mappings over sample records: the mapped rows and errors.
pub fn preview(set: &MappingSet, records: &[Value]) -> Vec<Value> {
    let cols = columns(set.data_type());
    records
        .iter()
        .map(|r| match set.apply(r) {
            Outcome::Mapped(m) => {
                let mut row = serde_json::Map::new();
                row.insert("external_id".into(), json!(m.external_id));
                for (i, (name, _)) in cols.iter().enumerate() {
                    row.insert((*name).into(), json!(m.columns[i]));
                }
                row.insert("properties".into(), Value::Object(m.properties));
                json!({"outcome": "mapped", "row": row})
            }
            Outcome::Skipped => json!({"outcome": "skipped"}),
            Outcome::Failed {
                external_id,
                errors,
            } => json!({"outcome": "failed", "external_id": external_id, "errors": errors}),
        })
        .collect()
}
