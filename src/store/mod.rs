//! The `Store` trait: the only door to durable data. Handlers never see sled types.

pub mod changes;
#[cfg(test)]
pub mod faulty;
pub mod incoming;
pub mod mirror;
#[cfg(feature = "pg")]
pub mod postgres;
pub mod sled;

use crate::auth::tokens::TokenRecord;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tokio::sync::watch;

pub type StoreResult<T> = Result<T, StoreError>;

/// A storage failure. The API turns every variant into 503 `service unavailable`.
#[derive(Debug)]
pub enum StoreError {
    /// Another process (normally a running natter) holds the data directory.
    Locked(PathBuf),
    /// Engine error; the text is for logs only.
    Io(String),
    /// The disk failed a read or write (full, failing): the store refuses work until it has
    /// recovered by itself (docs/design.md, Storage faults).
    Disk(String),
    /// Storage failed earlier and has not recovered yet.
    Unavailable,
    /// A value that does not decode: wrong format version or damaged bytes.
    Corrupt(String),
}

impl StoreError {
    /// A storage outage (a disk failure, or storage still down after one): the store logs it
    /// once when it begins, so callers that meet it need not log it again.
    pub fn is_outage(&self) -> bool {
        matches!(self, StoreError::Disk(_) | StoreError::Unavailable)
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Locked(path) => write!(
                f,
                "the data directory is in use by a running natter ({})",
                path.display()
            ),
            StoreError::Io(e) => write!(f, "storage error: {e}"),
            StoreError::Disk(e) => write!(f, "disk error: {e}"),
            StoreError::Unavailable => write!(f, "storage is unavailable until it recovers"),
            StoreError::Corrupt(e) => write!(f, "stored data does not decode: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A registered account, keyed by the lowercased name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The name as typed at registration.
    pub name: String,
    pub email: String,
    /// PBKDF2 PHC string; the round count travels inside it.
    pub password_hash: String,
    pub verified: bool,
    pub admin: bool,
    pub bot: bool,
    pub created: i64,
    pub activation: Option<TokenRecord>,
    pub reset: Option<TokenRecord>,
}

/// A chat. The id is never reused, so a re-created name starts empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatRecord {
    pub id: u64,
    pub name: String,
    pub created: i64,
}

/// One user's membership of one chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub chat_id: u64,
    /// Lowercased user name.
    pub user_key: String,
    /// The name as shown.
    pub user: String,
}

/// Who posted a message, for the right to delete it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Author {
    /// A registered account, by its lowercased name.
    Account(String),
    /// A guest, by the handle of the session that posted it (the right ends with the session).
    Guest(u64),
}

/// A message as stored: `id` is unique across the server and strictly increasing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: u64,
    pub chat_id: u64,
    pub user: String,
    pub verified: bool,
    pub admin: bool,
    pub bot: bool,
    pub text: String,
    pub time: i64,
    /// `None` for the bot's messages and for messages stored before authors were recorded.
    pub author: Option<Author>,
}

/// A message before the store gives it an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub chat_id: u64,
    pub user: String,
    pub verified: bool,
    pub admin: bool,
    pub bot: bool,
    pub text: String,
    pub time: i64,
    pub author: Option<Author>,
}

/// A login session, keyed by the SHA-256 of its cookie id (a copied database leaks no cookie).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub token_hash: [u8; 32],
    /// Stable internal handle: survives cookie rotation and names the session's event queues.
    pub handle: u64,
    pub user: String,
    pub user_key: String,
    pub guest: bool,
    /// When it was opened, in Unix nanoseconds, strictly increasing among the sessions of a
    /// data directory so that it orders them (older records hold seconds and sort first).
    pub created: i64,
    /// Absolute end of the session (Unix seconds).
    pub expires: i64,
    pub online: bool,
}

/// A message for a person's inbox, as queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mail {
    /// The verification link after registration.
    Activation {
        to: String,
        user: String,
        link: String,
    },
    /// A password reset token to type into the reset form.
    Reset {
        to: String,
        user: String,
        token: String,
    },
    /// Someone tried to register with an address that already has an account.
    AddressInUse { to: String, user: String },
}

/// A mail in the durable outbox: it stays until delivered, so a crash or an outage loses none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMail {
    pub mail: Mail,
    /// Failed delivery attempts so far.
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_attempt: i64,
}

/// A guest name an admin kicked, blocked with its look-alikes until `until` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedName {
    pub name: String,
    pub until: i64,
}

/// Why `insert_user` refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Name,
    Email,
}

/// The ids the store hands out next (a backup's cut, and what an import continues from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextIds {
    pub chat: u64,
    pub message: u64,
}

/// A record restored from a backup (`natter import`), written under its own id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    User(UserRecord),
    Chat(ChatRecord),
    Message(MessageRecord),
}

