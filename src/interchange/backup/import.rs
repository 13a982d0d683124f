//! Reading a dump back (`natter import`): the whole file is checked before anything is written,
//! then loaded into a hidden staging directory inside `data_dir` (the one place the service may
//! write) whose files are moved up only when complete. A damaged or cut-off dump is refused,
//! naming its line, and writes nothing.

use super::{Counts, FORMAT_VERSION, Header, Line};
use crate::store::incoming::{Incoming, MAX_ID};
use crate::store::sled::{SledStore, SyncMode};
use crate::store::{Author, ChatRecord, MessageRecord, NextIds, Restored, Store, UserRecord};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Longest line accepted; a message is at most `max_message_chars` characters, far below this.
const MAX_LINE_BYTES: u64 = 16 << 20;
/// Records written per store batch.
const BATCH: usize = 1000;

/// Why an import was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The dump's line at fault (1-based), when a line is.
    pub line: Option<u64>,
    pub message: String,
}

impl ImportError {
    fn at(line: u64, message: impl Into<String>) -> ImportError {
        ImportError {
            line: Some(line),
            message: message.into(),
        }
    }

    fn general(message: impl Into<String>) -> ImportError {
        ImportError {
            line: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ImportError {}

/// What a whole dump holds: its header, its counts and the names of its admin accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub header: Header,
    pub counts: Counts,
    pub admins: Vec<String>,
}

/// Checks a whole dump without writing anything, every row as the API would (`checks` is fresh).
pub fn validate(path: &Path, checks: Incoming) -> Result<Checked, ImportError> {
    let mut reader = DumpReader::open(path, checks)?;
    while reader.next_record()?.is_some() {}
    Ok(Checked {
        header: reader.header,
        counts: reader.counts,
        admins: reader.admins,
    })
}

/// Loads the dump at `path` into `data_dir`, which must be missing or empty.
pub fn import(path: &Path, data_dir: &Path, checks: Incoming) -> Result<Checked, ImportError> {
    ensure_empty(data_dir)?;
    let checked = validate(path, checks.clone())?;
    crate::files::create_private_dir(data_dir).map_err(ImportError::general)?;
    // Removed with whatever it holds if anything below fails; empty once the files moved up.
    let staging = tempfile::Builder::new()
        .prefix(".import-")
        .tempdir_in(data_dir)
        .map_err(|e| {
            ImportError::general(crate::files::io_error(
                "create a staging directory in",
                data_dir,
                &e,
            ))
        })?;
    load(path, staging.path(), checked.header, checks)?;
    move_into_place(staging.path(), data_dir)?;
    end_load(data_dir)?;
    Ok(checked)
}

/// What the "import" mark on disk says while the files move up: a start or another import
/// that meets it refuses the half-moved directory instead of serving part of the dump.
const LOAD_MARK: &str = "import";

fn storage(e: crate::store::StoreError) -> ImportError {
    ImportError::general(e.to_string())
}

/// Clears the mark in the moved store: the import is complete.
fn end_load(data_dir: &Path) -> Result<(), ImportError> {
    let store = SledStore::open(data_dir, SyncMode::Relaxed).map_err(storage)?;
    store.end_load().map_err(storage)?;
    SledStore::close_and_release(store).map_err(storage)
}

/// Writes every record of the (already validated) dump into a new store at `dir`.
fn load(path: &Path, dir: &Path, header: Header, checks: Incoming) -> Result<(), ImportError> {
    let store = SledStore::open(dir, SyncMode::Relaxed).map_err(storage)?;
    store.begin_load(LOAD_MARK).map_err(storage)?;
    write_records(path, &*store, header, checks)?;
    // Closing flushes.
    SledStore::close_and_release(store).map_err(storage)
}

/// Writes every record of the (already validated) dump into `store`, in batches.
fn write_records(
    path: &Path,
    store: &dyn Store,
    header: Header,
    checks: Incoming,
) -> Result<(), ImportError> {
    let next = NextIds {
        chat: header.next_chat_id,
        message: header.next_message_id,
    };
    let mut reader = DumpReader::open(path, checks)?;
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(record) = reader.next_record()? {
        batch.push(record);
        if batch.len() == BATCH {
            store.import(&batch, next).map_err(storage)?;
            batch.clear();
        }
    }
    store.import(&batch, next).map_err(storage)
}

/// Loads the dump at `path` into `store` (the PostgreSQL store), which must hold no account
/// and no chat yet. The whole dump is checked first; a failure while writing leaves part of it
/// behind, so the database is then emptied (or made anew) before a second try.
pub fn import_into(
    path: &Path,
    store: &dyn Store,
    checks: Incoming,
) -> Result<Checked, ImportError> {
    if !store.users().map_err(storage)?.is_empty() || !store.chats().map_err(storage)?.is_empty() {
        return Err(ImportError::general(
            "the database already holds accounts or chats: natter import only loads into an \
             empty one",
        ));
    }
    let checked = validate(path, checks.clone())?;
    write_records(path, store, checked.header, checks)?;
    store.flush().map_err(storage)?;
    Ok(checked)
}

/// `data_dir` may be missing or an empty directory; anything in it means it is in use.
fn ensure_empty(data_dir: &Path) -> Result<(), ImportError> {
    match std::fs::read_dir(data_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImportError::general(crate::files::io_error(
            "read", data_dir, &e,
        ))),
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(ImportError::general(format!(
                "{} is not empty: natter import only loads into a missing or empty data_dir",
                data_dir.display()
            ))),
        },
    }
}

