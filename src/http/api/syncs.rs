//! `/api/v1/syncs…`: the tenant's sync history (filtered, keyset-paged), one sync with its
//! counts, batches and per-record errors (paged), and the lifecycle's operator actions: close an
//! open sync, reprocess a closed one from its stored chunks.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    DEFAULT_PAGE, PathIds, TenantScope, invalid_cursor, invalid_query, page_limit,
    parse_time_cursor, time_cursor,
};
use crate::{
    admin::tenant_api::{self, SyncDetail, SyncError, SyncFilter, SyncLog},
    domain::{SyncStatus, SyncTrigger},
    http::{
        AppState,
        error::{ApiError, ErrorBody, ErrorCode},
        extract::{ApiJson, ApiQuery},
    },
    sync::SyncAdminError,
};

/// The filters and paging of `GET /api/v1/syncs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// Only this integration's syncs.
    integration_id: Option<Uuid>,
    /// Only these statuses, comma-separated (`pending,running,success,partial,failed`; `open`
    /// means `pending,running`).
    status: Option<String>,
    /// Only syncs started this way (`webhook`, `schedule`, `manual`, `retry`, `replay`).
    trigger: Option<String>,
    /// Created at or after (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// Items per page, 1 to 200 (50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of sync logs.
#[derive(Serialize, ToSchema)]
pub struct SyncPage {
    pub data: Vec<SyncLog>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

impl SyncQuery {
    fn filter(&self) -> Result<SyncFilter, ApiError> {
        let statuses = match self.status.as_deref() {
            None => None,
            Some(list) => {
                let mut statuses = Vec::new();
                for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if s == "open" {
                        statuses.extend([SyncStatus::Pending, SyncStatus::Running]);
                    } else {
                        statuses.push(s.parse().map_err(
                            |e: crate::domain::kinds::UnknownValue| invalid_query(e.to_string()),
                        )?);
                    }
                }
                Some(statuses)
            }
        };
        let trigger = self
            .trigger
            .as_deref()
            .map(str::parse::<SyncTrigger>)
            .transpose()
            .map_err(|e| invalid_query(e.to_string()))?;
        Ok(SyncFilter {
            only: None,
            integration_id: self.integration_id,
            statuses,
            trigger,
            since: self.since,
            until: self.until,
        })
    }
}

/// The tenant's sync logs, newest first, filtered, a page at a time (keyset pages: stable while
/// new syncs start).
#[utoipa::path(
    get,
    path = "/api/v1/syncs",
    tag = "syncs",
    params(
        SyncQuery,
        ("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of sync logs", body = SyncPage),
        (status = 400, description = "`invalid_query`, `invalid_cursor`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn list(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<SyncQuery>,
) -> Result<Json<SyncPage>, ApiError> {
    let filter = query.filter()?;
    let limit = page_limit(query.limit)?;
    let after = query.cursor.as_deref().map(parse_time_cursor).transpose()?;
    let (data, more) =
        tenant_api::sync_logs(&state.pool, scope.tenant_id, &filter, after, limit).await?;
    let next_cursor = more
        .then(|| data.last().map(|s| time_cursor(s.created_at, s.id)))
        .flatten();
    Ok(Json(SyncPage { data, next_cursor }))
}

fn sync_not_found(id: Uuid) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::SyncLogNotFound,
        format!("sync log {id} does not exist"),
    )
}

