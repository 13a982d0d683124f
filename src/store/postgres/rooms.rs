//! Chats, memberships and messages in PostgreSQL.

use super::{Conn, Delta, PgStore, Statement, guest_handle, handle_column, id_column, id_of};
use crate::store::{
    Author, ChatRecord, MemberRecord, MessageRecord, NewMessage, Pending, StoreError, StoreResult,
};
use tokio_postgres::Row;

/// PostgreSQL text cannot hold NUL: it is stored, and so read back, as U+FFFD.
pub(super) fn storable(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

fn chat_of(row: &Row) -> ChatRecord {
    ChatRecord {
        id: id_of(row.get(0)),
        name: row.get(1),
        created: row.get(2),
    }
}

pub(super) fn chats(store: &PgStore) -> StoreResult<Vec<ChatRecord>> {
    store.read(async move |c| {
        let rows = c
            .query("SELECT id, name, created FROM chats ORDER BY name_key", &[])
            .await?;
        Ok(rows.iter().map(chat_of).collect())
    })
}

/// Takes the next value of a `store_state` counter column.
pub(super) async fn take_id(tx: &Conn<'_>, column: &str) -> Result<i64, tokio_postgres::Error> {
    let sql = format!(
        "UPDATE store_state SET {column} = {column} + 1 WHERE id = 1 RETURNING {column} - 1"
    );
    Ok(tx.query_one(&sql, &[]).await?.get(0))
}

pub(super) fn create_chat(
    store: &PgStore,
    name: &str,
    created: i64,
) -> StoreResult<Option<ChatRecord>> {
    let name = name.to_owned();
    let chat = store.write(async move |tx| {
        let key = name.to_lowercase();
        if tx
            .query_opt("SELECT 1 FROM chats WHERE name_key = $1", &[&key])
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let id = take_id(tx, "next_chat_id").await?;
        // Another node may create the same name meanwhile: then it is taken, as above.
        let inserted = tx
            .execute(
                "INSERT INTO chats (id, name, name_key, created) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name_key) DO NOTHING",
                &[&id, &name, &key, &created],
            )
            .await?;
        if inserted == 0 {
            return Ok(None);
        }
        Ok(Some(ChatRecord {
            id: id_of(id),
            name,
            created,
        }))
    })?;
    if let Some(chat) = &chat {
        store.ids_used(Some(chat.id), None);
        store.record(Delta::Chat(chat.clone()));
    }
    Ok(chat)
}

pub(super) fn remove_chat(store: &PgStore, chat_id: u64) -> StoreResult<bool> {
    store.record(Delta::ChatRemoved(chat_id));
    let id = id_column(chat_id);
    store.write(async move |tx| {
        let removed = tx
            .execute("DELETE FROM chats WHERE id = $1", &[&id])
            .await?;
        tx.execute("DELETE FROM members WHERE chat_id = $1", &[&id])
            .await?;
        Ok(removed > 0)
    })
}

pub(super) fn purge_messages(store: &PgStore, chat_id: u64) -> StoreResult<usize> {
    let id = id_column(chat_id);
    let deleted = store.write(async move |tx| {
        tx.execute("DELETE FROM messages WHERE chat_id = $1", &[&id])
            .await
    })?;
    usize::try_from(deleted).map_err(|_| StoreError::Io("too many messages deleted".into()))
}

pub(super) fn add_member(store: &PgStore, member: &MemberRecord) -> StoreResult<()> {
    store.record(Delta::Member(member.clone()));
    store.queue(vec![Statement::new(
        "INSERT INTO members (chat_id, user_key, user_name) VALUES ($1, $2, $3) \
         ON CONFLICT (chat_id, user_key) DO UPDATE SET user_name = $3",
        vec![
            Box::new(id_column(member.chat_id)),
            Box::new(member.user_key.clone()),
            Box::new(member.user.clone()),
        ],
    )])
}

pub(super) fn remove_member(store: &PgStore, chat_id: u64, user_key: &str) -> StoreResult<()> {
    store.record(Delta::MemberRemoved {
        chat_id,
        user_key: user_key.to_owned(),
    });
    store.queue(vec![Statement::new(
        "DELETE FROM members WHERE chat_id = $1 AND user_key = $2",
        vec![Box::new(id_column(chat_id)), Box::new(user_key.to_owned())],
    )])
}

pub(super) fn members(store: &PgStore) -> StoreResult<Vec<MemberRecord>> {
    store.read(async move |c| {
        let rows = c
            .query(
                "SELECT chat_id, user_key, user_name FROM members ORDER BY chat_id, user_key",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| MemberRecord {
                chat_id: id_of(r.get(0)),
                user_key: r.get(1),
                user: r.get(2),
            })
            .collect())
    })
}

pub(super) const MESSAGE_COLUMNS: &str =
    "id, chat_id, user_name, verified, admin, bot, text, time, author_account, author_guest";

pub(super) fn message_of(row: &Row) -> MessageRecord {
    let account: Option<String> = row.get(8);
    let guest: Option<i64> = row.get(9);
    MessageRecord {
        id: id_of(row.get(0)),
        chat_id: id_of(row.get(1)),
        user: row.get(2),
        verified: row.get(3),
        admin: row.get(4),
        bot: row.get(5),
        text: row.get(6),
        time: row.get(7),
        author: match (account, guest) {
            (Some(key), _) => Some(Author::Account(key)),
            (None, Some(handle)) => Some(Author::Guest(guest_handle(handle))),
            (None, None) => None,
        },
    }
}

