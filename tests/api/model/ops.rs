//! The operations a case is made of, and the strategy that generates and shrinks them.

use proptest::prelude::*;
use proptest::sample::select;

/// Browser-like clients the operations are spread over (each keeps its own cookie).
pub const CLIENTS: usize = 4;

/// Names tried for guest login, mostly free ones; also a case variant of another guest, a
/// registered name in another case, and the bot's reserved name.
fn guest_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => select(&["g1", "g2", "g3"][..]),
        1 => select(&["G1", "Reg", "bot"][..]),
    ]
}

/// Names tried for sign-in, mostly the admin and a plain account; also case variants, an
/// account never verified, and an unknown name.
fn account_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => select(&["root", "reg"][..]),
        1 => select(&["ROOT", "Reg", "pending", "nobody"][..]),
    ]
}

/// Chat names as requests spell them: the two config chats, one an admin may create, and
/// case variants. Every spelling starts with a distinct capital, so sorting by name is the
/// same whether case counts or not (docs/api.md does not say which).
pub const CHAT_NAMES: &[&str] = &["Main", "MAIN", "Side", "SIDE", "Zed"];

/// Which client performs an operation.
#[derive(Debug, Clone, Copy)]
pub enum Who {
    /// The n-th (modulo their number) of the clients the operation fits: those with an
    /// online session for a request that needs one, the others for a login. Without such
    /// clients, client n. Keeps most operations meaningful whatever came before.
    Fitting(usize),
    /// Exactly this client, whatever its state (mostly to be refused).
    Client(usize),
}

/// Which chat an operation names.
#[derive(Debug, Clone, Copy)]
pub enum Room {
    /// The n-th (modulo their number) of the chats the operation fits: the client's chats to
    /// post in or leave, the others to join, any to remove. Without such chats, the n-th name.
    Fitting(usize),
    /// Exactly this spelling, whether the chat exists or not.
    Named(&'static str),
}

#[derive(Debug, Clone)]
pub enum Op {
    GuestLogin {
        client: Who,
        name: &'static str,
    },
    SignIn {
        client: Who,
        name: &'static str,
        right_password: bool,
    },
    /// `POST /api/loggedonly/login`: a fresh cookie, and an offline session comes back.
    Relogin {
        client: Who,
    },
    Logout {
        client: Who,
    },
    Join {
        client: Who,
        chat: Room,
    },
    Leave {
        client: Who,
        chat: Room,
    },
    Post {
        client: Who,
        chat: Room,
    },
    CreateChat {
        client: Who,
        chat: &'static str,
    },
    RemoveChat {
        client: Who,
        chat: Room,
    },
    /// The sweeper runs after `inactivity_timeout` in which only the `active` clients made a
    /// request: every other session goes offline.
    Sweep {
        active: Vec<bool>,
    },
    /// A graceful restart on the same data directory.
    Restart,
}

fn client() -> impl Strategy<Value = Who> {
    prop_oneof![
        9 => (0..CLIENTS).prop_map(Who::Fitting),
        1 => (0..CLIENTS).prop_map(Who::Client),
    ]
}

fn chat_name() -> impl Strategy<Value = &'static str> {
    select(CHAT_NAMES)
}

fn chat() -> impl Strategy<Value = Room> {
    prop_oneof![
        3 => (0..CHAT_NAMES.len()).prop_map(Room::Fitting),
        1 => chat_name().prop_map(Room::Named),
    ]
}

/// One operation, weighted towards the common ones.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (client(), guest_name()).prop_map(|(client, name)| Op::GuestLogin { client, name }),
        3 => (client(), account_name(), prop::bool::weighted(0.9)).prop_map(
            |(client, name, right_password)| Op::SignIn { client, name, right_password }
        ),
        1 => client().prop_map(|client| Op::Relogin { client }),
        1 => client().prop_map(|client| Op::Logout { client }),
        4 => (client(), chat()).prop_map(|(client, chat)| Op::Join { client, chat }),
        2 => (client(), chat()).prop_map(|(client, chat)| Op::Leave { client, chat }),
        4 => (client(), chat()).prop_map(|(client, chat)| Op::Post { client, chat }),
        1 => (client(), chat_name()).prop_map(|(client, chat)| Op::CreateChat { client, chat }),
        1 => (client(), chat()).prop_map(|(client, chat)| Op::RemoveChat { client, chat }),
        1 => prop::collection::vec(prop::bool::weighted(0.7), CLIENTS).prop_map(|active| Op::Sweep { active }),
        1 => Just(Op::Restart),
    ]
}

