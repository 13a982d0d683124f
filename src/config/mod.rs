//! Typed, validated configuration.
//!
//! Sources are layered, later wins: built-in defaults → config file → environment → command-line flags.
//! Every key has an environment variable `NATTER_<KEY>` (upper case, `__` for nesting); the original server's
//! `PORT`, `DATABASE_URL`, `SECRET_KEY` and `SENDGRID_KEY` keep working, and secrets can also be read from the
//! file named by a `*_FILE` variable. An unknown key or an invalid value is an error that names the key and what
//! is allowed, and the server refuses to start on it.
//!
//! `keys` declares every key once (through `macros`): its file shape, default, check, doc line and secrecy.
//! `file` reads the file, `original` rewrites chatty-server's keys in it into natter's, `layers` adds the
//! environment and flags, `validate` runs each key's check from `checks` and then the rules that tie keys together
//! (`key_errors` words the errors), and `summary` prints it back.

mod checks;
mod file;
mod key_errors;
mod keys;
mod layers;
mod macros;
mod original;
mod reload;
mod summary;
mod url;
mod validate;

#[cfg(test)]
mod test_support;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use file::{parse_toml_table, read_file_layer};
use layers::Layers;
use url::HttpUrl;

pub use ipnet::IpNet;
pub use keys::{BotConfig, Config, MailConfig, MetricsConfig, RateLimitConfig};
pub use reload::reload_report;

/// Config file read from the working directory when no `--config` path is given.
pub const DEFAULT_CONFIG_FILE: &str = "config.toml";

/// Shortest `secret_key` accepted outside dev mode; with `--dev` a shorter one is stretched to this length.
pub const MIN_SECRET_KEY_BYTES: usize = 32;

/// Fewest PBKDF2 rounds accepted outside dev mode.
pub const MIN_PRODUCTION_PASSWORD_ITERATIONS: u32 = 100_000;

/// Log verbosity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default: one line per request.
    Info,
    /// Debugging detail.
    Debug,
    /// Everything.
    Trace,
}

/// When a write reaches the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Fsync (group commit) before the 2xx.
    #[default]
    Sync,
    /// sled's background flush.
    Relaxed,
}

/// Where natter keeps its data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// sled in `data_dir`, optionally mirrored to PostgreSQL.
    #[default]
    Sled,
    /// The PostgreSQL database at `database_url`.
    Postgres,
}

impl StorageKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sled => "sled",
            Self::Postgres => "postgres",
        }
    }
}

/// Who hears that a user came online or went offline (`LoginEvent`, `LogoutEvent`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceScope {
    /// Every online session, as the original server does: N users coming online cost N² events.
    #[default]
    Everyone,
    /// Only the sessions of users who share a chat with them: each costs what its chats hold.
    SharedChats,
}

/// Which mailer sends activation and reset mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailProvider {
    /// SendGrid v3 API.
    Sendgrid,
    /// Log links and tokens (dev and tests).
    Log,
    /// No mail: registration and password reset answer 503.
    None,
}

/// `public_url`, and whether a source (file, environment) gave it. Unset, it follows the address
/// served in dev mode, and `http://` plus the `Host` header counts as the own origin too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicUrl {
    url: String,
    set: bool,
}

impl PublicUrl {
    /// The value while the key is unset, outside dev mode.
    pub const DEFAULT: &str = "http://localhost:8080";

    fn given(url: String) -> Self {
        PublicUrl { url, set: true }
    }

    fn unset(url: String) -> Self {
        PublicUrl { url, set: false }
    }

    /// Whether a source gave it.
    pub fn is_set(&self) -> bool {
        self.set
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }
}

impl std::ops::Deref for PublicUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl PartialEq<&str> for PublicUrl {
    fn eq(&self, other: &&str) -> bool {
        self.url == *other
    }
}

/// A secret string whose `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Where configuration comes from besides the built-in defaults.
#[derive(Clone, Default)]
pub struct Sources {
    /// `--config PATH`: this file must exist. `None` reads `./config.toml` if present.
    pub config_path: Option<PathBuf>,
    /// `--dev`.
    pub dev: bool,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// How the operator spelled the log level flag (`-logLevel`), for messages; `None`: `--log-level`.
    pub log_level_flag: Option<String>,
    /// The process environment (see [`process_env`]).
    pub env: Vec<(String, String)>,
}

/// A configuration problem, as one line that names the key and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(String);

/// A loaded configuration and the notes to log once logging is up.
#[derive(Debug)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Warnings about the file, one line each: chatty-server's keys that were read, and the natter key to write
    /// instead.
    pub notes: Vec<String>,
}

/// Loads, layers and validates the configuration.
pub fn load(src: &Sources) -> Result<Config, ConfigError> {
    load_with_notes(src).map(|loaded| loaded.config)
}

