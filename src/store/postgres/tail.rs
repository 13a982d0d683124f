//! Each node's reader of the shared change log (`cluster_log`, docs/design.md, Several nodes):
//! a thread of its own reads the rows after where it stands in (xid, idx) order, only below
//! the oldest running transaction, makes them durable, and hands them out in order. A commit
//! on any node rings the others with an empty `NOTIFY natter_log`; a slow timer covers a ring
//! that was lost.

use super::super::{StoreError, StoreResult};
use super::link::ends_connection;
use crate::store::mirror::pg::{self, ConnectError, PgError, Target};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Client, Config, Connection, NoTls, Notification, Socket};

/// Where a reader stands in the log: (xid as u64, idx). Ordered; Default = before everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub xid: u64,
    pub idx: i32,
}

/// One row of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRow {
    pub cursor: Cursor,
    pub node: String,
    pub epoch: u64,
    pub body: Vec<u8>,
}

/// What receives the rows read, in log order, on the tail's thread.
pub type Deliver = Box<dyn FnMut(Vec<LogRow>) + Send>;

/// The channel every node listens on and rings.
const CHANNEL: &str = "natter_log";
/// Most rows read at once; a full batch is followed by another read at once.
const BATCH: i64 = 1000;
/// Rings closer together than this share one NOTIFY.
const RING_GAP: Duration = Duration::from_millis(5);
/// A lost connection is tried again this often.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// A read PostgreSQL has not answered in this long counts as a lost connection.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The rows after a cursor whose transactions have all ended: a row below the snapshot's xmin
/// was written by a transaction that committed (visible) or aborted (gone), so none that took
/// an older xid and commits later can still appear before it.
///
/// The order names the table's columns: by the output's name it would sort the xid's text, with
/// "1000" before "999".
const READ: &str = "SELECT xid::text AS xid_text, idx, node, epoch, body FROM cluster_log \
     WHERE (xid, idx) > ($1::text::xid8, $2) AND xid < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY cluster_log.xid, cluster_log.idx LIMIT $3";
/// Whether rows after a cursor wait for an older transaction to end: their reader looks again
/// soon, not only at the next ring (a transaction that rings none, such as another reader's,
/// can hold them back).
const HELD: &str = "SELECT EXISTS (SELECT 1 FROM cluster_log \
     WHERE (xid, idx) > ($1::text::xid8, $2) AND xid >= pg_snapshot_xmin(pg_current_snapshot()))";
/// The first look again at held-back rows; each further one waits twice as long, up to the
/// fallback.
const HELD_FIRST: Duration = Duration::from_millis(5);

/// What the handle and the thread share.
struct Shared {
    wake: Notify,
    /// A ring asked for and not sent yet.
    ring: AtomicBool,
    stopped: AtomicBool,
    /// Reads begun and finished so far, empty ones included (`Follower`).
    begun: std::sync::atomic::AtomicU64,
    reads: watch::Sender<u64>,
    /// When the last read finished (`Follower::lag`).
    last_read: Mutex<std::time::Instant>,
}

