//! Prometheus metrics recording (docs/operations.md, Metrics): the series natter exports, the
//! process-wide recorder, and the helpers that record into it. A leaf: it imports nothing of
//! natter's, so the store and the API can record without depending on whoever serves
//! `/metrics` (`server::metrics`, started from `lib.rs` when `metrics.listen` is set).
//!
//! Two kinds of series, so collecting costs the request path next to nothing:
//! - **Recorded** where they happen: requests and their latency, messages stored, fsync
//!   latency. Each helper here first checks one atomic flag, so with metrics off they do
//!   nothing at all.
//! - **Sampled** when Prometheus scrapes: everything that needs a lock to read (online users,
//!   sessions, queues, parked polls, the hub's counters, the mail outbox, the mirror) arrives
//!   once per scrape as a plain `Sample` of numbers, never updated on every event.
//!
//! The recorder is process-wide (the `metrics` facade has one global recorder), so one natter
//! process serves one set of series. Every series is declared once in `SERIES`, with the help
//! text that `/metrics` and docs/operations.md show.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// True once the Prometheus recorder is installed; every recording helper checks it first.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// The process-wide recorder's handle, installed once.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

pub const HTTP_REQUESTS: &str = "natter_http_requests_total";
pub const HTTP_DURATION: &str = "natter_http_request_duration_seconds";
pub const MESSAGES_STORED: &str = "natter_messages_stored_total";
pub const FSYNC_DURATION: &str = "natter_store_fsync_duration_seconds";
pub const FSYNC_FAILURES: &str = "natter_store_fsync_failures_total";
pub const ONLINE_USERS: &str = "natter_online_users";
pub const SESSIONS: &str = "natter_sessions";
pub const SESSIONS_ONLINE: &str = "natter_sessions_online";
pub const EVENT_QUEUES: &str = "natter_event_queues";
pub const PARKED_POLLS: &str = "natter_parked_polls";
pub const EVENTS_BUFFERED: &str = "natter_events_buffered";
pub const EVENTS_DELIVERED: &str = "natter_events_delivered_total";
pub const QUEUE_OVERFLOWS: &str = "natter_event_queue_overflows_total";
pub const QUEUES_EVICTED: &str = "natter_event_queues_evicted_total";
pub const MAIL_OUTBOX: &str = "natter_mail_outbox";
pub const MIRROR_STATE: &str = "natter_mirror_state";
pub const MIRROR_OUTBOX: &str = "natter_mirror_outbox_entries";
pub const MIRROR_LAG: &str = "natter_mirror_lag_seconds";
pub const CLUSTER_LOG_LAG: &str = "natter_cluster_log_lag_seconds";
pub const BUILD_INFO: &str = "natter_build_info";

