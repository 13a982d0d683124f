//! Many sessions online in many chats, each arriving as a browser does: a guest login, its
//! keepalives, an event queue (or the legacy `/poll`), a join, then the first `getChats`,
//! `getLastMessages` and `getUsers`. Each session polls on a connection of its own; everything
//! else goes through a few shared connections ([`Pool`]).

use crate::client::{self, Guest, Mode, Shared};
use crate::http::Conn;
use crate::keepalive::Keepalives;
use crate::pool::Pool;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Every event type but presence (`LoginEvent`, `LogoutEvent`): what the `/events` sessions ask for.
pub const WITHOUT_PRESENCE: [&str; 9] = [
    "ChatJoinEvent",
    "SystemMessageChatJoinEvent",
    "ChatLeaveEvent",
    "SystemMessageChatLeaveEvent",
    "MessageEvent",
    "ChatCreatedEvent",
    "ChatRemovedEvent",
    "ResyncEvent",
    "MessageDeletedEvent",
];

/// Shared connections for everything but polls.
pub const POOL_CONNECTIONS: usize = 32;

/// Sessions setting up at once.
const ARRIVING: usize = 64;

/// Who is where: session `i` is guest `u{i}` in chat `i % chats`; every `legacy_every`-th reads
/// the legacy `/poll`, the others an `/events` queue without presence.
#[derive(Clone, Copy)]
pub struct Layout {
    pub sessions: usize,
    pub chats: usize,
    pub legacy_every: usize,
}

impl Layout {
    pub fn chat_of(&self, i: usize) -> usize {
        i % self.chats
    }

    pub fn chat_size(&self) -> usize {
        self.sessions / self.chats
    }

    pub fn mode_of(&self, i: usize) -> Mode {
        if i % self.legacy_every == self.legacy_every - 1 {
            Mode::Legacy
        } else {
            Mode::Events
        }
    }

    pub fn legacy(&self) -> usize {
        (0..self.sessions)
            .filter(|&i| self.mode_of(i) == Mode::Legacy)
            .count()
    }

    /// The `j`-th member of chat `c`.
    pub fn member(&self, c: usize, j: usize) -> usize {
        c + self.chats * (j % self.chat_size())
    }
}

pub fn chat_name(c: usize) -> String {
    format!("c{c:03}")
}

/// The `chats = [...]` config line for `chats` chats.
pub fn chats_config(chats: usize) -> String {
    let names: Vec<String> = (0..chats)
        .map(|c| format!("\"{}\"", chat_name(c)))
        .collect();
    format!("chats = [{}]", names.join(", "))
}

/// What one session saw besides messages.
#[derive(Default)]
pub struct Seen {
    /// Members of its chat it knows of: the join answer's, then each `ChatJoinEvent`'s.
    pub members: Vec<u32>,
    pub join_events: u64,
    pub join_notices: u64,
    /// Its own `LoginEvent`s, those of members of its chat, and those of anyone else.
    pub own_presence: u64,
    pub chat_presence: u64,
    pub foreign_presence: u64,
    pub other: u64,
}

pub struct SessionReport {
    pub index: usize,
    pub mode: Mode,
    pub listen: client::Report,
    pub seen: Seen,
    pub setup_error: Option<String>,
}

/// Sessions online, their listeners, and what they share.
pub struct Online {
    pub layout: Layout,
    pub shared: Arc<Shared>,
    pub pool: Arc<Pool>,
    pub keepalives: Arc<Keepalives>,
    pub cookies: Arc<Vec<OnceLock<String>>>,
    /// Events that reached legacy `/poll` sessions (their answers carry one each).
    pub legacy_events: Arc<AtomicU64>,
    handles: Vec<JoinHandle<SessionReport>>,
    next_mark: usize,
}

/// `{"user": "u17"}` → 17.
fn user_index(payload: Option<&serde_json::value::RawValue>) -> Option<u32> {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow)]
        user: std::borrow::Cow<'a, str>,
    }
    let named: Named = serde_json::from_str(payload?.get()).ok()?;
    named.user.strip_prefix('u')?.parse().ok()
}

