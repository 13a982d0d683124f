//! Sessions and presence: log in, rotate, log out, and the inactivity sweeper (docs/design.md, Sessions and presence).

use super::lookalike;
use super::state::State;
use super::{Outbox, Service};
use crate::auth::cookie::CookieSigner;
use crate::config::PresenceScope;
use crate::error::ApiError;
use crate::events::{ChatLeaveEvent, Event, PresenceEvent, SystemMessageEvent};
use crate::model::{UserName, UserStatus, UserWithStatus, now};
use crate::store::{ChatRecord, SessionRecord};
use std::time::{Duration, Instant};

/// The session behind an authenticated request.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub handle: u64,
    pub token_hash: [u8; 32],
    pub user: String,
    pub user_key: String,
    pub guest: bool,
}

/// A login's answer: the user's status and the cookie value to set.
pub struct Issued {
    pub user: UserWithStatus,
    pub cookie_value: String,
}

impl Service {
    /// Finds the session of a cookie hash; with `need_online`, offline sessions are refused.
    /// Counts as activity for online sessions.
    pub fn authenticate(
        &self,
        hash: &[u8; 32],
        need_online: bool,
    ) -> Result<SessionInfo, ApiError> {
        let mut st = self.lock();
        let session = st.sessions.get(hash).ok_or(ApiError::NotLoggedIn)?;
        if session.expires <= now() || (need_online && !session.online) {
            return Err(ApiError::NotLoggedIn);
        }
        let info = SessionInfo {
            handle: session.handle,
            token_hash: session.token_hash,
            user: session.user.clone(),
            user_key: session.user_key.clone(),
            guest: session.guest,
        };
        if session.online {
            st.activity.insert(info.handle, Instant::now());
        }
        Ok(info)
    }

    /// Marks a session active (a long poll that was parked until now).
    pub fn touch(&self, handle: u64) {
        let mut st = self.lock();
        if let Some(seen) = st.activity.get_mut(&handle) {
            *seen = Instant::now();
        }
    }

    /// `POST /api/login`: a guest session for a free, unregistered name.
    pub async fn guest_login(
        &self,
        signer: &CookieSigner,
        raw_name: &str,
    ) -> Result<Issued, ApiError> {
        if !self.config.allow_guests {
            return Err(ApiError::GuestsDisabled);
        }
        let name = UserName::parse(raw_name)?;
        let key = name.key();
        let token = signer.issue()?;
        // Read before the lock (a round trip with PostgreSQL); an account registered meanwhile
        // is in `accounts` by the time the lock is ours.
        let registered = self.store.user(&key)?.is_some();
        let epoch = {
            let mut st = self.lock();
            if st.is_blocked(name.as_str(), Instant::now()) {
                return Err(ApiError::NameBlocked);
            }
            if registered || st.accounts.holds(name.as_str()) {
                return Err(ApiError::NameRegistered);
            }
            let online = st.online.contains_key(&key) || st.online_names.holds(name.as_str());
            if online || self.is_bot_name(name.as_str()) {
                return Err(ApiError::AlreadyLoggedIn);
            }
            let record = self.new_session(&mut st, token.hash, name.as_str(), &key, true)?;
            self.store.put_session(&record)?;
            let events = self.bring_online(&mut st, record, UserStatus::default());
            self.publish(events)
        };
        self.durable(epoch).await?;
        Ok(Issued {
            user: UserWithStatus::new(name.as_str(), UserStatus::default()),
            cookie_value: token.cookie_value,
        })
    }

    /// Opens a new session for a registered user whose password was checked against
    /// `checked_hash`. Refused if the password changed meanwhile (a reset wins); `upgraded`
    /// replaces the hash with a stronger one of the same password.
    pub(super) async fn registered_login(
        &self,
        signer: &CookieSigner,
        key: &str,
        checked_hash: &str,
        upgraded: Option<String>,
    ) -> Result<Issued, ApiError> {
        let token = signer.issue()?;
        let mut events = Vec::new();
        let (epoch, result) = {
            let mut st = self.lock();
            let result = self.open_registered_session(
                &mut st,
                key,
                checked_hash,
                upgraded,
                token.hash,
                &mut events,
            );
            (self.publish(events), result)
        };
        let user = result?;
        self.durable(epoch).await?;
        Ok(Issued {
            user,
            cookie_value: token.cookie_value,
        })
    }

