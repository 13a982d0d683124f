//! natter clients for the load generator: guests, listeners on `/events` or the legacy `/poll`,
//! and posters whose message texts carry their send time.

use crate::http::{Conn, Resp};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const MARKS: usize = 16;

/// State every listener shares with the orchestrator.
pub struct Shared {
    pub t0: Instant,
    /// How many listeners have seen marker message `k`.
    pub mark_seen: Vec<AtomicUsize>,
    /// Set when the orchestrator gives up waiting: listeners stop at their next answer.
    pub abort: AtomicBool,
    /// Listeners logged in, with a queue, and joined.
    pub joined: AtomicUsize,
    /// Poll answers and the events they carried, over every listener.
    pub answers: AtomicU64,
    pub events: AtomicU64,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            t0: Instant::now(),
            mark_seen: (0..MARKS).map(|_| AtomicUsize::new(0)).collect(),
            abort: AtomicBool::new(false),
            joined: AtomicUsize::new(0),
            answers: AtomicU64::new(0),
            events: AtomicU64::new(0),
        })
    }

    /// Waits until `n` listeners saw mark `k`; false after `limit`.
    pub async fn wait_mark(&self, k: usize, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.mark_seen[k].load(Ordering::Acquire) < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }
}

pub struct Guest {
    pub cookie: String,
    pub conn: Conn,
}

impl Guest {
    pub async fn login(addr: SocketAddr, name: &str) -> Result<Guest, String> {
        let mut conn = Conn::new(addr);
        let body = json!({ "user": name }).to_string();
        let r = conn
            .request("POST", "/api/login", None, Some(&body))
            .await
            .map_err(|e| format!("login {name}: {e}"))?;
        if r.status != 200 {
            return Err(format!("login {name}: {} {}", r.status, r.text()));
        }
        let cookie = r.set_cookie.ok_or("login without a cookie")?;
        Ok(Guest { cookie, conn })
    }

    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, String> {
        let body = body.map(|b| b.to_string());
        // One retry on a fresh connection: a kept-alive connection may have been closed meanwhile.
        for attempt in 0..2 {
            match self
                .conn
                .request(method, path, Some(&self.cookie), body.as_deref())
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) if attempt == 1 => return Err(format!("{method} {path}: {e}")),
                Err(_) => {}
            }
        }
        unreachable!()
    }

    pub async fn ok(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, String> {
        let r = self.call(method, path, body).await?;
        if r.status != 200 {
            return Err(format!("{method} {path}: {} {}", r.status, r.text()));
        }
        Ok(r)
    }

    pub async fn join(&mut self, chat: &str) -> Result<(), String> {
        self.ok(
            "POST",
            "/api/loggedonly/joinChat",
            Some(&json!({ "chat": chat })),
        )
        .await
        .map(drop)
    }

    pub async fn open_queue(&mut self) -> Result<(String, u64), String> {
        let v = self
            .ok("POST", "/api/loggedonly/queues", None)
            .await?
            .json();
        Ok((
            v["queue_id"].as_str().ok_or("no queue_id")?.to_owned(),
            v["last_event_id"].as_u64().ok_or("no last_event_id")?,
        ))
    }

    pub async fn post(&mut self, text: &str) -> Result<(), String> {
        self.ok(
            "POST",
            "/api/loggedonly/postMessage",
            Some(&json!({ "chat": "Main", "text": text })),
        )
        .await
        .map(drop)
    }
}

/// How a listener reads its events.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// `/events` with acknowledgement, batches of up to 100.
    Events,
    /// Legacy `/poll` as chatty's client does it: one event per answer, no `last_event_id`.
    Legacy,
}

#[derive(Default, Clone)]
pub struct Phase {
    pub count: u64,
    /// Answers that carried at least one of this phase's messages.
    pub answers: u64,
    pub last: Option<Instant>,
    pub latencies_us: Vec<u32>,
}

#[derive(Default)]
pub struct Report {
    pub phases: Vec<Phase>,
    /// Client-visible overflows: `bad event queue id` or a `ResyncEvent`.
    pub overflowed: bool,
    /// A message id that was not above the previous one.
    pub disorder: bool,
    /// The first disorder seen: which id came after which (workload 13 prints it).
    #[cfg_attr(not(feature = "pg"), allow(dead_code))]
    pub disorder_seen: Option<String>,
    pub answers: u64,
    pub error: Option<String>,
    pub ended: bool,
}

/// Reads events until the "end" message, an overflow, an error or `abort`.
pub async fn listen(
    guest: Guest,
    mode: Mode,
    queue: Option<(String, u64)>,
    shared: Arc<Shared>,
) -> Report {
    listen_with(guest, mode, queue, shared, |_, _| {}).await
}

