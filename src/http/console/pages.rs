//! The console's pages and the forms they post: each reads and acts through the same use cases
//! as the platform API, in the session's tenant.

// Refusals here are whole pages (a `Response`), built once per request, not on a hot path.
#![allow(clippy::result_large_err)]

use askama::Template;
use axum::{
    Form,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{Console, chart, clear_cookie, refusal, session_cookie};
use crate::{
    admin::{
        self,
        console::SignInRefusal,
        tenant_api::{self, IntegrationView, Stats, SyncDetail},
    },
    db::sync_logs::{SyncFilter, SyncLog},
    domain::{IntegrationStatus, SyncMode, SyncStatus, SyncTrigger},
    http::AppState,
};

/// What every page's frame shows: where you are, who you are, the tenant switcher.
pub struct Layout {
    pub page: &'static str,
    pub csrf: String,
    pub install: bool,
    pub read_only: bool,
    pub tenant_name: String,
    pub tenant_id: Option<Uuid>,
    pub tenants: Vec<(Uuid, String)>,
}

impl Layout {
    /// Whether `id` is the tenant the session acts for.
    pub fn is_current(&self, id: &Uuid) -> bool {
        self.tenant_id == Some(*id)
    }
}

pub(super) async fn layout(
    state: &AppState,
    console: &Console,
    page: &'static str,
) -> Result<Layout, Response> {
    let tenants = if console.session.install {
        admin::list_tenants(&state.pool)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|t| (t.id, t.name))
            .collect()
    } else {
        Vec::new()
    };
    let tenant_name = match console.tenant() {
        Some(id) => admin::find_tenant(&state.pool, &id.to_string())
            .await
            .map(|t| t.name)
            .unwrap_or_default(),
        None => String::new(),
    };
    Ok(Layout {
        page,
        csrf: console.session.csrf_token.clone(),
        install: console.session.install,
        read_only: console.session.read_only,
        tenant_name,
        tenant_id: console.tenant(),
        tenants,
    })
}

pub(super) fn internal(e: anyhow::Error) -> Response {
    crate::http::error::ApiError::from(e).into_response()
}

pub(super) fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => internal(e.into()),
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: String,
    message: &'a str,
}

/// A page with one message (refusals, not found).
pub fn message_page(status: StatusCode, message: &str) -> String {
    MessagePage {
        title: status.canonical_reason().unwrap_or("Refused").to_string(),
        message,
    }
    .render()
    .unwrap_or_else(|_| message.to_string())
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignIn {
    error: Option<String>,
}

pub async fn sign_in_form() -> Response {
    render(&SignIn { error: None })
}

#[derive(Deserialize)]
pub struct SignInForm {
    token: String,
}

/// Whether a request came from another site's page: the browser says so (`Sec-Fetch-Site`), or
/// its `Origin` names another host than the one it was sent to (through a proxy, the one the
/// proxy says it forwarded for).
fn from_another_site(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    let host = text("x-forwarded-host").or_else(|| text("host"));
    match (text("origin"), host) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .map(|(_, rest)| rest)
            .is_none_or(|authority| !authority.eq_ignore_ascii_case(host)),
        _ => false,
    }
}

/// Signs a browser in. A sign-in posted from another site's page is refused: it would sign the
/// visitor into the other site's choice of tenant (login CSRF), which no session token can stop
/// because there is no session yet.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if from_another_site(&headers) {
        return refusal(
            StatusCode::FORBIDDEN,
            "Sign in from the console's own page: this form came from another site.",
        );
    }
    match admin::console::sign_in(&state.pool, state.admin_token.as_ref(), &form.token).await {
        Ok(Ok(signed_in)) => {
            let https = headers
                .get("x-forwarded-proto")
                .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
            (
                [(header::SET_COOKIE, session_cookie(&signed_in.secret, https))],
                Redirect::to("/"),
            )
                .into_response()
        }
        Ok(Err(refused)) => {
            let error = match refused {
                SignInRefusal::Unknown => {
                    "That is neither the admin token nor a tenant API token (sbt_…)."
                }
                SignInRefusal::Revoked => "That token was revoked.",
            };
            (
                StatusCode::UNAUTHORIZED,
                Html(
                    SignIn {
                        error: Some(error.into()),
                    }
                    .render()
                    .unwrap_or_default(),
                ),
            )
                .into_response()
        }
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    pub(super) csrf: String,
}

