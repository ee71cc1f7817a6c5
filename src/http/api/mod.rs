//! `/api/v1/…`: the platform API, on behalf of one tenant. Who calls is a [`Caller`]: the
//! platform's backend with a tenant API token (`sbt_…`, its tenant's, optionally read-only), or
//! an operator with the admin token, who names the tenant in a `Syncbridge-Tenant` header (as
//! Stripe's `Stripe-Account`). Every handler takes a [`TenantScope`] and runs its queries in that
//! tenant's transaction, so another tenant's ids are 404, never 403.

pub(crate) mod accounts;
pub(crate) mod integrations;
pub(crate) mod mappings;
pub(crate) mod records;
pub(crate) mod stats;
pub(crate) mod syncs;
pub(crate) mod tokens;

use axum::{
    Router,
    extract::FromRequestParts,
    http::{Method, StatusCode, request::Parts},
    routing::{delete, get, post},
};
use secrecy::ExposeSecret;
use serde_json::json;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{
    AppState,
    error::{ApiError, ErrorCode},
};
use crate::{
    admin::tokens::{self as tenant_tokens, TokenPrincipal, TokenRefusal},
    jwt::{JwtPrincipal, JwtRefusal},
};

/// The header an admin-token caller names the tenant in.
pub const TENANT_HEADER: &str = "syncbridge-tenant";

/// The platform API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/accounts",
            get(accounts::list).post(accounts::create),
        )
        .route(
            "/api/v1/accounts/{account_id}",
            axum::routing::patch(accounts::update).delete(accounts::delete),
        )
        .route(
            "/api/v1/integrations",
            get(integrations::list).post(integrations::create),
        )
        .route(
            "/api/v1/integrations/{integration_id}",
            get(integrations::get)
                .patch(integrations::update)
                .delete(integrations::delete),
        )
        .route(
            "/api/v1/integrations/{integration_id}/pause",
            post(integrations::pause),
        )
        .route(
            "/api/v1/integrations/{integration_id}/resume",
            post(integrations::resume),
        )
        .route(
            "/api/v1/integrations/{integration_id}/sync",
            post(integrations::start_sync),
        )
        .route(
            "/api/v1/integrations/{integration_id}/keys",
            get(integrations::list_keys).post(integrations::create_key),
        )
        .route(
            "/api/v1/integrations/{integration_id}/keys/{key_id}",
            delete(integrations::revoke_key),
        )
        .route(
            "/api/v1/integrations/{integration_id}/mappings",
            get(mappings::overrides),
        )
        .route(
            "/api/v1/integrations/{integration_id}/mappings/{data_type}",
            get(mappings::effective),
        )
        .route(
            "/api/v1/integrations/{integration_id}/mappings/{data_type}/preview",
            post(mappings::preview),
        )
        .route(
            "/api/v1/integrations/{integration_id}/mappings/{data_type}/{target}",
            axum::routing::put(mappings::set).delete(mappings::delete),
        )
        .route("/api/v1/records/{data_type}", get(records::list))
        .route("/api/v1/records/{data_type}/{record_id}", get(records::get))
        .route("/api/v1/stats", get(stats::get))
        .route("/api/v1/syncs", get(syncs::list))
        .route("/api/v1/syncs/{sync_id}", get(syncs::get))
        .route("/api/v1/syncs/{sync_id}/errors", get(syncs::errors))
        .route("/api/v1/syncs/{sync_id}/close", post(syncs::close))
        .route("/api/v1/syncs/{sync_id}/reprocess", post(syncs::reprocess))
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{token_id}", delete(tokens::revoke))
}

/// Who is calling: the install's operator (admin token), a tenant's token, or a platform JWT.
#[derive(Debug, Clone)]
pub enum Caller {
    Install,
    Tenant(TokenPrincipal),
    Jwt(JwtPrincipal),
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(super::bearer_token);
        let Some(token) = presented else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::MissingToken,
                "send `Authorization: Bearer <token>`: a tenant API token (sbt_…) or the admin token",
            ));
        };
        if let Some(admin) = &state.admin_token
            && bool::from(token.as_bytes().ct_eq(admin.expose_secret().as_bytes()))
        {
            return Ok(Caller::Install);
        }
        if crate::jwt::looks_like_jwt(token) {
            return jwt_caller(state, token).await;
        }
        match tenant_tokens::authenticate(&state.pool, token).await? {
            Ok(principal) => Ok(Caller::Tenant(principal)),
            Err(TokenRefusal::Revoked) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::TokenRevoked,
                "the token was revoked; create another with `syncbridge tokens create`",
            )),
            Err(_) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidToken,
                "the token is neither a valid tenant API token nor the admin token",
            )),
        }
    }
}

