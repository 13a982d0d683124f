//! The store an offline command works on, sled's data directory or the PostgreSQL store of
//! `storage = "postgres"`: opened to read (also while a server runs), or to change (refused
//! while a server uses it: sled's directory lock, or PostgreSQL's advisory lock).

use super::CliError;
use crate::config::Config;
use crate::files::OwnerGuard;
use crate::store::Store;
use crate::store::sled::{ReadCopy, SledStore, SyncMode};
#[cfg(feature = "pg")]
use crate::store::{ChatRecord, MessageRecord, NextIds, Restored, UserRecord};
use std::sync::Arc;

/// A store opened for a command that only reads.
pub(super) enum Reading {
    /// A private copy of the data directory: neither it nor the mirror's bookkeeping is touched
    /// (docs/configuration.md, Command line).
    Sled(ReadCopy),
    /// The database as it is, read beside a running server.
    Postgres(Arc<dyn Store>),
}

impl Reading {
    pub(super) fn open(config: &Config) -> Result<Reading, CliError> {
        if let Some(pg) = open_postgres_to_read(config)? {
            return Ok(Reading::Postgres(pg));
        }
        Ok(Reading::Sled(ReadCopy::open(&config.data_dir)?))
    }

    pub(super) fn store(&self) -> Arc<dyn Store> {
        match self {
            Reading::Sled(copy) => copy.store().clone(),
            Reading::Postgres(store) => store.clone(),
        }
    }
}

/// A store opened for a command that changes it, held against servers until it is finished.
pub(super) enum Changing {
    /// Declared before the guard, so the store closes before its files are handed to the data
    /// directory's owner.
    Sled {
        store: Arc<SledStore>,
        _owner: OwnerGuard,
    },
    /// The store before the lock, so it closes while no server can start.
    #[cfg(feature = "pg")]
    Postgres {
        store: Arc<crate::store::postgres::PgStore>,
        _lock: crate::store::postgres::owner::Exclusive,
    },
}

impl Changing {
    /// Opens the store to change it; with a sled mirror configured, changes queue for it like
    /// the server's; without one, says first that the mirror will be copied again in full.
    pub(super) async fn open(config: &Config) -> Result<Changing, CliError> {
        if let Some(changing) = Changing::open_postgres(config).await? {
            return Ok(changing);
        }
        let owner = OwnerGuard::new(&config.data_dir);
        Ok(Changing::Sled {
            store: open_sled(config)?,
            _owner: owner,
        })
    }

    /// Opens the store for a bulk load into an empty one (`import-chatty`): sled's mirror
    /// bookkeeping is left alone until the directory is known to be empty.
    #[cfg(feature = "pg")]
    pub(super) async fn open_for_load(config: &Config) -> Result<Changing, CliError> {
        if let Some(changing) = Changing::open_postgres(config).await? {
            return Ok(changing);
        }
        let owner = OwnerGuard::new(&config.data_dir);
        Ok(Changing::Sled {
            store: SledStore::open_leaving_mirror(&config.data_dir, SyncMode::Relaxed)?,
            _owner: owner,
        })
    }

    #[cfg(feature = "pg")]
    async fn open_postgres(config: &Config) -> Result<Option<Changing>, CliError> {
        use crate::store::postgres::owner::{self, ClaimError};
        let Some(target) = postgres_target(config)? else {
            return Ok(None);
        };
        let lock = owner::claim(&target).await.map_err(|e| match e {
            ClaimError::InUse => CliError {
                message: format!(
                    "a natter server is using this database ({}); stop it first, or use the \
                     admin API while it runs (chats: /api/adminonly/createChat and removeChat; \
                     docs/operations.md, The PostgreSQL store)",
                    crate::store::mirror::pg::describe(&target)
                ),
                code: 2,
            },
            ClaimError::Failed(message) => CliError::failed(message),
        })?;
        let options = crate::store::postgres::Options {
            // Not relaxed: the change is flushed in PostgreSQL before the command says so.
            relaxed: false,
            // One command's few reads.
            pool_size: 1,
            statement_timeout: config.postgres_statement_timeout,
            // Offline commands run with every node stopped (owner.rs): none writes the log.
            node: None,
        };
        let store = crate::store::postgres::PgStore::open_with(target, options)?;
        Ok(Some(Changing::Postgres { store, _lock: lock }))
    }

    #[cfg(not(feature = "pg"))]
    async fn open_postgres(_config: &Config) -> Result<Option<Changing>, CliError> {
        Ok(None)
    }

    pub(super) fn store(&self) -> &dyn Store {
        match self {
            Changing::Sled { store, .. } => &**store,
            #[cfg(feature = "pg")]
            Changing::Postgres { store, .. } => &**store,
        }
    }

    /// Makes the changes durable and closes the store, then lets servers in again.
    pub(super) fn finish(self) -> Result<(), CliError> {
        match self {
            Changing::Sled { store, _owner } => Ok(SledStore::close_and_release(store)?),
            #[cfg(feature = "pg")]
            Changing::Postgres { store, _lock } => Ok(store.close()?),
        }
    }
}

/// Records a bulk load writes at a time into the PostgreSQL store (one transaction each).
#[cfg(feature = "pg")]
const LOAD_BATCH: usize = 1000;

