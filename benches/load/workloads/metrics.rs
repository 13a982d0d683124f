//! Workload 9: the cost of metrics on the fan-out.

use super::{Crowd, Report, Scale, Verdict, fmt_int, phase_stats};
use crate::client::Mode;
use crate::servers::Server;
use std::time::Duration;

/// Workload 9: fan-out with metrics on vs off, once `metrics.listen` is accepted.
pub(super) async fn metrics(s: &Scale, r: &mut Report) -> Result<(), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let tables = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"");
    let Ok(on) = Server::natter("poll_timeout = \"5s\"", &tables) else {
        r.row(
            "9",
            "metrics on vs off: `/events` fan-out throughput",
            "skipped: no metrics listener in this build (natter refuses `metrics.listen`)".into(),
            "",
            "≤ 5% slower",
            Verdict::Skipped,
        );
        return Ok(());
    };
    let n = s.storm.min(200);
    let mut rates = Vec::new();
    for server in [Some(on), None] {
        let server = match server {
            Some(s) => s,
            None => Server::natter("poll_timeout = \"5s\"", "")?,
        };
        let (mut crowd, _) = Crowd::storm(server.addr, n, Mode::Events, s.posters, "m").await?;
        crowd.mark(Duration::from_secs(120)).await?;
        let run = crowd.phase(&server, 0, s.phase, None, None).await?;
        let reports = crowd.finish().await;
        rates.push(phase_stats(&reports, 0, &run).per_second);
        server.stop();
    }
    let cost = 1.0 - rates[0] / rates[1];
    r.num("w9_metrics_on_deliveries_per_s", rates[0]);
    r.num("w9_metrics_off_deliveries_per_s", rates[1]);
    r.speed(
        "9",
        &format!("metrics on vs off: `/events` fan-out, {n} listeners"),
        format!(
            "{} vs {} deliveries/s ({:.1}% cost)",
            fmt_int(rates[0]),
            fmt_int(rates[1]),
            cost * 100.0
        ),
        "",
        "≤ 5% slower",
        cost <= 0.05,
    );
    Ok(())
}
