//! Delivery hub: holds events until their write is durable, then fills per-session queues,
//! hands events out with acknowledgement and wakes parked polls (docs/design.md, Event delivery).
//! `queue` holds one session's queues, `snapshot` writes and reads them across a graceful restart.
//!
//! A single node numbers each queue's events itself (1, 2, 3, ...). Nodes sharing one change log
//! use a positioned hub (`Hub::positioned`): an event's id is its log position, the same on every
//! node, events arrive through `deliver_at` in log order, and queues open at given positions.

mod queue;
mod snapshot;
mod snapshot_v1;
mod snapshot_v2;
#[cfg(test)]
mod tests;

pub use queue::new_queue_id;
use queue::{EventQueue, ParkedPoll, Push, Resync, SessionQueues};

use super::{EncodedEvent, Event, EventTypes, ResyncEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Identifies a session to the hub; the domain service hands these out.
pub type SessionHandle = u64;

/// Most events one `/events` reply carries.
const BATCH_LIMIT: usize = 100;
/// Leading byte of every snapshot, bumped when its layout changes.
const SNAPSHOT_VERSION: u8 = 3;
/// Reason carried by the `ResyncEvent` a default queue gets after overflowing.
const OVERFLOW_REASON: &str = "event queue overflowed";
/// Reason carried by the `ResyncEvent` a default queue holds while its session reads only `/events`.
const UNREAD_REASON: &str = "events went to this session's other queues";

/// An event as a queue hands it out, with its id in that queue.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub id: u64,
    pub event: Arc<EncodedEvent>,
}

/// Answer to a legacy `/poll`: one event, or nothing before the timeout.
#[derive(Debug, Clone)]
pub enum PollReply {
    Event(Delivered),
    Empty,
}

/// The queue id is unknown, expired, another session's, or its queue lost events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadQueue;

/// Counters for metrics and health checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Registered sessions.
    pub sessions: usize,
    /// Default and explicit queues together.
    pub queues: usize,
    /// Explicit queues alone (each session's default queue not counted).
    pub explicit_queues: usize,
    /// Events held in all queues right now, counted once per queue.
    pub buffered: usize,
    /// Queues with a poll parked right now.
    pub parked: usize,
    /// Events put into queues, counted once per receiving queue.
    pub delivered: u64,
    /// Queue overflows since start.
    pub overflowed: u64,
    /// Explicit queues dropped since start to stay within `queues_per_session`.
    pub evicted: u64,
}

/// Bounds on what the hub holds (docs/design.md, Event delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLimits {
    /// Unacknowledged events a queue holds before it overflows (`event_queue_capacity`).
    pub capacity: usize,
    /// Explicit queues a session may have; the default queue is not counted (`max_queues_per_session`).
    pub queues_per_session: usize,
}

impl Default for HubLimits {
    /// The configuration defaults.
    fn default() -> HubLimits {
        HubLimits {
            capacity: 4096,
            queues_per_session: 16,
        }
    }
}

/// Per-session event queues, the events waiting for durability, and parked polls.
pub struct Hub {
    limits: HubLimits,
    /// How long a woken `/events` poll waits for more events to join its answer.
    batch_delay: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Ids are log positions (`Hub::positioned`) instead of each queue's own count.
    positioned: bool,
    sessions: HashMap<SessionHandle, SessionQueues>,
    staged: VecDeque<Staged>,
    released: u64,
    /// Epochs (first, last) of writes lost in a storage failure: their events are dropped.
    lost: Option<(u64, u64)>,
    shut_down: bool,
    next_ticket: u64,
    /// Sequence number of the next staged event (`Staged::seq`); positioned: one above the
    /// position of the last event delivered.
    next_seq: u64,
    /// Source of `EventQueue::last_polled`; a counter, so equal clock readings cannot tie.
    next_stamp: u64,
    counters: Counters,
    resync: Arc<EncodedEvent>,
    /// What an unread default queue holds (`SessionQueues::default_is_unread`).
    unread: Arc<EncodedEvent>,
}

