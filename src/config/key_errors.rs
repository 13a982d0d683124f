//! Errors that name the dotted config key, what it allows, and the variable or flag that set it when that was
//! not the file.

use std::collections::HashMap;

use super::ConfigError;
use super::keys::is_secret;

/// A problem with one key, before the source of the value is added to the message.
pub(super) struct Invalid {
    key: String,
    message: String,
    /// The key itself is unknown (not its value wrong).
    unknown: bool,
}

/// A wrong value for `key`; `message` names the key and what is allowed.
pub(super) fn invalid(key: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.to_string(),
        message: message.into(),
        unknown: false,
    }
}

impl Invalid {
    /// Appends which variable or flag set the key, when it was not the file.
    pub(super) fn explain(self, origins: &HashMap<String, String>) -> ConfigError {
        if self.unknown {
            // NATTER_FOO__BAR is rejected at `foo`; name the whole key the variable spelled.
            let nested = format!("{}.", self.key);
            let mut set_below: Vec<(&String, &String)> = origins
                .iter()
                .filter(|(key, _)| key.starts_with(&nested))
                .collect();
            set_below.sort();
            if let Some((key, origin)) = set_below.first() {
                return ConfigError::new(format!("unknown config key `{key}` (set by {origin})"));
            }
        }
        // "chats[1]" was set as "chats"; "mail.from" may have come with a whole NATTER_MAIL table.
        let base = self.key.split('[').next().unwrap_or(&self.key);
        let mut candidate = base;
        let origin = loop {
            if let Some(origin) = origins.get(candidate) {
                break Some(origin);
            }
            match candidate.rsplit_once('.') {
                Some((parent, _)) => candidate = parent,
                None => break None,
            }
        };
        match origin {
            Some(origin) => ConfigError::new(format!("{} (set by {origin})", self.message)),
            None => ConfigError::new(self.message),
        }
    }
}

/// Turns a deserialization error into a message naming the dotted key.
pub(super) fn shape_error(e: serde_path_to_error::Error<toml::de::Error>) -> Invalid {
    let path = e.path().to_string();
    let message = e.inner().message().to_string();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let key = if path == "." || path.is_empty() {
            field.to_string()
        } else if path.ends_with(field) {
            path
        } else {
            format!("{path}.{field}")
        };
        let message = format!("unknown config key `{key}`");
        return Invalid {
            key,
            message,
            unknown: true,
        };
    }
    if is_secret(&path) {
        // The rejected value could be the secret itself.
        let message = format!("config key `{path}` must be a string");
        return invalid(&path, message);
    }
    let message = plain_expectation(&message);
    let hint = if message.contains("duration") || message.contains("unit") {
        " (durations are strings such as \"500ms\", \"29s\", \"10m\", \"7d\")"
    } else {
        ""
    };
    let message = format!("config key `{path}`: {message}{hint}");
    invalid(&path, message)
}

/// Rewrites serde's Rust-flavoured expectations ("expected usize", "expected struct RawMail") for people.
fn plain_expectation(message: &str) -> String {
    let Some((head, expected)) = message.split_once(", expected ") else {
        return message.to_string();
    };
    let expected = match expected {
        e if e.starts_with("struct ") => "a table",
        "usize" | "u64" => "a whole number, 0 or more",
        "u32" => "a whole number from 0 to 4294967295",
        "a sequence" => "an array such as [\"a\", \"b\"]",
        e => e,
    };
    format!("{head}, expected {expected}")
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{error, load_with};

    #[test]
    fn unknown_keys_are_named() {
        assert_eq!(error("foo = 1"), "unknown config key `foo`");
        assert_eq!(
            error("[mail]\nfro = \"x@y\""),
            "unknown config key `mail.fro`"
        );
        assert_eq!(error("[nope]\nx = 1"), "unknown config key `nope`");
        assert_eq!(
            error("[bot]\ncolour = \"red\""),
            "unknown config key `bot.colour`"
        );
        let e = load_with("", &[("NATTER_FOO__BAR", "1")], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown config key `foo.bar`") && e.contains("NATTER_FOO__BAR"),
            "{e}"
        );
        let e = load_with("", &[("NATTER_MAIL__FRO", "x")], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`mail.fro`") && e.contains("NATTER_MAIL__FRO"),
            "{e}"
        );
    }

    #[test]
    fn type_errors_name_the_dotted_key() {
        let e = error("[mail]\nfrom = 5");
        assert!(e.starts_with("config key `mail.from`: invalid type"), "{e}");
        let e = error("[bot]\nenabled = \"yes\"");
        assert!(
            e.starts_with("config key `bot.enabled`: invalid type"),
            "{e}"
        );
        let e = error("chats = [\"Main\", 1]");
        assert!(e.starts_with("config key `chats[1]`"), "{e}");
        let e = error("poll_timeout = \"soon\"");
        assert!(
            e.starts_with("config key `poll_timeout`") && e.contains("29s"),
            "{e}"
        );
        let e = error("durability = \"fast\"");
        assert!(e.contains("`durability`") && e.contains("relaxed"), "{e}");
        let e = error("last_messages = -1");
        assert!(
            e.starts_with("config key `last_messages`") && e.contains("whole number"),
            "{e}"
        );
        let e = error("mail = 5");
        assert!(
            e.starts_with("config key `mail`") && e.ends_with("expected a table"),
            "{e}"
        );
        let e = load_with("", &[("NATTER_ADMINS", "alice")], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`admins`") && e.contains("[\"a\", \"b\"]") && e.contains("NATTER_ADMINS"),
            "{e}"
        );
        let e = error("secret_key = 123456789");
        assert_eq!(e, "config key `secret_key` must be a string");
        let e = load_with("", &[("NATTER_LAST_MESSAGES", "many")], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`last_messages`") && e.contains("NATTER_LAST_MESSAGES"),
            "{e}"
        );
        let e = error("max_body_bytes = ");
        assert!(e.contains("not valid TOML at line 1"), "{e}");
    }
}
