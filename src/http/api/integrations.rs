//! `/api/v1/integrations…`: the tenant's integrations (summaries with last sync, counts and next
//! tick) and their API keys (created once, listed without secrets, revoked).

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{PathIds, TenantScope};
use crate::{
    admin::tenant_api::{self, IntegrationView, KeyInfo},
    http::{
        AppState,
        error::{ApiError, ErrorBody, ErrorCode},
        extract::ApiJson,
        webhook_auth::integration_not_found,
    },
};

/// The tenant's integrations, by name.
#[utoipa::path(
    get,
    path = "/api/v1/integrations",
    tag = "integrations",
    params(("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The integrations", body = IntegrationList),
        (status = 400, description = "`tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_revoked`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn list(
    scope: TenantScope,
    State(state): State<AppState>,
) -> Result<Json<IntegrationList>, ApiError> {
    let data = tenant_api::integrations(&state.pool, scope.tenant_id).await?;
    Ok(Json(IntegrationList { data }))
}

/// One of the tenant's integrations.
#[utoipa::path(
    get,
    path = "/api/v1/integrations/{integration_id}",
    tag = "integrations",
    params(
        ("integration_id" = Uuid, Path, description = "The integration"),
        ("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The integration", body = IntegrationView),
        (status = 400, description = "`tenant_required`, `invalid_tenant_id`, `invalid_integration_id`", body = ErrorBody),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_revoked`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `integration_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn get(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<IntegrationView>, ApiError> {
    let id = ids.get("integration_id");
    let integration = tenant_api::integration(&state.pool, scope.tenant_id, id)
        .await?
        .ok_or_else(|| integration_not_found(id))?;
    Ok(Json(integration))
}

/// The integration's API keys, newest first, revoked ones included; never a key itself.
#[utoipa::path(
    get,
    path = "/api/v1/integrations/{integration_id}/keys",
    tag = "integrations",
    params(
        ("integration_id" = Uuid, Path, description = "The integration"),
        ("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The keys", body = KeyList),
        (status = 400, description = "`tenant_required`, `invalid_tenant_id`, `invalid_integration_id`", body = ErrorBody),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_revoked`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `integration_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn list_keys(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<KeyList>, ApiError> {
    let id = ids.get("integration_id");
    let data = tenant_api::keys(&state.pool, scope.tenant_id, id)
        .await?
        .ok_or_else(|| integration_not_found(id))?;
    Ok(Json(KeyList { data }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A label to tell keys apart (e.g. "n8n production").
    name: Option<String>,
}

/// Makes an API key for the integration (n8n delivers with it); the key is in this answer only.
#[utoipa::path(
    post,
    path = "/api/v1/integrations/{integration_id}/keys",
    tag = "integrations",
    params(
        ("integration_id" = Uuid, Path, description = "The integration"),
        ("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    request_body(content = NewKey, description = "Optional; an empty body is `{}`"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The key, with `key` shown this once", body = CreatedKeyBody),
        (status = 400, description = "`tenant_required`, `invalid_tenant_id`, `invalid_integration_id`", body = ErrorBody),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_revoked`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_body`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `integration_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn create_key(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<CreatedKeyBody>), ApiError> {
    let id = ids.get("integration_id");
    let created = tenant_api::create_key(&state.pool, scope.tenant_id, id, body.name.as_deref())
        .await?
        .ok_or_else(|| integration_not_found(id))?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyBody {
            info: created.info,
            key: created.key.plaintext,
        }),
    ))
}

/// Revokes one of the integration's keys: deliveries with it are refused at once. Revoking again
/// changes nothing (the first `revoked_at` stays).
#[utoipa::path(
    delete,
    path = "/api/v1/integrations/{integration_id}/keys/{key_id}",
    tag = "integrations",
    params(
        ("integration_id" = Uuid, Path, description = "The integration"),
        ("key_id" = Uuid, Path, description = "The key"),
        ("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key as it now is", body = KeyInfo),
        (status = 400, description = "`tenant_required`, `invalid_tenant_id`, `invalid_integration_id`, `invalid_path`", body = ErrorBody),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_revoked`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `api_key_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn revoke_key(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<KeyInfo>, ApiError> {
    let (integration_id, key_id) = (ids.get("integration_id"), ids.get("key_id"));
    let revoked = tenant_api::revoke_key(&state.pool, scope.tenant_id, integration_id, key_id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::ApiKeyNotFound,
                format!("integration {integration_id} has no API key {key_id}"),
            )
        })?;
    Ok(Json(revoked))
}

/// The tenant's integrations.
#[derive(Serialize, ToSchema)]
pub struct IntegrationList {
    pub data: Vec<IntegrationView>,
}

/// An integration's API keys.
#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub data: Vec<KeyInfo>,
}

/// A key just made.
#[derive(Serialize, ToSchema)]
pub struct CreatedKeyBody {
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The key itself (`sbk_…`), shown this once: only its hash is kept.
    pub key: String,
}
