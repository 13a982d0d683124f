//! The request log: one line per request, `METHOD PATH STATUS DURATIONms client=ADDRESS[ user=NAME]`.
//!
//! `client=` is the address the rate limits count (see `client_addr`), so tools such as fail2ban
//! can ban what natter limits (docs/operations.md, Operations). The path is already made loggable by the caller.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;
use warp::http::{Method, StatusCode};

/// One answered request, as its log line shows it.
pub struct RequestLine<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub status: StatusCode,
    pub elapsed: Duration,
    pub client: Option<IpAddr>,
    pub user: Option<&'a str>,
}

impl fmt::Display for RequestLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}ms client=",
            self.method,
            self.path,
            self.status.as_u16(),
            self.elapsed.as_millis()
        )?;
        // `-` when there is no peer (a request that did not come through a socket).
        match self.client {
            Some(ip) => write!(f, "{ip}")?,
            None => f.write_str("-")?,
        }
        if let Some(user) = self.user {
            write!(f, " user={user}")?;
        }
        Ok(())
    }
}

/// Logs the line at info.
pub fn log(line: &RequestLine<'_>) {
    log::info!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_client_then_the_user() {
        let line = RequestLine {
            method: &Method::POST,
            path: "/api/authorize",
            status: StatusCode::UNAUTHORIZED,
            elapsed: Duration::from_millis(73),
            client: "2001:db8::7".parse().ok(),
            user: None,
        };
        assert_eq!(
            line.to_string(),
            "POST /api/authorize 401 73ms client=2001:db8::7"
        );
        let line = RequestLine {
            client: None,
            user: Some("alice"),
            status: StatusCode::OK,
            ..line
        };
        assert_eq!(
            line.to_string(),
            "POST /api/authorize 200 73ms client=- user=alice"
        );
    }
}
