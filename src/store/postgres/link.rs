//! The store's one writer connection, on a thread of its own: every call of the `Store` trait
//! becomes a job run there in order, so the changes the service makes under its lock reach
//! PostgreSQL in that order, and a synchronous caller never drives a second async runtime.

use super::super::{Pending, StoreError, StoreResult};
use super::epoch_row::EpochRow;
use super::flusher::Progress;
use super::node_tx::AfterCommit;
use super::pipeline::{self, Queued};
use crate::store::mirror::pg::{self, Target};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

/// A connection unused for this long is checked before a job uses it.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// An idle thread checks its connection this often (and makes a lost one again), jobs or not.
pub(super) const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// What a job gets: the connection (made when missing) and the runtime that drives it.
pub(super) struct Session {
    runtime: tokio::runtime::Runtime,
    target: Target,
    client: Option<Client>,
    /// Runs once on every new connection, before any job uses it (recovery after an outage).
    on_connect: OnConnect,
    /// Whether the last attempt failed, so an outage is logged once.
    down: bool,
    /// When a job last used the connection.
    last_used: std::time::Instant,
    /// Statements prepared on the current connection, by their SQL.
    prepared: Mutex<HashMap<String, Statement>>,
    /// Where the store records its epoch.
    pub(super) epoch_row: EpochRow,
    /// With several nodes: the transaction open across the jobs of the changes not yet committed.
    pub(super) open: Option<super::node_tx::OpenTx>,
    /// Whether the next transaction to begin holds a change.
    pub(super) change_next: bool,
}

/// The connection as jobs use it: each statement is prepared once per connection, so running it
/// again costs one round trip, not two.
pub(super) struct Conn<'a> {
    client: &'a Client,
    prepared: &'a Mutex<HashMap<String, Statement>>,
    /// Where this store records its epoch.
    pub(super) epoch_row: &'a EpochRow,
}

type Params<'p> = [&'p (dyn ToSql + Sync)];

impl<'a> Conn<'a> {
    pub(super) fn new(
        client: &'a Client,
        prepared: &'a Mutex<HashMap<String, Statement>>,
        epoch_row: &'a EpochRow,
    ) -> Conn<'a> {
        Conn {
            client,
            prepared,
            epoch_row,
        }
    }

    /// The statement for `sql`, prepared on this connection once.
    pub(super) async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        let cached = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
            .cloned();
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await?;
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    pub(super) async fn execute(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.execute(&statement, params).await
    }

    pub(super) async fn query(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query(&statement, params).await
    }

    pub(super) async fn query_one(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Row, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query_one(&statement, params).await
    }

    pub(super) async fn query_opt(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query_opt(&statement, params).await
    }

    /// Statements without parameters, sent in one message.
    pub(super) async fn batch(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(sql).await
    }

    /// Begins a transaction and takes its id, in one round trip.
    pub(super) async fn begin_with_xid(&self) -> Result<u64, tokio_postgres::Error> {
        let messages = self
            .client
            .simple_query("BEGIN; SELECT pg_current_xact_id()::text")
            .await?;
        Ok(messages
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
                _ => None,
            })
            .and_then(|xid| xid.parse().ok())
            .unwrap_or(0))
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Rolls back a failed change and still records its epoch: it is settled with nothing
    /// written, so the flusher may count it durable.
    pub(super) async fn roll_back(&self, epoch: u64) {
        let raise = self.epoch_row.raise(super::id_column(epoch));
        let _ = self.batch(&format!("ROLLBACK; {raise}")).await;
    }
}

/// What the thread runs: a call someone waits for, or a write queued for group commit.
pub(super) enum Job {
    Call(Box<dyn FnOnce(&mut Session) + Send>),
    Queued(Queued),
    /// With several nodes: the jobs after it belong to a new change, in a transaction of its own.
    NewChange,
}

/// The way into the thread, and the epoch the last write was given: both change together, so
/// epochs follow the order in which jobs arrive.
struct Entry {
    jobs: Option<Sender<Job>>,
    epoch: u64,
}

/// Prepares a new connection before jobs use it.
pub(super) type OnConnect =
    Box<dyn FnMut(&mut Client, &tokio::runtime::Runtime) -> StoreResult<()> + Send>;

/// The handle callers use; the thread ends when it is dropped.
pub(super) struct Link {
    entry: Mutex<Entry>,
    /// The epoch of the newest write given one, readable without the lock.
    epoch: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
    connected: Arc<AtomicBool>,
    /// Longest a caller waits for its job: PostgreSQL that does not answer is unavailable.
    call_timeout: Duration,
}

