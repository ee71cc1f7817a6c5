//! `GET /metrics`: the Prometheus exposition page, on the web port behind the metrics token, and
//! on each role's own listener (`metrics.*_listen`) without one.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use super::{
    AppState, bearer_token,
    error::{ApiError, ErrorCode},
};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The web port's `/metrics`: a scraper presents `SYNCBRIDGE_METRICS_TOKEN` as a bearer token.
/// A separate token, not the admin token, so a scraper's credential grants nothing else.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The Prometheus text exposition format (docs/METRICS.md)", body = String, content_type = "text/plain"),
        (status = 401, description = "`missing_token`, `invalid_token`", body = crate::http::error::ErrorBody),
        (status = 404, description = "`metrics_disabled`: no SYNCBRIDGE_METRICS_TOKEN is set", body = crate::http::error::ErrorBody),
    )
)]
pub async fn scrape(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(expected) = &state.metrics_token else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::MetricsDisabled,
            "metrics are not served on this port: set SYNCBRIDGE_METRICS_TOKEN (with \
             metrics.enabled), or scrape a role's own listener (metrics.web_listen, \
             metrics.worker_listen, metrics.scheduler_listen)",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::MissingToken,
                "send the metrics token as `Authorization: Bearer <SYNCBRIDGE_METRICS_TOKEN>`",
            )
        })?;
    if !bool::from(
        presented
            .as_bytes()
            .ct_eq(expected.expose_secret().as_bytes()),
    ) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidToken,
            "that is not the metrics token",
        ));
    }
    Ok(page(&state.pool))
}

/// A role's own listener: whoever reaches its address may scrape it.
pub async fn scrape_open(State(pool): State<PgPool>) -> Response {
    page(&pool)
}

fn page(pool: &PgPool) -> Response {
    let body = crate::telemetry::metrics::render(pool);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}
