//! Workloads 2, 7 and 6: the legacy fan-out with a sign-in storm and keepalives, against the
//! baseline's.

use super::{Crowd, PhaseRun, Report, Scale, clean, fmt_int, phase_stats, us};
use crate::client::{Guest, Mode};
use crate::http::Conn;
use crate::servers::Server;
use futures_util::future::join_all;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A loop of requests from `clients` connections for `length`: requests answered.
async fn hammer(
    addr: SocketAddr,
    cookies: Vec<Option<String>>,
    method: &'static str,
    path: &'static str,
    length: Duration,
) -> Result<u64, String> {
    let end = Instant::now() + length;
    let results = join_all(cookies.into_iter().map(|cookie| async move {
        let mut conn = Conn::new(addr);
        let mut n = 0u64;
        while Instant::now() < end {
            let resp = conn
                .request(method, path, cookie.as_deref(), None)
                .await
                .map_err(|e| format!("{method} {path}: {e}"))?;
            if resp.status != 200 {
                return Err(format!("{method} {path}: {}", resp.status));
            }
            n += 1;
        }
        Ok(n)
    }))
    .await;
    let mut total = 0;
    for r in results {
        total += r?;
    }
    Ok(total)
}

/// Workloads 2 (legacy fan-out), 7 (sign-in storm) and 6 (keepalive), with the baseline's.
pub(super) async fn legacy_fanout(
    s: &Scale,
    r: &mut Report,
    baseline: &Server,
) -> Result<(), String> {
    let server = Server::natter("poll_timeout = \"5s\"\npassword_iterations = 600000", "")?;
    let n = s.legacy_listeners;
    let (mut crowd, _) = Crowd::storm(server.addr, n, Mode::Legacy, 1, "lf").await?;
    if !crowd.mark(Duration::from_secs(60)).await? {
        return Err("the legacy listeners did not drain their logins".into());
    }
    // 2: one poster flat out.
    let flat = crowd.phase(&server, 0, s.phase, None, None).await?;

    // 7: a verified account to sign in with.
    let mut anon = Conn::new(server.addr);
    let body = json!({"user": "signer", "email": "signer@example.org", "password": "password123"})
        .to_string();
    let reg = anon
        .request("POST", "/api/register", None, Some(&body))
        .await
        .map_err(|e| e.to_string())?;
    if reg.status != 200 {
        return Err(format!("register: {} {}", reg.status, reg.text()));
    }
    let mut link = None;
    for _ in 0..200 {
        link = server.log.lock().unwrap().iter().find_map(|l| {
            l.split_once("/api/verifyEmail/")
                .map(|(_, p)| format!("/api/verifyEmail/{}", p.trim()))
        });
        if link.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let link = link.ok_or("no activation link in the log")?;
    let verified = anon
        .request("GET", &link, None, None)
        .await
        .map_err(|e| e.to_string())?;
    if verified.status != 200 {
        return Err(format!("verify: {}", verified.status));
    }
    let quiet = crowd.phase(&server, 1, s.phase, Some(50.0), None).await?;
    let addr = server.addr;
    let signers = s.signers;
    let length = s.phase;
    let storm = move || {
        tokio::spawn(async move {
            let end = Instant::now() + length;
            let body = json!({"user": "signer", "password": "password123"}).to_string();
            let done = Arc::new(AtomicU64::new(0));
            join_all((0..signers).map(|_| {
                let body = body.clone();
                let done = done.clone();
                async move {
                    let mut conn = Conn::new(addr);
                    while Instant::now() < end {
                        if let Ok(r) = conn
                            .request("POST", "/api/authorize", None, Some(&body))
                            .await
                            && r.status == 200
                        {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }))
            .await;
            done.load(Ordering::Relaxed)
        })
    };
    let stormy = crowd
        .phase(&server, 2, s.phase, Some(50.0), Some(&storm))
        .await?;
    let reports = crowd.finish().await;
    let (overflowed, disordered, errors, first_error) = clean(&reports);
    let flat_stats = phase_stats(&reports, 0, &flat);
    let quiet_stats = phase_stats(&reports, 1, &quiet);
    let storm_stats = phase_stats(&reports, 2, &stormy);

    // 2, baseline: as many long-poll answers per publish as natter delivered per post.
    let posts_per_s = flat.posted as f64 / s.phase.as_secs_f64();
    let cpu_per_delivery = us(flat.cpu) / flat_stats.delivered.max(1) as f64;
    let base = baseline_fanout(baseline, n, posts_per_s.max(1.0), s.phase).await?;
    r.num("w2_posts_per_s", posts_per_s);
    r.num("w2_deliveries_per_s", flat_stats.per_second);
    r.num("w2_cpu_us_per_delivery", cpu_per_delivery);
    r.num("w2_baseline_cpu_us_per_answer", base.0);
    r.speed(
        "2",
        &format!("legacy `/poll` fan-out, {n} listeners, 1 poster flat out: server CPU per delivered event"),
        format!(
            "{cpu_per_delivery:.1} µs ({} deliveries/s, {posts_per_s:.0} posts/s, p99 {:.1} ms)",
            fmt_int(flat_stats.per_second),
            flat_stats.p99_ms
        ),
        &format!("{:.1} µs per one-event long-poll answer ({} answers/s)", base.0, fmt_int(base.1)),
        "≤ 2× baseline",
        cpu_per_delivery <= 2.0 * base.0,
    );
    let lost = (flat_stats.expected + quiet_stats.expected + storm_stats.expected)
        .saturating_sub(flat_stats.delivered + quiet_stats.delivered + storm_stats.delivered);
    r.correct_row(
        "2",
        "legacy `/poll` fan-out: every listener gets every message, in order",
        format!(
            "{lost} lost, {overflowed} resyncs, {disordered} out of order, {errors} errors{}",
            first_error.map(|e| format!(" ({e})")).unwrap_or_default()
        ),
        "0 lost",
        lost == 0 && overflowed == 0 && disordered == 0 && errors == 0,
    );

    let sign_ins = stormy_sign_ins(&stormy);
    r.num("w7_quiet_p99_ms", quiet_stats.p99_ms);
    r.num("w7_storm_p99_ms", storm_stats.p99_ms);
    let storm_rate = stormy.posted as f64 / s.phase.as_secs_f64();
    r.speed(
        "7",
        &format!(
            "sign-in storm: {} clients calling authorize (600,000 rounds), {n} `/poll` listeners, 50 posts/s: p99 post→delivery",
            s.signers
        ),
        format!(
            "{:.1} ms during the storm vs {:.1} ms without ({:.1}×; max {:.0} ms; {storm_rate:.0} posts/s reached){sign_ins}",
            storm_stats.p99_ms,
            quiet_stats.p99_ms,
            storm_stats.p99_ms / quiet_stats.p99_ms,
            storm_stats.max_ms
        ),
        "",
        "≤ 2× without",
        storm_stats.p99_ms <= 2.0 * quiet_stats.p99_ms && storm_rate >= 45.0,
    );

    // 6: keepalive from fresh guests, then the baseline's hello.
    let mut cookies = Vec::new();
    for i in 0..s.keepalive_clients {
        cookies.push(Some(
            Guest::login(server.addr, &format!("ka{i}")).await?.cookie,
        ));
    }
    let cpu0 = server.cpu();
    let t = Instant::now();
    let done = hammer(
        server.addr,
        cookies,
        "PUT",
        "/api/loggedonly/keepalive",
        s.phase,
    )
    .await?;
    let (cpu, took) = (server.cpu().saturating_sub(cpu0), t.elapsed());
    server.stop();
    let b0 = baseline.cpu();
    let t = Instant::now();
    let b_done = hammer(
        baseline.addr,
        vec![None; s.keepalive_clients],
        "GET",
        "/hello",
        s.phase,
    )
    .await?;
    let (b_cpu, b_took) = (baseline.cpu().saturating_sub(b0), t.elapsed());
    let per = us(cpu) / done.max(1) as f64;
    let b_per = us(b_cpu) / b_done.max(1) as f64;
    r.num("w6_keepalive_per_s", done as f64 / took.as_secs_f64());
    r.num("w6_keepalive_cpu_us", per);
    r.num("w6_baseline_hello_cpu_us", b_per);
    r.speed(
        "6",
        &format!(
            "authenticated request: `PUT keepalive` from {} connections",
            s.keepalive_clients
        ),
        format!(
            "{per:.1} µs CPU per request ({} requests/s)",
            fmt_int(done as f64 / took.as_secs_f64())
        ),
        &format!(
            "{b_per:.1} µs per hello ({} requests/s)",
            fmt_int(b_done as f64 / b_took.as_secs_f64())
        ),
        "≤ 2× baseline",
        per <= 2.0 * b_per,
    );
    Ok(())
}

fn stormy_sign_ins(run: &PhaseRun) -> String {
    format!("; {} sign-ins completed", run.side)
}

/// Long-pollers on the baseline and a publisher at `rate`: (CPU µs per answer, answers/s).
async fn baseline_fanout(
    baseline: &Server,
    n: usize,
    rate: f64,
    length: Duration,
) -> Result<(f64, f64), String> {
    let addr = baseline.addr;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = Arc::new(AtomicU64::new(0));
    let mut pollers = Vec::new();
    for _ in 0..n {
        let stop = stop.clone();
        let answers = answers.clone();
        pollers.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            while !stop.load(Ordering::Relaxed) {
                match conn.request("GET", "/poll", None, None).await {
                    Ok(r) if !r.body.is_empty() => {
                        answers.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu0 = baseline.cpu();
    let a0 = answers.load(Ordering::Relaxed);
    let t = Instant::now();
    let mut publisher = Conn::new(addr);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i = 0u64;
    while t.elapsed() < length {
        tick.tick().await;
        let body =
            format!("{{\"event\":{{\"text\":\"p0:{i}\"}},\"type\":\"MessageEvent\",\"id\":{i}}}");
        publisher
            .request("POST", "/publish", None, Some(&body))
            .await
            .map_err(|e| format!("publish: {e}"))?;
        i += 1;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu = baseline.cpu().saturating_sub(cpu0);
    let got = answers.load(Ordering::Relaxed) - a0;
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    // Wake the parked pollers so they see the stop.
    let _ = publisher
        .request("POST", "/publish", None, Some("{}"))
        .await;
    for p in pollers {
        let _ = tokio::time::timeout(Duration::from_secs(5), p).await;
    }
    Ok((us(cpu) / got.max(1) as f64, got as f64 / took.as_secs_f64()))
}
