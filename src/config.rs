//! Typed, validated configuration.
//!
//! Sources are layered, later wins: built-in defaults → config file → environment → command-line flags.
//! Every key has an environment variable `NATTER_<KEY>` (upper case, `__` for nesting); the original server's
//! `PORT`, `DATABASE_URL`, `SECRET_KEY` and `SENDGRID_KEY` keep working, and secrets can also be read from the
//! file named by a `*_FILE` variable. An unknown key or an invalid value is an error that names the key and what
//! is allowed, and the server refuses to start on it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use ipnet::IpNet;

/// Config file read from the working directory when no `--config` path is given.
pub const DEFAULT_CONFIG_FILE: &str = "config.toml";

/// Fewest PBKDF2 rounds accepted outside dev mode.
pub const MIN_PRODUCTION_PASSWORD_ITERATIONS: u32 = 100_000;

/// Keys that hold secrets: never echoed in errors or summaries, and readable from `*_FILE` variables.
const SECRET_KEYS: [&str; 3] = ["secret_key", "database_url", "mail.sendgrid_key"];

/// The original server's secret variables and the keys they set.
const ORIGINAL_SECRET_VARS: [(&str, &str); 3] = [
    ("SECRET_KEY", "secret_key"),
    ("DATABASE_URL", "database_url"),
    ("SENDGRID_KEY", "mail.sendgrid_key"),
];

/// The effective, validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Development mode (`--dev`): log mailer by default, localhost CORS, fewer PBKDF2 rounds allowed.
    pub dev: bool,
    /// Log level (`log_level`, `NATTER_LOG`, `--log-level`).
    pub log_level: LogLevel,
    /// HTTP listen address; `PORT` replaces only its port.
    pub listen: SocketAddr,
    /// Base of links in emails, without a trailing slash; `https://` turns on Secure cookies.
    pub public_url: String,
    /// sled data directory.
    pub data_dir: PathBuf,
    /// Cookie signing key; when unset one is generated and kept in the data directory.
    pub secret_key: Option<Secret>,
    /// Chats ensured at every start.
    pub chats: Vec<String>,
    /// Registered user names that are admins.
    pub admins: Vec<String>,
    /// Guest login on or off.
    pub allow_guests: bool,
    /// Registration on or off.
    pub allow_registration: bool,
    /// History size in ChatReport and getLastMessages.
    pub last_messages: usize,
    /// How long a long poll is held before an empty reply.
    pub poll_timeout: Duration,
    /// A session with no activity for this long goes offline.
    pub inactivity_timeout: Duration,
    /// Absolute lifetime of a session cookie.
    pub session_max_age: Duration,
    /// Events kept per queue before it overflows.
    pub event_queue_capacity: usize,
    /// An explicit queue with no poll for this long is deleted.
    pub event_queue_idle_timeout: Duration,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// Message text limit in characters.
    pub max_message_chars: usize,
    /// PBKDF2-HMAC-SHA256 rounds for new password hashes.
    pub password_iterations: u32,
    /// When writes reach the disk.
    pub durability: DurabilityMode,
    /// Extra origins allowed to call the API with credentials, normalized (`scheme://host[:port]`).
    pub cors_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Serve the web client from this directory instead of the bundled assets.
    pub static_dir: Option<PathBuf>,
    /// PostgreSQL mirror connection string.
    pub database_url: Option<Secret>,
    /// Outgoing email.
    pub mail: MailConfig,
    /// Rate limits (SPEC section 12).
    pub rate_limit: RateLimitConfig,
    /// Optional Prometheus listener.
    pub metrics: MetricsConfig,
    /// The built-in bot.
    pub bot: BotConfig,
}

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

/// Outgoing email settings.
#[derive(Clone, Debug, PartialEq)]
pub struct MailConfig {
    /// The mailer in use, after defaulting.
    pub provider: MailProvider,
    /// Sender address.
    pub from: String,
    /// Base URL of the SendGrid v3 API, without a trailing slash.
    pub sendgrid_api_url: String,
    /// SendGrid API key.
    pub sendgrid_key: Option<Secret>,
}

/// The built-in bot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotConfig {
    /// Whether the bot answers commands.
    pub enabled: bool,
    /// Its user name (reserved).
    pub name: String,
}

/// Rate limits; see SPEC section 12.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// All rate limits on or off.
    pub enabled: bool,
    /// Burst for the account routes (register, login, authorize, reset), per client IP.
    pub account_burst: u32,
    /// After the burst, one more account request per this interval, per client IP.
    #[serde(with = "humantime_serde")]
    pub account_interval: Duration,
    /// requestResetPassword requests per hour per account.
    pub reset_requests_per_hour: u32,
    /// postMessage burst per session.
    pub message_burst: u32,
    /// postMessage sustained rate per session.
    pub messages_per_second: u32,
    /// Burst for other authenticated requests (polls excluded) per session.
    pub request_burst: u32,
    /// Sustained rate for other authenticated requests per session.
    pub requests_per_second: u32,
}

/// Prometheus metrics listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Address of the separate `/metrics` listener; off when unset.
    pub listen: Option<SocketAddr>,
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
    /// The process environment (see [`process_env`]).
    pub env: Vec<(String, String)>,
}

/// A configuration problem, as one line that names the key and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(String);

/// Loads, layers and validates the configuration.
pub fn load(src: &Sources) -> Result<Config, ConfigError> {
    let table = match &src.config_path {
        Some(path) => read_config_file(path)?,
        None => {
            let path = Path::new(DEFAULT_CONFIG_FILE);
            match std::fs::read_to_string(path) {
                Ok(text) => parse_toml_table(&text, path)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
                Err(e) => return Err(cannot_read_config(path, &e)),
            }
        }
    };
    let mut layers = Layers::new(table);
    layers.apply_env(&src.env)?;
    if let Some(level) = &src.log_level {
        layers.set(
            "log_level",
            toml::Value::String(level.clone()),
            "--log-level",
        );
    }
    layers.build(src.dev)
}

/// Defaults plus this TOML text, without environment or files; for tests.
pub fn from_toml_str(text: &str, dev: bool) -> Result<Config, ConfigError> {
    let table = parse_toml_table(text, Path::new("<text>"))?;
    Layers::new(table).build(dev)
}

/// The process environment as UTF-8 pairs; variables that are not UTF-8 are skipped.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

