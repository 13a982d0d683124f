//! Workloads 5 and 8: durable writes, sync against relaxed, and the idle footprint.

use super::{Report, Scale, fmt_int};
use crate::client::Guest;
use crate::http::Conn;
use crate::servers::Server;
use futures_util::future::join_all;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Logs in `count` guests who joined Main.
pub(super) async fn writers(
    addr: SocketAddr,
    count: usize,
    tag: &str,
) -> Result<Vec<Guest>, String> {
    let logged = join_all((0..count).map(|i| async move {
        let mut g = Guest::login(addr, &format!("{tag}{i}")).await?;
        g.join("Main").await?;
        Ok::<Guest, String>(g)
    }))
    .await;
    logged.into_iter().collect()
}

/// Every writer posts until `until` or until `budget` posts are made in all: posts made.
pub(super) async fn write_flat(
    guests: &mut [Guest],
    until: Instant,
    budget: u64,
) -> Result<u64, String> {
    let made = Arc::new(AtomicU64::new(0));
    let results = join_all(guests.iter_mut().map(|g| {
        let made = made.clone();
        async move {
            while Instant::now() < until && made.fetch_add(1, Ordering::AcqRel) < budget {
                g.post("a message of moderate length, as people write them in a chat")
                    .await?;
            }
            Ok::<(), String>(())
        }
    }))
    .await;
    for r in results {
        r?;
    }
    Ok(made.load(Ordering::Acquire).min(budget))
}

/// Workloads 5 (sync vs relaxed writes) and 8 (idle footprint, on the relaxed server's data).
pub(super) async fn writes(s: &Scale, r: &mut Report) -> Result<(), String> {
    let mut rates = Vec::new();
    let mut kept = None;
    for mode in ["sync", "relaxed"] {
        let server = Server::natter(
            &format!("durability = \"{mode}\"\npassword_iterations = 1000\npoll_timeout = \"5s\""),
            "",
        )?;
        let mut guests = writers(server.addr, s.writers, "w").await?;
        let t = Instant::now();
        let made = write_flat(&mut guests, t + s.phase, u64::MAX).await?;
        rates.push(made as f64 / t.elapsed().as_secs_f64());
        if mode == "relaxed" {
            kept = Some((server, guests, made));
        } else {
            server.stop();
        }
    }
    let ratio = rates[0] / rates[1];
    r.num("w5_sync_posts_per_s", rates[0]);
    r.num("w5_relaxed_posts_per_s", rates[1]);
    r.speed(
        "5",
        &format!(
            "durable writes: postMessage from {} posters, sync vs relaxed",
            s.writers
        ),
        format!(
            "sync {} posts/s, relaxed {} posts/s ({ratio:.2}×)",
            fmt_int(rates[0]),
            fmt_int(rates[1])
        ),
        "",
        "sync ≥ 0.5× relaxed",
        ratio >= 0.5,
    );

    // 8: fill to the target counts, then measure idle, and idle again after a restart.
    let (mut server, mut guests, made) = kept.expect("relaxed server kept");
    let t = Instant::now();
    let more = s.messages.saturating_sub(made);
    let topped = write_flat(&mut guests, t + Duration::from_secs(600), more).await?;
    drop(guests);
    let addr = server.addr;
    let registered = AtomicU64::new(0);
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let results = join_all((0..s.users).map(|i| {
        let gate = gate.clone();
        let registered = &registered;
        async move {
            let _permit = gate.acquire().await.expect("open");
            let mut conn = Conn::new(addr);
            let body = json!({"user": format!("user{i}"), "email": format!("user{i}@example.org"), "password": "password123"}).to_string();
            let r = conn
                .request("POST", "/api/register", None, Some(&body))
                .await
                .map_err(|e| format!("register: {e}"))?;
            if r.status != 200 {
                return Err(format!("register: {} {}", r.status, r.text()));
            }
            registered.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }))
    .await;
    for res in results {
        res?;
    }
    let fill_time = t.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let live = server.rss_kib();
    let dir = server.dir.take();
    let config = server.config.clone().expect("config path");
    server.stop();
    let mut restarted = Server::natter_at(&config)?;
    restarted.dir = dir;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = restarted.rss_kib();
    restarted.stop();
    let stored = made + topped;
    let worst = live.max(idle);
    r.num("w8_rss_live_kib", live as f64);
    r.num("w8_rss_restarted_kib", idle as f64);
    r.speed(
        "8",
        &format!(
            "idle footprint: {} registered users, {} stored messages",
            fmt_int(registered.load(Ordering::Relaxed) as f64),
            fmt_int(stored as f64)
        ),
        format!(
            "RSS {:.1} MiB idle after filling ({:.0} s), {:.1} MiB after a restart",
            live as f64 / 1024.0,
            fill_time.as_secs_f64(),
            idle as f64 / 1024.0
        ),
        "",
        "≤ 100 MiB",
        worst <= 100 * 1024,
    );
    Ok(())
}
