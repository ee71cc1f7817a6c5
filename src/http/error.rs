//! The one error type of the HTTP boundary and its JSON shape.
//!
//! Policy: handlers return `ApiError`; every refusal is `{"error":{"code","message","details"?}}`
//! with a status that says whose fault it is, and a machine-readable `code` that never changes
//! once released. Internal errors are logged here, once, and answered without their details.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds, sent as `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The database could not do its part; the client should try again shortly. Never a 2xx.
    pub fn database_unavailable(error: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %error, "database unavailable while handling a request");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable; nothing was stored, retry shortly",
        )
        .retry_after(5)
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error while handling a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; it has been logged",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        match error.downcast_ref::<sqlx::Error>() {
            Some(e) if is_unavailable(e) => Self::database_unavailable(format!("{error:#}")),
            _ => Self::internal(format!("{error:#}")),
        }
    }
}

impl From<jobs::Error> for ApiError {
    fn from(error: jobs::Error) -> Self {
        match error {
            jobs::Error::Database(e) => e.into(),
            other => Self::internal(other),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            Self::database_unavailable(error)
        } else {
            Self::internal(error)
        }
    }
}

/// Errors that say the database could not serve now (not that the request was wrong): no
/// connection, a closed pool, a server shutting down or out of resources, a serialisation
/// conflict. Retrying later can succeed.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources; 57P: operator intervention
            // (shutdown, crash); 40001/40P01: serialisation failure and deadlock.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}

/// A route that exists, asked with a method it does not take; axum adds the `Allow` header.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not take {method}; see the Allow header",
            uri.path()
        ),
    )
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}", uri.path()),
    )
}

/// The request timeout's answer, which carries no body, as the JSON error; no handler answers 408
/// itself.
pub async fn timeout_as_json(response: Response, timeout: std::time::Duration) -> Response {
    if response.status() != StatusCode::REQUEST_TIMEOUT
        || response
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
    {
        return response;
    }
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request took longer than {} s (http.request_timeout_secs) and was abandoned; \
             nothing it carried was stored",
            timeout.as_secs_f64()
        ),
    )
    .into_response()
}
