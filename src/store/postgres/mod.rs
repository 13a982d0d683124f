//! The PostgreSQL implementation of `Store` (`storage = "postgres"`, docs/design.md, The
//! PostgreSQL store). One writer connection on a thread of its own (`link`) runs every call in
//! the order the service makes them; writes commit asynchronously and a second connection makes
//! them durable in groups (`flusher`), which the service awaits as it does sled's flushes.

mod accounts;
mod epoch_row;
mod flusher;
mod link;
mod node_tx;
mod outbox;
pub mod owner;
mod pipeline;
mod readers;
mod rooms;
pub mod schema;
pub mod tail;

use super::changes::{Delta, Followed, LoggedChange, LoggedEvent, event_position};
use super::mirror::pg::{self, Target};
use super::{
    BlockedName, ChatRecord, Durability, MemberRecord, MessageRecord, NewMessage, NextIds, Pending,
    QueuedMail, Restored, SessionRecord, Store, StoreError, StoreResult, Taken, UserRecord,
};
use crate::config::Config;
use epoch_row::EpochRow;
use flusher::{Flusher, Progress};
use link::{Conn, Link, OnConnect, Session};
use pipeline::{LogRow, Queued, Statement};
use readers::Readers;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Ids are stored as BIGINT: natter's ids stay far below 2^63.
fn id_column(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

fn id_of(column: i64) -> u64 {
    u64::try_from(column).unwrap_or(0)
}

/// Session handles are random 64-bit numbers: stored as BIGINT with the same bits.
fn handle_column(handle: u64) -> i64 {
    i64::from_ne_bytes(handle.to_ne_bytes())
}

fn guest_handle(column: i64) -> u64 {
    u64::from_ne_bytes(column.to_ne_bytes())
}

/// A node reads the log at least this often, in case a ring from another node was lost.
const LOG_FALLBACK: Duration = Duration::from_millis(250);

/// Key of the advisory lock held by the node that sweeps idle sessions, trims the log and
/// sends mail ("nattsw").
const SWEEPER_LOCK: i64 = 0x6e61_7474_7377;

/// How the store uses PostgreSQL.
#[derive(Clone, Debug)]
pub struct Options {
    /// `durability = "relaxed"`: a write counts as durable once committed, before PostgreSQL
    /// has flushed it.
    pub relaxed: bool,
    /// Connections for reads that need not follow queued writes (`postgres_pool_size`).
    pub pool_size: usize,
    /// Longest one statement may run (`postgres_statement_timeout`).
    pub statement_timeout: Duration,
    /// This node's name when several nodes share the database (`cluster = true`).
    pub node: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            relaxed: false,
            pool_size: 4,
            statement_timeout: Duration::from_secs(10),
            node: None,
        }
    }
}

impl Options {
    /// Longest a caller waits for an answer: a statement's limit, plus time to connect.
    fn call_timeout(&self) -> Duration {
        self.statement_timeout + Duration::from_secs(5)
    }
}

/// The PostgreSQL-backed store.
pub struct PgStore {
    link: Link,
    readers: Readers,
    progress: Arc<Progress>,
    _flusher: Flusher,
    /// The ids the next chat and the next message get, kept as writes commit.
    next: Arc<Mutex<NextIds>>,
    /// With several nodes: the shared log's numbering, and the current change's effects.
    node: Option<NodeLog>,
    /// The database, for the log's reader.
    target: Target,
}

/// The change the service is making on a node.
#[derive(Default)]
struct Unsealed {
    /// Its effects on memory, for the other nodes.
    deltas: Vec<Delta>,
    /// Whether it wrote anything, so its seal writes a log row.
    written: bool,
    /// Between the service's lock and its unlock (`Store::begin_change`, `Store::seal`).
    in_change: bool,
    /// Whether the writer was told that a new change begins (at its first write).
    announced: bool,
}

/// A node's part of the shared log (`cluster = true`).
struct NodeLog {
    /// This node's name (`node_name`).
    name: String,
    /// `cluster_state.base_xid`: event and message ids count transactions from it.
    base_xid: u64,
    /// `cluster_state.message_offset`: message ids stay above those of a single server before.
    message_offset: u64,
    /// The change the service is making, sealed as its lock drops.
    unsealed: Mutex<Unsealed>,
    /// Rings the tail after each commit, once one runs.
    after_commit: node_tx::AfterCommit,
}

