//! `kill -9` at a random moment under concurrent writes: every write that got a 2xx is on disk
//! after the crash, message ids stay unique and increasing, and new ids continue above the old.
//! Rounds: 20 here; `CRASH_ROUNDS=200 cargo test --test api crash -- --ignored` runs the long one.
//! With `TEST_STORAGE=postgres` the binary keeps its data in PostgreSQL, which stays up.

use crate::helpers::{Served, natter_binary};
use natter::store::Store;
use natter::store::sled::{SledStore, SyncMode};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const POSTERS: usize = 16;

/// What the clients were told was written, before the crash.
#[derive(Default)]
struct Acknowledged {
    /// Message id → text.
    messages: BTreeMap<u64, String>,
    registered: BTreeSet<String>,
    verified: BTreeSet<String>,
    chats: BTreeSet<String>,
}

/// A small deterministic generator, seeded from the clock and printed, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The binary's config; with `TEST_STORAGE=postgres`, on a database of its own.
async fn config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("config.toml");
    let storage = crate::helpers::storage_lines(dir).await.unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "{storage}listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ndurability = \"sync\"\n\
             password_iterations = 100000\nadmins = [\"root\"]\n\
             [mail]\nprovider = \"log\"\n[rate_limit]\nenabled = false\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    path
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// POSTs and returns the JSON answer of a 200, or `None` once the server is gone.
async fn post(http: &reqwest::Client, url: String, body: serde_json::Value) -> Option<String> {
    let response = http.post(url).json(&body).send().await.ok()?;
    let ok = response.status() == 200;
    let text = response.text().await.ok()?;
    ok.then_some(text)
}

/// The activation link the log mailer wrote for `user`, if it has yet.
fn activation_path(served: &Served, user: &str) -> Option<String> {
    let marker = format!("/api/verifyEmail/{user}/");
    let log = served.log.lock().unwrap();
    log.iter()
        .filter_map(|l| l.split("activation link: ").nth(1))
        .find(|link| link.contains(&marker))
        .and_then(|link| link.split_once("/api/").map(|(_, p)| format!("/api/{p}")))
}

async fn sign_in_root(served: &Served, http: &reqwest::Client, first_round: bool) {
    let url = |p: &str| served.url(p);
    if first_round {
        let body = json!({"user":"root","email":"root@example.org","password":"password123"});
        post(http, url("/api/register"), body)
            .await
            .expect("root registers");
        let path = loop {
            if let Some(path) = activation_path(served, "root") {
                break path;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let verified = http.get(url(&path)).send().await.unwrap();
        assert_eq!(verified.status(), 200);
    }
    let body = json!({"user":"root","password":"password123"});
    post(http, url("/api/authorize"), body)
        .await
        .expect("root signs in");
}

/// One round: writers run until the server is killed at a random moment.
async fn round(served: &Arc<Served>, round: usize, rng: &mut Rng) -> Acknowledged {
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let root = client();
    sign_in_root(served, &root, round == 0).await;
    let mut tasks = Vec::new();
    for poster in 0..POSTERS {
        let (served, acked) = (served.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            let name = format!("p{round}x{poster}");
            post(&http, served.url("/api/login"), json!({"user": name})).await?;
            post(
                &http,
                served.url("/api/loggedonly/joinChat"),
                json!({"chat":"Main"}),
            )
            .await?;
            for n in 0.. {
                let text = format!("{name} says {n}");
                let body = json!({"chat":"Main","text": text});
                let answer = post(&http, served.url("/api/loggedonly/postMessage"), body).await?;
                let message: serde_json::Value = serde_json::from_str(&answer).unwrap();
                assert_eq!(message["text"], text.as_str());
                let id = message["id"].as_u64().unwrap();
                acked.lock().unwrap().messages.insert(id, text);
            }
            Some(())
        }));
    }
    {
        let (served, acked) = (served.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            for n in 0.. {
                let user = format!("u{round}x{n}");
                let body = json!({"user": user, "email": format!("{user}@example.org"), "password":"password123"});
                post(&http, served.url("/api/register"), body).await?;
                acked.lock().unwrap().registered.insert(user.clone());
                // Verify the one registered before, whose link has surely been logged by now.
                let earlier = format!("u{round}x{}", n.max(1) - 1);
                if let Some(path) = activation_path(&served, &earlier) {
                    let answer = http.get(served.url(&path)).send().await.ok()?;
                    if answer.status() == 200 {
                        acked.lock().unwrap().verified.insert(earlier);
                    }
                }
            }
            Some(())
        }));
    }
    {
        let (served, acked) = (served.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let chat = format!("c{round}x{n}");
                post(
                    &root,
                    served.url("/api/adminonly/createChat"),
                    json!({"chat": chat}),
                )
                .await?;
                acked.lock().unwrap().chats.insert(chat);
            }
            Some(())
        }));
    }
    // The writers are all going (a busy machine may take a while to get there), then a random moment.
    let started = std::time::Instant::now();
    while acked.lock().unwrap().messages.len() < POSTERS {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the writers never got going"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(rng.next() % 800)).await;
    served.signal("-KILL");
    for task in tasks {
        let _ = task.await.unwrap();
    }
    Arc::try_unwrap(acked).ok().unwrap().into_inner().unwrap()
}