#[derive(Default)]
struct Counters {
    delivered: u64,
    overflowed: u64,
    evicted: u64,
}

/// An event whose write is committed but maybe not yet on disk (or, positioned, being delivered).
struct Staged {
    /// Staging order: the event reaches only queues opened before it was staged (`opened <= seq`).
    /// Positioned: its log position.
    seq: u64,
    epoch: u64,
    targets: Vec<SessionHandle>,
    event: Arc<EncodedEvent>,
    /// The event's type, for the explicit queues that take only some (`EventQueue::types`).
    kind: EventTypes,
    /// Skips default queues: the legacy `/poll` never carries the event (`Event::explicit_only`).
    explicit_only: bool,
}

/// A poll about to park: the still-held lock, its queue's wake-up and its ticket.
type Parking<'g> = (MutexGuard<'g, Inner>, Arc<Notify>, u64);

/// Which queue of a session a poll reads.
enum QueueKey<'a> {
    Default,
    Explicit(&'a str),
}

/// What a poll decides after looking at its queue.
enum Look<R> {
    Reply(R),
    /// Reply, and delete the queue (a lost explicit queue).
    Discard(R),
    Wait,
}

/// The replies a poll gives when it has no event to hand out.
trait PollOutcome {
    /// Timeout, shutdown, a newer poll, or the session closed while parked.
    fn quiet() -> Self;
    /// The queue did not exist when the poll started.
    fn unknown() -> Self;
}

impl PollOutcome for PollReply {
    fn quiet() -> Self {
        PollReply::Empty
    }
    fn unknown() -> Self {
        PollReply::Empty
    }
}

impl PollOutcome for Result<Vec<Delivered>, BadQueue> {
    fn quiet() -> Self {
        Ok(Vec::new())
    }
    fn unknown() -> Self {
        Err(BadQueue)
    }
}

impl Hub {
    /// Creates a hub whose queues and sessions stay within `limits`.
    pub fn new(limits: HubLimits) -> Hub {
        let resync = |reason: &str| {
            Arc::new(
                Event::Resync(ResyncEvent {
                    reason: reason.into(),
                })
                .encode(),
            )
        };
        Hub {
            limits: HubLimits {
                // A queue must hold at least its ResyncEvent, and a session may open at least one queue.
                capacity: limits.capacity.max(1),
                queues_per_session: limits.queues_per_session.max(1),
            },
            batch_delay: Duration::ZERO,
            inner: Mutex::new(Inner {
                positioned: false,
                sessions: HashMap::new(),
                staged: VecDeque::new(),
                released: 0,
                lost: None,
                shut_down: false,
                next_ticket: 0,
                next_seq: 0,
                next_stamp: 0,
                counters: Counters::default(),
                resync: resync(OVERFLOW_REASON),
                unread: resync(UNREAD_REASON),
            }),
        }
    }

    /// Creates a hub for nodes sharing one change log: an event's id is its log position
    /// (`EncodedEvent::position`) in every queue. Events come through `deliver_at`, not
    /// `stage`/`release`; sessions and queues may open at a given position (`open_session_at`,
    /// `open_queue_at`), or otherwise at the position of the last event delivered.
    pub fn positioned(limits: HubLimits) -> Hub {
        let mut hub = Hub::new(limits);
        let inner = hub.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        inner.positioned = true;
        // No event yet: queues open "after position 0".
        inner.next_seq = 1;
        hub
    }

    /// Whether ids are log positions (`Hub::positioned`).
    pub fn is_positioned(&self) -> bool {
        self.lock().positioned
    }

    /// Positioned: the position of the last event `deliver_at` saw (0 before any).
    pub fn last_position(&self) -> u64 {
        let inner = self.lock();
        if inner.positioned {
            inner.next_seq - 1
        } else {
            0
        }
    }

    /// Lets a woken `/events` poll wait `delay` before answering, so that events released meanwhile
    /// share its answer (`event_batch_delay`): fewer, fuller answers when events come in bursts.
    pub fn with_batch_delay(mut self, delay: Duration) -> Hub {
        self.batch_delay = delay;
        self
    }

