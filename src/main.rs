//! The `natter` binary: parse the command line, set up logging, run the chosen command.

use clap::Parser;
use natter::cli::{Cli, Command};
use natter::config::{self, Config};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let sources = config::Sources {
        config_path: cli.config.clone(),
        dev: cli.dev,
        log_level: cli.log_level.clone(),
        env: config::process_env(),
    };
    let config = match config::load(&sources) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("natter: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::CheckConfig = command {
        println!("{}", config.effective_summary());
        return ExitCode::SUCCESS;
    }
    // The handle keeps the logger alive until main returns.
    let _logger = match start_logging(&config) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("natter: cannot start logging: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match command {
        Command::Serve | Command::CheckConfig => serve(config).await,
        Command::User(action) => natter::cli::run_user(&config, action)
            .await
            .map_err(|e| (e.message, e.code)),
        Command::Chat(action) => {
            natter::cli::run_chat(&config, action).map_err(|e| (e.message, e.code))
        }
        #[cfg(feature = "pg")]
        Command::ImportChatty {
            database_url,
            dry_run,
        } => natter::cli::run_import_chatty(&config, &database_url, dry_run)
            .await
            .map_err(|e| (e.message, e.code)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((message, code)) => {
            log::error!("{message}");
            eprintln!("natter: {message}");
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

async fn serve(config: Config) -> Result<(), (String, i32)> {
    // Before build: a signal that arrives right after "listening" must stop natter gracefully.
    let signals = natter::StopSignals::install();
    let app = natter::build(config).await.map_err(|e| (e.0, 1))?;
    app.run_until_stopped(signals).await.map_err(|e| (e.0, 1))
}

/// Logs to stderr; timestamps only when journald (which adds its own) is not reading.
fn start_logging(
    config: &Config,
) -> Result<flexi_logger::LoggerHandle, flexi_logger::FlexiLoggerError> {
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let format = if under_journald {
        plain_format
    } else {
        timestamped_format
    };
    flexi_logger::Logger::try_with_str(config.log_level.as_str())?
        .log_to_stderr()
        .format(format)
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
