//! The mirror's tables: versioned migrations embedded in the binary, applied at connect and
//! recorded in `schema_migrations`.

use super::pg::PgError;
use tokio_postgres::Client;

/// Why the mirror's tables are not ready, or not this natter's alone to write.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("taking the mirror's lock failed: {0}")]
    Lock(PgError),
    #[error(
        "another natter is writing to the mirror database {target} (it holds the mirror's \
         advisory lock): two writers would mix their copies; stop the other one or give this \
         one a database of its own"
    )]
    Locked { target: String },
    /// A users table natter did not create (chatty-server's, another kind of natter database);
    /// the text says what to do.
    #[error("{0}")]
    Foreign(&'static str),
    /// A step around the migrations: reading the catalog, locking, recording.
    #[error("{step} failed: {error}")]
    Step { step: &'static str, error: PgError },
    #[error("migration {version} ({name}) failed; natter needs a database of its own: {error}")]
    Migration {
        version: i64,
        name: &'static str,
        error: PgError,
    },
    #[error(
        "the database has {what} schema version {newest}, newer than this natter knows \
         ({known}); upgrade natter"
    )]
    Newer {
        what: &'static str,
        newest: i64,
        known: i64,
    },
}

/// (version, name, SQL). Append only: a shipped migration never changes.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "users, chats, messages",
    // Plain CREATE TABLE on purpose: pointed at chatty-server's own database (same table
    // names, other columns), this fails instead of mixing natter's rows into it.
    "CREATE TABLE users (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        verified BOOLEAN NOT NULL,
        admin BOOLEAN NOT NULL,
        bot BOOLEAN NOT NULL,
        created TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE chats (
        id BIGINT PRIMARY KEY,
        name TEXT NOT NULL,
        created TIMESTAMPTZ NOT NULL
    );
    -- No foreign keys: a replayed message may briefly point at a chat removed later in the
    -- same replay, and guests' messages have no account.
    CREATE TABLE messages (
        id BIGINT PRIMARY KEY,
        chat_id BIGINT NOT NULL,
        \"user\" TEXT NOT NULL,
        text TEXT NOT NULL,
        time TIMESTAMPTZ NOT NULL,
        verified BOOLEAN NOT NULL,
        admin BOOLEAN NOT NULL,
        bot BOOLEAN NOT NULL
    );
    CREATE INDEX messages_by_chat ON messages (chat_id, id);
    -- Which data directory's copy this is (see the worker): one row.
    CREATE TABLE mirror_instance (id TEXT NOT NULL);",
)];

/// Key of the advisory lock that keeps two natters from migrating at once.
const LOCK_KEY: i64 = 0x6e61_7474_6572; // "natter"

/// Key of the session advisory lock the mirror's one writer holds while connected.
const WRITER_LOCK_KEY: i64 = 0x006e_6174_7465_7277; // "natterw"

/// Takes the writer's lock for this session (released when the connection ends), or says who
/// holds it: two natters writing one mirror would mix their copies.
pub async fn lock_writer(client: &Client, target: &str) -> Result<(), SchemaError> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK_KEY])
        .await
        .map_err(|e| SchemaError::Lock(PgError(e)))?;
    if row.get::<_, bool>(0) {
        return Ok(());
    }
    Err(SchemaError::Locked {
        target: target.to_owned(),
    })
}

/// Versioned migrations of one kind of natter database.
pub struct Plan {
    /// Names the kind in logs and errors: "mirror", "store".
    pub what: &'static str,
    /// Where applied versions are recorded.
    pub table: &'static str,
    /// The advisory lock that keeps two natters from migrating at once.
    pub lock_key: i64,
    /// (version, name, SQL); append only: a shipped migration never changes.
    pub steps: &'static [(i64, &'static str, &'static str)],
    /// What to do about a `users` table this kind did not create.
    pub foreign: &'static str,
}

/// The mirror's migrations.
const MIRROR: Plan = Plan {
    what: "mirror",
    table: "schema_migrations",
    lock_key: LOCK_KEY,
    steps: MIGRATIONS,
    foreign: "the database has a users table that natter did not create (is it \
              chatty-server's?); the mirror needs a database of its own. Coming from \
              chatty-server: stop natter, move its data over with `natter import-chatty \
              OLD_DATABASE_URL` into an empty data_dir, then give DATABASE_URL a new, empty \
              database for the mirror (or unset it)",
};

/// Applies every mirror migration not yet recorded.
pub async fn migrate(client: &mut Client) -> Result<(), SchemaError> {
    apply(client, &MIRROR).await
}

/// Applies every migration of `plan` not yet recorded, each in its own transaction.
pub async fn apply(client: &mut Client, plan: &Plan) -> Result<(), SchemaError> {
    let fail = |step: &'static str| {
        move |e| SchemaError::Step {
            step,
            error: PgError(e),
        }
    };
    let table = plan.table;
    let row = client
        .query_one(
            &format!("SELECT to_regclass('users') IS NOT NULL, to_regclass('{table}') IS NOT NULL"),
            &[],
        )
        .await
        .map_err(fail("reading the catalog"))?;
    if row.get::<_, bool>(0) && !row.get::<_, bool>(1) {
        // Not even the migrations table is created in a database that holds someone else's tables.
        return Err(SchemaError::Foreign(plan.foreign));
    }
    client
        .batch_execute(&format!(
            // Quiet: the "already exists, skipping" notice would reach the log at every connect.
            "SET client_min_messages TO warning;
             CREATE TABLE IF NOT EXISTS {table} (
                version BIGINT PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )"
        ))
        .await
        .map_err(fail("creating the migrations table"))?;
    for &(version, name, sql) in plan.steps {
        let tx = client
            .transaction()
            .await
            .map_err(fail("starting a migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&plan.lock_key])
            .await
            .map_err(fail("locking for migrations"))?;
        let done = tx
            .query_opt(
                &format!("SELECT 1 FROM {table} WHERE version = $1"),
                &[&version],
            )
            .await
            .map_err(fail("reading the migrations table"))?;
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
            &format!("INSERT INTO {table} (version, name) VALUES ($1, $2)"),
            &[&version, &name],
        )
        .await
        .map_err(fail("recording a migration"))?;
        tx.commit().await.map_err(fail("committing a migration"))?;
        log::info!(
            "PostgreSQL {}: applied migration {version} ({name})",
            plan.what
        );
    }
    let newest = client
        .query_one(&format!("SELECT max(version) FROM {table}"), &[])
        .await
        .map_err(fail("reading the migrations table"))?
        .get::<_, Option<i64>>(0)
        .unwrap_or(0);
    let known = plan.steps.last().map_or(0, |m| m.0);
    if newest > known {
        return Err(SchemaError::Newer {
            what: plan.what,
            newest,
            known,
        });
    }
    Ok(())
}
