//! Turning the layered raw values into a [`Config`]: each key's own check from the key table, then the rules that
//! tie keys together.

use std::collections::HashSet;

use super::checks::in_range;
use super::key_errors::{Invalid, invalid};
use super::keys::RawConfig;
use super::{
    Config, MIN_PRODUCTION_PASSWORD_ITERATIONS, MIN_SECRET_KEY_BYTES, MailConfig, MailProvider,
    Secret, StorageKind,
};
use crate::model::{ChatName, UserName};

/// How errors describe the user name rule of `UserName::parse`.
const USER_NAME_RULE: &str = "1 to 32 letters, digits, `_`, `-` or `.`";

/// Checks every key; `port` is the `PORT` variable, which replaces only the port of `listen`.
pub(super) fn validate(raw: RawConfig, dev: bool, port: Option<u16>) -> Result<Config, Invalid> {
    // The provider's default depends on other keys, so the rule needs to know whether it was set.
    let provider_unset = raw.mail.provider.is_none();
    let mut config = raw.check(dev)?;
    if let Some(port) = port {
        config.listen.set_port(port);
    }
    // Port 0 is known only once bound: `build` follows the bound address then.
    if config.listen.port() != 0 {
        config.follow_served_address(config.listen);
    }

    // The rules that tie keys together, after every key passed its own check.
    validate_names(&config.chats, &config.admins, &config.bot.name)?;
    body_fits_longest_message(&config)?;
    in_range(
        "max_connections_per_ip",
        config.max_connections_per_ip,
        1,
        config.max_connections,
    )?;
    enough_iterations_outside_dev(config.password_iterations, dev)?;
    long_secret_key_outside_dev(config.secret_key.as_ref(), dev)?;
    choose_mail_provider(&mut config.mail, provider_unset, dev)?;
    metrics_port_differs(&config)?;
    postgres_storage_has_a_database(&config)?;
    cluster_needs_postgres(&config)?;
    Ok(config)
}

/// Several nodes share one PostgreSQL database: sled belongs to one process.
fn cluster_needs_postgres(config: &Config) -> Result<(), Invalid> {
    if config.cluster && config.storage != StorageKind::Postgres {
        return Err(invalid(
            "cluster",
            "cluster = true needs storage = \"postgres\": several nodes share one PostgreSQL \
             database (docs/operations.md, Running several nodes)"
                .to_owned(),
        ));
    }
    Ok(())
}

/// `storage = "postgres"` keeps everything in the database at `database_url`.
fn postgres_storage_has_a_database(config: &Config) -> Result<(), Invalid> {
    if config.storage == StorageKind::Postgres && config.database_url.is_none() {
        return Err(invalid(
            "storage",
            "storage = \"postgres\" needs database_url (or DATABASE_URL, DATABASE_URL_FILE): \
             the PostgreSQL database to keep everything in"
                .to_owned(),
        ));
    }
    Ok(())
}

/// A character takes up to 4 bytes of UTF-8; 1 KiB more covers the JSON around the text.
fn body_fits_longest_message(config: &Config) -> Result<(), Invalid> {
    let needed = config.max_message_chars * 4 + 1024;
    if config.max_body_bytes < needed {
        return Err(invalid(
            "max_body_bytes",
            format!(
                "max_body_bytes must be at least 4 × max_message_chars + 1024 = {needed} so that the longest \
                 message fits, got {}",
                config.max_body_bytes
            ),
        ));
    }
    Ok(())
}

/// Fewer rounds than production needs are for quick tests and development only.
fn enough_iterations_outside_dev(iterations: u32, dev: bool) -> Result<(), Invalid> {
    if iterations < MIN_PRODUCTION_PASSWORD_ITERATIONS && !dev {
        return Err(invalid(
            "password_iterations",
            format!(
                "password_iterations must be at least {MIN_PRODUCTION_PASSWORD_ITERATIONS} (got \
                 {iterations}); values from 1000 are only allowed in dev mode (--dev)"
            ),
        ));
    }
    Ok(())
}

/// A short cookie key (chatty-server's default was `1234567890`) is refused, saying how to make a good one; dev
/// mode accepts it and `build` stretches it with a warning. The error gives the length, never the value.
fn long_secret_key_outside_dev(secret: Option<&Secret>, dev: bool) -> Result<(), Invalid> {
    let len = secret.map_or(MIN_SECRET_KEY_BYTES, |s| s.expose().len());
    if len < MIN_SECRET_KEY_BYTES && !dev {
        return Err(invalid(
            "secret_key",
            format!(
                "secret_key must be at least {MIN_SECRET_KEY_BYTES} bytes long (it has {len}; only --dev accepts \
                 a shorter one); generate one with `openssl rand -base64 32` or `head -c 32 /dev/urandom | \
                 base64`, or unset it to have natter keep a generated one in data_dir"
            ),
        ));
    }
    Ok(())
}

/// Chats, admins and the bot's name follow the same rules as names created through the API.
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

fn is_valid_user_name(name: &str) -> bool {
    UserName::parse(name).is_ok()
}

fn is_valid_chat_name(name: &str) -> bool {
    ChatName::parse(name).is_ok()
}

/// An unset mail.provider is sendgrid with a key, else log in dev mode, else none; sendgrid needs the key.
fn choose_mail_provider(mail: &mut MailConfig, unset: bool, dev: bool) -> Result<(), Invalid> {
    if unset {
        mail.provider = match (&mail.sendgrid_key, dev) {
            (Some(_), _) => MailProvider::Sendgrid,
            (None, true) => MailProvider::Log,
            (None, false) => MailProvider::None,
        };
    }
    if mail.provider == MailProvider::Sendgrid && mail.sendgrid_key.is_none() {
        return Err(invalid(
            "mail.sendgrid_key",
            "mail.provider is \"sendgrid\" but mail.sendgrid_key is not set (set mail.sendgrid_key, \
             SENDGRID_KEY or SENDGRID_KEY_FILE)",
        ));
    }
    Ok(())
}

/// Same port on overlapping addresses would make one of the two binds fail at start.
fn metrics_port_differs(config: &Config) -> Result<(), Invalid> {
    let Some(addr) = config.metrics.listen else {
        return Ok(());
    };
    let listen = config.listen;
    let overlaps =
        addr.ip() == listen.ip() || addr.ip().is_unspecified() || listen.ip().is_unspecified();
    if addr.port() != 0 && addr.port() == listen.port() && overlaps {
        return Err(invalid(
            "metrics.listen",
            format!("metrics.listen ({addr}) must use a different port from listen ({listen})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{is_valid_chat_name, is_valid_user_name};
    use crate::config::test_support::{error, load_with};
    use crate::config::{MailProvider, from_toml_str};

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
                "storage = \"postgres\"",
                "storage = \"postgres\" needs database_url",
            ),
            ("storage = \"mysql\"", "storage"),
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
