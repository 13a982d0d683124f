//! The sled implementation of `Store`: one tree per record kind, bincode values, group commit.

mod copy;
mod engine;
mod mirrored;
mod recovery;

pub use copy::ReadCopy;

pub use mirrored::new_instance;

use super::mirror::outbox::{MirroredUser, Queued, now_ms};
use super::mirror::{Entry, MirrorReport, MirrorShared};
use super::{
    ChatRecord, Durability, MemberRecord, MessageRecord, NewMessage, NextIds, QueuedMail, Restored,
    SessionRecord, Store, StoreError, StoreResult, Taken, UserRecord,
};
use engine::Engine;
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

/// Leading byte of every stored value.
const FORMAT_VERSION: u8 = 1;
/// Leading byte of a message that records its author; messages led by `FORMAT_VERSION` predate it.
const MESSAGE_FORMAT_VERSION: u8 = 2;
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

    /// A fresh outbox key and the encoded mail, ready to insert in a transaction.
    fn mail_entry(&self, mail: Option<&QueuedMail>) -> StoreResult<Option<([u8; 8], Vec<u8>)>> {
        let Some(mail) = mail else {
            return Ok(None);
        };
        // generate_id never hands out an id that reached the disk, which is all the outbox needs.
        let id = self.with(|e| e.db.generate_id().map_err(io))?;
        Ok(Some((id.to_be_bytes(), encode(mail)?)))
    }

    /// Finds a chat's key in `chats` by id (the tree is keyed by name and small).
    fn chat_key(e: &Engine, chat_id: u64) -> StoreResult<Option<IVec>> {
        for entry in e.chats.iter() {
            let (key, value) = entry.map_err(io)?;
            if decode::<ChatRecord>(&value)?.id == chat_id {
                return Ok(Some(key));
            }
        }
        Ok(None)
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
        self.with(|e| get(&e.users, key.as_bytes()))
    }

    fn user_key_by_email(&self, email_key: &str) -> StoreResult<Option<String>> {
        self.with(|e| get(&e.emails, email_key.as_bytes()))
    }

    fn insert_user(
        &self,
        user: &UserRecord,
        mail: Option<&QueuedMail>,
    ) -> StoreResult<Result<(), Taken>> {
        self.with(|e| {
            let key = user.name.to_lowercase();
            let email_key = user.email.to_lowercase();
            let (value, owner) = (encode(user)?, encode(&key)?);
            let mail = self.mail_entry(mail)?;
            let pending = self.pending(|| Entry::User(MirroredUser::from(user)))?;
            let outcome = (&e.users, &e.emails, &e.mail, &e.outbox)
                .transaction(
                    |(users, emails, outbox, mirror)| -> TxResult<Result<(), Taken>> {
                        if users.get(&key)?.is_some() {
                            return Ok(Err(Taken::Name));
                        }
                        if emails.get(&email_key)?.is_some() {
                            return Ok(Err(Taken::Email));
                        }
                        users.insert(key.as_bytes(), value.as_slice())?;
                        emails.insert(email_key.as_bytes(), owner.as_slice())?;
                        if let Some((id, queued)) = &mail {
                            outbox.insert(&id[..], queued.as_slice())?;
                        }
                        put_pending(mirror, &pending)?;
                        Ok(Ok(()))
                    },
                )
                .map_err(tx_error)?;
            if outcome.is_ok() {
                self.queued(pending);
                self.committed();
            }
            Ok(outcome)
        })
    }

    /// Does nothing if the account is gone (a concurrent delete must not resurrect it).
    fn update_user(&self, user: &UserRecord, mail: Option<&QueuedMail>) -> StoreResult<()> {
        self.with(|e| {
            let key = user.name.to_lowercase();
            let email_key = user.email.to_lowercase();
            let (value, owner) = (encode(user)?, encode(&key)?);
            let mail = self.mail_entry(mail)?;
            let pending = self.pending(|| Entry::User(MirroredUser::from(user)))?;
            let updated = (&e.users, &e.emails, &e.mail, &e.outbox)
                .transaction(|(users, emails, outbox, mirror)| -> TxResult<bool> {
                    let Some(old) = users.get(&key)? else {
                        return Ok(false);
                    };
                    let old: UserRecord = decode(&old).map_err(abort)?;
                    let old_email = old.email.to_lowercase();
                    if email_owner(emails, &email_key)?.is_some_and(|o| o != key) {
                        // The caller checks first; this only catches a race, so keep the index intact.
                        return Err(abort(StoreError::Io(
                            "the new email belongs to another account".into(),
                        )));
                    }
                    if old_email != email_key
                        && email_owner(emails, &old_email)?.as_deref() == Some(key.as_str())
                    {
                        emails.remove(old_email.as_bytes())?;
                    }
                    emails.insert(email_key.as_bytes(), owner.as_slice())?;
                    users.insert(key.as_bytes(), value.as_slice())?;
                    if let Some((id, queued)) = &mail {
                        outbox.insert(&id[..], queued.as_slice())?;
                    }
                    put_pending(mirror, &pending)?;
                    Ok(true)
                })
                .map_err(tx_error)?;
            if updated {
                self.queued(pending);
                self.committed();
            }
            Ok(())
        })
    }

    fn delete_user(&self, key: &str) -> StoreResult<bool> {
        self.with(|e| {
            let pending = self.pending(|| Entry::DeleteUser {
                key: key.to_owned(),
            })?;
            let deleted = (&e.users, &e.emails, &e.outbox)
                .transaction(|(users, emails, mirror)| -> TxResult<bool> {
                    let Some(old) = users.remove(key.as_bytes())? else {
                        return Ok(false);
                    };
                    let old: UserRecord = decode(&old).map_err(abort)?;
                    let email_key = old.email.to_lowercase();
                    if email_owner(emails, &email_key)?.as_deref() == Some(key) {
                        emails.remove(email_key.as_bytes())?;
                    }
                    put_pending(mirror, &pending)?;
                    Ok(true)
                })
                .map_err(tx_error)?;
            if deleted {
                self.queued(pending);
                self.committed();
            }
            Ok(deleted)
        })
    }

    fn users(&self) -> StoreResult<Vec<UserRecord>> {
        self.with(|e| decode_all(&e.users))
    }

    fn chats(&self) -> StoreResult<Vec<ChatRecord>> {
        self.with(|e| decode_all(&e.chats))
    }

    fn create_chat(&self, name: &str, created: i64) -> StoreResult<Option<ChatRecord>> {
        self.with(|e| {
            let key = name.to_lowercase();
            let mut next = lock(&self.next_chat);
            let chat = ChatRecord {
                id: *next,
                name: name.to_string(),
                created,
            };
            let after = counter_after(chat.id)?;
            let (value, counter) = (encode(&chat)?, encode(&after)?);
            let pending = self.pending(|| Entry::Chat(chat.clone()))?;
            let done = (&e.chats, &e.meta, &e.outbox)
                .transaction(|(chats, meta, mirror)| -> TxResult<bool> {
                    if chats.get(&key)?.is_some() {
                        return Ok(false);
                    }
                    chats.insert(key.as_bytes(), value.as_slice())?;
                    meta.insert(META_NEXT_CHAT, counter.as_slice())?;
                    put_pending(mirror, &pending)?;
                    Ok(true)
                })
                .map_err(tx_error)?;
            if !done {
                return Ok(None);
            }
            self.queued(pending);
            *next = after;
            drop(next);
            self.committed();
            Ok(Some(chat))
        })
    }

    fn remove_chat(&self, chat_id: u64) -> StoreResult<bool> {
        self.with(|e| {
            let Some(key) = Self::chat_key(e, chat_id)? else {
                return Ok(false);
            };
            let member_keys = e
                .members
                .scan_prefix(chat_id.to_be_bytes())
                .keys()
                .collect::<Result<Vec<IVec>, _>>()
                .map_err(io)?;
            let pending = self.pending(|| Entry::RemoveChat { id: chat_id })?;
            let removed = (&e.chats, &e.members, &e.outbox)
                .transaction(|(chats, members, mirror)| -> TxResult<bool> {
                    let Some(value) = chats.get(&key)? else {
                        return Ok(false);
                    };
                    if decode::<ChatRecord>(&value).map_err(abort)?.id != chat_id {
                        return Ok(false);
                    }
                    chats.remove(&key)?;
                    for member in &member_keys {
                        members.remove(member)?;
                    }
                    put_pending(mirror, &pending)?;
                    Ok(true)
                })
                .map_err(tx_error)?;
            if !removed {
                return Ok(false);
            }
            self.queued(pending);
            self.committed();
            Ok(true)
        })
    }

    fn purge_messages(&self, chat_id: u64) -> StoreResult<usize> {
        self.with(|e| remove_prefix(&e.messages, chat_id))
    }

    fn add_member(&self, member: &MemberRecord) -> StoreResult<()> {
        self.with(|e| {
            let key = member_key(member.chat_id, &member.user_key);
            e.members.insert(key, encode(member)?).map_err(io)?;
            self.committed();
            Ok(())
        })
    }

    fn remove_member(&self, chat_id: u64, user_key: &str) -> StoreResult<()> {
        self.with(|e| {
            e.members
                .remove(member_key(chat_id, user_key))
                .map_err(io)?;
            self.committed();
            Ok(())
        })
    }

    fn members(&self) -> StoreResult<Vec<MemberRecord>> {
        self.with(|e| decode_all(&e.members))
    }

    fn append_message(&self, message: NewMessage) -> StoreResult<MessageRecord> {
        self.with(|e| {
            let mut next = lock(&self.next_message);
            let record = MessageRecord {
                id: *next,
                chat_id: message.chat_id,
                user: message.user,
                verified: message.verified,
                admin: message.admin,
                bot: message.bot,
                text: message.text,
                time: message.time,
                author: message.author,
            };
            let after = counter_after(record.id)?;
            let (value, counter) = (encode_message(&record)?, encode(&after)?);
            let key = message_key(record.chat_id, record.id);
            let pending = self.pending(|| Entry::Message(record.clone()))?;
            (&e.messages, &e.meta, &e.outbox)
                .transaction(|(messages, meta, mirror)| -> TxResult<()> {
                    messages.insert(&key[..], value.as_slice())?;
                    meta.insert(META_NEXT_MESSAGE, counter.as_slice())?;
                    put_pending(mirror, &pending)?;
                    Ok(())
                })
                .map_err(tx_error)?;
            self.queued(pending);
            *next = after;
            drop(next);
            self.committed();
            crate::telemetry::message_stored();
            Ok(record)
        })
    }

    fn last_messages(&self, chat_id: u64, limit: usize) -> StoreResult<Vec<MessageRecord>> {
        self.messages_before(chat_id, None, limit)
    }

    fn messages_before(
        &self,
        chat_id: u64,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>> {
        self.with(|e| {
            let start = message_key(chat_id, 0);
            let range = match before {
                Some(id) => e.messages.range(start..message_key(chat_id, id)),
                None => e.messages.scan_prefix(chat_id.to_be_bytes()),
            };
            let mut newest_first = range
                .values()
                .rev()
                .take(limit)
                .map(|value| decode_message(&value.map_err(io)?))
                .collect::<StoreResult<Vec<MessageRecord>>>()?;
            newest_first.reverse();
            Ok(newest_first)
        })
    }

    fn delete_message(&self, chat_id: u64, id: u64) -> StoreResult<bool> {
        self.with(|e| {
            let key = message_key(chat_id, id);
            let pending = self.pending(|| Entry::DeleteMessage { id })?;
            let removed = (&e.messages, &e.outbox)
                .transaction(|(messages, mirror)| -> TxResult<bool> {
                    if messages.remove(&key[..])?.is_none() {
                        return Ok(false);
                    }
                    put_pending(mirror, &pending)?;
                    Ok(true)
                })
                .map_err(tx_error)?;
            if removed {
                self.queued(pending);
                self.committed();
            }
            Ok(removed)
        })
    }

    fn put_session(&self, session: &SessionRecord) -> StoreResult<()> {
        self.with(|e| {
            e.sessions
                .insert(session.token_hash, encode(session)?)
                .map_err(io)?;
            self.committed();
            Ok(())
        })
    }

    fn replace_session(&self, old_hash: &[u8; 32], session: &SessionRecord) -> StoreResult<()> {
        self.with(|e| {
            let value = encode(session)?;
            e.sessions
                .transaction(|sessions| -> TxResult<()> {
                    sessions.remove(&old_hash[..])?;
                    sessions.insert(&session.token_hash[..], value.as_slice())?;
                    Ok(())
                })
                .map_err(tx_error)?;
            self.committed();
            Ok(())
        })
    }

    fn delete_session(&self, token_hash: &[u8; 32]) -> StoreResult<()> {
        self.with(|e| {
            e.sessions.remove(token_hash).map_err(io)?;
            self.committed();
            Ok(())
        })
    }

    fn take_offline(
        &self,
        token_hash: &[u8; 32],
        kept: Option<&SessionRecord>,
        user_key: &str,
        leave: &[u64],
    ) -> StoreResult<()> {
        self.with(|e| {
            let kept = kept.map(|k| Ok::<_, StoreError>((k.token_hash, encode(k)?)));
            let kept = kept.transpose()?;
            let member_keys: Vec<Vec<u8>> =
                leave.iter().map(|c| member_key(*c, user_key)).collect();
            (&e.sessions, &e.members)
                .transaction(|(sessions, members)| -> TxResult<()> {
                    sessions.remove(&token_hash[..])?;
                    if let Some((hash, value)) = &kept {
                        sessions.insert(&hash[..], value.as_slice())?;
                    }
                    for key in &member_keys {
                        members.remove(key.as_slice())?;
                    }
                    Ok(())
                })
                .map_err(tx_error)?;
            self.committed();
            Ok(())
        })
    }

    fn sessions(&self) -> StoreResult<Vec<SessionRecord>> {
        self.with(|e| decode_all(&e.sessions))
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
        self.with(|e| {
            let Some((id, value)) = self.mail_entry(Some(mail))? else {
                return Err(StoreError::Io("no mail to queue".into()));
            };
            e.mail.insert(id, value).map_err(io)?;
            self.committed();
            Ok(u64::from_be_bytes(id))
        })
    }

    fn pending_mail(&self) -> StoreResult<Vec<(u64, QueuedMail)>> {
        self.with(|e| {
            e.mail
                .iter()
                .map(|entry| {
                    let (key, value) = entry.map_err(io)?;
                    let id: [u8; 8] = key
                        .as_ref()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("mail key is not 8 bytes".into()))?;
                    Ok((u64::from_be_bytes(id), decode(&value)?))
                })
                .collect()
        })
    }

    fn reschedule_mail(&self, id: u64, mail: &QueuedMail) -> StoreResult<()> {
        self.with(|e| {
            e.mail.insert(id.to_be_bytes(), encode(mail)?).map_err(io)?;
            self.committed();
            Ok(())
        })
    }

    fn delete_mail(&self, id: u64) -> StoreResult<()> {
        self.with(|e| {
            e.mail.remove(id.to_be_bytes()).map_err(io)?;
            self.committed();
            Ok(())
        })
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
        let range = message_key(chat_id, 0)..message_key(chat_id, below);
        // The iterator keeps its own handle of the tree; a disk failure meanwhile fails it.
        match self.with(|e| Ok(e.messages.range(range))) {
            Ok(rows) => Box::new(
                rows.values()
                    .map(|value| decode_message(&value.map_err(io)?)),
            ),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
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
        self.with(|e| Ok(e.mail.len()))
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

fn encode<T: Serialize + ?Sized>(value: &T) -> StoreResult<Vec<u8>> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .map_err(|e| StoreError::Io(format!("encoding failed: {e}")))?;
    Ok(out)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => decode_body(body),
        Some((version, _)) => Err(corrupt_value::<T>(format!(
            "unknown format version {version}"
        ))),
        None => Err(corrupt_value::<T>("empty value".into())),
    }
}

