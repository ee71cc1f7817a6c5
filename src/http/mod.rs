//! The web process: the axum router, its shared state, and serving with graceful shutdown.

mod admin;
pub mod api;
mod console;
pub mod error;
mod extract;
mod health;
mod metrics;
pub mod observe;
pub mod openapi;
pub mod webhook_auth;
mod webhooks;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use axum::{
    Router,
    routing::{get, post},
};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::{
    config::{Config, HttpConfig},
    crypto::Sealer,
};
pub use error::ApiError;
use webhook_auth::WebhookState;

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// `None` turns the admin API off.
    pub admin_token: Option<SecretString>,
    pub webhooks: Arc<WebhookState>,
    pub sync: Arc<SyncAdmin>,
    /// Mapping previews running at once (each on the blocking pool).
    pub previews: Arc<tokio::sync::Semaphore>,
    /// The queue deliveries and manual syncs enqueue their jobs on.
    pub queue: jobs::Queue,
    /// Checks platform JWTs on `/api/v1`; `None`: JWT authentication is off.
    pub jwt: Option<Arc<crate::jwt::Verifier>>,
    /// The bearer token of `/metrics` on this port; `None`: not served here.
    pub metrics_token: Option<SecretString>,
}

/// Mapping previews a process runs at once; more wait for a turn (within the request timeout).
const PREVIEWS_AT_ONCE: usize = 2;

/// What the sync-settings and manual-trigger endpoints need.
pub struct SyncAdmin {
    pub policy: crate::n8n::UrlPolicy,
    pub sealer: Option<Sealer>,
    pub trigger_max_attempts: i32,
    /// `http.request_timeout_secs`: a request that waits for a sync must answer before it.
    pub request_timeout_secs: u64,
    /// Where n8n posts batches (`Config::callback_url`), shown when an integration is added.
    pub callback_url: String,
}

impl AppState {
    pub fn new(pool: PgPool, config: &Config) -> Result<Self> {
        let sealer = config.sealer()?;
        Ok(Self {
            pool,
            admin_token: config.admin_token.clone(),
            webhooks: WebhookState::new(
                config.ingest.clone(),
                config.webhook_api_key.as_ref(),
                sealer.clone(),
            ),
            sync: Arc::new(SyncAdmin {
                policy: crate::n8n::UrlPolicy::configured(&config.n8n)?,
                sealer,
                trigger_max_attempts: config.n8n.trigger_attempts(),
                request_timeout_secs: config.http.request_timeout_secs,
                callback_url: config.callback_url(),
            }),
            previews: Arc::new(tokio::sync::Semaphore::new(PREVIEWS_AT_ONCE)),
            queue: config.jobs.queue(),
            jwt: crate::jwt::Verifier::new(&config.jwt)?.map(Arc::new),
            metrics_token: config
                .metrics
                .token
                .clone()
                .filter(|_| config.metrics.enabled),
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header value. The scheme name is
/// case-insensitive (RFC 9110 §11.1), so `bearer` and `BEARER` are the same; `None` for another
/// scheme or an empty token.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub fn router(state: AppState, request_timeout: Duration) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .merge(admin::routes())
        .merge(api::routes())
        .merge(console::routes())
        .route("/metrics", get(metrics::scrape))
        // Written out (not WEBHOOK_ROUTE): the OpenAPI test reads the routes from this file.
        .route("/api/webhooks/n8n", post(webhooks::receive))
        .route("/api/batches/{id}", get(webhooks::batch_status))
        .layer(axum::extract::DefaultBodyLimit::max(
            extract::ADMIN_BODY_LIMIT,
        ))
        .fallback(error::not_found)
        // After every route: it applies to the routes registered before it.
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        // Outside the timeout: its bare 408 gets the JSON error shape.
        .layer(axum::middleware::map_response(move |response| {
            error::timeout_as_json(response, request_timeout)
        }))
        // Outermost: the log line and metrics see every answer, the timeout's included.
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(state)
}

/// The webhook's route, the one whose requests get series of their own.
pub const WEBHOOK_ROUTE: &str = "/api/webhooks/n8n";

/// A role's own metrics listener (`metrics.*_listen`): `/metrics` without a token, nothing else.
pub fn metrics_router(pool: PgPool) -> Router {
    Router::new()
        .route("/metrics", get(metrics::scrape_open))
        .fallback(error::not_found)
        .with_state(pool)
}

/// Binds the configured address; split from [`serve`] so callers learn the port before serving.
pub async fn bind(config: &HttpConfig) -> Result<TcpListener> {
    let addr = format!("{}:{}", config.host, config.port);
    TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Serves until `shutdown` fires, then stops accepting and lets in-flight requests finish
/// within `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(http.address = %addr, "syncbridge listening on http://{addr}");
    let signal = shutdown.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        signal.cancelled().await;
        tracing::info!("web: no longer accepting connections; finishing in-flight requests");
    });
    let server = tokio::spawn(async move { server.await });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return Ok(result??),
        () = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => Ok(result??),
        Err(_) => {
            tracing::warn!(
                shutdown.grace_secs = grace.as_secs(),
                "web: in-flight requests did not finish in time; aborting them"
            );
            server.abort();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer sbk_1"), Some("sbk_1"));
        assert_eq!(bearer_token("bearer sbk_1"), Some("sbk_1"));
        assert_eq!(bearer_token("BEARER   sbk_1 "), Some("sbk_1"));
        assert_eq!(bearer_token("Basic dXNlcg=="), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearersbk_1"), None);
    }
}
