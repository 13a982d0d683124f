//! Workload 4: the memory of parked polls, natter's and the baseline's.

use super::{Report, Scale, fmt_int};
use crate::client::Guest;
use crate::http::Conn;
use crate::servers::Server;
use futures_util::future::join_all;
use std::net::SocketAddr;
use std::time::Duration;

/// Opens `count` connections, each sending `request(i)` and leaving it parked.
async fn park(
    addr: SocketAddr,
    count: usize,
    request: impl Fn(usize) -> (String, Option<String>),
) -> Result<Vec<Conn>, String> {
    let mut conns = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(256) {
        let opened = join_all(chunk.iter().map(|&i| {
            let (path, cookie) = request(i);
            async move {
                let mut conn = Conn::new(addr);
                conn.send("GET", &path, cookie.as_deref(), None)
                    .await
                    .map_err(|e| format!("park {i}: {e}"))?;
                Ok::<Conn, String>(conn)
            }
        }))
        .await;
        for c in opened {
            conns.push(c?);
        }
    }
    Ok(conns)
}

/// Reads every parked poll's answer: how many carried a body with `needle`.
async fn answered(conns: Vec<Conn>, needle: &'static str) -> usize {
    let results = join_all(conns.into_iter().map(|mut c| async move {
        match tokio::time::timeout(Duration::from_secs(60), c.receive()).await {
            Ok(Ok(r)) => r.status == 200 && r.text().contains(needle),
            _ => false,
        }
    }))
    .await;
    results.into_iter().filter(|&ok| ok).count()
}

/// Workload 4: RSS per parked `/events` poll, and the baseline's per parked long-poll.
pub(super) async fn parked(s: &Scale, r: &mut Report, baseline: &Server) -> Result<(), String> {
    const PER_SESSION: usize = 100;
    let server = Server::natter("poll_timeout = \"300s\"\nmax_queues_per_session = 100", "")?;
    let sessions = s.parked.div_ceil(PER_SESSION);
    let mut guests = Vec::new();
    for i in 0..sessions {
        let mut g = Guest::login(server.addr, &format!("pk{i}")).await?;
        g.join("Main").await?;
        guests.push(g);
    }
    let mut queues = Vec::new();
    for g in &mut guests {
        for _ in 0..PER_SESSION {
            let (q, last) = g.open_queue().await?;
            queues.push((g.cookie.clone(), q, last));
        }
    }
    queues.truncate(s.parked);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = server.rss_kib();
    let conns = park(server.addr, s.parked, |i| {
        let (cookie, q, last) = &queues[i];
        (
            format!("/api/loggedonly/events?queue_id={q}&last_event_id={last}"),
            Some(cookie.clone()),
        )
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = server.rss_kib();
    guests[0].post("wake").await?;
    let woken = answered(conns, "wake").await;
    server.stop();

    let b0 = baseline.rss_kib();
    let conns = park(baseline.addr, s.parked, |_| ("/poll".to_owned(), None)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b1 = baseline.rss_kib();
    let mut publisher = Conn::new(baseline.addr);
    publisher
        .request("POST", "/publish", None, Some("wake"))
        .await
        .map_err(|e| e.to_string())?;
    let b_woken = answered(conns, "wake").await;

    let per = (rss1.saturating_sub(rss0) * 1024) as f64 / s.parked as f64;
    let b_per = (b1.saturating_sub(b0) * 1024) as f64 / s.parked as f64;
    r.num("w4_bytes_per_parked_poll", per);
    r.num("w4_baseline_bytes_per_parked_poll", b_per);
    r.speed(
        "4",
        &format!(
            "parked polls: RSS per parked `/events` poll at {}",
            fmt_int(s.parked as f64)
        ),
        format!(
            "{} B (RSS {} → {} KiB)",
            fmt_int(per),
            fmt_int(rss0 as f64),
            fmt_int(rss1 as f64)
        ),
        &format!(
            "{} B (RSS {} → {} KiB)",
            fmt_int(b_per),
            fmt_int(b0 as f64),
            fmt_int(b1 as f64)
        ),
        "≤ 1.5× baseline and < 16 KiB",
        per <= 1.5 * b_per && per < 16384.0,
    );
    r.correct_row(
        "4",
        "parked polls: every parked poll is woken by one post",
        format!("{woken} of {} (baseline {b_woken})", s.parked),
        "all",
        woken == s.parked,
    );
    Ok(())
}
