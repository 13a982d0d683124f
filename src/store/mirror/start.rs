//! The mirror at server start: parse `database_url`, open sled with or without the outbox,
//! finish or refuse an interrupted bulk load, restore or seed, and start the worker.

use crate::config::Config;
use crate::store::StoreError;
use crate::store::sled::{SledStore, SyncMode};
use std::sync::Arc;
use tokio::task::{JoinError, JoinHandle};

/// Where the mirror goes: PostgreSQL connection settings (nothing in a build without `pg`).
#[cfg(feature = "pg")]
pub type Target = super::pg::Target;
#[cfg(not(feature = "pg"))]
pub type Target = ();

/// Why the data directory cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The task opening sled ended without an answer.
    #[error("opening storage failed: {0}")]
    Task(JoinError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bulk load (`what` names it: a restore, an import) was cut short.
    #[error(
        "the data directory holds an unfinished {what} (it was interrupted); delete the data \
         directory and run it again{}",
        if what == "restore" { " (a restore runs at start with database_url set)" } else { "" }
    )]
    Unfinished { what: String },
    #[cfg(not(feature = "pg"))]
    #[error("database_url is set, but this build of natter has no PostgreSQL mirror")]
    NoMirror,
    #[cfg(feature = "pg")]
    #[error(transparent)]
    Url(#[from] super::pg::UrlError),
    #[cfg(feature = "pg")]
    #[error(transparent)]
    Restore(#[from] super::restore::RestoreError),
}

/// Opens the data directory, ready to serve: with `database_url` set, the outbox is on and
/// an empty directory has been restored from a non-empty mirror.
pub async fn open_store(
    config: &Config,
    mode: SyncMode,
) -> Result<(Arc<SledStore>, Option<Target>), OpenError> {
    let target = target(config)?;
    let mirrored = target.is_some();
    let data_dir = config.data_dir.clone();
    let cache_bytes = config.data_cache_bytes;
    let store = tokio::task::spawn_blocking(move || {
        SledStore::open_with(&data_dir, mode, mirrored, cache_bytes)
    })
    .await
    .map_err(OpenError::Task)??;
    match store.unfinished_load()? {
        None => {}
        // A restore starts over below.
        Some(what) if what == "restore" && mirrored => {}
        Some(what) => return Err(OpenError::Unfinished { what }),
    }
    #[cfg(feature = "pg")]
    if let Some(warning) = target.as_ref().and_then(super::pg::exposure_warning) {
        log::warn!("{warning}");
    }
    #[cfg(feature = "pg")]
    if let Some(pg) = &target {
        super::restore::prepare(&store, pg, config).await?;
    }
    Ok((store, target))
}

#[cfg(feature = "pg")]
fn target(config: &Config) -> Result<Option<Target>, OpenError> {
    Ok(config
        .database_url
        .as_ref()
        .map(|url| super::pg::parse(url.expose()))
        .transpose()?)
}

#[cfg(not(feature = "pg"))]
fn target(config: &Config) -> Result<Option<Target>, OpenError> {
    match config.database_url {
        Some(_) => Err(OpenError::NoMirror),
        None => Ok(None),
    }
}

/// Starts the worker that drains the outbox into PostgreSQL.
#[cfg(feature = "pg")]
pub fn spawn_worker(store: Arc<SledStore>, target: Target, config: &Config) -> JoinHandle<()> {
    let options = super::worker::Options {
        target,
        replace_foreign: config.mirror_replace_foreign,
    };
    tokio::spawn(super::worker::run(store, options))
}

#[cfg(not(feature = "pg"))]
pub fn spawn_worker(_store: Arc<SledStore>, _target: Target, _config: &Config) -> JoinHandle<()> {
    tokio::spawn(async {})
}
