//! PostgreSQL restarted under load with the PostgreSQL store (fsync on): posters keep posting
//! into two chats while `/events` listeners and a legacy `/poll` reader follow them. While
//! PostgreSQL is down, requests answer 503 quickly; afterwards posting comes back by itself,
//! every acknowledged post is in the history with its id, and every listener heard of every
//! acknowledged post exactly once, in order, or got a resync whose refetch found it; no listener
//! heard of a post that was neither acknowledged nor stored.

use crate::cluster::Cluster;
use crate::natter::{self, Natter};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const POSTERS: usize = 8;
const LISTENERS: usize = 3;
const CHATS: [&str; 2] = ["Main", "Side"];
/// Longest any request may take: a request still open after this hangs.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);
/// Load before PostgreSQL goes, and how long it stays away.
const LOAD_BEFORE: Duration = Duration::from_secs(1);
const DOWN_FOR: Duration = Duration::from_secs(2);
/// Longest posting may take to come back once PostgreSQL is up again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);
/// Load after posting came back.
const LOAD_AFTER: Duration = Duration::from_secs(1);
/// Longest the listeners may take to hear of the last acknowledged post.
const DRAIN_LIMIT: Duration = Duration::from_secs(20);
const PAGE: usize = 200;

/// How PostgreSQL is stopped.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// `pg_ctl stop -m fast`: connections are cut, a shutdown checkpoint is written.
    Fast,
    /// `pg_ctl stop -m immediate`: a crash; with fsync on, nothing committed durably is lost.
    Immediate,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_load_postgres_stopped_fast_under_load_loses_no_acknowledged_post_and_sends_no_phantom_event()
 {
    restart_under_load(Stop::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_load_postgres_stopped_immediately_under_load_loses_no_acknowledged_post_and_sends_no_phantom_event()
 {
    restart_under_load(Stop::Immediate).await;
}

/// A config on the PostgreSQL store with two chats, short polls, room for every event in a queue
/// and no bot (its replies would be posts nobody here made).
fn store_config(dir: &Path, url: &str) -> PathBuf {
    let path = natter::config(dir, Some(url));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!(
            "storage = \"postgres\"\nchats = [\"Main\", \"Side\"]\npoll_timeout = \"2s\"\n\
             event_queue_capacity = 100000\n{text}[bot]\nenabled = false\n"
        ),
    )
    .unwrap();
    path
}

/// A cookie-keeping client whose every request ends within `REQUEST_LIMIT`.
#[derive(Clone)]
struct Agent {
    http: reqwest::Client,
    base: String,
}

/// Messages by id: chat and text.
type History = BTreeMap<u64, (&'static str, String)>;

/// What a request got: status and JSON body (`Null` when empty), or why it got nothing.
type Answer = Result<(u16, Value), String>;

impl Agent {
    fn new(server: &Natter) -> Agent {
        Agent {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .timeout(REQUEST_LIMIT)
                .build()
                .unwrap(),
            base: server.url(""),
        }
    }

    async fn send(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(describe)?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        Self::send(self.http.post(format!("{}{path}", self.base)).json(&body)).await
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Answer {
        Self::send(self.http.get(format!("{}{path}", self.base)).query(query)).await
    }

    /// A post that must succeed (setting up, before PostgreSQL goes).
    async fn must(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.post(path, body).await.unwrap();
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    }

    /// A guest in both chats.
    async fn guest(server: &Natter, name: &str) -> Agent {
        let agent = Agent::new(server);
        agent.must("/api/login", json!({"user": name})).await;
        for chat in CHATS {
            agent
                .must("/api/loggedonly/joinChat", json!({"chat": chat}))
                .await;
        }
        agent
    }

    /// A chat's whole history, paging back with getMessages; retries 503s.
    async fn history(&self, chat: &'static str) -> Result<History, String> {
        let mut found = BTreeMap::new();
        let mut before: Option<u64> = None;
        let deadline = Instant::now() + REQUEST_LIMIT;
        loop {
            let mut body = json!({"chat": chat, "limit": PAGE});
            if let Some(id) = before {
                body["before"] = json!(id);
            }
            let page = match self.post("/api/loggedonly/getMessages", body).await? {
                (200, Value::Array(page)) => page,
                (503, _) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                (status, answer) => return Err(format!("getMessages: {status} {answer}")),
            };
            for m in &page {
                let text = m["text"].as_str().unwrap_or_default().to_owned();
                found.insert(id_of(m), (chat, text));
            }
            match page.first() {
                Some(oldest) if page.len() == PAGE => before = Some(id_of(oldest)),
                _ => return Ok(found),
            }
        }
    }

    /// Both chats' histories, merged (message ids are unique across chats).
    async fn all_history(&self) -> Result<History, String> {
        let mut all = BTreeMap::new();
        for chat in CHATS {
            all.extend(self.history(chat).await?);
        }
        Ok(all)
    }
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {REQUEST_LIMIT:?}: {e}")
    } else {
        format!("request failed: {e}")
    }
}

fn id_of(message: &Value) -> u64 {
    message["id"].as_u64().expect("a message id")
}

/// One post and what it got.
#[derive(Debug)]
struct Post {
    text: String,
    chat: &'static str,
    sent: Instant,
    took: Duration,
    answer: Answer,
}

impl Post {
    fn acknowledged(&self) -> Option<u64> {
        match &self.answer {
            Ok((200, body)) => Some(id_of(body)),
            _ => None,
        }
    }
}

/// What a listener saw, in order.
#[derive(Debug)]
enum Seen {
    /// A `MessageEvent`, and when it arrived.
    Message { id: u64, text: String, at: Instant },
    /// A `ResyncEvent`, or a `/events` queue that was gone (400 `bad event queue id`, then a new
    /// queue): either way the listener refetched both chats' histories, which found these ids.
    Resync {
        why: String,
        refetched: BTreeSet<u64>,
    },
    /// 503 `service unavailable`: expected while PostgreSQL is down.
    Unavailable,
    /// Any other answer that was neither events nor an empty poll: status and body, or no answer.
    Trouble(String),
}

/// Records a failed answer: a 503 `service unavailable`, or trouble.
fn failed(journal: &Journal, what: &str, answer: &Answer) {
    let seen = match answer {
        Ok((503, body)) if *body == unavailable_body() => Seen::Unavailable,
        other => Seen::Trouble(format!("{what}: {other:?}")),
    };
    journal.lock().unwrap().push(seen);
}

fn unavailable_body() -> Value {
    json!({"error": "service unavailable"})
}

type Journal = Arc<Mutex<Vec<Seen>>>;

/// Posts `name-N` texts into `chat` until `stop`; pauses briefly after a failure.
/// `acked` holds when the newest acknowledged post was sent.
async fn post_until(
    agent: Agent,
    name: String,
    chat: &'static str,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Option<Instant>>>,
) -> Vec<Post> {
    let mut posts = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let text = format!("{name}-{n}");
        let sent = Instant::now();
        let answer = agent
            .post(
                "/api/loggedonly/postMessage",
                json!({"chat": chat, "text": text}),
            )
            .await;
        let post = Post {
            text,
            chat,
            sent,
            took: sent.elapsed(),
            answer,
        };
        let refused = post.acknowledged().is_none();
        posts.push(post);
        if !refused {
            let mut newest = acked.lock().unwrap();
            *newest = (*newest).max(Some(sent));
        }
        if refused {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    posts
}

/// Refetches both chats after a resync, as a client does; a failure is trouble of its own.
async fn resync(agent: &Agent, journal: &Journal, why: String) {
    match agent.all_history().await {
        Ok(history) => journal.lock().unwrap().push(Seen::Resync {
            why,
            refetched: history.into_keys().collect(),
        }),
        Err(e) => journal
            .lock()
            .unwrap()
            .push(Seen::Trouble(format!("refetch after {why}: {e}"))),
    }
}

/// Opens an explicit queue; retries while the service is unavailable.
async fn open_queue(agent: &Agent, journal: &Journal) -> (String, u64) {
    loop {
        match agent.post("/api/loggedonly/queues", json!({})).await {
            Ok((200, opened)) => {
                return (
                    opened["queue_id"].as_str().unwrap().to_owned(),
                    opened["last_event_id"].as_u64().unwrap(),
                );
            }
            other => {
                failed(journal, "opening a queue", &other);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads an explicit queue with `/events`, acknowledging what it got, until aborted.
async fn listen_events(agent: Agent, journal: Journal) {
    let (mut queue, mut last) = open_queue(&agent, &journal).await;
    loop {
        let answer = agent
            .get(
                "/api/loggedonly/events",
                &[
                    ("queue_id", queue.clone()),
                    ("last_event_id", last.to_string()),
                ],
            )
            .await;
        match answer {
            Ok((200, batch)) => {
                for event in batch["events"].as_array().unwrap() {
                    last = next_id(&journal, "event", last, event);
                    note(&agent, &journal, &event["type"], &event["event"]).await;
                }
            }
            Ok((400, body)) if body == json!({"error": "bad event queue id"}) => {
                (queue, last) = open_queue(&agent, &journal).await;
                resync(&agent, &journal, "bad event queue id".into()).await;
            }
            other => {
                failed(&journal, "/events", &other);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What went wrong for a listener, as it noted it.
fn troubles(journal: &[Seen]) -> Vec<&String> {
    journal
        .iter()
        .filter_map(|s| match s {
            Seen::Trouble(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// The id of `event`, noted as trouble unless it comes after `last` (a repeat or a step back).
fn next_id(journal: &Journal, what: &str, last: u64, event: &Value) -> u64 {
    let id = event["id"].as_u64().unwrap();
    if id <= last {
        journal.lock().unwrap().push(Seen::Trouble(format!(
            "{what} id {id} after {last}: {event}"
        )));
    }
    id
}

/// Reads the session's default queue with the legacy `/poll`, one event at a time,
/// acknowledging with `last_event_id`, until aborted.
async fn listen_poll(agent: Agent, journal: Journal) {
    let mut last = 0u64;
    loop {
        let answer = agent
            .get(
                "/api/loggedonly/poll",
                &[("last_event_id", last.to_string())],
            )
            .await;
        match answer {
            Ok((200, Value::Null)) => {}
            Ok((200, envelope)) => {
                last = next_id(&journal, "poll", last, &envelope);
                note(&agent, &journal, &envelope["type"], &envelope["event"]).await;
            }
            other => {
                failed(&journal, "/poll", &other);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Records a message or a resync; other events (joins, logins) do not matter here.
async fn note(agent: &Agent, journal: &Journal, kind: &Value, event: &Value) {
    match kind.as_str() {
        Some("MessageEvent") => journal.lock().unwrap().push(Seen::Message {
            id: id_of(event),
            text: event["text"].as_str().unwrap_or_default().to_owned(),
            at: Instant::now(),
        }),
        Some("ResyncEvent") => resync(agent, journal, format!("ResyncEvent {event}")).await,
        _ => {}
    }
}

/// The largest message id a journal holds, seen as an event or refetched.
fn newest_seen(journal: &[Seen]) -> u64 {
    journal
        .iter()
        .map(|s| match s {
            Seen::Message { id, .. } => *id,
            Seen::Resync { refetched, .. } => refetched.last().copied().unwrap_or(0),
            Seen::Unavailable | Seen::Trouble(_) => 0,
        })
        .max()
        .unwrap_or(0)
}

/// The server's log lines about storage, requests that failed and warnings.
fn log_excerpt(server: &Natter) -> String {
    let log = server.log.lock().unwrap();
    let lines: Vec<&String> = log
        .iter()
        .filter(|l| {
            l.contains("PostgreSQL")
                || l.contains("ERROR")
                || l.contains("WARN")
                || l.contains(" 500 ")
                || l.contains("reloaded")
        })
        .collect();
    let skipped = lines.len().saturating_sub(60);
    let mut text = format!("server log ({} matching lines", lines.len());
    if skipped > 0 {
        text.push_str(", first 30 and last 30");
    }
    text.push_str("):\n");
    for (i, line) in lines.iter().enumerate() {
        if skipped == 0 || i < 30 || i >= lines.len() - 30 {
            text.push_str(line);
            text.push('\n');
        } else if i == 30 {
            text.push_str(&format!("… {skipped} lines …\n"));
        }
    }
    text
}

async fn restart_under_load(stop: Stop) {
    let Some(pg) = Cluster::start_durable().await else {
        return;
    };
    let url = pg.create_db("outage_load").await;
    let dir = tempfile::tempdir().unwrap();
    let server = Natter::start(&store_config(dir.path(), &url));

    // Listeners first, so their queues hear of every post.
    let mut journals: Vec<(String, Journal)> = Vec::new();
    let mut listeners = Vec::new();
    let mut auditor = None;
    for i in 0..LISTENERS {
        let agent = Agent::guest(&server, &format!("listener{i}")).await;
        let journal: Journal = Arc::default();
        journals.push((format!("/events listener{i}"), journal.clone()));
        auditor.get_or_insert_with(|| agent.clone());
        listeners.push(tokio::spawn(listen_events(agent, journal)));
    }
    let legacy = Agent::guest(&server, "legacy").await;
    let journal: Journal = Arc::default();
    journals.push(("/poll legacy".into(), journal.clone()));
    listeners.push(tokio::spawn(listen_poll(legacy, journal)));
    let auditor = auditor.unwrap();

    let stopping = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut posters = Vec::new();
    for i in 0..POSTERS {
        let name = format!("poster{i}");
        let agent = Agent::guest(&server, &name).await;
        let chat = CHATS[i % CHATS.len()];
        posters.push(tokio::spawn(post_until(
            agent,
            name,
            chat,
            stopping.clone(),
            acked.clone(),
        )));
    }
    let load_started = Instant::now();

    tokio::time::sleep(LOAD_BEFORE).await;
    let stopped_at = Instant::now();
    tokio::task::block_in_place(|| match stop {
        Stop::Fast => pg.stop_server(),
        Stop::Immediate => pg.stop(),
    });
    let down_at = Instant::now();
    tokio::time::sleep(DOWN_FOR).await;
    let restarting_at = Instant::now();
    tokio::task::block_in_place(|| pg.start_server());
    let up_at = Instant::now();

    // Posting comes back by itself: nothing here asks /healthz or any other route to reconnect.
    let by_itself = acknowledged_since(&acked, up_at).await;
    // If it does not, one look at /healthz (a read of the store) lets the rest be checked; the
    // test fails all the same, at its end.
    let mut nudge = None;
    let mut nudged_at = None;
    if by_itself.is_none() {
        nudged_at = Some(Instant::now());
        let health = Agent::new(&server).get("/healthz", &[]).await;
        let answered = Instant::now();
        nudge = Some((health, acknowledged_since(&acked, answered).await));
    }
    tokio::time::sleep(LOAD_AFTER).await;
    stopping.store(true, Ordering::Relaxed);
    let mut posts: Vec<Post> = Vec::new();
    for poster in posters {
        posts.extend(poster.await.unwrap());
    }
    let load_ended = Instant::now();

    // What was acknowledged.
    let acknowledged: BTreeMap<u64, &Post> = posts
        .iter()
        .filter_map(|p| p.acknowledged().map(|id| (id, p)))
        .collect();
    let newest_acknowledged = acknowledged.keys().last().copied().unwrap_or(0);

    // The listeners catch up with the last acknowledged post (or give up after DRAIN_LIMIT).
    let drain_started = Instant::now();
    while drain_started.elapsed() < DRAIN_LIMIT
        && journals
            .iter()
            .any(|(_, j)| newest_seen(&j.lock().unwrap()) < newest_acknowledged)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for listener in listeners {
        listener.abort();
    }
    let history = auditor.all_history().await.expect("the final history");

    // Figures, printed whatever the outcome.
    let count = |f: &dyn Fn(&Post) -> bool| posts.iter().filter(|p| f(p)).count();
    let unavailable = count(&|p| matches!(&p.answer, Ok((503, _))));
    let stored_texts: BTreeSet<&String> = history.values().map(|(_, text)| text).collect();
    let stored_despite_503 =
        count(&|p| matches!(&p.answer, Ok((503, _))) && stored_texts.contains(&p.text));
    let slowest = posts.iter().map(|p| p.took).max().unwrap_or_default();
    let slowest_503 = posts
        .iter()
        .filter(|p| matches!(&p.answer, Ok((503, _))))
        .map(|p| p.took)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{stop:?} stop: {} posts, {} acknowledged, {unavailable} answered 503 ({stored_despite_503} \
         of them stored all the same), slowest post {slowest:?}, slowest 503 {slowest_503:?}; \
         stopping took {:?}, down {:?}, starting took {:?}; first acknowledged post {:?} after \
         PostgreSQL was up (by itself); after /healthz: {:?}; load {:?}; drain {:?}; history holds {} messages",
        posts.len(),
        acknowledged.len(),
        down_at - stopped_at,
        restarting_at - down_at,
        up_at - restarting_at,
        by_itself,
        nudge,
        load_ended - load_started,
        drain_started.elapsed(),
        history.len(),
    );
    for (name, journal) in &journals {
        let journal = journal.lock().unwrap();
        let messages = journal
            .iter()
            .filter(|s| matches!(s, Seen::Message { .. }))
            .count();
        let resyncs: Vec<&String> = journal
            .iter()
            .filter_map(|s| match s {
                Seen::Resync { why, .. } => Some(why),
                _ => None,
            })
            .collect();
        let trouble = troubles(&journal);
        let unavailable = journal
            .iter()
            .filter(|s| matches!(s, Seen::Unavailable))
            .count();
        let unacknowledged = journal
            .iter()
            .filter(|s| matches!(s, Seen::Message { id, .. } if !acknowledged.contains_key(id)))
            .count();
        eprintln!(
            "{name}: {messages} message events ({unacknowledged} of posts not acknowledged), \
             {unavailable} answers 503, resyncs {resyncs:?}, {} troubles{}",
            trouble.len(),
            trouble
                .first()
                .map(|t| format!(", the first: {t}"))
                .unwrap_or_default()
        );
    }
    // The log reader thread may be a moment behind.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = log_excerpt(&server);

    // No request hung and none failed otherwise than with 503 `service unavailable`.
    let wrong: Vec<&Post> = posts
        .iter()
        .filter(|p| match &p.answer {
            Ok((200, _)) => false,
            Ok((503, body)) => *body != unavailable_body(),
            _ => true,
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} posts got neither 200 nor 503 `service unavailable` (a hang, a 500, …); the first: \
         {:#?}\n{log}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(slowest < REQUEST_LIMIT, "a post took {slowest:?}\n{log}");
    // While PostgreSQL was down, posts were refused, and none was acknowledged.
    assert!(
        unavailable > 0,
        "no post was refused while PostgreSQL was down\n{log}"
    );
    let acknowledged_while_down: Vec<&Post> = posts
        .iter()
        .filter(|p| p.sent >= down_at && p.sent + p.took <= restarting_at)
        .filter(|p| p.acknowledged().is_some())
        .collect();
    assert!(
        acknowledged_while_down.is_empty(),
        "posts acknowledged while PostgreSQL was down: {acknowledged_while_down:#?}\n{log}"
    );
    // Every acknowledged post is in the history, with its id and text.
    let missing: Vec<(u64, &Post)> = acknowledged
        .iter()
        .filter(|(id, p)| history.get(id) != Some(&(p.chat, p.text.clone())))
        .map(|(id, p)| (*id, *p))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged posts are not in the history as acknowledged, chat and text (id, post): {:#?}\n\
         history around them: {:?}\n{log}",
        missing.len(),
        &missing[..missing.len().min(10)],
        missing
            .iter()
            .take(3)
            .map(|(id, _)| history
                .range(id.saturating_sub(3)..id + 4)
                .collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
    for (name, journal) in &journals {
        let journal = journal.lock().unwrap();
        let trouble = troubles(&journal);
        // While PostgreSQL is down a listener may get 503s; nothing else goes wrong.
        assert!(trouble.is_empty(), "{name}: {trouble:#?}\n{log}");

        // No phantom: every message event is of a post acknowledged or stored, as it was sent.
        let mut heard = BTreeSet::new();
        let mut refetched = BTreeSet::new();
        let mut previous = 0;
        for seen in journal.iter() {
            match seen {
                Seen::Message { id, text, at } => {
                    let known = acknowledged
                        .get(id)
                        .map(|p| &p.text)
                        .or_else(|| history.get(id).map(|(_, text)| text));
                    assert_eq!(
                        known,
                        Some(text),
                        "{name} heard of message {id} {text:?}, which was neither acknowledged \
                         nor stored (a phantom event). That post: {}. The event arrived {:?} \
                         after PostgreSQL was up again ({:?} before GET /healthz). Id {id}: \
                         acknowledged for {:?}, in the history as {:?}; {name} heard of id {id} \
                         as {:?}\n{log}",
                        whereabouts(&posts, text, stopped_at),
                        at.checked_duration_since(up_at),
                        nudged_at.and_then(|n| n.checked_duration_since(*at)),
                        acknowledged.get(id).map(|p| &p.text),
                        history.get(id),
                        journal
                            .iter()
                            .filter_map(|s| match s {
                                Seen::Message { id: i, text, .. } if i == id => Some(text),
                                _ => None,
                            })
                            .collect::<Vec<_>>()
                    );
                    assert!(
                        *id > previous,
                        "{name} heard of message {id} after {previous} (out of order or twice)\n{log}"
                    );
                    previous = *id;
                    heard.insert(*id);
                }
                Seen::Resync { refetched: ids, .. } => refetched.extend(ids.iter().copied()),
                Seen::Unavailable | Seen::Trouble(_) => {}
            }
        }
        // Every acknowledged post reached this listener, as an event or through a refetch.
        let unheard: Vec<(u64, &str)> = acknowledged
            .iter()
            .filter(|(id, _)| !heard.contains(id) && !refetched.contains(id))
            .map(|(id, p)| (*id, p.text.as_str()))
            .collect();
        assert!(
            unheard.is_empty(),
            "{name} never heard of {} acknowledged posts (neither as an event nor through a \
             resync's refetch); the first: {:?}; it heard {} message events, the last {:?}\n{log}",
            unheard.len(),
            &unheard[..unheard.len().min(10)],
            heard.len(),
            heard.last()
        );
    }
    // Posting came back by itself once PostgreSQL was up again.
    if let Some((health, after_health)) = &nudge {
        panic!(
            "posting did not come back by itself: no post was acknowledged in the {RECOVERY_LIMIT:?} \
             after PostgreSQL was up again (every post got 503 at once); one GET /healthz \
             ({health:?}) then brought it back after {after_health:?}\n{log}"
        );
    }
    server.stop();
}

/// When the post with `text` was sent (against when PostgreSQL was stopped) and what it got.
fn whereabouts(posts: &[Post], text: &str, stopped_at: Instant) -> String {
    let Some(p) = posts.iter().find(|p| p.text == text) else {
        return "never sent".into();
    };
    let (sign, offset) = if p.sent >= stopped_at {
        ("after", p.sent - stopped_at)
    } else {
        ("before", stopped_at - p.sent)
    };
    format!(
        "sent {offset:?} {sign} `pg_ctl stop` began, answered after {:?} with {:?}",
        p.took, p.answer
    )
}

/// How long after `since` a post sent then was acknowledged; `None` within `RECOVERY_LIMIT`.
async fn acknowledged_since(acked: &Mutex<Option<Instant>>, since: Instant) -> Option<Duration> {
    while since.elapsed() < RECOVERY_LIMIT {
        if acked.lock().unwrap().is_some_and(|t| t >= since) {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
