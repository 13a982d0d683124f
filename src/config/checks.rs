//! The per-key checks the key table names: each takes the dotted key and its raw value, and returns the typed
//! value or an error that names the key and what it allows.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::key_errors::{Invalid, invalid};
use super::summary::short_duration;
use super::url::HttpUrl;
use super::{IpNet, PublicUrl, Secret};

/// No check of its own: serde already checked the type, or a rule in `validate` checks it with other keys.
pub(super) fn plain<T>(_key: &str, value: T) -> Result<T, Invalid> {
    Ok(value)
}

/// A number from `min` to `max`.
pub(super) fn range<T>(min: T, max: T) -> impl Fn(&str, T) -> Result<T, Invalid>
where
    T: PartialOrd + fmt::Display + Copy,
{
    move |key, value| in_range(key, value, min, max)
}

/// A duration from `min` to `max`.
pub(super) fn duration(
    min: Duration,
    max: Duration,
) -> impl Fn(&str, Duration) -> Result<Duration, Invalid> {
    move |key, value| duration_in_range(key, value, min, max)
}

/// The raw value's `check` applied when the key is set.
pub(super) fn optional<A, B>(
    check: impl Fn(&str, A) -> Result<B, Invalid>,
) -> impl Fn(&str, Option<A>) -> Result<Option<B>, Invalid> {
    move |key, value| value.map(|v| check(key, v)).transpose()
}

/// `check` applied to every item of a list.
pub(super) fn each<A, B>(
    check: impl Fn(&str, A) -> Result<B, Invalid>,
) -> impl Fn(&str, Vec<A>) -> Result<Vec<B>, Invalid> {
    move |key, items| items.into_iter().map(|item| check(key, item)).collect()
}

/// `public_url`: an http(s) URL when set; unset, the default that `validate` may adapt.
pub(super) fn public_url(key: &str, value: Option<String>) -> Result<PublicUrl, Invalid> {
    match value {
        Some(text) => http_url("https://chat.example.com, optionally with a path")(key, text)
            .map(PublicUrl::given),
        None => Ok(PublicUrl::unset(PublicUrl::DEFAULT.into())),
    }
}

/// An unset key means `value`; a rule in `validate` may choose otherwise.
pub(super) fn unset_means<T: Copy>(value: T) -> impl Fn(&str, Option<T>) -> Result<T, Invalid> {
    move |_key, set| Ok(set.unwrap_or(value))
}

/// An IP address and port.
pub(super) fn socket_addr(key: &str, text: String) -> Result<SocketAddr, Invalid> {
    text.trim().parse::<SocketAddr>().map_err(|_| {
        invalid(
            key,
            format!("{key} must be an IP address and port such as 0.0.0.0:8080 or [::]:8080, got `{text}`"),
        )
    })
}

/// An `http(s)://host[:port][/path]` URL, normalized; `example` is shown in the error.
pub(super) fn http_url(example: &'static str) -> impl Fn(&str, String) -> Result<String, Invalid> {
    move |key, text| match HttpUrl::parse(&text) {
        Ok(url) => Ok(url.to_string()),
        Err(why) => Err(invalid(
            key,
            format!("{key} must be an http:// or https:// URL such as {example}; `{text}` {why}"),
        )),
    }
}

/// A directory that must not be empty.
pub(super) fn non_empty_dir(key: &str, dir: PathBuf) -> Result<PathBuf, Invalid> {
    if dir.as_os_str().is_empty() {
        return Err(invalid(key, format!("{key} must not be empty")));
    }
    Ok(dir)
}

/// An optional directory that must not be empty when set.
pub(super) fn optional_dir(key: &str, dir: Option<PathBuf>) -> Result<Option<PathBuf>, Invalid> {
    if dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
        return Err(invalid(key, format!("{key} must not be empty when set")));
    }
    Ok(dir)
}

/// A node's name: empty (the host name), or up to 63 letters, digits, '.', '_' and '-'.
pub(super) fn node_name(key: &str, text: String) -> Result<String, Invalid> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if text.len() > 63 || !text.chars().all(allowed) {
        return Err(invalid(
            key,
            format!("{key} takes up to 63 letters, digits, '.', '_' and '-', got `{text}`"),
        ));
    }
    Ok(text)
}

/// An optional secret that must not be blank when set.
pub(super) fn non_empty_secret(
    key: &str,
    value: Option<String>,
) -> Result<Option<Secret>, Invalid> {
    if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
        return Err(invalid(key, format!("{key} must not be empty when set")));
    }
    Ok(value.map(Secret))
}

/// A plain `local@domain` address; the mailer's provider does the full check.
pub(super) fn mail_address(key: &str, text: String) -> Result<String, Invalid> {
    let valid = text.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && text.len() <= 254
            && !text.chars().any(|c| {
                c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"')
            })
    });
    if !valid {
        return Err(invalid(
            key,
            format!("{key} must be an email address such as natter@example.com, got `{text}`"),
        ));
    }
    Ok(text)
}

/// One origin allowed with credentials, normalized to `scheme://host[:port]`.
pub(super) fn origin(key: &str, text: String) -> Result<String, Invalid> {
    let form = "write scheme://host[:port] with http or https and no path, such as https://app.example.com";
    if text.trim() == "*" {
        return Err(invalid(
            key,
            format!("{key} cannot contain `*` (credentials need exact origins); {form}"),
        ));
    }
    match HttpUrl::parse(&text) {
        Ok(url) if url.path.is_empty() => Ok(url.origin()),
        Ok(_) => Err(invalid(key, format!("{key}: `{text}` has a path; {form}"))),
        Err(why) => Err(invalid(
            key,
            format!("{key}: `{text}` is not an origin ({why}); {form}"),
        )),
    }
}

/// A CIDR range, or a single address as a one-address range.
pub(super) fn ip_range(key: &str, text: String) -> Result<IpNet, Invalid> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| {
            invalid(
                key,
                format!(
                    "{key}: `{text}` is not an IP address or CIDR range such as 127.0.0.1, 10.0.0.0/8 or ::1"
                ),
            )
        })
}

/// `value` from `min` to `max`, else an error naming `key`; also used by the rules in `validate`.
pub(super) fn in_range<T: PartialOrd + fmt::Display>(
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

/// Milliseconds, for the table's durations.
pub(super) const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Seconds.
pub(super) const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Minutes.
pub(super) const fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

/// Hours.
pub(super) const fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

/// Days.
pub(super) const fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}
