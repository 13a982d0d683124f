//! A fake SendGrid on a real local socket: every test server sends its mail to its own recorder,
//! and tests read the links and tokens of the mail sent to that server.

use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use warp::Filter;

/// How long a test waits for mail: it leaves through a background sender.
const PATIENCE: Duration = Duration::from_secs(10);

/// One request the recorder received, and the status it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub authorization: String,
    pub body: Value,
    pub status: u16,
}

impl Received {
    pub fn to(&self) -> &str {
        self.body["personalizations"][0]["to"][0]["email"]
            .as_str()
            .unwrap_or_default()
    }

    pub fn subject(&self) -> &str {
        self.body["subject"].as_str().unwrap_or_default()
    }

    /// The plain-text body.
    pub fn text(&self) -> &str {
        self.body["content"][0]["value"]
            .as_str()
            .unwrap_or_default()
    }

    /// Whether the recorder accepted it (a refused request is sent again later).
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The account a mail greets ("Hello {user},"); the address-in-use notice greets nobody.
    pub fn user(&self) -> Option<&str> {
        self.text()
            .lines()
            .next()?
            .strip_prefix("Hello ")?
            .strip_suffix(',')
    }

    /// The line of the text block that follows `intro` (the link or the token, see `src/mail`).
    fn value_after(&self, intro: &str) -> Option<&str> {
        let mut lines = self.text().lines().skip_while(|l| !l.starts_with(intro));
        lines.next()?;
        lines.find(|l| !l.is_empty())
    }

    /// The link of an activation mail.
    pub fn activation_link(&self) -> Option<&str> {
        if self.subject() != "Confirm your natter account" {
            return None;
        }
        self.value_after("Open this link within 24 hours")
    }

    /// The token of a password reset mail.
    pub fn reset_token(&self) -> Option<&str> {
        if self.subject() != "Your natter password reset token" {
            return None;
        }
        self.value_after("Type this token into the reset form")
    }
}

struct Inner {
    url: String,
    received: Mutex<Vec<Received>>,
    /// Statuses to answer before going back to 202.
    failures: Mutex<Vec<u16>>,
    arrived: Notify,
    /// Per user, how many reset tokens `next_reset_token` has handed out.
    tokens_taken: Mutex<std::collections::HashMap<String, usize>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A handle to one recorder; clones share it, and it stops when the last one is dropped.
#[derive(Clone)]
pub struct MailRecorder(Arc<Inner>);

impl MailRecorder {
    pub async fn start() -> MailRecorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let inner = Arc::new(Inner {
            url,
            received: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            tokens_taken: Mutex::new(Default::default()),
            _stop: stop,
        });
        // The route holds a weak handle, so dropping the last `MailRecorder` stops the server.
        let weak = Arc::downgrade(&inner);
        let route = warp::post()
            .and(warp::path!("v3" / "mail" / "send"))
            .and(warp::header::<String>("authorization"))
            .and(warp::body::json())
            .map(move |authorization: String, body: Value| {
                let status = match weak.upgrade() {
                    Some(inner) => inner.record(authorization, body),
                    None => 503,
                };
                warp::reply::with_status("", warp::http::StatusCode::from_u16(status).unwrap())
            });
        tokio::spawn(
            warp::serve(route)
                .incoming(listener)
                .graceful(async {
                    let _ = stopped.await;
                })
                .run(),
        );
        MailRecorder(inner)
    }

    /// Base URL for `mail.sendgrid_api_url`.
    pub fn url(&self) -> &str {
        &self.0.url
    }

    /// The next requests are answered with these statuses, then 202 again.
    pub fn fail_next(&self, statuses: impl IntoIterator<Item = u16>) {
        self.0.failures.lock().unwrap().extend(statuses);
    }

    /// How many queued failure statuses are still unused.
    pub fn failures_left(&self) -> usize {
        self.0.failures.lock().unwrap().len()
    }

    /// Answers 202 from now on.
    pub fn stop_failing(&self) {
        self.0.failures.lock().unwrap().clear();
    }

    /// Every request so far, refused ones included.
    pub fn received(&self) -> Vec<Received> {
        self.0.received.lock().unwrap().clone()
    }

    /// Waits until `pick` accepts the requests received so far.
    pub async fn wait_until<T>(&self, pick: impl Fn(&[Received]) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            // Armed before the check, so a request arriving during it still wakes us.
            let arrived = self.0.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(found) = pick(&self.0.received.lock().unwrap()) {
                return found;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "the expected mail never came; the recorder got {:#?}",
                    self.received()
                );
            }
        }
    }

    /// Waits until at least `count` requests arrived, accepted or not.
    pub async fn wait_for_requests(&self, count: usize) -> Vec<Received> {
        self.wait_until(|got| (got.len() >= count).then(|| got.to_vec()))
            .await
    }

    /// Waits for an accepted mail that `pick` accepts; the latest one wins.
    pub async fn wait_for_mail<T>(&self, pick: impl Fn(&Received) -> Option<T>) -> T {
        self.wait_until(|got| got.iter().rev().filter(|r| r.accepted()).find_map(&pick))
            .await
    }

    /// The link of the latest activation mail for `user`.
    pub async fn activation_link(&self, user: &str) -> String {
        self.wait_for_mail(|mail| {
            (mail.user() == Some(user))
                .then(|| mail.activation_link())
                .flatten()
                .map(str::to_owned)
        })
        .await
    }

    /// The token of the first reset mail for `user` that no earlier call returned.
    pub async fn next_reset_token(&self, user: &str) -> String {
        self.wait_until(|got| {
            let mut counts = self.0.tokens_taken.lock().unwrap();
            let taken = counts.entry(user.to_owned()).or_default();
            let token = got
                .iter()
                .filter(|r| r.accepted() && r.user() == Some(user))
                .filter_map(Received::reset_token)
                .nth(*taken)?;
            *taken += 1;
            Some(token.to_owned())
        })
        .await
    }
}

impl Inner {
    /// Records one request and picks its answer.
    fn record(&self, authorization: String, body: Value) -> u16 {
        let status = {
            let mut failures = self.failures.lock().unwrap();
            if failures.is_empty() {
                202
            } else {
                failures.remove(0)
            }
        };
        self.received.lock().unwrap().push(Received {
            authorization,
            body,
            status,
        });
        self.arrived.notify_waiters();
        status
    }
}
