//! Routes without a session: register, verifyEmail, authorize, password reset, guest login, healthz.

use super::{ApiRequest, Ctx, http};
use crate::chat::Issued;
use crate::error::ApiError;
use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::Response;

/// Request bodies: a missing field reads as an empty string (docs/api.md, Conventions).
#[derive(Deserialize)]
#[serde(default)]
#[derive(Default)]
struct Credentials {
    user: String,
    email: String,
    password: String,
    #[serde(rename = "passwordResetToken")]
    password_reset_token: String,
}

fn credentials(req: &ApiRequest) -> Result<Credentials, ApiError> {
    http::parse_json(&req.body)
}

/// A login's reply: UserWithStatus plus the session cookie; the request log names the user.
pub(super) fn logged_in(ctx: &Ctx, issued: Issued) -> Result<Response, ApiError> {
    let cookie = ctx
        .signer
        .set_header(&issued.cookie_value, ctx.config.session_max_age.as_secs());
    let mut response = http::set_cookie(http::json(&issued.user)?, &cookie);
    response
        .extensions_mut()
        .insert(http::SignedIn(issued.user.user));
    Ok(response)
}

/// POST /api/session without a valid session: `null`, with status 200, so that a page asking
/// whether it is signed in gets an answer, not an error.
pub fn signed_out() -> Result<Response, ApiError> {
    http::json(&None::<()>)
}

/// POST /api/register: a new unverified account; the activation link goes by mail.
pub async fn register(ctx: &Ctx, req: &ApiRequest) -> Result<Response, ApiError> {
    let body = credentials(req)?;
    ctx.service
        .register(&body.user, &body.email, &body.password)
        .await?;
    Ok(http::empty())
}

/// GET /api/verifyEmail/{user}/{token}: a small page saying whether the link worked.
pub async fn verify_email(ctx: &Ctx, req: &ApiRequest) -> Result<Response, ApiError> {
    let (user, token) = match req.params.as_slice() {
        [user, token] => (user.as_str(), token.as_str()),
        _ => return Err(ApiError::NotFound),
    };
    Ok(if ctx.service.verify_email(user, token).await? {
        http::html(
            StatusCode::OK,
            page(
                "Email verified",
                "Your email is verified, you can sign in now.",
            ),
        )
    } else {
        http::html(
            StatusCode::BAD_REQUEST,
            page(
                "Link not valid",
                "This link is invalid or has expired. Sign in to request a new one, or register again.",
            ),
        )
    })
}

fn page(title: &str, text: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · natter</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\
         <body class=\"notice-page\"><main class=\"notice\"><h1>{title}</h1><p>{text}</p>\
         <p><a href=\"/\">Go to sign in</a></p></main></body></html>\n"
    )
}

/// POST /api/authorize: sign in with a password.
pub async fn authorize(ctx: &Ctx, req: &ApiRequest) -> Result<Response, ApiError> {
    let body = credentials(req)?;
    let issued = ctx
        .service
        .authorize(&ctx.signer, &body.user, &body.password)
        .await?;
    logged_in(ctx, issued)
}

/// POST /api/requestResetPassword: mails a reset token (same answer for unknown users).
pub async fn request_reset_password(ctx: &Ctx, req: &ApiRequest) -> Result<Response, ApiError> {
    let body = credentials(req)?;
    if !body.user.is_empty() {
        ctx.limits
            .reset_request(&crate::model::name_key(&body.user))?;
    }
    ctx.service.request_reset(&body.user).await?;
    Ok(http::empty())
}

/// POST /api/resetPassword: a new password with the mailed token.
pub async fn reset_password(ctx: &Ctx, req: &ApiRequest) -> Result<Response, ApiError> {
    let body = credentials(req)?;
    ctx.service
        .reset_password(&body.user, &body.password_reset_token, &body.password)
        .await?;
    Ok(http::empty())
}

/// POST /api/login: a guest session.
pub async fn guest_login(ctx: &Ctx, req: &ApiRequest) -> Result<Response, ApiError> {
    let body = credentials(req)?;
    let issued = ctx.service.guest_login(&ctx.signer, &body.user).await?;
    logged_in(ctx, issued)
}

/// `/healthz` body, fields in this order.
#[derive(serde::Serialize)]
struct Health {
    status: &'static str,
    storage: &'static str,
    mirror: &'static str,
    /// Several nodes: which node answered, and how long ago it last read the shared log.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_lag_ms: Option<u64>,
}

/// GET /healthz: storage and mirror state for monitors.
pub fn healthz(ctx: &Ctx) -> Response {
    let storage_ok = ctx.service.storage_healthy();
    let node = ctx.service.node_report();
    // A node that stopped reading the log serves a stale picture: the balancer should skip it.
    let following = node.as_ref().is_none_or(|(_, _, fresh)| *fresh);
    let healthy = storage_ok && following;
    let body = Health {
        status: if healthy { "ok" } else { "unavailable" },
        storage: if storage_ok { "ok" } else { "down" },
        mirror: ctx.service.mirror_report().state.as_str(),
        log_lag_ms: node
            .as_ref()
            .map(|(_, lag, _)| u64::try_from(lag.as_millis()).unwrap_or(u64::MAX)),
        node: node.map(|(name, _, _)| name),
    };
    let mut response = http::json(&body).unwrap_or_else(|e| http::error(&e));
    if !healthy {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response
}
