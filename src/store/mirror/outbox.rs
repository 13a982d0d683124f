//! What the outbox holds: one entry per mirrored change, written in the change's own transaction.

use crate::store::{ChatRecord, MessageRecord, UserRecord};
use serde::{Deserialize, Serialize};

/// One change to replay in PostgreSQL. Every entry is idempotent: applying it twice leaves the
/// same rows as applying it once.
///
/// Stored with bincode, which numbers variants: add new ones (a message delete, say) at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// Empties the mirror's tables and labels the database with this data directory's mirror
    /// instance; leads a full copy of sled.
    Reset { instance: String },
    /// Inserts or rewrites an account.
    User(MirroredUser),
    /// Deletes an account (its messages stay, as in sled).
    DeleteUser { key: String },
    /// Inserts or renames a chat.
    Chat(ChatRecord),
    /// Deletes a chat and its messages.
    RemoveChat { id: u64 },
    /// Inserts a message; one already there is left as it is.
    Message(MessageRecord),
    /// Deletes one message (its author or an admin deleted it).
    DeleteMessage { id: u64 },
}

/// The mirrored part of an account: no tokens (they are single-use secrets that stay in sled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirroredUser {
    /// Lowercased name, the primary key.
    pub key: String,
    pub name: String,
    pub email: String,
    pub password_hash: String,
    pub verified: bool,
    pub admin: bool,
    pub bot: bool,
    pub created: i64,
}

impl From<&UserRecord> for MirroredUser {
    fn from(user: &UserRecord) -> Self {
        MirroredUser {
            key: user.name.to_lowercase(),
            name: user.name.clone(),
            email: user.email.clone(),
            password_hash: user.password_hash.clone(),
            verified: user.verified,
            admin: user.admin,
            bot: user.bot,
            created: user.created,
        }
    }
}

impl MirroredUser {
    /// Back to a sled record (restore); tokens start empty.
    pub fn into_record(self) -> UserRecord {
        UserRecord {
            name: self.name,
            email: self.email,
            password_hash: self.password_hash,
            verified: self.verified,
            admin: self.admin,
            bot: self.bot,
            created: self.created,
            activation: None,
            reset: None,
        }
    }
}

/// An entry as stored: with the time it was queued, for the lag report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Unix milliseconds when the change committed.
    pub at_ms: i64,
    pub entry: Entry,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
