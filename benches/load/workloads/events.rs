//! Workloads 3 and 1 on `/events`: the login storm, then the fan-out to the same listeners.

use super::{Crowd, Report, Scale, clean, fmt_int, keepalive_row, phase_stats, us};
use crate::client::Mode;
use crate::servers::Server;
use std::time::{Duration, Instant};

/// Workloads 3 (login storm on `/events`) and 1 (fan-out to the same listeners).
pub(super) async fn events(s: &Scale, r: &mut Report) -> Result<(), String> {
    let server = Server::natter("poll_timeout = \"5s\"", "")?;
    let cpu0 = server.cpu();
    let started = Instant::now();
    let (mut crowd, logins) =
        Crowd::storm(server.addr, s.storm, Mode::Events, s.posters, "ev").await?;
    let drained = crowd.mark(Duration::from_secs(300)).await?;
    let drain_time = started.elapsed();
    let storm_cpu = server.cpu().saturating_sub(cpu0);
    let explicit_overflows = server.log_count("explicit event queue");
    let default_overflows = server.log_count("default event queue");

    let flat = crowd.phase(&server, 0, s.phase, None, None).await?;
    let paced = crowd.phase(&server, 1, s.phase, Some(100.0), None).await?;
    let keepalives = crowd.keepalives.clone();
    let reports = crowd.finish().await;
    let kept = keepalives.finish().await;
    let (overflowed, disordered, errors, first_error) = clean(&reports);
    let flat_stats = phase_stats(&reports, 0, &flat);
    let paced_stats = phase_stats(&reports, 1, &paced);
    server.stop();

    let n = s.storm;
    r.num("w3_events_logins_s", logins.as_secs_f64());
    r.num("w3_events_drain_s", drain_time.as_secs_f64());
    r.num(
        "w3_events_overflows",
        (explicit_overflows + overflowed) as f64,
    );
    r.num("w3_events_storm_cpu_s", storm_cpu.as_secs_f64());
    keepalive_row(
        r,
        "1/3",
        &format!("`/events` storm and fan-out, {} sessions", s.storm),
        "w1",
        &kept,
    );
    r.speed(
        "3",
        &format!(
            "login storm, {n} guests 64 at a time, `/events`: time until every queue is drained"
        ),
        if drained {
            format!(
                "{:.1} s (logins done at {:.1} s; server CPU {:.1} s)",
                drain_time.as_secs_f64(),
                logins.as_secs_f64(),
                storm_cpu.as_secs_f64()
            )
        } else {
            format!("not drained after {:.0} s", drain_time.as_secs_f64())
        },
        "",
        "≤ 15 s",
        drained && drain_time <= Duration::from_secs(15),
    );
    r.correct_row(
        "3",
        &format!("login storm, {n} guests, `/events`: overflowed `/events` queues"),
        format!(
            "{} (and {default_overflows} unpolled legacy default queues overflowed, not read by these clients)",
            explicit_overflows.max(overflowed)
        ),
        "0",
        explicit_overflows == 0 && overflowed == 0 && drained,
    );

    let posts_per_s = flat.posted as f64 / s.phase.as_secs_f64();
    r.num("w1_flat_posts_per_s", posts_per_s);
    r.num("w1_flat_deliveries_per_s", flat_stats.per_second);
    r.num("w1_flat_p50_ms", flat_stats.p50_ms);
    r.num("w1_flat_p99_ms", flat_stats.p99_ms);
    r.num(
        "w1_flat_cpu_us_per_delivery",
        us(flat.cpu) / flat_stats.delivered.max(1) as f64,
    );
    r.num(
        "w1_flat_client_cpu_us_per_delivery",
        us(flat.client_cpu) / flat_stats.delivered.max(1) as f64,
    );
    r.speed(
        "1",
        &format!(
            "`/events` fan-out, {n} listeners, {} posters flat out: deliveries/s",
            s.posters
        ),
        format!(
            "{} ({:.0} posts/s; p50 {:.1} ms, p99 {:.1} ms; {:.2} µs server CPU and {:.2} µs load generator CPU per delivery; {:.1} messages per answer)",
            fmt_int(flat_stats.per_second),
            posts_per_s,
            flat_stats.p50_ms,
            flat_stats.p99_ms,
            us(flat.cpu) / flat_stats.delivered.max(1) as f64,
            us(flat.client_cpu) / flat_stats.delivered.max(1) as f64,
            flat_stats.per_answer
        ),
        "",
        "≥ 100,000",
        flat_stats.per_second >= 100_000.0,
    );
    let paced_rate = paced.posted as f64 / s.phase.as_secs_f64();
    r.num("w1_paced_posts_per_s", paced_rate);
    r.num("w1_paced_p50_ms", paced_stats.p50_ms);
    r.num("w1_paced_p99_ms", paced_stats.p99_ms);
    r.num("w1_paced_messages_per_answer", paced_stats.per_answer);
    r.num("w1_flat_messages_per_answer", flat_stats.per_answer);
    r.speed(
        "1",
        &format!("`/events` fan-out, {n} listeners, 100 posts/s wanted: post→delivery"),
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({:.0} posts/s reached, {} deliveries/s; {:.2} µs server CPU and {:.2} µs load generator CPU per delivery; {:.1} messages per answer)",
            paced_stats.p50_ms,
            paced_stats.p99_ms,
            paced_stats.max_ms,
            paced_rate,
            fmt_int(paced_stats.per_second),
            us(paced.cpu) / paced_stats.delivered.max(1) as f64,
            us(paced.client_cpu) / paced_stats.delivered.max(1) as f64,
            paced_stats.per_answer
        ),
        "",
        "p99 ≤ 50 ms",
        paced_stats.p99_ms <= 50.0 && paced_rate >= 95.0,
    );
    let lost = (flat_stats.expected + paced_stats.expected)
        .saturating_sub(flat_stats.delivered + paced_stats.delivered);
    r.num("w1_lost", lost as f64);
    let ok = lost == 0
        && flat_stats.short_listeners + paced_stats.short_listeners == 0
        && disordered == 0
        && overflowed == 0
        && errors == 0
        && flat.drained.is_some()
        && paced.drained.is_some();
    r.correct_row(
        "1",
        "`/events` fan-out: every listener gets every message, in order",
        format!(
            "{} of {} delivered, {disordered} out of order, {errors} listener errors{}",
            fmt_int((flat_stats.delivered + paced_stats.delivered) as f64),
            fmt_int((flat_stats.expected + paced_stats.expected) as f64),
            first_error.map(|e| format!(" ({e})")).unwrap_or_default()
        ),
        "all, in order",
        ok,
    );
    Ok(())
}
