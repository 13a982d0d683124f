//! The `natter` binary as a process: offline commands and how they refuse while a server runs
//! (docs/configuration.md, Command line), exit codes, SIGTERM, and what survives `kill -9`.

use crate::helpers::{Served, TestServer, on_postgres};
use serde_json::json;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn natter(config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn write_config(dir: &std::path::Path, data: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\npassword_iterations = 100000\n",
            data.display()
        ),
    )
    .unwrap();
    path
}

/// The config an offline command needs to work on `server`'s store: its data directory, and
/// in the `TEST_STORAGE=postgres` run (or for a server on PostgreSQL in every run) its database.
async fn config_of(server: &TestServer) -> PathBuf {
    let storage = if server.extra.lines().any(|l| l.starts_with("storage = ")) {
        server.extra.clone()
    } else {
        crate::helpers::storage_lines(&server.dir)
            .await
            .unwrap_or_default()
    };
    let path = server.dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "{storage}data_dir = \"{}\"\npassword_iterations = 100000\n",
            server.data_dir().display()
        ),
    )
    .unwrap();
    path
}

/// An offline command that changes data, refused because a server uses the store (exit 2).
fn assert_refused_while_served(out: &Output, postgres: bool) {
    let said = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    let expected = if postgres {
        "a natter server is using this database"
    } else {
        "the data directory is in use by a running natter"
    };
    assert!(said.contains(expected), "{said}");
}

