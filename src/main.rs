//! The `natter` binary: parse the command line, set up logging, run the chosen command.

use clap::Parser;
use natter::cli::{Cli, Command};
use natter::config::{self, Config, LogLevel};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    natter::files::restrict_umask();
    let normalized = natter::goflags::normalize(std::env::args_os());
    let cli = Cli::parse_from(&normalized.args);
    let sources = config::Sources {
        config_path: cli.config.clone(),
        dev: cli.dev,
        log_level: cli.log_level.clone(),
        log_level_flag: normalized.spelling("--log-level").map(str::to_owned),
        env: config::process_env(),
    };
    let config::Loaded { config, notes } = match config::load_with_notes(&sources) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("natter: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    let serving = matches!(command, Command::Serve);
    if !serving {
        restore_default_sigpipe();
    }
    if let Command::CheckConfig = command {
        // The summary on stdout stays a loadable natter config file; the notes go beside it.
        for note in &notes {
            eprintln!("natter: {note}");
        }
        println!("{}", config.effective_summary());
        return ExitCode::SUCCESS;
    }
    // The handle keeps the logger alive until main returns.
    let logger = match start_logging(&config) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("natter: cannot start logging: {e}");
            return ExitCode::from(1);
        }
    };
    // Read while loading, before the logger existed. Said by check-config and at a start, not
    // again by every offline command.
    if matches!(command, Command::Serve) {
        for note in &notes {
            log::warn!("{note}");
        }
    }
    let result = match command {
        Command::Serve | Command::CheckConfig => serve(config, sources, logger.clone()).await,
        Command::User(action) => natter::cli::run_user(&config, action)
            .await
            .map_err(|e| (e.message, e.code)),
        Command::Chat(action) => {
            natter::cli::run_chat(&config, action).map_err(|e| (e.message, e.code))
        }
        Command::Export { output } => {
            natter::cli::run_export(&config, output.as_deref()).map_err(|e| (e.message, e.code))
        }
        Command::Import { path } => {
            natter::cli::run_import(&config, &path).map_err(|e| (e.message, e.code))
        }
        #[cfg(feature = "pg")]
        Command::ImportChatty(args) => natter::cli::run_import_chatty(&config, args)
            .await
            .map_err(|e| (e.message, e.code)),
    };
    // Said once: the server's failure as a log line like its others, a command's as a plain line.
    if let Err((message, _)) = &result
        && serving
    {
        log::error!("{message}");
    }
    // The log is buffered: what is still in the buffer goes out before the process ends.
    logger.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((message, code)) => {
            if !serving {
                eprintln!("natter: {message}");
            }
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

async fn serve(
    config: Config,
    sources: config::Sources,
    logger: flexi_logger::LoggerHandle,
) -> Result<(), (String, i32)> {
    // Before build: a signal that arrives right after "listening" must stop natter gracefully,
    // and a SIGHUP must not kill it (its default action).
    let signals = natter::StopSignals::install();
    let reloader = reload_log_level_on_sighup(sources, config.clone(), logger);
    let app = natter::build(config).await.map_err(|e| (e.0, 1))?;
    let result = app.run_until_stopped(signals).await.map_err(|e| (e.0, 1));
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    result
}

/// On every SIGHUP: loads the config again from the same sources (file, environment, flags),
/// applies its `log_level`, and names the changed keys that wait for a restart. A broken file is
/// logged and ignored.
#[cfg(unix)]
fn reload_log_level_on_sighup(
    sources: config::Sources,
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
fn reload_log_level_on_sighup(
    _sources: config::Sources,
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
    sources: &config::Sources,
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
    if let Err(e) = logger.parse_new_spec(&natter::log_spec::spec(new, dependencies)) {
        log::warn!("SIGHUP: cannot switch the log level to {new}: {e}");
        return old;
    }
    if shows_info {
        log::info!("{line}");
    }
    new
}

/// How long a log line may wait in the buffer before it is written.
const LOG_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// A full buffer is written at once, whatever the interval.
const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// Logs to stderr; timestamps only when journald (which adds its own) is not reading.
///
/// Buffered: the request log writes a line per request, and one `write` to the pipe per line
/// cost a fifth of natter's CPU under load; lines now go out in batches, at most
/// `LOG_FLUSH_INTERVAL` late (startup lines and the last ones at exit are flushed at once).
fn start_logging(
    config: &Config,
) -> Result<flexi_logger::LoggerHandle, flexi_logger::FlexiLoggerError> {
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let format = if under_journald {
        plain_format
    } else {
        timestamped_format
    };
    let spec = natter::log_spec::spec(config.log_level, config.dependency_log_level);
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

/// Rust ignores SIGPIPE, so `println!` to a closed pipe panics. The one-shot commands behave like
/// other Unix tools instead (`natter check-config | head` ends quietly); the server keeps
/// ignoring it, as a client that hangs up must only fail that one write.
fn restore_default_sigpipe() {
    // SAFETY: setting a signal's disposition to its default has no precondition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
