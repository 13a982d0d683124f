//! `/api/adminonly/*`: chat management for verified admins (the route table checks who calls).

use super::{ApiRequest, Ctx, http};
use crate::chat::SessionInfo;
use crate::error::ApiError;
use crate::model::Chat;
use serde::Deserialize;
use warp::reply::Response;

/// POST /api/adminonly/createChat
pub async fn create_chat(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let body: Chat = http::parse_json(&req.body)?;
    ctx.service.create_chat(session, &body.chat).await?;
    Ok(http::empty())
}

/// POST /api/adminonly/removeChat
pub async fn remove_chat(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let body: Chat = http::parse_json(&req.body)?;
    ctx.service.remove_chat(session, &body.chat).await?;
    Ok(http::empty())
}

/// `{"user"}`; a missing field reads as an empty name.
#[derive(Deserialize, Default)]
#[serde(default)]
struct KickBody {
    user: String,
}

/// POST /api/adminonly/kick
pub async fn kick(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let body: KickBody = http::parse_json(&req.body)?;
    ctx.service.kick(session, &body.user).await?;
    Ok(http::empty())
}