#[tokio::test]
async fn changing_commands_refuse_while_a_server_uses_the_store() {
    let mut server = TestServer::start().await;
    let config = config_of(&server).await;
    let postgres = on_postgres();
    for args in [
        &["chat", "create", "Ops"][..],
        &["user", "grant-admin", "root"],
    ] {
        assert_refused_while_served(&natter(&config, args, None), postgres);
    }
    let listing = natter(&config, &["chat", "list"], None);
    if postgres {
        // Commands that only read run beside the server on PostgreSQL.
        assert!(listing.status.success(), "{}", stderr(&listing));
        assert_eq!(String::from_utf8_lossy(&listing.stdout), "Main\n");
        // An import too, before it reads its file.
        assert_refused_while_served(
            &natter(&config, &["import", "/nonexistent.jsonl"], None),
            true,
        );
        let said = stderr(&natter(&config, &["chat", "create", "Ops"], None));
        assert!(
            said.contains("stop it first") && said.contains("admin API"),
            "the way forward is named: {said}"
        );
    } else {
        // sled allows one process per directory, readers too.
        assert_refused_while_served(&listing, false);
    }
    server.stop().await;
    let out = natter(&config, &["chat", "list"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Main\n",
        "the refused command changed nothing"
    );
}

/// PostgreSQL only, so it starts its own database in every run: a server's share of the
/// database lives as long as its connection, so it must take it again after an outage.
#[cfg(feature = "pg")]
#[tokio::test]
async fn a_server_holds_the_database_again_after_reconnecting() {
    let dir = tempfile::tempdir().unwrap();
    let lines = crate::helpers::postgres_lines(&dir).await;
    let mut server = TestServer::with_config_in(dir, &lines).await;
    let config = config_of(&server).await;
    assert_refused_while_served(&natter(&config, &["chat", "create", "Ops"], None), true);
    assert!(crate::helpers::drop_connections(&server.dir).await >= 1);
    // The server connects again at its next request that needs the database.
    let c = server.client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while c.get("/healthz").await.status != 200 {
        assert!(std::time::Instant::now() < deadline, "no reconnect");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        crate::helpers::advisory_lock_modes(&server.dir, natter::store::postgres::owner::KEY).await,
        ["ShareLock"],
        "the server's new connection took its share again"
    );
    assert_refused_while_served(&natter(&config, &["chat", "create", "Ops"], None), true);
    server.stop().await;
    let out = natter(&config, &["chat", "create", "Ops"], None);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// PostgreSQL only, so it starts its own database in every run: a server started while a
/// command changes the database waits for the command, then serves what it changed.
#[cfg(feature = "pg")]
#[tokio::test]
async fn a_server_started_while_a_command_changes_the_database_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let lines = crate::helpers::postgres_lines(&dir).await;
    let mut server = TestServer::with_config_in(dir, &lines).await;
    server.client().registered("pat").await;
    server.stop().await;
    let config = config_of(&server).await;
    // set-password holds the database while it waits for the password on standard input.
    let mut holder = Command::new(env!("CARGO_BIN_EXE_natter"))
        .arg("--config")
        .arg(&config)
        .args(["user", "set-password", "pat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let key = natter::store::postgres::owner::KEY;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while crate::helpers::advisory_lock_modes(&server.dir, key).await != ["ExclusiveLock"] {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never taken"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let serving = tempfile::tempdir().unwrap();
    let serve = serve_config(serving.path(), &lines);
    let starting = std::thread::spawn(move || Served::start(&serve));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!starting.is_finished(), "the server waits for the command");
    {
        use std::io::Write;
        let mut stdin = holder.stdin.take().unwrap();
        stdin.write_all(b"brand-new-pass\n").unwrap();
    }
    let done = holder.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", stderr(&done));
    let mut served = starting
        .join()
        .expect("the server started after the command");
    let answer = reqwest::Client::new()
        .post(served.url("/api/authorize"))
        .json(&json!({"user": "pat", "password": "brand-new-pass"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "the server serves the new password");
    served.signal("-TERM");
    assert_eq!(served.child.wait().unwrap().code(), Some(0));
}

#[tokio::test]
async fn user_and_chat_commands_change_the_data() {
    let mut server = TestServer::start().await;
    let c = server.client();
    c.post(
        "/api/register",
        json!({"user":"pat","email":"pat@example.org","password":"password123"}),
    )
    .await
    .assert_ok_empty();
    server.stop().await;
    let config = config_of(&server).await;
    for args in [
        ["user", "verify", "pat"],
        ["user", "grant-admin", "Pat"],
        ["chat", "create", "Ops"],
    ] {
        let out = natter(&config, &args, None);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let out = natter(
        &config,
        &["user", "set-password", "pat"],
        Some("brand-new-pass\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listing =
        String::from_utf8_lossy(&natter(&config, &["user", "list"], None).stdout).into_owned();
    assert!(
        listing.contains("pat") && listing.contains("true"),
        "{listing}"
    );
    let out = natter(&config, &["user", "verify", "nobody"], None);
    assert_eq!(out.status.code(), Some(1));
    let out = natter(&config, &["chat", "create", "ops"], None);
    assert_eq!(out.status.code(), Some(1), "a name taken ignoring case");

    server.restart(&[&c]).await;
    let r = c
        .post(
            "/api/authorize",
            json!({"user":"pat","password":"brand-new-pass"}),
        )
        .await;
    assert_eq!(
        r.body,
        r#"{"user":"pat","verified":true,"admin":true,"bot":false}"#
    );
    let chats = c.get("/api/loggedonly/getChats").await.json();
    assert_eq!(chats.as_array().unwrap().len(), 2, "{chats}");
    c.join("Ops").await;
    c.say("Ops", "gone with the chat").await;
    server.stop().await;
    let out = natter(&config, &["chat", "remove", "ops"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "removed chat Ops and its 1 messages\n"
    );
    let out = natter(&config, &["user", "delete", "pat"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing =
        String::from_utf8_lossy(&natter(&config, &["user", "list"], None).stdout).into_owned();
    assert!(!listing.contains("pat"), "{listing}");

    server.restart(&[&c]).await;
    let r = c
        .post(
            "/api/authorize",
            json!({"user":"pat","password":"brand-new-pass"}),
        )
        .await;
    assert_eq!(r.status, 401, "the account is gone: {}", r.body);
    let guest = server.guest_in("visitor", "Main").await;
    let chats = guest.get("/api/loggedonly/getChats").await.json();
    let names: Vec<&str> = chats
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["chat"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Main"], "{chats}");
    server.stop().await;
}

#[test]
fn check_config_prints_redacted_values_and_fails_on_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "secret_key = \"0123456789abcdef0123456789abcdef\"\n").unwrap();
    let out = natter(&path, &["check-config"], None);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("<redacted>") && !stdout.contains("0123456789abcdef"),
        "{stdout}"
    );
    std::fs::write(&path, "no_such_key = 1\n").unwrap();
    let out = natter(&path, &["check-config"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
    let missing = dir.path().join("absent.toml");
    let out = natter(&missing, &["check-config"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_taken_port_is_a_clear_error_with_exit_code_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n",
            dir.path().join("d").display()
        ),
    )
    .unwrap();
    let out = natter(&path, &["serve"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot listen on"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// On sled in every run: it is about how a failure is said, the same on either store.
#[test]
fn a_failing_command_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &dir.path().join("d"));
    let out = natter(&path, &["user", "verify", "nobody"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("no registered user named nobody"))
        .collect();
    assert_eq!(
        said,
        ["natter: no registered user named nobody"],
        "{stderr}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = format!("listen = \"{}\"\n", taken.local_addr().unwrap());
    std::fs::write(&path, listen + &std::fs::read_to_string(&path).unwrap()).unwrap();
    let out = natter(&path, &["serve"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = stderr.lines().filter(|l| l.contains("cannot listen on"));
    assert_eq!(said.count(), 1, "{stderr}");
}

/// A config for `natter serve` in `dir`; `storage` lines first (none: sled).
fn serve_config(dir: &std::path::Path, storage: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "{storage}listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            dir.join("d").display()
        ),
    )
    .unwrap();
    path
}

/// On sled in every run: it is about signals, not storage.
#[test]
fn sigterm_stops_the_server_cleanly_with_exit_code_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(&serve_config(dir.path(), ""));
    served.signal("-TERM");
    let started = std::time::Instant::now();
    let exit = served.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let log = served.log.lock().unwrap().clone();
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:?}");
}

#[tokio::test]
async fn acknowledged_writes_and_sessions_survive_kill_9_and_pollers_are_told_to_resync() {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::helpers::storage_lines(&dir)
        .await
        .unwrap_or_default();
    let config = serve_config(dir.path(), &storage);
    let mut served = Served::start(&config);
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let post = |url: String, body: serde_json::Value| http.post(url).json(&body).send();
    assert_eq!(
        post(served.url("/api/login"), json!({"user":"crash"}))
            .await
            .unwrap()
            .status(),
        200
    );
    post(
        served.url("/api/loggedonly/joinChat"),
        json!({"chat":"Main"}),
    )
    .await
    .unwrap();
    let sent: serde_json::Value = post(
        served.url("/api/loggedonly/postMessage"),
        json!({"chat":"Main","text":"kept"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    served.signal("-KILL");
    served.child.wait().unwrap();

    let mut served = Served::start(&config);
    let get_json = |url: String| async {
        let response = http.get(url).send().await.unwrap();
        response.json::<serde_json::Value>().await.unwrap()
    };
    let chats = get_json(served.url("/api/loggedonly/getChats")).await;
    assert_eq!(
        chats[0]["joined"], true,
        "the session and membership survived: {chats}"
    );
    assert_eq!(
        chats[0]["messages"][0], sent,
        "the acknowledged message survived"
    );
    let first = get_json(served.url("/api/loggedonly/poll")).await;
    assert_eq!(first["type"], "ResyncEvent", "{first}");
    served.signal("-TERM");
    assert_eq!(served.child.wait().unwrap().code(), Some(0));
}

/// Every entry under `dir` with its length, modification time and owner.
fn tree_listing(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime, u32)> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            }
            found.insert(
                entry.path(),
                (meta.len(), meta.modified().unwrap(), meta.uid()),
            );
        }
    }
    found
}

/// `natter` under the shell's usual umask 022, as an operator's shell runs it.
fn natter_umask_022(config: &Path, args: &[&str]) -> Output {
    natter_under_umask("022", config, args)
}

/// `natter` run by a shell that first sets `umask`.
fn natter_under_umask(umask: &str, config: &Path, args: &[&str]) -> Output {
    let script = format!("umask {umask} && exec \"$0\" \"$@\"");
    natter_through(&["sh", "-c", &script], config, args)
}

/// `natter` started by the command `wrapper` (program and arguments), which runs what follows.
fn natter_through(wrapper: &[&str], config: &Path, args: &[&str]) -> Output {
    Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(env!("CARGO_BIN_EXE_natter"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// sled only, in every run: the modes of sled's data directory (PostgreSQL keeps its own files).
#[test]
fn the_data_directory_and_the_export_are_private_and_no_symlink_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &data);
    let out = natter_umask_022(&config, &["chat", "create", "Ops"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory");
    for (path, _) in tree_listing(&data) {
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), expected, "{}", path.display());
    }

    // A link planted where the old code wrote its partial file, pointing at a file the
    // operator may write but the dump must not land in.
    let output = dir.path().join("backup.jsonl");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("backup.jsonl.partial")).unwrap();
    let out = natter_umask_022(&config, &["export", "--output", output.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(std::fs::symlink_metadata(&output).unwrap().is_file());
    assert_eq!(mode(&output), 0o600, "the dump holds every password hash");
    assert!(
        std::fs::read_to_string(&output)
            .unwrap()
            .contains("\"Ops\"")
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial") && n != "backup.jsonl.partial")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// sled only, in every run: sled's reading commands work on a copy of the data directory.
#[tokio::test]
async fn commands_that_only_read_leave_the_data_directory_untouched() {
    let mut server = TestServer::with_config("storage = \"sled\"").await;
    let c = server.client();
    c.registered("reader").await;
    c.join("Main").await;
    c.say("Main", "a message the server wrote").await;
    server.stop().await;
    let config = write_config(server.dir.path(), &server.data_dir());
    let before = tree_listing(&server.data_dir());
    std::thread::sleep(std::time::Duration::from_millis(20));
    for args in [&["user", "list"][..], &["chat", "list"], &["export"]] {
        let out = natter(&config, args, None);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert_eq!(
            tree_listing(&server.data_dir()),
            before,
            "{args:?} wrote into the data directory"
        );
    }
    let out = natter(&config, &["user", "list"], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("reader"));
}

/// sled only, in every run: the paths are the dump's and the data directory's.
#[test]
fn io_errors_name_the_path_and_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &dir.path().join("data"));
    let missing = dir.path().join("no-such-dump.jsonl");
    let out = natter(&config, &["import", missing.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains(&missing.display().to_string()) && text.contains("natter runs as"),
        "{text}"
    );
    // A read-only command on a directory that was never made says which one.
    let out = natter(&config, &["user", "list"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("holds no natter data"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("data").exists(), "user list created it");
}

/// A system account for the tests that need a second user; `None` (after a notice) when not
/// root, where neither creating it nor changing owners is possible.
pub fn test_service_user() -> Option<(String, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "NOTICE: not root: the tests with a second user are skipped (CI runs them as root)"
        );
        return None;
    }
    let name = "natter-offline-test";
    let _ = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .output()
        .unwrap();
    let out = Command::new("id").args(["-u", name]).output().unwrap();
    assert!(out.status.success(), "useradd {name} failed");
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    Some((name.to_string(), uid))
}

/// `natter` run as `user` through runuser.
pub fn natter_as(user: &str, config: &Path, args: &[&str]) -> Output {
    natter_through(&["runuser", "-u", user, "--"], config, args)
}

/// A directory other users can enter (a tempdir is 0700), for files the second user reads.
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A shared directory with a data directory path and a config both users can read.
fn shared_setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = shared_tempdir();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &data);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    (dir, data, config)
}

/// sled only, in every run: the owners of the files in sled's data directory.
#[test]
fn changes_made_as_root_are_handed_to_the_data_directory_owner() {
    let Some((user, uid)) = test_service_user() else {
        return;
    };
    let (_dir, data, config) = shared_setup();
    // The service made its directory and data...
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(uid), Some(uid)).unwrap();
    let out = natter_as(&user, &config, &["chat", "create", "Ops"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // ...root changes and reads it under umask 077...
    let out = natter_under_umask("077", &config, &["chat", "create", "Root"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = natter(&config, &["export"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let root_owned: Vec<_> = tree_listing(&data)
        .into_iter()
        .filter(|(_, (_, _, owner))| *owner != uid)
        .collect();
    assert!(root_owned.is_empty(), "{root_owned:?}");
    // ...and the service can still write it.
    let out = natter_as(&user, &config, &["chat", "create", "After"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// sled only, in every run: a data directory of another user.
#[test]
fn a_data_directory_natter_cannot_open_is_named_with_its_owner_and_the_user() {
    let Some((user, _)) = test_service_user() else {
        return;
    };
    let (_dir, data, config) = shared_setup();
    // Root's data: the directory others may enter, its files not.
    let out = natter(&config, &["chat", "create", "Ops"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = natter_as(&user, &config, &["chat", "create", "Theirs"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains(&data.display().to_string()), "{text}");
    assert!(text.contains(&format!("natter runs as {user}")), "{text}");
    assert!(text.contains("belongs to root (uid 0)"), "{text}");
}

#[test]
fn check_config_prints_a_config_that_loads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.toml");
    // chatty-server's keys, natter's, and a secret from the environment.
    std::fs::write(
        &original,
        format!(
            "ServerListenAddress = \":9090\"\nchats = [\"Main\", \"Ops\"]\ndata_dir = \"{}\"\n\
             poll_timeout = \"44s\"\n[mail]\nfrom = \"chat@example.org\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let key = "0123456789abcdef0123456789abcdef";
    let check = |config: &Path| {
        Command::new(env!("CARGO_BIN_EXE_natter"))
            .arg("--config")
            .arg(config)
            .arg("check-config")
            .env("SECRET_KEY", key)
            .output()
            .unwrap()
    };
    let first = check(&original);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("`ServerListenAddress` is chatty-server's"),
        "check-config names the mapped keys: {}",
        stderr(&first)
    );
    let printed = String::from_utf8(first.stdout).unwrap();
    assert!(!printed.contains(key), "{printed}");
    assert!(
        printed.contains("\n# secret_key = \"<redacted>\"\n"),
        "{printed}"
    );
    assert!(
        printed.contains("\n# listen = \"<unset>\"\n"),
        "metrics.listen: {printed}"
    );
    let copy = dir.path().join("new.toml");
    std::fs::write(&copy, &printed).unwrap();
    let second = check(&copy);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(String::from_utf8_lossy(&second.stdout), printed);
    assert_eq!(stderr(&second), "", "natter's own keys need no notes");

    // Other offline commands do not repeat the notes about the original's keys.
    let out = natter(&original, &["chat", "create", "Later"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("chatty-server's"),
        "{}",
        stderr(&out)
    );
}