/// The author columns: a registered account's key, or a guest session's handle.
fn author_columns(author: &Option<Author>) -> (Option<String>, Option<i64>) {
    match author {
        Some(Author::Account(key)) => (Some(key.clone()), None),
        Some(Author::Guest(handle)) => (None, Some(handle_column(*handle))),
        None => (None, None),
    }
}

/// The statement that writes `m` under its own id; with `or_skip`, a message already there
/// stays as it is (an import run again).
fn message_insert(m: &MessageRecord, or_skip: bool) -> Statement {
    let (account, guest) = author_columns(&m.author);
    let on_conflict = if or_skip {
        " ON CONFLICT (id) DO NOTHING"
    } else {
        ""
    };
    Statement::new(
        format!(
            "INSERT INTO messages ({MESSAGE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10){on_conflict}"
        ),
        vec![
            Box::new(id_column(m.id)),
            Box::new(id_column(m.chat_id)),
            Box::new(m.user.clone()),
            Box::new(m.verified),
            Box::new(m.admin),
            Box::new(m.bot),
            Box::new(m.text.clone()),
            Box::new(m.time),
            Box::new(account),
            Box::new(guest),
        ],
    )
}

/// Writes a message under its own id, unless one is there already.
pub(super) async fn insert_message(
    tx: &Conn<'_>,
    m: &MessageRecord,
) -> Result<u64, tokio_postgres::Error> {
    message_insert(m, true).run(tx).await
}

/// Queues the message under the next id (`pipeline`): the service's lock is not held across
/// PostgreSQL's answer, which the poster awaits with the epoch's durability.
pub(super) fn append_message(store: &PgStore, message: NewMessage) -> StoreResult<MessageRecord> {
    let mut record = MessageRecord {
        id: 0,
        chat_id: message.chat_id,
        user: message.user,
        verified: message.verified,
        admin: message.admin,
        bot: message.bot,
        text: storable(&message.text),
        time: message.time,
        author: message.author,
    };
    if let Some(id) = store.node_message_id()? {
        record.id = id;
        store.queue(vec![message_insert(&record, false)])?;
        crate::telemetry::message_stored();
        return Ok(record);
    }
    // The id is taken as the write gets its epoch, so ids follow commit order.
    store.queue_with(|| {
        record.id = store.take_message_id();
        (vec![message_insert(&record, false)], Some(record.id))
    })?;
    crate::telemetry::message_stored();
    Ok(record)
}

pub(super) fn messages_before(
    store: &PgStore,
    chat_id: u64,
    before: Option<u64>,
    limit: usize,
) -> StoreResult<Vec<MessageRecord>> {
    messages_before_later(store, chat_id, before, limit)()
}

/// `messages_before`, queued behind the writes sent so far and answered when called.
pub(super) fn messages_before_later(
    store: &PgStore,
    chat_id: u64,
    before: Option<u64>,
    limit: usize,
) -> Pending<Vec<MessageRecord>> {
    let below = before.map_or(i64::MAX, id_column);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    store.read_later(async move |c| {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = $1 AND id < $2 \
             ORDER BY id DESC LIMIT $3"
        );
        let rows = c
            .query(&sql, &[&id_column(chat_id), &below, &limit])
            .await?;
        Ok(rows.iter().rev().map(message_of).collect())
    })
}

pub(super) fn delete_message(store: &PgStore, chat_id: u64, id: u64) -> StoreResult<bool> {
    store.write(async move |tx| {
        let deleted = tx
            .execute(
                "DELETE FROM messages WHERE chat_id = $1 AND id = $2",
                &[&id_column(chat_id), &id_column(id)],
            )
            .await?;
        Ok(deleted > 0)
    })
}

/// Rows per read of `messages_below`.
const PAGE: i64 = 1000;

/// A chat's messages below an id, oldest first, a page at a time (backups).
pub(super) struct MessagesBelow<'a> {
    pub(super) store: &'a PgStore,
    pub(super) chat_id: u64,
    pub(super) below: u64,
    /// The next id to read from.
    pub(super) from: u64,
    pub(super) page: std::vec::IntoIter<MessageRecord>,
    pub(super) done: bool,
}

impl Iterator for MessagesBelow<'_> {
    type Item = StoreResult<MessageRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(message) = self.page.next() {
            return Some(Ok(message));
        }
        if self.done {
            return None;
        }
        let (chat, from, below) = (
            id_column(self.chat_id),
            id_column(self.from),
            id_column(self.below),
        );
        let page = self.store.read(async move |c| {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = $1 AND id >= $2 \
                 AND id < $3 ORDER BY id LIMIT $4"
            );
            let rows = c.query(&sql, &[&chat, &from, &below, &PAGE]).await?;
            Ok(rows.iter().map(message_of).collect::<Vec<_>>())
        });
        match page {
            Ok(page) => {
                self.done = (page.len() as i64) < PAGE;
                if let Some(last) = page.last() {
                    self.from = last.id + 1;
                }
                self.page = page.into_iter();
                self.page.next().map(Ok)
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