impl Config {
    /// Whether cookies get the `Secure` attribute (public_url is https).
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// `scheme://host[:port]` of public_url, as a browser sends it in `Origin`.
    pub fn public_origin(&self) -> String {
        match HttpUrl::parse(&self.public_url) {
            Ok(url) => url.origin(),
            // public_url was validated at load time; this only happens if a caller edited it since.
            Err(_) => self.public_url.clone(),
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

    /// Every effective key as `key = value` lines in config-file order, with secrets redacted.
    pub fn effective_summary(&self) -> String {
        let proxies: Vec<String> = self.trusted_proxies.iter().map(IpNet::to_string).collect();
        let static_dir = self.static_dir.as_ref().map(|p| p.display().to_string());
        let top = vec![
            ("log_level", quoted(self.log_level.as_str())),
            ("listen", quoted(&self.listen.to_string())),
            ("public_url", quoted(&self.public_url)),
            ("data_dir", quoted(&self.data_dir.display().to_string())),
            ("secret_key", secret(self.secret_key.as_ref())),
            ("chats", string_list(&self.chats)),
            ("admins", string_list(&self.admins)),
            ("allow_guests", self.allow_guests.to_string()),
            ("allow_registration", self.allow_registration.to_string()),
            ("last_messages", self.last_messages.to_string()),
            ("poll_timeout", duration(self.poll_timeout)),
            ("inactivity_timeout", duration(self.inactivity_timeout)),
            ("session_max_age", duration(self.session_max_age)),
            (
                "event_queue_capacity",
                self.event_queue_capacity.to_string(),
            ),
            (
                "event_queue_idle_timeout",
                duration(self.event_queue_idle_timeout),
            ),
            ("max_body_bytes", self.max_body_bytes.to_string()),
            ("max_message_chars", self.max_message_chars.to_string()),
            ("password_iterations", self.password_iterations.to_string()),
            ("durability", quoted(self.durability.as_str())),
            ("cors_origins", string_list(&self.cors_origins)),
            ("trusted_proxies", string_list(&proxies)),
            ("static_dir", optional(static_dir)),
            ("database_url", secret(self.database_url.as_ref())),
        ];
        let mail = vec![
            ("provider", quoted(self.mail.provider.as_str())),
            ("from", quoted(&self.mail.from)),
            ("sendgrid_api_url", quoted(&self.mail.sendgrid_api_url)),
            ("sendgrid_key", secret(self.mail.sendgrid_key.as_ref())),
        ];
        let rl = &self.rate_limit;
        let rate_limit = vec![
            ("enabled", rl.enabled.to_string()),
            ("account_burst", rl.account_burst.to_string()),
            ("account_interval", duration(rl.account_interval)),
            (
                "reset_requests_per_hour",
                rl.reset_requests_per_hour.to_string(),
            ),
            ("message_burst", rl.message_burst.to_string()),
            ("messages_per_second", rl.messages_per_second.to_string()),
            ("request_burst", rl.request_burst.to_string()),
            ("requests_per_second", rl.requests_per_second.to_string()),
        ];
        let metrics = vec![(
            "listen",
            optional(self.metrics.listen.map(|a| a.to_string())),
        )];
        let bot = vec![
            ("enabled", self.bot.enabled.to_string()),
            ("name", quoted(&self.bot.name)),
        ];

        let mode = if self.dev { "dev" } else { "production" };
        let mut out = format!("# natter effective configuration ({mode} mode)\n");
        let sections = [
            ("", top),
            ("mail", mail),
            ("rate_limit", rate_limit),
            ("metrics", metrics),
            ("bot", bot),
        ];
        for (table, entries) in sections {
            if !table.is_empty() {
                out.push_str(&format!("\n[{table}]\n"));
            }
            for (key, value) in entries {
                out.push_str(&format!("{key} = {value}\n"));
            }
        }
        out
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

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            name: "Bot".into(),
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            account_burst: 10,
            account_interval: Duration::from_secs(6),
            reset_requests_per_hour: 3,
            message_burst: 20,
            messages_per_second: 5,
            request_burst: 120,
            requests_per_second: 20,
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

// ---------------------------------------------------------------------------------------------------------------
// Layering

/// The file's shape with serde defaults; checked and converted into [`Config`] by `validate`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    log_level: LogLevel,
    listen: String,
    public_url: String,
    data_dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_key: Option<String>,
    chats: Vec<String>,
    admins: Vec<String>,
    allow_guests: bool,
    allow_registration: bool,
    last_messages: usize,
    #[serde(with = "humantime_serde")]
    poll_timeout: Duration,
    #[serde(with = "humantime_serde")]
    inactivity_timeout: Duration,
    #[serde(with = "humantime_serde")]
    session_max_age: Duration,
    event_queue_capacity: usize,
    #[serde(with = "humantime_serde")]
    event_queue_idle_timeout: Duration,
    max_body_bytes: usize,
    max_message_chars: usize,
    password_iterations: u32,
    durability: DurabilityMode,
    cors_origins: Vec<String>,
    trusted_proxies: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    static_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
    mail: RawMail,
    rate_limit: RateLimitConfig,
    metrics: RawMetrics,
    bot: BotConfig,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMail {
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<MailProvider>,
    from: String,
    sendgrid_api_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sendgrid_key: Option<String>,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
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

/// The merged TOML tree plus where each non-file value came from, for error messages.
struct Layers {
    table: toml::Table,
    /// Dotted key → the variable or flag that set it.
    origins: HashMap<String, String>,
    /// `PORT`, applied to `listen` after parsing.
    port: Option<u16>,
}

impl Layers {
    fn new(table: toml::Table) -> Self {
        Self {
            table,
            origins: HashMap::new(),
            port: None,
        }
    }

    fn set(&mut self, dotted: &str, value: toml::Value, origin: &str) {
        let path: Vec<&str> = dotted.split('.').collect();
        set_path(&mut self.table, &path, value);
        self.origins.insert(dotted.to_string(), origin.to_string());
    }

    fn apply_env(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        // Later duplicates win as in a process environment; an empty variable counts as unset.
        let vars: BTreeMap<&str, &str> = env
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();

        // The original names first, so that NATTER_* set afterwards wins.
        for (var, key) in ORIGINAL_SECRET_VARS {
            if let Some((value, origin)) = secret_from_env(&vars, var)? {
                self.set(key, toml::Value::String(value), &origin);
            }
        }
        // NATTER_LOG is a short alias; the general NATTER_LOG_LEVEL, applied below, wins over it.
        if let Some(level) = vars.get("NATTER_LOG") {
            self.set(
                "log_level",
                toml::Value::String((*level).to_string()),
                "NATTER_LOG",
            );
        }

        let schema = schema();
        for (&var, &text) in vars.range("NATTER_"..) {
            let Some(rest) = var.strip_prefix("NATTER_") else {
                break;
            };
            if var == "NATTER_LOG" {
                continue;
            }
            let dotted = rest.to_ascii_lowercase().replace("__", ".");
            let is_secret = SECRET_KEYS.contains(&dotted.as_str())
                || dotted
                    .strip_suffix("_file")
                    .is_some_and(|base| SECRET_KEYS.contains(&base));
            if is_secret {
                continue; // handled below, with their *_FILE forms
            }
            let path: Vec<&str> = dotted.split('.').collect();
            let value = env_value(&schema, &path, text);
            self.set(&dotted, value, var);
        }
        for key in SECRET_KEYS {
            let var = format!("NATTER_{}", key.to_ascii_uppercase().replace('.', "__"));
            if let Some((value, origin)) = secret_from_env(&vars, &var)? {
                self.set(key, toml::Value::String(value), &origin);
            }
        }

        // PORT replaces only the port of `listen`, and NATTER_LISTEN wins over it.
        if let Some(port) = vars.get("PORT")
            && !vars.contains_key("NATTER_LISTEN")
        {
            let port = port.trim().parse::<u16>().map_err(|_| {
                ConfigError::new(format!(
                    "environment variable PORT must be a port number between 0 and 65535, got `{port}`"
                ))
            })?;
            self.port = Some(port);
        }
        Ok(())
    }

    fn build(self, dev: bool) -> Result<Config, ConfigError> {
        let Layers {
            table,
            origins,
            port,
        } = self;
        let explain = |invalid: Invalid| invalid.explain(&origins);
        let raw: RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| explain(shape_error(e)))?;
        validate(raw, dev, port).map_err(explain)
    }
}

/// The defaults as a TOML tree, used to tell string keys from typed ones when reading the environment.
fn schema() -> toml::Table {
    match toml::Value::try_from(RawConfig::default()) {
        Ok(toml::Value::Table(table)) => table,
        // Cannot happen for this plain struct; an empty schema only makes every env value a string.
        _ => toml::Table::new(),
    }
}

/// An environment value: text for string keys (so `NATTER_BOT__NAME=007` stays a name), otherwise parsed as a
/// TOML value when it is one (numbers, booleans, arrays), else text.
fn env_value(schema: &toml::Table, path: &[&str], text: &str) -> toml::Value {
    let parsed = parse_toml_value(text);
    match lookup(schema, path) {
        // Absent from the defaults means an optional key (all are strings) or an unknown one.
        Some(toml::Value::String(_)) | None => match parsed {
            Some(toml::Value::String(s)) => toml::Value::String(s),
            _ => toml::Value::String(text.to_string()),
        },
        Some(_) => parsed.unwrap_or_else(|| toml::Value::String(text.to_string())),
    }
}

fn parse_toml_value(text: &str) -> Option<toml::Value> {
    let mut doc: toml::Table = toml::from_str(&format!("value = {text}")).ok()?;
    // A value with a newline could smuggle in more keys; only a lone value counts.
    if doc.len() != 1 {
        return None;
    }
    doc.remove("value")
}

fn lookup<'a>(table: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(*first)?;
    if rest.is_empty() {
        return Some(value);
    }
    match value {
        toml::Value::Table(inner) => lookup(inner, rest),
        _ => None,
    }
}

fn set_path(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        table.insert((*first).to_string(), value);
        return;
    }
    let entry = table
        .entry((*first).to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    if let toml::Value::Table(inner) = entry {
        set_path(inner, rest, value);
    }
}

/// Reads `VAR` or `VAR_FILE` (not both); the file's trailing newline is dropped.
fn secret_from_env(
    vars: &BTreeMap<&str, &str>,
    var: &str,
) -> Result<Option<(String, String)>, ConfigError> {
    let file_var = format!("{var}_FILE");
    match (vars.get(var), vars.get(file_var.as_str())) {
        (Some(_), Some(_)) => Err(ConfigError::new(format!(
            "both {var} and {file_var} are set; set only one of them"
        ))),
        (Some(value), None) => Ok(Some(((*value).to_string(), var.to_string()))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::new(format!("cannot read {file_var} `{path}`: {e}")))?;
            let value = text.trim_end_matches(['\n', '\r']).to_string();
            Ok(Some((value, file_var)))
        }
        (None, None) => Ok(None),
    }
}

fn read_config_file(path: &Path) -> Result<toml::Table, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_toml_table(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::new(format!(
            "config file `{}` does not exist",
            path.display()
        ))),
        Err(e) => Err(cannot_read_config(path, &e)),
    }
}

