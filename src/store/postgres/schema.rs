//! The PostgreSQL store's tables (docs/design.md, The PostgreSQL store): versioned migrations
//! embedded in the binary, applied at start under an advisory lock and recorded in
//! `store_migrations`.

use crate::store::mirror::pg::PgError;
use tokio_postgres::Client;

/// (version, name, SQL). Append only: a shipped migration never changes.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "accounts, chats, messages, sessions, mail, state",
    // Times are Unix seconds (session `created`: nanoseconds), ids natter's own. Plain CREATE
    // TABLE on purpose: pointed at a database holding other tables of these names (chatty-server's,
    // a mirror's), this fails instead of mixing rows.
    "CREATE TABLE users (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL,
        email_key TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        verified BOOLEAN NOT NULL,
        admin BOOLEAN NOT NULL,
        bot BOOLEAN NOT NULL,
        created BIGINT NOT NULL,
        activation_hash BYTEA,
        activation_expires BIGINT,
        activation_failures INTEGER,
        reset_hash BYTEA,
        reset_expires BIGINT,
        reset_failures INTEGER
    );
    CREATE TABLE chats (
        id BIGINT PRIMARY KEY,
        name TEXT NOT NULL,
        name_key TEXT NOT NULL UNIQUE,
        created BIGINT NOT NULL
    );
    CREATE TABLE members (
        chat_id BIGINT NOT NULL,
        user_key TEXT NOT NULL,
        user_name TEXT NOT NULL,
        PRIMARY KEY (chat_id, user_key)
    );
    CREATE INDEX members_by_user ON members (user_key);
    CREATE TABLE messages (
        id BIGINT PRIMARY KEY,
        chat_id BIGINT NOT NULL,
        user_name TEXT NOT NULL,
        verified BOOLEAN NOT NULL,
        admin BOOLEAN NOT NULL,
        bot BOOLEAN NOT NULL,
        text TEXT NOT NULL,
        time BIGINT NOT NULL,
        author_account TEXT,
        author_guest BIGINT
    );
    CREATE INDEX messages_by_chat ON messages (chat_id, id);
    CREATE TABLE sessions (
        token_hash BYTEA PRIMARY KEY,
        handle BIGINT NOT NULL,
        user_name TEXT NOT NULL,
        user_key TEXT NOT NULL,
        guest BOOLEAN NOT NULL,
        created BIGINT NOT NULL,
        expires BIGINT NOT NULL,
        online BOOLEAN NOT NULL
    );
    CREATE TABLE mail_outbox (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL,
        to_address TEXT NOT NULL,
        user_name TEXT NOT NULL,
        detail TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt BIGINT NOT NULL
    );
    CREATE TABLE blocked_names (
        name TEXT PRIMARY KEY,
        until BIGINT NOT NULL
    );
    -- One row: the id counters, the epoch of the newest write, the queue snapshot of a
    -- graceful stop, the flusher's counter, and the generated cookie key.
    CREATE TABLE store_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        next_chat_id BIGINT NOT NULL,
        next_message_id BIGINT NOT NULL,
        epoch BIGINT NOT NULL,
        queues BYTEA,
        flushes BIGINT NOT NULL,
        secret_key BYTEA
    );
    INSERT INTO store_state VALUES (1, 1, 1, 0, NULL, 0, NULL);",
)];

/// Key of the advisory lock that keeps two natters from migrating at once.
const LOCK_KEY: i64 = 0x6e61_7474_6573; // "nattes"

/// Why the store's tables are not ready.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database has a users table that natter's PostgreSQL store did not create (a \
         chatty-server database, or a natter mirror?); give storage = \"postgres\" a database \
         of its own"
    )]
    Foreign,
    #[error("{step} failed: {error}")]
    Step { step: &'static str, error: PgError },
    #[error("migration {version} ({name}) failed: {error}")]
    Migration {
        version: i64,
        name: &'static str,
        error: PgError,
    },
    #[error(
        "the database has store schema version {newest}, newer than this natter knows ({known}); \
         upgrade natter"
    )]
    Newer { newest: i64, known: i64 },
}

/// Applies every migration not yet recorded, each in its own transaction.
pub async fn migrate(client: &mut Client) -> Result<(), SchemaError> {
    let fail = |step: &'static str| {
        move |e| SchemaError::Step {
            step,
            error: PgError(e),
        }
    };
    let row = client
        .query_one(
            "SELECT to_regclass('users') IS NOT NULL, to_regclass('store_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(fail("reading the catalog"))?;
    if row.get::<_, bool>(0) && !row.get::<_, bool>(1) {
        return Err(SchemaError::Foreign);
    }
    client
        .batch_execute(
            "SET client_min_messages TO warning;
             CREATE TABLE IF NOT EXISTS store_migrations (
                version BIGINT PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(fail("creating store_migrations"))?;
    for &(version, name, sql) in MIGRATIONS {
        let tx = client
            .transaction()
            .await
            .map_err(fail("starting a migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(fail("locking for migrations"))?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM store_migrations WHERE version = $1",
                &[&version],
            )
            .await
            .map_err(fail("reading store_migrations"))?;
        if done.is_some() {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| SchemaError::Migration {
                version,
                name,
                error: PgError(e),
            })?;
        tx.execute(
            "INSERT INTO store_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await
        .map_err(fail("recording a migration"))?;
        tx.commit().await.map_err(fail("committing a migration"))?;
        log::info!("PostgreSQL store: applied migration {version} ({name})");
    }
    let newest = client
        .query_one("SELECT max(version) FROM store_migrations", &[])
        .await
        .map_err(fail("reading store_migrations"))?
        .get::<_, Option<i64>>(0)
        .unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if newest > known {
        return Err(SchemaError::Newer { newest, known });
    }
    Ok(())
}
