//! Mirror state shared by the sled store (which queues), the worker (which applies) and
//! `/healthz` (which reports).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// An outbox whose oldest entry waited longer than this counts as behind.
pub const BEHIND_AFTER: Duration = Duration::from_secs(5);

/// What `/healthz` says about the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorState {
    /// No `database_url`.
    Off,
    /// Connected, and nothing has waited long.
    Ok,
    /// Connected, but changes have waited longer than `BEHIND_AFTER`.
    Behind,
    /// PostgreSQL cannot be reached (or refused the schema); changes wait in the outbox.
    Down,
}

impl MirrorState {
    pub fn as_str(self) -> &'static str {
        match self {
            MirrorState::Off => "off",
            MirrorState::Ok => "ok",
            MirrorState::Behind => "behind",
            MirrorState::Down => "down",
        }
    }
}

/// The mirror's state and lag, for `/healthz`, the log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorReport {
    pub state: MirrorState,
    /// Changes waiting in the outbox.
    pub outbox_len: u64,
    /// How long the oldest waiting change has waited.
    pub oldest_age: Option<Duration>,
}

impl MirrorReport {
    pub fn off() -> MirrorReport {
        MirrorReport {
            state: MirrorState::Off,
            outbox_len: 0,
            oldest_age: None,
        }
    }
}

/// Counters and signals between the store and the worker.
#[derive(Debug, Default)]
pub struct MirrorShared {
    /// Next outbox key; held across each mirrored transaction so keys follow commit order.
    pub(crate) seq: Mutex<u64>,
    /// Entries in the outbox (sled's `len` walks the whole tree).
    pub(crate) len: AtomicU64,
    /// Whether the worker's last contact with PostgreSQL worked.
    pub(crate) connected: AtomicBool,
    /// Wakes the worker when a change was queued.
    pub(crate) wake: Notify,
}

impl MirrorShared {
    /// Combines the counters with the age of the oldest entry into a report.
    pub fn report(&self, oldest_age: Option<Duration>) -> MirrorReport {
        let outbox_len = self.len.load(Ordering::SeqCst);
        let state = if !self.connected.load(Ordering::SeqCst) {
            MirrorState::Down
        } else if oldest_age.is_some_and(|age| age > BEHIND_AFTER) {
            MirrorState::Behind
        } else {
            MirrorState::Ok
        };
        MirrorReport {
            state,
            outbox_len,
            oldest_age,
        }
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_the_connection_and_the_oldest_entry() {
        let shared = MirrorShared::default();
        assert_eq!(shared.report(None).state, MirrorState::Down);
        shared.set_connected(true);
        shared.len.store(3, Ordering::SeqCst);
        let fresh = shared.report(Some(Duration::from_secs(1)));
        assert_eq!((fresh.state, fresh.outbox_len), (MirrorState::Ok, 3));
        let old = shared.report(Some(BEHIND_AFTER + Duration::from_millis(1)));
        assert_eq!(old.state, MirrorState::Behind);
        shared.set_connected(false);
        assert_eq!(shared.report(None).state.as_str(), "down");
        assert_eq!(MirrorReport::off().state.as_str(), "off");
    }
}
