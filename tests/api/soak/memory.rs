//! The server's resident memory over the run, sampled once a second from `/proc/PID/status`.
//!
//! Growth is measured from the end of warm-up to the end: the baseline is the mean of the samples
//! in the `WINDOW` after warm-up, the end the mean of the last `WINDOW` of chatting, so one
//! allocator hiccup does not decide the result.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How much of the run each of the two RSS figures averages over.
pub const WINDOW: Duration = Duration::from_secs(5);

/// (seconds since chatting began, RSS in KiB)
pub type Samples = Arc<Mutex<Vec<(f64, u64)>>>;

/// Samples `pid`'s RSS every second until `until`.
pub async fn sample(pid: u32, until: Instant, into: Samples) {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < until {
        ticker.tick().await;
        if let Some(kib) = rss_kib(pid) {
            into.lock()
                .unwrap()
                .push((started.elapsed().as_secs_f64(), kib));
        }
    }
}

/// `VmRSS` of a process, `None` once it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
pub fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// The 1-minute load average.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// The baseline (after warm-up) and end RSS in KiB, each a mean over `WINDOW`.
pub fn baseline_and_end(
    samples: &[(f64, u64)],
    warmup: Duration,
    chatting: Duration,
) -> (u64, u64) {
    let mean = |from: f64, to: f64| {
        let picked: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, kib)| *kib)
            .collect();
        assert!(
            !picked.is_empty(),
            "RSS samples between {from:.0} s and {to:.0} s"
        );
        picked.iter().sum::<u64>() / picked.len() as u64
    };
    let (warm, end, window) = (
        warmup.as_secs_f64(),
        chatting.as_secs_f64(),
        WINDOW.as_secs_f64(),
    );
    (mean(warm, warm + window), mean(end - window, end + 1.0))
}
