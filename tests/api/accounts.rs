//! Registration, email verification, sign-in and password reset (docs/api.md, Routes; docs/design.md, Mail).

use crate::helpers::TestServer;
use serde_json::json;

fn body(user: &str, email: &str, password: &str) -> serde_json::Value {
    json!({ "user": user, "email": email, "password": password })
}

#[tokio::test]
async fn register_validates_in_spec_order() {
    let server = TestServer::start().await;
    let c = server.client();
    c.post(
        "/api/register",
        json!({"user":"amy","email":"amy@example.org"}),
    )
    .await
    .assert_error(422, "password is empty");
    c.post("/api/register", body("", "amy@example.org", "password123"))
        .await
        .assert_error(400, "username is empty");
    c.post(
        "/api/register",
        body("a b", "amy@example.org", "password123"),
    )
    .await
    .assert_error(400, "invalid username");
    c.post("/api/register", body("amy", "amy@example", "password123"))
        .await
        .assert_error(400, "invalid email");
    c.post("/api/register", body("amy", "amy@example.org", "short"))
        .await
        .assert_error(400, "password must be 8 to 128 characters");
    c.post_raw("/api/register", "{not json")
        .await
        .assert_error(400, "cannot parse data");
    c.post(
        "/api/register",
        body("amy", "amy@example.org", "password123"),
    )
    .await
    .assert_ok_empty();
    c.post(
        "/api/register",
        body("AMY", "other@example.org", "password123"),
    )
    .await
    .assert_error(409, "user already registered");
    c.post(
        "/api/register",
        body("Bot", "bot@example.org", "password123"),
    )
    .await
    .assert_error(409, "user already registered");
    let guest = server.client();
    guest.guest("ben").await;
    c.post(
        "/api/register",
        body("Ben", "ben@example.org", "password123"),
    )
    .await
    .assert_error(409, "user is already logged in");
}

#[tokio::test]
async fn register_ignores_status_flags_in_the_body() {
    let server = TestServer::start().await;
    let c = server.client();
    c.post(
        "/api/register",
        json!({"user":"eve","email":"eve@example.org","password":"password123","verified":true,"admin":true,"bot":true}),
    )
    .await
    .assert_ok_empty();
    c.post(
        "/api/authorize",
        json!({"user":"eve","password":"password123"}),
    )
    .await
    .assert_error(403, "email is not verified");
    let link = server.activation_link("eve").await;
    let path = link
        .split_once("/api/")
        .map(|(_, p)| format!("/api/{p}"))
        .unwrap();
    c.get(&path).await;
    let r = c
        .post(
            "/api/authorize",
            json!({"user":"eve","password":"password123"}),
        )
        .await;
    assert_eq!(
        r.body,
        r#"{"user":"eve","verified":true,"admin":false,"bot":false}"#
    );
}

#[tokio::test]
async fn verification_link_is_single_use_and_escapes_the_name() {
    let server = TestServer::start().await;
    let c = server.client();
    c.post(
        "/api/register",
        body("Jürgen", "j@example.org", "password123"),
    )
    .await
    .assert_ok_empty();
    let link = server.activation_link("Jürgen").await;
    assert!(
        link.starts_with(&format!(
            "http://localhost:{}/api/verifyEmail/J%C3%BCrgen/",
            server.addr.port()
        )),
        "{link}"
    );
    let path = link
        .split_once("/api/")
        .map(|(_, p)| format!("/api/{p}"))
        .unwrap();
    let ok = c.get(&path).await;
    assert_eq!(ok.status, 200);
    assert!(ok.header("content-type").unwrap().starts_with("text/html"));
    assert!(ok.body.contains("verified"), "{}", ok.body);
    assert!(ok.body.contains("href=\"/\""), "links back to sign in");
    let again = c.get(&path).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("invalid or has expired"));
    let wrong = c.get("/api/verifyEmail/J%C3%BCrgen/nottherighttoken").await;
    assert_eq!(wrong.status, 400);
    assert_eq!(c.get("/api/verifyEmail/nobody/x").await.status, 400);
}

#[tokio::test]
async fn authorize_answers_alike_for_unknown_users_and_wrong_passwords() {
    let server = TestServer::start().await;
    let c = server.client();
    c.registered("gus").await;
    c.post("/api/authorize", json!({"password":"x"}))
        .await
        .assert_error(400, "username is empty");
    c.post("/api/authorize", json!({"user":"gus"}))
        .await
        .assert_error(422, "password is empty");
    let unknown = c
        .post(
            "/api/authorize",
            json!({"user":"nobody","password":"password123"}),
        )
        .await;
    let wrong = c
        .post(
            "/api/authorize",
            json!({"user":"gus","password":"wrongpass1"}),
        )
        .await;
    unknown.assert_error(401, "wrong username or password");
    wrong.assert_error(401, "wrong username or password");
    let r = c
        .post(
            "/api/authorize",
            json!({"user":"GUS","password":"password123"}),
        )
        .await;
    assert_eq!(
        r.body,
        r#"{"user":"gus","verified":true,"admin":false,"bot":false}"#
    );
}

#[tokio::test]
async fn unverified_account_is_refused_only_after_a_correct_password() {
    let server = TestServer::start().await;
    let c = server.client();
    c.post(
        "/api/register",
        body("hal", "hal@example.org", "password123"),
    )
    .await
    .assert_ok_empty();
    c.post(
        "/api/authorize",
        json!({"user":"hal","password":"wrongpass1"}),
    )
    .await
    .assert_error(401, "wrong username or password");
    c.post(
        "/api/authorize",
        json!({"user":"hal","password":"password123"}),
    )
    .await
    .assert_error(403, "email is not verified");
}

