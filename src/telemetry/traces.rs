//! Optional trace export over OTLP/HTTP (protobuf), off unless `traces.otlp_endpoint` is set:
//! the `tracing` spans become OpenTelemetry spans (`tracing-opentelemetry`), and a request's
//! trace context is stored in the jobs it enqueues (as a W3C `traceparent`) so each job's span
//! links to the delivery that caused it.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TracesConfig;

/// Flushes and stops the export when dropped (at the end of `main`), so the last spans leave.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Sends every finished span now; blocking (call it off the async threads).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            eprintln!("syncbridge: flushing traces failed: {e}");
        }
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// The exporter and its provider, and the layer that feeds it; `None` when export is off.
pub(super) fn layer<S>(
    config: &TracesConfig,
) -> anyhow::Result<
    Option<(
        Tracing,
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
    )>,
>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let endpoint = config.otlp_endpoint.trim();
    if endpoint.is_empty() {
        return Ok(None);
    }
    let endpoint = endpoint.to_string();
    // The blocking HTTP client owns a runtime of its own, which may be neither made nor dropped
    // on an async thread: it is made here on a thread of its own, and used and dropped on the
    // batch processor's.
    let exporter = std::thread::spawn(move || {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("building the OTLP exporter panicked"))??;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("syncbridge");
    Ok(Some((
        Tracing { provider },
        tracing_opentelemetry::layer().with_tracer(tracer),
    )))
}

/// The current span's trace context as a W3C `traceparent`, when traces are exported.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span = span.span_context();
    span.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span.trace_id(),
            span.span_id(),
            span.trace_flags().to_u8()
        )
    })
}

/// Links `span` to the span a stored `traceparent` names (the request that enqueued the job).
pub fn link_to(span: &tracing::Span, traceparent: &str) {
    if let Some(context) = parse_traceparent(traceparent) {
        span.add_link(context);
    }
}

fn parse_traceparent(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_back_and_a_malformed_one_is_not() {
        let parsed =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            parsed.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parsed.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parsed.is_sampled());
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // Without an exporting layer there is no trace context to store.
        assert_eq!(current_traceparent(), None);
    }
}
