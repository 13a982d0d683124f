//! Test support: a real natter on 127.0.0.1:0 with its own sled directory, and cookie-keeping clients.

use crate::mail_recorder::MailRecorder;
use natter::App;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use tempfile::TempDir;

/// A running server with its own data directory.
pub struct TestServer {
    pub app: Option<App>,
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub extra: String,
    pub dev: bool,
    /// Where this server's mail goes (across restarts too).
    pub mail: MailRecorder,
}

/// The cluster of `TEST_STORAGE=postgres` runs, started by the first server that needs it and
/// stopped when the test binary exits.
#[cfg(feature = "pg")]
static CLUSTER: tokio::sync::OnceCell<Option<crate::cluster::Cluster>> =
    tokio::sync::OnceCell::const_new();

#[cfg(feature = "pg")]
extern "C" fn stop_cluster() {
    if let Some(Some(cluster)) = CLUSTER.get() {
        cluster.stop();
    }
}

/// With `TEST_STORAGE=postgres`, the config lines that keep a test server's data in a database
/// of its own (the same one across its restarts); `None` for sled, the default.
#[cfg(feature = "pg")]
pub async fn storage_lines(dir: &TempDir) -> Option<String> {
    if std::env::var("TEST_STORAGE").ok().as_deref() != Some("postgres") {
        return None;
    }
    Some(postgres_lines(dir).await)
}

/// The config lines that keep the data of the server in `dir` in a database of its own, in
/// every run (the tests of what only the PostgreSQL store does).
#[cfg(feature = "pg")]
pub async fn postgres_lines(dir: &TempDir) -> String {
    database_lines(&database_name(dir.path())).await
}

/// The config lines for the database `db` of the shared cluster, created if missing.
#[cfg(feature = "pg")]
async fn database_lines(db: &str) -> String {
    let cluster = CLUSTER
        .get_or_init(|| async {
            let cluster = crate::cluster::Cluster::start().await;
            // SAFETY: registers a plain function with no captured state.
            unsafe { libc::atexit(stop_cluster) };
            cluster
        })
        .await
        .as_ref()
        .expect("TEST_STORAGE=postgres needs PostgreSQL's binaries");
    let admin = cluster.client("postgres").await;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await
        .unwrap()
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
    }
    format!(
        "storage = \"postgres\"\ndatabase_url = \"{}\"\n",
        cluster.url(db)
    )
}

/// The granted modes of the advisory lock `key` in the database of the server in `dir`.
#[cfg(feature = "pg")]
pub async fn advisory_lock_modes(dir: &TempDir, key: i64) -> Vec<String> {
    let cluster = CLUSTER
        .get()
        .and_then(Option::as_ref)
        .expect("the cluster runs");
    let admin = cluster.client("postgres").await;
    // A bigint key shows as its high half in classid and its low half in objid.
    let (high, low) = ((key >> 32) as u32, (key & 0xffff_ffff) as u32);
    admin
        .query(
            "SELECT l.mode FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1 \
             AND l.classid::text = $2 AND l.objid::text = $3 AND l.objsubid = 1",
            &[
                &database_name(dir.path()),
                &high.to_string(),
                &low.to_string(),
            ],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Ends every connection to the database of the server in `dir` (a PostgreSQL outage as the
/// server sees it: it connects again at its next request).
#[cfg(feature = "pg")]
pub async fn drop_connections(dir: &TempDir) -> u64 {
    let cluster = CLUSTER
        .get()
        .and_then(Option::as_ref)
        .expect("the cluster runs");
    let admin = cluster.client("postgres").await;
    let ended = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&database_name(dir.path())],
        )
        .await
        .unwrap();
    ended.len() as u64
}

#[cfg(not(feature = "pg"))]
pub async fn storage_lines(_dir: &TempDir) -> Option<String> {
    None
}

/// The database of the test server whose directory is `dir` (the same across its restarts).
fn database_name(dir: &std::path::Path) -> String {
    let name: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!("t_{name}")
}

/// The stopped server's store, opened directly: sled's directory, or its PostgreSQL database.
pub fn open_stored_data(dir: &std::path::Path) -> std::sync::Arc<dyn natter::store::Store> {
    open_store_at(&dir.join("data"))
}

/// A stopped server's sled directory. sled's own flush thread may hold the directory's lock a
/// moment after the server stopped: wait for it.
fn open_sled(data: &std::path::Path) -> std::sync::Arc<natter::store::sled::SledStore> {
    use natter::store::StoreError;
    use natter::store::sled::{SledStore, SyncMode};
    for _ in 0..100 {
        match SledStore::open(data, SyncMode::Relaxed) {
            Err(StoreError::Locked(_)) => std::thread::sleep(std::time::Duration::from_millis(20)),
            other => return other.unwrap(),
        }
    }
    panic!("the data directory stayed locked");
}

/// Makes the database of the server in `to` a copy of the stopped one's in `from`.
#[cfg(feature = "pg")]
async fn copy_database(from: &std::path::Path, to: &std::path::Path) {
    let cluster = CLUSTER
        .get()
        .and_then(Option::as_ref)
        .expect("the cluster runs");
    let admin = cluster.client("postgres").await;
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE {}",
            database_name(to),
            database_name(from)
        ))
        .await
        .unwrap();
}