/// A series' Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every series natter exports: name, type, labels, meaning (docs/operations.md's table says
/// the same).
pub const SERIES: &[(&str, Kind, &str, &str)] = &[
    (
        HTTP_REQUESTS,
        Kind::Counter,
        "route, status",
        "HTTP requests answered, by route pattern and status code",
    ),
    (
        HTTP_DURATION,
        Kind::Histogram,
        "route",
        "time from request to response headers, by route pattern (long polls include their wait)",
    ),
    (
        MESSAGES_STORED,
        Kind::Counter,
        "",
        "messages stored since start, bot replies included",
    ),
    (
        FSYNC_DURATION,
        Kind::Histogram,
        "",
        "time one group-commit flush (fsync) of storage took",
    ),
    (
        FSYNC_FAILURES,
        Kind::Counter,
        "",
        "storage flushes that failed",
    ),
    (
        ONLINE_USERS,
        Kind::Gauge,
        "",
        "users with at least one online session",
    ),
    (SESSIONS, Kind::Gauge, "", "valid sessions, online or not"),
    (SESSIONS_ONLINE, Kind::Gauge, "", "online sessions"),
    (
        EVENT_QUEUES,
        Kind::Gauge,
        "kind",
        "open event queues: kind=\"default\" (legacy /poll) or kind=\"explicit\" (/events)",
    ),
    (
        PARKED_POLLS,
        Kind::Gauge,
        "",
        "long polls waiting for an event right now",
    ),
    (
        EVENTS_BUFFERED,
        Kind::Gauge,
        "",
        "events held in queues, not yet acknowledged, counted once per queue",
    ),
    (
        EVENTS_DELIVERED,
        Kind::Counter,
        "",
        "events put into queues since start, counted once per receiving queue",
    ),
    (
        QUEUE_OVERFLOWS,
        Kind::Counter,
        "",
        "event queues that overflowed event_queue_capacity since start",
    ),
    (
        QUEUES_EVICTED,
        Kind::Counter,
        "",
        "explicit queues dropped to stay within max_queues_per_session",
    ),
    (
        MAIL_OUTBOX,
        Kind::Gauge,
        "",
        "mails waiting in the durable outbox for delivery",
    ),
    (
        MIRROR_STATE,
        Kind::Gauge,
        "state",
        "PostgreSQL mirror state: 1 for the current one of off, ok, behind, down",
    ),
    (
        MIRROR_OUTBOX,
        Kind::Gauge,
        "",
        "changes waiting in the mirror outbox",
    ),
    (
        MIRROR_LAG,
        Kind::Gauge,
        "",
        "age of the oldest change not yet in PostgreSQL (0 when caught up)",
    ),
    (
        CLUSTER_LOG_LAG,
        Kind::Gauge,
        "",
        "with several nodes: seconds since this node last read the shared log (0 on a single server)",
    ),
    (
        BUILD_INFO,
        Kind::Gauge,
        "version",
        "always 1; the version label names the running natter",
    ),
];

/// Request latency buckets (seconds): fast answers up to long polls near `poll_timeout`.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// fsync latency buckets (seconds).
const FSYNC_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Whether metrics are being collected in this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle).
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), REQUEST_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(FSYNC_DURATION.into()), FSYNC_BUCKETS))
        .map_err(|e| format!("cannot set up metrics: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    // Fails only if another recorder got there first (a second start in one test process).
    if metrics::set_global_recorder(recorder).is_err() {
        return HANDLE
            .get()
            .cloned()
            .ok_or_else(|| "another metrics recorder is already installed".to_owned());
    }
    let handle = HANDLE.get_or_init(|| handle).clone();
    describe_all();
    ENABLED.store(true, Ordering::Relaxed);
    // Series that exist before anything happened, so dashboards see zeros, not gaps.
    counter!(MESSAGES_STORED).absolute(0);
    counter!(FSYNC_FAILURES).absolute(0);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    record_mirror("off", 0, Duration::ZERO);
    Ok(handle)
}

fn describe_all() {
    for &(name, kind, _, help) in SERIES {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, metrics::Unit::Seconds, help),
        }
    }
}

/// One answered HTTP request with its status code. `route` is a route table pattern (or
/// `healthz`, `assets`, `unknown`), never the raw path, which can carry tokens.
pub fn request(route: &'static str, status: u16, elapsed: Duration) {
    if !enabled() {
        return;
    }
    counter!(HTTP_REQUESTS, "route" => route, "status" => status_label(status)).increment(1);
    histogram!(HTTP_DURATION, "route" => route).record(elapsed.as_secs_f64());
}

/// The statuses natter answers with, without allocating; anything else is formatted.
fn status_label(status: u16) -> metrics::SharedString {
    let label = match status {
        200 => "200",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        503 => "503",
        other => return other.to_string().into(),
    };
    label.into()
}

/// One message stored.
pub fn message_stored() {
    if enabled() {
        counter!(MESSAGES_STORED).increment(1);
    }
}

/// One storage flush: how long it took, or that it failed.
pub fn fsync(elapsed: Duration, ok: bool) {
    if !enabled() {
        return;
    }
    if ok {
        histogram!(FSYNC_DURATION).record(elapsed.as_secs_f64());
    } else {
        counter!(FSYNC_FAILURES).increment(1);
    }
}

/// Every state the mirror gauge has a series for (the mirror's own names for its states).
pub const MIRROR_STATES: [&str; 4] = ["off", "ok", "behind", "down"];

