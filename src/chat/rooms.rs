//! Chats and messages: join, leave, history, post, and the admin's create and remove (docs/api.md, Routes).

use super::presence::{SessionInfo, leave_events};
use super::state::State;
use super::{Outbox, Service};
use crate::error::ApiError;
use crate::events::{ChatEvent, ChatJoinEvent, Event, MessageDeletedEvent, SystemMessageEvent};
use crate::model::{
    ChatName, ChatReport, Message, UserWithStatus, check_message_text, name_key, now,
};
use crate::store::{Author, ChatRecord, MemberRecord, MessageRecord, NewMessage, Pending};

/// Most messages one `getMessages` page holds.
pub const MAX_PAGE: usize = 200;

impl Service {
    /// `POST /api/loggedonly/joinChat`
    pub async fn join_chat(
        &self,
        session: &SessionInfo,
        chat: &str,
    ) -> Result<ChatReport, ApiError> {
        let (epoch, report) = {
            let mut st = self.lock_online(session)?;
            let chat = find_chat(&st, chat)?;
            if st.is_member(chat.id, &session.user_key) {
                return Err(ApiError::AlreadyInChat);
            }
            self.store.add_member(&MemberRecord {
                chat_id: chat.id,
                user_key: session.user_key.clone(),
                user: session.user.clone(),
            })?;
            st.add_member(chat.id, &session.user_key, &session.user);
            let status = st
                .online
                .get(&session.user_key)
                .map(|u| u.status)
                .unwrap_or_default();
            let time = now();
            let audience = st.chat_audience(chat.id);
            let events: Outbox = vec![
                (
                    audience.clone(),
                    Event::ChatJoin(ChatJoinEvent {
                        user: session.user.clone(),
                        chat: chat.name.clone(),
                        time,
                        verified: status.verified,
                        admin: status.admin,
                        bot: status.bot,
                    }),
                ),
                (
                    audience,
                    Event::SystemMessageChatJoin(SystemMessageEvent {
                        chat: chat.name.clone(),
                        user: session.user.clone(),
                        time,
                    }),
                ),
            ];
            let report = self.joined_report(&st, &session.user, &chat);
            (self.publish(events), report)
        };
        let report = report.finish()?;
        self.durable(epoch).await?;
        Ok(report)
    }

    /// `POST /api/loggedonly/leaveChat`: the remaining members are told.
    pub async fn leave_chat(&self, session: &SessionInfo, chat: &str) -> Result<(), ApiError> {
        let epoch = {
            let mut st = self.lock_online(session)?;
            let chat = find_chat(&st, chat)?;
            if !st.is_member(chat.id, &session.user_key) {
                return Err(ApiError::NotInChat);
            }
            self.store.remove_member(chat.id, &session.user_key)?;
            st.remove_member(chat.id, &session.user_key);
            let events = leave_events(&st, chat.id, &chat.name, &session.user, now());
            self.publish(events)
        };
        self.durable(epoch).await
    }

    /// `GET /api/loggedonly/getChats`: one report per chat, sorted by name.
    pub fn chat_reports(&self, session: &SessionInfo) -> Result<Vec<ChatReport>, ApiError> {
        let reports: Vec<PendingReport> = {
            let st = self.lock();
            st.sorted_chats()
                .into_iter()
                .map(|chat| {
                    if st.is_member(chat.id, &session.user_key) {
                        self.joined_report(&st, &session.user, &chat)
                    } else {
                        PendingReport::not_joined(&session.user, chat.name)
                    }
                })
                .collect()
        };
        reports.into_iter().map(PendingReport::finish).collect()
    }

    /// `POST /api/loggedonly/getUsers`: the chat's online members, sorted.
    pub fn chat_users(
        &self,
        session: &SessionInfo,
        chat: &str,
    ) -> Result<Vec<UserWithStatus>, ApiError> {
        let st = self.lock();
        let chat = member_chat(&st, session, chat)?;
        Ok(online_members(&st, chat.id))
    }

    /// `POST /api/loggedonly/getLastMessages`: the last `last_messages`, oldest first.
    pub fn last_messages(
        &self,
        session: &SessionInfo,
        chat: &str,
    ) -> Result<Vec<Message>, ApiError> {
        let chat = member_chat(&self.lock(), session, chat)?;
        self.history(&chat)
    }

