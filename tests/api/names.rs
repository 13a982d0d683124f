//! Names that look alike count as one name, and a kicked guest's block holds on every way back
//! in (docs/api.md, Validation; History and moderation).

use crate::helpers::{Client, TestServer};
use crate::log_capture;
use serde_json::json;
use std::time::Duration;

/// `trol` with a Cyrillic о.
const CYRILLIC_TROL: &str = "tr\u{043e}l";

/// An address of its own for each name (names here differ only in how they are spelled).
fn email_of(name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("u{hex}@example.org")
}

async fn register(client: &Client, name: &str) -> crate::helpers::Resp {
    let email = email_of(name);
    client
        .post(
            "/api/register",
            json!({"user": name, "email": email, "password": "password123"}),
        )
        .await
}

async fn sign_in(client: &Client, name: &str) -> crate::helpers::Resp {
    client
        .post(
            "/api/authorize",
            json!({"user": name, "password": "password123"}),
        )
        .await
}

/// Stores a verified account named `name` with `like`'s password, straight into the stopped
/// server's data directory: as accounts made before names were compared by look.
fn store_look_alike(server: &TestServer, like: &str, name: &str) {
    server.with_stored_data(|store| {
        let mut user = store.user(&like.to_lowercase()).unwrap().expect("exists");
        user.name = name.to_owned();
        user.email = email_of(name);
        user.admin = false;
        store
            .insert_user(&user, None)
            .unwrap()
            .expect("the name was free");
    });
}

#[tokio::test]
async fn a_kicked_name_cannot_register_or_sign_in_until_the_block_ends() {
    let mut server = TestServer::with_config("guest_block = \"2s\"").await;
    let root = server.client();
    root.registered("root").await;
    let mallory = server.client();
    mallory.guest("Mallory").await;
    // An account whose name looks like the guest's, made before look-alikes were refused;
    // the guest's session outlives the restart.
    server.stop().await;
    store_look_alike(&server, "root", "ma11ory");
    let ma11ory = server.client();
    server.restart(&[&root, &mallory, &ma11ory]).await;

    root.post("/api/adminonly/kick", json!({"user": "Mallory"}))
        .await
        .assert_ok_empty();
    let back = server.client();
    for name in ["Mallory", "MALLORY", "Ma11ory"] {
        register(&back, name)
            .await
            .assert_error(403, "this name is blocked");
    }
    sign_in(&ma11ory, "ma11ory")
        .await
        .assert_error(403, "this name is blocked");
    // A wrong password still answers as for anyone.
    ma11ory
        .post(
            "/api/authorize",
            json!({"user": "ma11ory", "password": "not the password"}),
        )
        .await
        .assert_error(401, "wrong username or password");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(sign_in(&ma11ory, "ma11ory").await.status, 200);
    register(&back, "Mallory")
        .await
        .assert_error(409, "user already registered");
}

#[tokio::test]
async fn a_confusable_spelling_of_a_kicked_guest_is_refused_for_guest_login_and_register() {
    let server = TestServer::start().await;
    let root = server.client();
    root.registered("root").await;
    let troll = server.client();
    troll.guest("trol").await;
    root.post("/api/adminonly/kick", json!({"user": "trol"}))
        .await
        .assert_ok_empty();

    let back = server.client();
    for name in [CYRILLIC_TROL, "TR0L", "Trol"] {
        back.post("/api/login", json!({"user": name}))
            .await
            .assert_error(403, "this name is blocked");
        register(&back, name)
            .await
            .assert_error(403, "this name is blocked");
    }
    // A name that only shares letters is someone else.
    assert_eq!(
        back.post("/api/login", json!({"user": "troll"}))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_kick_finds_the_guest_by_the_name_the_admin_reads() {
    let server = TestServer::start().await;
    let root = server.client();
    root.registered("root").await;
    let troll = server.client();
    troll.guest(CYRILLIC_TROL).await;
    root.post("/api/adminonly/kick", json!({"user": "trol"}))
        .await
        .assert_ok_empty();
    troll
        .get("/api/loggedonly/getChats")
        .await
        .assert_error(401, "user not logged in");
    server
        .client()
        .post("/api/login", json!({"user": "trol"}))
        .await
        .assert_error(403, "this name is blocked");
}

#[tokio::test]
async fn a_confusable_of_a_registered_user_is_refused_at_register_and_guest_login() {
    let server = TestServer::start().await;
    let olga = server.client();
    olga.registered("olga").await;
    // Unverified accounts hold their name too.
    register(&server.client(), "Ian").await.assert_ok_empty();
    let other = server.client();
    for name in ["\u{043e}lga", "0LGA", "lan", "IAN"] {
        register(&other, name)
            .await
            .assert_error(409, "user already registered");
        other
            .post("/api/login", json!({"user": name}))
            .await
            .assert_error(409, "this name is registered, sign in with its password");
    }
    // The bot's name is reserved in every spelling.
    other
        .post("/api/login", json!({"user": "B0t"}))
        .await
        .assert_error(409, "user is already logged in");
    register(&other, "B\u{043e}t")
        .await
        .assert_error(409, "user already registered");
}

#[tokio::test]
async fn a_confusable_of_an_online_guest_is_refused_until_the_guest_leaves() {
    let server = TestServer::start().await;
    let guest = server.client();
    guest.guest("trol").await;
    let other = server.client();
    other
        .post("/api/login", json!({"user": CYRILLIC_TROL}))
        .await
        .assert_error(409, "user is already logged in");
    register(&other, "TR0L")
        .await
        .assert_error(409, "user is already logged in");
    guest
        .post("/api/loggedonly/logout", json!({}))
        .await
        .assert_ok_empty();
    assert_eq!(
        other
            .post("/api/login", json!({"user": CYRILLIC_TROL}))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn existing_look_alike_accounts_both_keep_signing_in_after_a_restart() {
    log_capture::start();
    let mut server = TestServer::start().await;
    let first = server.client();
    first.registered("trol").await;
    server.stop().await;
    store_look_alike(&server, "trol", CYRILLIC_TROL);
    store_look_alike(&server, "trol", "Tr0l");
    let mark = log_capture::mark();
    server.restart(&[&first]).await;

    let seen = log_capture::wait_for_line(mark, |l| {
        l.starts_with("3 pairs of existing names look alike; both keep working")
            .then(|| l.to_owned())
    })
    .await;
    assert!(seen.contains(CYRILLIC_TROL), "{seen}");
    for name in ["trol", CYRILLIC_TROL, "Tr0l"] {
        let client = server.client();
        let r = sign_in(&client, name).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert_eq!(r.json()["user"], name);
    }
    register(&server.client(), "trolley")
        .await
        .assert_ok_empty();
    register(&server.client(), "TRO1")
        .await
        .assert_error(409, "user already registered");
}

#[tokio::test]
async fn a_kick_outlives_a_restart_and_ends_on_time() {
    let mut server = TestServer::with_config("guest_block = \"3s\"").await;
    let root = server.client();
    root.registered("root").await;
    let troll = server.client();
    troll.guest("trol").await;
    root.post("/api/adminonly/kick", json!({"user": "trol"}))
        .await
        .assert_ok_empty();
    let kicked = std::time::Instant::now();
    server.restart(&[&root]).await;
    let back = server.client();
    back.post("/api/login", json!({"user": CYRILLIC_TROL}))
        .await
        .assert_error(403, "this name is blocked");
    // Whole seconds are stored: the block ends within a second of its time.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(kicked.elapsed())).await;
    assert_eq!(
        back.post("/api/login", json!({"user": "trol"}))
            .await
            .status,
        200
    );
}
