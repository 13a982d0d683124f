//! The mirror: equal to sled after a workload, through an outage, after kill -9, and as the
//! source of a restore.

use crate::cluster::Cluster;
use crate::natter::{
    self, Natter, pg_message_ids, sled_snapshot, stop_and_compare, wait_for, wait_for_mirrored,
};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What most tests here start from: a cluster with an empty `natter` database, and the config of
/// a fresh data directory (in the temp dir) mirrored into it. `None` where `Cluster::start`
/// skips.
async fn mirrored() -> Option<(Cluster, tempfile::TempDir, PathBuf)> {
    let pg = Cluster::start().await?;
    let url = pg.create_db("natter").await;
    let dir = tempfile::tempdir().unwrap();
    let config = natter::config(dir.path(), Some(&url));
    Some((pg, dir, config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_equals_sled_after_a_scripted_workload() {
    let Some((pg, dir, config)) = mirrored().await else {
        return;
    };
    let server = Natter::start(&config);
    // "down" until the worker's first connection, a moment after start.
    wait_for(Duration::from_secs(10), "healthz ok", || async {
        server.mirror_state().await == "ok"
    })
    .await;

    let root = server.registered("root", "rootpassword").await;
    let alice = server.registered("alice", "alicepassword").await;
    server.registered("bob", "bobpassword").await;
    assert_eq!(
        root.post("/api/adminonly/createChat", json!({"chat": "Second"}))
            .await
            .0,
        200
    );
    assert_eq!(
        root.post("/api/adminonly/createChat", json!({"chat": "Doomed"}))
            .await
            .0,
        200
    );
    root.join("Doomed").await;
    for i in 0..5 {
        root.say("Doomed", &format!("doomed {i}")).await;
    }
    alice.join("Main").await;
    alice.join("Second").await;
    let guest = server.client();
    guest.guest("visitor").await;
    guest.join("Main").await;
    guest.join("Second").await;
    let started = Instant::now();
    let posts = (0..4).map(|w| {
        let client = [&alice, &guest][w % 2];
        let chat = ["Main", "Second"][w / 2];
        async move {
            for i in 0..250 {
                client.say(chat, &format!("message {w}-{i}")).await;
            }
        }
    });
    futures_util::future::join_all(posts).await;
    let posting = started.elapsed();
    // A deleted message leaves the mirror too: the 1,000 below do not count it.
    let regret = alice.say("Main", "delete me").await;
    let (status, body) = alice
        .post(
            "/api/loggedonly/deleteMessage",
            json!({"chat": "Main", "id": regret["id"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        root.post("/api/adminonly/removeChat", json!({"chat": "Doomed"}))
            .await
            .0,
        200
    );
    let db = pg.client("natter").await;
    let lag = wait_for_mirrored(
        &db,
        1000,
        Duration::from_secs(30),
        "1,000 messages mirrored",
    )
    .await;
    eprintln!("posted 1,000 messages in {posting:?}; mirror complete {lag:?} later");

    // Deleting an account is an offline command; its change waits in the outbox for the server.
    server.stop();
    let out = natter::command(&config, &["user", "delete", "bob"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Natter::start(&config);
    wait_for(
        Duration::from_secs(30),
        "bob's deletion mirrored",
        || async {
            db.query_opt("SELECT 1 FROM users WHERE key = 'bob'", &[])
                .await
                .unwrap()
                .is_none()
        },
    )
    .await;
    let (sled, log) = stop_and_compare(server, dir.path(), &db).await;
    assert!(!log.iter().any(|l| l.contains("ERROR")), "{log:#?}");
    assert_eq!(sled.users.len(), 2);
    assert_eq!(sled.chats.len(), 2, "Main and Second; Doomed is gone");
    assert_eq!(sled.messages.len(), 1000);
    let migrations: i64 = db
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(migrations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_never_slows_requests_and_the_mirror_catches_up_exactly() {
    let Some((pg, _dir, config)) = mirrored().await else {
        return;
    };
    let server = Natter::start(&config);
    let guest = server.client();
    guest.guest("walker").await;
    guest.join("Main").await;
    guest.say("Main", "before").await;
    let db = pg.client("natter").await;
    wait_for_mirrored(&db, 1, Duration::from_secs(10), "the first message").await;

    pg.stop_server();
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let started = Instant::now();
        guest.say("Main", &format!("during {i}")).await;
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "slowest post {slowest:?}"
    );
    wait_for(
        Duration::from_secs(10),
        "healthz to see the outage",
        || async { matches!(server.mirror_state().await.as_str(), "down" | "behind") },
    )
    .await;
    server.wait_log("PostgreSQL mirror is down").await;

    pg.start_server();
    let restarted = Instant::now();
    let db = pg.client("natter").await;
    wait_for(Duration::from_secs(30), "the catch-up", || async {
        pg_message_ids(&db).await.len() >= 51
    })
    .await;
    let catch_up = restarted.elapsed();
    eprintln!("slowest post during the outage {slowest:?}; caught up {catch_up:?} after restart");
    let history = guest.history_ids("Main").await;
    assert_eq!(history.len(), 51);
    assert_eq!(pg_message_ids(&db).await, history, "exactly, no duplicates");
    wait_for(Duration::from_secs(10), "healthz ok", || async {
        server.mirror_state().await == "ok"
    })
    .await;
    server.wait_log("PostgreSQL mirror caught up").await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_full_outbox_loses_and_doubles_nothing() {
    let Some((pg, dir, config)) = mirrored().await else {
        return;
    };
    let server = Natter::start(&config);
    let guest = server.client();
    guest.guest("crash").await;
    guest.join("Main").await;
    for i in 0..10 {
        guest.say("Main", &format!("early {i}")).await;
    }
    let db = pg.client("natter").await;
    wait_for_mirrored(&db, 10, Duration::from_secs(10), "early messages").await;
    pg.stop_server();
    for i in 0..20 {
        guest.say("Main", &format!("late {i}")).await;
    }
    assert_eq!(server.mirror_state().await, "down");
    server.kill();

    // Starting while PostgreSQL is still down works: logged, served, retried.
    let server = Natter::start(&config);
    let early = server.client();
    early.guest("early").await;
    assert_eq!(server.mirror_state().await, "down");
    server.wait_log("PostgreSQL mirror is down").await;
    pg.start_server();
    let db = pg.client("natter").await;
    wait_for(Duration::from_secs(30), "the catch-up", || async {
        pg_message_ids(&db).await.len() >= 30
    })
    .await;
    let guest = server.client();
    guest.guest("reader").await;
    let history = guest.join("Main").await["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(history.len(), 30);
    assert_eq!(pg_message_ids(&db).await, history);
    stop_and_compare(server, dir.path(), &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_data_directory_is_restored_from_the_mirror() {
    let Some((pg, dir, config)) = mirrored().await else {
        return;
    };
    let server = Natter::start(&config);
    let root = server.registered("root", "rootpassword").await;
    let alice = server.registered("Alice", "alicepassword").await;
    assert_eq!(
        root.post("/api/adminonly/createChat", json!({"chat": "Second"}))
            .await
            .0,
        200
    );
    alice.join("Main").await;
    alice.join("Second").await;
    for i in 0..30 {
        alice.say(["Main", "Second"][i % 2], &format!("m{i}")).await;
    }
    let main_before = alice.history_ids("Main").await;
    let second_before = alice.history_ids("Second").await;
    let db = pg.client("natter").await;
    wait_for_mirrored(&db, 30, Duration::from_secs(10), "the mirror").await;
    server.stop();
    let (before, _) = sled_snapshot(&dir.path().join("data"));

    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    let server = Natter::start(&config);
    assert!(
        server.log_has("restored 2 accounts, 2 chats and 30 messages"),
        "{:#?}",
        server.log.lock().unwrap()
    );
    let alice = server.client();
    let (status, body) = alice
        .post(
            "/api/authorize",
            json!({"user": "alice", "password": "alicepassword"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "Alice");
    let (_, chats) = alice.get("/api/loggedonly/getChats").await;
    let names: Vec<&str> = chats
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["chat"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Main", "Second"]);
    alice.join("Main").await;
    alice.join("Second").await;
    assert_eq!(alice.history_ids("Main").await, main_before);
    assert_eq!(alice.history_ids("Second").await, second_before);
    let next = alice.say("Main", "after the restore").await["id"]
        .as_u64()
        .unwrap();
    assert!(next > *main_before.iter().chain(&second_before).max().unwrap());
    let root = server.client();
    let (status, body) = root
        .post(
            "/api/authorize",
            json!({"user": "root", "password": "rootpassword"}),
        )
        .await;
    assert_eq!((status, body["admin"].as_bool()), (200, Some(true)));
    server.stop();
    let (after, _) = sled_snapshot(&dir.path().join("data"));
    assert_eq!(after.users, before.users);
    assert_eq!(after.chats, before.chats);
}

#[tokio::test]
async fn sslmode_require_uses_tls() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    // The test cluster has no certificate: a TLS attempt is refused, a plain one would work.
    let config =
        ::natter::store::mirror::pg::parse(&format!("{}?sslmode=require", pg.url("postgres")))
            .unwrap();
    let err = ::natter::store::mirror::pg::connect(&config)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.to_lowercase().contains("tls"), "{err}");
    let plain = ::natter::store::mirror::pg::parse(&pg.url("postgres")).unwrap();
    assert!(::natter::store::mirror::pg::connect(&plain).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_mirror_database_is_copied_again_in_full() {
    let Some((pg, dir, config)) = mirrored().await else {
        return;
    };
    let server = Natter::start(&config);
    let guest = server.client();
    guest.guest("keeper").await;
    guest.join("Main").await;
    for i in 0..20 {
        guest.say("Main", &format!("kept {i}")).await;
    }
    let db = pg.client("natter").await;
    wait_for_mirrored(&db, 20, Duration::from_secs(10), "the mirror").await;
    server.stop();
    drop(db);

    // Someone recreates the database (or restores an old backup) while natter is away.
    let admin = pg.client("postgres").await;
    admin.batch_execute("DROP DATABASE natter").await.unwrap();
    admin.batch_execute("CREATE DATABASE natter").await.unwrap();
    let server = Natter::start(&config);
    server.wait_log("copying everything again").await;
    let db = pg.client("natter").await;
    wait_for_mirrored(&db, 20, Duration::from_secs(20), "the full copy").await;
    stop_and_compare(server, dir.path(), &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_skips_rows_the_api_would_refuse_and_names_its_admins() {
    let Some((pg, dir, config)) = mirrored().await else {
        return;
    };
    let server = Natter::start(&config);
    server.registered("root", "rootpassword").await;
    let alice = server.registered("alice", "alicepassword").await;
    alice.join("Main").await;
    alice.say("Main", "kept").await;
    let db = pg.client("natter").await;
    wait_for_mirrored(&db, 1, Duration::from_secs(10), "the mirror").await;
    server.stop();

    // Rows planted in the mirror while natter was away.
    let quick = bcrypt::hash("plantedpass", 4).unwrap();
    let cost31 = format!("$2b$31{}", &quick[6..]);
    db.batch_execute("ALTER TABLE users ALTER COLUMN email DROP NOT NULL")
        .await
        .unwrap();
    for (key, name, email, hash, admin) in [
        (
            "mallory",
            "mallory",
            Some("m@example.org"),
            quick.as_str(),
            true,
        ),
        ("bot", "Bot", Some("b@example.org"), quick.as_str(), false),
        ("a b", "a b", Some("ab@example.org"), quick.as_str(), false),
        (
            "<b>x</b>",
            "<b>x</b>",
            Some("x@example.org"),
            quick.as_str(),
            false,
        ),
        (
            "twin",
            "twin",
            Some("ALICE@example.org"),
            quick.as_str(),
            false,
        ),
        (
            "slow",
            "slow",
            Some("s@example.org"),
            cost31.as_str(),
            false,
        ),
        ("nulled", "nulled", None, quick.as_str(), false),
    ] {
        db.execute(
            "INSERT INTO users VALUES ($1, $2, $3, $4, true, $5, false, now())",
            &[&key, &name, &email, &hash, &admin],
        )
        .await
        .unwrap();
    }
    db.batch_execute(
        "INSERT INTO chats VALUES (-1, 'Minus', now());
         INSERT INTO messages VALUES (4611686018427387904, 1, 'alice', 'huge', now(),
                                      true, false, false);",
    )
    .await
    .unwrap();

    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    let server = Natter::start(&config);
    let log = server.log.lock().unwrap().clone();
    let skipped: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("restore: skipped"))
        .collect();
    assert_eq!(skipped.len(), 8, "one line per refused row: {log:#?}");
    for needle in [
        "account \"bot\": the name is reserved",
        "account \"a b\": the name breaks",
        "account \"<b>x</b>\": the name breaks",
        "account \"twin\": the same email as account \"alice\"",
        "account \"slow\": the bcrypt password hash has cost 31",
        "account \"nulled\": its email is NULL",
        "chat -1: chat id -1 is negative",
        "message 4611686018427387904: message id 4611686018427387904 is outside",
    ] {
        assert!(
            skipped.iter().any(|l| l.contains(needle)),
            "{needle}: {skipped:#?}"
        );
    }
    assert!(
        server.log_has("restore: the mirror makes these accounts admins: mallory, root"),
        "{log:#?}"
    );
    // Ids stay usable: a new chat and a new message are created.
    let root = server.client();
    let (status, _) = root
        .post(
            "/api/authorize",
            json!({"user": "root", "password": "rootpassword"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        root.post("/api/adminonly/createChat", json!({"chat": "After"}))
            .await
            .0,
        200
    );
    root.join("Main").await;
    let id = root.say("Main", "after the restore").await["id"]
        .as_u64()
        .unwrap();
    assert_eq!(id, 2);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_natters_mirror_is_left_alone_and_a_second_writer_is_refused() {
    let Some((pg, _production, config)) = mirrored().await else {
        return;
    };
    let url = pg.url("natter");
    let server = Natter::start(&config);
    let alice = server.registered("alice", "alicepassword").await;
    alice.join("Main").await;
    alice.say("Main", "production's").await;
    let db = pg.client("natter").await;
    wait_for_mirrored(&db, 1, Duration::from_secs(10), "the mirror").await;

    // A second natter with its own data on the same database, while the first still writes.
    let staging = tempfile::tempdir().unwrap();
    let staging_plain = natter::config(staging.path(), None);
    let second = Natter::start(&staging_plain);
    second.client().guest("tester").await;
    second.stop();
    let staging_config = natter::config(staging.path(), Some(&url));
    let second = Natter::start(&staging_config);
    second
        .wait_log("another natter is writing to the mirror database")
        .await;
    assert_eq!(second.mirror_state().await, "down");
    second.stop();

    // An empty data directory on the same database is not restored while the first writes:
    // that would make two servers of one data set.
    let empty = tempfile::tempdir().unwrap();
    let mut third = std::process::Command::new(env!("CARGO_BIN_EXE_natter"))
        .arg("--dev")
        .arg("--config")
        .arg(natter::config(empty.path(), Some(&url)))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while third.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            third.kill().unwrap();
            panic!("natter served an empty data directory restored from a mirror in use");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = third.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another natter is writing to the mirror database"),
        "{stderr}"
    );
    assert!(!stderr.contains("restored "), "{stderr}");
    server.stop();

    // The first one stopped: the label still says the database is not staging's.
    let second = Natter::start(&staging_config);
    second.wait_log("holds another natter's copy").await;
    assert_eq!(second.mirror_state().await, "down");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pg_message_ids(&db).await,
        [1],
        "production's copy is untouched"
    );
    second.stop();

    // Asked explicitly, staging replaces it.
    let text = std::fs::read_to_string(&staging_config).unwrap();
    std::fs::write(
        &staging_config,
        text.replacen(
            "database_url",
            "mirror_replace_foreign = true\ndatabase_url",
            1,
        ),
    )
    .unwrap();
    let second = Natter::start(&staging_config);
    wait_for(Duration::from_secs(20), "the replacement", || async {
        second.mirror_state().await == "ok"
    })
    .await;
    stop_and_compare(second, staging.path(), &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_offline_commands_leave_the_mirror_alone() {
    let Some((_pg, dir, config)) = mirrored().await else {
        return;
    };
    let server = Natter::start(&config);
    server.registered("alice", "alicepassword").await;
    server.stop();
    // The admin's shell has no database_url.
    let plain = dir.path().join("plain.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("database_url"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&plain, without).unwrap();
    for args in [
        vec!["user", "list"],
        vec!["chat", "list"],
        vec!["export"],
        vec!["import-chatty", "postgres://127.0.0.1:1/x"],
    ] {
        let out = natter::command(&plain, &args);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!said.contains("dropping"), "{args:?}: {said}");
    }
    let server = Natter::start(&config);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !server.log_has("queued a full copy"),
        "{:#?}",
        server.log.lock().unwrap()
    );
    server.stop();

    // A command that changes data says so before it starts.
    let out = natter::command(&plain, &["chat", "create", "Later"]);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("feeds a PostgreSQL mirror, but database_url is not set"),
        "{said}"
    );
    let server = Natter::start(&config);
    server.wait_log("queued a full copy").await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_postgresql_at_an_empty_data_directory_is_said_once() {
    let Some((pg, _dir, config)) = mirrored().await else {
        return;
    };
    pg.stop_server();
    let starting = std::thread::spawn(move || Natter::start(&config));
    std::thread::sleep(Duration::from_secs(4));
    pg.start_server();
    let server = starting.join().unwrap();
    server.wait_log("answered after").await;
    let waits = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("cannot be reached yet"))
        .count();
    assert_eq!(waits, 1, "{:#?}", server.log.lock().unwrap());
    server.stop();
}

/// Whether the connection `client` uses is encrypted.
async fn on_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn sslmode_prefer_tries_tls_first_and_sslrootcert_is_read() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    use ::natter::store::mirror::pg::{connect, exposure_warning, parse};
    // Without TLS on the server, prefer falls back to plain text.
    let plain = connect(&parse(&pg.url("postgres")).unwrap()).await.unwrap();
    assert!(!on_tls(&plain).await);
    let ca = pg.enable_tls();
    for url in [
        pg.url("postgres"),
        format!("{}?sslmode=prefer", pg.url("postgres")),
    ] {
        let client = connect(&parse(&url).unwrap()).await.unwrap();
        assert!(on_tls(&client).await, "{url} tries TLS first");
    }
    let pinned = format!(
        "{}?sslmode=require&sslrootcert={}",
        pg.url("postgres"),
        ca.display()
    );
    let client = connect(&parse(&pinned).unwrap()).await.unwrap();
    assert!(on_tls(&client).await);
    // require checks the certificate: the system's roots do not know this authority.
    let unknown = format!("{}?sslmode=require", pg.url("postgres"));
    assert!(connect(&parse(&unknown).unwrap()).await.is_err());
    let disabled = format!("{}?sslmode=disable", pg.url("postgres"));
    assert!(!on_tls(&connect(&parse(&disabled).unwrap()).await.unwrap()).await);

    assert_eq!(
        exposure_warning(&parse(&pg.url("x")).unwrap()),
        None,
        "loopback"
    );
    assert_eq!(
        exposure_warning(&parse("host=/run/postgresql dbname=x").unwrap()),
        None
    );
    let remote = exposure_warning(&parse("postgres://db.example.org/x").unwrap()).unwrap();
    assert!(remote.contains("sslmode=prefer") && remote.contains("sslmode=require"));
    assert_eq!(
        exposure_warning(&parse("postgres://db.example.org/x?sslmode=require").unwrap()),
        None
    );
}

/// A loopback proxy to `port` that answers the first SSL request with yes and then hangs up,
/// as a server with a broken TLS setup does; everything else passes through.
async fn proxy_breaking_tls(port: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut first = [0u8; 8];
                if client.read_exact(&mut first).await.is_err() {
                    return;
                }
                if first == SSL_REQUEST {
                    let _ = client.write_all(b"S").await;
                    return; // the handshake meets a closed socket
                }
                let mut server = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                server.write_all(&first).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    proxy_port
}

#[tokio::test]
async fn sslmode_prefer_falls_back_to_plain_text_when_the_tls_handshake_fails() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    use ::natter::store::mirror::pg::{connect, parse};
    let port = proxy_breaking_tls(pg.port).await;
    let url = |mode: &str| format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode={mode}");
    let client = connect(&parse(&url("prefer")).unwrap()).await.unwrap();
    assert!(!on_tls(&client).await, "prefer went on in plain text");
    assert!(
        connect(&parse(&url("require")).unwrap()).await.is_err(),
        "require never falls back"
    );
}