/// As [`listen`], handing every event that is not a message to `on_event` (its type and payload).
pub async fn listen_with(
    mut guest: Guest,
    mode: Mode,
    queue: Option<(String, u64)>,
    shared: Arc<Shared>,
    mut on_event: impl FnMut(&str, Option<&serde_json::value::RawValue>),
) -> Report {
    let mut report = Report::default();
    let mut last_message = 0u64;
    let (queue_id, mut ack) = queue.unwrap_or_default();
    while !report.ended && !shared.abort.load(Ordering::Relaxed) {
        let path = match mode {
            Mode::Events => {
                format!("/api/loggedonly/events?queue_id={queue_id}&last_event_id={ack}")
            }
            Mode::Legacy => "/api/loggedonly/poll".to_owned(),
        };
        let r = match guest.call("GET", &path, None).await {
            Ok(r) => r,
            Err(e) => {
                report.error = Some(e);
                break;
            }
        };
        report.answers += 1;
        shared.answers.fetch_add(1, Ordering::Relaxed);
        if r.status == 400 && mode == Mode::Events {
            report.overflowed = true;
            break;
        }
        if r.status != 200 {
            report.error = Some(format!("poll: {} {}", r.status, r.text()));
            break;
        }
        if r.body.is_empty() {
            continue;
        }
        // Typed and borrowing: the generator shares the cores, so its parsing must stay cheap.
        let events: Vec<PolledEvent> = match mode {
            Mode::Events => match serde_json::from_slice::<EventsAnswer>(&r.body) {
                Ok(answer) => answer.events,
                Err(e) => panic!("/events answer is not JSON ({e}): {}", r.text()),
            },
            Mode::Legacy => match serde_json::from_slice::<PolledEvent>(&r.body) {
                Ok(event) => vec![event],
                Err(e) => panic!("/poll answer is not JSON ({e}): {}", r.text()),
            },
        };
        shared
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let mut phases_seen = 0u64;
        for e in &events {
            if mode == Mode::Events {
                // Ids in a queue strictly increase, and an acknowledged one never comes back.
                let id = e.id.unwrap_or(0);
                if id <= ack {
                    report.disorder = true;
                    report.disorder_seen.get_or_insert_with(|| {
                        format!("event id {id} after {ack} ({} in the answer)", events.len())
                    });
                }
                ack = id.max(ack);
            }
            if e.kind == "ResyncEvent" {
                report.overflowed = true;
            }
            if e.kind != "MessageEvent" {
                on_event(&e.kind, e.event);
                continue;
            }
            let message: MessageFields = match e.event.map(|raw| serde_json::from_str(raw.get())) {
                Some(Ok(message)) => message,
                _ => panic!("a MessageEvent without a message: {}", r.text()),
            };
            let id = message.id;
            if id <= last_message {
                report.disorder = true;
                report.disorder_seen.get_or_insert_with(|| {
                    format!(
                        "message {id} ({}) after message {last_message}",
                        message.text
                    )
                });
            }
            last_message = id;
            if let Some(phase) = on_message(&mut report, &message.text, &shared)
                && phases_seen & (1 << phase) == 0
            {
                phases_seen |= 1 << phase;
                report.phases[phase].answers += 1;
            }
        }
    }
    report
}

/// A `/events` answer: only what the listener reads.
#[derive(serde::Deserialize)]
struct EventsAnswer<'a> {
    #[serde(borrow)]
    events: Vec<PolledEvent<'a>>,
}

/// One event of either poll; its payload is parsed only for messages.
#[derive(serde::Deserialize)]
struct PolledEvent<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    event: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
struct MessageFields<'a> {
    id: u64,
    #[serde(borrow)]
    text: std::borrow::Cow<'a, str>,
}

/// Records a message; returns its phase if it is a timed one.
fn on_message(report: &mut Report, text: &str, shared: &Shared) -> Option<usize> {
    let now = Instant::now();
    if text == "end" {
        report.ended = true;
    } else if let Some(k) = text.strip_prefix("mark") {
        if let Ok(k) = k.parse::<usize>() {
            shared.mark_seen[k].fetch_add(1, Ordering::AcqRel);
        }
    } else if let Some((phase, sent)) = text.strip_prefix('p').and_then(|t| t.split_once(':')) {
        let (Ok(phase), Ok(sent)) = (phase.parse::<usize>(), sent.parse::<u64>()) else {
            return None;
        };
        if phase >= 64 {
            return None;
        }
        if report.phases.len() <= phase {
            report.phases.resize(phase + 1, Phase::default());
        }
        let p = &mut report.phases[phase];
        p.count += 1;
        p.last = Some(now);
        let latency =
            (now - shared.t0).as_nanos() as u64 - sent.min((now - shared.t0).as_nanos() as u64);
        p.latencies_us
            .push((latency / 1000).min(u32::MAX as u64) as u32);
        return Some(phase);
    }
    None
}

/// A message text for phase `phase` carrying its send time.
pub fn stamped(phase: usize, shared: &Shared) -> String {
    format!("p{phase}:{}", shared.t0.elapsed().as_nanos())
}
