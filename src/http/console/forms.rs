//! The integration dialog (add and edit, with the schedule read back in words and its next
//! runs) and an integration's API keys: the same settings functions as `PATCH
//! /api/v1/integrations/{id}` (validation, `If-Match`), the same key functions as its keys
//! routes.

// Refusals here are whole pages (a `Response`), built once per request, not on a hot path.
#![allow(clippy::result_large_err)]

use askama::Template;
use axum::{
    Form,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
};
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use super::pages::{CsrfForm, Layout, framed, internal, not_found, redirect_with_notice, render};
use crate::{
    admin::{
        settings::{self, Edit, SettingsChange, SettingsError},
        tenant_api,
    },
    domain::{SourceType, SyncMode, schedule::Schedule},
    http::AppState,
    n8n::Credentials,
};

/// The integration dialog as typed, so a refused one comes back filled in (secrets aside).
#[derive(Deserialize, Default, Clone)]
pub struct IntegrationForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    source_type: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    webhook_url: String,
    #[serde(default)]
    schedule: String,
    #[serde(default)]
    timezone: String,
    #[serde(default)]
    sync_mode: String,
    #[serde(default)]
    auth_header: String,
    #[serde(default)]
    auth_value: String,
    /// Edit only: remove the stored credentials.
    #[serde(default)]
    clear_credentials: Option<String>,
    /// Edit only: the version the form was read at (what `If-Match` carries in the API).
    #[serde(default)]
    version: Option<i64>,
}

/// The schedule field read back: in words, its next three runs, or why it is refused.
pub struct ScheduleReading {
    pub empty: bool,
    pub words: Option<String>,
    pub next: Vec<String>,
    pub error: Option<String>,
}

impl ScheduleReading {
    pub fn of(expression: &str, timezone: &str) -> Self {
        let mut reading = Self {
            empty: expression.trim().is_empty(),
            words: None,
            next: Vec::new(),
            error: None,
        };
        if reading.empty {
            return reading;
        }
        match Schedule::parse(expression, timezone) {
            Ok(schedule) => {
                let tz = schedule.timezone();
                reading.words = schedule.describe().map(|w| format!("{w} ({tz})"));
                reading.next = schedule
                    .next_ticks(Utc::now(), 3)
                    .into_iter()
                    .map(|t| {
                        let local = t.with_timezone(&tz).format("%a %Y-%m-%d %H:%M %Z");
                        format!("{local} ({} UTC)", t.format("%H:%M"))
                    })
                    .collect();
            }
            Err(e) => reading.error = Some(e.to_string()),
        }
        reading
    }
}

#[derive(Template)]
#[template(path = "schedule_reading.html")]
struct ScheduleFragment {
    reading: ScheduleReading,
}

#[derive(Deserialize, Default)]
pub struct ScheduleQuery {
    #[serde(default)]
    schedule: String,
    #[serde(default)]
    timezone: String,
}

/// The schedule read back as it is typed (htmx asks on every change of the field); for signed-in
/// browsers only, as every console route but sign-in and the assets.
pub async fn schedule_reading(
    _console: super::Console,
    Query(query): Query<ScheduleQuery>,
) -> Response {
    render(&ScheduleFragment {
        reading: ScheduleReading::of(&query.schedule, &query.timezone),
    })
}

#[derive(Template)]
#[template(path = "integration_form.html")]
struct FormPage {
    layout: Layout,
    /// `None`: adding one.
    integration_id: Option<Uuid>,
    sources: Vec<&'static str>,
    modes: Vec<&'static str>,
    timezones: Vec<&'static str>,
    form: IntegrationForm,
    /// Edit only: the kind of the stored credentials (`none`, `header`, `basic`).
    auth: String,
    reading: ScheduleReading,
    error: Option<String>,
}

impl FormPage {
    fn new(
        layout: Layout,
        integration_id: Option<Uuid>,
        form: IntegrationForm,
        auth: String,
        error: Option<String>,
    ) -> Self {
        let mut form = form;
        form.auth_value.clear();
        Self {
            layout,
            integration_id,
            sources: SourceType::ALL.iter().map(|s| s.as_str()).collect(),
            modes: SyncMode::ALL.iter().map(|s| s.as_str()).collect(),
            timezones: chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect(),
            reading: ScheduleReading::of(&form.schedule, &form.timezone),
            form,
            auth,
            error,
        }
    }

    fn is_source(&self, s: &str) -> bool {
        self.form.source_type == s
    }

    fn is_mode(&self, m: &str) -> bool {
        self.form.sync_mode == m
    }

    fn credentials_set(&self) -> bool {
        self.auth != "none"
    }
}

fn refused_form(page: FormPage) -> Response {
    match page.render() {
        Ok(html) => (StatusCode::UNPROCESSABLE_ENTITY, Html(html)).into_response(),
        Err(e) => internal(e.into()),
    }
}