    /// Registers an online session with an empty default queue; does nothing if it exists.
    pub fn open_session(&self, s: SessionHandle) {
        let mut inner = self.lock();
        inner.add_session(s, None);
    }

    /// Positioned: registers a session whose default queue takes the events after `position`;
    /// does nothing if it exists, or on a hub that is not positioned.
    pub fn open_session_at(&self, s: SessionHandle, position: u64) {
        let mut inner = self.lock();
        if !inner.positioned {
            log::error!("a session opened at a log position on a hub that numbers its own events");
            return;
        }
        inner.add_session(s, Some(position));
    }

    /// Drops all queues of a session; its parked polls return empty at once.
    pub fn close_session(&self, s: SessionHandle) {
        if let Some(queues) = self.lock().sessions.remove(&s) {
            queues.wake_all();
        }
    }

    /// Whether the session is registered.
    pub fn has_session(&self, s: SessionHandle) -> bool {
        self.lock().sessions.contains_key(&s)
    }

    /// Opens an explicit queue taking the event types `types`: `(queue id, last_event_id)`, or
    /// `None` for an unknown session.
    ///
    /// A session at `queues_per_session` first loses its least recently polled explicit queue:
    /// its events are freed, a poll parked on it returns `BadQueue`, and so do later polls.
    ///
    /// Positioned, `last_event_id` is the position of the last event delivered: the queue takes
    /// the events after it.
    pub fn open_queue(&self, s: SessionHandle, types: EventTypes) -> Option<(String, u64)> {
        let id = new_queue_id()?;
        let last_event_id =
            self.lock()
                .add_queue(s, id.clone(), types, None, self.limits.queues_per_session)?;
        Some((id, last_event_id))
    }

    /// Positioned: opens the explicit queue `queue_id` (picked with `new_queue_id` by the node
    /// that handled the request, then replayed on every node) taking `types` after `position`.
    ///
    /// The per-session cap applies as in `open_queue`. An existing queue of that id is left as it
    /// is. False for an unknown session, or on a hub that is not positioned.
    pub fn open_queue_at(
        &self,
        s: SessionHandle,
        queue_id: String,
        types: EventTypes,
        position: u64,
    ) -> bool {
        let mut inner = self.lock();
        if !inner.positioned {
            log::error!("a queue opened at a log position on a hub that numbers its own events");
            return false;
        }
        inner
            .add_queue(
                s,
                queue_id,
                types,
                Some(position),
                self.limits.queues_per_session,
            )
            .is_some()
    }

    /// Holds `event` for `targets` until `release` reports `epoch` durable.
    pub fn stage(
        &self,
        epoch: u64,
        targets: impl IntoIterator<Item = SessionHandle>,
        event: &Event,
    ) {
        let mut targets: Vec<SessionHandle> = targets.into_iter().collect();
        // A session listed twice must still get the event once.
        targets.sort_unstable();
        targets.dedup();
        if targets.is_empty() {
            return;
        }
        // Encode outside the lock, once for every queue.
        let mut staged = Staged {
            seq: 0,
            epoch,
            targets,
            event: Arc::new(event.encode()),
            kind: EventTypes::of_kind(event.kind()),
            explicit_only: event.explicit_only(),
        };
        let mut inner = self.lock();
        if inner.positioned {
            log::error!("an event was staged on a hub that takes events by log position; dropped");
            return;
        }
        if inner.is_lost(epoch) {
            return;
        }
        staged.seq = inner.next_seq;
        inner.next_seq += 1;
        // Already durable with nothing ahead of it: no later release may come to carry it.
        if inner.staged.is_empty() && epoch <= inner.released {
            inner.deliver(&staged, self.limits.capacity);
        } else {
            inner.staged.push_back(staged);
        }
    }

    /// Positioned: delivers `event`, at log `position`, to `targets` at once (the log entry it
    /// comes from is durable already). A queue takes it if it opened before `position` and
    /// admits its type; otherwise as released events (`release`). Positions must increase from
    /// call to call: an event at or below the last one's position is dropped, so ids keep rising.
    pub fn deliver_at(
        &self,
        position: u64,
        targets: impl IntoIterator<Item = SessionHandle>,
        event: &Event,
    ) {
        let encoded = event.encode();
        self.deliver_encoded_at(
            position,
            targets,
            encoded.kind,
            encoded.payload.get().to_owned(),
        );
    }