fn cannot_read_config(path: &Path, e: &std::io::Error) -> ConfigError {
    ConfigError::new(format!("cannot read config file `{}`: {e}", path.display()))
}

fn parse_toml_table(text: &str, path: &Path) -> Result<toml::Table, ConfigError> {
    toml::from_str::<toml::Table>(text).map_err(|e| {
        let place = match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!(" at line {line}, column {column}")
            }
            None => String::new(),
        };
        ConfigError::new(format!(
            "config file `{}` is not valid TOML{place}: {}",
            path.display(),
            e.message()
        ))
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Validation

/// A problem with one key, before the source of the value is added to the message.
struct Invalid {
    key: String,
    message: String,
    /// The key itself is unknown (not its value wrong).
    unknown: bool,
}

fn invalid(key: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.to_string(),
        message: message.into(),
        unknown: false,
    }
}

impl Invalid {
    /// Appends which variable or flag set the key, when it was not the file.
    fn explain(self, origins: &HashMap<String, String>) -> ConfigError {
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
fn shape_error(e: serde_path_to_error::Error<toml::de::Error>) -> Invalid {
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
    if SECRET_KEYS.contains(&path.as_str()) {
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

fn validate(raw: RawConfig, dev: bool, port: Option<u16>) -> Result<Config, Invalid> {
    let mut listen = parse_listen("listen", &raw.listen)?;
    if let Some(port) = port {
        listen.set_port(port);
    }

    let public_url = HttpUrl::parse(&raw.public_url).map_err(|why| {
        invalid(
            "public_url",
            format!(
                "public_url must be an http:// or https:// URL such as https://chat.example.com, \
                 optionally with a path; `{}` {why}",
                raw.public_url
            ),
        )
    })?;

    if raw.data_dir.as_os_str().is_empty() {
        return Err(invalid("data_dir", "data_dir must not be empty"));
    }
    let secret_key = match raw.secret_key {
        Some(key) if key.len() < 32 => {
            return Err(invalid(
                "secret_key",
                format!(
                    "secret_key must be at least 32 bytes long (it has {})",
                    key.len()
                ),
            ));
        }
        other => other.map(Secret),
    };

    validate_names(&raw.chats, &raw.admins, &raw.bot.name)?;

    let last_messages = in_range("last_messages", raw.last_messages, 1, 1000)?;
    let poll_timeout = duration_in_range("poll_timeout", raw.poll_timeout, secs(1), secs(600))?;
    let inactivity_timeout = duration_in_range(
        "inactivity_timeout",
        raw.inactivity_timeout,
        secs(1),
        secs(86_400),
    )?;
    let session_max_age = duration_in_range(
        "session_max_age",
        raw.session_max_age,
        secs(1),
        secs(365 * 86_400),
    )?;
    let event_queue_capacity = in_range(
        "event_queue_capacity",
        raw.event_queue_capacity,
        10,
        100_000,
    )?;
    let event_queue_idle_timeout = duration_in_range(
        "event_queue_idle_timeout",
        raw.event_queue_idle_timeout,
        secs(1),
        secs(7 * 86_400),
    )?;
    let max_body_bytes = in_range("max_body_bytes", raw.max_body_bytes, 1024, 16 * 1024 * 1024)?;
    let max_message_chars = in_range("max_message_chars", raw.max_message_chars, 1, 100_000)?;
    // A character takes up to 4 bytes of UTF-8; 1 KiB more covers the JSON around the text.
    let needed = max_message_chars * 4 + 1024;
    if max_body_bytes < needed {
        return Err(invalid(
            "max_body_bytes",
            format!(
                "max_body_bytes must be at least 4 × max_message_chars + 1024 = {needed} so that the longest \
                 message fits, got {max_body_bytes}"
            ),
        ));
    }

    let password_iterations = in_range(
        "password_iterations",
        raw.password_iterations,
        1000,
        10_000_000,
    )?;
    if password_iterations < MIN_PRODUCTION_PASSWORD_ITERATIONS && !dev {
        return Err(invalid(
            "password_iterations",
            format!(
                "password_iterations must be at least {MIN_PRODUCTION_PASSWORD_ITERATIONS} (got \
                 {password_iterations}); values from 1000 are only allowed in dev mode (--dev)"
            ),
        ));
    }

    let cors_origins = raw
        .cors_origins
        .iter()
        .map(|origin| parse_origin(origin))
        .collect::<Result<Vec<_>, _>>()?;
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .map(|proxy| parse_proxy(proxy))
        .collect::<Result<Vec<_>, _>>()?;

    if raw
        .static_dir
        .as_ref()
        .is_some_and(|d| d.as_os_str().is_empty())
    {
        return Err(invalid(
            "static_dir",
            "static_dir must not be empty when set",
        ));
    }
    if raw
        .database_url
        .as_ref()
        .is_some_and(|u| u.trim().is_empty())
    {
        return Err(invalid(
            "database_url",
            "database_url must not be empty when set",
        ));
    }

    let mail = validate_mail(raw.mail, dev)?;
    let rate_limit = validate_rate_limit(raw.rate_limit)?;

    let metrics = validate_metrics(raw.metrics, listen)?;

    Ok(Config {
        dev,
        log_level: raw.log_level,
        listen,
        public_url: public_url.to_string(),
        data_dir: raw.data_dir,
        secret_key,
        chats: raw.chats,
        admins: raw.admins,
        allow_guests: raw.allow_guests,
        allow_registration: raw.allow_registration,
        last_messages,
        poll_timeout,
        inactivity_timeout,
        session_max_age,
        event_queue_capacity,
        event_queue_idle_timeout,
        max_body_bytes,
        max_message_chars,
        password_iterations,
        durability: raw.durability,
        cors_origins,
        trusted_proxies,
        static_dir: raw.static_dir,
        database_url: raw.database_url.map(Secret),
        mail,
        rate_limit,
        metrics,
        bot: raw.bot,
    })
}

fn validate_names(chats: &[String], admins: &[String], bot_name: &str) -> Result<(), Invalid> {
    let mut seen = HashSet::new();
    for chat in chats {
        if !is_valid_chat_name(chat) {
            return Err(invalid(
                "chats",
                format!(
                    "chats: `{chat}` is not a valid chat name (1 to 64 characters, no control characters, \
                     no leading or trailing whitespace)"
                ),
            ));
        }
        if !seen.insert(chat.to_lowercase()) {
            return Err(invalid(
                "chats",
                format!("chats lists `{chat}` twice (chat names are case-insensitive)"),
            ));
        }
    }

    if !is_valid_user_name(bot_name) {
        return Err(invalid(
            "bot.name",
            format!(
                "bot.name `{}` is not a valid user name ({USER_NAME_RULE})",
                bot_name
            ),
        ));
    }
    for admin in admins {
        if !is_valid_user_name(admin) {
            return Err(invalid(
                "admins",
                format!("admins: `{admin}` is not a valid user name ({USER_NAME_RULE})"),
            ));
        }
        if admin.to_lowercase() == bot_name.to_lowercase() {
            return Err(invalid(
                "admins",
                format!(
                    "admins: `{admin}` is the bot's name (bot.name), which nobody can register"
                ),
            ));
        }
    }

    Ok(())
}

fn parse_proxy(proxy: &str) -> Result<IpNet, Invalid> {
    proxy
        .parse::<IpNet>()
        .or_else(|_| proxy.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| {
            invalid(
                "trusted_proxies",
                format!(
                    "trusted_proxies: `{proxy}` is not an IP address or CIDR range such as 127.0.0.1, \
                     10.0.0.0/8 or ::1"
                ),
            )
        })
}

fn validate_metrics(raw: RawMetrics, listen: SocketAddr) -> Result<MetricsConfig, Invalid> {
    let Some(text) = raw.listen else {
        return Ok(MetricsConfig::default());
    };
    let addr = parse_listen("metrics.listen", &text)?;
    // Same port on overlapping addresses would make one of the two binds fail at start.
    let overlaps =
        addr.ip() == listen.ip() || addr.ip().is_unspecified() || listen.ip().is_unspecified();
    if addr.port() != 0 && addr.port() == listen.port() && overlaps {
        return Err(invalid(
            "metrics.listen",
            format!("metrics.listen ({addr}) must use a different port from listen ({listen})"),
        ));
    }
    Ok(MetricsConfig { listen: Some(addr) })
}

fn validate_mail(raw: RawMail, dev: bool) -> Result<MailConfig, Invalid> {
    if !is_mail_address(&raw.from) {
        return Err(invalid(
            "mail.from",
            format!(
                "mail.from must be an email address such as natter@example.com, got `{}`",
                raw.from
            ),
        ));
    }
    let api = HttpUrl::parse(&raw.sendgrid_api_url).map_err(|why| {
        invalid(
            "mail.sendgrid_api_url",
            format!(
                "mail.sendgrid_api_url must be an http:// or https:// URL such as https://api.sendgrid.com; \
                 `{}` {why}",
                raw.sendgrid_api_url
            ),
        )
    })?;
    if raw
        .sendgrid_key
        .as_ref()
        .is_some_and(|k| k.trim().is_empty())
    {
        return Err(invalid(
            "mail.sendgrid_key",
            "mail.sendgrid_key must not be empty when set",
        ));
    }
    let provider = match (raw.provider, &raw.sendgrid_key) {
        (Some(MailProvider::Sendgrid), None) => {
            return Err(invalid(
                "mail.sendgrid_key",
                "mail.provider is \"sendgrid\" but mail.sendgrid_key is not set (set mail.sendgrid_key, \
                 SENDGRID_KEY or SENDGRID_KEY_FILE)",
            ));
        }
        (Some(provider), _) => provider,
        (None, Some(_)) => MailProvider::Sendgrid,
        (None, None) if dev => MailProvider::Log,
        (None, None) => MailProvider::None,
    };
    Ok(MailConfig {
        provider,
        from: raw.from,
        sendgrid_api_url: api.to_string(),
        sendgrid_key: raw.sendgrid_key.map(Secret),
    })
}

fn validate_rate_limit(raw: RateLimitConfig) -> Result<RateLimitConfig, Invalid> {
    in_range("rate_limit.account_burst", raw.account_burst, 1, 10_000)?;
    duration_in_range(
        "rate_limit.account_interval",
        raw.account_interval,
        Duration::from_millis(10),
        secs(3600),
    )?;
    in_range(
        "rate_limit.reset_requests_per_hour",
        raw.reset_requests_per_hour,
        1,
        1000,
    )?;
    in_range("rate_limit.message_burst", raw.message_burst, 1, 10_000)?;
    in_range(
        "rate_limit.messages_per_second",
        raw.messages_per_second,
        1,
        10_000,
    )?;
    in_range("rate_limit.request_burst", raw.request_burst, 1, 100_000)?;
    in_range(
        "rate_limit.requests_per_second",
        raw.requests_per_second,
        1,
        100_000,
    )?;
    Ok(raw)
}

const USER_NAME_RULE: &str = "1 to 32 letters, digits, `_`, `-` or `.`";

fn is_valid_user_name(name: &str) -> bool {
    (1..=32).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn is_valid_chat_name(name: &str) -> bool {
    (1..=64).contains(&name.chars().count())
        && !name.chars().any(char::is_control)
        && !name.starts_with(char::is_whitespace)
        && !name.ends_with(char::is_whitespace)
}

/// A plain `local@domain` address; the mailer's provider does the full check.
fn is_mail_address(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && text.len() <= 254
        && !text.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"')
        })
}

fn parse_listen(key: &str, text: &str) -> Result<SocketAddr, Invalid> {
    text.trim().parse::<SocketAddr>().map_err(|_| {
        invalid(
            key,
            format!("{key} must be an IP address and port such as 0.0.0.0:8080 or [::]:8080, got `{text}`"),
        )
    })
}

fn parse_origin(text: &str) -> Result<String, Invalid> {
    let form = "write scheme://host[:port] with http or https and no path, such as https://app.example.com";
    if text.trim() == "*" {
        return Err(invalid(
            "cors_origins",
            format!("cors_origins cannot contain `*` (credentials need exact origins); {form}"),
        ));
    }
    match HttpUrl::parse(text) {
        Ok(url) if url.path.is_empty() => Ok(url.origin()),
        Ok(_) => Err(invalid(
            "cors_origins",
            format!("cors_origins: `{text}` has a path; {form}"),
        )),
        Err(why) => Err(invalid(
            "cors_origins",
            format!("cors_origins: `{text}` is not an origin ({why}); {form}"),
        )),
    }
}

fn in_range<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, Invalid> {
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("{key} must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(value)
}

fn duration_in_range(
    key: &str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, Invalid> {
    if value < min || value > max {
        return Err(invalid(
            key,
            format!(
                "{key} must be between {} and {}, got {}",
                short_duration(min),
                short_duration(max),
                short_duration(value)
            ),
        ));
    }
    Ok(value)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The parts of an `http(s)://host[:port][/path]` URL that natter uses, normalized: lowercase scheme and host,
/// no default port, no trailing slash.
struct HttpUrl {
    https: bool,
    host: String,
    port: Option<u16>,
    path: String,
}

impl HttpUrl {
    /// Parses by hand: only this one shape is accepted, so a general URL parser is not needed.
    fn parse(text: &str) -> Result<Self, &'static str> {
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("contains whitespace");
        }
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("has no http:// or https:// scheme")?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err("has a scheme other than http or https"),
        };
        if rest.contains(['?', '#']) {
            return Err("has a query or fragment");
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err("contains a user name or password");
        }
        let (host, port) = split_host_port(authority)?;
        let default_port = if https { 443 } else { 80 };
        Ok(Self {
            https,
            host,
            port: port.filter(|&p| p != default_port),
            path: path.trim_end_matches('/').to_string(),
        })
    }

    fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        match self.port {
            Some(port) => format!("{scheme}://{}:{port}", self.host),
            None => format!("{scheme}://{}", self.host),
        }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.path)
    }
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), &'static str> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("has an IPv6 address without a closing `]`")?;
        let addr: Ipv6Addr = inside.parse().map_err(|_| "has an invalid IPv6 address")?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("has text after the IPv6 address")?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if !is_valid_host(host) {
            return Err("has a missing or invalid host");
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>()
        {
            Ok(port) if port != 0 => Some(port),
            _ => return Err("has a port outside 1 to 65535"),
        },
        Some(_) => return Err("has an invalid port"),
    };
    Ok((host, port))
}

