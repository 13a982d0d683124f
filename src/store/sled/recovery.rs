//! Storage faults. sled 0.34 refuses every write after one failed log write (a full or failing
//! disk) until the database is reopened. So a disk error closes the database, requests get 503,
//! and a thread reopens it once the disk takes writes again (docs/design.md, Storage faults).

use super::engine::Engine;
use super::{META_HEALTH, Shared, encode, io, lock};
use crate::store::StoreResult;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

/// Pause before the first recovery attempt; it doubles after each failed one, up to `RETRY_MAX`,
/// so a disk that stays full is not probed with a 1 MiB write four times a second.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// What the disk must take, written and fsynced, before the database is reopened: room for sled
/// to start a log segment.
const PROBE_BYTES: usize = 1 << 20;
/// The probe's file in the data directory, deleted after each attempt.
const PROBE_FILE: &str = "space-probe";

impl Shared {
    /// Takes the database down after a disk error (once: later errors find it down already).
    pub(super) fn fail(self: &Arc<Self>, error: &str) {
        let taken = self
            .engine
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if taken.is_none() {
            return;
        }
        // The old database closes when the last request using it lets go.
        drop(taken);
        *lock(&self.outage) = Some(Instant::now());
        log::error!(
            "storage failed: {error}; requests that need storage get 503 until it recovers"
        );
        let shared = self.clone();
        let started = std::thread::Builder::new()
            .name("store-recovery".into())
            .spawn(move || recover(&shared));
        if let Err(e) = started {
            log::error!("cannot start storage recovery: {e}");
        }
    }

    /// Reopens the database if the disk takes writes again; returns how many writes were lost.
    fn reopen(&self) -> StoreResult<u64> {
        probe_disk(&self.dir)?;
        // `Locked` until every handle of the old database is gone; the next attempt retries.
        let (engine, _) = Engine::open(&self.dir, self.cache_bytes)?;
        engine
            .meta
            .insert(META_HEALTH, encode(&0u64)?)
            .map_err(io)?;
        engine.db.flush().map_err(io)?;
        if let Some(mirror) = &self.mirror {
            mirror
                .len
                .store(engine.outbox.len() as u64, Ordering::SeqCst);
        }
        let mut slot = self.engine.write().unwrap_or_else(PoisonError::into_inner);
        // Writes the old database took but never flushed are gone, and were never acknowledged.
        // The recovery takes a durable epoch of its own, so no later change counts as lost.
        let last = self.epoch.fetch_add(1, Ordering::SeqCst);
        let mut lost = 0;
        self.durability.send_modify(|d| {
            let first = d.durable + 1;
            lost = (last + 1).saturating_sub(first);
            d.lost = (first <= last).then_some((first, last));
            d.durable = last + 1;
            d.failed = None;
            d.recoveries += 1;
        });
        *slot = Some(Arc::new(engine));
        Ok(lost)
    }

    fn is_stopped(&self) -> bool {
        *lock(&self.stopped)
    }
}

/// Retries until the database is open again or the store is closed.
fn recover(shared: &Arc<Shared>) {
    let mut pause = RETRY_FIRST;
    loop {
        std::thread::sleep(pause);
        if shared.is_stopped() {
            return;
        }
        match shared.reopen() {
            Ok(lost) => {
                let down = lock(&shared.outage)
                    .take()
                    .map_or(0.0, |since| since.elapsed().as_secs_f64());
                log::info!(
                    "storage recovered after {down:.1} s; {lost} writes that had not reached \
                     the disk were answered 503 and dropped"
                );
                return;
            }
            Err(e) => {
                log::debug!("storage has not recovered yet: {e}");
                pause = next_pause(pause);
            }
        }
    }
}

fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(RETRY_MAX)
}

/// Writes, fsyncs and deletes a probe file: whether the disk takes writes again.
fn probe_disk(dir: &Path) -> StoreResult<()> {
    let path = dir.join(PROBE_FILE);
    let written = std::fs::File::create(&path).and_then(|mut file| {
        file.write_all(&[0; PROBE_BYTES])?;
        file.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    written.map_err(|e| crate::store::StoreError::Disk(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::{SledStore, SyncMode};
    use crate::store::{Store, StoreError, wait_durable};
    use std::time::Duration;

    #[test]
    fn attempts_back_off_from_a_quarter_second_to_two_seconds() {
        let pauses: Vec<u128> =
            std::iter::successors(Some(super::RETRY_FIRST), |p| Some(super::next_pause(*p)))
                .take(6)
                .map(|p| p.as_millis())
                .collect();
        assert_eq!(pauses, [250, 500, 1000, 2000, 2000, 2000]);
    }

    #[tokio::test]
    async fn a_disk_failure_closes_the_store_until_it_reopens_by_itself() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = SledStore::open(dir.path(), SyncMode::Sync).unwrap();
        let kept = store.create_chat("kept", 1).unwrap().unwrap();
        wait_durable(store.as_ref(), store.write_epoch())
            .await
            .unwrap();
        let before = store.write_epoch();

        // What a write that hit ENOSPC does: sled is unusable from then on.
        store.shared.fail("injected: No space left on device");
        assert!(!store.available());
        assert!(matches!(store.chats(), Err(StoreError::Unavailable)));
        assert!(matches!(
            store.create_chat("refused", 1),
            Err(StoreError::Unavailable)
        ));
        assert!(store.check_health().is_err());

        let mut watch = store.durability();
        let recovered = watch.wait_for(|d| d.recoveries == 1);
        tokio::time::timeout(Duration::from_secs(30), recovered)
            .await
            .expect("recovered within 30 s")
            .unwrap();
        assert!(store.available());
        store.check_health().unwrap();
        assert_eq!(store.chats().unwrap(), vec![kept]);
        // The recovery took one epoch of its own; nothing was lost, later writes are durable.
        assert_eq!(store.write_epoch(), before + 1);
        assert_eq!(store.durability().borrow().lost, None);
        let chat = store.create_chat("later", 2).unwrap().unwrap();
        assert!(chat.id > 1);
        wait_durable(store.as_ref(), store.write_epoch())
            .await
            .unwrap();
    }
}
