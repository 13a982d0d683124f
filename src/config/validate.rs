//! Turning the layered raw values into a [`Config`]: formats, ranges, and the rules that tie keys together.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::key_errors::{Invalid, invalid};
use super::raw::{RawConfig, RawMail, RawMetrics};
use super::summary::short_duration;
use super::url::HttpUrl;
use super::{
    Config, IpNet, MIN_PRODUCTION_PASSWORD_ITERATIONS, MailConfig, MailProvider, MetricsConfig,
    RateLimitConfig, Secret,
};
use crate::model::{ChatName, UserName};

/// How errors describe the user name rule of `UserName::parse`.
const USER_NAME_RULE: &str = "1 to 32 letters, digits, `_`, `-` or `.`";

/// Checks every key; `port` is the `PORT` variable, which replaces only the port of `listen`.
pub(super) fn validate(raw: RawConfig, dev: bool, port: Option<u16>) -> Result<Config, Invalid> {
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

    let header_read_timeout = duration_in_range(
        "header_read_timeout",
        raw.header_read_timeout,
        secs(1),
        secs(600),
    )?;
    let body_read_timeout = duration_in_range(
        "body_read_timeout",
        raw.body_read_timeout,
        secs(1),
        secs(3600),
    )?;
    let max_connections = in_range("max_connections", raw.max_connections, 1, 1_000_000)?;
    let max_connections_per_ip = in_range(
        "max_connections_per_ip",
        raw.max_connections_per_ip,
        1,
        max_connections,
    )?;
    let max_queues_per_session = in_range(
        "max_queues_per_session",
        raw.max_queues_per_session,
        1,
        1000,
    )?;
    let max_sessions_per_user = in_range(
        "max_sessions_per_user",
        raw.max_sessions_per_user,
        1,
        10_000,
    )?;

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
        header_read_timeout,
        body_read_timeout,
        max_connections,
        max_connections_per_ip,
        max_queues_per_session,
        max_sessions_per_user,
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

fn parse_listen(key: &str, text: &str) -> Result<SocketAddr, Invalid> {
    text.trim().parse::<SocketAddr>().map_err(|_| {
        invalid(
            key,
            format!("{key} must be an IP address and port such as 0.0.0.0:8080 or [::]:8080, got `{text}`"),
        )
    })
}

/// One `cors_origins` entry, normalized to `scheme://host[:port]`.
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

/// One `trusted_proxies` entry: a CIDR range, or a single address as a one-address range.
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
