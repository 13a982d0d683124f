//! The sled side of the mirror: the outbox the worker drains, seeding, and bulk loads (restore
//! from the mirror, import from chatty-server) that write rows with their ids as given.

use super::{
    Entry, META_LOADING, META_MIRROR_INSTANCE, META_MIRROR_TARGET, META_NEXT_CHAT,
    META_NEXT_MESSAGE, MirrorReport, MirrorShared, MirroredUser, Queued, SledStore, StoreError,
    StoreResult, decode, encode, get, io, lock, message_key, now_ms,
};
use crate::store::{ChatRecord, MessageRecord, Store, UserRecord};
use sled::Tree;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A fresh random mirror instance label.
pub fn new_instance() -> StoreResult<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Io(format!("the OS random generator failed: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Entries per sled batch when seeding or loading.
const LOAD_BATCH: usize = 5000;

/// What an open does with the mirror's outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outbox {
    /// The mirror is on: changes queue for it.
    Fill,
    /// The mirror is off and changes may follow: the outbox goes, and the next mirrored start
    /// re-seeds (changes made meanwhile are not queued).
    Drop,
    /// Nothing will change: the outbox and the target stay as they are.
    Leave,
}

/// At open: with the mirror on, counts the outbox; with it off, drops it and forgets the target
/// so that turning the mirror on again re-seeds it (changes made meanwhile were not queued).
pub(super) fn open_outbox(
    outbox: &Tree,
    meta: &Tree,
    mode: Outbox,
) -> StoreResult<Option<Arc<MirrorShared>>> {
    if mode == Outbox::Leave {
        return Ok(None);
    }
    if mode == Outbox::Drop {
        if feeds_mirror(outbox, meta)? {
            log::info!(
                "the PostgreSQL mirror is off: dropping {} unsent mirror changes; \
                 the next start with database_url re-seeds the mirror",
                outbox.len()
            );
            drop_outbox(outbox, meta)?;
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

/// Whether the data directory has been feeding a mirror (a target, or changes waiting).
fn feeds_mirror(outbox: &Tree, meta: &Tree) -> StoreResult<bool> {
    Ok(!outbox.is_empty() || meta.contains_key(META_MIRROR_TARGET).map_err(io)?)
}

/// Forgets the mirror's waiting changes and target, so that the next mirrored start re-seeds.
fn drop_outbox(outbox: &Tree, meta: &Tree) -> StoreResult<()> {
    outbox.clear().map_err(io)?;
    meta.remove(META_MIRROR_TARGET).map_err(io)?;
    Ok(())
}

fn key_of(key: &[u8]) -> StoreResult<u64> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("outbox key is not 8 bytes".into()))
}

impl SledStore {
    /// The shared mirror state, when the mirror is on.
    pub fn mirror_shared(&self) -> Option<Arc<MirrorShared>> {
        self.shared.mirror.clone()
    }

    /// Whether this data directory has been feeding a PostgreSQL mirror.
    pub fn feeds_mirror(&self) -> StoreResult<bool> {
        self.with(|e| feeds_mirror(&e.outbox, &e.meta))
    }

    /// Forgets the mirror's waiting changes and target (opened without the mirror, about to
    /// change data): the next start with database_url copies everything again.
    pub fn forget_mirror(&self) -> StoreResult<()> {
        self.with(|e| {
            drop_outbox(&e.outbox, &e.meta)?;
            self.committed();
            Ok(())
        })
    }

    /// State and lag of the mirror.
    pub fn mirror_status(&self) -> MirrorReport {
        let Some(mirror) = &self.shared.mirror else {
            return MirrorReport::off();
        };
        let oldest = self
            .with(|e| e.outbox.first().map_err(io))
            .ok()
            .flatten()
            .and_then(|(_, value)| decode::<Queued>(&value).ok())
            .map(|q| Duration::from_millis(now_ms().saturating_sub(q.at_ms).max(0) as u64));
        mirror.report(oldest)
    }

    /// Up to `limit` outbox entries, oldest first, with their keys.
    pub fn outbox_batch(&self, limit: usize) -> StoreResult<Vec<(u64, Queued)>> {
        self.with(|e| {
            e.outbox
                .iter()
                .take(limit)
                .map(|item| {
                    let (key, value) = item.map_err(io)?;
                    Ok((key_of(&key)?, decode(&value)?))
                })
                .collect()
        })
    }

    /// Removes entries the worker applied (replaying them would change nothing, so this needs
    /// no fsync of its own).
    pub fn outbox_applied(&self, keys: &[u64]) -> StoreResult<()> {
        self.with(|e| {
            let mut batch = sled::Batch::default();
            for key in keys {
                batch.remove(&key.to_be_bytes());
            }
            e.outbox.apply_batch(batch).map_err(io)?;
            if let Some(mirror) = &self.shared.mirror {
                let n = keys.len() as u64;
                let _ = mirror
                    .len
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                        Some(l.saturating_sub(n))
                    });
            }
            Ok(())
        })
    }

    /// The database the outbox was last seeded for.
    pub fn mirror_target(&self) -> StoreResult<Option<String>> {
        self.with(|e| get(&e.meta, META_MIRROR_TARGET))
    }

    pub fn set_mirror_target(&self, target: &str) -> StoreResult<()> {
        self.put_meta(META_MIRROR_TARGET, target)
    }

    /// The label of the copy this data directory keeps in the mirror.
    pub fn mirror_instance(&self) -> StoreResult<Option<String>> {
        self.with(|e| get(&e.meta, META_MIRROR_INSTANCE))
    }

    pub fn set_mirror_instance(&self, instance: &str) -> StoreResult<()> {
        self.put_meta(META_MIRROR_INSTANCE, instance)
    }

    /// Writes one `meta` value as a change of its own.
    fn put_meta(&self, key: &[u8], value: &str) -> StoreResult<()> {
        self.with(|e| {
            e.meta.insert(key, encode(value)?).map_err(io)?;
            self.committed();
            Ok(())
        })
    }

    /// Whether the oldest waiting entry is a reset: a full copy is on its way.
    pub fn reset_pending(&self) -> StoreResult<bool> {
        self.with(|e| {
            Ok(match e.outbox.first().map_err(io)? {
                Some((_, value)) => matches!(decode::<Queued>(&value)?.entry, Entry::Reset { .. }),
                None => false,
            })
        })
    }

    /// No accounts, chats or messages: a new data directory.
    pub fn is_empty(&self) -> bool {
        self.with(|e| Ok(e.users.is_empty() && e.chats.is_empty() && e.messages.is_empty()))
            .unwrap_or(false)
    }

    /// Replaces the outbox with a full copy of sled (a reset, then every chat, account and
    /// message) and records `target`; for a mirror that did not follow every change.
    pub fn seed_mirror(&self, target: &str) -> StoreResult<u64> {
        self.with(|e| {
            let Some(mirror) = &self.shared.mirror else {
                return Err(StoreError::Io("the mirror is off".into()));
            };
            let mut seq = lock(&mirror.seq);
            e.outbox.clear().map_err(io)?;
            let at_ms = now_ms();
            let mut next = *seq;
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            let mut push = |entry: Entry| -> StoreResult<()> {
                batch.insert(&next.to_be_bytes(), encode(&Queued { at_ms, entry })?);
                next += 1;
                in_batch += 1;
                if in_batch == LOAD_BATCH {
                    e.outbox
                        .apply_batch(std::mem::take(&mut batch))
                        .map_err(io)?;
                    in_batch = 0;
                }
                Ok(())
            };
            // The label stays the data directory's for good: a database that carries another
            // one holds another natter's copy, which the worker will not replace unasked.
            let instance = match self.mirror_instance()? {
                Some(label) => label,
                None => new_instance()?,
            };
            push(Entry::Reset {
                instance: instance.clone(),
            })?;
            for chat in self.chats()? {
                push(Entry::Chat(chat))?;
            }
            for user in self.users()? {
                push(Entry::User(MirroredUser::from(&user)))?;
            }
            for value in e.messages.iter().values() {
                push(Entry::Message(super::decode_message(&value.map_err(io)?)?))?;
            }
            e.outbox.apply_batch(batch).map_err(io)?;
            let count = next - *seq;
            *seq = next;
            mirror.len.store(count, Ordering::SeqCst);
            drop(seq);
            self.set_mirror_instance(&instance)?;
            self.set_mirror_target(target)?;
            mirror.wake.notify_one();
            Ok(count)
        })
    }

    /// Marks the start of a bulk load (`what`: "restore", "import-chatty"), on disk before any
    /// row: a load cut short by a crash is then noticed instead of passing for complete data.
    pub fn begin_load(&self, what: &str) -> StoreResult<()> {
        self.with(|e| {
            e.meta.insert(META_LOADING, encode(what)?).map_err(io)?;
            self.committed();
            self.shared.flush_to(self.write_epoch())
        })
    }

    /// The bulk load that started and never finished, if any.
    pub fn unfinished_load(&self) -> StoreResult<Option<String>> {
        self.with(|e| get(&e.meta, META_LOADING))
    }

    /// Marks a bulk load complete, on disk.
    pub fn end_load(&self) -> StoreResult<()> {
        self.with(|e| {
            e.meta.remove(META_LOADING).map_err(io)?;
            self.committed();
            self.shared.flush_to(self.write_epoch())
        })
    }

    /// Empties the data a cut-short restore left, so that it can start over.
    pub fn clear_loaded(&self) -> StoreResult<()> {
        self.with(|e| {
            for tree in [&e.users, &e.emails, &e.chats, &e.messages, &e.members] {
                tree.clear().map_err(io)?;
            }
            self.committed();
            Ok(())
        })
    }

    /// Stores accounts as given (restore, import). Names and emails must be free.
    pub fn load_users(&self, users: &[UserRecord]) -> StoreResult<()> {
        self.with(|e| {
            let (mut rows, mut index) = (sled::Batch::default(), sled::Batch::default());
            for user in users {
                let key = user.name.to_lowercase();
                rows.insert(key.as_bytes(), encode(user)?);
                index.insert(user.email.to_lowercase().as_bytes(), encode(&key)?);
            }
            e.users.apply_batch(rows).map_err(io)?;
            e.emails.apply_batch(index).map_err(io)?;
            self.committed();
            Ok(())
        })
    }

    /// Stores chats with their ids; new chats get ids above them.
    pub fn load_chats(&self, chats: &[ChatRecord]) -> StoreResult<()> {
        self.with(|e| {
            let mut next = lock(&self.next_chat);
            let mut rows = sled::Batch::default();
            for chat in chats {
                rows.insert(chat.name.to_lowercase().as_bytes(), encode(chat)?);
                *next = (*next).max(chat.id.saturating_add(1));
            }
            e.chats.apply_batch(rows).map_err(io)?;
            e.meta.insert(META_NEXT_CHAT, encode(&*next)?).map_err(io)?;
            drop(next);
            self.committed();
            Ok(())
        })
    }

    /// Stores messages with their ids; new messages get ids above them.
    pub fn load_messages(&self, messages: &[MessageRecord]) -> StoreResult<()> {
        self.with(|e| {
            let mut next = lock(&self.next_message);
            for chunk in messages.chunks(LOAD_BATCH) {
                let mut rows = sled::Batch::default();
                for message in chunk {
                    rows.insert(
                        &message_key(message.chat_id, message.id)[..],
                        super::encode_message(message)?,
                    );
                    *next = (*next).max(message.id.saturating_add(1));
                }
                e.messages.apply_batch(rows).map_err(io)?;
            }
            e.meta
                .insert(META_NEXT_MESSAGE, encode(&*next)?)
                .map_err(io)?;
            drop(next);
            self.committed();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::SyncMode;
    use crate::store::{MemberRecord, NewMessage};
    use tempfile::TempDir;

    fn user(name: &str) -> UserRecord {
        UserRecord {
            name: name.into(),
            email: format!("{name}@example.org"),
            password_hash: "h".into(),
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
            author: None,
        }
    }

    fn entries(store: &SledStore) -> Vec<Entry> {
        store
            .outbox_batch(usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, q)| q.entry)
            .collect()
    }

    #[test]
    fn mirrored_changes_queue_one_entry_each_in_commit_order() {
        let dir = TempDir::new().unwrap();
        let store = SledStore::open_mirrored(dir.path(), SyncMode::Relaxed).unwrap();
        let mut ann = user("Ann");
        store.insert_user(&ann, None).unwrap().unwrap();
        assert!(store.insert_user(&user("ann"), None).unwrap().is_err());
        ann.verified = true;
        store.update_user(&ann, None).unwrap();
        let chat = store.create_chat("Main", 2).unwrap().unwrap();
        assert!(store.create_chat("main", 2).unwrap().is_none());
        let first = store.append_message(message(chat.id, "a")).unwrap();
        // Memberships and sessions stay in sled only.
        store
            .add_member(&MemberRecord {
                chat_id: chat.id,
                user_key: "ann".into(),
                user: "Ann".into(),
            })
            .unwrap();
        store.remove_chat(chat.id).unwrap();
        store.delete_user("ann").unwrap();
        assert!(!store.delete_user("ann").unwrap());
        assert_eq!(
            entries(&store),
            vec![
                Entry::User(MirroredUser::from(&user("Ann"))),
                Entry::User(MirroredUser::from(&ann)),
                Entry::Chat(chat.clone()),
                Entry::Message(first),
                Entry::RemoveChat { id: chat.id },
                Entry::DeleteUser { key: "ann".into() },
            ]
        );
        let report = store.mirror_status();
        assert_eq!(report.outbox_len, 6);
        assert!(report.oldest_age.is_some());
        let keys: Vec<u64> = store
            .outbox_batch(2)
            .unwrap()
            .iter()
            .map(|(k, _)| *k)
            .collect();
        store.outbox_applied(&keys).unwrap();
        assert_eq!(store.mirror_status().outbox_len, 4);
        assert_eq!(entries(&store).len(), 4);
    }

    #[test]
    fn concurrent_messages_queue_in_id_order() {
        let dir = TempDir::new().unwrap();
        let store = SledStore::open_mirrored(dir.path(), SyncMode::Relaxed).unwrap();
        let chat = store.create_chat("Main", 1).unwrap().unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..50 {
                        store
                            .append_message(message(chat.id, &format!("{t}-{i}")))
                            .unwrap();
                    }
                });
            }
        });
        let ids: Vec<u64> = entries(&store)
            .into_iter()
            .filter_map(|e| match e {
                Entry::Message(m) => Some(m.id),
                _ => None,
            })
            .collect();
        assert_eq!(ids.len(), 200);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    #[test]
    fn the_outbox_survives_a_reopen_and_is_dropped_when_the_mirror_is_off() {
        let dir = TempDir::new().unwrap();
        let store = SledStore::open_mirrored(dir.path(), SyncMode::Relaxed).unwrap();
        store.insert_user(&user("ann"), None).unwrap().unwrap();
        store.set_mirror_target("db:5432/x").unwrap();
        store.close().unwrap();
        drop(store);

        let store = SledStore::open_mirrored(dir.path(), SyncMode::Relaxed).unwrap();
        assert_eq!(store.mirror_status().outbox_len, 1);
        store.insert_user(&user("bob"), None).unwrap().unwrap();
        let keys: Vec<u64> = store
            .outbox_batch(9)
            .unwrap()
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(keys.len(), 2);
        assert!(keys[0] < keys[1], "new keys continue after the old ones");
        store.close().unwrap();
        drop(store);

        let store = SledStore::open(dir.path(), SyncMode::Relaxed).unwrap();
        assert_eq!(store.mirror_status(), MirrorReport::off());
        assert_eq!(store.mirror_target().unwrap(), None);
        store.insert_user(&user("cid"), None).unwrap().unwrap();
        assert!(store.engine().outbox.is_empty());
    }

    #[test]
    fn seeding_queues_a_reset_then_everything() {
        let dir = TempDir::new().unwrap();
        let store = SledStore::open_mirrored(dir.path(), SyncMode::Relaxed).unwrap();
        assert!(store.is_empty());
        let chat = store.create_chat("Main", 1).unwrap().unwrap();
        store.insert_user(&user("ann"), None).unwrap().unwrap();
        let m = store.append_message(message(chat.id, "hi")).unwrap();
        assert!(!store.is_empty());
        assert_eq!(store.seed_mirror("db:5432/x").unwrap(), 4);
        let instance = store.mirror_instance().unwrap().unwrap();
        assert_eq!(instance.len(), 32);
        assert!(store.reset_pending().unwrap());
        assert_eq!(
            entries(&store),
            vec![
                Entry::Reset { instance },
                Entry::Chat(chat),
                Entry::User(MirroredUser::from(&user("ann"))),
                Entry::Message(m),
            ]
        );
        assert_eq!(store.mirror_status().outbox_len, 4);
        assert_eq!(store.mirror_target().unwrap().as_deref(), Some("db:5432/x"));
    }

    #[test]
    fn an_unfinished_load_is_remembered_across_a_reopen_and_can_be_cleared() {
        let dir = TempDir::new().unwrap();
        let store = SledStore::open_mirrored(dir.path(), SyncMode::Relaxed).unwrap();
        store.begin_load("restore").unwrap();
        store.load_users(&[user("Ann")]).unwrap();
        drop(store);
        let store = SledStore::open_mirrored(dir.path(), SyncMode::Relaxed).unwrap();
        assert_eq!(store.unfinished_load().unwrap().as_deref(), Some("restore"));
        store.clear_loaded().unwrap();
        assert!(store.is_empty());
        assert_eq!(store.user_key_by_email("ann@example.org").unwrap(), None);
        store.end_load().unwrap();
        assert_eq!(store.unfinished_load().unwrap(), None);
    }

    #[test]
    fn loaded_rows_keep_their_ids_and_new_ids_continue_above() {
        let dir = TempDir::new().unwrap();
        let store = SledStore::open_mirrored(dir.path(), SyncMode::Relaxed).unwrap();
        store.load_users(&[user("Ann")]).unwrap();
        let chat = ChatRecord {
            id: 7,
            name: "Main".into(),
            created: 1,
        };
        store.load_chats(std::slice::from_ref(&chat)).unwrap();
        let old = MessageRecord {
            id: 41,
            chat_id: 7,
            user: "ann".into(),
            verified: true,
            admin: false,
            bot: false,
            text: "old".into(),
            time: 3,
            author: None,
        };
        store.load_messages(std::slice::from_ref(&old)).unwrap();
        assert!(store.engine().outbox.is_empty(), "loads are not mirrored");
        assert_eq!(
            store.user_key_by_email("ann@example.org").unwrap(),
            Some("ann".into())
        );
        assert_eq!(store.last_messages(7, 10).unwrap(), vec![old]);
        assert_eq!(store.create_chat("Two", 2).unwrap().unwrap().id, 8);
        assert_eq!(store.append_message(message(7, "new")).unwrap().id, 42);
        store.close().unwrap();
        drop(store);
        let store = SledStore::open(dir.path(), SyncMode::Relaxed).unwrap();
        assert_eq!(store.append_message(message(7, "newer")).unwrap().id, 43);
    }
}
