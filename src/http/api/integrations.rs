//! `/api/v1/integrations…`: the tenant's integrations (summaries with last sync, counts and next
//! tick) and their API keys (created once, listed without secrets, revoked).

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{PathIds, TenantScope};
use crate::{
    admin::{
        settings::{self, SettingsChange},
        tenant_api::{self, FieldError, Footprint, IntegrationView, KeyInfo},
    },
    domain::IntegrationStatus,
    http::{
        AppState,
        error::{ApiError, ErrorBody, ErrorCode},
        extract::{ApiJson, IfMatch, etag},
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
        (status = 200, description = "The integration", body = IntegrationView, headers(("ETag" = String, description = "Its settings version, for `If-Match`"))),
        (status = 400, description = "`tenant_required`, `invalid_tenant_id`, `invalid_integration_id`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `integration_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn get(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let id = ids.get("integration_id");
    let integration = tenant_api::integration(&state.pool, scope.tenant_id, id)
        .await?
        .ok_or_else(|| integration_not_found(id))?;
    Ok((etag(integration.summary.version), Json(integration)))
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

impl From<tenant_api::IntegrationError> for ApiError {
    fn from(e: tenant_api::IntegrationError) -> Self {
        let message = e.to_string();
        match e {
            tenant_api::IntegrationError::Invalid(field) => field.into(),
            tenant_api::IntegrationError::NameTaken(_) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::IntegrationNameTaken,
                message,
            ),
            tenant_api::IntegrationError::NotFound(id) => integration_not_found(id),
            tenant_api::IntegrationError::Other(inner) => ApiError::from(inner),
        }
    }
}

/// A new integration: what it is, and optionally any of its settings (as `PATCH` takes them).
/// For the OpenAPI document: the handler splits the object itself (see [`take_settings`]).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct NewIntegration {
    /// `zoho_crm`, `zoho_desk`, `jira`, `salesforce`, `hubspot`, `zendesk`, `intercom`, `slack`
    /// or `custom`.
    source_type: String,
    name: String,
    description: Option<String>,
    #[serde(flatten)]
    settings: SettingsChange,
}

/// The part of `body` a [`SettingsChange`] takes, once `fields` are taken out (so one body holds
/// both, and an unknown field is still refused by name).
fn take_settings(
    body: &mut serde_json::Map<String, serde_json::Value>,
    fields: &[&str],
) -> Result<(serde_json::Map<String, serde_json::Value>, SettingsChange), ApiError> {
    let own = fields
        .iter()
        .filter_map(|f| body.remove(*f).map(|v| (f.to_string(), v)))
        .collect();
    let change = serde_path_to_error::deserialize(serde_json::Value::Object(std::mem::take(body)))
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidBody,
                format!("the body is not valid: {e}"),
            )
        })?;
    Ok((own, change))
}

/// Adds an integration, with any of its settings (webhook URL, schedule, credentials (write-only),
/// …, validated as `PATCH` does) in the same step: when one is refused, nothing is created.
/// Then make it a key: `POST /api/v1/integrations/{id}/keys`.
#[utoipa::path(
    post,
    path = "/api/v1/integrations",
    tag = "integrations",
    params(("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for")),
    request_body = NewIntegration,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The integration", body = IntegrationView, headers(("ETag" = String, description = "Its settings version, for `If-Match`"))),
        (status = 400, description = "`tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`integration_name_taken`, `encryption_key_missing`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_field` (`details.field` names it), `invalid_body`, `invalid_schedule`, `invalid_timezone`, `invalid_jitter`, `invalid_sweep_share`, `data_type_not_supported`, `invalid_credentials`, `invalid_webhook_url`, `webhook_url_denied`, `webhook_url_required`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn create(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiJson(mut body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<impl IntoResponse, ApiError> {
    let (own, change) = take_settings(&mut body, &["source_type", "name", "description"])?;
    let text = |field: &str, required: bool| -> Result<Option<String>, ApiError> {
        match own.get(field) {
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            None | Some(serde_json::Value::Null) if !required => Ok(None),
            None | Some(serde_json::Value::Null) => {
                Err(FieldError::new(field, format!("`{field}` is required")).into())
            }
            Some(_) => Err(FieldError::new(field, format!("`{field}` is a string")).into()),
        }
    };
    let source_type = text("source_type", true)?
        .unwrap_or_default()
        .parse()
        .map_err(|e: crate::domain::kinds::UnknownValue| {
            FieldError::new("source_type", e.to_string())
        })?;
    let name = text("name", true)?.unwrap_or_default();
    let description = text("description", false)?;
    let sync = &state.sync;
    let id = settings::create(
        &state.pool,
        &sync.policy,
        sync.sealer.as_ref(),
        scope.tenant_id,
        source_type,
        &name,
        description.as_deref(),
        &change,
    )
    .await?;
    let view = tenant_api::integration(&state.pool, scope.tenant_id, id)
        .await?
        .ok_or_else(|| integration_not_found(id))?;
    Ok((StatusCode::CREATED, etag(view.summary.version), Json(view)))
}