impl PgStore {
    /// Opens the store with the default options but `relaxed`.
    pub fn open(target: Target, relaxed: bool) -> StoreResult<Arc<PgStore>> {
        PgStore::open_with(
            target,
            Options {
                relaxed,
                ..Options::default()
            },
        )
    }

    /// Connects, applies the migrations and reads where the store stands.
    pub fn open_with(target: Target, options: Options) -> StoreResult<Arc<PgStore>> {
        let progress = Progress::new(0, options.relaxed);
        let next = Arc::new(Mutex::new(NextIds {
            chat: 1,
            message: 1,
        }));
        let epoch_row = match &options.node {
            Some(name) => EpochRow::Node(name.clone()),
            None => EpochRow::Single,
        };
        let after_commit = node_tx::AfterCommit::default();
        let link = Link::start(
            target.clone(),
            epoch_row.clone(),
            on_connect(
                progress.clone(),
                next.clone(),
                options.statement_timeout,
                epoch_row.clone(),
            ),
            progress.clone(),
            options.call_timeout(),
            after_commit.clone(),
        )?;
        // The first call connects, migrates and reads the state (`on_connect`).
        link.call(|session| session.run(async |_| Ok(())))
            .map_err(|e| match e {
                StoreError::Unavailable => StoreError::Io(format!(
                    "cannot reach PostgreSQL at {}",
                    pg::describe(&target)
                )),
                other => other,
            })?;
        link.start_epochs_at(progress.epoch.load(Ordering::SeqCst));
        let readers = Readers::start(
            target.clone(),
            options.pool_size,
            options.statement_timeout,
            options.call_timeout(),
        )?;
        let flusher = Flusher::start(
            target.clone(),
            progress.clone(),
            options.statement_timeout,
            epoch_row.flush(),
        )
        .map_err(|e| StoreError::Io(format!("cannot start the flusher thread: {e}")))?;
        let node = match epoch_row {
            EpochRow::Single => None,
            EpochRow::Node(name) => {
                let (base_xid, message_offset) = readers.read(async |c| {
                    let row = c
                        .query_one(
                            "SELECT base_xid::text, message_offset FROM cluster_state",
                            &[],
                        )
                        .await?;
                    Ok((
                        row.get::<_, String>(0).parse::<u64>().unwrap_or(0),
                        id_of(row.get(1)),
                    ))
                })?;
                Some(NodeLog {
                    name,
                    base_xid,
                    message_offset,
                    unsealed: Mutex::default(),
                    after_commit,
                })
            }
        };
        Ok(Arc::new(PgStore {
            link,
            readers,
            progress,
            _flusher: flusher,
            next,
            node,
            target,
        }))
    }

    /// The database `storage = "postgres"` names: the one at `database_url`.
    pub fn configured_target(config: &Config) -> Result<Target, String> {
        let url = config
            .database_url
            .as_ref()
            .ok_or_else(|| "storage = \"postgres\" needs database_url".to_owned())?;
        pg::parse(url.expose()).map_err(|e| e.to_string())
    }

    /// The store `storage = "postgres"` names, opened with the configured options.
    pub fn open_configured(config: &Config, relaxed: bool) -> Result<Arc<PgStore>, String> {
        let target = PgStore::configured_target(config)?;
        let options = Options {
            relaxed,
            pool_size: config.postgres_pool_size,
            statement_timeout: config.postgres_statement_timeout,
            node: config.cluster.then(|| config.node()),
        };
        PgStore::open_with(target, options).map_err(|e| e.to_string())
    }

    /// Runs a read on a pooled connection: it sees every committed write, not those still
    /// queued for group commit.
    fn read_committed<T: Send + 'static>(
        &self,
        f: impl AsyncFnOnce(&Conn<'_>) -> Result<T, tokio_postgres::Error> + Send + 'static,
    ) -> StoreResult<T> {
        self.readers.read(f)
    }

