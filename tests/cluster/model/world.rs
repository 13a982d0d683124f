//! The real side of a cluster case: three nodes on a copy of a template database, the clients
//! (each request to a node picked at random) and their event readers. Each operation goes over
//! HTTP; its answer, every client's new events and every client's getChats are then compared with
//! the model, and at the end getUsers and getLastMessages too. `Restart` stops one random node
//! (SIGTERM) and starts it again.

use super::ops::{CHAT_NAMES, CLIENTS, Choices, Op};
use super::reference::{Answer, Limits, Reference};
use super::stream::{self, Window};
use crate::client::{Client, Reply};
use crate::node::{Node, free_port};
use crate::pg;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const NODES: usize = 3;
/// tests/api/model's server config: the sweeper never fires by itself within a case; small
/// history and session limits so that operations reach them.
const CONFIG: &str = "inactivity_timeout = \"1h\"\nlast_messages = 3\nmax_sessions_per_user = 2\n\
                      chats = [\"Main\", \"Side\"]\n";
const LIMITS: Limits = Limits {
    history: 3,
    sessions_per_user: 2,
    config_chats: &["Main", "Side"],
    shared_chats: false,
};
/// Queue readers ask for every event type but presence (as the web client does).
const WITHOUT_PRESENCE: [&str; 7] = [
    "ChatJoinEvent",
    "SystemMessageChatJoinEvent",
    "ChatLeaveEvent",
    "SystemMessageChatLeaveEvent",
    "MessageEvent",
    "ChatCreatedEvent",
    "ChatRemovedEvent",
];
const PASSWORD: &str = "password123";
/// A guest name no operation uses: its LoginEvent closes every stream at the end.
const MARKER: &str = "zz";
/// Chats the final check asks every client about (one spelling each).
const CHATS: &[&str] = &["Main", "Side", "Zed"];
/// How long missing events are waited for before the case fails.
const EVENT_WAIT: Duration = Duration::from_secs(5);
/// The database every case's database is a copy of.
const TEMPLATE_DB: &str = "natter_model";

#[derive(Debug, Clone, Copy)]
enum ReadMode {
    Poll,
    Queue,
    QueueWithoutPresence,
}

struct Reader {
    mode: ReadMode,
    stream: Option<(usize, u32)>,
    cursor: Option<u64>,
    queue: Option<String>,
}

/// What the cases exercised, for the summary line.
#[derive(Debug, Default)]
pub struct Tally {
    /// (request, status) → how many answers.
    pub answers: std::collections::BTreeMap<(String, u16), u32>,
    pub events: usize,
    pub steps: usize,
    pub restarts: usize,
    /// Requests sent to each node.
    pub per_node: [usize; NODES],
}

