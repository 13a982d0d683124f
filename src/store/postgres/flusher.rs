//! Group commit for the PostgreSQL store. Writes commit asynchronously (`synchronous_commit =
//! off`): PostgreSQL answers before the commit is on disk. This thread then makes every write so
//! far durable at once with one synchronous commit on a connection of its own: its commit record
//! comes after theirs in the log, and flushing the log up to it flushes them too. One fsync
//! serves every write that arrived meanwhile, and the writer never waits for one.

use crate::store::Durability;
use crate::store::mirror::pg::{self, Target};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

/// Pause before trying again after a failed flush, doubling up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the writer and the flusher share.
pub(super) struct Progress {
    /// The epoch of the newest committed write.
    pub(super) epoch: AtomicU64,
    /// The epoch of the newest write sent to PostgreSQL: after an outage, the writes between
    /// what survived and this one were lost with it.
    sent: AtomicU64,
    /// `durability = "relaxed"`: a committed write counts as durable at once.
    relaxed: bool,
    pub(super) durability: watch::Sender<Durability>,
    /// Set to stop; notified with `wake` whenever a write commits.
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Progress {
    pub(super) fn new(epoch: u64, relaxed: bool) -> Arc<Progress> {
        let (durability, _) = watch::channel(Durability {
            durable: epoch,
            ..Durability::default()
        });
        Arc::new(Progress {
            epoch: AtomicU64::new(epoch),
            sent: AtomicU64::new(epoch),
            relaxed,
            durability,
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        })
    }

    /// Where the store stands when it opens: every write up to `epoch` is durable.
    pub(super) fn start_at(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
        self.sent.store(epoch, Ordering::SeqCst);
        self.publish(epoch, true);
    }

    /// Writes up to `epoch` are on their way to PostgreSQL.
    pub(super) fn sent(&self, epoch: u64) {
        self.sent.fetch_max(epoch, Ordering::SeqCst);
    }

    /// Writes up to `epoch` are settled: committed, or failed with nothing written. With
    /// `relaxed`, they count as durable at once.
    pub(super) fn committed(&self, epoch: u64) {
        self.epoch.fetch_max(epoch, Ordering::SeqCst);
        if self.relaxed {
            self.publish(epoch, true);
            return;
        }
        let _guard = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    /// Records a flush outcome; progress never goes backwards.
    pub(super) fn publish(&self, target: u64, ok: bool) {
        self.durability.send_if_modified(|d| {
            let before = *d;
            if ok {
                d.durable = d.durable.max(target);
                if d.failed.is_some_and(|f| f <= d.durable) {
                    d.failed = None;
                }
            } else if target > d.durable {
                d.failed = Some(target);
            }
            *d != before
        });
    }

    /// The connection broke with writes unsettled: whoever waits for them learns it now, and
    /// the recovery on the next connection says which survived.
    pub(super) fn interrupted(&self) {
        self.publish(self.sent.load(Ordering::SeqCst), false);
    }

    /// A group of writes (`first..=last`) was rolled back: it never becomes durable, and memory
    /// is rebuilt from the store (`recoveries`), since it already showed them.
    pub(super) fn rolled_back(&self, first: u64, last: u64) {
        self.durability.send_modify(|d| {
            d.lost = Some(widened(d.lost, first, last));
            d.recoveries += 1;
        });
        self.committed(last);
    }

    /// After an outage: the writes up to `survived` are in PostgreSQL and durable, later ones
    /// sent before it were lost with it. Memory is rebuilt from the store (`recoveries`).
    pub(super) fn recovered(&self, survived: u64) {
        let last = self.sent.load(Ordering::SeqCst);
        self.epoch.fetch_max(last, Ordering::SeqCst);
        let mut lost = 0;
        self.durability.send_modify(|d| {
            let first = d.durable.max(survived) + 1;
            if first <= last {
                lost = last + 1 - first;
                d.lost = Some(widened(d.lost, first, last));
            }
            d.durable = d.durable.max(last);
            d.failed = None;
            d.recoveries += 1;
        });
        if lost > 0 {
            log::warn!("PostgreSQL store: {lost} writes sent before the outage were lost with it");
        }
    }

    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Waits until a write is newer than `durable`; `None` once stopped.
    fn next_target(&self, durable: u64) -> Option<u64> {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *stopped {
                return None;
            }
            let epoch = self.epoch.load(Ordering::SeqCst);
            if epoch > durable {
                return Some(epoch);
            }
            stopped = self.wake.wait(stopped).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The lost range grown to take in `first..=last`: a range the service has not seen yet must
/// not be forgotten (it would publish the events of writes that were never stored), and the
/// writes between two losses at worst answer 503 although stored.
fn widened(lost: Option<(u64, u64)>, first: u64, last: u64) -> (u64, u64) {
    match lost {
        Some((a, b)) => (a.min(first), b.max(last)),
        None => (first, last),
    }
}

/// The flushing thread; stops when dropped.
pub(super) struct Flusher {
    progress: Arc<Progress>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    pub(super) fn start(
        target: Target,
        progress: Arc<Progress>,
        statement_timeout: Duration,
        flush_sql: String,
    ) -> std::io::Result<Flusher> {
        let shared = progress.clone();
        let thread = std::thread::Builder::new()
            .name("natter-pg-flush".into())
            .spawn(move || run(target, &shared, statement_timeout, &flush_sql))?;
        Ok(Flusher {
            progress,
            thread: Some(thread),
        })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.progress.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Flushes until stopped; `flush_sql` is the store's `EpochRow::flush`.
fn run(target: Target, progress: &Progress, statement_timeout: Duration, flush_sql: &str) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        log::error!("PostgreSQL store: cannot start the flusher's runtime");
        return;
    };
    let mut client: Option<tokio_postgres::Client> = None;
    let mut backoff = MIN_BACKOFF;
    let mut durable = progress.durability.borrow().durable;
    while let Some(goal) = progress.next_target(durable) {
        // A connection from before an outage fails its first flush: one retry on a new one.
        let started = std::time::Instant::now();
        let mut flushed =
            runtime.block_on(flush(&target, &mut client, statement_timeout, flush_sql));
        if flushed.is_err() {
            client = None;
            flushed = runtime.block_on(flush(&target, &mut client, statement_timeout, flush_sql));
        }
        // The group commit's metrics, as sled's flush reports them.
        crate::telemetry::fsync(started.elapsed(), flushed.is_ok());
        match flushed {
            // Only what PostgreSQL still holds counts: after its crash, writes the writer sent
            // before it may be gone, and only the writer's recovery may say which.
            Ok(seen) if seen < goal => {
                log::debug!("PostgreSQL store: flushed up to {seen} of {goal}");
                progress.publish(seen, true);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                durable = durable.max(seen).max(progress.durability.borrow().durable);
            }
            Ok(_) => {
                durable = goal;
                backoff = MIN_BACKOFF;
                progress.publish(goal, true);
            }
            Err(e) => {
                client = None;
                log::debug!("PostgreSQL store: flush failed: {e}");
                progress.publish(goal, false);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                // Whatever recovery decided is the new floor.
                durable = durable.max(progress.durability.borrow().durable);
            }
        }
    }
}

/// One synchronous commit, on `client` (connected first when missing or closed).
async fn flush(
    target: &Target,
    client: &mut Option<tokio_postgres::Client>,
    statement_timeout: Duration,
    flush_sql: &str,
) -> Result<u64, String> {
    if client
        .as_ref()
        .is_none_or(tokio_postgres::Client::is_closed)
    {
        let fresh = pg::connect(target).await.map_err(|e| e.to_string())?;
        fresh
            .batch_execute(&format!(
                "SET synchronous_commit = on; SET statement_timeout = {}",
                statement_timeout.as_millis()
            ))
            .await
            .map_err(|e| pg::PgError(e).to_string())?;
        *client = Some(fresh);
    }
    let Some(c) = client.as_ref() else {
        return Err("no connection".to_owned());
    };
    let row = c
        .query_one(flush_sql, &[])
        .await
        .map_err(|e| pg::PgError(e).to_string())?;
    Ok(super::id_of(row.get(0)))
}
