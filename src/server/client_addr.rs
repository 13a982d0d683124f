//! The client's address, as the rate limits and the request log count it: the TCP peer, or, behind
//! proxies listed in `trusted_proxies`, the hop their `X-Forwarded-For` names.
//!
//! Proxies append to the header (nginx to its one line, HAProxy's `option forwardfor` as a line of
//! its own), so only the right end is written by someone we trust. The lines are joined and walked
//! from the right past trusted proxies; the first hop that is not one is the client. A hop that
//! does not parse ends the walk: what lies left of it cannot be placed, so the nearest address
//! known (a trusted proxy, the peer at first) stands for the client.

use crate::config::Config;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The client's address for a request from `peer` with these `X-Forwarded-For` header lines.
pub fn client_ip<'a>(
    config: &Config,
    peer: Option<IpAddr>,
    forwarded_lines: impl IntoIterator<Item = &'a [u8]>,
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let mut nearest = peer;
    if !config.is_trusted_proxy(nearest) {
        return Some(nearest);
    }
    // Joined as one list, as RFC 9110 reads repeated header lines.
    let joined = forwarded_lines
        .into_iter()
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(",");
    if joined.trim().is_empty() {
        return Some(peer);
    }
    for hop in joined.rsplit(',') {
        let Some(ip) = parse_hop(hop) else {
            return Some(nearest);
        };
        if !config.is_trusted_proxy(ip) {
            return Some(ip);
        }
        nearest = ip;
    }
    // Every hop is a trusted proxy: the farthest one is as near the client as we get.
    Some(nearest)
}

/// One hop: `ip`, `ip:port`, `[v6]` or `[v6]:port`, with blanks around it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let ip = hop
        .parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .ok_or(())
                .and_then(|h| h.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| ()))
        })
        .ok()?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        crate::config::from_toml_str(extra, true).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The client of a request from `peer` carrying these header lines.
    fn client(config: &Config, peer: &str, lines: &[&str]) -> IpAddr {
        client_ip(config, Some(ip(peer)), lines.iter().map(|l| l.as_bytes())).unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let trusted = config("trusted_proxies = [\"10.0.0.0/8\"]");
        let xff = ["198.51.100.7, 10.9.9.9"];
        assert_eq!(client(&trusted, "10.1.2.3", &xff), ip("198.51.100.7"));
        assert_eq!(client(&trusted, "203.0.113.9", &xff), ip("203.0.113.9"));
        assert_eq!(client(&trusted, "10.1.2.3", &[]), ip("10.1.2.3"));
        assert_eq!(client(&config(""), "10.1.2.3", &xff), ip("10.1.2.3"));
        assert_eq!(client_ip(&trusted, None, [&b"1.2.3.4"[..]]), None);
    }

    #[test]
    fn a_second_header_line_is_the_proxys_and_wins() {
        // HAProxy's `option forwardfor` adds a line of its own after the client's.
        let trusted = config("trusted_proxies = [\"127.0.0.1\"]");
        let lines = ["203.0.113.66", "198.51.100.7"];
        assert_eq!(client(&trusted, "127.0.0.1", &lines), ip("198.51.100.7"));
        // More hops a client wrote before the proxy's never count.
        let lines = ["1.1.1.1, 2.2.2.2", "3.3.3.3, 198.51.100.7"];
        assert_eq!(client(&trusted, "127.0.0.1", &lines), ip("198.51.100.7"));
    }

    #[test]
    fn hops_with_ports_parse() {
        let trusted = config("trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]");
        for (hop, expected) in [
            ("198.51.100.7:51234", "198.51.100.7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            (" 2001:db8::7 ", "2001:db8::7"),
            ("::ffff:198.51.100.7", "198.51.100.7"),
        ] {
            let lines = [format!("203.0.113.66, {hop}, 10.0.0.1:8080")];
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            assert_eq!(client(&trusted, "127.0.0.1", &lines), ip(expected), "{hop}");
        }
    }

    #[test]
    fn a_hop_that_does_not_parse_ends_the_walk() {
        let trusted = config("trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]");
        // The client's own value left of the garbage never counts.
        for garbage in ["unknown", "", "_hidden", "2001:db8::7:99999", "1.2.3.4.5"] {
            let lines = [format!("198.51.100.7, {garbage}")];
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            assert_eq!(
                client(&trusted, "127.0.0.1", &lines),
                ip("127.0.0.1"),
                "{garbage:?}"
            );
            let lines = [format!("198.51.100.7, {garbage}, 10.0.0.9")];
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            assert_eq!(
                client(&trusted, "127.0.0.1", &lines),
                ip("10.0.0.9"),
                "{garbage:?}"
            );
        }
        let bytes: [&[u8]; 1] = [b"198.51.100.7, \xff"];
        assert_eq!(
            client_ip(&trusted, Some(ip("127.0.0.1")), bytes),
            Some(ip("127.0.0.1"))
        );
        // Only trusted hops: the farthest of them.
        assert_eq!(
            client(&trusted, "127.0.0.1", &["10.0.0.5, 10.0.0.6"]),
            ip("10.0.0.5")
        );
    }
}
