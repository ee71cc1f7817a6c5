//! Logging: `tracing` to stderr, readable by default, one JSON object per line when configured;
//! the request id of the request being served; metrics (`metrics`). Field names follow
//! `docs/LOGGING.md`.

pub mod metrics;
pub mod traces;

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogConfig, LogFormat, TracesConfig};

/// Installs the global subscriber, with OTLP export when `traces.otlp_endpoint` is set (keep the
/// returned [`traces::Tracing`] until exit: dropping it flushes the last spans). `RUST_LOG`, when
/// set, replaces the configured filter.
pub fn init(config: &LogConfig, traces: &TracesConfig) -> anyhow::Result<Option<traces::Tracing>> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    let (tracing, otel) = match traces::layer(traces)? {
        Some((tracing, layer)) => (Some(tracing), Some(layer)),
        None => (None, None),
    };
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = match config.format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    // The request's span (its `request.id`) rides on every line logged within it.
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
    Ok(tracing)
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `future` as the handling of request `id`: [`request_id`] answers it within.
pub async fn with_request_id<F: std::future::Future>(id: String, future: F) -> F::Output {
    REQUEST_ID.scope(id, future).await
}

/// The id of the request this task is serving, if it serves one: error bodies carry it, and the
/// jobs it enqueues store it, so a batch's processing is found from the delivery.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}
