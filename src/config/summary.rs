//! The effective configuration printed back as a loadable config file: unset keys and secrets
//! (never printed) are commented out, so `check-config > new.toml` gives a file that loads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    Config, DurabilityMode, IpNet, LogLevel, MailProvider, PresenceScope, Secret, StorageKind,
};

impl Config {
    /// Every effective key as `key = value` lines in config-file order, with secrets redacted.
    pub fn effective_summary(&self) -> String {
        let mode = if self.dev { "dev" } else { "production" };
        let mut out = format!(
            "# natter effective configuration ({mode} mode)\n\
             # Commented out: keys without a value, and secrets (never printed; give them through the\n\
             # environment or a *_FILE credential).\n"
        );
        for (table, entries) in self.summary_tables() {
            if !table.is_empty() {
                out.push_str(&format!("\n[{table}]\n"));
            }
            for (key, printed) in entries {
                let comment = if printed.commented { "# " } else { "" };
                out.push_str(&format!("{comment}{key} = {}\n", printed.text));
            }
        }
        out
    }
}

/// A key's value as the summary prints it.
pub(crate) struct Printed {
    /// TOML text, or a placeholder (`"<unset>"`, `"<redacted>"`).
    pub text: String,
    /// Printed as a comment: the key has no value, or its value is a secret.
    pub commented: bool,
}

/// A typed value as the summary prints it: TOML text, as the file would write it.
pub(super) trait Shown {
    /// The value as TOML text.
    fn shown(&self) -> String;

    /// Whether the key has a value; only optional keys can lack one.
    fn is_set(&self) -> bool {
        true
    }
}

/// The summary's text for a key's value; a secret key shows only whether it is set.
pub(super) fn shown<T: Shown>(secret: bool, value: &T) -> Printed {
    let placeholder = |text: &str| Printed {
        text: quoted(text),
        commented: true,
    };
    match (secret, value.is_set()) {
        (true, true) => placeholder("<redacted>"),
        (_, false) => placeholder("<unset>"),
        (false, true) => Printed {
            text: value.shown(),
            commented: false,
        },
    }
}

impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> String {
        self.as_ref()
            .map_or_else(|| quoted("<unset>"), Shown::shown)
    }

    fn is_set(&self) -> bool {
        self.is_some()
    }
}

impl Shown for Secret {
    // Secrets are marked in the key table; this keeps a key that was not marked from printing its value.
    fn shown(&self) -> String {
        quoted("<redacted>")
    }
}

impl Shown for bool {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for usize {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for u32 {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for u64 {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for String {
    fn shown(&self) -> String {
        quoted(self)
    }
}

// Unset, it is a default that follows the served port in dev mode: shown as unset, so that
// a printed summary loaded again does not pin it.
impl Shown for super::PublicUrl {
    fn shown(&self) -> String {
        quoted(self.as_str())
    }

    fn is_set(&self) -> bool {
        self.is_set()
    }
}

impl Shown for PathBuf {
    fn shown(&self) -> String {
        quoted(&self.display().to_string())
    }
}

impl Shown for SocketAddr {
    fn shown(&self) -> String {
        quoted(&self.to_string())
    }
}

impl Shown for Duration {
    fn shown(&self) -> String {
        quoted(&short_duration(*self))
    }
}

impl Shown for LogLevel {
    fn shown(&self) -> String {
        quoted(self.as_str())
    }
}

impl Shown for DurabilityMode {
    fn shown(&self) -> String {
        quoted(self.as_str())
    }
}

impl Shown for StorageKind {
    fn shown(&self) -> String {
        quoted(self.as_str())
    }
}

impl Shown for PresenceScope {
    fn shown(&self) -> String {
        quoted(self.as_str())
    }
}

impl Shown for MailProvider {
    fn shown(&self) -> String {
        quoted(self.as_str())
    }
}

impl Shown for Vec<String> {
    fn shown(&self) -> String {
        string_list(self.iter().cloned())
    }
}

impl Shown for Vec<IpNet> {
    fn shown(&self) -> String {
        string_list(self.iter().map(IpNet::to_string))
    }
}

/// A duration in the one unit that states it exactly ("7d", "10m", "500ms"), as people write them in the file;
/// humantime's own format would print "7days" or "11months 30days 3h 50m 24s".
pub(super) fn short_duration(value: Duration) -> String {
    let secs = value.as_secs();
    if value.subsec_nanos() == 0 {
        match secs {
            0 => "0s".to_string(),
            s if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
            s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
            s if s.is_multiple_of(60) => format!("{}m", s / 60),
            s => format!("{s}s"),
        }
    } else if value.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", value.as_millis())
    } else {
        humantime::format_duration(value).to_string()
    }
}

fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn string_list(items: impl Iterator<Item = String>) -> String {
    toml::Value::Array(items.map(toml::Value::String).collect()).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::short_duration;
    use crate::config::test_support::{KEY32, vars};
    use crate::config::{Secret, Sources, from_toml_str};

    #[test]
    fn secrets_are_redacted_in_debug_and_summary() {
        let text = format!(
            "secret_key = \"{KEY32}\"\ndatabase_url = \"postgres://user:hunter2@db/natter\"\n\
             [mail]\nsendgrid_key = \"SG.very-secret\""
        );
        let c = from_toml_str(&text, false).unwrap();
        for shown in [format!("{c:?}"), c.effective_summary()] {
            assert!(
                !shown.contains(KEY32) && !shown.contains("hunter2") && !shown.contains("SG.very"),
                "{shown}"
            );
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        let summary = c.effective_summary();
        assert!(summary.contains("secret_key = \"<redacted>\""), "{summary}");
        assert!(
            summary.contains("[mail]\nprovider = \"sendgrid\""),
            "{summary}"
        );
        assert_eq!(format!("{}", Secret::new("x")), "<redacted>");
        assert_eq!(Secret::new("x").expose(), "x");

        let summary = from_toml_str("", true).unwrap().effective_summary();
        assert!(summary.contains("secret_key = \"<unset>\""), "{summary}");
        assert!(summary.contains("poll_timeout = \"29s\""), "{summary}");
        assert!(summary.contains("session_max_age = \"7d\""), "{summary}");
        assert_eq!(short_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(short_duration(Duration::from_secs(90)), "90s");
        assert!(summary.contains("chats = [\"Main\"]"), "{summary}");
        assert!(
            summary.starts_with("# natter effective configuration (dev mode)"),
            "{summary}"
        );
        // The summary is itself a loadable config file: placeholders are comments.
        assert!(
            summary.contains("\n# secret_key = \"<unset>\"\n"),
            "{summary}"
        );
        assert!(
            summary.contains("[metrics]\n# listen = \"<unset>\""),
            "{summary}"
        );
        assert_eq!(from_toml_str(&summary, true), from_toml_str("", true));

        let sources = Sources {
            env: vars(&[("SECRET_KEY", KEY32)]),
            ..Sources::default()
        };
        assert!(!format!("{sources:?}").contains(KEY32));
    }
}
