//! A `Store` whose writes can be made to fail, for testing what the service does with storage
//! errors. Reads always pass through.

use super::{
    BlockedName, ChatRecord, Durability, MemberRecord, MessageRecord, NewMessage, NextIds, Pending,
    QueuedMail, Restored, SessionRecord, Store, StoreError, StoreResult, Taken, UserRecord,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::watch;

/// Wraps a real store; after `fail_after(n)` the next `n` writes pass and every later one fails.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    /// Writes still allowed; `usize::MAX` means no fault is armed.
    writes_left: AtomicUsize,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> FaultyStore {
        FaultyStore {
            inner,
            writes_left: AtomicUsize::new(usize::MAX),
        }
    }

    /// Lets `n` more writes through, then fails every write until `heal`.
    pub fn fail_after(&self, n: usize) {
        self.writes_left.store(n, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.writes_left.store(usize::MAX, Ordering::SeqCst);
    }

    fn write(&self) -> StoreResult<()> {
        let allowed = self
            .writes_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                usize::MAX => Some(usize::MAX),
                0 => None,
                n => Some(n - 1),
            });
        allowed
            .map(|_| ())
            .map_err(|_| StoreError::Io("injected write failure".into()))
    }
}

impl Store for FaultyStore {
    fn user(&self, key: &str) -> StoreResult<Option<UserRecord>> {
        self.inner.user(key)
    }
    fn user_key_by_email(&self, email_key: &str) -> StoreResult<Option<String>> {
        self.inner.user_key_by_email(email_key)
    }
    fn insert_user(
        &self,
        user: &UserRecord,
        mail: Option<&QueuedMail>,
    ) -> StoreResult<Result<(), Taken>> {
        self.write()?;
        self.inner.insert_user(user, mail)
    }
    fn update_user(&self, user: &UserRecord, mail: Option<&QueuedMail>) -> StoreResult<()> {
        self.write()?;
        self.inner.update_user(user, mail)
    }
    fn delete_user(&self, key: &str) -> StoreResult<bool> {
        self.write()?;
        self.inner.delete_user(key)
    }
    fn users(&self) -> StoreResult<Vec<UserRecord>> {
        self.inner.users()
    }
    fn chats(&self) -> StoreResult<Vec<ChatRecord>> {
        self.inner.chats()
    }
    fn create_chat(&self, name: &str, created: i64) -> StoreResult<Option<ChatRecord>> {
        self.write()?;
        self.inner.create_chat(name, created)
    }
    fn remove_chat(&self, chat_id: u64) -> StoreResult<bool> {
        self.write()?;
        self.inner.remove_chat(chat_id)
    }
    fn purge_messages(&self, chat_id: u64) -> StoreResult<usize> {
        self.write()?;
        self.inner.purge_messages(chat_id)
    }
    fn add_member(&self, member: &MemberRecord) -> StoreResult<()> {
        self.write()?;
        self.inner.add_member(member)
    }
    fn remove_member(&self, chat_id: u64, user_key: &str) -> StoreResult<()> {
        self.write()?;
        self.inner.remove_member(chat_id, user_key)
    }
    fn members(&self) -> StoreResult<Vec<MemberRecord>> {
        self.inner.members()
    }
    fn append_message(&self, message: NewMessage) -> StoreResult<MessageRecord> {
        self.write()?;
        self.inner.append_message(message)
    }
    fn last_messages(&self, chat_id: u64, limit: usize) -> StoreResult<Vec<MessageRecord>> {
        self.inner.last_messages(chat_id, limit)
    }
    fn last_messages_later(&self, chat_id: u64, limit: usize) -> Pending<Vec<MessageRecord>> {
        self.inner.last_messages_later(chat_id, limit)
    }
    fn messages_before(
        &self,
        chat_id: u64,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>> {
        self.inner.messages_before(chat_id, before, limit)
    }
    fn delete_message(&self, chat_id: u64, id: u64) -> StoreResult<bool> {
        self.write()?;
        self.inner.delete_message(chat_id, id)
    }
    fn put_session(&self, session: &SessionRecord) -> StoreResult<()> {
        self.write()?;
        self.inner.put_session(session)
    }
    fn replace_session(&self, old_hash: &[u8; 32], session: &SessionRecord) -> StoreResult<()> {
        self.write()?;
        self.inner.replace_session(old_hash, session)
    }
    fn delete_session(&self, token_hash: &[u8; 32]) -> StoreResult<()> {
        self.write()?;
        self.inner.delete_session(token_hash)
    }
    fn take_offline(
        &self,
        token_hash: &[u8; 32],
        kept: Option<&SessionRecord>,
        user_key: &str,
        leave: &[u64],
    ) -> StoreResult<()> {
        self.write()?;
        self.inner.take_offline(token_hash, kept, user_key, leave)
    }
    fn sessions(&self) -> StoreResult<Vec<SessionRecord>> {
        self.inner.sessions()
    }
    fn save_blocks(&self, blocks: &[BlockedName]) -> StoreResult<()> {
        self.write()?;
        self.inner.save_blocks(blocks)
    }
    fn blocks(&self) -> StoreResult<Vec<BlockedName>> {
        self.inner.blocks()
    }
    fn save_queues(&self, snapshot: &[u8]) -> StoreResult<()> {
        self.write()?;
        self.inner.save_queues(snapshot)
    }
    fn take_queues(&self) -> StoreResult<Option<Vec<u8>>> {
        self.write()?;
        self.inner.take_queues()
    }
    fn queue_mail(&self, mail: &QueuedMail) -> StoreResult<u64> {
        self.write()?;
        self.inner.queue_mail(mail)
    }
    fn pending_mail(&self) -> StoreResult<Vec<(u64, QueuedMail)>> {
        self.inner.pending_mail()
    }
    fn reschedule_mail(&self, id: u64, mail: &QueuedMail) -> StoreResult<()> {
        self.write()?;
        self.inner.reschedule_mail(id, mail)
    }
    fn delete_mail(&self, id: u64) -> StoreResult<()> {
        self.write()?;
        self.inner.delete_mail(id)
    }
    fn next_ids(&self) -> NextIds {
        self.inner.next_ids()
    }
    fn messages_below(
        &self,
        chat_id: u64,
        below: u64,
    ) -> Box<dyn Iterator<Item = StoreResult<MessageRecord>> + '_> {
        self.inner.messages_below(chat_id, below)
    }
    fn import(&self, batch: &[Restored], next: NextIds) -> StoreResult<()> {
        self.write()?;
        self.inner.import(batch, next)
    }
    fn pending_mail_count(&self) -> StoreResult<usize> {
        self.inner.pending_mail_count()
    }
    fn write_epoch(&self) -> u64 {
        self.inner.write_epoch()
    }
    fn durability(&self) -> watch::Receiver<Durability> {
        self.inner.durability()
    }
    fn flush(&self) -> StoreResult<()> {
        self.inner.flush()
    }
    fn check_health(&self) -> StoreResult<()> {
        self.inner.check_health()
    }
    fn available(&self) -> bool {
        self.inner.available()
    }
}
