//! Sessions, and taking one offline together with the memberships it ends.

use super::*;

pub(super) fn put_session(store: &SledStore, session: &SessionRecord) -> StoreResult<()> {
    store.with(|e| {
        e.sessions
            .insert(session.token_hash, encode(session)?)
            .map_err(io)?;
        store.committed();
        Ok(())
    })
}

pub(super) fn replace_session(
    store: &SledStore,
    old_hash: &[u8; 32],
    session: &SessionRecord,
) -> StoreResult<()> {
    store.with(|e| {
        let value = encode(session)?;
        e.sessions
            .transaction(|sessions| -> TxResult<()> {
                sessions.remove(&old_hash[..])?;
                sessions.insert(&session.token_hash[..], value.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)?;
        store.committed();
        Ok(())
    })
}

pub(super) fn delete_session(store: &SledStore, token_hash: &[u8; 32]) -> StoreResult<()> {
    store.with(|e| {
        e.sessions.remove(token_hash).map_err(io)?;
        store.committed();
        Ok(())
    })
}

pub(super) fn take_offline(
    store: &SledStore,
    token_hash: &[u8; 32],
    kept: Option<&SessionRecord>,
    user_key: &str,
    leave: &[u64],
) -> StoreResult<()> {
    store.with(|e| {
        let kept = kept.map(|k| Ok::<_, StoreError>((k.token_hash, encode(k)?)));
        let kept = kept.transpose()?;
        let member_keys: Vec<Vec<u8>> = leave.iter().map(|c| member_key(*c, user_key)).collect();
        (&e.sessions, &e.members)
            .transaction(|(sessions, members)| -> TxResult<()> {
                sessions.remove(&token_hash[..])?;
                if let Some((hash, value)) = &kept {
                    sessions.insert(&hash[..], value.as_slice())?;
                }
                for key in &member_keys {
                    members.remove(key.as_slice())?;
                }
                Ok(())
            })
            .map_err(tx_error)?;
        store.committed();
        Ok(())
    })
}

pub(super) fn sessions(store: &SledStore) -> StoreResult<Vec<SessionRecord>> {
    store.with(|e| decode_all(&e.sessions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::fixtures::{member, open, session};
    use tempfile::TempDir;

    #[test]
    fn taking_a_session_offline_ends_its_memberships_in_one_step() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let (a, b) = (
            store.create_chat("a", 1).unwrap().unwrap(),
            store.create_chat("b", 1).unwrap().unwrap(),
        );
        for chat in [a.id, b.id] {
            store.add_member(&member(chat, "Ann")).unwrap();
            store.add_member(&member(chat, "Bob")).unwrap();
        }
        let (kept, gone) = (session(1, 10), session(2, 20));
        store.put_session(&kept).unwrap();
        store.put_session(&gone).unwrap();
        let offline = SessionRecord {
            online: false,
            ..kept.clone()
        };
        store
            .take_offline(&kept.token_hash, Some(&offline), "ann", &[a.id, b.id])
            .unwrap();
        store
            .take_offline(&gone.token_hash, None, "bob", &[])
            .unwrap();
        assert_eq!(store.sessions().unwrap(), vec![offline]);
        assert_eq!(
            store.members().unwrap(),
            vec![member(a.id, "Bob"), member(b.id, "Bob")]
        );
    }

    #[test]
    fn sessions_put_replace_delete() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        store.put_session(&session(1, 10)).unwrap();
        store.put_session(&session(2, 20)).unwrap();
        let rotated = session(3, 10);
        store.replace_session(&[1; 32], &rotated).unwrap();
        let mut handles: Vec<_> = store
            .sessions()
            .unwrap()
            .into_iter()
            .map(|s| (s.token_hash[0], s.handle))
            .collect();
        handles.sort();
        assert_eq!(handles, [(2, 20), (3, 10)]);
        store.delete_session(&[2; 32]).unwrap();
        assert_eq!(store.sessions().unwrap(), vec![rotated]);
    }
}
