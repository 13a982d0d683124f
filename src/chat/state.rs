//! The in-memory picture of who is online, which sessions exist and who is in which chat.
//! It mirrors what sled holds and is only changed together with the store, under one lock.

use super::lookalike::{Blocks, Index};
use crate::model::UserStatus;
use crate::store::{ChatRecord, SessionRecord};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

/// A user with at least one online session.
#[derive(Debug, Clone)]
pub struct OnlineUser {
    pub name: String,
    pub status: UserStatus,
    pub sessions: BTreeSet<u64>,
}

#[derive(Debug, Default)]
pub struct State {
    /// Every valid session, online or not, by token hash.
    pub sessions: HashMap<[u8; 32], SessionRecord>,
    /// Session handle → token hash (the handle survives cookie rotation).
    pub handles: HashMap<u64, [u8; 32]>,
    /// Last request of each online session.
    pub activity: HashMap<u64, Instant>,
    /// Online users by lowercased name.
    pub online: HashMap<String, OnlineUser>,
    /// Chats by lowercased name.
    pub chats: HashMap<String, ChatRecord>,
    /// Chat id → member key → member name as shown; private, so that only `add_member` and
    /// friends change it and `chats_by_member` stays in step.
    members: HashMap<u64, BTreeMap<String, String>>,
    /// Member key → ids of the chats they are in: a user's chats without a pass over all chats.
    chats_by_member: HashMap<String, BTreeSet<u64>>,
    /// User key → handles of their sessions, online or not: a user's sessions without a pass over
    /// everyone's.
    sessions_by_user: HashMap<String, BTreeSet<u64>>,
    /// Guest names an admin kicked, with their look-alikes, until their blocks end.
    pub blocked: Blocks,
    /// Registered names (verified or not), by look-alike key; built from the store at start.
    pub accounts: Index,
    /// Names of online users, guests and registered, by look-alike key.
    pub online_names: Index,
    /// The newest session's `created` stamp.
    pub newest_session: i64,
}

impl State {
    /// Every online session: the audience of global events.
    pub fn everyone(&self) -> Vec<u64> {
        self.activity.keys().copied().collect()
    }

    /// Every online session except those of `user_key`.
    pub fn everyone_except(&self, user_key: &str) -> Vec<u64> {
        let skip = self.online.get(user_key).map(|u| &u.sessions);
        self.activity
            .keys()
            .filter(|h| !skip.is_some_and(|s| s.contains(h)))
            .copied()
            .collect()
    }

    /// The online sessions of the users who share a chat with `user_key`, and `user_key`'s own:
    /// the audience of its presence events under `presence_scope = "shared_chats"`.
    pub fn shared_chats_audience(&self, user_key: &str) -> Vec<u64> {
        let mut audience: Vec<u64> = self
            .chats_by_member
            .get(user_key)
            .into_iter()
            .flatten()
            .flat_map(|chat_id| self.chat_audience(*chat_id))
            .chain(self.online_sessions_of(user_key))
            .collect();
        // The hub dedups too; doing it here keeps one Vec per event small.
        audience.sort_unstable();
        audience.dedup();
        audience
    }