/// The handle; the thread ends when it is stopped or dropped.
pub struct Tail {
    shared: Arc<Shared>,
    position: watch::Receiver<Cursor>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Tail {
    /// Starts the thread with its own connection and runtime; it reads the rows after `from`,
    /// waiting between reads for a NOTIFY on `natter_log`, a `ring`, or `fallback`.
    pub fn start(
        target: Target,
        from: Cursor,
        fallback: Duration,
        deliver: Deliver,
    ) -> StoreResult<Tail> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the log reader's runtime: {e}")))?;
        let shared = Arc::new(Shared {
            wake: Notify::new(),
            ring: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            begun: std::sync::atomic::AtomicU64::new(0),
            reads: watch::Sender::new(0),
            last_read: Mutex::new(std::time::Instant::now()),
        });
        let (sender, position) = watch::channel(from);
        let reader = Reader {
            target,
            cursor: from,
            fallback,
            deliver,
            position: sender,
            shared: shared.clone(),
            last_ring: None,
            ring_wanted: false,
            down: false,
            held_pause: None,
        };
        let thread = std::thread::Builder::new()
            .name("natter-pg-tail".into())
            .spawn(move || runtime.block_on(reader.run()))
            .map_err(|e| StoreError::Io(format!("cannot start the log reader's thread: {e}")))?;
        Ok(Tail {
            shared,
            position,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// This node committed: read now, and ring the other nodes (at most one NOTIFY per 5 ms;
    /// rings in between share it).
    pub fn ring(&self) {
        self.shared.ring.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }

    /// The position after the last delivered row.
    pub fn position(&self) -> watch::Receiver<Cursor> {
        self.position.clone()
    }

    /// Ends the thread (after the batch it is delivering).
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            // Stopped from inside `deliver`: the thread ends on its own after it returns.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl crate::store::changes::Follower for Tail {
    fn read_now(&self) {
        self.shared.wake.notify_one();
    }
    fn reads(&self) -> watch::Receiver<u64> {
        self.shared.reads.subscribe()
    }
    fn begun(&self) -> u64 {
        self.shared.begun.load(Ordering::SeqCst)
    }
    fn lag(&self) -> Duration {
        self.shared
            .last_read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The cursor a starting node reads from: (xmin horizon now, -1): every row below it is settled.
pub async fn start_cursor(client: &Client) -> Result<Cursor, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])
        .await?;
    Ok(Cursor {
        xid: parse_xid(row.get(0)),
        idx: -1,
    })
}

/// The event id base: cluster_state.base_xid as u64.
pub async fn base_xid(client: &Client) -> Result<u64, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT base_xid::text FROM cluster_state WHERE id = 1", &[])
        .await?;
    Ok(parse_xid(row.get(0)))
}

/// xid8 travels as text: tokio-postgres has no type for it. Its text is a plain u64.
fn parse_xid(text: &str) -> u64 {
    text.parse().unwrap_or(0)
}

/// A connection with its notifications.
struct Listening {
    client: Client,
    notifications: mpsc::UnboundedReceiver<Notification>,
    /// This connection's server process: its own NOTIFY comes back to it and is skipped.
    pid: i32,
    read: tokio_postgres::Statement,
    held: tokio_postgres::Statement,
}

/// Why a round stopped early.
enum Failure {
    /// PostgreSQL's error, as natter logs it.
    Postgres(String),
    TimedOut,
    Closed,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Postgres(e) => f.write_str(e),
            Failure::TimedOut => write!(f, "no answer within {READ_TIMEOUT:?}"),
            Failure::Closed => f.write_str("the connection closed"),
        }
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        Failure::Postgres(PgError(e).to_string())
    }
}

/// The thread's state.
struct Reader {
    target: Target,
    cursor: Cursor,
    fallback: Duration,
    deliver: Deliver,
    position: watch::Sender<Cursor>,
    shared: Arc<Shared>,
    /// When the last NOTIFY went out.
    last_ring: Option<Instant>,
    /// A ring taken from `shared` and not sent yet (the gap since the last one is too short).
    ring_wanted: bool,
    /// Whether the connection is lost, so an outage is logged once.
    down: bool,
    /// How long to wait before looking again at rows an older transaction holds back.
    held_pause: Option<Duration>,
}

impl Reader {
    async fn run(mut self) {
        let mut conn: Option<Listening> = None;
        while !self.stopped() {
            let Some(listening) = conn.as_mut() else {
                match self.connect().await {
                    Some(listening) => conn = Some(listening),
                    None => self.pause(RECONNECT_EVERY).await,
                }
                continue;
            };
            self.shared.begun.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = self.round(listening).await {
                conn = None;
                self.lost(&e);
                continue;
            }
            *self
                .shared
                .last_read
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
            self.shared.reads.send_modify(|n| *n += 1);
            match self.wait(listening).await {
                Ok(()) => {}
                Err(e) => {
                    conn = None;
                    self.lost(&e);
                }
            }
        }
    }

