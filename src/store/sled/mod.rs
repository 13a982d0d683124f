//! The sled implementation of `Store`: one tree per record kind, bincode values, group commit.

mod chats;
mod codec;
mod copy;
mod engine;
#[cfg(test)]
mod fixtures;
mod mail;
mod messages;
mod mirrored;
mod recovery;
mod sessions;
mod users;

pub use copy::ReadCopy;

pub use mirrored::new_instance;

use super::mirror::outbox::{MirroredUser, Queued, now_ms};
use super::mirror::{Entry, MirrorReport, MirrorShared};
use super::{
    BlockedName, ChatRecord, Durability, MemberRecord, MessageRecord, NewMessage, NextIds,
    QueuedMail, Restored, SessionRecord, Store, StoreError, StoreResult, Taken, UserRecord,
};
use chats::{chat_ids_in, member_key, purge, remove_prefix};
use codec::{FORMAT_VERSION, decode, decode_all, decode_message, encode, encode_message, get};
use engine::Engine;
use messages::{message_id_of, message_key};
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError, Transactional,
    TransactionalTree,
};
use sled::{IVec, Tree};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long closing waits for sled's threads to let go of the directory.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Layout of the trees and keys; a newer one on disk is refused.
const SCHEMA_VERSION: u32 = 1;
/// Page cache for offline tools and tests; the server uses `data_cache_bytes` (sled's own
/// default is 1 GiB, too much for a small host).
const TOOL_CACHE_BYTES: u64 = 16 << 20;
/// Pause before retrying a failed flush.
const FLUSH_RETRY: Duration = Duration::from_millis(200);

const META_SCHEMA: &[u8] = b"schema_version";
const META_NEXT_CHAT: &[u8] = b"next_chat_id";
const META_NEXT_MESSAGE: &[u8] = b"next_message_id";
const META_QUEUES: &[u8] = b"queues";
const META_HEALTH: &[u8] = b"health";
/// The guest names an admin kicked, with the ends of their blocks.
const META_BLOCKS: &[u8] = b"blocks";
/// Which PostgreSQL database the outbox feeds ("host:port/dbname"); unset until seeded.
const META_MIRROR_TARGET: &[u8] = b"mirror_target";
/// The label this data directory's copy carries in the mirror database (`mirror_instance`).
const META_MIRROR_INSTANCE: &[u8] = b"mirror_instance";
/// Set while a bulk load (a restore from the mirror, an import) fills the data directory.
const META_LOADING: &[u8] = b"loading";

type TxResult<T> = ConflictableTransactionResult<T, StoreError>;

/// When a write counts as durable (config `durability = "sync" | "relaxed"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Durable once the group-commit flusher has fsynced it.
    #[default]
    Sync,
    /// Durable at once; sled's background flush writes it out later.
    Relaxed,
}

/// State shared between the store, its flusher thread and its recovery thread.
struct Shared {
    dir: PathBuf,
    /// sled's page cache, kept for reopening after a storage failure.
    cache_bytes: u64,
    /// The open database; `None` from a disk failure until storage has recovered.
    engine: RwLock<Option<Arc<Engine>>>,
    /// When the current storage failure began.
    outage: Mutex<Option<Instant>>,
    /// Committed writes so far; a write's epoch is the value right after it.
    epoch: AtomicU64,
    flushes: AtomicU64,
    durability: watch::Sender<Durability>,
    /// True once the flusher must stop; writers notify `wake` while holding it.
    stopped: Mutex<bool>,
    wake: Condvar,
    /// Set when the mirror is on: outbox entries are written with every mirrored change.
    mirror: Option<Arc<MirrorShared>>,
}

