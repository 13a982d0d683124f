//! `natter import-chatty`: reads chatty-server's PostgreSQL tables and keeps what natter can
//! hold; every row it cannot is reported on one line and skipped, never stopping the run.

pub mod url;

use crate::model::{ChatName, name_key};
use crate::store::incoming::Incoming;
use crate::store::mirror::pg::{self, ConnectError, PgError, UrlError};
use crate::store::{ChatRecord, MessageRecord, UserRecord};
use std::collections::{HashMap, HashSet};
use tokio_postgres::Client;

/// Messages read per query.
const PAGE: i64 = 10_000;

/// chatty-server's `users` row, the columns natter keeps.
#[derive(Debug, Clone)]
pub struct ChattyUser {
    pub id: i32,
    pub name: String,
    pub email: String,
    pub password_hash: String,
    pub verified: bool,
    pub admin: bool,
    pub bot: bool,
}

/// chatty-server's `messages` row.
#[derive(Debug, Clone)]
pub struct ChattyMessage {
    pub id: i32,
    /// -1 for a guest.
    pub user_id: i32,
    pub user: String,
    pub chat: String,
    pub text: String,
    pub time: i64,
    pub verified: bool,
    pub bot: bool,
}

/// Imported and skipped rows of one kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub imported: u64,
    pub skipped: u64,
}

/// What a run did (or, dry, would do).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub users: Tally,
    pub chats: Tally,
    pub messages: Tally,
}

impl Summary {
    pub fn line(&self, dry_run: bool) -> String {
        format!(
            "{}: {} users, {} chats, {} messages; skipped: {} users, {} chats, {} messages",
            if dry_run { "would import" } else { "imported" },
            self.users.imported,
            self.chats.imported,
            self.messages.imported,
            self.users.skipped,
            self.chats.skipped,
            self.messages.skipped
        )
    }
}

/// The accounts to import and what the operator must hear about them.
#[derive(Debug, Default)]
pub struct UserPlan {
    pub users: Vec<UserRecord>,
    /// chatty-server's user id to the natter key of the account kept for it: authorship of
    /// messages goes by this id, never by a name.
    pub keys: HashMap<i32, String>,
    /// Accounts that were admins in chatty-server (its register handler let anyone set it).
    pub admins: Vec<String>,
    /// Accounts with chatty-server's bot flag (settable at registration there too).
    pub bots: Vec<String>,
}

/// Keeps the accounts natter can hold, first by id wins; `report` gets one line per skip.
/// Every account comes in without admin unless `keep_admins`.
pub fn plan_users(
    rows: Vec<ChattyUser>,
    checks: &mut Incoming,
    keep_admins: bool,
    created: i64,
    report: &mut dyn FnMut(String),
) -> UserPlan {
    let mut names: HashMap<String, (i32, String)> = HashMap::new();
    let mut emails: HashMap<String, (i32, String)> = HashMap::new();
    let mut plan = UserPlan::default();
    for row in rows {
        let skip = |why: String| format!("skipped user {} {:?}: {why}", row.id, row.name);
        let key = name_key(&row.name);
        let email_key = row.email.to_lowercase();
        let record = UserRecord {
            name: row.name.clone(),
            email: row.email.clone(),
            password_hash: row.password_hash.clone(),
            verified: row.verified,
            admin: row.admin && keep_admins,
            bot: row.bot,
            created,
            activation: None,
            reset: None,
        };
        // The original's ids name the first holder of a name or email; the rest is the API's rules.
        let why = if let Some((id, name)) = names.get(&key) {
            Some(format!("the same name as user {id} {name:?} ignoring case"))
        } else if let Some((id, name)) = emails.get(&email_key) {
            Some(format!(
                "the same email as user {id} {name:?} ignoring case"
            ))
        } else {
            checks.user(&record).err()
        };
        if let Some(why) = why {
            report(skip(why));
            continue;
        }
        names.insert(key.clone(), (row.id, row.name.clone()));
        emails.insert(email_key, (row.id, row.name.clone()));
        plan.keys.insert(row.id, key);
        if row.admin {
            plan.admins.push(row.name.clone());
        }
        if row.bot {
            plan.bots.push(row.name.clone());
        }
        plan.users.push(record);
    }
    plan
}

/// Chats natter can hold, with fresh ids from 1, and the names it had to skip.
pub struct ChatPlan {
    pub chats: Vec<ChatRecord>,
    /// chatty name (exact) to natter chat id.
    pub ids: HashMap<String, u64>,
    pub skipped: HashSet<String>,
}

