//! Queue snapshots for a graceful restart: written at shutdown, read back at the next start
//! (docs/design.md, Event delivery). Each distinct event is written once and queues refer to it by
//! index, so a snapshot grows with the events held, not with events × the queues holding them.

use super::queue::{EventQueue, SessionQueues};
use super::snapshot_v1::SnapshotV1;
use super::snapshot_v2::SnapshotV2;
use super::{Hub, Inner, SNAPSHOT_VERSION, SessionHandle};
use crate::events::{EncodedEvent, EventTypes};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::time::Instant;

impl Hub {
    /// Serializes every session's queues for a graceful restart (staged events are not included).
    ///
    /// A positioned hub writes a snapshot without sessions: its queues' ids are log positions,
    /// which the dense snapshot layout cannot carry, and a restarted node replays the shared log.
    pub fn snapshot(&self) -> Vec<u8> {
        let snapshot = {
            let inner = self.lock();
            let mut events = EventTable::default();
            let sessions = if inner.positioned {
                Vec::new()
            } else {
                inner
                    .sessions
                    .iter()
                    .map(|(s, queues)| queues.to_snapshot(*s, &mut events))
                    .collect()
            };
            Snapshot {
                events: events.rows,
                sessions,
            }
        };
        match bincode::serde::encode_to_vec(&snapshot, bincode::config::standard()) {
            Ok(body) => {
                let mut bytes = Vec::with_capacity(body.len() + 1);
                bytes.push(SNAPSHOT_VERSION);
                bytes.extend_from_slice(&body);
                bytes
            }
            Err(e) => {
                // Plain structs do not fail to encode; an empty snapshot fails restore loudly.
                log::error!("cannot encode event queue snapshot: {e}");
                Vec::new()
            }
        }
    }