impl Tally {
    fn add(&mut self, other: Tally) {
        for (key, n) in other.answers {
            *self.answers.entry(key).or_default() += n;
        }
        self.events += other.events;
        self.steps += other.steps;
        self.restarts += other.restarts;
        for (mine, theirs) in self.per_node.iter_mut().zip(other.per_node) {
            *mine += theirs;
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn answer(r: Reply) -> Answer {
    Answer {
        status: r.status,
        body: r.body,
    }
}

/// xorshift64*: which node a request goes to. Seeded per case, the seed in any failure.
struct Dice(u64);

impl Dice {
    fn seeded() -> Dice {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).unwrap();
        Dice(u64::from_le_bytes(bytes) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// A node's config file: cluster member `name` on `port` over `database_url`.
fn node_config(
    dir: &Path,
    name: &str,
    port: u16,
    database_url: &str,
    secret: &str,
    extra: &str,
) -> String {
    format!(
        "cluster = true\n\
         node_name = \"{name}\"\n\
         listen = \"127.0.0.1:{port}\"\n\
         data_dir = \"{data}\"\n\
         storage = \"postgres\"\n\
         database_url = \"{database_url}\"\n\
         secret_key = \"{secret}\"\n\
         password_iterations = 1000\n\
         poll_timeout = \"1s\"\n\
         admins = [\"root\"]\n\
         {extra}\
         [mail]\nprovider = \"log\"\n\
         [rate_limit]\nenabled = false\n",
        data = dir.join("data").display(),
    )
}

/// `count` nodes on `database_url`, configured and not started, each in a directory under `dirs`.
fn nodes(dirs: &Path, count: usize, database_url: &str, secret: &str, extra: &str) -> Vec<Node> {
    (1..=count)
        .map(|i| {
            let name = format!("node{i}");
            let dir = dirs.join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            let port = free_port();
            let config = dir.join("config.toml");
            let text = node_config(&dir, &name, port, database_url, secret, extra);
            std::fs::write(&config, text).unwrap();
            Node::new(&name, port, &config)
        })
        .collect()
}

/// A PostgreSQL cluster with a template database holding the accounts the model knows: "root"
/// (admin), "reg", and "pending" (never verified). Every case runs on a copy of it.
pub struct Template {
    secret: String,
    dirs: TempDir,
    cases: AtomicUsize,
    pg: pg::Cluster,
}

impl Template {
    /// `None` (with a notice) without PostgreSQL's binaries, as the other cluster tests.
    pub async fn create() -> Option<Template> {
        let pg = pg::Cluster::start().await?;
        let database_url = pg.create_db(TEMPLATE_DB).await;
        let dirs = tempfile::tempdir().unwrap();
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).unwrap();
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut node = nodes(
            &dirs.path().join("template"),
            1,
            &database_url,
            &secret,
            CONFIG,
        )
        .pop()
        .unwrap();
        tokio::task::block_in_place(|| node.start());
        let setup = Client::new(&node.url(""));
        for (name, verify) in [("root", true), ("reg", true), ("pending", false)] {
            let body = json!({ "user": name, "email": format!("{name}@example.org"), "password": PASSWORD });
            let r = setup.post("/api/register", body).await;
            assert_eq!(r.status, 200, "register {name}: {}", r.body);
            // Waiting for every mail leaves nothing in the outbox to send from the copies.
            let mut link = None;
            for _ in 0..300 {
                link = node.activation_link(name);
                if link.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let link = link.unwrap_or_else(|| panic!("no activation link for {name}"));
            if verify {
                let path = &link[link.find("/api/").expect("a link to the API")..];
                assert_eq!(setup.get(path).await.status, 200, "verify {name}");
            }
        }
        // A database with a connection open cannot be copied.
        tokio::task::block_in_place(|| node.stop());
        Some(Template {
            secret,
            dirs,
            cases: AtomicUsize::new(0),
            pg,
        })
    }

    /// A fresh copy of the template database; its URL.
    async fn copy(&self) -> (String, String) {
        let n = self.cases.fetch_add(1, Ordering::Relaxed);
        let db = format!("natter_case_{n}");
        self.pg
            .client("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {db} TEMPLATE {TEMPLATE_DB}"))
            .await
            .unwrap();
        (db.clone(), self.pg.url(&db))
    }
}

pub struct World {
    nodes: Vec<Node>,
    /// The operations' clients, then the marker's.
    clients: Vec<Client>,
    readers: Vec<Reader>,
    model: Reference,
    dice: Dice,
    seed: u64,
    posts: usize,
    started: i64,
    tally: Tally,
}

/// Runs one case on three fresh nodes; they are stopped whatever the outcome. What it
/// exercised is added to `tally`.
pub async fn run(
    template: &Template,
    shared_chats: bool,
    ops: &[Op],
    tally: &mut Tally,
) -> Result<(), String> {
    let mut world = World::start(template, shared_chats).await;
    let mut outcome = Ok(());
    for (step, op) in ops.iter().enumerate() {
        let op = op.resolve(&world.choices());
        let watched = world.model.online_clients();
        outcome = match world.perform(&op).await {
            Ok(()) => world.check_clients(watched, false).await,
            Err(e) => Err(e),
        }
        .map_err(|e| format!("step {step} {op:?}: {e}"));
        if outcome.is_err() {
            break;
        }
        world.tally.steps += 1;
    }
    if outcome.is_ok() {
        outcome = world
            .finish()
            .await
            .map_err(|e| format!("final check: {e}"));
    }
    let seed = world.seed;
    tally.add(std::mem::take(&mut world.tally));
    // Dropping the nodes kills them; the case's database stays until the cluster goes.
    drop(world);
    outcome.map_err(|e| format!("(node dice seed {seed:#x}) {e}"))
}

impl World {
    async fn start(template: &Template, shared_chats: bool) -> World {
        let mut config = CONFIG.to_owned();
        if shared_chats {
            config.push_str("presence_scope = \"shared_chats\"\n");
        }
        let (db, url) = template.copy().await;
        let mut nodes = nodes(
            &template.dirs.path().join(&db),
            NODES,
            &url,
            &template.secret,
            &config,
        );
        tokio::task::block_in_place(|| {
            std::thread::scope(|s| {
                for node in nodes.iter_mut() {
                    s.spawn(|| node.start());
                }
            });
        });
        let clients = (0..=CLIENTS)
            .map(|_| Client::new(&nodes[0].url("")))
            .collect();
        let readers = (0..=CLIENTS)
            .map(|i| Reader {
                mode: match i % 4 {
                    0 | 2 => ReadMode::Poll,
                    1 => ReadMode::Queue,
                    _ => ReadMode::QueueWithoutPresence,
                },
                stream: None,
                cursor: None,
                queue: None,
            })
            .collect();
        let dice = Dice::seeded();
        World {
            nodes,
            clients,
            readers,
            model: Reference::new(
                Limits {
                    shared_chats,
                    ..LIMITS
                },
                CLIENTS + 1,
            ),
            seed: dice.0,
            dice,
            posts: 0,
            started: unix_now(),
            tally: Tally::default(),
        }
    }

    /// Client `c`, its cookies, aimed at a node picked at random.
    fn on_some_node(&mut self, c: usize) -> Client {
        let i = self.dice.below(NODES);
        self.tally.per_node[i] += 1;
        self.clients[c].on(&self.nodes[i].url(""))
    }

    async fn post(&mut self, c: usize, path: &str, body: Value) -> Answer {
        answer(self.on_some_node(c).post(path, body).await)
    }

    async fn get(&mut self, c: usize, path: &str) -> Reply {
        self.on_some_node(c).get(path).await
    }

    fn choices(&self) -> Choices {
        let spelled = |names: Vec<String>| -> Vec<&'static str> {
            names
                .iter()
                .filter_map(|n| CHAT_NAMES.iter().copied().find(|c| c == n))
                .collect()
        };
        Choices {
            online: self.model.online_clients(),
            dormant: self.model.dormant_clients(),
            admins: self.model.admin_clients(),
            chats: spelled(self.model.chat_names()),
            joined: (0..CLIENTS)
                .map(|c| spelled(self.model.joined(c)))
                .collect(),
        }
    }

    fn window(&self) -> Window {
        Window {
            from: self.started - 1,
            to: unix_now() + 1,
        }
    }

    fn compare(&mut self, what: &str, want: Answer, got: Answer) -> Result<(), String> {
        let label = what.split(" of client").next().unwrap_or(what).to_owned();
        *self.tally.answers.entry((label, got.status)).or_default() += 1;
        if want.status == got.status && stream::same(&want.body, &got.body, self.window()) {
            Ok(())
        } else {
            Err(format!(
                "{what}:\n expected {} {}\n      got {} {}",
                want.status, want.body, got.status, got.body
            ))
        }
    }

    async fn perform(&mut self, op: &Op) -> Result<(), String> {
        match op.clone() {
            Op::GuestLogin { client, name } => {
                let client = client.index();
                let got = self
                    .post(client, "/api/login", json!({ "user": name }))
                    .await;
                let want = self.model.guest_login(client, name);
                self.compare("guest login", want, got)
            }
            Op::SignIn {
                client,
                name,
                right_password,
            } => {
                let client = client.index();
                let password = if right_password {
                    PASSWORD
                } else {
                    "not-the-password"
                };
                let body = json!({ "user": name, "password": password });
                let got = self.post(client, "/api/authorize", body).await;
                let want = self.model.sign_in(client, name, right_password);
                self.compare("sign-in", want, got)
            }
            Op::Relogin { client } => {
                let client = client.index();
                let got = self.post(client, "/api/loggedonly/login", json!({})).await;
                let want = self.model.relogin(client);
                self.compare("session login", want, got)
            }
            Op::Logout { client } => {
                let client = client.index();
                let got = self.post(client, "/api/loggedonly/logout", json!({})).await;
                let want = self.model.logout(client);
                self.compare("logout", want, got)
            }
            Op::Join { client, chat } => {
                let chat = chat.name();
                let client = client.index();
                let body = json!({ "chat": chat });
                let got = self.post(client, "/api/loggedonly/joinChat", body).await;
                let want = self.model.join(client, chat);
                self.compare("join", want, got)
            }
            Op::Leave { client, chat } => {
                let chat = chat.name();
                let client = client.index();
                let body = json!({ "chat": chat });
                let got = self.post(client, "/api/loggedonly/leaveChat", body).await;
                let want = self.model.leave(client, chat);
                self.compare("leave", want, got)
            }
            Op::Post { client, chat } => {
                let chat = chat.name();
                let client = client.index();
                self.posts += 1;
                let text = format!("message {}", self.posts);
                let body = json!({ "chat": chat, "text": text });
                let got = self.post(client, "/api/loggedonly/postMessage", body).await;
                let want = self.model.post(client, chat, &text, &got, self.window());
                self.compare("post", want, got)
            }
            Op::CreateChat { client, chat } => {
                let client = client.index();
                let body = json!({ "chat": chat });
                let got = self.post(client, "/api/adminonly/createChat", body).await;
                let want = self.model.create_chat(client, chat);
                self.compare("create chat", want, got)
            }
            Op::RemoveChat { client, chat } => {
                let chat = chat.name();
                let client = client.index();
                let body = json!({ "chat": chat });
                let got = self.post(client, "/api/adminonly/removeChat", body).await;
                let want = self.model.remove_chat(client, chat);
                self.compare("remove chat", want, got)
            }
            Op::Sweep { .. } => unreachable!("cluster sequences hold no sweeps"),
            Op::Restart => {
                let i = self.dice.below(NODES);
                let node = &mut self.nodes[i];
                tokio::task::block_in_place(|| {
                    node.stop();
                    node.start();
                });
                self.tally.restarts += 1;
                self.model.restart();
                Ok(())
            }
        }
    }

    async fn check_clients(&mut self, watched: Vec<usize>, everything: bool) -> Result<(), String> {
        for c in 0..self.clients.len() {
            self.follow_stream(c).await?;
        }
        let online = self.model.online_clients();
        for c in 0..self.clients.len() {
            if !everything && !online.contains(&c) && !watched.contains(&c) {
                continue;
            }
            let with_presence = !matches!(self.readers[c].mode, ReadMode::QueueWithoutPresence);
            let expected = self.model.take_pending(c, with_presence);
            let n = stream::count(&expected);
            if n > 0 {
                let events = self.read_events(c, n).await?;
                self.tally.events += events.len();
                stream::check(&expected, &events, self.window())
                    .map_err(|e| format!("client {c}: {e}"))?;
            }
            let got = answer(self.get(c, "/api/loggedonly/getChats").await);
            let want = self.model.get_chats(c);
            self.compare(&format!("getChats of client {c}"), want, got)?;
            if everything {
                for chat in CHATS {
                    let body = json!({ "chat": chat });
                    let got = self.post(c, "/api/loggedonly/getUsers", body.clone()).await;
                    let want = self.model.get_users(c, chat);
                    self.compare(&format!("getUsers {chat} of client {c}"), want, got)?;
                    let got = self.post(c, "/api/loggedonly/getLastMessages", body).await;
                    let want = self.model.get_last_messages(c, chat);
                    self.compare(&format!("getLastMessages {chat} of client {c}"), want, got)?;
                }
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), String> {
        let got = self
            .post(CLIENTS, "/api/login", json!({ "user": MARKER }))
            .await;
        let want = self.model.guest_login(CLIENTS, MARKER);
        self.compare("marker login", want, got)?;
        self.check_clients(Vec::new(), true).await
    }

    async fn follow_stream(&mut self, c: usize) -> Result<(), String> {
        let now = self.model.stream(c);
        if self.readers[c].stream == now {
            return Ok(());
        }
        self.readers[c].stream = now;
        self.readers[c].cursor = None;
        if now.is_none() {
            return Ok(());
        }
        if let Some(old) = self.readers[c].queue.take() {
            let got = answer(self.get(c, &events_path(&old, 0)).await);
            let want = Answer {
                status: 400,
                body: json!({ "error": "bad event queue id" }),
            };
            self.compare(&format!("client {c} reading its old queue"), want, got)?;
        }
        let body = match self.readers[c].mode {
            ReadMode::Poll => None,
            ReadMode::Queue => Some(json!({})),
            ReadMode::QueueWithoutPresence => Some(json!({ "event_types": WITHOUT_PRESENCE })),
        };
        if let Some(body) = body {
            let opened = self.post(c, "/api/loggedonly/queues", body).await;
            let (Some(id), Some(last)) = (
                opened.body["queue_id"].as_str(),
                opened.body["last_event_id"].as_u64(),
            ) else {
                return Err(format!("client {c} opening a queue: {opened:?}"));
            };
            self.readers[c].queue = Some(id.to_owned());
            self.readers[c].cursor = Some(last);
            self.model.queue_opened(c);
        }
        Ok(())
    }

    /// Reads `n` events from a client's queue (each read on a random node) as `{"type",
    /// "event"}`, checking that ids increase; more than `n` are returned if the server has more.
    async fn read_events(&mut self, c: usize, n: usize) -> Result<Vec<Value>, String> {
        let deadline = Instant::now() + EVENT_WAIT;
        let mut events = Vec::new();
        while events.len() < n {
            if Instant::now() > deadline {
                return Err(format!(
                    "client {c}: only {} of {n} events arrived: {events:?}",
                    events.len()
                ));
            }
            let (mode, queue, cursor) = {
                let reader = &self.readers[c];
                (reader.mode, reader.queue.clone(), reader.cursor)
            };
            let batch: Vec<Value> = match (mode, queue) {
                (ReadMode::Queue | ReadMode::QueueWithoutPresence, Some(queue)) => {
                    let r = self.get(c, &events_path(&queue, cursor.unwrap_or(0))).await;
                    if r.status != 200 {
                        return Err(format!("client {c} reading events: {r:?}"));
                    }
                    r.body["events"].as_array().cloned().unwrap_or_default()
                }
                (ReadMode::Queue | ReadMode::QueueWithoutPresence, None) => {
                    return Err(format!("client {c} has no queue"));
                }
                (ReadMode::Poll, _) => {
                    let path = match cursor {
                        Some(id) => format!("/api/loggedonly/poll?last_event_id={id}"),
                        None => "/api/loggedonly/poll".to_owned(),
                    };
                    let r = self.get(c, &path).await;
                    if r.status != 200 {
                        return Err(format!("client {c} polling: {r:?}"));
                    }
                    if r.body.is_null() {
                        Vec::new()
                    } else {
                        vec![r.body]
                    }
                }
            };
            let reader = &mut self.readers[c];
            for delivered in batch {
                let id = delivered["id"].as_u64();
                if id.is_none() || id <= reader.cursor {
                    return Err(format!(
                        "client {c}: event id not above {:?}: {delivered}",
                        reader.cursor
                    ));
                }
                reader.cursor = id;
                events.push(json!({ "type": delivered["type"], "event": delivered["event"] }));
            }
        }
        Ok(events)
    }
}

fn events_path(queue: &str, last_event_id: u64) -> String {
    format!("/api/loggedonly/events?queue_id={queue}&last_event_id={last_event_id}")
}
