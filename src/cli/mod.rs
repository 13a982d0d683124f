//! Command line (clap) and the offline commands that open the data directory directly.

pub mod goflags;
mod healthcheck;
mod stores;

pub use healthcheck::run_healthcheck;

use crate::auth::password;
use crate::config::Config;
use crate::files::OwnerGuard;
use crate::interchange::backup::Export;
use crate::model::{ChatName, Password, name_key};
use crate::store::{Store, StoreError};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use stores::{Changing, Reading};

/// natter: a self-hosted group chat server in one binary.
///
/// The options work before or after the command; given twice, the later one wins. chatty-server's flags work
/// too, in any of Go's forms (`-dev`, `--dev=false`, `-config PATH`, `-configFilepath=PATH`, `-loglevel LEVEL`,
/// `-logLevel LEVEL`).
#[derive(Debug, Parser)]
#[command(name = "natter", version, about, args_override_self = true)]
pub struct Cli {
    /// Development mode: log mailer, localhost CORS, low PBKDF2 rounds allowed (--dev=false turns it off).
    #[arg(
        long,
        global = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        hide_default_value = true,
        hide_possible_values = true,
        value_name = "BOOL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub dev: bool,
    /// Config file (must exist); without it ./config.toml is read if present.
    #[arg(
        short = 'c',
        long = "config",
        visible_alias = "configFilepath",
        global = true,
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,
    /// error, warn, info, debug or trace (also NATTER_LOG).
    #[arg(
        long = "log-level",
        visible_alias = "logLevel",
        alias = "loglevel",
        global = true,
        value_name = "LEVEL"
    )]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Load and validate the config, print the effective values (secrets redacted).
    CheckConfig,
    /// Ask the running server's /healthz on the configured port (loopback for a wildcard
    /// address): exit 0 on a 200, 1 with the reason otherwise (a container's HEALTHCHECK).
    Healthcheck,
    /// Manage accounts while the server is stopped.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage chats while the server is stopped.
    #[command(subcommand)]
    Chat(ChatCommand),
    /// Write a JSON Lines backup of accounts, chats and messages: sled's while the server is
    /// stopped (while it runs, use GET /api/adminonly/export), PostgreSQL's at any time.
    Export {
        /// Write to this file instead of standard output.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Load a backup into an empty store (sled's data directory, or a PostgreSQL database
    /// without accounts or chats), the server stopped.
    Import {
        /// A file written by `natter export` or the export route.
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
    /// Fill an empty store (sled's data directory or the PostgreSQL database) from
    /// chatty-server's PostgreSQL database (server stopped).
    #[cfg(feature = "pg")]
    ImportChatty(ImportChattyArgs),
}

/// `natter import-chatty`'s arguments.
#[cfg(feature = "pg")]
#[derive(Debug, clap::Args)]
pub struct ImportChattyArgs {
    /// chatty-server's DATABASE_URL ("-" reads it from standard input). Without it:
    /// CHATTY_DATABASE_URL, CHATTY_DATABASE_URL_FILE, or standard input. An argument shows in
    /// `ps` and the shell's history.
    #[arg(value_name = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Read and report, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep chatty-server's admin flags (anyone could set them at registration there); without
    /// it every account comes in without admin and the former admins are listed.
    #[arg(long)]
    pub keep_admins: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List registered accounts.
    List,
    /// Mark an account's email as verified.
    Verify { name: String },
    /// Make an account an admin.
    GrantAdmin { name: String },
    /// Take admin away from an account (names in `admins` get it back at the next start).
    RevokeAdmin { name: String },
    /// Set a new password, read from standard input without echo; ends the account's sessions.
    SetPassword { name: String },
    /// Delete an account and its sessions.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// List chats.
    List,
    /// Create a chat.
    Create { name: String },
    /// Remove a chat with its messages.
    Remove { name: String },
}

/// An offline command's failure: the message and the process exit code.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl CliError {
    fn failed(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: 1,
        }
    }
}

impl From<StoreError> for CliError {
    fn from(err: StoreError) -> Self {
        // A locked directory means a running server: exit 2, as for config errors.
        let code = if matches!(err, StoreError::Locked(_)) {
            2
        } else {
            1
        };
        CliError {
            message: err.to_string(),
            code,
        }
    }
}

/// Runs `natter user ...`.
pub async fn run_user(config: &Config, command: UserCommand) -> Result<(), CliError> {
    if let UserCommand::List = command {
        let reading = Reading::open(config)?;
        println!(
            "{:<32} {:<40} {:<8} {:<5}",
            "NAME", "EMAIL", "VERIFIED", "ADMIN"
        );
        for user in reading.store().users()? {
            println!(
                "{:<32} {:<40} {:<8} {:<5}",
                user.name, user.email, user.verified, user.admin
            );
        }
        return Ok(());
    }
    let changing = Changing::open(config).await?;
    change_user(changing.store(), config, command).await?;
    changing.finish()
}

