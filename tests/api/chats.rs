//! Chats and messages: join, leave, history, posting, admin create/remove, the bot (docs/api.md, Routes and Bot).

use crate::helpers::TestServer;
use serde_json::json;

#[tokio::test]
async fn join_returns_the_exact_chat_report_with_history_and_members() {
    let server = TestServer::start().await;
    let alice = server.client();
    alice.guest("alice").await;
    let report = alice.join("Main").await;
    assert_eq!(
        report,
        json!({"user":"alice","chat":"Main","joined":true,"messages":[],
               "users":[{"user":"alice","verified":false,"admin":false,"bot":false}]})
    );
    let message = alice.say("Main", "hello").await;
    let id = message["id"].as_u64().unwrap();
    let time = message["time"].as_i64().unwrap();
    assert_eq!(
        message,
        json!({"user":"alice","verified":false,"admin":false,"bot":false,"chat":"Main","id":id,"text":"hello","time":time})
    );
    // Field order on the wire is exactly docs/api.md, Shapes.
    let raw = alice
        .post(
            "/api/loggedonly/postMessage",
            json!({"chat":"Main","text":"x"}),
        )
        .await
        .body;
    assert!(
        raw.starts_with(
            r#"{"user":"alice","verified":false,"admin":false,"bot":false,"chat":"Main","id":"#
        ),
        "{raw}"
    );
    let bob = server.client();
    bob.guest("bob").await;
    let report = bob.join("main").await;
    assert_eq!(report["chat"], "Main");
    assert_eq!(report["messages"].as_array().unwrap().len(), 2);
    assert_eq!(report["messages"][0]["text"], "hello");
    assert_eq!(
        report["users"],
        json!([{"user":"alice","verified":false,"admin":false,"bot":false},
               {"user":"bob","verified":false,"admin":false,"bot":false}])
    );
}

#[tokio::test]
async fn join_and_leave_errors() {
    let server = TestServer::start().await;
    let c = server.client();
    c.guest("gina").await;
    c.post("/api/loggedonly/joinChat", json!({"chat":"Nope"}))
        .await
        .assert_error(400, "no such chat");
    c.post("/api/loggedonly/joinChat", json!({}))
        .await
        .assert_error(400, "no such chat");
    c.post("/api/loggedonly/joinChat", json!({"chat":[]}))
        .await
        .assert_error(400, "cannot parse data");
    c.post("/api/loggedonly/leaveChat", json!({"chat":"Main"}))
        .await
        .assert_error(400, "user not logged in such chat");
    c.post("/api/loggedonly/leaveChat", json!({"chat":"Nope"}))
        .await
        .assert_error(400, "no such chat");
    c.join("Main").await;
    c.post("/api/loggedonly/joinChat", json!({"chat":"Main"}))
        .await
        .assert_error(400, "user is already logged in chat");
    c.post("/api/loggedonly/leaveChat", json!({"chat":"Main"}))
        .await
        .assert_ok_empty();
    c.post("/api/loggedonly/getUsers", json!({"chat":"Main"}))
        .await
        .assert_error(400, "user not logged in such chat");
    c.post("/api/loggedonly/getUsers", json!({"chat":"Nope"}))
        .await
        .assert_error(400, "user not logged in such chat");
    c.post("/api/loggedonly/getLastMessages", json!({"chat":"Main"}))
        .await
        .assert_error(400, "user not logged in such chat");
}