#[cfg(not(feature = "pg"))]
async fn copy_database(_from: &std::path::Path, _to: &std::path::Path) {}

/// Whether this run keeps test servers' data in PostgreSQL (`TEST_STORAGE=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("TEST_STORAGE").ok().as_deref() == Some("postgres")
}

/// Settings every test server gets: fast hashing, short polls, mail to its own recorder.
fn base_config(dir: &TempDir, extra: &str, mail: &MailRecorder) -> String {
    let data_dir = format!("data_dir = \"{}\"", dir.path().join("data").display());
    let defaults = [
        "listen = \"127.0.0.1:0\"",
        &data_dir,
        "password_iterations = 1000",
        "poll_timeout = \"1s\"",
        "admins = [\"root\"]",
    ];
    let mut text = String::new();
    for line in defaults {
        let key = line.split(' ').next().unwrap_or_default();
        // A test's own value for a key replaces the default.
        if !extra.lines().any(|l| l.split(' ').next() == Some(key)) {
            text.push_str(line);
            text.push('\n');
        }
    }
    let api_url = format!("sendgrid_api_url = \"{}\"", mail.url());
    let own_mail = extra.lines().any(|l| l.trim() == "[mail]");
    for line in extra.lines() {
        text.push_str(line);
        text.push('\n');
        // A test's own [mail] table stays as it is, sent to the recorder unless it names a URL.
        if line.trim() == "[mail]" && !extra.contains("sendgrid_api_url") {
            text.push_str(&api_url);
            text.push('\n');
        }
    }
    if !own_mail {
        text.push_str("[mail]\nprovider = \"sendgrid\"\nsendgrid_key = \"test\"\n");
        text.push_str(&api_url);
        text.push('\n');
    }
    // Most tests send many account requests from one IP; the rate-limit tests turn limits on.
    if !extra.contains("[rate_limit]") {
        text.push_str("[rate_limit]\nenabled = false\n");
    }
    text
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with_config("").await
    }

    /// Starts with extra top-level config lines (tables must come last; a `[mail]` table is kept).
    pub async fn with_config(extra: &str) -> TestServer {
        TestServer::build(extra, true).await
    }

    /// Starts on a copy of a stopped server's data directory.
    pub async fn on_copy_of(data: &std::path::Path, extra: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        if on_postgres() {
            let template = data.parent().expect("a server's data directory");
            copy_database(template, dir.path()).await;
        } else {
            copy_dir(data, &dir.path().join("data"));
        }
        TestServer::build_in(dir, extra, true).await
    }

    /// Starts in production mode (no dev relaxations); rounds must then be >= 100000.
    pub async fn production(extra: &str) -> TestServer {
        TestServer::build(extra, false).await
    }

    async fn build(extra: &str, dev: bool) -> TestServer {
        TestServer::build_in(tempfile::tempdir().unwrap(), extra, dev).await
    }

    /// Starts in a directory the test prepared: the data goes to its `data` subdirectory
    /// (a small filesystem mounted there, say).
    pub async fn with_config_in(dir: TempDir, extra: &str) -> TestServer {
        TestServer::build_in(dir, extra, true).await
    }

    async fn build_in(dir: TempDir, extra: &str, dev: bool) -> TestServer {
        let mail = MailRecorder::start().await;
        let app = Self::launch(&dir, extra, dev, &mail).await;
        TestServer {
            addr: app.addr(),
            app: Some(app),
            dir,
            extra: extra.to_owned(),
            dev,
            mail,
        }
    }

    async fn launch(dir: &TempDir, extra: &str, dev: bool, mail: &MailRecorder) -> App {
        let mut text = base_config(dir, extra, mail);
        // A test that names its backend (`storage = "sled"`) keeps it in every run.
        let named = extra.lines().any(|l| l.starts_with("storage = "));
        if !named && let Some(storage) = storage_lines(dir).await {
            text = format!("{storage}{text}");
        }
        if !dev {
            text = text.replace("password_iterations = 1000", "password_iterations = 100000");
        }
        let config = natter::config::from_toml_str(&text, dev).expect("test config is valid");
        // A server just stopped in this process: sled's flush thread may hold the directory's
        // lock a moment longer (see `stored_data`).
        for _ in 0..100 {
            match natter::build(config.clone()).await {
                Err(e) if e.0.contains("in use by a running natter") => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                other => return other.expect("server starts"),
            }
        }
        panic!("the data directory stayed locked");
    }

    /// A new browser-like client with its own cookie jar.
    pub fn client(&self) -> Client {
        Client {
            http: reqwest::Client::builder()
                .cookie_store(true)
                // Plain HTTP only: skips loading the system's roots, a tenth of a second per client.
                .tls_certs_only([])
                .build()
                .unwrap(),
            base: std::sync::Arc::new(Mutex::new(format!("http://{}", self.addr))),
            mail: self.mail.clone(),
        }
    }

    /// The link of the latest activation mail this server sent to `user`.
    pub async fn activation_link(&self, user: &str) -> String {
        self.mail.activation_link(user).await
    }

    /// The token of the next password reset mail this server sent to `user`.
    pub async fn next_reset_token(&self, user: &str) -> String {
        self.mail.next_reset_token(user).await
    }

    /// Graceful shutdown, then a new server on the same data directory.
    pub async fn restart(&mut self, clients: &[&Client]) {
        self.stop().await;
        let app = Self::launch(&self.dir, &self.extra, self.dev, &self.mail).await;
        self.addr = app.addr();
        self.app = Some(app);
        for client in clients {
            *client.base.lock().unwrap() = format!("http://{}", self.addr);
        }
    }

    pub async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await.expect("clean shutdown");
        }
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// A new guest who has joined `chat`.
    pub async fn guest_in(&self, name: &str, chat: &str) -> Client {
        let client = self.client();
        client.guest(name).await;
        client.join(chat).await;
        client
    }

    /// Changes a stored account directly in sled; the server must be stopped.
    /// The stopped server's data directory, opened directly. sled's own flush thread may hold
    /// the directory's lock a moment after the server stopped: wait for it.
    pub fn stored_data(&self) -> std::sync::Arc<natter::store::sled::SledStore> {
        open_sled(&self.data_dir())
    }

    /// Runs `f` on the stopped server's store, whichever backend it is, and closes it after.
    pub fn with_stored_data<T>(&self, f: impl FnOnce(&dyn natter::store::Store) -> T) -> T {
        let store = open_stored_data(self.dir.path());
        let out = f(&*store);
        store.flush().unwrap();
        drop(store);
        if !on_postgres() {
            // Returns once sled has let go of the directory.
            open_sled(&self.data_dir()).close().unwrap();
        }
        out
    }

    pub fn edit_stored_user(
        &self,
        name: &str,
        change: impl FnOnce(&mut natter::store::UserRecord),
    ) {
        self.with_stored_data(|store| {
            let mut user = store.user(name).unwrap().expect("the user exists");
            change(&mut user);
            store.update_user(&user, None).unwrap();
        });
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            // Best effort in a test that failed before stopping its server.
            drop(app);
        }
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// Asserts an error status and message.
    pub fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(
            (self.status, self.json()),
            (status, json!({ "error": message })),
            "body: {}",
            self.body
        );
    }

    pub fn assert_ok_empty(&self) {
        assert_eq!((self.status, self.body.as_str()), (200, ""), "{self:?}");
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A cookie-keeping client bound to one server (follows it across restarts).
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    base: std::sync::Arc<Mutex<String>>,
    /// The recorder of the server this client talks to.
    mail: MailRecorder,
}

