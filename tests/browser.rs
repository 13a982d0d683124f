//! The web client in a real browser: runs `tests/browser/*.test.mjs` (node's test runner,
//! playwright-core driving Debian's headless Chromium) against the `natter` binary.
//! Without node or Chromium the suite is skipped locally; in CI (`CI` set) it fails instead.
//! With `TEST_STORAGE=postgres` every server of the suite keeps its data in a database of its
//! own on a throwaway PostgreSQL cluster.

#[cfg(feature = "pg")]
#[allow(dead_code)]
#[path = "mirror/cluster.rs"]
mod cluster;

use std::path::Path;
use std::process::Command;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// With `TEST_STORAGE=postgres`, a running cluster (kept until the suite is done) and the URL
/// of its `postgres` database, from which the harness creates one database per server.
#[cfg(feature = "pg")]
fn postgres() -> Option<(cluster::Cluster, String)> {
    if std::env::var("TEST_STORAGE").ok().as_deref() != Some("postgres") {
        return None;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cluster = runtime
        .block_on(cluster::Cluster::start())
        .expect("TEST_STORAGE=postgres needs PostgreSQL's binaries");
    let admin = cluster.url("postgres");
    Some((cluster, admin))
}

#[cfg(not(feature = "pg"))]
fn postgres() -> Option<((), String)> {
    None
}

#[test]
fn web_client_works_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let suite = root.join("tests").join("browser");
    let missing: Vec<&str> = [
        (!available("node")).then_some("node"),
        (!Path::new("/usr/bin/chromium").exists()).then_some("/usr/bin/chromium"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        assert!(
            !in_ci(),
            "browser tests need {missing:?}; .ci/run installs them"
        );
        eprintln!("skipping the browser tests: {missing:?} not found");
        return;
    }
    if !suite.join("node_modules").join("playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&suite)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci in tests/browser failed");
    }
    let output = root.join("target").join("browser-output");
    let postgres = postgres();
    let mut node = Command::new("node");
    node.arg("--test")
        .arg("tests/browser/")
        .current_dir(root)
        .env("NATTER_BIN", env!("CARGO_BIN_EXE_natter"))
        .env("NATTER_TEST_OUTPUT", &output);
    if let Some((_, admin)) = &postgres {
        node.env("NATTER_TEST_POSTGRES", admin);
    }
    let status = node.status().expect("node runs");
    assert!(
        status.success(),
        "browser tests failed; screenshots in {}",
        output.display()
    );
}
