//! Metrics (docs/operations.md, Metrics): the opt-in Prometheus listener, the series it serves, and no
//! listener at all when `metrics.listen` is unset. The listener test runs natter as a process,
//! because the metrics recorder is process-wide.

use crate::helpers::{Served, TestServer};
use natter::telemetry::{Kind, SERIES};
use serde_json::json;
use std::time::{Duration, Instant};

/// The value of one series (name with its labels, as rendered), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    })
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    response.text().await.unwrap()
}

/// Waits for the line in which the served natter names its metrics address.
fn metrics_url(served: &Served) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = served.log.lock().unwrap().iter().find_map(|l| {
            l.split("serving metrics on ")
                .nth(1)
                .map(|url| url.trim().to_owned())
        });
        if let Some(url) = found {
            return url;
        }
        assert!(
            Instant::now() < deadline,
            "natter never named its metrics address"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const POSTS: &str = "natter_http_requests_total{route=\"loggedonly/postMessage\",status=\"200\"}";

#[tokio::test]
async fn the_listener_serves_every_documented_series_and_they_move_with_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n{}poll_timeout = \"3s\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n",
            crate::helpers::store_lines(&dir.path().join("d")).await
        ),
    )
    .unwrap();
    let mut served = Served::start(&config);
    served.assert_on_test_storage();
    let metrics = metrics_url(&served);
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let post = |path: &str, body: serde_json::Value| http.post(served.url(path)).json(&body).send();
    assert_eq!(
        post("/api/login", json!({"user":"mia"}))
            .await
            .unwrap()
            .status(),
        200
    );
    post("/api/loggedonly/joinChat", json!({"chat":"Main"}))
        .await
        .unwrap();

    let before = scrape(&http, &metrics).await;
    let stored_before = value(&before, "natter_messages_stored_total").unwrap();
    for i in 0..3 {
        let r = post(
            "/api/loggedonly/postMessage",
            json!({"chat":"Main","text":format!("m{i}")}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
    }
    let after = scrape(&http, &metrics).await;
    assert_eq!(
        value(&after, "natter_messages_stored_total").unwrap() - stored_before,
        3.0
    );
    assert_eq!(
        value(&after, POSTS).unwrap() - value(&before, POSTS).unwrap_or(0.0),
        3.0
    );
    assert_eq!(value(&after, "natter_online_users"), Some(1.0));
    assert_eq!(value(&after, "natter_sessions"), Some(1.0));
    assert_eq!(value(&after, "natter_sessions_online"), Some(1.0));
    assert_eq!(
        value(&after, "natter_event_queues{kind=\"default\"}"),
        Some(1.0)
    );
    assert!(
        value(&after, "natter_events_delivered_total").unwrap()
            > value(&before, "natter_events_delivered_total").unwrap()
    );
    assert!(value(&after, "natter_store_fsync_duration_seconds_count").unwrap() >= 3.0);
    assert_eq!(
        value(&after, "natter_mirror_state{state=\"off\"}"),
        Some(1.0)
    );

    // A poll parked on an empty queue shows, and so does an explicit queue.
    let opened = post("/api/loggedonly/queues", json!({})).await.unwrap();
    let queue: serde_json::Value = opened.json().await.unwrap();
    let events = format!(
        "/api/loggedonly/events?queue_id={}&last_event_id={}",
        queue["queue_id"].as_str().unwrap(),
        queue["last_event_id"]
    );
    let parked = tokio::spawn(http.get(served.url(&events)).send());
    let deadline = Instant::now() + Duration::from_secs(2);
    let text = loop {
        let text = scrape(&http, &metrics).await;
        if value(&text, "natter_parked_polls") == Some(1.0) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(value(&text, "natter_parked_polls"), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "natter_event_queues{kind=\"explicit\"}"),
        Some(1.0)
    );
    assert_eq!(parked.await.unwrap().unwrap().status(), 200);

    // Labels are route patterns: the secret parts of a link never become a label.
    http.get(served.url("/api/verifyEmail/mia/s3cr3t-t0ken"))
        .send()
        .await
        .unwrap();
    http.get(served.url("/api/no/such/s3cr3t"))
        .send()
        .await
        .unwrap();
    let text = scrape(&http, &metrics).await;
    assert!(text.contains("route=\"verifyEmail/{user}/{token}\",status=\"400\""));
    assert!(text.contains("route=\"unknown\",status=\"404\""));
    assert!(!text.contains("s3cr3t"));
    // Every series docs/operations.md documents is there, with its type.
    for &(name, kind, _, _) in SERIES {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is missing:\n{text}"
        );
    }

    // Only /metrics, and only on its own listener.
    let other = http.get(format!("{}x", metrics)).send().await.unwrap();
    assert_eq!(other.status(), 404);
    let main = http.get(served.url("/metrics")).send().await.unwrap();
    assert_eq!(main.status(), 404);
    served.signal("-TERM");
    assert_eq!(served.child.wait().unwrap().code(), Some(0));
}

#[tokio::test]
async fn without_metrics_listen_there_is_no_listener_and_metrics_is_404() {
    let server = TestServer::start().await;
    assert_eq!(server.app.as_ref().unwrap().metrics_addr(), None);
    let c = server.client();
    c.get("/metrics").await.assert_error(404, "not found");
    c.get("/api/metrics").await.assert_error(404, "not found");
}
