//! One session's queues (the default one and the explicit ones) and one queue's events, ids,
//! acknowledgement and wake-up.

use super::{Delivered, Hub, QueueKey, SessionHandle};
use crate::events::{EncodedEvent, EventTypes};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Entries a drained queue may keep allocated; a larger buffer is freed.
const IDLE_BUFFER: usize = 64;

pub(super) struct SessionQueues {
    pub(super) default: EventQueue,
    pub(super) explicit: HashMap<String, EventQueue>,
}

pub(super) struct EventQueue {
    /// One above the id of the newest event it took (or of the position it opened at).
    pub(super) next_id: u64,
    /// The hub's staging sequence when the queue opened: events staged before are not its,
    /// even if they become durable later. Positioned: one above the position it opened at.
    pub(super) opened: u64,
    /// Ids are the events' log positions (`EncodedEvent::position`), not a count of its own.
    pub(super) positioned: bool,
    /// The event types it takes; others never enter it, take its space or wake its poll.
    pub(super) types: EventTypes,
    /// Unacknowledged events, oldest first; their ids run up to `next_id - 1` without gaps, or
    /// are their positions, so only the shared event is stored (8 bytes a queue entry).
    pub(super) events: VecDeque<Arc<EncodedEvent>>,
    pub(super) lost: bool,
    pub(super) warned: bool,
    /// Last poll, for idle expiry.
    pub(super) last_used: Instant,
    /// When it was last polled (or opened) in hub order, for the per-session cap.
    pub(super) last_polled: u64,
    /// Ticket of the poll parked on this queue, if any.
    pub(super) parked: Option<u64>,
    pub(super) notify: Arc<Notify>,
}

/// What happened to an event offered to a queue.
pub(super) enum Push {
    Added,
    Overflowed,
    Ignored,
}

/// The `ResyncEvent` a queue holds in place of events: the hub's shared one, or on a positioned
/// hub a copy at the position of the event that caused it, so that ids keep increasing.
pub(super) struct Resync<'a> {
    shared: &'a Arc<EncodedEvent>,
    position: u64,
    /// The positioned copy, made when a queue first needs it and shared by the others.
    made: Option<Arc<EncodedEvent>>,
}