/// A bulk load into an empty store (`import-chatty`): sled's loads, marked unfinished on disk
/// until done, or the PostgreSQL store's `import` batches.
#[cfg(feature = "pg")]
impl Changing {
    /// Refuses a store that holds data: sled's with anything in it or an unfinished load; the
    /// PostgreSQL store's with an account, a chat or a message id ever handed out.
    pub(super) fn refuse_unless_empty(&self, config: &Config) -> Result<(), CliError> {
        let (holds, what) = match self {
            Changing::Sled { store, .. } => (
                !store.is_empty() || store.unfinished_load()?.is_some(),
                format!("the data directory {}", config.data_dir.display()),
            ),
            Changing::Postgres { store, .. } => (
                !store.users()?.is_empty()
                    || !store.chats()?.is_empty()
                    || store.next_ids().message > 1,
                "the PostgreSQL database".to_owned(),
            ),
        };
        if holds {
            return Err(CliError::failed(format!(
                "{what} already holds data; import-chatty only fills an empty one"
            )));
        }
        Ok(())
    }

    pub(super) fn begin_load(&self, what: &str) -> Result<(), CliError> {
        if let Changing::Sled { store, .. } = self {
            // An empty directory has nothing the mirror should keep; its next start seeds it.
            store.forget_mirror()?;
            store.begin_load(what)?;
        }
        Ok(())
    }

    pub(super) fn load_users(&self, users: &[UserRecord]) -> Result<(), CliError> {
        match self {
            Changing::Sled { store, .. } => Ok(store.load_users(users)?),
            Changing::Postgres { store, .. } => {
                import_batches(&**store, users.iter().cloned().map(Restored::User))
            }
        }
    }

    pub(super) fn load_chats(&self, chats: &[ChatRecord]) -> Result<(), CliError> {
        match self {
            Changing::Sled { store, .. } => Ok(store.load_chats(chats)?),
            Changing::Postgres { store, .. } => {
                import_batches(&**store, chats.iter().cloned().map(Restored::Chat))
            }
        }
    }

    pub(super) fn load_messages(&self, messages: &[MessageRecord]) -> Result<(), CliError> {
        match self {
            Changing::Sled { store, .. } => Ok(store.load_messages(messages)?),
            Changing::Postgres { store, .. } => {
                import_batches(&**store, messages.iter().cloned().map(Restored::Message))
            }
        }
    }

    pub(super) fn end_load(&self) -> Result<(), CliError> {
        if let Changing::Sled { store, .. } = self {
            store.end_load()?;
        }
        Ok(())
    }
}

/// Writes records under their own ids; the store's next ids rise above them.
#[cfg(feature = "pg")]
fn import_batches(
    store: &dyn Store,
    records: impl Iterator<Item = Restored>,
) -> Result<(), CliError> {
    let first = NextIds {
        chat: 1,
        message: 1,
    };
    let mut batch = Vec::with_capacity(LOAD_BATCH);
    for record in records {
        batch.push(record);
        if batch.len() == LOAD_BATCH {
            store.import(&batch, first)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.import(&batch, first)?;
    }
    Ok(())
}

/// sled's data directory, to change it. Hold an [`OwnerGuard`] from before this call.
fn open_sled(config: &Config) -> Result<Arc<SledStore>, CliError> {
    if cfg!(feature = "pg") && config.database_url.is_some() {
        return Ok(SledStore::open_mirrored(
            &config.data_dir,
            SyncMode::Relaxed,
        )?);
    }
    let store = SledStore::open_leaving_mirror(&config.data_dir, SyncMode::Relaxed)?;
    if store.feeds_mirror()? {
        log::warn!(
            "this data directory feeds a PostgreSQL mirror, but database_url is not set for this \
             command: the change will not reach the mirror, and the next start with \
             database_url copies everything to it again (give the command the service's \
             database_url to avoid that)"
        );
        store.forget_mirror()?;
    }
    Ok(store)
}

/// The database of `storage = "postgres"`; `None` for sled.
#[cfg(feature = "pg")]
fn postgres_target(config: &Config) -> Result<Option<crate::store::mirror::pg::Target>, CliError> {
    if config.storage != crate::config::StorageKind::Postgres {
        return Ok(None);
    }
    crate::store::postgres::PgStore::configured_target(config)
        .map(Some)
        .map_err(CliError::failed)
}

/// The PostgreSQL store of `storage = "postgres"`, for commands that only read; `None` for sled.
#[cfg(feature = "pg")]
fn open_postgres_to_read(config: &Config) -> Result<Option<Arc<dyn Store>>, CliError> {
    let Some(target) = postgres_target(config)? else {
        return Ok(None);
    };
    let options = crate::store::postgres::Options {
        // It writes nothing to wait for.
        relaxed: true,
        // One command's reads.
        pool_size: 1,
        statement_timeout: config.postgres_statement_timeout,
        node: None,
    };
    let pg = crate::store::postgres::PgStore::open_with(target, options)?;
    Ok(Some(pg))
}

#[cfg(not(feature = "pg"))]
fn open_postgres_to_read(_config: &Config) -> Result<Option<Arc<dyn Store>>, CliError> {
    Ok(None)
}
