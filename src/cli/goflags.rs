//! chatty-server's command line, as Go's `flag` package reads it, rewritten into natter's before clap parses it.
//!
//! Go treats `-name` and `--name` alike, takes a value as `-name=v` or `-name v`, and a boolean as `-name`,
//! `-name=true` or `-name=false`. clap cannot read single-dash long flags (`-dev` would be `-d -e -v`, `-config`
//! would be `-c onfig`), so the original's flags are rewritten here into natter's long forms:
//!
//! | original (any case, `-` or `--`) | natter |
//! |---|---|
//! | `dev`, `dev=BOOL` | `--dev`, `--dev=BOOL` |
//! | `config`, `configFilepath` (the original's README) | `--config` |
//! | `loglevel`, `logLevel` (the original's README), `log-level` | `--log-level` |
//!
//! A value given as a separate argument is joined with `=` (`-config x` becomes `--config=x`), so that a value
//! that starts with `-` stays a value, as it does in Go. Everything else is left alone: natter's short flags
//! (`-c PATH`, whose value is skipped), other arguments, and everything after `--`. An argument that is not
//! UTF-8 is passed through; only the `-name VALUE` form then carries a non-UTF-8 value.

use std::ffi::OsString;

/// Whether a flag is a boolean (no separate value) or takes a value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Value,
}

/// Go-style names (matched ignoring ASCII case), natter's long flag for each, and its kind.
const GO_FLAGS: [(&str, &str, Kind); 6] = [
    ("dev", "--dev", Kind::Bool),
    ("config", "--config", Kind::Value),
    ("configFilepath", "--config", Kind::Value),
    ("loglevel", "--log-level", Kind::Value),
    ("logLevel", "--log-level", Kind::Value),
    ("log-level", "--log-level", Kind::Value),
];

/// natter's short options whose value is the next argument; that value is never rewritten.
const SHORT_WITH_VALUE: [&str; 1] = ["-c"];

/// The arguments rewritten for clap, and how the operator spelled each flag that was read.
pub struct Normalized {
    pub args: Vec<OsString>,
    /// natter's long flag and the name as typed (`--log-level`, `-logLevel`), in command-line order.
    pub spellings: Vec<(&'static str, String)>,
}

impl Normalized {
    /// The name the operator typed for the last `long` flag given (the one that wins), so that
    /// messages name the flag they know.
    pub fn spelling(&self, long: &str) -> Option<&str> {
        self.spellings
            .iter()
            .rev()
            .find(|(l, _)| *l == long)
            .map(|(_, typed)| typed.as_str())
    }
}

/// Rewrites the original's Go-style flags into natter's; the first argument (the program) is kept as it is.
pub fn normalize_go_flags<I>(args: I) -> Vec<OsString>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    normalize(args).args
}

/// [`normalize_go_flags`], remembering how each flag was spelled.
pub fn normalize<I>(args: I) -> Normalized
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut args = args.into_iter().map(Into::into);
    let mut out: Vec<OsString> = args.next().into_iter().collect();
    let mut spellings = Vec::new();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            out.extend(args);
            break;
        }
        if SHORT_WITH_VALUE.contains(&text) {
            out.push(arg);
            out.extend(args.next());
            continue;
        }
        let Some((long, kind, inline)) = go_flag(text) else {
            out.push(arg);
            continue;
        };
        let typed = text.split_once('=').map_or(text, |(name, _)| name);
        spellings.push((long, typed.to_owned()));
        match (kind, inline) {
            (_, Some(value)) => out.push(format!("{long}={value}").into()),
            (Kind::Bool, None) => out.push(long.into()),
            (Kind::Value, None) => match args.next() {
                Some(value) => {
                    let mut joined = OsString::from(format!("{long}="));
                    joined.push(value);
                    out.push(joined);
                }
                // clap then says that the flag needs a value.
                None => out.push(long.into()),
            },
        }
    }
    Normalized {
        args: out,
        spellings,
    }
}

/// natter's long flag, its kind and the `=value` part, if `text` is one of the original's flags.
fn go_flag(text: &str) -> Option<(&'static str, Kind, Option<&str>)> {
    let bare = text.strip_prefix("--").or_else(|| text.strip_prefix('-'))?;
    let (name, value) = match bare.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (bare, None),
    };
    GO_FLAGS
        .iter()
        .find(|(go, _, _)| go.eq_ignore_ascii_case(name))
        .map(|&(_, long, kind)| (long, kind, value))
}

#[cfg(test)]
mod tests {
    use super::normalize_go_flags;