    /// `deliver_at` for an event as the shared log carries it: its type and payload JSON.
    pub fn deliver_encoded_at(
        &self,
        position: u64,
        targets: impl IntoIterator<Item = SessionHandle>,
        kind: String,
        payload: String,
    ) {
        let mut targets: Vec<SessionHandle> = targets.into_iter().collect();
        // A session listed twice must still get the event once.
        targets.sort_unstable();
        targets.dedup();
        let types = EventTypes::of_kind(&kind);
        let explicit_only = Event::kind_is_explicit_only(&kind);
        let mut encoded = EncodedEvent::from_parts(kind, payload);
        encoded.position = position;
        let staged = Staged {
            seq: position,
            epoch: 0,
            targets,
            event: Arc::new(encoded),
            kind: types,
            explicit_only,
        };
        let mut inner = self.lock();
        if !inner.positioned {
            log::error!(
                "an event came by log position to a hub that numbers its own events; dropped"
            );
            return;
        }
        if position < inner.next_seq {
            log::error!(
                "event at log position {position} came after position {}; dropped",
                inner.next_seq - 1
            );
            return;
        }
        // Queues opened from now on without a position start after this event.
        inner.next_seq = position.saturating_add(1);
        inner.deliver(&staged, self.limits.capacity);
    }

    /// Positioned: the position an explicit queue takes events after (its `last_event_id` when
    /// opened), if the session has it.
    pub fn queue_start(&self, s: SessionHandle, queue_id: &str) -> Option<u64> {
        let mut inner = self.lock();
        let queue = inner.queue_mut(s, &QueueKey::Explicit(queue_id))?;
        Some(queue.opened.saturating_sub(1))
    }

    /// Drops a session's default-queue events up to `id`: another node's poll handed them out.
    pub fn acknowledge_default(&self, s: SessionHandle, id: u64) {
        if let Some(queue) = self.lock().queue_mut(s, &QueueKey::Default) {
            queue.acknowledge(id);
        }
    }

    /// Drops the staged events of writes lost in a storage failure (epochs `first..=last`):
    /// their requests got 503, so nobody may hear of them. Later stagings in the range drop too.
    pub fn discard_lost(&self, first: u64, last: u64) {
        let mut inner = self.lock();
        if inner.lost == Some((first, last)) {
            return;
        }
        inner.lost = Some((first, last));
        let before = inner.staged.len();
        inner
            .staged
            .retain(|staged| !(first..=last).contains(&staged.epoch));
        let dropped = before - inner.staged.len();
        if dropped > 0 {
            log::debug!("dropped {dropped} events of writes lost in a storage failure");
        }
    }

    /// Delivers, in staging order, every staged event with epoch <= `durable_epoch`.
    pub fn release(&self, durable_epoch: u64) {
        let mut inner = self.lock();
        if durable_epoch < inner.released {
            return;
        }
        inner.released = durable_epoch;
        // Stop at the first later epoch so staging order holds even if epochs were ever out of order.
        while inner
            .staged
            .front()
            .is_some_and(|staged| staged.epoch <= durable_epoch)
        {
            if let Some(staged) = inner.staged.pop_front() {
                inner.deliver(&staged, self.limits.capacity);
            }
        }
    }

    /// Legacy `/poll`: one event from the default queue, parking until one arrives or `timeout`.
    ///
    /// With `Some(n)` events up to `n` are acknowledged and the first remaining one is sent
    /// again until acknowledged; with `None` the event is removed as it is handed out.
    pub async fn poll_default(
        &self,
        s: SessionHandle,
        ack: Option<u64>,
        timeout: Duration,
    ) -> PollReply {
        let look = |queue: &mut EventQueue| {
            let first = match ack {
                Some(n) => {
                    queue.acknowledge(n);
                    queue.front()
                }
                None => queue.pop_front(),
            };
            first.map_or(Look::Wait, |event| Look::Reply(PollReply::Event(event)))
        };
        // One event per answer: waiting for more would only delay it.
        self.poll_with(s, QueueKey::Default, timeout, Duration::ZERO, look)
            .await
    }

