//! `/api/v1/records/{data_type}…`: the tenant's contacts, tickets and deals, filtered and paged
//! by what changed when, and one record with its raw payload.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{PathIds, TenantScope, invalid_query, page_limit, parse_time_cursor, time_cursor};
use crate::{
    admin::tenant_api::{self, Deleted, Record, RecordFilter},
    http::{
        AppState,
        error::{ApiError, ErrorBody, ErrorCode},
        extract::ApiQuery,
    },
};

/// The filters and paging of `GET /api/v1/records/{data_type}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecordQuery {
    /// Only this integration's records.
    integration_id: Option<Uuid>,
    /// Only records matched to this account.
    account_id: Option<Uuid>,
    /// Only records with this email (a contact's, a ticket's requester's, a deal's contact's);
    /// case-insensitive.
    email: Option<String>,
    /// Only records of this domain (the email's, a deal's company's); case-insensitive.
    domain: Option<String>,
    /// Only records updated at or after (RFC 3339).
    updated_since: Option<DateTime<Utc>>,
    /// Soft-deleted records: `exclude` (default), `include` or `only`.
    deleted: Option<String>,
    /// Items per page, 1 to 200 (50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of records.
#[derive(Serialize, ToSchema)]
pub struct RecordPage {
    pub data: Vec<Record>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// The tenant's records of one type, oldest change first (by `updated_at`, then id): read on
/// with `next_cursor` until it is `null`, and again later with `updated_since` for what changed.
/// A record that changes while you page moves to the end; no other is seen twice or missed.
#[utoipa::path(
    get,
    path = "/api/v1/records/{data_type}",
    tag = "records",
    params(
        ("data_type" = crate::domain::DataType, Path, description = "`contacts`, `tickets` or `deals`"),
        RecordQuery,
        ("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of records (without `raw`)", body = RecordPage),
        (status = 400, description = "`invalid_data_type`, `invalid_query`, `invalid_cursor`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn list(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<RecordQuery>,
) -> Result<Json<RecordPage>, ApiError> {
    let deleted = match query.deleted.as_deref() {
        None => Deleted::Exclude,
        Some(text) => text.parse().map_err(invalid_query)?,
    };
    let filter = RecordFilter {
        integration_id: query.integration_id,
        account_id: query.account_id,
        email: query.email,
        domain: query.domain,
        updated_since: query.updated_since,
        deleted,
    };
    let limit = page_limit(query.limit)?;
    let after = query.cursor.as_deref().map(parse_time_cursor).transpose()?;
    let (data, more) = tenant_api::records(
        &state.pool,
        scope.tenant_id,
        ids.data_type(),
        &filter,
        after,
        limit,
    )
    .await?;
    let next_cursor = more
        .then(|| data.last().map(|r| time_cursor(r.updated_at, r.id)))
        .flatten();
    Ok(Json(RecordPage { data, next_cursor }))
}

/// One record, with `raw`: the record as the source sent it.
#[utoipa::path(
    get,
    path = "/api/v1/records/{data_type}/{record_id}",
    tag = "records",
    params(
        ("data_type" = crate::domain::DataType, Path, description = "`contacts`, `tickets` or `deals`"),
        ("record_id" = Uuid, Path, description = "The record's `id`"),
        ("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The record", body = Record),
        (status = 400, description = "`invalid_data_type`, `invalid_path`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 404, description = "`record_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn get(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<Record>, ApiError> {
    let (data_type, id) = (ids.data_type(), ids.get("record_id"));
    let record = tenant_api::record(&state.pool, scope.tenant_id, data_type, id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::RecordNotFound,
                format!("no {data_type} record {id}"),
            )
        })?;
    Ok(Json(record))
}
