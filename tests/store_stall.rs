//! Bulk appends to several databases at once must never stall. sled 0.34.7 could deadlock here:
//! a file truncation queued on its shared threadpool behind iobuf writes that wait for the lock
//! the truncating thread holds (vendor/sled/PATCHED.md). Each writer appends until the time is
//! up; the test fails when no append completes for `STALL`, or when a writer cannot finish within
//! `STALL` after the time is up. With the published crate the stall came 5 to 85 s into a run;
//! this 30 s run caught it in 4 of 6 runs (`STORE_STALL_SECS` and `STORE_STALL_WRITERS` to run it
//! longer or wider). A test binary of its own, so its writers do not slow timing-sensitive tests.

use natter::store::sled::{SledStore, SyncMode};
use natter::store::{NewMessage, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn writers() -> usize {
    std::env::var("STORE_STALL_WRITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}
/// Messages per database before it is closed and a fresh one opened.
const MESSAGES_PER_DATABASE: u64 = 8_000;
const STALL: Duration = Duration::from_secs(20);

fn seconds() -> u64 {
    std::env::var("STORE_STALL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

/// Appends 2.5 KB messages to fresh databases until `stop`; counts each append in `appended`.
fn write_databases(stop: &AtomicBool, appended: &AtomicU64) {
    let text = "x".repeat(2500);
    while !stop.load(Ordering::Relaxed) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), SyncMode::Relaxed).unwrap();
        let chat = store.create_chat("Archive", 1).unwrap().unwrap();
        for _ in 0..MESSAGES_PER_DATABASE {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            store
                .append_message(NewMessage {
                    chat_id: chat.id,
                    user: "root".into(),
                    verified: true,
                    admin: true,
                    bot: false,
                    text: text.clone(),
                    time: 1,
                    author: None,
                })
                .unwrap();
            appended.fetch_add(1, Ordering::Relaxed);
        }
        store.close().unwrap();
    }
}

#[test]
fn concurrent_bulk_appends_never_stall_the_store() {
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let writers = writers();
    for _ in 0..writers {
        let (stop, appended, done) = (stop.clone(), appended.clone(), done_tx.clone());
        // Not joined: a writer stuck in a deadlock would never return.
        std::thread::spawn(move || {
            write_databases(&stop, &appended);
            let _ = done.send(());
        });
    }
    let started = Instant::now();
    let (mut last, mut last_progress) = (0, Instant::now());
    while started.elapsed() < Duration::from_secs(seconds()) {
        std::thread::sleep(Duration::from_millis(500));
        let now = appended.load(Ordering::Relaxed);
        if now != last {
            (last, last_progress) = (now, Instant::now());
        }
        assert!(
            last_progress.elapsed() < STALL,
            "no append completed for {STALL:?} after {now} appends: the store is stuck"
        );
    }
    // A stall that began too late for the watchdog shows as a writer that cannot finish.
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + STALL;
    for finished in 0..writers {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            done_rx.recv_timeout(left).is_ok(),
            "{} of {writers} writers did not finish within {STALL:?}: the store is stuck",
            writers - finished
        );
    }
    println!(
        "store stall: {} appends of 2.5 KB by {writers} writers in {:.0} s, none stalled",
        appended.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}