/// The sled-backed store.
pub struct SledStore {
    shared: Arc<Shared>,
    mode: SyncMode,
    /// Next ids; held across the transaction that uses them so ids commit in order.
    next_chat: Mutex<u64>,
    next_message: Mutex<u64>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl SledStore {
    /// Opens (creating) the data directory without the mirror; `Locked` if another process
    /// holds it. A leftover outbox is dropped: the next mirrored start re-seeds the mirror.
    pub fn open(dir: &Path, mode: SyncMode) -> StoreResult<Arc<SledStore>> {
        Self::open_with(dir, mode, false, TOOL_CACHE_BYTES)
    }

    /// Opens the data directory with the mirror on: mirrored changes also fill the outbox.
    pub fn open_mirrored(dir: &Path, mode: SyncMode) -> StoreResult<Arc<SledStore>> {
        Self::open_with(dir, mode, true, TOOL_CACHE_BYTES)
    }

    /// Opens the data directory without the mirror and without touching its bookkeeping (the
    /// outbox and the target stay): for offline commands that change no data.
    pub fn open_leaving_mirror(dir: &Path, mode: SyncMode) -> StoreResult<Arc<SledStore>> {
        Self::open_outbox_as(dir, mode, mirrored::Outbox::Leave, TOOL_CACHE_BYTES)
    }

    /// Opens the data directory with or without the mirror, sled caching `cache_bytes` of it.
    pub fn open_with(
        dir: &Path,
        mode: SyncMode,
        mirrored: bool,
        cache_bytes: u64,
    ) -> StoreResult<Arc<SledStore>> {
        let outbox = if mirrored {
            mirrored::Outbox::Fill
        } else {
            mirrored::Outbox::Drop
        };
        Self::open_outbox_as(dir, mode, outbox, cache_bytes)
    }

    fn open_outbox_as(
        dir: &Path,
        mode: SyncMode,
        outbox: mirrored::Outbox,
        cache_bytes: u64,
    ) -> StoreResult<Arc<SledStore>> {
        let (engine, next) = Engine::open(dir, cache_bytes)?;
        let mirror = mirrored::open_outbox(&engine.outbox, &engine.meta, outbox)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            cache_bytes,
            engine: RwLock::new(Some(Arc::new(engine))),
            outage: Mutex::new(None),
            epoch: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            durability: watch::Sender::new(Durability::default()),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
            mirror,
        });
        let flusher = match mode {
            SyncMode::Sync => {
                let shared = shared.clone();
                let handle = std::thread::Builder::new()
                    .name("store-flusher".into())
                    .spawn(move || run_flusher(&shared))
                    .map_err(|e| StoreError::Io(format!("cannot start the flusher: {e}")))?;
                Some(handle)
            }
            SyncMode::Relaxed => None,
        };
        Ok(Arc::new(SledStore {
            shared,
            mode,
            next_chat: Mutex::new(next.chat),
            next_message: Mutex::new(next.message),
            flusher: Mutex::new(flusher),
        }))
    }

    /// The open database, for tests that look at trees directly.
    #[cfg(test)]
    fn engine(&self) -> Arc<Engine> {
        self.shared.open_engine().expect("the database is open")
    }

    /// Runs `op` on the open database; a disk error takes the store down until it recovers.
    fn with<T>(&self, op: impl FnOnce(&Engine) -> StoreResult<T>) -> StoreResult<T> {
        self.shared.with(op)
    }

    /// Flushes and stops the flusher thread; later writes flush inline. Safe to call twice.
    pub fn close(&self) -> StoreResult<()> {
        *lock(&self.shared.stopped) = true;
        self.shared.wake.notify_all();
        if let Some(handle) = lock(&self.flusher).take()
            && handle.join().is_err()
        {
            log::error!("the store flusher thread panicked");
        }
        self.flush()
    }

    /// Closes the store and returns once sled has let go of the directory, so the next open
    /// finds it free: other handles (a chat purge finishing) and sled's own threads hold it a
    /// moment longer.
    pub fn close_and_release(store: Arc<SledStore>) -> StoreResult<()> {
        store.close()?;
        let dir = store.shared.dir.clone();
        drop(store);
        if !copy::wait_until_released(&dir, RELEASE_WAIT) {
            log::warn!(
                "{} was still locked {RELEASE_WAIT:?} after closing",
                dir.display()
            );
        }
        Ok(())
    }

    /// Successful flushes so far (group commit makes this far lower than the write count).
    pub fn flush_count(&self) -> u64 {
        self.shared.flushes.load(Ordering::SeqCst)
    }

    /// Gives a completed write its epoch and gets it flushed (Sync) or reported (Relaxed).
    fn committed(&self) {
        let epoch = self.shared.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        match self.mode {
            SyncMode::Relaxed => self.shared.publish(epoch, true),
            SyncMode::Sync => {
                let stopped = lock(&self.shared.stopped);
                if *stopped {
                    drop(stopped);
                    // Closed: nobody else will flush this write.
                    let _ = self.flush();
                } else {
                    // Notifying under the lock means the flusher cannot miss this epoch.
                    self.shared.wake.notify_one();
                }
            }
        }
    }

    /// Encodes an outbox entry when the mirror is on, and takes the outbox sequence until
    /// `queued`: entries then follow the order in which their transactions commit.
    fn pending(&self, entry: impl FnOnce() -> Entry) -> StoreResult<Option<Pending<'_>>> {
        let Some(mirror) = &self.shared.mirror else {
            return Ok(None);
        };
        let value = encode(&Queued {
            at_ms: now_ms(),
            entry: entry(),
        })?;
        Ok(Some(Pending {
            seq: lock(&mirror.seq),
            value,
        }))
    }

    /// After the transaction that wrote `pending` committed: next key, count, wake the worker.
    fn queued(&self, pending: Option<Pending<'_>>) {
        if let (Some(mut pending), Some(mirror)) = (pending, &self.shared.mirror) {
            *pending.seq += 1;
            drop(pending);
            mirror.len.fetch_add(1, Ordering::SeqCst);
            mirror.wake.notify_one();
        }
    }
}