    fn stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    fn lost(&mut self, e: &Failure) {
        if !self.down {
            self.down = true;
            log::error!("PostgreSQL log reader: lost the connection: {e}");
        }
    }

    /// Waits `pause`, or less when stopped.
    async fn pause(&self, pause: Duration) {
        let _ = tokio::time::timeout(pause, self.shared.wake.notified()).await;
    }

    /// A new connection, listening; `None` (logged once) when PostgreSQL cannot be reached.
    async fn connect(&mut self) -> Option<Listening> {
        let made = async {
            let (client, notifications) = connect(&self.target).await?;
            // The read's commit waits for its WAL flush, whatever the database's default.
            client
                .batch_execute(&format!("SET synchronous_commit = on; LISTEN {CHANNEL}"))
                .await
                .map_err(PgError)?;
            let pid = client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .map_err(PgError)?
                .get(0);
            let read = client.prepare(READ).await.map_err(PgError)?;
            let held = client.prepare(HELD).await.map_err(PgError)?;
            Ok::<_, ConnectError>(Listening {
                client,
                notifications,
                pid,
                read,
                held,
            })
        };
        match tokio::time::timeout(READ_TIMEOUT, made).await {
            Ok(Ok(listening)) => {
                if self.down {
                    self.down = false;
                    log::info!(
                        "PostgreSQL log reader: connected to {} again",
                        pg::describe(&self.target)
                    );
                }
                // Rings asked for while down go out now, and what was missed is read.
                Some(listening)
            }
            Ok(Err(e)) => {
                self.could_not_connect(&e.to_string());
                None
            }
            Err(_) => {
                self.could_not_connect("no answer");
                None
            }
        }
    }

    fn could_not_connect(&mut self, why: &str) {
        if !self.down {
            self.down = true;
            log::error!(
                "PostgreSQL log reader: cannot connect to {}: {why}",
                pg::describe(&self.target)
            );
        }
    }

    /// Sends a ring that is due, then reads until a batch comes back short.
    async fn round(&mut self, conn: &mut Listening) -> Result<(), Failure> {
        if self.shared.ring.swap(false, Ordering::SeqCst) {
            self.ring_wanted = true;
        }
        if self.ring_wanted && self.ring_due().is_none_or(|due| due <= Instant::now()) {
            // Outside any transaction: it reaches the other nodes at once.
            conn.client
                .batch_execute(&format!("NOTIFY {CHANNEL}"))
                .await?;
            self.last_ring = Some(Instant::now());
            self.ring_wanted = false;
        }
        // Notifications that came before this read are answered by it.
        while conn.notifications.try_recv().is_ok() {}
        loop {
            let (rows, held) = tokio::time::timeout(READ_TIMEOUT, read(conn, self.cursor))
                .await
                .map_err(|_| Failure::TimedOut)??;
            let full = rows.len() as i64 >= BATCH;
            self.held_pause = held.then(|| {
                self.held_pause
                    .map_or(HELD_FIRST, |pause| (pause * 2).min(self.fallback))
            });
            if let Some(last) = rows.last() {
                self.cursor = last.cursor;
                (self.deliver)(rows);
                self.position.send_replace(self.cursor);
            }
            if !full || self.stopped() {
                return Ok(());
            }
        }
    }

    /// When the next NOTIFY may go out.
    fn ring_due(&self) -> Option<Instant> {
        self.last_ring.map(|last| last + RING_GAP)
    }

