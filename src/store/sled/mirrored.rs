//! The sled side of the mirror: the outbox the worker drains, seeding, and bulk loads (restore
//! from the mirror, import from chatty-server) that write rows with their ids as given.

use super::{
    Entry, META_MIRROR_TARGET, META_NEXT_CHAT, META_NEXT_MESSAGE, MirrorReport, MirrorShared,
    MirroredUser, Queued, SledStore, StoreError, StoreResult, decode, encode, get, io, lock,
    message_key, now_ms,
};
use crate::store::{ChatRecord, MessageRecord, Store, UserRecord};
use sled::Tree;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Entries per sled batch when seeding or loading.
const LOAD_BATCH: usize = 5000;

/// At open: with the mirror on, counts the outbox; with it off, drops it and forgets the target
/// so that turning the mirror on again re-seeds it (changes made meanwhile were not queued).
pub(super) fn open_outbox(
    outbox: &Tree,
    meta: &Tree,
    mirrored: bool,
) -> StoreResult<Option<Arc<MirrorShared>>> {
    if !mirrored {
        if !outbox.is_empty() || meta.contains_key(META_MIRROR_TARGET).map_err(io)? {
            log::info!(
                "the PostgreSQL mirror is off: dropping {} unsent mirror changes; \
                 the next start with database_url re-seeds the mirror",
                outbox.len()
            );
            outbox.clear().map_err(io)?;
            meta.remove(META_MIRROR_TARGET).map_err(io)?;
        }
        return Ok(None);
    }
    let next = match outbox.last().map_err(io)? {
        Some((key, _)) => key_of(&key)?.saturating_add(1),
        None => 1,
    };
    let shared = MirrorShared::default();
    *lock(&shared.seq) = next;
    shared.len.store(outbox.len() as u64, Ordering::SeqCst);
    Ok(Some(Arc::new(shared)))
}

fn key_of(key: &[u8]) -> StoreResult<u64> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("outbox key is not 8 bytes".into()))
}

impl SledStore {
    /// The shared mirror state, when the mirror is on.
    pub fn mirror_shared(&self) -> Option<Arc<MirrorShared>> {
        self.mirror.clone()
    }

    /// State and lag of the mirror.
    pub fn mirror_status(&self) -> MirrorReport {
        let Some(mirror) = &self.mirror else {
            return MirrorReport::off();
        };
        let oldest = self
            .outbox
            .first()
            .ok()
            .flatten()
            .and_then(|(_, value)| decode::<Queued>(&value).ok())
            .map(|q| Duration::from_millis(now_ms().saturating_sub(q.at_ms).max(0) as u64));
        mirror.report(oldest)
    }

    /// Up to `limit` outbox entries, oldest first, with their keys.
    pub fn outbox_batch(&self, limit: usize) -> StoreResult<Vec<(u64, Queued)>> {
        self.outbox
            .iter()
            .take(limit)
            .map(|item| {
                let (key, value) = item.map_err(io)?;
                Ok((key_of(&key)?, decode(&value)?))
            })
            .collect()
    }

    /// Removes entries the worker applied (replaying them would change nothing, so this needs
    /// no fsync of its own).
    pub fn outbox_applied(&self, keys: &[u64]) -> StoreResult<()> {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(&key.to_be_bytes());
        }
        self.outbox.apply_batch(batch).map_err(io)?;
        if let Some(mirror) = &self.mirror {
            let n = keys.len() as u64;
            let _ = mirror
                .len
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                    Some(l.saturating_sub(n))
                });
        }
        Ok(())
    }

    /// The database the outbox was last seeded for.
    pub fn mirror_target(&self) -> StoreResult<Option<String>> {
        get(&self.meta, META_MIRROR_TARGET)
    }

    pub fn set_mirror_target(&self, target: &str) -> StoreResult<()> {
        self.meta
            .insert(META_MIRROR_TARGET, encode(target)?)
            .map_err(io)?;
        self.committed();
        Ok(())
    }

    /// No accounts, chats or messages: a new data directory.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.chats.is_empty() && self.messages.is_empty()
    }

    /// Replaces the outbox with a full copy of sled (a reset, then every chat, account and
    /// message) and records `target`; for a mirror that did not follow every change.
    pub fn seed_mirror(&self, target: &str) -> StoreResult<u64> {
        let Some(mirror) = &self.mirror else {
            return Err(StoreError::Io("the mirror is off".into()));
        };
        let mut seq = lock(&mirror.seq);
        self.outbox.clear().map_err(io)?;
        let at_ms = now_ms();
        let mut next = *seq;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        let mut push = |entry: Entry| -> StoreResult<()> {
            batch.insert(&next.to_be_bytes(), encode(&Queued { at_ms, entry })?);
            next += 1;
            in_batch += 1;
            if in_batch == LOAD_BATCH {
                self.outbox
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(io)?;
                in_batch = 0;
            }
            Ok(())
        };
        push(Entry::Reset)?;
        for chat in self.chats()? {
            push(Entry::Chat(chat))?;
        }
        for user in self.users()? {
            push(Entry::User(MirroredUser::from(&user)))?;
        }
        for value in self.messages.iter().values() {
            push(Entry::Message(decode(&value.map_err(io)?)?))?;
        }
        drop(push);
        self.outbox.apply_batch(batch).map_err(io)?;
        let count = next - *seq;
        *seq = next;
        mirror.len.store(count, Ordering::SeqCst);
        drop(seq);
        self.set_mirror_target(target)?;
        mirror.wake.notify_one();
        Ok(count)
    }

    /// Stores accounts as given (restore, import). Names and emails must be free.
    pub fn load_users(&self, users: &[UserRecord]) -> StoreResult<()> {
        let (mut rows, mut index) = (sled::Batch::default(), sled::Batch::default());
        for user in users {
            let key = user.name.to_lowercase();
            rows.insert(key.as_bytes(), encode(user)?);
            index.insert(user.email.to_lowercase().as_bytes(), encode(&key)?);
        }
        self.users.apply_batch(rows).map_err(io)?;
        self.emails.apply_batch(index).map_err(io)?;
        self.committed();
        Ok(())
    }

    /// Stores chats with their ids; new chats get ids above them.
    pub fn load_chats(&self, chats: &[ChatRecord]) -> StoreResult<()> {
        let mut next = lock(&self.next_chat);
        let mut rows = sled::Batch::default();
        for chat in chats {
            rows.insert(chat.name.to_lowercase().as_bytes(), encode(chat)?);
            *next = (*next).max(chat.id.saturating_add(1));
        }
        self.chats.apply_batch(rows).map_err(io)?;
        self.meta.insert(META_NEXT_CHAT, encode(&*next)?).map_err(io)?;
        drop(next);
        self.committed();
        Ok(())
    }

    /// Stores messages with their ids; new messages get ids above them.
    pub fn load_messages(&self, messages: &[MessageRecord]) -> StoreResult<()> {
        let mut next = lock(&self.next_message);
        for chunk in messages.chunks(LOAD_BATCH) {
            let mut rows = sled::Batch::default();
            for message in chunk {
                rows.insert(&message_key(message.chat_id, message.id)[..], encode(message)?);
                *next = (*next).max(message.id.saturating_add(1));
            }
            self.messages.apply_batch(rows).map_err(io)?;
        }
        self.meta
            .insert(META_NEXT_MESSAGE, encode(&*next)?)
            .map_err(io)?;
        drop(next);
        self.committed();
        Ok(())
    }
}