impl Link {
    /// Starts the thread; `on_connect` runs on each new connection before jobs use it, and
    /// queued writes report to `progress`.
    pub(super) fn start(
        target: Target,
        epoch_row: EpochRow,
        on_connect: OnConnect,
        progress: Arc<Progress>,
        call_timeout: Duration,
        after_commit: AfterCommit,
    ) -> StoreResult<Link> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the PostgreSQL runtime: {e}")))?;
        // Unbounded: the epoch is taken and the job sent under one lock, which must not wait
        // for the thread; every writer waits for its own write, which bounds the queue.
        let (sender, receiver) = mpsc::channel::<Job>();
        let connected = Arc::new(AtomicBool::new(false));
        let session = Session {
            runtime,
            target,
            client: None,
            on_connect,
            down: false,
            last_used: std::time::Instant::now(),
            prepared: Mutex::new(HashMap::new()),
            epoch_row,
            open: None,
            change_next: false,
        };
        let flag = connected.clone();
        let thread = std::thread::Builder::new()
            .name("natter-pg-store".into())
            .spawn(move || serve(session, receiver, flag, progress, after_commit))
            .map_err(|e| StoreError::Io(format!("cannot start the PostgreSQL thread: {e}")))?;
        Ok(Link {
            entry: Mutex::new(Entry {
                jobs: Some(sender),
                epoch: 0,
            }),
            epoch: AtomicU64::new(0),
            thread: Mutex::new(Some(thread)),
            connected,
            call_timeout,
        })
    }

    /// Sends a job, giving it the next epoch when `job` asks for one.
    fn send(&self, job: impl FnOnce(Option<u64>) -> Job, takes_epoch: bool) -> StoreResult<()> {
        let mut entry = self.entry.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = entry.epoch + 1;
        let job = job(takes_epoch.then_some(epoch));
        let jobs = entry.jobs.as_ref().ok_or(StoreError::Unavailable)?;
        jobs.send(job).map_err(|_| StoreError::Unavailable)?;
        if takes_epoch {
            entry.epoch = epoch;
            self.epoch.store(epoch, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Runs `job` on the connection's thread and waits for its answer.
    pub(super) fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Session) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.call_later(job)()
    }

    /// Queues `job` behind the jobs sent so far; its answer is waited for when the result is
    /// called.
    pub(super) fn call_later<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Session) -> StoreResult<T> + Send + 'static,
    ) -> Pending<T> {
        self.submit(move |session, _| job(session), false)
    }

    /// Runs a write on the connection's thread with the next epoch and waits for its answer.
    pub(super) fn call_write<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Session, u64) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.submit(job, true)()
    }

    /// Sends `job` (with the next epoch when `takes_epoch`); its answer is waited for when the
    /// result is called.
    fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Session, u64) -> StoreResult<T> + Send + 'static,
        takes_epoch: bool,
    ) -> Pending<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = self.send(
            |epoch| {
                let epoch = epoch.unwrap_or_default();
                Job::Call(Box::new(move |session| {
                    let _ = reply.send(job(session, epoch));
                }))
            },
            takes_epoch,
        );
        let limit = self.call_timeout;
        Box::new(move || {
            sent?;
            wait(&answer, limit)
        })
    }

    /// Queues a write for group commit with the next epoch, returning at once.
    pub(super) fn queue(&self, write: impl FnOnce(u64) -> Queued) -> StoreResult<()> {
        self.send(|epoch| Job::Queued(write(epoch.unwrap_or_default())), true)
    }

    /// With several nodes: the writes after this belong to a new change.
    pub(super) fn new_change(&self) -> StoreResult<()> {
        self.send(|_| Job::NewChange, false)
    }

    /// The epoch of the newest write given one.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Epochs continue from `epoch`, where the store stands (at open, before any write).
    pub(super) fn start_epochs_at(&self, epoch: u64) {
        let mut entry = self.entry.lock().unwrap_or_else(|e| e.into_inner());
        entry.epoch = epoch;
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// Whether the last job found PostgreSQL reachable.
    pub(super) fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Ends the thread after the jobs already queued.
    pub(super) fn stop(&self) {
        self.entry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .jobs
            .take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Blocks for a job's answer; on an async worker it tells tokio first, so the worker's other
/// tasks move elsewhere meanwhile.
pub(super) fn wait<T>(answer: &Receiver<StoreResult<T>>, limit: Duration) -> StoreResult<T> {
    let receive = || match answer.recv_timeout(limit) {
        Ok(result) => result,
        Err(RecvTimeoutError::Timeout) => {
            log::error!("PostgreSQL did not answer within {limit:?}");
            Err(StoreError::Unavailable)
        }
        Err(RecvTimeoutError::Disconnected) => Err(StoreError::Unavailable),
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(receive)
        }
        _ => receive(),
    }
}

/// Whether `e` means the connection is gone: closed, or PostgreSQL shutting down or refusing
/// (SQLSTATE classes 08 and 57P), which a closed socket follows.
pub(super) fn ends_connection(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || e.code()
            .is_some_and(|c| c.code().starts_with("08") || c.code().starts_with("57P"))
}

/// Runs jobs in the order they came; queued writes that arrived together go in one group.
fn serve(
    mut session: Session,
    jobs: Receiver<Job>,
    connected: Arc<AtomicBool>,
    progress: Arc<Progress>,
    after_commit: AfterCommit,
) {
    if session.epoch_row.is_node() {
        return super::node_tx::serve(session, jobs, connected, progress, after_commit);
    }
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match jobs.recv_timeout(RECONNECT_EVERY) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    // An idle connection is asked whether it still stands (nothing drives it
                    // between jobs) and a lost one is made again, so an outage is noticed and
                    // service comes back by itself, with no request to prompt it (the service
                    // refuses changes while the connection is known to be gone).
                    let _ = session.connect();
                    connected.store(session.is_connected(), Ordering::Relaxed);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        match job {
            Job::Call(call) => call(&mut session),
            // A single server groups changes freely: its order is its lock's.
            Job::NewChange => {}
            Job::Queued(first) => {
                let mut group = vec![first];
                while group.len() < pipeline::MAX_GROUP {
                    match jobs.try_recv() {
                        Ok(Job::Queued(write)) => group.push(write),
                        Ok(Job::NewChange) => {}
                        Ok(call) => {
                            next = Some(call);
                            break;
                        }
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
                pipeline::commit(&mut session, group, &progress);
            }
        }
        connected.store(session.is_connected(), Ordering::Relaxed);
    }
}

impl Session {
    pub(super) fn is_connected(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Runs `f` with the connection, connecting first when there is none.
    pub(super) fn run<T>(
        &mut self,
        f: impl AsyncFnOnce(&Conn<'_>) -> Result<T, tokio_postgres::Error>,
    ) -> StoreResult<T> {
        self.connect()?;
        let Some(client) = self.client.as_ref() else {
            return Err(StoreError::Unavailable);
        };
        let conn = Conn {
            client,
            prepared: &self.prepared,
            epoch_row: &self.epoch_row,
        };
        let outcome = self.runtime.block_on(f(&conn));
        outcome.map_err(|e| self.failed(e))
    }

    /// Runs `f` in one transaction that also records `epoch`, and commits it. BEGIN goes out
    /// together with `f`'s first statement and the epoch together with COMMIT, so a change of one
    /// statement costs two round trips.
    pub(super) fn write<T>(
        &mut self,
        epoch: u64,
        f: impl AsyncFnOnce(&Conn<'_>) -> Result<T, tokio_postgres::Error>,
    ) -> StoreResult<T> {
        if self.epoch_row.is_node() {
            return self.write_in_open(epoch, f);
        }
        self.run(async move |conn| {
            let (begun, out) = futures_util::future::join(conn.batch("BEGIN"), f(conn)).await;
            let outcome = match (begun, out) {
                (Ok(()), Ok(out)) => conn
                    .batch(&format!(
                        "{}; COMMIT",
                        conn.epoch_row.set(super::id_column(epoch))
                    ))
                    .await
                    .map(|()| out),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            if outcome.is_err() && !conn.client.is_closed() {
                // Nothing of the change stays; the error is what the caller learns.
                conn.roll_back(epoch).await;
            }
            outcome
        })
    }

    /// Maps a failure: a lost connection is an outage (logged once, retried at the next job);
    /// anything else is an error for this call only.
    fn failed(&mut self, e: tokio_postgres::Error) -> StoreError {
        if self.client.as_ref().is_none_or(Client::is_closed) || ends_connection(&e) {
            self.client = None;
            if !self.down {
                self.down = true;
                log::error!("PostgreSQL store: lost the connection: {}", pg::PgError(e));
            }
            return StoreError::Unavailable;
        }
        StoreError::Io(pg::PgError(e).to_string())
    }

    pub(super) fn connect(&mut self) -> StoreResult<()> {
        // Between jobs nothing drives the connection, so one idle for a while is asked first:
        // a server that restarted meanwhile is noticed before a statement of a job is sent.
        let idle = self.last_used.elapsed() > IDLE_CHECK;
        self.last_used = std::time::Instant::now();
        if let Some(client) = &self.client {
            if !client.is_closed()
                && (!idle || self.runtime.block_on(client.simple_query("")).is_ok())
            {
                return Ok(());
            }
            if !self.down {
                self.down = true;
                log::error!("PostgreSQL store: lost the connection");
            }
        }
        self.client = None;
        let connected = self.runtime.block_on(pg::connect(&self.target));
        let mut client = match connected {
            Ok(client) => client,
            Err(e) => {
                if !self.down {
                    self.down = true;
                    log::error!(
                        "PostgreSQL store: cannot connect to {}: {e}",
                        pg::describe(&self.target)
                    );
                }
                return Err(StoreError::Unavailable);
            }
        };
        (self.on_connect)(&mut client, &self.runtime)?;
        // Statements prepared on the old connection do not exist on this one.
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        if self.down {
            log::info!(
                "PostgreSQL store: connected to {} again",
                pg::describe(&self.target)
            );
        }
        self.down = false;
        self.client = Some(client);
        Ok(())
    }
}