/// A JWT's caller: its tenant must exist (a valid token for a tenant this install does not
/// serve is refused like a bad one).
async fn jwt_caller(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let Some(verifier) = &state.jwt else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidToken,
            "JWT authentication is not configured here (see `[jwt]` in the README); use a tenant API token",
        ));
    };
    let principal = verifier.verify(token).await.map_err(jwt_refusal)?;
    if !crate::admin::tenant_exists(&state.pool, principal.tenant_id).await? {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::JwtTenantInvalid,
            format!(
                "the token names tenant {}, which does not exist",
                principal.tenant_id
            ),
        ));
    }
    Ok(Caller::Jwt(principal))
}

fn jwt_refusal(refusal: JwtRefusal) -> ApiError {
    let message = refusal.to_string();
    let (status, code) = match &refusal {
        JwtRefusal::Malformed(_) => (StatusCode::UNAUTHORIZED, ErrorCode::JwtMalformed),
        JwtRefusal::AlgorithmRefused(_) => {
            (StatusCode::UNAUTHORIZED, ErrorCode::JwtAlgorithmRefused)
        }
        JwtRefusal::UnknownKey(_) => (StatusCode::UNAUTHORIZED, ErrorCode::JwtKeyUnknown),
        JwtRefusal::BadSignature => (StatusCode::UNAUTHORIZED, ErrorCode::JwtSignatureInvalid),
        JwtRefusal::Expired => (StatusCode::UNAUTHORIZED, ErrorCode::JwtExpired),
        JwtRefusal::NotYetValid => (StatusCode::UNAUTHORIZED, ErrorCode::JwtNotYetValid),
        JwtRefusal::WrongAudience => (StatusCode::UNAUTHORIZED, ErrorCode::JwtAudienceMismatch),
        JwtRefusal::WrongIssuer => (StatusCode::UNAUTHORIZED, ErrorCode::JwtIssuerMismatch),
        JwtRefusal::ClaimMissing(claim) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::JwtClaimMissing,
                message,
            )
            .with_details(json!({ "claim": claim }));
        }
        JwtRefusal::TenantInvalid { claim, .. } => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::JwtTenantInvalid,
                message,
            )
            .with_details(json!({ "claim": claim }));
        }
        JwtRefusal::KeysUnavailable(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::JwksUnavailable)
        }
    };
    ApiError::new(status, code, message)
}

/// The tenant a request acts for, and whether it may change anything. A read-only token's
/// requests other than GET and HEAD are 403 `read_only_token`; an admin-token request without a
/// valid `Syncbridge-Tenant` header is 400 (`tenant_required`, `invalid_tenant_id`) or 404
/// (`tenant_not_found`).
#[derive(Debug, Clone)]
pub struct TenantScope {
    pub tenant_id: Uuid,
    pub caller: Caller,
}

impl FromRequestParts<AppState> for TenantScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let reads = matches!(parts.method, Method::GET | Method::HEAD);
        TenantScope::of(parts, state, reads).await
    }
}

/// The scope of a request that changes nothing whatever its method (a mapping preview's
/// `POST`), so read-only tokens may make it.
pub struct ReadingScope(pub TenantScope);

impl FromRequestParts<AppState> for ReadingScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        TenantScope::of(parts, state, true).await.map(ReadingScope)
    }
}

impl TenantScope {
    async fn of(parts: &mut Parts, state: &AppState, reads: bool) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let tenant_id = match &caller {
            Caller::Tenant(principal) => {
                if principal.read_only && !reads {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        ErrorCode::ReadOnlyToken,
                        "this token is read-only: it may read its tenant's data and change nothing",
                    ));
                }
                principal.tenant_id
            }
            Caller::Jwt(principal) => principal.tenant_id,
            Caller::Install => {
                let Some(value) = parts.headers.get(TENANT_HEADER) else {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::TenantRequired,
                        "with the admin token, name the tenant in a `Syncbridge-Tenant: <tenant id>` header",
                    ));
                };
                let text = value.to_str().unwrap_or_default().trim();
                let id: Uuid = text.parse().map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::InvalidTenantId,
                        format!("{text:?} in `Syncbridge-Tenant` is not a tenant id (a UUID)"),
                    )
                })?;
                if crate::admin::tenant_exists(&state.pool, id).await? {
                    id
                } else {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        ErrorCode::TenantNotFound,
                        format!("tenant {id} does not exist"),
                    ));
                }
            }
        };
        Ok(TenantScope { tenant_id, caller })
    }
}