/// The body of an integration's `PATCH`, for the OpenAPI document: the handler reads `name`
/// and `description` from the object itself (so `null` tells from absent) and the rest as a
/// [`SettingsChange`], which this flattens, so the two cannot drift apart.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct IntegrationPatch {
    /// A new name, unique within the tenant (case-insensitive); cannot be removed.
    name: Option<String>,
    /// A new description; `null` removes it.
    description: Option<String>,
    #[serde(flatten)]
    settings: SettingsChange,
}

/// Changes an integration: `name` and `description`, and any of its sync settings (`webhook_url`,
/// `credentials` (write-only), `schedule`, `timezone`, `sync_mode`, `data_types`,
/// `missed_ticks`, `on_running`, `jitter_secs`, `sweep_min_seen_percent`; see the README). What
/// is not given stays; `null` removes the URL, schedule or description.
#[utoipa::path(
    patch,
    path = "/api/v1/integrations/{integration_id}",
    tag = "integrations",
    params(("integration_id" = uuid::Uuid, Path, description = "The integration"), ("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for"), ("If-Match" = Option<String>, Header, description = "The `ETag` of your last read: the change applies only if nobody changed the integration since")),
    request_body(content = IntegrationPatch, description = "What to change; what is not given stays"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The integration as it now is", body = IntegrationView, headers(("ETag" = String, description = "Its settings version, for `If-Match`"))),
        (status = 400, description = "`invalid_integration_id`, `tenant_required`, `invalid_tenant_id`, `invalid_if_match`", body = ErrorBody),
        (status = 412, description = "`version_mismatch`: `details.version` and `details.etag` are the integration's current ones", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`integration_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`integration_name_taken`, `encryption_key_missing`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_field`, `invalid_body`, `invalid_schedule`, `invalid_timezone`, `invalid_jitter`, `invalid_sweep_share`, `data_type_not_supported`, `invalid_credentials`, `invalid_webhook_url`, `webhook_url_denied`, `webhook_url_required`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn update(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
    IfMatch(if_match): IfMatch,
    ApiJson(mut body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<impl IntoResponse, ApiError> {
    let id = ids.get("integration_id");
    let (mut own, change) = take_settings(&mut body, &["name", "description"])?;
    let text = |field: &str, value: serde_json::Value| -> Result<Option<String>, ApiError> {
        match value {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) => Ok(Some(s)),
            _ => Err(FieldError::new(field, format!("`{field}` is a string")).into()),
        }
    };
    let name = match own.remove("name").map(|v| text("name", v)).transpose()? {
        Some(None) => {
            return Err(FieldError::new("name", "an integration name cannot be removed").into());
        }
        name => name.flatten(),
    };
    let description = own
        .remove("description")
        .map(|v| text("description", v))
        .transpose()?;
    let edit = settings::Edit {
        name: name.as_deref(),
        description: description.as_ref().map(|d| d.as_deref()),
        settings: &change,
        if_version: if_match.as_deref(),
    };
    let sync = &state.sync;
    settings::edit(
        &state.pool,
        &sync.policy,
        sync.sealer.as_ref(),
        Some(scope.tenant_id),
        id,
        edit,
    )
    .await?;
    let view = tenant_api::integration(&state.pool, scope.tenant_id, id)
        .await?
        .ok_or_else(|| integration_not_found(id))?;
    Ok((etag(view.summary.version), Json(view)))
}

/// Deletes an integration with everything it holds: its records, syncs, batches and stored
/// chunks, errors, mappings and API keys (deliveries with them get 401 at once); its unfinished
/// jobs are cancelled. Answers what was removed.
#[utoipa::path(
    delete,
    path = "/api/v1/integrations/{integration_id}",
    tag = "integrations",
    params(("integration_id" = uuid::Uuid, Path, description = "The integration"), ("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What was removed", body = Footprint),
        (status = 400, description = "`invalid_integration_id`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`integration_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn delete(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<Footprint>, ApiError> {
    let id = ids.get("integration_id");
    let removed =
        tenant_api::delete_integration(&state.pool, &state.queue, scope.tenant_id, id).await?;
    Ok(Json(removed))
}

async fn set_status(
    scope: &TenantScope,
    state: &AppState,
    id: uuid::Uuid,
    status: IntegrationStatus,
) -> Result<Json<IntegrationView>, ApiError> {
    if !tenant_api::set_status(&state.pool, scope.tenant_id, id, status).await? {
        return Err(integration_not_found(id));
    }
    let view = tenant_api::integration(&state.pool, scope.tenant_id, id)
        .await?
        .ok_or_else(|| integration_not_found(id))?;
    Ok(Json(view))
}

/// Pauses an integration: deliveries are refused (409 `integration_paused`) and its schedule
/// does not fire until it is resumed.
#[utoipa::path(
    post,
    path = "/api/v1/integrations/{integration_id}/pause",
    tag = "integrations",
    params(("integration_id" = uuid::Uuid, Path, description = "The integration"), ("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The integration as it now is", body = IntegrationView),
        (status = 400, description = "`invalid_integration_id`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`integration_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn pause(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<IntegrationView>, ApiError> {
    set_status(
        &scope,
        &state,
        ids.get("integration_id"),
        IntegrationStatus::Paused,
    )
    .await
}

/// Resumes a paused integration: deliveries are taken and its schedule fires again.
#[utoipa::path(
    post,
    path = "/api/v1/integrations/{integration_id}/resume",
    tag = "integrations",
    params(("integration_id" = uuid::Uuid, Path, description = "The integration"), ("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The integration as it now is", body = IntegrationView),
        (status = 400, description = "`invalid_integration_id`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`integration_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn resume(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<IntegrationView>, ApiError> {
    set_status(
        &scope,
        &state,
        ids.get("integration_id"),
        IntegrationStatus::Active,
    )
    .await
}

/// A manual sync: what to fetch, and whether to wait for it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSync {
    /// `incremental` (default: the integration's mode) or `full`.
    #[schema(value_type = Option<String>)]
    sync_mode: Option<crate::domain::SyncMode>,
    /// The data types to fetch (default: the integration's).
    #[schema(value_type = Option<Vec<String>>)]
    data_types: Option<Vec<crate::domain::DataType>>,
    /// Start even while another sync of the integration is open.
    #[serde(default)]
    force: bool,
    /// Repeat this failed or partial sync (trigger `retry`).
    retry_of: Option<uuid::Uuid>,
    /// Wait up to this many seconds (at most 25, and 2 less than the request timeout) for the
    /// sync to close before answering.
    #[serde(default)]
    wait_secs: u32,
}

/// A sync just started, and how it stands.
#[derive(Serialize, ToSchema)]
pub struct StartedSync {
    pub sync_log_id: uuid::Uuid,
    /// The job that asks n8n to start it.
    pub job_id: i64,
    /// Whether it closed within `wait_secs`.
    pub closed: bool,
    /// The sync as it stood when answered.
    pub sync: tenant_api::SyncLog,
}

/// Longest `wait_secs`: under the request timeout (30 s by default), so an answer always comes
/// (a lower `http.request_timeout_secs` lowers it too).
const MAX_WAIT_SECS: u32 = 25;

/// Starts a sync now: a worker asks the integration's n8n workflow to run. With `wait_secs`, the
/// answer waits until the sync closes (200) or the time is up (202), like `syncbridge sync
/// --wait`.
#[utoipa::path(
    post,
    path = "/api/v1/integrations/{integration_id}/sync",
    tag = "integrations",
    params(("integration_id" = uuid::Uuid, Path, description = "The integration"), ("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for")),
    request_body(content = StartSync, description = "Optional; an empty body is `{}`"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Started and closed within `wait_secs`", body = StartedSync),
        (status = 202, description = "Started; still open", body = StartedSync),
        (status = 400, description = "`invalid_integration_id`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`integration_not_found`, `sync_log_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`integration_paused`, `webhook_url_missing`, `sync_in_progress` (`details.sync_log_id`), `sync_not_retryable`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_field`, `data_type_not_supported`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn start_sync(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<StartSync>,
) -> Result<(StatusCode, Json<StartedSync>), ApiError> {
    let id = ids.get("integration_id");
    let longest = MAX_WAIT_SECS.min(
        u32::try_from(state.sync.request_timeout_secs.saturating_sub(2)).unwrap_or(MAX_WAIT_SECS),
    );
    if body.wait_secs > longest {
        return Err(FieldError::new(
            "wait_secs",
            format!("wait_secs is at most {longest} (below the request timeout)"),
        )
        .into());
    }
    let request = crate::sync::SyncRequest {
        trigger: crate::domain::SyncTrigger::Manual,
        sync_mode: body.sync_mode,
        data_types: body.data_types,
        scheduled_for: None,
        retry_of: body.retry_of,
    };
    let (sync_log_id, job_id) = crate::sync::request_sync(
        &state.pool,
        &state.queue,
        Some(scope.tenant_id),
        id,
        &request,
        body.force,
        state.sync.trigger_max_attempts,
    )
    .await?;
    // Long-poll: the sync's row is read every quarter second until it closes or time is up. A
    // LISTEN would answer sooner, but a closed sync is rare within one request and polling one
    // indexed row costs little.
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_secs(body.wait_secs.into());
    loop {
        let sync = tenant_api::sync_log(&state.pool, scope.tenant_id, sync_log_id)
            .await?
            .ok_or_else(|| integration_not_found(id))?;
        let closed = !sync.status.is_open();
        if closed || tokio::time::Instant::now() >= deadline {
            let status = if closed {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            return Ok((
                status,
                Json(StartedSync {
                    sync_log_id,
                    job_id,
                    closed,
                    sync,
                }),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
