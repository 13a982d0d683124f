//! Serves the warp routes over HTTP/1.1 with our own accept loop, because `warp::serve` offers
//! neither a header read timeout (hyper needs a timer for it) nor connection caps.
//!
//! - `phases` closes a connection whose request headers are not complete within
//!   `header_read_timeout` of opening or of the request's first byte, and a kept-alive connection
//!   that stays idle between requests for `idle_timeout`. Neither runs while a request is being
//!   handled, so parked polls are safe.
//! - A connection whose response makes no progress for `write_timeout` (a client that stopped
//!   reading) is closed, so it cannot keep its slot forever.
//! - `listener::ConnectionLimits` caps open connections in all and per peer address.
//! - Graceful shutdown: stop accepting, let in-flight requests finish, close idle connections.
//!
//! HTTP/2 is not offered: hyper-util's HTTP/1-or-2 detection reads the first bytes without any
//! timeout, and browsers only speak HTTP/2 over TLS, which a reverse proxy terminates.

pub mod client_addr;
pub mod listener;
pub mod metrics;
mod own_head;
mod phases;
pub mod ratelimit;

use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use listener::ConnectionLimits;
use phases::{ConnectionPhase, PhasedBody, PhasedStream};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_io_timeout::TimeoutStream;
use tower_service::Service;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// The TCP peer of the connection a request came in on, for `warp::ext::optional`
/// (`warp::addr::remote()` only works under `warp::serve`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Request line and headers together may take this much; larger ones are refused by hyper.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How long a connection may stall.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Request headers must be complete this long after the connection opens or after the
    /// first byte of a later request.
    pub header_read: Duration,
    /// A kept-alive connection may wait this long for its next request.
    pub idle: Duration,
    /// A pending write that makes no progress for this long closes the connection.
    pub write: Duration,
}

/// Accepts and serves connections until `shutdown` resolves, then waits for open connections
/// to finish their requests.
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    limits: ConnectionLimits,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // `phases` times request heads and idle connections apart; hyper's timer would do both alike.
        .header_read_timeout(None)
        // Bounds what one connection's unfinished headers can hold (hyper's default is ~400 KiB).
        .max_buf_size(MAX_HEADER_BYTES);
    let service = warp::service(routes);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = limits.free_slot() => slot,
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(admission) = limits.admit(slot, peer.ip()) else {
            // Over the per-address cap: closed at once, never queued.
            drop(stream);
            continue;
        };
        let service = service.clone();
        let phase = ConnectionPhase::new();
        let stream = PhasedStream::new(stream, phase.clone(), timeouts.header_read, timeouts.idle);
        // Every request learns the peer address, then goes through the warp filter.
        let per_request = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            phase.request_started();
            own_head::own_head(&mut request);
            request.extensions_mut().insert(PeerAddr(peer));
            let answer = service.clone().call(request);
            let phase = phase.clone();
            async move { Ok::<_, Infallible>(answer.await?.map(|body| PhasedBody::new(body, phase))) }
        });
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(timeouts.write));
        let io = TokioIo::new(Box::pin(stream));
        let conn = graceful.watch(http.serve_connection(io, per_request));
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                // Header timeouts and clients that hang up land here; not worth a warning each.
                log::debug!("connection from {peer} ended: {err}");
            }
            drop(admission);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Accept errors: a connection that died before we took it is nothing; running out of file
/// descriptors is logged, and accepting pauses briefly so the loop does not spin.
async fn accept_failed(err: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    log::error!("accepting a connection failed: {err}");
    tokio::time::sleep(Duration::from_millis(500)).await;
}
