//! `/api/v1/integrations…`: the tenant's integrations (summaries with last sync, counts and next
//! tick) and their API keys (created once, listed without secrets, revoked).

use axum::{Json, extract::State, http::StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{PathIds, TenantScope};
use crate::{
    admin::tenant_api,
    http::{
        AppState,
        error::{ApiError, ErrorCode},
        extract::ApiJson,
        webhook_auth::integration_not_found,
    },
};

/// `GET /api/v1/integrations`: `{"data": [integration, …]}`, by name.
pub async fn list(
    scope: TenantScope,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let integrations = tenant_api::integrations(&state.pool, scope.tenant_id).await?;
    Ok(Json(json!({ "data": integrations })))
}

/// `GET /api/v1/integrations/{integration_id}`.
pub async fn get(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let id = ids.get("integration_id");
    let integration = tenant_api::integration(&state.pool, scope.tenant_id, id)
        .await?
        .ok_or_else(|| integration_not_found(id))?;
    Ok(Json(json!(integration)))
}

/// `GET /api/v1/integrations/{integration_id}/keys`: `{"data": [key, …]}`, newest first.
pub async fn list_keys(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let id = ids.get("integration_id");
    let keys = tenant_api::keys(&state.pool, scope.tenant_id, id)
        .await?
        .ok_or_else(|| integration_not_found(id))?;
    Ok(Json(json!({ "data": keys })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A label to tell keys apart (e.g. "n8n production").
    name: Option<String>,
}

/// `POST /api/v1/integrations/{integration_id}/keys`: 201 with the key, shown this once.
pub async fn create_key(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = ids.get("integration_id");
    let created = tenant_api::create_key(&state.pool, scope.tenant_id, id, body.name.as_deref())
        .await?
        .ok_or_else(|| integration_not_found(id))?;
    let mut answer = json!(created.info);
    answer["key"] = json!(created.key.plaintext);
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `DELETE /api/v1/integrations/{integration_id}/keys/{key_id}`: revokes the key (deliveries
/// with it are refused at once) and answers it as it now is. Revoking again changes nothing.
pub async fn revoke_key(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!(revoked)))
}
