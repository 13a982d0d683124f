//! Every config key, declared once: raw type, typed type, default, check, doc line and whether it is a secret.
//!
//! Adding a key is one row here, its line in `config.toml` and its row in docs/configuration.md; a rule that ties it to
//! other keys goes into `validate`. Each row's doc line is the key's comment line in `config.toml` (a test
//! checks both it and the value there against this table).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::checks::{
    days, duration, each, hours, http_url, ip_range, mail_address, millis, mins, node_name,
    non_empty_dir, non_empty_secret, optional, optional_dir, origin, plain, public_url, range,
    secs, socket_addr, unset_means,
};
use super::macros::config_keys;
use super::{
    DurabilityMode, IpNet, LogLevel, MailProvider, PresenceScope, PublicUrl, Secret, StorageKind,
};

config_keys! {
    /// The effective, validated configuration.
    pub struct Config from RawConfig {
        /// Log level: error, warn, info, debug or trace (also NATTER_LOG and --log-level).
        log_level: LogLevel = LogLevel::Info, plain;
        /// Log level of the libraries natter uses, never louder than log_level (their debug lines hold SQL
        /// parameters).
        dependency_log_level: LogLevel = LogLevel::Info, plain;
        /// HTTP listen address; the PORT variable replaces only the port.
        listen: String => SocketAddr = "0.0.0.0:8080".into(), socket_addr;
        /// Base of links in emails; https:// turns on Secure cookies; unset: http://localhost:8080, in dev mode
        /// the port served.
        public_url: Option<String> => PublicUrl = None, public_url;
        /// Where data lives: "sled" (in data_dir) or "postgres" (the database at database_url).
        storage: StorageKind = StorageKind::Sled, plain;
        /// sled data directory.
        data_dir: PathBuf = "./natter-data".into(), non_empty_dir;
        /// Cookie signing key, at least 32 bytes (SECRET_KEY or SECRET_KEY_FILE); if unset, one is generated
        /// into data_dir.
        secret_key: Option<String> => Option<Secret> = None, non_empty_secret, secret; // length: a rule in validate
        /// Chats created at every start if missing.
        chats: Vec<String> = vec!["Main".into()], plain; // names: a rule in validate
        /// Registered user names that are admins.
        admins: Vec<String> = Vec::new(), plain; // names: a rule in validate
        /// Guest login (POST /api/login) on or off.
        allow_guests: bool = true, plain;
        /// Registration (POST /api/register) on or off.
        allow_registration: bool = true, plain;
        /// Messages in a chat's history (1 to 1000).
        last_messages: usize = 50, range(1, 1000);
        /// How long a long poll waits before an empty reply (1s to 10m).
        #[serde(with = "humantime_serde")]
        poll_timeout: Duration = secs(29), duration(secs(1), mins(10));
        /// A session with no activity for this long goes offline (1s to 1d).
        #[serde(with = "humantime_serde")]
        inactivity_timeout: Duration = secs(60), duration(secs(1), days(1));
        /// Absolute lifetime of a session cookie (1s to 365d).
        #[serde(with = "humantime_serde")]
        session_max_age: Duration = days(7), duration(secs(1), days(365));
        /// How long a guest name an admin kicked stays blocked (1s to 30d).
        #[serde(with = "humantime_serde")]
        guest_block: Duration = hours(1), duration(secs(1), days(30));
        /// Unacknowledged events a queue holds before it overflows (10 to 100000).
        event_queue_capacity: usize = 4096, range(10, 100_000);
        /// An extra event queue with no poll for this long is deleted (1s to 7d).
        #[serde(with = "humantime_serde")]
        event_queue_idle_timeout: Duration = mins(10), duration(secs(1), days(7));
        /// A woken /events poll waits this long for more events to join its answer (0s to 1s).
        #[serde(with = "humantime_serde")]
        event_batch_delay: Duration = millis(10), duration(Duration::ZERO, secs(1));
        /// Larger request bodies get 413 (1024 to 16777216, and at least 4 × max_message_chars + 1024).
        max_body_bytes: usize = 65536, range(1024, 16 * 1024 * 1024);
        /// A request's headers must be complete this long after the connection opens or after the
        /// request's first byte, or the connection is closed (1s to 10m).
        #[serde(with = "humantime_serde")]
        header_read_timeout: Duration = secs(10), duration(secs(1), mins(10));
        /// A kept-alive connection with no request for this long is closed; keep it above clients'
        /// keepalive period and above a reverse proxy's upstream idle timeout (1s to 1h).
        #[serde(with = "humantime_serde")]
        idle_timeout: Duration = secs(75), duration(secs(1), hours(1));
        /// A request body must arrive within this time, or the request gets 408 (1s to 1h); parked polls are
        /// not cut.
        #[serde(with = "humantime_serde")]
        body_read_timeout: Duration = secs(30), duration(secs(1), hours(1));
        /// A connection whose response makes no progress for this long is closed: a client that stops
        /// reading (1s to 1h).
        #[serde(with = "humantime_serde")]
        write_timeout: Duration = secs(30), duration(secs(1), hours(1));
        /// Open connections at most; further ones wait until one closes (1 to 1000000).
        max_connections: usize = 10_000, range(1, 1_000_000);
        /// Open connections per client address at most, not applied to trusted_proxies (1 to
        /// max_connections).
        max_connections_per_ip: usize = 256, plain; // range: a rule in validate
        /// Event queues per session; opening one more drops the least recently polled (1 to 1000).
        max_queues_per_session: usize = 16, range(1, 1000);
        /// Who hears of a user coming online or going offline: "everyone" online (the original server's way)
        /// or "shared_chats", the users who share a chat with them (pick it above a few hundred users online).
        presence_scope: PresenceScope = PresenceScope::Everyone, plain;
        /// Sessions per registered account; signing in once more ends the oldest (1 to 10000).
        max_sessions_per_user: usize = 50, range(1, 10_000);
        /// Longest message text in characters (1 to 100000).
        max_message_chars: usize = 4000, range(1, 100_000);
        /// PBKDF2-HMAC-SHA256 rounds for new password hashes (100000 to 10000000; from 1000 with --dev).
        password_iterations: u32 = 600_000, range(1000, 10_000_000);
        /// "sync": fsync before answering a write; "relaxed": sled's background flush.
        durability: DurabilityMode = DurabilityMode::Sync, plain;
        /// Bytes of data_dir that sled keeps cached in memory (1048576 to 68719476736).
        data_cache_bytes: u64 = 16 << 20, range(1 << 20, 64 << 30);
        /// Extra origins (scheme://host[:port]) allowed to call the API with credentials.
        cors_origins: Vec<String> = Vec::new(), each(origin);
        /// Proxies (IP addresses or CIDR ranges) whose X-Forwarded-For header is believed.
        trusted_proxies: Vec<String> => Vec<IpNet> = Vec::new(), each(ip_range);
        /// Serve the web client from this directory instead of the bundled one.
        static_dir: Option<PathBuf> = None, optional_dir;
        /// PostgreSQL connection string (DATABASE_URL or DATABASE_URL_FILE): the store with storage = "postgres", else
        /// the mirror.
        database_url: Option<String> => Option<Secret> = None, non_empty_secret, secret;
        /// Let the mirror replace a database that holds another natter's copy (another label).
        mirror_replace_foreign: bool = false, plain;
        /// Connections the PostgreSQL store reads on, besides its one writer and its flusher (storage = "postgres").
        postgres_pool_size: usize = 4, range(1, 64);
        /// Longest one statement of the PostgreSQL store may run; a request waits at most this plus 5 s, then 503.
        #[serde(with = "humantime_serde")]
        postgres_statement_timeout: Duration = secs(10), duration(millis(100), mins(10));
        /// Run as one of several nodes sharing one PostgreSQL database behind a load balancer (storage = "postgres").
        cluster: bool = false, plain;
        /// This node's name among several: letters, digits, '.', '_' and '-', unique per node and kept across
        /// restarts; empty means the host name.
        node_name: String = String::new(), node_name;
    }

    /// Outgoing email.
    [mail] pub struct MailConfig from RawMail {
        /// Mailer: sendgrid, log or none; default sendgrid with a key, else log with --dev, else none.
        provider: Option<MailProvider> => MailProvider = None, unset_means(MailProvider::None);
        /// Sender address.
        from: String = "natter@localhost".into(), mail_address;
        /// Base URL of the SendGrid v3 API.
        sendgrid_api_url: String = "https://api.sendgrid.com".into(),
            http_url("https://api.sendgrid.com");
        /// SendGrid API key (SENDGRID_KEY or SENDGRID_KEY_FILE).
        sendgrid_key: Option<String> => Option<Secret> = None, non_empty_secret, secret;
    }

    /// Rate limits (docs/api.md, Rate limits).
    [rate_limit] pub struct RateLimitConfig from RawRateLimit: Default {
        /// All rate limits on or off.
        enabled: bool = true, plain;
        /// Burst of register, login, authorize and password reset requests per client IP.
        account_burst: u32 = 10, range(1, 10_000);
        /// After the burst, one more of those requests per this interval per client IP.
        #[serde(with = "humantime_serde")]
        account_interval: Duration = secs(6), duration(millis(10), hours(1));
        /// Password reset requests per hour per account.
        reset_requests_per_hour: u32 = 3, range(1, 1000);
        /// Burst of posted messages per session.
        message_burst: u32 = 20, range(1, 10_000);
        /// Posted messages per second per session after the burst.
        messages_per_second: u32 = 5, range(1, 10_000);
        /// Burst of other authenticated requests (not polls) per session.
        request_burst: u32 = 120, range(1, 100_000);
        /// Other authenticated requests per second per session after the burst.
        requests_per_second: u32 = 20, range(1, 100_000);
    }

    /// Optional Prometheus listener.
    [metrics] pub struct MetricsConfig from RawMetrics {
        /// Address of a separate Prometheus /metrics listener; off when unset.
        listen: Option<String> => Option<SocketAddr> = None, optional(socket_addr);
    }

    /// The built-in bot.
    [bot] pub struct BotConfig from RawBot: Default {
        /// The built-in bot that answers /help and /users.
        enabled: bool = true, plain;
        /// The bot's user name (reserved, 1 to 32 letters, digits, _, - or .).
        name: String = "Bot".into(), plain; // a user name: a rule in validate
    }
}

