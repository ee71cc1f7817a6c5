//! `/api/admin/…`: the operator's HTTP API (jobs, integration settings and syncs, mappings), all
//! behind one extractor, [`AdminAuth`], which checks the admin token. Per-tenant admin access
//! comes with a later issue.

pub(crate) mod integrations;
pub(crate) mod jobs;
pub(crate) mod mappings;

use axum::{
    Router,
    extract::FromRequestParts,
    http::{StatusCode, request::Parts},
    routing::{get, post, put},
};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{
    AppState,
    error::{ApiError, ErrorCode},
};
use crate::domain::DataType;

/// The admin routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/jobs", get(jobs::list))
        .route("/api/admin/jobs/stats", get(jobs::stats))
        .route("/api/admin/jobs/retry", post(jobs::retry))
        .route("/api/admin/jobs/cancel", post(jobs::cancel))
        .route(
            "/api/admin/integrations/{id}",
            get(integrations::get).patch(integrations::update),
        )
        .route(
            "/api/admin/integrations/{id}/sync",
            post(integrations::sync),
        )
        .route("/api/admin/integrations/{id}/mappings", get(mappings::list))
        .route(
            "/api/admin/integrations/{id}/mappings/{data_type}/preview",
            post(mappings::preview),
        )
        .route(
            "/api/admin/integrations/{id}/mappings/{data_type}/{target}",
            put(mappings::set),
        )
}

/// Proof that the request carried the admin token (`Authorization: Bearer <token>`). Taken by
/// every admin handler, first, so an unauthenticated request learns nothing else.
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = &state.admin_token else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::AdminDisabled,
                "the admin API is off: set SYNCBRIDGE_ADMIN_TOKEN to turn it on",
            ));
        };
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(super::bearer_token);
        match presented {
            Some(token)
                if bool::from(token.as_bytes().ct_eq(expected.expose_secret().as_bytes())) =>
            {
                Ok(AdminAuth)
            }
            Some(_) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidAdminToken,
                "the admin token is not valid",
            )),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::MissingAdminToken,
                "send the admin token as `Authorization: Bearer <token>`",
            )),
        }
    }
}

/// The path of an integration route: `{id}`, and on mapping routes `{data_type}` and `{target}`,
/// parsed. A malformed id is 400 `invalid_integration_id`, an unknown data type 400
/// `invalid_data_type`.
pub struct IntegrationPath {
    pub id: Uuid,
    pub data_type: Option<DataType>,
    pub target: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for IntegrationPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = super::extract::path_params(parts, state).await?;
        let mut path = IntegrationPath {
            id: Uuid::nil(),
            data_type: None,
            target: None,
        };
        for (name, value) in &params {
            match name {
                "id" => {
                    path.id = value.parse().map_err(|_| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            ErrorCode::InvalidIntegrationId,
                            format!("{value:?} is not an integration id (a UUID)"),
                        )
                    })?;
                }
                "data_type" => {
                    path.data_type = Some(value.parse().map_err(
                        |e: crate::domain::kinds::UnknownValue| {
                            ApiError::new(
                                StatusCode::BAD_REQUEST,
                                ErrorCode::InvalidDataType,
                                e.to_string(),
                            )
                        },
                    )?);
                }
                "target" => path.target = Some(value.to_string()),
                _ => {}
            }
        }
        Ok(path)
    }
}
