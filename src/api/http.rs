//! HTTP plumbing shared by the API handlers: bodies, replies, CORS and the CSRF origin check.

use crate::config::Config;
use crate::error::ApiError;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use warp::Buf;
use warp::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

/// Request headers the API reads that `http` has no constant for, parsed once.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Set on a login's response: the user it signed in, for the request log.
#[derive(Clone)]
pub struct SignedIn(pub String);

/// Reads a request body, refusing more than `limit` bytes without buffering them.
pub async fn read_body<S, B>(headers: &HeaderMap, body: S, limit: usize) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::BodyTooLarge);
    }
    let mut body = std::pin::pin!(body);
    let mut collected = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| ApiError::CannotParse)?;
        if collected.len() + chunk.remaining() > limit {
            return Err(ApiError::BodyTooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            collected.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(collected.freeze())
}

/// Parses a JSON object body; anything else (an array, a string, a number, `null`, the wrong
/// shape) is 400 `cannot parse data`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde reads a struct from a JSON array too (`["Main"]` as `{"chat":"Main"}`): refuse it.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::CannotParse);
    }
    serde_json::from_slice(body).map_err(|_| ApiError::CannotParse)
}

/// A JSON reply with status 200.
pub fn json<T: Serialize>(value: &T) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|_| ApiError::Internal)?;
    Ok(with_type(Response::new(body.into()), "application/json"))
}

/// A 200 reply with an empty body.
pub fn empty() -> Response {
    Response::new(Vec::new().into())
}

/// A small HTML page with the given status.
pub fn html(status: StatusCode, page: String) -> Response {
    let mut response = with_type(Response::new(page.into()), "text/html; charset=utf-8");
    *response.status_mut() = status;
    response
}

/// `{"error": "..."}` with the error's status (and `Allow` / `Retry-After` where they apply).
pub fn error(err: &ApiError) -> Response {
    let body = serde_json::json!({ "error": err.message() }).to_string();
    let mut response = with_type(Response::new(body.into()), "application/json");
    *response.status_mut() = super::status::status(err);
    match err {
        ApiError::MethodNotAllowed(allow) => {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        ApiError::TooManyRequests(secs) => {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
        }
        // The rest of the body is never read, so the connection cannot carry another request.
        ApiError::RequestTimeout => {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    response
}

fn with_type(mut response: Response, content_type: &'static str) -> Response {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Adds a `Set-Cookie` header.
pub fn set_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Security headers every response carries (docs/api.md, Origins).
/// Uses `http`'s header name constants: a name given as a string is parsed on every insert.
pub fn add_security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
}

/// Only our own files: no inline script or style, no framing, no foreign connections.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Decides which origins may call the API with credentials.
pub struct OriginPolicy {
    own: String,
    /// Without `public_url`, `http://` plus the `Host` header is our own origin too.
    own_by_host: bool,
    allowed: Vec<String>,
    dev_localhost: bool,
}

impl OriginPolicy {
    pub fn new(config: &Config) -> Self {
        OriginPolicy {
            own: config.public_origin(),
            own_by_host: !config.public_url.is_set(),
            allowed: config.cors_origins.clone(),
            dev_localhost: config.dev,
        }
    }

    /// Listed in `cors_origins`, or a localhost origin in dev mode.
    pub fn is_allowed(&self, origin: &str) -> bool {
        self.allowed.iter().any(|o| o == origin) || (self.dev_localhost && is_localhost(origin))
    }

    /// This server's own origin: `public_url`'s; without it, also the plain-HTTP origin the
    /// browser used to reach us. Once set, only `public_url` names it: behind a TLS proxy a page
    /// at `http://` plus our `Host` is not ours.
    fn is_own(&self, origin: &str, headers: &HeaderMap) -> bool {
        if origin == self.own {
            return true;
        }
        if !self.own_by_host {
            return false;
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin.strip_prefix("http://");
        matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
    }

    /// CSRF: refuses a state-changing request from a foreign origin.
    pub fn check_csrf(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        if !matches!(*method, Method::POST | Method::PUT | Method::DELETE) {
            return Ok(());
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().map_err(|_| ApiError::CrossOrigin)?;
        if self.is_own(origin, headers) || self.is_allowed(origin) {
            Ok(())
        } else {
            Err(ApiError::CrossOrigin)
        }
    }

    /// Polls acknowledge events, so a GET to them changes state: refuse a page navigation and a
    /// cross-site request that no allowed origin made (browsers say which through Fetch Metadata).
    pub fn check_cross_site_poll(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let says = |name: &HeaderName, value: &str| {
            headers
                .get(name)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
        };
        let allowed_origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .is_some_and(|o| self.is_allowed(o));
        if says(&SEC_FETCH_MODE, "navigate")
            || (says(&SEC_FETCH_SITE, "cross-site") && !allowed_origin)
        {
            return Err(ApiError::CrossOrigin);
        }
        Ok(())
    }

    /// Reflects an allowed origin (the request's `Origin` header) with credentials; other
    /// origins get no CORS headers.
    pub fn add_cors_headers(
        &self,
        origin: Option<&HeaderValue>,
        response: &mut HeaderMap,
        preflight: bool,
    ) {
        response.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin else {
            return;
        };
        if !origin.to_str().is_ok_and(|o| self.is_allowed(o)) {
            return;
        }
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        response.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        if preflight {
            response.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, PUT, OPTIONS"),
            );
            response.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Content-Type"),
            );
            response.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
    }
}

fn is_localhost(origin: &str) -> bool {
    ["http://localhost", "http://127.0.0.1"].iter().any(|base| {
        origin.strip_prefix(base).is_some_and(|rest| {
            rest.is_empty()
                || (rest.starts_with(':') && rest[1..].chars().all(|c| c.is_ascii_digit()))
        })
    })
}

/// Reads one query parameter (raw query string, percent-decoded value); a value that does not
/// decode to UTF-8 is 400 `cannot parse data`, not a missing parameter.
pub fn query_param(query: &str, name: &str) -> Result<Option<String>, ApiError> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| {
            urlencoding::decode(value)
                .map(|v| v.into_owned())
                .map_err(|_| ApiError::CannotParse)
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_origins_are_recognised_exactly() {
        assert!(is_localhost("http://localhost:5173"));
        assert!(is_localhost("http://127.0.0.1"));
        assert!(!is_localhost("http://localhost.evil.com"));
        assert!(!is_localhost("https://localhost:1"));
        assert!(!is_localhost("http://localhost:1/x"));
    }

    #[test]
    fn only_json_objects_are_parsed() {
        #[derive(serde::Deserialize, Debug)]
        struct Chat {
            #[allow(dead_code)]
            chat: String,
        }
        assert!(parse_json::<Chat>(b" {\"chat\":\"Main\"}").is_ok());
        for body in [
            &b"[\"Main\"]"[..],
            b"\"Main\"",
            b"7",
            b"null",
            b"true",
            b"",
            b" [] ",
        ] {
            assert_eq!(
                parse_json::<Chat>(body).unwrap_err(),
                ApiError::CannotParse,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(
            query_param("a=1&queue_id=x%2By", "queue_id"),
            Ok(Some("x+y".into()))
        );
        assert_eq!(query_param("a=1", "b"), Ok(None));
        assert_eq!(
            query_param("last_event_id=%Aa", "last_event_id"),
            Err(ApiError::CannotParse)
        );
    }
}
