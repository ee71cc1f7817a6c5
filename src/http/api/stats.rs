//! `GET /api/v1/stats`: the dashboard's numbers for the tenant, in one answer.

use axum::{Json, extract::State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{TenantScope, invalid_query};
use crate::{
    admin::tenant_api::{self, Stats},
    http::{
        AppState,
        error::{ApiError, ErrorBody},
        extract::ApiQuery,
    },
};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// The chart's window in UTC days, today included: 1 to 90 (30).
    days: Option<i64>,
}

/// Integrations (total, active, paused, failing), live records by type, syncs in the last 24
/// hours, failed syncs and the success rate over 7 days, and per day over the window the syncs
/// by outcome and the records and bytes received.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "stats",
    params(
        StatsQuery,
        ("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The numbers", body = Stats),
        (status = 400, description = "`invalid_query`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn get(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Json<Stats>, ApiError> {
    let days = match query.days {
        None => 30,
        Some(d) if (1..=90).contains(&d) => d,
        Some(d) => {
            return Err(invalid_query(format!(
                "days must be between 1 and 90, not {d}"
            )));
        }
    };
    Ok(Json(
        tenant_api::stats(&state.pool, scope.tenant_id, days).await?,
    ))
}
