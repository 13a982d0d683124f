//! Races between a change and the end of the session or password it depends on, over HTTP with
//! enough attempts that a missing check under the state lock shows up. The exact interleavings
//! are also driven directly in `src/chat/tests.rs`.

use crate::helpers::TestServer;
use serde_json::json;

/// A sign-in with the old password that races a reset must not outlive the reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_in_racing_a_password_reset_never_survives_it() {
    // Enough rounds that the sign-in's hash check overlaps the reset's commit.
    let server =
        TestServer::with_config("password_iterations = 40000\ndurability = \"relaxed\"").await;
    let owner = server.client();
    owner.registered("rhea").await;
    let mut old = "password123".to_owned();
    let (mut raced, mut survived) = (0, 0);
    for attempt in 0..12 {
        let new = format!("newpassword{attempt}");
        owner
            .post("/api/requestResetPassword", json!({"user":"rhea"}))
            .await
            .assert_ok_empty();
        let token = server.next_reset_token("rhea").await;
        let intruder = server.client();
        let reset = owner.post(
            "/api/resetPassword",
            json!({"user":"rhea","passwordResetToken":token,"password":new}),
        );
        let sign_in = intruder.post("/api/authorize", json!({"user":"rhea","password":old}));
        let (reset, sign_in) = tokio::join!(reset, sign_in);
        reset.assert_ok_empty();
        if sign_in.status == 200 {
            raced += 1;
            let after = intruder
                .send(intruder.http.put(intruder.url("/api/loggedonly/keepalive")))
                .await;
            if after.status != 401 {
                survived += 1;
            }
        } else {
            sign_in.assert_error(401, "wrong username or password");
        }
        old = new;
    }
    eprintln!("{raced} of 12 sign-ins with the old password answered 200 during a reset");
    assert_eq!(
        survived, 0,
        "sessions opened with the old password outlived the reset"
    );
}

/// A message posted while its session ends is refused, never stored for a gone user.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn posting_racing_a_logout_is_refused_or_announced_before_the_leave() {
    let server = TestServer::with_config("durability = \"relaxed\"").await;
    let watcher = server.guest_in("watcher", "Main").await;
    watcher.drain().await;
    for attempt in 0..200 {
        let racer = server.guest_in(&format!("poster{attempt}"), "Main").await;
        let post = racer.post(
            "/api/loggedonly/postMessage",
            json!({"chat":"Main","text":"last words"}),
        );
        let logout = racer.post("/api/loggedonly/logout", json!({}));
        let (post, logout) = tokio::join!(post, logout);
        logout.assert_ok_empty();
        assert!(post.status == 200 || post.status == 401, "{}", post.body);
    }
    // Each poster's message, if any, came before the poster left the chat.
    let mut left = std::collections::HashSet::new();
    for (kind, event) in watcher.drain().await {
        let user = event["user"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "ChatLeaveEvent" => {
                left.insert(user);
            }
            "MessageEvent" => assert!(!left.contains(&user), "{user} posted after leaving"),
            _ => {}
        }
    }
}
