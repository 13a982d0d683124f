//! Reading events: a session's default queue (legacy `/poll`) and its explicit queues
//! (`/events`). A poll that was parked counts as activity for all of its wait.

use super::{Service, SessionInfo};
use crate::error::ApiError;
use crate::events::EventTypes;
use crate::events::hub::{Delivered, HubStats, PollReply};
use crate::telemetry::Sample;

impl Service {
    /// `GET /api/loggedonly/poll`: one event, acknowledging up to `ack` when given.
    pub async fn poll_default(&self, session: &SessionInfo, ack: Option<u64>) -> PollReply {
        if self.config.cluster && ack.is_none() {
            let reply = self.poll_default_shared(session).await;
            self.touch(session.handle);
            return reply;
        }
        let reply = self
            .hub
            .poll_default(session.handle, ack, self.config.poll_timeout)
            .await;
        self.touch(session.handle);
        reply
    }

    /// `POST /api/loggedonly/queues`: a new explicit queue taking `types`, its id and the id it
    /// counts from.
    pub async fn open_queue(
        &self,
        session: &SessionInfo,
        types: EventTypes,
    ) -> Result<(String, u64), ApiError> {
        if self.config.cluster {
            return self.open_queue_shared(session, types).await;
        }
        self.hub
            .open_queue(session.handle, types)
            .ok_or(ApiError::NotLoggedIn)
    }

    /// `GET /api/loggedonly/events`: acknowledges up to `ack`, then what is pending (or waits).
    pub async fn poll_queue(
        &self,
        session: &SessionInfo,
        queue_id: &str,
        ack: u64,
    ) -> Result<Vec<Delivered>, ApiError> {
        let batch = self
            .hub
            .poll_queue(session.handle, queue_id, ack, self.config.poll_timeout)
            .await
            .map_err(|_| ApiError::BadEventQueue)?;
        self.touch(session.handle);
        Ok(batch)
    }

    /// The PostgreSQL mirror's state and lag (for `/healthz` and metrics).
    pub fn mirror_report(&self) -> crate::store::mirror::MirrorReport {
        self.store.mirror_report()
    }

    /// Whether storage answers a read and a write (for `/healthz`).
    pub fn storage_healthy(&self) -> bool {
        self.store.check_health().is_ok()
    }

    /// Queue and delivery counters.
    pub fn hub_stats(&self) -> HubStats {
        self.hub.stats()
    }

    /// What a metrics scrape reads: one short look under the state lock, one under the hub's,
    /// and the mail outbox's length (docs/operations.md, Metrics).
    pub fn metrics_sample(&self) -> Sample {
        let (online_users, sessions, sessions_online) = {
            let st = self.lock();
            (st.online.len(), st.sessions.len(), st.activity.len())
        };
        let hub = self.hub.stats();
        let mirror = self.store.mirror_report();
        Sample {
            online_users,
            sessions,
            sessions_online,
            default_queues: hub.queues.saturating_sub(hub.explicit_queues),
            explicit_queues: hub.explicit_queues,
            parked_polls: hub.parked,
            events_buffered: hub.buffered,
            events_delivered: hub.delivered,
            queue_overflows: hub.overflowed,
            queues_evicted: hub.evicted,
            mail_outbox: self.store.pending_mail_count().ok(),
            mirror_state: mirror.state.as_str(),
            mirror_outbox: mirror.outbox_len,
            mirror_lag: mirror.oldest_age.unwrap_or_default(),
            log_lag: self
                .node_report()
                .map(|(_, lag, _)| lag)
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::mirror::MirrorState;
    use crate::telemetry::MIRROR_STATES;

    #[test]
    fn every_mirror_state_has_its_metrics_series() {
        let states = [
            MirrorState::Off,
            MirrorState::Ok,
            MirrorState::Behind,
            MirrorState::Down,
        ];
        for state in states {
            assert!(MIRROR_STATES.contains(&state.as_str()), "{state:?}");
        }
        assert_eq!(states.len(), MIRROR_STATES.len());
    }
}
