//! The container image (the top-level Containerfile, docs/container.md), proven with podman: built
//! on a Debian base made here, run with a read-only root and a data volume, used over HTTP,
//! stopped with SIGTERM, started again on the same volume. Without podman (or not as root) these
//! print a notice and pass; `TEST_REQUIRE_PODMAN=1` (CI) makes that a failure.
//! compose.rs checks packaging/compose.yaml, with or without podman.

mod base;
mod client;
// The mirror tests' throwaway PostgreSQL cluster, for DATABASE_URL_FILE in the image.
#[allow(dead_code)]
#[path = "../mirror/cluster.rs"]
mod cluster;
mod compose;
mod containerfile;
mod image;
mod podman;
mod run;

use client::Client;
use podman::Podman;
use run::Setup;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// A line on standard error that a passing test shows too (the harness keeps eprintln!'s).
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Where the base file system, podman's store and the test's files live between runs.
fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("container")
}

/// podman as root with mmdebstrap, or a notice (a failure with `TEST_REQUIRE_PODMAN=1`).
fn podman_here() -> Option<Podman> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mmdebstrap = std::process::Command::new("mmdebstrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let found = Podman::find(&cache_dir());
    let missing = match (&found, root, mmdebstrap) {
        (None, _, _) => "podman is not installed",
        (_, false, _) => "the tests run podman as root",
        (_, _, false) => "mmdebstrap is not installed",
        _ => return found,
    };
    let notice = format!(
        "container tests not run: {missing} (apt-get install podman runc netavark iptables \
         mmdebstrap ca-certificates, as root)"
    );
    assert!(
        std::env::var("TEST_REQUIRE_PODMAN").as_deref() != Ok("1"),
        "{notice}"
    );
    say(&notice);
    None
}

const CONFIG: &str = "chats = [\"Main\", \"Harbour\"]\n";

