//! The model: what docs/api.md (Validation, Routes, Events) and docs/design.md (Sessions and
//! presence, Event delivery) say the server holds, answers and sends, kept in memory. Each
//! operation predicts its answer and changes the model; events land in the pending lists of the
//! sessions they reach.

use super::stream::Expected;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// An HTTP answer: status and body (`null` for an empty body).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

fn ok(body: Value) -> Answer {
    Answer { status: 200, body }
}

fn error(status: u16, message: &str) -> Answer {
    Answer {
        status,
        body: json!({ "error": message }),
    }
}

fn not_logged_in() -> Answer {
    error(401, "user not logged in")
}

fn event(kind: &str, payload: Value) -> Value {
    json!({ "type": kind, "event": payload })
}

/// `UserWithStatus`; nobody here is the bot.
fn user_with_status(name: &str, status: Status) -> Value {
    json!({ "user": name, "verified": status.verified, "admin": status.admin, "bot": false })
}

/// Names are unique case-insensitively (docs/api.md, Validation).
fn key(name: &str) -> String {
    name.to_lowercase()
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Status {
    verified: bool,
    admin: bool,
}

struct Account {
    name: &'static str,
    status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Presence {
    Online,
    /// A registered session that stays valid and can come back (docs/design.md, Sessions and
    /// presence).
    Offline,
    Ended,
}

struct Session {
    user: String,
    key: String,
    guest: bool,
    status: Status,
    presence: Presence,
    /// How often it came online; every time it gets fresh queues.
    lives: u32,
    /// Events in the queue its client reads, not yet read.
    pending: Vec<Expected>,
}

struct Chat {
    name: String,
    members: BTreeSet<String>,
    messages: Vec<Value>,
}

/// Settings the model must know.
pub struct Limits {
    /// `last_messages`
    pub history: usize,
    /// `max_sessions_per_user`
    pub sessions_per_user: usize,
    /// `chats`: ensured at every start.
    pub config_chats: &'static [&'static str],
    /// `presence_scope = "shared_chats"`: sign-ins and sign-outs reach only users who share a chat.
    pub shared_chats: bool,
}

/// Events one change sends: (session, event), in order.
type Outbox = Vec<(usize, Value)>;

pub struct Reference {
    limits: Limits,
    accounts: Vec<Account>,
    /// Every session ever opened, oldest first.
    sessions: Vec<Session>,
    /// The session whose cookie each client holds.
    clients: Vec<Option<usize>>,
    /// Live chats.
    chats: Vec<Chat>,
    last_message_id: u64,
}

impl Reference {
    /// Accounts "root" (verified admin), "reg" (verified) and "pending" (never verified);
    /// the config chats exist; `clients` clients hold no cookie.
    pub fn new(limits: Limits, clients: usize) -> Reference {
        let verified = Status {
            verified: true,
            admin: false,
        };
        Reference {
            accounts: vec![
                Account {
                    name: "root",
                    status: Status {
                        verified: true,
                        admin: true,
                    },
                },
                Account {
                    name: "reg",
                    status: verified,
                },
                Account {
                    name: "pending",
                    status: Status::default(),
                },
            ],
            sessions: Vec::new(),
            clients: vec![None; clients],
            chats: limits
                .config_chats
                .iter()
                .map(|name| Chat {
                    name: (*name).to_owned(),
                    members: BTreeSet::new(),
                    messages: Vec::new(),
                })
                .collect(),
            limits,
            last_message_id: 0,
        }
    }

    // --- who is where ---

    fn online(&self, s: usize) -> bool {
        self.sessions[s].presence == Presence::Online
    }

    fn online_session(&self, client: usize) -> Option<usize> {
        self.clients[client].filter(|&s| self.online(s))
    }

    fn user_online(&self, key: &str) -> bool {
        self.sessions
            .iter()
            .any(|s| s.key == key && s.presence == Presence::Online)
    }

    fn everyone(&self) -> Vec<usize> {
        (0..self.sessions.len())
            .filter(|&s| self.online(s))
            .collect()
    }

    /// Who hears that `key` came online or went offline (`presence_scope`): everyone online, or
    /// the sessions of users sharing a chat with them and their own.
    fn presence_audience(&self, key: &str) -> Vec<usize> {
        if !self.limits.shared_chats {
            return self.everyone();
        }
        self.everyone()
            .into_iter()
            .filter(|&s| {
                let other = &self.sessions[s].key;
                other == key
                    || self
                        .chats
                        .iter()
                        .any(|c| c.members.contains(key) && c.members.contains(other))
            })
            .collect()
    }

    /// The online sessions of a chat's members.
    fn audience(&self, chat: usize) -> Vec<usize> {
        self.everyone()
            .into_iter()
            .filter(|&s| self.chats[chat].members.contains(&self.sessions[s].key))
            .collect()
    }

    fn find_chat(&self, raw: &str) -> Option<usize> {
        self.chats.iter().position(|c| key(&c.name) == key(raw))
    }

    fn send(&mut self, to: &[usize], event: &Value) {
        for &s in to {
            self.sessions[s].pending.push(Expected::One(event.clone()));
        }
    }

    fn deliver(&mut self, outbox: Outbox) {
        for (s, event) in outbox {
            self.send(&[s], &event);
        }
    }

    /// Chat indices sorted by name, as getChats lists them and the logout cascade leaves them.
    fn chats_by_name(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.chats.len()).collect();
        order.sort_by(|&a, &b| self.chats[a].name.cmp(&self.chats[b].name));
        order
    }

    fn members(&self, chat: usize) -> Value {
        let mut users: BTreeMap<String, Value> = BTreeMap::new();
        for &s in &self.audience(chat) {
            let session = &self.sessions[s];
            users.insert(
                session.user.clone(),
                user_with_status(&session.user, session.status),
            );
        }
        Value::Array(users.into_values().collect())
    }

    fn history(&self, chat: usize) -> Value {
        let messages = &self.chats[chat].messages;
        let from = messages.len().saturating_sub(self.limits.history);
        Value::Array(messages[from..].to_vec())
    }

    fn report(&self, s: usize, chat: usize) -> Value {
        let joined = self.chats[chat].members.contains(&self.sessions[s].key);
        let (messages, users) = if joined {
            (self.history(chat), self.members(chat))
        } else {
            (json!([]), json!([]))
        };
        json!({
            "user": self.sessions[s].user,
            "chat": self.chats[chat].name,
            "joined": joined,
            "messages": messages,
            "users": users,
        })
    }

    // --- presence ---

    fn open_session(&mut self, user: &str, guest: bool, status: Status) -> usize {
        self.sessions.push(Session {
            user: user.to_owned(),
            key: key(user),
            guest,
            status,
            presence: Presence::Online,
            lives: 1,
            pending: Vec::new(),
        });
        self.sessions.len() - 1
    }

    /// Takes a session offline (ends it if `end` or a guest's) and loses its queues; the
    /// user's last online session runs the logout cascade, whose events are returned.
    fn take_offline(&mut self, s: usize, end: bool) -> Outbox {
        let was_online = self.online(s);
        let session = &mut self.sessions[s];
        session.presence = if end || session.guest {
            Presence::Ended
        } else {
            Presence::Offline
        };
        session.pending.clear();
        let (key, name) = (session.key.clone(), session.user.clone());
        if was_online && !self.user_online(&key) {
            self.cascade(&key, &name)
        } else {
            Vec::new()
        }
    }

    /// The logout cascade (docs/api.md, Events): LogoutEvent to everyone else, then the user
    /// leaves every chat, each telling its remaining members (chats in name order).
    fn cascade(&mut self, key: &str, name: &str) -> Outbox {
        let logout = event(
            "LogoutEvent",
            json!({ "user": name, "chat": "", "Time": null }),
        );
        let mut outbox: Outbox = self
            .presence_audience(key)
            .into_iter()
            .filter(|&s| self.sessions[s].key != key)
            .map(|s| (s, logout.clone()))
            .collect();
        for chat in self.chats_by_name() {
            if self.chats[chat].members.remove(key) {
                for leave in self.leave_events(chat, name) {
                    outbox.extend(self.audience(chat).into_iter().map(|s| (s, leave.clone())));
                }
            }
        }
        outbox
    }

    fn leave_events(&self, chat: usize, user: &str) -> [Value; 2] {
        let chat = &self.chats[chat].name;
        [
            event(
                "ChatLeaveEvent",
                json!({ "user": user, "chat": chat, "Time": null }),
            ),
            event(
                "SystemMessageChatLeaveEvent",
                json!({ "chat": chat, "user": user, "time": null }),
            ),
        ]
    }

    fn login_event(user: &str) -> Value {
        event(
            "LoginEvent",
            json!({ "user": user, "chat": "", "Time": null }),
        )
    }

    /// `POST /api/login`
    pub fn guest_login(&mut self, client: usize, name: &str) -> Answer {
        if self.accounts.iter().any(|a| key(a.name) == key(name)) {
            return error(409, "this name is registered, sign in with its password");
        }
        // The bot is always there: its name is taken.
        if self.user_online(&key(name)) || key(name) == "bot" {
            return error(409, "user is already logged in");
        }
        let s = self.open_session(name, true, Status::default());
        self.send(
            &self.presence_audience(&key(name)),
            &Self::login_event(name),
        );
        self.clients[client] = Some(s);
        ok(user_with_status(name, Status::default()))
    }

    /// `POST /api/authorize`
    pub fn sign_in(&mut self, client: usize, name: &str, right_password: bool) -> Answer {
        let Some(account) = self.accounts.iter().find(|a| key(a.name) == key(name)) else {
            return error(401, "wrong username or password");
        };
        if !right_password {
            return error(401, "wrong username or password");
        }
        if !account.status.verified {
            return error(403, "email is not verified");
        }
        let (name, status, user_key) = (account.name, account.status, key(account.name));
        // docs/design.md: at `max_sessions_per_user`, signing in once more ends the oldest.
        let mut held: Vec<usize> = (0..self.sessions.len())
            .filter(|&s| {
                self.sessions[s].key == user_key && self.sessions[s].presence != Presence::Ended
            })
            .collect();
        while held.len() >= self.limits.sessions_per_user {
            let oldest = held.remove(0);
            let outbox = self.take_offline(oldest, true);
            self.deliver(outbox);
        }
        let was_online = self.user_online(&user_key);
        let s = self.open_session(name, false, status);
        if !was_online {
            self.send(&self.presence_audience(&user_key), &Self::login_event(name));
        }
        self.clients[client] = Some(s);
        ok(user_with_status(name, status))
    }

    /// `POST /api/loggedonly/login`: any valid session, online or not.
    pub fn relogin(&mut self, client: usize) -> Answer {
        let Some(s) =
            self.clients[client].filter(|&s| self.sessions[s].presence != Presence::Ended)
        else {
            return not_logged_in();
        };
        if !self.online(s) {
            let was_online = self.user_online(&self.sessions[s].key);
            let session = &mut self.sessions[s];
            session.presence = Presence::Online;
            session.lives += 1;
            if !was_online {
                let login = Self::login_event(&self.sessions[s].user);
                let audience = self.presence_audience(&self.sessions[s].key);
                self.send(&audience, &login);
            }
        }
        let session = &self.sessions[s];
        ok(user_with_status(&session.user, session.status))
    }

    /// `POST /api/loggedonly/logout`
    pub fn logout(&mut self, client: usize) -> Answer {
        let Some(s) = self.online_session(client) else {
            return not_logged_in();
        };
        let outbox = self.take_offline(s, true);
        self.deliver(outbox);
        // The answer expires the cookie.
        self.clients[client] = None;
        ok(Value::Null)
    }

    /// `PUT /api/loggedonly/keepalive`
    pub fn keepalive(&self, client: usize) -> Answer {
        match self.online_session(client) {
            Some(_) => ok(Value::Null),
            None => not_logged_in(),
        }
    }

    /// The sweeper after `inactivity_timeout` in which only `kept_clients` made requests.
    pub fn sweep(&mut self, kept_clients: &[usize]) {
        let kept: BTreeSet<usize> = kept_clients
            .iter()
            .filter_map(|&c| self.online_session(c))
            .collect();
        let online_users: BTreeMap<String, String> = self
            .everyone()
            .into_iter()
            .map(|s| (self.sessions[s].key.clone(), self.sessions[s].user.clone()))
            .collect();
        for s in self.everyone() {
            if !kept.contains(&s) {
                let session = &mut self.sessions[s];
                session.presence = if session.guest {
                    Presence::Ended
                } else {
                    Presence::Offline
                };
                session.pending.clear();
            }
        }
        // Each user taken offline is its own change: observers get the cascades in any order.
        let mut blocks: BTreeMap<usize, Vec<Vec<Value>>> = BTreeMap::new();
        for (key, name) in online_users {
            if self.user_online(&key) {
                continue;
            }
            let mut by_observer: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
            for (s, event) in self.cascade(&key, &name) {
                by_observer.entry(s).or_default().push(event);
            }
            for (s, block) in by_observer {
                blocks.entry(s).or_default().push(block);
            }
        }
        for (s, mut blocks) in blocks {
            let pending = &mut self.sessions[s].pending;
            if blocks.len() == 1 {
                pending.extend(blocks.remove(0).into_iter().map(Expected::One));
            } else {
                pending.push(Expected::AnyOrder(blocks));
            }
        }
    }

    /// A graceful restart: nothing changes for clients, except that a removed config chat is
    /// created again, which everyone online hears of (docs/api.md, Events: ChatCreatedEvent).
    pub fn restart(&mut self) {
        for &name in self.limits.config_chats {
            if self.find_chat(name).is_none() {
                self.add_chat(name);
            }
        }
    }

    /// A new, empty chat, announced to everyone online.
    fn add_chat(&mut self, name: &str) {
        self.chats.push(Chat {
            name: name.to_owned(),
            members: BTreeSet::new(),
            messages: Vec::new(),
        });
        let created = event("ChatCreatedEvent", json!({ "chat": name, "Time": null }));
        self.send(&self.everyone(), &created);
    }

    // --- chats ---

    /// `POST /api/loggedonly/joinChat`
    pub fn join(&mut self, client: usize, raw: &str) -> Answer {
        let Some(s) = self.online_session(client) else {
            return not_logged_in();
        };
        let Some(chat) = self.find_chat(raw) else {
            return error(400, "no such chat");
        };
        let (user, user_key, status) = {
            let session = &self.sessions[s];
            (session.user.clone(), session.key.clone(), session.status)
        };
        if !self.chats[chat].members.insert(user_key) {
            return error(400, "user is already logged in chat");
        }
        let name = self.chats[chat].name.clone();
        let audience = self.audience(chat);
        let joined = event(
            "ChatJoinEvent",
            json!({ "user": user, "chat": name, "Time": null, "verified": status.verified,
                    "admin": status.admin, "bot": false }),
        );
        let system = event(
            "SystemMessageChatJoinEvent",
            json!({ "chat": name, "user": user, "time": null }),
        );
        self.send(&audience, &joined);
        self.send(&audience, &system);
        ok(self.report(s, chat))
    }

    /// `POST /api/loggedonly/leaveChat`
    pub fn leave(&mut self, client: usize, raw: &str) -> Answer {
        let Some(s) = self.online_session(client) else {
            return not_logged_in();
        };
        let Some(chat) = self.find_chat(raw) else {
            return error(400, "no such chat");
        };
        let (user, user_key) = (self.sessions[s].user.clone(), self.sessions[s].key.clone());
        if !self.chats[chat].members.remove(&user_key) {
            return error(400, "user not logged in such chat");
        }
        let audience = self.audience(chat);
        for leave in self.leave_events(chat, &user) {
            self.send(&audience, &leave);
        }
        ok(Value::Null)
    }

    /// The chat a member asks about, or the answer for anyone else.
    fn member_chat(&self, client: usize, raw: &str) -> Result<(usize, usize), Answer> {
        let s = self.online_session(client).ok_or_else(not_logged_in)?;
        match self.find_chat(raw) {
            Some(chat) if self.chats[chat].members.contains(&self.sessions[s].key) => Ok((s, chat)),
            _ => Err(error(400, "user not logged in such chat")),
        }
    }

    /// `POST /api/loggedonly/postMessage` with `text`; the server picks the id and time,
    /// which the model takes from `answer` once they are plausible: the id above every
    /// earlier one, the time within `window`.
    pub fn post(
        &mut self,
        client: usize,
        raw: &str,
        text: &str,
        answer: &Answer,
        window: super::stream::Window,
    ) -> Answer {
        let (s, chat) = match self.member_chat(client, raw) {
            Ok(found) => found,
            Err(refused) => return refused,
        };
        let id = answer.body["id"]
            .as_u64()
            .filter(|&id| id > self.last_message_id)
            .unwrap_or(self.last_message_id + 1);
        let time = answer.body["time"]
            .as_i64()
            .filter(|t| (window.from..=window.to).contains(t));
        let session = &self.sessions[s];
        let message = json!({
            "user": session.user, "verified": session.status.verified,
            "admin": session.status.admin, "bot": false, "chat": self.chats[chat].name,
            "id": id, "text": text, "time": time,
        });
        self.last_message_id = id;
        self.chats[chat].messages.push(message.clone());
        let audience = self.audience(chat);
        self.send(&audience, &event("MessageEvent", message.clone()));
        ok(message)
    }

    /// The session of an online verified admin, or the answer for anyone else.
    fn admin(&self, client: usize) -> Result<usize, Answer> {
        let s = self.online_session(client).ok_or_else(not_logged_in)?;
        let session = &self.sessions[s];
        if session.guest || !session.status.admin {
            return Err(error(403, "admin only"));
        }
        Ok(s)
    }

    /// `POST /api/adminonly/createChat`
    pub fn create_chat(&mut self, client: usize, name: &str) -> Answer {
        if let Err(refused) = self.admin(client) {
            return refused;
        }
        if self.find_chat(name).is_some() {
            return error(400, "chat already exists");
        }
        self.add_chat(name);
        ok(Value::Null)
    }

    /// `POST /api/adminonly/removeChat`: members get only the ChatRemovedEvent.
    pub fn remove_chat(&mut self, client: usize, raw: &str) -> Answer {
        if let Err(refused) = self.admin(client) {
            return refused;
        }
        let Some(chat) = self.find_chat(raw) else {
            return error(400, "no such chat");
        };
        let removed = self.chats.remove(chat);
        let event = event(
            "ChatRemovedEvent",
            json!({ "chat": removed.name, "Time": null }),
        );
        self.send(&self.everyone(), &event);
        ok(Value::Null)
    }

    // --- reads ---

    /// `GET /api/loggedonly/getChats`
    pub fn get_chats(&self, client: usize) -> Answer {
        let Some(s) = self.online_session(client) else {
            return not_logged_in();
        };
        let reports = self
            .chats_by_name()
            .into_iter()
            .map(|chat| self.report(s, chat))
            .collect();
        ok(Value::Array(reports))
    }

    /// `POST /api/loggedonly/getUsers`
    pub fn get_users(&self, client: usize, raw: &str) -> Answer {
        match self.member_chat(client, raw) {
            Ok((_, chat)) => ok(self.members(chat)),
            Err(refused) => refused,
        }
    }

    /// `POST /api/loggedonly/getLastMessages`
    pub fn get_last_messages(&self, client: usize, raw: &str) -> Answer {
        match self.member_chat(client, raw) {
            Ok((_, chat)) => ok(self.history(chat)),
            Err(refused) => refused,
        }
    }

    // --- event queues ---

    /// Which queues a client reads: its online session and how often that came online (new
    /// queues each time). `None` while it has no online session.
    pub fn stream(&self, client: usize) -> Option<(usize, u32)> {
        self.online_session(client)
            .map(|s| (s, self.sessions[s].lives))
    }

    /// Clients with an online session.
    pub fn online_clients(&self) -> Vec<usize> {
        (0..self.clients.len())
            .filter(|&c| self.online_session(c).is_some())
            .collect()
    }

    /// Clients holding a session that is offline but still valid.
    pub fn dormant_clients(&self) -> Vec<usize> {
        (0..self.clients.len())
            .filter(|&c| {
                self.clients[c].is_some_and(|s| self.sessions[s].presence == Presence::Offline)
            })
            .collect()
    }

    /// Online clients signed in as an admin.
    pub fn admin_clients(&self) -> Vec<usize> {
        (0..self.clients.len())
            .filter(|&c| {
                self.online_session(c)
                    .is_some_and(|s| self.sessions[s].status.admin)
            })
            .collect()
    }

    /// Every chat's name.
    pub fn chat_names(&self) -> Vec<String> {
        self.chats.iter().map(|c| c.name.clone()).collect()
    }

    /// The names of the chats a client's user is in.
    pub fn joined(&self, client: usize) -> Vec<String> {
        let Some(s) = self.online_session(client) else {
            return Vec::new();
        };
        self.chats
            .iter()
            .filter(|c| c.members.contains(&self.sessions[s].key))
            .map(|c| c.name.clone())
            .collect()
    }

    /// The client opened an explicit queue: it holds only what comes after.
    pub fn queue_opened(&mut self, client: usize) {
        if let Some(s) = self.online_session(client) {
            self.sessions[s].pending.clear();
        }
    }

    /// What the client's queue must deliver next; it counts as read. A queue opened without
    /// presence (`event_types` leaving out `LoginEvent` and `LogoutEvent`) never holds those.
    pub fn take_pending(&mut self, client: usize, with_presence: bool) -> Vec<Expected> {
        let pending = match self.online_session(client) {
            Some(s) => std::mem::take(&mut self.sessions[s].pending),
            None => Vec::new(),
        };
        if with_presence {
            return pending;
        }
        let kept = |e: &Value| e["type"] != "LoginEvent" && e["type"] != "LogoutEvent";
        pending
            .into_iter()
            .filter_map(|expected| match expected {
                Expected::One(e) => kept(&e).then_some(Expected::One(e)),
                Expected::AnyOrder(blocks) => Some(Expected::AnyOrder(
                    blocks
                        .into_iter()
                        .map(|b| b.into_iter().filter(|e| kept(e)).collect::<Vec<_>>())
                        .filter(|b| !b.is_empty())
                        .collect(),
                )),
            })
            .filter(|e| !matches!(e, Expected::AnyOrder(blocks) if blocks.is_empty()))
            .collect()
    }
}
