//! `/api/v1/tokens…`: the tenant's API tokens, created once, listed without secrets, revoked.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{PathIds, TenantScope};
use crate::{
    admin::tokens::{self, TokenInfo},
    http::{
        AppState,
        error::{ApiError, ErrorBody, ErrorCode},
        extract::ApiJson,
    },
};

/// The tenant's API tokens, newest first, revoked ones included; never a token itself.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    params(("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tokens", body = TokenList),
        (status = 400, description = "`tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn list(
    scope: TenantScope,
    State(state): State<AppState>,
) -> Result<Json<TokenList>, ApiError> {
    let data = tokens::list(&state.pool, scope.tenant_id).await?;
    Ok(Json(TokenList { data }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A label to tell tokens apart.
    name: Option<String>,
    /// The token may read and change nothing.
    #[serde(default)]
    read_only: bool,
}

/// Makes an API token for the tenant; the token is in this answer only.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    params(("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for")),
    request_body(content = NewToken, description = "Optional; an empty body is `{}`"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The token, with `token` shown this once", body = CreatedTokenBody),
        (status = 400, description = "`tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_body`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn create(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<CreatedTokenBody>), ApiError> {
    let created = tokens::create(
        &state.pool,
        scope.tenant_id,
        body.name.as_deref(),
        body.read_only,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTokenBody {
            info: created.info,
            token: created.token.plaintext,
        }),
    ))
}

/// Revokes one of the tenant's tokens: it stops working at once (a token may revoke itself).
/// Revoking again changes nothing.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{token_id}",
    tag = "tokens",
    params(("token_id" = Uuid, Path, description = "The token"), ("Syncbridge-Tenant" = Option<Uuid>, Header, description = "With the admin token: the tenant to act for")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token as it now is", body = TokenInfo),
        (status = 400, description = "`tenant_required`, `invalid_tenant_id`, `invalid_path`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `token_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn revoke(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<TokenInfo>, ApiError> {
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
    Ok(Json(revoked))
}

/// The tenant's API tokens.
#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub data: Vec<TokenInfo>,
}

/// A token just made.
#[derive(Serialize, ToSchema)]
pub struct CreatedTokenBody {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The token itself (`sbt_…`), shown this once: only its hash is kept.
    pub token: String,
}
