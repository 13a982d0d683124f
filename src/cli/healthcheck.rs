//! `natter healthcheck`: asks the running server's `/healthz` over a plain socket, so a container's
//! HEALTHCHECK needs no curl or wget in the image.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Connecting, sending and reading each give up after this long: a hung server is an unhealthy one.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The answer is a few dozen bytes; more than this is not natter's /healthz.
const MAX_ANSWER: u64 = 64 * 1024;

/// Where to ask: the configured listen address, with a wildcard address replaced by the loopback
/// address of its family (a server on 0.0.0.0:8080 answers on 127.0.0.1:8080).
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GETs `/healthz` at `addr`: the body on a 200, otherwise a one-line reason.
pub fn check(addr: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let io_failed = |e: std::io::Error| format!("GET http://{addr}/healthz failed: {e}");
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io_failed)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io_failed)?;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: natter-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io_failed)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(io_failed)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status_line = head.lines().next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("no HTTP answer from http://{addr}/healthz"))?;
    // Chunked or not, natter's body is one short JSON object: keep its line, drop chunk sizes.
    let body = body
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or("")
        .to_owned();
    if status == 200 {
        Ok(body)
    } else {
        Err(format!("http://{addr}/healthz answered {status} {body}")
            .trim_end()
            .to_owned())
    }
}

/// Runs `natter healthcheck` against the server the config describes.
pub fn run_healthcheck(config: &crate::config::Config) -> Result<(), super::CliError> {
    let body = check(target(config.listen)).map_err(super::CliError::failed)?;
    println!("{body}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check, target};
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::thread;

    /// A one-connection server on a free loopback port that answers `answer` and hands back the
    /// request it read.
    fn serve_once(answer: &'static str) -> (SocketAddr, thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            stream.write_all(answer.as_bytes()).unwrap();
            String::from_utf8(request).unwrap()
        });
        (addr, handle)
    }

    #[test]
    fn wildcard_listen_addresses_are_asked_on_loopback() {
        let cases = [
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("[::]:9000", "[::1]:9000"),
            ("10.1.2.3:8080", "10.1.2.3:8080"),
            ("127.0.0.1:1", "127.0.0.1:1"),
        ];
        for (listen, expected) in cases {
            let listen: SocketAddr = listen.parse().unwrap();
            assert_eq!(target(listen), expected.parse().unwrap(), "{listen}");
        }
    }

    #[test]
    fn a_200_is_healthy_and_gives_the_body() {
        let body = r#"{"status":"ok","storage":"ok","mirror":"off"}"#;
        let (addr, server) = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 45\r\n\r\n{\"status\":\"ok\",\"storage\":\"ok\",\"mirror\":\"off\"}",
        );
        assert_eq!(check(addr).unwrap(), body);
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /healthz HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains(&format!("Host: {addr}\r\n")), "{request}");
    }

    #[test]
    fn a_503_is_unhealthy_with_status_and_body_in_one_line() {
        let (addr, server) = serve_once(
            "HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n2f\r\n{\"status\":\"error\",\"storage\":\"full\",\"mirror\":\"off\"}\r\n0\r\n\r\n",
        );
        let reason = check(addr).unwrap_err();
        server.join().unwrap();
        assert_eq!(
            reason,
            format!(
                "http://{addr}/healthz answered 503 {{\"status\":\"error\",\"storage\":\"full\",\"mirror\":\"off\"}}"
            )
        );
        assert!(!reason.contains('\n'));
    }

    #[test]
    fn a_closed_port_is_unhealthy() {
        // Bound, then dropped: nothing listens there any more.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let reason = check(addr).unwrap_err();
        assert!(
            reason.starts_with(&format!("cannot connect to {addr}: ")),
            "{reason}"
        );
    }

    #[test]
    fn an_answer_that_is_not_http_is_unhealthy() {
        let (addr, server) = serve_once("SSH-2.0-OpenSSH_9.2\r\n\r\n");
        let reason = check(addr).unwrap_err();
        server.join().unwrap();
        assert_eq!(reason, format!("no HTTP answer from http://{addr}/healthz"));
    }
}
