//! Building the image from the top-level Containerfile's `prebuilt` stage, with a binary built
//! outside (no Rust image can be pulled here), and measuring it.

use crate::base::BASE_IMAGE;
use crate::podman::Podman;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The image the tests build and run.
pub const IMAGE: &str = "localhost/natter-test:latest";

/// The binary to put in the image: `TEST_NATTER_BINARY` (CI's release build), else this target
/// directory's release build when it is at least as new as the test build, else the test build.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TEST_NATTER_BINARY") {
        return PathBuf::from(path);
    }
    let debug = PathBuf::from(env!("CARGO_BIN_EXE_natter"));
    let release = debug
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("release/natter"));
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    match release {
        Some(release) if modified(&release) >= modified(&debug) => release,
        _ => debug,
    }
}

/// Builds [`IMAGE`]: the Containerfile with a build context holding only `binary`, on the local
/// base image. `--format docker`: OCI images have no HEALTHCHECK, so podman drops it without.
pub fn build(podman: &Podman, cache: &Path, binary: &Path) {
    let context = cache.join("context");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&context).unwrap();
    let copy = context.join("natter");
    std::fs::copy(binary, &copy).unwrap();
    // Without its symbol table, as the Containerfile's build stage makes it.
    let strip = std::process::Command::new("strip").arg(&copy).status();
    assert!(strip.is_ok_and(|s| s.success()), "strip {copy:?} failed");
    let containerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("Containerfile");
    let debian = format!("DEBIAN_IMAGE={BASE_IMAGE}");
    let version = format!("VERSION={}", env!("CARGO_PKG_VERSION"));
    podman.ok(&[
        "build".as_ref(),
        "--format".as_ref(),
        "docker".as_ref(),
        "--pull=never".as_ref(),
        "--file".as_ref(),
        containerfile.as_os_str(),
        "--target".as_ref(),
        "prebuilt".as_ref(),
        "--build-arg".as_ref(),
        debian.as_ref(),
        "--build-arg".as_ref(),
        "NATTER_BINARY=natter".as_ref(),
        "--build-arg".as_ref(),
        version.as_ref(),
        "--tag".as_ref(),
        IMAGE.as_ref(),
        context.as_os_str(),
    ]);
    let _ = std::fs::remove_dir_all(&context);
}

/// The image's size as stored (uncompressed) and as `podman save | gzip -6` sends it.
pub struct Size {
    pub uncompressed: u64,
    pub compressed: u64,
}

pub fn size(podman: &Podman) -> Size {
    let uncompressed = podman
        .ok(&["image", "inspect", "--format", "{{.Size}}", IMAGE])
        .parse()
        .unwrap();
    let mut save = podman
        .command()
        .args(["save", "--format", "docker-archive", IMAGE])
        .stdout(Stdio::piped())
        .spawn()
        .expect("podman could not be started");
    let mut gzip = std::process::Command::new("gzip")
        .arg("-6")
        .stdin(save.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip could not be started");
    let mut compressed = 0u64;
    let mut out = gzip.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        compressed += n as u64;
    }
    assert!(save.wait().unwrap().success(), "podman save failed");
    assert!(gzip.wait().unwrap().success(), "gzip failed");
    Size {
        uncompressed,
        compressed,
    }
}
