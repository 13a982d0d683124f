//! Event audiences, payloads, order, queues, acknowledgement and overflow (docs/api.md, Events; docs/design.md, Event delivery).

use crate::helpers::{Client, Resp, Served, TestServer};
use serde_json::json;

#[tokio::test]
async fn guest_login_is_broadcast_to_everyone_including_the_new_user() {
    let server = TestServer::start().await;
    let alice = server.client();
    alice.guest("alice").await;
    let first = alice.poll().await.unwrap();
    let time = first["event"]["Time"].as_i64().unwrap();
    assert_eq!(first["type"], "LoginEvent");
    assert_eq!(
        first["event"],
        json!({"user":"alice","chat":"","Time":time})
    );
    assert!(first["id"].as_u64().unwrap() >= 1);
    let bob = server.client();
    bob.guest("bob").await;
    let seen = alice.drain().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "LoginEvent");
    assert_eq!(seen[0].1["user"], "bob");
    assert_eq!(bob.drain_types().await, ["LoginEvent"]);
}

#[tokio::test]
async fn join_then_system_message_to_members_and_leave_only_to_the_rest() {
    let server = TestServer::start().await;
    let alice = server.guest_in("alice", "Main").await;
    let outsider = server.client();
    outsider.guest("outsider").await;
    alice.drain().await;
    outsider.drain().await;

    let bob = server.guest_in("bob", "Main").await;
    let seen = alice.drain().await;
    let types: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["LoginEvent", "ChatJoinEvent", "SystemMessageChatJoinEvent"]
    );
    let t = seen[1].1["Time"].as_i64().unwrap();
    assert_eq!(
        seen[1].1,
        json!({"user":"bob","chat":"Main","Time":t,"verified":false,"admin":false,"bot":false})
    );
    assert_eq!(seen[2].1, json!({"chat":"Main","user":"bob","time":t}));
    assert_eq!(
        bob.drain_types().await,
        ["LoginEvent", "ChatJoinEvent", "SystemMessageChatJoinEvent"]
    );
    assert_eq!(
        outsider.drain_types().await,
        ["LoginEvent"],
        "non-members get no chat events"
    );

    bob.post("/api/loggedonly/leaveChat", json!({"chat":"Main"}))
        .await
        .assert_ok_empty();
    let seen = alice.drain().await;
    let t = seen[0].1["Time"].as_i64().unwrap();
    assert_eq!(
        seen[0],
        (
            "ChatLeaveEvent".to_owned(),
            json!({"user":"bob","chat":"Main","Time":t})
        )
    );
    assert_eq!(
        seen[1],
        (
            "SystemMessageChatLeaveEvent".to_owned(),
            json!({"chat":"Main","user":"bob","time":t})
        )
    );
    assert_eq!(
        bob.drain_types().await,
        Vec::<String>::new(),
        "the leaver gets neither"
    );
}

#[tokio::test]
async fn messages_reach_members_in_id_order_and_nobody_else() {
    let server = TestServer::start().await;
    let alice = server.guest_in("alice", "Main").await;
    let bob = server.guest_in("bob", "Main").await;
    let carol = server.client();
    carol.guest("carol").await;
    for c in [&alice, &bob, &carol] {
        c.drain().await;
    }
    let mut sent = Vec::new();
    for i in 0..5 {
        let who = if i % 2 == 0 { &alice } else { &bob };
        sent.push(who.say("Main", &format!("m{i}")).await);
    }
    for c in [&alice, &bob] {
        let got: Vec<_> = c
            .drain()
            .await
            .into_iter()
            .map(|(t, e)| {
                assert_eq!(t, "MessageEvent");
                e
            })
            .collect();
        assert_eq!(
            got, sent,
            "sender included, in id order, payload equals the stored message"
        );
    }
    assert!(carol.drain().await.is_empty());
}

