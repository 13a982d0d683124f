//! Files and directories natter creates: private modes, errors that name the path and the
//! process's user, and handing what a root-run command wrote back to the data directory's owner.
//! A leaf like `config`: it imports nothing of natter's.

mod owner;
mod user;

pub use owner::{OwnerGuard, find_inaccessible, hand_to_owner};
pub use user::{owner_of, process_user};

use std::path::Path;

/// An I/O failure on `path` as one line for the operator: what failed, where, and as whom.
pub fn io_error(action: &str, path: &Path, e: &std::io::Error) -> String {
    format!(
        "cannot {action} {}: {e} (natter runs as {})",
        path.display(),
        process_user()
    )
}

/// Files natter creates are readable by its user only (0600, directories 0700), whatever the
/// shell's umask: the data holds password hashes and the cookie key.
pub fn restrict_umask() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` and any missing parents with mode 0700 (an existing one is left as it is).
pub fn create_private_dir(dir: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| io_error("create the directory", dir, &e))
}

#[cfg(test)]
mod tests {
    use super::create_private_dir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_created_directory_is_private_and_an_existing_one_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        create_private_dir(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).unwrap();
        create_private_dir(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o750);
    }
}