pub async fn sign_out(
    console: Console,
    State(state): State<AppState>,
    Form(form): Form<CsrfForm>,
) -> Response {
    or_page!(console.check_csrf(&form.csrf));
    if let Err(e) = admin::console::sign_out(&state.pool, &console.session).await {
        return internal(e);
    }
    (
        [(header::SET_COOKIE, clear_cookie())],
        Redirect::to("/sign-in"),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct TenantForm {
    csrf: String,
    tenant_id: Uuid,
}

pub async fn choose_tenant(
    console: Console,
    State(state): State<AppState>,
    Form(form): Form<TenantForm>,
) -> Response {
    or_page!(console.check_csrf(&form.csrf));
    match admin::console::choose_tenant(&state.pool, &console.session, form.tenant_id).await {
        Ok(true) => Redirect::to("/").into_response(),
        Ok(false) => refusal(StatusCode::NOT_FOUND, "There is no such tenant."),
        Err(e) => internal(e),
    }
}

/// A page's tenant and frame, or the page asking an operator to choose a tenant first.
pub(super) async fn framed(
    state: &AppState,
    console: &Console,
    page: &'static str,
) -> Result<(Uuid, Layout), Response> {
    let tenant = tenant_or_choose(state, console).await?;
    Ok((tenant, layout(state, console, page).await?))
}

/// The tenant the page acts for, or the page asking an operator to choose one.
async fn tenant_or_choose(state: &AppState, console: &Console) -> Result<Uuid, Response> {
    match console.tenant() {
        Some(t) => Ok(t),
        None => {
            let layout = layout(state, console, "dashboard").await?;
            Err(render(&ChooseTenant { layout }))
        }
    }
}

#[derive(Template)]
#[template(path = "choose_tenant.html")]
struct ChooseTenant {
    layout: Layout,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    layout: Layout,
    stats: Stats,
    success_rate: String,
    received: chart::Chart,
    syncs: chart::Chart,
    attention: Vec<(IntegrationView, Vec<String>)>,
    width: f64,
    height: f64,
}

pub async fn dashboard(console: Console, State(state): State<AppState>) -> Response {
    let (tenant, layout) = or_page!(framed(&state, &console, "dashboard").await);
    let (stats, integrations) = match tokio::try_join!(
        tenant_api::stats(&state.pool, tenant, 30),
        tenant_api::integrations(&state.pool, tenant)
    ) {
        Ok(both) => both,
        Err(e) => return internal(e),
    };
    let mut attention = Vec::new();
    for i in integrations {
        match attention_of(&state, tenant, &i).await {
            Ok(why) if why.is_empty() => {}
            Ok(why) => attention.push((i, why)),
            Err(e) => return internal(e),
        }
    }
    let success_rate = stats
        .success_rate_last_7d
        .map_or("–".to_string(), |r| format!("{:.0} %", r * 100.0));
    render(&Dashboard {
        layout,
        received: chart::received(&stats.days),
        syncs: chart::syncs(&stats.days),
        stats,
        success_rate,
        attention,
        width: chart::WIDTH,
        height: chart::HEIGHT,
    })
}

/// Why an integration needs someone to look: failing, paused, its last sync failed or partial,
/// a sync open longer than its schedule's interval (an hour when it has none), dead jobs.
async fn attention_of(
    state: &AppState,
    tenant: Uuid,
    i: &IntegrationView,
) -> anyhow::Result<Vec<String>> {
    let summary = &i.summary;
    let mut why = Vec::new();
    if summary.status == IntegrationStatus::Error {
        why.push("failing".to_string());
    }
    if summary.status == IntegrationStatus::Paused {
        why.push("paused".to_string());
    }
    match summary.last_sync_status {
        Some(SyncStatus::Failed) => why.push("last sync failed".into()),
        Some(SyncStatus::Partial) => why.push("last sync partial".into()),
        _ => {}
    }
    let interval = summary
        .schedule
        .as_deref()
        .and_then(|s| crate::domain::schedule::Schedule::parse(s, &summary.timezone).ok())
        .and_then(|s| match s.next_ticks(chrono::Utc::now(), 2).as_slice() {
            [a, b] => Some(*b - *a),
            _ => None,
        })
        .unwrap_or(chrono::Duration::hours(1));
    if let Some(started) = summary
        .open_sync_created_at
        .filter(|at| chrono::Utc::now() - *at > interval)
    {
        why.push(format!(
            "sync open for {}, longer than its schedule's interval",
            age(started)
        ));
    }
    let dead = jobs::admin::count(
        &state.pool,
        &state.queue,
        &jobs::JobFilter {
            states: vec![jobs::JobState::Failed],
            tag: Some(crate::sync::job_tag(tenant, summary.id)),
            ..jobs::JobFilter::default()
        },
    )
    .await?;
    if dead > 0 {
        why.push(format!("{dead} dead jobs"));
    }
    Ok(why)
}

#[derive(Template)]
#[template(path = "integrations.html")]
struct Integrations {
    layout: Layout,
    integrations: Vec<IntegrationView>,
    notice: Option<String>,
}

impl Integrations {
    fn age(&self, at: &chrono::DateTime<chrono::Utc>) -> String {
        age(*at)
    }
}

/// How long ago `at` was, in the largest unit that fits ("40 s", "3 min", "5 h", "2 d").
pub(super) fn age(at: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (chrono::Utc::now() - at).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86400),
    }
}

#[derive(Deserialize, Default)]
pub struct NoticeQuery {
    pub(super) notice: Option<String>,
}

