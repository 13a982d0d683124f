//! A node's writes when several nodes share the database (`cluster = true`): each change the
//! service makes is one transaction, begun at its first write and committed at its seal, which
//! writes its row of the shared log; so a change, its log row and this node's epoch commit
//! together. A waited write inside it (a new account, a chat) runs in a savepoint, so its refusal
//! undoes only itself. Changes are not grouped: a transaction's id, taken as it begins, orders
//! its events in the log, so a change must not join a transaction begun before it (it would be
//! ordered before changes other nodes committed meanwhile). Writes made outside any change (the
//! outbox's, activity reports) commit on their own once the writer is idle.

use super::flusher::Progress;
use super::link::{Job, RECONNECT_EVERY, Session};
use super::pipeline::Queued;
use crate::store::changes::PLACE_BITS;
use crate::store::{StoreError, StoreResult};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An open transaction of writes made outside a change commits once the writer is idle this long.
const IDLE_COMMIT: Duration = Duration::from_millis(20);
/// A change left unsealed this long (it never is: unlocking seals it) commits all the same.
const UNSEALED_COMMIT: Duration = Duration::from_secs(1);

/// What runs after each commit: the tail's ring (`tail::Tail::ring`), once it is running.
pub(super) type AfterCommit = Arc<Mutex<Option<Box<dyn Fn() + Send>>>>;

/// The transaction open on the writer connection.
pub(super) struct OpenTx {
    /// Epochs of its first and newest writes.
    first: u64,
    last: u64,
    /// Its id (`pg_current_xact_id`), fetched as it began: message ids and event ids derive from it.
    pub(super) xid: u64,
    /// The next free place for an event or a message id within it.
    places: u32,
    /// Whether it holds a change (else only writes made outside one).
    in_change: bool,
    /// When it began.
    began: std::time::Instant,
}

/// Runs jobs in order inside open transactions until the senders are gone.
pub(super) fn serve(
    mut session: Session,
    jobs: Receiver<Job>,
    connected: Arc<AtomicBool>,
    progress: Arc<Progress>,
    after_commit: AfterCommit,
) {
    loop {
        let wait = match &session.open {
            Some(open) if open.in_change => UNSEALED_COMMIT.saturating_sub(open.began.elapsed()),
            Some(_) => IDLE_COMMIT,
            None => RECONNECT_EVERY,
        };
        let job = match jobs.recv_timeout(wait) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                if session.open.is_some() {
                    commit(&mut session, &progress, &after_commit);
                } else {
                    let _ = session.connect();
                }
                connected.store(session.is_connected(), Ordering::Relaxed);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                commit(&mut session, &progress, &after_commit);
                return;
            }
        };
        match job {
            Job::Call(call) => call(&mut session),
            Job::Queued(write) => run_queued(&mut session, write, &progress, &after_commit),
            Job::NewChange => {
                // What is open holds only writes made outside a change: they go first.
                commit(&mut session, &progress, &after_commit);
                session.change_next = true;
            }
        }
        if session.open.is_some() && !session.is_connected() {
            // The connection went with the transaction: recovery on the next one decides.
            session.open = None;
            progress.interrupted();
        }
        connected.store(session.is_connected(), Ordering::Relaxed);
    }
}

impl Session {
    /// Begins a transaction unless one is open, and counts `epoch` in it.
    fn begin(&mut self, epoch: u64) -> StoreResult<&mut OpenTx> {
        if self.open.is_none() {
            let xid = self.run(async |conn| conn.begin_with_xid().await)?;
            self.open = Some(OpenTx {
                first: epoch,
                last: epoch,
                xid,
                places: 0,
                in_change: std::mem::take(&mut self.change_next),
                began: std::time::Instant::now(),
            });
        }
        let open = self.open.as_mut().ok_or(StoreError::Unavailable)?;
        if epoch > 0 {
            if open.first == 0 {
                open.first = epoch;
            }
            open.last = open.last.max(epoch);
        }
        Ok(open)
    }

