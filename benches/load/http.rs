//! A minimal HTTP/1.1 client over one kept-alive tokio `TcpStream`.
//!
//! The load generator shares the two cores with the server, so it avoids reqwest's per-request
//! work: requests are written as one buffer, responses read with `Content-Length` or chunked bodies.

use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct Conn {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

pub struct Resp {
    pub status: u16,
    pub set_cookie: Option<String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn { addr, stream: None }
    }

    /// Whether a connection is open (a request on it reuses it).
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// Opens the connection now (for parked-poll counts) instead of at the first request.
    pub async fn connect(&mut self) -> io::Result<()> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(BufReader::with_capacity(4096, stream));
        }
        Ok(())
    }

    /// Writes a request without reading its answer (a parked poll).
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: Option<&str>,
    ) -> io::Result<()> {
        self.connect().await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        if let Some(cookie) = cookie {
            req.push_str("Cookie: ");
            req.push_str(cookie);
            req.push_str("\r\n");
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method != "GET" {
            req.push_str("Content-Type: application/json\r\n");
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        let stream = self.stream.as_mut().expect("connected");
        stream.get_mut().write_all(req.as_bytes()).await
    }

    /// Reads one answer to a request written with `send`.
    pub async fn receive(&mut self) -> io::Result<Resp> {
        let stream = self.stream.as_mut().ok_or_else(|| bad("not connected"))?;
        let result = read_response(stream).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: Option<&str>,
    ) -> io::Result<Resp> {
        if let Err(e) = self.send(method, path, cookie, body).await {
            self.stream = None;
            return Err(e);
        }
        let resp = self.receive().await?;
        Ok(resp)
    }
}

async fn read_response(stream: &mut BufReader<TcpStream>) -> io::Result<Resp> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status line"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    let mut set_cookie = None;
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err(bad("headers cut"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("set-cookie") {
            set_cookie = Some(value.split(';').next().unwrap_or_default().to_owned());
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            stream.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("chunk size"))?;
            let start = body.len();
            body.resize(start + size, 0);
            stream.read_exact(&mut body[start..]).await?;
            line.clear();
            stream.read_line(&mut line).await?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        stream.read_exact(&mut body).await?;
    } else if close {
        stream.read_to_end(&mut body).await?;
    }
    Ok(Resp {
        status,
        set_cookie,
        body,
    })
}
