//! Delivery hub: holds events until their write is durable, then fills per-session queues,
//! hands events out with acknowledgement and wakes parked polls (SPEC 7.3, 7.4, 7.6).

use super::{EncodedEvent, Event, ResyncEvent};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Identifies a session to the hub; the domain service hands these out.
pub type SessionHandle = u64;

/// Most events one `/events` reply carries.
const BATCH_LIMIT: usize = 100;
/// Leading byte of every snapshot, bumped when its layout changes.
const SNAPSHOT_VERSION: u8 = 1;
/// Reason carried by the `ResyncEvent` a default queue gets after overflowing.
const OVERFLOW_REASON: &str = "event queue overflowed";

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

/// Bounds on what the hub holds (SPEC 7.4).
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
            capacity: 1000,
            queues_per_session: 16,
        }
    }
}

/// Per-session event queues, the events waiting for durability, and parked polls.
pub struct Hub {
    limits: HubLimits,
    inner: Mutex<Inner>,
}

struct Inner {
    sessions: HashMap<SessionHandle, SessionQueues>,
    staged: VecDeque<Staged>,
    released: u64,
    shut_down: bool,
    next_ticket: u64,
    /// Source of `EventQueue::last_polled`; a counter, so equal clock readings cannot tie.
    next_stamp: u64,
    counters: Counters,
    resync: Arc<EncodedEvent>,
}

#[derive(Default)]
struct Counters {
    delivered: u64,
    overflowed: u64,
    evicted: u64,
}

/// An event whose write is committed but maybe not yet on disk.
struct Staged {
    epoch: u64,
    targets: Vec<SessionHandle>,
    event: Arc<EncodedEvent>,
}

struct SessionQueues {
    default: EventQueue,
    explicit: HashMap<String, EventQueue>,
}

/// A poll about to park: the still-held lock, its queue's wake-up and its ticket.
type Parking<'g> = (MutexGuard<'g, Inner>, Arc<Notify>, u64);

/// Which queue of a session a poll reads.
enum QueueKey<'a> {
    Default,
    Explicit(&'a str),
}

struct EventQueue {
    next_id: u64,
    events: VecDeque<Delivered>,
    lost: bool,
    warned: bool,
    /// Last poll, for idle expiry.
    last_used: Instant,
    /// When it was last polled (or opened) in hub order, for the per-session cap.
    last_polled: u64,
    /// Ticket of the poll parked on this queue, if any.
    parked: Option<u64>,
    notify: Arc<Notify>,
}

