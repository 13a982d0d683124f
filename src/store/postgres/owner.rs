//! Who may change the PostgreSQL store: each natter server holds a shared advisory lock on its
//! writer connection (shared, so several servers may one day use one database), and an offline
//! command that changes data takes the same lock exclusively on a connection of its own, so it
//! refuses while a server runs and a server waits while it works. The lock lives as long as the
//! connection, so a server that lost its connection takes it again on the next one.

use crate::store::mirror::pg::{self, PgError, Target};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The advisory lock's key ("nattero" in ASCII, apart from the migrations' keys). Advisory
/// locks belong to one database, so natter's databases on one PostgreSQL do not share it.
pub const KEY: i64 = 0x006e_6174_7465_726f;

/// Whether this process holds the lock exclusively: its own store then takes no shared lock,
/// which would wait for the exclusive one.
static HELD_HERE: AtomicBool = AtomicBool::new(false);

/// Takes the shared lock on a server's new connection. While an offline command holds the lock
/// this waits, until the connection's `statement_timeout` ends the wait with a clear error.
pub async fn share(client: &Client) -> Result<(), String> {
    if HELD_HERE.load(Ordering::SeqCst) {
        return Ok(());
    }
    client
        .batch_execute(&format!("SELECT pg_advisory_lock_shared({KEY})"))
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
                "a natter command (user, chat, import or import-chatty) is changing this \
                 database; try again once it has finished"
                    .to_owned()
            } else {
                PgError(e).to_string()
            }
        })
}

/// The database held exclusively by this process; dropping it closes the connection, which
/// releases the lock.
pub struct Exclusive {
    _client: Client,
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        HELD_HERE.store(false, Ordering::SeqCst);
    }
}

/// Why [`claim`] did not get the database.
#[derive(Debug)]
pub enum ClaimError {
    /// A natter server (or a command that reads, such as `natter export`) holds the shared lock.
    InUse,
    /// PostgreSQL could not be reached or refused the statement.
    Failed(String),
}

/// How long [`claim`] tries: a server that has just exited lets go of the lock a moment later,
/// once PostgreSQL has noticed its connection close.
const CLAIM_GRACE: Duration = Duration::from_secs(1);

/// Takes the lock exclusively on a connection of its own, without waiting for a server:
/// `InUse` while any natter server uses the database.
pub async fn claim(target: &Target) -> Result<Exclusive, ClaimError> {
    let client = pg::connect(target).await.map_err(|e| {
        ClaimError::Failed(format!(
            "cannot reach PostgreSQL at {}: {e}",
            pg::describe(target)
        ))
    })?;
    let until = Instant::now() + CLAIM_GRACE;
    loop {
        let taken: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&KEY])
            .await
            .map_err(|e| ClaimError::Failed(PgError(e).to_string()))?
            .get(0);
        if taken {
            break;
        }
        if Instant::now() >= until {
            return Err(ClaimError::InUse);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    HELD_HERE.store(true, Ordering::SeqCst);
    Ok(Exclusive { _client: client })
}
