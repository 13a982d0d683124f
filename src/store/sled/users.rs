//! Accounts and the email index that keeps each address to one account.

use super::*;

pub(super) fn user(store: &SledStore, key: &str) -> StoreResult<Option<UserRecord>> {
    store.with(|e| get(&e.users, key.as_bytes()))
}

pub(super) fn user_key_by_email(store: &SledStore, email_key: &str) -> StoreResult<Option<String>> {
    store.with(|e| get(&e.emails, email_key.as_bytes()))
}

/// What an account write stores: the record under its lowercased name, and the name under the
/// lowercased email.
struct UserRows {
    key: String,
    email_key: String,
    value: Vec<u8>,
    owner: Vec<u8>,
}

impl UserRows {
    fn of(user: &UserRecord) -> StoreResult<UserRows> {
        let key = user.name.to_lowercase();
        Ok(UserRows {
            email_key: user.email.to_lowercase(),
            value: encode(user)?,
            owner: encode(&key)?,
            key,
        })
    }
}

pub(super) fn insert_user(
    store: &SledStore,
    user: &UserRecord,
    mail: Option<&QueuedMail>,
) -> StoreResult<Result<(), Taken>> {
    store.with(|e| {
        let UserRows {
            key,
            email_key,
            value,
            owner,
        } = UserRows::of(user)?;
        let mail = store.mail_entry(mail)?;
        store.mirrored_write(
            (&e.users, &e.emails, &e.mail, &e.outbox),
            || Entry::User(MirroredUser::from(user)),
            None,
            |(users, emails, outbox, _)| -> TxResult<Result<(), Taken>> {
                if users.get(&key)?.is_some() {
                    return Ok(Err(Taken::Name));
                }
                if emails.get(&email_key)?.is_some() {
                    return Ok(Err(Taken::Email));
                }
                users.insert(key.as_bytes(), value.as_slice())?;
                emails.insert(email_key.as_bytes(), owner.as_slice())?;
                if let Some((id, queued)) = &mail {
                    outbox.insert(&id[..], queued.as_slice())?;
                }
                Ok(Ok(()))
            },
        )
    })
}

/// Does nothing if the account is gone (a concurrent delete must not resurrect it).
pub(super) fn update_user(
    store: &SledStore,
    user: &UserRecord,
    mail: Option<&QueuedMail>,
) -> StoreResult<()> {
    store.with(|e| {
        let UserRows {
            key,
            email_key,
            value,
            owner,
        } = UserRows::of(user)?;
        let mail = store.mail_entry(mail)?;
        store.mirrored_write(
            (&e.users, &e.emails, &e.mail, &e.outbox),
            || Entry::User(MirroredUser::from(user)),
            None,
            |(users, emails, outbox, _)| -> TxResult<bool> {
                let Some(old) = users.get(&key)? else {
                    return Ok(false);
                };
                let old: UserRecord = decode(&old).map_err(abort)?;
                let old_email = old.email.to_lowercase();
                if email_owner(emails, &email_key)?.is_some_and(|o| o != key) {
                    // The caller checks first; this only catches a race, so keep the index intact.
                    return Err(abort(StoreError::Io(
                        "the new email belongs to another account".into(),
                    )));
                }
                if old_email != email_key
                    && email_owner(emails, &old_email)?.as_deref() == Some(key.as_str())
                {
                    emails.remove(old_email.as_bytes())?;
                }
                emails.insert(email_key.as_bytes(), owner.as_slice())?;
                users.insert(key.as_bytes(), value.as_slice())?;
                if let Some((id, queued)) = &mail {
                    outbox.insert(&id[..], queued.as_slice())?;
                }
                Ok(true)
            },
        )?;
        Ok(())
    })
}

pub(super) fn delete_user(store: &SledStore, key: &str) -> StoreResult<bool> {
    store.with(|e| {
        store.mirrored_write(
            (&e.users, &e.emails, &e.outbox),
            || Entry::DeleteUser {
                key: key.to_owned(),
            },
            None,
            |(users, emails, _)| -> TxResult<bool> {
                let Some(old) = users.remove(key.as_bytes())? else {
                    return Ok(false);
                };
                let old: UserRecord = decode(&old).map_err(abort)?;
                let email_key = old.email.to_lowercase();
                if email_owner(emails, &email_key)?.as_deref() == Some(key) {
                    emails.remove(email_key.as_bytes())?;
                }
                Ok(true)
            },
        )
    })
}

pub(super) fn users(store: &SledStore) -> StoreResult<Vec<UserRecord>> {
    store.with(|e| decode_all(&e.users))
}

/// The user key an email index entry points to.
pub(super) fn email_owner(emails: &TransactionalTree, email_key: &str) -> TxResult<Option<String>> {
    match emails.get(email_key.as_bytes())? {
        Some(owner) => Ok(Some(decode(&owner).map_err(abort)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::fixtures::{open, user};
    use tempfile::TempDir;

    #[test]
    fn users_insert_update_delete() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let ann = user("Ann", "Ann@Example.org");
        assert_eq!(store.insert_user(&ann, None).unwrap(), Ok(()));
        assert_eq!(store.user("ann").unwrap(), Some(ann.clone()));
        assert_eq!(
            store.user_key_by_email("ann@example.org").unwrap(),
            Some("ann".into())
        );
        assert_eq!(
            store
                .insert_user(&user("ANN", "other@example.org"), None)
                .unwrap(),
            Err(Taken::Name)
        );
        assert_eq!(
            store
                .insert_user(&user("bob", "ANN@example.ORG"), None)
                .unwrap(),
            Err(Taken::Email)
        );
        assert_eq!(store.users().unwrap(), vec![ann.clone()]);

        let moved = UserRecord {
            email: "new@example.org".into(),
            verified: true,
            ..ann
        };
        store.update_user(&moved, None).unwrap();
        assert_eq!(store.user("ann").unwrap(), Some(moved.clone()));
        assert_eq!(store.user_key_by_email("ann@example.org").unwrap(), None);
        assert_eq!(
            store.user_key_by_email("new@example.org").unwrap(),
            Some("ann".into())
        );
        // The old email is free again.
        assert_eq!(
            store
                .insert_user(&user("bob", "ann@example.org"), None)
                .unwrap(),
            Ok(())
        );
        // Taking another account's email is refused and changes nothing.
        let clash = UserRecord {
            email: "Ann@example.org".into(),
            ..moved.clone()
        };
        assert!(matches!(
            store.update_user(&clash, None),
            Err(StoreError::Io(_))
        ));
        assert_eq!(store.user("ann").unwrap(), Some(moved));

        assert!(store.delete_user("ann").unwrap());
        assert!(!store.delete_user("ann").unwrap());
        assert_eq!(store.user("ann").unwrap(), None);
        assert_eq!(store.user_key_by_email("new@example.org").unwrap(), None);
        assert_eq!(
            store.user_key_by_email("ann@example.org").unwrap(),
            Some("bob".into())
        );
        // Updating a deleted account does not bring it back.
        store
            .update_user(&user("Ann", "x@example.org"), None)
            .unwrap();
        assert_eq!(store.user("ann").unwrap(), None);
        assert_eq!(store.user_key_by_email("x@example.org").unwrap(), None);
    }
}
