//! Soak: many guest sessions chatting against the spawned binary for a while, spread over a few
//! chats, each listening on `/events` (a tenth on the legacy `/poll`), posting at a steady rate
//! and sending keepalives. Zero request errors, every message delivered to every member of its
//! chat once and in order, and the server's RSS flat after warm-up (see `memory`).
//!
//! `cargo test --test api soak` runs the short version (200 sessions, 25 s);
//! `cargo test --release --test api soak -- --ignored` the full one (2,000 sessions, 10 minutes).
//! `SOAK_SESSIONS`, `SOAK_SECS` and the other variables in `params` change either.
//! With `TEST_STORAGE=postgres` the binary keeps its data in PostgreSQL (the long run's too).

mod ledger;
mod listener;
mod memory;
mod params;
mod population;
mod traffic;

use crate::helpers::{Served, natter_binary};
use crate::scrape;
use crate::wire::Wire;
use ledger::{Ledger, Tally};
use listener::{Control, Heard};
use params::Params;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// How long a parked poll waits; short enough that a quiet listener still answers often.
const POLL_TIMEOUT_SECS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_short() {
    // A short run's warm-up barely settles the allocator: a looser bound than the full run's.
    run(Params::from_env(200, 25, 25.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "ten minutes: cargo test --release --test api soak -- --ignored"]
async fn soak_full() {
    run(Params::from_env(2000, 600, 10.0)).await;
}

/// The binary's config; with `TEST_STORAGE=postgres`, on a database of its own.
async fn write_config(dir: &Path, params: &Params) -> std::path::PathBuf {
    let chats: Vec<String> = (0..params.chats)
        .map(|c| format!("\"{}\"", Params::chat_name(c)))
        .collect();
    let path = dir.join("config.toml");
    // Top-level keys to try without editing the test, e.g. SOAK_NATTER_CONFIG='data_cache_bytes = 2097152'.
    let tried = std::env::var("SOAK_NATTER_CONFIG").unwrap_or_default();
    // Production settings, except that every session comes from 127.0.0.1: room for all of
    // them in the per-address connection cap and the login burst.
    let store = crate::helpers::store_lines(&dir.join("data")).await;
    let text = format!(
        "listen = \"127.0.0.1:0\"\n{store}chats = [{chats}]\n{tried}\n\
         poll_timeout = \"{POLL_TIMEOUT_SECS}s\"\n\
         max_connections = {connections}\nmax_connections_per_ip = {connections}\n\
         [rate_limit]\naccount_burst = {logins}\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        chats = chats.join(", "),
        connections = 2 * params.sessions + 1000,
        logins = params.sessions + 100,
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn run(params: Params) {
    println!("soak: {params:?}, load average {}", memory::load_average());
    let dir = tempfile::tempdir().unwrap();
    let mut served =
        Served::start_binary(&natter_binary(), &write_config(dir.path(), &params).await);
    served.assert_on_test_storage();
    let pid = served.child.id();
    let metrics = scrape::metrics_url(&served);
    let wire = Wire::new(&served.addr, Duration::from_secs(POLL_TIMEOUT_SECS + 60));
    let ledger = Arc::new(Ledger::new(params.chats));
    let control = Arc::new(Control::new());

    let started = Instant::now();
    let signed_in = population::sign_in(&wire, &params, &ledger, &control).await;
    let signed_in = signed_in.unwrap_or_else(|e| {
        control.abort.store(true, Ordering::Relaxed);
        panic!("signing in: {e}")
    });
    let (members, listeners): (Vec<_>, Vec<_>) = signed_in.into_iter().unzip();
    let members = Arc::new(members);
    // The login storm is over when every listener has drained it and parked.
    wait_parked(&metrics, params.sessions, Duration::from_secs(600)).await;
    println!(
        "soak: {} sessions in and parked after {:.1?}",
        params.sessions,
        started.elapsed()
    );

    let until = Instant::now() + params.chatting();
    let cpu_before = memory::cpu_secs(&pid.to_string());
    let generator_before = memory::cpu_secs("self");
    let samples = memory::Samples::default();
    let sampler = tokio::spawn(memory::sample(pid, until, samples.clone()));
    let posting = tokio::spawn(traffic::post(
        wire.clone(),
        members.clone(),
        ledger.clone(),
        params.clone(),
        until,
    ));
    let keepalives = tokio::spawn(traffic::keep_alive(
        wire.clone(),
        members.clone(),
        ledger.clone(),
        params.clone(),
        until,
    ));
    posting.await.unwrap();
    keepalives.await.unwrap();
    sampler.await.unwrap();
    let server_cpu = memory::cpu_secs(&pid.to_string()) - cpu_before;
    let generator_cpu = memory::cpu_secs("self") - generator_before;
    let expected: Vec<Tally> = (0..params.chats).map(|c| ledger.posted_in(c)).collect();
    control.settle(expected.clone());

    // Listeners stop once they hold as many messages as their chat got.
    let drain_limit = Duration::from_secs(POLL_TIMEOUT_SECS + 120);
    let drained =
        tokio::time::timeout(drain_limit, futures_util::future::join_all(listeners)).await;
    control.abort.store(true, Ordering::Relaxed);
    let heard: Vec<Heard> = drained
        .expect("every listener got its messages in time")
        .into_iter()
        .map(|h| h.expect("a listener panicked"))
        .collect();

    let text = scrape::scrape(&reqwest::Client::new(), &metrics).await;
    let not_2xx = |labels: &str| !labels.contains("status=\"2");
    let refused = scrape::sum(&text, "natter_http_requests_total", not_2xx) as u64;
    let refused_series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("natter_http_requests_total{") && not_2xx(l))
        .collect();
    let overflows = scrape::value(&text, "natter_event_queue_overflows_total");
    let samples = samples.lock().unwrap().clone();
    let (baseline, end) = memory::baseline_and_end(&samples, params.warmup(), params.chatting());
    let growth = 100.0 * (end as f64 - baseline as f64) / baseline as f64;
    let peak = samples.iter().map(|(_, k)| *k).max().unwrap_or(0);
    let wanted: u64 = heard.iter().map(|h| expected[h.member.chat].count).sum();
    let short: Vec<String> = heard
        .iter()
        .filter(|h| h.tally != expected[h.member.chat])
        .map(|h| format!("{} got {:?}", h.member.session.name, h.tally))
        .take(10)
        .collect();
    println!(
        "soak: {} sessions ({} on /poll) in {} chats, {} s: {} messages posted ({:.1}/s), {} deliveries \
         of {wanted}, {} requests, {} errors, {refused} non-2xx answers, {overflows} queue overflows \
         (unread default queues); RSS {} KiB at start, {baseline} KiB after {} s warm-up, {end} KiB \
         at the end ({growth:+.1}%), peak {peak} KiB; CPU while chatting: server {server_cpu:.1} s, load generator \
         {generator_cpu:.1} s; load average {}",
        params.sessions,
        members.iter().filter(|m| m.queue.is_none()).count(),
        params.chats,
        params.secs,
        ledger.messages_posted(),
        ledger.messages_posted() as f64 / params.secs as f64,
        ledger.deliveries.load(Ordering::Relaxed),
        ledger.requests.load(Ordering::Relaxed),
        ledger.errors(),
        samples.first().map_or(0, |s| s.1),
        params.warmup_secs,
        memory::load_average(),
    );
    let rss_over_time: Vec<String> = samples
        .iter()
        .step_by(samples.len().div_ceil(12).max(1))
        .map(|(t, k)| format!("{t:.0}s:{k}"))
        .collect();
    println!("soak: RSS (KiB) over time: {}", rss_over_time.join(" "));
    println!("soak: non-2xx answers by route and status: {refused_series:?}");

    assert_eq!(
        ledger.errors(),
        0,
        "request errors: {:#?}",
        ledger.examples()
    );
    assert!(
        short.is_empty(),
        "listeners missing messages (want {expected:?}): {short:#?}"
    );
    assert_eq!(
        refused, 0,
        "the server answered non-2xx statuses: {refused_series:#?}"
    );
    assert!(
        growth < params.max_rss_growth_percent,
        "RSS grew {growth:.1}% after warm-up (at most {}%)",
        params.max_rss_growth_percent
    );

    served.signal("-TERM");
    let (status, _) = crate::stopping::wait_exit(&mut served, Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
}

/// Waits until `n` polls are parked at once.
async fn wait_parked(metrics: &str, n: usize, limit: Duration) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + limit;
    loop {
        let text = scrape::scrape(&http, metrics).await;
        let parked = scrape::value(&text, "natter_parked_polls");
        if parked >= n as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} polls parked after the sign-ins (now {parked})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
