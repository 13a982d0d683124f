//! `natter import-chatty`: the original server's schema, filled the way it filled it, moved
//! into an empty data directory.

use crate::cluster::Cluster;
use crate::natter::{self, Natter};
use ::natter::store::Store;
use serde_json::json;

/// chatty-server's schema after all its migrations (reference/original-server.md, 14.1).
const CHATTY_SCHEMA: &str = "
CREATE TABLE users (
    id SERIAL PRIMARY KEY,
    \"user\" VARCHAR(50) NOT NULL UNIQUE,
    email VARCHAR(50) NOT NULL UNIQUE,
    email_activation_token VARCHAR(50) NOT NULL,
    verified BOOLEAN NOT NULL DEFAULT FALSE,
    password_hash VARCHAR(255) NOT NULL,
    admin BOOLEAN NOT NULL DEFAULT false,
    password_reset_token VARCHAR(50) NOT NULL DEFAULT '',
    bot BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE chats (chat VARCHAR(50) NOT NULL UNIQUE);
CREATE TABLE messages (
    id SERIAL PRIMARY KEY,
    user_id INTEGER NOT NULL,
    \"user\" VARCHAR(50) NOT NULL,
    chat VARCHAR(50) NOT NULL,
    text TEXT NOT NULL,
    time TIMESTAMP NOT NULL,
    verified BOOLEAN DEFAULT false,
    bot BOOLEAN NOT NULL DEFAULT false
);";

async fn fill(db: &tokio_postgres::Client) {
    db.batch_execute(CHATTY_SCHEMA).await.unwrap();
    let users = [
        // (user, email, password, verified, admin)
        ("alice", "alice@example.org", "sixchr", true, false),
        ("Boss", "boss@example.org", "bosspassword", true, true),
        ("newbie", "newbie@example.org", "newbiepass", false, false),
        ("bad name!", "bad@example.org", "badpassword", true, false),
        ("ALICE", "alice2@example.org", "otherpass", true, false),
    ];
    for (name, email, password, verified, admin) in users {
        let hash = bcrypt::hash(password, 4).unwrap();
        db.execute(
            "INSERT INTO users (\"user\", email, email_activation_token, verified, password_hash,
                                admin, password_reset_token)
             VALUES ($1, $2, 'tok', $3, $4, $5, 'reset')",
            &[&name, &email, &verified, &hash, &admin],
        )
        .await
        .unwrap();
    }
    db.batch_execute("INSERT INTO chats (chat) VALUES ('Main'), ('Second')")
        .await
        .unwrap();
    // (id, user_id, user, chat, text, time, verified); gaps as a global SERIAL leaves them.
    type Row = (
        i32,
        i32,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        Option<bool>,
    );
    let messages: [Row; 6] = [
        (
            1,
            1,
            "alice",
            "Main",
            "hello",
            "2024-01-02 03:04:05",
            Some(true),
        ),
        (
            2,
            -1,
            "visitor",
            "Main",
            "hi from a guest",
            "2024-01-02 03:05:00",
            Some(false),
        ),
        (
            4,
            2,
            "Boss",
            "Second",
            "second chat",
            "2024-01-03 00:00:00",
            Some(true),
        ),
        (
            5,
            -1,
            "ghost",
            "Removed",
            "in a removed chat",
            "2024-01-03 00:00:01",
            None,
        ),
        (
            7,
            -1,
            "visitor",
            "Main",
            "guest again",
            "2024-01-04 00:00:00",
            None,
        ),
        (
            9,
            1,
            "alice",
            "Main",
            "last",
            "2024-01-05 12:00:00",
            Some(true),
        ),
    ];
    for (id, user_id, user, chat, text, time, verified) in messages {
        db.execute(
            "INSERT INTO messages (id, user_id, \"user\", chat, text, time, verified)
             VALUES ($1, $2, $3, $4, $5, $6::text::timestamp, $7)",
            &[&id, &user_id, &user, &chat, &text, &time, &verified],
        )
        .await
        .unwrap();
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// alice, imported from chatty with a 6-character password, signs in with it: her client and
/// the answer.
async fn alice_signs_in(server: &Natter) -> (crate::natter::Client, serde_json::Value) {
    let alice = server.client();
    let (status, body) = alice
        .post(
            "/api/authorize",
            json!({"user": "alice", "password": "sixchr"}),
        )
        .await;
    assert_eq!(status, 200, "a password from chatty signs in: {body}");
    (alice, body)
}

/// The counts in the summary line of a run over `fill`'s data.
const COUNTS: &str = "3 users, 2 chats, 5 messages; skipped: 2 users, 0 chats, 1 messages";

/// Runs `natter import-chatty URL` (with `--dry-run` when `dry`), checks it succeeded with the
/// summary of `fill`'s data, and returns what it printed.
fn import_chatty(config: &std::path::Path, url: &str, dry: bool) -> String {
    let mut args = vec!["import-chatty", url];
    if dry {
        args.push("--dry-run");
    }
    let run = natter::command(config, &args);
    let report = text(&run);
    assert!(run.status.success(), "{report}");
    let summary = if dry {
        format!("would import: {COUNTS}")
    } else {
        format!("imported: {COUNTS}")
    };
    assert!(report.contains(&summary), "{report}");
    report
}

/// A second run is refused with exit code `code` and a message containing `why`.
fn import_chatty_refused(config: &std::path::Path, args: &[&str], code: i32, why: &str) {
    let refused = natter::command(config, args);
    assert_eq!(refused.status.code(), Some(code), "{}", text(&refused));
    assert!(text(&refused).contains(why), "{}", text(&refused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_chatty_moves_accounts_chats_and_history_over() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    let url = pg.create_db("chatty").await;
    fill(&pg.client("chatty").await).await;
    let dir = tempfile::tempdir().unwrap();
    let config = natter::config(dir.path(), None);
    let data = dir.path().join("data");

    import_chatty(&config, &url, true);
    assert!(!data.exists(), "a dry run writes nothing");

    let report = import_chatty(&config, &url, false);
    assert!(
        report.contains("imported without admin: chatty-server's admins Boss"),
        "{report}"
    );
    let skipped: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("skipped"))
        .collect();
    assert_eq!(skipped.len(), 3, "{report}");
    assert!(report.contains("skipped user 4 \"bad name!\": the name breaks natter's rules"));
    assert!(report.contains("skipped user 5 \"ALICE\": the same name as user 1 \"alice\""));
    assert!(report.contains("skipped message 5 by \"ghost\" (guest): its chat \"Removed\""));
    import_chatty_refused(&config, &["import-chatty", &url], 1, "already holds data");

    let server = Natter::start(&config);
    let (alice, body) = alice_signs_in(&server).await;
    assert_eq!(
        body,
        json!({"user": "alice", "verified": true, "admin": false, "bot": false})
    );
    let (status, _) = alice
        .post(
            "/api/authorize",
            json!({"user": "alice", "password": "sixchrX"}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, body) = server
        .client()
        .post(
            "/api/authorize",
            json!({"user": "newbie", "password": "newbiepass"}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("email is not verified"))
    );
    // Its activation link was dropped; a password reset (mailed to the address) verifies it.
    let newbie = server.client();
    assert_eq!(
        newbie
            .post("/api/requestResetPassword", json!({"user": "newbie"}))
            .await
            .0,
        200
    );
    let line = server.wait_log("reset password token: ").await;
    let token = line.split("reset password token: ").nth(1).unwrap().trim();
    let (status, body) = newbie
        .post(
            "/api/resetPassword",
            json!({"user": "newbie", "passwordResetToken": token, "password": "newbiepass2"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = newbie
        .post(
            "/api/authorize",
            json!({"user": "newbie", "password": "newbiepass2"}),
        )
        .await;
    assert_eq!((status, &body["verified"]), (200, &json!(true)), "{body}");
    let boss = server.client();
    let (status, body) = boss
        .post(
            "/api/authorize",
            json!({"user": "boss", "password": "bosspassword"}),
        )
        .await;
    assert_eq!(
        (status, &body["admin"]),
        (200, &json!(false)),
        "chatty-server's admin flag stays behind without --keep-admins"
    );

    let main = alice.join("Main").await["messages"].clone();
    let main: Vec<(u64, &str, &str, i64, bool)> = main
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["user"].as_str().unwrap(),
                m["text"].as_str().unwrap(),
                m["time"].as_i64().unwrap(),
                m["verified"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        main,
        [
            (1, "alice", "hello", 1704164645, true),
            (2, "visitor", "hi from a guest", 1704164700, false),
            (7, "visitor", "guest again", 1704326400, false),
            (9, "alice", "last", 1704456000, true),
        ]
    );
    boss.join("Second").await;
    assert_eq!(boss.history_ids("Second").await, [4]);
    let next = alice.say("Main", "first in natter").await["id"]
        .as_u64()
        .unwrap();
    assert_eq!(next, 10, "new ids continue above the highest imported one");
    server.stop();

    // The first sign-in replaced alice's bcrypt hash with PBKDF2; the password still works.
    let store =
        ::natter::store::sled::SledStore::open(&data, ::natter::store::sled::SyncMode::Relaxed)
            .unwrap();
    let hash = store.user("alice").unwrap().unwrap().password_hash;
    assert!(hash.starts_with("$pbkdf2-sha256$i=1000,"), "{hash}");
    assert!(
        store
            .user("boss")
            .unwrap()
            .unwrap()
            .password_hash
            .starts_with("$pbkdf2"),
        "upgraded at its first sign-in too"
    );
    store.close().unwrap();
    drop(store);
    let server = Natter::start(&config);
    let (status, _) = server
        .client()
        .post(
            "/api/authorize",
            json!({"user": "alice", "password": "sixchr"}),
        )
        .await;
    assert_eq!(status, 200);
    server.stop();

    // chatty-server's own database as natter's mirror: refused loudly, its tables untouched.
    let mirrored = natter::config(dir.path(), Some(&url));
    let server = Natter::start(&mirrored);
    let line = server
        .wait_log("the mirror needs a database of its own")
        .await;
    assert!(
        line.contains("natter import-chatty") && line.contains("new, empty database"),
        "the way forward is named: {line}"
    );
    assert_eq!(server.mirror_state().await, "down");
    server.stop();
    let chatty = pg.client("chatty").await;
    let stray: Option<String> = chatty
        .query_one("SELECT to_regclass('schema_migrations')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stray, None, "nothing created in chatty-server's database");
    let users: i64 = chatty
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 5);
}

#[test]
fn a_cut_short_import_keeps_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let config = natter::config(dir.path(), None);
    let store = ::natter::store::sled::SledStore::open(
        &dir.path().join("data"),
        ::natter::store::sled::SyncMode::Relaxed,
    )
    .unwrap();
    store.begin_load("import-chatty").unwrap();
    store.close().unwrap();
    drop(store);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(["--dev", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("natter started on a half-imported data directory");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unfinished import-chatty"), "{stderr}");
    let again = natter::command(&config, &["import-chatty", "postgres://127.0.0.1:1/x"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again).contains("already holds data"),
        "{}",
        text(&again)
    );
}

/// Rows a chatty-server user could plant: self-made admin, bot and verified flags, a bcrypt hash
/// of cost 31, a case-duplicate account with its own messages.
async fn plant(db: &tokio_postgres::Client) {
    let quick = bcrypt::hash("robopassword", 4).unwrap();
    let cost31 = format!("$2b$31{}", &quick[6..]);
    for (name, email, hash, admin, bot) in [
        ("Robo", "robo@example.org", quick.as_str(), false, true),
        ("slow", "slow@example.org", cost31.as_str(), false, false),
        ("Chief", "chief@example.org", quick.as_str(), true, false),
    ] {
        db.execute(
            "INSERT INTO users (\"user\", email, email_activation_token, verified, password_hash,
                                admin, bot)
             VALUES ($1, $2, 'tok', true, $3, $4, $5)",
            &[&name, &email, &hash, &admin, &bot],
        )
        .await
        .unwrap();
    }
    // 10: by the skipped ALICE (user 5); 11: a guest that set verified and bot on its message.
    db.batch_execute(
        "INSERT INTO messages (id, user_id, \"user\", chat, text, time, verified, bot) VALUES
            (10, 5, 'ALICE', 'Main', 'by the other alice', '2024-01-06 00:00:00', true, false),
            (11, -1, 'visitor', 'Main', 'a guest posing', '2024-01-06 00:00:01', true, true)",
    )
    .await
    .unwrap();
}

/// Chief's sign-in on `server`: the status and the admin flag it answers with.
async fn chief_signs_in(server: &Natter) -> (u16, serde_json::Value) {
    let (status, body) = server
        .client()
        .post(
            "/api/authorize",
            json!({"user": "Chief", "password": "robopassword"}),
        )
        .await;
    (status, body["admin"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_chatty_drops_self_made_flags_and_authors_by_user_id() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    let url = pg.create_db("chatty").await;
    let db = pg.client("chatty").await;
    fill(&db).await;
    plant(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let config = natter::config(dir.path(), None);

    // The URL from standard input: nothing on the command line.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(["--dev", "--config"])
        .arg(&config)
        .arg("import-chatty")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{url}\n").as_bytes(),
    )
    .unwrap();
    let run = child.wait_with_output().unwrap();
    let report = text(&run);
    assert!(run.status.success(), "{report}");
    assert!(
        report.contains("imported without admin: chatty-server's admins Boss, Chief"),
        "{report}"
    );
    assert!(report.contains("account Robo carries chatty-server's bot flag"));
    assert!(
        report.contains("skipped user 7 \"slow\": the bcrypt password hash has cost 31"),
        "{report}"
    );

    let server = Natter::start(&config);
    let (alice, _) = alice_signs_in(&server).await;
    let messages = alice.join("Main").await["messages"].clone();
    let posing = messages
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 11)
        .unwrap();
    assert_eq!(
        (&posing["verified"], &posing["bot"]),
        (&json!(false), &json!(false)),
        "a guest's message keeps neither flag: {posing}"
    );
    let (status, body) = alice
        .post(
            "/api/loggedonly/deleteMessage",
            json!({"chat": "Main", "id": 10}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("not allowed")),
        "the skipped ALICE's message is not alice's: {body}"
    );
    let (status, _) = alice
        .post(
            "/api/loggedonly/deleteMessage",
            json!({"chat": "Main", "id": 9}),
        )
        .await;
    assert_eq!(status, 200, "alice's own (user id 1) stays hers");
    assert_eq!(chief_signs_in(&server).await, (200, json!(false)));
    server.stop();

    // --keep-admins, the URL from CHATTY_DATABASE_URL_FILE.
    let kept = tempfile::tempdir().unwrap();
    let config = natter::config(kept.path(), None);
    let secret = kept.path().join("chatty-url");
    std::fs::write(&secret, format!("{url}\n")).unwrap();
    let run = natter::command_with_env(
        &config,
        &["import-chatty", "--keep-admins"],
        &[("CHATTY_DATABASE_URL_FILE", secret.to_str().unwrap())],
    );
    let report = text(&run);
    assert!(run.status.success(), "{report}");
    assert!(report.contains("kept admin (--keep-admins) for chatty-server's admins: Boss, Chief"));
    let server = Natter::start(&config);
    assert_eq!(chief_signs_in(&server).await, (200, json!(true)));
    server.stop();

    // CHATTY_DATABASE_URL, for a dry run.
    let third = tempfile::tempdir().unwrap();
    let run = natter::command_with_env(
        &natter::config(third.path(), None),
        &["import-chatty", "--dry-run"],
        &[("CHATTY_DATABASE_URL", &url)],
    );
    assert!(run.status.success(), "{}", text(&run));
    assert!(
        text(&run).contains("would import: 5 users"),
        "{}",
        text(&run)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_chatty_fills_an_empty_postgres_store() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    let url = pg.create_db("chatty").await;
    fill(&pg.client("chatty").await).await;
    let store_url = pg.create_db("natter").await;
    let dir = tempfile::tempdir().unwrap();
    let config = natter::config(dir.path(), Some(&store_url));
    let text_of_config = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("storage = \"postgres\"\n{text_of_config}")).unwrap();
    let accounts = async || -> i64 {
        pg.client("natter")
            .await
            .query_one("SELECT count(*) FROM users", &[])
            .await
            .unwrap()
            .get(0)
    };

    import_chatty(&config, &url, true);
    assert_eq!(accounts().await, 0, "a dry run writes nothing");

    let report = import_chatty(&config, &url, false);
    assert!(report.contains("skipped message 5 by \"ghost\" (guest): its chat \"Removed\""));
    assert_eq!(accounts().await, 3);
    import_chatty_refused(
        &config,
        &["import-chatty", &url],
        1,
        "the PostgreSQL database already holds data",
    );

    let server = Natter::start(&config);
    // While the server runs, a load (even a dry run) is refused before it reads anything.
    import_chatty_refused(
        &config,
        &["import-chatty", &url, "--dry-run"],
        2,
        "a natter server is using this database",
    );
    let (alice, _) = alice_signs_in(&server).await;
    alice.join("Main").await;
    assert_eq!(alice.history_ids("Main").await, [1, 2, 7, 9]);
    let next = alice.say("Main", "first in natter").await["id"]
        .as_u64()
        .unwrap();
    assert_eq!(next, 10, "new ids continue above the highest imported one");
    server.stop();
}
