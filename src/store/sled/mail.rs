//! The mail queue: mail waiting to be sent, written in the same step as the change it is about.

use super::*;

pub(super) fn queue_mail(store: &SledStore, mail: &QueuedMail) -> StoreResult<u64> {
    store.with(|e| {
        let Some((id, value)) = store.mail_entry(Some(mail))? else {
            return Err(StoreError::Io("no mail to queue".into()));
        };
        e.mail.insert(id, value).map_err(io)?;
        store.committed();
        Ok(u64::from_be_bytes(id))
    })
}

pub(super) fn pending_mail(store: &SledStore) -> StoreResult<Vec<(u64, QueuedMail)>> {
    store.with(|e| {
        e.mail
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(io)?;
                let id: [u8; 8] = key
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("mail key is not 8 bytes".into()))?;
                Ok((u64::from_be_bytes(id), decode(&value)?))
            })
            .collect()
    })
}

pub(super) fn reschedule_mail(store: &SledStore, id: u64, mail: &QueuedMail) -> StoreResult<()> {
    store.with(|e| {
        e.mail.insert(id.to_be_bytes(), encode(mail)?).map_err(io)?;
        store.committed();
        Ok(())
    })
}

pub(super) fn delete_mail(store: &SledStore, id: u64) -> StoreResult<()> {
    store.with(|e| {
        e.mail.remove(id.to_be_bytes()).map_err(io)?;
        store.committed();
        Ok(())
    })
}

pub(super) fn pending_mail_count(store: &SledStore) -> StoreResult<usize> {
    store.with(|e| Ok(e.mail.len()))
}

impl SledStore {
    /// A fresh outbox key and the encoded mail, ready to insert in a transaction.
    pub(super) fn mail_entry(
        &self,
        mail: Option<&QueuedMail>,
    ) -> StoreResult<Option<([u8; 8], Vec<u8>)>> {
        let Some(mail) = mail else {
            return Ok(None);
        };
        // generate_id never hands out an id that reached the disk, which is all the outbox needs.
        let id = self.with(|e| e.db.generate_id().map_err(io))?;
        Ok(Some((id.to_be_bytes(), encode(mail)?)))
    }
}