    /// Waits for a NOTIFY from another connection, a ring, the fallback, or a ring's gap to end.
    async fn wait(&mut self, conn: &mut Listening) -> Result<(), Failure> {
        let fallback = tokio::time::sleep(self.held_pause.unwrap_or(self.fallback));
        tokio::pin!(fallback);
        loop {
            let gap = async {
                match (self.ring_wanted, self.ring_due()) {
                    (true, Some(due)) => tokio::time::sleep_until(due).await,
                    (true, None) => {}
                    (false, _) => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.shared.wake.notified() => return Ok(()),
                () = &mut fallback => return Ok(()),
                () = gap => return Ok(()),
                notification = conn.notifications.recv() => match notification {
                    Some(n) if n.process_id() == conn.pid => continue,
                    Some(_) => return Ok(()),
                    None => return Err(Failure::Closed),
                },
            }
        }
    }
}

/// Reads one batch after `cursor` and makes it durable: the transaction takes an xid and
/// commits synchronously, which flushes the WAL past every commit whose rows it saw. Also says
/// whether later rows are held back by an older transaction still running.
async fn read(conn: &Listening, cursor: Cursor) -> Result<(Vec<LogRow>, bool), Failure> {
    let client = &conn.client;
    let xid = cursor.xid.to_string();
    // One round trip: the three go out together.
    let (begun, rows, held) = futures_util::future::join3(
        client.batch_execute("BEGIN"),
        client.query(&conn.read, &[&xid, &cursor.idx, &BATCH]),
        client.query_one(&conn.held, &[&xid, &cursor.idx]),
    )
    .await;
    let outcome = async {
        begun?;
        let rows = rows?;
        let held: bool = held?.try_get(0)?;
        let mut read = Vec::with_capacity(rows.len());
        for row in rows {
            read.push(LogRow {
                cursor: Cursor {
                    xid: parse_xid(row.try_get(0)?),
                    idx: row.try_get(1)?,
                },
                node: row.try_get(2)?,
                epoch: u64::try_from(row.try_get::<_, i64>(3)?).unwrap_or(0),
                body: row.try_get(4)?,
            });
        }
        if read.is_empty() {
            client.batch_execute("COMMIT").await?;
        } else {
            client
                .batch_execute("SELECT pg_current_xact_id(); COMMIT")
                .await?;
        }
        Ok::<_, tokio_postgres::Error>((read, held))
    }
    .await;
    match outcome {
        Ok(read) => Ok(read),
        Err(e) => {
            if !client.is_closed() && !ends_connection(&e) {
                let _ = client.batch_execute("ROLLBACK").await;
            }
            Err(Failure::from(e))
        }
    }
}

/// Connects as `pg::connect` does (sslmode disable, prefer, require), keeping the connection
/// to drive here: its notifications go to the channel returned.
async fn connect(
    target: &Target,
) -> Result<(Client, mpsc::UnboundedReceiver<Notification>), ConnectError> {
    let config = &target.postgres;
    match config.get_ssl_mode() {
        SslMode::Disable => connect_with(config, NoTls).await,
        SslMode::Require => connect_tls(config, target, true).await,
        _ => match connect_tls(config, target, false).await {
            Ok(connected) => Ok(connected),
            Err(ConnectError::Postgres(tls_error)) => {
                log::debug!("PostgreSQL over TLS failed, trying plain text: {tls_error}");
                let mut plain = config.clone();
                plain.ssl_mode(SslMode::Disable);
                connect_with(&plain, NoTls).await
            }
            Err(other) => Err(other),
        },
    }
}

async fn connect_tls(
    config: &Config,
    target: &Target,
    verify: bool,
) -> Result<(Client, mpsc::UnboundedReceiver<Notification>), ConnectError> {
    let tls = pg::tls_config(target, verify)?;
    connect_with(config, tokio_postgres_rustls::MakeRustlsConnect::new(tls)).await
}

async fn connect_with<T>(
    config: &Config,
    tls: T,
) -> Result<(Client, mpsc::UnboundedReceiver<Notification>), ConnectError>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await.map_err(PgError)?;
    let (sender, notifications) = mpsc::unbounded_channel();
    tokio::spawn(drive(connection, sender));
    Ok((client, notifications))
}

/// Runs the connection, forwarding its notifications; ends with it (the channel closes then).
async fn drive<S, T>(mut connection: Connection<S, T>, sender: mpsc::UnboundedSender<Notification>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = messages.next().await {
        match message {
            Ok(AsyncMessage::Notification(notification)) => {
                let _ = sender.send(notification);
            }
            Ok(_) => {}
            Err(e) => {
                log::debug!("PostgreSQL log reader connection ended: {e}");
                return;
            }
        }
    }
}