pub fn plan_chats(rows: Vec<String>, created: i64, report: &mut dyn FnMut(String)) -> ChatPlan {
    let mut plan = ChatPlan {
        chats: Vec::new(),
        ids: HashMap::new(),
        skipped: HashSet::new(),
    };
    let mut keys: HashMap<String, String> = HashMap::new();
    for name in rows {
        let key = name_key(&name);
        if ChatName::parse(&name).is_err() {
            report(format!(
                "skipped chat {name:?}: the name breaks natter's rules (1-64 characters, no \
                 control characters, no surrounding spaces)"
            ));
        } else if let Some(first) = keys.get(&key) {
            report(format!(
                "skipped chat {name:?}: the same name as chat {first:?} ignoring case"
            ));
        } else {
            let id = plan.chats.len() as u64 + 1;
            keys.insert(key, name.clone());
            plan.ids.insert(name.clone(), id);
            plan.chats.push(ChatRecord { id, name, created });
            continue;
        }
        plan.skipped.insert(name);
    }
    plan
}

/// Messages of kept chats, with their ids; guests' (user_id -1) stay guests' messages, without
/// the verified and bot flags a guest could set in chatty-server.
pub fn plan_messages(
    rows: Vec<ChattyMessage>,
    chats: &ChatPlan,
    users: &UserPlan,
    report: &mut dyn FnMut(String),
) -> Vec<MessageRecord> {
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows {
        let why = match chats.ids.get(&row.chat) {
            _ if row.id <= 0 => Some("its id is not positive".to_owned()),
            Some(&chat_id) => {
                let guest = row.user_id < 0;
                kept.push(MessageRecord {
                    id: row.id as u64,
                    chat_id,
                    user: row.user.clone(),
                    // chatty-server kept no admin flag on messages.
                    verified: row.verified && !guest,
                    admin: false,
                    bot: row.bot && !guest,
                    text: row.text,
                    time: row.time,
                    // The imported account of that user id may delete it; nobody else (a
                    // guest's right ended with chatty, a skipped account's never starts).
                    author: users
                        .keys
                        .get(&row.user_id)
                        .map(|key| crate::store::Author::Account(key.clone())),
                });
                None
            }
            None if chats.skipped.contains(&row.chat) => {
                Some(format!("its chat {:?} was skipped", row.chat))
            }
            None => Some(format!("its chat {:?} no longer exists", row.chat)),
        };
        if let Some(why) = why {
            report(format!(
                "skipped message {} by {:?}{}: {why}",
                row.id,
                row.user,
                if row.user_id == -1 { " (guest)" } else { "" }
            ));
        }
    }
    kept
}

/// Why reading chatty-server's database failed; a row natter cannot hold is no error (it is
/// reported and skipped).
#[derive(Debug, thiserror::Error)]
pub enum ChattyError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("cannot connect to {target}: {error}")]
    Connect { target: String, error: ConnectError },
    #[error("reading chatty-server's tables failed (is this its database?): {0}")]
    Read(PgError),
}

/// Connects to chatty-server's database.
pub async fn connect(url: &str) -> Result<Client, ChattyError> {
    let config = pg::parse(url)?;
    pg::connect(&config)
        .await
        .map_err(|error| ChattyError::Connect {
            target: pg::describe(&config),
            error,
        })
}

fn read_error(e: tokio_postgres::Error) -> ChattyError {
    ChattyError::Read(PgError(e))
}

pub async fn read_users(client: &Client) -> Result<Vec<ChattyUser>, ChattyError> {
    let rows = client
        .query(
            "SELECT id, \"user\", email, password_hash, verified, admin, bot FROM users ORDER BY id",
            &[],
        )
        .await
        .map_err(read_error)?;
    Ok(rows
        .iter()
        .map(|r| ChattyUser {
            id: r.get(0),
            name: r.get(1),
            email: r.get(2),
            password_hash: r.get(3),
            verified: r.get(4),
            admin: r.get(5),
            bot: r.get(6),
        })
        .collect())
}

