//! Event payloads exactly as docs/api.md, Events, and the delivery hub.

pub mod hub;

use crate::model::Message;
use serde::Serialize;
use serde_json::value::RawValue;

/// `LoginEvent` / `LogoutEvent`: `{"user","chat":"","Time"}`
#[derive(Debug, Clone, Serialize)]
pub struct PresenceEvent {
    pub user: String,
    pub chat: String,
    #[serde(rename = "Time")]
    pub time: i64,
}

/// `ChatJoinEvent`: `{"user","chat","Time","verified","admin","bot"}`
#[derive(Debug, Clone, Serialize)]
pub struct ChatJoinEvent {
    pub user: String,
    pub chat: String,
    #[serde(rename = "Time")]
    pub time: i64,
    pub verified: bool,
    pub admin: bool,
    pub bot: bool,
}

/// `ChatLeaveEvent`: `{"user","chat","Time"}`
#[derive(Debug, Clone, Serialize)]
pub struct ChatLeaveEvent {
    pub user: String,
    pub chat: String,
    #[serde(rename = "Time")]
    pub time: i64,
}

/// `SystemMessageChatJoinEvent` / `SystemMessageChatLeaveEvent`: `{"chat","user","time"}`
#[derive(Debug, Clone, Serialize)]
pub struct SystemMessageEvent {
    pub chat: String,
    pub user: String,
    pub time: i64,
}

/// `ChatCreatedEvent` / `ChatRemovedEvent`: `{"chat","Time"}`
#[derive(Debug, Clone, Serialize)]
pub struct ChatEvent {
    pub chat: String,
    #[serde(rename = "Time")]
    pub time: i64,
}

/// `ResyncEvent`: `{"reason"}`
#[derive(Debug, Clone, Serialize)]
pub struct ResyncEvent {
    pub reason: String,
}

/// `MessageDeletedEvent`: `{"chat","id"}`, on explicit queues only.
#[derive(Debug, Clone, Serialize)]
pub struct MessageDeletedEvent {
    pub chat: String,
    pub id: u64,
}

/// Every event a client can receive.
#[derive(Debug, Clone)]
pub enum Event {
    Login(PresenceEvent),
    Logout(PresenceEvent),
    ChatJoin(ChatJoinEvent),
    SystemMessageChatJoin(SystemMessageEvent),
    ChatLeave(ChatLeaveEvent),
    SystemMessageChatLeave(SystemMessageEvent),
    Message(Message),
    ChatCreated(ChatEvent),
    ChatRemoved(ChatEvent),
    Resync(ResyncEvent),
    MessageDeleted(MessageDeletedEvent),
}

/// Every event type name, in the order of their bits in `EventTypes`.
pub const EVENT_TYPE_NAMES: [&str; 11] = [
    "LoginEvent",
    "LogoutEvent",
    "ChatJoinEvent",
    "SystemMessageChatJoinEvent",
    "ChatLeaveEvent",
    "SystemMessageChatLeaveEvent",
    "MessageEvent",
    "ChatCreatedEvent",
    "ChatRemovedEvent",
    "ResyncEvent",
    "MessageDeletedEvent",
];

/// The event types a queue takes (`event_types` when it is opened); `ResyncEvent` always.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTypes(u32);

impl EventTypes {
    /// Every type, those added later included: a queue opened without a list.
    pub const ALL: EventTypes = EventTypes(u32::MAX);

    /// The types named in `names`; an unknown name is returned as the error.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<EventTypes, String> {
        let mut types = EventTypes::of_kind("ResyncEvent");
        for name in names {
            let one = EventTypes::of_kind(name);
            if one.0 == 0 {
                return Err(name.to_owned());
            }
            types.0 |= one.0;
        }
        Ok(types)
    }

    /// The bits as stored, for a queue another node opens too.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Types from stored bits.
    pub fn from_bits(bits: u32) -> EventTypes {
        EventTypes(bits)
    }

    /// The one type `kind` names (empty for a name not in `EVENT_TYPE_NAMES`).
    pub fn of_kind(kind: &str) -> EventTypes {
        let index = EVENT_TYPE_NAMES.iter().position(|known| *known == kind);
        EventTypes(index.map_or(0, |i| 1 << i))
    }

    /// Whether an event of type `one` (from `of_kind`) belongs in a queue taking `self`.
    pub fn admits(self, one: EventTypes) -> bool {
        self == EventTypes::ALL || self.0 & one.0 != 0
    }

    /// The names it holds, or `None` for every type.
    pub fn names(self) -> Option<Vec<&'static str>> {
        (self != EventTypes::ALL).then(|| {
            EVENT_TYPE_NAMES
                .iter()
                .enumerate()
                .filter(|(i, _)| self.0 & (1 << i) != 0)
                .map(|(_, name)| *name)
                .collect()
        })
    }
}

