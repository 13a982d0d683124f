//! `/api/loggedonly/*`: routes for an online session.

use super::{ApiRequest, Ctx, http};
use crate::chat::SessionInfo;
use crate::error::ApiError;
use crate::events::hub::PollReply;
use crate::events::{EventTypes, PollEnvelope, QueuedEvent};
use crate::model::{Chat, QueueOpened};
use serde::{Deserialize, Serialize};
use warp::reply::Response;

fn chat_body(req: &ApiRequest) -> Result<Chat, ApiError> {
    http::parse_json(&req.body)
}

/// `{"events": [...]}`
#[derive(Serialize)]
struct EventBatch<'a> {
    events: Vec<QueuedEvent<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PostBody {
    chat: String,
    text: String,
}

/// POST /api/loggedonly/login: a fresh cookie for this session, which comes back online.
pub async fn session_login(ctx: &Ctx, session: &SessionInfo) -> Result<Response, ApiError> {
    let issued = ctx.service.session_login(&ctx.signer, session).await?;
    super::public::logged_in(ctx, issued)
}

/// POST /api/loggedonly/logout: ends the session and expires the cookie.
pub async fn logout(ctx: &Ctx, session: &SessionInfo) -> Result<Response, ApiError> {
    ctx.service.logout(session).await?;
    Ok(http::set_cookie(http::empty(), &ctx.signer.expire_header()))
}

fn last_event_id(req: &ApiRequest) -> Result<Option<u64>, ApiError> {
    http::query_param(&req.query, "last_event_id")?
        .map(|v| v.parse::<u64>().map_err(|_| ApiError::CannotParse))
        .transpose()
}

/// GET /api/loggedonly/poll: one event from the session's default queue, or empty after the timeout.
pub async fn poll(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let ack = last_event_id(req)?;
    match ctx.service.poll_default(session, ack).await {
        PollReply::Event(delivered) => http::json(&PollEnvelope {
            event: &delivered.event.payload,
            kind: &delivered.event.kind,
            id: delivered.id,
        }),
        PollReply::Empty => Ok(http::empty()),
    }
}

/// `POST /api/loggedonly/queues` body: which event types the queue takes (all when absent).
#[derive(Deserialize, Default)]
#[serde(default)]
struct QueueBody {
    event_types: Option<Vec<String>>,
}

/// The event types a queue-opening body asks for: an empty body, as the first clients of this
/// route sent, or no `event_types`, takes every type.
fn queue_types(body: &[u8]) -> Result<EventTypes, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(EventTypes::ALL);
    }
    let QueueBody { event_types } = http::parse_json(body)?;
    match event_types {
        None => Ok(EventTypes::ALL),
        Some(names) => EventTypes::from_names(names.iter().map(String::as_str))
            .map_err(|name| ApiError::unknown_event_type(&name)),
    }
}

/// POST /api/loggedonly/queues: opens an explicit event queue (one per browser tab).
pub async fn open_queue(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let types = queue_types(&req.body)?;
    let (queue_id, last_event_id) = ctx.service.open_queue(session, types).await?;
    http::json(&QueueOpened {
        queue_id,
        last_event_id,
    })
}

/// GET /api/loggedonly/events: acknowledges up to `last_event_id`, then returns what is pending.
pub async fn events(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let queue_id = http::query_param(&req.query, "queue_id")?.ok_or(ApiError::BadEventQueue)?;
    let ack = last_event_id(req)?.unwrap_or(0);
    let batch = ctx.service.poll_queue(session, &queue_id, ack).await?;
    let events: Vec<QueuedEvent> = batch
        .iter()
        .map(|d| QueuedEvent {
            id: d.id,
            kind: &d.event.kind,
            event: &d.event.payload,
        })
        .collect();
    http::json(&EventBatch { events })
}

/// POST /api/loggedonly/joinChat
pub async fn join_chat(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let body = chat_body(req)?;
    http::json(&ctx.service.join_chat(session, &body.chat).await?)
}

/// POST /api/loggedonly/leaveChat
pub async fn leave_chat(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let body = chat_body(req)?;
    ctx.service.leave_chat(session, &body.chat).await?;
    Ok(http::empty())
}

/// GET /api/loggedonly/getChats
pub fn get_chats(ctx: &Ctx, session: &SessionInfo) -> Result<Response, ApiError> {
    http::json(&ctx.service.chat_reports(session)?)
}

/// POST /api/loggedonly/getUsers
pub fn get_users(ctx: &Ctx, req: &ApiRequest, session: &SessionInfo) -> Result<Response, ApiError> {
    let body = chat_body(req)?;
    http::json(&ctx.service.chat_users(session, &body.chat)?)
}

/// POST /api/loggedonly/getLastMessages
pub fn get_last_messages(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let body = chat_body(req)?;
    http::json(&ctx.service.last_messages(session, &body.chat)?)
}

/// `{"chat","before"?,"limit"?}`: a limit of the wrong type is `cannot parse data`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct PageBody {
    chat: String,
    before: Option<u64>,
    limit: Option<i64>,
}

/// `{"chat","id"}`: a missing id matches no message.
#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageRef {
    chat: String,
    id: u64,
}

/// Messages per `getMessages` page when the request names no limit.
const DEFAULT_PAGE: usize = 50;

/// POST /api/loggedonly/getMessages
pub fn get_messages(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let body: PageBody = http::parse_json(&req.body)?;
    let limit = match body.limit {
        None => DEFAULT_PAGE,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| (1..=crate::chat::MAX_PAGE).contains(n))
            .ok_or(ApiError::InvalidLimit)?,
    };
    http::json(
        &ctx.service
            .messages(session, &body.chat, body.before, limit)?,
    )
}

/// POST /api/loggedonly/deleteMessage
pub async fn delete_message(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let body: MessageRef = http::parse_json(&req.body)?;
    ctx.service
        .delete_message(session, &body.chat, body.id)
        .await?;
    Ok(http::empty())
}

/// POST /api/loggedonly/postMessage
pub async fn post_message(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let body: PostBody = http::parse_json(&req.body)?;
    http::json(
        &ctx.service
            .post_message(session, &body.chat, &body.text)
            .await?,
    )
}
