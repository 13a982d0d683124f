//! Writing a dump from a consistent cut.
//!
//! sled has no snapshot across trees, so the cut is made of what natter guarantees instead
//! (docs/design.md, Storage and durability): under the service's state lock, which orders every
//! change, the accounts, the chats and the next message id are read at once. Message ids
//! increase and a message never changes once written, so "every message with an id below the
//! cut, of the chats that existed at the cut" is a consistent picture, and it can be streamed
//! afterwards without holding anything up. The one thing that could take such messages away, the
//! background purge of a removed chat, waits while an export holds `gate`.

use super::{Counts, FORMAT_VERSION, Header, Line};
use crate::store::{ChatRecord, MessageRecord, NextIds, Store, StoreResult, UserRecord};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::sync::Arc;
use tokio::sync::OwnedRwLockReadGuard;

/// A cut, ready to be written.
pub struct Export {
    header: Header,
    users: Vec<UserRecord>,
    chats: Vec<ChatRecord>,
    store: Arc<dyn Store>,
    /// Held until the dump is written: removed chats' messages are not purged meanwhile.
    _gate: Option<OwnedRwLockReadGuard<()>>,
}

impl Export {
    /// A cut of `users`, `chats` and the messages below `next.message`, read together (under the
    /// service's state lock while natter runs).
    pub fn new(
        store: Arc<dyn Store>,
        mut users: Vec<UserRecord>,
        mut chats: Vec<ChatRecord>,
        next: NextIds,
        created: i64,
        gate: Option<OwnedRwLockReadGuard<()>>,
    ) -> Export {
        users.sort_by_key(|u| u.name.to_lowercase());
        chats.sort_by_key(|c| c.id);
        Export {
            header: Header {
                natter_export: FORMAT_VERSION,
                created,
                next_chat_id: next.chat,
                next_message_id: next.message,
            },
            users,
            chats,
            store,
            _gate: gate,
        }
    }

    /// A cut of a store nobody else is writing to (`natter export`).
    pub fn offline(store: Arc<dyn Store>, created: i64) -> StoreResult<Export> {
        let (users, chats) = (store.users()?, store.chats()?);
        let next = store.next_ids();
        Ok(Export::new(store, users, chats, next, created, None))
    }

    /// Writes the whole dump; blocking (it reads every message), so run it off the async workers.
    pub fn write_to(self, out: &mut dyn Write) -> io::Result<Counts> {
        let Export {
            header,
            users,
            chats,
            store,
            _gate,
        } = self;
        write_json(out, &header)?;
        let mut counts = Counts::default();
        for user in users {
            write_json(out, &Line::from(user))?;
            counts.users += 1;
        }
        let chat_ids: Vec<u64> = chats.iter().map(|c| c.id).collect();
        for chat in chats {
            write_json(out, &Line::from(chat))?;
            counts.chats += 1;
        }
        counts.messages = write_messages(store.as_ref(), &chat_ids, header.next_message_id, out)?;
        write_json(out, &Line::from(counts))?;
        out.flush()?;
        Ok(counts)
    }
}

/// The messages of `chats` below `cut`, merged into one id order (each chat's are in order).
fn write_messages(
    store: &dyn Store,
    chats: &[u64],
    cut: u64,
    out: &mut dyn Write,
) -> io::Result<u64> {
    let mut sources: Vec<_> = chats
        .iter()
        .map(|&chat| store.messages_below(chat, cut))
        .collect();
    let mut heads: Vec<Option<MessageRecord>> = Vec::with_capacity(sources.len());
    let mut order = BinaryHeap::new();
    for (i, source) in sources.iter_mut().enumerate() {
        let head = next(source.as_mut())?;
        if let Some(m) = &head {
            order.push(Reverse((m.id, i)));
        }
        heads.push(head);
    }
    let mut written = 0;
    while let Some(Reverse((_, i))) = order.pop() {
        if let Some(message) = heads[i].take() {
            write_json(out, &Line::from(message))?;
            written += 1;
        }
        heads[i] = next(sources[i].as_mut())?;
        if let Some(m) = &heads[i] {
            order.push(Reverse((m.id, i)));
        }
    }
    Ok(written)
}

fn next(
    source: &mut dyn Iterator<Item = StoreResult<MessageRecord>>,
) -> io::Result<Option<MessageRecord>> {
    source.next().transpose().map_err(io::Error::other)
}

fn write_json<T: serde::Serialize>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::other)?;
    out.write_all(b"\n")
}
