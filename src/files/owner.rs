//! A command run as root must not leave files the service's user cannot open: what it created in
//! the data directory is handed to the directory's owner. And when opening fails, which entry
//! the process cannot use.

use super::user::owner_of;
use std::path::{Path, PathBuf};

/// Gives every entry under `dir` (not following symlinks) the owner and group of `dir` itself.
/// Only root can; for anyone else this does nothing. Returns how many entries changed hands.
pub fn hand_to_owner(dir: &Path) -> Result<usize, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(0);
        }
        let top = match std::fs::metadata(dir) {
            Ok(top) => top,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(super::io_error("read", dir, &e)),
        };
        let (uid, gid) = (top.uid(), top.gid());
        let mut changed = 0;
        for path in entries_under(dir)? {
            let meta =
                std::fs::symlink_metadata(&path).map_err(|e| super::io_error("read", &path, &e))?;
            if (meta.uid(), meta.gid()) != (uid, gid) {
                std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                    .map_err(|e| super::io_error("change the owner of", &path, &e))?;
                changed += 1;
            }
        }
        Ok(changed)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(0)
    }
}

/// Every path below `dir`, depth first; symlinks are listed, not followed.
fn entries_under(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let listing = std::fs::read_dir(&next).map_err(|e| super::io_error("list", &next, &e))?;
        for entry in listing {
            let entry = entry.map_err(|e| super::io_error("list", &next, &e))?;
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    Ok(found)
}

/// Hands the data directory to its owner when dropped (after the store that wrote it closed),
/// on success and on every early return alike.
pub struct OwnerGuard {
    dir: PathBuf,
}

impl OwnerGuard {
    /// Declare it before opening the store, so that it drops after the store.
    pub fn new(dir: &Path) -> OwnerGuard {
        OwnerGuard {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        if let Err(e) = hand_to_owner(&self.dir) {
            log::error!("{e}; the service may not be able to open these files");
        }
    }
}

/// The first of `dir` and the entries below it that this process cannot read and write, with
/// its owner: what to name when opening the data directory failed with "permission denied".
pub fn find_inaccessible(dir: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        let mut candidates = vec![dir.to_path_buf()];
        if let Ok(below) = entries_under(dir) {
            candidates.extend(below);
        }
        candidates
            .into_iter()
            .find(|path| !accessible(path))
            .map(|path| {
                let owner = owner_of(&path).unwrap_or_else(|| "an unknown user".into());
                format!("{} belongs to {owner}", path.display())
            })
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Whether this process may read and write `path` (and enter it, for a directory).
#[cfg(unix)]
fn accessible(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return true;
    };
    let mut wanted = libc::R_OK | libc::W_OK;
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        wanted |= libc::X_OK;
    }
    // SAFETY: c_path is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::access(c_path.as_ptr(), wanted) == 0 }
}
