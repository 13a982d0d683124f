//! The Containerfile's text: the official bases for everyone (replaceable), this crate's version
//! in the labels, and the stages the docs and the tests name.

use std::path::Path;

fn containerfile() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Containerfile")).unwrap()
}

#[test]
fn the_containerfile_names_the_official_bases_and_this_version() {
    let text = containerfile();
    let lines: Vec<&str> = text.lines().collect();
    for arg in [
        "ARG DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim",
        "ARG RUST_IMAGE=docker.io/library/rust:1-bookworm",
        &format!("ARG VERSION={}", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(lines.contains(&arg), "{arg}");
    }
    let stages: Vec<&str> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("FROM "))
        .collect();
    assert_eq!(
        stages,
        [
            "${RUST_IMAGE} AS build",
            "${DEBIAN_IMAGE} AS runtime-base",
            "runtime-base AS prebuilt",
            // Last: what a plain `podman build .` or `docker build .` makes.
            "runtime-base AS runtime",
        ]
    );
    assert!(text.contains("cargo build --release --locked"));
}

#[test]
fn the_build_context_leaves_out_builds_and_secrets_but_not_the_prebuilt_binary() {
    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore"))
            .unwrap();
    let lines: Vec<&str> = ignore.lines().collect();
    for pattern in [
        "target/",
        "!target/release/natter",
        ".git/",
        "tests/browser/node_modules/",
        "packaging/secrets/",
    ] {
        assert!(lines.contains(&pattern), "{pattern}");
    }
}
