//! The HTTP API: every route in one table, dispatched by one filter (SPEC 2 and 6).

mod admin;
mod assets;
mod http;
mod logged;
mod public;
mod status;

use crate::auth::cookie::CookieSigner;
use crate::chat::{Service, SessionInfo};
use crate::config::Config;
use crate::error::ApiError;
use crate::ratelimit::{RateLimits, client_ip};
use crate::server::PeerAddr;
use bytes::Bytes;
use http::OriginPolicy;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, Method, header};
use warp::reply::Response;
use warp::{Filter, path::Tail};

/// Everything a handler needs.
pub struct Ctx {
    pub service: Arc<Service>,
    pub config: Arc<Config>,
    pub signer: CookieSigner,
    pub limits: Arc<RateLimits>,
    origins: OriginPolicy,
}

impl Ctx {
    pub fn new(service: Arc<Service>, signer: CookieSigner, limits: Arc<RateLimits>) -> Arc<Ctx> {
        let config = service.config.clone();
        Arc::new(Ctx {
            origins: OriginPolicy::new(&config),
            service,
            config,
            signer,
            limits,
        })
    }
}

/// One API request, body already read.
pub struct ApiRequest {
    pub method: Method,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Path parameters (`verifyEmail/{user}/{token}`), percent-decoded.
    pub params: Vec<String>,
    /// The client's address (see `ratelimit::client_ip`).
    pub client_ip: Option<IpAddr>,
}

/// Every API endpoint; `route` maps paths to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Register,
    VerifyEmail,
    Authorize,
    RequestResetPassword,
    ResetPassword,
    GuestLogin,
    SessionLogin,
    Logout,
    Keepalive,
    Poll,
    OpenQueue,
    Events,
    JoinChat,
    LeaveChat,
    GetChats,
    GetUsers,
    GetLastMessages,
    PostMessage,
    CreateChat,
    RemoveChat,
}

impl Endpoint {
    fn method(self) -> Method {
        use Endpoint::*;
        match self {
            VerifyEmail | Poll | Events | GetChats => Method::GET,
            Keepalive => Method::PUT,
            _ => Method::POST,
        }
    }

    /// Polls acknowledge what they read: GETs that change state.
    fn is_poll(self) -> bool {
        matches!(self, Endpoint::Poll | Endpoint::Events)
    }

    /// The `Allow` header for a wrong method.
    fn allow(self) -> &'static str {
        match self.method() {
            Method::GET => "GET, OPTIONS",
            Method::PUT => "PUT, OPTIONS",
            _ => "POST, OPTIONS",
        }
    }
}

/// The route table: path below `/api/` → endpoint and path parameters.
fn route(path: &str) -> Option<(Endpoint, Vec<String>)> {
    use Endpoint::*;
    let segments: Vec<&str> = path.split('/').collect();
    let endpoint = match segments.as_slice() {
        ["register"] => Register,
        ["authorize"] => Authorize,
        ["requestResetPassword"] => RequestResetPassword,
        ["resetPassword"] => ResetPassword,
        ["login"] => GuestLogin,
        ["loggedonly", "login"] => SessionLogin,
        ["loggedonly", "logout"] => Logout,
        ["loggedonly", "keepalive"] => Keepalive,
        ["loggedonly", "poll"] => Poll,
        ["loggedonly", "queues"] => OpenQueue,
        ["loggedonly", "events"] => Events,
        ["loggedonly", "joinChat"] => JoinChat,
        ["loggedonly", "leaveChat"] => LeaveChat,
        ["loggedonly", "getChats"] => GetChats,
        ["loggedonly", "getUsers"] => GetUsers,
        ["loggedonly", "getLastMessages"] => GetLastMessages,
        ["loggedonly", "postMessage"] => PostMessage,
        ["adminonly", "createChat"] => CreateChat,
        ["adminonly", "removeChat"] => RemoveChat,
        ["verifyEmail", user, token] if !user.is_empty() && !token.is_empty() => {
            let decode = |s: &str| urlencoding::decode(s).map(|d| d.into_owned()).ok();
            return Some((VerifyEmail, vec![decode(user)?, decode(token)?]));
        }
        _ => return None,
    };
    Some((endpoint, Vec::new()))
}