/// [`load`], keeping the notes about the file for the log (logging is not set up while the config loads).
pub fn load_with_notes(src: &Sources) -> Result<Loaded, ConfigError> {
    let (mut layers, notes) = file_layers(read_file_layer(src.config_path.as_deref())?)?;
    layers.apply_env(&src.env)?;
    if let Some(level) = &src.log_level {
        layers.set(
            "log_level",
            toml::Value::String(level.clone()),
            src.log_level_flag.as_deref().unwrap_or("--log-level"),
        );
    }
    let config = layers.build(src.dev)?;
    Ok(Loaded { config, notes })
}

/// Defaults plus this TOML text, without environment or files; for tests.
pub fn from_toml_str(text: &str, dev: bool) -> Result<Config, ConfigError> {
    let table = parse_toml_table(text, Path::new("<text>"))?;
    file_layers(table)?.0.build(dev)
}

/// The file's table with chatty-server's keys rewritten into natter's, and the notes about them.
fn file_layers(mut table: toml::Table) -> Result<(Layers, Vec<String>), ConfigError> {
    let translated = original::translate(&mut table)?;
    let mut layers = Layers::new(table);
    for (key, origin) in translated.origins {
        layers.note_origin(&key, origin);
    }
    Ok((layers, translated.notes))
}

/// The process environment as UTF-8 pairs; variables that are not UTF-8 are skipped.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

impl Config {
    /// This node's name among several: `node_name`, or the host name when it is empty.
    pub fn node(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "natter".to_owned())
    }

    /// In dev mode without `public_url`, links name the address actually served: `http://localhost:PORT`
    /// for a wildcard or loopback `listen`, else its address. Production keeps the default, which natter
    /// warns about until `public_url` is set.
    pub fn follow_served_address(&mut self, served: SocketAddr) {
        if self.dev && !self.public_url.is_set() {
            self.public_url = PublicUrl::unset(url::served_url(served));
        }
    }

    /// Whether cookies get the `Secure` attribute (public_url is https).
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// `scheme://host[:port]` of public_url, as a browser sends it in `Origin`.
    pub fn public_origin(&self) -> String {
        match HttpUrl::parse(&self.public_url) {
            Ok(url) => url.origin(),
            // public_url was validated at load time; this only happens if a caller edited it since.
            Err(_) => self.public_url.to_string(),
        }
    }

    /// Whether a cross-origin `Origin` may call the API with credentials: listed in cors_origins, or a
    /// `http://localhost:*` / `http://127.0.0.1:*` origin in dev mode. The server's own origin is not included.
    pub fn allows_cross_origin(&self, origin: &str) -> bool {
        let Ok(url) = HttpUrl::parse(origin) else {
            return false;
        };
        if !url.path.is_empty() {
            return false;
        }
        if self.dev && !url.https && (url.host == "localhost" || url.host == "127.0.0.1") {
            return true;
        }
        let origin = url.origin();
        self.cors_origins.contains(&origin)
    }

    /// Whether a peer address is a trusted proxy; IPv4-mapped IPv6 peers match IPv4 ranges.
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

impl LogLevel {
    /// All levels, quietest first.
    pub const ALL: [LogLevel; 5] = [
        Self::Error,
        Self::Warn,
        Self::Info,
        Self::Debug,
        Self::Trace,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }

    /// The matching `log` filter.
    pub fn to_level_filter(self) -> log::LevelFilter {
        match self {
            Self::Error => log::LevelFilter::Error,
            Self::Warn => log::LevelFilter::Warn,
            Self::Info => log::LevelFilter::Info,
            Self::Debug => log::LevelFilter::Debug,
            Self::Trace => log::LevelFilter::Trace,
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("`{s}` is not a log level; use error, warn, info, debug or trace")
            })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for LogLevel {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl DurabilityMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Relaxed => "relaxed",
        }
    }
}

impl PresenceScope {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Everyone => "everyone",
            Self::SharedChats => "shared_chats",
        }
    }
}

impl MailProvider {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sendgrid => "sendgrid",
            Self::Log => "log",
            Self::None => "none",
        }
    }
}

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; use only where it is needed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

// Hand-written so that a debug print of the sources never shows secret environment values.
impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Sources")
            .field("config_path", &self.config_path)
            .field("dev", &self.dev)
            .field("log_level", &self.log_level)
            .field("log_level_flag", &self.log_level_flag)
            .field("env", &env_names)
            .finish()
    }
}

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        // Messages end up in one log line or one line of check-config output.
        let message: String = message.into();
        Self(message.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_accept_addresses_and_ranges() {
        let c = from_toml_str(
            "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1\"]",
            false,
        )
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 3);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(c.is_trusted_proxy(ip("127.0.0.1")));
        assert!(c.is_trusted_proxy(ip("10.1.2.3")));
        assert!(c.is_trusted_proxy(ip("::ffff:10.1.2.3")));
        assert!(c.is_trusted_proxy(ip("::1")));
        assert!(!c.is_trusted_proxy(ip("127.0.0.2")));
        assert!(!c.is_trusted_proxy(ip("11.0.0.1")));
    }
}
