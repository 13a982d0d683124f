//! The binary as an operator meets it: `--version`, readiness and stopping through sd_notify
//! (`Type=notify`), and SIGHUP re-reading the log level.

use crate::helpers::{Served, store_lines_blocking};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary's config; with `TEST_STORAGE=postgres`, on a database of its own.
fn write_config(dir: &std::path::Path, log_level: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let store = store_lines_blocking(&dir.join("d"));
    std::fs::write(
        &path,
        format!("log_level = \"{log_level}\"\nlisten = \"127.0.0.1:0\"\n{store}"),
    )
    .unwrap();
    path
}

/// Waits up to 10 s for a log line containing `text` at index `from` or later.
fn wait_for_line(served: &Served, from: usize, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = served.log.lock().unwrap()[from..]
            .iter()
            .find(|l| l.contains(text))
        {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {text:?}: {:?}",
            served.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends bytes that are not HTTP; the connection ends with a parse error, which natter logs at
/// debug only.
fn send_garbage(addr: &str) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
}

#[test]
fn version_flag_prints_the_package_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_natter"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("natter {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_closed_stdout_ends_check_config_quietly_like_other_unix_tools() {
    let (reader, writer) = std::io::pipe().unwrap();
    // The reading end is gone before natter writes: `natter check-config | head -0`.
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(["--dev", "check-config"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

#[test]
fn sd_notify_says_ready_once_connections_are_accepted_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_natter"))
            .arg("--config")
            .arg(write_config(dir.path(), "info"))
            .env("NOTIFY_SOCKET", &socket_path)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 4096];

    // The first message natter sends is READY=1 ...
    let n = socket.recv(&mut buf).expect("natter reports readiness");
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        message.lines().any(|l| l == "READY=1"),
        "first notification: {message:?}"
    );
    // ... and at that moment it already answers HTTP. Its address is in the log line written
    // before READY, so reading it takes no time.
    let mut log = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let start_line = log
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"))
        .expect("the start line comes before READY=1");
    assert_eq!(
        start_line.contains("storage postgres"),
        crate::helpers::on_postgres(),
        "{start_line}"
    );
    let addr = start_line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .to_owned();
    let mut stream = TcpStream::connect(&addr).expect("connect right after READY=1");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: natter\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    std::thread::spawn(move || log.map_while(Result::ok).for_each(drop));

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let n = socket.recv(&mut buf).expect("natter reports stopping");
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        message.lines().any(|l| l == "STOPPING=1"),
        "notification after SIGTERM: {message:?}"
    );
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}

/// A child that a failing test must not leave running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sighup_rereads_the_log_level_and_ignores_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "info");
    let mut served = Served::start(&config);
    served.assert_on_test_storage();

    // At info, a connection that ends in a parse error leaves no line.
    send_garbage(&served.addr);
    std::thread::sleep(Duration::from_millis(300));
    let log = served.log.lock().unwrap().clone();
    assert!(
        !log.iter().any(|l| l.contains("connection from")),
        "{log:?}"
    );

    let mark = served.log.lock().unwrap().len();
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("log_level = \"info\"", "log_level = \"debug\""),
    )
    .unwrap();
    served.signal("-HUP");
    wait_for_line(&served, mark, "log level is now debug");
    send_garbage(&served.addr);
    wait_for_line(&served, mark, "connection from");

    // A broken file is reported and changes nothing; natter keeps running.
    let mark = served.log.lock().unwrap().len();
    std::fs::write(&config, "log_level = \"loud\"\n").unwrap();
    served.signal("-HUP");
    let line = wait_for_line(&served, mark, "config not reloaded");
    assert!(
        line.contains("log level stays debug") && line.contains("log_level"),
        "{line}"
    );
    assert!(served.child.try_wait().unwrap().is_none(), "natter exited");

    served.signal("-TERM");
    assert_eq!(served.child.wait().unwrap().code(), Some(0));
}

/// One HTTP/1.1 request on its own connection; the answer's status code.
fn request(addr: &str, head: &str, body: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{head}\r\nHost: natter\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer[9..12].parse().unwrap()
}

