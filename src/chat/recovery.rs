//! After storage recovered from a disk failure: memory follows the disk again. Changes whose
//! write failed (answered 503) are forgotten, their events dropped (docs/design.md, Storage faults).

use super::Service;
use crate::model::name_key;
use crate::store::{Durability, SessionRecord, StoreResult};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

impl Service {
    /// Applies the store's flush progress to the hub: lost writes' events go, durable ones out.
    pub(super) fn settle(&self, durability: &Durability) {
        if let Some((first, last)) = durability.lost {
            self.hub.discard_lost(first, last);
        }
        self.hub.release(durability.durable);
    }

    /// Rebuilds chats, sessions and memberships from the store, keeping what did not change
    /// (activity times, event queues of sessions that stay online, blocked guest names), and
    /// the registered names.
    pub(super) fn resync_with_store(&self) -> StoreResult<()> {
        let mut st = self.lock();
        let chats = self.store.chats()?;
        let stored: HashMap<[u8; 32], SessionRecord> = self
            .store
            .sessions()?
            .into_iter()
            .map(|s| (s.token_hash, s))
            .collect();
        let online_before: HashSet<u64> = st.activity.keys().copied().collect();
        let changed: Vec<u64> = st
            .sessions
            .values()
            .filter(|s| stored.get(&s.token_hash) != Some(s))
            .map(|s| s.handle)
            .collect();
        for handle in changed {
            st.remove_session(handle);
        }
        let now = Instant::now();
        for record in stored.into_values() {
            if !st.sessions.contains_key(&record.token_hash) {
                let status = self.status_of(&record.user_key, record.guest)?;
                st.insert_session(record, status, now);
            }
        }
        // A registration whose write was lost must not keep its name taken.
        st.accounts = self.account_names()?;
        st.chats = chats
            .into_iter()
            .map(|chat| (name_key(&chat.name), chat))
            .collect();
        st.clear_members();
        // As at start: memberships end when their user goes offline.
        for member in self.store.members()? {
            if st.online.contains_key(&member.user_key) {
                st.add_member(member.chat_id, &member.user_key, &member.user);
            }
        }
        let online_now: HashSet<u64> = st.activity.keys().copied().collect();
        for gone in online_before.difference(&online_now) {
            self.hub.close_session(*gone);
        }
        for back in online_now.difference(&online_before) {
            self.hub.open_session(*back);
        }
        Ok(())
    }
}
