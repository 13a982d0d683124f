//! Restarts: sessions, memberships and (after a graceful shutdown) undelivered events survive (docs/design.md, Event delivery).

use crate::helpers::TestServer;
use serde_json::json;

#[tokio::test]
async fn graceful_restart_keeps_sessions_memberships_queues_and_events() {
    let mut server = TestServer::start().await;
    let alice = server.guest_in("alice", "Main").await;
    let queue = alice.post("/api/loggedonly/queues", json!({})).await.json();
    let bob = server.client();
    bob.registered("bob").await;
    bob.join("Main").await;
    alice.drain().await;
    let sent = bob.say("Main", "before restart").await;

    server.restart(&[&alice, &bob]).await;

    let chats = alice.get("/api/loggedonly/getChats").await.json();
    assert_eq!(chats[0]["joined"], true, "membership survived: {chats}");
    assert_eq!(chats[0]["users"].as_array().unwrap().len(), 2);
    let seen = alice.drain().await;
    assert_eq!(
        seen,
        vec![("MessageEvent".to_owned(), sent.clone())],
        "undelivered event kept"
    );
    let qid = queue["queue_id"].as_str().unwrap();
    let batch = alice
        .get(&format!(
            "/api/loggedonly/events?queue_id={qid}&last_event_id=0"
        ))
        .await
        .json();
    let texts: Vec<_> = batch["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "MessageEvent")
        .map(|e| e["event"]["text"].clone())
        .collect();
    assert_eq!(
        texts,
        [json!("before restart")],
        "the explicit queue came back: {batch}"
    );
    let next = bob.say("Main", "after restart").await;
    assert!(next["id"].as_u64().unwrap() > sent["id"].as_u64().unwrap());
    server.stop().await;
}

#[tokio::test]
async fn a_removed_config_chat_comes_back_at_restart_and_online_clients_hear_of_it() {
    let mut server = TestServer::start().await;
    let admin = server.client();
    admin.registered("root").await;
    admin
        .post("/api/adminonly/removeChat", json!({"chat": "Main"}))
        .await
        .assert_ok_empty();
    assert_eq!(
        admin.drain_types().await,
        ["LoginEvent", "ChatRemovedEvent"]
    );

    server.restart(&[&admin]).await;

    let seen = admin.drain().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, "ChatCreatedEvent");
    assert_eq!(seen[0].1["chat"], "Main");
    let chats = admin.get("/api/loggedonly/getChats").await.json();
    assert_eq!(chats[0]["chat"], "Main", "{chats}");
    server.stop().await;
}

#[tokio::test]
async fn offline_registered_session_comes_back_with_loggedonly_login() {
    let mut server = TestServer::with_config("inactivity_timeout = \"1s\"").await;
    let c = server.client();
    c.registered("olive").await;
    // No requests for longer than the inactivity timeout: the sweeper takes the session offline.
    tokio::time::sleep(std::time::Duration::from_millis(1800)).await;
    let offline = c.get("/api/loggedonly/getChats").await.status == 401;
    assert!(offline, "the sweeper took the session offline");
    server.restart(&[&c]).await;
    let r = c.post("/api/loggedonly/login", json!({})).await;
    assert_eq!(
        r.body,
        r#"{"user":"olive","verified":true,"admin":false,"bot":false}"#
    );
    assert_eq!(c.get("/api/loggedonly/getChats").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_answers_parked_polls_with_an_empty_200() {
    let mut server = TestServer::with_config("poll_timeout = \"60s\"").await;
    let c = server.client();
    c.guest("parked").await;
    assert_eq!(c.poll().await.unwrap()["type"], "LoginEvent");
    let parked = tokio::spawn({
        let c = c.clone();
        async move {
            let started = std::time::Instant::now();
            let r = c.get("/api/loggedonly/poll").await;
            (r.status, r.body, started.elapsed())
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stopping = std::time::Instant::now();
    server.stop().await;
    assert!(stopping.elapsed() < std::time::Duration::from_secs(5));
    let (status, body, waited) = parked.await.unwrap();
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(
        waited < std::time::Duration::from_secs(10),
        "answered at shutdown, not at the timeout"
    );
}

/// Listeners parked on `/events` across a graceful restart lose and repeat nothing: their queues
/// come back with the same ids, and polling resumes where it left off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_listeners_see_every_message_once_across_a_graceful_restart() {
    const EACH_SIDE: u64 = 30;
    let mut server = TestServer::with_config("poll_timeout = \"2s\"").await;
    let poster = server.guest_in("poster", "Main").await;
    let mut listeners = Vec::new();
    for i in 0..3 {
        let client = server.guest_in(&format!("listener{i}"), "Main").await;
        let queue = client
            .post("/api/loggedonly/queues", json!({}))
            .await
            .json();
        listeners.push((client, queue["queue_id"].as_str().unwrap().to_owned()));
    }
    let tasks: Vec<_> = listeners
        .iter()
        .map(|(client, queue_id)| {
            let (client, queue_id) = (client.clone(), queue_id.clone());
            tokio::spawn(async move {
                let (mut last, mut texts) = (0u64, Vec::new());
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while texts.len() < 2 * EACH_SIDE as usize && std::time::Instant::now() < deadline {
                    let url = client.url(&format!(
                        "/api/loggedonly/events?queue_id={queue_id}&last_event_id={last}"
                    ));
                    // While the server restarts, requests fail: try again.
                    let Ok(response) = client.http.get(url).send().await else {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    };
                    assert_eq!(response.status(), 200, "the queue survived the restart");
                    let batch: serde_json::Value = response.json().await.unwrap();
                    for event in batch["events"].as_array().unwrap() {
                        let id = event["id"].as_u64().unwrap();
                        assert!(id > last, "event ids keep increasing");
                        last = id;
                        if event["type"] == "MessageEvent" {
                            texts.push(event["event"]["text"].as_str().unwrap().to_owned());
                        }
                    }
                }
                texts
            })
        })
        .collect();
    for n in 0..EACH_SIDE {
        poster.say("Main", &format!("m{n}")).await;
    }
    // Give the listeners a moment to park, then restart under them.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut clients: Vec<&crate::helpers::Client> = listeners.iter().map(|(c, _)| c).collect();
    clients.push(&poster);
    server.restart(&clients).await;
    for n in EACH_SIDE..2 * EACH_SIDE {
        poster.say("Main", &format!("m{n}")).await;
    }
    let expected: Vec<String> = (0..2 * EACH_SIDE).map(|n| format!("m{n}")).collect();
    for task in tasks {
        assert_eq!(
            task.await.unwrap(),
            expected,
            "every message once, in order"
        );
    }
    server.stop().await;
}
