//! Messages: appended with the next id, read newest first, deleted one at a time.

use super::*;

pub(super) fn append_message(store: &SledStore, message: NewMessage) -> StoreResult<MessageRecord> {
    store.with(|e| {
        let next = lock(&store.next_message);
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
        store.mirrored_write(
            (&e.messages, &e.meta, &e.outbox),
            || Entry::Message(record.clone()),
            Some((next, after)),
            |(messages, meta, _)| -> TxResult<()> {
                messages.insert(&key[..], value.as_slice())?;
                meta.insert(META_NEXT_MESSAGE, counter.as_slice())?;
                Ok(())
            },
        )?;
        crate::telemetry::message_stored();
        Ok(record)
    })
}

pub(super) fn last_messages(
    store: &SledStore,
    chat_id: u64,
    limit: usize,
) -> StoreResult<Vec<MessageRecord>> {
    store.messages_before(chat_id, None, limit)
}

pub(super) fn messages_before(
    store: &SledStore,
    chat_id: u64,
    before: Option<u64>,
    limit: usize,
) -> StoreResult<Vec<MessageRecord>> {
    store.with(|e| {
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

pub(super) fn delete_message(store: &SledStore, chat_id: u64, id: u64) -> StoreResult<bool> {
    store.with(|e| {
        let key = message_key(chat_id, id);
        store.mirrored_write(
            (&e.messages, &e.outbox),
            || Entry::DeleteMessage { id },
            None,
            |(messages, _)| -> TxResult<bool> {
                if messages.remove(&key[..])?.is_none() {
                    return Ok(false);
                }
                Ok(true)
            },
        )
    })
}

pub(super) fn messages_below(
    store: &SledStore,
    chat_id: u64,
    below: u64,
) -> Box<dyn Iterator<Item = StoreResult<MessageRecord>> + '_> {
    let range = message_key(chat_id, 0)..message_key(chat_id, below);
    // The iterator keeps its own handle of the tree; a disk failure meanwhile fails it.
    match store.with(|e| Ok(e.messages.range(range))) {
        Ok(rows) => Box::new(
            rows.values()
                .map(|value| decode_message(&value.map_err(io)?)),
        ),
        Err(e) => Box::new(std::iter::once(Err(e))),
    }
}

pub(super) fn purge_messages(store: &SledStore, chat_id: u64) -> StoreResult<usize> {
    store.with(|e| remove_prefix(&e.messages, chat_id))
}

pub(super) fn message_key(chat_id: u64, id: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&chat_id.to_be_bytes());
    key[8..].copy_from_slice(&id.to_be_bytes());
    key
}

pub(super) fn message_id_of(key: &[u8]) -> StoreResult<u64> {
    key.get(8..16)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("message key without a message id".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::chats::PURGE_BATCH;
    use crate::store::sled::fixtures::{message, open, reopen};
    use tempfile::TempDir;

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
}