/// How far writes have reached the disk. Epochs count committed writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Durability {
    /// Every write with an epoch up to this one is on disk.
    pub durable: u64,
    /// The newest epoch whose flush failed, if the last flush failed.
    pub failed: Option<u64>,
    /// Epochs (first, last) of writes that never reached the disk before storage failed and was
    /// reopened: they are never durable, whatever `durable` says later.
    pub lost: Option<(u64, u64)>,
    /// Times storage recovered from a failure: memory is then rebuilt from what is on disk.
    pub recoveries: u64,
}

impl Durability {
    /// Whether the write with `epoch` was lost in a storage failure.
    pub fn is_lost(&self, epoch: u64) -> bool {
        self.lost
            .is_some_and(|(first, last)| (first..=last).contains(&epoch))
    }
}

/// A read taken at one point and answered later (`Store::last_messages_later`).
pub type Pending<T> = Box<dyn FnOnce() -> StoreResult<T> + Send>;

/// Every read and write of durable data goes through this trait.
///
/// Methods are synchronous and short: they touch sled's in-memory pages. A write is on disk once
/// `durability()` reports its epoch (see `wait_durable`).
pub trait Store: Send + Sync + 'static {
    fn user(&self, key: &str) -> StoreResult<Option<UserRecord>>;
    fn user_key_by_email(&self, email_key: &str) -> StoreResult<Option<String>>;
    /// Inserts a new account, with its activation mail in the same transaction; the name and
    /// the email must both be free.
    fn insert_user(
        &self,
        user: &UserRecord,
        mail: Option<&QueuedMail>,
    ) -> StoreResult<Result<(), Taken>>;
    /// Rewrites an existing account (the email index follows the email), queueing `mail` with it.
    fn update_user(&self, user: &UserRecord, mail: Option<&QueuedMail>) -> StoreResult<()>;
    /// Deletes an account and its email index entry; false if there was none.
    fn delete_user(&self, key: &str) -> StoreResult<bool>;
    fn users(&self) -> StoreResult<Vec<UserRecord>>;

    fn chats(&self) -> StoreResult<Vec<ChatRecord>>;
    /// Creates a chat with a fresh id; `None` if the name (case-insensitively) exists.
    fn create_chat(&self, name: &str, created: i64) -> StoreResult<Option<ChatRecord>>;
    /// Removes a chat with its memberships; false if there was none. Its messages become
    /// unreachable at once and are deleted by `purge_messages`.
    fn remove_chat(&self, chat_id: u64) -> StoreResult<bool>;
    /// Deletes the messages of a removed chat in batches; returns how many it deleted.
    fn purge_messages(&self, chat_id: u64) -> StoreResult<usize>;

    fn add_member(&self, member: &MemberRecord) -> StoreResult<()>;
    fn remove_member(&self, chat_id: u64, user_key: &str) -> StoreResult<()>;
    fn members(&self) -> StoreResult<Vec<MemberRecord>>;

    /// Stores a message under the next message id.
    fn append_message(&self, message: NewMessage) -> StoreResult<MessageRecord>;
    /// The newest `limit` messages of a chat, oldest first.
    fn last_messages(&self, chat_id: u64, limit: usize) -> StoreResult<Vec<MessageRecord>>;
    /// `last_messages` as of this point in the order of writes, answered when called: a store
    /// whose reads are round trips queues it behind the writes made so far, so the service takes
    /// its cut under the lock and waits for the answer outside it.
    fn last_messages_later(&self, chat_id: u64, limit: usize) -> Pending<Vec<MessageRecord>> {
        let read = self.last_messages(chat_id, limit);
        Box::new(move || read)
    }
    /// Up to `limit` messages of a chat with an id below `before` (all when `None`), the newest
    /// of them, oldest first. Reads only that range of keys.
    fn messages_before(
        &self,
        chat_id: u64,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>>;
    /// Deletes one message, text and all; false if there was none.
    fn delete_message(&self, chat_id: u64, id: u64) -> StoreResult<bool>;

    fn put_session(&self, session: &SessionRecord) -> StoreResult<()>;
    /// Re-keys a session under a new token hash in one atomic step.
    fn replace_session(&self, old_hash: &[u8; 32], session: &SessionRecord) -> StoreResult<()>;
    fn delete_session(&self, token_hash: &[u8; 32]) -> StoreResult<()>;
    /// Takes a session offline in one transaction: stores `kept` in its place (or deletes it
    /// when `None`) and ends `user_key`'s memberships of `leave`.
    fn take_offline(
        &self,
        token_hash: &[u8; 32],
        kept: Option<&SessionRecord>,
        user_key: &str,
        leave: &[u64],
    ) -> StoreResult<()>;
    fn sessions(&self) -> StoreResult<Vec<SessionRecord>>;

    /// Replaces the guest names an admin kicked, each with the Unix second its block ends.
    fn save_blocks(&self, blocks: &[BlockedName]) -> StoreResult<()>;
    /// The kicked guest names as last saved (ended blocks included; the caller drops them).
    fn blocks(&self) -> StoreResult<Vec<BlockedName>>;

    /// Keeps the event-queue snapshot written at graceful shutdown.
    fn save_queues(&self, snapshot: &[u8]) -> StoreResult<()>;
    /// Returns and deletes the snapshot, so a later crash never restores stale queues.
    fn take_queues(&self) -> StoreResult<Option<Vec<u8>>>;

    /// Queues a mail for delivery; returns its outbox id.
    fn queue_mail(&self, mail: &QueuedMail) -> StoreResult<u64>;
    /// Every mail waiting for delivery, oldest first.
    fn pending_mail(&self) -> StoreResult<Vec<(u64, QueuedMail)>>;
    /// Stores a mail's new attempt count and time.
    fn reschedule_mail(&self, id: u64, mail: &QueuedMail) -> StoreResult<()>;
    /// Removes a delivered (or abandoned) mail.
    fn delete_mail(&self, id: u64) -> StoreResult<()>;

    /// The ids the next chat and the next message will get. Under the service's state lock,
    /// every message with a lower id is committed (backups cut there).
    fn next_ids(&self) -> NextIds;
    /// A chat's messages with ids below `below`, oldest first, read lazily (backups).
    fn messages_below(
        &self,
        chat_id: u64,
        below: u64,
    ) -> Box<dyn Iterator<Item = StoreResult<MessageRecord>> + '_>;
    /// Writes records restored from a backup under their own ids and raises the id counters to
    /// at least `next` and above every id written. Meant for an empty store (`natter import`
    /// writes into a fresh directory): nothing is checked against what is already there.
    fn import(&self, batch: &[Restored], next: NextIds) -> StoreResult<()>;
    /// Mails waiting in the outbox (a metrics gauge).
    fn pending_mail_count(&self) -> StoreResult<usize>;

    /// The epoch of the newest committed write.
    fn write_epoch(&self) -> u64;
    /// Starts a change (`cluster = true`): the service locked its state; its writes until `seal`
    /// share one transaction.
    fn begin_change(&self) {}
    /// Ends the current change (`cluster = true`): its effects and `events` are written to the
    /// shared log in its transaction; returns the epoch its events wait for. A single server
    /// has nothing to write.
    fn seal(&self, _events: Vec<changes::LoggedEvent>) -> StoreResult<u64> {
        Ok(self.write_epoch())
    }
    /// Several nodes: records that these sessions were active at `now` (Unix seconds), in one
    /// write for many requests.
    fn record_activity(&self, _handles: &[u64], _now: i64) -> StoreResult<()> {
        Ok(())
    }
    /// Several nodes: whether this node is the one that sweeps idle sessions, trims the shared
    /// log and sends mail (a lock in the database, taken over when its holder dies). A single
    /// server always is.
    fn leads(&self) -> StoreResult<bool> {
        Ok(true)
    }
    /// Several nodes: the handles of online sessions no node has seen since `cutoff`.
    fn idle_sessions(&self, _cutoff: i64) -> StoreResult<Vec<u64>> {
        Ok(Vec::new())
    }
    /// Several nodes: an explicit event queue opened in the current change, for every node.
    fn open_queue(&self, _handle: u64, _queue_id: &str, _types: u32) -> StoreResult<()> {
        Ok(())
    }
    /// Several nodes: the id of the last event a session's default queue handed out (0: none).
    fn poll_position(&self, _handle: u64) -> StoreResult<u64> {
        Ok(0)
    }
    /// Several nodes: moves a default queue's position from `seen` to `next`; false when another
    /// node moved it first (it handed that event out).
    fn claim_poll(&self, _handle: u64, _seen: u64, _next: u64) -> StoreResult<bool> {
        Ok(true)
    }
    /// Several nodes: forgets log rows written before `before` (Unix seconds) and the stored
    /// queues of sessions that ended.
    fn trim_log(&self, _before: i64) -> StoreResult<()> {
        Ok(())
    }
    /// Watches flush progress (group commit).
    fn durability(&self) -> watch::Receiver<Durability>;
    /// Flushes everything now; blocking, for shutdown and offline commands.
    fn flush(&self) -> StoreResult<()>;
    /// The PostgreSQL mirror's state and lag; `off` unless a mirror is configured.
    fn mirror_report(&self) -> mirror::MirrorReport {
        mirror::MirrorReport::off()
    }
    /// A cheap read and write probe for `/healthz`.
    fn check_health(&self) -> StoreResult<()>;
    /// False while storage is down after a disk failure (every call then answers `Unavailable`).
    fn available(&self) -> bool {
        true
    }
}

/// Waits until the write with `epoch` is on disk, or its flush failed.
pub async fn wait_durable(store: &dyn Store, epoch: u64) -> StoreResult<()> {
    let mut watch = store.durability();
    let state = watch
        .wait_for(|d| d.durable >= epoch || d.failed.is_some_and(|f| f >= epoch))
        .await
        .map_err(|_| StoreError::Io("the flusher has stopped".into()))?;
    if state.durable >= epoch && !state.is_lost(epoch) {
        Ok(())
    } else {
        // The store logged the failure once; every waiting request just learns of it.
        Err(StoreError::Unavailable)
    }
}
