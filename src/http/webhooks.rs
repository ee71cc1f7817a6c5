//! `POST /api/webhooks/n8n` and `GET /api/batches/{id}`: where every synced record enters, and
//! where n8n (or an operator) follows a batch through processing.
//!
//! The webhook transforms nothing. It authenticates, checks, stores the batch and enqueues its
//! jobs in one transaction, and answers 202 only after that transaction committed.

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use serde_json::json;
use std::io::Read;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    AppState,
    error::{ApiError, ErrorCode},
    extract::BatchId,
    webhook_auth::{
        Caller, authenticate, header_credential, missing_key, resolve_integration, verify_signature,
    },
};
use crate::{
    db::{integrations::WebhookTarget, tenant_tx},
    domain::{DataType, IntegrationStatus, SyncMode},
    ingest::{
        envelope,
        store::{self, Limits, NewBatch, Receipt, StoreError, Stored},
    },
    sync::chunk::{self, Chunk},
    telemetry::metrics,
};

/// Longest idempotency key kept; longer ones are refused rather than silently truncated.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// What the blocking preparation step hands back: the checked envelope's fields, owned, and the
/// batch's chunks.
struct Prepared {
    sync_log_id: Option<Uuid>,
    data_type: DataType,
    sync_mode: SyncMode,
    is_final: bool,
    source_error: Option<envelope::SourceError>,
    batch_count: Option<u32>,
    record_count: usize,
    content_hash: [u8; 32],
    chunks: Vec<Chunk>,
}

