//! The soak's size, from `SOAK_*` environment variables over per-test defaults.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Params {
    /// Guest sessions, each in one chat and listening on one queue.
    pub sessions: usize,
    /// Chats the sessions are spread over.
    pub chats: usize,
    /// Seconds of chatting (posts, keepalives, polls), warm-up included.
    pub secs: u64,
    /// Seconds of chatting before the RSS baseline is taken.
    pub warmup_secs: u64,
    /// Messages posted per second over all chats.
    pub posts_per_sec: f64,
    /// Guest sign-ins per second before chatting begins.
    pub logins_per_sec: f64,
    /// Every how many seconds each session sends a keepalive.
    pub keepalive_secs: u64,
    /// Percentage of sessions that read the legacy `/poll` instead of `/events`.
    pub legacy_percent: usize,
    /// Largest allowed RSS growth from the end of warm-up to the end, in percent.
    pub max_rss_growth_percent: f64,
}

impl Params {
    /// The size from `SOAK_*` variables; unset ones default to `sessions` × `secs`, about 100
    /// sessions per chat, one post per second per 50 sessions, a quarter of the time as warm-up.
    pub fn from_env(sessions: usize, secs: u64, max_rss_growth_percent: f64) -> Params {
        let sessions = var("SOAK_SESSIONS").unwrap_or(sessions);
        let secs = var("SOAK_SECS").unwrap_or(secs);
        Params {
            sessions,
            chats: var("SOAK_CHATS").unwrap_or(sessions.div_ceil(100).max(2)),
            secs,
            warmup_secs: var("SOAK_WARMUP_SECS").unwrap_or(secs / 4),
            posts_per_sec: var("SOAK_POSTS_PER_SEC").unwrap_or(sessions as f64 / 50.0),
            logins_per_sec: var("SOAK_LOGINS_PER_SEC").unwrap_or(50.0),
            keepalive_secs: var("SOAK_KEEPALIVE_SECS").unwrap_or(20),
            legacy_percent: var("SOAK_LEGACY_PERCENT").unwrap_or(10),
            max_rss_growth_percent: var("SOAK_MAX_RSS_GROWTH").unwrap_or(max_rss_growth_percent),
        }
    }

    pub fn chatting(&self) -> Duration {
        Duration::from_secs(self.secs)
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_secs)
    }

    /// Sessions reading the legacy `/poll`: the last ones to log in, so that the login storm's
    /// events (each login goes to everyone online) mostly land in `/events` batches.
    pub fn is_legacy(&self, session: usize) -> bool {
        session * 100 >= self.sessions * (100 - self.legacy_percent)
    }

    pub fn chat_of(&self, session: usize) -> usize {
        session % self.chats
    }

    pub fn chat_name(chat: usize) -> String {
        format!("Room{chat}")
    }
}

fn var<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a valid number")),
    )
}
