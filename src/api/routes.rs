//! The route table: one row per endpoint with its path below `/api/`, method, who may call it,
//! and which rate limit it counts against. Adding an endpoint is one row here and one arm in
//! `dispatch`.

use std::borrow::Cow;
use warp::http::Method;

/// Every API endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Register,
    VerifyEmail,
    Authorize,
    RequestResetPassword,
    ResetPassword,
    GuestLogin,
    SessionProbe,
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
    GetMessages,
    DeleteMessage,
    CreateChat,
    RemoveChat,
    Kick,
    Export,
}

/// Who may call an endpoint (docs/api.md, Routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// Anyone; a valid session cookie (online or not) is read when there is one.
    Optional,
    /// A valid session, online or not.
    Session,
    /// An online session.
    Online,
    /// An online session of a verified admin.
    Admin,
}

/// The rate limit a call counts against (docs/api.md, Rate limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Not limited: verifyEmail, and polls, which cost nothing while parked.
    None,
    /// The open account routes, per client address.
    PerAddress,
    /// Authenticated requests, per session.
    Requests,
    /// postMessage, per session.
    Messages,
}

/// One row of the table.
#[derive(Debug)]
pub struct Route {
    /// Below `/api/`; a `{name}` segment matches any non-empty segment.
    pub path: &'static str,
    pub method: Method,
    pub access: Access,
    pub limit: Limit,
    pub endpoint: Endpoint,
    /// Whether `path` has `{name}` segments; the others match by plain string comparison.
    has_params: bool,
}

/// Whether a row's path has a `{name}` segment (computed once, at compile time).
const fn has_params(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{' {
            return true;
        }
        i += 1;
    }
    false
}

const fn row(
    method: Method,
    path: &'static str,
    access: Access,
    limit: Limit,
    endpoint: Endpoint,
) -> Route {
    Route {
        path,
        method,
        access,
        limit,
        endpoint,
        has_params: has_params(path),
    }
}

use Access::*;
use Endpoint::*;
use Limit::{Messages, PerAddress, Requests};

/// Every endpoint, once, one row per line in columns: rustfmt would give every row whose
/// arguments pass its 60-character call width one line per argument.
#[rustfmt::skip]
pub static ROUTES: [Route; 25] = [
    row(Method::POST, "register",                   Public,   PerAddress,  Register),
    row(Method::GET,  "verifyEmail/{user}/{token}", Public,   Limit::None, VerifyEmail),
    row(Method::POST, "authorize",                  Public,   PerAddress,  Authorize),
    row(Method::POST, "requestResetPassword",       Public,   PerAddress,  RequestResetPassword),
    row(Method::POST, "resetPassword",              Public,   PerAddress,  ResetPassword),
    row(Method::POST, "login",                      Public,   PerAddress,  GuestLogin),
    row(Method::POST, "session",                    Optional, Requests,    SessionProbe),
    row(Method::POST, "loggedonly/login",           Session,  Requests,    SessionLogin),
    row(Method::POST, "loggedonly/logout",          Online,   Requests,    Logout),
    row(Method::PUT,  "loggedonly/keepalive",       Online,   Requests,    Keepalive),
    row(Method::GET,  "loggedonly/poll",            Online,   Limit::None, Poll),
    row(Method::POST, "loggedonly/queues",          Online,   Requests,    OpenQueue),
    row(Method::GET,  "loggedonly/events",          Online,   Limit::None, Events),
    row(Method::POST, "loggedonly/joinChat",        Online,   Requests,    JoinChat),
    row(Method::POST, "loggedonly/leaveChat",       Online,   Requests,    LeaveChat),
    row(Method::GET,  "loggedonly/getChats",        Online,   Requests,    GetChats),
    row(Method::POST, "loggedonly/getUsers",        Online,   Requests,    GetUsers),
    row(Method::POST, "loggedonly/getLastMessages", Online,   Requests,    GetLastMessages),
    row(Method::POST, "loggedonly/postMessage",     Online,   Messages,    PostMessage),
    row(Method::POST, "loggedonly/getMessages",     Online,   Requests,    GetMessages),
    row(Method::POST, "loggedonly/deleteMessage",   Online,   Requests,    DeleteMessage),
    row(Method::POST, "adminonly/createChat",       Admin,    Requests,    CreateChat),
    row(Method::POST, "adminonly/removeChat",       Admin,    Requests,    RemoveChat),
    row(Method::POST, "adminonly/kick",             Admin,    Requests,    Kick),
    row(Method::GET,  "adminonly/export",           Admin,    Requests,    Export),
];

