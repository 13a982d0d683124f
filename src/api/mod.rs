//! The HTTP API: the route table (`routes`) read by one filter; conventions in docs/api.md.

mod admin;
mod assets;
mod http;
mod logged;
mod public;
mod request_log;
mod routes;
mod status;

use crate::auth::cookie::CookieSigner;
use crate::chat::{Service, SessionInfo};
use crate::config::Config;
use crate::error::ApiError;
use crate::server::PeerAddr;
use crate::server::client_addr::client_ip;
use crate::server::ratelimit::RateLimits;
use crate::telemetry;
use bytes::Bytes;
use http::OriginPolicy;
use routes::{Access, Endpoint, Limit, Route};
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
    /// The client's address (see `client_addr::client_ip`).
    pub client_ip: Option<IpAddr>,
}

/// Authenticates once, as the route's access level asks: `None` for public routes.
fn authenticate(
    ctx: &Ctx,
    req: &ApiRequest,
    access: Access,
) -> Result<Option<SessionInfo>, ApiError> {
    if access == Access::Public {
        return Ok(None);
    }
    let session = req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| ctx.signer.from_header(v))
        .find_map(|value| ctx.signer.verify(value))
        .ok_or(ApiError::NotLoggedIn)
        .and_then(|hash| {
            let online = matches!(access, Access::Online | Access::Admin);
            ctx.service.authenticate(&hash, online)
        });
    match session {
        Err(ApiError::NotLoggedIn) if access == Access::Optional => Ok(None),
        session => session.map(Some),
    }
}

/// The route's admin check and rate limit, for the caller `session`.
fn admit(
    ctx: &Ctx,
    route: &Route,
    req: &ApiRequest,
    session: Option<&SessionInfo>,
) -> Result<(), ApiError> {
    if route.access == Access::Admin {
        ctx.service
            .require_admin(session.ok_or(ApiError::NotLoggedIn)?)?;
    }
    match (route.limit, session) {
        (Limit::PerAddress, _) => match req.client_ip {
            Some(ip) => ctx.limits.account_route(ip),
            None => Ok(()),
        },
        (Limit::Requests, Some(s)) => ctx.limits.request(s.handle),
        (Limit::Messages, Some(s)) => ctx.limits.message(s.handle),
        _ => Ok(()),
    }
}

/// Calls the endpoint's handler; `session` is there for every route that is not public.
async fn dispatch(
    ctx: &Ctx,
    endpoint: Endpoint,
    req: &ApiRequest,
    session: Option<&SessionInfo>,
) -> Result<Response, ApiError> {
    use Endpoint::*;
    let session = || session.ok_or(ApiError::NotLoggedIn);
    match endpoint {
        Register => public::register(ctx, req).await,
        VerifyEmail => public::verify_email(ctx, req).await,
        Authorize => public::authorize(ctx, req).await,
        RequestResetPassword => public::request_reset_password(ctx, req).await,
        ResetPassword => public::reset_password(ctx, req).await,
        GuestLogin => public::guest_login(ctx, req).await,
        SessionProbe => match session().ok() {
            Some(session) => logged::session_login(ctx, session).await,
            None => public::signed_out(),
        },
        SessionLogin => logged::session_login(ctx, session()?).await,
        Logout => logged::logout(ctx, session()?).await,
        Keepalive => Ok(http::empty()),
        Poll => logged::poll(ctx, req, session()?).await,
        OpenQueue => logged::open_queue(ctx, req, session()?).await,
        Events => logged::events(ctx, req, session()?).await,
        JoinChat => logged::join_chat(ctx, req, session()?).await,
        LeaveChat => logged::leave_chat(ctx, req, session()?).await,
        GetChats => logged::get_chats(ctx, session()?),
        GetUsers => logged::get_users(ctx, req, session()?),
        GetLastMessages => logged::get_last_messages(ctx, req, session()?),
        PostMessage => logged::post_message(ctx, req, session()?).await,
        GetMessages => logged::get_messages(ctx, req, session()?),
        DeleteMessage => logged::delete_message(ctx, req, session()?).await,
        CreateChat => admin::create_chat(ctx, req, session()?).await,
        RemoveChat => admin::remove_chat(ctx, req, session()?).await,
        Kick => admin::kick(ctx, req, session()?).await,
        Export => admin::export(ctx).await,
    }
}

/// Runs a request that reached its route: the answer, and the user to log (the session's,
/// or the one a login just signed in).
async fn run(
    ctx: &Ctx,
    route: &Route,
    req: &ApiRequest,
) -> (Result<Response, ApiError>, Option<String>) {
    if !ctx.service.clustered() {
        return attempt(ctx, route, req).await;
    }
    // Several nodes: a read first reads what other nodes answered before it came, so any node
    // answers as one would; a change refused for something unknown (or just ended) may come
    // right after another node's answer, and is tried once more after reading.
    if route.reads_state() {
        ctx.service.catch_up().await;
    }
    let first = attempt(ctx, route, req).await;
    if first.0.as_ref().is_err_and(ApiError::may_be_news) {
        ctx.service.catch_up().await;
        return attempt(ctx, route, req).await;
    }
    first
}