/// The `failregex` of the fail2ban filter in docs/operations.md, as fail2ban applies it to a
/// journal line's message (its prefix part matches the syslog-style prefix, absent here).
fn documented_failregex() -> regex::Regex {
    let operations = include_str!("../../docs/operations.md");
    let failregex = operations
        .lines()
        .find_map(|l| l.strip_prefix("failregex = "))
        .expect("docs/operations.md documents a fail2ban failregex");
    let pattern = failregex
        .replace("%(__prefix_line)s", "")
        .replace("<HOST>", r"(?P<host>[0-9A-Fa-f.:]+)");
    regex::Regex::new(&pattern).unwrap()
}

#[test]
fn a_failed_sign_in_logs_the_client_address_for_fail2ban() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n{}trusted_proxies = [\"127.0.0.1\"]\n\
             password_iterations = 1000\n",
            store_lines_blocking(&dir.path().join("d"))
        ),
    )
    .unwrap();
    // Under journald natter writes no timestamps: the lines are the journal's messages.
    let served = Served::start_with_env(
        &["--dev".as_ref(), "--config".as_ref(), config.as_os_str()],
        &[("JOURNAL_STREAM", "8:1234")],
    );
    served.assert_on_test_storage();
    let wrong = r#"{"user":"mallory","password":"not-the-password"}"#;
    let forwarded = "POST /api/authorize HTTP/1.1\r\nX-Forwarded-For: 198.51.100.23";
    assert_eq!(request(&served.addr, forwarded, wrong), 401);
    assert_eq!(
        request(&served.addr, "POST /api/authorize HTTP/1.1", wrong),
        401
    );
    let guest = r#"{"user":"friendly"}"#;
    assert_eq!(
        request(&served.addr, "POST /api/login HTTP/1.1", guest),
        200
    );
    assert_eq!(request(&served.addr, "GET /style.css HTTP/1.1", ""), 200);
    wait_for_line(&served, 0, "GET /style.css 200");

    let log = served.log.lock().unwrap().clone();
    let failregex = documented_failregex();
    let banned: Vec<&str> = log
        .iter()
        .filter_map(|l| failregex.captures(l))
        .map(|c| c.name("host").unwrap().as_str())
        .collect();
    assert_eq!(banned, ["198.51.100.23", "127.0.0.1"], "{log:?}");
    // Every request line names its client, the ones that succeed too.
    for request in ["POST /api/login 200", "GET /style.css 200"] {
        let line = log.iter().find(|l| l.contains(request)).unwrap();
        assert!(line.contains("ms client=127.0.0.1"), "{line}");
    }
}

/// `PORT=N natter --dev` without public_url: mailed links name the port served (0: the bound one).
#[test]
fn dev_links_follow_the_port_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "{}password_iterations = 1000\n",
            store_lines_blocking(&dir.path().join("d"))
        ),
    )
    .unwrap();
    let served = Served::start_with_env(
        &["--dev".as_ref(), "--config".as_ref(), config.as_os_str()],
        &[("PORT", "0")],
    );
    served.assert_on_test_storage();
    let port = served.addr.rsplit(':').next().unwrap().to_owned();
    assert_ne!(port, "0");
    let addr = format!("127.0.0.1:{port}");
    let body = r#"{"user":"porter","email":"porter@example.org","password":"password123"}"#;
    assert_eq!(request(&addr, "POST /api/register HTTP/1.1", body), 200);
    let line = wait_for_line(&served, 0, "activation link: ");
    assert!(
        line.contains(&format!(
            "activation link: http://localhost:{port}/api/verifyEmail/porter/"
        )),
        "{line}"
    );
    let start = wait_for_line(&served, 0, "listening on");
    assert!(
        start.contains(&format!("public_url http://localhost:{port})")),
        "{start}"
    );
}

#[test]
fn sighup_names_the_changed_keys_and_those_that_need_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "info");
    let mut served = Served::start(&config);
    served.assert_on_test_storage();
    let mark = served.log.lock().unwrap().len();
    served.signal("-HUP");
    wait_for_line(&served, mark, "SIGHUP: config reloaded, no key changed");

    let mark = served.log.lock().unwrap().len();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("log_level = \"info\"", "log_level = \"warn\"")
            .replace("127.0.0.1:0", "127.0.0.1:1")
            + "chats = [\"Main\", \"Ops\"]\n",
    )
    .unwrap();
    served.signal("-HUP");
    let line = wait_for_line(&served, mark, "SIGHUP: config reloaded; changed:");
    assert!(
        line.contains(
            "changed: log_level (applied now); listen, chats (take effect only after a restart"
        ),
        "{line}"
    );
    served.signal("-TERM");
    assert_eq!(served.child.wait().unwrap().code(), Some(0));
}