pub async fn integrations(
    console: Console,
    State(state): State<AppState>,
    Query(query): Query<NoticeQuery>,
) -> Response {
    let (tenant, layout) = or_page!(framed(&state, &console, "integrations").await);
    match tenant_api::integrations(&state.pool, tenant).await {
        Ok(integrations) => render(&Integrations {
            layout,
            integrations,
            notice: query.notice,
        }),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
pub struct SyncNowForm {
    csrf: String,
    mode: Option<String>,
}

pub async fn sync_now(
    console: Console,
    State(state): State<AppState>,
    Path(integration_id): Path<Uuid>,
    Form(form): Form<SyncNowForm>,
) -> Response {
    let tenant = or_page!(console.acting(&form.csrf));
    let sync_mode = match form.mode.as_deref() {
        Some("full") => Some(SyncMode::Full),
        Some("incremental") => Some(SyncMode::Incremental),
        _ => None,
    };
    let request = crate::sync::SyncRequest {
        trigger: SyncTrigger::Manual,
        sync_mode,
        data_types: None,
        scheduled_for: None,
        retry_of: None,
    };
    match crate::sync::request_sync(
        &state.pool,
        &state.queue,
        Some(tenant),
        integration_id,
        &request,
        false,
        state.sync.trigger_max_attempts,
    )
    .await
    {
        Ok((sync_log_id, _)) => Redirect::to(&format!("/syncs/{sync_log_id}")).into_response(),
        Err(crate::sync::SyncRequestError::NotFound(_)) => not_found("integration"),
        Err(crate::sync::SyncRequestError::Other(e)) => internal(e),
        Err(refused) => redirect_with_notice("/integrations", &refused.to_string()),
    }
}

pub(super) fn not_found(what: &str) -> Response {
    refusal(
        StatusCode::NOT_FOUND,
        &format!("There is no such {what} in this tenant."),
    )
}

async fn set_status(
    console: Console,
    state: AppState,
    integration_id: Uuid,
    csrf: &str,
    status: IntegrationStatus,
) -> Response {
    let tenant = or_page!(console.acting(csrf));
    match tenant_api::set_status(&state.pool, tenant, integration_id, status).await {
        Ok(true) => Redirect::to("/integrations").into_response(),
        Ok(false) => not_found("integration"),
        Err(e) => internal(e),
    }
}

pub async fn pause(
    console: Console,
    State(state): State<AppState>,
    Path(integration_id): Path<Uuid>,
    Form(form): Form<CsrfForm>,
) -> Response {
    set_status(
        console,
        state,
        integration_id,
        &form.csrf,
        IntegrationStatus::Paused,
    )
    .await
}

pub async fn resume(
    console: Console,
    State(state): State<AppState>,
    Path(integration_id): Path<Uuid>,
    Form(form): Form<CsrfForm>,
) -> Response {
    set_status(
        console,
        state,
        integration_id,
        &form.csrf,
        IntegrationStatus::Active,
    )
    .await
}

#[derive(Template)]
#[template(path = "syncs.html")]
struct Syncs {
    layout: Layout,
    syncs: Vec<SyncLog>,
    integrations: Vec<(Uuid, String)>,
    integration_id: Option<Uuid>,
    status: String,
    since: String,
    /// The query of the next (older) page, when there is one.
    next: Option<String>,
}

impl Syncs {
    fn is_since(&self, since: &str) -> bool {
        self.since == since
    }

    fn is_integration(&self, id: &Uuid) -> bool {
        self.integration_id == Some(*id)
    }

    fn is_status(&self, status: &str) -> bool {
        self.status == status
    }
}

#[derive(Deserialize, Default)]
pub struct SyncsQuery {
    integration_id: Option<String>,
    status: Option<String>,
    /// `1h`, `24h`, `7d` or `30d`: created within that much of now.
    since: Option<String>,
    cursor: Option<String>,
}

/// How far back a `since` choice of the filters reaches.
fn since_of(choice: &str) -> Option<chrono::Duration> {
    match choice {
        "1h" => Some(chrono::Duration::hours(1)),
        "24h" => Some(chrono::Duration::hours(24)),
        "7d" => Some(chrono::Duration::days(7)),
        "30d" => Some(chrono::Duration::days(30)),
        _ => None,
    }
}

/// The position a "next page" link carries; a link not made here is refused, not read as the
/// first page.
fn page_cursor(
    cursor: Option<&str>,
) -> Result<Option<(chrono::DateTime<chrono::Utc>, Uuid)>, Response> {
    cursor
        .map(crate::http::api::parse_time_cursor)
        .transpose()
        .map_err(|_| {
            refusal(
                StatusCode::BAD_REQUEST,
                "That page link is not one this console made: start again from the first page.",
            )
        })
}

/// A redirect to `path` whose page shows `notice` (its `?notice=`).
pub(super) fn redirect_with_notice(path: &str, notice: &str) -> Response {
    let join = if path.contains('?') { '&' } else { '?' };
    let query = query_string(&[("notice", notice)]);
    Redirect::to(&format!("{path}{join}{query}")).into_response()
}

/// A query string of `pairs`, the empty ones left out.
fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        out.append_pair(k, v);
    }
    out.finish()
}

pub async fn syncs(
    console: Console,
    State(state): State<AppState>,
    Query(query): Query<SyncsQuery>,
) -> Response {
    let (tenant, layout) = or_page!(framed(&state, &console, "syncs").await);
    let integration_id = query
        .integration_id
        .as_deref()
        .and_then(|i| i.parse::<Uuid>().ok());
    let status = query.status.unwrap_or_default();
    let statuses = match status.as_str() {
        "" => None,
        "open" => Some(vec![SyncStatus::Pending, SyncStatus::Running]),
        other => other.parse::<SyncStatus>().ok().map(|s| vec![s]),
    };
    let since = query.since.unwrap_or_default();
    let filter = SyncFilter {
        integration_id,
        statuses,
        since: since_of(&since).map(|d| chrono::Utc::now() - d),
        ..SyncFilter::default()
    };
    let after = or_page!(page_cursor(query.cursor.as_deref()));
    let (listed, integrations) = match tokio::try_join!(
        tenant_api::sync_logs(&state.pool, tenant, &filter, after, 100),
        tenant_api::integrations(&state.pool, tenant)
    ) {
        Ok(both) => both,
        Err(e) => return internal(e),
    };
    let (syncs, more) = listed;
    let next = more.then(|| syncs.last()).flatten().map(|last| {
        let integration = integration_id.map(|i| i.to_string()).unwrap_or_default();
        query_string(&[
            ("integration_id", &integration),
            ("status", &status),
            ("since", &since),
            (
                "cursor",
                &crate::http::api::time_cursor(last.created_at, last.id),
            ),
        ])
    });
    render(&Syncs {
        layout,
        syncs,
        integrations: integrations
            .into_iter()
            .map(|i| (i.summary.id, i.summary.name))
            .collect(),
        integration_id,
        status,
        since,
        next,
    })
}

