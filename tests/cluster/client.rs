//! A cookie-keeping HTTP client. It talks to nginx, or with `on` to one node directly, sending
//! the same cookies either way (cookies do not depend on the port).

use serde_json::{Value, json};
use std::time::Duration;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// An answer: status (0 when the connection failed), JSON body (Null when empty or not JSON),
/// and the node nginx sent the request to (None when asked directly).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub upstream: Option<String>,
}

impl Reply {
    /// The body, after checking the status is 200.
    pub fn ok(self, what: &str) -> Value {
        assert_eq!(self.status, 200, "{what}: {}", self.body);
        self.body
    }
}

impl Client {
    /// A new client (empty cookie jar) sending to `base` (`http://host:port`).
    pub fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            base: base.to_owned(),
        }
    }

    /// The same client (the same cookies) sending to `base` instead, one node say.
    pub fn on(&self, base: &str) -> Client {
        Client {
            http: self.http.clone(),
            base: base.to_owned(),
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        let request = self.http.post(format!("{}{path}", self.base)).json(&body);
        Self::send(request).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        Self::send(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn send(request: reqwest::RequestBuilder) -> Reply {
        let response = match request.send().await {
            Ok(response) => response,
            Err(_) => {
                return Reply {
                    status: 0,
                    body: Value::Null,
                    upstream: None,
                };
            }
        };
        let status = response.status().as_u16();
        let upstream = response
            .headers()
            .get(crate::nginx::UPSTREAM_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            upstream,
        }
    }

    /// Guest login as `name`.
    pub async fn guest(&self, name: &str) {
        self.post("/api/login", json!({ "user": name }))
            .await
            .ok("guest login");
    }

    pub async fn join(&self, chat: &str) -> Value {
        self.post("/api/loggedonly/joinChat", json!({ "chat": chat }))
            .await
            .ok("joinChat")
    }

    /// Opens an explicit event queue; returns its id and last event id.
    pub async fn open_queue(&self) -> (String, u64) {
        let body = self
            .post("/api/loggedonly/queues", json!({}))
            .await
            .ok("open queue");
        let id = match &body["queue_id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        (id, body["last_event_id"].as_u64().unwrap_or(0))
    }
}