/// Works cheapest-first, so that a request refused early costs little: headers, then the
/// credential (and the integration's rate limit and pause), then the body (read within its
/// limits and decompressed), then the signature over the bytes as received, then the envelope and
/// its checks, and only for a delivery that passed all of them the hashing, chunking and
/// compression. A caller whose key is in the body is only known once the body is read and the key
/// found in it: at most `ingest.max_unauthenticated_bodies` such bodies are handled at once, so
/// bodies with no valid key cannot take the memory deliveries need.
#[utoipa::path(
    post,
    path = "/api/webhooks/n8n",
    tag = "webhooks",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "The n8n execution and page; a repeat answers the first batch with `duplicate: true`"),
        ("webhook-id" = Option<String>, Header, description = "Standard Webhooks: the message id (an idempotency key when `Idempotency-Key` is absent)"),
        ("webhook-timestamp" = Option<String>, Header, description = "Standard Webhooks: seconds since the epoch"),
        ("webhook-signature" = Option<String>, Header, description = "Standard Webhooks: `v1,<base64 HMAC-SHA256>`, required when the integration has a signing secret"),
        ("X-API-Key" = Option<String>, Header, description = "The integration key, when not in `Authorization`"),
    ),
    request_body(content = crate::ingest::envelope::Envelope, description = "One batch (see the README); gzip accepted", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Stored durably with its jobs", body = Accepted, headers(("Location" = String, description = "The batch's status URL"))),
        (status = 400, description = "`invalid_body`, `invalid_gzip`, `body_unreadable`, `invalid_idempotency_key`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`, `invalid_authorization`, `signature_required`, `invalid_signature`, `signature_expired`", body = crate::http::error::ErrorBody),
        (status = 403, description = "`integration_forbidden`", body = crate::http::error::ErrorBody),
        (status = 404, description = "`integration_not_found`, `sync_log_not_found`", body = crate::http::error::ErrorBody),
        (status = 409, description = "`integration_paused`, `sync_log_closed`", body = crate::http::error::ErrorBody),
        (status = 413, description = "`payload_too_large`, `too_many_records`", body = crate::http::error::ErrorBody),
        (status = 415, description = "`unsupported_media_type`, `unsupported_encoding`", body = crate::http::error::ErrorBody),
        (status = 422, description = "`invalid_data_type`, `invalid_sync_mode`, `source_type_mismatch`, `data_type_not_supported`, `data_type_not_enabled`, `data_type_mismatch`", body = crate::http::error::ErrorBody),
        (status = 429, description = "`rate_limited` (with `Retry-After`)", body = crate::http::error::ErrorBody),
        (status = 503, description = "`backlog_full`, `database_unavailable` (with `Retry-After`)", body = crate::http::error::ErrorBody),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let hooks = state.webhooks.clone();
    let limit = hooks.config.max_body_bytes;
    check_content_type(&headers)?;
    let gzip = content_encoding_is_gzip(&headers)?;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if length.is_some_and(|l| l > limit) {
        return Err(too_large(limit));
    }
    let idempotency_key = idempotency_key(&headers)?;

    let header_caller = match header_credential(&headers)? {
        Some(credential) => {
            let caller = authenticate(&state.pool, &hooks, &credential).await?;
            if let Caller::Integration(row) = &caller {
                hooks.rate_limit(row.id)?;
                refuse_paused(row)?;
            }
            Some(caller)
        }
        None => None,
    };
    let unauthenticated = match header_caller {
        Some(_) => None,
        None => Some(
            hooks
                .unauthenticated_bodies
                .clone()
                .acquire_owned()
                .await
                .map_err(ApiError::internal)?,
        ),
    };

    let raw = read_body(body, limit, length).await?;
    let wire_bytes = raw.len();
    let body = tokio::task::spawn_blocking(move || decompress(raw, gzip, limit))
        .await
        .map_err(ApiError::internal)??;

    let integration = match header_caller {
        Some(Caller::Integration(row)) => row,
        caller => {
            let addressed = {
                let body = body.clone();
                tokio::task::spawn_blocking(move || envelope::peek(&body))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(shape_error)?
            };
            let caller = match caller {
                Some(caller) => caller,
                None => {
                    let key = addressed.api_key.ok_or_else(missing_key)?;
                    authenticate(
                        &state.pool,
                        &hooks,
                        &super::webhook_auth::Credential { key },
                    )
                    .await?
                }
            };
            let integration =
                resolve_integration(&state.pool, caller, addressed.integration_id).await?;
            hooks.rate_limit(integration.id)?;
            refuse_paused(&integration)?;
            integration
        }
    };
    drop(unauthenticated);

    let (per_job, max_records) = (hooks.config.records_per_job, hooks.config.max_records);
    let body_bytes = body.len();
    let prepared = {
        let (hooks, integration, headers) = (hooks.clone(), integration.clone(), headers.clone());
        tokio::task::spawn_blocking(move || {
            verify_signature(&hooks, &integration, &headers, &body)?;
            prepare(&body, &integration, per_job, max_records)
        })
        .await
        .map_err(ApiError::internal)??
    };

    let batch = NewBatch {
        tenant_id: integration.tenant_id,
        integration_id: integration.id,
        sync_log_id: prepared.sync_log_id,
        data_type: prepared.data_type,
        source_type: integration.source_type.as_str(),
        sync_mode: prepared.sync_mode,
        is_final: prepared.is_final,
        source_error: prepared.source_error.as_ref(),
        batch_count: prepared.batch_count,
        idempotency_key: idempotency_key.as_deref(),
        content_hash: prepared.content_hash,
        record_count: prepared.record_count,
        chunks: &prepared.chunks,
        body_bytes,
    };
    let limits = Limits {
        max_pending_records_per_tenant: hooks.config.max_pending_records_per_tenant,
        dedupe_window_secs: hooks.config.dedupe_window_secs,
    };
    match store::store(&state.pool, &state.queue, &batch, &limits).await {
        Ok(Stored::Accepted(receipt)) => {
            metrics::delivery_accepted(
                prepared.data_type.as_str(),
                wire_bytes,
                prepared.record_count,
            );
            Ok(answer(StatusCode::ACCEPTED, &receipt, false))
        }
        Ok(Stored::Duplicate(receipt)) => Ok(answer(StatusCode::OK, &receipt, true)),
        Err(e) => {
            if matches!(e, StoreError::BacklogFull { .. }) {
                metrics::delivery_refused("backlog_full", integration.id);
            }
            Err(store_error(e, &hooks.config))
        }
    }
}

