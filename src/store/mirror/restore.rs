//! Start-up with the mirror on: an empty data directory is filled from a non-empty mirror; a
//! data directory the mirror has not followed is copied into it whole.

use super::pg::{self, ConnectError, PgError, Target};
use super::schema::{self, SchemaError};
use crate::config::Config as Rules;
use crate::store::incoming::{self, Incoming};
use crate::store::sled::SledStore;
use crate::store::{ChatRecord, MessageRecord, StoreError, UserRecord};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinError;
use tokio_postgres::Client;

/// How long an empty data directory waits for PostgreSQL before natter gives up starting.
const PATIENCE: Duration = Duration::from_secs(30);
/// Messages read per query while restoring.
const PAGE: i64 = 10_000;

/// Why the server cannot start with this data directory and mirror.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking storage task ended without an answer.
    #[error(transparent)]
    Task(#[from] JoinError),
    #[error(
        "the data directory is empty and the PostgreSQL mirror {target} cannot be reached \
         ({error}), so natter cannot tell whether to restore from it; start again once \
         PostgreSQL is up"
    )]
    Unreachable { target: String, error: ConnectError },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// Reading the mirror's label.
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// Reading the mirror's rows.
    #[error("reading the mirror failed: {0}")]
    Read(PgError),
    /// Reading the last id of a page of messages.
    #[error("reading the mirror failed: {0}")]
    Column(tokio_postgres::Error),
}

/// Why one of the mirror's rows is left out of a restore (logged on one line, never fatal).
#[derive(Debug, thiserror::Error)]
enum Skip {
    #[error("its {column} is NULL")]
    Null { column: String },
    #[error("its {column} cannot be read: {error}")]
    Unreadable {
        column: String,
        error: tokio_postgres::Error,
    },
    /// Refused by the checks the API applies (`Incoming`), or an id natter cannot hold.
    #[error("{0}")]
    Refused(String),
}

impl From<String> for Skip {
    fn from(why: String) -> Self {
        Skip::Refused(why)
    }
}