/// `natter user ...` on a store opened to change it, sled or PostgreSQL alike.
async fn change_user(
    store: &dyn Store,
    config: &Config,
    command: UserCommand,
) -> Result<(), CliError> {
    match command {
        // Answered from a store opened to read (`run_user`).
        UserCommand::List => {}
        UserCommand::Verify { name } => update_user(store, &name, |u| {
            u.verified = true;
            u.activation = None;
        })?,
        UserCommand::GrantAdmin { name } => update_user(store, &name, |u| u.admin = true)?,
        UserCommand::RevokeAdmin { name } => update_user(store, &name, |u| u.admin = false)?,
        UserCommand::SetPassword { name } => {
            let key = name_key(&name);
            store.user(&key)?.ok_or_else(|| no_user(&name))?;
            let new_password = read_password()?;
            let hash = password::hash(new_password, config.password_iterations)
                .await
                .map_err(|_| CliError::failed("hashing the password failed"))?;
            update_user(store, &name, |u| {
                u.password_hash = hash;
                u.reset = None;
            })?;
            end_sessions(store, &key)?;
        }
        UserCommand::Delete { name } => {
            let key = name_key(&name);
            if !store.delete_user(&key)? {
                return Err(no_user(&name));
            }
            end_sessions(store, &key)?;
            for member in store.members()? {
                if member.user_key == key {
                    store.remove_member(member.chat_id, &key)?;
                }
            }
        }
    }
    Ok(())
}

fn no_user(name: &str) -> CliError {
    CliError::failed(format!("no registered user named {name}"))
}

fn update_user(
    store: &dyn Store,
    name: &str,
    change: impl FnOnce(&mut crate::store::UserRecord),
) -> Result<(), CliError> {
    let mut user = store.user(&name_key(name))?.ok_or_else(|| no_user(name))?;
    change(&mut user);
    store.update_user(&user, None)?;
    println!("updated {}", user.name);
    Ok(())
}

fn end_sessions(store: &dyn Store, user_key: &str) -> Result<(), CliError> {
    for session in store.sessions()? {
        if session.user_key == user_key {
            store.delete_session(&session.token_hash)?;
        }
    }
    Ok(())
}

/// Reads a password without echo from a terminal, or one line from a pipe.
fn read_password() -> Result<Password, CliError> {
    let raw = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("New password: ")
            .map_err(|e| CliError::failed(format!("cannot read the password: {e}")))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| CliError::failed(format!("cannot read the password: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    Password::parse(&raw).map_err(|_| CliError::failed("the password must be 8 to 128 characters"))
}

/// Runs `natter chat ...`.
pub async fn run_chat(config: &Config, command: ChatCommand) -> Result<(), CliError> {
    if let ChatCommand::List = command {
        let mut chats = Reading::open(config)?.store().chats()?;
        chats.sort_by(|a, b| a.name.cmp(&b.name));
        for chat in chats {
            println!("{}", chat.name);
        }
        return Ok(());
    }
    let changing = Changing::open(config).await?;
    change_chats(changing.store(), command)?;
    changing.finish()
}

/// `natter chat ...` on a store opened to change it, sled or PostgreSQL alike.
fn change_chats(store: &dyn Store, command: ChatCommand) -> Result<(), CliError> {
    match command {
        // Answered from a store opened to read (`run_chat`).
        ChatCommand::List => {}
        ChatCommand::Create { name } => {
            let chat = ChatName::parse(&name)
                .map_err(|_| CliError::failed(format!("invalid chat name: {name:?}")))?;
            let created = store
                .create_chat(chat.as_str(), crate::model::now())?
                .ok_or_else(|| CliError::failed(format!("chat {name} already exists")))?;
            println!("created chat {}", created.name);
        }
        ChatCommand::Remove { name } => {
            let key = name_key(&name);
            let chat = store
                .chats()?
                .into_iter()
                .find(|c| name_key(&c.name) == key)
                .ok_or_else(|| CliError::failed(format!("no such chat: {name}")))?;
            store.remove_chat(chat.id)?;
            let messages = store.purge_messages(chat.id)?;
            println!("removed chat {} and its {messages} messages", chat.name);
        }
    }
    Ok(())
}

/// Runs `natter export`: the dump goes to `output`, or to standard output.
pub fn run_export(config: &Config, output: Option<&Path>) -> Result<(), CliError> {
    // On PostgreSQL this works while the server runs; messages posted after the export began
    // are left out.
    let reading = Reading::open(config)?;
    let export = Export::offline(reading.store(), crate::model::now())?;
    let counts = match output {
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            export
                .write_to(&mut out)
                .map_err(|e| CliError::failed(format!("writing the export failed: {e}")))?
        }
        Some(path) => write_export_file(export, path)?,
    };
    // Standard output may be the dump itself: the summary goes to standard error.
    eprintln!(
        "exported {} users, {} chats, {} messages",
        counts.users, counts.chats, counts.messages
    );
    Ok(())
}

/// Writes a new file beside `path` under an unpredictable name, mode 0600 (the dump holds
/// every password hash), and renames it to `path` when complete, so `path` never holds half a
/// dump. The new file is created exclusively, so no symlink planted beside `path` is followed,
/// and the rename replaces a symlink at `path` itself rather than writing through it.
fn write_export_file(
    export: Export,
    path: &Path,
) -> Result<crate::interchange::backup::Counts, CliError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let failed = |action: &str, at: &Path, e: std::io::Error| {
        CliError::failed(crate::files::io_error(action, at, &e))
    };
    // tempfile removes the partial file if anything below fails.
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.as_deref().unwrap_or("export")))
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(|e| failed("create a file in", dir, e))?;
    let mut out = std::io::BufWriter::new(partial);
    let counts = export
        .write_to(&mut out)
        .map_err(|e| failed("write the export to", path, e))?;
    let partial = out
        .into_inner()
        .map_err(|e| failed("write the export to", path, e.into_error()))?;
    partial
        .as_file()
        .sync_all()
        .map_err(|e| failed("write the export to", path, e))?;
    partial
        .persist(path)
        .map_err(|e| failed("rename the export to", path, e.error))?;
    Ok(counts)
}