/// A DNS name or IPv4 address in ASCII (internationalized names must be given in punycode).
fn is_valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

// ---------------------------------------------------------------------------------------------------------------
// Summary formatting

fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn string_list(items: &[String]) -> String {
    let values = items
        .iter()
        .map(|s| toml::Value::String(s.clone()))
        .collect();
    toml::Value::Array(values).to_string()
}

fn duration(value: Duration) -> String {
    quoted(&short_duration(value))
}

/// A duration in the one unit that states it exactly ("7d", "10m", "500ms"), as people write them in the file;
/// humantime's own format would print "7days" or "11months 30days 3h 50m 24s".
fn short_duration(value: Duration) -> String {
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

fn secret(value: Option<&Secret>) -> String {
    quoted(if value.is_some() {
        "<redacted>"
    } else {
        "<unset>"
    })
}

fn optional(value: Option<String>) -> String {
    quoted(value.as_deref().unwrap_or("<unset>"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    const KEY32: &str = "0123456789abcdef0123456789abcdef";

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Loads `file_text` from a temporary config file with this environment.
    fn load_with(file_text: &str, env: &[(&str, &str)], dev: bool) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, file_text).unwrap();
        load(&Sources {
            config_path: Some(path),
            dev,
            log_level: None,
            env: vars(env),
        })
    }

    fn error(text: &str) -> String {
        from_toml_str(text, false).unwrap_err().to_string()
    }

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

    #[test]
    fn file_values_override_defaults() {
        let c = from_toml_str(
            r#"
            log_level = "debug"
            listen = "127.0.0.1:9000"
            public_url = "https://chat.example.com/natter/"
            data_dir = "/var/lib/natter"
            chats = ["Main", "Random"]
            admins = ["alice"]
            allow_guests = false
            poll_timeout = "5s"
            session_max_age = "30d"
            durability = "relaxed"
            trusted_proxies = ["127.0.0.1"]
            [mail]
            from = "chat@example.com"
            sendgrid_api_url = "http://127.0.0.1:9999/"
            [rate_limit]
            enabled = false
            [bot]
            name = "Butler"
            "#,
            false,
        )
        .unwrap();
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.listen, "127.0.0.1:9000".parse::<SocketAddr>().unwrap());
        assert_eq!(c.public_url, "https://chat.example.com/natter");
        assert_eq!(c.public_origin(), "https://chat.example.com");
        assert!(c.secure_cookies());
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/natter"));
        assert_eq!(c.chats, vec!["Main".to_string(), "Random".to_string()]);
        assert_eq!(c.admins, vec!["alice".to_string()]);
        assert!(!c.allow_guests && c.allow_registration);
        assert_eq!(c.poll_timeout, Duration::from_secs(5));
        assert_eq!(c.session_max_age, Duration::from_secs(30 * 86_400));
        assert_eq!(c.durability, DurabilityMode::Relaxed);
        assert_eq!(c.mail.from, "chat@example.com");
        assert_eq!(c.mail.sendgrid_api_url, "http://127.0.0.1:9999");
        assert!(!c.rate_limit.enabled);
        assert_eq!(c.rate_limit.account_burst, 10);
        assert_eq!(c.bot.name, "Butler");
        assert!(c.bot.enabled);
    }

    #[test]
    fn environment_overrides_the_file() {
        let file =
            "last_messages = 10\nallow_guests = false\n[mail]\nfrom = \"file@example.com\"\n";
        let c = load_with(file, &[], false).unwrap();
        assert_eq!(
            (c.last_messages, c.mail.from.as_str()),
            (10, "file@example.com")
        );
        let env = [
            ("NATTER_LAST_MESSAGES", "20"),
            ("NATTER_MAIL__FROM", "env@example.com"),
            ("HOME", "/root"),
            ("PATH", "/usr/bin"),
        ];
        let c = load_with(file, &env, false).unwrap();
        assert_eq!(c.last_messages, 20);
        assert_eq!(c.mail.from, "env@example.com");
        assert!(
            !c.allow_guests,
            "keys the environment does not set keep the file's value"
        );
    }

    #[test]
    fn flags_override_environment_and_file() {
        let c = load_with("log_level = \"warn\"", &[], false).unwrap();
        assert_eq!(c.log_level, LogLevel::Warn);
        let c = load_with("log_level = \"warn\"", &[("NATTER_LOG", "DEBUG")], false).unwrap();
        assert_eq!(c.log_level, LogLevel::Debug);
        let env = [("NATTER_LOG", "debug"), ("NATTER_LOG_LEVEL", "error")];
        assert_eq!(
            load_with("", &env, false).unwrap().log_level,
            LogLevel::Error
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("natter.toml");
        std::fs::write(&path, "log_level = \"warn\"").unwrap();
        let c = load(&Sources {
            config_path: Some(path.clone()),
            dev: true,
            log_level: Some("trace".into()),
            env: vars(&[("NATTER_LOG", "debug")]),
        })
        .unwrap();
        assert_eq!(c.log_level, LogLevel::Trace);
        assert!(c.dev);
        let e = load(&Sources {
            config_path: Some(path),
            log_level: Some("loud".into()),
            ..Sources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("log_level") && e.contains("--log-level") && e.contains("trace"),
            "{e}"
        );
    }

    #[test]
    fn port_changes_only_the_port() {
        let file = "listen = \"127.0.0.1:9000\"";
        let c = load_with(file, &[("PORT", "3000")], false).unwrap();
        assert_eq!(c.listen, "127.0.0.1:3000".parse::<SocketAddr>().unwrap());
        let c = load_with("", &[("PORT", "3000")], false).unwrap();
        assert_eq!(c.listen, "0.0.0.0:3000".parse::<SocketAddr>().unwrap());
        // NATTER_* wins over the original names.
        let c = load_with(
            file,
            &[("PORT", "3000"), ("NATTER_LISTEN", "[::1]:7000")],
            false,
        )
        .unwrap();
        assert_eq!(c.listen, "[::1]:7000".parse::<SocketAddr>().unwrap());
        let e = load_with(file, &[("PORT", "http")], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("PORT") && e.contains("65535"), "{e}");
    }

    #[test]
    fn natter_variables_reach_nested_keys() {
        let env = [
            ("NATTER_MAIL__FROM", "bot@example.com"),
            ("NATTER_BOT__ENABLED", "false"),
            ("NATTER_BOT__NAME", "007"),
            ("NATTER_CHATS", r#"["General", "Off topic"]"#),
            ("NATTER_RATE_LIMIT__ENABLED", "false"),
            ("NATTER_RATE_LIMIT__MESSAGE_BURST", "7"),
            ("NATTER_POLL_TIMEOUT", "5s"),
            ("NATTER_METRICS__LISTEN", "127.0.0.1:9100"),
            ("NATTER_DURABILITY", "relaxed"),
            ("NATTER_PUBLIC_URL", "https://chat.example.com/"),
            ("NATTER_DATA_DIR", "\"/srv/natter\""),
            ("NATTER_STATIC_DIR", "/srv/web"),
            ("NATTER_ALLOW_REGISTRATION", "false"),
        ];
        let c = load_with("", &env, false).unwrap();
        assert_eq!(c.mail.from, "bot@example.com");
        assert!(!c.bot.enabled);
        assert_eq!(
            c.bot.name, "007",
            "string keys keep digit-only text as text"
        );
        assert_eq!(
            c.chats,
            vec!["General".to_string(), "Off topic".to_string()]
        );
        assert!(!c.rate_limit.enabled);
        assert_eq!(c.rate_limit.message_burst, 7);
        assert_eq!(c.poll_timeout, Duration::from_secs(5));
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.durability, DurabilityMode::Relaxed);
        assert_eq!(c.public_url, "https://chat.example.com");
        assert_eq!(c.data_dir, PathBuf::from("/srv/natter"));
        assert_eq!(c.static_dir, Some(PathBuf::from("/srv/web")));
        assert!(!c.allow_registration);
        // An empty variable counts as unset.
        let c = load_with("", &[("NATTER_LAST_MESSAGES", "")], false).unwrap();
        assert_eq!(c.last_messages, 50);
    }

    #[test]
    fn original_variable_names_work() {
        let env = [
            ("DATABASE_URL", "postgres://natter@localhost/natter"),
            ("SECRET_KEY", KEY32),
            ("SENDGRID_KEY", "SG.original"),
        ];
        let c = load_with("", &env, false).unwrap();
        assert_eq!(
            c.database_url.as_ref().map(Secret::expose),
            Some("postgres://natter@localhost/natter")
        );
        assert_eq!(c.secret_key.as_ref().map(Secret::expose), Some(KEY32));
        assert_eq!(
            c.mail.sendgrid_key.as_ref().map(Secret::expose),
            Some("SG.original")
        );
        assert_eq!(c.mail.provider, MailProvider::Sendgrid);
    }

    #[test]
    fn natter_variables_win_over_original_names() {
        let other_key = "ffffffffffffffffffffffffffffffffff";
        let env = [
            ("SECRET_KEY", KEY32),
            ("NATTER_SECRET_KEY", other_key),
            ("SENDGRID_KEY", "SG.original"),
            ("NATTER_MAIL__SENDGRID_KEY", "SG.natter"),
        ];
        let c = load_with("", &env, false).unwrap();
        assert_eq!(c.secret_key.as_ref().map(Secret::expose), Some(other_key));
        assert_eq!(
            c.mail.sendgrid_key.as_ref().map(Secret::expose),
            Some("SG.natter")
        );
    }

    #[test]
    fn secrets_are_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let secret = write("secret", &format!("{KEY32}\n"));
        let sendgrid = write("sendgrid", "SG.from-file\r\n");
        let database = write("database", "postgres://db/natter");
        let env = [
            ("SECRET_KEY_FILE", secret.as_str()),
            ("SENDGRID_KEY_FILE", sendgrid.as_str()),
            ("DATABASE_URL_FILE", database.as_str()),
        ];
        let c = load_with("", &env, false).unwrap();
        assert_eq!(c.secret_key.as_ref().map(Secret::expose), Some(KEY32));
        assert_eq!(
            c.mail.sendgrid_key.as_ref().map(Secret::expose),
            Some("SG.from-file")
        );
        assert_eq!(
            c.database_url.as_ref().map(Secret::expose),
            Some("postgres://db/natter")
        );

        let natter = write("natter-secret", &format!("{KEY32}-natter\n"));
        let c = load_with(
            "",
            &[("SECRET_KEY", KEY32), ("NATTER_SECRET_KEY_FILE", &natter)],
            false,
        )
        .unwrap();
        assert_eq!(
            c.secret_key.map(|s| s.expose().to_string()),
            Some(format!("{KEY32}-natter"))
        );

        let missing = dir.path().join("missing").display().to_string();
        let e = load_with("", &[("SECRET_KEY_FILE", &missing)], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("SECRET_KEY_FILE") && e.contains(&missing), "{e}");
        let e = load_with(
            "",
            &[("SECRET_KEY_FILE", &secret), ("SECRET_KEY", KEY32)],
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("SECRET_KEY") && e.contains("SECRET_KEY_FILE"),
            "{e}"
        );
        // A short secret from a file names the key and the variable, not the value.
        let short = write("short", "tooshort\n");
        let e = load_with("", &[("SECRET_KEY_FILE", &short)], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("secret_key") && e.contains("32") && e.contains("SECRET_KEY_FILE"),
            "{e}"
        );
        assert!(!e.contains("tooshort"), "{e}");
    }

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

    #[test]
    fn invalid_values_name_the_key_and_the_allowed_range() {
        let cases = [
            (
                "last_messages = 0",
                "last_messages must be between 1 and 1000",
            ),
            (
                "last_messages = 1001",
                "last_messages must be between 1 and 1000",
            ),
            (
                "poll_timeout = \"11m\"",
                "poll_timeout must be between 1s and 10m",
            ),
            (
                "poll_timeout = \"0s\"",
                "poll_timeout must be between 1s and 10m",
            ),
            (
                "inactivity_timeout = \"2d\"",
                "inactivity_timeout must be between 1s and 1d, got 2d",
            ),
            (
                "session_max_age = \"400d\"",
                "session_max_age must be between 1s and 365d",
            ),
            (
                "event_queue_capacity = 5",
                "event_queue_capacity must be between 10 and 100000",
            ),
            (
                "event_queue_idle_timeout = \"8d\"",
                "event_queue_idle_timeout must be between 1s and 7d",
            ),
            (
                "max_body_bytes = 100",
                "max_body_bytes must be between 1024 and 16777216",
            ),
            (
                "max_body_bytes = 2048",
                "max_body_bytes must be at least 4 × max_message_chars + 1024",
            ),
            (
                "max_message_chars = 0",
                "max_message_chars must be between 1 and 100000",
            ),
            (
                "password_iterations = 20000000",
                "password_iterations must be between 1000 and 10000000",
            ),
            (
                "listen = \"localhost:8080\"",
                "listen must be an IP address and port",
            ),
            (
                "public_url = \"ftp://example.com\"",
                "public_url must be an http:// or https:// URL",
            ),
            (
                "public_url = \"https://\"",
                "public_url must be an http:// or https:// URL",
            ),
            ("public_url = \"https://a.com/?x=1\"", "public_url must be"),
            ("public_url = \"https://a.com:99999\"", "public_url must be"),
            ("data_dir = \"\"", "data_dir must not be empty"),
            (
                "secret_key = \"short\"",
                "secret_key must be at least 32 bytes",
            ),
            (
                "chats = [\" Main\"]",
                "chats: ` Main` is not a valid chat name (1 to 64 characters",
            ),
            ("chats = [\"\"]", "is not a valid chat name"),
            ("chats = [\"Main\", \"MAIN\"]", "chats lists `MAIN` twice"),
            (
                "admins = [\"bad name\"]",
                "admins: `bad name` is not a valid user name (1 to 32",
            ),
            ("admins = [\"bot\"]", "admins: `bot` is the bot's name"),
            (
                "cors_origins = [\"https://a.com/app\"]",
                "cors_origins: `https://a.com/app` has a path",
            ),
            ("cors_origins = [\"*\"]", "cors_origins cannot contain `*`"),
            (
                "cors_origins = [\"a.com\"]",
                "cors_origins: `a.com` is not an origin",
            ),
            (
                "trusted_proxies = [\"10.0.0.0/33\"]",
                "trusted_proxies: `10.0.0.0/33` is not an IP address",
            ),
            ("static_dir = \"\"", "static_dir must not be empty"),
            ("database_url = \"\"", "database_url must not be empty"),
            (
                "[mail]\nfrom = \"natter\"",
                "mail.from must be an email address",
            ),
            (
                "[mail]\nsendgrid_api_url = \"api.sendgrid.com\"",
                "mail.sendgrid_api_url must be an http",
            ),
            (
                "[mail]\nsendgrid_key = \"\"",
                "mail.sendgrid_key must not be empty",
            ),
            (
                "[rate_limit]\naccount_burst = 0",
                "rate_limit.account_burst must be between 1 and 10000",
            ),
            (
                "[rate_limit]\naccount_interval = \"2h\"",
                "rate_limit.account_interval must be between 10ms and 1h",
            ),
            (
                "[rate_limit]\nmessages_per_second = 0",
                "rate_limit.messages_per_second must be between 1 and",
            ),
            (
                "[metrics]\nlisten = \"9090\"",
                "metrics.listen must be an IP address and port",
            ),
            (
                "[metrics]\nlisten = \"127.0.0.1:8080\"",
                "metrics.listen (127.0.0.1:8080) must use a different port",
            ),
            (
                "[bot]\nname = \"The Bot\"",
                "bot.name `The Bot` is not a valid user name",
            ),
            (
                "log_level = \"loud\"",
                "config key `log_level`: `loud` is not a log level",
            ),
        ];
        for (text, expected) in cases {
            let e = error(text);
            assert!(
                e.contains(expected),
                "{text:?} gave {e:?}, expected {expected:?}"
            );
            assert!(!e.contains('\n'), "{e:?}");
        }
    }

    #[test]
    fn few_password_iterations_need_dev_mode() {
        let e = error("password_iterations = 5000");
        assert!(
            e.contains("password_iterations") && e.contains("100000") && e.contains("--dev"),
            "{e}"
        );
        assert_eq!(
            from_toml_str("password_iterations = 5000", true)
                .unwrap()
                .password_iterations,
            5000
        );
        assert_eq!(
            from_toml_str("password_iterations = 1000", true)
                .unwrap()
                .password_iterations,
            1000
        );
        let e = from_toml_str("password_iterations = 999", true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("password_iterations must be between 1000 and 10000000"),
            "{e}"
        );
        assert!(from_toml_str("password_iterations = 100000", false).is_ok());
    }

    #[test]
    fn mail_provider_defaults_follow_the_key_and_the_mode() {
        let provider = |text: &str, dev: bool| from_toml_str(text, dev).map(|c| c.mail.provider);
        assert_eq!(provider("", false), Ok(MailProvider::None));
        assert_eq!(provider("", true), Ok(MailProvider::Log));
        let with_key = "[mail]\nsendgrid_key = \"SG.key\"";
        assert_eq!(provider(with_key, false), Ok(MailProvider::Sendgrid));
        assert_eq!(provider(with_key, true), Ok(MailProvider::Sendgrid));
        assert_eq!(
            provider("[mail]\nprovider = \"log\"", false),
            Ok(MailProvider::Log)
        );
        let none_with_key = "[mail]\nprovider = \"none\"\nsendgrid_key = \"SG.key\"";
        assert_eq!(provider(none_with_key, false), Ok(MailProvider::None));
        let e = error("[mail]\nprovider = \"sendgrid\"");
        assert!(
            e.contains("mail.sendgrid_key") && e.contains("SENDGRID_KEY"),
            "{e}"
        );
        let c = load_with(
            "[mail]\nprovider = \"sendgrid\"",
            &[("SENDGRID_KEY", "SG.env")],
            false,
        )
        .unwrap();
        assert_eq!(c.mail.provider, MailProvider::Sendgrid);
    }

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
        // The summary is itself a loadable config file once the placeholders are dropped.
        let loadable: Vec<&str> = summary.lines().filter(|l| !l.contains("<unset>")).collect();
        assert_eq!(
            from_toml_str(&loadable.join("\n"), true),
            from_toml_str("", true)
        );

        let sources = Sources {
            env: vars(&[("SECRET_KEY", KEY32)]),
            ..Sources::default()
        };
        assert!(!format!("{sources:?}").contains(KEY32));
    }

    #[test]
    fn missing_config_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        let e = load(&Sources {
            config_path: Some(path.clone()),
            ..Sources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("does not exist"),
            "{e}"
        );
        let e = load_with("listen = ", &[], false).unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn without_a_path_the_working_directory_file_or_defaults_apply() {
        // cargo runs tests in the package directory, whose config.toml is the sample (equal to the defaults).
        assert_eq!(load(&Sources::default()), from_toml_str("", false));
    }

    #[test]
    fn origins_are_normalized_and_checked() {
        let c = from_toml_str(
            "public_url = \"HTTPS://Chat.Example.com:443/natter/\"\n\
             cors_origins = [\"https://App.Example.com/\", \"http://[::1]:3000\"]",
            false,
        )
        .unwrap();
        assert_eq!(c.public_url, "https://chat.example.com/natter");
        assert_eq!(c.public_origin(), "https://chat.example.com");
        assert_eq!(
            c.cors_origins,
            vec!["https://app.example.com", "http://[::1]:3000"]
        );
        assert!(c.allows_cross_origin("https://app.example.com"));
        assert!(c.allows_cross_origin("https://app.example.com:443"));
        assert!(c.allows_cross_origin("http://[::1]:3000"));
        assert!(!c.allows_cross_origin("http://app.example.com"));
        assert!(!c.allows_cross_origin("https://evil.example.com"));
        assert!(!c.allows_cross_origin("null"));
        assert!(!c.allows_cross_origin("http://localhost:5173"));
        let dev = from_toml_str("public_url = \"http://localhost:8080\"", true).unwrap();
        assert!(dev.allows_cross_origin("http://localhost:5173"));
        assert!(dev.allows_cross_origin("http://127.0.0.1:3000"));
        assert!(!dev.allows_cross_origin("https://example.com"));
        let c = from_toml_str("public_url = \"http://10.0.0.5:8080\"", false).unwrap();
        assert_eq!(c.public_origin(), "http://10.0.0.5:8080");
    }

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

    #[test]
    fn names_follow_the_validation_rules() {
        assert!(is_valid_user_name("Ünsal_1.x-y"));
        assert!(!is_valid_user_name(""));
        assert!(!is_valid_user_name(&"a".repeat(33)));
        assert!(!is_valid_user_name("a b"));
        assert!(is_valid_chat_name("Off topic ☕"));
        assert!(!is_valid_chat_name(&"c".repeat(65)));
        assert!(!is_valid_chat_name("tab\there"));
        assert!(!is_valid_chat_name("trailing "));
        let c = from_toml_str(
            "chats = [\"Main\", \"Off topic\"]\nadmins = [\"Alice\", \"bob.b\"]",
            false,
        );
        assert!(c.is_ok());
    }
}
