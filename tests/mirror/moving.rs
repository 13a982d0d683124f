//! Moving between backends: `natter export` from sled, `natter import` into the PostgreSQL store,
//! and back, keeping accounts (passwords work), chats and messages with their ids and authors.

use crate::cluster::Cluster;
use crate::natter::{self, Natter};
use serde_json::json;
use std::path::{Path, PathBuf};

/// A config with `storage = "postgres"` on `url`.
fn postgres_config(dir: &Path, url: &str) -> PathBuf {
    let path = natter::config(dir, Some(url));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("storage = \"postgres\"\n{text}")).unwrap();
    path
}

fn ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_install_moves_to_postgres_and_back_with_passwords_ids_and_authors() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    // On sled: an account, a chat, messages; one deleted, so ids have a gap.
    let sled_dir = tempfile::tempdir().unwrap();
    let sled_config = natter::config(sled_dir.path(), None);
    let server = Natter::start(&sled_config);
    let alice = server.registered("alice", "alicepassword").await;
    alice.join("Main").await;
    let first = alice.say("Main", "first").await;
    let gone = alice.say("Main", "gone").await;
    let last = alice.say("Main", "last").await;
    let (status, _) = alice
        .post(
            "/api/loggedonly/deleteMessage",
            json!({"chat": "Main", "id": gone["id"]}),
        )
        .await;
    assert_eq!(status, 200);
    server.stop();
    let dump = sled_dir.path().join("backup.jsonl");
    ok(
        &natter::command(&sled_config, &["export", "-o", dump.to_str().unwrap()]),
        "export from sled",
    );

    // Into PostgreSQL: a second import into the same database is refused.
    let url = pg.create_db("moved").await;
    let pg_dir = tempfile::tempdir().unwrap();
    let pg_config = postgres_config(pg_dir.path(), &url);
    ok(
        &natter::command(&pg_config, &["import", dump.to_str().unwrap()]),
        "import into PostgreSQL",
    );
    let again = natter::command(&pg_config, &["import", dump.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let server = Natter::start(&pg_config);
    let alice = server.client();
    let (status, body) = alice
        .post(
            "/api/authorize",
            json!({"user": "alice", "password": "alicepassword"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verified"], true);
    alice.join("Main").await;
    assert_eq!(
        alice.history_ids("Main").await,
        [first["id"].as_u64().unwrap(), last["id"].as_u64().unwrap()]
    );
    // The author's right to delete came along; new ids continue above the old ones.
    let newer = alice.say("Main", "on postgres").await;
    assert!(newer["id"].as_u64() > last["id"].as_u64());
    let (status, _) = alice
        .post(
            "/api/loggedonly/deleteMessage",
            json!({"chat": "Main", "id": first["id"]}),
        )
        .await;
    assert_eq!(status, 200);
    server.stop();

    // And back to sled, from PostgreSQL's export.
    let back = pg_dir.path().join("back.jsonl");
    ok(
        &natter::command(&pg_config, &["export", "-o", back.to_str().unwrap()]),
        "export from PostgreSQL",
    );
    let again_dir = tempfile::tempdir().unwrap();
    let again_config = natter::config(again_dir.path(), None);
    ok(
        &natter::command(&again_config, &["import", back.to_str().unwrap()]),
        "import into sled",
    );
    let server = Natter::start(&again_config);
    let alice = server.client();
    let (status, _) = alice
        .post(
            "/api/authorize",
            json!({"user": "alice", "password": "alicepassword"}),
        )
        .await;
    assert_eq!(status, 200);
    alice.join("Main").await;
    assert_eq!(
        alice.history_ids("Main").await,
        [last["id"].as_u64().unwrap(), newer["id"].as_u64().unwrap()]
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_answers_503_while_postgresql_is_down_and_comes_back_by_itself() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    let url = pg.create_db("outage").await;
    let dir = tempfile::tempdir().unwrap();
    let config = postgres_config(dir.path(), &url);
    let server = Natter::start(&config);
    let alice = server.registered("alice", "alicepassword").await;
    alice.join("Main").await;
    let before = alice.say("Main", "before").await;

    pg.stop_server();
    refused_while_down(&server, &alice).await;
    server
        .wait_log("PostgreSQL store: lost the connection")
        .await;

    pg.start_server();
    natter::wait_for(
        std::time::Duration::from_secs(30),
        "service back",
        || async {
            reqwest::get(server.url("/healthz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    posts_again_and_kept_nothing_refused(&server, &alice, &before).await;
    server.stop();
}

/// While the store is down: a post answers 503 `service unavailable` within the call timeout,
/// and `/healthz` answers 503 with `storage: down`.
async fn refused_while_down(server: &Natter, alice: &natter::Client) {
    let started = std::time::Instant::now();
    let (status, body) = alice
        .post(
            "/api/loggedonly/postMessage",
            json!({"chat": "Main", "text": "refused"}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, json!({"error": "service unavailable"}));
    assert!(started.elapsed() < std::time::Duration::from_secs(16));
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["storage"], "down", "{health}");
}

/// Once the store is back: a post is stored, and the history holds it after `before` and
/// nothing of what was refused.
async fn posts_again_and_kept_nothing_refused(
    server: &Natter,
    alice: &natter::Client,
    before: &serde_json::Value,
) {
    server.wait_log("PostgreSQL store: connected to").await;
    let after = alice.say("Main", "after").await;
    assert!(after["id"].as_u64() > before["id"].as_u64());
    assert_eq!(
        alice.history_ids("Main").await,
        [
            before["id"].as_u64().unwrap(),
            after["id"].as_u64().unwrap()
        ],
        "nothing refused was stored"
    );
}

/// PostgreSQL refusing natter's connections (its role's connection cap reached, as when
/// `max_connections` is used up): 503 and `/healthz` down while it refuses, service back by
/// itself once it accepts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_answers_503_while_its_connections_are_refused() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    pg.create_db("capped").await;
    let admin = pg.client("postgres").await;
    // Superusers are exempt from connection caps: natter connects as a role of its own.
    admin
        .batch_execute(
            "CREATE ROLE natter_capped LOGIN; ALTER DATABASE capped OWNER TO natter_capped",
        )
        .await
        .unwrap();
    let url = pg
        .url("capped")
        .replace("postgres://postgres@", "postgres://natter_capped@");
    let dir = tempfile::tempdir().unwrap();
    let server = Natter::start(&postgres_config(dir.path(), &url));
    let alice = server.client();
    alice.guest("alice").await;
    alice.join("Main").await;
    let before = alice.say("Main", "before").await;

    admin
        .batch_execute(
            "ALTER ROLE natter_capped CONNECTION LIMIT 0; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'natter_capped'",
        )
        .await
        .unwrap();
    server
        .wait_log("PostgreSQL store: lost the connection")
        .await;
    refused_while_down(&server, &alice).await;

    admin
        .batch_execute("ALTER ROLE natter_capped CONNECTION LIMIT -1")
        .await
        .unwrap();
    posts_again_and_kept_nothing_refused(&server, &alice, &before).await;
    server.stop();
}
