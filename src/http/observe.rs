//! What every HTTP request leaves behind: its request id (taken from `x-request-id` or made,
//! returned on the response, in error bodies and in the jobs it enqueues), one log line, and
//! its metrics. Field names follow `docs/LOGGING.md`; never a key, token or body.

use std::time::Instant;

use axum::{
    body::HttpBody as _,
    extract::{MatchedPath, Request},
    http::{HeaderName, HeaderValue, Method},
    middleware::Next,
    response::Response,
};
use tracing::Instrument;

use super::error::ErrorCode;
use crate::telemetry;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a caller; a longer or odder one is replaced.
const MAX_ID_LEN: usize = 128;

/// The caller's request id when it is one we can log and echo safely (printable ASCII without
/// spaces or quotes, at most 128 characters); a new one otherwise.
pub fn request_id_of(header: Option<&HeaderValue>) -> String {
    header
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Probes and scrapes come every few seconds: their lines are `debug`, not `info`.
fn is_probe(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics")
}

pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id_of(request.headers().get(&REQUEST_ID));
    // Any token is a method to HTTP: only the standard ones get series of their own.
    let method = match *request.method() {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::HEAD
        | Method::OPTIONS
        | Method::TRACE
        | Method::CONNECT => request.method().as_str().to_string(),
        _ => "other".to_string(),
    };
    // The route template, never the path: ids in paths would make every request its own series.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let request_bytes = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let span = tracing::info_span!(
        "http.request",
        request.id = %id,
        http.method = %method,
        http.route = %route,
        http.status = tracing::field::Empty,
    );
    let mut response = telemetry::with_request_id(id.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    // The line belongs to the request's span too (its trace, its `request.id`).
    let _entered = span.enter();
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let status = response.status().as_u16();
    span.record("http.status", status);
    let code = response
        .extensions()
        .get::<ErrorCode>()
        .map_or("", |c| c.as_str());
    let response_bytes = response.body().size_hint().exact();
    let elapsed = started.elapsed();
    telemetry::metrics::http_request(&telemetry::metrics::Answered {
        method: &method,
        route: &route,
        status,
        code,
        elapsed,
        webhook: method == "POST" && route == super::WEBHOOK_ROUTE,
    });
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                target: "syncbridge::request",
                $level,
                http.method = %method,
                http.route = %route,
                http.status = status,
                error.code = (!code.is_empty()).then_some(code),
                http.duration_ms = duration_ms,
                http.request_bytes = request_bytes,
                http.response_bytes = response_bytes,
                request.id = %id,
                "request"
            )
        };
    }
    if status >= 500 {
        line!(tracing::Level::WARN);
    } else if is_probe(&route) {
        line!(tracing::Level::DEBUG);
    } else {
        line!(tracing::Level::INFO);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_request_id_is_kept_only_when_safe() {
        let id = |v: &str| request_id_of(Some(&HeaderValue::from_str(v).unwrap()));
        assert_eq!(id("n8n-exec-4711"), "n8n-exec-4711");
        assert_eq!(id("  abc  "), "abc");
        for unsafe_id in ["", "has space", "quote\"d", &"x".repeat(129)] {
            let made = id(unsafe_id);
            assert_ne!(made, unsafe_id.trim());
            assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");
        }
        assert!(uuid::Uuid::parse_str(&request_id_of(None)).is_ok());
    }
}