    /// Runs `f` in a short transaction of its own on a pooled connection, committed (and
    /// flushed) before it returns: outside the writer's order, for what must not wait for it.
    fn write_apart<T: Send + 'static>(
        &self,
        f: impl AsyncFnOnce(&Conn<'_>) -> Result<T, tokio_postgres::Error> + Send + 'static,
    ) -> StoreResult<T> {
        self.readers.read(async move |c| {
            c.batch("BEGIN READ WRITE").await?;
            match f(c).await {
                Ok(out) => c.batch("COMMIT").await.map(|()| out),
                Err(e) => {
                    let _ = c.batch("ROLLBACK").await;
                    Err(e)
                }
            }
        })
    }

    /// Runs a read on the writer connection, so it sees every write made before it.
    fn read<T: Send + 'static>(
        &self,
        f: impl AsyncFnOnce(&Conn<'_>) -> Result<T, tokio_postgres::Error> + Send + 'static,
    ) -> StoreResult<T> {
        self.link.call(move |session| session.run(f))
    }

    /// `read`, queued behind the writes made so far and answered when called.
    fn read_later<T: Send + 'static>(
        &self,
        f: impl AsyncFnOnce(&Conn<'_>) -> Result<T, tokio_postgres::Error> + Send + 'static,
    ) -> Pending<T> {
        self.link.call_later(move |session| session.run(f))
    }

    /// Runs a write in one transaction that also records its epoch, then counts it committed.
    fn write<T: Send + 'static>(
        &self,
        f: impl AsyncFnOnce(&Conn<'_>) -> Result<T, tokio_postgres::Error> + Send + 'static,
    ) -> StoreResult<T> {
        self.committing(move |session, epoch| session.write(epoch, f))
    }