impl<'a> Resync<'a> {
    /// `position` 0: the shared event itself.
    pub(super) fn new(shared: &'a Arc<EncodedEvent>, position: u64) -> Resync<'a> {
        Resync {
            shared,
            position,
            made: None,
        }
    }

    pub(super) fn event(&mut self) -> &Arc<EncodedEvent> {
        if self.position == 0 {
            return self.shared;
        }
        let (shared, position) = (self.shared, self.position);
        self.made.get_or_insert_with(|| {
            Arc::new(EncodedEvent {
                position,
                ..EncodedEvent::clone(shared)
            })
        })
    }

    /// Whether `held` is this resync, at whatever position a positioned copy was made.
    fn is(&self, held: &Arc<EncodedEvent>) -> bool {
        Arc::ptr_eq(held, self.shared)
            || (self.position != 0
                && held.kind == self.shared.kind
                && held.payload.get() == self.shared.payload.get())
    }
}

impl SessionQueues {
    pub(super) fn new(default: EventQueue) -> SessionQueues {
        SessionQueues {
            default,
            explicit: HashMap::new(),
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &EventQueue> {
        std::iter::once(&self.default).chain(self.explicit.values())
    }

    pub(super) fn wake_all(&self) {
        self.iter().for_each(EventQueue::wake);
    }

    /// Whether the default queue only needs to say that it missed events: the session reads
    /// explicit queues (`/events`) and has never polled its default queue (`/poll`). Holding every
    /// event there for a reader that may never come would grow each such session to
    /// `event_queue_capacity` events; a `ResyncEvent` tells a late `/poll` to refetch instead.
    pub(super) fn default_is_unread(&self) -> bool {
        !self.explicit.is_empty() && !self.default.ever_polled()
    }

    /// Drops explicit queues, first to go first, until at most `keep` remain; returns how many.
    pub(super) fn evict_down_to(&mut self, keep: usize) -> usize {
        let mut evicted = 0;
        while self.explicit.len() > keep {
            let Some(id) = self
                .explicit
                .iter()
                .min_by_key(|(_, queue)| queue.eviction_rank())
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            if let Some(queue) = self.explicit.remove(&id) {
                // Its parked poll, if any, wakes to find the queue gone; the events go with `queue`.
                queue.wake();
            }
            evicted += 1;
        }
        evicted
    }
}

impl EventQueue {
    pub(super) fn new(next_id: u64, now: Instant, opened: u64) -> EventQueue {
        EventQueue {
            next_id,
            opened,
            positioned: false,
            types: EventTypes::ALL,
            events: VecDeque::new(),
            lost: false,
            warned: false,
            last_used: now,
            last_polled: 0,
            parked: None,
            notify: Arc::new(Notify::new()),
        }
    }

    /// A queue of a positioned hub taking the events after log position `after`.
    pub(super) fn after_position(after: u64, now: Instant) -> EventQueue {
        let next = after.saturating_add(1);
        EventQueue {
            positioned: true,
            ..EventQueue::new(next, now, next)
        }
    }

    /// Order in which the per-session cap drops explicit queues, lowest first: lost ones (their next
    /// poll fails anyway), then those without a parked poll (a parked poll is polling now), each
    /// group least recently polled first.
    pub(super) fn eviction_rank(&self) -> (bool, bool, u64) {
        (!self.lost, self.parked.is_some(), self.last_polled)
    }

    /// Whether a poll ever read this queue (stamped at each poll and when a snapshot says so).
    pub(super) fn ever_polled(&self) -> bool {
        self.last_polled != 0
    }

    /// Replaces what the queue holds with one `resync`, so it stays one event long however many
    /// arrive; the ids go on increasing.
    pub(super) fn hold_resync_only(&mut self, resync: &mut Resync<'_>) {
        if self.events.len() == 1 && self.events.front().is_some_and(|e| resync.is(e)) {
            return;
        }
        // A new deque, not `clear`, so a buffer grown before the session opened its queues goes too.
        self.events = VecDeque::new();
        self.append(resync.event());
    }

    /// Id of the oldest held event (or of the next one when empty) in dense numbering.
    fn first_id(&self) -> u64 {
        self.next_id - self.events.len() as u64
    }

    /// Id of `event`, held at `index` (0: the oldest).
    fn id_of(&self, index: usize, event: &EncodedEvent) -> u64 {
        if self.positioned {
            event.position
        } else {
            self.first_id() + index as u64
        }
    }

    /// The oldest held event with its id.
    pub(super) fn front(&self) -> Option<Delivered> {
        self.events.front().map(|event| Delivered {
            id: self.id_of(0, event),
            event: Arc::clone(event),
        })
    }

    /// Removes and returns the oldest held event with its id.
    pub(super) fn pop_front(&mut self) -> Option<Delivered> {
        let id = self.id_of(0, self.events.front()?);
        let event = self.events.pop_front()?;
        self.release_idle_buffer();
        Some(Delivered { id, event })
    }

    /// Up to `limit` of the oldest held events with their ids.
    pub(super) fn batch(&self, limit: usize) -> Vec<Delivered> {
        self.events
            .iter()
            .take(limit)
            .enumerate()
            .map(|(index, event)| Delivered {
                id: self.id_of(index, event),
                event: Arc::clone(event),
            })
            .collect()
    }

    /// Drops events the client confirmed it has: those with ids up to `ack`.
    pub(super) fn acknowledge(&mut self, ack: u64) {
        let confirmed = if self.positioned {
            // Positions increase along the queue, so the confirmed ones are a prefix.
            self.events
                .iter()
                .take_while(|event| event.position <= ack)
                .count()
        } else {
            let confirmed = ack.saturating_add(1).saturating_sub(self.first_id());
            usize::try_from(confirmed).map_or(self.events.len(), |n| n.min(self.events.len()))
        };
        self.events.drain(..confirmed);
        self.release_idle_buffer();
    }

    /// A drained queue gives back a buffer a burst grew, so idle sessions stay small.
    fn release_idle_buffer(&mut self) {
        if self.events.is_empty() && self.events.capacity() > IDLE_BUFFER {
            self.events = VecDeque::new();
        }
    }

    /// Appends an event; a full queue is emptied and either resyncs (`resync`) or is marked lost.
    pub(super) fn push(
        &mut self,
        event: &Arc<EncodedEvent>,
        capacity: usize,
        resync: Option<&mut Resync<'_>>,
    ) -> Push {
        if self.lost {
            return Push::Ignored;
        }
        let outcome = if self.events.len() >= capacity {
            // The event that overflowed is dropped too: the refetch after the resync covers it.
            // A new deque, not `clear`, so the full buffer's memory is returned as well.
            self.events = VecDeque::new();
            match resync {
                Some(resync) => self.append(resync.event()),
                None => self.lost = true,
            }
            Push::Overflowed
        } else {
            self.append(event);
            Push::Added
        };
        self.wake();
        outcome
    }

    pub(super) fn append(&mut self, event: &Arc<EncodedEvent>) {
        self.events.push_back(Arc::clone(event));
        self.next_id = if self.positioned {
            event.position.saturating_add(1)
        } else {
            self.next_id + 1
        };
    }

    pub(super) fn wake(&self) {
        if self.parked.is_some() {
            self.notify.notify_waiters();
        }
    }
}

/// Marks a parked poll; dropping it unparks, so a cancelled request does not stay "active".
pub(super) struct ParkedPoll<'a> {
    pub(super) hub: &'a Hub,
    pub(super) session: SessionHandle,
    pub(super) key: &'a QueueKey<'a>,
    pub(super) ticket: u64,
}

impl Drop for ParkedPoll<'_> {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        let stamp = inner.stamp();
        if let Some(queue) = inner.queue_mut(self.session, self.key)
            && queue.parked == Some(self.ticket)
        {
            queue.parked = None;
            // The idle clock starts when the poll ends, not when it began.
            queue.last_used = Instant::now();
            queue.last_polled = stamp;
        }
    }
}

/// Random, unguessable queue id: 128 bits from the OS, base64url; `None` if the OS has none.
pub fn new_queue_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    match getrandom::fill(&mut bytes) {
        Ok(()) => Some(URL_SAFE_NO_PAD.encode(bytes)),
        Err(e) => {
            log::error!("cannot read random bytes for a queue id: {e}");
            None
        }
    }
}