/// The ids of a route's path, by parameter name: `integration_id` is 400
/// `invalid_integration_id` when malformed, `data_type` 400 `invalid_data_type` when not
/// `contacts`, `tickets` or `deals`, any other 400 `invalid_path` naming the parameter.
pub struct PathIds(
    Vec<(String, Uuid)>,
    Option<crate::domain::DataType>,
    Option<String>,
);

impl PathIds {
    /// The `target` parameter of a mapping route (the route declares it, so it is there).
    pub fn target(&self) -> &str {
        self.2.as_deref().unwrap_or_default()
    }

    /// The `data_type` parameter (the route declares it, so it is there).
    pub fn data_type(&self) -> crate::domain::DataType {
        self.1.unwrap_or(crate::domain::DataType::Contacts)
    }

    /// The parameter `name` (the route declares it, so it is there).
    pub fn get(&self, name: &str) -> Uuid {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
            .unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PathIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = super::extract::path_params(parts, state).await?;
        let mut ids = Vec::new();
        let mut data_type = None;
        let mut target = None;
        for (name, value) in &params {
            if name == "target" {
                target = Some(value.to_string());
                continue;
            }
            if name == "data_type" {
                data_type = Some(value.parse().map_err(
                    |e: crate::domain::kinds::UnknownValue| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            ErrorCode::InvalidDataType,
                            e.to_string(),
                        )
                    },
                )?);
                continue;
            }
            let id = value.parse().map_err(|_| {
                let code = if name == "integration_id" {
                    ErrorCode::InvalidIntegrationId
                } else {
                    ErrorCode::InvalidPath
                };
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    code,
                    format!("{value:?} is not a valid `{name}` (a UUID)"),
                )
                .with_details(json!({ "parameter": name }))
            })?;
            ids.push((name.to_string(), id));
        }
        Ok(PathIds(ids, data_type, target))
    }
}

/// Most items one page holds.
pub(crate) const MAX_PAGE: i64 = 200;
/// Items a page holds unless `limit` says otherwise.
pub(crate) const DEFAULT_PAGE: i64 = 50;

pub(crate) fn invalid_query(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, message)
}

pub(crate) fn invalid_cursor() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidCursor,
        "the cursor is not one this API gave out; pass `next_cursor` as it came",
    )
}

/// The page size asked for, 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when not given.
pub(crate) fn page_limit(asked: Option<i64>) -> Result<i64, ApiError> {
    match asked {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(invalid_query(format!(
            "limit must be between 1 and {MAX_PAGE}, not {n}"
        ))),
    }
}

/// The cursor after an item of a list ordered by a time and an id: opaque to callers (base64
/// of both), so the order's columns can change without breaking their code.
pub(crate) fn time_cursor(at: chrono::DateTime<chrono::Utc>, id: Uuid) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(format!("{}/{id}", at.timestamp_micros()))
}

/// [`time_cursor`] read back; anything else is 400 `invalid_cursor`.
pub(crate) fn parse_time_cursor(
    cursor: &str,
) -> Result<(chrono::DateTime<chrono::Utc>, Uuid), ApiError> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let text = URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid_cursor)?;
    let (micros, id) = text.split_once('/').ok_or_else(invalid_cursor)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(chrono::DateTime::from_timestamp_micros)
        .ok_or_else(invalid_cursor)?;
    Ok((at, id.parse().map_err(|_| invalid_cursor())?))
}

/// 422 `invalid_field`: one field of the body is refused; `details.field` names it.
impl From<crate::admin::tenant_api::FieldError> for ApiError {
    fn from(e: crate::admin::tenant_api::FieldError) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidField,
            e.message,
        )
        .with_details(json!({ "field": e.field }))
    }
}
