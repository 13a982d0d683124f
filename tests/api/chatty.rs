//! Coming from chatty-server (docs/migrating.md): its command line in every Go `flag` form, and its config.toml, against the
//! real binary.

use crate::helpers::Served;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `natter ARGS` in `dir` (so that no ./config.toml is picked up by accident).
fn natter(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(args)
        .current_dir(dir)
        .env_remove("NATTER_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A natter config whose values show in `check-config`, and that serves on a free loopback port.
fn natter_config(dir: &Path) -> PathBuf {
    let path = dir.join("from-flag.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nchats = [\"FromTheFile\"]\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// The ways to name the config file: the original's flags in every Go form, and natter's own.
fn config_forms(path: &str) -> Vec<Vec<String>> {
    let mut forms = Vec::new();
    for name in ["config", "configFilepath"] {
        for dashes in ["-", "--"] {
            forms.push(vec![format!("{dashes}{name}={path}")]);
            forms.push(vec![format!("{dashes}{name}"), path.to_owned()]);
        }
    }
    forms.push(vec!["-c".into(), path.to_owned()]);
    forms
}

/// The ways to set the log level, with the level each sets.
fn log_level_forms() -> Vec<(Vec<String>, &'static str)> {
    let mut forms = Vec::new();
    for (name, level) in [("loglevel", "debug"), ("logLevel", "trace")] {
        for dashes in ["-", "--"] {
            forms.push((vec![format!("{dashes}{name}={level}")], level));
            forms.push((vec![format!("{dashes}{name}"), level.to_owned()], level));
        }
    }
    forms.push((vec!["--log-level".into(), "warn".into()], "warn"));
    forms
}

/// The ways to turn dev mode on or off.
const DEV_FORMS: [(&[&str], bool); 7] = [
    (&["-dev"], true),
    (&["--dev"], true),
    (&["-dev=true"], true),
    (&["--dev=true"], true),
    (&["-dev=false"], false),
    (&["--dev=false"], false),
    (&[], false),
];

#[test]
fn every_go_flag_form_takes_effect_before_or_after_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = natter_config(dir.path());
    let config = config.to_str().unwrap();
    let levels = log_level_forms();
    let mut case = 0;
    for config_form in config_forms(config) {
        for after_the_command in [false, true] {
            // Every dev and log level form comes up with several config forms and both positions.
            let (dev_form, dev) = DEV_FORMS[case % DEV_FORMS.len()];
            let (level_form, level) = &levels[case % levels.len()];
            case += 1;
            let mut options: Vec<&str> = dev_form.to_vec();
            options.extend(config_form.iter().map(String::as_str));
            options.extend(level_form.iter().map(String::as_str));
            let args = if after_the_command {
                [&["check-config"][..], &options].concat()
            } else {
                [&options[..], &["check-config"]].concat()
            };
            let out = natter(dir.path(), &args);
            let stdout = text(&out.stdout);
            assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
            let mode = if dev {
                "(dev mode)"
            } else {
                "(production mode)"
            };
            assert!(
                stdout.starts_with(&format!("# natter effective configuration {mode}")),
                "{args:?}: {stdout}"
            );
            assert!(
                stdout.contains("chats = [\"FromTheFile\"]"),
                "{args:?}: {stdout}"
            );
            assert!(
                stdout.contains(&format!("log_level = \"{level}\"")),
                "{args:?}: {stdout}"
            );
        }
    }
    assert_eq!(case, 18);

    // A bad value is still refused naming the key and the flag, as the operator typed it.
    for (args, flag) in [
        (&["-loglevel=loud"][..], "(set by -loglevel)"),
        (&["-logLevel", "warning"], "(set by -logLevel)"),
        (&["--log-level", "warning"], "(set by --log-level)"),
    ] {
        let out = natter(
            dir.path(),
            &[&["-config", config], args, &["check-config"]].concat(),
        );
        assert_eq!(out.status.code(), Some(2));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("log_level") && stderr.contains(flag),
            "{args:?}: {stderr}"
        );
    }
    let out = natter(dir.path(), &["-dev=maybe", "check-config"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
}

/// GET /healthz on a served natter.
async fn healthz(served: &Served) -> (u16, String) {
    let response = reqwest::get(served.url("/healthz")).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Sends something that is not HTTP, so that natter logs the connection's end at debug level.
async fn send_garbage(served: &Served) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(&served.addr).await.unwrap();
    stream
        .write_all(b"\x00\x01 not http\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
}

#[tokio::test]
async fn the_server_starts_with_the_original_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = natter_config(dir.path());
    let config = config.to_str().unwrap();
    for (args, dev) in [
        (
            vec!["-dev", "-configFilepath", config, "-logLevel", "debug"],
            true,
        ),
        (
            vec![
                "--dev=true",
                &format!("--config={config}"),
                "--loglevel=debug",
            ],
            true,
        ),
        (
            vec![
                "serve",
                "-config",
                config,
                "-loglevel",
                "debug",
                "-dev=false",
            ],
            false,
        ),
    ] {
        let joined = args.join(" ");
        let os_args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let mut served = Served::start_with_args(&os_args);
        let mode = if dev { "(dev mode" } else { "(production mode" };
        let announced = served
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("listening on 127.0.0.1:") && l.contains(mode));
        assert!(announced, "{joined:?}: {:?}", served.log.lock().unwrap());
        assert_eq!(healthz(&served).await.0, 200, "{joined:?}");
        send_garbage(&served).await;
        let mut debug_line = false;
        for _ in 0..100 {
            debug_line = served
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("DEBUG connection from"));
            if debug_line {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(debug_line, "{joined:?}: {:?}", served.log.lock().unwrap());
        served.signal("-TERM");
        assert_eq!(served.child.wait().unwrap().code(), Some(0));
    }
}

/// chatty-server's config.toml with all eight keys, in the mixed case BurntSushi/toml accepted.
const ORIGINAL_CONFIG: &str = r#"
serverListenAddress = "127.0.0.1:0"
CleanInactiveUsersInterval = "30s"
inactivitytimeout = "1m30s"
CookieMaxAge = 86400
REQUESTTIMEOUT = "20s"
ResponseTimeout = "45s"
Chats = ["Main", "Golang"]
LastMessages = 20
"#;

#[test]
fn an_original_config_file_is_accepted_and_check_config_shows_the_mapped_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, ORIGINAL_CONFIG).unwrap();
    let path = path.to_str().unwrap();

    let out = natter(dir.path(), &["check-config", "-configFilepath", path]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    for line in [
        "listen = \"127.0.0.1:0\"",
        "inactivity_timeout = \"90s\"",
        "session_max_age = \"1d\"",
        "header_read_timeout = \"20s\"",
        "body_read_timeout = \"20s\"",
        "poll_timeout = \"44s\"",
        "chats = [\"Main\", \"Golang\"]",
        "last_messages = 20",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    // One note per key, naming the natter key to write instead; none on stdout, which stays a natter file.
    assert_eq!(stderr.lines().count(), 8, "{stderr}");
    for (original, natter_key) in [
        ("serverListenAddress", "listen"),
        ("CleanInactiveUsersInterval", "inactivity_timeout"),
        ("inactivitytimeout", "inactivity_timeout"),
        ("CookieMaxAge", "session_max_age"),
        ("REQUESTTIMEOUT", "header_read_timeout"),
        ("ResponseTimeout", "poll_timeout"),
        ("Chats", "chats"),
        ("LastMessages", "last_messages"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("`{original}`")) && l.contains(natter_key)),
            "{original}: {stderr}"
        );
    }
    assert!(!stdout.contains("chatty"), "{stdout}");

    // A file that mixes both styles; natter's key wins over the original's.
    let mixed = format!(
        "{ORIGINAL_CONFIG}last_messages = 30\nmax_message_chars = 100\n[bot]\nname = \"Helper\"\n"
    );
    std::fs::write(path, &mixed).unwrap();
    let out = natter(dir.path(), &["check-config", "--config", path]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("last_messages = 30") && stdout.contains("max_message_chars = 100"),
        "{stdout}"
    );
    assert!(
        stdout.contains("name = \"Helper\"") && stdout.contains("poll_timeout = \"44s\""),
        "{stdout}"
    );
    assert!(
        text(&out.stderr)
            .contains("`last_messages` is also set in the file and natter's value wins")
    );

    // A key that is neither natter's nor the original's is refused, by name.
    std::fs::write(path, format!("{ORIGINAL_CONFIG}ChatColour = \"red\"\n")).unwrap();
    let out = natter(dir.path(), &["check-config", "-config", path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown config key `ChatColour`"),
        "{}",
        text(&out.stderr)
    );
    // So is a value outside natter's range, naming the original key that set it.
    std::fs::write(path, ORIGINAL_CONFIG.replace("\"1m30s\"", "\"48h\"")).unwrap();
    let out = natter(dir.path(), &["check-config", "-config", path]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("inactivity_timeout must be between 1s and 1d")
            && stderr.contains("inactivitytimeout"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_server_on_an_original_config_file_logs_each_mapped_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let data_dir = format!("data_dir = \"{}\"\n", dir.path().join("data").display());
    std::fs::write(&path, format!("{ORIGINAL_CONFIG}{data_dir}")).unwrap();
    let mut served =
        Served::start_with_args(&["-dev".as_ref(), "-config".as_ref(), path.as_os_str()]);
    let (status, body) = healthz(&served).await;
    assert_eq!(status, 200, "{body}");
    let log = served.log.lock().unwrap().clone();
    let notes: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("WARN config key `"))
        .collect();
    assert_eq!(notes.len(), 8, "{log:#?}");
    served.signal("-TERM");
    assert_eq!(served.child.wait().unwrap().code(), Some(0));
}
