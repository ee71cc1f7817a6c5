//! The mappings page: an integration's effective mapping of one data type (its source's preset
//! with its overrides), a target set or reset with the server's own validation, and a preview
//! of the effective mapping over records pasted in or taken from the integration's last stored
//! batch. The same functions as the `/api/v1/integrations/{id}/mappings` routes.

// Refusals here are whole pages (a `Response`), built once per request, not on a hot path.
#![allow(clippy::result_large_err)]

use askama::Template;
use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    Console,
    pages::{Layout, framed, internal, not_found, redirect_with_notice, render},
};
use crate::{
    admin::{self, MappingError, PreviewError, tenant_api},
    domain::DataType,
    http::AppState,
};

/// Records the "last stored batch" preview takes.
const SAMPLE: usize = 20;

#[derive(Template)]
#[template(path = "mappings.html")]
struct MappingsPage {
    layout: Layout,
    integrations: Vec<(Uuid, String)>,
    integration_id: Uuid,
    data_type: String,
    /// Each effective target: its name, its mapping as JSON, and whether it is an override.
    entries: Vec<(String, String, bool)>,
    disabled: Vec<String>,
    /// Every target the data type has (the form's suggestions).
    targets: Vec<&'static str>,
    /// The target form: as typed, or the entry being edited.
    target: String,
    mapping: String,
    error: Option<String>,
    notice: Option<String>,
    preview: Option<PreviewResult>,
    records: String,
}

impl MappingsPage {
    fn is_integration(&self, id: &Uuid) -> bool {
        self.integration_id == *id
    }

    fn is_type(&self, t: &str) -> bool {
        self.data_type == t
    }
}

/// What a preview showed: per record, its row (or its size when too large) and its problems.
pub struct PreviewResult {
    pub error: Option<String>,
    /// Per record: its outcome (`mapped`, `skipped`, `failed`, `too_large`), the row as JSON
    /// (the size when too large), its problems.
    pub rows: Vec<(String, String, Vec<String>)>,
    pub omitted: usize,
    pub source: &'static str,
}

#[derive(Template)]
#[template(path = "mapping_preview.html")]
struct PreviewFragment {
    preview: PreviewResult,
}

#[derive(Deserialize, Default)]
pub struct MappingsQuery {
    integration_id: Option<Uuid>,
    data_type: Option<String>,
    /// Fill the target form with this target's current mapping.
    edit: Option<String>,
    notice: Option<String>,
}

fn data_type_of(text: Option<&str>) -> DataType {
    text.and_then(|t| t.parse().ok())
        .unwrap_or(DataType::Contacts)
}

/// What a page shows besides the integration's mapping: the target form as typed, a refusal or
/// notice, a preview and the records it ran over.
#[derive(Default)]
struct Shown {
    form_target: String,
    form_mapping: String,
    error: Option<String>,
    notice: Option<String>,
    preview: Option<PreviewResult>,
    records: String,
}

async fn page(
    state: &AppState,
    console: &Console,
    integration_id: Option<Uuid>,
    data_type: DataType,
    edit: Option<&str>,
    shown: Shown,
    status: StatusCode,
) -> Response {
    let (tenant, layout) = or_page!(framed(state, console, "mappings").await);
    let integrations: Vec<(Uuid, String)> =
        match tenant_api::integrations(&state.pool, tenant).await {
            Ok(list) => list
                .into_iter()
                .map(|i| (i.summary.id, i.summary.name))
                .collect(),
            Err(e) => return internal(e),
        };
    let Some(integration_id) = integration_id.or_else(|| integrations.first().map(|i| i.0)) else {
        return Redirect::to("/integrations?notice=Add+an+integration+first.").into_response();
    };
    let effective =
        match tenant_api::effective_mapping(&state.pool, tenant, integration_id, data_type).await {
            Ok(Some(m)) => m,
            Ok(None) => return not_found("integration"),
            Err(e) => return internal(e),
        };
    let entries: Vec<(String, String, bool)> = effective
        .effective
        .iter()
        .map(|e| {
            (
                e.target.clone(),
                serde_json::to_string(&e.mapping).unwrap_or_default(),
                e.origin == "override",
            )
        })
        .collect();
    let (mut target, mut mapping) = (shown.form_target, shown.form_mapping);
    if let Some(edit) = edit {
        target = edit.to_string();
        mapping = effective
            .effective
            .iter()
            .find(|e| e.target == edit)
            .map(|e| serde_json::to_string_pretty(&e.mapping).unwrap_or_default())
            .unwrap_or_default();
    }
    let html = MappingsPage {
        layout,
        integrations,
        integration_id,
        data_type: data_type.as_str().to_string(),
        entries,
        disabled: effective.disabled,
        targets: crate::mapping::columns(data_type)
            .iter()
            .map(|(name, _)| *name)
            .collect(),
        target,
        mapping,
        error: shown.error,
        notice: shown.notice,
        preview: shown.preview,
        records: shown.records,
    }
    .render();
    match html {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => internal(e.into()),
    }
}

