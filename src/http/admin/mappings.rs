//! `/api/admin/integrations/{id}/mappings`: an integration's field mappings for operators — list,
//! set one target (validated: 422 naming the problem), and preview on sample records (bounded,
//! off the request threads).

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{AdminAuth, IntegrationPath};
use crate::{
    admin::{self, MappingError, PreviewError},
    http::{
        AppState,
        error::{ApiError, ErrorCode},
        extract::ApiJson,
        webhook_auth::integration_not_found,
    },
};

impl From<MappingError> for ApiError {
    fn from(e: MappingError) -> Self {
        match e {
            MappingError::NotFound(id) => integration_not_found(id),
            MappingError::Refused(problem) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidMapping,
                format!("mapping for `{}`: {}", problem.target, problem.message),
            )
            .with_details(json!({ "target": problem.target, "problem": problem.message })),
            MappingError::NotDisableable(message) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidMapping,
                message,
            ),
            MappingError::Other(e) => e.into(),
        }
    }
}

/// The integration's stored mappings: its overrides of the preset and the targets turned off.
#[utoipa::path(
    get,
    path = "/api/admin/integrations/{id}/mappings",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The integration")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Its stored mappings: overrides of the preset and targets turned off", body = MappingList),
        (status = 400, description = "`invalid_integration_id`", body = crate::http::error::ErrorBody),
        (status = 404, description = "`integration_not_found`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`", body = crate::http::error::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`", body = crate::http::error::ErrorBody),
    )
)]
pub async fn list(
    _: AdminAuth,
    State(state): State<AppState>,
    path: IntegrationPath,
) -> Result<Json<MappingList>, ApiError> {
    let mappings = admin::list_mappings(&state.pool, None, path.id).await?;
    Ok(Json(MappingList { mappings }))
}

/// An integration's stored mappings (its overrides of the preset, and the targets turned off).
#[derive(Serialize, ToSchema)]
pub struct MappingList {
    pub mappings: Vec<admin::StoredMapping>,
}

/// Sets the mapping of one target column of one data type (validated; 422 names the problem).
#[utoipa::path(
    put,
    path = "/api/admin/integrations/{id}/mappings/{data_type}/{target}",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The integration"), ("data_type" = crate::domain::DataType, Path, description = "`contacts`, `tickets` or `deals`"), ("target" = String, Path, description = "The column the mapping fills")),
    request_body(content = Object, description = "The mapping of one target (see the README's mapping language)"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The stored mapping", body = SetMapping),
        (status = 400, description = "`invalid_integration_id`, `invalid_data_type`, `invalid_path`", body = crate::http::error::ErrorBody),
        (status = 404, description = "`integration_not_found`", body = crate::http::error::ErrorBody),
        (status = 413, description = "`payload_too_large`", body = crate::http::error::ErrorBody),
        (status = 422, description = "`invalid_mapping` (`details.target`, `details.problem`), `invalid_body`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`", body = crate::http::error::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`", body = crate::http::error::ErrorBody),
    )
)]
pub async fn set(
    _: AdminAuth,
    State(state): State<AppState>,
    path: IntegrationPath,
    ApiJson(spec): ApiJson<Value>,
) -> Result<Json<SetMapping>, ApiError> {
    let (Some(data_type), Some(target)) = (path.data_type, path.target) else {
        return Err(ApiError::internal(
            "the mapping route lacks its data type or target",
        ));
    };
    let id = path.id;
    admin::set_mapping(&state.pool, None, id, data_type, &target, &spec, true).await?;
    Ok(Json(SetMapping {
        integration_id: id,
        data_type,
        target,
        mapping: spec,
    }))
}

/// A mapping just stored.
#[derive(Serialize, ToSchema)]
pub struct SetMapping {
    pub integration_id: uuid::Uuid,
    pub data_type: crate::domain::DataType,
    pub target: String,
    #[schema(value_type = Object)]
    pub mapping: Value,
}

/// A preview's body: `{"records": [...]}` or an array of records (at most 100).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PreviewBody {
    Wrapped {
        #[schema(value_type = Vec<Object>)]
        records: Vec<Value>,
    },
    #[schema(value_type = Vec<Object>)]
    Bare(Vec<Value>),
}

impl PreviewBody {
    pub fn records(self) -> Vec<Value> {
        match self {
            PreviewBody::Wrapped { records } | PreviewBody::Bare(records) => records,
        }
    }
}

/// What a preview answers: each record as the mapping makes it a row, within a byte budget.
#[derive(Serialize, ToSchema)]
pub struct PreviewAnswer {
    /// Per record, in order: the mapped row (`row`) and its problems (`errors`), or
    /// `too_large` with its size.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Value>,
    /// Whether records were left out because the results before them reached the budget.
    pub truncated: bool,
    /// How many were left out.
    pub omitted: usize,
    /// The budget of `results`, in bytes of JSON.
    pub limit_bytes: usize,
}

impl From<crate::mapping::Preview> for PreviewAnswer {
    fn from(preview: crate::mapping::Preview) -> Self {
        Self {
            truncated: preview.omitted > 0,
            omitted: preview.omitted,
            results: preview.results,
            limit_bytes: admin::PREVIEW_MAX_BYTES,
        }
    }
}

impl From<PreviewError> for ApiError {
    fn from(e: PreviewError) -> Self {
        let message = e.to_string();
        match e {
            PreviewError::NotFound(id) => integration_not_found(id),
            PreviewError::TooManyRecords { max, .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooManyRecords,
                message,
            )
            .with_details(json!({ "limit": max })),
            PreviewError::StoredMappingsInvalid(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidMapping,
                message,
            ),
            PreviewError::Other(e) => e.into(),
        }
    }
}

/// Runs a mapping (the stored one, or one given) over records given, without storing anything.
#[utoipa::path(
    post,
    path = "/api/admin/integrations/{id}/mappings/{data_type}/preview",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The integration"), ("data_type" = crate::domain::DataType, Path, description = "`contacts`, `tickets` or `deals`")),
    request_body(content = PreviewBody, description = "`{records: [...]}` or an array of records (at most 100)"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Each record as the mapping makes it a row, with its problems", body = PreviewAnswer),
        (status = 400, description = "`invalid_integration_id`, `invalid_data_type`, `invalid_path`", body = crate::http::error::ErrorBody),
        (status = 404, description = "`integration_not_found`", body = crate::http::error::ErrorBody),
        (status = 413, description = "`too_many_records`, `payload_too_large`", body = crate::http::error::ErrorBody),
        (status = 422, description = "`invalid_mapping`, `invalid_body`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`", body = crate::http::error::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`", body = crate::http::error::ErrorBody),
    )
)]
pub async fn preview(
    _: AdminAuth,
    State(state): State<AppState>,
    path: IntegrationPath,
    ApiJson(body): ApiJson<PreviewBody>,
) -> Result<Json<PreviewAnswer>, ApiError> {
    let Some(data_type) = path.data_type else {
        return Err(ApiError::internal("the preview route lacks its data type"));
    };
    let preview = admin::preview_mappings(
        &state.pool,
        &state.previews,
        None,
        path.id,
        data_type,
        body.records(),
    )
    .await?;
    Ok(Json(preview.into()))
}