/// An encoded outbox entry with the sequence lock it will be stored under.
struct Pending<'a> {
    seq: MutexGuard<'a, u64>,
    value: Vec<u8>,
}

/// Writes the entry (if any) inside a transaction.
fn put_pending(outbox: &TransactionalTree, pending: &Option<Pending<'_>>) -> TxResult<()> {
    if let Some(p) = pending {
        outbox.insert(&p.seq.to_be_bytes()[..], p.value.as_slice())?;
    }
    Ok(())
}

impl SledStore {
    /// A write the mirror follows, in the one order every such write keeps: encode its outbox
    /// entry and take the outbox sequence (mirror on); run `apply` in one transaction over
    /// `trees`, whose last tree is the outbox, and store the entry in that transaction if
    /// `apply` changed anything; then move the sequence on and wake the mirror worker, set the
    /// next-id counter held across the transaction (if any) to its new value, and give the
    /// write its epoch. A write that changed nothing queues nothing and takes no epoch.
    fn mirrored_write<Trees, T>(
        &self,
        trees: Trees,
        entry: impl FnOnce() -> Entry,
        next: Option<(MutexGuard<'_, u64>, u64)>,
        apply: impl Fn(&Trees::View) -> TxResult<T>,
    ) -> StoreResult<T>
    where
        Trees: Transactional<StoreError>,
        Trees::View: OutboxLast,
        T: Changed,
    {
        let pending = self.pending(entry)?;
        let outcome = trees
            .transaction(|view| -> TxResult<T> {
                let outcome = apply(view)?;
                if outcome.changed() {
                    put_pending(view.outbox(), &pending)?;
                }
                Ok(outcome)
            })
            .map_err(tx_error)?;
        if outcome.changed() {
            self.queued(pending);
            if let Some((mut next, after)) = next {
                *next = after;
            }
            self.committed();
        }
        Ok(outcome)
    }
}

/// The trees of a mirrored write's transaction, the outbox last.
trait OutboxLast {
    fn outbox(&self) -> &TransactionalTree;
}

impl OutboxLast for (TransactionalTree, TransactionalTree) {
    fn outbox(&self) -> &TransactionalTree {
        &self.1
    }
}

impl OutboxLast for (TransactionalTree, TransactionalTree, TransactionalTree) {
    fn outbox(&self) -> &TransactionalTree {
        &self.2
    }
}

impl OutboxLast
    for (
        TransactionalTree,
        TransactionalTree,
        TransactionalTree,
        TransactionalTree,
    )
{
    fn outbox(&self) -> &TransactionalTree {
        &self.3
    }
}

/// Whether a write's transaction changed anything, and so is queued for the mirror and committed.
trait Changed {
    fn changed(&self) -> bool;
}

/// A write that always changes something.
impl Changed for () {
    fn changed(&self) -> bool {
        true
    }
}

/// False when there was nothing to change (a missing row, a lost race).
impl Changed for bool {
    fn changed(&self) -> bool {
        *self
    }
}

/// A refused insert changes nothing.
impl Changed for Result<(), Taken> {
    fn changed(&self) -> bool {
        self.is_ok()
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            log::error!("closing the store: {e}");
        }
    }
}