/// Runs `natter import PATH`: checks the whole dump, then loads it into the empty `data_dir`
/// or PostgreSQL store.
pub async fn run_import(config: &Config, path: &Path) -> Result<(), CliError> {
    use crate::interchange::backup;
    let checks =
        crate::store::incoming::Incoming::new(&config.bot.name, config.password_iterations);
    let not_imported = |e| CliError::failed(format!("{} was not imported: {e}", path.display()));
    let (checked, into) = if config.storage == crate::config::StorageKind::Postgres {
        let changing = Changing::open(config).await?;
        let checked = backup::import_into(path, changing.store(), checks).map_err(not_imported)?;
        changing.finish()?;
        (checked, "the PostgreSQL store".to_owned())
    } else {
        let _owner = OwnerGuard::new(&config.data_dir);
        let checked = backup::import(path, &config.data_dir, checks).map_err(not_imported)?;
        (checked, config.data_dir.display().to_string())
    };
    let backup::Checked { counts, admins, .. } = checked;
    if !admins.is_empty() {
        println!("admin accounts in the backup: {}", admins.join(", "));
    }
    println!(
        "imported {} users, {} chats, {} messages into {into}",
        counts.users, counts.chats, counts.messages
    );
    Ok(())
}

/// Runs `natter import-chatty [DATABASE_URL] [--dry-run] [--keep-admins]`: reports each skipped
/// row on one line and ends with a summary; refuses a data directory that already holds data.
#[cfg(feature = "pg")]
pub async fn run_import_chatty(config: &Config, args: ImportChattyArgs) -> Result<(), CliError> {
    use crate::interchange::chatty;
    let dry_run = args.dry_run;
    // A dry run has nothing to check in a data directory that does not exist.
    let target = if dry_run
        && config.storage == crate::config::StorageKind::Sled
        && !config.data_dir.exists()
    {
        None
    } else {
        // Left alone until it is known to be empty: a refused run changes nothing.
        Some(Changing::open_for_load(config).await?)
    };
    if let Some(target) = &target {
        target.refuse_unless_empty(config)?;
    }
    let target = if dry_run { None } else { target };
    let database_url = crate::interchange::chatty::url::resolve(args.database_url.as_deref())
        .map_err(CliError::failed)?;
    let client = chatty::connect(&database_url)
        .await
        .map_err(|e| CliError::failed(e.to_string()))?;
    let mut report = |line: String| println!("{line}");
    let now = crate::model::now();
    let rows = chatty::read_users(&client)
        .await
        .map_err(|e| CliError::failed(e.to_string()))?;
    let total = rows.len() as u64;
    let mut checks =
        crate::store::incoming::Incoming::new(&config.bot.name, config.password_iterations);
    let users = chatty::plan_users(rows, &mut checks, args.keep_admins, now, &mut report);
    report_flags(&users, args.keep_admins);
    let rows = chatty::read_chats(&client)
        .await
        .map_err(|e| CliError::failed(e.to_string()))?;
    let chats = chatty::plan_chats(rows, now, &mut report);
    let mut summary = chatty::Summary {
        users: chatty::Tally {
            imported: users.users.len() as u64,
            skipped: total - users.users.len() as u64,
        },
        chats: chatty::Tally {
            imported: chats.chats.len() as u64,
            skipped: chats.skipped.len() as u64,
        },
        ..chatty::Summary::default()
    };
    if let Some(target) = &target {
        target.begin_load("import-chatty")?;
        target.load_users(&users.users)?;
        target.load_chats(&chats.chats)?;
    }
    let mut after = 0;
    loop {
        let rows = chatty::read_messages(&client, after)
            .await
            .map_err(|e| CliError::failed(e.to_string()))?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.id;
        let read = rows.len() as u64;
        let kept = chatty::plan_messages(rows, &chats, &users, &mut report);
        summary.messages.imported += kept.len() as u64;
        summary.messages.skipped += read - kept.len() as u64;
        if let Some(target) = &target {
            target.load_messages(&kept)?;
        }
    }
    if let Some(target) = target {
        target.end_load()?;
        target.finish()?;
    }
    println!("{}", summary.line(dry_run));
    Ok(())
}

