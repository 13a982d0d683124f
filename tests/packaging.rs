//! The files in `packaging/`: the systemd unit passes `systemd-analyze` (verify silent, exposure
//! at most 2.0), and the production config passes `check-config` and serves.
//!
//! Without `systemd-analyze` the unit checks are skipped with a notice on a developer machine and
//! fail in CI (`CI=true`). `packaging/check.sh` checks the same files as packaged in the .deb.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Highest `systemd-analyze security` exposure accepted for the unit.
const MAX_EXPOSURE: f64 = 2.0;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `systemd-analyze`, or `None` (after a notice) on a developer machine without it.
fn systemd_analyze() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("systemd-analyze"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !in_ci,
            "systemd-analyze is missing; CI must install it (apt-get install systemd)"
        );
        eprintln!("NOTICE: systemd-analyze not found; the unit file checks are skipped");
    }
    found
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let out = Command::new(analyze)
        .arg("verify")
        .arg(repo("packaging/natter.service"))
        .output()
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    // verify checks that ExecStart's binary exists; /usr/bin/natter is there once the .deb is
    // installed (packaging/check.sh verifies it so in CI), not on a developer machine.
    let installed = Path::new("/usr/bin/natter").exists();
    let complaints: Vec<&str> = all
        .lines()
        .filter(|l| installed || !l.contains("Command /usr/bin/natter is not executable"))
        .collect();
    assert!(complaints.is_empty(), "systemd-analyze verify: {all}");
}

#[test]
fn the_unit_exposure_is_at_most_2() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let out = Command::new(analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(repo("packaging/natter.service"))
        .output()
        .unwrap();
    let report = text(&out.stdout);
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line: {report}{}", text(&out.stderr)));
    let exposure: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure: {line}"));
    assert!(exposure <= MAX_EXPOSURE, "{line}");
}

#[test]
fn the_unit_runs_the_packaged_binary_with_the_packaged_config() {
    let unit = std::fs::read_to_string(repo("packaging/natter.service")).unwrap();
    for line in [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=natter",
        "ConfigurationDirectory=natter",
        "ExecStartPre=/usr/bin/natter --config /etc/natter/config.toml check-config",
        "ExecStart=/usr/bin/natter --config /etc/natter/config.toml serve",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}");
    }
    // The paths the unit uses are where the package installs the binary and the config.
    let manifest = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    assert!(manifest.contains(r#"["target/release/natter", "usr/bin/", "755"]"#));
    assert!(manifest.contains(r#"["packaging/config.toml", "etc/natter/config.toml", "644"]"#));
}

/// The packaged binary with the packaged config and only these variables.
fn natter_with_packaged_config(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_natter"));
    command
        .arg("--config")
        .arg(repo("packaging/config.toml"))
        .env_clear()
        .envs(env.iter().copied());
    command
}

#[test]
fn the_packaged_config_passes_check_config_without_a_data_dir_or_secrets() {
    // /var/lib/natter need not exist (systemd creates it), and no secret key is needed: one is
    // generated into data_dir at the first start.
    let out: Output = natter_with_packaged_config(&[])
        .arg("check-config")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for expected in [
        "(production mode)",
        r#"listen = "0.0.0.0:8080""#,
        r#"data_dir = "/var/lib/natter""#,
        r#"secret_key = "<unset>""#,
        r#"durability = "sync""#,
        r#"provider = "none""#,
    ] {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
}

#[test]
fn the_packaged_config_serves_and_logs_a_start_summary() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_dir = data.to_str().unwrap();
    let mut running = KillOnDrop(
        natter_with_packaged_config(&[
            ("NATTER_DATA_DIR", data_dir),
            ("NATTER_LISTEN", "127.0.0.1:0"),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let child = &mut running.0;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let start = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"))
        .unwrap_or_else(|| panic!("natter did not start: {:?}", child.try_wait()));
    for expected in [
        format!(
            "natter {} listening on 127.0.0.1:",
            env!("CARGO_PKG_VERSION")
        ),
        "(production mode, durability sync,".into(),
        format!(" data_dir {data_dir},"),
        " mail none,".into(),
        " public_url http://localhost:8080)".into(),
    ] {
        assert!(start.contains(&expected), "{expected}: {start}");
    }
    let addr = start
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: natter\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{rest:?}");
    // Until public_url is set, every start says so.
    assert!(
        rest.iter()
            .any(|l| l.contains("public_url is http://localhost:8080")),
        "{rest:?}"
    );
    let shutting = rest.iter().position(|l| l.contains("shutting down"));
    let stopped = rest.iter().position(|l| l.ends_with("stopped"));
    assert!(
        matches!((shutting, stopped), (Some(a), Some(b)) if a < b),
        "{rest:?}"
    );
    // The cookie key was generated into data_dir, readable by natter only.
    let key = data.join("secret_key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Outside systemd too, the data directory is natter's alone.
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

/// A child that a failing test must not leave running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_package_neither_enables_natter_nor_keeps_its_data_after_a_purge() {
    let manifest = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    // A never-configured natter must not start at the next boot on 0.0.0.0:8080 without mail.
    assert!(
        manifest
            .lines()
            .any(|l| l.starts_with("systemd-units = { enable = false, start = false")),
        "the package must not enable natter.service"
    );
    assert!(manifest.contains(r#"maintainer-scripts = "packaging""#));
    let postrm = std::fs::read_to_string(repo("packaging/postrm")).unwrap();
    assert!(postrm.starts_with("#!/bin/sh\n"), "{postrm}");
    assert!(
        postrm.contains("\n#DEBHELPER#\n"),
        "cargo-deb's systemd part goes here"
    );
    let purge = postrm
        .split("if [ \"$1\" = \"purge\" ]; then")
        .nth(1)
        .unwrap_or_else(|| panic!("no purge branch: {postrm}"));
    assert!(
        purge.contains("rm -rf /var/lib/private/natter /var/lib/natter"),
        "{postrm}"
    );
    let out = Command::new("sh")
        .arg("-n")
        .arg(repo("packaging/postrm"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let operations = std::fs::read_to_string(repo("docs/operations.md")).unwrap();
    assert!(operations.contains("systemctl enable --now natter"));
    assert!(operations.contains("dpkg --purge natter"));
}
