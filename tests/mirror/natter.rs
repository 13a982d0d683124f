//! natter as a child process (`--dev`, so the log mailer prints activation links), a
//! cookie-keeping HTTP client, and sled/PostgreSQL snapshots to compare.

use natter::store::Store;
use natter::store::sled::{SledStore, SyncMode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Natter {
    pub child: Child,
    pub addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Writes a config for a data directory under `dir`, mirrored to `database_url` if given.
pub fn config(dir: &Path, database_url: Option<&str>) -> PathBuf {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\npassword_iterations = 1000\n\
         admins = [\"root\"]\nlast_messages = 200\n",
        dir.join("data").display()
    );
    if let Some(url) = database_url {
        text.push_str(&format!("database_url = \"{url}\"\n"));
    }
    text.push_str("[mail]\nprovider = \"log\"\n[rate_limit]\nenabled = false\n");
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs an offline command.
pub fn command(config: &Path, args: &[&str]) -> Output {
    command_with_env(config, args, &[])
}

/// Runs an offline command with `env` added to its environment.
pub fn command_with_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_natter"))
        .arg("--dev")
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

impl Natter {
    /// Starts natter on `config`. A test that just closed the data directory in-process may still
    /// hold sled's lock for a moment (its flush thread ends on its own): natter then exits with 2
    /// ("in use") at once, and is started again.
    pub fn start(config: &Path) -> Natter {
        for _ in 0..50 {
            if let Some(natter) = Natter::try_start(config) {
                return natter;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("natter never got the data directory");
    }

    fn try_start(config: &Path) -> Option<Natter> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
            .arg("--dev")
            .arg("--config")
            .arg(config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok)
            {
                if let Some(rest) = line.split("listening on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(rest.split(' ').next().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let status = child.wait().unwrap();
                if status.code() == Some(2) {
                    return None;
                }
                panic!(
                    "natter did not start ({status}): {:#?}",
                    log.lock().unwrap()
                );
            }
        };
        Some(Natter { child, addr, log })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn signal(&mut self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> Vec<String> {
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), Some(0));
        std::thread::sleep(Duration::from_millis(50));
        self.log.lock().unwrap().clone()
    }

    /// kill -9.
    pub fn kill(mut self) {
        self.signal("-KILL");
        self.child.wait().unwrap();
    }

    pub fn log_has(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Waits for a log line containing `needle` and returns it.
    pub async fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "no log line with {needle:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn client(&self) -> Client {
        Client {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .build()
                .unwrap(),
            base: self.url(""),
        }
    }

    pub async fn mirror_state(&self) -> String {
        let body: Value = reqwest::get(self.url("/healthz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["mirror"].as_str().unwrap().to_owned()
    }

    /// Registers `name`, follows the logged activation link, signs in.
    pub async fn registered(&self, name: &str, password: &str) -> Client {
        let client = self.client();
        let (status, body) = client
            .post(
                "/api/register",
                json!({"user": name, "email": format!("{name}@example.org"), "password": password}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let line = self.wait_log(&format!("/api/verifyEmail/{name}/")).await;
        let link = line.split("activation link: ").nth(1).unwrap().trim();
        let path = &link[link.find("/api/").unwrap()..];
        let (status, _) = client.get(path).await;
        assert_eq!(status, 200);
        let (status, body) = client
            .post(
                "/api/authorize",
                json!({"user": name, "password": password}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        client
    }
}

impl Drop for Natter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn guest(&self, name: &str) {
        assert_eq!(self.post("/api/login", json!({"user": name})).await.0, 200);
    }

    pub async fn join(&self, chat: &str) -> Value {
        let (status, body) = self
            .post("/api/loggedonly/joinChat", json!({"chat": chat}))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn say(&self, chat: &str, text: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/loggedonly/postMessage",
                json!({"chat": chat, "text": text}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The ids of the chat's history (up to `last_messages`).
    pub async fn history_ids(&self, chat: &str) -> Vec<u64> {
        let (status, body) = self
            .post("/api/loggedonly/getLastMessages", json!({"chat": chat}))
            .await;
        assert_eq!(status, 200, "{body}");
        body.as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect()
    }
}

/// An account row: key, name, email, hash, verified, admin, bot, created.
pub type UserRow = (String, String, String, String, bool, bool, bool, i64);
/// A message row: id, chat, user, text, time, verified, admin, bot.
pub type MessageRow = (i64, i64, String, String, i64, bool, bool, bool);

/// Waits up to `limit` until the mirror holds exactly `count` messages; returns how long it took.
pub async fn wait_for_mirrored(
    db: &tokio_postgres::Client,
    count: usize,
    limit: Duration,
    what: &str,
) -> Duration {
    wait_for(limit, what, || async {
        pg_message_ids(db).await.len() == count
    })
    .await
}

/// Stops `server` and checks that its outbox (in `dir`'s data directory) is empty and the
/// mirror equals sled; returns sled's snapshot and the server's log.
pub async fn stop_and_compare(
    server: Natter,
    dir: &Path,
    db: &tokio_postgres::Client,
) -> (Snapshot, Vec<String>) {
    let log = server.stop();
    let (sled, pending) = sled_snapshot(&dir.join("data"));
    assert_eq!(pending, 0, "the outbox is empty");
    assert_eq!(pg_snapshot(db).await, sled);
    (sled, log)
}

/// Comparable rows of sled or the mirror; chats are (id, name, created).
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub users: Vec<UserRow>,
    pub chats: Vec<(i64, String, i64)>,
    pub messages: Vec<MessageRow>,
}

/// What sled holds; natter must be stopped. Also returns the outbox length.
pub fn sled_snapshot(data: &Path) -> (Snapshot, u64) {
    let store = SledStore::open_mirrored(data, SyncMode::Relaxed).unwrap();
    let mut users: Vec<_> = store
        .users()
        .unwrap()
        .into_iter()
        .map(|u| {
            (
                u.name.to_lowercase(),
                u.name,
                u.email,
                u.password_hash,
                u.verified,
                u.admin,
                u.bot,
                u.created,
            )
        })
        .collect();
    users.sort();
    let mut chats = Vec::new();
    let mut messages = Vec::new();
    for chat in store.chats().unwrap() {
        for m in store.last_messages(chat.id, usize::MAX).unwrap() {
            messages.push((
                m.id as i64,
                m.chat_id as i64,
                m.user,
                m.text,
                m.time,
                m.verified,
                m.admin,
                m.bot,
            ));
        }
        chats.push((chat.id as i64, chat.name, chat.created));
    }
    chats.sort();
    messages.sort();
    let pending = store.mirror_status().outbox_len;
    store.close().unwrap();
    (
        Snapshot {
            users,
            chats,
            messages,
        },
        pending,
    )
}

/// What the mirror holds.
pub async fn pg_snapshot(client: &tokio_postgres::Client) -> Snapshot {
    let users = client
        .query(
            "SELECT key, name, email, password_hash, verified, admin, bot,
                    extract(epoch FROM created)::bigint FROM users ORDER BY key",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
            )
        })
        .collect();
    let chats = client
        .query(
            "SELECT id, name, extract(epoch FROM created)::bigint FROM chats ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let messages = client
        .query(
            "SELECT id, chat_id, \"user\", text, extract(epoch FROM time)::bigint, verified,
                    admin, bot FROM messages ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
            )
        })
        .collect();
    Snapshot {
        users,
        chats,
        messages,
    }
}

/// Message ids in the mirror, in order.
pub async fn pg_message_ids(client: &tokio_postgres::Client) -> Vec<u64> {
    client
        .query("SELECT id FROM messages ORDER BY id", &[])
        .await
        .map(|rows| rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
        .unwrap_or_default()
}

/// Polls `check` every 50 ms until it holds; panics after `limit`. Returns the time it took.
pub async fn wait_for<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
