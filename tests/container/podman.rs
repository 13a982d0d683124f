//! podman as the tests drive it: storage of its own under target/tmp, runc with cgroupfs (what this
//! kind of sandbox allows), and every call's output checked.

use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A podman with its own image store, so test images and volumes never mix with the machine's.
pub struct Podman {
    root: PathBuf,
    runroot: PathBuf,
}

impl Podman {
    /// podman, if it is installed and answers; the store lives under `cache`.
    pub fn find(cache: &Path) -> Option<Podman> {
        let version = Command::new("podman").arg("--version").output().ok()?;
        if !version.status.success() {
            return None;
        }
        // State that must not outlive a reboot (locks, container runtime state) goes to /run, a
        // tmpfs; one directory per store, named after it.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        cache.hash(&mut hasher);
        let runroot = PathBuf::from(format!("/run/natter-test-podman/{:016x}", hasher.finish()));
        Some(Podman {
            root: cache.join("storage"),
            runroot,
        })
    }

    /// `podman` with the store's and the runtime's global options.
    pub fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(self.runroot.join("run"))
            .arg("--tmpdir")
            .arg(self.runroot.join("libpod"))
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
        // overlay works on ext4 here; another store can be asked for (vfs where overlay cannot mount).
        if let Ok(driver) = std::env::var("TEST_PODMAN_STORAGE_DRIVER") {
            command.arg("--storage-driver").arg(driver);
        }
        command.stdin(Stdio::null());
        command
    }

    /// Runs `podman ARGS`, returning its output whatever the exit status.
    pub fn output<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.command()
            .args(args)
            .output()
            .expect("podman could not be started")
    }

    /// Runs `podman ARGS`, which must succeed; its standard output, trimmed.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {} failed ({}):\n{}{}",
            describe(args),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Runs `podman ARGS` and ignores the outcome: clean-up of what may already be gone.
    pub fn quietly<S: AsRef<OsStr>>(&self, args: &[S]) {
        let _ = self.output(args);
    }

    /// A container's standard output and error so far, for failure messages and mailed links.
    pub fn logs(&self, container: &str) -> String {
        let out = self.output(&["logs", container]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

fn describe<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
