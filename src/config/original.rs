//! chatty-server's config file, read as natter's: its keys are rewritten into natter's in the file's table, before
//! the table is deserialized, so a file can mix both styles and everything after (environment, flags, checks,
//! `check-config`) sees natter's keys only.
//!
//! Its keys match ignoring case, as BurntSushi/toml matched them (natter's own `chats` is natter's, not the
//! original's). Durations are Go duration strings (`"60s"`, `"1m30s"`, `"1.5h"`). Each key read gives one note
//! for the log that names the natter key to write instead. When the file also sets that natter key, natter's wins.
//!
//! | original | natter |
//! |---|---|
//! | `ServerListenAddress` | `listen` (`":8080"` means all interfaces, `0.0.0.0:8080`; `localhost` is `127.0.0.1`) |
//! | `CleanInactiveUsersInterval` | none: the sweeper runs every quarter of `inactivity_timeout` (at most every 5 s) |
//! | `InactivityTimeout` | `inactivity_timeout` |
//! | `CookieMaxAge` (whole seconds) | `session_max_age` |
//! | `RequestTimeout` | Go's `http.Server.ReadTimeout`, so both `header_read_timeout` and `body_read_timeout` |
//! | `ResponseTimeout` | `poll_timeout` = `ResponseTimeout` − 1 s (the original held a poll that long) |
//! | `Chats` | `chats` |
//! | `LastMessages` | `last_messages` |

use std::time::Duration;

use super::ConfigError;
use super::summary::short_duration;

/// chatty-server's keys, in the order its config struct declares them.
const ORIGINAL_KEYS: [&str; 8] = [
    "ServerListenAddress",
    "CleanInactiveUsersInterval",
    "InactivityTimeout",
    "CookieMaxAge",
    "RequestTimeout",
    "ResponseTimeout",
    "Chats",
    "LastMessages",
];

/// What reading the original's keys did to the table.
#[derive(Debug, Default)]
pub(super) struct Translated {
    /// One line per original key, for the log.
    pub(super) notes: Vec<String>,
    /// natter key → the original key that set it, so that an invalid value names what the file says.
    pub(super) origins: Vec<(String, String)>,
}

