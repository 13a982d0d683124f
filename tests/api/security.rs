//! Findings of a security review: link secrets in the request log, and the origin checks.

use crate::helpers::TestServer;
use crate::log_capture;
use serde_json::json;

#[tokio::test]
async fn the_request_log_never_shows_an_activation_token() {
    log_capture::start();
    let server = TestServer::start().await;
    let c = server.client();
    c.post(
        "/api/register",
        json!({"user":"carol","email":"carol@example.org","password":"password123"}),
    )
    .await
    .assert_ok_empty();
    let link = server.activation_link("carol").await;
    let token = link.rsplit('/').next().unwrap().to_owned();
    let path = format!("/api/{}", link.split_once("/api/").unwrap().1);
    assert_eq!(c.get(&path).await.status, 200);
    // A mistyped link (an extra segment) must not leak the token either.
    assert_eq!(c.get(&format!("{path}/x")).await.status, 404);
    let lines = log_capture::lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("GET /api/verifyEmail/{user}/{token} 200")),
        "the request is logged by its route"
    );
    let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(&token)).collect();
    assert!(leaks.is_empty(), "the token reached the log: {leaks:?}");
}

#[tokio::test]
async fn an_https_origin_is_not_our_plain_http_origin() {
    let server = TestServer::production("").await;
    let c = server.client();
    let r = c
        .send(
            c.http
                .post(c.url("/api/login"))
                .header("origin", format!("https://{}", server.addr))
                .json(&json!({"user":"schemer"})),
        )
        .await;
    r.assert_error(403, "cross-origin request refused");
}

#[tokio::test]
async fn polls_refuse_navigations_and_foreign_cross_site_requests() {
    let server = TestServer::production(
        "cors_origins = [\"https://app.example.org\"]\npoll_timeout = \"1s\"",
    )
    .await;
    let c = server.client();
    c.guest("fetcher").await;
    let queue = c.post("/api/loggedonly/queues", json!({})).await.json();
    let events = format!(
        "/api/loggedonly/events?queue_id={}",
        queue["queue_id"].as_str().unwrap()
    );
    for path in ["/api/loggedonly/poll", events.as_str()] {
        let get = |headers: &[(&str, &str)]| {
            let mut request = c.http.get(c.url(path));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            c.send(request)
        };
        get(&[
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
        ])
        .await
        .assert_error(403, "cross-origin request refused");
        get(&[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "navigate"),
        ])
        .await
        .assert_error(403, "cross-origin request refused");
        // The client itself, and an origin listed in cors_origins, still poll.
        let own = get(&[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
        ])
        .await;
        assert_eq!(own.status, 200, "{}", own.body);
        let listed = get(&[
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "cors"),
            ("origin", "https://app.example.org"),
        ])
        .await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        // No Fetch Metadata at all (the original client's older browsers, curl) still works.
        assert_eq!(get(&[]).await.status, 200);
    }
}

/// Behind a TLS proxy, `http://` plus our `Host` is not our origin: with `public_url` set, only its
/// origin and `cors_origins` are.
#[tokio::test]
async fn with_public_url_set_a_plain_http_host_origin_is_foreign() {
    let server = TestServer::production(
        "public_url = \"https://chat.example.org\"\ncors_origins = [\"https://app.example.org\"]",
    )
    .await;
    let c = server.client();
    let login = |origin: String, name: &str| {
        c.send(
            c.http
                .post(c.url("/api/login"))
                .header("origin", origin)
                .json(&json!({ "user": name })),
        )
    };
    // reqwest sends `Host: <addr>`, so this origin is `http://` plus the Host header.
    login(format!("http://{}", server.addr), "plain")
        .await
        .assert_error(403, "cross-origin request refused");
    for (origin, name) in [
        ("https://chat.example.org", "own"),
        ("https://app.example.org", "listed"),
    ] {
        let r = login(origin.into(), name).await;
        assert_eq!(r.status, 200, "{origin}: {}", r.body);
    }
}
