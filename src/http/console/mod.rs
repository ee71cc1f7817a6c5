//! The admin console at `/`: server-rendered pages (askama templates compiled into the binary)
//! over the platform API's own functions and authorisation, enhanced by a vendored htmx
//! (`assets/`, served from the binary) and usable without it. Sign-in makes a session
//! (`admin::console`) kept in an `HttpOnly`, `SameSite=Strict` cookie; every state-changing form
//! carries the session's CSRF token; every page is sent with a Content-Security-Policy that
//! allows no inline script or style.

// Refusals here are whole pages (a `Response`), built once per request, not on a hot path.
#![allow(clippy::result_large_err)]

/// The value of a console step, or the page it answered instead, returned from the handler at
/// once (`?` does not fit: a handler answers a page either way, not a `Result`).
macro_rules! or_page {
    ($step:expr) => {
        match $step {
            Ok(value) => value,
            Err(page) => return page,
        }
    };
}

mod assets;
mod chart;
mod forms;
mod mappings;
mod pages;

use axum::{
    Router,
    extract::{FromRequestParts, Request},
    http::{HeaderValue, StatusCode, header, request::Parts},
    middleware::Next,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::AppState;
use crate::admin::console::Session;

/// The session cookie's name.
pub const COOKIE: &str = "sb_session";

/// What every console page is sent with: no inline script or style (htmx's own indicator style
/// is turned off in the page), nothing framed, nothing cached.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::dashboard))
        .route("/sign-in", get(pages::sign_in_form).post(pages::sign_in))
        .route("/sign-out", post(pages::sign_out))
        .route("/tenant", post(pages::choose_tenant))
        .route("/integrations", get(pages::integrations))
        .route(
            "/integrations/new",
            get(forms::new_integration).post(forms::add_integration),
        )
        .route("/integrations/schedule", get(forms::schedule_reading))
        .route(
            "/integrations/{integration_id}/edit",
            get(forms::edit_form).post(forms::edit_integration),
        )
        .route(
            "/integrations/{integration_id}/keys",
            get(forms::keys).post(forms::create_key),
        )
        .route(
            "/integrations/{integration_id}/keys/{key_id}/revoke",
            post(forms::revoke_key),
        )
        .route(
            "/integrations/{integration_id}/delete",
            get(pages::confirm_delete).post(pages::delete_integration),
        )
        .route("/integrations/{integration_id}/sync", post(pages::sync_now))
        .route("/integrations/{integration_id}/pause", post(pages::pause))
        .route("/integrations/{integration_id}/resume", post(pages::resume))
        .route("/jobs", get(pages::jobs_page))
        .route("/jobs/bulk", get(pages::confirm_bulk).post(pages::bulk))
        .route("/jobs/selected", post(pages::selected_jobs))
        .route("/jobs/{job_id}", get(pages::job_page))
        .route("/jobs/{job_id}/{action}", post(pages::job_action))
        .route("/jobs/queues/{queue}/{action}", post(pages::queue_action))
        .route("/accounts", get(pages::accounts).post(pages::add_account))
        .route("/accounts/{account_id}/delete", post(pages::delete_account))
        .route("/tokens", get(pages::tokens).post(pages::create_token))
        .route("/tokens/{token_id}/revoke", post(pages::revoke_token))
        .route("/records", get(pages::records))
        .route("/records/{data_type}/{record_id}", get(pages::record))
        .route("/syncs", get(pages::syncs))
        .route("/syncs/{sync_id}", get(pages::sync))
        .route("/syncs/{sync_id}/progress", get(pages::sync_progress))
        .route("/syncs/{sync_id}/badge", get(pages::sync_badge))
        .route("/syncs/{sync_id}/errors", get(pages::sync_errors))
        .route("/syncs/{sync_id}/{action}", post(pages::sync_action))
        .route(
            "/mappings",
            get(mappings::mappings).post(mappings::set_target),
        )
        .route("/mappings/preview", post(mappings::preview))
        .route("/assets/{file}", get(assets::serve))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The signed-in browser: its session, and the tenant it acts for (`None`: an operator who has
/// not chosen one yet). Without a live session a page answers with the sign-in page.
pub struct Console {
    pub session: Session,
}

impl Console {
    pub fn tenant(&self) -> Option<Uuid> {
        self.session.tenant_id
    }

    /// Refuses a form whose CSRF token is not the session's.
    pub fn check_csrf(&self, csrf: &str) -> Result<(), Response> {
        if bool::from(csrf.as_bytes().ct_eq(self.session.csrf_token.as_bytes())) {
            return Ok(());
        }
        Err(refusal(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from this console: reload the page and try again.",
        ))
    }

    /// The tenant a change acts for, once [`Console::check`] passed; an operator who has not
    /// chosen a tenant is sent to choose one.
    pub fn acting(&self, csrf: &str) -> Result<Uuid, Response> {
        self.check(csrf)?;
        self.tenant()
            .ok_or_else(|| Redirect::to("/").into_response())
    }

    /// Refuses a change whose form lacks the session's CSRF token, and any change by a
    /// read-only session.
    pub fn check(&self, csrf: &str) -> Result<(), Response> {
        self.check_csrf(csrf)?;
        if self.session.read_only {
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "You signed in with a read-only token: it may look at everything and change nothing.",
            ));
        }
        Ok(())
    }
}

/// A plain page saying why something was refused.
pub fn refusal(status: StatusCode, message: &str) -> Response {
    (status, Html(pages::message_page(status, message))).into_response()
}

/// The secret in the request's session cookie.
fn cookie_secret(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

impl FromRequestParts<AppState> for Console {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let sign_in = || Redirect::to("/sign-in").into_response();
        let Some(secret) = cookie_secret(parts) else {
            return Err(sign_in());
        };
        match crate::admin::console::session(&state.pool, state.admin_token.as_ref(), &secret).await
        {
            Ok(Some(session)) => Ok(Console { session }),
            Ok(None) => Err(sign_in()),
            Err(e) => Err(super::error::ApiError::from(e).into_response()),
        }
    }
}

/// The `Set-Cookie` of a new session; `Secure` when the browser came over https (directly or
/// through a proxy that says so).
fn session_cookie(secret: &str, https: bool) -> String {
    let secure = if https { "; Secure" } else { "" };
    format!(
        "{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        crate::admin::console::SESSION_HOURS * 3600
    )
}

fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}