    fn normalized(args: &[&str]) -> Vec<String> {
        let mut all = vec!["natter"];
        all.extend_from_slice(args);
        normalize_go_flags(all)
            .into_iter()
            .skip(1)
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn booleans_take_every_go_form() {
        for (args, expected) in [
            (vec!["-dev"], vec!["--dev"]),
            (vec!["--dev"], vec!["--dev"]),
            (vec!["-dev=true"], vec!["--dev=true"]),
            (vec!["-dev=false"], vec!["--dev=false"]),
            (vec!["--dev=false"], vec!["--dev=false"]),
            (vec!["-Dev=0"], vec!["--dev=0"]),
            // Go does not read `-dev false` as a value either: `false` stays an argument.
            (vec!["-dev", "check-config"], vec!["--dev", "check-config"]),
        ] {
            assert_eq!(normalized(&args), expected, "{args:?}");
        }
    }

    #[test]
    fn values_take_every_go_form_and_every_spelling() {
        for flag in ["config", "configFilepath", "configfilepath"] {
            for dashes in ["-", "--"] {
                let f = format!("{dashes}{flag}");
                assert_eq!(normalized(&[&f, "x.toml"]), ["--config=x.toml"], "{f}");
                let f = format!("{dashes}{flag}=x.toml");
                assert_eq!(normalized(&[&f]), ["--config=x.toml"], "{f}");
            }
        }
        for flag in ["loglevel", "logLevel", "LOGLEVEL", "log-level"] {
            for dashes in ["-", "--"] {
                let f = format!("{dashes}{flag}");
                assert_eq!(normalized(&[&f, "debug"]), ["--log-level=debug"], "{f}");
                let f = format!("{dashes}{flag}=debug");
                assert_eq!(normalized(&[&f]), ["--log-level=debug"], "{f}");
            }
        }
        // A value is taken as it is, as Go takes it, even when it starts with `-` or holds `=`.
        assert_eq!(normalized(&["-config", "-dev"]), ["--config=-dev"]);
        assert_eq!(normalized(&["-config=a=b.toml"]), ["--config=a=b.toml"]);
        assert_eq!(normalized(&["-config="]), ["--config="]);
        // No value at the end: clap reports it.
        assert_eq!(normalized(&["-loglevel"]), ["--log-level"]);
    }

    #[test]
    fn natter_arguments_and_everything_after_double_dash_stay() {
        let same = [
            vec!["-c", "-dev"],
            vec!["-c", "x.toml", "check-config"],
            vec!["-cx.toml"],
            vec!["-h"],
            vec!["--help"],
            vec!["-V"],
            vec!["user", "verify", "alice"],
            vec!["chat", "create", "-"],
            vec!["--", "-dev", "-config", "x"],
            vec!["-devel"],
            vec!["--configs=x"],
        ];
        for args in same {
            assert_eq!(normalized(&args), args, "{args:?}");
        }
        assert_eq!(
            normalized(&["check-config", "-config", "x", "--", "-dev"]),
            ["check-config", "--config=x", "--", "-dev"]
        );
        assert_eq!(
            normalized(&["-dev", "-configFilepath", "a.toml", "-logLevel", "trace"]),
            ["--dev", "--config=a.toml", "--log-level=trace"]
        );
        assert!(normalize_go_flags(Vec::<String>::new()).is_empty());
        assert_eq!(normalize_go_flags(["natter"]), ["natter"]);
    }

    #[test]
    fn the_flag_is_remembered_as_typed() {
        let spelled = |args: &[&str]| {
            let mut all = vec!["natter"];
            all.extend_from_slice(args);
            super::normalize(all)
                .spelling("--log-level")
                .map(str::to_owned)
        };
        assert_eq!(
            spelled(&["-logLevel", "warning"]).as_deref(),
            Some("-logLevel")
        );
        assert_eq!(spelled(&["-loglevel=loud"]).as_deref(), Some("-loglevel"));
        assert_eq!(
            spelled(&["--log-level", "x"]).as_deref(),
            Some("--log-level")
        );
        // Given twice, the later one wins, as in clap.
        assert_eq!(
            spelled(&["--log-level=x", "check-config", "--LOGLEVEL", "y"]).as_deref(),
            Some("--LOGLEVEL")
        );
        assert_eq!(spelled(&["-dev", "--", "-logLevel", "x"]), None);
        assert_eq!(spelled(&["-c", "-logLevel"]), None);
    }

    #[cfg(unix)]
    #[test]
    fn values_that_are_not_utf8_are_kept() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![b'a', 0xff, b'.', b't']);
        let out = normalize_go_flags([
            OsString::from("natter"),
            OsString::from("-config"),
            odd.clone(),
        ]);
        let mut expected = OsString::from("--config=");
        expected.push(&odd);
        assert_eq!(out[1], expected);
        let out = normalize_go_flags([OsString::from("natter"), odd.clone()]);
        assert_eq!(out[1], odd);
    }
}
