//! The real side of a case: a natter server, its clients and their event readers. Each
//! operation goes over HTTP; its answer, every client's new events and every client's
//! getChats are then compared with the model, and at the end getUsers and getLastMessages too.

use super::ops::{CHAT_NAMES, CLIENTS, Choices, Op};
use super::reference::{Answer, Limits, Reference};
use super::stream::{self, Window};
use crate::helpers::{Client, Resp, TestServer};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The sweeper never fires by itself within a case (sweeps are operations); small history and
/// session limits so that operations reach them.
const CONFIG: &str = "inactivity_timeout = \"1h\"\nlast_messages = 3\nmax_sessions_per_user = 2\n\
                      chats = [\"Main\", \"Side\"]";
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

/// How a client reads its events: the legacy `/poll` of its default queue, acknowledging with
/// `last_event_id`, or an explicit queue through `/events` (docs/api.md,
/// Reading events).
#[derive(Debug, Clone, Copy)]
enum ReadMode {
    Poll,
    Queue,
    /// An explicit queue opened with `event_types` that leave out `LoginEvent` and `LogoutEvent`.
    QueueWithoutPresence,
}

struct Reader {
    mode: ReadMode,
    /// The model's stream (session, online period) that `cursor` and `queue` belong to.
    stream: Option<(usize, u32)>,
    /// The last event id received.
    cursor: Option<u64>,
    queue: Option<String>,
}

pub struct World {
    server: TestServer,
    /// The operations' clients, then the marker's.
    clients: Vec<Client>,
    readers: Vec<Reader>,
    model: Reference,
    posts: usize,
    started: i64,
    tally: Tally,
}

/// What the cases exercised, for the summary line.
#[derive(Debug, Default)]
pub struct Tally {
    /// (request, status) → how many answers.
    pub answers: std::collections::BTreeMap<(String, u16), u32>,
    pub events: usize,
    pub steps: usize,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        for (key, n) in other.answers {
            *self.answers.entry(key).or_default() += n;
        }
        self.events += other.events;
        self.steps += other.steps;
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn answer(r: Resp) -> Answer {
    let body = if r.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&r.body).unwrap_or(Value::String(r.body))
    };
    Answer {
        status: r.status,
        body,
    }
}

/// A stopped server's data directory holding the accounts the model knows: "root" (admin),
/// "reg", and "pending" (never verified). Every case starts on a copy of it.
pub struct Template(TestServer);

impl Template {
    pub async fn create() -> Template {
        let mut server = TestServer::with_config(CONFIG).await;
        let setup = server.client();
        for (name, verify) in [("root", true), ("reg", true), ("pending", false)] {
            let r = setup
                .post(
                    "/api/register",
                    json!({ "user": name, "email": format!("{name}@example.org"), "password": PASSWORD }),
                )
                .await;
            r.assert_ok_empty();
            // Waiting for every mail leaves nothing in the outbox to send from the copies.
            let link = server.activation_link(name).await;
            if verify {
                let path = &link[link.find("/api/").expect("a link to the API")..];
                assert_eq!(setup.get(path).await.status, 200, "verify {name}");
            }
        }
        server.stop().await;
        // Once sled lets go of the directory, nothing writes to it any more.
        if !crate::helpers::on_postgres() {
            server.stored_data().close().unwrap();
        }
        Template(server)
    }
}

/// Runs one case on a fresh server; the server is stopped whatever the outcome. What it
/// exercised is added to `tally`.
/// With `shared_chats`, the server runs with `presence_scope = "shared_chats"`.
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
    world.server.stop().await;
    tally.add(std::mem::take(&mut world.tally));
    outcome
}

impl World {
    /// A server on a copy of the template, and clients without cookies.
    async fn start(template: &Template, shared_chats: bool) -> World {
        let config = if shared_chats {
            format!("{CONFIG}\npresence_scope = \"shared_chats\"")
        } else {
            CONFIG.to_owned()
        };
        let server = TestServer::on_copy_of(&template.0.data_dir(), &config).await;
        let clients = (0..=CLIENTS).map(|_| server.client()).collect();
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
        World {
            server,
            clients,
            readers,
            model: Reference::new(
                Limits {
                    shared_chats,
                    ..LIMITS
                },
                CLIENTS + 1,
            ),
            posts: 0,
            started: unix_now(),
            tally: Tally::default(),
        }
    }

