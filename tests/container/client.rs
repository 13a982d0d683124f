//! A cookie-keeping HTTP client for natter inside the container, over real TCP.

use serde_json::Value;
use std::time::Duration;

pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// An answer: the status and the body, parsed as JSON when it is JSON.
pub struct Answer {
    pub status: u16,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    /// A 200, or a failure that shows what came instead.
    pub fn ok(self) -> Answer {
        assert_eq!(self.status, 200, "answer: {}", self.text);
        self
    }
}

impl Client {
    pub fn new(port: u16) -> Client {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            // Longer than any poll the tests park.
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap();
        Client {
            http,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Answer, reqwest::Error> {
        let response = self.http.get(format!("{}{path}", self.base)).send().await?;
        answer(response).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        answer(response)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }
}

async fn answer(response: reqwest::Response) -> Result<Answer, reqwest::Error> {
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok(Answer { status, text })
}