#[derive(Template)]
#[template(path = "sync.html")]
struct SyncPage {
    layout: Layout,
    detail: SyncDetail,
    integration_name: String,
    notice: Option<String>,
}

#[derive(Template)]
#[template(path = "sync_errors.html")]
struct SyncErrorsPage {
    layout: Layout,
    sync_id: Uuid,
    errors: Vec<tenant_api::SyncError>,
    next: Option<i64>,
}

#[derive(Deserialize, Default)]
pub struct ErrorsQuery {
    after: Option<i64>,
}

/// A sync's record errors past the first page its page shows, 100 at a time, oldest first.
pub async fn sync_errors(
    console: Console,
    State(state): State<AppState>,
    Path(sync_id): Path<Uuid>,
    Query(query): Query<ErrorsQuery>,
) -> Response {
    let (tenant, layout) = or_page!(framed(&state, &console, "syncs").await);
    match tenant_api::sync_errors(&state.pool, tenant, sync_id, query.after, 100).await {
        Ok(Some((errors, next))) => render(&SyncErrorsPage {
            layout,
            sync_id,
            errors,
            next,
        }),
        Ok(None) => not_found("sync"),
        Err(e) => internal(e),
    }
}

#[derive(Template)]
#[template(path = "sync_badge.html")]
struct SyncBadge {
    sync: SyncLog,
}

/// A sync's status on the integrations list, polled by htmx while it is open.
pub async fn sync_badge(
    console: Console,
    State(state): State<AppState>,
    Path(sync_id): Path<Uuid>,
) -> Response {
    let Some(tenant) = console.tenant() else {
        return Redirect::to("/").into_response();
    };
    match tenant_api::sync_log(&state.pool, tenant, sync_id).await {
        Ok(Some(sync)) => render(&SyncBadge { sync }),
        Ok(None) => not_found("sync"),
        Err(e) => internal(e),
    }
}

#[derive(Template)]
#[template(path = "sync_progress.html")]
struct SyncProgress {
    detail: SyncDetail,
}

async fn detail(state: &AppState, console: &Console, id: Uuid) -> Result<SyncDetail, Response> {
    let Some(tenant) = console.tenant() else {
        return Err(Redirect::to("/").into_response());
    };
    match tenant_api::sync_detail(&state.pool, tenant, id, 50).await {
        Ok(Some(detail)) => Ok(detail),
        Ok(None) => Err(not_found("sync")),
        Err(e) => Err(internal(e)),
    }
}

pub async fn sync(
    console: Console,
    State(state): State<AppState>,
    Path(sync_id): Path<Uuid>,
    Query(query): Query<NoticeQuery>,
) -> Response {
    let detail = or_page!(detail(&state, &console, sync_id).await);
    let layout = or_page!(layout(&state, &console, "syncs").await);
    let integration_name = match console.tenant() {
        Some(tenant) => tenant_api::integration(&state.pool, tenant, detail.sync.integration_id)
            .await
            .ok()
            .flatten()
            .map(|i| i.summary.name)
            .unwrap_or_default(),
        None => String::new(),
    };
    render(&SyncPage {
        layout,
        detail,
        integration_name,
        notice: query.notice,
    })
}

/// The live part of a sync's page, polled by htmx while the sync is open.
pub async fn sync_progress(
    console: Console,
    State(state): State<AppState>,
    Path(sync_id): Path<Uuid>,
) -> Response {
    match detail(&state, &console, sync_id).await {
        Ok(detail) => render(&SyncProgress { detail }),
        Err(page) => page,
    }
}

#[derive(Template)]
#[template(path = "confirm_delete.html")]
struct ConfirmDelete {
    layout: Layout,
    integration: IntegrationView,
    footprint: tenant_api::Footprint,
}

pub async fn confirm_delete(
    console: Console,
    State(state): State<AppState>,
    Path(integration_id): Path<Uuid>,
) -> Response {
    let (tenant, layout) = or_page!(framed(&state, &console, "integrations").await);
    let found = tokio::try_join!(
        tenant_api::integration(&state.pool, tenant, integration_id),
        tenant_api::integration_footprint(&state.pool, tenant, integration_id)
    );
    match found {
        Ok((Some(integration), Some(footprint))) => render(&ConfirmDelete {
            layout,
            integration,
            footprint,
        }),
        Ok(_) => not_found("integration"),
        Err(e) => internal(e),
    }
}

pub async fn delete_integration(
    console: Console,
    State(state): State<AppState>,
    Path(integration_id): Path<Uuid>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let tenant = or_page!(console.acting(&form.csrf));
    match tenant_api::delete_integration(&state.pool, &state.queue, tenant, integration_id).await {
        Ok(removed) => redirect_with_notice(
            "/integrations",
            &format!(
                "Deleted, with {} contacts, {} tickets, {} deals, {} syncs and {} API keys.",
                removed.contacts, removed.tickets, removed.deals, removed.syncs, removed.api_keys
            ),
        ),
        Err(tenant_api::IntegrationError::NotFound(_)) => not_found("integration"),
        Err(e) => internal(anyhow::anyhow!(e)),
    }
}

