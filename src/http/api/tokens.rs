//! `/api/v1/tokens…`: the tenant's API tokens, created once, listed without secrets, revoked.

use axum::{Json, extract::State, http::StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{PathIds, TenantScope};
use crate::{
    admin::tokens,
    http::{
        AppState,
        error::{ApiError, ErrorCode},
        extract::ApiJson,
    },
};

/// `GET /api/v1/tokens`: `{"data": [token, …]}`, newest first, revoked ones included.
pub async fn list(
    scope: TenantScope,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let tokens = tokens::list(&state.pool, scope.tenant_id).await?;
    Ok(Json(json!({ "data": tokens })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A label to tell tokens apart.
    name: Option<String>,
    /// The token may read and change nothing.
    #[serde(default)]
    read_only: bool,
}

/// `POST /api/v1/tokens`: 201 with the token, shown this once.
pub async fn create(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let created = tokens::create(
        &state.pool,
        scope.tenant_id,
        body.name.as_deref(),
        body.read_only,
    )
    .await?;
    let mut answer = json!(created.info);
    answer["token"] = json!(created.token.plaintext);
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `DELETE /api/v1/tokens/{token_id}`: revokes the token (it stops working at once, even for
/// the request that revokes itself afterwards) and answers it as it now is.
pub async fn revoke(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let id = ids.get("token_id");
    let revoked = tokens::revoke(&state.pool, scope.tenant_id, id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::TokenNotFound,
                format!("no token {id}"),
            )
        })?;
    Ok(Json(json!(revoked)))
}