/// Calls the endpoint's handler.
async fn dispatch(
    ctx: &Ctx,
    endpoint: Endpoint,
    req: &ApiRequest,
    user: &mut Option<String>,
) -> Result<Response, ApiError> {
    use Endpoint::*;
    if matches!(
        endpoint,
        Register | Authorize | RequestResetPassword | ResetPassword | GuestLogin
    ) && let Some(ip) = req.client_ip
    {
        ctx.limits.account_route(ip)?;
    }
    match endpoint {
        Register => public::register(ctx, req).await,
        VerifyEmail => public::verify_email(ctx, req).await,
        Authorize => public::authorize(ctx, req, user).await,
        RequestResetPassword => public::request_reset_password(ctx, req).await,
        ResetPassword => public::reset_password(ctx, req).await,
        GuestLogin => public::guest_login(ctx, req, user).await,
        SessionLogin => {
            let session = authenticate(ctx, req, false, user)?;
            ctx.limits.request(session.handle)?;
            logged::session_login(ctx, &session).await
        }
        _ => {
            let session = authenticate(ctx, req, true, user)?;
            match endpoint {
                // Parked polls cost nothing, so they are not limited.
                Poll | Events => {}
                PostMessage => ctx.limits.message(session.handle)?,
                _ => ctx.limits.request(session.handle)?,
            }
            match endpoint {
                Logout => logged::logout(ctx, &session).await,
                Keepalive => Ok(http::empty()),
                Poll => logged::poll(ctx, req, &session).await,
                OpenQueue => logged::open_queue(ctx, &session),
                Events => logged::events(ctx, req, &session).await,
                JoinChat => logged::join_chat(ctx, req, &session).await,
                LeaveChat => logged::leave_chat(ctx, req, &session).await,
                GetChats => logged::get_chats(ctx, &session),
                GetUsers => logged::get_users(ctx, req, &session),
                GetLastMessages => logged::get_last_messages(ctx, req, &session),
                PostMessage => logged::post_message(ctx, req, &session).await,
                CreateChat => admin::create_chat(ctx, req, &session).await,
                RemoveChat => admin::remove_chat(ctx, req, &session).await,
                _ => Err(ApiError::NotFound),
            }
        }
    }
}

/// The session behind the request's cookie (401 `user not logged in` without a valid one).
fn authenticate(
    ctx: &Ctx,
    req: &ApiRequest,
    need_online: bool,
    user: &mut Option<String>,
) -> Result<SessionInfo, ApiError> {
    let hash = req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| ctx.signer.from_header(v))
        .find_map(|value| ctx.signer.verify(value))
        .ok_or(ApiError::NotLoggedIn)?;
    let session = ctx.service.authenticate(&hash, need_online)?;
    *user = Some(session.user.clone());
    Ok(session)
}

