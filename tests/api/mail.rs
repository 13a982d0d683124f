//! Mail through SendGrid: every test server sends to its own recorder (a fake SendGrid on a real
//! local socket, see `mail_recorder`), which keeps what natter sends; the `log` mailer writes to the log.

use crate::helpers::TestServer;
use crate::log_capture;
use serde_json::{Value, json};

/// SendGrid as an operator configures it; the test server adds its recorder's URL.
const SENDGRID: &str = "public_url = \"https://chat.example.org\"\n[mail]\nprovider = \"sendgrid\"\n\
                        from = \"chat@example.org\"\nsendgrid_key = \"SG.test-key\"";

fn register(user: &str) -> Value {
    json!({"user": user, "email": format!("{}@example.org", user.to_lowercase()), "password": "password123"})
}

#[tokio::test]
async fn activation_mail_goes_to_sendgrid_with_key_body_and_escaped_link() {
    let server = TestServer::with_config(SENDGRID).await;
    let c = server.client();
    c.post("/api/register", register("Zoë"))
        .await
        .assert_ok_empty();
    let got = server.mail.wait_for_requests(1).await;
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
    let server = TestServer::with_config(SENDGRID).await;
    server.mail.fail_next([500, 503]);
    let c = server.client();
    let started = std::time::Instant::now();
    c.post("/api/register", register("retry"))
        .await
        .assert_ok_empty();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the request does not wait on SendGrid"
    );
    let got = server.mail.wait_for_requests(3).await;
    assert_eq!(got.len(), 3);
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "the same mail each time"
    );
    assert_eq!(server.mail.failures_left(), 0);
}

#[tokio::test]
async fn mail_queued_before_a_restart_is_sent_after_it() {
    // Every attempt fails until the restart.
    let mut server = TestServer::with_config(SENDGRID).await;
    server.mail.fail_next([500; 1000]);
    let c = server.client();
    c.post("/api/requestResetPassword", json!({"user":"nobody"}))
        .await
        .assert_ok_empty();
    c.post("/api/register", register("later"))
        .await
        .assert_ok_empty();
    server.mail.wait_for_requests(1).await;
    server.stop().await;
    server.mail.stop_failing();
    let before = server.mail.received().len();
    server.restart(&[&c]).await;
    let got = server.mail.wait_for_requests(before + 1).await;
    assert_eq!(
        got.last().unwrap().body["personalizations"][0]["to"][0]["email"],
        "later@example.org"
    );
    assert_eq!(got.len(), before + 1, "unknown users get no mail: {got:?}");
    server.stop().await;
}

#[tokio::test]
async fn reset_and_address_in_use_mails_have_their_own_text() {
    let server = TestServer::with_config(SENDGRID).await;
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
    let got = server.mail.wait_for_requests(3).await;
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

#[tokio::test]
async fn the_log_mailer_writes_links_and_tokens_to_the_log() {
    log_capture::start();
    let server = TestServer::with_config("[mail]\nprovider = \"log\"").await;
    let c = server.client();
    c.post("/api/register", register("logan"))
        .await
        .assert_ok_empty();
    // Without public_url, dev links name the port actually served.
    let base = format!("activation link: http://localhost:{}", server.addr.port());
    let link = log_capture::wait_for_line(0, |l| {
        l.strip_prefix(&format!("{base}/api/verifyEmail/logan/"))
            .map(|token| format!("/api/verifyEmail/logan/{token}"))
    })
    .await;
    assert_eq!(c.get(&link).await.status, 200);
    c.post(
        "/api/register",
        json!({"user":"other","email":"LOGAN@example.org","password":"password123"}),
    )
    .await
    .assert_ok_empty();
    log_capture::wait_for_line(0, |l| {
        (l == "address-in-use notice for the account logan").then_some(())
    })
    .await;
    let before = log_capture::mark();
    c.post("/api/requestResetPassword", json!({"user":"logan"}))
        .await
        .assert_ok_empty();
    // The line does not name the account; this is the only test that resets through the log.
    let token = log_capture::wait_for_line(before, |l| {
        l.strip_prefix("reset password token: ").map(str::to_owned)
    })
    .await;
    c.post(
        "/api/resetPassword",
        json!({"user":"logan","passwordResetToken":token,"password":"newpassword1"}),
    )
    .await
    .assert_ok_empty();
    assert!(
        server.mail.received().is_empty(),
        "nothing went to SendGrid"
    );
}