fn corrupt_value<T>(text: String) -> StoreError {
    let what = std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or("value");
    StoreError::Corrupt(format!("{what}: {text}"))
}

/// A bincode value that must use every byte of `body`.
fn decode_body<T: DeserializeOwned>(body: &[u8]) -> StoreResult<T> {
    let (value, used) = bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map_err(|e| corrupt_value::<T>(e.to_string()))?;
    if used != body.len() {
        return Err(corrupt_value::<T>("trailing bytes".into()));
    }
    Ok(value)
}

/// A message as the first format stored it, before authors were recorded.
#[derive(Deserialize)]
struct MessageV1 {
    id: u64,
    chat_id: u64,
    user: String,
    verified: bool,
    admin: bool,
    bot: bool,
    text: String,
    time: i64,
}

fn encode_message(record: &MessageRecord) -> StoreResult<Vec<u8>> {
    let mut out = encode(record)?;
    out[0] = MESSAGE_FORMAT_VERSION;
    Ok(out)
}

/// Reads both message formats; the first one has no author.
fn decode_message(bytes: &[u8]) -> StoreResult<MessageRecord> {
    match bytes.split_first() {
        Some((&MESSAGE_FORMAT_VERSION, body)) => decode_body(body),
        Some((&FORMAT_VERSION, body)) => {
            let old: MessageV1 = decode_body(body)?;
            Ok(MessageRecord {
                id: old.id,
                chat_id: old.chat_id,
                user: old.user,
                verified: old.verified,
                admin: old.admin,
                bot: old.bot,
                text: old.text,
                time: old.time,
                author: None,
            })
        }
        _ => decode::<MessageRecord>(bytes),
    }
}