/// Names the accounts whose admin and bot flags came from chatty-server, where anyone could
/// set them at registration.
#[cfg(feature = "pg")]
fn report_flags(users: &crate::interchange::chatty::UserPlan, keep_admins: bool) {
    if !users.admins.is_empty() {
        let names = users.admins.join(", ");
        if keep_admins {
            println!("kept admin (--keep-admins) for chatty-server's admins: {names}");
        } else {
            println!(
                "imported without admin: chatty-server's admins {names} (anyone could make \
                 themselves admin there); grant it through the `admins` config key or \
                 `natter user grant-admin NAME`, or import again with --keep-admins"
            );
        }
    }
    for name in &users.bots {
        println!(
            "warning: account {name} carries chatty-server's bot flag (anyone could set it at \
             registration there): its messages show as a bot's"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{Cli, Command};
    use crate::cli::goflags::normalize_go_flags;
    use clap::Parser;
    use std::path::PathBuf;

    /// Parses as `main` does: the Go-style flags rewritten first.
    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut all = vec!["natter"];
        all.extend_from_slice(args);
        Cli::try_parse_from(normalize_go_flags(all))
    }

    #[test]
    fn dev_takes_every_go_form() {
        for (args, dev) in [
            (vec![], false),
            (vec!["--dev"], true),
            (vec!["-dev"], true),
            (vec!["-dev=true"], true),
            (vec!["--dev=true"], true),
            (vec!["-dev=false"], false),
            (vec!["--dev=false"], false),
            (vec!["-dev=1"], true),
            (vec!["-dev=F"], false),
            (vec!["--dev", "check-config"], true),
            (vec!["check-config", "-dev"], true),
            (vec!["-dev", "-dev=false"], false),
        ] {
            let cli = parse(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.dev, dev, "{args:?}");
        }
        // `--dev serve`: the command stays a command, not the flag's value.
        let cli = parse(&["--dev", "serve"]).unwrap();
        assert!(cli.dev && matches!(cli.command, Some(Command::Serve)));
        assert!(parse(&["--dev=maybe"]).is_err());
    }

    #[test]
    fn config_and_log_level_take_every_spelling_before_or_after_the_command() {
        for flag in [
            "-c",
            "--config",
            "-config",
            "--configFilepath",
            "-configFilepath",
        ] {
            for args in [
                vec![flag, "x.toml", "check-config"],
                vec!["check-config", flag, "x.toml"],
            ] {
                let cli = parse(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
                assert_eq!(cli.config, Some(PathBuf::from("x.toml")), "{args:?}");
                assert!(matches!(cli.command, Some(Command::CheckConfig)));
            }
        }
        for args in [
            vec!["-config=x.toml"],
            vec!["--config=x.toml"],
            vec!["-configFilepath=x.toml"],
        ] {
            let cli = parse(&args).unwrap();
            assert_eq!(cli.config, Some(PathBuf::from("x.toml")), "{args:?}");
        }
        for flag in [
            "--log-level",
            "--logLevel",
            "--loglevel",
            "-loglevel",
            "-logLevel",
        ] {
            for args in [vec![flag, "debug"], vec!["chat", "list", flag, "debug"]] {
                let cli = parse(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
                assert_eq!(cli.log_level.as_deref(), Some("debug"), "{args:?}");
            }
            let joined = format!("{flag}=trace");
            assert_eq!(
                parse(&[&joined]).unwrap().log_level.as_deref(),
                Some("trace")
            );
        }
        let cli = parse(&["user", "verify", "alice", "-dev", "-config", "y.toml"]).unwrap();
        assert!(cli.dev);
        assert_eq!(cli.config, Some(PathBuf::from("y.toml")));
    }
}