#[tokio::test]
async fn password_reset_is_single_use_ends_sessions_and_logs_nobody_in() {
    let server = TestServer::start().await;
    let device = server.client();
    device.registered("iris").await;
    device.join("Main").await;
    let watcher = server.client();
    watcher.guest("watcher").await;
    watcher.join("Main").await;
    watcher.drain().await;
    let c = server.client();
    c.post("/api/requestResetPassword", json!({}))
        .await
        .assert_error(400, "username is empty");
    c.post("/api/requestResetPassword", json!({"user":"nobody"}))
        .await
        .assert_ok_empty();
    c.post("/api/requestResetPassword", json!({"user":"iris"}))
        .await
        .assert_ok_empty();
    let token = server.next_reset_token("iris").await;
    assert_eq!(token.len(), 20);
    let reset = |password: &str, token: &str| json!({"user":"iris","passwordResetToken":token,"password":password});
    c.post("/api/resetPassword", json!({"user":"iris"}))
        .await
        .assert_error(400, "some fields are empty");
    c.post("/api/resetPassword", reset("short", &token))
        .await
        .assert_error(400, "password must be 8 to 128 characters");
    c.post(
        "/api/resetPassword",
        reset("newpassword1", "WRONGWRONGWRONGWRONG"),
    )
    .await
    .assert_error(400, "bad reset password token");
    let r = c
        .post("/api/resetPassword", reset("newpassword1", &token))
        .await;
    r.assert_ok_empty();
    assert!(r.header("set-cookie").is_none(), "a reset logs nobody in");
    c.post("/api/resetPassword", reset("newpassword2", &token))
        .await
        .assert_error(400, "bad reset password token");
    device
        .get("/api/loggedonly/getChats")
        .await
        .assert_error(401, "user not logged in");
    assert_eq!(
        watcher.drain_types().await,
        [
            "LogoutEvent",
            "ChatLeaveEvent",
            "SystemMessageChatLeaveEvent"
        ]
    );
    c.post(
        "/api/authorize",
        json!({"user":"iris","password":"password123"}),
    )
    .await
    .assert_error(401, "wrong username or password");
    assert_eq!(
        c.post(
            "/api/authorize",
            json!({"user":"iris","password":"newpassword1"})
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn reset_tokens_are_replaced_and_die_after_five_wrong_tries() {
    let server = TestServer::start().await;
    let c = server.client();
    c.registered("jay").await;
    c.post("/api/requestResetPassword", json!({"user":"jay"}))
        .await
        .assert_ok_empty();
    let first = server.next_reset_token("jay").await;
    c.post("/api/requestResetPassword", json!({"user":"jay"}))
        .await
        .assert_ok_empty();
    let second = server.next_reset_token("jay").await;
    assert_ne!(first, second);
    let reset =
        |token: &str| json!({"user":"jay","passwordResetToken":token,"password":"newpassword1"});
    c.post("/api/resetPassword", reset(&first))
        .await
        .assert_error(400, "bad reset password token");
    for _ in 0..4 {
        c.post("/api/resetPassword", reset("AAAAAAAAAAAAAAAAAAAA"))
            .await
            .assert_error(400, "bad reset password token");
    }
    c.post("/api/resetPassword", reset(&second))
        .await
        .assert_error(400, "bad reset password token");
}

#[tokio::test]
async fn registering_a_used_email_answers_like_success_and_notifies_the_owner() {
    let server = TestServer::start().await;
    let c = server.client();
    c.post(
        "/api/register",
        body("kim", "shared@example.org", "password123"),
    )
    .await
    .assert_ok_empty();
    c.post(
        "/api/register",
        body("lou", "SHARED@example.org", "password123"),
    )
    .await
    .assert_ok_empty();
    server
        .mail
        .wait_for_mail(|mail| {
            (mail.to().eq_ignore_ascii_case("shared@example.org")
                && mail.subject() == "Someone tried to register with your address"
                && mail.text().contains("already belongs to the account kim"))
            .then_some(())
        })
        .await;
    c.post(
        "/api/authorize",
        json!({"user":"lou","password":"password123"}),
    )
    .await
    .assert_error(401, "wrong username or password");
}

#[tokio::test]
async fn no_tokens_or_activity_in_get_users() {
    let server = TestServer::start().await;
    let c = server.client();
    c.registered("max").await;
    c.join("Main").await;
    let users = c
        .post("/api/loggedonly/getUsers", json!({"chat":"Main"}))
        .await;
    assert_eq!(
        users.body,
        r#"[{"user":"max","verified":true,"admin":false,"bot":false}]"#
    );
}

#[tokio::test]
async fn mail_provider_none_refuses_registration_but_guests_work() {
    let server = TestServer::with_config("[mail]\nprovider = \"none\"").await;
    let c = server.client();
    c.post(
        "/api/register",
        body("ned", "ned@example.org", "password123"),
    )
    .await
    .assert_error(503, "email is not configured");
    c.post("/api/requestResetPassword", json!({"user":"ned"}))
        .await
        .assert_error(503, "email is not configured");
    c.guest("ned").await;
}

#[tokio::test]
async fn switches_turn_guests_and_registration_off() {
    let server = TestServer::with_config("allow_guests = false\nallow_registration = false").await;
    let c = server.client();
    c.post("/api/login", json!({"user":"x"}))
        .await
        .assert_error(403, "guest login is disabled");
    c.post("/api/register", body("x", "x@example.org", "password123"))
        .await
        .assert_error(403, "registration is disabled");
}