    /// `/events`: acknowledges up to `ack`, then returns up to 100 events, parking while there are none.
    pub async fn poll_queue(
        &self,
        s: SessionHandle,
        queue_id: &str,
        ack: u64,
        timeout: Duration,
    ) -> Result<Vec<Delivered>, BadQueue> {
        let look = |queue: &mut EventQueue| {
            if queue.lost {
                return Look::Discard(Err(BadQueue));
            }
            queue.acknowledge(ack);
            if queue.events.is_empty() {
                return Look::Wait;
            }
            // Events stay queued until acknowledged, so a lost response is sent again.
            Look::Reply(Ok(queue.batch(BATCH_LIMIT)))
        };
        self.poll_with(
            s,
            QueueKey::Explicit(queue_id),
            timeout,
            self.batch_delay,
            look,
        )
        .await
    }

    /// Whether the session has a poll parked right now; it counts as active.
    pub fn is_parked(&self, s: SessionHandle) -> bool {
        self.lock()
            .sessions
            .get(&s)
            .is_some_and(|queues| queues.iter().any(|queue| queue.parked.is_some()))
    }

    /// Deletes explicit queues not polled for `idle` and without a parked poll; returns how many.
    pub fn expire_idle_queues(&self, idle: Duration) -> usize {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut removed = 0;
        for queues in inner.sessions.values_mut() {
            let before = queues.explicit.len();
            queues.explicit.retain(|_, queue| {
                queue.parked.is_some() || now.duration_since(queue.last_used) < idle
            });
            removed += before - queues.explicit.len();
        }
        removed
    }

    /// Ends every parked poll with an empty reply; later polls return empty at once.
    pub fn shutdown(&self) {
        let mut inner = self.lock();
        inner.shut_down = true;
        for queues in inner.sessions.values() {
            queues.wake_all();
        }
    }

    /// Current counters.
    pub fn stats(&self) -> HubStats {
        let inner = self.lock();
        let queues = || inner.sessions.values().flat_map(SessionQueues::iter);
        HubStats {
            sessions: inner.sessions.len(),
            queues: queues().count(),
            explicit_queues: inner.sessions.values().map(|q| q.explicit.len()).sum(),
            buffered: queues().map(|queue| queue.events.len()).sum(),
            parked: queues().filter(|queue| queue.parked.is_some()).count(),
            delivered: inner.counters.delivered,
            overflowed: inner.counters.overflowed,
            evicted: inner.counters.evicted,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent between statements, so a panic elsewhere must not stop delivery.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shared body of both polls: look, else park until woken, superseded or timed out.
    /// A poll woken by an event waits `linger` (within `timeout`) before it looks again.
    async fn poll_with<R: PollOutcome>(
        &self,
        s: SessionHandle,
        key: QueueKey<'_>,
        timeout: Duration,
        linger: Duration,
        mut look: impl FnMut(&mut EventQueue) -> Look<R>,
    ) -> R {
        let (inner, notify, ticket) = match Self::begin_poll(self.lock(), s, &key, &mut look) {
            Ok(parking) => parking,
            Err(reply) => return reply,
        };
        // Clears the parked mark however the poll ends, cancellation included.
        let _parked = ParkedPoll {
            hub: self,
            session: s,
            key: &key,
            ticket,
        };
        // Enabled under the lock, so an event pushed right after unlocking still wakes it.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        drop(inner);
        let sleep = tokio::time::sleep(timeout);
        tokio::pin!(sleep);
        let mut lingered = linger.is_zero();
        loop {
            tokio::select! {
                // An event that arrived together with the deadline is still handed out.
                biased;
                () = &mut notified => {}
                () = &mut sleep => return R::quiet(),
            }
            // Only an event is worth waiting on: a newer poll, a closed session or shutdown answer now.
            if !lingered && self.lock().has_events_for(s, &key, ticket) {
                lingered = true;
                tokio::select! {
                    biased;
                    () = tokio::time::sleep(linger) => {}
                    () = &mut sleep => {}
                }
            }
            // A fresh guard per turn: one declared outside the loop would make the future !Send.
            let mut inner = self.lock();
            if let Some(reply) = inner.resume_poll(s, &key, ticket, &mut look) {
                // Unlock before `_parked` takes the lock again on drop.
                drop(inner);
                return reply;
            }
            notified.set(notify.notified());
            notified.as_mut().enable();
            drop(inner);
        }
    }

    /// First look at the queue; on `Wait` marks the poll parked and keeps the lock held.
    fn begin_poll<'g, R: PollOutcome>(
        mut inner: MutexGuard<'g, Inner>,
        s: SessionHandle,
        key: &QueueKey<'_>,
        look: &mut impl FnMut(&mut EventQueue) -> Look<R>,
    ) -> Result<Parking<'g>, R> {
        if inner.shut_down {
            return Err(R::quiet());
        }
        inner.next_ticket += 1;
        let ticket = inner.next_ticket;
        let stamp = inner.stamp();
        let Some(queue) = inner.queue_mut(s, key) else {
            return Err(R::unknown());
        };
        queue.last_used = Instant::now();
        queue.last_polled = stamp;
        match look(queue) {
            Look::Reply(reply) => Err(reply),
            Look::Discard(reply) => {
                inner.remove_queue(s, key);
                Err(reply)
            }
            Look::Wait => {
                // The newest poll wins: the one parked before it wakes, sees the new ticket, returns empty.
                queue.wake();
                queue.parked = Some(ticket);
                let notify = Arc::clone(&queue.notify);
                Ok((inner, notify, ticket))
            }
        }
    }
}

