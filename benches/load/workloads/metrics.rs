//! Workload 9: the cost of metrics on the fan-out, as server CPU per delivery.

use super::{Crowd, Report, Scale, Verdict, fmt_int, phase_stats, us};
use crate::client::Mode;
use crate::servers::Server;
use std::time::Duration;

/// Posts per second: paced, so that each run delivers the same events in about as many answers
/// (flat out, how many messages an answer carries follows the machine's load, and so does the CPU
/// per delivery).
const PACE: f64 = 100.0;

/// One fan-out run: server CPU per delivery (µs) and deliveries per second.
async fn run(s: &Scale, server: Server, n: usize) -> Result<(f64, f64), String> {
    let (mut crowd, _) = Crowd::storm(server.addr, n, Mode::Events, s.posters, "m").await?;
    crowd.mark(Duration::from_secs(120)).await?;
    let run = crowd.phase(&server, 0, s.phase, Some(PACE), None).await?;
    let reports = crowd.finish().await;
    server.stop();
    let stats = phase_stats(&reports, 0, &run);
    if stats.delivered < stats.expected || run.drained.is_none() {
        return Err(format!(
            "{} of {} delivered",
            stats.delivered, stats.expected
        ));
    }
    Ok((
        us(run.cpu) / stats.delivered.max(1) as f64,
        stats.per_second,
    ))
}

/// A fresh natter with metrics on (a listener on a free port) or off.
fn start(metrics: bool) -> Result<Server, String> {
    if !metrics {
        return Server::natter("poll_timeout = \"5s\"", "");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    Server::natter(
        "poll_timeout = \"5s\"",
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\""),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// "a, b, c" with one decimal, in run order.
fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Workload 9: fan-out with metrics on vs off, runs alternating so that drift in the machine's
/// speed (single runs swing by tens of percent here) falls on both sides; the medians compare.
pub(super) async fn metrics(s: &Scale, r: &mut Report) -> Result<(), String> {
    let n = s.storm.min(200);
    let rounds = if s.smoke { 1 } else { 3 };
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for metrics in [true, false] {
            let server = match start(metrics) {
                Ok(server) => server,
                Err(_) if metrics && round == 0 => {
                    r.row(
                        "9",
                        "metrics on vs off: `/events` fan-out, server CPU per delivery",
                        "skipped: no metrics listener in this build (natter refuses `metrics.listen`)"
                            .into(),
                        "",
                        "≤ 5% more",
                        Verdict::Skipped,
                    );
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let figures = run(s, server, n).await?;
            if metrics {
                on.push(figures)
            } else {
                off.push(figures)
            }
        }
    }
    let cpu = |v: &[(f64, f64)]| v.iter().map(|f| f.0).collect::<Vec<_>>();
    let rate = |v: &[(f64, f64)]| v.iter().map(|f| f.1).collect::<Vec<_>>();
    let (cpu_on, cpu_off) = (median(cpu(&on)), median(cpu(&off)));
    let (rate_on, rate_off) = (median(rate(&on)), median(rate(&off)));
    let cost = cpu_on / cpu_off - 1.0;
    r.num("w9_metrics_on_cpu_us_per_delivery", cpu_on);
    r.num("w9_metrics_off_cpu_us_per_delivery", cpu_off);
    r.num("w9_metrics_on_deliveries_per_s", rate_on);
    r.num("w9_metrics_off_deliveries_per_s", rate_off);
    r.speed(
        "9",
        &format!(
            "metrics on vs off: `/events` fan-out, {n} listeners, server CPU per delivery (median of {rounds} alternating runs each)"
        ),
        format!(
            "{cpu_on:.2} vs {cpu_off:.2} µs ({:+.1}%; on: {}, off: {} µs in run order; {} vs {} deliveries/s)",
            cost * 100.0,
            list(&cpu(&on)),
            list(&cpu(&off)),
            fmt_int(rate_on),
            fmt_int(rate_off)
        ),
        "",
        "≤ 5% more",
        cost <= 0.05,
    );
    Ok(())
}