fn text(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The credentials the form sets: `Ok(None)` leaves them as they are.
fn credentials(form: &IntegrationForm) -> Result<Option<Credentials>, String> {
    if form.clear_credentials.is_some() {
        return Ok(Some(Credentials::None));
    }
    match (text(&form.auth_header), text(&form.auth_value)) {
        (Some(name), Some(value)) => Ok(Some(Credentials::Header { name, value })),
        (None, None) => Ok(None),
        _ => Err("n8n credentials need both the header name and its value".into()),
    }
}

pub async fn new_integration(console: super::Console, State(state): State<AppState>) -> Response {
    let (_, layout) = or_page!(framed(&state, &console, "integrations").await);
    let form = IntegrationForm {
        timezone: "UTC".into(),
        sync_mode: SyncMode::Incremental.as_str().into(),
        ..IntegrationForm::default()
    };
    render(&FormPage::new(layout, None, form, "none".into(), None))
}

#[derive(Template)]
#[template(path = "integration_added.html")]
struct IntegrationAdded {
    layout: Layout,
    name: String,
    integration_id: Uuid,
    key: String,
    callback_url: String,
}

pub async fn add_integration(
    console: super::Console,
    State(state): State<AppState>,
    Form(form): Form<IntegrationForm>,
) -> Response {
    or_page!(console.check(&form.csrf));
    let (tenant, layout) = or_page!(framed(&state, &console, "integrations").await);
    let refuse = |layout, form: &IntegrationForm, error: String| {
        refused_form(FormPage::new(
            layout,
            None,
            form.clone(),
            "none".into(),
            Some(error),
        ))
    };
    let source_type = match form.source_type.parse::<SourceType>() {
        Ok(s) => s,
        Err(e) => return refuse(layout, &form, e.to_string()),
    };
    let sync_mode = match form.sync_mode.parse::<SyncMode>() {
        Ok(m) => m,
        Err(e) => return refuse(layout, &form, e.to_string()),
    };
    let credentials = match credentials(&form) {
        Ok(c) => c.filter(|c| !matches!(c, Credentials::None)),
        Err(e) => return refuse(layout, &form, e),
    };
    let change = SettingsChange {
        webhook_url: text(&form.webhook_url).map(Some),
        schedule: text(&form.schedule).map(Some),
        timezone: text(&form.timezone),
        sync_mode: Some(sync_mode),
        credentials,
        ..SettingsChange::default()
    };
    let sync = &state.sync;
    let description = text(&form.description);
    let created = settings::create(
        &state.pool,
        &sync.policy,
        sync.sealer.as_ref(),
        tenant,
        source_type,
        &form.name,
        description.as_deref(),
        &change,
    )
    .await;
    let integration_id = match created {
        Ok(id) => id,
        Err(SettingsError::Other(e)) => return internal(e),
        Err(e) => return refuse(layout, &form, e.to_string()),
    };
    match tenant_api::create_key(&state.pool, tenant, integration_id, Some("n8n")).await {
        Ok(Some(created)) => render(&IntegrationAdded {
            layout,
            name: form.name.trim().to_string(),
            integration_id,
            key: created.key.plaintext,
            callback_url: sync.callback_url.clone(),
        }),
        Ok(None) => not_found("integration"),
        Err(e) => internal(e),
    }
}

/// The integration's current settings, when it is the tenant's.
async fn current(
    state: &AppState,
    tenant: Uuid,
    integration_id: Uuid,
) -> Result<(tenant_api::IntegrationView, settings::SyncSettings), Response> {
    match tenant_api::integration(&state.pool, tenant, integration_id).await {
        Ok(Some(view)) => match settings::get(&state.pool, integration_id).await {
            Ok(s) => Ok((view, s)),
            Err(SettingsError::NotFound(_)) => Err(not_found("integration")),
            Err(e) => Err(internal(anyhow::anyhow!(e))),
        },
        Ok(None) => Err(not_found("integration")),
        Err(e) => Err(internal(e)),
    }
}

pub async fn edit_form(
    console: super::Console,
    State(state): State<AppState>,
    Path(integration_id): Path<Uuid>,
) -> Response {
    let (tenant, layout) = or_page!(framed(&state, &console, "integrations").await);
    let (view, current) = or_page!(current(&state, tenant, integration_id).await);
    let form = IntegrationForm {
        source_type: view.summary.source_type.as_str().into(),
        name: view.summary.name,
        description: view.summary.description.unwrap_or_default(),
        webhook_url: current.webhook_url.unwrap_or_default(),
        schedule: current.schedule.unwrap_or_default(),
        timezone: current.timezone,
        sync_mode: current.sync_mode.as_str().into(),
        version: Some(current.version),
        ..IntegrationForm::default()
    };
    render(&FormPage::new(
        layout,
        Some(integration_id),
        form,
        current.auth,
        None,
    ))
}

/// Applies the dialog's changes, only at the version the dialog was read at: a change someone
/// made meanwhile is never overwritten unseen. What the form leaves as it was is not sent, so
/// an unchanged webhook URL is not resolved again.
pub async fn edit_integration(
    console: super::Console,
    State(state): State<AppState>,
    Path(integration_id): Path<Uuid>,
    Form(form): Form<IntegrationForm>,
) -> Response {
    or_page!(console.check(&form.csrf));
    let (tenant, layout) = or_page!(framed(&state, &console, "integrations").await);
    let (view, current) = or_page!(current(&state, tenant, integration_id).await);
    let mut shown = form.clone();
    shown.source_type = view.summary.source_type.as_str().into();
    let auth = current.auth.clone();
    let refuse = |layout, error: String| {
        refused_form(FormPage::new(
            layout,
            Some(integration_id),
            shown.clone(),
            auth.clone(),
            Some(error),
        ))
    };
    let sync_mode = match form.sync_mode.parse::<SyncMode>() {
        Ok(m) => m,
        Err(e) => return refuse(layout, e.to_string()),
    };
    let credentials = match credentials(&form) {
        Ok(c) => c,
        Err(e) => return refuse(layout, e),
    };
    let changed = |new: Option<String>, old: Option<String>| (new != old).then_some(new);
    let change = SettingsChange {
        webhook_url: changed(text(&form.webhook_url), current.webhook_url),
        schedule: changed(text(&form.schedule), current.schedule),
        timezone: Some(text(&form.timezone).unwrap_or_else(|| "UTC".into()))
            .filter(|tz| *tz != current.timezone),
        sync_mode: (sync_mode != current.sync_mode).then_some(sync_mode),
        credentials,
        ..SettingsChange::default()
    };
    let name = form.name.trim();
    let description = text(&form.description);
    let versions: Vec<i64> = form.version.into_iter().collect();
    let edit = Edit {
        name: (name != view.summary.name).then_some(name),
        description: (description != view.summary.description).then_some(description.as_deref()),
        settings: &change,
        if_version: form.version.map(|_| versions.as_slice()),
    };
    let sync = &state.sync;
    let edited = settings::edit(
        &state.pool,
        &sync.policy,
        sync.sealer.as_ref(),
        Some(tenant),
        integration_id,
        edit,
    )
    .await;
    match edited {
        Ok(_) => redirect_with_notice("/integrations", &format!("Saved {name}.")),
        Err(SettingsError::VersionMismatch { .. }) => refuse(
            layout,
            "Someone changed this integration after you opened this form, so nothing was saved. \
             Open it again to see their change, then re-apply yours."
                .into(),
        ),
        Err(SettingsError::NotFound(_)) => not_found("integration"),
        Err(SettingsError::Other(e)) => internal(e),
        Err(e) => refuse(layout, e.to_string()),
    }
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    layout: Layout,
    integration: tenant_api::IntegrationView,
    keys: Vec<tenant_api::KeyInfo>,
    created: Option<String>,
    callback_url: String,
}

async fn keys_page(
    state: &AppState,
    console: &super::Console,
    integration_id: Uuid,
    created: Option<String>,
) -> Response {
    let (tenant, layout) = or_page!(framed(state, console, "integrations").await);
    let found = tokio::try_join!(
        tenant_api::integration(&state.pool, tenant, integration_id),
        tenant_api::keys(&state.pool, tenant, integration_id)
    );
    match found {
        Ok((Some(integration), Some(keys))) => render(&KeysPage {
            layout,
            integration,
            keys,
            created,
            callback_url: state.sync.callback_url.clone(),
        }),
        Ok(_) => not_found("integration"),
        Err(e) => internal(e),
    }
}

/// An integration's API keys (what n8n sends its batches with): newest first, revoked ones too.
pub async fn keys(
    console: super::Console,
    State(state): State<AppState>,
    Path(integration_id): Path<Uuid>,
) -> Response {
    keys_page(&state, &console, integration_id, None).await
}

#[derive(Deserialize)]
pub struct KeyForm {
    csrf: String,
    #[serde(default)]
    name: String,
}

pub async fn create_key(
    console: super::Console,
    State(state): State<AppState>,
    Path(integration_id): Path<Uuid>,
    Form(form): Form<KeyForm>,
) -> Response {
    let tenant = or_page!(console.acting(&form.csrf));
    match tenant_api::create_key(&state.pool, tenant, integration_id, Some(&form.name)).await {
        Ok(Some(created)) => {
            keys_page(
                &state,
                &console,
                integration_id,
                Some(created.key.plaintext),
            )
            .await
        }
        Ok(None) => not_found("integration"),
        Err(e) => internal(e),
    }
}

pub async fn revoke_key(
    console: super::Console,
    State(state): State<AppState>,
    Path((integration_id, key_id)): Path<(Uuid, Uuid)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let tenant = or_page!(console.acting(&form.csrf));
    match tenant_api::revoke_key(&state.pool, tenant, integration_id, key_id).await {
        Ok(Some(_)) => {
            Redirect::to(&format!("/integrations/{integration_id}/keys")).into_response()
        }
        Ok(None) => not_found("key"),
        Err(e) => internal(e),
    }
}