    /// The online sessions of one user.
    pub fn online_sessions_of(&self, user_key: &str) -> Vec<u64> {
        self.online
            .get(user_key)
            .map(|u| u.sessions.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every session of one user, online or not.
    pub fn sessions_of(&self, user_key: &str) -> Vec<u64> {
        self.sessions_by_user
            .get(user_key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The keys of a chat's members.
    pub fn member_keys(&self, chat_id: u64) -> impl Iterator<Item = &String> {
        self.members
            .get(&chat_id)
            .into_iter()
            .flat_map(|m| m.keys())
    }

    /// The online sessions of a chat's members: O(members), not O(all sessions).
    pub fn chat_audience(&self, chat_id: u64) -> Vec<u64> {
        self.member_keys(chat_id)
            .filter_map(|key| self.online.get(key))
            .flat_map(|user| user.sessions.iter().copied())
            .collect()
    }

    pub fn is_member(&self, chat_id: u64, user_key: &str) -> bool {
        self.members
            .get(&chat_id)
            .is_some_and(|m| m.contains_key(user_key))
    }

    /// Chats `user_key` belongs to, sorted by name.
    pub fn chats_of(&self, user_key: &str) -> Vec<ChatRecord> {
        let Some(ids) = self.chats_by_member.get(user_key) else {
            return Vec::new();
        };
        let mut chats: Vec<ChatRecord> = self
            .chats
            .values()
            .filter(|c| ids.contains(&c.id))
            .cloned()
            .collect();
        chats.sort_by(|a, b| a.name.cmp(&b.name));
        chats
    }

    /// Makes `user_key` (shown as `name`) a member of a chat.
    pub fn add_member(&mut self, chat_id: u64, user_key: &str, name: &str) {
        self.members
            .entry(chat_id)
            .or_default()
            .insert(user_key.to_owned(), name.to_owned());
        self.chats_by_member
            .entry(user_key.to_owned())
            .or_default()
            .insert(chat_id);
    }

    /// Ends one membership.
    pub fn remove_member(&mut self, chat_id: u64, user_key: &str) {
        if let Some(members) = self.members.get_mut(&chat_id) {
            members.remove(user_key);
        }
        if let Some(chats) = self.chats_by_member.get_mut(user_key) {
            chats.remove(&chat_id);
            if chats.is_empty() {
                self.chats_by_member.remove(user_key);
            }
        }
    }

    /// Ends every membership of a removed chat.
    pub fn remove_chat_members(&mut self, chat_id: u64) {
        let keys: Vec<String> = self
            .members
            .get(&chat_id)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            self.remove_member(chat_id, &key);
        }
        self.members.remove(&chat_id);
    }

    /// Replaces every membership (a reload from the store).
    pub fn clear_members(&mut self) {
        self.members.clear();
        self.chats_by_member.clear();
    }

    /// All chats sorted by name.
    pub fn sorted_chats(&self) -> Vec<ChatRecord> {
        let mut chats: Vec<ChatRecord> = self.chats.values().cloned().collect();
        chats.sort_by(|a, b| a.name.cmp(&b.name));
        chats
    }

    /// Whether `name` looks like a kicked guest's name blocked at `now`.
    pub fn is_blocked(&mut self, name: &str, now: Instant) -> bool {
        self.blocked.blocks(name, now)
    }

    pub fn session_by_handle(&self, handle: u64) -> Option<&SessionRecord> {
        self.handles.get(&handle).and_then(|h| self.sessions.get(h))
    }

    /// A `created` stamp for a new session: now in Unix nanoseconds, but always above every
    /// session's so far, so that sessions opened within one clock tick (or after the clock
    /// stepped back) still order by opening.
    pub fn next_session_stamp(&mut self) -> i64 {
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let now = i64::try_from(nanos).unwrap_or(i64::MAX);
        self.newest_session = now.max(self.newest_session.saturating_add(1));
        self.newest_session
    }

    /// Adds a session to the maps; `online` sessions also join their user's online set.
    pub fn insert_session(&mut self, record: SessionRecord, status: UserStatus, now: Instant) {
        self.newest_session = self.newest_session.max(record.created);
        if record.online {
            self.activity.insert(record.handle, now);
            let mut came_online = false;
            self.online
                .entry(record.user_key.clone())
                .or_insert_with(|| {
                    came_online = true;
                    OnlineUser {
                        name: record.user.clone(),
                        status,
                        sessions: BTreeSet::new(),
                    }
                })
                .sessions
                .insert(record.handle);
            if came_online {
                self.online_names.add(&record.user);
            }
        }
        self.handles.insert(record.handle, record.token_hash);
        self.sessions_by_user
            .entry(record.user_key.clone())
            .or_default()
            .insert(record.handle);
        self.sessions.insert(record.token_hash, record);
    }

    /// Takes a session offline; true if its user has no online session left.
    pub fn set_offline(&mut self, handle: u64) -> bool {
        self.activity.remove(&handle);
        let Some(hash) = self.handles.get(&handle) else {
            return false;
        };
        let Some(record) = self.sessions.get_mut(hash) else {
            return false;
        };
        record.online = false;
        let key = record.user_key.clone();
        match self.online.get_mut(&key) {
            Some(user) => {
                user.sessions.remove(&handle);
                if user.sessions.is_empty() {
                    if let Some(gone) = self.online.remove(&key) {
                        self.online_names.remove(&gone.name);
                    }
                    true
                } else {
                    false
                }
            }
            None => false,
        }
    }

    /// Forgets a session entirely; true if its user has no online session left.
    pub fn remove_session(&mut self, handle: u64) -> bool {
        let was_last = self.set_offline(handle);
        let removed = self
            .handles
            .remove(&handle)
            .and_then(|hash| self.sessions.remove(&hash));
        if let Some(record) = removed
            && let Some(handles) = self.sessions_by_user.get_mut(&record.user_key)
        {
            handles.remove(&handle);
            if handles.is_empty() {
                self.sessions_by_user.remove(&record.user_key);
            }
        }
        was_last
    }
}
