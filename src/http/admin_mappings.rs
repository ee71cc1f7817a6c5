//! `/api/admin/integrations/{id}/mappings`: an integration's field mappings for operators — list,
//! set one target (validated: 422 naming the problem), and preview on sample records.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use bytes::Bytes;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    AppState, admin_integrations::integration_id, admin_jobs::AdminAuth, error::ApiError,
    webhook_auth::integration_not_found,
};
use crate::{admin, domain::DataType, mapping};

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the body is not JSON: {e}"),
        )
    })
}

fn data_type(text: &str) -> Result<DataType, ApiError> {
    text.parse()
        .map_err(|e: crate::domain::kinds::UnknownValue| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_data_type", e.to_string())
        })
}

async fn ensure_integration(state: &AppState, id: &str) -> Result<Uuid, ApiError> {
    let id = integration_id(id)?;
    match admin::integration(&state.pool, id).await? {
        Some(_) => Ok(id),
        None => Err(integration_not_found(id)),
    }
}

pub async fn list(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = ensure_integration(&state, &id).await?;
    let rows = admin::list_mappings(&state.pool, id).await?;
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
    Path((id, data_type_text, target)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = ensure_integration(&state, &id).await?;
    let data_type = data_type(&data_type_text)?;
    let spec = parse_json(&body)?;
    if let Err(problem) = mapping::compile_field(data_type, &target, &spec) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_mapping",
            format!("mapping for `{}`: {}", problem.target, problem.message),
        )
        .with_details(json!({ "target": problem.target, "problem": problem.message })));
    }
    admin::set_mapping(&state.pool, id, data_type, &target, &spec, true).await?;
    Ok(Json(
        json!({ "integration_id": id, "data_type": data_type, "target": target, "mapping": spec }),
    ))
}

/// Body: `{"records": [...]}` or an array of records.
pub async fn preview(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((id, data_type_text)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = ensure_integration(&state, &id).await?;
    let data_type = data_type(&data_type_text)?;
    let records = match parse_json(&body)? {
        Value::Array(records) => records,
        Value::Object(mut map) => match map.remove("records") {
            Some(Value::Array(records)) => records,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "send {\"records\": [...]} or an array of records",
                ));
            }
        },
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "send {\"records\": [...]} or an array of records",
            ));
        }
    };
    let results = admin::preview_mappings(&state.pool, id, data_type, &records)
        .await
        .map_err(|e| {
            // The database failing is not the mapping's fault: 503 when it is away, else 500.
            if e.downcast_ref::<sqlx::Error>().is_some() {
                ApiError::from(e)
            } else {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_mapping",
                    format!("{e:#}"),
                )
            }
        })?;
    Ok(Json(json!({ "results": results })))
}