    /// `POST /api/loggedonly/getMessages`: up to `limit` messages older than `before` (or the
    /// newest), oldest first. `limit` is checked by the caller (1 to `MAX_PAGE`).
    pub fn messages(
        &self,
        session: &SessionInfo,
        chat: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Message>, ApiError> {
        let chat = member_chat(&self.lock(), session, chat)?;
        let page = self
            .store
            .messages_before(chat.id, before, limit.min(MAX_PAGE))?;
        Ok(all_to_wire(&page, &chat.name))
    }

    /// `POST /api/loggedonly/deleteMessage`: by its author or a verified admin; the text leaves
    /// storage and the members' explicit queues get `MessageDeletedEvent`.
    pub async fn delete_message(
        &self,
        session: &SessionInfo,
        chat: &str,
        id: u64,
    ) -> Result<(), ApiError> {
        let epoch = {
            let st = self.lock_online(session)?;
            let chat = member_chat(&st, session, chat)?;
            let found = match id.checked_add(1) {
                Some(next) => self.store.messages_before(chat.id, Some(next), 1)?,
                None => Vec::new(),
            };
            let message = found
                .into_iter()
                .find(|m| m.id == id)
                .ok_or(ApiError::NoSuchMessage)?;
            if message.author.as_ref() != Some(&author_of(session)) {
                self.require_admin(session).map_err(|e| match e {
                    ApiError::AdminOnly => ApiError::NotAllowed,
                    other => other,
                })?;
            }
            if !self.store.delete_message(chat.id, id)? {
                return Err(ApiError::NoSuchMessage);
            }
            let event = Event::MessageDeleted(MessageDeletedEvent {
                chat: chat.name.clone(),
                id,
            });
            self.publish(vec![(st.chat_audience(chat.id), event)])
        };
        self.durable(epoch).await
    }

    /// `POST /api/loggedonly/postMessage`: stores the message and fans it out to the members.
    pub async fn post_message(
        &self,
        session: &SessionInfo,
        chat: &str,
        text: &str,
    ) -> Result<Message, ApiError> {
        check_message_text(text, self.config.max_message_chars)?;
        let status = self.status_of(&session.user_key, session.guest)?;
        let (epoch, message) = {
            let st = self.lock_online(session)?;
            let chat = member_chat(&st, session, chat)?;
            let stored = self.store.append_message(NewMessage {
                chat_id: chat.id,
                user: session.user.clone(),
                verified: status.verified,
                admin: status.admin,
                bot: status.bot,
                text: text.to_owned(),
                time: now(),
                author: Some(author_of(session)),
            })?;
            let message = to_wire(&stored, &chat.name);
            let mut events: Outbox =
                vec![(st.chat_audience(chat.id), Event::Message(message.clone()))];
            // The bot answers inside the same commit, so its reply always follows the command.
            if let Some(reply) = self.bot_reply(&st, &chat, text)? {
                events.push((st.chat_audience(chat.id), Event::Message(reply)));
            }
            (self.publish(events), message)
        };
        self.durable(epoch).await?;
        Ok(message)
    }

    /// Stores a bot message in a chat.
    pub(super) fn store_bot_message(
        &self,
        chat: &ChatRecord,
        text: String,
    ) -> Result<Message, ApiError> {
        let stored = self.store.append_message(NewMessage {
            chat_id: chat.id,
            user: self.config.bot.name.clone(),
            verified: false,
            admin: false,
            bot: true,
            text,
            time: now(),
            author: None,
        })?;
        Ok(to_wire(&stored, &chat.name))
    }

    /// Checks that the session belongs to a verified admin, reading the account afresh.
    pub fn require_admin(&self, session: &SessionInfo) -> Result<(), ApiError> {
        if session.guest {
            return Err(ApiError::AdminOnly);
        }
        match self.store.user(&session.user_key)? {
            Some(user) if user.verified && user.admin => Ok(()),
            _ => Err(ApiError::AdminOnly),
        }
    }

    /// `POST /api/adminonly/createChat`
    pub async fn create_chat(&self, session: &SessionInfo, raw_chat: &str) -> Result<(), ApiError> {
        let name = ChatName::parse(raw_chat)?;
        let epoch = {
            let mut st = self.lock_online(session)?;
            if st.chats.contains_key(&name.key()) {
                return Err(ApiError::ChatExists);
            }
            let chat = self
                .store
                .create_chat(name.as_str(), now())?
                .ok_or(ApiError::ChatExists)?;
            let event = Event::ChatCreated(ChatEvent {
                chat: chat.name.clone(),
                time: chat.created,
            });
            st.chats.insert(name.key(), chat);
            let audience = st.everyone();
            self.publish(vec![(audience, event)])
        };
        self.durable(epoch).await
    }

    /// `POST /api/adminonly/removeChat`: the chat and its members are gone at once; its
    /// messages, unreachable from then on, are deleted in the background.
    pub async fn remove_chat(&self, session: &SessionInfo, raw_chat: &str) -> Result<(), ApiError> {
        let (epoch, chat_id) = {
            let mut st = self.lock_online(session)?;
            let chat = find_chat(&st, raw_chat)?;
            self.store.remove_chat(chat.id)?;
            st.chats.remove(&name_key(&chat.name));
            st.remove_chat_members(chat.id);
            let event = Event::ChatRemoved(ChatEvent {
                chat: chat.name,
                time: now(),
            });
            let audience = st.everyone();
            (self.publish(vec![(audience, event)]), chat.id)
        };
        let (store, purges) = (self.store.clone(), self.purges.clone());
        // A purge cut short (crash, error) is finished when the store next opens. It waits for
        // running exports, whose cut may include the chat.
        tokio::task::spawn_blocking(move || {
            let _no_export_running = purges.blocking_write();
            match store.purge_messages(chat_id) {
                Ok(n) => log::debug!("deleted {n} messages of removed chat {chat_id}"),
                Err(e) => log::warn!("deleting the messages of removed chat {chat_id}: {e}"),
            }
        });
        self.durable(epoch).await
    }

    /// A joined chat's report as of now; its history is read at this cut and waited for
    /// outside the lock (`PendingReport::finish`).
    fn joined_report(&self, st: &State, user: &str, chat: &ChatRecord) -> PendingReport {
        PendingReport {
            report: ChatReport {
                user: user.to_owned(),
                chat: chat.name.clone(),
                joined: true,
                messages: Vec::new(),
                users: online_members(st, chat.id),
            },
            history: Some(
                self.store
                    .last_messages_later(chat.id, self.config.last_messages),
            ),
        }
    }

    fn history(&self, chat: &ChatRecord) -> Result<Vec<Message>, ApiError> {
        let last = self
            .store
            .last_messages(chat.id, self.config.last_messages)?;
        Ok(all_to_wire(&last, &chat.name))
    }
}

/// A chat report whose history is still being read.
struct PendingReport {
    report: ChatReport,
    history: Option<Pending<Vec<MessageRecord>>>,
}

impl PendingReport {
    fn not_joined(user: &str, chat: String) -> PendingReport {
        PendingReport {
            report: ChatReport {
                user: user.to_owned(),
                chat,
                joined: false,
                messages: Vec::new(),
                users: Vec::new(),
            },
            history: None,
        }
    }