fn get<T: DeserializeOwned>(tree: &Tree, key: &[u8]) -> StoreResult<Option<T>> {
    match tree.get(key).map_err(io)? {
        Some(value) => decode(&value).map(Some),
        None => Ok(None),
    }
}

fn decode_all<T: DeserializeOwned>(tree: &Tree) -> StoreResult<Vec<T>> {
    tree.iter()
        .values()
        .map(|value| decode(&value.map_err(io)?))
        .collect()
}

/// The user key an email index entry points to.
fn email_owner(emails: &TransactionalTree, email_key: &str) -> TxResult<Option<String>> {
    match emails.get(email_key.as_bytes())? {
        Some(owner) => Ok(Some(decode(&owner).map_err(abort)?)),
        None => Ok(None),
    }
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

fn member_key(chat_id: u64, user_key: &str) -> Vec<u8> {
    let mut key = chat_id.to_be_bytes().to_vec();
    key.extend_from_slice(user_key.as_bytes());
    key
}

fn message_key(chat_id: u64, id: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&chat_id.to_be_bytes());
    key[8..].copy_from_slice(&id.to_be_bytes());
    key
}

/// The chat id that leads a `members` or `messages` key.
fn chat_id_of(key: &[u8]) -> StoreResult<u64> {
    key.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("key without a chat id".into()))
}