impl Inner {
    /// A new queue taking the events after `after`, or (`None`) those staged or delivered from now on.
    fn fresh_queue(&self, after: Option<u64>) -> EventQueue {
        let now = Instant::now();
        if self.positioned {
            EventQueue::after_position(after.unwrap_or(self.next_seq - 1), now)
        } else {
            EventQueue::new(1, now, self.next_seq)
        }
    }

    /// Registers session `s` with a default queue taking the events after `after` (`None`: from
    /// now on); does nothing if it exists.
    fn add_session(&mut self, s: SessionHandle, after: Option<u64>) {
        if !self.sessions.contains_key(&s) {
            let default = self.fresh_queue(after);
            self.sessions.insert(s, SessionQueues::new(default));
        }
    }

    /// Adds the explicit queue `id` to session `s`, first dropping queues beyond `per_session - 1`;
    /// returns its `last_event_id`, or `None` for an unknown session. An existing `id` stays as is.
    fn add_queue(
        &mut self,
        s: SessionHandle,
        id: String,
        types: EventTypes,
        after: Option<u64>,
        per_session: usize,
    ) -> Option<u64> {
        let existing = self.sessions.get(&s)?.explicit.get(&id);
        if let Some(existing) = existing {
            return Some(existing.next_id - 1);
        }
        let stamp = self.stamp();
        let mut queue = self.fresh_queue(after);
        let queues = self.sessions.get_mut(&s)?;
        let evicted = queues.evict_down_to(per_session - 1);
        if evicted > 0 {
            self.counters.evicted += evicted as u64;
            log::debug!(
                "session {s} opened more than {per_session} event queues; dropped its least recently polled one"
            );
        }
        queue.types = types;
        // Never polled yet: it ranks by when it was opened.
        queue.last_polled = stamp;
        let last_event_id = queue.next_id - 1;
        queues.explicit.insert(id, queue);
        Some(last_event_id)
    }

    fn is_lost(&self, epoch: u64) -> bool {
        self.lost
            .is_some_and(|(first, last)| (first..=last).contains(&epoch))
    }

    /// The next point in hub order for `EventQueue::last_polled`.
    fn stamp(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }

