//! Accounts, sessions and kicked names in PostgreSQL.

use super::{Conn, Delta, PgStore, Statement, guest_handle, handle_column};
use crate::auth::tokens::TokenRecord;
use crate::store::{BlockedName, QueuedMail, SessionRecord, StoreResult, Taken, UserRecord};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

const USER_COLUMNS: &str = "name, email, password_hash, verified, admin, bot, created, \
    activation_hash, activation_expires, activation_failures, reset_hash, reset_expires, reset_failures";

/// A token from its three columns, starting at `at`: hash, expiry, failed guesses.
fn token_at(row: &Row, at: usize) -> Option<TokenRecord> {
    let bytes: Option<Vec<u8>> = row.get(at);
    Some(TokenRecord {
        hash: bytes?.try_into().ok()?,
        expires: row.get::<_, Option<i64>>(at + 1).unwrap_or(0),
        failures: row
            .get::<_, Option<i32>>(at + 2)
            .map_or(0, |f| u32::try_from(f).unwrap_or(0)),
    })
}

/// A user from the columns of `USER_COLUMNS`.
fn user_of(row: &Row) -> UserRecord {
    UserRecord {
        name: row.get(0),
        email: row.get(1),
        password_hash: row.get(2),
        verified: row.get(3),
        admin: row.get(4),
        bot: row.get(5),
        created: row.get(6),
        activation: token_at(row, 7),
        reset: token_at(row, 10),
    }
}

/// The token columns of a user row: hash, expiry, failed guesses.
fn token_columns(t: &Option<TokenRecord>) -> (Option<Vec<u8>>, Option<i64>, Option<i32>) {
    match t {
        Some(t) => (
            Some(t.hash.to_vec()),
            Some(t.expires),
            Some(i32::try_from(t.failures).unwrap_or(i32::MAX)),
        ),
        None => (None, None, None),
    }
}

/// An account row's values, owned, in `USER_COLUMNS` order after the key.
struct UserValues {
    key: String,
    email_key: String,
    user: UserRecord,
    activation: (Option<Vec<u8>>, Option<i64>, Option<i32>),
    reset: (Option<Vec<u8>>, Option<i64>, Option<i32>),
}

impl UserValues {
    fn of(user: &UserRecord) -> UserValues {
        UserValues {
            key: user.name.to_lowercase(),
            email_key: user.email.to_lowercase(),
            activation: token_columns(&user.activation),
            reset: token_columns(&user.reset),
            user: user.clone(),
        }
    }

    /// $1 key, $2 email_key, then the columns of `USER_COLUMNS`.
    fn params(&self) -> [&(dyn ToSql + Sync); 15] {
        let u = &self.user;
        [
            &self.key,
            &self.email_key,
            &u.name,
            &u.email,
            &u.password_hash,
            &u.verified,
            &u.admin,
            &u.bot,
            &u.created,
            &self.activation.0,
            &self.activation.1,
            &self.activation.2,
            &self.reset.0,
            &self.reset.1,
            &self.reset.2,
        ]
    }
}

pub(super) fn user(store: &PgStore, key: &str) -> StoreResult<Option<UserRecord>> {
    // PostgreSQL text cannot hold NUL, so no stored key has one: asked as typed, not an error.
    if key.contains('\0') {
        return Ok(None);
    }
    let key = key.to_owned();
    store.read_committed(async move |c| {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE key = $1");
        Ok(c.query_opt(&sql, &[&key]).await?.as_ref().map(user_of))
    })
}

pub(super) fn user_key_by_email(store: &PgStore, email_key: &str) -> StoreResult<Option<String>> {
    if email_key.contains('\0') {
        return Ok(None);
    }
    let email_key = email_key.to_owned();
    store.read_committed(async move |c| {
        let row = c
            .query_opt("SELECT key FROM users WHERE email_key = $1", &[&email_key])
            .await?;
        Ok(row.map(|r| r.get(0)))
    })
}

pub(super) fn users(store: &PgStore) -> StoreResult<Vec<UserRecord>> {
    store.read_committed(async move |c| {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY key");
        Ok(c.query(&sql, &[]).await?.iter().map(user_of).collect())
    })
}