fn refuse_paused(integration: &WebhookTarget) -> Result<(), ApiError> {
    if integration.status == IntegrationStatus::Paused {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::IntegrationPaused,
            format!(
                "integration {} is paused; resume it before delivering records",
                integration.id
            ),
        ));
    }
    Ok(())
}

/// The body, within `limit`, in one buffer: sized from `Content-Length` when given, so each
/// chunk is copied once and a body never takes twice its size (collecting the chunks and then
/// joining them did, measured at 2× per body in flight).
async fn read_body(body: Body, limit: usize, length: Option<usize>) -> Result<Bytes, ApiError> {
    let mut body = Limited::new(body, limit);
    let mut buffer = bytes::BytesMut::with_capacity(length.unwrap_or(0).min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                too_large(limit)
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BodyUnreadable,
                    format!("the request body could not be read: {e}"),
                )
            }
        })?;
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

/// A delivery's answer: stored, with the jobs that will process it.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub batch_id: Uuid,
    pub sync_log_id: Uuid,
    /// Records in the batch.
    pub records: i32,
    /// Processing jobs enqueued for it.
    pub jobs: i32,
    /// The same batch was delivered before (by `Idempotency-Key` or content): nothing new was
    /// stored, this is the first delivery's receipt.
    pub duplicate: bool,
    /// Where its progress is (`GET`, with the same key).
    pub status_url: String,
}

fn answer(status: StatusCode, receipt: &Receipt, duplicate: bool) -> Response {
    let status_url = format!("/api/batches/{}", receipt.batch_id);
    let mut response = (
        status,
        Json(Accepted {
            batch_id: receipt.batch_id,
            sync_log_id: receipt.sync_log_id,
            records: receipt.records,
            jobs: receipt.jobs,
            duplicate,
            status_url: status_url.clone(),
        }),
    )
        .into_response();
    if let Ok(location) = status_url.parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn store_error(e: StoreError, config: &crate::config::IngestConfig) -> ApiError {
    match e {
        StoreError::SyncLogNotFound(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::SyncLogNotFound,
            e.to_string(),
        ),
        StoreError::SyncLogClosed { .. } => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::SyncLogClosed,
            e.to_string(),
        ),
        StoreError::DataTypeMismatch { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::DataTypeMismatch,
            e.to_string(),
        ),
        StoreError::BacklogFull { pending, limit } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::BacklogFull,
            e.to_string(),
        )
        .with_details(json!({ "pending_records": pending, "limit": limit }))
        .retry_after(config.backpressure_retry_after_secs),
        StoreError::Database(e) => e.into(),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!(
            "the body is larger than {limit} bytes (after decompression); send smaller batches"
        ),
    )
    .with_details(json!({ "limit_bytes": limit }))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!(
                "the body must be JSON with `Content-Type: application/json`, not {:?}",
                content_type
            ),
        ))
    }
}

fn content_encoding_is_gzip(headers: &HeaderMap) -> Result<bool, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(false),
        "gzip" | "x-gzip" => Ok(true),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedEncoding,
            format!("Content-Encoding {other:?} is not supported; use gzip or none"),
        )),
    }
}

/// Decompresses a gzip body (flate2, bounded by `limit`: a small gzip body can expand
/// enormously). CPU-bound, so it runs off the async threads.
fn decompress(raw: Bytes, gzip: bool, limit: usize) -> Result<Bytes, ApiError> {
    if !gzip {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    flate2::read::MultiGzDecoder::new(&raw[..])
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidGzip,
                format!("the body is declared gzip but does not decompress: {e}"),
            )
        })?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(Bytes::from(out))
}