    /// Runs `change` with the epoch it must record, on the writer's thread, and settles that
    /// epoch: committed when it succeeded or failed outright, unknown when the connection broke.
    fn committing<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Session, u64) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let progress = self.progress.clone();
        // With several nodes the change runs inside the open transaction, which commits later.
        let commits_now = self.node.is_none();
        self.note_write();
        self.link.call_write(move |session, epoch| {
            progress.sent(epoch);
            match change(session, epoch) {
                Err(StoreError::Unavailable) => {
                    progress.interrupted();
                    Err(StoreError::Unavailable)
                }
                outcome => {
                    if commits_now {
                        progress.committed(epoch);
                    }
                    outcome
                }
            }
        })
    }

    /// With several nodes: notes an effect of the current change for the other nodes.
    fn record(&self, delta: Delta) {
        if let Some(node) = &self.node {
            node.unsealed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .deltas
                .push(delta);
        }
    }

    /// With several nodes: a write is about to go to the writer. The first of a change tells it
    /// that a new change begins, so the change gets a transaction of its own.
    fn note_write(&self) {
        let Some(node) = &self.node else {
            return;
        };
        let mut unsealed = node.unsealed.lock().unwrap_or_else(|e| e.into_inner());
        unsealed.written = true;
        if unsealed.in_change && !unsealed.announced {
            unsealed.announced = true;
            // A closed link fails the write itself just after.
            let _ = self.link.new_change();
        }
    }

    /// With several nodes: a message id from the open transaction's id and a place in it, so
    /// message ids follow commit order across nodes; `None` on a single server.
    fn node_message_id(&self) -> StoreResult<Option<u64>> {
        let Some(node) = &self.node else {
            return Ok(None);
        };
        self.note_write();
        let (xid, place) = self.link.call(|session| session.take_place())?;
        Ok(Some(
            event_position(xid, node.base_xid, place).saturating_add(node.message_offset),
        ))
    }

    /// Sets what runs after each commit of this node (the tail's ring).
    fn after_commit(&self, ring: Box<dyn Fn() + Send>) {
        if let Some(node) = &self.node {
            *node.after_commit.lock().unwrap_or_else(|e| e.into_inner()) = Some(ring);
        }
    }

    /// With several nodes: reads the whole log kept on a thread of its own, handing each batch
    /// of changes to `deliver` in commit order, and rings it after each commit of this node.
    /// What was written before now (by any node, this one's start and earlier runs included) is
    /// replayed whole: the queues fill as on the other nodes, and memory, loaded before, ends
    /// where the log does. Only this node's later changes are `own` (already in memory).
    pub fn follow(
        &self,
        mut deliver: Box<dyn FnMut(Vec<Followed>) + Send>,
    ) -> StoreResult<Arc<tail::Tail>> {
        let started = self.write_epoch();
        let node = self
            .node
            .as_ref()
            .ok_or_else(|| StoreError::Io("not one of several nodes".into()))?;
        let (base, me) = (node.base_xid, self.node_name().to_owned());
        let rows = move |rows: Vec<tail::LogRow>| {
            let changes = rows
                .into_iter()
                .filter_map(|row| {
                    let Some(change) = LoggedChange::decode(&row.body) else {
                        log::warn!(
                            "skipped a change of node {} this version cannot read",
                            row.node
                        );
                        return None;
                    };
                    let place = u32::try_from(row.cursor.idx).unwrap_or(0);
                    Some(Followed {
                        position: event_position(row.cursor.xid, base, place),
                        own: row.node == me && row.epoch > started,
                        epoch: row.epoch,
                        change,
                    })
                })
                .collect();
            deliver(changes);
        };
        let tail = Arc::new(tail::Tail::start(
            self.target.clone(),
            tail::Cursor::default(),
            LOG_FALLBACK,
            Box::new(rows),
        )?);
        let ringer = Arc::downgrade(&tail);
        self.after_commit(Box::new(move || {
            if let Some(tail) = ringer.upgrade() {
                tail.ring();
            }
        }));
        Ok(tail)
    }

    /// This node's name (empty on a single server).
    fn node_name(&self) -> &str {
        self.node.as_ref().map_or("", |n| n.name.as_str())
    }

    /// Queues a write of `statements` for group commit (`pipeline`): it returns at once, and
    /// the caller learns the outcome by waiting for its epoch's durability.
    fn queue(&self, statements: Vec<Statement>) -> StoreResult<()> {
        self.queue_with(|| (statements, None))
    }

    /// Queues the write `make` builds as it gets its epoch, with the message id it used.
    fn queue_with(&self, make: impl FnOnce() -> (Vec<Statement>, Option<u64>)) -> StoreResult<()> {
        self.note_write();
        self.link.queue(|epoch| {
            let (statements, message_id) = make();
            Queued {
                epoch,
                statements,
                message_id,
                log: None,
            }
        })
    }

    /// The id the next message gets, taken.
    fn take_message_id(&self) -> u64 {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let id = next.message;
        next.message += 1;
        id
    }

    /// The cookie key kept in the database: the one stored, or `fresh`, stored now (first start).
    pub fn secret_key(&self, fresh: Vec<u8>) -> StoreResult<Vec<u8>> {
        let key = self.write(async move |tx| {
            let row = tx
                .query_one(
                    "UPDATE store_state SET secret_key = COALESCE(secret_key, $1) WHERE id = 1 \
                     RETURNING secret_key",
                    &[&fresh],
                )
                .await?;
            Ok(row.get::<_, Vec<u8>>(0))
        })?;
        self.flush()?;
        Ok(key)
    }

    /// Stops the writer and the flusher once everything is durable (shutdown).
    pub fn close(&self) -> StoreResult<()> {
        let flushed = self.flush();
        self.readers.stop();
        self.link.stop();
        flushed
    }

    /// Raises the cached next ids past ids just written.
    fn ids_used(&self, chat: Option<u64>, message: Option<u64>) {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = chat {
            next.chat = next.chat.max(id.saturating_add(1));
        }
        if let Some(id) = message {
            next.message = next.message.max(id.saturating_add(1));
        }
    }
}

