//! A light client for many sessions against a spawned natter: one shared reqwest connection pool,
//! each session's cookie sent by hand (a cookie store per session would cost a pool per session).

use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// The shared pool and the server's base URL.
#[derive(Clone)]
pub struct Wire {
    http: reqwest::Client,
    base: String,
}

/// One signed-in session: its name and its `Cookie` header value.
#[derive(Clone, Debug)]
pub struct Session {
    pub name: String,
    pub cookie: String,
}

/// A fully read answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
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

impl Wire {
    /// `timeout` bounds every request, parked polls included, so it must exceed `poll_timeout`.
    pub fn new(addr: &str, timeout: Duration) -> Wire {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            // Under natter's idle close (`header_read_timeout`, 10 s by default): a pooled connection
            // reused just as the server closes it fails a request that never reached the server.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Wire {
            http,
            base: format!("http://{addr}"),
        }
    }

    /// Sends one request; `Err` is a transport failure (refused, reset, timed out).
    pub async fn call(
        &self,
        session: Option<&Session>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, reqwest::Error> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(session) = session {
            request = request.header("cookie", &session.cookie);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        Ok(Answer { status, body })
    }

    /// A guest login; the error names what went wrong.
    pub async fn guest(&self, name: &str) -> Result<Session, String> {
        let response = self
            .http
            .post(format!("{}/api/login", self.base))
            .json(&json!({ "user": name }))
            .send()
            .await
            .map_err(|e| format!("login {name}: {e}"))?;
        let status = response.status().as_u16();
        let cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        match (status, cookie) {
            (200, Some(cookie)) => Ok(Session {
                name: name.to_owned(),
                cookie,
            }),
            _ => Err(format!("login {name}: {status} {body}")),
        }
    }

    /// A POST that must answer 200; the error names the request and the answer.
    pub async fn post_ok(
        &self,
        session: &Session,
        path: &str,
        body: Value,
    ) -> Result<Answer, String> {
        let answer = self
            .call(Some(session), Method::POST, path, Some(body))
            .await
            .map_err(|e| format!("{} {path}: {e}", session.name))?;
        if answer.status != 200 {
            return Err(format!(
                "{} {path}: {} {}",
                session.name,
                answer.status,
                answer.text()
            ));
        }
        Ok(answer)
    }

    /// Joins `chat`.
    pub async fn join(&self, session: &Session, chat: &str) -> Result<(), String> {
        self.post_ok(session, "/api/loggedonly/joinChat", json!({ "chat": chat }))
            .await
            .map(drop)
    }

    /// Opens an explicit event queue: `(queue_id, last_event_id)`.
    pub async fn open_queue(&self, session: &Session) -> Result<(String, u64), String> {
        let opened = self
            .post_ok(session, "/api/loggedonly/queues", json!({}))
            .await?
            .json();
        Ok((
            opened["queue_id"].as_str().unwrap().to_owned(),
            opened["last_event_id"].as_u64().unwrap(),
        ))
    }

    /// One `/events` poll that acknowledges up to `last`.
    pub async fn events(
        &self,
        session: &Session,
        queue_id: &str,
        last: u64,
    ) -> Result<Answer, reqwest::Error> {
        let path = format!("/api/loggedonly/events?queue_id={queue_id}&last_event_id={last}");
        self.call(Some(session), Method::GET, &path, None).await
    }

    /// One legacy `/poll` that acknowledges up to `last`.
    pub async fn poll(&self, session: &Session, last: u64) -> Result<Answer, reqwest::Error> {
        let path = format!("/api/loggedonly/poll?last_event_id={last}");
        self.call(Some(session), Method::GET, &path, None).await
    }
}

/// A transport error with its causes, which reqwest's own message leaves out.
pub fn explain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