#[tokio::test]
async fn get_chats_lists_every_chat_sorted_with_details_only_for_joined_ones() {
    let server = TestServer::with_config("chats = [\"Main\", \"Books\", \"zoo\"]").await;
    let c = server.guest_in("hank", "zoo").await;
    let chats = c.get("/api/loggedonly/getChats").await.json();
    let names: Vec<&str> = chats
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["chat"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Books", "Main", "zoo"]);
    assert_eq!(
        chats[0],
        json!({"user":"hank","chat":"Books","joined":false,"messages":[],"users":[]})
    );
    assert_eq!(chats[2]["joined"], true);
    assert_eq!(chats[2]["users"][0]["user"], "hank");
}

#[tokio::test]
async fn users_and_history_for_members() {
    let server = TestServer::with_config("last_messages = 3").await;
    let c = server.guest_in("ivy", "Main").await;
    for i in 0..5 {
        c.say("Main", &format!("m{i}")).await;
    }
    let history = c
        .post("/api/loggedonly/getLastMessages", json!({"chat":"Main"}))
        .await
        .json();
    let texts: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m2", "m3", "m4"], "last N, oldest first");
    let ids: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let users = c
        .post("/api/loggedonly/getUsers", json!({"chat":"Main"}))
        .await;
    assert_eq!(
        users.body,
        r#"[{"user":"ivy","verified":false,"admin":false,"bot":false}]"#
    );
}

#[tokio::test]
async fn post_message_rules_and_server_set_status() {
    let server = TestServer::with_config("max_message_chars = 10").await;
    let c = server.client();
    c.guest("jack").await;
    c.post(
        "/api/loggedonly/postMessage",
        json!({"chat":"Main","text":"hi"}),
    )
    .await
    .assert_error(400, "user not logged in such chat");
    c.join("Main").await;
    c.post(
        "/api/loggedonly/postMessage",
        json!({"chat":"Main","text":"   "}),
    )
    .await
    .assert_error(400, "message is empty");
    c.post("/api/loggedonly/postMessage", json!({"chat":"Main"}))
        .await
        .assert_error(400, "message is empty");
    c.post(
        "/api/loggedonly/postMessage",
        json!({"chat":"Main","text":"12345678901"}),
    )
    .await
    .assert_error(400, "message is too long");
    // A guest cannot forge its status flags.
    let m = c
        .post(
            "/api/loggedonly/postMessage",
            json!({"chat":"Main","text":"me","verified":true,"admin":true,"bot":true,"user":"root","id":7,"time":1}),
        )
        .await
        .json();
    assert_eq!(
        (
            m["user"].clone(),
            m["verified"].clone(),
            m["admin"].clone(),
            m["bot"].clone()
        ),
        (json!("jack"), json!(false), json!(false), json!(false))
    );
    assert_ne!(m["time"], 1);
    let registered = server.client();
    registered.registered("kate").await;
    registered.join("Main").await;
    let m = registered.say("Main", "verified").await;
    assert_eq!(m["verified"], true);
}

#[tokio::test]
async fn message_ids_increase_across_chats() {
    let server = TestServer::with_config("chats = [\"Main\", \"Other\"]").await;
    let c = server.guest_in("leo", "Main").await;
    c.join("Other").await;
    let mut last = 0;
    for i in 0..6 {
        let chat = if i % 2 == 0 { "Main" } else { "Other" };
        let id = c.say(chat, "x").await["id"].as_u64().unwrap();
        assert!(id > last);
        last = id;
    }
}

#[tokio::test]
async fn admin_routes_need_a_verified_admin() {
    let server = TestServer::start().await;
    let anonymous = server.client();
    anonymous
        .post("/api/adminonly/createChat", json!({"chat":"X"}))
        .await
        .assert_error(401, "user not logged in");
    let guest = server.client();
    guest.guest("mallory").await;
    guest
        .post("/api/adminonly/createChat", json!({"chat":"X"}))
        .await
        .assert_error(403, "admin only");
    guest
        .post("/api/adminonly/removeChat", json!({"chat":"Main"}))
        .await
        .assert_error(403, "admin only");
    let user = server.client();
    user.registered("nina").await;
    user.post("/api/adminonly/createChat", json!({"chat":"X"}))
        .await
        .assert_error(403, "admin only");
    let root = server.client();
    let status = root.registered("root").await;
    assert_eq!(
        status,
        json!({"user":"root","verified":true,"admin":true,"bot":false})
    );
    root.post("/api/adminonly/createChat", json!({"chat":" bad"}))
        .await
        .assert_error(400, "invalid chat name");
    root.post("/api/adminonly/createChat", json!({}))
        .await
        .assert_error(400, "invalid chat name");
    root.post("/api/adminonly/createChat", json!({"chat":"main"}))
        .await
        .assert_error(400, "chat already exists");
    root.post("/api/adminonly/removeChat", json!({"chat":"Nope"}))
        .await
        .assert_error(400, "no such chat");
}

#[tokio::test]
async fn removed_chat_takes_its_history_and_members_with_it() {
    let server = TestServer::start().await;
    let root = server.client();
    root.registered("root").await;
    root.post("/api/adminonly/createChat", json!({"chat":"Temp"}))
        .await
        .assert_ok_empty();
    let c = server.guest_in("olga", "Temp").await;
    c.say("Temp", "old text").await;
    root.post("/api/adminonly/removeChat", json!({"chat":"temp"}))
        .await
        .assert_ok_empty();
    c.post(
        "/api/loggedonly/postMessage",
        json!({"chat":"Temp","text":"x"}),
    )
    .await
    .assert_error(400, "user not logged in such chat");
    root.post("/api/adminonly/createChat", json!({"chat":"Temp"}))
        .await
        .assert_ok_empty();
    let report = c.join("Temp").await;
    assert_eq!(
        report["messages"],
        json!([]),
        "a re-created chat starts empty"
    );
}

#[tokio::test]
async fn bot_answers_commands_after_the_triggering_message() {
    let server = TestServer::start().await;
    let c = server.guest_in("pia", "Main").await;
    c.drain().await;
    let command = c.say("Main", "/users").await;
    let events = c.drain().await;
    let messages: Vec<_> = events
        .iter()
        .filter(|(t, _)| t == "MessageEvent")
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(messages.len(), 2, "{events:?}");
    assert_eq!(messages[0], command);
    let reply = &messages[1];
    assert_eq!(reply["user"], "Bot");
    assert_eq!(reply["bot"], true);
    assert_eq!(reply["text"], "Online in Main: pia");
    assert!(reply["id"].as_u64().unwrap() > command["id"].as_u64().unwrap());
    c.say("Main", "/help").await;
    let history = c
        .post("/api/loggedonly/getLastMessages", json!({"chat":"Main"}))
        .await
        .json();
    assert_eq!(
        history.as_array().unwrap().last().unwrap()["text"],
        "Available commands: /help, /users"
    );
    c.say("Main", "/help me").await;
    let after = c
        .post("/api/loggedonly/getLastMessages", json!({"chat":"Main"}))
        .await
        .json();
    assert_eq!(
        after.as_array().unwrap().last().unwrap()["text"],
        "/help me",
        "only whole-text commands"
    );
}