/// Moves the finished store's files from `staging` up into `data_dir`, the log file first:
/// cut short, the directory then holds the "import" mark and is refused, never served.
fn move_into_place(staging: &Path, data_dir: &Path) -> Result<(), ImportError> {
    let failed = |what: &Path, e: std::io::Error| {
        ImportError::general(crate::files::io_error("move the import into", what, &e))
    };
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(staging)
        .map_err(|e| failed(staging, e))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| failed(staging, e))?;
    names.sort_by_key(|name| name != "db");
    for name in names {
        let target = data_dir.join(&name);
        std::fs::rename(staging.join(&name), &target).map_err(|e| failed(&target, e))?;
    }
    // The renames are durable once the directory is synced (best effort).
    if let Ok(dir) = File::open(data_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Reads a dump line by line and checks everything an import relies on: the header's version,
/// each line's shape, each row as the API would take it (`Incoming`: names, emails, hashes,
/// ids, no duplicates), messages in increasing id order in chats listed before them, ids below
/// the header's counters, and the end marker with matching counts as the last line.
struct DumpReader {
    input: BufReader<File>,
    /// The number of the line read last.
    line: u64,
    header: Header,
    counts: Counts,
    checks: Incoming,
    admins: Vec<String>,
    last_message: u64,
    ended: bool,
}

impl DumpReader {
    fn open(path: &Path, checks: Incoming) -> Result<DumpReader, ImportError> {
        let file = File::open(path)
            .map_err(|e| ImportError::general(crate::files::io_error("open", path, &e)))?;
        let mut reader = DumpReader {
            input: BufReader::with_capacity(1 << 16, file),
            line: 0,
            header: Header {
                natter_export: FORMAT_VERSION,
                created: 0,
                next_chat_id: 1,
                next_message_id: 1,
            },
            counts: Counts::default(),
            checks,
            admins: Vec::new(),
            last_message: 0,
            ended: false,
        };
        let first = reader
            .read_line()?
            .ok_or_else(|| ImportError::at(1, "the file is empty, not a natter export"))?;
        reader.header = parse_header(&first)?;
        Ok(reader)
    }

    /// The next line's bytes without its newline; `None` at the end of the file.
    fn read_line(&mut self) -> Result<Option<Vec<u8>>, ImportError> {
        self.line += 1;
        let mut buf = Vec::new();
        let read = (&mut self.input)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| ImportError::at(self.line, format!("cannot read: {e}")))?;
        if read == 0 {
            return Ok(None);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() as u64 > MAX_LINE_BYTES {
            return Err(ImportError::at(self.line, "line longer than 16 MiB"));
        }
        Ok(Some(buf))
    }

    /// The next record, checked; `None` once the end marker was read and nothing follows it.
    fn next_record(&mut self) -> Result<Option<Restored>, ImportError> {
        if self.ended {
            return Ok(None);
        }
        let Some(bytes) = self.read_line()? else {
            return Err(ImportError::at(
                self.line,
                "the dump ends without its end marker: it is truncated",
            ));
        };
        let line = self.line;
        let parsed: Line = serde_json::from_slice(&bytes)
            .map_err(|e| ImportError::at(line, format!("not a valid dump line: {e}")))?;
        let record = match parsed {
            Line::User {
                name,
                email,
                password_hash,
                verified,
                admin,
                bot,
                created,
            } => {
                let user = UserRecord {
                    name,
                    email,
                    password_hash,
                    verified,
                    admin,
                    bot,
                    created,
                    activation: None,
                    reset: None,
                };
                self.checks.user(&user).map_err(|why| {
                    ImportError::at(line, format!("account {:?}: {why}", user.name))
                })?;
                if user.admin {
                    self.admins.push(user.name.clone());
                }
                self.counts.users += 1;
                Restored::User(user)
            }
            Line::Chat { id, name, created } => {
                if id >= self.header.next_chat_id {
                    return Err(ImportError::at(
                        line,
                        format!("chat id {id} is not below next_chat_id"),
                    ));
                }
                let chat = ChatRecord { id, name, created };
                self.checks
                    .chat(&chat)
                    .map_err(|why| ImportError::at(line, format!("chat {id}: {why}")))?;
                self.counts.chats += 1;
                Restored::Chat(chat)
            }
            Line::Message {
                id,
                chat_id,
                user,
                verified,
                admin,
                bot,
                text,
                time,
                author,
            } => {
                if id <= self.last_message || id >= self.header.next_message_id {
                    return Err(ImportError::at(
                        line,
                        format!(
                            "message id {id} is out of order (after {}, below next_message_id {})",
                            self.last_message, self.header.next_message_id
                        ),
                    ));
                }
                let message = MessageRecord {
                    id,
                    chat_id,
                    user,
                    verified,
                    admin,
                    bot,
                    text,
                    time,
                    author: author.map(Author::Account),
                };
                self.checks
                    .message(&message)
                    .map_err(|why| ImportError::at(line, format!("message {id}: {why}")))?;
                self.last_message = id;
                self.counts.messages += 1;
                Restored::Message(message)
            }
            Line::End {
                users,
                chats,
                messages,
            } => {
                let said = Counts {
                    users,
                    chats,
                    messages,
                };
                if said != self.counts {
                    return Err(ImportError::at(
                        line,
                        format!(
                            "the end marker counts {users} users, {chats} chats, {messages} messages, \
                             but the dump holds {}, {}, {}",
                            self.counts.users, self.counts.chats, self.counts.messages
                        ),
                    ));
                }
                if self.read_line()?.is_some() {
                    return Err(ImportError::at(self.line, "text after the end marker"));
                }
                self.ended = true;
                return Ok(None);
            }
        };
        Ok(Some(record))
    }
}

fn parse_header(bytes: &[u8]) -> Result<Header, ImportError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ImportError::at(1, format!("not a natter export header: {e}")))?;
    match value.get("natter_export").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(ImportError::at(
                1,
                format!("export format {v} is not supported (this natter reads {FORMAT_VERSION})"),
            ));
        }
        None => return Err(ImportError::at(1, "not a natter export header")),
    }
    let header: Header = serde_json::from_value(value)
        .map_err(|e| ImportError::at(1, format!("not a natter export header: {e}")))?;
    let range = 1..=MAX_ID + 1;
    if !range.contains(&header.next_chat_id) || !range.contains(&header.next_message_id) {
        return Err(ImportError::at(
            1,
            format!("the next ids must be between 1 and {}", MAX_ID + 1),
        ));
    }
    Ok(header)
}
