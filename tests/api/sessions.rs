//! Guest login, sessions, cookies and presence (docs/api.md, Validation; docs/design.md, Sessions and presence).

use crate::helpers::TestServer;
use serde_json::json;

#[tokio::test]
async fn guest_login_returns_status_and_an_opaque_http_only_cookie() {
    let server = TestServer::start().await;
    let alice = server.client();
    let r = alice.post("/api/login", json!({ "user": "Alice" })).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        r#"{"user":"Alice","verified":false,"admin":false,"bot":false}"#
    );
    let cookie = r.header("set-cookie").unwrap();
    assert!(cookie.starts_with("natter_session="), "{cookie}");
    assert!(
        !cookie.contains("Alice"),
        "the cookie must not carry the name: {cookie}"
    );
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing in {cookie}"
        );
    }
    assert!(!cookie.contains("Secure"));
    alice
        .send(alice.http.put(alice.url("/api/loggedonly/keepalive")))
        .await
        .assert_ok_empty();
}

#[tokio::test]
async fn guest_login_validates_names_in_spec_order() {
    let server = TestServer::start().await;
    let c = server.client();
    c.post("/api/login", json!({}))
        .await
        .assert_error(400, "username is empty");
    c.post("/api/login", json!({ "user": "" }))
        .await
        .assert_error(400, "username is empty");
    c.post("/api/login", json!({ "user": "two words" }))
        .await
        .assert_error(400, "invalid username");
    c.post("/api/login", json!({ "user": "x".repeat(33) }))
        .await
        .assert_error(400, "invalid username");
    c.post("/api/login", json!({ "user": 5 }))
        .await
        .assert_error(400, "cannot parse data");
    c.post("/api/login", json!({ "user": "Bot" }))
        .await
        .assert_error(409, "user is already logged in");
}

#[tokio::test]
async fn names_collide_case_insensitively() {
    let server = TestServer::start().await;
    server.client().guest("Alice").await;
    server
        .client()
        .post("/api/login", json!({ "user": "alice" }))
        .await
        .assert_error(409, "user is already logged in");
    let root = server.client();
    root.registered("Carol").await;
    server
        .client()
        .post("/api/login", json!({ "user": "CAROL" }))
        .await
        .assert_error(409, "this name is registered, sign in with its password");
}

#[tokio::test]
async fn guest_cannot_take_a_registered_name_even_unverified_and_offline() {
    let server = TestServer::start().await;
    let c = server.client();
    c.post(
        "/api/register",
        json!({ "user": "dora", "email": "dora@example.org", "password": "password123" }),
    )
    .await
    .assert_ok_empty();
    c.post("/api/login", json!({ "user": "Dora" }))
        .await
        .assert_error(409, "this name is registered, sign in with its password");
}

#[tokio::test]
async fn logged_only_routes_need_an_online_session() {
    let server = TestServer::start().await;
    let c = server.client();
    c.get("/api/loggedonly/getChats")
        .await
        .assert_error(401, "user not logged in");
    c.post("/api/loggedonly/login", json!({}))
        .await
        .assert_error(401, "user not logged in");
    let forged = c
        .send(
            c.http
                .get(c.url("/api/loggedonly/getChats"))
                .header("cookie", "natter_session=AAAAAAAAAAAAAAAAAAAAAA.AAAA"),
        )
        .await;
    forged.assert_error(401, "user not logged in");
}

#[tokio::test]
async fn session_login_keeps_chats_and_announces_nothing_for_an_online_user() {
    let server = TestServer::start().await;
    let alice = server.guest_in("alice", "Main").await;
    let bob = server.guest_in("bob", "Main").await;
    bob.drain().await;
    let r = alice.post("/api/loggedonly/login", json!({})).await;
    assert_eq!(
        r.body,
        r#"{"user":"alice","verified":false,"admin":false,"bot":false}"#
    );
    assert!(
        r.header("set-cookie")
            .unwrap()
            .starts_with("natter_session=")
    );
    let chats = alice.get("/api/loggedonly/getChats").await.json();
    assert_eq!(
        chats[0]["joined"], true,
        "chats survive loggedonly/login: {chats}"
    );
    assert_eq!(
        bob.drain_types().await,
        Vec::<String>::new(),
        "a page reload kicks nobody"
    );
}

#[tokio::test]
async fn rotated_cookie_stops_working() {
    let server = TestServer::start().await;
    let c = server.client();
    let r = c.post("/api/login", json!({ "user": "erin" })).await;
    let first = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    c.post("/api/loggedonly/login", json!({})).await;
    let other = server.client();
    let r = other
        .send(
            other
                .http
                .get(other.url("/api/loggedonly/getChats"))
                .header("cookie", first),
        )
        .await;
    r.assert_error(401, "user not logged in");
    assert_eq!(c.get("/api/loggedonly/getChats").await.status, 200);
}

#[tokio::test]
async fn logout_expires_the_cookie_and_frees_the_guest_name() {
    let server = TestServer::start().await;
    let c = server.client();
    c.guest("frank").await;
    let r = c.post("/api/loggedonly/logout", json!({})).await;
    r.assert_ok_empty();
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    c.get("/api/loggedonly/getChats")
        .await
        .assert_error(401, "user not logged in");
    server.client().guest("Frank").await;
}

#[tokio::test]
async fn idle_guests_are_swept_with_the_full_cascade_and_release_their_name() {
    let server = TestServer::with_config("inactivity_timeout = \"1s\"").await;
    let watcher = server.guest_in("watcher", "Main").await;
    let idle = server.guest_in("idler", "Main").await;
    // The watcher keeps polling (activity); the idler does nothing until the sweeper takes it.
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.extend(watcher.drain().await);
        if seen.iter().any(|(t, _)| t == "SystemMessageChatLeaveEvent") {
            break;
        }
    }
    // Everything the watcher saw after the idler's join message.
    let joined = seen
        .iter()
        .position(|(t, e)| t == "SystemMessageChatJoinEvent" && e["user"] == "idler")
        .expect("the idler's join was seen");
    let seen = seen.split_off(joined + 1);
    let types: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "LogoutEvent",
            "ChatLeaveEvent",
            "SystemMessageChatLeaveEvent"
        ],
        "{seen:?}"
    );
    assert_eq!(seen[0].1["user"], "idler");
    idle.get("/api/loggedonly/getChats")
        .await
        .assert_error(401, "user not logged in");
    server.client().guest("idler").await;
}

/// A page asks whether it is signed in without an error status: `POST /api/session` answers 200
/// either way, `null` when signed out, and as `loggedonly/login` when the cookie names a session.
#[tokio::test]
async fn the_session_probe_answers_200_signed_in_or_out() {
    let server = TestServer::start().await;
    let c = server.client();
    let r = c.post("/api/session", json!({})).await;
    assert_eq!((r.status, r.body.as_str()), (200, "null"), "{r:?}");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(r.header("set-cookie").is_none());
    let stranger = c.send(
        c.http
            .post(c.url("/api/session"))
            .header("cookie", "natter_session=forged.value"),
    );
    assert_eq!(stranger.await.body, "null");

    c.guest("prober").await;
    let r = c.post("/api/session", json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        r#"{"user":"prober","verified":false,"admin":false,"bot":false}"#
    );
    assert!(
        r.header("set-cookie")
            .unwrap()
            .starts_with("natter_session=")
    );
    c.join("Main").await;

    c.post("/api/loggedonly/logout", json!({}))
        .await
        .assert_ok_empty();
    let r = c.post("/api/session", json!({})).await;
    assert_eq!((r.status, r.body.as_str()), (200, "null"));
}