/// What one original key becomes.
enum Mapping {
    /// These natter keys with these values; `why` explains the mapping where it is not a plain rename.
    Set {
        keys: Vec<(&'static str, toml::Value)>,
        why: &'static str,
    },
    /// Read and checked, but natter has nothing to set; the text says why.
    Ignored(&'static str),
}

/// Rewrites the original's keys in the file's top-level table into natter's.
pub(super) fn translate(table: &mut toml::Table) -> Result<Translated, ConfigError> {
    let mut out = Translated::default();
    for original in ORIGINAL_KEYS {
        let spellings: Vec<String> = table
            .keys()
            .filter(|k| k.eq_ignore_ascii_case(original) && k.as_str() != "chats")
            .cloned()
            .collect();
        let spelled = match spellings.as_slice() {
            [] => continue,
            [one] => one.clone(),
            [a, b, ..] => {
                return Err(ConfigError::new(format!(
                    "config keys `{a}` and `{b}` are both chatty-server's {original} (its keys ignore case); \
                     keep one"
                )));
            }
        };
        let Some(value) = table.remove(&spelled) else {
            continue;
        };
        let note = match map_key(original, &spelled, value)? {
            Mapping::Ignored(why) => {
                format!("config key `{spelled}` (chatty-server's) is ignored: {why}")
            }
            Mapping::Set { keys, why } => {
                let mut applied = Vec::new();
                let mut kept = Vec::new();
                for (key, value) in keys {
                    if table.contains_key(key) {
                        kept.push(format!("`{key}`"));
                        continue;
                    }
                    applied.push(format!("{key} = {value}"));
                    let origin = if original == "ResponseTimeout" {
                        format!("{spelled} minus 1s in the config file")
                    } else {
                        format!("{spelled} in the config file")
                    };
                    out.origins.push((key.to_string(), origin));
                    table.insert(key.to_string(), value);
                }
                let mut parts = Vec::new();
                if !applied.is_empty() {
                    let those = if applied.len() == 1 { "that" } else { "those" };
                    parts.push(format!(
                        "read as {}{why}; write {those} instead",
                        applied.join(" and ")
                    ));
                }
                if !kept.is_empty() {
                    let verb = if kept.len() == 1 { "is" } else { "are" };
                    parts.push(format!(
                        "{} {verb} also set in the file and natter's value wins",
                        kept.join(" and ")
                    ));
                }
                format!(
                    "config key `{spelled}` is chatty-server's: {}",
                    parts.join("; ")
                )
            }
        };
        out.notes.push(note);
    }
    Ok(out)
}

/// The natter keys and values for one original key; `spelled` is how the file writes it.
fn map_key(original: &str, spelled: &str, value: toml::Value) -> Result<Mapping, ConfigError> {
    let set = |key: &'static str, value: toml::Value| Mapping::Set {
        keys: vec![(key, value)],
        why: "",
    };
    Ok(match original {
        "ServerListenAddress" => {
            let toml::Value::String(text) = value else {
                return Err(ConfigError::new(format!(
                    "config key `{spelled}` must be a string such as \":8080\" or \"127.0.0.1:8080\""
                )));
            };
            set("listen", toml::Value::String(listen_address(&text)))
        }
        "CleanInactiveUsersInterval" => {
            go_duration(spelled, &value)?;
            Mapping::Ignored(
                "natter has no such key; its sweeper runs every quarter of inactivity_timeout (at most every \
                 5s), so an idle session goes offline within 1.25 × inactivity_timeout",
            )
        }
        "InactivityTimeout" => set(
            "inactivity_timeout",
            duration_value(go_duration(spelled, &value)?),
        ),
        "CookieMaxAge" => {
            let seconds = match value {
                toml::Value::Integer(n) => u64::try_from(n).ok(),
                _ => None,
            };
            let Some(seconds) = seconds else {
                return Err(ConfigError::new(format!(
                    "config key `{spelled}` must be a whole number of seconds, 0 or more, such as 604800 (7 days)"
                )));
            };
            set(
                "session_max_age",
                duration_value(Duration::from_secs(seconds)),
            )
        }
        "RequestTimeout" => {
            let value = duration_value(go_duration(spelled, &value)?);
            Mapping::Set {
                keys: vec![
                    ("header_read_timeout", value.clone()),
                    ("body_read_timeout", value),
                ],
                why: " (chatty-server's HTTP read timeout covered both the headers and the body)",
            }
        }
        "ResponseTimeout" => {
            let wait = go_duration(spelled, &value)?.saturating_sub(Duration::from_secs(1));
            Mapping::Set {
                keys: vec![("poll_timeout", duration_value(wait))],
                why: " (chatty-server held a poll for ResponseTimeout minus 1s)",
            }
        }
        "Chats" => set("chats", value),
        _ => set("last_messages", value),
    })
}

/// Go's listen address as natter's: `":8080"` is every interface, `"localhost:8080"` the loopback address.
fn listen_address(text: &str) -> String {
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        return format!("0.0.0.0:{port}");
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        return format!("127.0.0.1:{port}");
    }
    text.to_string()
}

/// A duration as natter's file writes it (`"90s"`).
fn duration_value(value: Duration) -> toml::Value {
    toml::Value::String(short_duration(value))
}

/// The Go duration string in an original key.
fn go_duration(spelled: &str, value: &toml::Value) -> Result<Duration, ConfigError> {
    let example = "a Go duration string such as \"60s\", \"1m30s\" or \"1.5h\"";
    let toml::Value::String(text) = value else {
        return Err(ConfigError::new(format!(
            "config key `{spelled}` must be {example}"
        )));
    };
    parse_go_duration(text).map_err(|why| {
        ConfigError::new(format!(
            "config key `{spelled}` must be {example}; `{text}` {why}"
        ))
    })
}