/// Prepares every new writer connection: asynchronous commits and a statement timeout; on the
/// first, the migrations and the state; on later ones (after an outage), the recovery.
fn on_connect(
    progress: Arc<Progress>,
    next: Arc<Mutex<NextIds>>,
    statement_timeout: Duration,
    epoch_row: EpochRow,
) -> OnConnect {
    let mut first = true;
    Box::new(move |client, runtime| {
        let state = runtime.block_on(async {
            client
                .batch_execute(&format!(
                    "SET synchronous_commit = off; SET statement_timeout = {}",
                    statement_timeout.as_millis()
                ))
                .await
                .map_err(|e| StoreError::Io(pg::PgError(e).to_string()))?;
            // Each connection holds the server's share of the database, so offline commands
            // that change it refuse meanwhile (owner.rs).
            owner::share(client).await.map_err(StoreError::Io)?;
            if first {
                schema::migrate(client)
                    .await
                    .map_err(|e| StoreError::Io(e.to_string()))?;
            }
            if let Some(ensure) = epoch_row.ensure() {
                client
                    .batch_execute(&ensure)
                    .await
                    .map_err(|e| StoreError::Io(pg::PgError(e).to_string()))?;
            }
            // Whatever is in PostgreSQL now is made durable before it is counted on.
            client
                .batch_execute(&format!(
                    "BEGIN; SET LOCAL synchronous_commit = on; {}; COMMIT",
                    epoch_row.flush()
                ))
                .await
                .map_err(|e| StoreError::Io(pg::PgError(e).to_string()))?;
            let epoch = client
                .query_one(&epoch_row.read(), &[])
                .await
                .map_err(|e| StoreError::Io(pg::PgError(e).to_string()))?;
            // Message ids of several nodes (`node_message_id`) are above the counter: a single
            // server afterwards continues above them.
            let ids = client
                .query_one(
                    "SELECT next_chat_id, GREATEST(next_message_id, \
                     (SELECT COALESCE(max(id), 0) + 1 FROM messages)) FROM store_state WHERE id = 1",
                    &[],
                )
                .await
                .map_err(|e| StoreError::Io(pg::PgError(e).to_string()))?;
            Ok::<_, StoreError>((epoch, ids))
        })?;
        let (epoch, chat, message) = (
            id_of(state.0.get(0)),
            id_of(state.1.get(0)),
            id_of(state.1.get(1)),
        );
        {
            let mut ids = next.lock().unwrap_or_else(|e| e.into_inner());
            ids.chat = ids.chat.max(chat);
            ids.message = ids.message.max(message);
        }
        if first {
            first = false;
            progress.start_at(epoch);
        } else {
            progress.recovered(epoch);
        }
        Ok(())
    })
}

