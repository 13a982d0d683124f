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
