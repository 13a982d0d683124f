//! The binary gets SIGTERM while clients are parked on `/events` and the legacy `/poll`, and is
//! started again on the same data directory and port: parked polls get their empty 200, the
//! process exits 0, and after the restart every listener gets every stored message once, in order,
//! with the same cookies and queue ids (docs/design.md, Sessions and presence; Event delivery,
//! Restarts). With `TEST_STORAGE=postgres` the binary keeps its data in PostgreSQL.

mod listening;

use crate::helpers::{Served, natter_binary};
use crate::scrape;
use crate::stopping::{wait_exit, wait_log};
use crate::wire::{Session, Wire};
use listening::{Progress, check_listener, listen};
use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const CHATS: [&str; 2] = ["Main", "Side"];
const LISTENERS: usize = 3;
const QUEUES_EACH: usize = 2;
/// Messages posted before the SIGTERM, and again after the restart.
const EACH_SIDE: usize = 40;
/// Texts of the last message in each chat: a listener has everything once it saw both.
const END: &str = "end";

/// The binary's config; with `TEST_STORAGE=postgres`, on a database of its own (kept across the restart).
async fn write_config(dir: &Path, listen: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let store = crate::helpers::store_lines(&dir.join("data")).await;
    std::fs::write(
        &path,
        format!(
            "listen = \"{listen}\"\n{store}poll_timeout = \"30s\"\n\
             chats = [\"Main\", \"Side\"]\nlast_messages = 1000\n\
             [rate_limit]\nenabled = false\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        ),
    )
    .unwrap();
    path
}

/// Posts `count` messages alternating between the chats; every one must get a 200.
async fn post_series(wire: &Wire, poster: &Session, from: usize, count: usize) {
    for n in from..from + count {
        let body = json!({ "chat": CHATS[n % CHATS.len()], "text": format!("m{n}") });
        wire.post_ok(poster, "/api/loggedonly/postMessage", body)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Posts racing the shutdown until `stopped`: texts that got a 200, and texts whose fate is unknown.
async fn race_posts(
    wire: Wire,
    poster: Session,
    racer: usize,
    stopped: Arc<AtomicBool>,
) -> (Vec<String>, Vec<String>) {
    let (mut acked, mut unknown) = (Vec::new(), Vec::new());
    let mut n = 0;
    while !stopped.load(Ordering::Relaxed) {
        let text = format!("race{racer}-{n}");
        n += 1;
        let body = json!({ "chat": CHATS[racer % CHATS.len()], "text": text });
        match wire
            .call(
                Some(&poster),
                Method::POST,
                "/api/loggedonly/postMessage",
                Some(body),
            )
            .await
        {
            Ok(answer) if answer.status == 200 => acked.push(text),
            Ok(answer) => panic!(
                "a post racing the shutdown: {} {}",
                answer.status,
                answer.text()
            ),
            // Never sent: cannot be stored.
            Err(e) if e.is_connect() => {}
            Err(_) => unknown.push(text),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (acked, unknown)
}

/// Stored messages of `chat`, oldest first, as (id, text).
async fn history(wire: &Wire, member: &Session, chat: &str) -> Vec<(u64, String)> {
    let answer = wire
        .post_ok(
            member,
            "/api/loggedonly/getLastMessages",
            json!({ "chat": chat }),
        )
        .await
        .unwrap();
    answer
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Waits until `predicate` holds on a metrics scrape.
async fn wait_metrics(url: &str, what: &str, predicate: impl Fn(&str) -> bool) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = scrape::scrape(&http, url).await;
        if predicate(&text) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_restart_keep_parked_listeners_whole() {
    tokio::time::timeout(Duration::from_secs(240), scenario())
        .await
        .expect("the scenario finished in time");
}

async fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    let binary = natter_binary();
    let mut served = Served::start_binary(&binary, &write_config(dir.path(), "127.0.0.1:0").await);
    served.assert_on_test_storage();
    let metrics = scrape::metrics_url(&served);
    let wire = Wire::new(&served.addr, Duration::from_secs(60));

    let poster = wire.guest("poster").await.unwrap();
    let mut listeners = Vec::new();
    for i in 0..=LISTENERS {
        listeners.push(wire.guest(&format!("listener{i}")).await.unwrap());
    }
    for session in listeners.iter().chain([&poster]) {
        for chat in CHATS {
            wire.join(session, chat).await.unwrap();
        }
    }
    // The last listener reads the legacy `/poll`, acknowledging from its first event on.
    let legacy = listeners.pop().unwrap();

    let progress = Arc::new(Progress::default());
    let mut tasks = Vec::new();
    for session in &listeners {
        for _ in 0..QUEUES_EACH {
            let queue = wire.open_queue(session).await.unwrap();
            let task = listen(wire.clone(), session.clone(), Some(queue), progress.clone());
            tasks.push(tokio::spawn(task));
        }
    }
    let task = listen(wire.clone(), legacy.clone(), None, progress.clone());
    tasks.push(tokio::spawn(task));
    let parked_polls = tasks.len();

    // Messages flow while the listeners poll; then wait until every poll is parked again.
    post_series(&wire, &poster, 0, EACH_SIDE).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.messages.load(Ordering::Relaxed) < EACH_SIDE * parked_polls {
        assert!(
            Instant::now() < deadline,
            "listeners caught up before the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_metrics(&metrics, "every listener parked", |text| {
        scrape::value(text, "natter_parked_polls") == parked_polls as f64
    })
    .await;

    // Posts race the SIGTERM from just before it: the ones that got a 200 must come back after
    // the restart. Every poll is parked now, so the first answer each gets after this instant is
    // the one to its parked poll.
    let term_sent = Instant::now();
    let stopped = Arc::new(AtomicBool::new(false));
    let racers: Vec<_> = (0..CHATS.len())
        .map(|r| tokio::spawn(race_posts(wire.clone(), poster.clone(), r, stopped.clone())))
        .collect();
    served.signal("-TERM");
    let (status, took) = wait_exit(&mut served, Duration::from_secs(15)).await;
    let exited = Instant::now();
    stopped.store(true, Ordering::Relaxed);
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    println!("natter exited {status:?} {took:?} after SIGTERM");
    wait_log(&served, "stopped").await;
    let (mut race_acked, mut race_unknown) = (Vec::new(), Vec::new());
    for racer in racers {
        let (acked, unknown) = racer.await.unwrap();
        race_acked.extend(acked);
        race_unknown.extend(unknown);
    }

    // Same data directory, same port: the clients keep their URL, cookies and queue ids.
    let config = write_config(dir.path(), &served.addr).await;
    let mut restarted = Served::start_binary(&binary, &config);
    assert_eq!(restarted.addr, served.addr);
    post_series(&wire, &poster, EACH_SIDE, EACH_SIDE).await;
    for chat in CHATS {
        let body = json!({ "chat": chat, "text": END });
        wire.post_ok(&poster, "/api/loggedonly/postMessage", body)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    for task in tasks {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(listening) => seen.push(listening.unwrap()),
            Err(_) => {
                progress.stop.store(true, Ordering::Relaxed);
                panic!("a listener did not see the end markers in time");
            }
        }
    }

    // The truth is what was stored: every 200 is there, and every listener saw exactly it.
    let mut stored: Vec<(u64, String)> = Vec::new();
    for chat in CHATS {
        stored.extend(history(&wire, &poster, chat).await);
    }
    stored.sort();
    let texts: Vec<&str> = stored.iter().map(|(_, t)| t.as_str()).collect();
    for n in 0..2 * EACH_SIDE {
        assert!(texts.contains(&format!("m{n}").as_str()), "m{n} is stored");
    }
    for text in &race_acked {
        assert!(
            texts.contains(&text.as_str()),
            "{text} got a 200 and is stored"
        );
    }
    println!(
        "{} posts raced the shutdown and got a 200, {} got no answer; {} messages stored",
        race_acked.len(),
        race_unknown.len(),
        stored.len()
    );
    for listening in &seen {
        check_listener(listening, &stored, term_sent, exited);
    }
    for session in listeners.iter().chain([&legacy]) {
        let chats = wire
            .call(Some(session), Method::GET, "/api/loggedonly/getChats", None)
            .await
            .unwrap();
        assert_eq!(chats.status, 200, "{}: the session survived", session.name);
        let joined = chats
            .json()
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["joined"] == true);
        assert!(
            joined,
            "{}: memberships survived: {}",
            session.name,
            chats.text()
        );
    }
    // "restored N event queues", not "event queues from the last run were not restored".
    wait_log(&restarted, "restored ").await;

    restarted.signal("-TERM");
    let (status, _) = wait_exit(&mut restarted, Duration::from_secs(15)).await;
    assert!(status.success(), "second exit: {status:?}");
}
