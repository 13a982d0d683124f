//! Records and store handles the store's tests share.

use super::*;
use crate::store::Author;
use tempfile::TempDir;

pub(super) fn user(name: &str, email: &str) -> UserRecord {
    UserRecord {
        name: name.into(),
        email: email.into(),
        password_hash: "$pbkdf2-sha256$i=1,l=32$x$y".into(),
        verified: false,
        admin: false,
        bot: false,
        created: 1,
        activation: None,
        reset: None,
    }
}

pub(super) fn message(chat_id: u64, text: &str) -> NewMessage {
    NewMessage {
        chat_id,
        user: "ann".into(),
        verified: true,
        admin: false,
        bot: false,
        text: text.into(),
        time: 7,
        author: Some(Author::Account("ann".into())),
    }
}

pub(super) fn session(hash: u8, handle: u64) -> SessionRecord {
    SessionRecord {
        token_hash: [hash; 32],
        handle,
        user: "Ann".into(),
        user_key: "ann".into(),
        guest: false,
        created: 1,
        expires: 2,
        online: true,
    }
}

pub(super) fn member(chat_id: u64, name: &str) -> MemberRecord {
    MemberRecord {
        chat_id,
        user_key: name.to_lowercase(),
        user: name.into(),
    }
}

pub(super) fn open(dir: &TempDir) -> Arc<SledStore> {
    SledStore::open(dir.path(), SyncMode::Relaxed).unwrap()
}

pub(super) fn reopen(dir: &TempDir, store: Arc<SledStore>) -> Arc<SledStore> {
    store.close().unwrap();
    drop(store);
    // sled's own background flush thread may hold the directory's lock a moment longer.
    for _ in 0..100 {
        match SledStore::open(dir.path(), SyncMode::Relaxed) {
            Err(StoreError::Locked(_)) => std::thread::sleep(Duration::from_millis(20)),
            other => return other.unwrap(),
        }
    }
    open(dir)
}
