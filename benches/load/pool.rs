//! A few kept-alive connections shared by many sessions for everything but their polls, as a
//! browser pools its requests to one host: 10,000 sessions with a connection each for polls and
//! another for the rest would pass the open-file limit of about 20,000 per process.

use crate::http::{Conn, Resp};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

pub struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<Conn>>,
    /// One permit per connection: a request waits for a free one, as a browser's do.
    gate: Semaphore,
}

impl Pool {
    pub fn new(addr: SocketAddr, connections: usize) -> Arc<Pool> {
        Arc::new(Pool {
            addr,
            idle: Mutex::new(Vec::with_capacity(connections)),
            gate: Semaphore::new(connections),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One request on a free connection; a reused connection the server closed meanwhile is
    /// retried once on a new one, as browsers retry a request that met a stale kept-alive socket.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: Option<&str>,
    ) -> io::Result<Resp> {
        let _permit = self
            .gate
            .acquire()
            .await
            .expect("the pool's gate stays open");
        let mut conn = self
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| Conn::new(self.addr));
        let reused = conn.is_connected();
        let mut result = conn.request(method, path, cookie, body).await;
        if result.is_err() && reused {
            result = conn.request(method, path, cookie, body).await;
        }
        // A failed request left the connection closed: the next one opens a new one.
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        result
    }

    /// A request that must answer 200, as a `Result` with the route in its error.
    pub async fn ok(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: Option<&str>,
    ) -> Result<Resp, String> {
        let r = self
            .request(method, path, cookie, body)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if r.status != 200 {
            return Err(format!("{method} {path}: {} {}", r.status, r.text()));
        }
        Ok(r)
    }
}