/// What Go's `time.ParseDuration` accepts, without a sign: `"0"` or numbers (with an optional fraction), each
/// with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such as `"300ms"`, `"1.5h"` or `"2h45m"`. A fraction
/// finer than a nanosecond is cut off, as Go does.
pub(super) fn parse_go_duration(text: &str) -> Result<Duration, &'static str> {
    let text = text.trim();
    let text = text.strip_prefix('+').unwrap_or(text);
    if text.starts_with('-') {
        return Err("is negative");
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("is empty");
    }
    let mut rest = text;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let (whole, after) = split_digits(rest);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => split_digits(after),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err("has a unit without a number");
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err("has a number without a unit (ns, us, ms, s, m or h)"),
            _ => return Err("has an unknown unit (use ns, us, ms, s, m or h)"),
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| "is too long")?
        };
        // Digits past the 20th are below a nanosecond for every unit.
        let fraction = &fraction[..fraction.len().min(20)];
        let fraction_nanos = if fraction.is_empty() {
            0
        } else {
            let numerator: u128 = fraction.parse().map_err(|_| "is too long")?;
            numerator * per_unit / 10u128.pow(fraction.len() as u32)
        };
        nanos = whole
            .checked_mul(per_unit)
            .and_then(|n| n.checked_add(fraction_nanos))
            .and_then(|n| n.checked_add(nanos))
            .ok_or("is too long")?;
        rest = after;
    }
    // Go's limit: an int64 of nanoseconds, about 292 years.
    let nanos = u64::try_from(nanos)
        .ok()
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or("is too long")?;
    Ok(Duration::from_nanos(nanos))
}

