//! History paging, message deletion and kicking guests (docs/api.md, History and moderation).

use crate::helpers::{Client, TestServer};
use serde_json::{Value, json};
use std::time::Duration;

fn ids(page: &Value) -> Vec<u64> {
    page.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

async fn page(c: &Client, body: Value) -> Value {
    let r = c.post("/api/loggedonly/getMessages", body).await;
    assert_eq!(r.status, 200, "getMessages: {}", r.body);
    r.json()
}

/// Opens an explicit queue and returns its id.
async fn open_queue(c: &Client) -> String {
    let q = c.post("/api/loggedonly/queues", json!({})).await.json();
    q["queue_id"].as_str().unwrap().to_owned()
}

/// Every event type and payload waiting on an explicit queue (none after the poll timeout).
async fn queued(c: &Client, queue: &str) -> Vec<(String, Value)> {
    let batch = c
        .get(&format!(
            "/api/loggedonly/events?queue_id={queue}&last_event_id=0"
        ))
        .await
        .json();
    batch["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["event"].clone()))
        .collect()
}

async fn delete(c: &Client, chat: &str, id: &Value) -> crate::helpers::Resp {
    c.post(
        "/api/loggedonly/deleteMessage",
        json!({"chat": chat, "id": id}),
    )
    .await
}

#[tokio::test]
async fn paging_walks_a_500_message_chat_back_to_the_start() {
    let server = TestServer::with_config("durability = \"relaxed\"").await;
    let alice = server.guest_in("alice", "Main").await;
    let mut sent = Vec::new();
    for i in 0..500 {
        sent.push(
            alice.say("Main", &format!("m{i}")).await["id"]
                .as_u64()
                .unwrap(),
        );
    }
    let newest = page(&alice, json!({"chat": "Main"})).await;
    assert_eq!(
        ids(&newest),
        sent[450..],
        "default: the newest 50, oldest first"
    );
    assert_eq!(newest[49]["text"], "m499");
    assert_eq!(newest[49]["chat"], "Main");
    let mut seen: Vec<u64> = Vec::new();
    let mut before: Option<u64> = None;
    let mut pages = 0;
    loop {
        let body = match before {
            Some(id) => json!({"chat": "main", "before": id, "limit": 73}),
            None => json!({"chat": "main", "limit": 73}),
        };
        let got = ids(&page(&alice, body).await);
        if got.is_empty() {
            break;
        }
        assert!(got.len() <= 73);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "oldest first");
        before = Some(got[0]);
        seen.splice(0..0, got);
        pages += 1;
    }
    assert_eq!(pages, 7);
    assert_eq!(seen, sent, "no gap, no duplicate");
    let big = page(&alice, json!({"chat": "Main", "limit": 200})).await;
    assert_eq!(ids(&big), sent[300..]);
    let one = page(
        &alice,
        json!({"chat": "Main", "before": sent[1], "limit": 1}),
    )
    .await;
    assert_eq!(ids(&one), [sent[0]]);
}

#[tokio::test]
async fn get_messages_limits_and_errors() {
    let server = TestServer::start().await;
    let alice = server.guest_in("alice", "Main").await;
    alice.say("Main", "hello").await;
    for limit in [json!(0), json!(201), json!(-1), json!(100000)] {
        alice
            .post(
                "/api/loggedonly/getMessages",
                json!({"chat": "Main", "limit": limit}),
            )
            .await
            .assert_error(400, "invalid limit");
    }
    for body in [
        json!({"chat": "Main", "limit": "5"}),
        json!({"chat": "Main", "limit": 1.5}),
        json!({"chat": "Main", "before": "x"}),
        json!({"chat": "Main", "before": -3}),
        json!({"chat": 7}),
    ] {
        alice
            .post("/api/loggedonly/getMessages", body)
            .await
            .assert_error(400, "cannot parse data");
    }
    alice
        .post_raw("/api/loggedonly/getMessages", "[\"Main\"]")
        .await
        .assert_error(400, "cannot parse data");
    for chat in ["Nope", ""] {
        alice
            .post("/api/loggedonly/getMessages", json!({"chat": chat}))
            .await
            .assert_error(400, "user not logged in such chat");
    }
    let bob = server.client();
    bob.guest("bob").await;
    bob.post("/api/loggedonly/getMessages", json!({"chat": "Main"}))
        .await
        .assert_error(400, "user not logged in such chat");
    server
        .client()
        .post("/api/loggedonly/getMessages", json!({"chat": "Main"}))
        .await
        .assert_error(401, "user not logged in");
    let page = page(
        &alice,
        json!({"chat": "Main", "before": null, "limit": null}),
    )
    .await;
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["text"], "hello");
}

