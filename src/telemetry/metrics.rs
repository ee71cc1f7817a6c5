//! The service's Prometheus metrics: the one recorder of the process (installed once), the
//! application's metric names with their help texts, the functions that record them, and the
//! integration label's cardinality bound. The queue engine records its own (`jobs::metrics`);
//! `docs/METRICS.md` lists every series.

use std::{
    collections::HashSet,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use uuid::Uuid;

use crate::config::MetricsConfig;

pub const HTTP_REQUESTS: &str = "syncbridge_http_requests_total";
pub const HTTP_DURATION: &str = "syncbridge_http_request_duration_seconds";
pub const WEBHOOK_REQUESTS: &str = "syncbridge_webhook_requests_total";
pub const WEBHOOK_DURATION: &str = "syncbridge_webhook_accept_duration_seconds";
pub const WEBHOOK_BYTES: &str = "syncbridge_webhook_body_bytes_total";
pub const WEBHOOK_RECORDS: &str = "syncbridge_webhook_records_total";
pub const WEBHOOK_REFUSALS: &str = "syncbridge_webhook_refusals_total";
pub const RECORDS: &str = "syncbridge_records_processed_total";
pub const CHUNK_DURATION: &str = "syncbridge_chunk_duration_seconds";
pub const SYNCS_STARTED: &str = "syncbridge_syncs_started_total";
pub const SYNCS_CLOSED: &str = "syncbridge_syncs_closed_total";
pub const SYNC_DURATION: &str = "syncbridge_sync_duration_seconds";
pub const SYNCS_OPEN: &str = "syncbridge_syncs_open";
pub const WATCHDOG_CLOSURES: &str = "syncbridge_watchdog_closures_total";
pub const TRIGGER_ATTEMPTS: &str = "syncbridge_n8n_trigger_attempts_total";
pub const TRIGGER_DURATION: &str = "syncbridge_n8n_trigger_duration_seconds";
pub const SCHEDULER_TICKS: &str = "syncbridge_scheduler_ticks_total";
pub const SCHEDULER_LAG: &str = "syncbridge_scheduler_tick_lag_seconds";
pub const POOL_CONNECTIONS: &str = "syncbridge_db_pool_connections";
pub const POOL_MAX: &str = "syncbridge_db_pool_max_connections";
pub const BUILD_INFO: &str = "syncbridge_build_info";

/// Every metric the application records (the queue engine's are `jobs::metrics::NAMES`).
pub const NAMES: &[&str] = &[
    HTTP_REQUESTS,
    HTTP_DURATION,
    WEBHOOK_REQUESTS,
    WEBHOOK_DURATION,
    WEBHOOK_BYTES,
    WEBHOOK_RECORDS,
    WEBHOOK_REFUSALS,
    RECORDS,
    CHUNK_DURATION,
    SYNCS_STARTED,
    SYNCS_CLOSED,
    SYNC_DURATION,
    SYNCS_OPEN,
    WATCHDOG_CLOSURES,
    TRIGGER_ATTEMPTS,
    TRIGGER_DURATION,
    SCHEDULER_TICKS,
    SCHEDULER_LAG,
    POOL_CONNECTIONS,
    POOL_MAX,
    BUILD_INFO,
];

/// The process's recorder, installed by the first call; later calls return the same handle
/// (tests start many apps in one process).
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Seconds from a millisecond to the watchdog's hour; sizes from one job to a claim's most.
        let seconds = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 300.0, 900.0, 3600.0,
        ];
        let sizes = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), &sizes))
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder (a test's) may be installed already; ours then records nothing, and
        // its handle renders an empty page rather than failing the start.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::debug!("a metrics recorder was installed before; keeping it");
        }
        describe();
        gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        // Histograms keep their samples until drained; between scrapes (or with no scraper at
        // all) the upkeep drains them into their buckets, so memory stays bounded.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .expect("a thread for the metrics upkeep");
        handle
    })
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route template, status and error code"
    );
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time to answer an HTTP request, by method and route template"
    );
    describe_counter!(
        WEBHOOK_REQUESTS,
        "Deliveries to POST /api/webhooks/n8n, by status and error code"
    );
    describe_histogram!(
        WEBHOOK_DURATION,
        metrics::Unit::Seconds,
        "Time to answer a delivery (accepted or refused)"
    );
    describe_counter!(
        WEBHOOK_BYTES,
        metrics::Unit::Bytes,
        "Body bytes of accepted deliveries, as sent (compressed when gzip)"
    );
    describe_counter!(
        WEBHOOK_RECORDS,
        "Records of accepted deliveries, by data type"
    );
    describe_counter!(
        WEBHOOK_REFUSALS,
        "Deliveries refused for load, by reason (rate_limited, backlog_full) and, when \
         metrics.integration_labels is on, integration"
    );
    describe_counter!(
        RECORDS,
        "Records processed by the workers, by data type and outcome (created, updated, unchanged, \
         skipped, failed; unmatched counts stored records that matched no account)"
    );
    describe_histogram!(
        CHUNK_DURATION,
        metrics::Unit::Seconds,
        "Time to map, match and upsert one chunk, by data type"
    );
    describe_counter!(SYNCS_STARTED, "Syncs created, by trigger");
    describe_counter!(SYNCS_CLOSED, "Syncs closed, by status and source type");
    describe_histogram!(
        SYNC_DURATION,
        metrics::Unit::Seconds,
        "Time from a sync's creation to its close, by status and source type"
    );
    describe_gauge!(
        SYNCS_OPEN,
        "Syncs pending or running, by source type, sampled by the maintenance leader"
    );
    describe_counter!(
        WATCHDOG_CLOSURES,
        "Syncs closed by the watchdog because n8n went silent"
    );
    describe_counter!(
        TRIGGER_ATTEMPTS,
        "Requests asking n8n to start a workflow, by outcome (accepted, rejected, transient)"
    );
    describe_histogram!(
        TRIGGER_DURATION,
        metrics::Unit::Seconds,
        "Time n8n took to answer a trigger"
    );
    describe_counter!(
        SCHEDULER_TICKS,
        "Schedule ticks handled, by outcome (triggered, skipped)"
    );
    describe_histogram!(
        SCHEDULER_LAG,
        metrics::Unit::Seconds,
        "Time from a tick's due time to its sync being created"
    );
    describe_gauge!(
        POOL_CONNECTIONS,
        "The process's database connections, by state (in_use, idle), at scrape time"
    );
    describe_gauge!(POOL_MAX, "The most connections the process's pool opens");
    describe_gauge!(BUILD_INFO, "Always 1; the version is its label");
    for (name, kind, help) in jobs::metrics::NAMES {
        match kind {
            jobs::metrics::Kind::Counter => describe_counter!(*name, *help),
            jobs::metrics::Kind::Gauge => describe_gauge!(*name, *help),
            jobs::metrics::Kind::Histogram => describe_histogram!(*name, *help),
        }
    }
}