/// What happened to an event offered to a queue.
enum Push {
    Added,
    Overflowed,
    Ignored,
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
        let resync = Event::Resync(ResyncEvent {
            reason: OVERFLOW_REASON.into(),
        });
        Hub {
            limits: HubLimits {
                // A queue must hold at least its ResyncEvent, and a session may open at least one queue.
                capacity: limits.capacity.max(1),
                queues_per_session: limits.queues_per_session.max(1),
            },
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                staged: VecDeque::new(),
                released: 0,
                shut_down: false,
                next_ticket: 0,
                next_stamp: 0,
                counters: Counters::default(),
                resync: Arc::new(resync.encode()),
            }),
        }
    }

    /// Registers an online session with an empty default queue; does nothing if it exists.
    pub fn open_session(&self, s: SessionHandle) {
        let now = Instant::now();
        self.lock()
            .sessions
            .entry(s)
            .or_insert_with(|| SessionQueues::new(now));
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

    /// Opens an explicit queue: `(queue id, last_event_id)`, or `None` for an unknown session.
    ///
    /// A session at `queues_per_session` first loses its least recently polled explicit queue:
    /// its events are freed, a poll parked on it returns `BadQueue`, and so do later polls.
    pub fn open_queue(&self, s: SessionHandle) -> Option<(String, u64)> {
        let id = new_queue_id()?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let stamp = inner.stamp();
        let queues = inner.sessions.get_mut(&s)?;
        let evicted = queues.evict_down_to(self.limits.queues_per_session - 1);
        if evicted > 0 {
            inner.counters.evicted += evicted as u64;
            log::debug!(
                "session {s} opened more than {} event queues; dropped its least recently polled one",
                self.limits.queues_per_session
            );
        }
        let mut queue = EventQueue::new(1, Instant::now());
        // Never polled yet: it ranks by when it was opened.
        queue.last_polled = stamp;
        let last_event_id = queue.next_id - 1;
        queues.explicit.insert(id.clone(), queue);
        Some((id, last_event_id))
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
        let staged = Staged {
            epoch,
            targets,
            event: Arc::new(event.encode()),
        };
        let mut inner = self.lock();
        // Already durable with nothing ahead of it: no later release may come to carry it.
        if inner.staged.is_empty() && epoch <= inner.released {
            inner.deliver(&staged, self.limits.capacity);
        } else {
            inner.staged.push_back(staged);
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
                    queue.events.front().cloned()
                }
                None => queue.events.pop_front(),
            };
            first.map_or(Look::Wait, |event| Look::Reply(PollReply::Event(event)))
        };
        self.poll_with(s, QueueKey::Default, timeout, look).await
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
            let batch = queue.events.iter().take(BATCH_LIMIT).cloned().collect();
            Look::Reply(Ok(batch))
        };
        self.poll_with(s, QueueKey::Explicit(queue_id), timeout, look)
            .await
    }

    /// Sessions with a poll parked right now; they count as active.
    pub fn parked_sessions(&self) -> HashSet<SessionHandle> {
        self.lock()
            .sessions
            .iter()
            .filter(|(_, queues)| queues.iter().any(|queue| queue.parked.is_some()))
            .map(|(s, _)| *s)
            .collect()
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
    async fn poll_with<R: PollOutcome>(
        &self,
        s: SessionHandle,
        key: QueueKey<'_>,
        timeout: Duration,
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
        loop {
            tokio::select! {
                // An event that arrived together with the deadline is still handed out.
                biased;
                () = &mut notified => {}
                () = &mut sleep => return R::quiet(),
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
    /// The next point in hub order for `EventQueue::last_polled`.
    fn stamp(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
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
        for s in &staged.targets {
            let Some(queues) = self.sessions.get_mut(s) else {
                continue;
            };
            let default = queues
                .default
                .push(&staged.event, capacity, Some(&self.resync));
            self.counters
                .record(default, &mut queues.default, *s, "default");
            for queue in queues.explicit.values_mut() {
                let outcome = queue.push(&staged.event, capacity, None);
                // Never log the queue id: it is what makes the queue unguessable.
                self.counters.record(outcome, queue, *s, "explicit");
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

impl SessionQueues {
    fn new(now: Instant) -> SessionQueues {
        SessionQueues {
            default: EventQueue::new(1, now),
            explicit: HashMap::new(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &EventQueue> {
        std::iter::once(&self.default).chain(self.explicit.values())
    }

    fn wake_all(&self) {
        self.iter().for_each(EventQueue::wake);
    }

    /// Drops explicit queues, first to go first, until at most `keep` remain; returns how many.
    fn evict_down_to(&mut self, keep: usize) -> usize {
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

    /// Explicit queues are written first to go first, so a restore under a lower cap keeps the rest.
    fn to_snapshot(&self, session: SessionHandle) -> SessionSnapshot {
        let mut explicit: Vec<(&String, &EventQueue)> = self.explicit.iter().collect();
        explicit.sort_by_key(|(_, queue)| queue.eviction_rank());
        SessionSnapshot {
            session,
            default: self.default.to_snapshot(),
            explicit: explicit
                .into_iter()
                .map(|(id, queue)| (id.clone(), queue.to_snapshot()))
                .collect(),
        }
    }
}

impl EventQueue {
    fn new(next_id: u64, now: Instant) -> EventQueue {
        EventQueue {
            next_id,
            events: VecDeque::new(),
            lost: false,
            warned: false,
            last_used: now,
            last_polled: 0,
            parked: None,
            notify: Arc::new(Notify::new()),
        }
    }

    /// Order in which the per-session cap drops explicit queues, lowest first: lost ones (their next
    /// poll fails anyway), then those without a parked poll (a parked poll is polling now), each
    /// group least recently polled first.
    fn eviction_rank(&self) -> (bool, bool, u64) {
        (!self.lost, self.parked.is_some(), self.last_polled)
    }

    /// Drops events the client confirmed it has.
    fn acknowledge(&mut self, ack: u64) {
        while self.events.front().is_some_and(|event| event.id <= ack) {
            self.events.pop_front();
        }
    }

    /// Appends an event; a full queue is emptied and either resyncs (`resync`) or is marked lost.
    fn push(
        &mut self,
        event: &Arc<EncodedEvent>,
        capacity: usize,
        resync: Option<&Arc<EncodedEvent>>,
    ) -> Push {
        if self.lost {
            return Push::Ignored;
        }
        let outcome = if self.events.len() >= capacity {
            // The event that overflowed is dropped too: the refetch after the resync covers it.
            // A new deque, not `clear`, so the full buffer's memory is returned as well.
            self.events = VecDeque::new();
            match resync {
                Some(resync) => self.append(resync),
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

    fn append(&mut self, event: &Arc<EncodedEvent>) {
        self.events.push_back(Delivered {
            id: self.next_id,
            event: Arc::clone(event),
        });
        self.next_id += 1;
    }

    fn wake(&self) {
        if self.parked.is_some() {
            self.notify.notify_waiters();
        }
    }

    fn to_snapshot(&self) -> QueueSnapshot {
        QueueSnapshot {
            next_id: self.next_id,
            lost: self.lost,
            events: self
                .events
                .iter()
                .map(|d| (d.id, d.event.kind.clone(), d.event.payload.get().to_owned()))
                .collect(),
        }
    }
}

/// Marks a parked poll; dropping it unparks, so a cancelled request does not stay "active".
struct ParkedPoll<'a> {
    hub: &'a Hub,
    session: SessionHandle,
    key: &'a QueueKey<'a>,
    ticket: u64,
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

/// Random, unguessable queue id: 128 bits from the OS, base64url.
fn new_queue_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    match getrandom::fill(&mut bytes) {
        Ok(()) => Some(URL_SAFE_NO_PAD.encode(bytes)),
        Err(e) => {
            log::error!("cannot read random bytes for a queue id: {e}");
            None
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    sessions: Vec<SessionSnapshot>,
}

#[derive(Serialize, Deserialize)]
struct SessionSnapshot {
    session: SessionHandle,
    default: QueueSnapshot,
    explicit: Vec<(String, QueueSnapshot)>,
}

#[derive(Serialize, Deserialize)]
struct QueueSnapshot {
    next_id: u64,
    lost: bool,
    /// `(id, type, payload JSON)`
    events: Vec<(u64, String, String)>,
}

/// Restored events shared across queues, keyed by type and payload.
type Interned = HashMap<(String, String), Arc<EncodedEvent>>;

fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, String> {
    let (version, body) = bytes
        .split_first()
        .ok_or_else(|| "empty event queue snapshot".to_owned())?;
    if *version != SNAPSHOT_VERSION {
        return Err(format!("unknown event queue snapshot version {version}"));
    }
    let (snapshot, read) =
        bincode::serde::decode_from_slice::<Snapshot, _>(body, bincode::config::standard())
            .map_err(|e| format!("bad event queue snapshot: {e}"))?;
    if read != body.len() {
        return Err("bad event queue snapshot: trailing bytes".to_owned());
    }
    Ok(snapshot)
}

/// A session's queues read back from a snapshot, explicit ones in snapshot order.
struct RestoredSession {
    default: EventQueue,
    explicit: Vec<(String, EventQueue)>,
}

impl SessionSnapshot {
    /// Keeps at most `max_explicit` explicit queues: the last ones, which were polled most recently.
    fn rebuild(
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
        Ok(RestoredSession { default, explicit })
    }
}

impl RestoredSession {
    /// Stamps the queues in hub order, keeping which was polled last.
    fn install(self, inner: &mut Inner) -> SessionQueues {
        let mut queues = SessionQueues {
            default: self.default,
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
    fn rebuild(self, now: Instant, interned: &mut Interned) -> Result<EventQueue, String> {
        if self.next_id == 0 {
            return Err("bad event queue snapshot: next id 0".to_owned());
        }
        let mut queue = EventQueue::new(self.next_id, now);
        queue.lost = self.lost;
        queue.warned = self.lost;
        let mut previous = 0;
        for (id, kind, payload) in self.events {
            // Ids must stay strictly increasing and below the next id, or acknowledgement breaks.
            if id <= previous || id >= self.next_id {
                return Err(format!(
                    "bad event queue snapshot: event id {id} out of order"
                ));
            }
            previous = id;
            let event = intern(interned, kind, payload)?;
            queue.events.push_back(Delivered { id, event });
        }
        Ok(queue)
    }
}

fn intern(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;

    const SHORT: Duration = Duration::from_millis(100);
    const LONG: Duration = Duration::from_secs(5);

    fn message(id: u64) -> Event {
        Event::Message(Message {
            user: "ann".into(),
            verified: false,
            admin: false,
            bot: false,
            chat: "general".into(),
            id,
            text: format!("text {id}"),
            time: 0,
        })
    }

    /// The chat message id carried by a delivered `MessageEvent`.
    fn message_id(delivered: &Delivered) -> u64 {
        assert_eq!(delivered.event.kind, "MessageEvent");
        let message: Message = serde_json::from_str(delivered.event.payload.get()).unwrap();
        message.id
    }

    fn message_ids(batch: &[Delivered]) -> Vec<u64> {
        batch.iter().map(message_id).collect()
    }

    fn queue_ids(batch: &[Delivered]) -> Vec<u64> {
        batch.iter().map(|d| d.id).collect()
    }

    /// Limits with `capacity` and the default queues per session.
    fn limits(capacity: usize) -> HubLimits {
        HubLimits {
            capacity,
            ..HubLimits::default()
        }
    }

    fn hub_with(capacity: usize, sessions: impl IntoIterator<Item = SessionHandle>) -> Arc<Hub> {
        let hub = Arc::new(Hub::new(limits(capacity)));
        for s in sessions {
            hub.open_session(s);
        }
        hub
    }

    /// Stages and releases one message at once.
    fn publish(hub: &Hub, targets: &[SessionHandle], id: u64) {
        hub.stage(0, targets.iter().copied(), &message(id));
        hub.release(0);
    }

    /// Everything in a queue right now, without waiting.
    async fn pending(hub: &Hub, s: SessionHandle, queue: &str) -> Vec<Delivered> {
        hub.poll_queue(s, queue, 0, Duration::ZERO).await.unwrap()
    }

    async fn wait_until_parked(hub: &Hub, s: SessionHandle) {
        while !hub.parked_sessions().contains(&s) {
            tokio::task::yield_now().await;
        }
    }

    async fn wait_until_parked_count(hub: &Hub, parked: usize) {
        while hub.stats().parked != parked {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn staged_events_stay_invisible_until_released() {
        let hub = hub_with(100, [1]);
        let (queue, _) = hub.open_queue(1).unwrap();
        hub.stage(5, [1], &message(1));
        hub.release(4);
        assert!(pending(&hub, 1, &queue).await.is_empty());
        assert!(matches!(
            hub.poll_default(1, Some(0), Duration::ZERO).await,
            PollReply::Empty
        ));
        hub.release(5);
        assert_eq!(message_ids(&pending(&hub, 1, &queue).await), [1]);
    }

    #[tokio::test]
    async fn release_keeps_staging_order_across_many_sessions() {
        let sessions: Vec<SessionHandle> = (1..=20).collect();
        let hub = hub_with(1000, sessions.iter().copied());
        let mut queues = Vec::new();
        for &s in &sessions {
            queues.push((s, hub.open_queue(s).unwrap().0));
        }
        // Several events per epoch, and each session gets a different subset.
        let mut expected: HashMap<SessionHandle, Vec<u64>> = HashMap::new();
        for id in 1..=60u64 {
            let targets: Vec<SessionHandle> =
                sessions.iter().copied().filter(|s| id % s < 3).collect();
            for &s in &targets {
                expected.entry(s).or_default().push(id);
            }
            hub.stage(id / 4 + 1, targets, &message(id));
        }
        // Repeated and lower values change nothing.
        for epoch in [3, 3, 1, 9, 2, 9, 16, 100] {
            hub.release(epoch);
        }
        for (s, queue) in &queues {
            let got = message_ids(&pending(&hub, *s, queue).await);
            assert_eq!(&got, expected.get(s).unwrap_or(&Vec::new()), "session {s}");
            let ids = queue_ids(&pending(&hub, *s, queue).await);
            assert_eq!(ids, (1..=got.len() as u64).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn release_stops_at_the_first_event_not_yet_durable() {
        let hub = hub_with(100, [1]);
        let (queue, _) = hub.open_queue(1).unwrap();
        hub.stage(1, [1], &message(1));
        hub.stage(3, [1], &message(2));
        hub.stage(2, [1], &message(3));
        hub.release(2);
        assert_eq!(message_ids(&pending(&hub, 1, &queue).await), [1]);
        hub.release(3);
        assert_eq!(message_ids(&pending(&hub, 1, &queue).await), [1, 2, 3]);
    }

    #[tokio::test]
    async fn event_staged_after_its_epoch_is_durable_is_delivered_at_once() {
        let hub = hub_with(100, [1]);
        let (queue, _) = hub.open_queue(1).unwrap();
        hub.release(7);
        hub.stage(6, [1], &message(1));
        assert_eq!(message_ids(&pending(&hub, 1, &queue).await), [1]);
    }

    #[tokio::test]
    async fn unknown_and_duplicate_targets_are_handled() {
        let hub = hub_with(100, [1]);
        let (queue, _) = hub.open_queue(1).unwrap();
        publish(&hub, &[1, 99, 1], 1);
        assert_eq!(message_ids(&pending(&hub, 1, &queue).await), [1]);
        assert_eq!(hub.stats().delivered, 2);
    }

    #[tokio::test]
    async fn default_poll_without_ack_removes_the_event() {
        let hub = hub_with(100, [1]);
        publish(&hub, &[1], 1);
        publish(&hub, &[1], 2);
        let PollReply::Event(first) = hub.poll_default(1, None, SHORT).await else {
            panic!("expected an event");
        };
        assert_eq!((first.id, message_id(&first)), (1, 1));
        let PollReply::Event(second) = hub.poll_default(1, None, SHORT).await else {
            panic!("expected an event");
        };
        assert_eq!((second.id, message_id(&second)), (2, 2));
        assert!(matches!(
            hub.poll_default(1, None, Duration::ZERO).await,
            PollReply::Empty
        ));
    }

    #[tokio::test]
    async fn default_poll_with_ack_resends_until_acknowledged() {
        let hub = hub_with(100, [1]);
        publish(&hub, &[1], 1);
        publish(&hub, &[1], 2);
        for _ in 0..2 {
            let PollReply::Event(event) = hub.poll_default(1, Some(0), SHORT).await else {
                panic!("expected an event");
            };
            assert_eq!((event.id, message_id(&event)), (1, 1));
        }
        let PollReply::Event(event) = hub.poll_default(1, Some(1), SHORT).await else {
            panic!("expected an event");
        };
        assert_eq!((event.id, message_id(&event)), (2, 2));
        assert!(matches!(
            hub.poll_default(1, Some(2), Duration::ZERO).await,
            PollReply::Empty
        ));
    }

    #[tokio::test]
    async fn explicit_queue_returns_batches_of_at_most_100_until_acknowledged() {
        let hub = hub_with(1000, [1]);
        let (queue, last) = hub.open_queue(1).unwrap();
        assert_eq!(last, 0);
        for id in 1..=150 {
            publish(&hub, &[1], id);
        }
        let batch = hub.poll_queue(1, &queue, 0, SHORT).await.unwrap();
        assert_eq!(queue_ids(&batch), (1..=100).collect::<Vec<_>>());
        // Not acknowledged yet: the same batch again.
        let again = hub.poll_queue(1, &queue, 0, SHORT).await.unwrap();
        assert_eq!(queue_ids(&again), queue_ids(&batch));
        let rest = hub.poll_queue(1, &queue, 100, SHORT).await.unwrap();
        assert_eq!(message_ids(&rest), (101..=150).collect::<Vec<_>>());
        assert!(
            hub.poll_queue(1, &queue, 150, Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn every_queue_of_a_session_gets_every_event() {
        let hub = hub_with(100, [1]);
        let (a, _) = hub.open_queue(1).unwrap();
        let (b, _) = hub.open_queue(1).unwrap();
        assert_ne!(a, b);
        publish(&hub, &[1], 1);
        publish(&hub, &[1], 2);
        assert_eq!(message_ids(&pending(&hub, 1, &a).await), [1, 2]);
        assert_eq!(message_ids(&pending(&hub, 1, &b).await), [1, 2]);
        assert!(matches!(
            hub.poll_default(1, Some(1), Duration::ZERO).await,
            PollReply::Event(Delivered { id: 2, .. })
        ));
        // One encoding shared by all queues.
        let first_a = &pending(&hub, 1, &a).await[0];
        let first_b = &pending(&hub, 1, &b).await[0];
        assert!(Arc::ptr_eq(&first_a.event, &first_b.event));
    }

    #[tokio::test]
    async fn parked_poll_wakes_when_an_event_is_released() {
        let hub = hub_with(100, [1]);
        let (queue, _) = hub.open_queue(1).unwrap();
        let started = Instant::now();
        let poll = tokio::spawn({
            let hub = Arc::clone(&hub);
            async move { hub.poll_queue(1, &queue, 0, LONG).await }
        });
        wait_until_parked(&hub, 1).await;
        assert_eq!(hub.parked_sessions(), HashSet::from([1]));
        hub.stage(1, [1], &message(7));
        hub.release(1);
        let batch = poll.await.unwrap().unwrap();
        assert_eq!(message_ids(&batch), [7]);
        assert!(started.elapsed() < LONG / 5);
        assert!(hub.parked_sessions().is_empty());
    }

    #[tokio::test]
    async fn parked_default_poll_wakes_when_an_event_is_released() {
        let hub = hub_with(100, [1]);
        let poll = tokio::spawn({
            let hub = Arc::clone(&hub);
            async move { hub.poll_default(1, None, LONG).await }
        });
        wait_until_parked(&hub, 1).await;
        publish(&hub, &[1], 3);
        let PollReply::Event(event) = poll.await.unwrap() else {
            panic!("expected an event");
        };
        assert_eq!(message_id(&event), 3);
    }

    #[tokio::test]
    async fn poll_times_out_empty() {
        let hub = hub_with(100, [1]);
        let (queue, _) = hub.open_queue(1).unwrap();
        let started = Instant::now();
        assert!(
            hub.poll_queue(1, &queue, 0, SHORT)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            hub.poll_default(1, None, SHORT).await,
            PollReply::Empty
        ));
        assert!(started.elapsed() >= 2 * SHORT);
        assert!(hub.parked_sessions().is_empty());
    }

    #[tokio::test]
    async fn newest_parked_poll_wins() {
        let hub = hub_with(100, [1]);
        let (queue, _) = hub.open_queue(1).unwrap();
        let spawn_poll = |hub: &Arc<Hub>| {
            let (hub, queue) = (Arc::clone(hub), queue.clone());
            tokio::spawn(async move { hub.poll_queue(1, &queue, 0, LONG).await })
        };
        let started = Instant::now();
        let older = spawn_poll(&hub);
        wait_until_parked(&hub, 1).await;
        let newer = spawn_poll(&hub);
        assert!(older.await.unwrap().unwrap().is_empty());
        assert!(started.elapsed() < LONG / 5);
        assert_eq!(hub.stats().parked, 1);
        publish(&hub, &[1], 1);
        assert_eq!(message_ids(&newer.await.unwrap().unwrap()), [1]);
    }

    #[tokio::test]
    async fn overflowed_explicit_queue_is_bad_and_deleted() {
        let hub = hub_with(3, [1]);
        let (queue, _) = hub.open_queue(1).unwrap();
        for id in 1..=3 {
            publish(&hub, &[1], id);
        }
        assert_eq!(pending(&hub, 1, &queue).await.len(), 3);
        publish(&hub, &[1], 4);
        // Default and explicit queue both overflowed.
        assert_eq!(hub.stats().overflowed, 2);
        assert_eq!(
            hub.poll_queue(1, &queue, 0, SHORT).await.unwrap_err(),
            BadQueue
        );
        assert_eq!(
            hub.poll_queue(1, &queue, 0, SHORT).await.unwrap_err(),
            BadQueue
        );
        assert_eq!(hub.stats().queues, 1);
    }

    #[tokio::test]
    async fn acknowledged_events_do_not_count_towards_capacity() {
        let hub = hub_with(3, [1]);
        let (queue, _) = hub.open_queue(1).unwrap();
        for id in 1..=3 {
            publish(&hub, &[1], id);
        }
        assert!(
            hub.poll_queue(1, &queue, 3, Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
        publish(&hub, &[1], 4);
        assert_eq!(message_ids(&pending(&hub, 1, &queue).await), [4]);
        assert_eq!(queue_ids(&pending(&hub, 1, &queue).await), [4]);
    }

    #[tokio::test]
    async fn overflowed_default_queue_resyncs_then_carries_on() {
        let hub = hub_with(3, [1]);
        for id in 1..=4 {
            publish(&hub, &[1], id);
        }
        assert_eq!(hub.stats().overflowed, 1);
        let PollReply::Event(resync) = hub.poll_default(1, Some(0), SHORT).await else {
            panic!("expected a ResyncEvent");
        };
        assert_eq!(resync.id, 4);
        assert_eq!(resync.event.kind, "ResyncEvent");
        assert_eq!(
            resync.event.payload.get(),
            r#"{"reason":"event queue overflowed"}"#
        );
        publish(&hub, &[1], 5);
        let PollReply::Event(next) = hub.poll_default(1, Some(4), SHORT).await else {
            panic!("expected an event");
        };
        assert_eq!((next.id, message_id(&next)), (5, 5));
    }

    #[tokio::test]
    async fn another_sessions_queue_id_is_bad() {
        let hub = hub_with(100, [1, 2]);
        let (queue, _) = hub.open_queue(1).unwrap();
        assert_eq!(
            hub.poll_queue(2, &queue, 0, SHORT).await.unwrap_err(),
            BadQueue
        );
        assert_eq!(
            hub.poll_queue(1, "no-such-queue", 0, SHORT)
                .await
                .unwrap_err(),
            BadQueue
        );
        assert!(hub.open_queue(3).is_none());
        assert!(matches!(
            hub.poll_default(3, None, LONG).await,
            PollReply::Empty
        ));
    }

    #[tokio::test]
    async fn queue_ids_are_random_base64url() {
        let hub = hub_with(100, [1]);
        let (a, _) = hub.open_queue(1).unwrap();
        let (b, _) = hub.open_queue(1).unwrap();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 16);
    }

    #[tokio::test]
    async fn closing_a_session_wakes_its_parked_polls() {
        let hub = hub_with(100, [1]);
        let (queue, _) = hub.open_queue(1).unwrap();
        let started = Instant::now();
        let explicit = tokio::spawn({
            let (hub, queue) = (Arc::clone(&hub), queue.clone());
            async move { hub.poll_queue(1, &queue, 0, LONG).await }
        });
        let default = tokio::spawn({
            let hub = Arc::clone(&hub);
            async move { hub.poll_default(1, None, LONG).await }
        });
        wait_until_parked_count(&hub, 2).await;
        hub.close_session(1);
        assert!(explicit.await.unwrap().unwrap().is_empty());
        assert!(matches!(default.await.unwrap(), PollReply::Empty));
        assert!(started.elapsed() < LONG / 5);
        assert!(!hub.has_session(1));
        assert_eq!(
            hub.poll_queue(1, &queue, 0, SHORT).await.unwrap_err(),
            BadQueue
        );
        assert_eq!(hub.stats().queues, 0);
    }

    #[tokio::test]
    async fn shutdown_wakes_parked_polls_and_later_polls_return_at_once() {
        let hub = hub_with(100, [1, 2]);
        let (queue, _) = hub.open_queue(1).unwrap();
        let started = Instant::now();
        let explicit = tokio::spawn({
            let (hub, queue) = (Arc::clone(&hub), queue.clone());
            async move { hub.poll_queue(1, &queue, 0, LONG).await }
        });
        let default = tokio::spawn({
            let hub = Arc::clone(&hub);
            async move { hub.poll_default(2, None, LONG).await }
        });
        wait_until_parked_count(&hub, 2).await;
        hub.shutdown();
        assert!(explicit.await.unwrap().unwrap().is_empty());
        assert!(matches!(default.await.unwrap(), PollReply::Empty));
        assert!(hub.poll_queue(1, &queue, 0, LONG).await.unwrap().is_empty());
        assert!(matches!(
            hub.poll_default(2, None, LONG).await,
            PollReply::Empty
        ));
        assert!(started.elapsed() < LONG / 5);
    }

    #[tokio::test]
    async fn idle_expiry_spares_default_queues_and_parked_polls() {
        let hub = hub_with(100, [1]);
        let (idle, _) = hub.open_queue(1).unwrap();
        let (busy, _) = hub.open_queue(1).unwrap();
        assert_eq!(hub.expire_idle_queues(Duration::from_secs(60)), 0);
        let poll = tokio::spawn({
            let (hub, busy) = (Arc::clone(&hub), busy.clone());
            async move { hub.poll_queue(1, &busy, 0, LONG).await }
        });
        wait_until_parked(&hub, 1).await;
        assert_eq!(hub.expire_idle_queues(Duration::ZERO), 1);
        assert_eq!(hub.stats().queues, 2);
        assert_eq!(
            hub.poll_queue(1, &idle, 0, SHORT).await.unwrap_err(),
            BadQueue
        );
        publish(&hub, &[1], 1);
        assert_eq!(message_ids(&poll.await.unwrap().unwrap()), [1]);
        assert_eq!(message_ids(&pending(&hub, 1, &busy).await), [1]);
    }

    #[tokio::test]
    async fn cancelled_poll_is_no_longer_parked() {
        let hub = hub_with(100, [1]);
        let poll = tokio::spawn({
            let hub = Arc::clone(&hub);
            async move { hub.poll_default(1, None, LONG).await }
        });
        wait_until_parked(&hub, 1).await;
        poll.abort();
        assert!(poll.await.unwrap_err().is_cancelled());
        assert!(hub.parked_sessions().is_empty());
        // The wake-up target is gone, so delivery still just queues.
        publish(&hub, &[1], 1);
        assert!(matches!(
            hub.poll_default(1, None, SHORT).await,
            PollReply::Event(Delivered { id: 1, .. })
        ));
    }

    #[tokio::test]
    async fn snapshot_restores_ids_and_undelivered_events_for_kept_sessions() {
        let hub = hub_with(100, [1, 2, 3]);
        let (queue, _) = hub.open_queue(1).unwrap();
        for id in 1..=3 {
            publish(&hub, &[1, 2, 3], id);
        }
        // Acknowledge one on each of session 1's queues.
        hub.poll_queue(1, &queue, 1, Duration::ZERO).await.unwrap();
        hub.poll_default(1, None, Duration::ZERO).await;
        let bytes = hub.snapshot();

        let restored = Hub::new(limits(100));
        assert_eq!(restored.restore(&bytes, |s| s != 3), Ok(3));
        assert!(restored.has_session(1) && restored.has_session(2));
        assert!(!restored.has_session(3));
        assert_eq!(
            queue_ids(&pending(&restored, 1, &queue).await),
            [2, 3],
            "explicit queue keeps its ids"
        );
        assert_eq!(message_ids(&pending(&restored, 1, &queue).await), [2, 3]);
        assert!(matches!(
            restored.poll_default(1, Some(0), SHORT).await,
            PollReply::Event(Delivered { id: 2, .. })
        ));
        // New events continue the ids, and restored copies of one event share memory.
        publish(&restored, &[1, 2], 4);
        let batch = pending(&restored, 1, &queue).await;
        assert_eq!(queue_ids(&batch), [2, 3, 4]);
        assert_eq!(message_ids(&batch), [2, 3, 4]);
        let PollReply::Event(first) = restored.poll_default(2, Some(0), SHORT).await else {
            panic!("expected an event");
        };
        assert_eq!((first.id, message_id(&first)), (1, 1));
        assert!(Arc::ptr_eq(&batch[0].event, &{
            let PollReply::Event(second) = restored.poll_default(2, Some(1), SHORT).await else {
                panic!("expected an event");
            };
            second.event
        }));
    }

    #[tokio::test]
    async fn snapshot_keeps_lost_explicit_queues_lost() {
        let hub = hub_with(1, [1]);
        let (queue, _) = hub.open_queue(1).unwrap();
        publish(&hub, &[1], 1);
        publish(&hub, &[1], 2);
        let restored = Hub::new(limits(1));
        assert_eq!(restored.restore(&hub.snapshot(), |_| true), Ok(2));
        assert_eq!(
            restored.poll_queue(1, &queue, 0, SHORT).await.unwrap_err(),
            BadQueue
        );
    }

    #[test]
    fn bad_snapshots_are_errors() {
        let hub = hub_with(100, [1]);
        hub.open_queue(1).unwrap();
        publish(&hub, &[1], 1);
        let bytes = hub.snapshot();
        let fresh = Hub::new(limits(100));
        assert!(fresh.restore(&[], |_| true).is_err());
        assert!(fresh.restore(&[SNAPSHOT_VERSION + 1], |_| true).is_err());
        assert!(fresh.restore(&bytes[..bytes.len() - 1], |_| true).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(fresh.restore(&trailing, |_| true).is_err());
        assert!(
            fresh
                .restore(&[SNAPSHOT_VERSION, 0xff, 0xff, 0xff], |_| true)
                .is_err()
        );
        assert_eq!(fresh.stats().sessions, 0);
        assert_eq!(fresh.restore(&bytes, |_| true), Ok(2));
    }

    #[test]
    fn snapshot_with_out_of_order_ids_is_an_error() {
        let snapshot = Snapshot {
            sessions: vec![SessionSnapshot {
                session: 1,
                default: QueueSnapshot {
                    next_id: 3,
                    lost: false,
                    events: vec![
                        (2, "MessageEvent".into(), "{}".into()),
                        (1, "MessageEvent".into(), "{}".into()),
                    ],
                },
                explicit: Vec::new(),
            }],
        };
        let mut bytes = vec![SNAPSHOT_VERSION];
        bytes
            .extend(bincode::serde::encode_to_vec(&snapshot, bincode::config::standard()).unwrap());
        assert!(Hub::new(limits(100)).restore(&bytes, |_| true).is_err());
    }

    #[test]
    fn stats_count_sessions_queues_and_deliveries() {
        let hub = hub_with(100, [1, 2]);
        hub.open_session(1);
        hub.open_queue(1).unwrap();
        publish(&hub, &[1, 2], 1);
        assert_eq!(
            hub.stats(),
            HubStats {
                sessions: 2,
                queues: 3,
                explicit_queues: 1,
                buffered: 3,
                parked: 0,
                delivered: 3,
                overflowed: 0,
                evicted: 0,
            }
        );
    }

    /// A hub whose sessions may open `cap` explicit queues.
    fn capped_hub(
        capacity: usize,
        cap: usize,
        sessions: impl IntoIterator<Item = SessionHandle>,
    ) -> Arc<Hub> {
        let hub = Arc::new(Hub::new(HubLimits {
            capacity,
            queues_per_session: cap,
        }));
        for s in sessions {
            hub.open_session(s);
        }
        hub
    }

    /// Which of `queues` still answer a poll.
    async fn alive(hub: &Hub, s: SessionHandle, queues: &[&str]) -> Vec<bool> {
        let mut alive = Vec::new();
        for queue in queues {
            alive.push(hub.poll_queue(s, queue, 0, Duration::ZERO).await.is_ok());
        }
        alive
    }

    #[tokio::test]
    async fn opening_one_queue_too_many_drops_the_least_recently_polled() {
        let hub = capped_hub(100, 3, [1, 2]);
        let (a, _) = hub.open_queue(1).unwrap();
        let (b, _) = hub.open_queue(1).unwrap();
        let (c, _) = hub.open_queue(1).unwrap();
        // Another session's queues neither count nor get dropped.
        let (other, _) = hub.open_queue(2).unwrap();
        publish(&hub, &[1], 1);
        // Polled order: b (never, so when opened), a, c.
        assert_eq!(message_ids(&pending(&hub, 1, &a).await), [1]);
        assert_eq!(message_ids(&pending(&hub, 1, &c).await), [1]);
        let (d, _) = hub.open_queue(1).unwrap();
        assert_eq!(hub.stats().explicit_queues, 4);
        assert_eq!(hub.stats().evicted, 1);
        assert_eq!(hub.poll_queue(1, &b, 0, SHORT).await.unwrap_err(), BadQueue);
        assert_eq!(message_ids(&pending(&hub, 1, &a).await), [1]);
        assert!(pending(&hub, 1, &d).await.is_empty());
        // Now c is the one polled longest ago.
        let (e, _) = hub.open_queue(1).unwrap();
        assert_eq!(
            alive(&hub, 1, &[&a, &b, &c, &d, &e]).await,
            [true, false, false, true, true]
        );
        assert_eq!(alive(&hub, 2, &[&other]).await, [true]);
        publish(&hub, &[1], 2);
        assert_eq!(message_ids(&pending(&hub, 1, &a).await), [1, 2]);
        assert_eq!(message_ids(&pending(&hub, 1, &e).await), [2]);
        assert_eq!(hub.stats().explicit_queues, 4);
    }

    #[tokio::test]
    async fn the_default_queue_is_never_dropped_for_the_cap() {
        let hub = capped_hub(100, 1, [1]);
        publish(&hub, &[1], 1);
        for _ in 0..5 {
            hub.open_queue(1).unwrap();
        }
        assert_eq!(hub.stats().queues, 2);
        assert_eq!(hub.stats().evicted, 4);
        let PollReply::Event(event) = hub.poll_default(1, None, SHORT).await else {
            panic!("the default queue kept its event");
        };
        assert_eq!((event.id, message_id(&event)), (1, 1));
    }

    #[tokio::test]
    async fn a_poll_parked_on_a_dropped_queue_returns_bad_queue() {
        let hub = capped_hub(100, 1, [1]);
        let (queue, _) = hub.open_queue(1).unwrap();
        let started = Instant::now();
        let poll = tokio::spawn({
            let (hub, queue) = (Arc::clone(&hub), queue.clone());
            async move { hub.poll_queue(1, &queue, 0, LONG).await }
        });
        wait_until_parked(&hub, 1).await;
        let (newer, _) = hub.open_queue(1).unwrap();
        assert_eq!(poll.await.unwrap().unwrap_err(), BadQueue);
        assert!(started.elapsed() < LONG / 5);
        assert_eq!(hub.stats().parked, 0);
        assert_eq!(
            hub.poll_queue(1, &queue, 0, SHORT).await.unwrap_err(),
            BadQueue
        );
        publish(&hub, &[1], 1);
        assert_eq!(message_ids(&pending(&hub, 1, &newer).await), [1]);
    }

    /// Whether a session still has an explicit queue, without polling (which counts as use).
    fn has_queue(hub: &Hub, s: SessionHandle, queue: &str) -> bool {
        hub.lock().sessions[&s].explicit.contains_key(queue)
    }

    #[tokio::test]
    async fn lost_queues_go_first_and_queues_with_a_parked_poll_last() {
        let hub = capped_hub(2, 3, [1]);
        let (parked, _) = hub.open_queue(1).unwrap();
        let (idle, _) = hub.open_queue(1).unwrap();
        let (lost, _) = hub.open_queue(1).unwrap();
        publish(&hub, &[1], 1);
        publish(&hub, &[1], 2);
        // `parked` and `idle` acknowledge both; `lost` is polled last but keeps them, then overflows.
        for queue in [&parked, &idle] {
            hub.poll_queue(1, queue, 2, Duration::ZERO).await.unwrap();
        }
        assert_eq!(pending(&hub, 1, &lost).await.len(), 2);
        publish(&hub, &[1], 3);
        assert!(hub.lock().sessions[&1].explicit[&lost].lost);
        let poll = tokio::spawn({
            let (hub, parked) = (Arc::clone(&hub), parked.clone());
            async move { hub.poll_queue(1, &parked, 3, LONG).await }
        });
        wait_until_parked_count(&hub, 1).await;
        // Polled longest ago: idle, lost, parked. The lost one goes all the same.
        let (newer, _) = hub.open_queue(1).unwrap();
        assert!(!has_queue(&hub, 1, &lost));
        assert!(has_queue(&hub, 1, &idle));
        // Next the idle one, then `newer`: the parked poll began before `newer` was opened, but
        // a queue with a parked poll is being polled right now.
        hub.open_queue(1).unwrap();
        assert!(!has_queue(&hub, 1, &idle));
        hub.open_queue(1).unwrap();
        assert!(!has_queue(&hub, 1, &newer));
        assert!(has_queue(&hub, 1, &parked));
        assert_eq!((hub.stats().parked, hub.stats().evicted), (1, 3));
        publish(&hub, &[1], 4);
        assert_eq!(message_ids(&poll.await.unwrap().unwrap()), [4]);
    }

    #[tokio::test]
    async fn an_overflowed_queue_frees_its_buffer() {
        let hub = hub_with(100, [1]);
        let (queue, _) = hub.open_queue(1).unwrap();
        for id in 1..=100 {
            publish(&hub, &[1], id);
        }
        let held = pending(&hub, 1, &queue).await.remove(0);
        // Our copy, the default queue's and the explicit queue's.
        assert_eq!(Arc::strong_count(&held.event), 3);
        publish(&hub, &[1], 101);
        assert_eq!(hub.stats().overflowed, 2);
        assert_eq!(Arc::strong_count(&held.event), 1);
        // The default queue holds just its ResyncEvent, the lost queue nothing at all.
        assert_eq!(hub.stats().buffered, 1);
        let inner = hub.lock();
        let queues = &inner.sessions[&1];
        assert!(queues.explicit[&queue].lost);
        assert_eq!(queues.explicit[&queue].events.capacity(), 0);
        assert!(queues.default.events.capacity() < 100);
    }

    #[tokio::test]
    async fn dropped_and_expired_queues_release_their_events() {
        let hub = capped_hub(100, 1, [1]);
        let (first, _) = hub.open_queue(1).unwrap();
        publish(&hub, &[1], 1);
        let held = pending(&hub, 1, &first).await.remove(0);
        assert_eq!(Arc::strong_count(&held.event), 3);
        let (second, _) = hub.open_queue(1).unwrap();
        assert_eq!(Arc::strong_count(&held.event), 2, "dropped for the cap");
        publish(&hub, &[1], 2);
        let held = pending(&hub, 1, &second).await.remove(0);
        assert_eq!(Arc::strong_count(&held.event), 3);
        assert_eq!(hub.expire_idle_queues(Duration::ZERO), 1);
        assert_eq!(Arc::strong_count(&held.event), 2, "expired");
        assert_eq!(hub.stats().buffered, 2);
    }

    #[tokio::test]
    async fn restore_under_a_lower_cap_keeps_the_most_recently_polled_queues() {
        let hub = capped_hub(100, 4, [1]);
        let mut queues = Vec::new();
        for _ in 0..4 {
            queues.push(hub.open_queue(1).unwrap().0);
        }
        let [a, b, c, d] = [&queues[0], &queues[1], &queues[2], &queues[3]];
        publish(&hub, &[1], 1);
        // Polled order: b, d, c, a.
        pending(&hub, 1, c).await;
        pending(&hub, 1, a).await;
        let bytes = hub.snapshot();

        let restored = Hub::new(HubLimits {
            capacity: 100,
            queues_per_session: 2,
        });
        assert_eq!(restored.restore(&bytes, |_| true), Ok(3));
        assert_eq!(
            alive(&restored, 1, &[a, b, c, d]).await,
            [true, false, true, false]
        );
        assert_eq!(message_ids(&pending(&restored, 1, a).await), [1]);
        // The order survives the restart: c was polled before a.
        let (e, _) = restored.open_queue(1).unwrap();
        assert_eq!(alive(&restored, 1, &[a, c, &e]).await, [true, false, true]);

        // Under the same cap every queue comes back.
        let same = Hub::new(HubLimits {
            capacity: 100,
            queues_per_session: 4,
        });
        assert_eq!(same.restore(&bytes, |_| true), Ok(5));
        assert_eq!(
            alive(&same, 1, &[a, b, c, d]).await,
            [true, true, true, true]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consumer_racing_a_producer_gets_every_event_in_order() {
        const COUNT: u64 = 2000;
        let hub = hub_with(COUNT as usize, [1]);
        let (queue, _) = hub.open_queue(1).unwrap();
        let started = Instant::now();
        let consumer = tokio::spawn({
            let hub = Arc::clone(&hub);
            async move {
                let (mut ack, mut seen) = (0, Vec::new());
                while ack < COUNT {
                    let batch = hub.poll_queue(1, &queue, ack, LONG).await.unwrap();
                    assert!(!batch.is_empty(), "a wake-up was lost");
                    ack = batch.last().map_or(ack, |d| d.id);
                    seen.extend(message_ids(&batch));
                }
                seen
            }
        });
        for id in 1..=COUNT {
            hub.stage(id, [1], &message(id));
            hub.release(id);
            if id % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(consumer.await.unwrap(), (1..=COUNT).collect::<Vec<_>>());
        assert!(started.elapsed() < LONG);
    }

    #[test]
    fn polls_can_run_on_a_multi_threaded_server() {
        fn assert_send<T: Send>(_: T) {}
        let hub = Hub::new(limits(1));
        assert_send(hub.poll_queue(1, "q", 0, SHORT));
        assert_send(hub.poll_default(1, None, SHORT));
    }
}
