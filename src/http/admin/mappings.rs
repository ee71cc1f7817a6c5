//! `/api/admin/integrations/{id}/mappings`: an integration's field mappings for operators — list,
//! set one target (validated: 422 naming the problem), and preview on sample records (bounded,
//! off the request threads).

use axum::{Json, extract::State, http::StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

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

pub async fn list(
    _: AdminAuth,
    State(state): State<AppState>,
    path: IntegrationPath,
) -> Result<Json<Value>, ApiError> {
    let rows = admin::list_mappings(&state.pool, path.id).await?;
    Ok(Json(json!({
        "mappings": rows.into_iter().map(|m| json!({
            "data_type": m.data_type, "target": m.target, "mapping": m.mapping,
            "enabled": m.enabled,
        })).collect::<Vec<_>>()
    })))
}

pub async fn set(
    _: AdminAuth,
    State(state): State<AppState>,
    path: IntegrationPath,
    ApiJson(spec): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let (Some(data_type), Some(target)) = (path.data_type, path.target) else {
        return Err(ApiError::internal(
            "the mapping route lacks its data type or target",
        ));
    };
    let id = path.id;
    admin::set_mapping(&state.pool, id, data_type, &target, &spec, true).await?;
    Ok(Json(
        json!({ "integration_id": id, "data_type": data_type, "target": target, "mapping": spec }),
    ))
}

/// A preview's body: `{"records": [...]}` or an array of records.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum PreviewBody {
    Wrapped { records: Vec<Value> },
    Bare(Vec<Value>),
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

pub async fn preview(
    _: AdminAuth,
    State(state): State<AppState>,
    path: IntegrationPath,
    ApiJson(body): ApiJson<PreviewBody>,
) -> Result<Json<Value>, ApiError> {
    let Some(data_type) = path.data_type else {
        return Err(ApiError::internal("the preview route lacks its data type"));
    };
    let records = match body {
        PreviewBody::Wrapped { records } | PreviewBody::Bare(records) => records,
    };
    let preview =
        admin::preview_mappings(&state.pool, &state.previews, path.id, data_type, records).await?;
    Ok(Json(json!({
        "results": preview.results,
        "truncated": preview.omitted > 0,
        "omitted": preview.omitted,
        "limit_bytes": admin::PREVIEW_MAX_BYTES,
    })))
}