    /// Waits for the history, outside the service's lock.
    fn finish(self) -> Result<ChatReport, ApiError> {
        let mut report = self.report;
        if let Some(history) = self.history {
            report.messages = all_to_wire(&history()?, &report.chat);
        }
        Ok(report)
    }
}

/// Online members of a chat with their status, sorted by name.
pub(super) fn online_members(st: &State, chat_id: u64) -> Vec<UserWithStatus> {
    let mut users: Vec<UserWithStatus> = st
        .member_keys(chat_id)
        .filter_map(|key| st.online.get(key))
        .map(|u| UserWithStatus::new(&u.name, u.status))
        .collect();
    users.sort_by(|a, b| a.user.cmp(&b.user));
    users
}

fn find_chat(st: &State, raw: &str) -> Result<ChatRecord, ApiError> {
    st.chats
        .get(&name_key(raw))
        .cloned()
        .ok_or(ApiError::NoSuchChat)
}

/// The chat, if the session's user is a member (a missing chat reads the same).
fn member_chat(st: &State, session: &SessionInfo, raw: &str) -> Result<ChatRecord, ApiError> {
    match st.chats.get(&name_key(raw)) {
        Some(chat) if st.is_member(chat.id, &session.user_key) => Ok(chat.clone()),
        _ => Err(ApiError::NotInChat),
    }
}

/// The author a message posted by `session` records: its account, or the guest session itself.
fn author_of(session: &SessionInfo) -> Author {
    if session.guest {
        Author::Guest(session.handle)
    } else {
        Author::Account(session.user_key.clone())
    }
}

fn all_to_wire(records: &[MessageRecord], chat: &str) -> Vec<Message> {
    records.iter().map(|m| to_wire(m, chat)).collect()
}

fn to_wire(m: &MessageRecord, chat: &str) -> Message {
    Message {
        user: m.user.clone(),
        verified: m.verified,
        admin: m.admin,
        bot: m.bot,
        chat: chat.to_owned(),
        id: m.id,
        text: m.text.clone(),
        time: m.time,
    }
}
