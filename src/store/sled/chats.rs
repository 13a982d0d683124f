//! Chats, their members, and the rows a removed chat leaves behind.

use super::*;

pub(super) fn chats(store: &SledStore) -> StoreResult<Vec<ChatRecord>> {
    store.with(|e| decode_all(&e.chats))
}

pub(super) fn create_chat(
    store: &SledStore,
    name: &str,
    created: i64,
) -> StoreResult<Option<ChatRecord>> {
    store.with(|e| {
        let key = name.to_lowercase();
        let next = lock(&store.next_chat);
        let chat = ChatRecord {
            id: *next,
            name: name.to_string(),
            created,
        };
        let after = counter_after(chat.id)?;
        let (value, counter) = (encode(&chat)?, encode(&after)?);
        let done = store.mirrored_write(
            (&e.chats, &e.meta, &e.outbox),
            || Entry::Chat(chat.clone()),
            Some((next, after)),
            |(chats, meta, _)| -> TxResult<bool> {
                if chats.get(&key)?.is_some() {
                    return Ok(false);
                }
                chats.insert(key.as_bytes(), value.as_slice())?;
                meta.insert(META_NEXT_CHAT, counter.as_slice())?;
                Ok(true)
            },
        )?;
        Ok(done.then_some(chat))
    })
}

pub(super) fn remove_chat(store: &SledStore, chat_id: u64) -> StoreResult<bool> {
    store.with(|e| {
        let Some(key) = chat_key(e, chat_id)? else {
            return Ok(false);
        };
        let member_keys = e
            .members
            .scan_prefix(chat_id.to_be_bytes())
            .keys()
            .collect::<Result<Vec<IVec>, _>>()
            .map_err(io)?;
        store.mirrored_write(
            (&e.chats, &e.members, &e.outbox),
            || Entry::RemoveChat { id: chat_id },
            None,
            |(chats, members, _)| -> TxResult<bool> {
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
                Ok(true)
            },
        )
    })
}

pub(super) fn add_member(store: &SledStore, member: &MemberRecord) -> StoreResult<()> {
    store.with(|e| {
        let key = member_key(member.chat_id, &member.user_key);
        e.members.insert(key, encode(member)?).map_err(io)?;
        store.committed();
        Ok(())
    })
}

pub(super) fn remove_member(store: &SledStore, chat_id: u64, user_key: &str) -> StoreResult<()> {
    store.with(|e| {
        e.members
            .remove(member_key(chat_id, user_key))
            .map_err(io)?;
        store.committed();
        Ok(())
    })
}

pub(super) fn members(store: &SledStore) -> StoreResult<Vec<MemberRecord>> {
    store.with(|e| decode_all(&e.members))
}

/// Finds a chat's key in `chats` by id (the tree is keyed by name and small).
pub(super) fn chat_key(e: &Engine, chat_id: u64) -> StoreResult<Option<IVec>> {
    for entry in e.chats.iter() {
        let (key, value) = entry.map_err(io)?;
        if decode::<ChatRecord>(&value)?.id == chat_id {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

pub(super) fn member_key(chat_id: u64, user_key: &str) -> Vec<u8> {
    let mut key = chat_id.to_be_bytes().to_vec();
    key.extend_from_slice(user_key.as_bytes());
    key
}

/// The chat id that leads a `members` or `messages` key.
pub(super) fn chat_id_of(key: &[u8]) -> StoreResult<u64> {
    key.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("key without a chat id".into()))
}

/// Rows deleted per batch when a removed chat's rows are purged.
pub(super) const PURGE_BATCH: usize = 1000;

/// Deletes every row of a chat in batches, so no single write grows with the chat.
pub(super) fn remove_prefix(tree: &Tree, chat_id: u64) -> StoreResult<usize> {
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
pub(super) fn chat_ids_in(tree: &Tree) -> StoreResult<Vec<u64>> {
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

pub(super) fn purge(tree: &Tree, what: &str, chat_id: u64) -> StoreResult<()> {
    let removed = remove_prefix(tree, chat_id)?;
    log::warn!("removed {removed} {what} of removed chat {chat_id}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::fixtures::{member, message, open};
    use tempfile::TempDir;

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
}
