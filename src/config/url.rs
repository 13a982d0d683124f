//! The one URL shape natter accepts, `http(s)://host[:port][/path]`, parsed and normalized by hand.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};

/// The parts of an `http(s)://host[:port][/path]` URL that natter uses, normalized: lowercase scheme and host,
/// no default port, no trailing slash.
pub(super) struct HttpUrl {
    pub(super) https: bool,
    pub(super) host: String,
    port: Option<u16>,
    pub(super) path: String,
}

impl HttpUrl {
    /// Parses by hand: only this one shape is accepted, so a general URL parser is not needed.
    pub(super) fn parse(text: &str) -> Result<Self, &'static str> {
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("contains whitespace");
        }
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("has no http:// or https:// scheme")?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err("has a scheme other than http or https"),
        };
        if rest.contains(['?', '#']) {
            return Err("has a query or fragment");
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err("contains a user name or password");
        }
        let (host, port) = split_host_port(authority)?;
        let default_port = if https { 443 } else { 80 };
        Ok(Self {
            https,
            host,
            port: port.filter(|&p| p != default_port),
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// `scheme://host[:port]`, as a browser sends it in `Origin`.
    pub(super) fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        match self.port {
            Some(port) => format!("{scheme}://{}:{port}", self.host),
            None => format!("{scheme}://{}", self.host),
        }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.path)
    }
}

/// `http://host:port` of a listening address, as a browser on this machine reaches it.
pub(super) fn served_url(addr: SocketAddr) -> String {
    let ip = addr.ip();
    if ip.is_unspecified() || ip.is_loopback() {
        format!("http://localhost:{}", addr.port())
    } else {
        // An IPv6 address is bracketed by SocketAddr's own formatting.
        format!("http://{addr}")
    }
}

/// The lowercase host (an IPv6 address in brackets) and the port, if any, of `host[:port]`.
fn split_host_port(authority: &str) -> Result<(String, Option<u16>), &'static str> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("has an IPv6 address without a closing `]`")?;
        let addr: Ipv6Addr = inside.parse().map_err(|_| "has an invalid IPv6 address")?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("has text after the IPv6 address")?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if !is_valid_host(host) {
            return Err("has a missing or invalid host");
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>()
        {
            Ok(port) if port != 0 => Some(port),
            _ => return Err("has a port outside 1 to 65535"),
        },
        Some(_) => return Err("has an invalid port"),
    };
    Ok((host, port))
}

/// A DNS name or IPv4 address in ASCII (internationalized names must be given in punycode).
fn is_valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use crate::config::from_toml_str;

    #[test]
    fn origins_are_normalized_and_checked() {
        let c = from_toml_str(
            "public_url = \"HTTPS://Chat.Example.com:443/natter/\"\n\
             cors_origins = [\"https://App.Example.com/\", \"http://[::1]:3000\"]",
            false,
        )
        .unwrap();
        assert_eq!(c.public_url, "https://chat.example.com/natter");
        assert_eq!(c.public_origin(), "https://chat.example.com");
        assert_eq!(
            c.cors_origins,
            vec!["https://app.example.com", "http://[::1]:3000"]
        );
        assert!(c.allows_cross_origin("https://app.example.com"));
        assert!(c.allows_cross_origin("https://app.example.com:443"));
        assert!(c.allows_cross_origin("http://[::1]:3000"));
        assert!(!c.allows_cross_origin("http://app.example.com"));
        assert!(!c.allows_cross_origin("https://evil.example.com"));
        assert!(!c.allows_cross_origin("null"));
        assert!(!c.allows_cross_origin("http://localhost:5173"));
        let dev = from_toml_str("public_url = \"http://localhost:8080\"", true).unwrap();
        assert!(dev.allows_cross_origin("http://localhost:5173"));
        assert!(dev.allows_cross_origin("http://127.0.0.1:3000"));
        assert!(!dev.allows_cross_origin("https://example.com"));
        let c = from_toml_str("public_url = \"http://10.0.0.5:8080\"", false).unwrap();
        assert_eq!(c.public_origin(), "http://10.0.0.5:8080");
    }

    #[test]
    fn without_public_url_dev_links_follow_the_served_port() {
        use crate::config::test_support::load_with;
        let c = load_with("", &[("PORT", "28411")], true).unwrap();
        assert_eq!(c.public_url, "http://localhost:28411");
        assert!(!c.public_url.is_set());
        let c = from_toml_str("listen = \"10.0.0.5:9000\"", true).unwrap();
        assert_eq!(c.public_url, "http://10.0.0.5:9000");
        let c = from_toml_str("listen = \"[::]:9000\"", true).unwrap();
        assert_eq!(c.public_url, "http://localhost:9000");
        let c = from_toml_str("listen = \"[2001:db8::5]:9000\"", true).unwrap();
        assert_eq!(c.public_url, "http://[2001:db8::5]:9000");
        // Port 0 is followed once bound; a given public_url, and production, keep theirs.
        let mut c = from_toml_str("listen = \"127.0.0.1:0\"", true).unwrap();
        c.follow_served_address("127.0.0.1:41234".parse().unwrap());
        assert_eq!(c.public_url, "http://localhost:41234");
        let c = load_with(
            "public_url = \"http://localhost:8080\"",
            &[("PORT", "28411")],
            true,
        );
        let c = c.unwrap();
        assert_eq!(c.public_url, "http://localhost:8080");
        assert!(c.public_url.is_set());
        let c = load_with(
            "",
            &[("NATTER_PUBLIC_URL", "https://chat.example.org")],
            true,
        )
        .unwrap();
        assert!(c.public_url.is_set());
        let c = load_with("", &[("PORT", "28411")], false).unwrap();
        assert_eq!(c.public_url, "http://localhost:8080");
    }
}
