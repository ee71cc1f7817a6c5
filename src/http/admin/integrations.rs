//! `/api/admin/integrations/{id}`: an integration's sync settings (webhook URL, credentials,
//! schedule; validated, 422 naming the problem) and the manual sync trigger, behind the admin
//! token. Credentials can be written here but are never returned.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AdminAuth, IntegrationPath};
use crate::{
    admin::settings::{self as sync_settings, SettingsChange, SettingsError},
    domain::{DataType, SyncMode, SyncTrigger, schedule::ScheduleError},
    http::{
        AppState,
        error::{ApiError, ErrorCode},
        extract::{ApiJson, IfMatch, etag},
        webhook_auth::integration_not_found,
    },
    n8n::UrlError,
    sync::{self, SyncRequest, SyncRequestError},
};

impl From<SettingsError> for ApiError {
    fn from(e: SettingsError) -> Self {
        let message = e.to_string();
        let (status, code) = match e {
            SettingsError::NotFound(id) => return integration_not_found(id),
            SettingsError::Field(field) => return field.into(),
            SettingsError::VersionMismatch { current } => {
                return ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    ErrorCode::VersionMismatch,
                    message,
                )
                .with_details(json!({ "version": current, "etag": format!("\"{current}\"") }));
            }
            SettingsError::NameTaken(_) => (StatusCode::CONFLICT, ErrorCode::IntegrationNameTaken),
            SettingsError::Other(inner) => return ApiError::from(inner),
            SettingsError::Url(UrlError::Denied { .. }) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::WebhookUrlDenied,
            ),
            SettingsError::Url(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidWebhookUrl,
            ),
            SettingsError::Schedule(ScheduleError::TimeZone(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidTimezone)
            }
            SettingsError::Schedule(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidSchedule)
            }
            SettingsError::WebhookUrlRequired => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::WebhookUrlRequired,
            ),
            SettingsError::Credentials(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidCredentials,
            ),
            SettingsError::NoEncryptionKey => {
                (StatusCode::CONFLICT, ErrorCode::EncryptionKeyMissing)
            }
            SettingsError::Jitter(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidJitter)
            }
            SettingsError::SweepShare(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidSweepShare,
            ),
            SettingsError::DataTypeNotSupported { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::DataTypeNotSupported,
            ),
        };
        ApiError::new(status, code, message)
    }
}

impl From<SyncRequestError> for ApiError {
    fn from(e: SyncRequestError) -> Self {
        let message = e.to_string();
        let (status, code) = match e {
            SyncRequestError::NotFound(id) => return integration_not_found(id),
            SyncRequestError::Other(inner) => return ApiError::from(inner),
            SyncRequestError::SyncOpen { sync_log_id } => {
                return ApiError::new(StatusCode::CONFLICT, ErrorCode::SyncInProgress, message)
                    .with_details(json!({ "sync_log_id": sync_log_id }));
            }
            SyncRequestError::Paused(_) => (StatusCode::CONFLICT, ErrorCode::IntegrationPaused),
            SyncRequestError::NoWebhookUrl(_) => {
                (StatusCode::CONFLICT, ErrorCode::WebhookUrlMissing)
            }
            SyncRequestError::RetryNotFound(_) => {
                (StatusCode::NOT_FOUND, ErrorCode::SyncLogNotFound)
            }
            SyncRequestError::NotRetryable { .. } => {
                (StatusCode::CONFLICT, ErrorCode::SyncNotRetryable)
            }
        };
        ApiError::new(status, code, message)
    }
}

