//! The built-in bot: answers `/help` and `/users` (docs/api.md, Bot). It makes no outbound calls.

use super::Service;
use super::rooms::online_members;
use super::state::State;
use crate::error::ApiError;
use crate::model::Message;
use crate::store::ChatRecord;

impl Service {
    /// The bot's reply to a message whose whole text is a command, stored as a normal message.
    pub(super) fn bot_reply(
        &self,
        st: &State,
        chat: &ChatRecord,
        text: &str,
    ) -> Result<Option<Message>, ApiError> {
        if !self.config.bot.enabled {
            return Ok(None);
        }
        let reply = match text.trim() {
            "/help" => "Available commands: /help, /users".to_owned(),
            "/users" => {
                let names: Vec<String> = online_members(st, chat.id)
                    .into_iter()
                    .map(|u| u.user)
                    .collect();
                format!("Online in {}: {}", chat.name, names.join(", "))
            }
            _ => return Ok(None),
        };
        self.store_bot_message(chat, reply).map(Some)
    }
}
