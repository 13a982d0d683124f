//! The open sled database with its trees: opened at start, and again when storage recovers.

use super::{
    META_NEXT_CHAT, META_NEXT_MESSAGE, chat_ids_in, check_schema, decode_all, io, message_id_of,
    open_error, purge, read_counter,
};
use crate::store::{ChatRecord, NextIds, StoreResult};
use sled::Tree;
use std::collections::HashSet;
use std::path::Path;

/// The database and every tree handle, replaced together: a handle of an old database must
/// never be mixed with a new one.
pub(super) struct Engine {
    pub db: sled::Db,
    pub users: Tree,
    pub emails: Tree,
    pub chats: Tree,
    pub members: Tree,
    pub messages: Tree,
    pub sessions: Tree,
    pub meta: Tree,
    /// Outgoing mail waiting for delivery, keyed by a big-endian id.
    pub mail: Tree,
    /// Mirror entries waiting for PostgreSQL, keyed by a big-endian sequence number.
    pub outbox: Tree,
}

impl Engine {
    /// Opens the directory, finishes what a crash cut short, and reads the next ids on disk.
    pub fn open(dir: &Path, cache_bytes: u64) -> StoreResult<(Engine, NextIds)> {
        // Created here rather than by sled, which would leave it open to every local user.
        crate::files::create_private_dir(dir).map_err(crate::store::StoreError::Disk)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| open_error(dir, e))?;
        let tree = |name: &str| db.open_tree(name).map_err(io);
        let (users, emails, chats) = (tree("users")?, tree("emails")?, tree("chats")?);
        let (members, messages) = (tree("members")?, tree("messages")?);
        let (sessions, meta, mail) = (tree("sessions")?, tree("meta")?, tree("mail")?);
        let outbox = tree("outbox")?;
        let engine = Engine {
            db,
            users,
            emails,
            chats,
            members,
            messages,
            sessions,
            meta,
            mail,
            outbox,
        };
        check_schema(&engine.meta)?;
        let next = engine.finish_removals()?;
        Ok((engine, next))
    }

    /// Purges rows of removed chats (a crash in the middle of `remove_chat` leaves them) and
    /// returns the next ids: above every id once stored, so none is handed out again.
    fn finish_removals(&self) -> StoreResult<NextIds> {
        let live: Vec<ChatRecord> = decode_all(&self.chats)?;
        let live_ids: HashSet<u64> = live.iter().map(|c| c.id).collect();
        for chat_id in chat_ids_in(&self.members)? {
            if !live_ids.contains(&chat_id) {
                purge(&self.members, "memberships", chat_id)?;
            }
        }
        let mut max_message = 0;
        for chat_id in chat_ids_in(&self.messages)? {
            // Count rows about to be purged too: an id once stored is never handed out again.
            if let Some(key) = self
                .messages
                .scan_prefix(chat_id.to_be_bytes())
                .keys()
                .next_back()
            {
                max_message = max_message.max(message_id_of(&key.map_err(io)?)?);
            }
            if !live_ids.contains(&chat_id) {
                purge(&self.messages, "messages", chat_id)?;
            }
        }
        let max_chat = live.iter().map(|c| c.id).max().unwrap_or(0);
        Ok(NextIds {
            chat: read_counter(&self.meta, META_NEXT_CHAT)?.max(max_chat.saturating_add(1)),
            message: read_counter(&self.meta, META_NEXT_MESSAGE)?
                .max(max_message.saturating_add(1)),
        })
    }
}