impl Seen {
    fn record(
        &mut self,
        kind: &str,
        payload: Option<&serde_json::value::RawValue>,
        me: usize,
        layout: &Layout,
    ) {
        match kind {
            "ChatJoinEvent" => {
                self.join_events += 1;
                if let Some(u) = user_index(payload) {
                    self.members.push(u);
                }
            }
            "SystemMessageChatJoinEvent" => self.join_notices += 1,
            "LoginEvent" | "LogoutEvent" => match user_index(payload) {
                Some(u) if u as usize == me => self.own_presence += 1,
                Some(u) if layout.chat_of(u as usize) == layout.chat_of(me) => {
                    self.chat_presence += 1
                }
                _ => self.foreign_presence += 1,
            },
            _ => self.other += 1,
        }
    }

    /// Whether it knows every member of its chat, each once.
    pub fn knows_all(&self, layout: &Layout, me: usize) -> bool {
        let mut members = self.members.clone();
        members.sort_unstable();
        members.dedup();
        members.len() == layout.chat_size()
            && members
                .iter()
                .all(|&u| layout.chat_of(u as usize) == layout.chat_of(me))
    }
}

impl Online {
    /// Brings every session of `layout` online, `ARRIVING` at a time; returns once all have made
    /// their first requests, and how long that took.
    pub async fn arrive(addr: SocketAddr, layout: Layout) -> Result<(Online, Duration), String> {
        let shared = Shared::new();
        let pool = Pool::new(addr, POOL_CONNECTIONS);
        let keepalives = Keepalives::pooled(pool.clone());
        let cookies: Arc<Vec<OnceLock<String>>> =
            Arc::new((0..layout.sessions).map(|_| OnceLock::new()).collect());
        let legacy_events = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(ARRIVING));
        let start = Instant::now();
        let mut handles = Vec::with_capacity(layout.sessions);
        for i in 0..layout.sessions {
            let session = Session {
                index: i,
                layout,
                addr,
                pool: pool.clone(),
                shared: shared.clone(),
                keepalives: keepalives.clone(),
                cookies: cookies.clone(),
                legacy_events: legacy_events.clone(),
            };
            let gate = gate.clone();
            handles.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await.expect("open semaphore");
                session.run(permit).await
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(900);
        while shared.joined.load(Ordering::Acquire) < layout.sessions {
            if Instant::now() > deadline {
                shared.abort.store(true, Ordering::Release);
                return Err("sessions did not come online within 900 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = start.elapsed();
        Ok((
            Online {
                layout,
                shared,
                pool,
                keepalives,
                cookies,
                legacy_events,
                handles,
                next_mark: 0,
            },
            took,
        ))
    }

    /// Posts `text` to chat `c` as its `j`-th member.
    pub async fn post(&self, c: usize, j: usize, text: &str) -> Result<(), String> {
        post(&self.pool, &self.cookies, self.layout, c, j, text).await
    }

    /// Posts a marker to every chat and waits until every session has its chat's: everything
    /// queued for it before is delivered.
    pub async fn mark(&mut self, limit: Duration) -> Result<bool, String> {
        let k = self.next_mark;
        self.next_mark += 1;
        let text = format!("mark{k}");
        let posts = (0..self.layout.chats).map(|c| self.post(c, 0, &text));
        for result in futures_util::future::join_all(posts).await {
            result?;
        }
        Ok(self.shared.wait_mark(k, self.layout.sessions, limit).await)
    }

    /// Ends every session with an "end" message in each chat and collects their reports.
    pub async fn finish(self) -> Vec<SessionReport> {
        let posts = (0..self.layout.chats).map(|c| self.post(c, 1, "end"));
        let _ = futures_util::future::join_all(posts).await;
        let give_up = Instant::now() + Duration::from_secs(60);
        let mut reports = Vec::with_capacity(self.handles.len());
        for (i, h) in self.handles.into_iter().enumerate() {
            let left = give_up.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left.max(Duration::from_secs(1)), h).await {
                Ok(Ok(r)) => reports.push(r),
                _ => {
                    self.shared.abort.store(true, Ordering::Release);
                    reports.push(SessionReport {
                        index: i,
                        mode: self.layout.mode_of(i),
                        listen: client::Report::default(),
                        seen: Seen::default(),
                        setup_error: Some("session did not end".into()),
                    });
                }
            }
        }
        reports
    }
}

/// Posts `text` to chat `c` as its `j`-th member, through the pool.
pub async fn post(
    pool: &Pool,
    cookies: &[OnceLock<String>],
    layout: Layout,
    c: usize,
    j: usize,
    text: &str,
) -> Result<(), String> {
    let member = layout.member(c, j);
    let cookie = cookies[member].get().ok_or("the poster is not online")?;
    let body = json!({ "chat": chat_name(c), "text": text }).to_string();
    pool.ok(
        "POST",
        "/api/loggedonly/postMessage",
        Some(cookie),
        Some(&body),
    )
    .await
    .map(drop)
}

/// One arriving session.
struct Session {
    index: usize,
    layout: Layout,
    addr: SocketAddr,
    pool: Arc<Pool>,
    shared: Arc<Shared>,
    keepalives: Arc<Keepalives>,
    cookies: Arc<Vec<OnceLock<String>>>,
    legacy_events: Arc<AtomicU64>,
}

impl Session {
    async fn run(self, permit: tokio::sync::OwnedSemaphorePermit) -> SessionReport {
        let mode = self.layout.mode_of(self.index);
        let mut listener = None;
        let setup = self.setup(mode, &mut listener).await;
        drop(permit);
        self.shared.joined.fetch_add(1, Ordering::AcqRel);
        let (members, setup_error) = match setup {
            Ok(members) => (members, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let (listen, mut seen) = match listener {
            Some(h) => h.await.unwrap_or_else(|e| {
                let report = client::Report {
                    error: Some(format!("listener panicked: {e}")),
                    ..Default::default()
                };
                (report, Seen::default())
            }),
            None => (client::Report::default(), Seen::default()),
        };
        seen.members.extend(members);
        SessionReport {
            index: self.index,
            mode,
            listen,
            seen,
            setup_error,
        }
    }

    /// Login, keepalives, queue, listener, join, and the first reads; returns the members the
    /// join answer lists.
    async fn setup(
        &self,
        mode: Mode,
        listener: &mut Option<JoinHandle<(client::Report, Seen)>>,
    ) -> Result<Vec<u32>, String> {
        let name = format!("u{}", self.index);
        let body = json!({ "user": name }).to_string();
        let login = self
            .pool
            .ok("POST", "/api/login", None, Some(&body))
            .await?;
        let cookie = login.set_cookie.ok_or("login without a cookie")?;
        let _ = self.cookies[self.index].set(cookie.clone());
        self.keepalives.start(cookie.clone());
        let queue = match mode {
            Mode::Events => {
                let body = json!({ "event_types": WITHOUT_PRESENCE }).to_string();
                let v = self
                    .pool
                    .ok("POST", "/api/loggedonly/queues", Some(&cookie), Some(&body))
                    .await?
                    .json();
                Some((
                    v["queue_id"].as_str().ok_or("no queue_id")?.to_owned(),
                    v["last_event_id"].as_u64().ok_or("no last_event_id")?,
                ))
            }
            Mode::Legacy => None,
        };
        let guest = Guest {
            cookie: cookie.clone(),
            conn: Conn::new(self.addr),
        };
        let (me, layout, shared) = (self.index, self.layout, self.shared.clone());
        let legacy_events = self.legacy_events.clone();
        *listener = Some(tokio::spawn(async move {
            let mut seen = Seen::default();
            let report = client::listen_with(guest, mode, queue, shared, |kind, payload| {
                if mode == Mode::Legacy {
                    legacy_events.fetch_add(1, Ordering::Relaxed);
                }
                seen.record(kind, payload, me, &layout);
            })
            .await;
            (report, seen)
        }));
        let chat = json!({ "chat": chat_name(self.layout.chat_of(self.index)) }).to_string();
        let joined = self
            .pool
            .ok(
                "POST",
                "/api/loggedonly/joinChat",
                Some(&cookie),
                Some(&chat),
            )
            .await?
            .json();
        let members = users(&joined["users"])?;
        self.pool
            .ok("GET", "/api/loggedonly/getChats", Some(&cookie), None)
            .await?;
        self.pool
            .ok(
                "POST",
                "/api/loggedonly/getLastMessages",
                Some(&cookie),
                Some(&chat),
            )
            .await?;
        self.pool
            .ok(
                "POST",
                "/api/loggedonly/getUsers",
                Some(&cookie),
                Some(&chat),
            )
            .await?;
        Ok(members)
    }
}

/// The indices of a `[UserWithStatus]` list.
fn users(list: &Value) -> Result<Vec<u32>, String> {
    list.as_array()
        .ok_or("a join answer without users")?
        .iter()
        .map(|u| {
            u["user"]
                .as_str()
                .and_then(|n| n.strip_prefix('u'))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("an unexpected member {u}"))
        })
        .collect()
}