fn shape_error(e: envelope::ShapeError) -> ApiError {
    let error = ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidBody, e.message);
    if e.path.is_empty() {
        error
    } else {
        error.with_details(json!({ "path": e.path }))
    }
}

/// Parses the envelope of a delivery whose caller is trusted, checks it against its integration
/// (cheapest first: the integration it names, data type and mode, the number of records, then
/// every record), and only then hashes and chunks it (each chunk compressed). CPU-bound, so it
/// runs off the async threads.
fn prepare(
    body: &[u8],
    integration: &WebhookTarget,
    per_job: usize,
    max_records: usize,
) -> Result<Prepared, ApiError> {
    let envelope = envelope::parse(body).map_err(shape_error)?;
    if envelope.integration_id != integration.id {
        return Err(super::webhook_auth::forbidden(
            integration.id,
            envelope.integration_id,
        ));
    }
    let (data_type, sync_mode) = check_semantics(
        &envelope.data_type,
        &envelope.source_type,
        envelope.sync_mode.as_deref(),
        integration,
    )?;
    if envelope.records.len() > max_records {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooManyRecords,
            format!(
                "the batch has {} records; at most {max_records} are accepted per request: split it",
                envelope.records.len()
            ),
        )
        .with_details(json!({ "limit": max_records, "records": envelope.records.len() })));
    }
    envelope::check_records(&envelope.records).map_err(shape_error)?;
    let content_hash = envelope::content_hash(&envelope);
    let chunks = chunk::chunks(&envelope.records, per_job).map_err(ApiError::internal)?;
    Ok(Prepared {
        sync_log_id: envelope.sync_log_id,
        data_type,
        sync_mode,
        // A reported source error ends its data type's part of the sync.
        is_final: envelope.is_final || envelope.error.is_some(),
        source_error: envelope.error,
        batch_count: envelope.batch_count,
        record_count: envelope.records.len(),
        content_hash,
        chunks,
    })
}

fn unprocessable(code: ErrorCode, field: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
        .with_details(json!({ "field": field }))
}

fn check_semantics(
    data_type: &str,
    source_type: &str,
    sync_mode: Option<&str>,
    integration: &WebhookTarget,
) -> Result<(DataType, SyncMode), ApiError> {
    let data_type: DataType =
        data_type
            .parse()
            .map_err(|e: crate::domain::kinds::UnknownValue| {
                unprocessable(ErrorCode::InvalidDataType, "data_type", e.to_string())
            })?;
    if source_type != integration.source_type.as_str() {
        return Err(unprocessable(
            ErrorCode::SourceTypeMismatch,
            "source_type",
            format!(
                "integration {} pulls from {}, but the batch says source_type {:?}",
                integration.id, integration.source_type, source_type
            ),
        ));
    }
    if !integration.source_type.provides(data_type) {
        return Err(unprocessable(
            ErrorCode::DataTypeNotSupported,
            "data_type",
            format!(
                "integration {} pulls from {}, which has no {data_type}; it provides {}",
                integration.id,
                integration.source_type,
                DataType::list(integration.source_type.default_data_types())
            ),
        ));
    }
    if !integration.sync_data_types.is_empty() && !integration.sync_data_types.contains(&data_type)
    {
        return Err(unprocessable(
            ErrorCode::DataTypeNotEnabled,
            "data_type",
            format!(
                "integration {} syncs {}, not {data_type}",
                integration.id,
                DataType::list(&integration.sync_data_types)
            ),
        ));
    }
    let sync_mode = match sync_mode {
        Some(mode) => mode
            .parse()
            .map_err(|e: crate::domain::kinds::UnknownValue| {
                unprocessable(ErrorCode::InvalidSyncMode, "sync_mode", e.to_string())
            })?,
        None => integration.sync_mode,
    };
    Ok((data_type, sync_mode))
}

