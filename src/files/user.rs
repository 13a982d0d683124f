//! Who the process runs as, and who owns a file, in words an operator can act on.

use std::path::Path;

/// The effective user, e.g. "root (uid 0)" or "uid 61234" when the uid has no name.
pub fn process_user() -> String {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        describe_uid(uid)
    }
    #[cfg(not(unix))]
    {
        "the current user".to_string()
    }
}

/// The owner of `path` (not following a final symlink), described as [`process_user`] does.
pub fn owner_of(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path)
            .ok()
            .map(|m| describe_uid(m.uid()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(unix)]
fn describe_uid(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// The account name of `uid` from the system's user database (nss: /etc/passwd, systemd's
/// dynamic users), if it has one.
#[cfg(unix)]
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: passwd is plain data; getpwuid_r fills it with pointers into `buf`, which
    // outlives every read of them below.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the length given; the call writes only into them.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::{owner_of, process_user};

    #[test]
    fn the_process_user_names_its_uid() {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let me = process_user();
        assert!(me.contains(&format!("uid {uid}")), "{me}");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(owner_of(dir.path()), Some(me));
    }
}
