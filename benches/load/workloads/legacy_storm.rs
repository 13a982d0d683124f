//! Workload 3 on the legacy `/poll`: the login storm.

use super::{Crowd, Report, Scale, clean, fmt_int, keepalive_row, us};
use crate::client::Mode;
use crate::servers::{self, Server};
use std::time::{Duration, Instant};

/// Workload 3 on the legacy `/poll`.
pub(super) async fn legacy_storm(s: &Scale, r: &mut Report) -> Result<(), String> {
    let server = Server::natter("poll_timeout = \"5s\"", "")?;
    let started = Instant::now();
    let (cpu0, client_cpu0) = (server.cpu(), servers::cpu_time(std::process::id()));
    let (mut crowd, logins) = Crowd::storm(server.addr, s.storm, Mode::Legacy, 1, "lg").await?;
    let drained = crowd.mark(s.legacy_limit).await?;
    let drain_time = started.elapsed();
    let cpu = server.cpu().saturating_sub(cpu0);
    let client_cpu = servers::cpu_time(std::process::id()).saturating_sub(client_cpu0);
    let keepalives = crowd.keepalives.clone();
    let reports = crowd.finish().await;
    let kept = keepalives.finish().await;
    keepalive_row(
        r,
        "3",
        &format!("legacy `/poll` storm, {} sessions", s.storm),
        "w3_legacy",
        &kept,
    );
    // Each answer carries one event, so answers are what the drain costs.
    let answers: u64 = reports.iter().map(|r| r.answers).sum();
    let (overflowed, disordered, errors, first_error) = clean(&reports);
    let log_overflows = server.log_count("default event queue");
    server.stop();
    let n = s.storm;
    r.num("w3_legacy_logins_s", logins.as_secs_f64());
    r.num(
        "w3_legacy_drain_s",
        if drained {
            drain_time.as_secs_f64()
        } else {
            -1.0
        },
    );
    r.num("w3_legacy_resyncs", overflowed as f64);
    r.speed(
        "3",
        &format!("login storm, {n} guests, legacy `/poll`: time until every queue is drained"),
        if drained {
            format!(
                "{:.1} s (logins done at {:.1} s; {} answers; {:.1} µs server CPU and {:.1} µs load generator CPU per answer)",
                drain_time.as_secs_f64(),
                logins.as_secs_f64(),
                fmt_int(answers as f64),
                us(cpu) / answers.max(1) as f64,
                us(client_cpu) / answers.max(1) as f64
            )
        } else {
            format!(
                "not drained after {:.0} s (logins done at {:.1} s; {} answers; {:.1} µs server CPU and {:.1} µs load generator CPU per answer)",
                drain_time.as_secs_f64(),
                logins.as_secs_f64(),
                fmt_int(answers as f64),
                us(cpu) / answers.max(1) as f64,
                us(client_cpu) / answers.max(1) as f64
            )
        },
        "",
        "≤ 40 s (3× faster than ~120 s)",
        drained && drain_time <= Duration::from_secs(40),
    );
    r.correct_row(
        "3",
        &format!("login storm, {n} guests, legacy `/poll`: nothing lost"),
        format!(
            "{overflowed} listeners got a ResyncEvent ({log_overflows} default queues overflowed in all, the poster's included), {disordered} out of order, {errors} errors{}",
            first_error.map(|e| format!(" ({e})")).unwrap_or_default()
        ),
        "0 lost",
        // At full scale a drain beyond the limit is a speed failure, not a correctness one.
        overflowed == 0 && disordered == 0 && (errors == 0 || !drained) && (drained || !s.smoke),
    );
    Ok(())
}