#[tokio::test]
async fn deletion_rights_author_other_user_guest_and_admin() {
    let server = TestServer::start().await;
    let root = server.client();
    root.registered("root").await;
    root.join("Main").await;
    let reg = server.client();
    reg.registered("reggie").await;
    reg.join("Main").await;
    let guest = server.guest_in("gus", "Main").await;
    let other = server.guest_in("otto", "Main").await;

    let by_reg = reg.say("Main", "registered words").await;
    let by_guest = guest.say("Main", "guest words").await;
    let by_root = root.say("Main", "admin words").await;

    // Neither another guest nor another registered user may delete.
    for (who, msg) in [(&other, &by_reg), (&other, &by_guest), (&reg, &by_guest)] {
        delete(who, "Main", &msg["id"])
            .await
            .assert_error(403, "not allowed");
    }
    delete(&guest, "Main", &by_root["id"])
        .await
        .assert_error(403, "not allowed");
    // The author may.
    delete(&reg, "Main", &by_reg["id"]).await.assert_ok_empty();
    delete(&guest, "Main", &by_guest["id"])
        .await
        .assert_ok_empty();
    delete(&reg, "Main", &by_reg["id"])
        .await
        .assert_error(400, "no such message");
    // A verified admin may delete anyone's.
    let victim = other.say("Main", "rude words").await;
    delete(&root, "Main", &victim["id"]).await.assert_ok_empty();
    let left: Vec<Value> = page(&root, json!({"chat": "Main"}))
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(left, [json!("admin words")]);
    // Errors.
    delete(&root, "Main", &json!(999_999))
        .await
        .assert_error(400, "no such message");
    delete(&root, "Nope", &by_root["id"])
        .await
        .assert_error(400, "user not logged in such chat");
    root.post(
        "/api/loggedonly/deleteMessage",
        json!({"chat": "Main", "id": "1"}),
    )
    .await
    .assert_error(400, "cannot parse data");
    root.post("/api/loggedonly/deleteMessage", json!({"chat": "Main"}))
        .await
        .assert_error(400, "no such message");
    // A message of a chat is not reachable through another chat.
    root.post("/api/adminonly/createChat", json!({"chat": "Other"}))
        .await
        .assert_ok_empty();
    root.join("Other").await;
    delete(&root, "Other", &by_root["id"])
        .await
        .assert_error(400, "no such message");
    // A guest's right ends with its session: the same name again is another guest.
    let again = guest.say("Main", "mine for now").await;
    guest
        .post("/api/loggedonly/logout", json!({}))
        .await
        .assert_ok_empty();
    let same_name = server.guest_in("gus", "Main").await;
    delete(&same_name, "Main", &again["id"])
        .await
        .assert_error(403, "not allowed");
}

#[tokio::test]
async fn deleted_event_goes_to_members_explicit_queues_only() {
    let server = TestServer::start().await;
    let alice = server.guest_in("alice", "Main").await;
    let bob = server.guest_in("bob", "Main").await;
    let carol = server.client();
    carol.guest("carol").await;
    let (qa, qb, qc) = (
        open_queue(&alice).await,
        open_queue(&bob).await,
        open_queue(&carol).await,
    );
    let msg = alice.say("Main", "oops").await;
    alice.drain().await;
    bob.drain().await;
    delete(&alice, "Main", &msg["id"]).await.assert_ok_empty();
    let expected = json!({"chat": "Main", "id": msg["id"]});
    for (c, q) in [(&alice, &qa), (&bob, &qb)] {
        let events = queued(c, q).await;
        let last = events.last().unwrap();
        assert_eq!(last.0, "MessageDeletedEvent");
        assert_eq!(last.1, expected);
        assert_eq!(
            serde_json::to_string(&last.1).unwrap(),
            format!(r#"{{"chat":"Main","id":{}}}"#, msg["id"]),
            "keys in order"
        );
    }
    let carols = queued(&carol, &qc).await;
    assert!(
        carols.iter().all(|(t, _)| t != "MessageDeletedEvent"),
        "not a member: {carols:?}"
    );
    // The legacy poll never carries it, and the history no longer holds the message.
    assert_eq!(alice.drain().await, vec![]);
    assert_eq!(bob.drain().await, vec![]);
    let history = bob
        .post("/api/loggedonly/getLastMessages", json!({"chat": "Main"}))
        .await
        .json();
    assert_eq!(history, json!([]));
}

#[tokio::test]
async fn deleted_text_is_gone_after_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.guest_in("alice", "Main").await;
    let kept = alice.say("Main", "kept words").await;
    let gone = alice.say("Main", "secret words").await;
    delete(&alice, "Main", &gone["id"]).await.assert_ok_empty();
    server.stop().await;
    server.with_stored_data(|store| {
        let chat = store.chats().unwrap()[0].id;
        let all = store.messages_before(chat, None, 1000).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].text, "kept words");
    });
    server.restart(&[&alice]).await;
    let history = page(&alice, json!({"chat": "Main"})).await;
    assert_eq!(history, json!([kept]));
}

#[tokio::test]
async fn kick_ends_the_guest_session_and_blocks_the_name_until_it_expires() {
    let server = TestServer::with_config("guest_block = \"2s\"").await;
    let root = server.client();
    root.registered("root").await;
    root.join("Main").await;
    let reg = server.client();
    reg.registered("reggie").await;
    let mallory = server.guest_in("Mallory", "Main").await;
    root.drain().await;

    reg.post("/api/adminonly/kick", json!({"user": "Mallory"}))
        .await
        .assert_error(403, "admin only");
    for name in ["reggie", "nobody", ""] {
        root.post("/api/adminonly/kick", json!({"user": name}))
            .await
            .assert_error(400, "no such guest");
    }
    root.post("/api/adminonly/kick", json!({"user": 5}))
        .await
        .assert_error(400, "cannot parse data");
    root.post("/api/adminonly/kick", json!({"user": "mallory"}))
        .await
        .assert_ok_empty();
    mallory
        .get("/api/loggedonly/getChats")
        .await
        .assert_error(401, "user not logged in");
    let seen = root.drain_types().await;
    assert_eq!(
        seen,
        [
            "LogoutEvent",
            "ChatLeaveEvent",
            "SystemMessageChatLeaveEvent"
        ]
    );
    let users = root
        .post("/api/loggedonly/getUsers", json!({"chat": "Main"}))
        .await
        .json();
    assert_eq!(users.as_array().unwrap().len(), 1, "{users}");
    for name in ["Mallory", "MALLORY", "mallory"] {
        server
            .client()
            .post("/api/login", json!({"user": name}))
            .await
            .assert_error(403, "this name is blocked");
    }
    // Other names are not blocked.
    server.client().guest("mallory2").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    server.client().guest("mallory").await;
}
