//! The `Store` contract, run the same way on sled and on the PostgreSQL store: what one backend
//! answers, the other must answer too.

use crate::cluster::Cluster;
use natter::auth::tokens::TokenRecord;
use natter::store::postgres::PgStore;
use natter::store::sled::{SledStore, SyncMode};
use natter::store::{
    Author, BlockedName, Mail, MemberRecord, MessageRecord, NewMessage, NextIds, QueuedMail,
    Restored, SessionRecord, Store, Taken, UserRecord, wait_durable,
};
use std::sync::Arc;

fn user(name: &str, email: &str) -> UserRecord {
    UserRecord {
        name: name.into(),
        email: email.into(),
        password_hash: "$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA".into(),
        verified: false,
        admin: false,
        bot: false,
        created: 1_700_000_000,
        activation: Some(TokenRecord {
            hash: [7; 32],
            expires: 1_700_086_400,
            failures: 0,
        }),
        reset: None,
    }
}

fn message(chat_id: u64, text: &str, author: Option<Author>) -> NewMessage {
    NewMessage {
        chat_id,
        user: "Ann".into(),
        verified: true,
        admin: false,
        bot: false,
        text: text.into(),
        time: 1_700_000_100,
        author,
    }
}

fn session(hash: u8, handle: u64, online: bool) -> SessionRecord {
    SessionRecord {
        token_hash: [hash; 32],
        handle,
        user: "Ann".into(),
        user_key: "ann".into(),
        guest: false,
        created: 1_700_000_000_000_000_000,
        expires: 1_800_000_000,
        online,
    }
}