pub async fn read_chats(client: &Client) -> Result<Vec<String>, ChattyError> {
    let rows = client
        .query("SELECT chat FROM chats", &[])
        .await
        .map_err(read_error)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The next page of messages with ids above `after`, in id order.
pub async fn read_messages(client: &Client, after: i32) -> Result<Vec<ChattyMessage>, ChattyError> {
    let rows = client
        .query(
            // TIMESTAMP without zone holds UTC; extract reads it as such.
            "SELECT id, user_id, \"user\", chat, text, extract(epoch FROM time)::bigint,
                    coalesce(verified, false), bot
             FROM messages WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &PAGE],
        )
        .await
        .map_err(read_error)?;
    Ok(rows
        .iter()
        .map(|r| ChattyMessage {
            id: r.get(0),
            user_id: r.get(1),
            user: r.get(2),
            chat: r.get(3),
            text: r.get(4),
            time: r.get(5),
            verified: r.get(6),
            bot: r.get(7),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i32, name: &str, email: &str) -> ChattyUser {
        ChattyUser {
            id,
            name: name.into(),
            email: email.into(),
            password_hash: bcrypt::hash("sixchr", 4).unwrap(),
            verified: true,
            admin: false,
            bot: false,
        }
    }

    fn message(id: i32, chat: &str) -> ChattyMessage {
        ChattyMessage {
            id,
            user_id: -1,
            user: "guest".into(),
            chat: chat.into(),
            text: "hi".into(),
            time: 5,
            verified: false,
            bot: false,
        }
    }

    #[test]
    fn rows_natter_cannot_hold_are_skipped_one_line_each() {
        let mut lines = Vec::new();
        let mut report = |l: String| lines.push(l);
        let users = plan_users(
            vec![
                user(1, "Ann", "ann@x.org"),
                user(2, "ann", "other@x.org"),
                user(3, "bad name", "b@x.org"),
                user(4, "Bob", "ANN@x.org"),
                user(5, "bot", "bot@x.org"),
                user(6, "Cid", "cid@x.org"),
            ],
            &mut Incoming::new("Bot", 1000),
            false,
            9,
            &mut report,
        );
        assert_eq!(
            users
                .users
                .iter()
                .map(|u| u.name.as_str())
                .collect::<Vec<_>>(),
            ["Ann", "Cid"]
        );
        let chats = plan_chats(
            vec!["Main".into(), "main".into(), " x".into(), "Two".into()],
            9,
            &mut report,
        );
        assert_eq!(chats.chats.len(), 2);
        assert_eq!(chats.ids["Two"], 2);
        let messages = plan_messages(
            vec![
                message(3, "Main"),
                message(7, "main"),
                message(8, "Gone"),
                message(9, "Two"),
            ],
            &chats,
            &users,
            &mut report,
        );
        assert_eq!(
            messages
                .iter()
                .map(|m| (m.id, m.chat_id))
                .collect::<Vec<_>>(),
            [(3, 1), (9, 2)]
        );
        assert_eq!(lines.len(), 4 + 2 + 2, "{lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("\"Gone\" no longer exists"))
        );
    }

    #[test]
    fn flags_anyone_could_set_in_chatty_do_not_come_over() {
        let mut admin = user(1, "Boss", "boss@x.org");
        admin.admin = true;
        let mut bot = user(2, "Robo", "robo@x.org");
        bot.bot = true;
        let rows = vec![
            admin,
            bot,
            user(3, "alice", "a@x.org"),
            user(4, "ALICE", "b@x.org"),
        ];
        let mut lines = Vec::new();
        let plan = plan_users(
            rows.clone(),
            &mut Incoming::new("Bot", 1000),
            false,
            9,
            &mut |l| lines.push(l),
        );
        assert!(plan.users.iter().all(|u| !u.admin));
        assert_eq!(plan.admins, ["Boss"]);
        assert_eq!(plan.bots, ["Robo"]);
        let kept = plan_users(rows, &mut Incoming::new("Bot", 1000), true, 9, &mut |_| {});
        assert!(kept.users[0].admin, "--keep-admins keeps it");

        let chats = plan_chats(vec!["Main".into()], 9, &mut |_| {});
        let mut guest = message(1, "Main");
        guest.verified = true;
        guest.bot = true;
        let by = |id, user_id, name: &str| ChattyMessage {
            user_id,
            user: name.into(),
            ..message(id, "Main")
        };
        let out = plan_messages(
            vec![guest, by(2, 3, "alice"), by(3, 4, "ALICE")],
            &chats,
            &plan,
            &mut |_| {},
        );
        assert!(
            !out[0].verified && !out[0].bot,
            "a guest's flags are dropped"
        );
        assert_eq!(out[0].author, None);
        assert_eq!(
            out[1].author,
            Some(crate::store::Author::Account("alice".into()))
        );
        assert_eq!(
            out[2].author, None,
            "the skipped ALICE's message is nobody's to delete"
        );
    }
}
