//! Mail through SendGrid: a fake SendGrid on a real local socket records what natter sends.

use crate::helpers::TestServer;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use warp::Filter;

/// One request the fake received.
#[derive(Debug, Clone)]
struct Received {
    authorization: String,
    body: Value,
}

/// A fake SendGrid: answers with the queued statuses (then 202) and records every request.
struct FakeSendGrid {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    statuses: Arc<Mutex<Vec<u16>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeSendGrid {
    async fn start(failures: Vec<u16>) -> FakeSendGrid {
        let received = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(failures));
        let (rec, st) = (received.clone(), statuses.clone());
        let route = warp::post()
            .and(warp::path!("v3" / "mail" / "send"))
            .and(warp::header::<String>("authorization"))
            .and(warp::body::json())
            .map(move |authorization: String, body: Value| {
                rec.lock().unwrap().push(Received {
                    authorization,
                    body,
                });
                let mut queue = st.lock().unwrap();
                let status = if queue.is_empty() {
                    202
                } else {
                    queue.remove(0)
                };
                warp::reply::with_status("", warp::http::StatusCode::from_u16(status).unwrap())
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            warp::serve(route)
                .incoming(listener)
                .graceful(async {
                    let _ = stopped.await;
                })
                .run(),
        );
        FakeSendGrid {
            url,
            received,
            statuses,
            _stop: stop,
        }
    }

    fn config(&self) -> String {
        format!(
            "public_url = \"https://chat.example.org\"\n[mail]\nprovider = \"sendgrid\"\nfrom = \"chat@example.org\"\n\
             sendgrid_api_url = \"{}\"\nsendgrid_key = \"SG.test-key\"",
            self.url
        )
    }

    /// Waits (up to 10 s) until `count` requests arrived that succeeded or not.
    async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..200 {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= count {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the fake SendGrid got {:?}", self.received.lock().unwrap());
    }
}

fn register(user: &str) -> Value {
    json!({"user": user, "email": format!("{}@example.org", user.to_lowercase()), "password": "password123"})
}

#[tokio::test]
async fn activation_mail_goes_to_sendgrid_with_key_body_and_escaped_link() {
    let fake = FakeSendGrid::start(vec![]).await;
    let server = TestServer::with_config(&fake.config()).await;
    let c = server.client();
    c.post("/api/register", register("Zoë"))
        .await
        .assert_ok_empty();
    let got = fake.wait_for(1).await;
    assert_eq!(got[0].authorization, "Bearer SG.test-key");
    let body = &got[0].body;
    assert_eq!(
        body["personalizations"][0]["to"][0]["email"],
        "zoë@example.org"
    );
    assert_eq!(body["from"]["email"], "chat@example.org");
    assert_eq!(body["subject"], "Confirm your natter account");
    assert_eq!(body["content"][0]["type"], "text/plain");
    assert_eq!(body["content"][1]["type"], "text/html");
    let text = body["content"][0]["value"].as_str().unwrap();
    let link_start = text
        .find("https://chat.example.org/api/verifyEmail/Zo%C3%AB/")
        .expect("link from public_url, name escaped");
    let link: String = text[link_start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let path = link.trim_start_matches("https://chat.example.org");
    // The link works against the server (public_url only names where it lives).
    let page = c.get(path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        body["content"][1]["value"]
            .as_str()
            .unwrap()
            .contains("href=\"https://chat.example.org/api/verifyEmail/Zo%C3%AB/")
    );
}

#[tokio::test]
async fn a_failing_sendgrid_is_retried_until_it_accepts() {
    let fake = FakeSendGrid::start(vec![500, 503]).await;
    let server = TestServer::with_config(&fake.config()).await;
    let c = server.client();
    let started = std::time::Instant::now();
    c.post("/api/register", register("retry"))
        .await
        .assert_ok_empty();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the request does not wait on SendGrid"
    );
    let got = fake.wait_for(3).await;
    assert_eq!(got.len(), 3);
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "the same mail each time"
    );
    assert!(fake.statuses.lock().unwrap().is_empty());
}

#[tokio::test]
async fn mail_queued_before_a_restart_is_sent_after_it() {
    // Every attempt fails until the restart.
    let fake = FakeSendGrid::start(vec![500; 1000]).await;
    let mut server = TestServer::with_config(&fake.config()).await;
    let c = server.client();
    c.post("/api/requestResetPassword", json!({"user":"nobody"}))
        .await
        .assert_ok_empty();
    c.post("/api/register", register("later"))
        .await
        .assert_ok_empty();
    fake.wait_for(1).await;
    server.stop().await;
    fake.statuses.lock().unwrap().clear();
    let before = fake.received.lock().unwrap().len();
    server.restart(&[&c]).await;
    let got = fake.wait_for(before + 1).await;
    assert_eq!(
        got.last().unwrap().body["personalizations"][0]["to"][0]["email"],
        "later@example.org"
    );
    assert_eq!(got.len(), before + 1, "unknown users get no mail: {got:?}");
    server.stop().await;
}

#[tokio::test]
async fn reset_and_address_in_use_mails_have_their_own_text() {
    let fake = FakeSendGrid::start(vec![]).await;
    let server = TestServer::with_config(&fake.config()).await;
    let c = server.client();
    c.post("/api/register", register("owner"))
        .await
        .assert_ok_empty();
    c.post(
        "/api/register",
        json!({"user":"intruder","email":"OWNER@example.org","password":"password123"}),
    )
    .await
    .assert_ok_empty();
    c.post("/api/requestResetPassword", json!({"user":"owner"}))
        .await
        .assert_ok_empty();
    let got = fake.wait_for(3).await;
    let subjects: Vec<&str> = got
        .iter()
        .map(|r| r.body["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        [
            "Confirm your natter account",
            "Someone tried to register with your address",
            "Your natter password reset token"
        ]
    );
    assert!(
        got[1].body["content"][0]["value"]
            .as_str()
            .unwrap()
            .contains("already belongs to the account owner")
    );
    let text = got[2].body["content"][0]["value"].as_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.len() == 20 && l.chars().all(|c| c.is_ascii_alphanumeric())),
        "{text}"
    );
}
