//! The service driven directly: interleavings that HTTP timing rarely hits (a session ending
//! between authentication and the change) and storage failures in the middle of a cascade.

use super::{Service, SessionInfo};
use crate::auth::cookie::CookieSigner;
use crate::auth::password;
use crate::config::from_toml_str;
use crate::error::ApiError;
use crate::events::hub::{Hub, HubLimits, PollReply};
use crate::model::Password;
use crate::store::faulty::FaultyStore;
use crate::store::sled::{SledStore, SyncMode};
use crate::store::{Store, UserRecord};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

struct World {
    service: Arc<Service>,
    store: Arc<FaultyStore>,
    signer: CookieSigner,
    _dir: TempDir,
}

async fn world(extra: &str) -> World {
    let dir = TempDir::new().unwrap();
    let text = format!(
        "data_dir = \"{}\"\npassword_iterations = 1000\ndurability = \"relaxed\"\n{extra}",
        dir.path().join("data").display()
    );
    let config = Arc::new(from_toml_str(&text, true).unwrap());
    let sled = SledStore::open(&config.data_dir, SyncMode::Relaxed).unwrap();
    let store = Arc::new(FaultyStore::new(sled));
    let hub = Arc::new(Hub::new(HubLimits {
        capacity: config.event_queue_capacity,
        queues_per_session: config.max_queues_per_session,
    }));
    let wake = Arc::new(tokio::sync::Notify::new());
    let service = Service::start(config, store.clone(), hub, wake)
        .await
        .unwrap();
    World {
        service,
        store,
        signer: CookieSigner::new(vec![7; 32], false),
        _dir: dir,
    }
}

impl World {
    fn session(&self, cookie_value: &str) -> Result<SessionInfo, ApiError> {
        let hash = self
            .signer
            .verify(cookie_value)
            .ok_or(ApiError::NotLoggedIn)?;
        self.service.authenticate(&hash, true)
    }

    async fn guest(&self, name: &str) -> SessionInfo {
        let issued = self.service.guest_login(&self.signer, name).await.unwrap();
        self.session(&issued.cookie_value).unwrap()
    }

    async fn guest_in_main(&self, name: &str) -> SessionInfo {
        let session = self.guest(name).await;
        self.service.join_chat(&session, "Main").await.unwrap();
        session
    }

    /// A verified account stored directly; returns its password hash.
    async fn account(&self, name: &str, password: &str) -> String {
        let hash = password::hash(Password::parse(password).unwrap(), 1000)
            .await
            .unwrap();
        let user = UserRecord {
            name: name.into(),
            email: format!("{name}@example.org"),
            password_hash: hash.clone(),
            verified: true,
            admin: false,
            bot: false,
            created: 1,
            activation: None,
            reset: None,
        };
        self.store.insert_user(&user, None).unwrap().unwrap();
        hash
    }

    /// Every event waiting in a session's default queue, as (type, user).
    async fn events(&self, session: &SessionInfo) -> Vec<(String, String)> {
        let mut events = Vec::new();
        while let PollReply::Event(delivered) = self
            .service
            .hub
            .poll_default(session.handle, None, Duration::ZERO)
            .await
        {
            let payload: serde_json::Value =
                serde_json::from_str(delivered.event.payload.get()).unwrap();
            let user = payload["user"].as_str().unwrap_or_default().to_owned();
            events.push((delivered.event.kind.clone(), user));
        }
        events
    }

    fn main_members(&self) -> Vec<String> {
        let mut members: Vec<String> = (self.store.members().unwrap().into_iter())
            .map(|m| m.user)
            .collect();
        members.sort();
        members
    }
}

fn kinds_for(events: &[(String, String)], user: &str) -> Vec<String> {
    events
        .iter()
        .filter(|(_, u)| u == user)
        .map(|(kind, _)| kind.clone())
        .collect()
}

const OFFLINE_CASCADE: [&str; 3] = [
    "LogoutEvent",
    "ChatLeaveEvent",
    "SystemMessageChatLeaveEvent",
];

#[tokio::test]
async fn changes_by_a_session_that_ended_after_authenticating_are_refused() {
    let w = world("").await;
    let watcher = w.guest_in_main("watcher").await;
    let gone = w.guest_in_main("gone").await;
    let late = w.guest("late").await;
    for session in [&gone, &late] {
        w.service.logout(session).await.unwrap();
    }
    w.events(&watcher).await;

    let refused = [
        w.service.join_chat(&late, "Main").await.err(),
        w.service.leave_chat(&gone, "Main").await.err(),
        w.service.post_message(&gone, "Main", "hi").await.err(),
        w.service.create_chat(&late, "Side").await.err(),
        w.service.remove_chat(&late, "Main").await.err(),
    ];
    for error in refused {
        assert!(matches!(error, Some(ApiError::NotLoggedIn)), "{error:?}");
    }
    assert_eq!(w.main_members(), vec!["watcher"]);
    assert!(w.events(&watcher).await.is_empty());
    // The next guest with the name starts outside every chat.
    let again = w.guest("late").await;
    let reports = w.service.chat_reports(&again).unwrap();
    assert!(reports.iter().all(|r| !r.joined));
}

