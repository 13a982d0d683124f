//! The log: flexi_logger on stderr with natter's spec (`spec`), buffered, and on SIGHUP the
//! `log_level` reloaded from the config's sources.

pub mod spec;

use crate::config::{self, Config, LogLevel, Sources};

/// How long a log line may wait in the buffer before it is written.
const LOG_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// A full buffer is written at once, whatever the interval.
const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// Logs to stderr; timestamps only when journald (which adds its own) is not reading.
///
/// Buffered: the request log writes a line per request, and one `write` to the pipe per line
/// cost a fifth of natter's CPU under load; lines now go out in batches, at most
/// `LOG_FLUSH_INTERVAL` late (startup lines and the last ones at exit are flushed at once).
pub fn start(
    config: &Config,
) -> Result<flexi_logger::LoggerHandle, flexi_logger::FlexiLoggerError> {
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let format = if under_journald {
        plain_format
    } else {
        timestamped_format
    };
    let spec = crate::logging::spec::spec(config.log_level, config.dependency_log_level);
    flexi_logger::Logger::try_with_str(spec)?
        .log_to_stderr()
        .format(format)
        .write_mode(flexi_logger::WriteMode::BufferAndFlushWith(
            LOG_BUFFER_BYTES,
            LOG_FLUSH_INTERVAL,
        ))
        .start()
}

fn plain_format(
    w: &mut dyn std::io::Write,
    _now: &mut flexi_logger::DeferredNow,
    record: &log::Record,
) -> std::io::Result<()> {
    write!(w, "{} {}", record.level(), record.args())
}

fn timestamped_format(
    w: &mut dyn std::io::Write,
    now: &mut flexi_logger::DeferredNow,
    record: &log::Record,
) -> std::io::Result<()> {
    write!(
        w,
        "{} {} {}",
        now.format_rfc3339(),
        record.level(),
        record.args()
    )
}

/// On every SIGHUP: loads the config again from the same sources (file, environment, flags),
/// applies its `log_level`, and names the changed keys that wait for a restart. A broken file is
/// logged and ignored.
#[cfg(unix)]
pub fn reload_log_level_on_sighup(
    sources: Sources,
    mut running: Config,
    logger: flexi_logger::LoggerHandle,
) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            log::warn!("cannot catch SIGHUP, so it cannot reload the log level: {e}");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        let mut level = running.log_level;
        while hangups.recv().await.is_some() {
            let reload = sources.clone();
            let reloaded = tokio::task::spawn_blocking(move || config::load(&reload))
                .await
                .map_err(|e| e.to_string())
                .and_then(|loaded| loaded.map_err(|e| e.to_string()));
            let loaded = match reloaded {
                Ok(loaded) => loaded,
                Err(e) => {
                    log::warn!("SIGHUP: config not reloaded, log level stays {level}: {e}");
                    continue;
                }
            };
            let new_level = loaded.log_level;
            let dependencies = running.dependency_log_level;
            level = apply_log_level(&logger, level, new_level, dependencies, &sources);
            let report = config::reload_report(&running, &loaded);
            // Compared with what is in force: the level just applied, the rest as started.
            running.log_level = level;
            if running != loaded {
                log::warn!("{report}");
            } else {
                log::info!("{report}");
            }
        }
    }))
}

#[cfg(not(unix))]
pub fn reload_log_level_on_sighup(
    _sources: Sources,
    _running: Config,
    _logger: flexi_logger::LoggerHandle,
) -> Option<tokio::task::JoinHandle<()>> {
    None
}

/// Switches the logger to `new` and says so in one info line, written under whichever of the
/// two levels shows it. Returns the level now in force.
fn apply_log_level(
    logger: &flexi_logger::LoggerHandle,
    old: LogLevel,
    new: LogLevel,
    dependencies: LogLevel,
    sources: &Sources,
) -> LogLevel {
    if new == old {
        let pinned = sources.log_level.is_some()
            || sources
                .env
                .iter()
                .any(|(k, v)| (k == "NATTER_LOG" || k == "NATTER_LOG_LEVEL") && !v.is_empty());
        let note = if pinned {
            " (--log-level and NATTER_LOG win over the config file)"
        } else {
            ""
        };
        log::info!("SIGHUP: log level stays {new}{note}");
        return old;
    }
    let line = format!("log level is now {new} (was {old})");
    let shows_info = new.to_level_filter() >= log::LevelFilter::Info;
    if !shows_info {
        log::info!("{line}");
    }
    if let Err(e) = logger.parse_new_spec(&crate::logging::spec::spec(new, dependencies)) {
        log::warn!("SIGHUP: cannot switch the log level to {new}: {e}");
        return old;
    }
    if shows_info {
        log::info!("{line}");
    }
    new
}