/// Opens the crashed server's store directly and checks every acknowledged write is there.
fn check(dir: &Path, acked: &Acknowledged, floor: u64) -> u64 {
    if crate::helpers::on_postgres() {
        return check_store(&*crate::helpers::open_stored_data(dir), acked, floor);
    }
    let store = SledStore::open(&dir.join("data"), SyncMode::Relaxed).unwrap();
    let max = check_store(&*store, acked, floor);
    store.close().unwrap();
    max
}

fn check_store(store: &dyn Store, acked: &Acknowledged, floor: u64) -> u64 {
    let chats = store.chats().unwrap();
    let main = chats.iter().find(|c| c.name == "Main").unwrap();
    let stored = store.last_messages(main.id, usize::MAX).unwrap();
    let ids: Vec<u64> = stored.iter().map(|m| m.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids are not strictly increasing"
    );
    let by_id: BTreeMap<u64, &str> = stored.iter().map(|m| (m.id, m.text.as_str())).collect();
    for (id, text) in &acked.messages {
        assert!(*id > floor, "id {id} reused an id at or below {floor}");
        assert_eq!(
            by_id.get(id),
            Some(&text.as_str()),
            "acknowledged message {id} lost"
        );
    }
    for user in &acked.registered {
        assert!(
            store.user(user).unwrap().is_some(),
            "registration of {user} lost"
        );
    }
    for user in &acked.verified {
        assert!(
            store.user(user).unwrap().unwrap().verified,
            "verification of {user} lost"
        );
    }
    let names: BTreeSet<&str> = chats.iter().map(|c| c.name.as_str()).collect();
    for chat in &acked.chats {
        assert!(names.contains(chat.as_str()), "chat {chat} lost");
    }
    ids.last().copied().unwrap_or(0)
}

async fn crash_rounds(rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir).await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!(
        "crash test: {rounds} rounds, seed {seed}, binary {}",
        natter_binary().display()
    );
    let mut rng = Rng(seed);
    let (mut floor, mut totals) = (0, [0usize; 4]);
    for r in 0..rounds {
        let served = Arc::new(Served::start_binary(&natter_binary(), &config));
        served.assert_on_test_storage();
        let acked = round(&served, r, &mut rng).await;
        drop(served);
        assert!(
            !acked.messages.is_empty(),
            "round {r} acknowledged no message"
        );
        floor = check(dir.path(), &acked, floor);
        totals[0] += acked.messages.len();
        totals[1] += acked.registered.len();
        totals[2] += acked.verified.len();
        totals[3] += acked.chats.len();
    }
    eprintln!(
        "crash test: {} messages, {} registrations, {} verifications, {} chats acknowledged and found",
        totals[0], totals[1], totals[2], totals[3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9_at_random_moments() {
    crash_rounds(20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: 200 rounds; run with --ignored"]
async fn acknowledged_writes_survive_kill_9_long() {
    let rounds = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    crash_rounds(rounds).await;
}
