//! Merging the sources over the file's table: environment variables, `*_FILE` secrets and flags, each later one
//! winning. Every value set here remembers its variable or flag, so that an error can name it.

use std::collections::{BTreeMap, HashMap};

use super::key_errors::{Invalid, shape_error};
use super::keys::{RawConfig, is_secret, secret_keys};
use super::validate::validate;
use super::{Config, ConfigError};

/// The original server's secret variables and the keys they set.
const ORIGINAL_SECRET_VARS: [(&str, &str); 3] = [
    ("SECRET_KEY", "secret_key"),
    ("DATABASE_URL", "database_url"),
    ("SENDGRID_KEY", "mail.sendgrid_key"),
];

/// The merged TOML tree plus where each non-file value came from, for error messages.
pub(super) struct Layers {
    table: toml::Table,
    /// Dotted key → the variable or flag that set it.
    origins: HashMap<String, String>,
    /// `PORT`, applied to `listen` after parsing.
    port: Option<u16>,
}

impl Layers {
    /// Starts from the file's table; keys that no layer sets get their defaults in `build`.
    pub(super) fn new(table: toml::Table) -> Self {
        Self {
            table,
            origins: HashMap::new(),
            port: None,
        }
    }

    /// Records that the file's value for a dotted key came from somewhere errors should name (an original key).
    pub(super) fn note_origin(&mut self, dotted: &str, origin: String) {
        self.origins.insert(dotted.to_string(), origin);
    }

    /// Sets a dotted key, recording the variable or flag (`origin`) that set it.
    pub(super) fn set(&mut self, dotted: &str, value: toml::Value, origin: &str) {
        let path: Vec<&str> = dotted.split('.').collect();
        set_path(&mut self.table, &path, value);
        self.origins.insert(dotted.to_string(), origin.to_string());
    }

    /// Applies `NATTER_*`, the original server's variables and their `*_FILE` forms.
    pub(super) fn apply_env(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
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
            if is_secret(&dotted) || dotted.strip_suffix("_file").is_some_and(is_secret) {
                continue; // handled below, with their *_FILE forms
            }
            let path: Vec<&str> = dotted.split('.').collect();
            let value = env_value(&schema, &path, text);
            self.set(&dotted, value, var);
        }
        for key in secret_keys() {
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

    /// Fills in the defaults and validates; errors name the variable or flag that set the key.
    pub(super) fn build(self, dev: bool) -> Result<Config, ConfigError> {
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

/// The text as one TOML value (`5`, `false`, `["a"]`, `"quoted"`), if it is one.
fn parse_toml_value(text: &str) -> Option<toml::Value> {
    let mut doc: toml::Table = toml::from_str(&format!("value = {text}")).ok()?;
    // A value with a newline could smuggle in more keys; only a lone value counts.
    if doc.len() != 1 {
        return None;
    }
    doc.remove("value")
}

/// The value at a key path, if every step exists.
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

/// Sets the value at a key path, creating tables on the way and replacing non-tables in it.
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::config::test_support::{KEY32, load_with, vars};
    use crate::config::{DurabilityMode, LogLevel, MailProvider, Secret, Sources};
    use crate::config::{from_toml_str, load};

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
            log_level_flag: None,
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

        // The original's default key is refused in production with how to make one, and accepted with --dev.
        let short = [("SECRET_KEY", "1234567890")];
        let e = load_with("", &short, false).unwrap_err().to_string();
        assert!(
            e.contains("secret_key must be at least 32 bytes long (it has 10")
                && e.contains("openssl rand -base64 32")
                && e.ends_with("(set by SECRET_KEY)"),
            "{e}"
        );
        let c = load_with("", &short, true).unwrap();
        assert_eq!(
            c.secret_key.as_ref().map(Secret::expose),
            Some("1234567890")
        );
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
}
