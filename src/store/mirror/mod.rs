//! The PostgreSQL mirror: sled stays the truth; every change also lands in an outbox tree that a
//! worker replays into PostgreSQL (docs/operations.md, The PostgreSQL mirror).

pub mod outbox;
pub mod start;
pub mod status;

#[cfg(feature = "pg")]
pub mod apply;
#[cfg(feature = "pg")]
mod conninfo;
#[cfg(feature = "pg")]
pub mod pg;
#[cfg(feature = "pg")]
pub mod restore;
#[cfg(feature = "pg")]
pub mod schema;
#[cfg(feature = "pg")]
mod unverified;
#[cfg(feature = "pg")]
pub mod worker;

pub use outbox::Entry;
pub use status::{MirrorReport, MirrorShared, MirrorState};
