//! `/api/admin/jobs`: the operator's view of background jobs (list, stats, retry, cancel).

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AdminAuth;
use crate::http::{
    AppState,
    error::{ApiError, ErrorCode},
    extract::{ApiJson, ApiQuery},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
    tag: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
    /// Paging: only jobs with a smaller id (pass the previous page's `next_before`).
    before: Option<i64>,
}

fn default_limit() -> i64 {
    50
}

fn bad_filter(e: jobs::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidFilter,
        e.to_string(),
    )
}

/// Jobs matching a filter, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/admin/jobs",
    tag = "admin",
    params(
        ("state" = Option<String>, Query, description = "A job state, or `dead` (= `failed`)"),
        ("queue" = Option<String>, Query), ("kind" = Option<String>, Query), ("tag" = Option<String>, Query),
        ("limit" = Option<i64>, Query, description = "At most this many, newest first"),
        ("before" = Option<i64>, Query, description = "Only jobs older than this id (`next_before` of the previous page)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of jobs", body = JobPage),
        (status = 400, description = "`invalid_query`, `invalid_filter`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`", body = crate::http::error::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`", body = crate::http::error::ErrorBody),
    )
)]
pub async fn list(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let filter = jobs::JobFilter {
        ids: Vec::new(),
        states: q
            .state
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(bad_filter)?
            .into_iter()
            .collect(),
        queue: q.queue,
        kind: q.kind,
        tag: q.tag,
    };
    let limit = q.limit.clamp(1, 1_000);
    let found = jobs::admin::list(&state.pool, &state.queue, &filter, limit, q.before)
        .await
        .map_err(ApiError::from)?;
    let next_before = (found.len() as i64 == limit)
        .then(|| found.last().map(|j| j.id))
        .flatten();
    Ok(Json(JobPage {
        jobs: found,
        next_before,
    }))
}

/// A page of jobs, newest first.
#[derive(Serialize, ToSchema)]
pub struct JobPage {
    /// Each: `id`, `kind`, `queue`, `state`, `priority`, `attempt`, `max_attempts`, `tag`,
    /// `unique_key`, `args`, `scheduled_at`, `attempted_at`, `attempted_by`, `finalized_at`,
    /// `created_at`, `errors` (every failed attempt: `{attempt, at, error, worker?}`).
    #[schema(value_type = Vec<Object>)]
    pub jobs: Vec<jobs::JobSummary>,
    /// Pass as `before` for the next page; `null` on the last.
    pub next_before: Option<i64>,
}

/// The queues' counts.
#[derive(Serialize, ToSchema)]
pub struct JobStats {
    /// Per queue and state: `queue`, `state`, `count`, `oldest_available_age_secs`, `paused`.
    #[schema(value_type = Vec<Object>)]
    pub queues: Vec<jobs::QueueStats>,
}

/// How many jobs a bulk retry made runnable.
#[derive(Serialize, ToSchema)]
pub struct Retried {
    pub retried: u64,
}

/// How many jobs a bulk cancel cancelled.
#[derive(Serialize, ToSchema)]
pub struct Cancelled {
    pub cancelled: u64,
}

/// Jobs per queue and state, with the age of the oldest available job of each queue.
#[utoipa::path(
    get,
    path = "/api/admin/jobs/stats",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Jobs per queue and state, the oldest available job's age, paused queues", body = JobStats),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`", body = crate::http::error::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`", body = crate::http::error::ErrorBody),
    )
)]
pub async fn stats(
    _: AdminAuth,
    State(state): State<AppState>,
) -> Result<Json<JobStats>, ApiError> {
    let queues = jobs::admin::stats(&state.pool, &state.queue)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(JobStats { queues }))
}

/// Which jobs a bulk action applies to: ids, a filter, or both (both must match).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    #[serde(default)]
    ids: Vec<i64>,
    #[serde(default)]
    filter: Option<FilterBody>,
}

/// Jobs of these states (`dead` = `failed`), queue, kind and tag; what is not given matches all.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterBody {
    #[serde(default)]
    states: Vec<String>,
    queue: Option<String>,
    kind: Option<String>,
    tag: Option<String>,
}

impl BulkRequest {
    fn into_filter(self) -> Result<jobs::JobFilter, ApiError> {
        let f = self.filter.unwrap_or_default();
        let filter = jobs::JobFilter {
            ids: self.ids,
            states: f
                .states
                .iter()
                .map(|s| s.parse())
                .collect::<Result<_, _>>()
                .map_err(bad_filter)?,
            queue: f.queue,
            kind: f.kind,
            tag: f.tag,
        };
        if filter.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::EmptySelection,
                "name the jobs: give `ids`, a `filter`, or both",
            ));
        }
        Ok(filter)
    }
}

async fn bulk(
    state: &AppState,
    action: jobs::BulkAction,
    body: BulkRequest,
) -> Result<u64, ApiError> {
    let filter = body.into_filter()?;
    jobs::admin::apply(&state.pool, &state.queue, action, &filter, 5_000, |_| {})
        .await
        .map_err(ApiError::from)
}

/// Retries the jobs named by ids and/or a filter (dead, cancelled, retryable or scheduled ones),
/// server-side in batches.
#[utoipa::path(
    post,
    path = "/api/admin/jobs/retry",
    tag = "admin",
    request_body(content = BulkRequest, description = "Ids, a filter, or both"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many were made runnable", body = Retried),
        (status = 413, description = "`payload_too_large`", body = crate::http::error::ErrorBody),
        (status = 422, description = "`invalid_body`, `empty_selection`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`", body = crate::http::error::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`", body = crate::http::error::ErrorBody),
    )
)]
pub async fn retry(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<BulkRequest>,
) -> Result<Json<Retried>, ApiError> {
    let retried = bulk(&state, jobs::BulkAction::Retry, body).await?;
    Ok(Json(Retried { retried }))
}

/// Cancels the unfinished jobs named by ids and/or a filter, server-side in batches.
#[utoipa::path(
    post,
    path = "/api/admin/jobs/cancel",
    tag = "admin",
    request_body(content = BulkRequest, description = "Ids, a filter, or both"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many were cancelled", body = Cancelled),
        (status = 413, description = "`payload_too_large`", body = crate::http::error::ErrorBody),
        (status = 422, description = "`invalid_body`, `empty_selection`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`", body = crate::http::error::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`", body = crate::http::error::ErrorBody),
    )
)]
pub async fn cancel(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<BulkRequest>,
) -> Result<Json<Cancelled>, ApiError> {
    let cancelled = bulk(&state, jobs::BulkAction::Cancel, body).await?;
    Ok(Json(Cancelled { cancelled }))
}
