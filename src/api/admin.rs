//! `/api/adminonly/*`: chat management for verified admins (the route table checks who calls).

use super::{ApiRequest, Ctx, http};
use crate::chat::SessionInfo;
use crate::error::ApiError;
use crate::model::Chat;
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
