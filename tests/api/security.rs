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

/// `log_level = "debug"` is for natter's own lines: the PostgreSQL client would log every
/// statement's parameters, and a server error's DETAIL quotes the row.
#[cfg(feature = "pg")]
#[tokio::test]
async fn debug_logging_with_the_mirror_keeps_hashes_emails_and_texts_out_of_the_log() {
    use crate::helpers::Served;
    // The mirror is an option of the sled store: this runs on sled in both passes.
    let Some(cluster) = crate::cluster::Cluster::start().await else {
        return;
    };
    let url = cluster.create_db("debug_log").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "log_level = \"debug\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\
             password_iterations = 1000\ndatabase_url = \"{url}\"\n[rate_limit]\nenabled = false\n",
            dir.path().join("d").display()
        ),
    )
    .unwrap();
    let mut served =
        Served::start_with_args(&["--dev".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let base = format!("http://{}", served.addr);
    let client = || {
        reqwest::Client::builder()
            .cookie_store(true)
            .tls_certs_only([])
            .build()
            .unwrap()
    };
    let post = |c: &reqwest::Client, path: &str, body: serde_json::Value| {
        let request = c.post(format!("{base}{path}")).json(&body);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let wait_for = |needle: &str| {
        for _ in 0..200 {
            if let Some(line) = served
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "no log line with {needle:?}: {:?}",
            served.log.lock().unwrap()
        );
    };

    let dora = client();
    let email = "dora.secret@example.org";
    let signup = json!({"user": "dora", "email": email, "password": "correct horse 123"});
    assert_eq!(post(&dora, "/api/register", signup).await, 200);
    let link = wait_for("activation link: ");
    let path = link.split_once("/api/").unwrap().1;
    let verify = dora.get(format!("{base}/api/{path}")).send().await.unwrap();
    assert_eq!(verify.status(), 200);
    let signin = json!({"user": "dora", "password": "correct horse 123"});
    assert_eq!(post(&dora, "/api/authorize", signin).await, 200);
    assert_eq!(
        post(&dora, "/api/loggedonly/joinChat", json!({"chat": "Main"})).await,
        200
    );
    let texts = ["the secret plan is at noon", "a guest's quiet whisper"];
    let said = json!({"chat": "Main", "text": texts[0]});
    assert_eq!(post(&dora, "/api/loggedonly/postMessage", said).await, 200);
    let gus = client();
    assert_eq!(post(&gus, "/api/login", json!({"user": "gus"})).await, 200);
    assert_eq!(
        post(&gus, "/api/loggedonly/joinChat", json!({"chat": "Main"})).await,
        200
    );
    let said = json!({"chat": "Main", "text": texts[1]});
    assert_eq!(post(&gus, "/api/loggedonly/postMessage", said).await, 200);

    // Everything reached PostgreSQL, so every statement ran while debug was on.
    let pg = cluster.client("debug_log").await;
    let mut hash = String::new();
    for _ in 0..200 {
        let messages: i64 = pg
            .query_one("SELECT count(*) FROM messages", &[])
            .await
            .unwrap()
            .get(0);
        if let Some(row) = pg
            .query_opt("SELECT password_hash FROM users WHERE key = 'dora'", &[])
            .await
            .unwrap()
            && messages == 2
        {
            hash = row.get(0);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!hash.is_empty(), "the mirror never caught up");

    // A row PostgreSQL refuses with a DETAIL that quotes it: the mirror goes down and says why.
    pg.batch_execute(
        "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN \
           RAISE EXCEPTION 'row refused' USING DETAIL = NEW.email; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON users \
           FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .await
    .unwrap();
    let hidden = "eve.hidden@example.org";
    let signup = json!({"user": "eve", "email": hidden, "password": "password123"});
    assert_eq!(post(&client(), "/api/register", signup).await, 200);
    wait_for("row refused");
    wait_for("PostgreSQL mirror still down");

    served.signal("-TERM");
    assert_eq!(served.child.wait().unwrap().code(), Some(0));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = served.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.contains(" DEBUG ")),
        "debug lines are written: {log:?}"
    );
    let salt_and_digest = hash.rsplit('$').take(2).collect::<Vec<_>>();
    for secret in [
        email,
        hidden,
        &hash,
        texts[0],
        texts[1],
        "correct horse 123",
    ]
    .into_iter()
    .chain(salt_and_digest)
    {
        let leaks: Vec<&String> = log.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret:?} reached the log: {leaks:?}");
    }
}

/// A stored hash too costly to verify (planted by an import or by hand) is refused as a wrong
/// password at once, and the log names the account to fix, never the hash.
#[tokio::test]
async fn a_too_costly_stored_hash_is_refused_and_the_log_names_its_account() {
    log_capture::start();
    let mut server = TestServer::start().await;
    server.client().registered("Costly").await;
    server.stop().await;
    let quick = bcrypt::hash_with_result("password123", 4)
        .unwrap()
        .to_string();
    let planted = format!("$2b$13{}", &quick[6..]);
    server.edit_stored_user("costly", |user| user.password_hash = planted.clone());
    server.restart(&[]).await;
    let from = log_capture::mark();
    let started = std::time::Instant::now();
    server
        .client()
        .post(
            "/api/authorize",
            json!({"user":"costly","password":"password123"}),
        )
        .await
        .assert_error(401, "wrong username or password");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let lines: Vec<String> = log_capture::lines()[from..].to_vec();
    let warned: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("above natter's limit"))
        .collect();
    assert_eq!(warned.len(), 1, "{lines:?}");
    assert!(warned[0].contains("\"Costly\""), "{}", warned[0]);
    assert!(warned[0].contains("set-password Costly"), "{}", warned[0]);
    assert!(
        !warned[0].contains(&planted[7..]),
        "the hash reached the log"
    );
}
