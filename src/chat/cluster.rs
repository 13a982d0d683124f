//! One node of several on one PostgreSQL database (`cluster = true`, docs/design.md, Several
//! nodes): a change's events go to the shared log with it instead of this node's hub, and every
//! node applies what the log says, in its order: the other nodes' changes to memory, and every
//! change's events (this node's too) to the queues it holds, under the same ids everywhere.

use super::{Outbox, Service, SessionInfo, user_status};
use crate::error::ApiError;
use crate::events::EventTypes;
use crate::events::hub::PollReply;
use crate::model::{name_key, now};
use crate::store::SessionRecord;
use crate::store::changes::{Delta, Followed, Follower, LoggedEvent};
use state::State;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state;

/// Longest an answer waits for this node to read its own change back from the log.
const READ_BACK_LIMIT: Duration = Duration::from_secs(2);

impl Service {
    /// Writes a change's events to the shared log with it; returns the epoch they wait for.
    pub(super) fn seal_events(&self, events: Outbox) -> u64 {
        let logged = events
            .into_iter()
            .filter(|(targets, _)| !targets.is_empty())
            .map(|(mut targets, event)| {
                targets.sort_unstable();
                targets.dedup();
                let encoded = event.encode();
                LoggedEvent {
                    targets,
                    kind: encoded.kind,
                    payload: encoded.payload.get().to_owned(),
                }
            })
            .collect();
        // A refused seal leaves its epoch unsettled: `durable` then answers 503.
        self.store
            .seal(logged)
            .unwrap_or_else(|_| self.store.write_epoch())
    }

    /// Waits until this node has read its change with `epoch` back from the log, so the events
    /// are in its queues before the answer (as a single server releases them before it).
    pub(super) async fn read_back(&self, epoch: u64) {
        let mut applied = self.applied.subscribe();
        let _ =
            tokio::time::timeout(READ_BACK_LIMIT, applied.wait_for(|seen| *seen >= epoch)).await;
    }

    /// Applies changes read from the log, in its order (the tail's thread).
    pub fn apply_followed(&self, batch: Vec<Followed>) {
        let mut newest_own = None;
        {
            let mut st = self.lock_unsealed();
            for followed in batch {
                for delta in &followed.change.deltas {
                    // This node's own changes are in memory already, and closed their queues.
                    if !followed.own {
                        let closing = closing_handle(&st, delta);
                        self.apply_delta(&mut st, delta);
                        if let Some(handle) = closing {
                            self.hub.close_session(handle);
                        }
                    }
                    self.open_queues(delta, followed.position);
                }
                for (place, event) in (0u64..).zip(&followed.change.events) {
                    self.hub.deliver_encoded_at(
                        followed.position + place,
                        event.targets.iter().copied(),
                        event.kind.clone(),
                        event.payload.clone(),
                    );
                }
                if followed.own {
                    newest_own = Some(followed.epoch);
                }
            }
        }
        if let Some(epoch) = newest_own {
            self.applied.send_if_modified(|seen| {
                let newer = epoch > *seen;
                *seen = (*seen).max(epoch);
                newer
            });
        }
    }

    /// Another node's change to memory.
    fn apply_delta(&self, st: &mut State, delta: &Delta) {
        match delta {
            Delta::Session(record) => self.put_followed_session(st, record.clone()),
            Delta::SessionReplaced { old_hash, session } => {
                if let Some(old) = st.sessions.get(old_hash).map(|s| s.handle) {
                    st.remove_session(old);
                }
                self.put_followed_session(st, session.clone());
            }
            Delta::SessionDeleted(hash) => {
                if let Some(handle) = st.sessions.get(hash).map(|s| s.handle) {
                    st.remove_session(handle);
                }
            }
            Delta::Offline {
                token_hash,
                kept,
                user_key,
                leave,
            } => {
                if let Some(handle) = st.sessions.get(token_hash).map(|s| s.handle) {
                    if kept.is_some() {
                        st.set_offline(handle);
                    } else {
                        st.remove_session(handle);
                    }
                }
                for chat_id in leave {
                    st.remove_member(*chat_id, user_key);
                }
            }
            Delta::Chat(chat) => {
                st.chats.insert(name_key(&chat.name), chat.clone());
            }
            Delta::ChatRemoved(id) => {
                st.chats.retain(|_, chat| chat.id != *id);
                st.remove_chat_members(*id);
            }
            Delta::Member(member) => st.add_member(member.chat_id, &member.user_key, &member.user),
            Delta::MemberRemoved { chat_id, user_key } => st.remove_member(*chat_id, user_key),
            Delta::User(key) => match self.store.user(key) {
                Ok(Some(user)) => {
                    st.accounts.add(&user.name);
                    if let Some(online) = st.online.get_mut(key) {
                        online.status = user_status(&user);
                    }
                }
                Ok(None) => {}
                Err(e) => log::warn!("reading an account another node changed failed: {e}"),
            },
            Delta::UserDeleted(key) => st.accounts.remove(key),
            Delta::Blocks(blocks) => {
                st.blocked =
                    super::lookalike::Blocks::from_stored(blocks.clone(), Instant::now(), now());
            }
            Delta::QueueOpened { .. } => {}
        }
    }

