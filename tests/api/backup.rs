//! Backup and restore (docs/operations.md, Backup and restore): the export route while the server runs,
//! `natter export` while it is stopped, and `natter import` into an empty data directory.
//! With `TEST_STORAGE=postgres` the same on the PostgreSQL store: each data directory then stands
//! for a database of its own (`helpers::store_lines`), `natter export` also works while the
//! server runs, and "empty" means a database without accounts or chats.

use crate::helpers::{Client, TestServer, on_postgres};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn natter(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_natter"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// A config file for the offline commands on `data_dir` (or its database).
async fn offline_config(dir: &Path, data_dir: &Path) -> PathBuf {
    let path = dir.join(format!(
        "offline-{}.toml",
        data_dir.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&path, crate::helpers::store_lines(data_dir).await).unwrap();
    path
}

/// Whether a refused import left the store of `data_dir` as it was: on sled not even created,
/// on PostgreSQL still without accounts or chats (what an import writes first).
fn untouched(data_dir: &Path) -> bool {
    if !on_postgres() {
        return !data_dir.exists();
    }
    let store = crate::helpers::open_store_at(data_dir);
    store.users().unwrap().is_empty() && store.chats().unwrap().is_empty()
}

fn lines(dump: &str) -> Vec<Value> {
    dump.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The dump without its header's `created` stamp, for comparing two dumps of the same data.
fn content(dump: &str) -> Vec<Value> {
    let mut all = lines(dump);
    all[0].as_object_mut().unwrap().remove("created");
    all
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Accounts, chats (one removed) and messages in two chats, posted in turns.
async fn populate(server: &TestServer) -> (Client, Client) {
    let root = server.client();
    root.registered("root").await;
    let pat = server.client();
    pat.registered("Pat").await;
    root.post("/api/adminonly/createChat", json!({"chat":"Ops"}))
        .await
        .assert_ok_empty();
    root.post("/api/adminonly/createChat", json!({"chat":"Gone"}))
        .await
        .assert_ok_empty();
    for chat in ["Main", "Ops", "Gone"] {
        root.join(chat).await;
    }
    pat.join("Main").await;
    let guest = server.guest_in("gus", "Main").await;
    root.say("Gone", "lost with its chat").await;
    for i in 0..3 {
        root.say("Main", &format!("main {i}")).await;
        pat.say("Main", &format!("pat {i}\nwith a second line"))
            .await;
        root.say("Ops", &format!("ops {i}")).await;
    }
    guest.say("Main", "a guest's words stay").await;
    root.post("/api/adminonly/removeChat", json!({"chat":"Gone"}))
        .await
        .assert_ok_empty();
    (root, pat)
}

/// A stopped server whose store is gone (or empty), ready to receive an import.
async fn empty_target() -> TestServer {
    let mut target = TestServer::start().await;
    target.stop().await;
    target.empty_stored_data().await;
    target
}

#[tokio::test]
async fn online_export_restores_accounts_chats_and_history_with_their_ids() {
    let mut source = TestServer::start().await;
    let (root, _pat) = populate(&source).await;
    let mut history = Vec::new();
    for chat in ["Main", "Ops"] {
        let r = root
            .post("/api/loggedonly/getLastMessages", json!({ "chat": chat }))
            .await;
        history.push(r.json());
    }

    let r = root.get("/api/adminonly/export").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type").unwrap(), "application/x-ndjson");
    assert!(
        r.header("content-disposition")
            .unwrap()
            .starts_with("attachment; filename=\"natter-export-"),
    );
    let dump = r.body;
    let all = lines(&dump);
    assert_eq!(all[0]["natter_export"], 1, "{}", all[0]);
    let last = all.last().unwrap();
    assert_eq!(
        (
            &last["type"],
            &last["users"],
            &last["chats"],
            &last["messages"]
        ),
        (&json!("end"), &json!(2), &json!(2), &json!(10)),
        "{last}"
    );
    let users: Vec<&Value> = all.iter().filter(|l| l["type"] == "user").collect();
    assert_eq!(users[0]["name"], "Pat");
    assert!(
        users[0]["password_hash"]
            .as_str()
            .unwrap()
            .starts_with("$pbkdf2")
    );
    assert_eq!(
        (&users[1]["name"], &users[1]["admin"], &users[1]["verified"]),
        (&json!("root"), &json!(true), &json!(true))
    );
    for secret in ["activation", "reset", "session", "token"] {
        assert!(!dump.contains(secret), "{secret} in the dump");
    }
    assert!(
        !dump.contains("lost with its chat"),
        "a removed chat's messages"
    );
    let ids: Vec<u64> = all
        .iter()
        .filter(|l| l["type"] == "message")
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    source.stop().await;

    let mut target = empty_target().await;
    let file = target.dir.path().join("dump.jsonl");
    std::fs::write(&file, &dump).unwrap();
    let config = offline_config(target.dir.path(), &target.data_dir()).await;
    let out = natter(&config, &["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let into = if on_postgres() {
        "the PostgreSQL store".to_owned()
    } else {
        target.data_dir().display().to_string()
    };
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "imported 2 users, 2 chats, 10 messages into {into}"
        )),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    target.restart(&[]).await;

    let root = target.client();
    let r = root
        .post(
            "/api/authorize",
            json!({"user":"root","password":"password123"}),
        )
        .await;
    assert_eq!(
        r.body,
        r#"{"user":"root","verified":true,"admin":true,"bot":false}"#
    );
    let pat = target.client();
    let r = pat
        .post(
            "/api/authorize",
            json!({"user":"pat","password":"password123"}),
        )
        .await;
    assert_eq!(
        r.body,
        r#"{"user":"Pat","verified":true,"admin":false,"bot":false}"#
    );
    let r = pat
        .post(
            "/api/authorize",
            json!({"user":"pat","password":"wrong-password"}),
        )
        .await;
    r.assert_error(401, "wrong username or password");
    // The same dump comes back out: every account, chat and message with its id.
    let again = root.get("/api/adminonly/export").await.body;
    assert_eq!(content(&again), content(&dump));
    for (chat, before) in ["Main", "Ops"].iter().zip(&history) {
        root.join(chat).await;
        let now = root
            .post("/api/loggedonly/getLastMessages", json!({ "chat": chat }))
            .await
            .json();
        assert_eq!(&now, before, "{chat}");
    }
    let newest = *ids.last().unwrap();
    let fresh = root.say("Main", "after the restore").await;
    assert!(fresh["id"].as_u64().unwrap() > newest, "{fresh}");
    // The removed chat's ids are not handed out again either.
    root.post("/api/adminonly/createChat", json!({"chat":"Later"}))
        .await
        .assert_ok_empty();
    let header = &all[0];
    let after = lines(&root.get("/api/adminonly/export").await.body);
    let later = after.iter().find(|l| l["name"] == "Later").unwrap();
    assert!(
        later["id"].as_u64() >= header["next_chat_id"].as_u64(),
        "{later}"
    );
    target.stop().await;
}

#[tokio::test]
async fn offline_export_matches_the_online_one_and_round_trips() {
    let mut server = TestServer::start().await;
    let (root, _) = populate(&server).await;
    let online = root.get("/api/adminonly/export").await.body;
    let config = offline_config(server.dir.path(), &server.data_dir()).await;
    let out = natter(&config, &["export"]);
    if on_postgres() {
        // PostgreSQL serves both: the export reads the database while the server runs.
        assert!(out.status.success(), "{}", stderr(&out));
        let running = String::from_utf8(out.stdout).unwrap();
        assert_eq!(content(&running), content(&online));
    } else {
        assert_eq!(out.status.code(), Some(2), "refused while the server runs");
        assert!(stderr(&out).contains("the data directory is in use by a running natter"));
    }
    server.stop().await;

    let out = natter(&config, &["export"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let to_stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(content(&to_stdout), content(&online));
    assert!(stderr(&out).contains("exported 2 users, 2 chats, 10 messages"));
    let file = server.dir.path().join("offline.jsonl");
    let out = natter(&config, &["export", "--output", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let to_file = std::fs::read_to_string(&file).unwrap();
    assert_eq!(content(&to_file), content(&online));

    // Imported into a new data directory, the data exports the same again.
    let restored = server.dir.path().join("restored");
    let restored_config = offline_config(server.dir.path(), &restored).await;
    let out = natter(&restored_config, &["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = natter(&restored_config, &["export"]);
    assert_eq!(
        content(&String::from_utf8(out.stdout).unwrap()),
        content(&online)
    );
    // A second import into the now full directory (or database) is refused.
    let out = natter(&restored_config, &["import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let refusal = if on_postgres() {
        "the database already holds accounts or chats"
    } else {
        "is not empty"
    };
    assert!(stderr(&out).contains(refusal), "{}", stderr(&out));
}

/// A populated server, stopped, and its data as `natter export` writes it.
async fn stopped_with_dump() -> (TestServer, String) {
    let mut server = TestServer::start().await;
    populate(&server).await;
    server.stop().await;
    let config = offline_config(server.dir.path(), &server.data_dir()).await;
    let out = natter(&config, &["export"]);
    assert_eq!(out.status.code(), Some(0), "export: {}", stderr(&out));
    let dump = String::from_utf8(out.stdout).unwrap();
    (server, dump)
}

#[tokio::test]
async fn a_damaged_or_truncated_dump_is_refused_by_line_and_writes_nothing() {
    let (server, dump) = stopped_with_dump().await;
    let dir = server.dir.path();
    let all: Vec<&str> = dump.lines().collect();
    let n = all.len();
    let joined = |lines: &[&str]| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let duplicate_id = {
        let mut copy = all.clone();
        // The first message's line again, in place of the second's.
        let first = copy
            .iter()
            .position(|l| l.contains("\"type\":\"message\""))
            .unwrap();
        copy[first + 1] = copy[first];
        (joined(&copy), first + 2)
    };
    let cases: Vec<(&str, String, usize)> = vec![
        ("cut inside a line", dump[..dump.len() - 20].to_owned(), n),
        ("cut after a line", joined(&all[..n - 1]), n),
        (
            "no end marker, later lines lost",
            joined(&all[..n - 4]),
            n - 3,
        ),
        (
            "a line garbled",
            dump.replacen("\"type\":\"chat\"", "\"type\":\"chat", 1),
            {
                all.iter()
                    .position(|l| l.contains("\"type\":\"chat\""))
                    .unwrap()
                    + 1
            },
        ),
        ("a message id repeated", duplicate_id.0, duplicate_id.1),
        (
            "counts that do not match",
            {
                let mut copy = all.clone();
                copy.remove(n - 2);
                joined(&copy)
            },
            n - 1,
        ),
        ("text after the end marker", format!("{dump}{{}}\n"), n + 1),
        ("not an export", "{\"hello\":1}\n".to_owned(), 1),
        (
            "a newer format",
            dump.replacen("\"natter_export\":1", "\"natter_export\":2", 1),
            1,
        ),
    ];
    for (what, text, line) in cases {
        let file = dir.join("damaged.jsonl");
        std::fs::write(&file, &text).unwrap();
        let target = dir.join("target");
        let target_config = offline_config(dir, &target).await;
        let out = natter(&target_config, &["import", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("line {line}: ")),
            "{what}: expected line {line}: {}",
            stderr(&out)
        );
        assert!(untouched(&target), "{what}: the store was written to");
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("import"))
            .collect();
        assert!(leftovers.is_empty(), "{what}: {leftovers:?}");
    }
    if on_postgres() {
        // An empty database is what the cases above imported into.
        return;
    }
    // An existing empty directory stays empty too.
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let file = dir.join("damaged.jsonl");
    std::fs::write(&file, &dump[..dump.len() / 2]).unwrap();
    let out = natter(
        &offline_config(dir, &empty).await,
        &["import", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}

#[tokio::test]
async fn export_needs_a_verified_admin() {
    let server = TestServer::start().await;
    let nobody = server.client();
    nobody
        .get("/api/adminonly/export")
        .await
        .assert_error(401, "user not logged in");
    let guest = server.client();
    guest.guest("visitor").await;
    guest
        .get("/api/adminonly/export")
        .await
        .assert_error(403, "admin only");
    let user = server.client();
    user.registered("plain").await;
    user.get("/api/adminonly/export")
        .await
        .assert_error(403, "admin only");
    let r = nobody
        .send(nobody.http.request(
            reqwest::Method::OPTIONS,
            nobody.url("/api/adminonly/export"),
        ))
        .await;
    r.assert_ok_empty();
    let admin = server.client();
    admin.registered("root").await;
    let r = admin.post("/api/adminonly/export", json!({})).await;
    r.assert_error(405, "method not allowed");
    assert_eq!(r.header("allow").unwrap(), "GET, OPTIONS");
    assert_eq!(admin.get("/api/adminonly/export").await.status, 200);
}

/// Messages of 2.5 KB each: the dump is far larger than what the channel and the sockets buffer.
const BIG_MESSAGES: u64 = 8_000;

#[tokio::test]
async fn a_large_export_streams_from_its_cut_while_other_requests_are_served() {
    let mut server = TestServer::start().await;
    let root = server.client();
    root.registered("root").await;
    root.post("/api/adminonly/createChat", json!({"chat":"Archive"}))
        .await
        .assert_ok_empty();
    server.stop().await;
    server.with_stored_data(|store| {
        use natter::store::NewMessage;
        let chats = store.chats().unwrap();
        let text = "x".repeat(2500);
        for i in 0..BIG_MESSAGES {
            store
                .append_message(NewMessage {
                    chat_id: chats[(i % 2) as usize].id,
                    user: "root".into(),
                    verified: true,
                    admin: true,
                    bot: false,
                    text: text.clone(),
                    time: 1,
                    author: Some(natter::store::Author::Account("root".into())),
                })
                .unwrap();
        }
    });
    server.restart(&[&root]).await;
    let r = root
        .post(
            "/api/authorize",
            json!({"user":"root","password":"password123"}),
        )
        .await;
    assert_eq!(r.status, 200);
    root.join("Main").await;
    let other = server.guest_in("other", "Main").await;
    other.drain().await;

    let mut export = root
        .http
        .get(root.url("/api/adminonly/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    let mut body = export.chunk().await.unwrap().unwrap().to_vec();

    // With the export paused mid-stream, everything else still answers at once.
    let started = Instant::now();
    let posted = other.say("Main", "during the export").await;
    assert!(other.poll().await.is_some(), "the poll got its event");
    root.post("/api/adminonly/removeChat", json!({"chat":"Archive"}))
        .await
        .assert_ok_empty();
    root.post("/api/adminonly/createChat", json!({"chat":"Newer"}))
        .await
        .assert_ok_empty();
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "requests waited {waited:?} for the export"
    );

    let before_resume = body.len();
    while let Some(chunk) = export.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    println!(
        "export: {} bytes, {} of them after the pause; the other requests took {waited:?}",
        body.len(),
        body.len() - before_resume,
    );
    assert!(
        body.len() - before_resume > 4 << 20,
        "the export was still streaming: {} of {} bytes came after the pause",
        body.len() - before_resume,
        body.len()
    );
    let dump = String::from_utf8(body).unwrap();
    let all = lines(&dump);
    let end = all.last().unwrap();
    assert_eq!(end["type"], "end");
    assert_eq!(end["messages"], BIG_MESSAGES, "{end}");
    // The cut: the chat removed meanwhile is there with all its messages, what came after is not.
    assert!(all.iter().any(|l| l["name"] == "Archive"));
    assert!(!all.iter().any(|l| l["name"] == "Newer"));
    let posted_id = posted["id"].as_u64().unwrap();
    assert!(all[0]["next_message_id"].as_u64().unwrap() <= posted_id);
    assert!(!dump.contains("during the export"));
    server.stop().await;
}

/// The package's restore recipe (docs/operations.md, Restoring the package's data): the service stopped,
/// `natter import` run as root into the emptied data directory the service owns, inside a
/// parent nobody but root may write (as /var/lib under ProtectSystem=strict); then the service's
/// user opens it.
#[tokio::test]
async fn a_restore_run_as_root_or_as_the_service_user_leaves_the_data_to_the_service() {
    if on_postgres() {
        // About the files of sled's data directory, which the PostgreSQL store does not have;
        // the sled pass runs it.
        eprintln!("backup: the restore's file ownership is sled's (data_dir): not on PostgreSQL");
        return;
    }
    let Some((user, uid)) = crate::offline::test_service_user() else {
        return;
    };
    let mut source = TestServer::start().await;
    populate(&source).await;
    source.stop().await;
    let shared = crate::offline::shared_tempdir();
    let dump = shared.path().join("dump.jsonl");
    let config = offline_config(source.dir.path(), &source.data_dir()).await;
    let out = natter(&config, &["export", "--output", dump.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o644)).unwrap();

    for run_as_root in [true, false] {
        // /var/lib: root's, read-only to the service; /var/lib/natter: the service's.
        let parent = shared.path().join(format!("lib-{run_as_root}"));
        std::fs::create_dir(&parent).unwrap();
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = parent.join("natter");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::chown(&data, Some(uid), Some(uid)).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let config = shared.path().join(format!("config-{run_as_root}.toml"));
        std::fs::write(&config, format!("data_dir = \"{}\"\n", data.display())).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

        let args = ["import", dump.to_str().unwrap()];
        let out = if run_as_root {
            natter(&config, &args)
        } else {
            crate::offline::natter_as(&user, &config, &args)
        };
        assert!(
            out.status.success(),
            "root: {run_as_root}: {}",
            stderr(&out)
        );
        let meta = std::fs::metadata(&data).unwrap();
        assert_eq!(
            (meta.uid(), meta.mode() & 0o777),
            (uid, 0o700),
            "the directory kept"
        );
        for entry in std::fs::read_dir(&data).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(".import"), "staging left behind: {name}");
            assert_eq!(
                entry.metadata().unwrap().uid(),
                uid,
                "{name} not handed over"
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(&parent).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "nothing staged beside data_dir");
        // The service's user reads and writes what was restored.
        let out = crate::offline::natter_as(&user, &config, &["chat", "create", "Later"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = crate::offline::natter_as(&user, &config, &["user", "list"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("Pat"));
    }
}

#[tokio::test]
async fn rows_the_api_would_refuse_are_refused_by_line_and_admins_are_named() {
    let (server, dump) = stopped_with_dump().await;
    let dir = server.dir.path();
    let all = lines(&dump);
    let at = |kind: &str| {
        all.iter()
            .position(|l| l["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} line"))
    };
    let (user, chat, message) = (at("user"), at("chat"), at("message"));
    let quick = all[user]["password_hash"].as_str().unwrap().to_owned();
    let cost31 = {
        let b = bcrypt::hash("sixchr", 4).unwrap();
        format!("$2b$31{}", &b[6..])
    };
    let email_of_other = all[user + 1]["email"].as_str().unwrap().to_uppercase();
    let edit = |line: usize, field: &str, value: Value| {
        let mut copy = all.clone();
        copy[line][field] = value;
        copy.iter().map(|l| format!("{l}\n")).collect::<String>()
    };
    let cases: Vec<(&str, String, usize)> = vec![
        (
            "a name with a space",
            edit(user, "name", json!("a b")),
            user,
        ),
        (
            "a name with markup",
            edit(user, "name", json!("<b>x</b>")),
            user,
        ),
        ("the bot's name", edit(user, "name", json!("bot")), user),
        ("a bad email", edit(user, "email", json!("nobody")), user),
        (
            "a duplicate email",
            edit(user, "email", json!(email_of_other)),
            user + 1,
        ),
        (
            "a cost-31 hash",
            edit(user, "password_hash", json!(cost31)),
            user,
        ),
        (
            "no hash at all",
            edit(user, "password_hash", json!("x")),
            user,
        ),
        (
            "a chat name with a newline",
            edit(chat, "name", json!("a\nb")),
            chat,
        ),
        (
            "the largest message id",
            {
                let mut copy = all.clone();
                copy[0]["next_message_id"] = json!(u64::MAX);
                copy.iter().map(|l| format!("{l}\n")).collect()
            },
            0,
        ),
        (
            "an author name with markup",
            edit(message, "user", json!("<i>")),
            message,
        ),
    ];
    assert!(quick.starts_with("$pbkdf2"));
    for (what, text, index) in cases {
        let file = dir.join("planted.jsonl");
        std::fs::write(&file, &text).unwrap();
        let target = dir.join("target");
        let out = natter(
            &offline_config(dir, &target).await,
            &["import", file.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("line {}: ", index + 1)),
            "{what}: expected line {}: {}",
            index + 1,
            stderr(&out)
        );
        assert!(untouched(&target), "{what}: the store was written to");
    }
    let file = dir.join("good.jsonl");
    std::fs::write(&file, &dump).unwrap();
    let out = natter(
        &offline_config(dir, &dir.join("restored")).await,
        &["import", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("admin accounts in the backup: root"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
