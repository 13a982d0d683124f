//! HTTP conventions: errors, 404/405/413, CORS, CSRF, headers, healthz, static files (docs/api.md, Conventions).

use crate::helpers::TestServer;
use serde_json::json;

#[tokio::test]
async fn unknown_api_paths_are_json_404_and_wrong_methods_json_405() {
    let server = TestServer::start().await;
    let c = server.client();
    let r = c.post("/api/nope", json!({})).await;
    r.assert_error(404, "not found");
    assert_eq!(r.header("content-type").unwrap(), "application/json");
    let r = c.get("/api/login").await;
    r.assert_error(405, "method not allowed");
    assert_eq!(r.header("allow").unwrap(), "POST, OPTIONS");
    let r = c.send(c.http.post(c.url("/api/loggedonly/poll"))).await;
    r.assert_error(405, "method not allowed");
    assert_eq!(r.header("allow").unwrap(), "GET, OPTIONS");
    c.get("/api/login/").await.assert_error(404, "not found");
}

#[tokio::test]
async fn api_responses_carry_security_and_cache_headers() {
    let server = TestServer::start().await;
    let c = server.client();
    let r = c.post("/api/login", json!({"user":"hdr"})).await;
    assert_eq!(r.header("cache-control").unwrap(), "no-store");
    assert_eq!(r.header("x-content-type-options").unwrap(), "nosniff");
    assert_eq!(r.header("referrer-policy").unwrap(), "no-referrer");
    assert_eq!(r.header("x-frame-options").unwrap(), "DENY");
    assert_eq!(r.header("content-type").unwrap(), "application/json");
    let page = c.get("/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("default-src 'self'")
    );
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let server = TestServer::with_config("max_body_bytes = 2048\nmax_message_chars = 100").await;
    let c = server.client();
    let big = json!({"user": "x".repeat(3000)});
    c.post("/api/login", big)
        .await
        .assert_error(413, "request body too large");
}

#[tokio::test]
async fn cors_reflects_only_allowed_origins() {
    let server = TestServer::production("cors_origins = [\"https://chat.example.org\"]").await;
    let c = server.client();
    let allowed = c
        .send(
            c.http
                .request(reqwest::Method::OPTIONS, c.url("/api/loggedonly/getChats"))
                .header("origin", "https://chat.example.org"),
        )
        .await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("access-control-allow-origin").unwrap(),
        "https://chat.example.org"
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials").unwrap(),
        "true"
    );
    assert!(allowed.header("vary").unwrap().contains("Origin"));
    let foreign = c
        .send(
            c.http
                .request(reqwest::Method::OPTIONS, c.url("/api/loggedonly/getChats"))
                .header("origin", "https://evil.example"),
        )
        .await;
    assert_eq!(foreign.status, 200);
    assert!(foreign.header("access-control-allow-origin").is_none());
    // dev-only localhost origins are not allowed in production.
    let local = c
        .send(
            c.http
                .get(c.url("/healthz"))
                .header("origin", "http://localhost:3000"),
        )
        .await;
    assert!(local.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn dev_mode_allows_localhost_origins() {
    let server = TestServer::start().await;
    let c = server.client();
    let r = c
        .send(
            c.http
                .post(c.url("/api/login"))
                .header("origin", "http://localhost:5173")
                .json(&json!({"user":"devy"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin").unwrap(),
        "http://localhost:5173"
    );
}

#[tokio::test]
async fn foreign_origin_posts_are_refused_but_same_origin_works() {
    let server = TestServer::production("").await;
    let c = server.client();
    let r = c
        .send(
            c.http
                .post(c.url("/api/login"))
                .header("origin", "https://evil.example")
                .json(&json!({"user":"csrf"})),
        )
        .await;
    r.assert_error(403, "cross-origin request refused");
    let own = format!("http://{}", server.addr);
    let r = c
        .send(
            c.http
                .post(c.url("/api/login"))
                .header("origin", own)
                .json(&json!({"user":"csrf"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .send(
            c.http
                .post(c.url("/api/loggedonly/logout"))
                .header("origin", "http://localhost:8080")
                .json(&json!({})),
        )
        .await;
    assert_eq!(r.status, 200, "public_url's origin is our own: {}", r.body);
}

#[tokio::test]
async fn https_public_url_makes_the_cookie_secure_and_host_prefixed() {
    let server = TestServer::production("public_url = \"https://chat.example.org\"").await;
    let c = server.client();
    let r = c.post("/api/login", json!({"user":"sec"})).await;
    let cookie = r.header("set-cookie").unwrap();
    assert!(cookie.starts_with("__Host-natter_session="), "{cookie}");
    assert!(cookie.contains("; Secure"));
}

#[tokio::test]
async fn healthz_reports_storage() {
    let server = TestServer::start().await;
    let r = server.client().get("/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, r#"{"status":"ok","storage":"ok","mirror":"off"}"#);
}

#[tokio::test]
async fn static_files_have_etags_and_answer_304() {
    let server = TestServer::start().await;
    let c = server.client();
    let page = c.get("/index.html").await;
    assert_eq!(page.status, 200);
    let etag = page.header("etag").unwrap();
    let cached = c
        .send(
            c.http
                .get(c.url("/index.html"))
                .header("if-none-match", &etag),
        )
        .await;
    assert_eq!(cached.status, 304);
    assert_eq!(c.get("/").await.header("etag").unwrap(), etag);
    c.get("/missing.js").await.assert_error(404, "not found");
    let head = c.send(c.http.head(c.url("/index.html"))).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(head.header("etag").unwrap(), etag);
}

#[tokio::test]
async fn static_dir_overrides_the_bundled_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<p>custom</p>").unwrap();
    let server =
        TestServer::with_config(&format!("static_dir = \"{}\"", dir.path().display())).await;
    let c = server.client();
    let page = c.get("/").await;
    assert_eq!(page.body, "<p>custom</p>");
    c.get("/../Cargo.toml").await.assert_error(404, "not found");
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_refused_on_every_route() {
    let server = TestServer::start().await;
    let c = server.client();
    for body in [r#"["Main"]"#, r#"[]"#, r#""Main""#, "42", "null", "true"] {
        let r = c
            .send(
                c.http
                    .post(c.url("/api/login"))
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        r.assert_error(400, "cannot parse data");
    }
    // Nobody named `Main` logged in through an array.
    c.guest("Main").await;
    let member = server.guest_in("arrays", "Main").await;
    for path in [
        "/api/loggedonly/leaveChat",
        "/api/loggedonly/getUsers",
        "/api/loggedonly/postMessage",
    ] {
        member
            .send(
                member
                    .http
                    .post(member.url(path))
                    .header("content-type", "application/json")
                    .body(r#"["Main","text"]"#),
            )
            .await
            .assert_error(400, "cannot parse data");
    }
    // Still a member: the array did not leave the chat.
    let users = member
        .post(
            "/api/loggedonly/getUsers",
            serde_json::json!({"chat":"Main"}),
        )
        .await;
    assert_eq!(users.status, 200, "{}", users.body);
}
