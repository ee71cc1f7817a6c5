//! `POST /api/webhooks/n8n` and `GET /api/batches/{id}`: where every synced record enters, and
//! where n8n (or an operator) follows a batch through processing.
//!
//! The webhook transforms nothing. It authenticates, checks, stores the batch and enqueues its
//! jobs in one transaction, and answers 202 only after that transaction committed.

use crate::http::error::ErrorCode;
use axum::{
    Json,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Value, json};
use std::io::Read;
use uuid::Uuid;

use super::{
    AppState,
    error::ApiError,
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
};

/// Longest idempotency key kept; longer ones are refused rather than silently truncated.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// What the blocking preparation step hands back: the envelope's fields, owned.
struct Prepared {
    body: Bytes,
    integration_id: Uuid,
    sync_log_id: Option<Uuid>,
    data_type: String,
    source_type: String,
    api_key: Option<String>,
    is_final: bool,
    sync_mode: Option<String>,
    source_error: Option<envelope::SourceError>,
    batch_count: Option<u32>,
    record_count: usize,
    content_hash: [u8; 32],
    chunks: Vec<Chunk>,
}

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let hooks = state.webhooks.clone();
    let limit = hooks.config.max_body_bytes;
    check_content_type(&headers)?;
    let gzip = content_encoding_is_gzip(&headers)?;
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && length > limit
    {
        return Err(too_large(limit));
    }

    // With the key in a header the caller is known before the body is read, so an unknown or
    // throttled caller costs no parsing.
    let header_caller = match header_credential(&headers)? {
        Some(credential) => {
            let caller = authenticate(&state.pool, &hooks, &credential).await?;
            if let Caller::Integration(row) = &caller {
                hooks.rate_limit(row.id)?;
            }
            Some(caller)
        }
        None => None,
    };

    let raw = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                too_large(limit)
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BodyUnreadable,
                    format!("the request body could not be read: {e}"),
                )
            }
        })?
        .to_bytes();

    let per_job = hooks.config.records_per_job;
    let prepared = tokio::task::spawn_blocking(move || prepare(raw, gzip, limit, per_job))
        .await
        .map_err(ApiError::internal)??;

    let caller = match header_caller {
        Some(caller) => caller,
        None => {
            let Some(key) = prepared.api_key.clone() else {
                return Err(missing_key());
            };
            authenticate(
                &state.pool,
                &hooks,
                &super::webhook_auth::Credential { key },
            )
            .await?
        }
    };
    let rate_limited_already = matches!(caller, Caller::Integration(_));
    let integration = resolve_integration(&state.pool, caller, prepared.integration_id).await?;
    if !rate_limited_already {
        hooks.rate_limit(integration.id)?;
    }
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
    {
        let (hooks, integration, headers, body) = (
            hooks.clone(),
            integration.clone(),
            headers.clone(),
            prepared.body.clone(),
        );
        tokio::task::spawn_blocking(move || {
            verify_signature(&hooks, &integration, &headers, &body)
        })
        .await
        .map_err(ApiError::internal)??;
    }

    let (data_type, sync_mode) = check_semantics(&prepared, &integration)?;
    if prepared.record_count > hooks.config.max_records {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooManyRecords,
            format!(
                "the batch has {} records; at most {} are accepted per request: split it",
                prepared.record_count, hooks.config.max_records
            ),
        )
        .with_details(
            json!({ "limit": hooks.config.max_records, "records": prepared.record_count }),
        ));
    }
    let idempotency_key = idempotency_key(&headers)?;

    let batch = NewBatch {
        tenant_id: integration.tenant_id,
        integration_id: integration.id,
        sync_log_id: prepared.sync_log_id,
        data_type,
        source_type: integration.source_type.as_str(),
        sync_mode,
        is_final: prepared.is_final,
        source_error: prepared.source_error.as_ref(),
        batch_count: prepared.batch_count,
        idempotency_key: idempotency_key.as_deref(),
        content_hash: prepared.content_hash,
        record_count: prepared.record_count,
        chunks: &prepared.chunks,
    };
    let limits = Limits {
        max_pending_records_per_tenant: hooks.config.max_pending_records_per_tenant,
        dedupe_window_secs: hooks.config.dedupe_window_secs,
    };
    match store::store(&state.pool, &batch, &limits).await {
        Ok(Stored::Accepted(receipt)) => Ok(answer(StatusCode::ACCEPTED, &receipt, false)),
        Ok(Stored::Duplicate(receipt)) => Ok(answer(StatusCode::OK, &receipt, true)),
        Err(e) => Err(store_error(e, &hooks.config)),
    }
}