    fn open_registered_session(
        &self,
        st: &mut State,
        key: &str,
        checked_hash: &str,
        upgraded: Option<String>,
        token_hash: [u8; 32],
        events: &mut Outbox,
    ) -> Result<UserWithStatus, ApiError> {
        let mut user = self
            .store
            .user(key)?
            .filter(|u| u.password_hash == checked_hash)
            .ok_or(ApiError::WrongCredentials)?;
        if !user.verified {
            return Err(ApiError::EmailNotVerified);
        }
        // A kicked guest must not come back through an account with a name like theirs.
        if st.is_blocked(&user.name, Instant::now()) {
            return Err(ApiError::NameBlocked);
        }
        if let Some(hash) = upgraded {
            user.password_hash = hash;
            self.store.update_user(&user, None)?;
            log::info!(
                "rehashed the password of {} with {} rounds",
                user.name,
                self.config.password_iterations
            );
        }
        self.make_room_for_session(st, key, events)?;
        let status = super::user_status(&user);
        let record = self.new_session(st, token_hash, &user.name, key, false)?;
        self.store.put_session(&record)?;
        events.extend(self.bring_online(st, record, status));
        Ok(UserWithStatus::new(&user.name, status))
    }

    /// `POST /api/loggedonly/login`: a fresh cookie for the same session, which keeps its queues
    /// and chats; an offline session comes back online.
    pub async fn session_login(
        &self,
        signer: &CookieSigner,
        session: &SessionInfo,
    ) -> Result<Issued, ApiError> {
        let status = self.status_of(&session.user_key, session.guest)?;
        let token = signer.issue()?;
        let epoch = {
            let mut st = self.lock();
            let mut record = st
                .sessions
                .get(&session.token_hash)
                .cloned()
                .ok_or(ApiError::NotLoggedIn)?;
            let was_online = record.online;
            let old_hash = record.token_hash;
            record.token_hash = token.hash;
            record.online = true;
            self.store.replace_session(&old_hash, &record)?;
            st.sessions.remove(&old_hash);
            let events = if was_online {
                st.insert_session(record, status, Instant::now());
                Vec::new()
            } else {
                self.bring_online(&mut st, record, status)
            };
            self.publish(events)
        };
        self.durable(epoch).await?;
        Ok(Issued {
            user: UserWithStatus::new(&session.user, status),
            cookie_value: token.cookie_value,
        })
    }

    /// `POST /api/loggedonly/logout`: ends the session; the last one cascades.
    pub async fn logout(&self, session: &SessionInfo) -> Result<(), ApiError> {
        let mut events = Vec::new();
        let (epoch, result) = {
            let mut st = self.lock();
            let result = self.take_offline(&mut st, session.handle, true, &mut events);
            (self.publish(events), result)
        };
        result?;
        self.durable(epoch).await
    }

    /// `POST /api/adminonly/kick`: ends the sessions of the online guests whose names look like
    /// `raw_name` (the logout cascade) and blocks those names and their look-alikes, in any case,
    /// for `guest_block`.
    pub async fn kick(&self, session: &SessionInfo, raw_name: &str) -> Result<(), ApiError> {
        let mut events = Vec::new();
        let (epoch, result) = {
            let mut st = self.lock_online(session)?;
            // Matched by look, so the admin hits the guest whose name they read.
            let kicked: Vec<(u64, String)> = st
                .sessions
                .values()
                .filter(|s| s.guest && lookalike::alike(&s.user, raw_name))
                .map(|s| (s.handle, s.user.clone()))
                .collect();
            if kicked.is_empty() {
                return Err(ApiError::NoSuchGuest);
            }
            let (instant, secs) = (Instant::now(), now());
            for (_, name) in &kicked {
                st.blocked
                    .block(name, instant, secs, self.config.guest_block);
            }
            // Stored, so a restart does not let the kicked guest straight back in.
            self.store.save_blocks(&st.blocked.stored(secs))?;
            let guests = kicked.into_iter().map(|(handle, _)| handle);
            let result = guests
                .into_iter()
                .try_for_each(|h| self.take_offline(&mut st, h, true, &mut events));
            (self.publish(events), result)
        };
        result?;
        self.durable(epoch).await
    }

