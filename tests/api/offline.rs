//! The `natter` binary as a process: offline commands and how they refuse while a server runs
//! (README, Command line), exit codes, SIGTERM, and what survives `kill -9`.

use crate::helpers::{Served, TestServer};
use serde_json::json;
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

#[tokio::test]
async fn offline_commands_refuse_while_the_server_holds_the_directory() {
    let mut server = TestServer::start().await;
    let config = write_config(server.dir.path(), &server.data_dir());
    let out = natter(&config, &["chat", "list"], None);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the data directory is in use by a running natter"),
        "{stderr}"
    );
    server.stop().await;
    let out = natter(&config, &["chat", "list"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Main\n");
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
    let config = write_config(server.dir.path(), &server.data_dir());
    for args in [
        ["user", "verify", "pat"],
        ["user", "grant-admin", "Pat"],
        ["chat", "create", "Ops"],
    ] {
        let out = natter(&config, &args, None);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = natter(
        &config,
        &["user", "set-password", "pat"],
        Some("brand-new-pass\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing =
        String::from_utf8_lossy(&natter(&config, &["user", "list"], None).stdout).into_owned();
    assert!(
        listing.contains("pat") && listing.contains("true"),
        "{listing}"
    );
    let out = natter(&config, &["user", "verify", "nobody"], None);
    assert_eq!(out.status.code(), Some(1));

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
    c.post("/api/adminonly/removeChat", json!({"chat":"Ops"}))
        .await
        .assert_ok_empty();
    server.stop().await;
    let out = natter(&config, &["user", "delete", "pat"], None);
    assert!(out.status.success());
    let listing =
        String::from_utf8_lossy(&natter(&config, &["user", "list"], None).stdout).into_owned();
    assert!(!listing.contains("pat"), "{listing}");
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

fn serve_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            dir.join("d").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn sigterm_stops_the_server_cleanly_with_exit_code_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(&serve_config(dir.path()));
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
    let config = serve_config(dir.path());
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
