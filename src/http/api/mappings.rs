//! `/api/v1/integrations/{id}/mappings…`: an integration's stored overrides, its effective
//! mapping per data type (its source's preset with its overrides), one target set (validated as
//! the admin route does) or returned to the preset, and a dry run over sample records.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::Value;

use serde::Serialize;
use utoipa::ToSchema;

use super::{PathIds, ReadingScope, TenantScope};
use crate::{
    admin::{
        self,
        tenant_api::{self, EffectiveMapping},
    },
    http::{
        AppState,
        admin::mappings::{PreviewAnswer, PreviewBody},
        error::{ApiError, ErrorBody, ErrorCode},
        extract::ApiJson,
        webhook_auth::integration_not_found,
    },
};

/// The integration's stored mappings of every data type: its overrides of the preset and the
/// preset targets it turned off.
#[utoipa::path(
    get,
    path = "/api/v1/integrations/{integration_id}/mappings",
    tag = "integrations",
    params(
        ("integration_id" = uuid::Uuid, Path, description = "The integration"),
        ("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Its overrides, by data type and target", body = OverrideList),
        (status = 400, description = "`invalid_integration_id`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 404, description = "`integration_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn overrides(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<OverrideList>, ApiError> {
    let id = ids.get("integration_id");
    let data = admin::list_mappings(&state.pool, Some(scope.tenant_id), id).await?;
    Ok(Json(OverrideList { data }))
}

/// An integration's overrides.
#[derive(Serialize, ToSchema)]
pub struct OverrideList {
    pub data: Vec<admin::StoredMapping>,
}

/// Runs the integration's effective mapping of one data type over the records given, storing
/// nothing: what each would become (its row and its problems). Read-only tokens may call it.
#[utoipa::path(
    post,
    path = "/api/v1/integrations/{integration_id}/mappings/{data_type}/preview",
    tag = "integrations",
    params(
        ("integration_id" = uuid::Uuid, Path, description = "The integration"),
        ("data_type" = crate::domain::DataType, Path, description = "`contacts`, `tickets` or `deals`"),
        ("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    request_body(content = PreviewBody, description = "`{records: [...]}` or an array of records (at most 100)"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Each record as the mapping makes it a row, with its problems", body = PreviewAnswer),
        (status = 400, description = "`invalid_integration_id`, `invalid_data_type`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 404, description = "`integration_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 413, description = "`too_many_records`, `payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_mapping`, `invalid_body`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn preview(
    ReadingScope(scope): ReadingScope,
    ids: PathIds,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PreviewBody>,
) -> Result<Json<PreviewAnswer>, ApiError> {
    let preview = admin::preview_mappings(
        &state.pool,
        &state.previews,
        Some(scope.tenant_id),
        ids.get("integration_id"),
        ids.data_type(),
        body.records(),
    )
    .await?;
    Ok(Json(preview.into()))
}

/// What fills the integration's rows of one data type: each target with its mapping and
/// whether it is the preset's or an override, and the preset targets turned off.
#[utoipa::path(
    get,
    path = "/api/v1/integrations/{integration_id}/mappings/{data_type}",
    tag = "integrations",
    params(
        ("integration_id" = uuid::Uuid, Path, description = "The integration"),
        ("data_type" = crate::domain::DataType, Path, description = "`contacts`, `tickets` or `deals`"),
        ("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The effective mapping", body = EffectiveMapping),
        (status = 400, description = "`invalid_integration_id`, `invalid_data_type`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 404, description = "`integration_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn effective(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<EffectiveMapping>, ApiError> {
    let id = ids.get("integration_id");
    let mapping = tenant_api::effective_mapping(&state.pool, scope.tenant_id, id, ids.data_type())
        .await?
        .ok_or_else(|| integration_not_found(id))?;
    Ok(Json(mapping))
}

/// Sets the mapping of one target (validated: 422 `invalid_mapping` names the problem); the
/// integration's next batches are mapped with it. Answers the effective mapping.
#[utoipa::path(
    put,
    path = "/api/v1/integrations/{integration_id}/mappings/{data_type}/{target}",
    tag = "integrations",
    params(
        ("integration_id" = uuid::Uuid, Path, description = "The integration"),
        ("data_type" = crate::domain::DataType, Path, description = "`contacts`, `tickets` or `deals`"),
        ("target" = String, Path, description = "The column it fills, or `properties.<name>`"),
        ("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    request_body(content = Object, description = "The mapping (see the README's mapping language)"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The effective mapping with it", body = EffectiveMapping),
        (status = 400, description = "`invalid_integration_id`, `invalid_data_type`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`integration_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_mapping` (`details.target`, `details.problem`), `invalid_body`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn set(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
    ApiJson(spec): ApiJson<Value>,
) -> Result<Json<EffectiveMapping>, ApiError> {
    let id = ids.get("integration_id");
    admin::set_mapping(
        &state.pool,
        Some(scope.tenant_id),
        id,
        ids.data_type(),
        ids.target(),
        &spec,
        true,
    )
    .await?;
    effective(scope, ids, State(state)).await
}

/// Removes the override of one target: the preset fills it again (or nothing, for a target the
/// preset lacks). Answers the effective mapping.
#[utoipa::path(
    delete,
    path = "/api/v1/integrations/{integration_id}/mappings/{data_type}/{target}",
    tag = "integrations",
    params(
        ("integration_id" = uuid::Uuid, Path, description = "The integration"),
        ("data_type" = crate::domain::DataType, Path, description = "`contacts`, `tickets` or `deals`"),
        ("target" = String, Path, description = "The column it fills, or `properties.<name>`"),
        ("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The effective mapping without the override", body = EffectiveMapping),
        (status = 400, description = "`invalid_integration_id`, `invalid_data_type`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`integration_not_found`, `mapping_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn delete(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<EffectiveMapping>, ApiError> {
    let id = ids.get("integration_id");
    let (data_type, target) = (ids.data_type(), ids.target());
    match tenant_api::delete_mapping(&state.pool, scope.tenant_id, id, data_type, target).await? {
        None => return Err(integration_not_found(id)),
        Some(false) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::MappingNotFound,
                format!("integration {id} has no override of {data_type} `{target}`"),
            ));
        }
        Some(true) => {}
    }
    effective(scope, ids, State(state)).await
}