    /// What the model says operations can be aimed at now.
    fn choices(&self) -> Choices {
        // Every chat is named by one of the spellings operations use.
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
                let got = self
                    .post(client, "/api/loggedonly/joinChat", json!({ "chat": chat }))
                    .await;
                let want = self.model.join(client, chat);
                self.compare("join", want, got)
            }
            Op::Leave { client, chat } => {
                let chat = chat.name();
                let client = client.index();
                let got = self
                    .post(client, "/api/loggedonly/leaveChat", json!({ "chat": chat }))
                    .await;
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
                let got = self
                    .post(client, "/api/adminonly/createChat", json!({ "chat": chat }))
                    .await;
                let want = self.model.create_chat(client, chat);
                self.compare("create chat", want, got)
            }
            Op::RemoveChat { client, chat } => {
                let chat = chat.name();
                let client = client.index();
                let got = self
                    .post(client, "/api/adminonly/removeChat", json!({ "chat": chat }))
                    .await;
                let want = self.model.remove_chat(client, chat);
                self.compare("remove chat", want, got)
            }
            Op::Sweep { active } => self.sweep(&active).await,
            Op::Restart => {
                let clients: Vec<&Client> = self.clients.iter().collect();
                self.server.restart(&clients).await;
                self.model.restart();
                Ok(())
            }
        }
    }

    async fn post(&self, client: usize, path: &str, body: Value) -> Answer {
        answer(self.clients[client].post(path, body).await)
    }

    /// Only the `active` clients make a request after `cutoff`; then the sweeper runs as if
    /// `inactivity_timeout` had passed since `cutoff`.
    async fn sweep(&mut self, active: &[bool]) -> Result<(), String> {
        let cutoff = Instant::now();
        let kept: Vec<usize> = (0..CLIENTS).filter(|&c| active[c]).collect();
        for &c in &kept {
            let client = &self.clients[c];
            let got = answer(
                client
                    .send(client.http.put(client.url("/api/loggedonly/keepalive")))
                    .await,
            );
            self.compare(
                &format!("keepalive of client {c}"),
                self.model.keepalive(c),
                got,
            )?;
        }
        let app = self.server.app.as_ref().expect("the server runs");
        app.sweep_idle_since(cutoff)
            .await
            .map_err(|e| format!("sweep failed: {e:?}"))?;
        self.model.sweep(&kept);
        Ok(())
    }

    /// Every client online now or in `watched`: its new events, then its getChats (a client
    /// that went offline is refused); with `everything`, getUsers and getLastMessages of every
    /// chat too.
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
            let got = answer(self.clients[c].get("/api/loggedonly/getChats").await);
            self.compare(
                &format!("getChats of client {c}"),
                self.model.get_chats(c),
                got,
            )?;
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

    /// The marker's LoginEvent reaches everyone online last (under `presence_scope =
    /// "everyone"`, and for readers taking presence), so every such stream must hold exactly
    /// what the model expects before it; then every read is compared.
    async fn finish(&mut self) -> Result<(), String> {
        let got = self
            .post(CLIENTS, "/api/login", json!({ "user": MARKER }))
            .await;
        let want = self.model.guest_login(CLIENTS, MARKER);
        self.compare("marker login", want, got)?;
        self.check_clients(Vec::new(), true).await
    }

    /// Keeps a client's reader on the queues of its current online session: a session that
    /// is new or came back online has fresh queues, and the old explicit queue is refused.
    async fn follow_stream(&mut self, c: usize) -> Result<(), String> {
        let now = self.model.stream(c);
        if self.readers[c].stream == now {
            return Ok(());
        }
        self.readers[c].stream = now;
        self.readers[c].cursor = None;
        if now.is_none() {
            // The old queue id is tried once the client is online again.
            return Ok(());
        }
        let client = self.clients[c].clone();
        if let Some(old) = self.readers[c].queue.take() {
            let got = answer(client.get(&events_path(&old, 0)).await);
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
            let opened = answer(client.post("/api/loggedonly/queues", body).await);
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

    /// Reads `n` events from a client's queue as `{"type", "event"}`, checking that ids
    /// increase; more than `n` are returned if the server has more.
    async fn read_events(&mut self, c: usize, n: usize) -> Result<Vec<Value>, String> {
        let deadline = Instant::now() + EVENT_WAIT;
        let client = &self.clients[c];
        let reader = &mut self.readers[c];
        let mut events = Vec::new();
        while events.len() < n {
            if Instant::now() > deadline {
                return Err(format!(
                    "client {c}: only {} of {n} events arrived: {events:?}",
                    events.len()
                ));
            }
            let batch: Vec<Value> = match (reader.mode, &reader.queue) {
                (ReadMode::Queue | ReadMode::QueueWithoutPresence, Some(queue)) => {
                    let path = events_path(queue, reader.cursor.unwrap_or(0));
                    let r = client.get(&path).await;
                    if r.status != 200 {
                        return Err(format!("client {c} reading events: {r:?}"));
                    }
                    r.json()["events"].as_array().cloned().unwrap_or_default()
                }
                (ReadMode::Queue | ReadMode::QueueWithoutPresence, None) => {
                    return Err(format!("client {c} has no queue"));
                }
                (ReadMode::Poll, _) => {
                    let path = match reader.cursor {
                        Some(id) => format!("/api/loggedonly/poll?last_event_id={id}"),
                        None => "/api/loggedonly/poll".to_owned(),
                    };
                    let r = client.get(&path).await;
                    if r.status != 200 {
                        return Err(format!("client {c} polling: {r:?}"));
                    }
                    if r.body.is_empty() {
                        Vec::new()
                    } else {
                        vec![r.json()]
                    }
                }
            };
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