/// The jobs pages are the install's operator's: a tenant's session gets a refusal.
fn operator_only(console: &Console) -> Result<(), Response> {
    if console.session.install {
        Ok(())
    } else {
        Err(refusal(
            StatusCode::FORBIDDEN,
            "Jobs are the install's: sign in with the admin token to see them.",
        ))
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    layout: Layout,
    state: String,
    /// The filter as a query string (state, queue, kind).
    query: String,
    queue: String,
    kind: String,
    queue_names: Vec<String>,
    /// Each state: its name, how many jobs of the filter it holds, its tab's query.
    tabs: Vec<(&'static str, i64, String)>,
    queues: Vec<jobs::QueueStats>,
    jobs: Vec<jobs::JobSummary>,
    can_retry: bool,
    can_cancel: bool,
    done: Option<u64>,
}

impl JobsPage {
    fn is_queue(&self, q: &str) -> bool {
        self.queue == q
    }

    fn last_error(&self, job: &jobs::JobSummary) -> String {
        job.errors
            .as_array()
            .and_then(|e| e.last())
            .and_then(|e| e["error"].as_str())
            .unwrap_or("")
            .to_string()
    }
}

#[derive(Deserialize, Default)]
pub struct JobsQuery {
    state: Option<String>,
    /// Only this queue's jobs.
    #[serde(default)]
    queue: String,
    /// Only jobs of this kind.
    #[serde(default)]
    kind: String,
    /// How many jobs the action that led here changed.
    done: Option<u64>,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    layout: Layout,
    job: jobs::JobSummary,
    args: String,
    /// Each failed attempt: number, when, which worker, the error.
    attempts: Vec<(String, String, String, String)>,
    can_retry: bool,
    can_cancel: bool,
    done: Option<u64>,
}

/// One job: its arguments, its attempts and their errors, and retry / cancel.
pub async fn job_page(
    console: Console,
    State(state): State<AppState>,
    Path(job_id): Path<i64>,
    Query(query): Query<JobsQuery>,
) -> Response {
    or_page!(operator_only(&console));
    let layout = or_page!(layout(&state, &console, "jobs").await);
    let filter = jobs::JobFilter {
        ids: vec![job_id],
        ..jobs::JobFilter::default()
    };
    let job = match jobs::admin::list(&state.pool, &state.queue, &filter, 1, None).await {
        Ok(mut found) => match found.pop() {
            Some(job) => job,
            None => return not_found("job"),
        },
        Err(e) => return internal(e.into()),
    };
    let field = |e: &serde_json::Value, name: &str| match &e[name] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let attempts = job
        .errors
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    (
                        field(e, "attempt"),
                        field(e, "at"),
                        field(e, "worker"),
                        field(e, "error"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let job_state: jobs::JobState = job.state.parse().unwrap_or(jobs::JobState::Failed);
    render(&JobPage {
        layout,
        args: serde_json::to_string_pretty(&job.args).unwrap_or_default(),
        attempts,
        can_retry: jobs::BulkAction::Retry.touches(job_state),
        can_cancel: jobs::BulkAction::Cancel.touches(job_state),
        done: query.done,
        job,
    })
}

/// Retry or cancel one job from its page.
pub async fn job_action(
    console: Console,
    State(state): State<AppState>,
    Path((job_id, action)): Path<(i64, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    or_page!(operator_only(&console).and_then(|_| console.check(&form.csrf)));
    let Some(action) = bulk_action(&action) else {
        return not_found("action");
    };
    let filter = jobs::JobFilter {
        ids: vec![job_id],
        ..jobs::JobFilter::default()
    };
    match jobs::admin::apply(&state.pool, &state.queue, action, &filter, 1, |_| {}).await {
        Ok(changed) => Redirect::to(&format!("/jobs/{job_id}?done={changed}")).into_response(),
        Err(e) => internal(e.into()),
    }
}

/// Retry or cancel the jobs ticked on the list (`id` repeated, which `Form` does not read).
pub async fn selected_jobs(
    console: Console,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Response {
    let mut csrf = String::new();
    let mut action = String::new();
    let mut list_state = String::new();
    let mut ids = Vec::new();
    for (key, value) in url::form_urlencoded::parse(&body) {
        match &*key {
            "csrf" => csrf = value.into_owned(),
            "action" => action = value.into_owned(),
            "state" => list_state = value.into_owned(),
            "id" => match value.parse::<i64>() {
                Ok(id) => ids.push(id),
                Err(_) => return refusal(StatusCode::BAD_REQUEST, "A job id is a number."),
            },
            _ => {}
        }
    }
    or_page!(operator_only(&console).and_then(|_| console.check(&csrf)));
    let Some(action) = bulk_action(&action) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "Retry or cancel the selected jobs.",
        );
    };
    let chosen = job_state(Some(&list_state));
    if ids.is_empty() {
        return Redirect::to(&format!("/jobs?state={}&done=0", chosen.as_str())).into_response();
    }
    let filter = jobs::JobFilter {
        ids,
        ..jobs::JobFilter::default()
    };
    match jobs::admin::apply(&state.pool, &state.queue, action, &filter, 500, |_| {}).await {
        Ok(changed) => {
            Redirect::to(&format!("/jobs?state={}&done={changed}", chosen.as_str())).into_response()
        }
        Err(e) => internal(e.into()),
    }
}

/// The jobs a page, a confirmation or a bulk action is about: a state, and the queue and kind
/// when they are given.
fn job_filter(state: jobs::JobState, queue: &str, kind: &str) -> jobs::JobFilter {
    let given = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    jobs::JobFilter {
        states: vec![state],
        queue: given(queue),
        kind: given(kind),
        ..jobs::JobFilter::default()
    }
}

/// `state=…&queue=…&kind=…` of a filter, for the links that keep it.
fn filter_query(state: jobs::JobState, queue: &str, kind: &str) -> String {
    query_string(&[
        ("state", state.as_str()),
        ("queue", queue.trim()),
        ("kind", kind.trim()),
    ])
}

fn job_state(text: Option<&str>) -> jobs::JobState {
    text.and_then(|s| s.parse().ok())
        .unwrap_or(jobs::JobState::Failed)
}

pub async fn jobs_page(
    console: Console,
    State(state): State<AppState>,
    Query(query): Query<JobsQuery>,
) -> Response {
    or_page!(operator_only(&console));
    let layout = or_page!(layout(&state, &console, "jobs").await);
    let chosen = job_state(query.state.as_deref());
    let filter = job_filter(chosen, &query.queue, &query.kind);
    let found = tokio::try_join!(
        jobs::admin::stats(&state.pool, &state.queue),
        jobs::admin::list(&state.pool, &state.queue, &filter, 50, None)
    );
    let (queues, listed) = match found {
        Ok(both) => both,
        Err(e) => return internal(e.into()),
    };
    // Each tab counts what the filter would show in its state.
    let mut tabs = Vec::new();
    for s in jobs::JobState::ALL {
        let of_state = job_filter(s, &query.queue, &query.kind);
        match jobs::admin::count(&state.pool, &state.queue, &of_state).await {
            Ok(count) => tabs.push((
                s.as_str(),
                count,
                filter_query(s, &query.queue, &query.kind),
            )),
            Err(e) => return internal(e.into()),
        }
    }
    let mut queue_names: Vec<String> = queues.iter().map(|q| q.queue.clone()).collect();
    queue_names.sort();
    queue_names.dedup();
    render(&JobsPage {
        layout,
        state: chosen.as_str().to_string(),
        query: filter_query(chosen, &query.queue, &query.kind),
        queue: query.queue.trim().to_string(),
        kind: query.kind.trim().to_string(),
        queue_names,
        tabs,
        queues,
        jobs: listed,
        can_retry: jobs::BulkAction::Retry.touches(chosen),
        can_cancel: jobs::BulkAction::Cancel.touches(chosen),
        done: query.done,
    })
}

#[derive(Deserialize)]
pub struct BulkQuery {
    action: String,
    state: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    kind: String,
}

fn bulk_action(action: &str) -> Option<jobs::BulkAction> {
    match action {
        "retry" => Some(jobs::BulkAction::Retry),
        "cancel" => Some(jobs::BulkAction::Cancel),
        _ => None,
    }
}

#[derive(Template)]
#[template(path = "confirm_bulk.html")]
struct ConfirmBulk {
    layout: Layout,
    action: String,
    state: String,
    queue: String,
    kind: String,
    /// The jobs page's query to go back to.
    back: String,
    count: i64,
}

/// The confirmation of a bulk action says how many jobs it will touch: all that match, not
/// only those on the page.
pub async fn confirm_bulk(
    console: Console,
    State(state): State<AppState>,
    Query(query): Query<BulkQuery>,
) -> Response {
    or_page!(operator_only(&console));
    let chosen = job_state(Some(&query.state));
    let Some(action) = bulk_action(&query.action).filter(|a| a.touches(chosen)) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "That action does not apply to those jobs.",
        );
    };
    let layout = or_page!(layout(&state, &console, "jobs").await);
    let filter = job_filter(chosen, &query.queue, &query.kind);
    match jobs::admin::count(&state.pool, &state.queue, &filter).await {
        Ok(count) => render(&ConfirmBulk {
            layout,
            action: match action {
                jobs::BulkAction::Retry => "retry",
                _ => "cancel",
            }
            .to_string(),
            state: chosen.as_str().to_string(),
            queue: query.queue.trim().to_string(),
            kind: query.kind.trim().to_string(),
            back: filter_query(chosen, &query.queue, &query.kind),
            count,
        }),
        Err(e) => internal(e.into()),
    }
}

#[derive(Deserialize)]
pub struct BulkForm {
    csrf: String,
    action: String,
    state: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    kind: String,
}

pub async fn bulk(
    console: Console,
    State(state): State<AppState>,
    Form(form): Form<BulkForm>,
) -> Response {
    or_page!(operator_only(&console).and_then(|_| console.check(&form.csrf)));
    let chosen = job_state(Some(&form.state));
    let Some(action) = bulk_action(&form.action).filter(|a| a.touches(chosen)) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "That action does not apply to those jobs.",
        );
    };
    let filter = job_filter(chosen, &form.queue, &form.kind);
    match jobs::admin::apply(&state.pool, &state.queue, action, &filter, 5_000, |_| {}).await {
        Ok(changed) => Redirect::to(&format!(
            "/jobs?{}&done={changed}",
            filter_query(chosen, &form.queue, &form.kind)
        ))
        .into_response(),
        Err(e) => internal(e.into()),
    }
}

