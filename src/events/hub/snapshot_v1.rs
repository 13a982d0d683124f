//! Version 1 of the queue snapshot, as natter wrote it before events were stored once: read at an
//! upgrade and turned into the current version. It did not record whether a default queue was ever polled;
//! every one counts as polled, so nothing it holds is dropped.

use super::SessionHandle;
use super::snapshot::{QueueSnapshot, SessionSnapshot, Snapshot};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotV1 {
    pub(super) sessions: Vec<SessionSnapshotV1>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct SessionSnapshotV1 {
    pub(super) session: SessionHandle,
    pub(super) default: QueueSnapshotV1,
    pub(super) explicit: Vec<(String, QueueSnapshotV1)>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct QueueSnapshotV1 {
    pub(super) next_id: u64,
    pub(super) lost: bool,
    /// `(id, type, payload JSON)`
    pub(super) events: Vec<(u64, String, String)>,
}

/// Version 2's event table being built: equal events share one row.
#[derive(Default)]
struct Rows {
    index: HashMap<(String, String), u64>,
    rows: Vec<(String, String)>,
}

impl SnapshotV1 {
    pub(super) fn upgrade(self) -> Result<Snapshot, String> {
        let mut rows = Rows::default();
        let mut sessions = Vec::with_capacity(self.sessions.len());
        for s in self.sessions {
            let explicit = s
                .explicit
                .into_iter()
                .map(|(id, queue)| Ok((id, queue.upgrade(&mut rows)?)))
                .collect::<Result<_, String>>()?;
            sessions.push(SessionSnapshot {
                session: s.session,
                default_polled: true,
                default: s.default.upgrade(&mut rows)?,
                explicit,
            });
        }
        Ok(Snapshot {
            events: rows.rows,
            sessions,
        })
    }
}

impl QueueSnapshotV1 {
    /// Checks that the ids run without gaps up to `next_id - 1`, which version 2 takes as given.
    fn upgrade(self, rows: &mut Rows) -> Result<QueueSnapshot, String> {
        let first = self
            .next_id
            .checked_sub(self.events.len() as u64)
            .filter(|first| *first > 0)
            .ok_or_else(|| "bad event queue snapshot: more events than ids".to_owned())?;
        let mut events = Vec::with_capacity(self.events.len());
        for (expected, (id, kind, payload)) in (first..).zip(self.events) {
            if id != expected {
                return Err(format!(
                    "bad event queue snapshot: event id {id} out of order"
                ));
            }
            let next = rows.rows.len() as u64;
            let index = *rows.index.entry((kind, payload)).or_insert_with_key(|key| {
                rows.rows.push(key.clone());
                next
            });
            events.push(index);
        }
        Ok(QueueSnapshot {
            next_id: self.next_id,
            lost: self.lost,
            events,
            event_types: None,
        })
    }
}