/// One try at a request: authenticate, admit, dispatch.
async fn attempt(
    ctx: &Ctx,
    route: &Route,
    req: &ApiRequest,
) -> (Result<Response, ApiError>, Option<String>) {
    let session = match authenticate(ctx, req, route.access) {
        Ok(session) => session,
        Err(err) => return (Err(err), None),
    };
    let result = match admit(ctx, route, req, session.as_ref()) {
        Ok(()) => dispatch(ctx, route.endpoint, req, session.as_ref()).await,
        Err(err) => Err(err),
    };
    let signed_in = result
        .as_ref()
        .ok()
        .and_then(|r| r.extensions().get::<http::SignedIn>())
        .map(|u| u.0.clone());
    (result, session.map(|s| s.user).or(signed_in))
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
    let client = client_of(&ctx, peer, &headers);
    let path = tail.as_str();
    // Looked up once: the request, the metrics label and the log line all use this row.
    let found = routes::find(path);
    let matched = found.as_ref().map(|(route, _)| *route);
    let preflight = method == Method::OPTIONS;
    // Kept for the CORS headers: the request's headers move into `ApiRequest`.
    let origin = headers.get(header::ORIGIN).cloned();
    let accepted = async {
        let (route, params) = found.ok_or(ApiError::NotFound)?;
        if preflight {
            return Ok(None);
        }
        if method != route.method {
            return Err(ApiError::MethodNotAllowed(route.allow()));
        }
        ctx.origins.check_csrf(&method, &headers)?;
        if route.is_poll() {
            ctx.origins.check_cross_site_poll(&headers)?;
        }
        // Only the body read is timed: a parked poll waits after this, and is not cut.
        let body = tokio::time::timeout(
            ctx.config.body_read_timeout,
            http::read_body(&headers, body, ctx.config.max_body_bytes),
        )
        .await
        .map_err(|_| ApiError::RequestTimeout)??;
        let req = ApiRequest {
            client_ip: client,
            method: method.clone(),
            query,
            headers,
            body,
            params,
        };
        Ok(Some((route, req)))
    }
    .await;
    let (result, user) = match accepted {
        Ok(Some((route, req))) => run(&ctx, route, &req).await,
        Ok(None) => (Ok(http::empty()), None),
        Err(err) => (Err(err), None),
    };
    let mut response = result.unwrap_or_else(|err| http::error(&err));
    ctx.origins
        .add_cors_headers(origin.as_ref(), response.headers_mut(), preflight);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let elapsed = started.elapsed();
    if telemetry::enabled() {
        telemetry::request(
            routes::metric_label(matched),
            response.status().as_u16(),
            elapsed,
        );
    }
    request_log::log(&request_log::RequestLine {
        method: &method,
        path: &format!("/api/{}", routes::loggable_path(matched, path)),
        status: response.status(),
        elapsed,
        client,
        user: user.as_deref(),
    });
    response
}

/// The address the rate limits count and the log shows, from the peer and `X-Forwarded-For`.
fn client_of(ctx: &Ctx, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let lines = headers.get_all(&http::X_FORWARDED_FOR);
    client_ip(
        &ctx.config,
        peer.map(|p| p.ip()),
        lines.iter().map(HeaderValue::as_bytes),
    )
}

/// The peer address our accept loop attached to the request, if any.
fn peer() -> impl Filter<Extract = (Option<SocketAddr>,), Error = std::convert::Infallible> + Clone
{
    warp::ext::optional::<PeerAddr>().map(|peer: Option<PeerAddr>| peer.map(|p| p.0))
}

/// All routes: the API, `/healthz`, the web client, and a JSON 404 for anything else.
pub fn routes(ctx: Arc<Ctx>) -> BoxedFilter<(Response,)> {
    let api_ctx = ctx.clone();
    let api = warp::path("api")
        .and(warp::method())
        .and(warp::path::tail())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(peer())
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
    let log_ctx = ctx.clone();
    let answer = health
        .or(assets::filter(ctx))
        .unify()
        .or(not_found)
        .unify()
        .map(warp::Reply::into_response);
    // Read before the answer: the start time, and what the log line needs of the request.
    let others = warp::any()
        .map(Instant::now)
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(peer())
        .and(answer)
        .map(
            move |started: Instant,
                  method: Method,
                  path: warp::path::FullPath,
                  headers: HeaderMap,
                  peer,
                  response: Response| {
                let elapsed = started.elapsed();
                let status = response.status();
                if telemetry::enabled() {
                    let route = match (path.as_str(), status.as_u16()) {
                        ("/healthz", _) => "healthz",
                        (_, 404) => "not_found",
                        _ => "assets",
                    };
                    telemetry::request(route, status.as_u16(), elapsed);
                }
                request_log::log(&request_log::RequestLine {
                    method: &method,
                    path: path.as_str(),
                    status,
                    elapsed,
                    client: client_of(&log_ctx, peer, &headers),
                    user: None,
                });
                response
            },
        );
    api.or(others)
        .unify()
        .map(|mut response: Response| {
            http::add_security_headers(response.headers_mut());
            response
        })
        .boxed()
}
