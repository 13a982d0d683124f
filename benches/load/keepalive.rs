//! Keepalives as the original React client sends them: `PUT /api/loggedonly/keepalive` 10 s after
//! the previous answer, per session, on a kept-alive connection of its own, counting the ones
//! that fail. Like Go's HTTP
//! client for a PUT, a keepalive that meets a connection the server is closing is not retried:
//! it fails, and the next one opens a new connection. With a [`Pool`] the sessions share a few
//! connections instead, as a browser's requests to one host do, and a keepalive that meets a
//! stale pooled connection is sent again once on a new one, as browsers do.

use crate::http::Conn;
use crate::pool::Pool;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The period of both original clients.
pub const PERIOD: Duration = Duration::from_secs(10);

/// What every session's keepalives came to.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
}

impl Tally {
    /// "F of S failed (first: ...)" for a report row.
    pub fn describe(&self) -> String {
        format!(
            "{} of {} keepalives failed{}",
            self.failed,
            self.sent,
            self.first_failure
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        )
    }

    pub fn clean(&self) -> bool {
        self.failed == 0 && self.sent > 0
    }
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

/// Keepalive loops, one per session, until `finish`.
pub struct Keepalives {
    addr: SocketAddr,
    /// Shared connections to send on; `None`: a connection per session.
    pool: Option<Arc<Pool>>,
    counts: Arc<Counts>,
    stop: watch::Sender<bool>,
    loops: Mutex<JoinSet<()>>,
    started: AtomicU64,
}

impl Keepalives {
    pub fn new(addr: SocketAddr) -> Arc<Keepalives> {
        Keepalives::with(addr, None)
    }

    /// Keepalives sent on the shared connections of `pool`.
    pub fn pooled(pool: Arc<Pool>) -> Arc<Keepalives> {
        Keepalives::with(pool.addr(), Some(pool))
    }

    fn with(addr: SocketAddr, pool: Option<Arc<Pool>>) -> Arc<Keepalives> {
        Arc::new(Keepalives {
            addr,
            pool,
            counts: Arc::default(),
            stop: watch::channel(false).0,
            loops: Mutex::new(JoinSet::new()),
            started: AtomicU64::new(0),
        })
    }

    /// Starts the loop of one session; first keepalives are spread over the first period.
    pub fn start(&self, cookie: String) {
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        // A fixed spread (golden ratio steps) so sessions do not send in lockstep.
        let offset = PERIOD.mul_f64((n as f64 * 0.618_033_988_7).fract());
        let (addr, counts, mut stop) = (self.addr, self.counts.clone(), self.stop.subscribe());
        let pool = self.pool.clone();
        let mut loops = self.loops.lock().unwrap_or_else(|e| e.into_inner());
        loops.spawn(async move {
            let mut conn = Conn::new(addr);
            let mut wait = offset;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => wait = PERIOD,
                    _ = stop.changed() => return,
                }
                counts.sent.fetch_add(1, Ordering::Relaxed);
                let path = "/api/loggedonly/keepalive";
                let answer = match &pool {
                    Some(pool) => pool.request("PUT", path, Some(&cookie), None).await,
                    None => conn.request("PUT", path, Some(&cookie), None).await,
                };
                let failure = match answer {
                    Ok(resp) if resp.status == 200 => None,
                    Ok(resp) => Some(format!("status {}", resp.status)),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(failure) = failure {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    let mut first = counts
                        .first_failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    first.get_or_insert(failure);
                }
            }
        });
    }

    /// Stops every loop (a keepalive in flight finishes) and adds up what they did.
    pub async fn finish(&self) -> Tally {
        let _ = self.stop.send(true);
        let mut loops = std::mem::take(&mut *self.loops.lock().unwrap_or_else(|e| e.into_inner()));
        while loops.join_next().await.is_some() {}
        Tally {
            sent: self.counts.sent.load(Ordering::Relaxed),
            failed: self.counts.failed.load(Ordering::Relaxed),
            first_failure: self
                .counts
                .first_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}
