//! Waiting on a spawned natter: for a line in its log, for its exit.

use crate::helpers::Served;
use std::time::{Duration, Instant};

/// Waits until the process has logged a line containing `needle` (stderr is read by a thread).
pub async fn wait_log(served: &Served, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains(needle))
    {
        let log = served.log.lock().unwrap().join("\n");
        assert!(Instant::now() < deadline, "natter logged {needle:?}: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the child to exit: its status and how long it took.
pub async fn wait_exit(
    served: &mut Served,
    limit: Duration,
) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "natter exited within {limit:?} of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