/// The exposition page, with the pool's gauges read now.
pub fn render(pool: &sqlx::PgPool) -> String {
    let handle = install();
    let size = pool.size() as f64;
    let idle = pool.num_idle() as f64;
    gauge!(POOL_CONNECTIONS, "state" => "in_use").set((size - idle).max(0.0));
    gauge!(POOL_CONNECTIONS, "state" => "idle").set(idle);
    gauge!(POOL_MAX).set(pool.options().get_max_connections() as f64);
    handle.render()
}

/// Whether series carry an `integration` label, and for how many distinct integrations.
struct IntegrationLabels {
    on: bool,
    limit: usize,
    seen: Mutex<HashSet<Uuid>>,
}

static INTEGRATION_LABELS: OnceLock<IntegrationLabels> = OnceLock::new();

/// Sets the integration label's policy; the first call wins (one process, one configuration).
pub fn configure(config: &MetricsConfig) {
    let _ = INTEGRATION_LABELS.set(IntegrationLabels {
        on: config.integration_labels,
        limit: config.integration_label_limit,
        seen: Mutex::new(HashSet::new()),
    });
}

/// The `integration` label's value: `None` when labels are off; the id for the first
/// `integration_label_limit` integrations seen, `other` after that, so a tenant adding
/// integrations cannot grow the series without bound.
fn integration_label(id: Uuid) -> Option<String> {
    let labels = INTEGRATION_LABELS.get().filter(|l| l.on)?;
    let mut seen = labels.seen.lock().unwrap_or_else(|e| e.into_inner());
    if seen.contains(&id) || seen.len() < labels.limit && seen.insert(id) {
        Some(id.to_string())
    } else {
        Some("other".into())
    }
}

