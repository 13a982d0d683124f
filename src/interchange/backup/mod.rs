//! Backups (docs/operations.md, Backup and restore): a JSON Lines dump of accounts, chats and messages,
//! written by `GET /api/adminonly/export` while natter runs and by `natter export` while it is
//! stopped, and loaded by `natter import` into an empty data directory.
//!
//! The dump, one JSON object per line:
//! 1. the header: `{"natter_export":1,"created":T,"next_chat_id":C,"next_message_id":M}`;
//! 2. one `{"type":"user",...}` line per registered account (password hash and flags included);
//! 3. one `{"type":"chat",...}` line per chat, with its id;
//! 4. one `{"type":"message",...}` line per message, in id order across all chats;
//! 5. the end marker `{"type":"end","users":U,"chats":C,"messages":N}`, so a cut-off dump is
//!    recognised.
//!
//! Not in a dump: sessions, memberships (they end when their user goes offline), activation and
//! reset tokens, event queues, the mail outbox, and the cookie key.

mod export;
mod import;

pub use export::Export;
pub use import::{Checked, ImportError, import, import_into, validate};

use crate::store::{Author, ChatRecord, MessageRecord, UserRecord};
use serde::{Deserialize, Serialize};

/// The dump format this natter writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The first line of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The format version (`FORMAT_VERSION`).
    pub natter_export: u32,
    /// When the dump was taken, Unix seconds.
    pub created: i64,
    /// The id the next chat gets; an import continues from here.
    pub next_chat_id: u64,
    /// The id the next message gets; every message in the dump has a lower one.
    pub next_message_id: u64,
}

/// How many records of each kind a dump holds (its end marker).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub users: u64,
    pub chats: u64,
    pub messages: u64,
}

/// Every line after the header. The dump's own shape, kept apart from the store's records so
/// that a change of storage layout does not silently change the dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Line {
    User {
        name: String,
        email: String,
        password_hash: String,
        verified: bool,
        admin: bool,
        bot: bool,
        created: i64,
    },
    Chat {
        id: u64,
        name: String,
        created: i64,
    },
    Message {
        id: u64,
        chat_id: u64,
        user: String,
        verified: bool,
        admin: bool,
        bot: bool,
        text: String,
        time: i64,
        /// The registered account that posted it (lowercased), which may delete it; absent for
        /// guests (their right ends with their session) and the bot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        author: Option<String>,
    },
    End {
        users: u64,
        chats: u64,
        messages: u64,
    },
}

impl From<UserRecord> for Line {
    /// Activation and reset tokens stay behind.
    fn from(u: UserRecord) -> Line {
        Line::User {
            name: u.name,
            email: u.email,
            password_hash: u.password_hash,
            verified: u.verified,
            admin: u.admin,
            bot: u.bot,
            created: u.created,
        }
    }
}

impl From<ChatRecord> for Line {
    fn from(c: ChatRecord) -> Line {
        Line::Chat {
            id: c.id,
            name: c.name,
            created: c.created,
        }
    }
}

impl From<MessageRecord> for Line {
    fn from(m: MessageRecord) -> Line {
        Line::Message {
            id: m.id,
            chat_id: m.chat_id,
            user: m.user,
            verified: m.verified,
            admin: m.admin,
            bot: m.bot,
            text: m.text,
            time: m.time,
            author: match m.author {
                Some(Author::Account(key)) => Some(key),
                _ => None,
            },
        }
    }
}

impl From<Counts> for Line {
    fn from(c: Counts) -> Line {
        Line::End {
            users: c.users,
            chats: c.chats,
            messages: c.messages,
        }
    }
}
