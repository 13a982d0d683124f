//! `presence_scope`: who hears a user sign in and out (docs/configuration.md, docs/api.md, Events).

use crate::helpers::{Client, TestServer};
use serde_json::json;

const SHARED: &str = "presence_scope = \"shared_chats\"\nchats = [\"Main\", \"Side\"]";

/// The users named in the presence events pending for `c`, as "LoginEvent bob".
async fn presence_seen(c: &Client) -> Vec<String> {
    c.drain()
        .await
        .into_iter()
        .filter(|(t, _)| t == "LoginEvent" || t == "LogoutEvent")
        .map(|(t, e)| format!("{t} {}", e["user"].as_str().unwrap()))
        .collect()
}

async fn logout(c: &Client) {
    c.post("/api/loggedonly/logout", json!({}))
        .await
        .assert_ok_empty();
}

#[tokio::test]
async fn under_shared_chats_only_users_sharing_a_chat_hear_a_sign_out() {
    let mut server = TestServer::with_config(SHARED).await;
    let ann = server.guest_in("ann", "Main").await;
    let side = server.guest_in("sid", "Side").await;
    assert_eq!(presence_seen(&ann).await, ["LoginEvent ann"]);
    assert_eq!(presence_seen(&side).await, ["LoginEvent sid"]);
    let loner = server.client();
    loner.guest("loner").await;
    // A user in no chat when signing in is told of it alone: nobody shares a chat with them yet.
    assert_eq!(presence_seen(&loner).await, ["LoginEvent loner"]);
    assert!(
        presence_seen(&ann).await.is_empty(),
        "ann shares no chat with sid or loner"
    );
    assert!(presence_seen(&side).await.is_empty());

    let bob = server.guest_in("bob", "Main").await;
    assert_eq!(presence_seen(&bob).await, ["LoginEvent bob"]);
    assert!(presence_seen(&ann).await.is_empty());
    logout(&bob).await;
    let seen = ann.drain_types().await;
    assert_eq!(
        seen,
        [
            "LogoutEvent",
            "ChatLeaveEvent",
            "SystemMessageChatLeaveEvent"
        ],
        "a member hears the sign-out, then the cascade"
    );
    assert!(
        presence_seen(&side).await.is_empty(),
        "sid is in another chat"
    );
    assert!(
        presence_seen(&loner).await.is_empty(),
        "loner is in no chat"
    );

    // A user in no chat signs out unheard.
    logout(&loner).await;
    assert!(presence_seen(&ann).await.is_empty());

    // The scope and the memberships it reads survive a restart.
    server.restart(&[&ann, &side]).await;
    let cid = server.guest_in("cid", "Side").await;
    side.drain().await;
    logout(&cid).await;
    assert_eq!(presence_seen(&side).await, ["LogoutEvent cid"]);
    assert!(presence_seen(&ann).await.is_empty());
}

#[tokio::test]
async fn under_everyone_every_online_user_hears_every_sign_in_and_out() {
    let server = TestServer::with_config("chats = [\"Main\", \"Side\"]").await;
    let ann = server.guest_in("ann", "Main").await;
    let loner = server.client();
    loner.guest("loner").await;
    ann.drain().await;
    loner.drain().await;
    let bob = server.guest_in("bob", "Side").await;
    assert_eq!(presence_seen(&loner).await, ["LoginEvent bob"]);
    assert_eq!(presence_seen(&ann).await, ["LoginEvent bob"]);
    logout(&bob).await;
    assert_eq!(presence_seen(&loner).await, ["LogoutEvent bob"]);
    assert_eq!(presence_seen(&ann).await, ["LogoutEvent bob"]);
}

#[tokio::test]
async fn under_shared_chats_a_second_session_hears_its_own_user_and_a_member_hears_a_sweep() {
    let server = TestServer::with_config(&format!("{SHARED}\ndurability = \"relaxed\"")).await;
    let ann = server.guest_in("ann", "Main").await;
    let reg = server.client();
    reg.registered("reg").await;
    // The user's own session hears its sign-in.
    assert_eq!(presence_seen(&reg).await, ["LoginEvent reg"]);
    reg.join("Main").await;
    ann.drain().await;
    // Swept offline for inactivity: the chat's other member hears it.
    let app = server.app.as_ref().unwrap();
    let keep_ann = std::time::Instant::now();
    ann.send(ann.http.put(ann.url("/api/loggedonly/keepalive")))
        .await;
    app.sweep_idle_since(keep_ann).await.unwrap();
    assert_eq!(presence_seen(&ann).await, ["LogoutEvent reg"]);
}