/// One sync: every count (and whether they add up), duration, records/s, its batches with their
/// progress, and the first 50 per-record errors.
#[utoipa::path(
    get,
    path = "/api/v1/syncs/{sync_id}",
    tag = "syncs",
    params(
        ("sync_id" = Uuid, Path, description = "The sync log"),
        ("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The sync", body = SyncDetail),
        (status = 400, description = "`invalid_path`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 404, description = "`sync_log_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn get(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<SyncDetail>, ApiError> {
    let id = ids.get("sync_id");
    let detail = tenant_api::sync_detail(&state.pool, scope.tenant_id, id, DEFAULT_PAGE)
        .await?
        .ok_or_else(|| sync_not_found(id))?;
    Ok(Json(detail))
}

/// Paging of a sync's errors.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ErrorQuery {
    /// Items per page, 1 to 200 (50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page (or `errors_next_cursor` of the sync).
    cursor: Option<String>,
}

/// A page of a sync's errors.
#[derive(Serialize, ToSchema)]
pub struct ErrorPage {
    pub data: Vec<SyncError>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// A sync's per-record errors, oldest first, a page at a time: each with its batch, record
/// index, external id, field and code.
#[utoipa::path(
    get,
    path = "/api/v1/syncs/{sync_id}/errors",
    tag = "syncs",
    params(
        ("sync_id" = Uuid, Path, description = "The sync log"),
        ErrorQuery,
        ("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of errors", body = ErrorPage),
        (status = 400, description = "`invalid_path`, `invalid_query`, `invalid_cursor`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 404, description = "`sync_log_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn errors(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ErrorQuery>,
) -> Result<Json<ErrorPage>, ApiError> {
    let id = ids.get("sync_id");
    let limit = page_limit(query.limit)?;
    let after = query
        .cursor
        .as_deref()
        .map(|c| c.parse::<i64>().map_err(|_| invalid_cursor()))
        .transpose()?;
    let (data, next) = tenant_api::sync_errors(&state.pool, scope.tenant_id, id, after, limit)
        .await?
        .ok_or_else(|| sync_not_found(id))?;
    Ok(Json(ErrorPage {
        data,
        next_cursor: next.map(|n| n.to_string()),
    }))
}

impl From<SyncAdminError> for ApiError {
    fn from(e: SyncAdminError) -> Self {
        let message = e.to_string();
        match e {
            SyncAdminError::NotFound(id) => sync_not_found(id),
            SyncAdminError::NotOpen { status, .. } => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::SyncLogClosed, message)
                    .with_details(json!({ "status": status }))
            }
            SyncAdminError::StillOpen { status, .. } => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::SyncInProgress, message)
                    .with_details(json!({ "status": status }))
            }
            SyncAdminError::ChunksDeleted(_) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::ChunksDeleted, message)
            }
            SyncAdminError::NoSkippedSweep(_) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::SyncNotRetryable, message)
            }
            SyncAdminError::Other(inner) => ApiError::from(inner),
        }
    }
}

/// Why an operator closes a sync.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseSync {
    /// Kept as the sync's error summary.
    reason: String,
}

/// Closes an open sync by hand (`failure_reason: closed_by_admin`): what it processed stays
/// counted, what it still waited for is no longer waited for.
#[utoipa::path(
    post,
    path = "/api/v1/syncs/{sync_id}/close",
    tag = "syncs",
    params(
        ("sync_id" = Uuid, Path, description = "The sync log"),
        ("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    request_body = CloseSync,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The sync as it now is", body = SyncLog),
        (status = 400, description = "`invalid_path`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`sync_log_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`sync_log_closed` (it has ended; `details.status`)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_body`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn close(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CloseSync>,
) -> Result<Json<SyncLog>, ApiError> {
    let id = ids.get("sync_id");
    crate::sync::close_open_sync(&state.pool, Some(scope.tenant_id), id, &body.reason).await?;
    let sync = tenant_api::sync_log(&state.pool, scope.tenant_id, id)
        .await?
        .ok_or_else(|| sync_not_found(id))?;
    Ok(Json(sync))
}

/// What a reprocess started.
#[derive(Serialize, ToSchema)]
pub struct Reprocessed {
    /// The new sync (trigger `replay`) that processes the stored batches again.
    pub sync_log_id: Uuid,
    pub replay_of: Uuid,
    pub batches: usize,
    pub records: i64,
    pub jobs: usize,
}

/// Reprocesses a closed sync from its stored chunks as a new sync (trigger `replay`), e.g. after
/// its mapping was fixed.
#[utoipa::path(
    post,
    path = "/api/v1/syncs/{sync_id}/reprocess",
    tag = "syncs",
    params(
        ("sync_id" = Uuid, Path, description = "The sync log"),
        ("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The replay, enqueued", body = Reprocessed),
        (status = 400, description = "`invalid_path`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`sync_log_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`sync_in_progress` (still open), `chunks_deleted` (retention deleted its stored chunks)", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn reprocess(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<Reprocessed>), ApiError> {
    let id = ids.get("sync_id");
    let replay =
        crate::sync::replay::reprocess(&state.pool, &state.queue, Some(scope.tenant_id), id)
            .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Reprocessed {
            sync_log_id: replay.sync_log_id,
            replay_of: replay.replay_of,
            batches: replay.batches,
            records: replay.records,
            jobs: replay.jobs,
        }),
    ))
}