fn answer(status: StatusCode, receipt: &Receipt, duplicate: bool) -> Response {
    let status_url = format!("/api/batches/{}", receipt.batch_id);
    let mut response = (
        status,
        Json(json!({
            "batch_id": receipt.batch_id,
            "sync_log_id": receipt.sync_log_id,
            "records": receipt.records,
            "jobs": receipt.jobs,
            "duplicate": duplicate,
            "status_url": status_url,
        })),
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

/// Decompresses (flate2, bounded by `limit`: a small gzip body can expand enormously), parses
/// the envelope, hashes and chunks the records. CPU-bound, so it runs off the async threads.
fn prepare(raw: Bytes, gzip: bool, limit: usize, per_job: usize) -> Result<Prepared, ApiError> {
    let body = if gzip {
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
        Bytes::from(out)
    } else {
        raw
    };
    let envelope = envelope::parse(&body).map_err(|e| {
        let details = (!e.path.is_empty()).then(|| json!({ "path": e.path }));
        let error = ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidBody, e.message);
        match details {
            Some(d) => error.with_details(d),
            None => error,
        }
    })?;
    envelope::check_records(&envelope.records).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidBody, e.message)
            .with_details(json!({ "path": e.path }))
    })?;
    let content_hash = envelope::content_hash(&envelope);
    let chunks = chunk::chunks(&envelope.records, per_job).map_err(ApiError::internal)?;
    let prepared = Prepared {
        integration_id: envelope.integration_id,
        sync_log_id: envelope.sync_log_id,
        data_type: envelope.data_type,
        source_type: envelope.source_type,
        api_key: envelope.api_key,
        // A reported source error ends its data type's part of the sync.
        is_final: envelope.is_final || envelope.error.is_some(),
        sync_mode: envelope.sync_mode,
        source_error: envelope.error,
        batch_count: envelope.batch_count,
        record_count: envelope.records.len(),
        content_hash,
        chunks,
        body: Bytes::new(),
    };
    Ok(Prepared { body, ..prepared })
}

fn unprocessable(code: ErrorCode, field: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
        .with_details(json!({ "field": field }))
}

fn check_semantics(
    prepared: &Prepared,
    integration: &WebhookTarget,
) -> Result<(DataType, SyncMode), ApiError> {
    let data_type: DataType =
        prepared
            .data_type
            .parse()
            .map_err(|e: crate::domain::kinds::UnknownValue| {
                unprocessable(ErrorCode::InvalidDataType, "data_type", e.to_string())
            })?;
    if prepared.source_type != integration.source_type.as_str() {
        return Err(unprocessable(
            ErrorCode::SourceTypeMismatch,
            "source_type",
            format!(
                "integration {} pulls from {}, but the batch says source_type {:?}",
                integration.id, integration.source_type, prepared.source_type
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
    let sync_mode = match &prepared.sync_mode {
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
pub async fn batch_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Ok(id) = id.parse::<Uuid>() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidBatchId,
            format!("{id:?} is not a batch id (a UUID)"),
        ));
    };
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
    Ok(Json(json!({
        "batch_id": batch.id,
        "integration_id": batch.integration_id,
        "sync_log_id": batch.sync_log_id,
        "data_type": batch.data_type,
        "state": batch.state,
        "failure_reason": batch.failure_reason,
        "final": batch.is_final,
        "records": batch.record_count,
        "progress": {
            "records_done": batch.records_processed,
            "records_total": batch.record_count,
            "jobs_done": batch.jobs_done,
            "jobs_total": batch.jobs_total,
            "percent": percent,
        },
        "counts": {
            "created": batch.records_created,
            "updated": batch.records_updated,
            "unchanged": batch.records_unchanged,
            "skipped": batch.records_skipped,
            "failed": batch.records_failed,
            "unmatched": batch.records_unmatched,
        },
        "received_at": batch.received_at,
        "processed_at": batch.processed_at,
    })))
}
