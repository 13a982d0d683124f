//! Reads a spawned natter's Prometheus metrics (`metrics.listen`), for counters a client cannot see.

use crate::helpers::Served;
use std::time::{Duration, Instant};

/// The metrics URL the process logged at start ("serving metrics on http://ADDR/metrics").
pub fn metrics_url(served: &Served) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = served
            .log
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.split("serving metrics on ").nth(1).map(str::to_owned));
        if let Some(url) = found {
            return url.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "the metrics address was logged");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One scrape's text.
pub async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.expect("metrics answer");
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The sum of `series` over the label sets `labels` accepts (the text between the braces).
pub fn sum(text: &str, series: &str, labels: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let (metric, set) = match name.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (name, ""),
            };
            (metric == series && labels(set)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A series without labels, 0 when absent.
pub fn value(text: &str, series: &str) -> f64 {
    sum(text, series, |_| true)
}