    /// Re-creates the queues of sessions that `keep` accepts; returns how many queues.
    ///
    /// A restored session replaces one with the same handle. Nothing changes on error. A
    /// positioned hub restores no queues: their snapshot ids would not be log positions.
    pub fn restore(
        &self,
        bytes: &[u8],
        keep: impl Fn(SessionHandle) -> bool,
    ) -> Result<usize, String> {
        let snapshot = decode_snapshot(bytes)?;
        if self.is_positioned() && !snapshot.sessions.is_empty() {
            return Err("a hub numbering events by log position restores no queue snapshot".into());
        }
        let now = Instant::now();
        let events = snapshot
            .events
            .into_iter()
            .map(|(kind, payload)| {
                let payload = RawValue::from_string(payload)
                    .map_err(|e| format!("bad event payload in queue snapshot: {e}"))?;
                Ok(Arc::new(EncodedEvent {
                    kind,
                    payload,
                    position: 0,
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut seen = HashSet::new();
        let mut rebuilt = Vec::new();
        for session in snapshot.sessions {
            if !seen.insert(session.session) {
                return Err(format!(
                    "session {} appears twice in the queue snapshot",
                    session.session
                ));
            }
            if keep(session.session) {
                let s = session.session;
                let restored = session.rebuild(now, &events, self.limits.queues_per_session)?;
                rebuilt.push((s, restored));
            }
        }
        let count = rebuilt
            .iter()
            .map(|(_, queues)| 1 + queues.explicit.len())
            .sum();
        let mut inner = self.lock();
        for (s, queues) in rebuilt {
            let queues = queues.install(&mut inner);
            if let Some(old) = inner.sessions.insert(s, queues) {
                old.wake_all();
            }
        }
        Ok(count)
    }
}

/// The distinct events a snapshot holds, in first-seen order, found by the queues' shared pointer.
#[derive(Default)]
struct EventTable {
    index: HashMap<*const EncodedEvent, u64>,
    rows: Vec<(String, String)>,
}

impl EventTable {
    fn index_of(&mut self, event: &Arc<EncodedEvent>) -> u64 {
        let rows = &mut self.rows;
        // Every queue holding the event holds this same allocation.
        *self.index.entry(Arc::as_ptr(event)).or_insert_with(|| {
            rows.push((event.kind.clone(), event.payload.get().to_owned()));
            rows.len() as u64 - 1
        })
    }
}

impl SessionQueues {
    /// Explicit queues are written first to go first, so a restore under a lower cap keeps the rest.
    fn to_snapshot(&self, session: SessionHandle, events: &mut EventTable) -> SessionSnapshot {
        let mut explicit: Vec<(&String, &EventQueue)> = self.explicit.iter().collect();
        explicit.sort_by_key(|(_, queue)| queue.eviction_rank());
        SessionSnapshot {
            session,
            default_polled: self.default.ever_polled(),
            default: self.default.to_snapshot(events),
            explicit: explicit
                .into_iter()
                .map(|(id, queue)| (id.clone(), queue.to_snapshot(events)))
                .collect(),
        }
    }
}

impl EventQueue {
    fn to_snapshot(&self, events: &mut EventTable) -> QueueSnapshot {
        QueueSnapshot {
            next_id: self.next_id,
            lost: self.lost,
            events: self.events.iter().map(|e| events.index_of(e)).collect(),
            event_types: self
                .types
                .names()
                .map(|names| names.into_iter().map(str::to_owned).collect()),
        }
    }
}

/// Version 3 of the snapshot: version 2 plus each queue's event types.
#[derive(Serialize, Deserialize)]
pub(super) struct Snapshot {
    /// `(type, payload JSON)` of every event some queue holds, once each.
    pub(super) events: Vec<(String, String)>,
    pub(super) sessions: Vec<SessionSnapshot>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct SessionSnapshot {
    pub(super) session: SessionHandle,
    /// Whether `/poll` ever read the default queue (`SessionQueues::default_is_unread`).
    pub(super) default_polled: bool,
    pub(super) default: QueueSnapshot,
    pub(super) explicit: Vec<(String, QueueSnapshot)>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct QueueSnapshot {
    pub(super) next_id: u64,
    pub(super) lost: bool,
    /// Held events, oldest first, as indexes into `Snapshot::events`; their ids run without gaps
    /// up to `next_id - 1`.
    pub(super) events: Vec<u64>,
    /// The event types the queue takes (`event_types` when opened); `None`: every type.
    pub(super) event_types: Option<Vec<String>>,
}

pub(super) fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, String> {
    let (version, body) = bytes
        .split_first()
        .ok_or_else(|| "empty event queue snapshot".to_owned())?;
    match *version {
        SNAPSHOT_VERSION => decode_body::<Snapshot>(body),
        2 => Ok(decode_body::<SnapshotV2>(body)?.upgrade()),
        1 => decode_body::<SnapshotV1>(body)?.upgrade(),
        _ => Err(format!("unknown event queue snapshot version {version}")),
    }
}

fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let (snapshot, read) =
        bincode::serde::decode_from_slice::<T, _>(body, bincode::config::standard())
            .map_err(|e| format!("bad event queue snapshot: {e}"))?;
    if read != body.len() {
        return Err("bad event queue snapshot: trailing bytes".to_owned());
    }
    Ok(snapshot)
}

/// A session's queues read back from a snapshot, explicit ones in snapshot order.
pub(super) struct RestoredSession {
    pub(super) default_polled: bool,
    pub(super) default: EventQueue,
    pub(super) explicit: Vec<(String, EventQueue)>,
}

impl SessionSnapshot {
    /// Keeps at most `max_explicit` explicit queues: the last ones, which were polled most recently.
    pub(super) fn rebuild(
        self,
        now: Instant,
        events: &[Arc<EncodedEvent>],
        max_explicit: usize,
    ) -> Result<RestoredSession, String> {
        let mut default = self.default.rebuild(now, events)?;
        // Default queues resync instead of staying lost.
        default.lost = false;
        let mut ids = HashSet::with_capacity(self.explicit.len());
        if self.explicit.iter().any(|(id, _)| !ids.insert(id.as_str())) {
            return Err("a queue id appears twice in the queue snapshot".to_owned());
        }
        let mut explicit = Vec::with_capacity(self.explicit.len());
        for (id, queue) in self.explicit {
            explicit.push((id, queue.rebuild(now, events)?));
        }
        // Lost queues go first, as they would when a queue is opened; the order is otherwise kept.
        explicit.sort_by_key(|(_, queue)| !queue.lost);
        let dropped = explicit.len().saturating_sub(max_explicit);
        if dropped > 0 {
            log::debug!(
                "session {} had {} event queues in the snapshot; dropped the {dropped} least recently polled",
                self.session,
                explicit.len()
            );
            explicit.drain(..dropped);
        }
        Ok(RestoredSession {
            default_polled: self.default_polled,
            default,
            explicit,
        })
    }
}

impl RestoredSession {
    /// Stamps the queues in hub order, keeping which was polled last.
    pub(super) fn install(self, inner: &mut Inner) -> SessionQueues {
        let mut default = self.default;
        if self.default_polled {
            default.last_polled = inner.stamp();
        }
        let mut queues = SessionQueues {
            default,
            explicit: HashMap::with_capacity(self.explicit.len()),
        };
        for (id, mut queue) in self.explicit {
            queue.last_polled = inner.stamp();
            queues.explicit.insert(id, queue);
        }
        queues
    }
}

impl QueueSnapshot {
    pub(super) fn rebuild(
        self,
        now: Instant,
        events: &[Arc<EncodedEvent>],
    ) -> Result<EventQueue, String> {
        // A queue's ids run without gaps up to the one before `next_id`, and id 0 is never used.
        if self.next_id == 0 || self.next_id - 1 < self.events.len() as u64 {
            return Err(format!(
                "bad event queue snapshot: {} events cannot end at id {}",
                self.events.len(),
                self.next_id.saturating_sub(1)
            ));
        }
        // Restored before anything is staged: every later event is the queue's.
        let mut queue = EventQueue::new(self.next_id, now, 0);
        if let Some(names) = &self.event_types {
            queue.types = EventTypes::from_names(names.iter().map(String::as_str))
                .map_err(|name| format!("bad event queue snapshot: unknown event type {name}"))?;
        }
        queue.lost = self.lost;
        queue.warned = self.lost;
        for index in self.events {
            let event = usize::try_from(index)
                .ok()
                .and_then(|i| events.get(i))
                .ok_or_else(|| format!("bad event queue snapshot: no event {index}"))?;
            queue.events.push_back(Arc::clone(event));
        }
        Ok(queue)
    }
}