    /// A waited write inside the open transaction, in a savepoint: refused, it undoes only itself.
    pub(super) fn write_in_open<T>(
        &mut self,
        epoch: u64,
        f: impl AsyncFnOnce(&super::Conn<'_>) -> Result<T, tokio_postgres::Error>,
    ) -> StoreResult<T> {
        self.begin(epoch)?;
        self.run(async move |conn| {
            conn.batch("SAVEPOINT change").await?;
            match f(conn).await {
                Ok(out) => {
                    conn.batch("RELEASE SAVEPOINT change").await?;
                    Ok(out)
                }
                Err(e) => {
                    if !conn.is_closed() {
                        let _ = conn.batch("ROLLBACK TO SAVEPOINT change").await;
                    }
                    Err(e)
                }
            }
        })
    }

    /// The transaction id and a free place in it: a message id that follows commit order
    /// (`changes::event_position`).
    pub(super) fn take_place(&mut self) -> StoreResult<(u64, u32)> {
        let open = self.begin(0)?;
        let place = open.places;
        open.places += 1;
        Ok((open.xid, place))
    }
}

/// Runs a queued write inside the open transaction; a change's seal writes its log row and
/// commits in the same flight.
fn run_queued(
    session: &mut Session,
    write: Queued,
    progress: &Progress,
    after_commit: &AfterCommit,
) {
    let events = write.log.as_ref().map_or(0, |log| log.events);
    let crowded = session
        .open
        .as_ref()
        .is_some_and(|o| u64::from(o.places) + u64::from(events) + 1 >= 1 << PLACE_BITS);
    if crowded {
        // Event ids have room for 2^20 places a transaction.
        commit(session, progress, after_commit);
    }
    progress.sent(write.epoch);
    let (place, first, last) = match session.begin(write.epoch) {
        Ok(open) => (open.places, open.first, open.last),
        Err(_) => {
            session.open = None;
            progress.interrupted();
            return;
        }
    };
    let node = session.epoch_row.node().unwrap_or_default().to_owned();
    let epoch = super::id_column(write.epoch);
    let place_column = i32::try_from(place).unwrap_or(i32::MAX);
    let written = crate::model::now();
    let finish = format!("{}; COMMIT", session.epoch_row.set(super::id_column(last)));
    let outcome = session.run(async |conn| {
        for statement in &write.statements {
            statement.run(conn).await?;
        }
        if let Some(log) = &write.log {
            // Both go out before either answer is read. A refused row makes COMMIT a rollback.
            let (inserted, committed) = futures_util::future::join(
                conn.execute(
                    "INSERT INTO cluster_log (idx, node, epoch, written, body) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[&place_column, &node, &epoch, &written, &log.body],
                ),
                conn.batch(&finish),
            )
            .await;
            inserted?;
            committed?;
        }
        Ok(())
    });
    match outcome {
        Ok(()) if write.log.is_some() => {
            session.open = None;
            progress.committed(last);
            ring(after_commit);
        }
        Ok(()) => {}
        Err(StoreError::Unavailable) => {
            session.open = None;
            progress.interrupted();
        }
        Err(e) if write.log.is_some() => {
            // The COMMIT after a refused row rolled the transaction back.
            log::error!("PostgreSQL store: a change of this node was rolled back: {e}");
            session.open = None;
            progress.rolled_back(first, last);
        }
        Err(e) => {
            log::error!("PostgreSQL store: a transaction of this node was rolled back: {e}");
            roll_back(session, progress);
        }
    }
}

/// Rolls the open transaction back: its writes are lost (503 to their callers, memory rebuilt).
fn roll_back(session: &mut Session, progress: &Progress) {
    let Some(open) = session.open.take() else {
        return;
    };
    let raise = session.epoch_row.raise(super::id_column(open.last));
    let _ = session.run(async |conn| conn.batch(&format!("ROLLBACK; {raise}")).await);
    progress.rolled_back(open.first, open.last);
}

/// Commits the open transaction with this node's epoch, then rings the tail.
fn commit(session: &mut Session, progress: &Progress, after_commit: &AfterCommit) {
    let Some(open) = session.open.take() else {
        return;
    };
    let finish = format!(
        "{}; COMMIT",
        session.epoch_row.set(super::id_column(open.last))
    );
    match session.run(async |conn| conn.batch(&finish).await) {
        Ok(()) => {
            progress.committed(open.last);
            ring(after_commit);
        }
        Err(StoreError::Unavailable) => progress.interrupted(),
        Err(e) => {
            log::error!("PostgreSQL store: a commit of this node failed: {e}");
            progress.rolled_back(open.first, open.last);
        }
    }
}

/// Rings the log's reader after a commit of this node.
fn ring(after_commit: &AfterCommit) {
    if let Some(ring) = after_commit
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        ring();
    }
}
