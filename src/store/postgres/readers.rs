//! The connections reads run on (`postgres_pool_size`): a bb8 pool on a thread of its own, so a
//! sign-in's account lookup or an export does not queue behind the writer. Reads that must see
//! writes still queued for group commit (memberships, sessions, history) stay on the writer.

use super::super::{StoreError, StoreResult};
use super::epoch_row::EpochRow;
use super::link::{Conn, ends_connection, wait};
use crate::store::mirror::pg::{self, Target};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{Client, Statement};

/// Pooled connections only read: they never record an epoch.
static READ_ONLY: EpochRow = EpochRow::Single;

/// Longest a read waits for a free connection before it counts PostgreSQL unavailable.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled connection and the statements prepared on it.
pub(super) struct Pooled {
    client: Client,
    prepared: Mutex<HashMap<String, Statement>>,
}

/// Opens pooled connections: read-only, with the statement timeout.
struct Manager {
    target: Target,
    statement_timeout: Duration,
}

impl bb8::ManageConnection for Manager {
    type Connection = Pooled;
    type Error = String;

    async fn connect(&self) -> Result<Pooled, String> {
        let client = pg::connect(&self.target).await.map_err(|e| e.to_string())?;
        client
            .batch_execute(&format!(
                "SET default_transaction_read_only = on; SET statement_timeout = {}",
                self.statement_timeout.as_millis()
            ))
            .await
            .map_err(|e| pg::PgError(e).to_string())?;
        Ok(Pooled {
            client,
            prepared: Mutex::new(HashMap::new()),
        })
    }

    async fn is_valid(&self, conn: &mut Pooled) -> Result<(), String> {
        conn.client
            .simple_query("")
            .await
            .map(drop)
            .map_err(|e| pg::PgError(e).to_string())
    }

    fn has_broken(&self, conn: &mut Pooled) -> bool {
        conn.client.is_closed()
    }
}

type Pool = bb8::Pool<Manager>;
type Job = Box<dyn FnOnce(Pool) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// The handle reads go through; the thread ends when it is dropped.
pub(super) struct Readers {
    jobs: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    call_timeout: Duration,
}

impl Readers {
    /// Starts the pool's thread; connections open as reads need them, up to `size`.
    pub(super) fn start(
        target: Target,
        size: usize,
        statement_timeout: Duration,
        call_timeout: Duration,
    ) -> StoreResult<Readers> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the PostgreSQL readers: {e}")))?;
        let (sender, mut receiver) = mpsc::unbounded_channel::<Job>();
        let manager = Manager {
            target,
            statement_timeout,
        };
        let size = u32::try_from(size).unwrap_or(u32::MAX).max(1);
        let thread = std::thread::Builder::new()
            .name("natter-pg-read".into())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let pool = bb8::Pool::builder()
                        .max_size(size)
                        .min_idle(0)
                        .connection_timeout(CHECKOUT_TIMEOUT)
                        .build_unchecked(manager);
                    while let Some(job) = receiver.recv().await {
                        tokio::task::spawn_local(job(pool.clone()));
                    }
                });
            })
            .map_err(|e| StoreError::Io(format!("cannot start the PostgreSQL readers: {e}")))?;
        Ok(Readers {
            jobs: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            call_timeout,
        })
    }

    /// Runs `f` on a pooled connection and waits for its answer.
    pub(super) fn read<T: Send + 'static>(
        &self,
        f: impl AsyncFnOnce(&Conn<'_>) -> Result<T, tokio_postgres::Error> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |pool: Pool| {
            Box::pin(async move {
                let outcome = match pool.get().await {
                    Ok(pooled) => {
                        let conn = Conn::new(&pooled.client, &pooled.prepared, &READ_ONLY);
                        f(&conn).await.map_err(|e| {
                            if ends_connection(&e) || pooled.client.is_closed() {
                                StoreError::Unavailable
                            } else {
                                StoreError::Io(pg::PgError(e).to_string())
                            }
                        })
                    }
                    Err(e) => {
                        log::debug!("PostgreSQL store: no connection to read on: {e:?}");
                        Err(StoreError::Unavailable)
                    }
                };
                let _ = reply.send(outcome);
            })
        });
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let sender = jobs.as_ref().ok_or(StoreError::Unavailable)?;
        sender.send(job).map_err(|_| StoreError::Unavailable)?;
        drop(jobs);
        wait(&answer, self.call_timeout)
    }

    /// Ends the thread and closes the connections.
    pub(super) fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.stop();
    }
}
