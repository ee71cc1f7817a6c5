//! Liveness and readiness probes for load balancers and orchestrators.

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{
    AppState,
    error::{ApiError, ErrorCode},
};
use crate::db::{PROBE_BUDGET, Readiness, readiness_within};

/// Alive: the process answers. Never touches the database, so a slow database does not get
/// healthy processes restarted.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process answers: `ok`", body = Probe))
)]
pub async fn healthz() -> Json<Probe> {
    Json(Probe { status: "ok" })
}

/// A probe's answer.
#[derive(Serialize, ToSchema)]
pub struct Probe {
    /// `ok` (alive) or `ready`.
    #[schema(value_type = String)]
    pub status: &'static str,
}

/// Ready: the database answers (within 0.8 s) and every migration this binary expects is applied.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready: `ready`", body = Probe),
        (status = 503, description = "`database_unavailable`, `migrations_pending` (`details.applied`, `details.expected`)", body = crate::http::error::ErrorBody),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Probe>, ApiError> {
    match readiness_within(&state.pool, &state.queue, PROBE_BUDGET).await {
        Readiness::Ready => Ok(Json(Probe { status: "ready" })),
        Readiness::Unreachable(reason) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DatabaseUnavailable,
            format!("the database cannot be reached: {reason}"),
        )),
        Readiness::MigrationsPending { applied, expected } => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::MigrationsPending,
            format!(
                "{applied} of {expected} database migrations are applied; run `syncbridge migrate`"
            ),
        )
        .with_details(json!({ "applied": applied, "expected": expected }))),
    }
}