pub(super) fn insert_user(
    store: &PgStore,
    user: &UserRecord,
    mail: Option<&QueuedMail>,
) -> StoreResult<Result<(), Taken>> {
    let values = UserValues::of(user);
    let mail = mail.cloned();
    let key = values.key.clone();
    let inserted = store.write(async move |tx| {
        if tx
            .query_opt("SELECT 1 FROM users WHERE key = $1", &[&values.key])
            .await?
            .is_some()
        {
            return Ok(Err(Taken::Name));
        }
        if tx
            .query_opt(
                "SELECT 1 FROM users WHERE email_key = $1",
                &[&values.email_key],
            )
            .await?
            .is_some()
        {
            return Ok(Err(Taken::Email));
        }
        let sql = format!(
            "INSERT INTO users (key, email_key, {USER_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        );
        tx.execute(&sql, &values.params()).await?;
        if let Some(mail) = &mail {
            super::outbox::insert_mail(tx, mail).await?;
        }
        Ok(Ok(()))
    })?;
    if inserted.is_ok() {
        store.record(Delta::User(key));
    }
    Ok(inserted)
}

/// Does nothing if the account is gone (a concurrent delete must not resurrect it).
pub(super) fn update_user(
    store: &PgStore,
    user: &UserRecord,
    mail: Option<&QueuedMail>,
) -> StoreResult<()> {
    let values = UserValues::of(user);
    let mail = mail.cloned();
    store.record(Delta::User(values.key.clone()));
    store.write(async move |tx| {
        let sql = "UPDATE users SET email_key = $2, name = $3, email = $4, password_hash = $5, \
                   verified = $6, admin = $7, bot = $8, created = $9, activation_hash = $10, \
                   activation_expires = $11, activation_failures = $12, reset_hash = $13, \
                   reset_expires = $14, reset_failures = $15 WHERE key = $1";
        let updated = tx.execute(sql, &values.params()).await?;
        if updated > 0
            && let Some(mail) = &mail
        {
            super::outbox::insert_mail(tx, mail).await?;
        }
        Ok(())
    })
}

pub(super) fn delete_user(store: &PgStore, key: &str) -> StoreResult<bool> {
    store.record(Delta::UserDeleted(key.to_owned()));
    let key = key.to_owned();
    store.write(async move |tx| {
        Ok(tx
            .execute("DELETE FROM users WHERE key = $1", &[&key])
            .await?
            > 0)
    })
}

const SESSION_COLUMNS: &str =
    "token_hash, handle, user_name, user_key, guest, created, expires, online";

fn session_of(row: &Row) -> SessionRecord {
    let hash: Vec<u8> = row.get(0);
    SessionRecord {
        token_hash: hash.try_into().unwrap_or([0; 32]),
        handle: guest_handle(row.get(1)),
        user: row.get(2),
        user_key: row.get(3),
        guest: row.get(4),
        created: row.get(5),
        expires: row.get(6),
        online: row.get(7),
    }
}

/// Inserts or replaces a session under its token hash.
/// The statement that writes a session, new or changed.
fn session_upsert(s: &SessionRecord) -> Statement {
    Statement::new(
        format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (token_hash) DO UPDATE SET handle = $2, user_name = $3, user_key = $4, \
             guest = $5, created = $6, expires = $7, online = $8, \
             last_seen = GREATEST(sessions.last_seen, $9)"
        ),
        vec![
            Box::new(s.token_hash.to_vec()),
            Box::new(handle_column(s.handle)),
            Box::new(s.user.clone()),
            Box::new(s.user_key.clone()),
            Box::new(s.guest),
            Box::new(s.created),
            Box::new(s.expires),
            Box::new(s.online),
            // Several nodes sweep by it (`record_activity`): a session is seen as it is stored.
            Box::new(crate::model::now()),
        ],
    )
}

fn session_delete(token_hash: &[u8; 32]) -> Statement {
    Statement::new(
        "DELETE FROM sessions WHERE token_hash = $1",
        vec![Box::new(token_hash.to_vec())],
    )
}

// Session and membership writes are queued for group commit (`pipeline`): a sign-in does not
// hold the service's lock across a round trip.

pub(super) fn put_session(store: &PgStore, session: &SessionRecord) -> StoreResult<()> {
    store.record(Delta::Session(session.clone()));
    store.queue(vec![session_upsert(session)])
}

pub(super) fn replace_session(
    store: &PgStore,
    old_hash: &[u8; 32],
    session: &SessionRecord,
) -> StoreResult<()> {
    store.record(Delta::SessionReplaced {
        old_hash: *old_hash,
        session: session.clone(),
    });
    store.queue(vec![session_delete(old_hash), session_upsert(session)])
}

pub(super) fn delete_session(store: &PgStore, token_hash: &[u8; 32]) -> StoreResult<()> {
    store.record(Delta::SessionDeleted(*token_hash));
    store.queue(vec![session_delete(token_hash)])
}

pub(super) fn take_offline(
    store: &PgStore,
    token_hash: &[u8; 32],
    kept: Option<&SessionRecord>,
    user_key: &str,
    leave: &[u64],
) -> StoreResult<()> {
    store.record(Delta::Offline {
        token_hash: *token_hash,
        kept: kept.cloned(),
        user_key: user_key.to_owned(),
        leave: leave.to_vec(),
    });
    let leave: Vec<i64> = leave.iter().map(|id| super::id_column(*id)).collect();
    let session = match kept {
        Some(session) => session_upsert(session),
        None => session_delete(token_hash),
    };
    store.queue(vec![
        session,
        Statement::new(
            "DELETE FROM members WHERE user_key = $1 AND chat_id = ANY($2)",
            vec![Box::new(user_key.to_owned()), Box::new(leave)],
        ),
    ])
}

pub(super) fn sessions(store: &PgStore) -> StoreResult<Vec<SessionRecord>> {
    store.read(async move |c| {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions ORDER BY token_hash");
        Ok(c.query(&sql, &[]).await?.iter().map(session_of).collect())
    })
}

pub(super) fn save_blocks(store: &PgStore, blocks: &[BlockedName]) -> StoreResult<()> {
    store.record(Delta::Blocks(blocks.to_vec()));
    let blocks = blocks.to_vec();
    store.write(async move |tx| {
        tx.execute("DELETE FROM blocked_names", &[]).await?;
        for b in &blocks {
            tx.execute(
                "INSERT INTO blocked_names (name, until) VALUES ($1, $2)",
                &[&b.name, &b.until],
            )
            .await?;
        }
        Ok(())
    })
}

pub(super) fn blocks(store: &PgStore) -> StoreResult<Vec<BlockedName>> {
    store.read(async move |c| {
        let rows = c
            .query("SELECT name, until FROM blocked_names ORDER BY name", &[])
            .await?;
        Ok(rows
            .iter()
            .map(|r| BlockedName {
                name: r.get(0),
                until: r.get(1),
            })
            .collect())
    })
}

/// Writes an account restored from a backup (import into an empty store).
pub(super) async fn insert_restored_user(
    tx: &Conn<'_>,
    user: &UserRecord,
) -> Result<(), tokio_postgres::Error> {
    let values = UserValues::of(user);
    let sql = format!(
        "INSERT INTO users (key, email_key, {USER_COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT DO NOTHING"
    );
    tx.execute(&sql, &values.params()).await?;
    Ok(())
}