/// Whether `key` (dotted) holds a secret.
pub(super) fn is_secret(key: &str) -> bool {
    KEYS.iter().any(|k| k.secret && k.name == key)
}

/// The dotted keys that hold secrets.
pub(super) fn secret_keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().filter(|k| k.secret).map(|k| k.name)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::{KEYS, RawConfig, secret_keys};
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
        assert_eq!(c.event_queue_capacity, 4096);
        assert_eq!(c.event_queue_idle_timeout, Duration::from_secs(600));
        assert_eq!(c.event_batch_delay, Duration::from_millis(10));
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
        assert_eq!(c.data_cache_bytes, 16 << 20);
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

    /// The sample's comment line above each key and the key's own line, commented out or not, by dotted key.
    fn sample_lines(text: &str) -> BTreeMap<String, (String, String)> {
        let mut section = String::new();
        let mut above = "";
        let mut lines = BTreeMap::new();
        for line in text.lines() {
            let bare = line.strip_prefix("# ").unwrap_or(line);
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = format!("{name}.");
            } else if let Some(key) = assignment(bare) {
                let doc = above.trim_start_matches('#').trim().to_string();
                lines.insert(format!("{section}{key}"), (doc, bare.to_string()));
            }
            above = line;
        }
        lines
    }

    /// The value at a dotted key in a TOML tree.
    fn value_at(tree: &toml::Value, dotted: &str) -> Option<toml::Value> {
        dotted
            .split('.')
            .try_fold(tree, |value, step| value.get(step))
            .cloned()
    }

    #[test]
    fn sample_documents_each_key_as_the_table_does() {
        let text = std::fs::read_to_string(SAMPLE).unwrap();
        let lines = sample_lines(&text);
        let defaults = toml::Value::try_from(RawConfig::default()).unwrap();
        for key in KEYS {
            let Some((doc, line)) = lines.get(key.name) else {
                panic!("config.toml has no line for `{}`", key.name);
            };
            let table_doc = key.doc.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(doc, &table_doc, "comment above `{}`", key.name);
            let default = value_at(&defaults, key.name);
            if text.contains(&format!("\n# {line}\n")) {
                assert_eq!(
                    default, None,
                    "`{}` is commented out but has a default",
                    key.name
                );
                continue;
            }
            // Parsed and printed back, so that "60s" in the sample equals the default of 1m.
            let (table, _) = key.name.rsplit_once('.').unwrap_or_default();
            let one_key = format!("[{table}]\n{line}").replace("[]\n", "");
            let parsed: RawConfig = toml::from_str(&one_key).unwrap();
            let parsed = toml::Value::try_from(parsed).unwrap();
            assert_eq!(
                value_at(&parsed, key.name),
                default,
                "value of `{}`",
                key.name
            );
        }
        assert_eq!(lines.len(), KEYS.len());
    }

    #[test]
    fn secret_keys_are_the_ones_marked_in_the_table() {
        let secrets: Vec<&str> = secret_keys().collect();
        assert_eq!(secrets, ["secret_key", "database_url", "mail.sendgrid_key"]);
    }
}