    /// Ends every session of a user (password reset, account deletion), adding to `events`
    /// what it applied even when a later session fails.
    pub(super) fn end_all_sessions(
        &self,
        st: &mut State,
        user_key: &str,
        events: &mut Outbox,
    ) -> Result<(), ApiError> {
        for handle in st.sessions_of(user_key) {
            self.take_offline(st, handle, true, events)?;
        }
        Ok(())
    }

    /// Ends the oldest sessions of a registered user so that one more fits under
    /// `max_sessions_per_user`.
    pub(super) fn make_room_for_session(
        &self,
        st: &mut State,
        user_key: &str,
        events: &mut Outbox,
    ) -> Result<(), ApiError> {
        let mut sessions: Vec<(i64, u64)> = st
            .sessions_of(user_key)
            .into_iter()
            .filter_map(|h| st.session_by_handle(h))
            .map(|s| (s.created, s.handle))
            .collect();
        let allowed = self.config.max_sessions_per_user.saturating_sub(1);
        if sessions.len() <= allowed {
            return Ok(());
        }
        sessions.sort_unstable();
        let excess = sessions.len() - allowed;
        for (_, handle) in sessions.into_iter().take(excess) {
            self.take_offline(st, handle, true, events)?;
        }
        Ok(())
    }

    fn new_session(
        &self,
        st: &mut State,
        hash: [u8; 32],
        name: &str,
        key: &str,
        guest: bool,
    ) -> Result<SessionRecord, ApiError> {
        let max_age = i64::try_from(self.config.session_max_age.as_secs()).unwrap_or(i64::MAX);
        Ok(SessionRecord {
            token_hash: hash,
            handle: u64::from_le_bytes(crate::auth::random_bytes()?),
            user: name.to_owned(),
            user_key: key.to_owned(),
            guest,
            created: st.next_session_stamp(),
            expires: now().saturating_add(max_age),
            online: true,
        })
    }

    /// Registers an online session; a user coming online is announced to their presence audience.
    fn bring_online(&self, st: &mut State, record: SessionRecord, status: UserStatus) -> Outbox {
        let was_online = st.online.contains_key(&record.user_key);
        let name = record.user.clone();
        let record_key = record.user_key.clone();
        // With several nodes the log opens it, at the change's place (`cluster`).
        if !self.config.cluster {
            self.hub.open_session(record.handle);
        }
        st.insert_session(record, status, Instant::now());
        if was_online {
            return Vec::new();
        }
        let event = Event::Login(PresenceEvent {
            user: name,
            chat: String::new(),
            time: now(),
        });
        let audience = match self.config.presence_scope {
            PresenceScope::Everyone => st.everyone(),
            PresenceScope::SharedChats => st.shared_chats_audience(&record_key),
        };
        vec![(audience, event)]
    }

    /// A user's last session went offline: tell their presence audience, then leave `chats`,
    /// whose memberships the store has already ended.
    fn offline_cascade(
        &self,
        st: &mut State,
        user_key: &str,
        name: &str,
        chats: Vec<ChatRecord>,
    ) -> Outbox {
        let time = now();
        let audience = match self.config.presence_scope {
            PresenceScope::Everyone => st.everyone_except(user_key),
            PresenceScope::SharedChats => st.shared_chats_audience(user_key),
        };
        let mut events: Outbox = vec![(
            audience,
            Event::Logout(PresenceEvent {
                user: name.to_owned(),
                chat: String::new(),
                time,
            }),
        )];
        for chat in chats {
            st.remove_member(chat.id, user_key);
            events.extend(leave_events(st, chat.id, &chat.name, name, time));
        }
        events
    }

    /// One sweeper pass: idle sessions go offline, expired ones end, idle queues are deleted.
    pub async fn sweep(&self) -> Result<(), ApiError> {
        if self.config.cluster {
            return self.sweep_shared().await;
        }
        // None only in the first `inactivity_timeout` after boot, when nothing can be that idle.
        let cutoff = Instant::now().checked_sub(self.config.inactivity_timeout);
        self.sweep_idle_since(cutoff).await
    }

    /// A sweeper pass that takes offline the sessions with no activity since `cutoff` (none
    /// when `None`) and not parked on a poll. Tests sweep through it without waiting.
    pub async fn sweep_idle_since(&self, cutoff: Option<Instant>) -> Result<(), ApiError> {
        self.end_sessions(|st| {
            // Only the idle few are looked up in the hub, not every online session.
            st.activity
                .iter()
                .filter(|(_, seen)| cutoff.is_some_and(|c| **seen < c))
                .map(|(h, _)| *h)
                .filter(|h| !self.hub.is_parked(*h))
                .collect()
        })
        .await
    }