pub async fn mappings(
    console: Console,
    State(state): State<AppState>,
    Query(query): Query<MappingsQuery>,
) -> Response {
    let shown = Shown {
        notice: query.notice,
        ..Shown::default()
    };
    page(
        &state,
        &console,
        query.integration_id,
        data_type_of(query.data_type.as_deref()),
        query.edit.as_deref(),
        shown,
        StatusCode::OK,
    )
    .await
}

#[derive(Deserialize)]
pub struct TargetForm {
    csrf: String,
    integration_id: Uuid,
    data_type: String,
    target: String,
    #[serde(default)]
    mapping: String,
    /// `set`, `disable` or `reset`.
    action: String,
}

/// Sets a target's mapping (validated as the API validates it: the refusal names the problem),
/// turns a preset target off, or resets a target to its preset.
pub async fn set_target(
    console: Console,
    State(state): State<AppState>,
    Form(form): Form<TargetForm>,
) -> Response {
    let tenant = or_page!(console.acting(&form.csrf));
    let data_type = data_type_of(Some(&form.data_type));
    let target = form.target.trim().to_string();
    let refuse = |error: String| Shown {
        form_target: target.clone(),
        form_mapping: form.mapping.clone(),
        error: Some(error),
        ..Shown::default()
    };
    let done = match form.action.as_str() {
        "reset" => {
            tenant_api::delete_mapping(&state.pool, tenant, form.integration_id, data_type, &target)
                .await
                .map(|found| {
                    found
                        .map(|_| ())
                        .ok_or(MappingError::NotFound(form.integration_id))
                })
                .unwrap_or_else(|e| Err(MappingError::Other(e)))
        }
        action => {
            let enabled = action != "disable";
            let mapping = if enabled {
                match serde_json::from_str::<serde_json::Value>(&form.mapping) {
                    Ok(m) => m,
                    Err(e) => {
                        let shown = refuse(format!("The mapping is not JSON: {e}"));
                        return page(
                            &state,
                            &console,
                            Some(form.integration_id),
                            data_type,
                            None,
                            shown,
                            StatusCode::UNPROCESSABLE_ENTITY,
                        )
                        .await;
                    }
                }
            } else {
                serde_json::Value::Null
            };
            admin::set_mapping(
                &state.pool,
                Some(tenant),
                form.integration_id,
                data_type,
                &target,
                &mapping,
                enabled,
            )
            .await
        }
    };
    match done {
        Ok(()) => redirect_with_notice(
            &format!(
                "/mappings?integration_id={}&data_type={}",
                form.integration_id,
                data_type.as_str()
            ),
            &format!("Saved {target}."),
        ),
        Err(MappingError::NotFound(_)) => not_found("integration"),
        Err(MappingError::Other(e)) => internal(e),
        Err(refused) => {
            let shown = refuse(refused.to_string());
            page(
                &state,
                &console,
                Some(form.integration_id),
                data_type,
                None,
                shown,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct PreviewForm {
    csrf: String,
    integration_id: Uuid,
    data_type: String,
    #[serde(default)]
    records: String,
    /// `last_batch`: the integration's last stored batch instead of the pasted records.
    #[serde(default)]
    source: String,
}

/// Runs the effective mapping over the pasted records (a JSON array or one object) or the
/// first records of the last stored batch. Stores nothing, so read-only sessions may too. htmx
/// asks for the result alone (as the records are typed); without it the whole page comes back.
pub async fn preview(
    console: Console,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<PreviewForm>,
) -> Response {
    or_page!(console.check_csrf(&form.csrf));
    let Some(tenant) = console.tenant() else {
        return Redirect::to("/").into_response();
    };
    let data_type = data_type_of(Some(&form.data_type));
    let result = run_preview(&state, tenant, &form, data_type).await;
    let result = or_page!(result);
    if headers.contains_key("hx-request") && !headers.contains_key("hx-boosted") {
        return render(&PreviewFragment { preview: result });
    }
    let shown = Shown {
        preview: Some(result),
        records: form.records.clone(),
        ..Shown::default()
    };
    page(
        &state,
        &console,
        Some(form.integration_id),
        data_type,
        None,
        shown,
        StatusCode::OK,
    )
    .await
}

async fn run_preview(
    state: &AppState,
    tenant: Uuid,
    form: &PreviewForm,
    data_type: DataType,
) -> Result<PreviewResult, Response> {
    let failed = |source, error: String| PreviewResult {
        error: Some(error),
        rows: Vec::new(),
        omitted: 0,
        source,
    };
    let (source, records) = if form.source == "last_batch" {
        match tenant_api::last_batch_sample(
            &state.pool,
            tenant,
            form.integration_id,
            data_type,
            SAMPLE,
        )
        .await
        {
            Ok(Some(records)) if records.is_empty() => {
                return Ok(failed(
                    "the last stored batch",
                    format!(
                        "No batch of {data_type} is stored for this integration (or its records were already deleted)."
                    ),
                ));
            }
            Ok(Some(records)) => ("the last stored batch", records),
            Ok(None) => return Err(not_found("integration")),
            Err(e) => return Err(internal(e)),
        }
    } else {
        let text = form.records.trim();
        if text.is_empty() {
            return Ok(failed(
                "the records pasted",
                "Paste one record (a JSON object) or several (a JSON array).".into(),
            ));
        }
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Array(records)) => ("the records pasted", records),
            Ok(one @ serde_json::Value::Object(_)) => ("the records pasted", vec![one]),
            Ok(_) => {
                return Ok(failed(
                    "the records pasted",
                    "A record is a JSON object.".into(),
                ));
            }
            Err(e) => {
                return Ok(failed(
                    "the records pasted",
                    format!("That is not JSON yet: {e}"),
                ));
            }
        }
    };
    match admin::preview_mappings(
        &state.pool,
        &state.previews,
        Some(tenant),
        form.integration_id,
        data_type,
        records,
    )
    .await
    {
        Ok(preview) => Ok(PreviewResult {
            error: None,
            rows: preview
                .results
                .iter()
                .map(|r| {
                    let errors = r["errors"]
                        .as_array()
                        .map(|errors| errors.iter().map(problem).collect())
                        .unwrap_or_default();
                    // A failed record's errors say it all; a too-large one, its size.
                    let shown = match (r.get("row"), r.get("bytes")) {
                        (Some(row), _) => serde_json::to_string_pretty(row).unwrap_or_default(),
                        (None, Some(bytes)) => format!("{bytes} bytes of JSON"),
                        (None, None) => String::new(),
                    };
                    (
                        r["outcome"].as_str().unwrap_or("").to_string(),
                        shown,
                        errors,
                    )
                })
                .collect(),
            omitted: preview.omitted,
            source,
        }),
        Err(PreviewError::NotFound(_)) => Err(not_found("integration")),
        Err(PreviewError::Other(e)) => Err(internal(e)),
        Err(refused) => Ok(failed(source, refused.to_string())),
    }
}

/// One problem of a previewed record, as its field, message and code.
fn problem(e: &serde_json::Value) -> String {
    let text = |k: &str| e[k].as_str().unwrap_or("");
    match (text("field"), text("message"), text("code")) {
        ("", "", "") => e.to_string(),
        ("", message, code) => format!("{message} ({code})"),
        (field, message, code) => format!("{field}: {message} ({code})"),
    }
}
