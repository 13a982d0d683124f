//! The `natter` binary: parse the command line, set up logging, run the chosen command.

use clap::Parser;
use natter::cli::{Cli, Command};
use natter::config::{self, Config};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    natter::files::restrict_umask();
    let normalized = natter::cli::goflags::normalize(std::env::args_os());
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
    // Run every few seconds by a container runtime: no logger, no notes, one line either way.
    if let Command::Healthcheck = command {
        return match natter::cli::run_healthcheck(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("natter: {}", e.message);
                ExitCode::from(1)
            }
        };
    }
    // The handle keeps the logger alive until main returns.
    let logger = match natter::logging::start(&config) {
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
        Command::Serve | Command::CheckConfig | Command::Healthcheck => {
            serve(config, sources, logger.clone()).await
        }
        Command::User(action) => natter::cli::run_user(&config, action)
            .await
            .map_err(|e| (e.message, e.code)),
        Command::Chat(action) => natter::cli::run_chat(&config, action)
            .await
            .map_err(|e| (e.message, e.code)),
        Command::Export { output } => {
            natter::cli::run_export(&config, output.as_deref()).map_err(|e| (e.message, e.code))
        }
        Command::Import { path } => natter::cli::run_import(&config, &path)
            .await
            .map_err(|e| (e.message, e.code)),
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
    let reloader = natter::logging::reload_log_level_on_sighup(sources, config.clone(), logger);
    let app = natter::build(config).await.map_err(|e| (e.0, 1))?;
    let result = app.run_until_stopped(signals).await.map_err(|e| (e.0, 1));
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    result
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