impl Route {
    /// The `Allow` header for a wrong method.
    pub fn allow(&self) -> &'static str {
        match self.method {
            Method::GET => "GET, OPTIONS",
            Method::PUT => "PUT, OPTIONS",
            _ => "POST, OPTIONS",
        }
    }

    /// Routes that answer with what the server holds, not with a change: with several nodes they
    /// first read what the others answered before (`Service::catch_up`).
    pub fn reads_state(&self) -> bool {
        matches!(
            self.endpoint,
            SessionProbe
                | SessionLogin
                | GetChats
                | GetUsers
                | GetLastMessages
                | GetMessages
                | Export
        )
    }

    /// Polls acknowledge what they read: GETs that change state.
    pub fn is_poll(&self) -> bool {
        matches!(self.endpoint, Poll | Events)
    }

    /// The path's `{name}` segments, percent-decoded, if `path` matches this row.
    fn matches(&self, path: &str) -> Option<Vec<String>> {
        if !self.has_params {
            return (self.path == path).then(Vec::new);
        }
        let (mut pattern, mut given) = (self.path.split('/'), path.split('/'));
        let mut params = Vec::new();
        loop {
            match (pattern.next(), given.next()) {
                (None, None) => return Some(params),
                (Some(p), Some(g)) if p.starts_with('{') => {
                    if g.is_empty() {
                        return None;
                    }
                    params.push(urlencoding::decode(g).ok()?.into_owned());
                }
                (Some(p), Some(g)) if p == g => {}
                _ => return None,
            }
        }
    }
}

/// The row for a path below `/api/`, with its path parameters.
pub fn find(path: &str) -> Option<(&'static Route, Vec<String>)> {
    ROUTES
        .iter()
        .find_map(|route| route.matches(path).map(|params| (route, params)))
}

/// The metrics label of a path below `/api/` that matched `route`: its row's pattern, never the
/// path itself (which can carry a link's secrets), or `unknown`.
pub fn metric_label(route: Option<&Route>) -> &'static str {
    route.map_or("unknown", |route| route.path)
}

/// The request path as it may be logged, given the row it matched: a row's pattern stands for
/// its parameters (a link's secret parts), and an unknown path keeps only its first segment (it
/// may be a mistyped link).
pub fn loggable_path<'a>(route: Option<&Route>, path: &'a str) -> Cow<'a, str> {
    match route {
        Some(route) => Cow::Borrowed(route.path),
        None => match path.split_once('/') {
            Some((first, _)) => Cow::Owned(format!("{first}/…")),
            None => Cow::Borrowed(path),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve_with_their_methods() {
        let endpoint = |path: &str| find(path).map(|r| r.0.endpoint);
        let method = |path: &str| find(path).map(|r| r.0.method.clone());
        assert_eq!(endpoint("login"), Some(Endpoint::GuestLogin));
        assert_eq!(method("loggedonly/poll"), Some(Method::GET));
        assert_eq!(method("loggedonly/keepalive"), Some(Method::PUT));
        assert_eq!(endpoint("nope"), None);
        assert_eq!(endpoint("login/"), None);
        let (route, params) = find("verifyEmail/J%C3%BCrgen/tok").unwrap();
        assert_eq!(route.endpoint, Endpoint::VerifyEmail);
        assert_eq!(params, vec!["Jürgen".to_owned(), "tok".to_owned()]);
    }

    #[test]
    fn logged_paths_hide_link_secrets() {
        let route = |path: &str| find(path).map(|(route, _)| route);
        let loggable_path = |path: &str| super::loggable_path(route(path), path).into_owned();
        let metric_label = |path: &str| super::metric_label(route(path));
        assert_eq!(loggable_path("loggedonly/poll"), "loggedonly/poll");
        assert_eq!(
            loggable_path("verifyEmail/carol/s3cret"),
            "verifyEmail/{user}/{token}"
        );
        assert_eq!(loggable_path("verifyEmail/carol/s3cret/"), "verifyEmail/…");
        assert_eq!(loggable_path("nope"), "nope");
        assert_eq!(
            metric_label("verifyEmail/carol/s3cret"),
            "verifyEmail/{user}/{token}"
        );
        assert_eq!(metric_label("verifyEmail/carol/s3cret/x"), "unknown");
        assert_eq!(metric_label("adminonly/export"), "adminonly/export");
    }

    #[test]
    fn every_endpoint_has_exactly_one_row() {
        for route in &ROUTES {
            let rows = ROUTES.iter().filter(|r| r.endpoint == route.endpoint);
            assert_eq!(rows.count(), 1, "{:?}", route.endpoint);
        }
        assert!(find("verifyEmail//tok").is_none());
    }
}