    /// Takes offline the sessions `idle` picks and ends the expired ones, then deletes idle
    /// explicit queues.
    pub(super) async fn end_sessions(
        &self,
        idle: impl FnOnce(&State) -> Vec<u64>,
    ) -> Result<(), ApiError> {
        let (epoch, result) = {
            let mut st = self.lock();
            let now_secs = now();
            let idle = idle(&st);
            let expired: Vec<u64> = st
                .sessions
                .values()
                .filter(|s| s.expires <= now_secs)
                .map(|s| s.handle)
                .collect();
            let ending = idle
                .into_iter()
                .map(|h| (h, false))
                .chain(expired.into_iter().map(|h| (h, true)));
            let mut events = Vec::new();
            let result = ending
                .into_iter()
                .try_for_each(|(h, end)| self.take_offline(&mut st, h, end, &mut events));
            // What was applied is published even if a later session failed (never dropped).
            (self.publish(events), result)
        };
        let expired_queues = self
            .hub
            .expire_idle_queues(self.config.event_queue_idle_timeout);
        if expired_queues > 0 {
            log::debug!("deleted {expired_queues} idle event queues");
        }
        result?;
        self.durable(epoch).await
    }

    /// Takes one session offline; guests and `end`ed sessions are deleted, others stay valid.
    /// Memory and queues change only after the store has taken the whole change.
    pub(super) fn take_offline(
        &self,
        st: &mut State,
        handle: u64,
        end: bool,
        events: &mut Outbox,
    ) -> Result<(), ApiError> {
        let Some(record) = st.session_by_handle(handle).cloned() else {
            return Ok(());
        };
        let last = record.online
            && st
                .online
                .get(&record.user_key)
                .is_some_and(|u| u.sessions.len() == 1 && u.sessions.contains(&handle));
        let leaving = if last {
            st.chats_of(&record.user_key)
        } else {
            Vec::new()
        };
        let kept = (!end && !record.guest).then(|| SessionRecord {
            online: false,
            ..record.clone()
        });
        let chat_ids: Vec<u64> = leaving.iter().map(|c| c.id).collect();
        self.store.take_offline(
            &record.token_hash,
            kept.as_ref(),
            &record.user_key,
            &chat_ids,
        )?;
        if kept.is_some() {
            st.set_offline(handle);
        } else {
            st.remove_session(handle);
        }
        self.hub.close_session(handle);
        if last {
            events.extend(self.offline_cascade(st, &record.user_key, &record.user, leaving));
        }
        Ok(())
    }

    /// Runs `sweep` every quarter of `inactivity_timeout` (at most every 5 s) until dropped.
    pub async fn run_sweeper(self: std::sync::Arc<Self>) {
        let period = self.sweep_period();
        let mut ticker = tokio::time::interval(period.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.sweep().await {
                // Storage is down: the store logged it once, and the next pass retries.
                Ok(()) | Err(ApiError::Unavailable) => {}
                Err(e) => log::warn!("presence sweep failed: {}", e.message()),
            }
        }
    }

    /// How often the sweeper runs: a quarter of `inactivity_timeout`, at most 5 s.
    pub(super) fn sweep_period(&self) -> Duration {
        (self.config.inactivity_timeout / 4).min(Duration::from_secs(5))
    }

    /// Whether `name` is the bot's name or looks like it.
    pub(super) fn is_bot_name(&self, name: &str) -> bool {
        self.config.bot.enabled && lookalike::alike(name, &self.config.bot.name)
    }
}

/// `ChatLeaveEvent` then `SystemMessageChatLeaveEvent`, to the chat's remaining members.
pub(super) fn leave_events(st: &State, chat_id: u64, chat: &str, user: &str, time: i64) -> Outbox {
    let audience = st.chat_audience(chat_id);
    vec![
        (
            audience.clone(),
            Event::ChatLeave(ChatLeaveEvent {
                user: user.to_owned(),
                chat: chat.to_owned(),
                time,
            }),
        ),
        (
            audience,
            Event::SystemMessageChatLeave(SystemMessageEvent {
                chat: chat.to_owned(),
                user: user.to_owned(),
                time,
            }),
        ),
    ]
}