fn message_id_of(key: &[u8]) -> StoreResult<u64> {
    key.get(8..16)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("message key without a message id".into()))
}

/// Rows deleted per batch when a removed chat's rows are purged.
const PURGE_BATCH: usize = 1000;

/// Deletes every row of a chat in batches, so no single write grows with the chat.
fn remove_prefix(tree: &Tree, chat_id: u64) -> StoreResult<usize> {
    let mut removed = 0;
    loop {
        let keys = tree
            .scan_prefix(chat_id.to_be_bytes())
            .keys()
            .take(PURGE_BATCH)
            .collect::<Result<Vec<IVec>, _>>()
            .map_err(io)?;
        if keys.is_empty() {
            return Ok(removed);
        }
        let mut batch = sled::Batch::default();
        for key in &keys {
            batch.remove(key);
        }
        tree.apply_batch(batch).map_err(io)?;
        removed += keys.len();
    }
}

/// The distinct chat ids that lead the keys of `tree`, seeking from one chat to the next.
fn chat_ids_in(tree: &Tree) -> StoreResult<Vec<u64>> {
    let mut ids = Vec::new();
    let mut from = 0u64;
    while let Some(key) = tree.range(from.to_be_bytes()..).keys().next() {
        let chat_id = chat_id_of(&key.map_err(io)?)?;
        ids.push(chat_id);
        match chat_id.checked_add(1) {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(ids)
}

fn purge(tree: &Tree, what: &str, chat_id: u64) -> StoreResult<()> {
    let removed = remove_prefix(tree, chat_id)?;
    log::warn!("removed {removed} {what} of removed chat {chat_id}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Author, wait_durable};
    use tempfile::TempDir;

    fn user(name: &str, email: &str) -> UserRecord {
        UserRecord {
            name: name.into(),
            email: email.into(),
            password_hash: "$pbkdf2-sha256$i=1,l=32$x$y".into(),
            verified: false,
            admin: false,
            bot: false,
            created: 1,
            activation: None,
            reset: None,
        }
    }

    fn message(chat_id: u64, text: &str) -> NewMessage {
        NewMessage {
            chat_id,
            user: "ann".into(),
            verified: true,
            admin: false,
            bot: false,
            text: text.into(),
            time: 7,
            author: Some(Author::Account("ann".into())),
        }
    }

    fn session(hash: u8, handle: u64) -> SessionRecord {
        SessionRecord {
            token_hash: [hash; 32],
            handle,
            user: "Ann".into(),
            user_key: "ann".into(),
            guest: false,
            created: 1,
            expires: 2,
            online: true,
        }
    }

    fn member(chat_id: u64, name: &str) -> MemberRecord {
        MemberRecord {
            chat_id,
            user_key: name.to_lowercase(),
            user: name.into(),
        }
    }

    fn open(dir: &TempDir) -> Arc<SledStore> {
        SledStore::open(dir.path(), SyncMode::Relaxed).unwrap()
    }

    fn reopen(dir: &TempDir, store: Arc<SledStore>) -> Arc<SledStore> {
        store.close().unwrap();
        drop(store);
        // sled's own background flush thread may hold the directory's lock a moment longer.
        for _ in 0..100 {
            match SledStore::open(dir.path(), SyncMode::Relaxed) {
                Err(StoreError::Locked(_)) => std::thread::sleep(Duration::from_millis(20)),
                other => return other.unwrap(),
            }
        }
        open(dir)
    }

    #[test]
    fn users_insert_update_delete() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let ann = user("Ann", "Ann@Example.org");
        assert_eq!(store.insert_user(&ann, None).unwrap(), Ok(()));
        assert_eq!(store.user("ann").unwrap(), Some(ann.clone()));
        assert_eq!(
            store.user_key_by_email("ann@example.org").unwrap(),
            Some("ann".into())
        );
        assert_eq!(
            store
                .insert_user(&user("ANN", "other@example.org"), None)
                .unwrap(),
            Err(Taken::Name)
        );
        assert_eq!(
            store
                .insert_user(&user("bob", "ANN@example.ORG"), None)
                .unwrap(),
            Err(Taken::Email)
        );
        assert_eq!(store.users().unwrap(), vec![ann.clone()]);

        let moved = UserRecord {
            email: "new@example.org".into(),
            verified: true,
            ..ann
        };
        store.update_user(&moved, None).unwrap();
        assert_eq!(store.user("ann").unwrap(), Some(moved.clone()));
        assert_eq!(store.user_key_by_email("ann@example.org").unwrap(), None);
        assert_eq!(
            store.user_key_by_email("new@example.org").unwrap(),
            Some("ann".into())
        );
        // The old email is free again.
        assert_eq!(
            store
                .insert_user(&user("bob", "ann@example.org"), None)
                .unwrap(),
            Ok(())
        );
        // Taking another account's email is refused and changes nothing.
        let clash = UserRecord {
            email: "Ann@example.org".into(),
            ..moved.clone()
        };
        assert!(matches!(
            store.update_user(&clash, None),
            Err(StoreError::Io(_))
        ));
        assert_eq!(store.user("ann").unwrap(), Some(moved));

        assert!(store.delete_user("ann").unwrap());
        assert!(!store.delete_user("ann").unwrap());
        assert_eq!(store.user("ann").unwrap(), None);
        assert_eq!(store.user_key_by_email("new@example.org").unwrap(), None);
        assert_eq!(
            store.user_key_by_email("ann@example.org").unwrap(),
            Some("bob".into())
        );
        // Updating a deleted account does not bring it back.
        store
            .update_user(&user("Ann", "x@example.org"), None)
            .unwrap();
        assert_eq!(store.user("ann").unwrap(), None);
        assert_eq!(store.user_key_by_email("x@example.org").unwrap(), None);
    }

    #[test]
    fn chats_create_duplicate_remove() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let general = store.create_chat("General", 5).unwrap().unwrap();
        assert_eq!(general.name, "General");
        assert!(store.create_chat("general", 6).unwrap().is_none());
        let other = store.create_chat("other", 6).unwrap().unwrap();
        assert!(other.id > general.id);

        store.add_member(&member(general.id, "Ann")).unwrap();
        store.add_member(&member(general.id, "Bob")).unwrap();
        store.add_member(&member(other.id, "Ann")).unwrap();
        store.remove_member(general.id, "bob").unwrap();
        assert_eq!(store.members().unwrap().len(), 2);
        store.append_message(message(general.id, "hi")).unwrap();
        store.append_message(message(other.id, "yo")).unwrap();

        assert!(store.remove_chat(general.id).unwrap());
        assert!(!store.remove_chat(general.id).unwrap());
        assert_eq!(store.chats().unwrap(), vec![other.clone()]);
        assert_eq!(store.members().unwrap(), vec![member(other.id, "Ann")]);
        assert_eq!(store.purge_messages(general.id).unwrap(), 1);
        assert!(store.last_messages(general.id, 10).unwrap().is_empty());
        assert_eq!(store.last_messages(other.id, 10).unwrap().len(), 1);

        let again = store.create_chat("GENERAL", 9).unwrap().unwrap();
        assert!(again.id > other.id);
        assert!(store.last_messages(again.id, 10).unwrap().is_empty());
    }

    #[test]
    fn purging_a_removed_chat_deletes_its_messages_in_batches() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let big = store.create_chat("big", 1).unwrap().unwrap();
        let other = store.create_chat("other", 1).unwrap().unwrap();
        for i in 0..(PURGE_BATCH * 2 + 7) {
            store
                .append_message(message(big.id, &i.to_string()))
                .unwrap();
        }
        store.append_message(message(other.id, "stays")).unwrap();
        assert!(store.remove_chat(big.id).unwrap());
        assert_eq!(store.purge_messages(big.id).unwrap(), PURGE_BATCH * 2 + 7);
        assert_eq!(store.purge_messages(big.id).unwrap(), 0);
        assert!(store.last_messages(big.id, 10).unwrap().is_empty());
        assert_eq!(store.last_messages(other.id, 10).unwrap().len(), 1);
    }

    #[test]
    fn taking_a_session_offline_ends_its_memberships_in_one_step() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let (a, b) = (
            store.create_chat("a", 1).unwrap().unwrap(),
            store.create_chat("b", 1).unwrap().unwrap(),
        );
        for chat in [a.id, b.id] {
            store.add_member(&member(chat, "Ann")).unwrap();
            store.add_member(&member(chat, "Bob")).unwrap();
        }
        let (kept, gone) = (session(1, 10), session(2, 20));
        store.put_session(&kept).unwrap();
        store.put_session(&gone).unwrap();
        let offline = SessionRecord {
            online: false,
            ..kept.clone()
        };
        store
            .take_offline(&kept.token_hash, Some(&offline), "ann", &[a.id, b.id])
            .unwrap();
        store
            .take_offline(&gone.token_hash, None, "bob", &[])
            .unwrap();
        assert_eq!(store.sessions().unwrap(), vec![offline]);
        assert_eq!(
            store.members().unwrap(),
            vec![member(a.id, "Bob"), member(b.id, "Bob")]
        );
    }

    #[test]
    fn message_ids_strictly_increase() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let a = store.create_chat("a", 1).unwrap().unwrap();
        let b = store.create_chat("b", 1).unwrap().unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let chat = if i % 2 == 0 { a.id } else { b.id };
            ids.push(store.append_message(message(chat, "m")).unwrap().id);
        }
        // Removing the chat that holds the newest message must not free its id.
        assert!(store.remove_chat(a.id).unwrap());
        let store = reopen(&dir, store);
        ids.push(store.append_message(message(b.id, "m")).unwrap().id);
        let c = store.create_chat("a", 2).unwrap().unwrap();
        assert!(c.id > b.id);
        ids.push(store.append_message(message(c.id, "m")).unwrap().id);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_eq!(ids[0], 1);
    }

    #[test]
    fn last_messages_order_and_limit() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let a = store.create_chat("a", 1).unwrap().unwrap();
        let b = store.create_chat("b", 1).unwrap().unwrap();
        for i in 0..10 {
            store
                .append_message(message(a.id, &format!("a{i}")))
                .unwrap();
            store
                .append_message(message(b.id, &format!("b{i}")))
                .unwrap();
        }
        let texts = |n| -> Vec<String> {
            let list = store.last_messages(a.id, n).unwrap();
            list.into_iter().map(|m| m.text).collect()
        };
        assert_eq!(texts(3), ["a7", "a8", "a9"]);
        assert_eq!(texts(100).len(), 10);
        assert_eq!(texts(100)[0], "a0");
        assert!(texts(0).is_empty());
        assert!(store.last_messages(999, 5).unwrap().is_empty());
        let last = store.last_messages(b.id, 1).unwrap();
        assert_eq!(last[0].chat_id, b.id);
        assert_eq!(last[0].text, "b9");
    }

    #[test]
    fn messages_before_pages_back_without_gaps() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let a = store.create_chat("a", 1).unwrap().unwrap();
        let b = store.create_chat("b", 1).unwrap().unwrap();
        let mut ids = Vec::new();
        for i in 0..25 {
            ids.push(
                store
                    .append_message(message(a.id, &i.to_string()))
                    .unwrap()
                    .id,
            );
            store.append_message(message(b.id, "other")).unwrap();
        }
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store.messages_before(a.id, before, 10).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
            assert!(page.iter().all(|m| m.chat_id == a.id));
            before = Some(page[0].id);
            seen.splice(0..0, page.into_iter().map(|m| m.id));
        }
        assert_eq!(seen, ids);
        assert!(
            store
                .messages_before(a.id, Some(ids[0]), 5)
                .unwrap()
                .is_empty()
        );
        let newest = store.messages_before(a.id, None, 2).unwrap();
        assert_eq!(newest.iter().map(|m| m.id).collect::<Vec<_>>(), ids[23..]);
    }

    #[test]
    fn deleted_messages_are_gone_after_reopen() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let chat = store.create_chat("a", 1).unwrap().unwrap();
        let kept = store.append_message(message(chat.id, "kept")).unwrap();
        let gone = store.append_message(message(chat.id, "secret")).unwrap();
        assert!(store.delete_message(chat.id, gone.id).unwrap());
        assert!(!store.delete_message(chat.id, gone.id).unwrap());
        assert!(!store.delete_message(chat.id + 1, kept.id).unwrap());
        let store = reopen(&dir, store);
        assert_eq!(store.last_messages(chat.id, 10).unwrap(), vec![kept]);
        assert!(
            store
                .engine()
                .messages
                .get(message_key(chat.id, gone.id))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn messages_of_the_first_format_read_without_an_author() {
        #[derive(Serialize)]
        struct OldMessage<'a> {
            id: u64,
            chat_id: u64,
            user: &'a str,
            verified: bool,
            admin: bool,
            bot: bool,
            text: &'a str,
            time: i64,
        }
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let chat = store.create_chat("a", 1).unwrap().unwrap();
        let new = store.append_message(message(chat.id, "new")).unwrap();
        let old = OldMessage {
            id: new.id + 1,
            chat_id: chat.id,
            user: "ann",
            verified: true,
            admin: false,
            bot: false,
            text: "from before",
            time: 5,
        };
        let value = encode(&old).unwrap();
        assert_eq!(value[0], FORMAT_VERSION);
        store
            .engine()
            .messages
            .insert(message_key(chat.id, new.id + 1), value)
            .unwrap();
        let read = store.last_messages(chat.id, 10).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0], new);
        assert_eq!(read[1].author, None);
        assert_eq!(read[1].text, "from before");
    }

    #[test]
    fn sessions_put_replace_delete() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        store.put_session(&session(1, 10)).unwrap();
        store.put_session(&session(2, 20)).unwrap();
        let rotated = session(3, 10);
        store.replace_session(&[1; 32], &rotated).unwrap();
        let mut handles: Vec<_> = store
            .sessions()
            .unwrap()
            .into_iter()
            .map(|s| (s.token_hash[0], s.handle))
            .collect();
        handles.sort();
        assert_eq!(handles, [(2, 20), (3, 10)]);
        store.delete_session(&[2; 32]).unwrap();
        assert_eq!(store.sessions().unwrap(), vec![rotated]);
    }

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
    fn corrupt_values_are_errors() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        store
            .insert_user(&user("ann", "a@x"), None)
            .unwrap()
            .unwrap();
        store
            .engine()
            .users
            .insert("bob", &[9u8, 1, 2][..])
            .unwrap();
        store
            .engine()
            .users
            .insert("cat", &[1u8, 0xff, 0xff][..])
            .unwrap();
        store.engine().users.insert("dan", &[][..]).unwrap();
        for key in ["bob", "cat", "dan"] {
            assert!(
                matches!(store.user(key), Err(StoreError::Corrupt(_))),
                "{key}"
            );
        }
        assert!(matches!(store.users(), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            store.delete_user("cat"),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(store.user("ann").unwrap().unwrap().name, "ann");

        let chat = store.create_chat("a", 1).unwrap().unwrap();
        store
            .engine()
            .messages
            .insert(message_key(chat.id, 99), &[1u8][..])
            .unwrap();
        assert!(matches!(
            store.last_messages(chat.id, 5),
            Err(StoreError::Corrupt(_))
        ));
        store
            .engine()
            .meta
            .insert(META_QUEUES, &[2u8, 7][..])
            .unwrap();
        assert!(matches!(store.take_queues(), Err(StoreError::Corrupt(_))));
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
    fn messages_below_reads_one_chat_in_order_up_to_the_cut() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let (a, b) = (
            store.create_chat("a", 1).unwrap().unwrap(),
            store.create_chat("b", 1).unwrap().unwrap(),
        );
        for i in 0..6 {
            let chat = if i % 2 == 0 { a.id } else { b.id };
            store.append_message(message(chat, &i.to_string())).unwrap();
        }
        let cut = store.next_ids().message;
        store
            .append_message(message(a.id, "after the cut"))
            .unwrap();
        let texts: Vec<String> = store
            .messages_below(a.id, cut)
            .map(|m| m.unwrap().text)
            .collect();
        assert_eq!(texts, ["0", "2", "4"]);
        assert_eq!(store.messages_below(b.id, 3).count(), 1);
        assert_eq!(store.messages_below(99, cut).count(), 0);
        assert_eq!(store.pending_mail_count().unwrap(), 0);
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
