//! What several nodes on one PostgreSQL database tell each other (`cluster = true`): each
//! change's effect on the state every node keeps in memory, and its events with their audiences,
//! written in the change's own transaction and read back by every node in commit order
//! (docs/design.md, Several nodes).

use super::{BlockedName, ChatRecord, MemberRecord, SessionRecord};
use serde::{Deserialize, Serialize};

/// One effect of a change on the in-memory state (`chat::state::State`) or the event queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delta {
    /// A session stored or updated (sign-in, rotation keeps the handle).
    Session(SessionRecord),
    /// A session replaced by one with a new cookie (same handle).
    SessionReplaced {
        old_hash: [u8; 32],
        session: SessionRecord,
    },
    SessionDeleted([u8; 32]),
    /// A session went offline (its memberships in `leave` ended); `kept` is its record as kept.
    Offline {
        token_hash: [u8; 32],
        kept: Option<SessionRecord>,
        user_key: String,
        leave: Vec<u64>,
    },
    Chat(ChatRecord),
    ChatRemoved(u64),
    Member(MemberRecord),
    MemberRemoved {
        chat_id: u64,
        user_key: String,
    },
    /// An account created or changed: other nodes read it again.
    User(String),
    UserDeleted(String),
    Blocks(Vec<BlockedName>),
    /// An explicit event queue opened (`POST /queues`): every node opens it at this point.
    QueueOpened {
        handle: u64,
        queue_id: String,
        types: u32,
    },
}

/// An event as the log carries it: its audience (session handles), type and payload JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedEvent {
    pub targets: Vec<u64>,
    pub kind: String,
    pub payload: String,
}

/// One change as a row of the log carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedChange {
    pub deltas: Vec<Delta>,
    pub events: Vec<LoggedEvent>,
}

impl LoggedChange {
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty() && self.events.is_empty()
    }

    /// The row's body: bincode, as sled's values.
    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }

    /// A body read back; `None` for one this version cannot read (a newer node's).
    pub fn decode(body: &[u8]) -> Option<LoggedChange> {
        bincode::serde::decode_from_slice(body, bincode::config::standard())
            .ok()
            .map(|(change, _)| change)
    }
}

/// A change read back from the log, in commit order.
#[derive(Debug, Clone)]
pub struct Followed {
    /// The id of its first event; event `k` has `position + k` (docs/design.md, Several nodes).
    pub position: u64,
    /// Written by this node (its deltas are already in memory).
    pub own: bool,
    /// The writing node's epoch for it.
    pub epoch: u64,
    pub change: LoggedChange,
}

/// Bits of an event id taken by the event's place within its transaction.
pub const PLACE_BITS: u32 = 20;

/// The id of the event at `place` in the transaction `xid`: increasing in log order, and below
/// 2^53 (JavaScript's exact integers) for 2^33 transactions after `base`.
pub fn event_position(xid: u64, base: u64, place: u32) -> u64 {
    (xid.saturating_sub(base) << PLACE_BITS) | u64::from(place)
}

/// A node's reader of the log as the service uses it (`postgres::tail`).
pub trait Follower: Send + Sync {
    /// Reads now instead of at the next wake-up (nothing was committed: no other node is rung).
    fn read_now(&self);
    /// Counts the reads finished so far, empty ones included.
    fn reads(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Counts the reads begun so far.
    fn begun(&self) -> u64;
    /// How long ago the last read finished: how far behind the log this node may be.
    fn lag(&self) -> std::time::Duration;
}