impl Event {
    /// The `type` string the original client switches on.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Login(_) => "LoginEvent",
            Event::Logout(_) => "LogoutEvent",
            Event::ChatJoin(_) => "ChatJoinEvent",
            Event::SystemMessageChatJoin(_) => "SystemMessageChatJoinEvent",
            Event::ChatLeave(_) => "ChatLeaveEvent",
            Event::SystemMessageChatLeave(_) => "SystemMessageChatLeaveEvent",
            Event::Message(_) => "MessageEvent",
            Event::ChatCreated(_) => "ChatCreatedEvent",
            Event::ChatRemoved(_) => "ChatRemovedEvent",
            Event::Resync(_) => "ResyncEvent",
            Event::MessageDeleted(_) => "MessageDeletedEvent",
        }
    }

    /// Events the original client does not know: they go to explicit queues (`/events`) only,
    /// never to the default queue read by the legacy `/poll`.
    pub fn explicit_only(&self) -> bool {
        Event::kind_is_explicit_only(self.kind())
    }

    /// `explicit_only` by the event's type name (an event read back from the shared log).
    pub fn kind_is_explicit_only(kind: &str) -> bool {
        kind == "MessageDeletedEvent"
    }

    /// Serializes the payload once, however many queues receive it.
    pub fn encode(&self) -> EncodedEvent {
        let json = match self {
            Event::Login(e) | Event::Logout(e) => serde_json::to_string(e),
            Event::ChatJoin(e) => serde_json::to_string(e),
            Event::SystemMessageChatJoin(e) | Event::SystemMessageChatLeave(e) => {
                serde_json::to_string(e)
            }
            Event::ChatLeave(e) => serde_json::to_string(e),
            Event::Message(e) => serde_json::to_string(e),
            Event::ChatCreated(e) | Event::ChatRemoved(e) => serde_json::to_string(e),
            Event::Resync(e) => serde_json::to_string(e),
            Event::MessageDeleted(e) => serde_json::to_string(e),
        };
        // Serializing these plain structs cannot fail; an empty object keeps the type visible if it ever did.
        let json = json.unwrap_or_else(|_| "{}".to_owned());
        EncodedEvent::from_parts(self.kind().to_owned(), json)
    }
}

/// An event as queues hold it: its type and its payload, already JSON.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    pub kind: String,
    pub payload: Box<RawValue>,
    /// Its place in the change log shared by several nodes, and so its id in every queue of a
    /// positioned hub (`Hub::positioned`); 0: not positioned, queues number it themselves.
    pub position: u64,
}

impl EncodedEvent {
    /// Builds from a type and payload JSON (e.g. read back from a queue snapshot).
    pub fn from_parts(kind: String, payload_json: String) -> EncodedEvent {
        let payload = RawValue::from_string(payload_json)
            .unwrap_or_else(|_| RawValue::from_string("{}".to_owned()).expect("literal JSON"));
        EncodedEvent {
            kind,
            payload,
            position: 0,
        }
    }
}

/// Legacy `GET /poll` envelope: `{"event": {...}, "type", "id"}`.
#[derive(Debug, Serialize)]
pub struct PollEnvelope<'a> {
    pub event: &'a RawValue,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub id: u64,
}

/// One entry of `GET /events`: `{"id","type","event"}`.
#[derive(Debug, Serialize)]
pub struct QueuedEvent<'a> {
    pub id: u64,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub event: &'a RawValue,
}
