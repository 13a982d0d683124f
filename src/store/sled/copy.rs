//! Read-only offline commands (`user list`, `chat list`, `export`) read a private copy of the
//! data directory: opening a sled database writes to it (a fresh snapshot file, the end of a torn
//! log zeroed), and a file written there by root would lock the service out.

use super::{SledStore, SyncMode};
use crate::store::{StoreError, StoreResult};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// sled's log file; sled holds an exclusive `flock` on it while the database is open.
const LOG_FILE: &str = "db";

/// Waits until no open store holds `dir` (sled's threads let go of its lock a moment after the
/// last handle is dropped), so a stopped server's directory is ready for offline commands.
/// False if it is still held after `within`.
pub fn wait_until_released(dir: &Path, within: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        let Ok(log) = File::open(dir.join(LOG_FILE)) else {
            return true;
        };
        match log.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => return false,
            _ => return true,
        }
    }
}

/// A store opened on a copy of a data directory, removed again when dropped.
pub struct ReadCopy {
    /// Declared first, so the store closes before its directory goes.
    store: Arc<SledStore>,
    _dir: tempfile::TempDir,
}

impl ReadCopy {
    /// Copies `dir` (under the same lock a running natter holds, so a server can neither be
    /// running nor start meanwhile) into a private temporary directory and opens the copy.
    pub fn open(dir: &Path) -> StoreResult<ReadCopy> {
        let log_path = dir.join(LOG_FILE);
        let log = match File::open(&log_path) {
            Ok(log) => log,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Io(format!(
                    "{} holds no natter data ({} is missing); is data_dir right?",
                    dir.display(),
                    log_path.display()
                )));
            }
            Err(e) => {
                return Err(StoreError::Disk(crate::files::io_error(
                    "open", &log_path, &e,
                )));
            }
        };
        match log.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(dir.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Disk(crate::files::io_error(
                    "lock", &log_path, &e,
                )));
            }
        }
        let copy = tempfile::Builder::new()
            .prefix("natter-read-")
            .tempdir()
            .map_err(|e| {
                StoreError::Disk(crate::files::io_error(
                    "create a temporary directory in",
                    &std::env::temp_dir(),
                    &e,
                ))
            })?;
        copy_tree(dir, copy.path())?;
        drop(log);
        // The copy is read and dropped: its mirror bookkeeping stays as it was.
        let store = SledStore::open_leaving_mirror(copy.path(), SyncMode::Relaxed)?;
        Ok(ReadCopy { store, _dir: copy })
    }

    /// The copy's store.
    pub fn store(&self) -> &Arc<SledStore> {
        &self.store
    }
}

/// Copies sled's files: everything but the cookie key (not needed to read, and not to be
/// spread into the temporary directory) and hidden entries (an import's leftovers).
fn copy_tree(from: &Path, to: &Path) -> StoreResult<()> {
    let failed = |action: &str, path: &Path, e: std::io::Error| {
        StoreError::Disk(crate::files::io_error(action, path, &e))
    };
    let listing = std::fs::read_dir(from).map_err(|e| failed("list", from, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| failed("list", from, e))?;
        let name = entry.file_name();
        if name == "secret_key" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        let source: PathBuf = entry.path();
        let target = to.join(&name);
        let kind = entry.file_type().map_err(|e| failed("read", &source, e))?;
        if kind.is_dir() {
            crate::files::create_private_dir(&target).map_err(StoreError::Disk)?;
            copy_tree(&source, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target).map_err(|e| failed("copy", &source, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ReadCopy;
    use crate::store::sled::{SledStore, SyncMode};
    use crate::store::{Store, StoreError};
    use std::collections::BTreeMap;
    use std::path::Path;

    /// Every entry's name, length and modification time.
    fn listing(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let meta = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    (meta.len(), meta.modified().unwrap()),
                )
            })
            .collect()
    }

    #[test]
    fn reading_a_copy_leaves_the_data_directory_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = SledStore::open(&data, SyncMode::Relaxed).unwrap();
        store.create_chat("Ops", 1).unwrap();
        store.flush().unwrap();
        store.close().unwrap();
        drop(store);
        let before = listing(&data);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let copy = ReadCopy::open(&data).unwrap();
        let names: Vec<String> = copy
            .store()
            .chats()
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["Ops"]);
        drop(copy);
        assert_eq!(listing(&data), before);
    }

    #[test]
    fn a_copy_is_refused_while_the_directory_is_open_and_when_it_holds_no_data() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = SledStore::open(&data, SyncMode::Relaxed).unwrap();
        assert!(matches!(ReadCopy::open(&data), Err(StoreError::Locked(_))));
        drop(store);
        let missing = dir.path().join("absent");
        let e = ReadCopy::open(&missing).err().unwrap().to_string();
        assert!(
            e.contains("holds no natter data") && e.contains("absent"),
            "{e}"
        );
        assert!(!missing.exists());
    }
}