/// An integration's sync settings: webhook URL, whether credentials are set (never them),
/// schedule, mode, data types, cursors and the next tick.
#[utoipa::path(
    get,
    path = "/api/admin/integrations/{id}",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The integration")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The integration's sync settings (never its credentials)", body = sync_settings::SyncSettings, headers(("ETag" = String, description = "The settings version, for `If-Match`"))),
        (status = 400, description = "`invalid_integration_id`", body = crate::http::error::ErrorBody),
        (status = 404, description = "`integration_not_found`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`", body = crate::http::error::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`", body = crate::http::error::ErrorBody),
    )
)]
pub async fn get(
    _: AdminAuth,
    State(state): State<AppState>,
    path: IntegrationPath,
) -> Result<impl IntoResponse, ApiError> {
    let settings = sync_settings::get(&state.pool, path.id).await?;
    Ok((etag(settings.version), Json(settings)))
}

/// Changes an integration's sync settings; each field given is validated (422 naming the
/// problem) and the row is locked while it is written, so concurrent changes do not lose each
/// other's fields. With `If-Match: "<version>"` (the `ETag` of a read) it applies only if
/// nobody changed the settings since (412 `version_mismatch` otherwise).
#[utoipa::path(
    patch,
    path = "/api/admin/integrations/{id}",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The integration"), ("If-Match" = Option<String>, Header, description = "The `ETag` of your last read: the change applies only if nobody changed the settings since")),
    request_body(content = SettingsChange, description = "Any of the settings (see the README); what is not given stays"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The settings as they now are", body = sync_settings::SyncSettings, headers(("ETag" = String, description = "The settings version, for `If-Match`"))),
        (status = 400, description = "`invalid_integration_id`, `invalid_if_match`", body = crate::http::error::ErrorBody),
        (status = 412, description = "`version_mismatch`: `details.version` and `details.etag` are the current ones", body = crate::http::error::ErrorBody),
        (status = 404, description = "`integration_not_found`", body = crate::http::error::ErrorBody),
        (status = 409, description = "`encryption_key_missing`", body = crate::http::error::ErrorBody),
        (status = 413, description = "`payload_too_large`", body = crate::http::error::ErrorBody),
        (status = 422, description = "`invalid_schedule`, `invalid_timezone`, `invalid_jitter`, `invalid_sweep_share`, `data_type_not_supported`, `invalid_credentials`, `invalid_webhook_url`, `webhook_url_denied`, `webhook_url_required`, `invalid_body`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`", body = crate::http::error::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`", body = crate::http::error::ErrorBody),
    )
)]
pub async fn update(
    _: AdminAuth,
    State(state): State<AppState>,
    path: IntegrationPath,
    IfMatch(if_match): IfMatch,
    ApiJson(change): ApiJson<SettingsChange>,
) -> Result<impl IntoResponse, ApiError> {
    let sync = &state.sync;
    let edit = sync_settings::Edit {
        if_version: if_match.as_deref(),
        ..sync_settings::Edit::settings(&change)
    };
    let settings = sync_settings::edit(
        &state.pool,
        &sync.policy,
        sync.sealer.as_ref(),
        None,
        path.id,
        edit,
    )
    .await?;
    Ok((etag(settings.version), Json(settings)))
}

/// A manual sync's options; all optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualSync {
    sync_mode: Option<SyncMode>,
    data_types: Option<Vec<DataType>>,
    /// Start even while another sync of the integration is open.
    #[serde(default)]
    force: bool,
    /// Repeat this failed or partial sync.
    retry_of: Option<Uuid>,
}

/// A sync just requested.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestedSync {
    pub sync_log_id: Uuid,
    /// The trigger job that asks n8n to run it.
    pub job_id: i64,
    pub status: crate::domain::SyncStatus,
}

/// Starts a sync of the integration now: a worker asks its n8n workflow to run (202 with the new
/// sync log's id).
#[utoipa::path(
    post,
    path = "/api/admin/integrations/{id}/sync",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The integration")),
    request_body(content = ManualSync, description = "Optional"),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "A worker asks n8n to start the sync", body = RequestedSync),
        (status = 400, description = "`invalid_integration_id`", body = crate::http::error::ErrorBody),
        (status = 404, description = "`integration_not_found`, `sync_log_not_found`", body = crate::http::error::ErrorBody),
        (status = 409, description = "`integration_paused`, `webhook_url_missing`, `sync_in_progress`, `sync_not_retryable`", body = crate::http::error::ErrorBody),
        (status = 413, description = "`payload_too_large`", body = crate::http::error::ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_sync_mode`, `data_type_not_supported`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`", body = crate::http::error::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`", body = crate::http::error::ErrorBody),
    )
)]
pub async fn sync(
    _: AdminAuth,
    State(state): State<AppState>,
    path: IntegrationPath,
    ApiJson(request): ApiJson<ManualSync>,
) -> Result<(StatusCode, Json<RequestedSync>), ApiError> {
    let id = path.id;
    let sync_request = SyncRequest {
        trigger: SyncTrigger::Manual,
        sync_mode: request.sync_mode,
        data_types: request.data_types,
        scheduled_for: None,
        retry_of: request.retry_of,
    };
    match sync::request_sync(
        &state.pool,
        &state.queue,
        None,
        id,
        &sync_request,
        request.force,
        state.sync.trigger_max_attempts,
    )
    .await
    {
        Ok((sync_log_id, job_id)) => Ok((
            StatusCode::ACCEPTED,
            Json(RequestedSync {
                sync_log_id,
                job_id,
                status: crate::domain::SyncStatus::Pending,
            }),
        )),
        Err(e) => Err(e.into()),
    }
}