/// Handles one `/api/...` request from start to finish, and logs it.
async fn handle<S, B>(
    ctx: Arc<Ctx>,
    method: Method,
    tail: Tail,
    query: String,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
    body: S,
) -> Response
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: warp::Buf,
{
    let started = Instant::now();
    let path = tail.as_str().to_owned();
    let mut user = None;
    let preflight = method == Method::OPTIONS;
    let result = async {
        let (endpoint, params) = route(&path).ok_or(ApiError::NotFound)?;
        if preflight {
            return Ok(http::empty());
        }
        if method != endpoint.method() {
            return Err(ApiError::MethodNotAllowed(endpoint.allow()));
        }
        ctx.origins.check_csrf(&method, &headers)?;
        if endpoint.is_poll() {
            ctx.origins.check_cross_site_poll(&headers)?;
        }
        // Only the body read is timed: a parked poll waits after this, and is not cut.
        let body = tokio::time::timeout(
            ctx.config.body_read_timeout,
            http::read_body(&headers, body, ctx.config.max_body_bytes),
        )
        .await
        .map_err(|_| ApiError::RequestTimeout)??;
        let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        let req = ApiRequest {
            client_ip: client_ip(&ctx.config, peer.map(|p| p.ip()), forwarded),
            method: method.clone(),
            query,
            headers: headers.clone(),
            body,
            params,
        };
        dispatch(&ctx, endpoint, &req, &mut user).await
    }
    .await;
    let mut response = result.unwrap_or_else(|err| http::error(&err));
    ctx.origins
        .add_cors_headers(&headers, response.headers_mut(), preflight);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    log::info!(
        "{method} /api/{} {} {}ms{}",
        loggable_path(&path),
        response.status().as_u16(),
        started.elapsed().as_millis(),
        user.map(|u| format!(" user={u}")).unwrap_or_default()
    );
    response
}

/// The request path as it may be logged: a link's secret parts become placeholders, and an
/// unknown path keeps only its first segment (it may be a mistyped link).
fn loggable_path(path: &str) -> String {
    match route(path) {
        Some((Endpoint::VerifyEmail, _)) => "verifyEmail/{user}/{token}".to_owned(),
        Some(_) => path.to_owned(),
        None => match path.split_once('/') {
            Some((first, _)) => format!("{first}/…"),
            None => path.to_owned(),
        },
    }
}

/// All routes: the API, `/healthz`, the web client, and a JSON 404 for anything else.
pub fn routes(ctx: Arc<Ctx>) -> BoxedFilter<(Response,)> {
    let api_ctx = ctx.clone();
    let api = warp::path("api")
        .and(warp::method())
        .and(warp::path::tail())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<PeerAddr>().map(|peer: Option<PeerAddr>| peer.map(|p| p.0)))
        .and(warp::body::stream())
        .then(move |method, tail, query, headers, peer, body| {
            handle(api_ctx.clone(), method, tail, query, headers, peer, body)
        });
    let health_ctx = ctx.clone();
    let health = warp::path("healthz")
        .and(warp::path::end())
        .and(warp::get())
        .map(move || public::healthz(&health_ctx));
    let not_found = warp::any().map(|| http::error(&ApiError::NotFound));
    let others = health
        .or(assets::filter(ctx))
        .unify()
        .or(not_found)
        .unify()
        .with(warp::log::custom(|info| {
            log::info!(
                "{} {} {} {}ms",
                info.method(),
                info.path(),
                info.status().as_u16(),
                info.elapsed().as_millis()
            )
        }))
        .map(warp::Reply::into_response);
    api.or(others)
        .unify()
        .map(|mut response: Response| {
            http::add_security_headers(response.headers_mut());
            response
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve_with_their_methods() {
        assert_eq!(route("login").map(|r| r.0), Some(Endpoint::GuestLogin));
        assert_eq!(
            route("loggedonly/poll").map(|r| r.0.method()),
            Some(Method::GET)
        );
        assert_eq!(
            route("loggedonly/keepalive").map(|r| r.0.method()),
            Some(Method::PUT)
        );
        assert_eq!(route("nope"), None);
        assert_eq!(route("login/"), None);
        let (endpoint, params) = route("verifyEmail/J%C3%BCrgen/tok").unwrap();
        assert_eq!(endpoint, Endpoint::VerifyEmail);
        assert_eq!(params, vec!["Jürgen".to_owned(), "tok".to_owned()]);
    }

    #[test]
    fn logged_paths_hide_link_secrets() {
        assert_eq!(loggable_path("loggedonly/poll"), "loggedonly/poll");
        assert_eq!(
            loggable_path("verifyEmail/carol/s3cret"),
            "verifyEmail/{user}/{token}"
        );
        assert_eq!(loggable_path("verifyEmail/carol/s3cret/"), "verifyEmail/…");
        assert_eq!(loggable_path("nope"), "nope");
    }
}