/// Brings sled and the mirror in line before the server starts; returns once it is safe to
/// serve. Only an empty data directory needs PostgreSQL now: anything else goes to the outbox.
pub async fn prepare(
    store: &Arc<SledStore>,
    config: &Target,
    rules: &Rules,
) -> Result<(), RestoreError> {
    let target = pg::describe(config);
    if store.unfinished_load()?.as_deref() == Some("restore") {
        // A crash cut the last restore short: what it loaded must not pass for the whole.
        log::warn!("the last restore from the mirror did not finish; starting it over");
        store.clear_loaded()?;
    } else if store.mirror_target()?.as_deref() == Some(target.as_str()) {
        return Ok(());
    }
    if !store.is_empty() {
        let (seeding, t) = (store.clone(), target.clone());
        let queued = tokio::task::spawn_blocking(move || seeding.seed_mirror(&t)).await??;
        log::info!(
            "PostgreSQL mirror {target} has not followed this data directory: queued a full \
             copy ({queued} changes), which replaces the mirror's tables"
        );
        return Ok(());
    }
    // Empty: whether the mirror holds data decides between restoring and starting fresh, so
    // this one question waits for PostgreSQL.
    let mut client = connect_patiently(config, &target).await?;
    schema::migrate(&mut client).await?;
    // Held until this connection closes: a copy restored while another natter still writes
    // would make two servers of one data set.
    schema::lock_writer(&client, &target).await?;
    let started = Instant::now();
    let marked = store.clone();
    tokio::task::spawn_blocking(move || marked.begin_load("restore")).await??;
    let (users, chats, messages) = restore(&client, store, rules).await?;
    if users + chats + messages == 0 {
        log::info!("PostgreSQL mirror {target} is empty: nothing to restore");
    } else {
        log::info!(
            "restored {users} accounts, {chats} chats and {messages} messages from the \
             PostgreSQL mirror {target} into the empty data directory in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let instance = adopt_instance(&client).await?;
    let (s, t) = (store.clone(), target);
    tokio::task::spawn_blocking(move || {
        s.set_mirror_instance(&instance)?;
        s.set_mirror_target(&t)?;
        s.end_load()
    })
    .await??;
    Ok(())
}

/// The mirror's instance label, created when it has none (a new database).
async fn adopt_instance(client: &Client) -> Result<String, RestoreError> {
    if let Some(row) = client
        .query_opt("SELECT id FROM mirror_instance LIMIT 1", &[])
        .await
        .map_err(PgError)?
    {
        return Ok(row.get(0));
    }
    let instance = crate::store::sled::new_instance()?;
    client
        .execute("INSERT INTO mirror_instance (id) VALUES ($1)", &[&instance])
        .await
        .map_err(PgError)?;
    Ok(instance)
}

/// Waits up to `PATIENCE` for PostgreSQL: the wait is logged once, then its outcome.
async fn connect_patiently(config: &Target, target: &str) -> Result<Client, RestoreError> {
    let started = Instant::now();
    let deadline = started + PATIENCE;
    let mut waiting = false;
    loop {
        match pg::connect(config).await {
            Ok(client) => {
                if waiting {
                    log::info!(
                        "the PostgreSQL mirror {target} answered after {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                }
                return Ok(client);
            }
            Err(e) if Instant::now() < deadline => {
                if !waiting {
                    log::warn!(
                        "the data directory is empty and the PostgreSQL mirror {target} cannot \
                         be reached yet ({e}); waiting up to {} s for it to check for data to \
                         restore",
                        PATIENCE.as_secs()
                    );
                    waiting = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => {
                return Err(RestoreError::Unreachable {
                    target: target.to_owned(),
                    error,
                });
            }
        }
    }
}

/// Copies the mirror into sled, each row checked as the API would (`Incoming`); a row that fails
/// is logged on one line and left out. Returns the counts of accounts, chats and messages.
async fn restore(
    client: &Client,
    store: &Arc<SledStore>,
    rules: &Rules,
) -> Result<(u64, u64, u64), RestoreError> {
    let fail = |e| RestoreError::Read(PgError(e));
    let mut incoming = Incoming::new(&rules.bot.name, rules.password_iterations);
    let skipped = |what: &str, id: &str, why: Skip| {
        log::warn!("restore: skipped the mirror's {what} {id}: {why}");
    };
    let mut users = Vec::new();
    for row in client
        .query(
            "SELECT key, name, email, password_hash, verified, admin, bot,
                    extract(epoch FROM created)::bigint FROM users ORDER BY key",
            &[],
        )
        .await
        .map_err(fail)?
    {
        let key: String = row_key(&row);
        match user_row(&row).and_then(|u| incoming.user(&u).map(|()| u).map_err(Skip::Refused)) {
            Ok(user) => users.push(user),
            Err(why) => skipped("account", &format!("{key:?}"), why),
        }
    }
    let mut chats = Vec::new();
    for row in client
        .query(
            "SELECT id, name, extract(epoch FROM created)::bigint FROM chats ORDER BY id",
            &[],
        )
        .await
        .map_err(fail)?
    {
        let id: i64 = row_key(&row);
        match chat_row(&row).and_then(|c| incoming.chat(&c).map(|()| c).map_err(Skip::Refused)) {
            Ok(chat) => chats.push(chat),
            Err(why) => skipped("chat", &id.to_string(), why),
        }
    }
    if let Some(admins) = incoming::admins_line(&users) {
        log::warn!("restore: the mirror makes these accounts admins: {admins}");
    }
    let counts = (users.len() as u64, chats.len() as u64);
    blocking(store, move |s| {
        s.load_users(&users)?;
        s.load_chats(&chats)
    })
    .await?;
    // From the lowest BIGINT, so that a negative id is reported too.
    let mut after = i64::MIN;
    let mut messages = 0u64;
    loop {
        let rows = client
            .query(
                "SELECT id, chat_id, \"user\", text, extract(epoch FROM time)::bigint,
                        verified, admin, bot
                 FROM messages WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &PAGE],
            )
            .await
            .map_err(fail)?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.try_get(0).map_err(RestoreError::Column)?;
        let mut page = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row_key(row);
            match message_row(row)
                .and_then(|m| incoming.message(&m).map(|()| m).map_err(Skip::Refused))
            {
                Ok(message) => page.push(message),
                Err(why) => skipped("message", &id.to_string(), why),
            }
        }
        messages += page.len() as u64;
        blocking(store, move |s| s.load_messages(&page)).await?;
    }
    Ok((counts.0, counts.1, messages))
}

/// The first column of `row`, its key or id, to name a skipped row by; the default where it is
/// NULL or cannot be read.
fn row_key<'a, T: tokio_postgres::types::FromSql<'a> + Default>(row: &'a tokio_postgres::Row) -> T {
    row.try_get::<_, Option<T>>(0)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Column `i` of `row`, which must not be NULL.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    i: usize,
) -> Result<T, Skip> {
    let column = || row.columns().get(i).map_or("?", |c| c.name()).to_owned();
    match row.try_get::<_, Option<T>>(i) {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(Skip::Null { column: column() }),
        Err(error) => Err(Skip::Unreadable {
            column: column(),
            error,
        }),
    }
}

fn user_row(r: &tokio_postgres::Row) -> Result<UserRecord, Skip> {
    Ok(UserRecord {
        name: column(r, 1)?,
        email: column(r, 2)?,
        password_hash: column(r, 3)?,
        verified: column(r, 4)?,
        admin: column(r, 5)?,
        bot: column(r, 6)?,
        created: column(r, 7)?,
        activation: None,
        reset: None,
    })
}

fn chat_row(r: &tokio_postgres::Row) -> Result<ChatRecord, Skip> {
    Ok(ChatRecord {
        id: incoming::id_from_pg("chat", column(r, 0)?)?,
        name: column(r, 1)?,
        created: column(r, 2)?,
    })
}

fn message_row(r: &tokio_postgres::Row) -> Result<MessageRecord, Skip> {
    Ok(MessageRecord {
        id: incoming::id_from_pg("message", column(r, 0)?)?,
        chat_id: incoming::id_from_pg("chat", column(r, 1)?)?,
        user: column(r, 2)?,
        text: column(r, 3)?,
        time: column(r, 4)?,
        verified: column(r, 5)?,
        admin: column(r, 6)?,
        bot: column(r, 7)?,
        // The mirror keeps no author: restored messages are deleted by admins only.
        author: None,
    })
}

async fn blocking(
    store: &Arc<SledStore>,
    work: impl FnOnce(&SledStore) -> crate::store::StoreResult<()> + Send + 'static,
) -> Result<(), RestoreError> {
    let store = store.clone();
    Ok(tokio::task::spawn_blocking(move || work(&store)).await??)
}
