//! Queue snapshots for a graceful restart: written at shutdown, read back at the next start
//! (docs/design.md, Event delivery).

use super::queue::{EventQueue, SessionQueues};
use super::{Hub, Inner, SNAPSHOT_VERSION, SessionHandle};
use crate::events::EncodedEvent;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::time::Instant;

impl Hub {
    /// Serializes every session's queues for a graceful restart (staged events are not included).
    pub fn snapshot(&self) -> Vec<u8> {
        let snapshot = {
            let inner = self.lock();
            Snapshot {
                sessions: inner
                    .sessions
                    .iter()
                    .map(|(s, queues)| queues.to_snapshot(*s))
                    .collect(),
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
    /// A restored session replaces one with the same handle. Nothing changes on error.
    pub fn restore(
        &self,
        bytes: &[u8],
        keep: impl Fn(SessionHandle) -> bool,
    ) -> Result<usize, String> {
        let snapshot = decode_snapshot(bytes)?;
        let now = Instant::now();
        let mut interned = HashMap::new();
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
                let restored =
                    session.rebuild(now, &mut interned, self.limits.queues_per_session)?;
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

impl SessionQueues {
    /// Explicit queues are written first to go first, so a restore under a lower cap keeps the rest.
    fn to_snapshot(&self, session: SessionHandle) -> SessionSnapshot {
        let mut explicit: Vec<(&String, &EventQueue)> = self.explicit.iter().collect();
        explicit.sort_by_key(|(_, queue)| queue.eviction_rank());
        SessionSnapshot {
            session,
            default_polled: self.default.ever_polled(),
            default: self.default.to_snapshot(),
            explicit: explicit
                .into_iter()
                .map(|(id, queue)| (id.clone(), queue.to_snapshot()))
                .collect(),
        }
    }
}

impl EventQueue {
    fn to_snapshot(&self) -> QueueSnapshot {
        QueueSnapshot {
            next_id: self.next_id,
            lost: self.lost,
            events: (self.first_id()..)
                .zip(&self.events)
                .map(|(id, event)| (id, event.kind.clone(), event.payload.get().to_owned()))
                .collect(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct Snapshot {
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

/// Version 1, written before `default_polled` was kept: read as polled, so nothing is dropped.
#[derive(Deserialize)]
struct SnapshotV1 {
    sessions: Vec<SessionSnapshotV1>,
}

#[derive(Deserialize)]
struct SessionSnapshotV1 {
    session: SessionHandle,
    default: QueueSnapshot,
    explicit: Vec<(String, QueueSnapshot)>,
}

impl From<SnapshotV1> for Snapshot {
    fn from(v1: SnapshotV1) -> Snapshot {
        let sessions = v1.sessions.into_iter().map(|s| SessionSnapshot {
            session: s.session,
            default_polled: true,
            default: s.default,
            explicit: s.explicit,
        });
        Snapshot {
            sessions: sessions.collect(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct QueueSnapshot {
    pub(super) next_id: u64,
    pub(super) lost: bool,
    /// `(id, type, payload JSON)`
    pub(super) events: Vec<(u64, String, String)>,
}

/// Restored events shared across queues, keyed by type and payload.
pub(super) type Interned = HashMap<(String, String), Arc<EncodedEvent>>;

pub(super) fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, String> {
    let (version, body) = bytes
        .split_first()
        .ok_or_else(|| "empty event queue snapshot".to_owned())?;
    match *version {
        SNAPSHOT_VERSION => decode_body::<Snapshot>(body),
        1 => decode_body::<SnapshotV1>(body).map(Snapshot::from),
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
        interned: &mut Interned,
        max_explicit: usize,
    ) -> Result<RestoredSession, String> {
        let mut default = self.default.rebuild(now, interned)?;
        // Default queues resync instead of staying lost.
        default.lost = false;
        let mut ids = HashSet::with_capacity(self.explicit.len());
        if self.explicit.iter().any(|(id, _)| !ids.insert(id.as_str())) {
            return Err("a queue id appears twice in the queue snapshot".to_owned());
        }
        let mut explicit = Vec::with_capacity(self.explicit.len());
        for (id, queue) in self.explicit {
            explicit.push((id, queue.rebuild(now, interned)?));
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
        interned: &mut Interned,
    ) -> Result<EventQueue, String> {
        if self.next_id == 0 {
            return Err("bad event queue snapshot: next id 0".to_owned());
        }
        // Restored before anything is staged: every later event is the queue's.
        let mut queue = EventQueue::new(self.next_id, now, 0);
        queue.lost = self.lost;
        queue.warned = self.lost;
        // A queue's ids run without gaps up to the one before `next_id`; anything else would
        // break acknowledgement.
        let first = self.next_id.checked_sub(self.events.len() as u64);
        for (expected, (id, kind, payload)) in first.into_iter().flat_map(|f| f..).zip(self.events)
        {
            if id != expected || id == 0 {
                return Err(format!(
                    "bad event queue snapshot: event id {id} out of order"
                ));
            }
            let event = intern(interned, kind, payload)?;
            queue.events.push_back(event);
        }
        if first.is_none() {
            return Err("bad event queue snapshot: more events than ids".to_owned());
        }
        Ok(queue)
    }
}

pub(super) fn intern(
    interned: &mut Interned,
    kind: String,
    payload: String,
) -> Result<Arc<EncodedEvent>, String> {
    match interned.entry((kind, payload)) {
        Entry::Occupied(entry) => Ok(Arc::clone(entry.get())),
        Entry::Vacant(entry) => {
            let (kind, payload) = entry.key();
            let payload = RawValue::from_string(payload.clone())
                .map_err(|e| format!("bad event payload in queue snapshot: {e}"))?;
            let event = Arc::new(EncodedEvent {
                kind: kind.clone(),
                payload,
            });
            Ok(Arc::clone(entry.insert(event)))
        }
    }
}
