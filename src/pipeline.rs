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

use serde_json::{Value, value::RawValue};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

pub use crate::db::batches::Counts;
use crate::{
    db::{
        self,
        accounts::MatchingVersion,
        external_rows::{NewRow, OnConflict, StoredRow, Target, domain_column},
        sync_errors::{ErrorsOf, NewRecordError},
    },
    domain::{DataType, SyncMode},
    mapping::{FieldError, MappedRecord, Outcome, columns, storable},
    matching::{Clues, Matcher, email_domain},
    sync::{chunk::decode_chunk, close_sync_if_done},
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

impl Row<'_> {
    fn stored(&self) -> NewRow<'_> {
        NewRow {
            external_id: &self.record.external_id,
            account_id: self.account_id,
            match_method: self.method,
            match_reason: self.reason,
            properties: &self.properties,
            raw: self.raw,
            content_hash: &self.hash,
            delivery_seq: self.delivery,
            domain: self.domain.as_deref(),
            columns: &self.record.columns,
        }
    }
}

/// The tenant's accounts and never-matched domains.
pub async fn load_matcher(tx: &mut PgConnection, tenant_id: Uuid) -> Result<Matcher, sqlx::Error> {
    let accounts = db::accounts::all(tx).await?;
    let blocked = db::tenants::never_matched_domains(tx, tenant_id).await?;
    Ok(Matcher::new(
        accounts
            .iter()
            .map(|a| (a.id, a.name.as_str(), &a.domains[..])),
        blocked.iter().map(String::as_str),
    ))
}

/// The matchers of the tenants this process has worked for. Building one loads every account of
/// the tenant, measured at ~4 % of a 1,000-record chunk's time with 1,000 accounts; a chunk now
/// only asks whether the accounts changed and reuses the matcher when they did not.
#[derive(Clone, Default)]
pub struct MatcherCache(Arc<Mutex<HashMap<Uuid, CachedMatcher>>>);

type CachedMatcher = (MatchingVersion, Arc<Matcher>);

impl MatcherCache {
    /// The tenant's current matcher, as of `tx`'s snapshot (which must be scoped to the tenant).
    /// Its accounts stay until `tx` ends: deleting one waits for the lock taken here (see the
    /// migration `external_references`), so no row written in `tx` refers to a deleted account.
    pub async fn get(
        &self,
        tx: &mut PgConnection,
        tenant_id: Uuid,
    ) -> Result<Arc<Matcher>, sqlx::Error> {
        db::accounts::lock_for_matching(tx, tenant_id).await?;
        let version = db::accounts::matching_version(tx, tenant_id).await?;
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
    let started = std::time::Instant::now();
    crate::db::set_tenant(tx, tenant_id).await?;
    // Claims the chunk. One settled as failed (its job had died; an operator retried the job)
    // is taken back first: its records leave the failed counts, and what its settling closed
    // reopens, once, under the chunk's row lock.
    let Some(claimed) = db::batches::claim_chunk(tx, batch_id, chunk).await? else {
        return Ok(None);
    };
    let offset = claimed.record_offset;
    if claimed.was_settled {
        crate::sync::chunk::take_back_settled(tx, batch_id, offset, claimed.record_count).await?;
    }
    // The integration row is locked as a foreign key would (a deletion waits for this chunk, then
    // removes its rows). `earlier_rows`: whether an earlier sync of the integration wrote rows.
    // Probing for existing rows first pays when many are unchanged (they are then not even sent);
    // without earlier rows there are none, and the probe only doubles the index lookups the
    // upsert makes anyway.
    let context = db::batches::chunk_context(tx, batch_id).await?;
    let (integration_id, sync_log_id, data_type) = (
        context.integration_id,
        context.sync_log_id,
        context.data_type,
    );
    let full_sync = context.sync_mode == SyncMode::Full;

    let bytes = decode_chunk(&claimed.payload, &claimed.payload_encoding)
        .map_err(|e| PipelineError::Corrupt(format!("chunk {chunk} of batch {batch_id}: {e}")))?;
    // Kept raw: each record's text is stored as received and hashed as is, never re-serialised.
    let raws: Vec<&RawValue> = serde_json::from_slice(&bytes)
        .map_err(|e| PipelineError::Corrupt(format!("chunk {chunk} of batch {batch_id}: {e}")))?;

    let mappings =
        db::mappings::effective(tx, integration_id, context.source_type, data_type).await?;
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
                    delivery: delivery_order(context.delivery_seq, index),
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
    let probe_first = full_sync || context.earlier_rows;
    let target = Target {
        tenant_id,
        integration_id,
        sync_log_id,
        data_type,
    };
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
        db::external_rows::mark_seen(tx, target, &unchanged_ids).await?;
    }

    let errors: Vec<NewRecordError<'_>> = errors
        .iter()
        .map(|e| NewRecordError {
            index: e.index,
            external_id: e.external_id.as_deref(),
            field: &e.error.field,
            code: e.error.code,
            message: &e.error.message,
        })
        .collect();
    let errors_of = ErrorsOf {
        tenant_id,
        integration_id,
        sync_log_id,
        batch_id,
    };
    db::sync_errors::insert_for_records(tx, errors_of, &errors, settings.max_errors_per_sync)
        .await?;
    let batch_done = db::batches::count_chunk(tx, batch_id, &counts).await?;
    db::sync_logs::count_chunk(tx, sync_log_id, &counts, batch_done).await?;
    if batch_done {
        close_sync_if_done(tx, sync_log_id).await?;
    }
    let outcomes = [
        ("created", counts.created),
        ("updated", counts.updated),
        ("unchanged", counts.unchanged),
        ("skipped", counts.skipped),
        ("failed", counts.failed),
        ("unmatched", counts.unmatched),
    ];
    crate::telemetry::metrics::chunk_processed(data_type.as_str(), &outcomes, started.elapsed());
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
    let ids: Vec<&str> = rows.iter().map(|r| r.record.external_id.as_str()).collect();
    let existing = db::external_rows::probe(tx, target, &ids).await?;
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

/// One `INSERT` of `changed` (see [`db::external_rows::insert`]).
async fn insert_rows(
    tx: &mut PgConnection,
    target: Target,
    changed: &[&Row<'_>],
    on_conflict: OnConflict,
) -> Result<Vec<bool>, sqlx::Error> {
    let rows: Vec<NewRow<'_>> = changed.iter().map(|r| r.stored()).collect();
    db::external_rows::insert(tx, target, &rows, on_conflict).await
}
