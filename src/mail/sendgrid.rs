//! The SendGrid v3 mail API over reqwest (rustls).

use super::Rendered;
use serde::Serialize;
use std::time::Duration;

/// A SendGrid client: `POST {api_url}/v3/mail/send` with a bearer key.
pub struct SendGrid {
    http: reqwest::Client,
    endpoint: String,
    key: String,
    from: String,
}

#[derive(Serialize)]
struct Address<'a> {
    email: &'a str,
}

#[derive(Serialize)]
struct Personalization<'a> {
    to: [Address<'a>; 1],
}

#[derive(Serialize)]
struct Content<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct SendRequest<'a> {
    personalizations: [Personalization<'a>; 1],
    from: Address<'a>,
    subject: &'a str,
    content: [Content<'a>; 2],
}

impl SendGrid {
    pub fn new(api_url: &str, key: &str, from: &str) -> Result<SendGrid, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client for SendGrid: {e}"))?;
        Ok(SendGrid {
            http,
            endpoint: format!("{}/v3/mail/send", api_url.trim_end_matches('/')),
            key: key.to_owned(),
            from: from.to_owned(),
        })
    }

    /// Sends one mail; any failure (network, timeout, non-2xx) is an error to retry.
    pub async fn send(&self, mail: &Rendered) -> Result<(), String> {
        let body = SendRequest {
            personalizations: [Personalization {
                to: [Address { email: &mail.to }],
            }],
            from: Address { email: &self.from },
            subject: &mail.subject,
            content: [
                Content {
                    kind: "text/plain",
                    value: &mail.text,
                },
                Content {
                    kind: "text/html",
                    value: &mail.html,
                },
            ],
        };
        let response = self
            .http
            .post(&self.endpoint)
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            // reqwest's error text names the URL, never the Authorization header.
            .map_err(|e| format!("SendGrid request failed: {e}"))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("SendGrid answered {status}"))
        }
    }
}