/// Everything the contract covers, on one store; `reopen` gives the same data opened again.
async fn exercise(store: Arc<dyn Store>, reopen: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>) {
    // Accounts and the email index.
    let ann = user("Ann", "Ann@Example.org");
    let mail = QueuedMail {
        mail: Mail::Activation {
            to: "Ann@Example.org".into(),
            user: "Ann".into(),
            link: "https://chat.example/api/verifyEmail/Ann/t".into(),
        },
        attempts: 0,
        next_attempt: 0,
    };
    assert_eq!(store.insert_user(&ann, Some(&mail)).unwrap(), Ok(()));
    assert_eq!(
        store
            .insert_user(&user("ANN", "other@example.org"), None)
            .unwrap(),
        Err(Taken::Name)
    );
    assert_eq!(
        store
            .insert_user(&user("bob", "ann@EXAMPLE.org"), None)
            .unwrap(),
        Err(Taken::Email)
    );
    assert_eq!(store.user("ann").unwrap(), Some(ann.clone()));
    // A name as typed may hold anything, NUL included: asked for, it is simply not there.
    assert_eq!(store.user("a\0b").unwrap(), None);
    assert_eq!(store.user_key_by_email("a\0@example.org").unwrap(), None);
    assert_eq!(
        store.user_key_by_email("ann@example.org").unwrap(),
        Some("ann".into())
    );
    let verified = UserRecord {
        verified: true,
        activation: None,
        email: "new@example.org".into(),
        ..ann.clone()
    };
    store.update_user(&verified, None).unwrap();
    assert_eq!(store.user("ann").unwrap(), Some(verified.clone()));
    assert_eq!(store.user_key_by_email("ann@example.org").unwrap(), None);
    store
        .insert_user(&user("Cy", "cy@example.org"), None)
        .unwrap()
        .unwrap();
    assert!(store.delete_user("cy").unwrap());
    assert!(!store.delete_user("cy").unwrap());
    // Updating a deleted account does not bring it back.
    store
        .update_user(&user("Cy", "cy@example.org"), Some(&mail))
        .unwrap();
    assert_eq!(store.user("cy").unwrap(), None);
    assert_eq!(store.users().unwrap(), vec![verified.clone()]);

    // Mail: queued with the account, rescheduled, delivered.
    let pending = store.pending_mail().unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].1, mail);
    let retry = QueuedMail {
        attempts: 2,
        next_attempt: 1_700_000_500,
        ..mail.clone()
    };
    store.reschedule_mail(pending[0].0, &retry).unwrap();
    assert_eq!(store.pending_mail().unwrap(), vec![(pending[0].0, retry)]);
    assert_eq!(store.pending_mail_count().unwrap(), 1);
    store.delete_mail(pending[0].0).unwrap();
    assert_eq!(store.pending_mail_count().unwrap(), 0);

    // Chats and memberships.
    let main = store.create_chat("Main", 10).unwrap().unwrap();
    assert_eq!(store.create_chat("MAIN", 11).unwrap(), None);
    let side = store.create_chat("Side", 12).unwrap().unwrap();
    assert!(side.id > main.id);
    assert_eq!(store.chats().unwrap(), vec![main.clone(), side.clone()]);
    let member = MemberRecord {
        chat_id: main.id,
        user_key: "ann".into(),
        user: "Ann".into(),
    };
    store.add_member(&member).unwrap();
    store
        .add_member(&MemberRecord {
            chat_id: side.id,
            ..member.clone()
        })
        .unwrap();
    store.remove_member(side.id, "ann").unwrap();
    assert_eq!(store.members().unwrap(), vec![member.clone()]);

    // Messages: ids unique and increasing across chats, history by range, deletion.
    let first = store
        .append_message(message(
            main.id,
            "hello",
            Some(Author::Account("ann".into())),
        ))
        .unwrap();
    let guest_handle = u64::MAX - 5;
    let second = store
        .append_message(message(side.id, "side", Some(Author::Guest(guest_handle))))
        .unwrap();
    let third = store
        .append_message(message(main.id, "third", None))
        .unwrap();
    assert!(first.id < second.id && second.id < third.id);
    assert_eq!(
        store.last_messages(main.id, 10).unwrap(),
        vec![first.clone(), third.clone()]
    );
    assert_eq!(
        store.messages_before(main.id, Some(third.id), 10).unwrap(),
        vec![first.clone()]
    );
    assert_eq!(
        store.last_messages(main.id, 1).unwrap(),
        vec![third.clone()]
    );
    assert_eq!(
        store.last_messages(side.id, 5).unwrap()[0].author,
        second.author
    );
    let below: Vec<MessageRecord> = store
        .messages_below(main.id, third.id + 1)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(below, vec![first.clone(), third.clone()]);
    assert!(store.delete_message(main.id, first.id).unwrap());
    assert!(!store.delete_message(main.id, first.id).unwrap());
    assert_eq!(
        store.last_messages(main.id, 10).unwrap(),
        vec![third.clone()]
    );
    assert_eq!(
        store.next_ids(),
        NextIds {
            chat: side.id + 1,
            message: third.id + 1
        }
    );

    // Removing a chat ends its memberships at once; the purge deletes its messages.
    assert!(store.remove_chat(side.id).unwrap());
    assert!(!store.remove_chat(side.id).unwrap());
    assert_eq!(store.purge_messages(side.id).unwrap(), 1);
    assert!(store.last_messages(side.id, 5).unwrap().is_empty());

    // Sessions: put, rotate, take offline (with the memberships it ends).
    let online = session(1, u64::MAX - 1, true);
    store.put_session(&online).unwrap();
    let rotated = SessionRecord {
        token_hash: [2; 32],
        ..online.clone()
    };
    store.replace_session(&online.token_hash, &rotated).unwrap();
    assert_eq!(store.sessions().unwrap(), vec![rotated.clone()]);
    let offline = SessionRecord {
        online: false,
        ..rotated.clone()
    };
    store
        .take_offline(&rotated.token_hash, Some(&offline), "ann", &[main.id])
        .unwrap();
    assert_eq!(store.sessions().unwrap(), vec![offline.clone()]);
    assert!(store.members().unwrap().is_empty());
    store.delete_session(&offline.token_hash).unwrap();
    assert!(store.sessions().unwrap().is_empty());
    store.put_session(&online).unwrap();

    // Kicked names and the queue snapshot of a graceful stop.
    let blocks = vec![BlockedName {
        name: "trol".into(),
        until: 1_900_000_000,
    }];
    store.save_blocks(&blocks).unwrap();
    assert_eq!(store.blocks().unwrap(), blocks);
    store.save_queues(b"\x03snapshot").unwrap();

    // Every write is durable once the store says so.
    wait_durable(&*store, store.write_epoch()).await.unwrap();
    let store = reopen(store);
    assert_eq!(store.users().unwrap(), vec![verified]);
    assert_eq!(store.sessions().unwrap(), vec![online]);
    assert_eq!(store.blocks().unwrap(), blocks);
    assert_eq!(store.take_queues().unwrap(), Some(b"\x03snapshot".to_vec()));
    assert_eq!(store.take_queues().unwrap(), None);
    assert_eq!(
        store.last_messages(main.id, 10).unwrap(),
        vec![third.clone()]
    );
    // Ids go on after a reopen, never reused.
    let after = store
        .append_message(message(main.id, "after", None))
        .unwrap();
    assert!(after.id > third.id);

    // A restore writes records under their own ids and raises the counters past them.
    let restored_chat = natter::store::ChatRecord {
        id: 40,
        name: "Old".into(),
        created: 5,
    };
    let restored_message = MessageRecord {
        id: 400,
        chat_id: 40,
        user: "Old".into(),
        verified: false,
        admin: false,
        bot: false,
        text: "from the backup".into(),
        time: 6,
        author: None,
    };
    store
        .import(
            &[
                Restored::User(user("Old", "old@example.org")),
                Restored::Chat(restored_chat.clone()),
                Restored::Message(restored_message.clone()),
            ],
            NextIds {
                chat: 41,
                message: 401,
            },
        )
        .unwrap();
    assert!(store.user("old").unwrap().is_some());
    assert_eq!(store.last_messages(40, 5).unwrap(), vec![restored_message]);
    let next = store.next_ids();
    assert!(next.chat >= 41 && next.message >= 401, "{next:?}");
    let newer = store.create_chat("Newer", 7).unwrap().unwrap();
    assert!(newer.id >= 41);
    store.check_health().unwrap();
    store.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_keeps_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let store: Arc<dyn Store> = SledStore::open(&path, SyncMode::Sync).unwrap();
    exercise(store, |store| {
        drop(store);
        std::thread::sleep(std::time::Duration::from_millis(200));
        SledStore::open(&path, SyncMode::Sync).unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_the_store_contract() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    let url = pg.create_db("store").await;
    let open = || {
        let target = natter::store::mirror::pg::parse(&url).unwrap();
        let store: Arc<dyn Store> = PgStore::open(target, false).unwrap();
        store
    };
    exercise(open(), |store| {
        drop(store);
        open()
    })
    .await;
    // The schema is described in docs/design.md, and applied once.
    let db = pg.client("store").await;
    let versions = db
        .query_one("SELECT count(*) FROM store_migrations", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(versions, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_refuses_a_database_with_other_tables() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    let url = pg.create_db("chatty").await;
    let db = pg.client("chatty").await;
    db.batch_execute("CREATE TABLE users (id SERIAL PRIMARY KEY, name TEXT)")
        .await
        .unwrap();
    let target = natter::store::mirror::pg::parse(&url).unwrap();
    let Err(e) = PgStore::open(target, false) else {
        panic!("a database with someone else's users table was taken");
    };
    assert!(e.to_string().contains("did not create"), "{e}");
}

/// A queued write that PostgreSQL refuses takes its group with it: the writes are never durable
/// (their requests answer 503 and their events are dropped), memory is told to reload, and the
/// store goes on with the next write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_group_of_queued_writes_is_lost_and_the_store_goes_on() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    let url = pg.create_db("refused").await;
    let target = natter::store::mirror::pg::parse(&url).unwrap();
    let store: Arc<dyn Store> = PgStore::open(target, false).unwrap();
    let chat = store.create_chat("Main", 1_700_000_000).unwrap().unwrap();
    let kept = store
        .append_message(message(chat.id, "kept", None))
        .unwrap();
    wait_durable(&*store, store.write_epoch()).await.unwrap();
    // Someone else takes the id the next post gets: its insert fails.
    let db = pg.client("refused").await;
    let taken = i64::try_from(kept.id + 1).unwrap();
    db.execute(
        "INSERT INTO messages (id, chat_id, user_name, verified, admin, bot, text, time) \
         VALUES ($1, 1, 'x', false, false, false, 'squatter', 0)",
        &[&taken],
    )
    .await
    .unwrap();
    let recoveries = store.durability().borrow().recoveries;
    let refused = store
        .append_message(message(chat.id, "refused", None))
        .unwrap();
    assert_eq!(refused.id, kept.id + 1);
    let epoch = store.write_epoch();
    assert!(wait_durable(&*store, epoch).await.is_err());
    let durability = *store.durability().borrow();
    assert!(durability.is_lost(epoch), "{durability:?}");
    assert!(
        durability.recoveries > recoveries,
        "memory is told to reload"
    );

    let after = store
        .append_message(message(chat.id, "after", None))
        .unwrap();
    wait_durable(&*store, store.write_epoch()).await.unwrap();
    let texts: Vec<String> = store
        .last_messages(chat.id, 10)
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["kept", "squatter", "after"]);
    assert!(after.id > refused.id);
}
