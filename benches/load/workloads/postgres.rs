//! Workload 12: the PostgreSQL store (`storage = "postgres"`) against sled with `durability =
//! "sync"`, on the same machine. The benchmark starts its own PostgreSQL with `fsync` on, as in
//! production: a 200 means flushed to disk in both.

use super::writes::{write_flat, writers};
use super::{Crowd, Report, Scale, Verdict, fmt_int, percentile, phase_stats};
use crate::client::{Guest, Mode};
use crate::servers::Server;
use futures_util::future::join_all;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Guests whose sign-in and join are timed, 16 at a time.
const TIMED_GUESTS: usize = 200;

/// What one backend measured.
struct Figures {
    posts_per_s: f64,
    deliveries_per_s: f64,
    /// p50 and p99 in ms.
    sign_in: (f64, f64),
    join: (f64, f64),
}

pub(super) async fn postgres(s: &Scale, r: &mut Report) -> Result<(), String> {
    let Some(cluster) = crate::cluster::Cluster::start_durable().await else {
        r.row(
            "12",
            "the PostgreSQL store against sled",
            "skipped: no PostgreSQL binaries (apt-get install postgresql)".into(),
            "",
            "",
            Verdict::Skipped,
        );
        return Ok(());
    };
    let common = "password_iterations = 1000\npoll_timeout = \"5s\"\ndurability = \"sync\"";
    let sled = measure(s, || Server::natter(common, "")).await?;
    // Each PostgreSQL run gets a database of its own.
    let mut urls = Vec::new();
    for n in 1..=3 {
        urls.push(cluster.create_db(&format!("w12_{n}")).await);
    }
    let mut urls = urls.into_iter();
    let postgres = measure(s, || {
        let url = urls.next().ok_or("no database left")?;
        Server::natter(
            &format!("{common}\nstorage = \"postgres\"\ndatabase_url = \"{url}\""),
            "",
        )
    })
    .await?;
    report(s, r, &sled, &postgres);
    Ok(())
}

/// Sign-ins and joins, durable posts, then the fan-out, each on a fresh server from `start`.
async fn measure(
    s: &Scale,
    mut start: impl FnMut() -> Result<Server, String>,
) -> Result<Figures, String> {
    let server = start()?;
    let (sign_in, join) = timed_sign_ins(server.addr).await?;
    server.stop();

    let server = start()?;
    let mut guests = writers(server.addr, s.writers, "w").await?;
    let t = Instant::now();
    let made = write_flat(&mut guests, t + s.phase, u64::MAX).await?;
    let posts_per_s = made as f64 / t.elapsed().as_secs_f64();
    drop(guests);
    server.stop();

    let server = start()?;
    let (mut crowd, _) = Crowd::storm(server.addr, s.storm, Mode::Events, s.posters, "f").await?;
    if !crowd.mark(Duration::from_secs(300)).await? {
        return Err("the fan-out listeners never drained".into());
    }
    let run = crowd.phase(&server, 0, s.phase, None, None).await?;
    let reports = crowd.finish().await;
    let deliveries_per_s = phase_stats(&reports, 0, &run).per_second;
    server.stop();
    Ok(Figures {
        posts_per_s,
        deliveries_per_s,
        sign_in,
        join,
    })
}

/// p50 and p99 (ms) of guest sign-ins and of joins to Main, `TIMED_GUESTS` of each.
async fn timed_sign_ins(addr: SocketAddr) -> Result<((f64, f64), (f64, f64)), String> {
    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    let timed = join_all((0..TIMED_GUESTS).map(|i| {
        let gate = gate.clone();
        async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            let t = Instant::now();
            let mut guest = Guest::login(addr, &format!("t{i}")).await?;
            let signed_in = t.elapsed();
            let t = Instant::now();
            guest.join("Main").await?;
            Ok::<(Duration, Duration), String>((signed_in, t.elapsed()))
        }
    }))
    .await;
    let mut sign_ins = Vec::new();
    let mut joins = Vec::new();
    for one in timed {
        let (a, b) = one?;
        sign_ins.push(a.as_micros() as u32);
        joins.push(b.as_micros() as u32);
    }
    sign_ins.sort_unstable();
    joins.sort_unstable();
    let p = |v: &[u32]| (percentile(v, 0.5), percentile(v, 0.99));
    Ok((p(&sign_ins), p(&joins)))
}

fn report(s: &Scale, r: &mut Report, sled: &Figures, pg: &Figures) {
    r.num("w12_sled_posts_per_s", sled.posts_per_s);
    r.num("w12_postgres_posts_per_s", pg.posts_per_s);
    r.num("w12_sled_deliveries_per_s", sled.deliveries_per_s);
    r.num("w12_postgres_deliveries_per_s", pg.deliveries_per_s);
    r.num("w12_sled_sign_in_p99_ms", sled.sign_in.1);
    r.num("w12_postgres_sign_in_p99_ms", pg.sign_in.1);
    r.num("w12_sled_join_p99_ms", sled.join.1);
    r.num("w12_postgres_join_p99_ms", pg.join.1);
    let posts = pg.posts_per_s / sled.posts_per_s;
    r.speed(
        "12",
        &format!(
            "durable writes: postMessage from {} posters, PostgreSQL store vs sled `sync`",
            s.writers
        ),
        format!(
            "{} vs {} posts/s ({posts:.2}×)",
            fmt_int(pg.posts_per_s),
            fmt_int(sled.posts_per_s)
        ),
        "",
        "≥ 0.5× sled",
        posts >= 0.5,
    );
    let fanout = pg.deliveries_per_s / sled.deliveries_per_s;
    r.speed(
        "12",
        &format!(
            "fan-out to {} `/events` listeners, PostgreSQL store vs sled",
            s.storm
        ),
        format!(
            "{} vs {} deliveries/s ({fanout:.2}×)",
            fmt_int(pg.deliveries_per_s),
            fmt_int(sled.deliveries_per_s)
        ),
        "",
        "≥ 0.8× sled",
        fanout >= 0.8,
    );
    r.row(
        "12",
        &format!("{TIMED_GUESTS} guest sign-ins and joins, 16 at a time: p50 / p99"),
        format!(
            "PostgreSQL sign-in {:.1} / {:.1} ms, join {:.1} / {:.1} ms; sled sign-in {:.1} / {:.1} ms, join {:.1} / {:.1} ms",
            pg.sign_in.0,
            pg.sign_in.1,
            pg.join.0,
            pg.join.1,
            sled.sign_in.0,
            sled.sign_in.1,
            sled.join.0,
            sled.join.1
        ),
        "",
        "",
        Verdict::Info,
    );
}
