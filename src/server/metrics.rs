//! The opt-in Prometheus listener (docs/operations.md, Metrics): `GET /metrics` on a listener
//! of its own, started from `lib.rs` when `metrics.listen` is set. What it serves is recorded
//! by `telemetry`; the figures read at scrape time come from a closure, so this listener knows
//! nothing of the service behind them.

use super::Timeouts;
use crate::server::listener::ConnectionLimits;
use crate::telemetry::{self, Sample};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use warp::Filter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// The metrics listener is for one or two scrapers, not for the public.
const MAX_CONNECTIONS: usize = 64;
const MAX_CONNECTIONS_PER_IP: usize = 16;

/// Binds the metrics listener (before anything starts, so a taken port stops natter early).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (metrics.listen): {e}"))
}

/// Serves `GET /metrics` on `listener` until the returned tasks are aborted; each scrape calls
/// `sample` once. The second task folds histogram samples into their buckets between scrapes.
pub fn spawn(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    sample: impl Fn() -> Sample + Send + Sync + 'static,
    timeouts: Timeouts,
) -> Vec<tokio::task::JoinHandle<()>> {
    let sample = Arc::new(sample);
    let scrape_handle = handle.clone();
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .then(move || {
            let (handle, sample) = (scrape_handle.clone(), sample.clone());
            async move {
                // Sampling takes short locks and counts the mail outbox: off the async workers.
                let render = move || telemetry::render(&handle, &sample());
                match tokio::task::spawn_blocking(render).await {
                    Ok(text) => text_response(StatusCode::OK, text),
                    Err(_) => text_response(StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                }
            }
        });
    let not_found = warp::any().map(|| text_response(StatusCode::NOT_FOUND, "not found\n".into()));
    let routes = metrics.or(not_found).unify().boxed();
    let limits = ConnectionLimits::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP, Vec::new());
    let server = tokio::spawn(super::serve(
        listener,
        routes,
        limits,
        timeouts,
        std::future::pending(),
    ));
    let upkeep = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            ticker.tick().await;
            handle.run_upkeep();
        }
    });
    vec![server, upkeep]
}

fn text_response(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
