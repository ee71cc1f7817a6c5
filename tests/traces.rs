//! OTLP trace export, in a test process of its own (the subscriber is the process's): a local
//! OTLP/HTTP receiver gets the spans of a delivery and of its chunk's processing, and the chunk
//! job's span links to the request that enqueued it through the stored trace context.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::sync::{Arc, Mutex};

use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, trace::v1::Span,
};
use prost::Message;
use serde_json::json;

type Received = Arc<Mutex<Vec<Span>>>;

/// A collector's OTLP/HTTP traces endpoint, on loopback: keeps every span it is sent.
async fn receiver() -> (String, Received) {
    async fn traces(State(received): State<Received>, body: Bytes) -> &'static [u8] {
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
        let spans = request
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        received.lock().unwrap().extend(spans);
        // An empty ExportTraceServiceResponse.
        b""
    }
    let received = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_jobs_span_links_to_the_delivery_that_enqueued_it() {
    let (url, received) = receiver().await;
    let mut config = helpers::test_config();
    config.traces.otlp_endpoint = url;
    let tracing = syncbridge::telemetry::init(&config.log, &config.traces)
        .unwrap()
        .expect("export is on");

    let app = helpers::TestApp::spawn().await;
    let h = helpers::hubspot_integration(&app.db.pool, "Traced Co").await;
    let contacts = vec![json!({"id": "c1", "properties": {"email": "a@traced.example"}})];
    helpers::deliver(&app, &h, "contacts", contacts, false).await;
    helpers::drain(&app.db).await;

    // Both spans ended before the drain saw the job done (the request's when it was answered,
    // the job's before its commit), and a flush sends every ended span and waits for the answer.
    tokio::task::block_in_place(|| tracing.flush());
    let spans = received.lock().unwrap().clone();
    let names: Vec<&String> = spans.iter().map(|s| &s.name).collect();
    let job = spans
        .iter()
        .find(|s| s.name == "job.process_chunk")
        .unwrap_or_else(|| panic!("no chunk job span among {names:?}"))
        .clone();
    let link = job
        .links
        .first()
        .expect("the job's span links to the delivery");
    let request = spans
        .iter()
        .find(|s| s.trace_id == link.trace_id && s.span_id == link.span_id)
        .unwrap_or_else(|| panic!("the linked span is not among {names:?}"))
        .clone();
    // The linked span is the delivery's request; the job runs in a trace of its own.
    let attribute = |span: &Span, key: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.clone())
            .map(|v| format!("{v:?}"))
            .unwrap_or_default()
    };
    assert_eq!(request.name, "http.request");
    assert!(
        attribute(&request, "http.route").contains("/api/webhooks/n8n"),
        "{request:?}"
    );
    assert!(attribute(&request, "http.method").contains("POST"));
    assert!(
        attribute(&request, "http.status").contains("202"),
        "{request:?}"
    );
    assert_eq!(job.links.len(), 1, "{:?}", job.links);
    assert_ne!(job.trace_id, request.trace_id);
}
