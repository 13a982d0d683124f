//! The bundled web client in headless Chromium through nginx in front of the three nodes:
//! `tests/browser/cluster_pages.mjs` drives two people's pages against nginx's URL and, through
//! "kill N" lines on its stdout, has node N killed (SIGKILL) mid-conversation.
//! Without node, Chromium, PostgreSQL or nginx it skips locally; in CI (`CI` set) that is a failure.

use crate::harness::Harness;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn chromium() -> String {
    std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

/// What the script needs and is missing: node, Chromium.
fn missing() -> Vec<String> {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut missing = Vec::new();
    if !node {
        missing.push("node".to_owned());
    }
    if !Path::new(&chromium()).exists() {
        missing.push(chromium());
    }
    missing
}

/// playwright-core in tests/browser/node_modules, installed with `npm ci` when absent.
fn ensure_playwright(suite: &Path) {
    if suite.join("node_modules").join("playwright-core").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(suite)
        .status()
        .expect("npm runs");
    assert!(status.success(), "npm ci in tests/browser failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_talk_in_chromium_through_nginx_while_a_node_dies() {
    let missing = missing();
    if !missing.is_empty() {
        assert!(
            !in_ci(),
            "the cluster browser test needs {missing:?}; .ci/run installs them"
        );
        // Written to stderr directly: eprintln! would be swallowed by the test harness.
        let _ = std::io::stderr().write_all(
            format!("NOTICE: skipping the cluster browser test: {missing:?} not found\n")
                .as_bytes(),
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let suite = root.join("tests").join("browser");
    ensure_playwright(&suite);
    let Some(mut cluster) = Harness::start().await else {
        // In CI even without TEST_REQUIRE_POSTGRES/NGINX: the pages through a cluster are not optional.
        assert!(
            !in_ci(),
            "the cluster browser test needs PostgreSQL and nginx"
        );
        return;
    };
    let output = root.join("target").join("browser-output").join("cluster");
    let mut script = Command::new("node")
        .arg(suite.join("cluster_pages.mjs"))
        .current_dir(root)
        .env("NATTER_URL", cluster.nginx.url(""))
        .env("NATTER_TEST_OUTPUT", &output)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let mut requests = BufReader::new(script.stdout.take().unwrap());
    let mut answers = script.stdin.take().unwrap();
    let mut kills = 0;
    tokio::task::block_in_place(|| {
        let mut line = String::new();
        while requests.read_line(&mut line).unwrap() > 0 {
            let request = line.trim();
            let node: usize = request
                .strip_prefix("kill ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("the script asked for {request:?}"));
            cluster.kill(node);
            kills += 1;
            // The script may have failed meanwhile: a closed pipe is its exit status's to tell.
            let _ = writeln!(answers, "killed {node}");
            line.clear();
        }
    });
    let status = tokio::task::block_in_place(|| script.wait()).unwrap();
    let logs: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("{}: {} lines", n.name, n.log.lock().unwrap().len()))
        .collect();
    assert!(
        status.success(),
        "cluster_pages.mjs failed ({status}); screenshots in {}; nginx errors: {}; nodes: {logs:?}",
        output.display(),
        cluster.nginx.error_log()
    );
    assert_eq!(kills, 1, "the script had one node killed mid-conversation");
}
