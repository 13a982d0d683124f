//! The mail outbox, the queue snapshot of a graceful stop, and restores from a backup, in
//! PostgreSQL.

use super::rooms::{insert_message, storable};
use super::{Conn, PgStore, id_column};
use crate::store::{Mail, NextIds, QueuedMail, Restored, StoreError, StoreResult};
use tokio_postgres::Row;

/// `(kind, to, user, detail)` of a mail's columns.
fn mail_columns(mail: &Mail) -> (&'static str, &str, &str, &str) {
    match mail {
        Mail::Activation { to, user, link } => ("activation", to, user, link),
        Mail::Reset { to, user, token } => ("reset", to, user, token),
        Mail::AddressInUse { to, user } => ("address_in_use", to, user, ""),
    }
}

fn mail_of(row: &Row) -> StoreResult<(u64, QueuedMail)> {
    let (kind, to, user, detail): (String, String, String, String) =
        (row.get(1), row.get(2), row.get(3), row.get(4));
    let mail = match kind.as_str() {
        "activation" => Mail::Activation {
            to,
            user,
            link: detail,
        },
        "reset" => Mail::Reset {
            to,
            user,
            token: detail,
        },
        "address_in_use" => Mail::AddressInUse { to, user },
        other => return Err(StoreError::Corrupt(format!("mail of unknown kind {other}"))),
    };
    let id: i64 = row.get(0);
    let attempts: i32 = row.get(5);
    Ok((
        u64::try_from(id).unwrap_or(0),
        QueuedMail {
            mail,
            attempts: u32::try_from(attempts).unwrap_or(0),
            next_attempt: row.get(6),
        },
    ))
}

/// Queues a mail in the transaction of the change that sends it; returns its id.
pub(super) async fn insert_mail(
    tx: &Conn<'_>,
    queued: &QueuedMail,
) -> Result<i64, tokio_postgres::Error> {
    let (kind, to, user, detail) = mail_columns(&queued.mail);
    let attempts = i32::try_from(queued.attempts).unwrap_or(i32::MAX);
    let row = tx
        .query_one(
            "INSERT INTO mail_outbox (kind, to_address, user_name, detail, attempts, next_attempt) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[&kind, &to, &user, &detail, &attempts, &queued.next_attempt],
        )
        .await?;
    Ok(row.get(0))
}

pub(super) fn queue_mail(store: &PgStore, mail: &QueuedMail) -> StoreResult<u64> {
    let mail = mail.clone();
    let id = store.write(async move |tx| insert_mail(tx, &mail).await)?;
    Ok(u64::try_from(id).unwrap_or(0))
}

pub(super) fn pending_mail(store: &PgStore) -> StoreResult<Vec<(u64, QueuedMail)>> {
    let rows = store.read(async move |c| {
        c.query(
            "SELECT id, kind, to_address, user_name, detail, attempts, next_attempt \
             FROM mail_outbox ORDER BY id",
            &[],
        )
        .await
    })?;
    rows.iter().map(mail_of).collect()
}

pub(super) fn pending_mail_count(store: &PgStore) -> StoreResult<usize> {
    let count: i64 = store.read_committed(async move |c| {
        Ok(c.query_one("SELECT count(*) FROM mail_outbox", &[])
            .await?
            .get(0))
    })?;
    Ok(usize::try_from(count).unwrap_or(0))
}

pub(super) fn reschedule_mail(store: &PgStore, id: u64, mail: &QueuedMail) -> StoreResult<()> {
    let (attempts, next) = (
        i32::try_from(mail.attempts).unwrap_or(i32::MAX),
        mail.next_attempt,
    );
    store.write(async move |tx| {
        tx.execute(
            "UPDATE mail_outbox SET attempts = $2, next_attempt = $3 WHERE id = $1",
            &[&id_column(id), &attempts, &next],
        )
        .await?;
        Ok(())
    })
}

pub(super) fn delete_mail(store: &PgStore, id: u64) -> StoreResult<()> {
    store.write(async move |tx| {
        tx.execute("DELETE FROM mail_outbox WHERE id = $1", &[&id_column(id)])
            .await?;
        Ok(())
    })
}

pub(super) fn save_queues(store: &PgStore, snapshot: &[u8]) -> StoreResult<()> {
    let snapshot = snapshot.to_vec();
    store.write(async move |tx| {
        tx.execute(
            "UPDATE store_state SET queues = $1 WHERE id = 1",
            &[&snapshot],
        )
        .await?;
        Ok(())
    })
}

pub(super) fn take_queues(store: &PgStore) -> StoreResult<Option<Vec<u8>>> {
    store.write(async move |tx| {
        let row = tx
            .query_one(
                "UPDATE store_state s SET queues = NULL FROM store_state old \
                 WHERE s.id = 1 AND old.id = 1 RETURNING old.queues",
                &[],
            )
            .await?;
        Ok(row.get(0))
    })
}

/// Writes restored records under their own ids and raises the counters to `next` and above
/// every id written.
pub(super) fn import(store: &PgStore, batch: &[Restored], next: NextIds) -> StoreResult<()> {
    let batch = batch.to_vec();
    let (mut chat_after, mut message_after) = (next.chat, next.message);
    for record in &batch {
        match record {
            Restored::Chat(chat) => chat_after = chat_after.max(chat.id.saturating_add(1)),
            Restored::Message(m) => message_after = message_after.max(m.id.saturating_add(1)),
            Restored::User(_) => {}
        }
    }
    store.write(async move |tx| {
        for record in &batch {
            match record {
                Restored::User(user) => super::accounts::insert_restored_user(tx, user).await?,
                Restored::Chat(chat) => {
                    tx.execute(
                        "INSERT INTO chats (id, name, name_key, created) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT DO NOTHING",
                        &[
                            &id_column(chat.id),
                            &chat.name,
                            &chat.name.to_lowercase(),
                            &chat.created,
                        ],
                    )
                    .await?;
                }
                Restored::Message(m) => {
                    let mut m = m.clone();
                    m.text = storable(&m.text);
                    insert_message(tx, &m).await?;
                }
            }
        }
        tx.execute(
            "UPDATE store_state SET next_chat_id = GREATEST(next_chat_id, $1), \
             next_message_id = GREATEST(next_message_id, $2) WHERE id = 1",
            &[&id_column(chat_after), &id_column(message_after)],
        )
        .await?;
        Ok(())
    })?;
    store.ids_used(
        Some(chat_after.saturating_sub(1)),
        Some(message_after.saturating_sub(1)),
    );
    Ok(())
}