#[tokio::test]
async fn a_sign_in_checked_against_a_replaced_password_opens_no_session() {
    let w = world("").await;
    let checked = w.account("rhea", "password123").await;
    // A reset commits while the sign-in's hash check runs.
    let mut user = w.store.user("rhea").unwrap().unwrap();
    user.password_hash = w.account_hash("newpassword1").await;
    w.store.update_user(&user, None).unwrap();
    let late = w
        .service
        .registered_login(&w.signer, "rhea", &checked, None)
        .await;
    assert!(matches!(late, Err(ApiError::WrongCredentials)));
    assert!(w.store.sessions().unwrap().is_empty());
    // The same check with the current hash goes through.
    w.service
        .registered_login(&w.signer, "rhea", &user.password_hash, None)
        .await
        .unwrap();
    assert_eq!(w.store.sessions().unwrap().len(), 1);
}

impl World {
    async fn account_hash(&self, password: &str) -> String {
        password::hash(Password::parse(password).unwrap(), 1000)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn signing_in_past_the_session_cap_ends_the_oldest_session() {
    let w = world("max_sessions_per_user = 2").await;
    let hash = w.account("cap", "password123").await;
    let mut cookies = Vec::new();
    // Back to back, within one second: each sign-in must still end the oldest session.
    for round in 0..12 {
        let issued = w
            .service
            .registered_login(&w.signer, "cap", &hash, None)
            .await
            .unwrap();
        cookies.push(issued.cookie_value);
        if round >= 2 {
            assert!(
                matches!(w.session(&cookies[round - 2]), Err(ApiError::NotLoggedIn)),
                "round {round}: the oldest session ended"
            );
            assert!(w.session(&cookies[round - 1]).is_ok() && w.session(&cookies[round]).is_ok());
        }
    }
    assert_eq!(w.store.sessions().unwrap().len(), 2);
}

#[tokio::test]
async fn a_failed_logout_leaves_the_session_whole() {
    let w = world("").await;
    let ann = w.guest_in_main("ann").await;
    w.store.fail_after(0);
    assert!(matches!(
        w.service.logout(&ann).await,
        Err(ApiError::Unavailable)
    ));
    w.store.heal();
    assert!(w.service.hub.has_session(ann.handle), "queues were closed");
    assert_eq!(w.main_members(), vec!["ann"]);
    w.service
        .post_message(&ann, "Main", "still here")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_sweep_that_fails_halfway_publishes_what_it_applied() {
    let w = world("inactivity_timeout = \"1s\"").await;
    let watcher = w.guest_in_main("watcher").await;
    let ann = w.guest_in_main("ann").await;
    let bob = w.guest_in_main("bob").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.service.touch(watcher.handle);
    w.events(&watcher).await;

    // The first session's offline change commits, the second's fails.
    w.store.fail_after(1);
    assert!(w.service.sweep().await.is_err());
    w.store.heal();
    let events = w.events(&watcher).await;
    let (gone, stayed) = if kinds_for(&events, "ann").is_empty() {
        (&bob, &ann)
    } else {
        (&ann, &bob)
    };
    assert_eq!(kinds_for(&events, &gone.user), OFFLINE_CASCADE);
    assert!(kinds_for(&events, &stayed.user).is_empty());
    // The one that failed is untouched: online, a member, its queue open.
    assert_eq!(
        w.main_members(),
        vec![stayed.user.clone(), "watcher".into()]
    );
    assert!(w.service.hub.has_session(stayed.handle));

    w.service.touch(watcher.handle);
    w.service.sweep().await.unwrap();
    let events = w.events(&watcher).await;
    assert_eq!(kinds_for(&events, &stayed.user), OFFLINE_CASCADE);
    assert_eq!(w.main_members(), vec!["watcher"]);
}

#[tokio::test]
async fn expired_sessions_are_deleted_from_storage() {
    let w = world("session_max_age = \"1s\"").await;
    let hash = w.account("old", "password123").await;
    w.service
        .registered_login(&w.signer, "old", &hash, None)
        .await
        .unwrap();
    w.guest("brief").await;
    assert_eq!(w.store.sessions().unwrap().len(), 2);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    w.service.sweep().await.unwrap();
    assert!(w.store.sessions().unwrap().is_empty());
}

#[tokio::test]
async fn a_removed_chat_vanishes_at_once_and_its_messages_are_purged_in_the_background() {
    let w = world("").await;
    let admin = w.guest("admin").await;
    w.service.create_chat(&admin, "Big").await.unwrap();
    w.service.join_chat(&admin, "Big").await.unwrap();
    let chat_id = w
        .store
        .chats()
        .unwrap()
        .into_iter()
        .find(|c| c.name == "Big")
        .unwrap()
        .id;
    for i in 0..2500 {
        w.service
            .post_message(&admin, "Big", &format!("m{i}"))
            .await
            .unwrap();
    }
    w.service.remove_chat(&admin, "Big").await.unwrap();
    assert!(
        w.service
            .chat_reports(&admin)
            .unwrap()
            .iter()
            .all(|r| r.chat != "Big")
    );
    w.service.create_chat(&admin, "Big").await.unwrap();
    w.service.join_chat(&admin, "Big").await.unwrap();
    assert!(w.service.last_messages(&admin, "Big").unwrap().is_empty());
    for _ in 0..100 {
        if w.store.last_messages(chat_id, 1).unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the removed chat's messages are still stored");
}