impl Client {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.lock().unwrap())
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        let response = request.send().await.expect("request reaches the server");
        Resp {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> Resp {
        self.send(
            self.http
                .post(self.url(path))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.http.get(self.url(path))).await
    }

    /// A guest login as if forwarded by a proxy for `client_ip`.
    pub async fn login_via_proxy(&self, client_ip: &str, name: &str) -> Resp {
        self.send(
            self.http
                .post(self.url("/api/login"))
                .header("x-forwarded-for", client_ip)
                .json(&json!({ "user": name })),
        )
        .await
    }

    /// Logs in as a guest and checks the reply.
    pub async fn guest(&self, name: &str) -> &Self {
        let r = self.post("/api/login", json!({ "user": name })).await;
        assert_eq!(r.status, 200, "guest login {name}: {}", r.body);
        self
    }

    pub async fn join(&self, chat: &str) -> Value {
        let r = self
            .post("/api/loggedonly/joinChat", json!({ "chat": chat }))
            .await;
        assert_eq!(r.status, 200, "join {chat}: {}", r.body);
        r.json()
    }

    pub async fn say(&self, chat: &str, text: &str) -> Value {
        let r = self
            .post(
                "/api/loggedonly/postMessage",
                json!({ "chat": chat, "text": text }),
            )
            .await;
        assert_eq!(r.status, 200, "post: {}", r.body);
        r.json()
    }

    /// One legacy poll: `Some(envelope)` or `None` for an empty reply.
    pub async fn poll(&self) -> Option<Value> {
        let r = self.get("/api/loggedonly/poll").await;
        assert_eq!(r.status, 200, "poll: {}", r.body);
        (!r.body.is_empty()).then(|| r.json())
    }

    /// Polls until an empty reply: every pending event as (type, payload).
    pub async fn drain(&self) -> Vec<(String, Value)> {
        let mut events = Vec::new();
        while let Some(envelope) = self.poll().await {
            events.push((
                envelope["type"].as_str().unwrap().to_owned(),
                envelope["event"].clone(),
            ));
        }
        events
    }

    /// Pending event types only.
    pub async fn drain_types(&self) -> Vec<String> {
        self.drain().await.into_iter().map(|(t, _)| t).collect()
    }

    /// Registers, verifies through the mailed link, and signs in.
    pub async fn registered(&self, name: &str) -> Value {
        let r = self
            .post(
                "/api/register",
                json!({ "user": name, "email": format!("{name}@example.org"), "password": "password123" }),
            )
            .await;
        r.assert_ok_empty();
        let link = self.mail.activation_link(name).await;
        let path = link
            .split_once("/api/")
            .map(|(_, p)| format!("/api/{p}"))
            .unwrap();
        let r = self.get(&path).await;
        assert_eq!(r.status, 200, "verify: {}", r.body);
        let r = self
            .post(
                "/api/authorize",
                json!({ "user": name, "password": "password123" }),
            )
            .await;
        assert_eq!(r.status, 200, "authorize: {}", r.body);
        r.json()
    }
}