/// The server's environment: mail to the log (the activation link is read from it), the lowest
/// production hashing cost, polls that stay parked until the stop.
const ENV: [(&str, &str); 3] = [
    ("NATTER_MAIL__PROVIDER", "log"),
    ("NATTER_PASSWORD_ITERATIONS", "100000"),
    ("NATTER_POLL_TIMEOUT", "60s"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_serves_stops_on_sigterm_and_keeps_its_data_on_the_volume() {
    let Some(podman) = podman_here() else {
        return;
    };
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).unwrap();
    base::ensure_base_image(&podman, &cache);
    let binary = image::binary();
    say(&format!("building the image with {}", binary.display()));
    image::build(&podman, &cache, &binary);
    check_image_config(&podman);
    check_healthcheck_without_a_server(&podman);

    let mut setup = Setup::new(&podman, &cache.join("files"), CONFIG);
    let first = format!("{}-first", setup.tag);
    setup.start(&first, &ENV, &[]);
    let health = podman.output(&["healthcheck", "run", &first]);
    assert!(
        health.status.success(),
        "HEALTHCHECK failed: {}{}",
        String::from_utf8_lossy(&health.stdout),
        String::from_utf8_lossy(&health.stderr)
    );

    let alice = Client::new(setup.port);
    register(&podman, &first, &alice, "alice").await;
    let chats = alice
        .get("/api/loggedonly/getChats")
        .await
        .unwrap()
        .ok()
        .json();
    let names: Vec<&str> = chats.as_array().unwrap().iter().map(chat_name).collect();
    let names = names.join(",");
    assert_eq!(names, "Harbour,Main", "chats from /etc/natter/config.toml");
    alice
        .post("/api/loggedonly/joinChat", json!({"chat": "Harbour"}))
        .await
        .ok();
    let bob = Client::new(setup.port);
    bob.post("/api/login", json!({"user": "bob"})).await.ok();
    bob.post("/api/loggedonly/joinChat", json!({"chat": "Harbour"}))
        .await
        .ok();
    let queue = bob
        .post("/api/loggedonly/queues", json!({}))
        .await
        .ok()
        .json();
    let queue_id = queue["queue_id"].as_str().unwrap().to_owned();
    for n in 0..3 {
        let body = json!({"chat": "Harbour", "text": format!("before stop {n}")});
        alice.post("/api/loggedonly/postMessage", body).await.ok();
    }
    let (texts, last) = read_messages(&bob, &queue_id, 0, 3).await;
    assert_eq!(texts, ["before stop 0", "before stop 1", "before stop 2"]);

    // A poll parked when SIGTERM comes is answered, and natter exits 0 well before SIGKILL.
    let parked_queue = queue_id.clone();
    let parked = tokio::spawn(async move {
        let path = format!("/api/loggedonly/events?queue_id={parked_queue}&last_event_id={last}");
        let answer = bob.get(&path).await;
        (bob, answer)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!parked.is_finished(), "the poll was not parked");
    let stop = {
        let podman_stop = format!("podman stop {first}");
        let took = tokio::task::block_in_place(|| setup.stop(&first, Duration::from_secs(30)));
        say(&format!("{podman_stop} took {took:?}"));
        took
    };
    let (bob, answer) = tokio::time::timeout(Duration::from_secs(5), parked)
        .await
        .expect("the parked poll was not answered at the stop")
        .unwrap();
    let answer = answer.expect("the parked poll's connection broke instead of an answer");
    assert_eq!(
        answer.status, 200,
        "parked poll at the stop: {}",
        answer.text
    );
    assert!(stop < Duration::from_secs(20), "stop took {stop:?}");
    let logs = podman.logs(&first);
    assert_eq!(setup.exit_code(&first), 0, "exit code; log:\n{logs}");
    assert!(
        logs.contains("shutting down") && logs.contains("stopped"),
        "{logs}"
    );
    podman.ok(&["rm", &first]);

    // The saved state, read offline from the volume by the image's own export command.
    let export = setup.offline(&["export"]);
    for text in ["before stop 0", "before stop 1", "before stop 2"] {
        assert!(
            export.contains(text),
            "{text} missing from the export:\n{export}"
        );
    }
    assert!(export.contains(r#""alice""#), "{export}");
    let archive = check_volume_backup(&setup, &cache);
    // The same dump but for its header's time of creation.
    let after_header = |dump: &str| dump.split_once('\n').unwrap().1.to_owned();
    let restored = check_volume_restore(&mut setup, &archive);
    assert_eq!(after_header(&restored), after_header(&export));

    // A new container on the same volume: the session (same cookie key, from the secret), the
    // messages and bob's event queue are all there. With PostgreSQL installed, it also mirrors
    // into a database whose URL is a mounted secret file.
    let second = format!("{}-second", setup.tag);
    let pg = cluster::Cluster::start().await;
    let mut env = ENV.to_vec();
    let mut options = Vec::new();
    if let Some(pg) = &pg {
        let url = pg.create_db("natter").await;
        options.push(setup.secret("database_url", &url, "/run/secrets/database_url"));
        env.push(("DATABASE_URL_FILE", "/run/secrets/database_url"));
    }
    setup.start(&second, &env, &options);
    assert_eq!(
        last_texts(&alice, "Harbour").await,
        ["before stop 0", "before stop 1", "before stop 2"]
    );
    let body = json!({"chat": "Harbour", "text": "after restart"});
    alice.post("/api/loggedonly/postMessage", body).await.ok();
    let (texts, _) = read_messages(&bob, &queue_id, last, 1).await;
    assert_eq!(texts, ["after restart"], "bob's queue after the restart");
    if let Some(pg) = &pg {
        check_mirror(pg, &setup).await;
    }

    // natter's user, not root; nothing but the volume (and runtime tmpfs) writable.
    let uid = podman.ok(&["exec", &second, "id", "-u"]);
    let gid = podman.ok(&["exec", &second, "id", "-g"]);
    assert_eq!((uid.as_str(), gid.as_str()), ("10001", "10001"));
    let write_root = podman.output(&["exec", &second, "touch", "/probe"]);
    assert!(!write_root.status.success(), "/ is writable");
    let why = String::from_utf8_lossy(&write_root.stderr);
    assert!(why.contains("Read-only file system"), "{why}");
    let write_etc = podman.output(&["exec", &second, "touch", "/etc/natter/probe"]);
    assert!(!write_etc.status.success(), "/etc/natter is writable");
    podman.ok(&["exec", &second, "touch", "/var/lib/natter/probe"]);
    podman.ok(&["exec", &second, "rm", "/var/lib/natter/probe"]);

    setup.stop(&second, Duration::from_secs(30));
    assert_eq!(setup.exit_code(&second), 0, "{}", podman.logs(&second));
    if let Some(pg) = &pg {
        check_postgres_store(pg, &mut setup).await;
    }

    let size = image::size(&podman);
    let mb = |bytes: u64| bytes as f64 / 1_000_000.0;
    say(&format!(
        "image size: {:.1} MB uncompressed, {:.1} MB compressed (podman save | gzip -6), from {} \
         ({:.1} MB before strip)",
        mb(size.uncompressed),
        mb(size.compressed),
        binary.display(),
        mb(std::fs::metadata(&binary).unwrap().len())
    ));
    // The target for a release build; an unoptimised test build is several times larger.
    if binary.components().any(|c| c.as_os_str() == "release") {
        assert!(
            size.compressed <= 40_000_000,
            "the image is {:.1} MB compressed, over 40 MB",
            mb(size.compressed)
        );
    }
}

/// The volume backup docs/container.md gives (natter stopped): a tar of /var/lib/natter made in a
/// throwaway container, holding the database and keeping natter's ownership. The archive's path.
fn check_volume_backup(setup: &Setup, cache: &std::path::Path) -> PathBuf {
    let backup = cache.join("files");
    let mount = format!("{}:/backup", backup.display());
    let volume = format!("{}:/var/lib/natter:ro", setup.volume);
    let archive = format!("{}-backup.tar.gz", setup.tag);
    setup.podman.ok(&[
        "run",
        "--rm",
        "--ulimit=nofile=4096:4096",
        "--ulimit=nproc=4096:4096",
        "--network=none",
        "--volume",
        &volume,
        "--volume",
        &mount,
        "--user",
        "0",
        "--entrypoint",
        "tar",
        image::IMAGE,
        "-C",
        "/var/lib",
        "-czf",
        &format!("/backup/{archive}"),
        "natter",
    ]);
    let path = backup.join(&archive);
    let listing = std::process::Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(&path)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let db = listing
        .lines()
        .find(|line| line.ends_with(" natter/db"))
        .unwrap_or_else(|| panic!("no natter/db in the backup:\n{listing}"));
    assert!(db.contains(" 10001/10001 "), "{db}");
    path
}

/// The documented restore: the archive unpacked into a new volume, which natter's own export
/// then reads as natter's user.
fn check_volume_restore(setup: &mut Setup, archive: &std::path::Path) -> String {
    let restored = setup.new_volume("restored");
    let mount = format!("{}:/backup:ro", archive.parent().unwrap().display());
    let file = format!("/backup/{}", archive.file_name().unwrap().to_string_lossy());
    setup.podman.ok(&[
        "run",
        "--rm",
        "--ulimit=nofile=4096:4096",
        "--ulimit=nproc=4096:4096",
        "--network=none",
        "--volume",
        &format!("{restored}:/var/lib/natter"),
        "--volume",
        &mount,
        "--user",
        "0",
        "--entrypoint",
        "tar",
        image::IMAGE,
        "-C",
        "/var/lib",
        "-xzf",
        &file,
    ]);
    std::fs::remove_file(archive).unwrap();
    setup.podman.ok(&[
        "run",
        "--rm",
        "--read-only",
        "--ulimit=nofile=4096:4096",
        "--ulimit=nproc=4096:4096",
        "--network=none",
        "--volume",
        &format!("{restored}:/var/lib/natter"),
        image::IMAGE,
        "export",
    ])
}

/// The image with `storage = "postgres"`: a message posted to one container is in the next one,
/// kept in the database a mounted secret file names.
async fn check_postgres_store(pg: &cluster::Cluster, setup: &mut Setup<'_>) {
    let url = pg.create_db("natter_store").await;
    let secret = setup.secret("store_url", &url, "/run/secrets/store_url");
    let mut env = ENV.to_vec();
    env.extend([
        ("NATTER_STORAGE", "postgres"),
        ("DATABASE_URL_FILE", "/run/secrets/store_url"),
    ]);
    let carol = Client::new(setup.port);
    for round in ["store-first", "store-second"] {
        let container = format!("{}-{round}", setup.tag);
        setup.start(&container, &env, std::slice::from_ref(&secret));
        if round == "store-first" {
            carol
                .post("/api/login", json!({"user": "carol"}))
                .await
                .ok();
            carol
                .post("/api/loggedonly/joinChat", json!({"chat": "Harbour"}))
                .await
                .ok();
            let body = json!({"chat": "Harbour", "text": "kept in PostgreSQL"});
            carol.post("/api/loggedonly/postMessage", body).await.ok();
        } else {
            assert_eq!(
                last_texts(&carol, "Harbour").await,
                ["kept in PostgreSQL"],
                "storage = postgres"
            );
        }
        setup.stop(&container, Duration::from_secs(30));
        let logs = setup.podman.logs(&container);
        assert_eq!(setup.exit_code(&container), 0, "{logs}");
    }
}

/// natter in the container reports its mirror `ok` and has copied every message into PostgreSQL.
async fn check_mirror(pg: &cluster::Cluster, setup: &Setup<'_>) {
    let expected = [
        "before stop 0",
        "before stop 1",
        "before stop 2",
        "after restart",
    ];
    let client = pg.client("natter").await;
    let health = Client::new(setup.port);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let healthz = health.get("/healthz").await.unwrap().ok().json();
        let rows = client
            .query("SELECT text FROM messages ORDER BY id", &[])
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if healthz["mirror"] == "ok" && rows == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mirror: {healthz}, messages in PostgreSQL: {rows:?}\n{}",
            setup.podman.logs(&format!("{}-second", setup.tag))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Registers `name`, verifies it with the link the log mailer wrote, signs in.
async fn register(podman: &Podman, container: &str, client: &Client, name: &str) {
    let body = json!({"user": name, "email": format!("{name}@example.org"), "password": "a long enough password"});
    client.post("/api/register", body).await.ok();
    let prefix = format!("/api/verifyEmail/{name}/");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let path = loop {
        let logs = podman.logs(container);
        if let Some(at) = logs.find(&prefix) {
            let rest = &logs[at..];
            break rest[..rest.find(char::is_whitespace).unwrap_or(rest.len())].to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no activation link:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    client.get(&path).await.unwrap().ok();
    let body = json!({"user": name, "password": "a long enough password"});
    let user = client.post("/api/authorize", body).await.ok().json();
    assert_eq!(user["verified"], true, "{user}");
}

/// The texts of a chat's last messages (`getLastMessages`), oldest first.
async fn last_texts(client: &Client, chat: &str) -> Vec<String> {
    let history = client
        .post("/api/loggedonly/getLastMessages", json!({ "chat": chat }))
        .await
        .ok()
        .json();
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

fn chat_name(report: &Value) -> &str {
    report["chat"].as_str().unwrap()
}

/// Reads `count` message events from a queue after `last`: their texts and the last event id.
async fn read_messages(
    client: &Client,
    queue_id: &str,
    mut last: u64,
    count: usize,
) -> (Vec<String>, u64) {
    let mut texts = Vec::new();
    while texts.len() < count {
        let path = format!("/api/loggedonly/events?queue_id={queue_id}&last_event_id={last}");
        let batch = client.get(&path).await.unwrap().ok().json();
        for event in batch["events"].as_array().unwrap() {
            last = event["id"].as_u64().unwrap();
            if event["type"] == "MessageEvent" {
                texts.push(event["event"]["text"].as_str().unwrap().to_owned());
            }
        }
    }
    (texts, last)
}

/// The image's health check where nothing listens (a network of its own): exit 1 and the reason.
fn check_healthcheck_without_a_server(podman: &Podman) {
    let out = podman.output(&[
        "run",
        "--rm",
        "--read-only",
        "--network=none",
        "--ulimit=nofile=4096:4096",
        "--ulimit=nproc=4096:4096",
        image::IMAGE,
        "healthcheck",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("natter: cannot connect to 127.0.0.1:8080: "),
        "{stderr}"
    );
}

/// What `podman image inspect` says of the built image: user, port, volume, health check,
/// labels, entry point and the data directory's variable.
fn check_image_config(podman: &Podman) {
    let inspect = podman.ok(&["image", "inspect", image::IMAGE]);
    let inspect: Value = serde_json::from_str(&inspect).unwrap();
    let image = &inspect[0];
    let config = &image["Config"];
    assert_eq!(config["User"], "10001:10001", "{config}");
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "{config}");
    assert!(
        config["Volumes"].get("/var/lib/natter").is_some(),
        "{config}"
    );
    assert_eq!(config["Entrypoint"], json!(["natter"]), "{config}");
    assert_eq!(config["Cmd"], json!(["serve"]), "{config}");
    assert_eq!(config["WorkingDir"], "/etc/natter", "{config}");
    assert_eq!(config["StopSignal"], "SIGTERM", "{config}");
    let env = config["Env"].as_array().unwrap();
    assert!(
        env.contains(&json!("NATTER_DATA_DIR=/var/lib/natter")),
        "{config}"
    );
    assert_eq!(
        image["Healthcheck"]["Test"],
        json!(["CMD", "natter", "healthcheck"]),
        "the HEALTHCHECK (kept only with --format docker): {image}"
    );
    let labels = &config["Labels"];
    let label = |name: &str| labels[format!("org.opencontainers.image.{name}")].clone();
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"), "{labels}");
    assert_eq!(label("licenses"), env!("CARGO_PKG_LICENSE"), "{labels}");
    assert_eq!(label("title"), "natter", "{labels}");
}
