//! Rows that arrive from outside the API (a restore from the mirror, `natter import`,
//! `import-chatty`), checked with the API's own parsing before any of them is stored: a row the
//! API could never have written is refused with a reason, one row at a time.

use super::{ChatRecord, MessageRecord, UserRecord};
use crate::auth::password;
use crate::model::{ChatName, Email, UserName, name_key};
use std::collections::{HashMap, HashSet};

/// Highest chat or message id accepted: JavaScript's largest exact integer, so the web client
/// reads every id exactly and far more ids remain above it than a server will ever use.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// What the rows seen so far hold, to refuse a second account with the same name or email and
/// a second chat with the same id or name.
#[derive(Debug, Clone)]
pub struct Incoming {
    bot_key: String,
    password_iterations: u32,
    /// Name key to the name that took it.
    names: HashMap<String, String>,
    /// Email key to the name that took it.
    emails: HashMap<String, String>,
    chat_ids: HashSet<u64>,
    chat_keys: HashMap<String, String>,
}

impl Incoming {
    pub fn new(bot_name: &str, password_iterations: u32) -> Incoming {
        Incoming {
            bot_key: name_key(bot_name),
            password_iterations,
            names: HashMap::new(),
            emails: HashMap::new(),
            chat_ids: HashSet::new(),
            chat_keys: HashMap::new(),
        }
    }

    /// Checks an account and, when it passes, counts its name and email as taken.
    pub fn user(&mut self, user: &UserRecord) -> Result<(), String> {
        let name = UserName::parse(&user.name).map_err(|_| {
            "the name breaks natter's rules (1-32 letters, digits, _ - .)".to_owned()
        })?;
        let key = name.key();
        if key == self.bot_key {
            return Err("the name is reserved for natter's bot (bot.name)".into());
        }
        let email = Email::parse(&user.email)
            .map_err(|_| format!("the email {:?} is not a valid address", user.email))?;
        password::check_stored(&user.password_hash, self.password_iterations)?;
        if let Some(first) = self.names.get(&key) {
            return Err(format!("the same name as account {first:?} ignoring case"));
        }
        if let Some(first) = self.emails.get(&email.key()) {
            return Err(format!("the same email as account {first:?} ignoring case"));
        }
        self.names.insert(key, user.name.clone());
        self.emails.insert(email.key(), user.name.clone());
        Ok(())
    }

    /// Checks a chat and, when it passes, counts its id and name as taken.
    pub fn chat(&mut self, chat: &ChatRecord) -> Result<(), String> {
        check_id("chat", chat.id)?;
        let name = ChatName::parse(&chat.name).map_err(|_| {
            "the name breaks natter's rules (1-64 characters, no control characters, no \
             surrounding spaces)"
                .to_owned()
        })?;
        if self.chat_ids.contains(&chat.id) {
            return Err(format!("chat id {} appears twice", chat.id));
        }
        if let Some(first) = self.chat_keys.get(&name.key()) {
            return Err(format!("the same name as chat {first:?} ignoring case"));
        }
        self.chat_ids.insert(chat.id);
        self.chat_keys.insert(name.key(), chat.name.clone());
        Ok(())
    }

    /// Checks a message against the chats accepted so far.
    pub fn message(&self, message: &MessageRecord) -> Result<(), String> {
        check_id("message", message.id)?;
        if !self.chat_ids.contains(&message.chat_id) {
            return Err(format!(
                "its chat {} is not among the chats",
                message.chat_id
            ));
        }
        UserName::parse(&message.user)
            .map_err(|_| format!("its author's name {:?} breaks natter's rules", message.user))?;
        if message.text.trim().is_empty() {
            return Err("its text is empty".into());
        }
        Ok(())
    }
}

/// An id natter could have given: from 1 to `MAX_ID`.
pub fn check_id(what: &str, id: u64) -> Result<(), String> {
    if (1..=MAX_ID).contains(&id) {
        Ok(())
    } else {
        Err(format!("{what} id {id} is outside 1 to {MAX_ID}"))
    }
}

/// A PostgreSQL BIGINT as an id natter could have given.
pub fn id_from_pg(what: &str, id: i64) -> Result<u64, String> {
    let id = u64::try_from(id).map_err(|_| format!("{what} id {id} is negative"))?;
    check_id(what, id)?;
    Ok(id)
}

/// "the accounts X, Y are admins", for the log after a restore; `None` when there are none.
pub fn admins_line(users: &[UserRecord]) -> Option<String> {
    let admins: Vec<&str> = users
        .iter()
        .filter(|u| u.admin)
        .map(|u| u.name.as_str())
        .collect();
    (!admins.is_empty()).then(|| admins.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, email: &str, hash: &str) -> UserRecord {
        UserRecord {
            name: name.into(),
            email: email.into(),
            password_hash: hash.into(),
            verified: true,
            admin: false,
            bot: false,
            created: 1,
            activation: None,
            reset: None,
        }
    }

    const HASH: &str =
        "$pbkdf2-sha256$i=1000,l=32$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

    #[test]
    fn accounts_pass_the_api_rules_once() {
        let mut seen = Incoming::new("Bot", 1000);
        assert!(seen.user(&user("Ann", "ann@x.org", HASH)).is_ok());
        for (row, why) in [
            (user("ann", "other@x.org", HASH), "same name"),
            (user("Bob", "ANN@x.org", HASH), "same email"),
            (user("bot", "bot@x.org", HASH), "reserved"),
            (user("a b", "ab@x.org", HASH), "rules"),
            (user("<b>x</b>", "m@x.org", HASH), "rules"),
            (user("Cid", "not-an-email", HASH), "not a valid address"),
            (user("Cid", "cid@x.org", "plain"), "neither PBKDF2"),
        ] {
            let e = seen.user(&row).unwrap_err();
            assert!(e.contains(why), "{row:?}: {e}");
        }
        assert!(seen.user(&user("Cid", "cid@x.org", HASH)).is_ok());
    }

    #[test]
    fn ids_stay_within_what_natter_gives() {
        let mut seen = Incoming::new("Bot", 1000);
        for id in [0, u64::MAX, MAX_ID + 1] {
            let chat = ChatRecord {
                id,
                name: format!("c{id}"),
                created: 1,
            };
            assert!(seen.chat(&chat).is_err(), "{id}");
        }
        assert!(id_from_pg("chat", -1).is_err());
        assert_eq!(id_from_pg("chat", 7), Ok(7));
        let main = ChatRecord {
            id: 1,
            name: "Main".into(),
            created: 1,
        };
        assert!(seen.chat(&main).is_ok());
        assert!(seen.chat(&main).is_err(), "twice");
        let message = |id, chat_id, user: &str| MessageRecord {
            id,
            chat_id,
            user: user.into(),
            verified: false,
            admin: false,
            bot: false,
            text: "hi".into(),
            time: 1,
            author: None,
        };
        assert!(seen.message(&message(5, 1, "ann")).is_ok());
        assert!(seen.message(&message(u64::MAX, 1, "ann")).is_err());
        assert!(seen.message(&message(6, 2, "ann")).is_err());
        assert!(seen.message(&message(7, 1, "a b")).is_err());
    }
}