/// A `natter serve` child process; its stderr is collected in the background.
pub struct Served {
    pub child: std::process::Child,
    pub addr: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The binary process tests run: `TEST_NATTER_BINARY` (CI points it at the release build), else
/// the one cargo built for this test run.
pub fn natter_binary() -> std::path::PathBuf {
    std::env::var_os("TEST_NATTER_BINARY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_natter").into())
}

impl Served {
    pub fn start(config: &std::path::Path) -> Served {
        Served::start_with_args(&["--config".as_ref(), config.as_os_str()])
    }

    /// Starts `natter` with these arguments; `log` also holds the lines up to the "listening on" one.
    pub fn start_with_args(args: &[&std::ffi::OsStr]) -> Served {
        Served::start_binary_with_args(env!("CARGO_BIN_EXE_natter").as_ref(), args)
    }

    /// [`Served::start_with_args`] with these environment variables added.
    pub fn start_with_env(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Served {
        Served::start_binary_with_env(env!("CARGO_BIN_EXE_natter").as_ref(), args, env)
    }

    /// Starts `binary` with `--config config`, once it has announced its address.
    pub fn start_binary(binary: &std::path::Path, config: &std::path::Path) -> Served {
        Served::start_binary_with_args(binary, &["--config".as_ref(), config.as_os_str()])
    }

    fn start_binary_with_args(binary: &std::path::Path, args: &[&std::ffi::OsStr]) -> Served {
        Served::start_binary_with_env(binary, args, &[])
    }

    fn start_binary_with_env(
        binary: &std::path::Path,
        args: &[&std::ffi::OsStr],
        env: &[(&str, &str)],
    ) -> Served {
        let mut child = Command::new(binary)
            .args(args)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        let mut early = Vec::new();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                let addr = l
                    .split("listening on ")
                    .nth(1)
                    .map(|rest| rest.split(' ').next().unwrap_or_default().to_owned());
                early.push(l);
                addr
            })
            .unwrap_or_else(|| panic!("the server announced its address: {early:?}"));
        let log = std::sync::Arc::new(std::sync::Mutex::new(early));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Served { child, addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Resident memory of the server process in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // A test that failed early must not leave its server running; a reaped child is left alone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The database that stands for `data_dir` with `TEST_STORAGE=postgres`: a test server's own for
/// `<its dir>/data`, else one named after the directory and the test's directory holding it.
fn database_of(data_dir: &std::path::Path) -> String {
    let parent = data_dir.parent().expect("a directory inside a test's own");
    if data_dir.file_name() == Some("data".as_ref()) {
        return database_name(parent);
    }
    // `database_name` of the directory itself is "t_" and its name's letters and digits.
    format!(
        "{}_{}",
        database_name(parent),
        &database_name(data_dir)[2..]
    )
}

/// The config lines that point a `natter` process (the offline `export` and `import` too) at the
/// store of `data_dir`: that directory on sled; with `TEST_STORAGE=postgres` also the lines of
/// its database, created empty if missing (the commands then ignore `data_dir`).
pub async fn store_lines(data_dir: &std::path::Path) -> String {
    let data = format!("data_dir = \"{}\"\n", data_dir.display());
    #[cfg(feature = "pg")]
    if on_postgres() {
        return format!("{}{data}", database_lines(&database_of(data_dir)).await);
    }
    data
}

/// The store of `data_dir` (see `store_lines`), opened directly; no server may be using it.
pub fn open_store_at(data_dir: &std::path::Path) -> std::sync::Arc<dyn natter::store::Store> {
    #[cfg(feature = "pg")]
    if on_postgres() {
        let url = running_cluster().url(&database_of(data_dir));
        let target = natter::store::mirror::pg::parse(&url).unwrap();
        return natter::store::postgres::PgStore::open(target, false).unwrap();
    }
    open_sled(data_dir)
}

impl TestServer {
    /// Empties the stopped server's store, as an import needs it (its start created the chats):
    /// sled's directory removed, or its database dropped and created again.
    pub async fn empty_stored_data(&self) {
        #[cfg(feature = "pg")]
        if on_postgres() {
            let db = database_of(&self.data_dir());
            let admin = running_cluster().client("postgres").await;
            admin
                .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
                .await
                .unwrap();
            database_lines(&db).await;
            return;
        }
        std::fs::remove_dir_all(self.data_dir()).unwrap();
    }
}

/// The shared cluster, which a test server's start has brought up.
#[cfg(feature = "pg")]
fn running_cluster() -> &'static crate::cluster::Cluster {
    CLUSTER
        .get()
        .and_then(Option::as_ref)
        .expect("the cluster runs")
}

impl Served {
    /// Checks the start line names the store of this run: PostgreSQL with `TEST_STORAGE=postgres`.
    pub fn assert_on_test_storage(&self) {
        let log = self.log.lock().unwrap();
        let start = log.iter().find(|l| l.contains("listening on")).unwrap();
        assert_eq!(
            start.contains("storage postgres"),
            on_postgres(),
            "the store of this run: {start}"
        );
    }
}

/// `store_lines` for a test that has no runtime of its own.
pub fn store_lines_blocking(data_dir: &std::path::Path) -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(store_lines(data_dir))
}
