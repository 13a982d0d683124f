//! Start-up with the mirror on: an empty data directory is filled from a non-empty mirror; a
//! data directory the mirror has not followed is copied into it whole.

use super::{pg, schema};
use crate::store::sled::SledStore;
use crate::store::{ChatRecord, MessageRecord, UserRecord};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, Config};

/// How long an empty data directory waits for PostgreSQL before natter gives up starting.
const PATIENCE: Duration = Duration::from_secs(30);
/// Messages read per query while restoring.
const PAGE: i64 = 10_000;

/// Brings sled and the mirror in line before the server starts; returns once it is safe to
/// serve. Only an empty data directory needs PostgreSQL now: anything else goes to the outbox.
pub async fn prepare(store: &Arc<SledStore>, config: &Config) -> Result<(), String> {
    let target = pg::describe(config);
    let store_err = |e: crate::store::StoreError| e.to_string();
    if store.unfinished_load().map_err(store_err)?.as_deref() == Some("restore") {
        // A crash cut the last restore short: what it loaded must not pass for the whole.
        log::warn!("the last restore from the mirror did not finish; starting it over");
        store.clear_loaded().map_err(store_err)?;
    } else if store.mirror_target().map_err(store_err)?.as_deref() == Some(target.as_str()) {
        return Ok(());
    }
    if !store.is_empty() {
        let (seeding, t) = (store.clone(), target.clone());
        let queued = tokio::task::spawn_blocking(move || seeding.seed_mirror(&t))
            .await
            .map_err(|e| e.to_string())?
            .map_err(store_err)?;
        log::info!(
            "PostgreSQL mirror {target} has not followed this data directory: queued a full \
             copy ({queued} changes), which replaces the mirror's tables"
        );
        return Ok(());
    }
    // Empty: whether the mirror holds data decides between restoring and starting fresh, so
    // this one question waits for PostgreSQL.
    let mut client = connect_patiently(config, &target).await?;
    schema::migrate(&mut client).await?;
    let started = Instant::now();
    let marked = store.clone();
    tokio::task::spawn_blocking(move || marked.begin_load("restore"))
        .await
        .map_err(|e| e.to_string())?
        .map_err(store_err)?;
    let (users, chats, messages) = restore(&client, store).await?;
    if users + chats + messages == 0 {
        log::info!("PostgreSQL mirror {target} is empty: nothing to restore");
    } else {
        log::info!(
            "restored {users} accounts, {chats} chats and {messages} messages from the \
             PostgreSQL mirror {target} into the empty data directory in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let instance = adopt_instance(&client).await?;
    let (s, t) = (store.clone(), target);
    tokio::task::spawn_blocking(move || {
        s.set_mirror_instance(&instance)?;
        s.set_mirror_target(&t)?;
        s.end_load()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(store_err)
}

/// The mirror's instance label, created when it has none (a new database).
async fn adopt_instance(client: &Client) -> Result<String, String> {
    let fail = |e: tokio_postgres::Error| pg::describe_error(e);
    if let Some(row) = client
        .query_opt("SELECT id FROM mirror_instance LIMIT 1", &[])
        .await
        .map_err(fail)?
    {
        return Ok(row.get(0));
    }
    let instance = crate::store::sled::new_instance().map_err(|e| e.to_string())?;
    client
        .execute("INSERT INTO mirror_instance (id) VALUES ($1)", &[&instance])
        .await
        .map_err(fail)?;
    Ok(instance)
}

async fn connect_patiently(config: &Config, target: &str) -> Result<Client, String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match pg::connect(config).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() < deadline => {
                log::warn!(
                    "the data directory is empty and the PostgreSQL mirror {target} cannot be \
                     reached yet ({e}); waiting for it to check for data to restore"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(format!(
                    "the data directory is empty and the PostgreSQL mirror {target} cannot be \
                     reached ({e}), so natter cannot tell whether to restore from it; start \
                     again once PostgreSQL is up"
                ));
            }
        }
    }
}

/// Copies the mirror into sled; returns the counts of accounts, chats and messages.
async fn restore(client: &Client, store: &Arc<SledStore>) -> Result<(u64, u64, u64), String> {
    let fail =
        |e: tokio_postgres::Error| format!("reading the mirror failed: {}", pg::describe_error(e));
    let users: Vec<UserRecord> = client
        .query(
            "SELECT name, email, password_hash, verified, admin, bot,
                    extract(epoch FROM created)::bigint FROM users ORDER BY key",
            &[],
        )
        .await
        .map_err(fail)?
        .iter()
        .map(|r| UserRecord {
            name: r.get(0),
            email: r.get(1),
            password_hash: r.get(2),
            verified: r.get(3),
            admin: r.get(4),
            bot: r.get(5),
            created: r.get(6),
            activation: None,
            reset: None,
        })
        .collect();
    let chats: Vec<ChatRecord> = client
        .query(
            "SELECT id, name, extract(epoch FROM created)::bigint FROM chats ORDER BY id",
            &[],
        )
        .await
        .map_err(fail)?
        .iter()
        .map(|r| ChatRecord {
            id: r.get::<_, i64>(0) as u64,
            name: r.get(1),
            created: r.get(2),
        })
        .collect();
    let counts = (users.len() as u64, chats.len() as u64);
    blocking(store, move |s| {
        s.load_users(&users)?;
        s.load_chats(&chats)
    })
    .await?;
    let mut after = 0i64;
    let mut messages = 0u64;
    loop {
        let rows = client
            .query(
                "SELECT id, chat_id, \"user\", text, extract(epoch FROM time)::bigint,
                        verified, admin, bot
                 FROM messages WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &PAGE],
            )
            .await
            .map_err(fail)?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.get(0);
        let page: Vec<MessageRecord> = rows
            .iter()
            .map(|r| MessageRecord {
                id: r.get::<_, i64>(0) as u64,
                chat_id: r.get::<_, i64>(1) as u64,
                user: r.get(2),
                text: r.get(3),
                time: r.get(4),
                verified: r.get(5),
                admin: r.get(6),
                bot: r.get(7),
                // The mirror keeps no author: restored messages are deleted by admins only.
                author: None,
            })
            .collect();
        messages += page.len() as u64;
        blocking(store, move |s| s.load_messages(&page)).await?;
    }
    Ok((counts.0, counts.1, messages))
}

async fn blocking(
    store: &Arc<SledStore>,
    work: impl FnOnce(&SledStore) -> crate::store::StoreResult<()> + Send + 'static,
) -> Result<(), String> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
