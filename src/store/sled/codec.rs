//! How values are stored: a version byte, then bincode.

use super::*;

pub(super) const FORMAT_VERSION: u8 = 1;
/// Leading byte of a message that records its author; messages led by `FORMAT_VERSION` predate it.
const MESSAGE_FORMAT_VERSION: u8 = 2;

pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> StoreResult<Vec<u8>> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .map_err(|e| StoreError::Io(format!("encoding failed: {e}")))?;
    Ok(out)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => decode_body(body),
        Some((version, _)) => Err(corrupt_value::<T>(format!(
            "unknown format version {version}"
        ))),
        None => Err(corrupt_value::<T>("empty value".into())),
    }
}

fn corrupt_value<T>(text: String) -> StoreError {
    let what = std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or("value");
    StoreError::Corrupt(format!("{what}: {text}"))
}

/// A bincode value that must use every byte of `body`.
fn decode_body<T: DeserializeOwned>(body: &[u8]) -> StoreResult<T> {
    let (value, used) = bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map_err(|e| corrupt_value::<T>(e.to_string()))?;
    if used != body.len() {
        return Err(corrupt_value::<T>("trailing bytes".into()));
    }
    Ok(value)
}

/// A message as the first format stored it, before authors were recorded.
#[derive(Deserialize)]
struct MessageV1 {
    id: u64,
    chat_id: u64,
    user: String,
    verified: bool,
    admin: bool,
    bot: bool,
    text: String,
    time: i64,
}

pub(super) fn encode_message(record: &MessageRecord) -> StoreResult<Vec<u8>> {
    let mut out = encode(record)?;
    out[0] = MESSAGE_FORMAT_VERSION;
    Ok(out)
}

/// Reads both message formats; the first one has no author.
pub(super) fn decode_message(bytes: &[u8]) -> StoreResult<MessageRecord> {
    match bytes.split_first() {
        Some((&MESSAGE_FORMAT_VERSION, body)) => decode_body(body),
        Some((&FORMAT_VERSION, body)) => {
            let old: MessageV1 = decode_body(body)?;
            Ok(MessageRecord {
                id: old.id,
                chat_id: old.chat_id,
                user: old.user,
                verified: old.verified,
                admin: old.admin,
                bot: old.bot,
                text: old.text,
                time: old.time,
                author: None,
            })
        }
        _ => decode::<MessageRecord>(bytes),
    }
}

pub(super) fn get<T: DeserializeOwned>(tree: &Tree, key: &[u8]) -> StoreResult<Option<T>> {
    match tree.get(key).map_err(io)? {
        Some(value) => decode(&value).map(Some),
        None => Ok(None),
    }
}

pub(super) fn decode_all<T: DeserializeOwned>(tree: &Tree) -> StoreResult<Vec<T>> {
    tree.iter()
        .values()
        .map(|value| decode(&value.map_err(io)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::fixtures::{open, user};
    use tempfile::TempDir;

    #[test]
    fn corrupt_values_are_errors() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        store
            .insert_user(&user("ann", "a@x"), None)
            .unwrap()
            .unwrap();
        store
            .engine()
            .users
            .insert("bob", &[9u8, 1, 2][..])
            .unwrap();
        store
            .engine()
            .users
            .insert("cat", &[1u8, 0xff, 0xff][..])
            .unwrap();
        store.engine().users.insert("dan", &[][..]).unwrap();
        for key in ["bob", "cat", "dan"] {
            assert!(
                matches!(store.user(key), Err(StoreError::Corrupt(_))),
                "{key}"
            );
        }
        assert!(matches!(store.users(), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            store.delete_user("cat"),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(store.user("ann").unwrap().unwrap().name, "ann");

        let chat = store.create_chat("a", 1).unwrap().unwrap();
        store
            .engine()
            .messages
            .insert(message_key(chat.id, 99), &[1u8][..])
            .unwrap();
        assert!(matches!(
            store.last_messages(chat.id, 5),
            Err(StoreError::Corrupt(_))
        ));
        store
            .engine()
            .meta
            .insert(META_QUEUES, &[2u8, 7][..])
            .unwrap();
        assert!(matches!(store.take_queues(), Err(StoreError::Corrupt(_))));
    }
}