pub async fn queue_action(
    console: Console,
    State(state): State<AppState>,
    Path((queue, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    or_page!(operator_only(&console).and_then(|_| console.check(&form.csrf)));
    let done = match action.as_str() {
        "pause" => jobs::admin::pause_queue(&state.pool, &state.queue, &queue).await,
        "resume" => jobs::admin::resume_queue(&state.pool, &state.queue, &queue).await,
        _ => return refusal(StatusCode::NOT_FOUND, "A queue is paused or resumed."),
    };
    match done {
        Ok(()) => Redirect::to("/jobs").into_response(),
        Err(e) => internal(e.into()),
    }
}

#[derive(Template)]
#[template(path = "records.html")]
struct RecordsPage {
    layout: Layout,
    data_type: String,
    email: String,
    domain: String,
    deleted: String,
    records: Vec<tenant_api::Record>,
    integrations: Vec<(Uuid, String)>,
    accounts: Vec<(Uuid, String)>,
    integration_id: Option<Uuid>,
    account_id: Option<Uuid>,
    /// The query of the next page, when there is one.
    next: Option<String>,
}

impl RecordsPage {
    fn is_integration(&self, id: &Uuid) -> bool {
        self.integration_id == Some(*id)
    }

    fn is_account(&self, id: &Uuid) -> bool {
        self.account_id == Some(*id)
    }

    fn integration_name(&self, id: &Uuid) -> String {
        name_of(&self.integrations, id)
    }

    fn account_name(&self, id: &Uuid) -> String {
        name_of(&self.accounts, id)
    }

    fn is_type(&self, t: &str) -> bool {
        self.data_type == t
    }

    fn is_deleted(&self, d: &str) -> bool {
        self.deleted == d
    }
}

#[derive(Deserialize, Default)]
pub struct RecordsQuery {
    data_type: Option<String>,
    email: Option<String>,
    domain: Option<String>,
    deleted: Option<String>,
    integration_id: Option<String>,
    account_id: Option<String>,
    cursor: Option<String>,
}

fn name_of(names: &[(Uuid, String)], id: &Uuid) -> String {
    names
        .iter()
        .find(|(i, _)| i == id)
        .map_or_else(|| id.to_string(), |(_, n)| n.clone())
}

/// The tenant's records of a type, newest change first, searched by email or domain.
pub async fn records(
    console: Console,
    State(state): State<AppState>,
    Query(query): Query<RecordsQuery>,
) -> Response {
    let (tenant, layout) = or_page!(framed(&state, &console, "records").await);
    let data_type: crate::domain::DataType = query
        .data_type
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(crate::domain::DataType::Contacts);
    let deleted_text = query.deleted.unwrap_or_else(|| "exclude".into());
    let deleted: tenant_api::Deleted = deleted_text.parse().unwrap_or_default();
    let text = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let (email, domain) = (text(query.email), text(query.domain));
    let uuid = |s: &Option<String>| s.as_deref().and_then(|s| s.parse::<Uuid>().ok());
    let (integration_id, account_id) = (uuid(&query.integration_id), uuid(&query.account_id));
    let filter = tenant_api::RecordFilter {
        email: email.clone(),
        domain: domain.clone(),
        deleted,
        integration_id,
        account_id,
        ..tenant_api::RecordFilter::default()
    };
    let after = or_page!(page_cursor(query.cursor.as_deref()));
    let found = tokio::try_join!(
        tenant_api::records(&state.pool, tenant, data_type, &filter, after, 100),
        tenant_api::integrations(&state.pool, tenant),
        tenant_api::accounts(&state.pool, tenant)
    );
    let ((records, more), integrations, accounts) = match found {
        Ok(all) => all,
        Err(e) => return internal(e),
    };
    let (email, domain) = (email.unwrap_or_default(), domain.unwrap_or_default());
    let next = more.then(|| records.last()).flatten().map(|last| {
        let ids = (
            integration_id.map(|i| i.to_string()).unwrap_or_default(),
            account_id.map(|i| i.to_string()).unwrap_or_default(),
        );
        query_string(&[
            ("data_type", data_type.as_str()),
            ("email", &email),
            ("domain", &domain),
            ("deleted", &deleted_text),
            ("integration_id", &ids.0),
            ("account_id", &ids.1),
            (
                "cursor",
                &crate::http::api::time_cursor(last.updated_at, last.id),
            ),
        ])
    });
    render(&RecordsPage {
        layout,
        data_type: data_type.as_str().to_string(),
        email,
        domain,
        deleted: deleted_text,
        records,
        integrations: integrations
            .into_iter()
            .map(|i| (i.summary.id, i.summary.name))
            .collect(),
        accounts: accounts.into_iter().map(|a| (a.id, a.name)).collect(),
        integration_id,
        account_id,
        next,
    })
}

#[derive(Template)]
#[template(path = "record.html")]
struct RecordPage {
    layout: Layout,
    record: tenant_api::Record,
    fields: String,
    properties: String,
    raw: String,
}

/// One record with its typed fields, properties and raw payload as the source sent it.
pub async fn record(
    console: Console,
    State(state): State<AppState>,
    Path((data_type, record_id)): Path<(String, Uuid)>,
) -> Response {
    let (tenant, layout) = or_page!(framed(&state, &console, "records").await);
    let Ok(data_type) = data_type.parse::<crate::domain::DataType>() else {
        return not_found("record");
    };
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    match tenant_api::record(&state.pool, tenant, data_type, record_id).await {
        Ok(Some(record)) => render(&RecordPage {
            layout,
            fields: pretty(&record.fields),
            properties: pretty(&record.properties),
            raw: record.raw.as_ref().map(pretty).unwrap_or_default(),
            record,
        }),
        Ok(None) => not_found("record"),
        Err(e) => internal(e),
    }
}

#[derive(Template)]
#[template(path = "accounts.html")]
struct AccountsPage {
    layout: Layout,
    accounts: Vec<tenant_api::AccountView>,
    notices: Vec<String>,
}

async fn accounts_page(
    state: &AppState,
    console: &Console,
    status: StatusCode,
    notices: Vec<String>,
) -> Response {
    let (tenant, layout) = or_page!(framed(state, console, "accounts").await);
    match tenant_api::accounts(&state.pool, tenant).await {
        Ok(accounts) => {
            let mut page = render(&AccountsPage {
                layout,
                accounts,
                notices,
            });
            *page.status_mut() = status;
            page
        }
        Err(e) => internal(e),
    }
}

pub async fn accounts(console: Console, State(state): State<AppState>) -> Response {
    accounts_page(&state, &console, StatusCode::OK, Vec::new()).await
}

#[derive(Deserialize)]
pub struct AccountForm {
    csrf: String,
    name: String,
    #[serde(default)]
    domains: String,
}

/// Adds an account; its domains come comma- or space-separated, and the answer warns when
/// another account claims one (records of both then match neither).
pub async fn add_account(
    console: Console,
    State(state): State<AppState>,
    Form(form): Form<AccountForm>,
) -> Response {
    let tenant = or_page!(console.acting(&form.csrf));
    let domains: Vec<String> = form
        .domains
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|d| !d.is_empty())
        .map(String::from)
        .collect();
    match tenant_api::create_account(&state.pool, tenant, &form.name, &domains).await {
        Ok(written) => {
            let mut notices = vec![format!("Added {}.", written.account.name)];
            notices.extend(written.warnings.into_iter().map(|w| w.message));
            accounts_page(&state, &console, StatusCode::OK, notices).await
        }
        Err(tenant_api::AccountError::Other(e)) => internal(e),
        Err(refused) => {
            accounts_page(
                &state,
                &console,
                StatusCode::UNPROCESSABLE_ENTITY,
                vec![refused.to_string()],
            )
            .await
        }
    }
}

pub async fn delete_account(
    console: Console,
    State(state): State<AppState>,
    Path(account_id): Path<Uuid>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let tenant = or_page!(console.acting(&form.csrf));
    match tenant_api::delete_account(&state.pool, tenant, account_id).await {
        Ok(_) => Redirect::to("/accounts").into_response(),
        Err(tenant_api::AccountError::NotFound(_)) => not_found("account"),
        Err(e) => internal(anyhow::anyhow!(e)),
    }
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    layout: Layout,
    tokens: Vec<admin::tokens::TokenInfo>,
    created: Option<String>,
}

async fn tokens_page(state: &AppState, console: &Console, created: Option<String>) -> Response {
    let (tenant, layout) = or_page!(framed(state, console, "tokens").await);
    match admin::tokens::list(&state.pool, tenant).await {
        Ok(tokens) => render(&TokensPage {
            layout,
            tokens,
            created,
        }),
        Err(e) => internal(e),
    }
}

pub async fn tokens(console: Console, State(state): State<AppState>) -> Response {
    tokens_page(&state, &console, None).await
}

#[derive(Deserialize)]
pub struct TokenForm {
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    read_only: Option<String>,
}

pub async fn create_token(
    console: Console,
    State(state): State<AppState>,
    Form(form): Form<TokenForm>,
) -> Response {
    let tenant = or_page!(console.acting(&form.csrf));
    let name = Some(form.name.as_str()).filter(|n| !n.trim().is_empty());
    match admin::tokens::create(&state.pool, tenant, name, form.read_only.is_some()).await {
        Ok(created) => tokens_page(&state, &console, Some(created.token.plaintext)).await,
        Err(e) => internal(e),
    }
}

pub async fn revoke_token(
    console: Console,
    State(state): State<AppState>,
    Path(token_id): Path<Uuid>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let tenant = or_page!(console.acting(&form.csrf));
    match admin::tokens::revoke(&state.pool, tenant, token_id).await {
        Ok(Some(_)) => Redirect::to("/tokens").into_response(),
        Ok(None) => not_found("token"),
        Err(e) => internal(e),
    }
}

/// The lifecycle's buttons on a sync's page: close an open one, retry a failed or partial one (a
/// new sync with `retry_of`), reprocess a closed one from its stored chunks. A refusal (closed
/// already, still open, chunks deleted) comes back as the page's notice.
pub async fn sync_action(
    console: Console,
    State(state): State<AppState>,
    Path((sync_id, action)): Path<(Uuid, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let tenant = or_page!(console.acting(&form.csrf));
    let back = |id: Uuid, notice: Option<String>| match notice {
        Some(n) => redirect_with_notice(&format!("/syncs/{id}"), &n),
        None => Redirect::to(&format!("/syncs/{id}")).into_response(),
    };
    let admin_error = |e: crate::sync::SyncAdminError| match e {
        crate::sync::SyncAdminError::NotFound(_) => not_found("sync"),
        crate::sync::SyncAdminError::Other(e) => internal(e),
        refused => back(sync_id, Some(refused.to_string())),
    };
    match action.as_str() {
        "close" => {
            match crate::sync::close_open_sync(
                &state.pool,
                Some(tenant),
                sync_id,
                "closed in the console",
            )
            .await
            {
                Ok(_) => back(sync_id, None),
                Err(e) => admin_error(e),
            }
        }
        "reprocess" => {
            match crate::sync::replay::reprocess(&state.pool, &state.queue, Some(tenant), sync_id)
                .await
            {
                Ok(replay) => back(replay.sync_log_id, None),
                Err(e) => admin_error(e),
            }
        }
        "retry" => {
            let sync = match tenant_api::sync_log(&state.pool, tenant, sync_id).await {
                Ok(Some(sync)) => sync,
                Ok(None) => return not_found("sync"),
                Err(e) => return internal(e),
            };
            let request = crate::sync::SyncRequest {
                trigger: SyncTrigger::Manual,
                sync_mode: None,
                data_types: None,
                scheduled_for: None,
                retry_of: Some(sync_id),
            };
            match crate::sync::request_sync(
                &state.pool,
                &state.queue,
                Some(tenant),
                sync.integration_id,
                &request,
                false,
                state.sync.trigger_max_attempts,
            )
            .await
            {
                Ok((new_id, _)) => back(new_id, None),
                Err(crate::sync::SyncRequestError::Other(e)) => internal(e),
                Err(refused) => back(sync_id, Some(refused.to_string())),
            }
        }
        _ => not_found("action"),
    }
}
