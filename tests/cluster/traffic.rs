//! Load for the cluster tests: posters, /events readers and legacy /poll readers running as
//! tasks, and the checks on what each member received.

use crate::client::Client;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The message ids one reader (or one session's pollers together) received, in arrival order.
pub type Inbox = Arc<Mutex<Vec<u64>>>;

/// The nodes that answered a reader's polls (as nginx names them).
type ServedBy = Arc<Mutex<BTreeSet<String>>>;

/// A running reader: what it received so far, and at its end the troubles it met.
pub struct Reader {
    pub name: String,
    pub inbox: Inbox,
    served_by: ServedBy,
    task: JoinHandle<Vec<String>>,
}

/// What a stopped reader received, the troubles it met, and which nodes answered it.
pub struct Outcome {
    pub name: String,
    pub received: Vec<u64>,
    pub troubles: Vec<String>,
    pub served_by: BTreeSet<String>,
}

/// Notes the node that finally answered (`$upstream_addr` lists every node nginx tried).
fn note_node(served_by: &ServedBy, upstream: &Option<String>) {
    if let Some(last) = upstream
        .as_deref()
        .and_then(|list| list.rsplit(", ").next())
    {
        served_by.lock().unwrap().insert(last.to_owned());
    }
}

/// Statuses that mean "the node or nginx failed this one request": the client tries again.
fn is_transient(status: u16) -> bool {
    matches!(status, 0 | 502 | 503 | 504)
}

fn message_id(event: &Value) -> Option<u64> {
    (event["type"] == "MessageEvent")
        .then(|| event["event"]["id"].as_u64())
        .flatten()
}

/// Reads the explicit queue `(id, last_event_id)` of `client` with /events until `stop`,
/// acknowledging each batch.
pub fn events_reader(
    name: &str,
    client: Client,
    (queue, mut last): (String, u64),
    stop: Arc<AtomicBool>,
) -> Reader {
    let inbox: Inbox = Arc::default();
    let sink = inbox.clone();
    let served_by = ServedBy::default();
    let nodes = served_by.clone();
    let task = tokio::spawn(async move {
        let mut troubles = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let reply = client
                .get(&format!(
                    "/api/loggedonly/events?queue_id={queue}&last_event_id={last}"
                ))
                .await;
            if is_transient(reply.status) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if reply.status != 200 {
                troubles.push(format!("/events answered {}: {}", reply.status, reply.body));
                if reply.status == 400 {
                    break; // the queue is gone: nothing more will come on it
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            note_node(&nodes, &reply.upstream);
            for event in reply.body["events"].as_array().into_iter().flatten() {
                let id = event["id"].as_u64().unwrap_or(0);
                if id <= last {
                    troubles.push(format!("event id {id} after {last}"));
                }
                last = last.max(id);
                if let Some(message) = message_id(event) {
                    sink.lock().unwrap().push(message);
                }
            }
        }
        troubles
    });
    Reader {
        name: name.to_owned(),
        inbox,
        served_by,
        task,
    }
}

/// The original client's reader: GET /poll without last_event_id, one event per answer, until
/// `stop`; several pollers of one session share `inbox`.
pub fn legacy_poller(name: &str, client: Client, inbox: Inbox, stop: Arc<AtomicBool>) -> Reader {
    let sink = inbox.clone();
    let served_by = ServedBy::default();
    let nodes = served_by.clone();
    let task = tokio::spawn(async move {
        let mut troubles = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let reply = client.get("/api/loggedonly/poll").await;
            if is_transient(reply.status) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if reply.status != 200 {
                troubles.push(format!("/poll answered {}: {}", reply.status, reply.body));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            note_node(&nodes, &reply.upstream);
            if reply.body["type"] == "ResyncEvent" {
                troubles.push(format!("/poll: {}", reply.body));
            }
            if let Some(message) = message_id(&reply.body) {
                sink.lock().unwrap().push(message);
            }
        }
        troubles
    });
    Reader {
        name: name.to_owned(),
        inbox,
        served_by,
        task,
    }
}

impl Reader {
    pub fn received(&self) -> Vec<u64> {
        self.inbox.lock().unwrap().clone()
    }

    /// Waits for the task (after `stop` was set).
    pub async fn finish(self) -> Outcome {
        let troubles = self.task.await.unwrap();
        let received = self.inbox.lock().unwrap().clone();
        let served_by = self.served_by.lock().unwrap().clone();
        Outcome {
            name: self.name,
            received,
            troubles,
            served_by,
        }
    }
}

/// What one poster did: the ids of its acknowledged (200) posts and how many attempts failed.
#[derive(Default)]
pub struct Posted {
    pub acked: Vec<u64>,
    pub failed: usize,
}

/// Posts `count` messages to `chat` (fewer if `stop` is set first), `pace` apart; a failed post
/// is not repeated with the same text: its message may or may not exist.
pub fn poster(
    client: Client,
    chat: &str,
    tag: &str,
    count: usize,
    pace: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Posted> {
    let (chat, tag) = (chat.to_owned(), tag.to_owned());
    tokio::spawn(async move {
        let mut posted = Posted::default();
        let mut attempt = 0;
        while posted.acked.len() < count && !stop.load(Ordering::SeqCst) {
            attempt += 1;
            let reply = client
                .post(
                    "/api/loggedonly/postMessage",
                    json!({ "chat": chat, "text": format!("{tag} #{attempt}") }),
                )
                .await;
            match reply.body["id"].as_u64() {
                Some(id) if reply.status == 200 => posted.acked.push(id),
                _ if is_transient(reply.status) => posted.failed += 1,
                _ => panic!(
                    "{tag}: postMessage answered {}: {}",
                    reply.status, reply.body
                ),
            }
            tokio::time::sleep(pace).await;
        }
        posted
    })
}

/// Collects the posters' results: every acknowledged id (distinct) and the failed attempts.
pub async fn collect(posters: Vec<JoinHandle<Posted>>) -> (BTreeSet<u64>, usize) {
    let mut acked = BTreeSet::new();
    let mut failed = 0;
    for poster in posters {
        let posted = poster.await.unwrap();
        for id in posted.acked {
            assert!(acked.insert(id), "two posts were acknowledged with id {id}");
        }
        failed += posted.failed;
    }
    (acked, failed)
}

/// Waits until every reader holds every id of `expected` (up to `limit`), then a little longer
/// so that late repeats show too, then stops the readers.
pub async fn drain(
    readers: Vec<Reader>,
    expected: &BTreeSet<u64>,
    stop: &AtomicBool,
    limit: Duration,
) -> Vec<Outcome> {
    let started = Instant::now();
    loop {
        let complete = readers.iter().all(|r| {
            let got: BTreeSet<u64> = r.received().into_iter().collect();
            expected.is_subset(&got)
        });
        if complete || started.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(crate::harness::POLL_TIMEOUT).await;
    stop.store(true, Ordering::SeqCst);
    let mut results = Vec::new();
    for reader in readers {
        results.push(reader.finish().await);
    }
    results
}

/// Checks one member's messages: no id twice, every acknowledged id there; returns a summary.
pub fn assert_each_once(name: &str, received: &[u64], acked: &BTreeSet<u64>) {
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for id in received {
        *counts.entry(*id).or_default() += 1;
    }
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<_> = acked.iter().filter(|id| !counts.contains_key(id)).collect();
    assert!(
        repeated.is_empty() && missing.is_empty(),
        "{name}: {} of {} acknowledged messages missing ({missing:?}), repeated (id, times): {repeated:?}",
        missing.len(),
        acked.len()
    );
}

/// Checks no reader met trouble (a lost queue, a resync, an error answer).
pub fn assert_no_troubles(results: &[Outcome]) {
    let troubles: Vec<_> = results
        .iter()
        .filter(|o| !o.troubles.is_empty())
        .map(|o| format!("{}: {:?}", o.name, o.troubles))
        .collect();
    assert!(troubles.is_empty(), "readers met trouble: {troubles:#?}");
}

/// A short figure line for the test output.
pub fn report(test: &str, acked: usize, failed: usize, results: &[Outcome]) {
    let counts: Vec<usize> = results.iter().map(|o| o.received.len()).collect();
    let nodes: Vec<usize> = results.iter().map(|o| o.served_by.len()).collect();
    println!(
        "{test}: {acked} posts acknowledged, {failed} failed; messages received per reader: \
         {counts:?}; nodes that answered each reader: {nodes:?}"
    );
}