/// How an HTTP request was answered.
pub struct Answered<'a> {
    pub method: &'a str,
    /// The route template (`/api/batches/{id}`), never the path.
    pub route: &'a str,
    pub status: u16,
    /// The error code, empty when none.
    pub code: &'a str,
    pub elapsed: Duration,
    /// The webhook gets series of its own.
    pub webhook: bool,
}

/// One HTTP request answered.
pub fn http_request(answered: &Answered<'_>) {
    let Answered {
        method,
        route,
        status,
        code,
        elapsed,
        webhook,
    } = *answered;
    let status = status.to_string();
    counter!(HTTP_REQUESTS, "method" => method.to_string(), "route" => route.to_string(),
             "status" => status.clone(), "code" => code.to_string())
    .increment(1);
    histogram!(HTTP_DURATION, "method" => method.to_string(), "route" => route.to_string())
        .record(elapsed.as_secs_f64());
    if webhook {
        counter!(WEBHOOK_REQUESTS, "status" => status, "code" => code.to_string()).increment(1);
        histogram!(WEBHOOK_DURATION).record(elapsed.as_secs_f64());
    }
}

/// A delivery accepted: its body as sent and its records.
pub fn delivery_accepted(data_type: &str, body_bytes: usize, records: usize) {
    counter!(WEBHOOK_BYTES).increment(body_bytes as u64);
    counter!(WEBHOOK_RECORDS, "data_type" => data_type.to_string()).increment(records as u64);
}

/// A delivery refused for load: `rate_limited` or `backlog_full`.
pub fn delivery_refused(reason: &'static str, integration_id: Uuid) {
    match integration_label(integration_id) {
        Some(integration) => {
            counter!(WEBHOOK_REFUSALS, "reason" => reason, "integration" => integration)
                .increment(1)
        }
        None => counter!(WEBHOOK_REFUSALS, "reason" => reason).increment(1),
    }
}

/// One chunk processed: its records by outcome (`created`, `updated`, …), and how long it took.
pub fn chunk_processed(data_type: &str, outcomes: &[(&'static str, i64)], elapsed: Duration) {
    for &(outcome, n) in outcomes {
        if n > 0 {
            counter!(RECORDS, "data_type" => data_type.to_string(), "outcome" => outcome)
                .increment(n as u64);
        }
    }
    histogram!(CHUNK_DURATION, "data_type" => data_type.to_string()).record(elapsed.as_secs_f64());
}

pub fn sync_started(trigger: &str) {
    counter!(SYNCS_STARTED, "trigger" => trigger.to_string()).increment(1);
}

pub fn sync_closed(status: &str, source_type: &str, open_for: Duration) {
    let labels = [
        ("status", status.to_string()),
        ("source_type", source_type.to_string()),
    ];
    counter!(SYNCS_CLOSED, &labels).increment(1);
    histogram!(SYNC_DURATION, &labels).record(open_for.as_secs_f64());
}

pub fn watchdog_closed() {
    counter!(WATCHDOG_CLOSURES).increment(1);
}

/// One request to n8n: `accepted`, `rejected` (a permanent refusal) or `transient`.
pub fn trigger_attempt(outcome: &'static str, elapsed: Duration) {
    counter!(TRIGGER_ATTEMPTS, "outcome" => outcome).increment(1);
    histogram!(TRIGGER_DURATION).record(elapsed.as_secs_f64());
}

/// A schedule tick handled: `triggered` (a sync was created) or `skipped`, and how late.
pub fn scheduler_tick(outcome: &'static str, lag: Duration) {
    counter!(SCHEDULER_TICKS, "outcome" => outcome).increment(1);
    if outcome == "triggered" {
        histogram!(SCHEDULER_LAG).record(lag.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_integration_label_stops_growing_at_its_limit() {
        configure(&MetricsConfig {
            integration_labels: true,
            integration_label_limit: 2,
            ..MetricsConfig::default()
        });
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(integration_label(a), Some(a.to_string()));
        assert_eq!(integration_label(b), Some(b.to_string()));
        assert_eq!(integration_label(c).as_deref(), Some("other"));
        // One seen before the limit keeps its own label.
        assert_eq!(integration_label(a), Some(a.to_string()));
    }
}
