//! The Debian base layer, made here: no registry can be reached, so a bookworm root file system
//! built with mmdebstrap from Debian's packages stands in for the official debian:bookworm-slim.

use crate::podman::Podman;
use std::path::Path;
use std::process::Command;

/// The local stand-in for docker.io/library/debian:bookworm-slim.
pub const BASE_IMAGE: &str = "localhost/natter-test-debian:bookworm";

/// Imports the bookworm root file system as [`BASE_IMAGE`], making it first if `cache` lacks it.
/// Both are kept: `rm -r target/tmp/container` starts again from Debian's current packages.
pub fn ensure_base_image(podman: &Podman, cache: &Path) {
    if podman
        .output(&["image", "exists", BASE_IMAGE])
        .status
        .success()
    {
        return;
    }
    let rootfs = cache.join("bookworm-minbase.tar");
    if !rootfs.exists() {
        make_rootfs(&rootfs);
    }
    podman.ok(&[
        "import".as_ref(),
        "--change".as_ref(),
        "CMD [\"bash\"]".as_ref(),
        rootfs.as_os_str(),
        BASE_IMAGE.as_ref(),
    ]);
}

/// A slim bookworm like the official image's: minbase with ca-certificates, merged /usr without
/// the usrmerge package (which pulls in perl), no manuals, docs or translations.
fn make_rootfs(rootfs: &Path) {
    let partial = rootfs.with_extension("tar.partial");
    let status = Command::new("mmdebstrap")
        .args([
            "--quiet",
            "--variant=minbase",
            "--include=ca-certificates",
            "--mode=root",
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
            "--format=tar",
            "bookworm",
        ])
        .arg(&partial)
        .status()
        .expect("mmdebstrap could not be started (apt-get install mmdebstrap)");
    assert!(status.success(), "mmdebstrap failed ({status})");
    std::fs::rename(&partial, rootfs).unwrap();
}