impl Store for PgStore {
    fn user(&self, key: &str) -> StoreResult<Option<UserRecord>> {
        accounts::user(self, key)
    }
    fn user_key_by_email(&self, email_key: &str) -> StoreResult<Option<String>> {
        accounts::user_key_by_email(self, email_key)
    }
    fn insert_user(
        &self,
        user: &UserRecord,
        mail: Option<&QueuedMail>,
    ) -> StoreResult<Result<(), Taken>> {
        accounts::insert_user(self, user, mail)
    }
    fn update_user(&self, user: &UserRecord, mail: Option<&QueuedMail>) -> StoreResult<()> {
        accounts::update_user(self, user, mail)
    }
    fn delete_user(&self, key: &str) -> StoreResult<bool> {
        accounts::delete_user(self, key)
    }
    fn users(&self) -> StoreResult<Vec<UserRecord>> {
        accounts::users(self)
    }
    fn chats(&self) -> StoreResult<Vec<ChatRecord>> {
        rooms::chats(self)
    }
    fn create_chat(&self, name: &str, created: i64) -> StoreResult<Option<ChatRecord>> {
        rooms::create_chat(self, name, created)
    }
    fn remove_chat(&self, chat_id: u64) -> StoreResult<bool> {
        rooms::remove_chat(self, chat_id)
    }
    fn purge_messages(&self, chat_id: u64) -> StoreResult<usize> {
        rooms::purge_messages(self, chat_id)
    }
    fn add_member(&self, member: &MemberRecord) -> StoreResult<()> {
        rooms::add_member(self, member)
    }
    fn remove_member(&self, chat_id: u64, user_key: &str) -> StoreResult<()> {
        rooms::remove_member(self, chat_id, user_key)
    }
    fn members(&self) -> StoreResult<Vec<MemberRecord>> {
        rooms::members(self)
    }
    fn append_message(&self, message: NewMessage) -> StoreResult<MessageRecord> {
        rooms::append_message(self, message)
    }
    fn last_messages(&self, chat_id: u64, limit: usize) -> StoreResult<Vec<MessageRecord>> {
        rooms::messages_before(self, chat_id, None, limit)
    }
    fn last_messages_later(&self, chat_id: u64, limit: usize) -> Pending<Vec<MessageRecord>> {
        rooms::messages_before_later(self, chat_id, None, limit)
    }
    fn messages_before(
        &self,
        chat_id: u64,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>> {
        rooms::messages_before(self, chat_id, before, limit)
    }
    fn delete_message(&self, chat_id: u64, id: u64) -> StoreResult<bool> {
        rooms::delete_message(self, chat_id, id)
    }
    fn put_session(&self, session: &SessionRecord) -> StoreResult<()> {
        accounts::put_session(self, session)
    }
    fn replace_session(&self, old_hash: &[u8; 32], session: &SessionRecord) -> StoreResult<()> {
        accounts::replace_session(self, old_hash, session)
    }
    fn delete_session(&self, token_hash: &[u8; 32]) -> StoreResult<()> {
        accounts::delete_session(self, token_hash)
    }
    fn take_offline(
        &self,
        token_hash: &[u8; 32],
        kept: Option<&SessionRecord>,
        user_key: &str,
        leave: &[u64],
    ) -> StoreResult<()> {
        accounts::take_offline(self, token_hash, kept, user_key, leave)
    }
    fn sessions(&self) -> StoreResult<Vec<SessionRecord>> {
        accounts::sessions(self)
    }
    fn save_blocks(&self, blocks: &[BlockedName]) -> StoreResult<()> {
        accounts::save_blocks(self, blocks)
    }
    fn blocks(&self) -> StoreResult<Vec<BlockedName>> {
        accounts::blocks(self)
    }
    fn save_queues(&self, snapshot: &[u8]) -> StoreResult<()> {
        outbox::save_queues(self, snapshot)
    }
    fn take_queues(&self) -> StoreResult<Option<Vec<u8>>> {
        outbox::take_queues(self)
    }
    fn queue_mail(&self, mail: &QueuedMail) -> StoreResult<u64> {
        outbox::queue_mail(self, mail)
    }
    fn pending_mail(&self) -> StoreResult<Vec<(u64, QueuedMail)>> {
        outbox::pending_mail(self)
    }
    fn reschedule_mail(&self, id: u64, mail: &QueuedMail) -> StoreResult<()> {
        outbox::reschedule_mail(self, id, mail)
    }
    fn delete_mail(&self, id: u64) -> StoreResult<()> {
        outbox::delete_mail(self, id)
    }
    fn next_ids(&self) -> NextIds {
        *self.next.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn messages_below(
        &self,
        chat_id: u64,
        below: u64,
    ) -> Box<dyn Iterator<Item = StoreResult<MessageRecord>> + '_> {
        Box::new(rooms::MessagesBelow {
            store: self,
            chat_id,
            below,
            from: 0,
            page: Vec::new().into_iter(),
            done: false,
        })
    }
    fn import(&self, batch: &[Restored], next: NextIds) -> StoreResult<()> {
        outbox::import(self, batch, next)
    }
    fn pending_mail_count(&self) -> StoreResult<usize> {
        outbox::pending_mail_count(self)
    }
    fn write_epoch(&self) -> u64 {
        self.link.epoch()
    }
    fn record_activity(&self, handles: &[u64], now: i64) -> StoreResult<()> {
        let handles: Vec<i64> = handles.iter().map(|h| handle_column(*h)).collect();
        // Queued, not part of any change: it commits with the next group, or on its own.
        self.link.queue(|epoch| Queued {
            epoch,
            statements: vec![Statement::new(
                "UPDATE sessions SET last_seen = GREATEST(last_seen, $2) WHERE handle = ANY($1)",
                vec![Box::new(handles), Box::new(now)],
            )],
            message_id: None,
            log: None,
        })
    }
    fn leads(&self) -> StoreResult<bool> {
        if self.node.is_none() {
            return Ok(true);
        }
        // A session lock on the writer's connection: it goes with the connection, so when a
        // node dies another one leads.
        self.read(async |c| {
            let row = c
                .query_one("SELECT pg_try_advisory_lock($1)", &[&SWEEPER_LOCK])
                .await?;
            Ok(row.get::<_, bool>(0))
        })
    }
    fn idle_sessions(&self, cutoff: i64) -> StoreResult<Vec<u64>> {
        self.read(async move |c| {
            let rows = c
                .query(
                    "SELECT handle FROM sessions WHERE online AND last_seen < $1",
                    &[&cutoff],
                )
                .await?;
            Ok(rows.iter().map(|r| guest_handle(r.get(0))).collect())
        })
    }
    fn open_queue(&self, handle: u64, queue_id: &str, types: u32) -> StoreResult<()> {
        self.record(Delta::QueueOpened {
            handle,
            queue_id: queue_id.to_owned(),
            types,
        });
        self.queue(vec![Statement::new(
            "INSERT INTO event_queues (handle, queue_id, types, opened, acked, used) \
             VALUES ($1, $2, $3, 0, 0, $4) ON CONFLICT (handle, queue_id) DO NOTHING",
            vec![
                Box::new(handle_column(handle)),
                Box::new(queue_id.to_owned()),
                Box::new(i64::from(types)),
                Box::new(crate::model::now()),
            ],
        )])
    }
    fn poll_position(&self, handle: u64) -> StoreResult<u64> {
        let handle = handle_column(handle);
        self.read_committed(async move |c| {
            let row = c
                .query_opt(
                    "SELECT acked FROM event_queues WHERE handle = $1 AND queue_id = ''",
                    &[&handle],
                )
                .await?;
            Ok(row.map_or(0, |r| id_of(r.get(0))))
        })
    }
    fn claim_poll(&self, handle: u64, seen: u64, next: u64) -> StoreResult<bool> {
        let (handle, seen, next) = (handle_column(handle), id_column(seen), id_column(next));
        // Its own transaction, committed before the event is handed out: a racing poll on
        // another node finds the position moved and hands out the next event instead.
        self.write_apart(async move |c| {
            let claimed = c
                .execute(
                    "INSERT INTO event_queues (handle, queue_id, types, opened, acked, used) \
                     VALUES ($1, '', 0, 0, $3, 0) ON CONFLICT (handle, queue_id) \
                     DO UPDATE SET acked = $3 WHERE event_queues.acked = $2",
                    &[&handle, &seen, &next],
                )
                .await?;
            Ok(claimed == 1)
        })
    }
    fn trim_log(&self, before: i64) -> StoreResult<()> {
        self.write_apart(async move |c| {
            c.execute("DELETE FROM cluster_log WHERE written < $1", &[&before])
                .await?;
            c.batch(
                "DELETE FROM event_queues q WHERE NOT EXISTS \
                 (SELECT 1 FROM sessions s WHERE s.handle = q.handle)",
            )
            .await
        })
    }
    fn begin_change(&self) {
        if let Some(node) = &self.node {
            let mut unsealed = node.unsealed.lock().unwrap_or_else(|e| e.into_inner());
            unsealed.in_change = true;
            unsealed.announced = false;
        }
    }
    fn seal(&self, events: Vec<LoggedEvent>) -> StoreResult<u64> {
        let Some(node) = &self.node else {
            return Ok(self.write_epoch());
        };
        let Unsealed {
            deltas, written, ..
        } = std::mem::take(&mut *node.unsealed.lock().unwrap_or_else(|e| e.into_inner()));
        if !written && deltas.is_empty() && events.is_empty() {
            return Ok(self.write_epoch());
        }
        let change = LoggedChange { deltas, events };
        let log = LogRow {
            body: change.encode(),
            events: u32::try_from(change.events.len()).unwrap_or(u32::MAX),
        };
        self.link.queue(|epoch| Queued {
            epoch,
            statements: Vec::new(),
            message_id: None,
            log: Some(log),
        })?;
        Ok(self.write_epoch())
    }
    fn durability(&self) -> watch::Receiver<Durability> {
        self.progress.durability.subscribe()
    }
    fn flush(&self) -> StoreResult<()> {
        let epoch = self.write_epoch();
        let mut watch = self.durability();
        // Blocking, for shutdown and offline commands: polls the flusher's progress.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let d = *watch.borrow_and_update();
            if d.durable >= epoch && !d.is_lost(epoch) {
                return Ok(());
            }
            if d.failed.is_some_and(|f| f >= epoch) || std::time::Instant::now() > deadline {
                return Err(StoreError::Unavailable);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    fn check_health(&self) -> StoreResult<()> {
        self.read(async |c| c.batch("SELECT 1").await)
    }
    fn available(&self) -> bool {
        self.link.connected()
    }
}