/// The leading ASCII digits and the rest.
fn split_digits(text: &str) -> (&str, &str) {
    let len = text.bytes().take_while(u8::is_ascii_digit).count();
    text.split_at(len)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::{parse_go_duration, translate};
    use crate::config::file::parse_toml_table;
    use crate::config::test_support::{error, load_with};
    use crate::config::{from_toml_str, load_with_notes};

    /// An original config.toml with every key, spelled in mixed case as BurntSushi/toml allowed.
    const ORIGINAL: &str = r#"
        ServerListenAddress = ":9090"
        cleaninactiveusersinterval = "30s"
        InactivityTimeout = "1m30s"
        COOKIEMAXAGE = 86400
        RequestTimeout = "20s"
        responseTimeout = "45s"
        Chats = ["Main", "Go"]
        LastMessages = 20
    "#;

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        for (text, expected) in [
            ("0", Duration::ZERO),
            ("60s", s(60)),
            ("1m30s", s(90)),
            ("2h45m", s(2 * 3600 + 45 * 60)),
            ("1.5h", s(5400)),
            (".5s", ms(500)),
            ("1.s", s(1)),
            ("300ms", ms(300)),
            ("+10s", s(10)),
            (
                "1h1m1s1ms1us1ns",
                s(3661) + ms(1) + Duration::from_nanos(1001),
            ),
            ("2µs", Duration::from_micros(2)),
            ("2μs", Duration::from_micros(2)),
            ("1.0000000019s", Duration::from_nanos(1_000_000_001)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
        }
        for (text, why) in [
            ("", "empty"),
            ("60", "without a unit"),
            ("1m30", "without a unit"),
            ("5 s", "unknown unit"),
            ("1d", "unknown unit"),
            ("-5s", "negative"),
            ("s", "without a number"),
            (".s", "without a number"),
            ("3000000h", "too long"),
            ("99999999999999999999999999999999999999999h", "too long"),
        ] {
            let e = parse_go_duration(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn an_original_config_file_is_read_as_natters_keys() {
        let c = from_toml_str(ORIGINAL, false).unwrap();
        assert_eq!(c.listen, "0.0.0.0:9090".parse::<SocketAddr>().unwrap());
        assert_eq!(c.inactivity_timeout, Duration::from_secs(90));
        assert_eq!(c.session_max_age, Duration::from_secs(86_400));
        assert_eq!(c.header_read_timeout, Duration::from_secs(20));
        assert_eq!(c.body_read_timeout, Duration::from_secs(20));
        assert_eq!(c.poll_timeout, Duration::from_secs(44));
        assert_eq!(c.chats, ["Main", "Go"]);
        assert_eq!(c.last_messages, 20);
        // Everything else keeps natter's defaults.
        assert_eq!(c.event_queue_capacity, 4096);

        let summary = c.effective_summary();
        for line in [
            "listen = \"0.0.0.0:9090\"",
            "inactivity_timeout = \"90s\"",
            "session_max_age = \"1d\"",
            "header_read_timeout = \"20s\"",
            "body_read_timeout = \"20s\"",
            "poll_timeout = \"44s\"",
            "chats = [\"Main\", \"Go\"]",
            "last_messages = 20",
        ] {
            assert!(summary.contains(line), "{line} in {summary}");
        }
    }

    #[test]
    fn each_original_key_gives_one_note_naming_the_natter_key() {
        let mut table = parse_toml_table(ORIGINAL, "<text>".as_ref()).unwrap();
        let notes = translate(&mut table).unwrap().notes;
        assert_eq!(notes.len(), 8, "{notes:#?}");
        let expected = [
            ("ServerListenAddress", "listen = \"0.0.0.0:9090\""),
            ("cleaninactiveusersinterval", "inactivity_timeout"),
            ("InactivityTimeout", "inactivity_timeout = \"90s\""),
            ("COOKIEMAXAGE", "session_max_age = \"1d\""),
            (
                "RequestTimeout",
                "header_read_timeout = \"20s\" and body_read_timeout = \"20s\"",
            ),
            ("responseTimeout", "poll_timeout = \"44s\""),
            ("Chats", "chats = [\"Main\", \"Go\"]"),
            ("LastMessages", "last_messages = 20"),
        ];
        for (note, (key, natter)) in notes.iter().zip(expected) {
            assert!(note.starts_with(&format!("config key `{key}`")), "{note}");
            assert!(note.contains(natter), "{note}");
            assert!(!note.contains('\n'), "{note}");
        }
        assert!(notes[1].contains("ignored"), "{}", notes[1]);
        assert!(notes[0].contains("write that instead"), "{}", notes[0]);
        assert!(notes[4].contains("write those instead"), "{}", notes[4]);
        // Only natter's keys are left for the deserializer.
        let keys: Vec<&String> = table.keys().collect();
        assert_eq!(
            keys,
            [
                "body_read_timeout",
                "chats",
                "header_read_timeout",
                "inactivity_timeout",
                "last_messages",
                "listen",
                "poll_timeout",
                "session_max_age"
            ]
        );
    }

    #[test]
    fn a_mixed_file_works_and_natters_keys_win() {
        let text = r#"
            listen = "127.0.0.1:7000"
            ServerListenAddress = ":9090"
            chats = ["Natter"]
            Chats = ["Original"]
            header_read_timeout = "5s"
            RequestTimeout = "20s"
            LastMessages = 10
            max_message_chars = 100
            [bot]
            name = "Helper"
        "#;
        let c = from_toml_str(text, false).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7000".parse::<SocketAddr>().unwrap());
        assert_eq!(c.chats, ["Natter"]);
        assert_eq!(c.header_read_timeout, Duration::from_secs(5));
        assert_eq!(c.body_read_timeout, Duration::from_secs(20));
        assert_eq!(c.last_messages, 10);
        assert_eq!(c.max_message_chars, 100);
        assert_eq!(c.bot.name, "Helper");

        let mut table = parse_toml_table(text, "<text>".as_ref()).unwrap();
        let notes = translate(&mut table).unwrap().notes;
        assert!(
            notes[0].contains("`listen` is also set in the file and natter's value wins"),
            "{notes:#?}"
        );
        assert!(
            notes[1].contains("body_read_timeout = \"20s\"")
                && notes[1].contains("`header_read_timeout` is also set"),
            "{notes:#?}"
        );
        assert!(notes[2].contains("`chats` is also set"), "{notes:#?}");
    }

    #[test]
    fn listen_addresses_in_go_form() {
        for (original, natter) in [
            (":8080", "0.0.0.0:8080"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("localhost:8081", "127.0.0.1:8081"),
            ("[::1]:8080", "[::1]:8080"),
        ] {
            let c = from_toml_str(&format!("ServerListenAddress = \"{original}\""), false).unwrap();
            assert_eq!(
                c.listen,
                natter.parse::<SocketAddr>().unwrap(),
                "{original}"
            );
        }
    }

    #[test]
    fn invalid_original_values_are_refused_naming_the_key() {
        for (text, expected) in [
            ("Colour = \"red\"", "unknown config key `Colour`"),
            ("Listen = \":80\"", "unknown config key `Listen`"),
            (
                "InactivityTimeout = \"1 minute\"",
                "config key `InactivityTimeout` must be a Go duration string",
            ),
            (
                "InactivityTimeout = 60",
                "config key `InactivityTimeout` must be a Go duration string",
            ),
            (
                "CleanInactiveUsersInterval = \"soon\"",
                "`CleanInactiveUsersInterval` must be a Go duration",
            ),
            (
                "CookieMaxAge = \"7d\"",
                "config key `CookieMaxAge` must be a whole number of seconds",
            ),
            ("CookieMaxAge = -1", "`CookieMaxAge` must be a whole number"),
            (
                "ServerListenAddress = 8080",
                "config key `ServerListenAddress` must be a string",
            ),
            (
                "InactivityTimeout = \"2d\"",
                "config key `InactivityTimeout` must be a Go duration",
            ),
            // Out of natter's range: natter's message, naming the original key that set it.
            (
                "InactivityTimeout = \"48h\"",
                "inactivity_timeout must be between 1s and 1d, got 2d (set by InactivityTimeout in the \
                 config file)",
            ),
            (
                "ResponseTimeout = \"1s\"",
                "poll_timeout must be between 1s and 10m, got 0s (set by ResponseTimeout minus 1s",
            ),
            (
                "CookieMaxAge = 0",
                "session_max_age must be between 1s and 365d, got 0s (set by CookieMaxAge",
            ),
            (
                "LastMessages = 5000",
                "last_messages must be between 1 and 1000, got 5000 (set by LastMessages",
            ),
            (
                "ServerListenAddress = \"chat.example.com:80\"",
                "listen must be an IP address and port",
            ),
            ("Chats = \"Main\"", "config key `chats`: invalid type"),
            (
                "LastMessages = 5\nlastmessages = 6",
                "config keys `LastMessages` and `lastmessages` are both chatty-server's LastMessages",
            ),
        ] {
            let e = error(text);
            assert!(
                e.contains(expected),
                "{text:?} gave {e:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn the_environment_still_wins_over_original_keys() {
        let c = load_with(
            "InactivityTimeout = \"90s\"\nServerListenAddress = \"127.0.0.1:9000\"",
            &[("NATTER_INACTIVITY_TIMEOUT", "2m"), ("PORT", "3000")],
            false,
        )
        .unwrap();
        assert_eq!(c.inactivity_timeout, Duration::from_secs(120));
        assert_eq!(c.listen, "127.0.0.1:3000".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn load_returns_the_notes_for_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("original.toml");
        std::fs::write(&path, ORIGINAL).unwrap();
        let loaded = load_with_notes(&crate::config::Sources {
            config_path: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(loaded.notes.len(), 8);
        assert_eq!(loaded.config.last_messages, 20);
    }
}