/// The PostgreSQL mirror's state (one of `MIRROR_STATES`), outbox length and lag (the age of
/// the oldest change not yet applied, zero when caught up). Does nothing while metrics are off.
fn record_mirror(state: &str, outbox_entries: u64, lag: Duration) {
    if !enabled() {
        return;
    }
    for each in MIRROR_STATES {
        let value = if each == state { 1.0 } else { 0.0 };
        gauge!(MIRROR_STATE, "state" => each).set(value);
    }
    gauge!(MIRROR_OUTBOX).set(outbox_entries as f64);
    gauge!(MIRROR_LAG).set(lag.as_secs_f64());
}

/// What a scrape reads from the running server: values behind locks, read once per scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub online_users: usize,
    pub sessions: usize,
    pub sessions_online: usize,
    pub default_queues: usize,
    pub explicit_queues: usize,
    pub parked_polls: usize,
    pub events_buffered: usize,
    pub events_delivered: u64,
    pub queue_overflows: u64,
    pub queues_evicted: u64,
    /// `None` when the outbox could not be read (the gauge keeps its last value).
    pub mail_outbox: Option<usize>,
    /// The mirror's state, one of `MIRROR_STATES`.
    pub mirror_state: &'static str,
    pub mirror_outbox: u64,
    /// Age of the oldest change not yet in PostgreSQL; zero when caught up.
    pub mirror_lag: Duration,
    /// Several nodes: how long ago this node last read the shared log (zero on a single server).
    pub log_lag: Duration,
}

impl Sample {
    fn publish(&self) {
        gauge!(ONLINE_USERS).set(self.online_users as f64);
        gauge!(SESSIONS).set(self.sessions as f64);
        gauge!(SESSIONS_ONLINE).set(self.sessions_online as f64);
        gauge!(EVENT_QUEUES, "kind" => "default").set(self.default_queues as f64);
        gauge!(EVENT_QUEUES, "kind" => "explicit").set(self.explicit_queues as f64);
        gauge!(PARKED_POLLS).set(self.parked_polls as f64);
        gauge!(EVENTS_BUFFERED).set(self.events_buffered as f64);
        counter!(EVENTS_DELIVERED).absolute(self.events_delivered);
        counter!(QUEUE_OVERFLOWS).absolute(self.queue_overflows);
        counter!(QUEUES_EVICTED).absolute(self.queues_evicted);
        if let Some(mails) = self.mail_outbox {
            gauge!(MAIL_OUTBOX).set(mails as f64);
        }
        record_mirror(self.mirror_state, self.mirror_outbox, self.mirror_lag);
        gauge!(CLUSTER_LOG_LAG).set(self.log_lag.as_secs_f64());
    }
}

/// The `/metrics` text: publishes this scrape's sample, then renders every series.
pub fn render(handle: &PrometheusHandle, sample: &Sample) -> String {
    sample.publish();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_names_are_unique_and_prometheus_style() {
        let mut names: Vec<&str> = SERIES.iter().map(|s| s.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SERIES.len());
        for &(name, kind, _, _) in SERIES {
            assert!(name.starts_with("natter_"), "{name}");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
            assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
        }
    }

    #[test]
    fn the_operations_page_documents_every_series() {
        let page = include_str!("../docs/operations.md");
        for &(name, _, _, _) in SERIES {
            assert!(page.contains(&format!("`{name}`")), "{name} undocumented");
        }
    }

    #[test]
    fn recording_imports_nothing_of_natters() {
        // A leaf: the store records here, so an import of natter's would run back up the layers.
        let source = include_str!("telemetry.rs");
        let product = source.split("#[cfg(test)]").next().unwrap_or(source);
        for upward in ["crate::", "super::", "natter::", "warp", "hyper"] {
            assert!(!product.contains(upward), "telemetry.rs names {upward}");
        }
    }

    #[test]
    fn status_labels_are_the_codes() {
        assert_eq!(&*status_label(200), "200");
        assert_eq!(&*status_label(418), "418");
    }
}
