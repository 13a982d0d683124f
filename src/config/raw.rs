//! The config file's shape and the built-in defaults, before any value is checked.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BotConfig, DurabilityMode, LogLevel, MailProvider, RateLimitConfig};

/// Keys that hold secrets: never echoed in errors or summaries, and readable from `*_FILE` variables.
pub(super) const SECRET_KEYS: [&str; 3] = ["secret_key", "database_url", "mail.sendgrid_key"];

/// The file's shape with serde defaults; checked and converted into a `Config` by `validate`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) log_level: LogLevel,
    pub(super) listen: String,
    pub(super) public_url: String,
    pub(super) data_dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) secret_key: Option<String>,
    pub(super) chats: Vec<String>,
    pub(super) admins: Vec<String>,
    pub(super) allow_guests: bool,
    pub(super) allow_registration: bool,
    pub(super) last_messages: usize,
    #[serde(with = "humantime_serde")]
    pub(super) poll_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) inactivity_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) session_max_age: Duration,
    pub(super) event_queue_capacity: usize,
    #[serde(with = "humantime_serde")]
    pub(super) event_queue_idle_timeout: Duration,
    pub(super) max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub(super) header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) body_read_timeout: Duration,
    pub(super) max_connections: usize,
    pub(super) max_connections_per_ip: usize,
    pub(super) max_queues_per_session: usize,
    pub(super) max_sessions_per_user: usize,
    pub(super) max_message_chars: usize,
    pub(super) password_iterations: u32,
    pub(super) durability: DurabilityMode,
    pub(super) cors_origins: Vec<String>,
    pub(super) trusted_proxies: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) static_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) database_url: Option<String>,
    pub(super) mail: RawMail,
    pub(super) rate_limit: RateLimitConfig,
    pub(super) metrics: RawMetrics,
    pub(super) bot: BotConfig,
}

/// The `[mail]` table; the provider is chosen from the key and the mode when unset.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) provider: Option<MailProvider>,
    pub(super) from: String,
    pub(super) sendgrid_api_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sendgrid_key: Option<String>,
}

/// The `[metrics]` table.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) listen: Option<String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            log_level: LogLevel::Info,
            listen: "0.0.0.0:8080".into(),
            public_url: "http://localhost:8080".into(),
            data_dir: PathBuf::from("./natter-data"),
            secret_key: None,
            chats: vec!["Main".into()],
            admins: Vec::new(),
            allow_guests: true,
            allow_registration: true,
            last_messages: 50,
            poll_timeout: Duration::from_secs(29),
            inactivity_timeout: Duration::from_secs(60),
            session_max_age: Duration::from_secs(7 * 24 * 3600),
            event_queue_capacity: 1000,
            event_queue_idle_timeout: Duration::from_secs(600),
            max_body_bytes: 65536,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            max_queues_per_session: 16,
            max_sessions_per_user: 50,
            max_message_chars: 4000,
            password_iterations: 600_000,
            durability: DurabilityMode::Sync,
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            static_dir: None,
            database_url: None,
            mail: RawMail::default(),
            rate_limit: RateLimitConfig::default(),
            metrics: RawMetrics::default(),
            bot: BotConfig::default(),
        }
    }
}

impl Default for RawMail {
    fn default() -> Self {
        Self {
            provider: None,
            from: "natter@localhost".into(),
            sendgrid_api_url: "https://api.sendgrid.com".into(),
            sendgrid_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::config::{
        BotConfig, DurabilityMode, LogLevel, MailProvider, RateLimitConfig, from_toml_str,
    };

    /// The sample config file shipped at the repository root.
    const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");

    /// `key = ...` after an optional `# `, as the sample writes both set and commented-out keys.
    fn assignment(line: &str) -> Option<&str> {
        let (key, _) = line.split_once(" = ")?;
        key.bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_')
            .then_some(key)
    }

    /// Dotted keys that a TOML-ish text names, commented out or not.
    fn named_keys(text: &str) -> BTreeSet<String> {
        let mut section = String::new();
        let mut keys = BTreeSet::new();
        for line in text.lines() {
            let line = line.trim_start_matches('#').trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = format!("{name}.");
            } else if let Some(key) = assignment(line) {
                keys.insert(format!("{section}{key}"));
            }
        }
        keys
    }

    #[test]
    fn defaults_match_the_documented_table() {
        let c = from_toml_str("", false).unwrap();
        assert!(!c.dev);
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.listen, "0.0.0.0:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(c.public_url, "http://localhost:8080");
        assert_eq!(c.data_dir, PathBuf::from("./natter-data"));
        assert_eq!(c.secret_key, None);
        assert_eq!(c.chats, vec!["Main".to_string()]);
        assert!(c.admins.is_empty());
        assert!(c.allow_guests && c.allow_registration);
        assert_eq!(c.last_messages, 50);
        assert_eq!(c.poll_timeout, Duration::from_secs(29));
        assert_eq!(c.inactivity_timeout, Duration::from_secs(60));
        assert_eq!(c.session_max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(c.event_queue_capacity, 1000);
        assert_eq!(c.event_queue_idle_timeout, Duration::from_secs(600));
        assert_eq!(c.max_body_bytes, 65536);
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.body_read_timeout, Duration::from_secs(30));
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.max_connections_per_ip, 256);
        assert_eq!(c.max_queues_per_session, 16);
        assert_eq!(c.max_sessions_per_user, 50);
        assert_eq!(c.max_message_chars, 4000);
        assert_eq!(c.password_iterations, 600_000);
        assert_eq!(c.durability, DurabilityMode::Sync);
        assert!(c.cors_origins.is_empty() && c.trusted_proxies.is_empty());
        assert_eq!(c.static_dir, None);
        assert_eq!(c.database_url, None);
        assert_eq!(c.mail.provider, MailProvider::None);
        assert_eq!(c.mail.from, "natter@localhost");
        assert_eq!(c.mail.sendgrid_api_url, "https://api.sendgrid.com");
        assert_eq!(c.mail.sendgrid_key, None);
        assert_eq!(c.rate_limit, RateLimitConfig::default());
        assert!(c.rate_limit.enabled);
        assert_eq!(c.metrics.listen, None);
        assert_eq!(
            c.bot,
            BotConfig {
                enabled: true,
                name: "Bot".into()
            }
        );
        assert!(!c.secure_cookies());
        assert_eq!(c.public_origin(), "http://localhost:8080");
    }

    #[test]
    fn sample_config_equals_the_defaults() {
        let text = std::fs::read_to_string(SAMPLE).unwrap();
        for dev in [false, true] {
            assert_eq!(
                from_toml_str(&text, dev).unwrap(),
                from_toml_str("", dev).unwrap()
            );
        }
    }

    #[test]
    fn sample_names_every_key_and_accepts_each_of_them() {
        let text = std::fs::read_to_string(SAMPLE).unwrap();
        let uncommented: Vec<&str> = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if assignment(rest).is_some() => rest,
                _ => line,
            })
            .collect();
        let c = from_toml_str(&uncommented.join("\n"), false).unwrap();
        assert_eq!(c.mail.provider, MailProvider::Sendgrid);
        assert!(
            c.secret_key.is_some() && c.database_url.is_some() && c.mail.sendgrid_key.is_some()
        );
        assert!(c.static_dir.is_some() && c.metrics.listen.is_some());
        // The summary prints every key the loader knows; the sample must name exactly those.
        let known = named_keys(&c.effective_summary());
        assert_eq!(named_keys(&text), known);
        assert!(
            known.len() > 30 && known.contains("mail.sendgrid_key") && known.contains("bot.name")
        );
    }
}
