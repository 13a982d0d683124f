//! The PostgreSQL store's tables (docs/design.md, The PostgreSQL store): versioned migrations
//! embedded in the binary, applied at start under an advisory lock and recorded in
//! `store_migrations`.

use crate::store::mirror::schema::{Plan, SchemaError, apply};
use tokio_postgres::Client;

/// (version, name, SQL). Append only: a shipped migration never changes.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
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
    ),
    (
        2,
        "several nodes: the shared change log, each node's epoch, stored event queues",
        // Rows of `cluster_log` are read in (xid, idx) order below the oldest running
        // transaction, never by a sequence: sequence order is not commit order (docs/design.md,
        // Several nodes). `base_xid` makes event ids small enough for JavaScript numbers.
        "CREATE TABLE cluster_log (
        xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        idx INTEGER NOT NULL,
        node TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        written BIGINT NOT NULL,
        body BYTEA NOT NULL,
        PRIMARY KEY (xid, idx)
    );
    CREATE INDEX cluster_log_by_time ON cluster_log (written);
    CREATE TABLE cluster_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        base_xid xid8 NOT NULL,
        message_offset BIGINT NOT NULL
    );
    INSERT INTO cluster_state SELECT 1, pg_current_xact_id(), next_message_id FROM store_state;
    CREATE TABLE cluster_nodes (
        node TEXT PRIMARY KEY,
        epoch BIGINT NOT NULL,
        flushes BIGINT NOT NULL,
        seen BIGINT NOT NULL
    );
    CREATE TABLE event_queues (
        handle BIGINT NOT NULL,
        queue_id TEXT NOT NULL,
        types BIGINT NOT NULL,
        opened BIGINT NOT NULL,
        acked BIGINT NOT NULL,
        used BIGINT NOT NULL,
        PRIMARY KEY (handle, queue_id)
    );
    ALTER TABLE sessions ADD COLUMN last_seen BIGINT NOT NULL DEFAULT 0;",
    ),
];

/// Key of the advisory lock that keeps two natters from migrating at once.
const LOCK_KEY: i64 = 0x6e61_7474_6573; // "nattes"

/// The store's migrations.
const STORE: Plan = Plan {
    what: "store",
    table: "store_migrations",
    lock_key: LOCK_KEY,
    steps: MIGRATIONS,
    foreign: "the database has a users table that natter's PostgreSQL store did not create (a \
              chatty-server database, or a natter mirror?); give storage = \"postgres\" a \
              database of its own",
};

/// Applies every store migration not yet recorded.
pub async fn migrate(client: &mut Client) -> Result<(), SchemaError> {
    apply(client, &STORE).await
}