#[tokio::test]
async fn logout_cascade_tells_everyone_else_then_the_remaining_members() {
    let server = TestServer::start().await;
    let alice = server.guest_in("alice", "Main").await;
    let bob = server.guest_in("bob", "Main").await;
    let carol = server.client();
    carol.guest("carol").await;
    for c in [&alice, &bob, &carol] {
        c.drain().await;
    }
    bob.post("/api/loggedonly/logout", json!({}))
        .await
        .assert_ok_empty();
    assert_eq!(
        alice.drain_types().await,
        [
            "LogoutEvent",
            "ChatLeaveEvent",
            "SystemMessageChatLeaveEvent"
        ]
    );
    let carol_saw = carol.drain().await;
    assert_eq!(carol_saw.len(), 1);
    let t = carol_saw[0].1["Time"].as_i64().unwrap();
    assert_eq!(
        carol_saw[0],
        (
            "LogoutEvent".to_owned(),
            json!({"user":"bob","chat":"","Time":t})
        )
    );
}

#[tokio::test]
async fn a_user_with_two_devices_stays_online_until_the_last_logs_out() {
    let server = TestServer::start().await;
    let watcher = server.client();
    watcher.guest("watcher").await;
    let phone = server.client();
    phone.registered("quinn").await;
    let laptop = server.client();
    let r = laptop
        .post(
            "/api/authorize",
            json!({"user":"quinn","password":"password123"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let logins = watcher.drain().await;
    let quinn_logins = logins
        .iter()
        .filter(|(t, e)| t == "LoginEvent" && e["user"] == "quinn")
        .count();
    assert_eq!(
        quinn_logins, 1,
        "the second device is not a new login: {logins:?}"
    );
    phone
        .post("/api/loggedonly/logout", json!({}))
        .await
        .assert_ok_empty();
    assert!(watcher.drain().await.is_empty());
    laptop
        .post("/api/loggedonly/logout", json!({}))
        .await
        .assert_ok_empty();
    assert_eq!(watcher.drain_types().await, ["LogoutEvent"]);
}

#[tokio::test]
async fn chat_creation_and_removal_are_broadcast() {
    let server = TestServer::start().await;
    let root = server.client();
    root.registered("root").await;
    let guest = server.client();
    guest.guest("rita").await;
    guest.drain().await;
    root.post("/api/adminonly/createChat", json!({"chat":"News"}))
        .await
        .assert_ok_empty();
    guest.join("News").await;
    guest.drain().await;
    root.post("/api/adminonly/removeChat", json!({"chat":"News"}))
        .await
        .assert_ok_empty();
    let seen = guest.drain().await;
    assert_eq!(seen.len(), 1, "members get only ChatRemovedEvent: {seen:?}");
    let t = seen[0].1["Time"].as_i64().unwrap();
    assert_eq!(
        seen[0],
        (
            "ChatRemovedEvent".to_owned(),
            json!({"chat":"News","Time":t})
        )
    );
    root.post("/api/adminonly/createChat", json!({"chat":"Later"}))
        .await
        .assert_ok_empty();
    let seen = guest.drain().await;
    let t = seen[0].1["Time"].as_i64().unwrap();
    assert_eq!(
        seen,
        vec![(
            "ChatCreatedEvent".to_owned(),
            json!({"chat":"Later","Time":t})
        )]
    );
}

#[tokio::test]
async fn events_buffer_between_polls_and_unacknowledged_ones_come_again() {
    let server = TestServer::start().await;
    let c = server.guest_in("sam", "Main").await;
    for i in 0..3 {
        c.say("Main", &format!("b{i}")).await;
    }
    // With last_event_id the event stays until acknowledged.
    let first = c.get("/api/loggedonly/poll?last_event_id=0").await.json();
    let again = c.get("/api/loggedonly/poll?last_event_id=0").await.json();
    assert_eq!(
        first, again,
        "a response that was not acknowledged comes again"
    );
    let id = first["id"].as_u64().unwrap();
    let next = c
        .get(&format!("/api/loggedonly/poll?last_event_id={id}"))
        .await
        .json();
    assert_eq!(next["id"].as_u64().unwrap(), id + 1);
    let rest = c.drain().await;
    let texts: Vec<_> = rest
        .iter()
        .filter(|(t, _)| t == "MessageEvent")
        .map(|(_, e)| e["text"].clone())
        .collect();
    assert_eq!(texts, [json!("b0"), json!("b1"), json!("b2")]);
    c.get("/api/loggedonly/poll?last_event_id=x")
        .await
        .assert_error(400, "cannot parse data");
}

#[tokio::test]
async fn explicit_queues_batch_acknowledge_and_each_get_every_event() {
    let server = TestServer::start().await;
    let c = server.client();
    c.guest("tom").await;
    let q1 = c.post("/api/loggedonly/queues", json!({})).await.json();
    let q2 = c.post("/api/loggedonly/queues", json!({})).await.json();
    assert_eq!(q1["last_event_id"], 0);
    assert_ne!(q1["queue_id"], q2["queue_id"]);
    c.join("Main").await;
    c.say("Main", "both").await;
    for q in [&q1, &q2] {
        let qid = q["queue_id"].as_str().unwrap();
        let raw = c
            .get(&format!(
                "/api/loggedonly/events?queue_id={qid}&last_event_id=0"
            ))
            .await;
        let batch = raw.json();
        let events = batch["events"].as_array().unwrap();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "ChatJoinEvent",
                "SystemMessageChatJoinEvent",
                "MessageEvent"
            ]
        );
        assert!(raw.body.starts_with(r#"{"events":[{"id":1,"type":"ChatJoinEvent","event":{"user":"tom","chat":"Main","Time":"#), "{}", raw.body);
        // Not acknowledged: the same batch again; acknowledged: nothing left until the timeout.
        let again = c
            .get(&format!(
                "/api/loggedonly/events?queue_id={qid}&last_event_id=0"
            ))
            .await
            .json();
        assert_eq!(again, batch);
        let last = events.last().unwrap()["id"].as_u64().unwrap();
        let empty = c
            .get(&format!(
                "/api/loggedonly/events?queue_id={qid}&last_event_id={last}"
            ))
            .await
            .json();
        assert_eq!(empty, json!({"events": []}));
    }
    c.get("/api/loggedonly/events?queue_id=nope&last_event_id=0")
        .await
        .assert_error(400, "bad event queue id");
    c.get("/api/loggedonly/events")
        .await
        .assert_error(400, "bad event queue id");
    let other = server.client();
    other.guest("ursula").await;
    let qid = q1["queue_id"].as_str().unwrap();
    other
        .get(&format!(
            "/api/loggedonly/events?queue_id={qid}&last_event_id=0"
        ))
        .await
        .assert_error(400, "bad event queue id");
}

#[tokio::test]
async fn a_parked_poll_is_woken_by_a_new_event() {
    let server = TestServer::with_config("poll_timeout = \"20s\"").await;
    let listener = server.guest_in("vera", "Main").await;
    listener.drain().await.len();
    let talker = server.client();
    talker.guest("walt").await;
    let waiting = tokio::spawn({
        let listener = listener.clone();
        async move {
            let started = std::time::Instant::now();
            let mut types = Vec::new();
            while types.last().map(String::as_str) != Some("MessageEvent") {
                let envelope = listener.poll().await.expect("an event, not a timeout");
                types.push(envelope["type"].as_str().unwrap().to_owned());
            }
            started.elapsed()
        }
    });
    talker.join("Main").await;
    talker.say("Main", "wake up").await;
    let waited = waiting.await.unwrap();
    assert!(
        waited < std::time::Duration::from_secs(5),
        "woken after {waited:?}"
    );
}

#[tokio::test]
async fn overflow_gives_a_resync_on_poll_and_a_bad_queue_on_events() {
    let server = TestServer::with_config("event_queue_capacity = 10").await;
    let c = server.client();
    c.guest("xena").await;
    let q = c.post("/api/loggedonly/queues", json!({})).await.json();
    c.join("Main").await;
    for i in 0..12 {
        c.say("Main", &format!("flood {i}")).await;
    }
    let qid = q["queue_id"].as_str().unwrap();
    c.get(&format!(
        "/api/loggedonly/events?queue_id={qid}&last_event_id=0"
    ))
    .await
    .assert_error(400, "bad event queue id");
    let first = c.poll().await.unwrap();
    assert_eq!(first["type"], "ResyncEvent");
    assert!(first["event"]["reason"].is_string());
    c.say("Main", "after").await;
    let seen = c.drain().await;
    assert_eq!(
        seen.last().unwrap().1["text"],
        "after",
        "the queue carries on: {seen:?}"
    );
}

/// `GET /events` on a queue, without acknowledging anything.
async fn queue_events(c: &Client, queue: &str) -> Resp {
    c.get(&format!(
        "/api/loggedonly/events?queue_id={queue}&last_event_id=0"
    ))
    .await
}

/// The texts of the messages waiting in a queue.
async fn queued_texts(c: &Client, queue: &str) -> Vec<String> {
    let r = queue_events(c, queue).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "MessageEvent")
        .map(|e| e["event"]["text"].as_str().unwrap().to_owned())
        .collect()
}

async fn open_queue(c: &Client) -> String {
    let r = c.post("/api/loggedonly/queues", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["queue_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn opening_one_queue_too_many_drops_the_least_recently_polled() {
    // Relaxed durability delivers each message before postMessage answers, so reads need not wait.
    let server =
        TestServer::with_config("max_queues_per_session = 3\ndurability = \"relaxed\"").await;
    let c = server.guest_in("yves", "Main").await;
    let q1 = open_queue(&c).await;
    let q2 = open_queue(&c).await;
    let q3 = open_queue(&c).await;
    c.say("Main", "one").await;
    // q1 is polled, so q2, never polled since it was opened, is the one to go.
    assert_eq!(queued_texts(&c, &q1).await, ["one"]);
    let q4 = open_queue(&c).await;
    queue_events(&c, &q2)
        .await
        .assert_error(400, "bad event queue id");
    c.say("Main", "two").await;
    assert_eq!(queued_texts(&c, &q1).await, ["one", "two"]);
    assert_eq!(queued_texts(&c, &q3).await, ["one", "two"]);
    assert_eq!(queued_texts(&c, &q4).await, ["two"]);
    // Another session's queues are not counted against this one.
    let other = server.guest_in("zoe", "Main").await;
    let theirs = open_queue(&other).await;
    open_queue(&c).await;
    c.say("Main", "three").await;
    assert_eq!(queued_texts(&other, &theirs).await, ["three"]);
}

/// Queues opened by one session, then messages every queue receives.
/// The flood of the security review: 20,000 queues of one session, then 1,000 messages.
const FLOOD_QUEUES: usize = 20_000;
const FLOOD_MESSAGES: usize = 1_000;

/// Opens `queues` queues over a few connections, then posts `messages` messages.
async fn flood(
    http: &reqwest::Client,
    url: impl Fn(&str) -> String,
    queues: usize,
    messages: usize,
) {
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (http, url) = (http.clone(), url("/api/loggedonly/queues"));
            tokio::spawn(async move {
                for _ in 0..queues / 4 {
                    let r = http.post(&url).json(&json!({})).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let post = url("/api/loggedonly/postMessage");
    for i in 0..messages {
        let r = http
            .post(&post)
            .json(&json!({"chat": "Main", "text": format!("m{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn a_flood_of_queues_of_one_session_stays_within_the_cap() {
    // A smaller flood than the RSS test below: the hub's own counts show the bound exactly.
    const QUEUES: usize = 2_000;
    const MESSAGES: usize = 200;
    // Relaxed durability delivers each message before postMessage answers.
    let server =
        TestServer::with_config("durability = \"relaxed\"\nevent_queue_capacity = 2000").await;
    let c = server.guest_in("flo", "Main").await;
    c.drain().await;
    let started = std::time::Instant::now();
    flood(&c.http, |path| c.url(path), QUEUES, MESSAGES).await;
    let stats = server.app.as_ref().unwrap().hub_stats();
    eprintln!("{stats:?} after {:?}", started.elapsed());
    assert_eq!(stats.explicit_queues, 16);
    assert_eq!(stats.evicted, (QUEUES - 16) as u64);
    assert!(
        stats.buffered <= (16 + 1) * MESSAGES,
        "{} events buffered",
        stats.buffered
    );
    assert_eq!(stats.overflowed, 0);
}

#[tokio::test]
async fn twenty_thousand_queues_of_one_session_keep_the_server_small() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n{}durability = \"relaxed\"\nevent_queue_capacity = 2000\n[rate_limit]\nenabled = false\n",
            crate::helpers::store_lines(&dir.path().join("d")).await
        ),
    )
    .unwrap();
    let mut served = Served::start(&config);
    served.assert_on_test_storage();
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    for (path, body) in [
        ("/api/login", json!({"user": "rss"})),
        ("/api/loggedonly/joinChat", json!({"chat": "Main"})),
    ] {
        let r = http
            .post(served.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let before = served.rss_kib();
    let started = std::time::Instant::now();
    flood(&http, |path| served.url(path), FLOOD_QUEUES, FLOOD_MESSAGES).await;
    let after = served.rss_kib();
    eprintln!(
        "server RSS {before} KiB -> {after} KiB after {:?}",
        started.elapsed()
    );
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    served.signal("-TERM");
    assert_eq!(served.child.wait().unwrap().code(), Some(0));
}

async fn open_queue_for(c: &Client, body: serde_json::Value) -> Resp {
    c.post("/api/loggedonly/queues", body).await
}

/// The types of what a queue holds now.
async fn queued_types(c: &Client, queue: &str) -> Vec<String> {
    let r = queue_events(c, queue).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_queue_opened_with_event_types_holds_only_those_and_the_legacy_queue_holds_all() {
    let server = TestServer::with_config("durability = \"relaxed\"").await;
    let ann = server.guest_in("ann", "Main").await;
    let r = open_queue_for(&ann, json!({ "event_types": ["MessageEvent"] })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let messages = r.json()["queue_id"].as_str().unwrap().to_owned();
    let everything = open_queue(&ann).await;
    ann.drain().await;
    let bob = server.guest_in("bob", "Main").await;
    bob.say("Main", "hello").await;
    assert_eq!(queued_types(&ann, &messages).await, ["MessageEvent"]);
    // Its ids count only what it holds.
    let held = queue_events(&ann, &messages).await.json();
    assert_eq!(held["events"][0]["id"], 1);
    assert_eq!(
        queued_types(&ann, &everything).await,
        [
            "LoginEvent",
            "ChatJoinEvent",
            "SystemMessageChatJoinEvent",
            "MessageEvent"
        ]
    );
    assert_eq!(
        ann.drain_types().await,
        [
            "LoginEvent",
            "ChatJoinEvent",
            "SystemMessageChatJoinEvent",
            "MessageEvent"
        ],
        "the legacy /poll keeps every type"
    );
}

#[tokio::test]
async fn unknown_event_types_and_malformed_lists_are_refused_and_open_nothing() {
    let server = TestServer::with_config("max_queues_per_session = 1").await;
    let ann = server.guest_in("ann", "Main").await;
    let kept = open_queue(&ann).await;
    open_queue_for(
        &ann,
        json!({ "event_types": ["MessageEvent", "MesageEvent"] }),
    )
    .await
    .assert_error(400, "unknown event type: MesageEvent");
    for bad in [
        json!({ "event_types": "MessageEvent" }),
        json!({ "event_types": [1] }),
        json!({ "event_types": {"MessageEvent": true} }),
    ] {
        open_queue_for(&ann, bad)
            .await
            .assert_error(400, "cannot parse data");
    }
    ann.post_raw("/api/loggedonly/queues", "[]")
        .await
        .assert_error(400, "cannot parse data");
    // Nothing was opened: the one queue allowed is still there.
    assert_eq!(queue_events(&ann, &kept).await.status, 200);
    // An empty body, `{}` and `null` all mean every type, as before the field existed.
    for body in ["", "{}", "{\"event_types\": null}"] {
        let r = ann.post_raw("/api/loggedonly/queues", body).await;
        assert_eq!(r.status, 200, "{body}: {}", r.body);
    }
}

#[tokio::test]
async fn a_parked_poll_is_not_woken_by_an_event_its_queue_does_not_take() {
    let server = TestServer::with_config("durability = \"relaxed\"\npoll_timeout = \"5s\"").await;
    let ann = server.guest_in("ann", "Main").await;
    let r = open_queue_for(&ann, json!({ "event_types": ["MessageEvent"] })).await;
    let queue = r.json()["queue_id"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let poll = tokio::spawn({
        let ann = ann.clone();
        async move { queue_events(&ann, &queue).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // A login, a join and its system message: none of them is for this queue.
    let bob = server.guest_in("bob", "Main").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!poll.is_finished(), "woken by an event it does not take");
    bob.say("Main", "now").await;
    let answer = poll.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let events = answer.json()["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "MessageEvent");
    assert_eq!(events[0]["event"]["text"], "now");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}