    /// A session another node stored: it replaces what memory held under its handle.
    fn put_followed_session(&self, st: &mut State, record: SessionRecord) {
        if st.session_by_handle(record.handle).is_some() {
            st.remove_session(record.handle);
        }
        let status = self
            .status_of(&record.user_key, record.guest)
            .unwrap_or_default();
        st.insert_session(record, status, Instant::now());
    }

    /// Any node's change that opens queues: sessions and explicit queues open at the change's
    /// place in the log, so every node's queues take the same events.
    fn open_queues(&self, delta: &Delta, position: u64) {
        // They take the change's own events too (a session hears of its own sign-in).
        let after = position.saturating_sub(1);
        match delta {
            Delta::Session(record)
            | Delta::SessionReplaced {
                session: record, ..
            } if record.online => {
                self.hub.open_session_at(record.handle, after);
            }
            Delta::QueueOpened {
                handle,
                queue_id,
                types,
            } => {
                self.hub.open_queue_at(
                    *handle,
                    queue_id.clone(),
                    EventTypes::from_bits(*types),
                    after,
                );
            }
            _ => {}
        }
    }
}

/// The handle of a session another node's change takes offline or ends, read before memory
/// forgets it.
fn closing_handle(st: &State, delta: &Delta) -> Option<u64> {
    match delta {
        Delta::Offline { token_hash, .. } | Delta::SessionDeleted(token_hash) => {
            st.sessions.get(token_hash).map(|s| s.handle)
        }
        Delta::Session(record) if !record.online => Some(record.handle),
        _ => None,
    }
}

impl Service {
    /// One sweeper pass of a node: it reports the sessions it saw, and the node holding the
    /// sweeper's lock takes offline those no node has seen for `inactivity_timeout`.
    pub(super) async fn sweep_shared(&self) -> Result<(), ApiError> {
        self.report_activity();
        if !self.store.leads()? {
            self.hub
                .expire_idle_queues(self.config.event_queue_idle_timeout);
            return Ok(());
        }
        // A queue idle for less than its timeout can still be read on any node, from the log.
        let kept = self.config.event_queue_idle_timeout + self.config.inactivity_timeout;
        let kept = i64::try_from(kept.as_secs()).unwrap_or(i64::MAX);
        self.store.trim_log(now().saturating_sub(kept))?;
        let inactivity =
            i64::try_from(self.config.inactivity_timeout.as_secs()).unwrap_or(i64::MAX);
        let idle = self.store.idle_sessions(now().saturating_sub(inactivity))?;
        self.end_sessions(|st| {
            idle.into_iter()
                // Parked here is active; parked elsewhere was reported by that node.
                .filter(|h| !self.hub.is_parked(*h) && st.activity.contains_key(h))
                .collect()
        })
        .await
    }

    /// Tells the database which sessions this node saw in the last two sweeper periods: a
    /// request, or a poll parked here now.
    fn report_activity(&self) {
        let since = Instant::now().checked_sub(self.sweep_period() * 2);
        let seen: Vec<u64> = {
            let st = self.lock_unsealed();
            st.activity
                .iter()
                .filter(|(h, at)| since.is_none_or(|s| **at >= s) || self.hub.is_parked(**h))
                .map(|(h, _)| *h)
                .collect()
        };
        if seen.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_activity(&seen, now()) {
            log::debug!("reporting active sessions failed: {e}");
        }
    }
}

