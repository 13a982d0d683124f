//! Version 2 of the queue snapshot, as natter wrote it before queues could take only some event
//! types: read at an upgrade, every queue taking every type.

use super::SessionHandle;
use super::snapshot::{QueueSnapshot, SessionSnapshot, Snapshot};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotV2 {
    pub(super) events: Vec<(String, String)>,
    pub(super) sessions: Vec<SessionSnapshotV2>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct SessionSnapshotV2 {
    pub(super) session: SessionHandle,
    pub(super) default_polled: bool,
    pub(super) default: QueueSnapshotV2,
    pub(super) explicit: Vec<(String, QueueSnapshotV2)>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct QueueSnapshotV2 {
    pub(super) next_id: u64,
    pub(super) lost: bool,
    pub(super) events: Vec<u64>,
}

impl SnapshotV2 {
    pub(super) fn upgrade(self) -> Snapshot {
        let sessions = self
            .sessions
            .into_iter()
            .map(|s| SessionSnapshot {
                session: s.session,
                default_polled: s.default_polled,
                default: s.default.upgrade(),
                explicit: s
                    .explicit
                    .into_iter()
                    .map(|(id, queue)| (id, queue.upgrade()))
                    .collect(),
            })
            .collect();
        Snapshot {
            events: self.events,
            sessions,
        }
    }
}

impl QueueSnapshotV2 {
    fn upgrade(self) -> QueueSnapshot {
        QueueSnapshot {
            next_id: self.next_id,
            lost: self.lost,
            events: self.events,
            event_types: None,
        }
    }
}
