//! Load benchmark: `cargo bench --bench load` (full, minutes) or
//! `BENCH_SMOKE=1 cargo bench --bench load` (tiny scale, seconds, asserts correctness only).
//!
//! Starts the release `natter` as child processes with temporary data directories, and a baseline
//! (a bare warp server with a `tokio::sync::broadcast` long-poll route and a hello route, this same
//! binary re-run), drives both over HTTP on 127.0.0.1 with a minimal HTTP/1.1 client, and prints a
//! markdown table, PASS/FAIL per target, and one JSON line starting with `BENCH_JSON `.
//! Server CPU time comes from `/proc/PID/stat`, since the load generator shares the cores.

mod client;
// The throwaway PostgreSQL of the tests, started with fsync on for workload 12.
#[cfg(feature = "pg")]
#[allow(dead_code)]
#[path = "../../tests/mirror/cluster.rs"]
mod cluster;
mod http;
mod keepalive;
// The real nginx in front of workload 13's nodes.
#[cfg(feature = "pg")]
mod nginx;
mod online;
mod pool;
mod servers;
mod workloads;

use std::time::Instant;

fn main() {
    if std::env::var_os(servers::BASELINE_ENV).is_some() {
        servers::run_baseline();
        return;
    }
    let smoke = std::env::var_os("BENCH_SMOKE").is_some_and(|v| v != "0")
        || std::env::args().any(|a| a == "--smoke");
    let fds = servers::raise_fd_limit();
    let started = Instant::now();
    let load_before = workloads::loadavg();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(workloads::run_all(smoke, fds));
    let load_after = workloads::loadavg();
    report.print(smoke, &load_before, &load_after, started.elapsed());
    if !report.correct() {
        eprintln!("load benchmark: correctness check failed");
        std::process::exit(1);
    }
}