/// What an operation's client and chat are chosen among (`Op::resolve`).
pub struct Choices {
    /// Clients with an online session.
    pub online: Vec<usize>,
    /// Clients holding an offline session that is still valid.
    pub dormant: Vec<usize>,
    /// Online clients signed in as an admin.
    pub admins: Vec<usize>,
    /// Every chat, as named when created (one of `CHAT_NAMES`).
    pub chats: Vec<&'static str>,
    /// Each client's chats.
    pub joined: Vec<Vec<&'static str>>,
}

impl Op {
    /// The same operation with `Fitting` choices made: the client among those the operation
    /// fits, then the chat among those that fit it for that client.
    pub fn resolve(&self, choices: &Choices) -> Op {
        let offline: Vec<usize> = (0..CLIENTS)
            .filter(|c| !choices.online.contains(c))
            .collect();
        let who = |who: Who, fits: &[usize]| match who {
            Who::Fitting(n) if !fits.is_empty() => Who::Client(fits[n % fits.len()]),
            Who::Fitting(n) => Who::Client(n),
            other => other,
        };
        let room = |room: Room, fits: &[&'static str]| match room {
            Room::Fitting(n) if !fits.is_empty() => Room::Named(fits[n % fits.len()]),
            Room::Fitting(n) => Room::Named(CHAT_NAMES[n % CHAT_NAMES.len()]),
            other => other,
        };
        let joined = |client: Who| choices.joined[client.index()].clone();
        let not_joined = |client: Who| -> Vec<&'static str> {
            let mine = joined(client);
            choices
                .chats
                .iter()
                .copied()
                .filter(|c| !mine.contains(c))
                .collect()
        };
        // Posting and leaving fit members of some chat best.
        let members: Vec<usize> = choices
            .online
            .iter()
            .copied()
            .filter(|&c| !choices.joined[c].is_empty())
            .collect();
        let members = if members.is_empty() {
            &choices.online
        } else {
            &members
        };
        let admins = if choices.admins.is_empty() {
            &choices.online
        } else {
            &choices.admins
        };
        match self.clone() {
            Op::GuestLogin { client, name } => Op::GuestLogin {
                client: who(client, &offline),
                name,
            },
            Op::SignIn {
                client,
                name,
                right_password,
            } => Op::SignIn {
                client: who(client, &offline),
                name,
                right_password,
            },
            Op::Relogin { client } if !choices.dormant.is_empty() => Op::Relogin {
                client: who(client, &choices.dormant),
            },
            Op::Relogin { client } => Op::Relogin {
                client: who(client, &choices.online),
            },
            Op::Logout { client } => Op::Logout {
                client: who(client, &choices.online),
            },
            Op::Join { client, chat } => {
                let client = who(client, &choices.online);
                let chat = room(chat, &not_joined(client));
                Op::Join { client, chat }
            }
            Op::Leave { client, chat } => {
                let client = who(client, members);
                let chat = room(chat, &joined(client));
                Op::Leave { client, chat }
            }
            Op::Post { client, chat } => {
                let client = who(client, members);
                let chat = room(chat, &joined(client));
                Op::Post { client, chat }
            }
            Op::CreateChat { client, chat } => Op::CreateChat {
                client: who(client, admins),
                chat,
            },
            Op::RemoveChat { client, chat } => Op::RemoveChat {
                client: who(client, admins),
                chat: room(chat, &choices.chats),
            },
            op @ (Op::Sweep { .. } | Op::Restart) => op,
        }
    }
}

impl Room {
    /// The chat's name, once resolved.
    pub fn name(self) -> &'static str {
        match self {
            Room::Named(name) => name,
            Room::Fitting(n) => CHAT_NAMES[n % CHAT_NAMES.len()],
        }
    }
}

impl Who {
    /// The client, once resolved.
    pub fn index(self) -> usize {
        match self {
            Who::Fitting(n) | Who::Client(n) => n,
        }
    }
}

/// A case: up to `max` operations.
pub fn sequence(max: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=max)
}
