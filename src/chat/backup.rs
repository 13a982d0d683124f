//! The online backup's cut (docs/operations.md, Backup and restore; src/interchange/backup/export.rs says why it is
//! consistent).

use super::Service;
use crate::error::ApiError;
use crate::interchange::backup::Export;
use crate::model::now;

impl Service {
    /// `GET /api/adminonly/export`: accounts, chats and the next message id, read together
    /// under the state lock, and on disk before they are handed out. The returned export streams
    /// the messages below that id without holding the lock; removed chats keep their messages
    /// until it is dropped.
    pub async fn export(&self) -> Result<Export, ApiError> {
        let gate = self.purges.clone().read_owned().await;
        let (users, chats, next, epoch) = {
            let st = self.lock();
            let users = self.store.users()?;
            let chats = st.chats.values().cloned().collect();
            (
                users,
                chats,
                self.store.next_ids(),
                self.store.write_epoch(),
            )
        };
        self.durable(epoch).await?;
        Ok(Export::new(
            self.store.clone(),
            users,
            chats,
            next,
            now(),
            Some(gate),
        ))
    }
}
