//! Wire types exactly as docs/api.md, Shapes, and newtypes that parse untrusted input.

use serde::{Deserialize, Serialize};

/// Unix seconds now: the clock every stored time and expiry is read against.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `{"user": string}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub user: String,
}

/// `{"chat": string}`; a missing field reads as an empty name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Chat {
    pub chat: String,
}

/// `{"user","verified","admin","bot"}` in that order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserWithStatus {
    pub user: String,
    pub verified: bool,
    pub admin: bool,
    pub bot: bool,
}

/// The three status flags the server keeps for a user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStatus {
    pub verified: bool,
    pub admin: bool,
    pub bot: bool,
}

impl UserWithStatus {
    pub fn new(user: &str, status: UserStatus) -> Self {
        UserWithStatus {
            user: user.to_owned(),
            verified: status.verified,
            admin: status.admin,
            bot: status.bot,
        }
    }
}

/// `{"user","verified","admin","bot","chat","id","text","time"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub user: String,
    pub verified: bool,
    pub admin: bool,
    pub bot: bool,
    pub chat: String,
    pub id: u64,
    pub text: String,
    pub time: i64,
}

/// `{"user","chat","joined","messages","users"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatReport {
    pub user: String,
    pub chat: String,
    pub joined: bool,
    pub messages: Vec<Message>,
    pub users: Vec<UserWithStatus>,
}

/// Reply of `POST /api/loggedonly/queues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOpened {
    pub queue_id: String,
    pub last_event_id: u64,
}

/// Why a name, password or text was refused; each maps to one message of docs/api.md, Validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    UsernameEmpty,
    Username,
    ChatName,
    PasswordEmpty,
    PasswordLength,
    Email,
    MessageEmpty,
    MessageTooLong,
}

/// A user name as typed, guaranteed valid (docs/api.md, Validation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserName(String);

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() {
            return Err(Invalid::UsernameEmpty);
        }
        let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
        if raw.chars().count() > 32 || !raw.chars().all(allowed) {
            return Err(Invalid::Username);
        }
        Ok(UserName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-insensitive identity of the name, used as the storage key.
    pub fn key(&self) -> String {
        name_key(&self.0)
    }
}

/// The case-insensitive key of a user or chat name.
pub fn name_key(name: &str) -> String {
    name.to_lowercase()
}

/// A chat name, guaranteed valid (docs/api.md, Validation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatName(String);

impl ChatName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let len = raw.chars().count();
        if len == 0 || len > 64 || raw.chars().any(char::is_control) || raw.trim() != raw {
            return Err(Invalid::ChatName);
        }
        Ok(ChatName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn key(&self) -> String {
        name_key(&self.0)
    }
}

/// A password within the length rule of docs/api.md, Validation; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let len = raw.chars().count();
        if len == 0 {
            return Err(Invalid::PasswordEmpty);
        }
        if !(8..=128).contains(&len) {
            return Err(Invalid::PasswordLength);
        }
        Ok(Password(raw.to_owned()))
    }

    /// A password that just matched a stored hash made under older rules (chatty-server
    /// allowed 6 characters): accepted as it is, only to hash it again with today's scheme.
    pub fn already_accepted(raw: &str) -> Self {
        Password(raw.to_owned())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// A syntactically valid email address with a dotted domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.len() > 254 {
            return Err(Invalid::Email);
        }
        let parsed: email_address::EmailAddress = raw.parse().map_err(|_| Invalid::Email)?;
        let domain = parsed.domain();
        // A dotted domain with non-empty labels; the crate also accepts `user@localhost`.
        if !domain.contains('.') || domain.split('.').any(str::is_empty) || domain.starts_with('[')
        {
            return Err(Invalid::Email);
        }
        Ok(Email(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

/// Message text: not blank, at most `max_chars` characters, stored as sent.
pub fn check_message_text(text: &str, max_chars: usize) -> Result<(), Invalid> {
    if text.trim().is_empty() {
        return Err(Invalid::MessageEmpty);
    }
    if text.chars().count() > max_chars {
        return Err(Invalid::MessageTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_follow_spec_rules() {
        assert_eq!(UserName::parse(""), Err(Invalid::UsernameEmpty));
        assert_eq!(UserName::parse("a b"), Err(Invalid::Username));
        assert_eq!(UserName::parse(&"x".repeat(33)), Err(Invalid::Username));
        assert!(UserName::parse(&"x".repeat(32)).is_ok());
        assert!(UserName::parse("Зоя_1.-x").is_ok());
        assert_eq!(
            UserName::parse("Alice").map(|n| n.key()),
            Ok("alice".into())
        );
    }

    #[test]
    fn chat_names_refuse_padding_and_control_characters() {
        assert!(ChatName::parse("Main").is_ok());
        assert!(ChatName::parse("two words").is_ok());
        assert_eq!(ChatName::parse(" Main"), Err(Invalid::ChatName));
        assert_eq!(ChatName::parse("a\nb"), Err(Invalid::ChatName));
        assert_eq!(ChatName::parse(&"c".repeat(65)), Err(Invalid::ChatName));
    }

    #[test]
    fn passwords_count_code_points() {
        assert_eq!(Password::parse(""), Err(Invalid::PasswordEmpty));
        assert_eq!(Password::parse("1234567"), Err(Invalid::PasswordLength));
        assert!(Password::parse("ääääääää").is_ok());
        assert_eq!(
            Password::parse(&"p".repeat(129)),
            Err(Invalid::PasswordLength)
        );
    }

    #[test]
    fn emails_need_a_dotted_domain() {
        assert!(Email::parse("user@example.org").is_ok());
        assert_eq!(Email::parse("user@example"), Err(Invalid::Email));
        assert_eq!(Email::parse("not an email"), Err(Invalid::Email));
        assert_eq!(Email::parse("a@b..c"), Err(Invalid::Email));
    }

    #[test]
    fn message_text_rules() {
        assert_eq!(check_message_text("  \n", 10), Err(Invalid::MessageEmpty));
        assert_eq!(
            check_message_text("12345678901", 10),
            Err(Invalid::MessageTooLong)
        );
        assert!(check_message_text(" hi ", 10).is_ok());
    }
}
