//! For the few tests that assert on natter's log itself (the request log, the `log` mailer).
//! The logger is process-global: lines of every server running meanwhile are mixed in.

use std::sync::{Mutex, OnceLock};

struct CapturingLogger;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for CapturingLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) && record.target().starts_with("natter") {
            LINES.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

/// Starts capturing natter's log lines; call it before starting the server to watch.
pub fn start() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        log::set_boxed_logger(Box::new(CapturingLogger)).expect("no other logger is installed");
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// Every line captured so far.
pub fn lines() -> Vec<String> {
    LINES.lock().unwrap().clone()
}

/// How many lines were captured so far, to read only later ones.
pub fn mark() -> usize {
    LINES.lock().unwrap().len()
}

/// Waits (up to 10 s) for a line after the first `from` that `pick` accepts; the latest wins.
pub async fn wait_for_line<T>(from: usize, pick: impl Fn(&str) -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(found) = lines()[from..].iter().rev().find_map(|l| pick(l)) {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the expected log line never came");
}
