//! `natter import-chatty`: reads chatty-server's PostgreSQL tables and keeps what natter can
//! hold; every row it cannot is reported on one line and skipped, never stopping the run.

use super::pg;
use crate::model::{ChatName, UserName, name_key};
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

/// Keeps the accounts natter can hold, first by id wins; `report` gets one line per skip.
pub fn plan_users(
    rows: Vec<ChattyUser>,
    bot_name: &str,
    created: i64,
    report: &mut dyn FnMut(String),
) -> Vec<UserRecord> {
    let mut names: HashMap<String, (i32, String)> = HashMap::new();
    let mut emails: HashMap<String, (i32, String)> = HashMap::new();
    let mut kept = Vec::new();
    for row in rows {
        let skip = |why: String| format!("skipped user {} {:?}: {why}", row.id, row.name);
        let key = name_key(&row.name);
        let email_key = row.email.to_lowercase();
        if UserName::parse(&row.name).is_err() {
            report(skip(
                "the name breaks natter's rules (1-32 letters, digits, _ - .)".into(),
            ));
        } else if key == name_key(bot_name) {
            report(skip("the name is natter's bot's".into()));
        } else if let Some((id, name)) = names.get(&key) {
            report(skip(format!(
                "the same name as user {id} {name:?} ignoring case"
            )));
        } else if let Some((id, name)) = emails.get(&email_key) {
            report(skip(format!(
                "the same email as user {id} {name:?} ignoring case"
            )));
        } else {
            names.insert(key, (row.id, row.name.clone()));
            emails.insert(email_key, (row.id, row.name.clone()));
            kept.push(UserRecord {
                name: row.name,
                email: row.email,
                password_hash: row.password_hash,
                verified: row.verified,
                admin: row.admin,
                bot: row.bot,
                created,
                activation: None,
                reset: None,
            });
        }
    }
    kept
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

/// Messages of kept chats, with their ids; guests' (user_id -1) stay guests' messages.
pub fn plan_messages(
    rows: Vec<ChattyMessage>,
    chats: &ChatPlan,
    report: &mut dyn FnMut(String),
) -> Vec<MessageRecord> {
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows {
        let why = match chats.ids.get(&row.chat) {
            _ if row.id <= 0 => Some("its id is not positive".to_owned()),
            Some(&chat_id) => {
                kept.push(MessageRecord {
                    id: row.id as u64,
                    chat_id,
                    user: row.user.clone(),
                    // chatty-server kept no admin flag on messages.
                    verified: row.verified,
                    admin: false,
                    bot: row.bot,
                    text: row.text,
                    time: row.time,
                    // A registered author may delete their message; a guest's right ended with chatty.
                    author: (row.user_id >= 0)
                        .then(|| super::super::Author::Account(row.user.to_lowercase())),
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

/// Connects to chatty-server's database.
pub async fn connect(url: &str) -> Result<Client, String> {
    let config = pg::parse(url)?;
    pg::connect(&config)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", pg::describe(&config)))
}

fn read_error(e: tokio_postgres::Error) -> String {
    format!(
        "reading chatty-server's tables failed (is this its database?): {}",
        pg::describe_error(e)
    )
}

pub async fn read_users(client: &Client) -> Result<Vec<ChattyUser>, String> {
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

pub async fn read_chats(client: &Client) -> Result<Vec<String>, String> {
    let rows = client
        .query("SELECT chat FROM chats", &[])
        .await
        .map_err(read_error)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The next page of messages with ids above `after`, in id order.
pub async fn read_messages(client: &Client, after: i32) -> Result<Vec<ChattyMessage>, String> {
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
            password_hash: "$2a$04$x".into(),
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
            "Bot",
            9,
            &mut report,
        );
        assert_eq!(
            users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
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
}
