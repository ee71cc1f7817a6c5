//! `/api/v1/integrations/{id}/mappings/{data_type}…`: an integration's effective mapping (its
//! source's preset with its overrides), one target set (validated as the admin route does) or
//! returned to the preset.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::Value;

use super::{PathIds, TenantScope};
use crate::{
    admin::{
        self,
        tenant_api::{self, EffectiveMapping},
    },
    http::{
        AppState,
        error::{ApiError, ErrorBody, ErrorCode},
        extract::ApiJson,
        webhook_auth::integration_not_found,
    },
};

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
        (status = 401, description = "`missing_token`, `invalid_token`, `token_revoked`", body = ErrorBody),
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
        (status = 401, description = "`missing_token`, `invalid_token`, `token_revoked`", body = ErrorBody),
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
    if !tenant_api::owns_integration(&state.pool, scope.tenant_id, id).await? {
        return Err(integration_not_found(id));
    }
    admin::set_mapping(&state.pool, id, ids.data_type(), ids.target(), &spec, true).await?;
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
        (status = 401, description = "`missing_token`, `invalid_token`, `token_revoked`", body = ErrorBody),
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
