//! Slow and idle connections, over raw sockets: header and body read timeouts, connection caps
//! in all and per address, parked polls that must not be cut, and a flood of stalled
//! connections against the real binary.

use crate::helpers::TestServer;
use crate::log_capture;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection (EOF or reset): everything it sent, and when.
/// `None` if it is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<(String, Instant)> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((
                    String::from_utf8_lossy(&received).into_owned(),
                    Instant::now(),
                ));
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// One response on a kept-alive connection: status and body. `None` if the server closed the
/// connection (or reset it) without answering.
async fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while received.len() < head_end + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    let body = String::from_utf8_lossy(&received[head_end..head_end + length]).into_owned();
    Some((status, body))
}

/// `GET /healthz` on an open connection, kept alive.
async fn healthz(stream: &mut TcpStream) -> Option<(u16, String)> {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: natter\r\n\r\n")
        .await
        .ok()?;
    read_response(stream).await
}

/// A fresh connection that has been served once (so the server has surely counted it).
async fn served_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), healthz(&mut stream)).await;
    assert_eq!(
        answer.ok().flatten().map(|(status, _)| status),
        Some(200),
        "a connection below the caps is served"
    );
    stream
}

/// Retries for up to 3 s: the server notices a closed connection asynchronously.
async fn served_soon(addr: SocketAddr) -> TcpStream {
    let started = Instant::now();
    loop {
        let mut stream = connect(addr).await;
        let answer = tokio::time::timeout(Duration::from_secs(2), healthz(&mut stream)).await;
        if let Ok(Some((200, _))) = answer {
            return stream;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a new connection was never served after one closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn half_sent_headers_are_cut_after_the_header_read_timeout() {
    let server = TestServer::with_config("header_read_timeout = \"1s\"").await;
    let mut stream = connect(server.addr).await;
    half_sent_head_is_cut_after_about_a_second(&mut stream).await;
}

/// Sends half a request head and expects the connection cut after ~1 s with no answer but 408.
async fn half_sent_head_is_cut_after_about_a_second(stream: &mut TcpStream) {
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: natter\r\nX-Stalled: ye")
        .await
        .unwrap();
    let (received, closed) = read_until_closed(stream, Duration::from_secs(3))
        .await
        .expect("the stalled connection is closed within 3 s");
    let after = closed - started;
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "no answer but a timeout: {received:?}"
    );
}

#[tokio::test]
async fn oversized_headers_are_refused_before_the_timeout() {
    let server = TestServer::with_config("header_read_timeout = \"10s\"").await;
    let mut stream = connect(server.addr).await;
    let started = Instant::now();
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: natter\r\n".to_vec();
    for i in 0..100 {
        request.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    // The server may close before it has read everything: a failed write is fine.
    let _ = stream.write_all(&request).await;
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("100 KiB of headers are refused at once");
    assert!(closed - started < Duration::from_secs(5));
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 431"),
        "refused: {received:?}"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_cut_too() {
    let server = TestServer::with_config("header_read_timeout = \"1s\"").await;
    let mut stream = connect(server.addr).await;
    let (received, _) = read_until_closed(&mut stream, Duration::from_secs(3))
        .await
        .expect("a silent connection is closed within 3 s");
    assert!(!received.contains(" 200 "), "{received:?}");
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_do_not_extend_the_timeout() {
    let server = TestServer::with_config("header_read_timeout = \"1s\"").await;
    let stream = connect(server.addr).await;
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    // Slowloris: a byte every 200 ms, headers that never end.
    let trickle = tokio::spawn(async move {
        let request = b"GET /healthz HTTP/1.1\r\nHost: natter\r\nX-Slow: ";
        for byte in request.iter().chain(std::iter::repeat(&b'a')) {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    trickle.abort();
    assert!(closed.is_ok(), "the trickling connection outlived 3 s");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    let received = String::from_utf8_lossy(&received);
    assert!(!received.contains(" 200 "), "{received:?}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_outlives_the_header_read_timeout() {
    // Clients send a keepalive every 10 s on a kept-alive connection: idleness between requests
    // is not a slow request head.
    let server =
        TestServer::with_config("header_read_timeout = \"1s\"\nidle_timeout = \"30s\"").await;
    let mut stream = served_connection(server.addr).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), healthz(&mut stream)).await;
    assert_eq!(
        answer.ok().flatten().map(|(status, _)| status),
        Some(200),
        "the connection idle for 2.5 s still serves the next request"
    );
}

#[tokio::test]
async fn idle_kept_alive_connections_are_closed_cleanly_after_the_idle_timeout() {
    let server =
        TestServer::with_config("header_read_timeout = \"10s\"\nidle_timeout = \"1s\"").await;
    let mut stream = served_connection(server.addr).await;
    let answered = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
        .await
        .expect("the idle connection is closed within 3 s");
    let after = answered.elapsed();
    // A FIN with nothing sent, as hyper's graceful close: clients see a closed idle connection,
    // never a reset in the middle of a request.
    assert_eq!(read.expect("closed, not reset"), 0);
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn a_next_request_head_is_still_due_within_the_header_read_timeout() {
    let server =
        TestServer::with_config("header_read_timeout = \"1s\"\nidle_timeout = \"60s\"").await;
    // A connection served once: its second head is timed from its first byte, not idle_timeout.
    let mut stream = served_connection(server.addr).await;
    half_sent_head_is_cut_after_about_a_second(&mut stream).await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_the_server_keeps_serving() {
    let server = TestServer::with_config("body_read_timeout = \"1s\"").await;
    let mut stream = connect(server.addr).await;
    let started = Instant::now();
    stream
        .write_all(
            b"POST /api/login HTTP/1.1\r\nHost: natter\r\nContent-Type: application/json\r\n\
              Content-Length: 40\r\n\r\n{\"user\": \"sl",
        )
        .await
        .unwrap();
    // Others are served while the body is stalled.
    let c = server.client();
    assert_eq!(c.get("/healthz").await.status, 200);
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(3))
        .await
        .expect("answered and closed within 3 s");
    let after = closed - started;
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    let (head, body) = received.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, r#"{"error":"request timed out"}"#);
    c.guest("after").await;
}

#[tokio::test]
async fn the_connection_over_the_per_address_cap_is_closed_at_once() {
    log_capture::start();
    let server = TestServer::with_config("max_connections_per_ip = 5").await;
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(served_connection(server.addr).await);
    }
    let mut sixth = connect(server.addr).await;
    let started = Instant::now();
    let (received, _) = read_until_closed(&mut sixth, Duration::from_secs(1))
        .await
        .expect("the 6th connection is closed at once");
    assert!(received.is_empty(), "{received:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // The five are still served.
    assert_eq!(healthz(&mut open[0]).await.map(|r| r.0), Some(200));
    drop(open.pop());
    let _again = served_soon(server.addr).await;
    let warned = |l: &String| l.contains("max_connections_per_ip (5) reached by 127.0.0.1");
    assert!(
        log_capture::lines().iter().any(warned),
        "the refusal is logged"
    );
}

#[tokio::test]
async fn trusted_proxies_are_not_capped_per_address() {
    let server =
        TestServer::with_config("max_connections_per_ip = 5\ntrusted_proxies = [\"127.0.0.1/32\"]")
            .await;
    let mut open = Vec::new();
    for _ in 0..8 {
        open.push(served_connection(server.addr).await);
    }
    for stream in &mut open {
        assert_eq!(healthz(stream).await.map(|r| r.0), Some(200));
    }
}

#[tokio::test]
async fn over_max_connections_a_new_connection_waits_until_one_closes() {
    log_capture::start();
    let server = TestServer::with_config("max_connections = 5\nmax_connections_per_ip = 5").await;
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(served_connection(server.addr).await);
    }
    let mut sixth = connect(server.addr).await;
    sixth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: natter\r\n\r\n")
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(700), read_response(&mut sixth)).await;
    assert!(waited.is_err(), "served over the cap: {waited:?}");
    drop(open.pop());
    let answer = tokio::time::timeout(Duration::from_secs(3), read_response(&mut sixth)).await;
    assert_eq!(
        answer.ok().flatten().map(|r| r.0),
        Some(200),
        "served once a place came free"
    );
    let warned = |l: &String| l.contains("max_connections (5) reached");
    assert!(
        log_capture::lines().iter().any(warned),
        "the wait is logged"
    );
}

#[tokio::test]
async fn a_parked_poll_is_not_cut_by_the_read_timeouts() {
    let server = TestServer::with_config(
        "header_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"\npoll_timeout = \"3s\"",
    )
    .await;
    let c = server.client();
    c.guest("patient").await;
    // Whatever the login queued comes at once; the empty reply has to wait the whole poll.
    loop {
        let started = Instant::now();
        let r = c.get("/api/loggedonly/poll").await;
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body.is_empty() {
            let parked = started.elapsed();
            assert!(parked >= Duration::from_millis(2800), "parked {parked:?}");
            break;
        }
    }
}

#[tokio::test]
async fn the_peer_address_still_reaches_the_rate_limits() {
    // Per-IP limits on the account routes need the TCP peer; with no trusted proxy an
    // X-Forwarded-For header must not give a fresh budget.
    let server =
        TestServer::with_config("[rate_limit]\naccount_burst = 1\naccount_interval = \"1h\"").await;
    let c = server.client();
    assert_eq!(c.login_via_proxy("198.51.100.1", "first").await.status, 200);
    c.login_via_proxy("198.51.100.2", "second")
        .await
        .assert_error(429, "too many requests");
}

/// A `natter serve` child process, killed when dropped.
struct Child {
    process: std::process::Child,
    addr: SocketAddr,
}

impl Child {
    /// With `TEST_STORAGE=postgres`, on a database of its own.
    async fn start(config: &str) -> (Child, tempfile::TempDir) {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let data = dir.path().join("data");
        let text = format!(
            "listen = \"127.0.0.1:0\"\n{}password_iterations = 100000\n{config}",
            crate::helpers::store_lines(&data).await
        );
        std::fs::write(&path, text).unwrap();
        let mut process = std::process::Command::new(env!("CARGO_BIN_EXE_natter"))
            .arg("--config")
            .arg(&path)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(process.stderr.take().unwrap()).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                let rest = l.split("listening on ").nth(1)?;
                rest.split(' ').next()?.parse().ok()
            })
            .expect("the server announced its address");
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        (Child { process, addr }, dir)
    }

    /// Open file descriptors (sockets included).
    fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.process.id()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    /// Resident memory in KiB.
    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_connections_are_closed_and_cost_little_memory() {
    const CONNECTIONS: usize = 1000;
    const TIMEOUT: Duration = Duration::from_secs(4);
    let (child, _dir) = Child::start(
        "header_read_timeout = \"4s\"\nmax_connections_per_ip = 2000\n[rate_limit]\nenabled = false\n",
    )
    .await;
    let addr = child.addr;
    let before = child.rss_kib();
    let header = format!(
        "GET /healthz HTTP/1.1\r\nHost: natter\r\nX-Padding: {}",
        "a".repeat(8 * 1024)
    );
    let (sent, mut all_sent) = tokio::sync::mpsc::channel::<()>(CONNECTIONS);
    let stalled: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let header = header.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                // Before the connect: the server's clock for it cannot start earlier.
                let opened = Instant::now();
                let mut stream = connect(addr).await;
                stream.write_all(header.as_bytes()).await.unwrap();
                sent.send(()).await.unwrap();
                let closed = read_until_closed(&mut stream, Duration::from_secs(10)).await;
                (opened, closed)
            })
        })
        .collect();
    for _ in 0..CONNECTIONS {
        all_sent.recv().await.unwrap();
    }
    // Sent is not yet accepted: wait until the server holds them all, so the probe below does
    // not queue behind them in the kernel's backlog.
    let waited = Instant::now();
    while child.open_files() < CONNECTIONS {
        assert!(waited.elapsed() < TIMEOUT, "the server never held them all");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While they are all held, the server answers at once and has not grown much.
    let asked = Instant::now();
    let mut probe = connect(addr).await;
    let answer = tokio::time::timeout(Duration::from_secs(2), healthz(&mut probe)).await;
    assert_eq!(answer.ok().flatten().map(|r| r.0), Some(200));
    let answered = asked.elapsed();
    assert!(answered < Duration::from_millis(500), "{answered:?}");
    let held = child.rss_kib();
    eprintln!(
        "RSS {before} KiB idle, {held} KiB holding {CONNECTIONS} stalled connections; \
         /healthz answered in {answered:?}"
    );
    // 1000 × 8 KiB of headers is 8 MiB; allow hyper's buffers and the tasks some room.
    let grown = held.saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    // Each stalled connection is closed once the timeout has passed, with no answer but a 408.
    for task in stalled {
        let (opened, closed) = task.await.unwrap();
        let (received, closed) = closed.expect("closed after the header read timeout");
        let lived = closed - opened;
        assert!(
            lived >= TIMEOUT - Duration::from_millis(100) && lived < TIMEOUT * 2,
            "closed after {lived:?}"
        );
        assert!(
            received.is_empty() || received.starts_with("HTTP/1.1 408"),
            "{received:?}"
        );
    }
    let mut probe = connect(addr).await;
    assert_eq!(healthz(&mut probe).await.map(|r| r.0), Some(200));
}

/// A connection from `source` (any 127.0.0.0/8 address works on loopback) to `addr`, with a
/// small receive buffer so that a client that does not read fills up quickly.
async fn connect_from(source: &str, addr: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes).unwrap();
    }
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.expect("connect")
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_after_the_write_timeout() {
    let server =
        TestServer::with_config("write_timeout = \"1s\"\nmax_connections_per_ip = 1").await;
    let mut stuck = connect_from("127.0.0.1", server.addr, Some(4096)).await;
    // Pipelined requests for a stylesheet, answered until the socket buffers are full (tens of
    // MiB asked for, a few MiB fit); the client never reads a byte.
    let request = b"GET /style.css HTTP/1.1\r\nHost: natter\r\n\r\n".repeat(2000);
    let writer = tokio::spawn(async move {
        let _ = stuck.write_all(&request).await;
        stuck
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Meanwhile another client is served at once.
    let mut other = connect_from("127.0.0.2", server.addr, None).await;
    let answer = tokio::time::timeout(Duration::from_secs(2), healthz(&mut other)).await;
    assert_eq!(answer.ok().flatten().map(|r| r.0), Some(200));
    // The stuck connection holds 127.0.0.1's only slot until the write timeout frees it.
    let started = Instant::now();
    let freed = served_soon_within(server.addr, Duration::from_secs(6)).await;
    assert!(freed, "the stuck connection was never closed");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the slot was free before the write timeout: {:?}",
        started.elapsed()
    );
    writer.abort();
}

/// Whether a fresh connection from 127.0.0.1 gets a 200 `/healthz` within `limit`.
async fn served_soon_within(addr: SocketAddr, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        let mut stream = connect(addr).await;
        let answer = tokio::time::timeout(Duration::from_secs(1), healthz(&mut stream)).await;
        if let Ok(Some((200, _))) = answer {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