impl Shared {
    /// The open database; `None` while storage is down.
    fn open_engine(&self) -> Option<Arc<Engine>> {
        self.engine
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `op` on the open database, or answers `Unavailable` while storage is down.
    fn with<T>(self: &Arc<Self>, op: impl FnOnce(&Engine) -> StoreResult<T>) -> StoreResult<T> {
        let engine = self.open_engine().ok_or(StoreError::Unavailable)?;
        let result = op(&engine);
        if let Err(StoreError::Disk(e)) = &result {
            drop(engine);
            self.fail(e);
        }
        result
    }

    /// Flushes everything written up to now and reports `target` as durable (or failed).
    fn flush_to(self: &Arc<Self>, target: u64) -> StoreResult<()> {
        let started = Instant::now();
        let flushed = self.with(|e| e.db.flush().map_err(io));
        crate::telemetry::fsync(started.elapsed(), flushed.is_ok());
        match flushed {
            Ok(_) => {
                self.flushes.fetch_add(1, Ordering::SeqCst);
                self.publish(target, true);
                Ok(())
            }
            Err(e) => {
                // A disk failure was logged once when it began; anything else is logged here.
                if !e.is_outage() {
                    log::error!("storage flush failed: {e}");
                }
                self.publish(target, false);
                Err(e)
            }
        }
    }

    fn publish(&self, target: u64, ok: bool) {
        self.durability.send_if_modified(|d| advance(d, target, ok));
    }
}

/// Applies a flush outcome; progress never goes backwards. Returns whether anything changed.
fn advance(d: &mut Durability, target: u64, ok: bool) -> bool {
    let before = *d;
    if ok {
        d.durable = d.durable.max(target);
        if d.failed.is_some_and(|f| f <= d.durable) {
            d.failed = None;
        }
    } else {
        d.failed = Some(d.failed.map_or(target, |f| f.max(target)));
    }
    *d != before
}

/// Group commit: one flush covers every write committed before it started.
fn run_flusher(shared: &Arc<Shared>) {
    let mut done = 0;
    loop {
        let target = {
            let mut stopped = lock(&shared.stopped);
            loop {
                if *stopped {
                    return;
                }
                let now = shared.epoch.load(Ordering::SeqCst);
                if now > done {
                    break now;
                }
                stopped = shared
                    .wake
                    .wait(stopped)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        if shared.flush_to(target).is_ok() {
            done = target;
        } else {
            // Back off so a failing disk is not hammered, but stop at once when asked.
            let stopped = lock(&shared.stopped);
            let _ = shared
                .wake
                .wait_timeout_while(stopped, FLUSH_RETRY, |stopped| !*stopped);
        }
    }
}

impl Store for SledStore {
    fn user(&self, key: &str) -> StoreResult<Option<UserRecord>> {
        users::user(self, key)
    }

    fn user_key_by_email(&self, email_key: &str) -> StoreResult<Option<String>> {
        users::user_key_by_email(self, email_key)
    }

    fn insert_user(
        &self,
        user: &UserRecord,
        mail: Option<&QueuedMail>,
    ) -> StoreResult<Result<(), Taken>> {
        users::insert_user(self, user, mail)
    }

    fn update_user(&self, user: &UserRecord, mail: Option<&QueuedMail>) -> StoreResult<()> {
        users::update_user(self, user, mail)
    }

    fn delete_user(&self, key: &str) -> StoreResult<bool> {
        users::delete_user(self, key)
    }

    fn users(&self) -> StoreResult<Vec<UserRecord>> {
        users::users(self)
    }

    fn chats(&self) -> StoreResult<Vec<ChatRecord>> {
        chats::chats(self)
    }

    fn create_chat(&self, name: &str, created: i64) -> StoreResult<Option<ChatRecord>> {
        chats::create_chat(self, name, created)
    }

    fn remove_chat(&self, chat_id: u64) -> StoreResult<bool> {
        chats::remove_chat(self, chat_id)
    }

    fn purge_messages(&self, chat_id: u64) -> StoreResult<usize> {
        messages::purge_messages(self, chat_id)
    }

    fn add_member(&self, member: &MemberRecord) -> StoreResult<()> {
        chats::add_member(self, member)
    }

    fn remove_member(&self, chat_id: u64, user_key: &str) -> StoreResult<()> {
        chats::remove_member(self, chat_id, user_key)
    }

    fn members(&self) -> StoreResult<Vec<MemberRecord>> {
        chats::members(self)
    }

    fn append_message(&self, message: NewMessage) -> StoreResult<MessageRecord> {
        messages::append_message(self, message)
    }

    fn last_messages(&self, chat_id: u64, limit: usize) -> StoreResult<Vec<MessageRecord>> {
        messages::last_messages(self, chat_id, limit)
    }

    fn messages_before(
        &self,
        chat_id: u64,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>> {
        messages::messages_before(self, chat_id, before, limit)
    }

    fn delete_message(&self, chat_id: u64, id: u64) -> StoreResult<bool> {
        messages::delete_message(self, chat_id, id)
    }

    fn put_session(&self, session: &SessionRecord) -> StoreResult<()> {
        sessions::put_session(self, session)
    }

    fn replace_session(&self, old_hash: &[u8; 32], session: &SessionRecord) -> StoreResult<()> {
        sessions::replace_session(self, old_hash, session)
    }

    fn delete_session(&self, token_hash: &[u8; 32]) -> StoreResult<()> {
        sessions::delete_session(self, token_hash)
    }

    fn take_offline(
        &self,
        token_hash: &[u8; 32],
        kept: Option<&SessionRecord>,
        user_key: &str,
        leave: &[u64],
    ) -> StoreResult<()> {
        sessions::take_offline(self, token_hash, kept, user_key, leave)
    }

    fn sessions(&self) -> StoreResult<Vec<SessionRecord>> {
        sessions::sessions(self)
    }

    fn save_blocks(&self, blocks: &[BlockedName]) -> StoreResult<()> {
        self.with(|e| {
            e.meta.insert(META_BLOCKS, encode(blocks)?).map_err(io)?;
            self.committed();
            Ok(())
        })
    }

    fn blocks(&self) -> StoreResult<Vec<BlockedName>> {
        self.with(|e| Ok(get::<Vec<BlockedName>>(&e.meta, META_BLOCKS)?.unwrap_or_default()))
    }

    fn save_queues(&self, snapshot: &[u8]) -> StoreResult<()> {
        self.with(|e| {
            // Already serialized by its owner: stored raw behind the version byte.
            let mut value = Vec::with_capacity(snapshot.len() + 1);
            value.push(FORMAT_VERSION);
            value.extend_from_slice(snapshot);
            e.meta.insert(META_QUEUES, value).map_err(io)?;
            self.committed();
            Ok(())
        })
    }

    fn take_queues(&self) -> StoreResult<Option<Vec<u8>>> {
        self.with(|e| {
            let Some(value) = e.meta.remove(META_QUEUES).map_err(io)? else {
                return Ok(None);
            };
            self.committed();
            match value.split_first() {
                Some((&FORMAT_VERSION, snapshot)) => Ok(Some(snapshot.to_vec())),
                _ => Err(StoreError::Corrupt("queue snapshot: unknown format".into())),
            }
        })
    }

    fn queue_mail(&self, mail: &QueuedMail) -> StoreResult<u64> {
        mail::queue_mail(self, mail)
    }

    fn pending_mail(&self) -> StoreResult<Vec<(u64, QueuedMail)>> {
        mail::pending_mail(self)
    }

    fn reschedule_mail(&self, id: u64, mail: &QueuedMail) -> StoreResult<()> {
        mail::reschedule_mail(self, id, mail)
    }

    fn delete_mail(&self, id: u64) -> StoreResult<()> {
        mail::delete_mail(self, id)
    }

    fn next_ids(&self) -> NextIds {
        NextIds {
            chat: *lock(&self.next_chat),
            message: *lock(&self.next_message),
        }
    }

    fn messages_below(
        &self,
        chat_id: u64,
        below: u64,
    ) -> Box<dyn Iterator<Item = StoreResult<MessageRecord>> + '_> {
        messages::messages_below(self, chat_id, below)
    }

    /// One sled batch per tree, then the counters: not atomic across trees, which is fine for
    /// its one caller, an import into a fresh directory that is moved into place only when done.
    fn import(&self, batch: &[Restored], next: NextIds) -> StoreResult<()> {
        self.with(|e| {
            let mut next_chat = lock(&self.next_chat);
            let mut next_message = lock(&self.next_message);
            let mut chat_after = (*next_chat).max(next.chat);
            let mut message_after = (*next_message).max(next.message);
            let (mut users, mut emails) = (sled::Batch::default(), sled::Batch::default());
            let (mut chats, mut messages) = (sled::Batch::default(), sled::Batch::default());
            for record in batch {
                match record {
                    Restored::User(user) => {
                        let key = user.name.to_lowercase();
                        users.insert(key.as_bytes(), encode(user)?);
                        emails.insert(user.email.to_lowercase().as_bytes(), encode(&key)?);
                    }
                    Restored::Chat(chat) => {
                        chats.insert(chat.name.to_lowercase().as_bytes(), encode(chat)?);
                        chat_after = chat_after.max(counter_after(chat.id)?);
                    }
                    Restored::Message(message) => {
                        let key = message_key(message.chat_id, message.id);
                        messages.insert(&key[..], encode_message(message)?);
                        message_after = message_after.max(counter_after(message.id)?);
                    }
                }
            }
            e.users.apply_batch(users).map_err(io)?;
            e.emails.apply_batch(emails).map_err(io)?;
            e.chats.apply_batch(chats).map_err(io)?;
            e.messages.apply_batch(messages).map_err(io)?;
            let mut counters = sled::Batch::default();
            counters.insert(META_NEXT_CHAT, encode(&chat_after)?);
            counters.insert(META_NEXT_MESSAGE, encode(&message_after)?);
            e.meta.apply_batch(counters).map_err(io)?;
            *next_chat = chat_after;
            *next_message = message_after;
            drop((next_chat, next_message));
            self.committed();
            Ok(())
        })
    }

    fn pending_mail_count(&self) -> StoreResult<usize> {
        mail::pending_mail_count(self)
    }

    fn write_epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::SeqCst)
    }

    fn durability(&self) -> watch::Receiver<Durability> {
        self.shared.durability.subscribe()
    }

    fn flush(&self) -> StoreResult<()> {
        self.shared.flush_to(self.write_epoch())
    }

    fn mirror_report(&self) -> MirrorReport {
        self.mirror_status()
    }

    fn available(&self) -> bool {
        self.shared.open_engine().is_some()
    }

    fn check_health(&self) -> StoreResult<()> {
        self.with(|e| {
            // The probe is not a data write, so it does not bump the epoch or wake the flusher.
            let stamp = self.write_epoch();
            e.meta.insert(META_HEALTH, encode(&stamp)?).map_err(io)?;
            if get::<u64>(&e.meta, META_HEALTH)? != Some(stamp) {
                return Err(StoreError::Io(
                    "health probe read back a different value".into(),
                ));
            }
            if let Some(epoch) = self.shared.durability.borrow().failed {
                return Err(StoreError::Io(format!("the flush of epoch {epoch} failed")));
            }
            Ok(())
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// sled's I/O errors are the disk's (full, failing): they take the store down until it recovers.
fn io(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(_) => StoreError::Disk(e.to_string()),
        _ => StoreError::Io(e.to_string()),
    }
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => io(e),
    }
}

/// sled reports a held directory as an Io error "could not acquire lock".
fn open_error(dir: &Path, e: sled::Error) -> StoreError {
    if let sled::Error::Io(err) = &e
        && (err.kind() == std::io::ErrorKind::WouldBlock
            || err.to_string().contains("could not acquire lock"))
    {
        return StoreError::Locked(dir.to_path_buf());
    }
    if let sled::Error::Io(err) = &e {
        // sled's own message names no file: find the one this process cannot use.
        let culprit = match crate::files::find_inaccessible(dir) {
            Some(found) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                format!("; {found}")
            }
            _ => String::new(),
        };
        return StoreError::Disk(format!(
            "cannot open the data directory {}: {err}{culprit} (natter runs as {})",
            dir.display(),
            crate::files::process_user()
        ));
    }
    io(e)
}

fn check_schema(meta: &Tree) -> StoreResult<()> {
    match get::<u32>(meta, META_SCHEMA)? {
        None => {
            meta.insert(META_SCHEMA, encode(&SCHEMA_VERSION)?)
                .map_err(io)?;
            Ok(())
        }
        Some(found) if found > SCHEMA_VERSION => Err(StoreError::Corrupt(format!(
            "schema version {found} is newer than this natter supports ({SCHEMA_VERSION})"
        ))),
        Some(_) => Ok(()),
    }
}

/// A stored next-id counter; ids start at 1.
fn read_counter(meta: &Tree, key: &[u8]) -> StoreResult<u64> {
    Ok(get::<u64>(meta, key)?.unwrap_or(1).max(1))
}

fn counter_after(id: u64) -> StoreResult<u64> {
    id.checked_add(1)
        .ok_or_else(|| StoreError::Corrupt("id counter exhausted".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Author, wait_durable};
    use fixtures::{member, message, open, reopen, session, user};
    use tempfile::TempDir;

    #[test]
    fn queue_snapshot_is_taken_once() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        assert_eq!(store.take_queues().unwrap(), None);
        store.save_queues(b"snapshot").unwrap();
        let store = reopen(&dir, store);
        assert_eq!(store.take_queues().unwrap(), Some(b"snapshot".to_vec()));
        assert_eq!(store.take_queues().unwrap(), None);
        let store = reopen(&dir, store);
        assert_eq!(store.take_queues().unwrap(), None);
    }

    #[test]
    fn second_open_is_locked() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        match SledStore::open(dir.path(), SyncMode::Sync) {
            Err(StoreError::Locked(path)) => assert_eq!(path, dir.path()),
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("expected Locked, got a second store"),
        }
        // The first store is unharmed.
        store.check_health().unwrap();
        assert!(store.create_chat("a", 1).unwrap().is_some());
    }

    #[tokio::test]
    async fn sync_mode_durability_advances() {
        let dir = TempDir::new().unwrap();
        let store = SledStore::open(dir.path(), SyncMode::Sync).unwrap();
        store
            .insert_user(&user("ann", "a@x"), None)
            .unwrap()
            .unwrap();
        let epoch = store.write_epoch();
        assert_eq!(epoch, 1);
        let wait = wait_durable(store.as_ref(), epoch);
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap()
            .unwrap();
        assert!(store.durability().borrow().durable >= epoch);
        assert!(store.flush_count() >= 1);
        store.check_health().unwrap();

        // After close, writes flush inline so waiters still finish.
        store.close().unwrap();
        store.create_chat("late", 1).unwrap().unwrap();
        let wait = wait_durable(store.as_ref(), store.write_epoch());
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn group_commit_shares_flushes() {
        const WRITERS: u64 = 40;
        const EACH: u64 = 5;
        let dir = TempDir::new().unwrap();
        let store = SledStore::open(dir.path(), SyncMode::Sync).unwrap();
        let chat = store.create_chat("load", 1).unwrap().unwrap();
        let before = store.flush_count();
        let mut tasks = Vec::new();
        for _ in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..EACH {
                    store.append_message(message(chat.id, "x")).unwrap();
                    let epoch = store.write_epoch();
                    wait_durable(store.as_ref(), epoch).await.unwrap();
                }
            }));
        }
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .unwrap()
                .unwrap();
        }
        let flushes = store.flush_count() - before;
        let writes = WRITERS * EACH;
        println!("group commit: {writes} acknowledged writes shared {flushes} flushes");
        assert_eq!(
            store.last_messages(chat.id, 1000).unwrap().len() as u64,
            writes
        );
        assert!(
            flushes * 2 < writes,
            "{flushes} flushes for {writes} writes"
        );
    }

    #[test]
    fn relaxed_mode_is_durable_at_once() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let watch = store.durability();
        for i in 0..5 {
            store.put_session(&session(i, u64::from(i))).unwrap();
            assert_eq!(watch.borrow().durable, store.write_epoch());
        }
        assert_eq!(store.write_epoch(), 5);
        assert_eq!(store.flush_count(), 0);
    }

    #[test]
    fn durability_never_goes_backwards() {
        let mut d = Durability::default();
        assert!(advance(&mut d, 5, true));
        assert!(!advance(&mut d, 3, true));
        assert!(advance(&mut d, 8, false));
        assert_eq!(
            d,
            Durability {
                durable: 5,
                failed: Some(8),
                ..Durability::default()
            }
        );
        assert!(advance(&mut d, 9, true));
        assert_eq!(
            d,
            Durability {
                durable: 9,
                failed: None,
                ..Durability::default()
            }
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        store
            .engine()
            .meta
            .insert(META_SCHEMA, encode(&99u32).unwrap())
            .unwrap();
        store.close().unwrap();
        drop(store);
        assert!(matches!(
            SledStore::open(dir.path(), SyncMode::Relaxed),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn data_survives_reopen() {
        let dir = TempDir::new().unwrap();
        let store = SledStore::open(dir.path(), SyncMode::Sync).unwrap();
        let ann = user("Ann", "ann@x");
        store.insert_user(&ann, None).unwrap().unwrap();
        let chat = store.create_chat("General", 3).unwrap().unwrap();
        store.add_member(&member(chat.id, "Ann")).unwrap();
        let sent = store.append_message(message(chat.id, "hello")).unwrap();
        store.put_session(&session(4, 40)).unwrap();
        let store = reopen(&dir, store);
        assert_eq!(store.user("ann").unwrap(), Some(ann));
        assert_eq!(
            store.user_key_by_email("ann@x").unwrap(),
            Some("ann".into())
        );
        assert_eq!(store.chats().unwrap(), vec![chat.clone()]);
        assert_eq!(store.members().unwrap(), vec![member(chat.id, "Ann")]);
        assert_eq!(store.last_messages(chat.id, 5).unwrap(), vec![sent]);
        assert_eq!(store.sessions().unwrap(), vec![session(4, 40)]);
    }

    #[test]
    fn import_keeps_ids_and_raises_the_counters() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let ann = user("Ann", "Ann@X");
        let chat = ChatRecord {
            id: 7,
            name: "Old".into(),
            created: 3,
        };
        let stored = MessageRecord {
            id: 41,
            chat_id: 7,
            user: "Ann".into(),
            verified: true,
            admin: false,
            bot: false,
            text: "kept".into(),
            time: 9,
            author: Some(Author::Account("ann".into())),
        };
        let records = [
            Restored::User(ann.clone()),
            Restored::Chat(chat.clone()),
            Restored::Message(stored.clone()),
        ];
        store
            .import(
                &records,
                NextIds {
                    chat: 5,
                    message: 50,
                },
            )
            .unwrap();
        assert_eq!(
            store.next_ids(),
            NextIds {
                chat: 8,
                message: 50
            }
        );
        let store = reopen(&dir, store);
        assert_eq!(store.user("ann").unwrap(), Some(ann));
        assert_eq!(
            store.user_key_by_email("ann@x").unwrap(),
            Some("ann".into())
        );
        assert_eq!(store.chats().unwrap(), vec![chat]);
        assert_eq!(store.last_messages(7, 5).unwrap(), vec![stored]);
        assert_eq!(
            store.next_ids(),
            NextIds {
                chat: 8,
                message: 50
            }
        );
        assert_eq!(store.append_message(message(7, "new")).unwrap().id, 50);
        assert_eq!(store.create_chat("New", 1).unwrap().unwrap().id, 8);
    }

    #[test]
    fn orphans_are_purged_at_open() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let chat = store.create_chat("a", 1).unwrap().unwrap();
        store.append_message(message(chat.id, "kept")).unwrap();
        store.add_member(&member(chat.id, "Ann")).unwrap();
        // Rows of chats 40 and 41 that a crash left behind, with a message id above the counter.
        for gone in [40, 41] {
            store.add_member(&member(gone, "Bob")).unwrap();
            let key = message_key(gone, 500);
            let stray = MessageRecord {
                id: 500,
                chat_id: gone,
                user: "bob".into(),
                verified: false,
                admin: false,
                bot: false,
                text: "orphan".into(),
                time: 1,
                author: None,
            };
            let value = encode_message(&stray).unwrap();
            store.engine().messages.insert(key, value).unwrap();
        }
        let store = reopen(&dir, store);
        assert_eq!(store.members().unwrap(), vec![member(chat.id, "Ann")]);
        assert_eq!(store.engine().messages.len(), 1);
        assert_eq!(store.last_messages(chat.id, 5).unwrap()[0].text, "kept");
        assert!(store.last_messages(40, 5).unwrap().is_empty());
        // Ids of purged rows are not handed out again.
        assert_eq!(store.append_message(message(chat.id, "n")).unwrap().id, 501);
    }
}