/// `Idempotency-Key`, else the Standard Webhooks `webhook-id` (stable across n8n's retries).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let value = headers
        .get("idempotency-key")
        .or_else(|| headers.get("webhook-id"));
    let Some(value) = value else {
        return Ok(None);
    };
    let key = value.to_str().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidIdempotencyKey,
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_string()))
}

/// The progress of one batch, for the key of its integration (or the global key).
#[utoipa::path(
    get,
    path = "/api/batches/{id}",
    tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The batch (`batch_id` of the 202)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The batch's progress and counts", body = BatchStatus),
        (status = 400, description = "`invalid_batch_id`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`, `invalid_authorization`", body = crate::http::error::ErrorBody),
        (status = 404, description = "`batch_not_found`", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`", body = crate::http::error::ErrorBody),
    )
)]
pub async fn batch_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    BatchId(id): BatchId,
) -> Result<Json<BatchStatus>, ApiError> {
    let credential = header_credential(&headers)?.ok_or_else(missing_key)?;
    let caller = authenticate(&state.pool, &state.webhooks, &credential).await?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::BatchNotFound,
            format!("batch {id} does not exist"),
        )
    };
    let tenant_id = match &caller {
        Caller::Integration(row) => Some(row.tenant_id),
        Caller::Global => None,
    };
    let mut tx = match tenant_id {
        Some(t) => tenant_tx(&state.pool, t).await?,
        None => crate::db::system_tx(&state.pool).await?,
    };
    let row = crate::db::batches::progress(&mut tx, id).await?;
    tx.commit().await?;
    let batch = row.ok_or_else(not_found)?;
    if let Caller::Integration(row) = &caller
        && row.id != batch.integration_id
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::IntegrationForbidden,
            format!(
                "batch {id} belongs to integration {}, not to this key's",
                batch.integration_id
            ),
        ));
    }
    let percent = if batch.record_count == 0 {
        100.0
    } else {
        (f64::from(batch.records_processed) * 100.0 / f64::from(batch.record_count) * 10.0).round()
            / 10.0
    };
    Ok(Json(BatchStatus {
        batch_id: batch.id,
        integration_id: batch.integration_id,
        sync_log_id: batch.sync_log_id,
        data_type: batch.data_type,
        state: batch.state,
        failure_reason: batch.failure_reason,
        is_final: batch.is_final,
        records: batch.record_count,
        progress: BatchProgress {
            records_done: batch.records_processed,
            records_total: batch.record_count,
            jobs_done: batch.jobs_done,
            jobs_total: batch.jobs_total,
            percent,
        },
        counts: BatchCounts {
            created: batch.records_created,
            updated: batch.records_updated,
            unchanged: batch.records_unchanged,
            skipped: batch.records_skipped,
            failed: batch.records_failed,
            unmatched: batch.records_unmatched,
        },
        received_at: batch.received_at,
        processed_at: batch.processed_at,
    }))
}

/// Where a delivered batch is.
#[derive(Serialize, ToSchema)]
pub struct BatchStatus {
    pub batch_id: Uuid,
    pub integration_id: Uuid,
    pub sync_log_id: Uuid,
    pub data_type: DataType,
    pub state: crate::domain::BatchState,
    pub failure_reason: Option<String>,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub records: i32,
    pub progress: BatchProgress,
    pub counts: BatchCounts,
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub processed_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchProgress {
    pub records_done: i32,
    pub records_total: i32,
    pub jobs_done: i32,
    pub jobs_total: i32,
    /// Records done, in percent (one decimal).
    pub percent: f64,
}

/// What became of its records (`unmatched`: stored without an account).
#[derive(Serialize, ToSchema)]
pub struct BatchCounts {
    pub created: i32,
    pub updated: i32,
    pub unchanged: i32,
    pub skipped: i32,
    pub failed: i32,
    pub unmatched: i32,
}