    /// Whether the poll holding `ticket` still owns its queue and has events to take.
    fn has_events_for(&mut self, s: SessionHandle, key: &QueueKey<'_>, ticket: u64) -> bool {
        !self.shut_down
            && self
                .queue_mut(s, key)
                .is_some_and(|queue| queue.parked == Some(ticket) && !queue.events.is_empty())
    }

    fn queue_mut(&mut self, s: SessionHandle, key: &QueueKey<'_>) -> Option<&mut EventQueue> {
        let queues = self.sessions.get_mut(&s)?;
        match key {
            QueueKey::Default => Some(&mut queues.default),
            QueueKey::Explicit(id) => queues.explicit.get_mut(*id),
        }
    }

    /// Deletes an explicit queue; the default queue lives as long as its session.
    fn remove_queue(&mut self, s: SessionHandle, key: &QueueKey<'_>) {
        let QueueKey::Explicit(id) = key else {
            return;
        };
        if let Some(queue) = self
            .sessions
            .get_mut(&s)
            .and_then(|queues| queues.explicit.remove(*id))
        {
            queue.wake();
        }
    }

    /// Looks again after a wake-up; `None` means keep waiting.
    fn resume_poll<R: PollOutcome>(
        &mut self,
        s: SessionHandle,
        key: &QueueKey<'_>,
        ticket: u64,
        look: &mut impl FnMut(&mut EventQueue) -> Look<R>,
    ) -> Option<R> {
        if self.shut_down {
            return Some(R::quiet());
        }
        let Some(queue) = self.queue_mut(s, key) else {
            // The session closed while parked: empty. Only the queue went (dropped for the
            // per-session cap, or deleted as lost by a newer poll): it is as unknown as a lost one.
            return Some(if self.sessions.contains_key(&s) {
                R::unknown()
            } else {
                R::quiet()
            });
        };
        if queue.parked != Some(ticket) {
            return Some(R::quiet());
        }
        match look(queue) {
            Look::Reply(reply) => Some(reply),
            Look::Discard(reply) => {
                self.remove_queue(s, key);
                Some(reply)
            }
            Look::Wait => None,
        }
    }

    /// Puts a released event into every queue of every target session that still exists.
    fn deliver(&mut self, staged: &Staged, capacity: usize) {
        let Inner {
            sessions,
            counters,
            resync,
            unread,
            ..
        } = self;
        // Positioned, a resync a queue holds takes the position of the event that caused it.
        let position = staged.event.position;
        let mut resync = Resync::new(resync, position);
        let mut unread = Resync::new(unread, position);
        for s in &staged.targets {
            let Some(queues) = sessions.get_mut(s) else {
                continue;
            };
            // A queue opened after the event was staged (a new tab, a session back online)
            // starts after it, however late the event became durable.
            if !staged.explicit_only && queues.default.opened <= staged.seq {
                if queues.default_is_unread() {
                    // Not an overflow: nobody lost anything they were reading.
                    queues.default.hold_resync_only(&mut unread);
                } else {
                    let default = queues
                        .default
                        .push(&staged.event, capacity, Some(&mut resync));
                    counters.record(default, &mut queues.default, *s, "default");
                }
            }
            for queue in queues.explicit.values_mut() {
                if queue.opened > staged.seq || !queue.types.admits(staged.kind) {
                    continue;
                }
                let outcome = queue.push(&staged.event, capacity, None);
                // Never log the queue id: it is what makes the queue unguessable.
                counters.record(outcome, queue, *s, "explicit");
            }
        }
    }
}

impl Counters {
    /// Counts a push, and warns the first time a queue overflows.
    fn record(&mut self, outcome: Push, queue: &mut EventQueue, s: SessionHandle, kind: &str) {
        match outcome {
            Push::Added => self.delivered += 1,
            Push::Overflowed => {
                self.overflowed += 1;
                if !queue.warned {
                    queue.warned = true;
                    log::warn!(
                        "{kind} event queue of session {s} overflowed; its events were dropped and the client must resync"
                    );
                }
            }
            Push::Ignored => {}
        }
    }
}