/// Longest a request that found memory behind the log waits for it to catch up.
const CATCH_UP_LIMIT: Duration = Duration::from_millis(500);

impl Service {
    /// Whether this server is one of several nodes on one database.
    pub fn clustered(&self) -> bool {
        self.config.cluster
    }

    /// Starts following the log with `follower` (once, at start).
    pub fn follow_with(&self, follower: Arc<dyn Follower>) {
        let _ = self.follower.set(follower);
    }

    /// Reads the log until a read that began after this call has finished: a request then sees
    /// every change another node answered before it came.
    pub async fn catch_up(&self) {
        let Some(follower) = self.follower.get() else {
            return;
        };
        let mut reads = follower.reads();
        // The next read to begin comes after this call; a failed read counts as begun only.
        let next = follower.begun() + 1;
        follower.read_now();
        let _ = tokio::time::timeout(CATCH_UP_LIMIT, reads.wait_for(|n| *n >= next)).await;
    }

    /// `POST /queues` on a node: the queue opens through the log, at the same place on every
    /// node; its first id is that place.
    pub(super) async fn open_queue_shared(
        &self,
        session: &SessionInfo,
        types: EventTypes,
    ) -> Result<(String, u64), ApiError> {
        let queue_id = crate::events::hub::new_queue_id().ok_or(ApiError::Internal)?;
        let epoch = {
            let _st = self.lock_online(session)?;
            self.store
                .open_queue(session.handle, &queue_id, types.bits())?;
            self.store.write_epoch()
        };
        self.durable(epoch).await?;
        let opened = self
            .hub
            .queue_start(session.handle, &queue_id)
            .ok_or(ApiError::Unavailable)?;
        Ok((queue_id, opened))
    }

    /// Legacy `/poll` without acknowledgement on a node: the event it hands out moves the
    /// session's shared position first, so two polls racing on two nodes never hand out the
    /// same event, and none is skipped.
    pub(super) async fn poll_default_shared(&self, session: &SessionInfo) -> PollReply {
        let deadline = tokio::time::Instant::now() + self.config.poll_timeout;
        loop {
            let Ok(seen) = self.store.poll_position(session.handle) else {
                return PollReply::Empty;
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let reply = self
                .hub
                .poll_default(session.handle, Some(seen), left)
                .await;
            let PollReply::Event(delivered) = reply else {
                return reply;
            };
            match self.store.claim_poll(session.handle, seen, delivered.id) {
                Ok(true) => {
                    self.hub.acknowledge_default(session.handle, delivered.id);
                    return PollReply::Event(delivered);
                }
                // Another node handed it out: look again from where it left the position.
                Ok(false) if !left.is_zero() => continue,
                _ => return PollReply::Empty,
            }
        }
    }
}

/// Longest a starting node waits to replay the log kept before it serves.
const REPLAY_LIMIT: Duration = Duration::from_secs(120);

impl Service {
    /// At start: waits until the log kept (`event_queue_idle_timeout` and more) has been read,
    /// so the queues hold what they hold on the other nodes, then opens the queues of sessions
    /// that came online before it.
    pub async fn replay_log(&self) -> Result<(), String> {
        let Some(follower) = self.follower.get() else {
            return Ok(());
        };
        let mut reads = follower.reads();
        let started = Instant::now();
        // The first read reads everything written before memory was loaded, and all since.
        tokio::time::timeout(REPLAY_LIMIT, reads.wait_for(|n| *n >= 1))
            .await
            .map_err(|_| "the shared log was not read within 120 s".to_owned())?
            .map_err(|_| "the shared log's reader stopped".to_owned())?;
        let st = self.lock_unsealed();
        for handle in st.activity.keys() {
            self.hub.open_session(*handle);
        }
        log::info!(
            "read the shared log in {} ms",
            started.elapsed().as_millis()
        );
        Ok(())
    }
}

/// Longest a node may go without reading the log before `/healthz` calls it unavailable: its
/// memory and queues stop following the other nodes.
const STALE_LOG: Duration = Duration::from_secs(10);

impl Service {
    /// Several nodes: this node's name, how long ago it last read the log, and whether that is
    /// recent enough to serve (`/healthz`).
    pub fn node_report(&self) -> Option<(String, Duration, bool)> {
        let follower = self.follower.get()?;
        let lag = follower.lag();
        Some((self.config.node(), lag, lag <= STALE_LOG))
    }
}
