//! Applying outbox entries in PostgreSQL with idempotent statements.

use super::outbox::{Entry, Queued};
use super::pg::PgError;
use crate::store::MessageRecord;
use tokio_postgres::{Client, Statement};

/// Why a batch was not applied; the worker reconnects and tries again.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("preparing a statement failed: {0}")]
    Prepare(PgError),
    /// A statement of the batch's transaction, or its commit.
    #[error(transparent)]
    Write(#[from] PgError),
}

/// Statements prepared once per connection.
pub struct Statements {
    user: Statement,
    delete_user: Statement,
    chat: Statement,
    remove_chat_messages: Statement,
    remove_chat: Statement,
    delete_message: Statement,
    messages: Statement,
}

impl Statements {
    pub async fn prepare(client: &Client) -> Result<Statements, ApplyError> {
        let prepare = |sql: &'static str| async move {
            client
                .prepare(sql)
                .await
                .map_err(|e| ApplyError::Prepare(PgError(e)))
        };
        Ok(Statements {
            user: prepare(
                "INSERT INTO users (key, name, email, password_hash, verified, admin, bot, created)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8::bigint))
                 ON CONFLICT (key) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email,
                   password_hash = EXCLUDED.password_hash, verified = EXCLUDED.verified,
                   admin = EXCLUDED.admin, bot = EXCLUDED.bot, created = EXCLUDED.created",
            )
            .await?,
            delete_user: prepare("DELETE FROM users WHERE key = $1").await?,
            chat: prepare(
                "INSERT INTO chats (id, name, created) VALUES ($1, $2, to_timestamp($3::bigint))
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, created = EXCLUDED.created",
            )
            .await?,
            remove_chat_messages: prepare("DELETE FROM messages WHERE chat_id = $1").await?,
            remove_chat: prepare("DELETE FROM chats WHERE id = $1").await?,
            delete_message: prepare("DELETE FROM messages WHERE id = $1").await?,
            messages: prepare(
                "INSERT INTO messages (id, chat_id, \"user\", text, time, verified, admin, bot)
                 SELECT id, chat_id, u, t, to_timestamp(tm), v, a, b
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                             $6::bool[], $7::bool[], $8::bool[])
                   AS m(id, chat_id, u, t, tm, v, a, b)
                 ON CONFLICT (id) DO NOTHING",
            )
            .await?,
        })
    }
}

/// Applies a batch in one transaction, in order; consecutive messages go in one statement.
pub async fn apply(
    client: &mut Client,
    st: &Statements,
    batch: &[(u64, Queued)],
) -> Result<(), ApplyError> {
    let fail = |e| ApplyError::Write(PgError(e));
    let tx = client.transaction().await.map_err(fail)?;
    let mut i = 0;
    while i < batch.len() {
        match &batch[i].1.entry {
            Entry::Message(_) => {
                let run: Vec<&MessageRecord> = batch[i..]
                    .iter()
                    .map_while(|(_, q)| match &q.entry {
                        Entry::Message(m) => Some(m),
                        _ => None,
                    })
                    .collect();
                i += run.len();
                let rows = MessageRows::from(&run);
                tx.execute(
                    &st.messages,
                    &[
                        &rows.id,
                        &rows.chat,
                        &rows.user,
                        &rows.text,
                        &rows.time,
                        &rows.verified,
                        &rows.admin,
                        &rows.bot,
                    ],
                )
                .await
                .map_err(fail)?;
                continue;
            }
            Entry::Reset { instance } => {
                tx.batch_execute("TRUNCATE users, chats, messages, mirror_instance")
                    .await
                    .map_err(fail)?;
                tx.execute("INSERT INTO mirror_instance (id) VALUES ($1)", &[instance])
                    .await
                    .map_err(fail)?;
            }
            Entry::User(u) => {
                tx.execute(
                    &st.user,
                    &[
                        &u.key,
                        &u.name,
                        &u.email,
                        &u.password_hash,
                        &u.verified,
                        &u.admin,
                        &u.bot,
                        &u.created,
                    ],
                )
                .await
                .map_err(fail)?;
            }
            Entry::DeleteUser { key } => {
                tx.execute(&st.delete_user, &[key]).await.map_err(fail)?;
            }
            Entry::Chat(chat) => {
                tx.execute(&st.chat, &[&pg_id(chat.id), &chat.name, &chat.created])
                    .await
                    .map_err(fail)?;
            }
            Entry::DeleteMessage { id } => {
                tx.execute(&st.delete_message, &[&pg_id(*id)])
                    .await
                    .map_err(fail)?;
            }
            Entry::RemoveChat { id } => {
                tx.execute(&st.remove_chat_messages, &[&pg_id(*id)])
                    .await
                    .map_err(fail)?;
                tx.execute(&st.remove_chat, &[&pg_id(*id)])
                    .await
                    .map_err(fail)?;
            }
        }
        i += 1;
    }
    tx.commit().await.map_err(fail)
}

/// natter ids are u64; PostgreSQL has signed BIGINT (ids never get near 2^63).
pub fn pg_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// Columns of a run of messages, for one UNNEST insert.
struct MessageRows {
    id: Vec<i64>,
    chat: Vec<i64>,
    user: Vec<String>,
    text: Vec<String>,
    time: Vec<i64>,
    verified: Vec<bool>,
    admin: Vec<bool>,
    bot: Vec<bool>,
}

impl MessageRows {
    fn from(run: &[&MessageRecord]) -> MessageRows {
        MessageRows {
            id: run.iter().map(|m| pg_id(m.id)).collect(),
            chat: run.iter().map(|m| pg_id(m.chat_id)).collect(),
            user: run.iter().map(|m| m.user.clone()).collect(),
            // PostgreSQL text cannot hold NUL; one such message must not stall the mirror.
            text: run
                .iter()
                .map(|m| m.text.replace('\0', "\u{FFFD}"))
                .collect(),
            time: run.iter().map(|m| m.time).collect(),
            verified: run.iter().map(|m| m.verified).collect(),
            admin: run.iter().map(|m| m.admin).collect(),
            bot: run.iter().map(|m| m.bot).collect(),
        }
    }
}
