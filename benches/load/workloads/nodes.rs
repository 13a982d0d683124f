//! Workload 13: several nodes (`cluster = true`) on one PostgreSQL with `fsync` on, behind a real
//! nginx round robin, for 1, 2 and 3 nodes: durable posts, the fan-out to `/events` readers in one
//! chat, and a guest login storm, with each node's CPU per 1,000 delivered events. On one machine
//! the nodes share its cores, so the rows show what the shared bus costs, not how nodes scale.

use super::writes::{write_flat, writers};
use super::{Crowd, Report, Scale, Verdict, clean, fmt_int, percentile, phase_stats};
use crate::client::{Guest, Mode};
use crate::cluster::Cluster;
use crate::nginx::Nginx;
use crate::servers::{self, Server};
use futures_util::future::join_all;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) const WHAT: &str = "several nodes behind nginx";

/// Logins in flight at once in the storm.
const STORM_CONCURRENCY: usize = 64;

/// What one node count measured.
struct Figures {
    nodes: usize,
    posts_per_s: f64,
    /// The same posters each talking to one node directly, spread evenly: nginx's share.
    direct_posts_per_s: f64,
    logins_per_s: f64,
    /// p50 and p99 in ms.
    login: (f64, f64),
    deliveries_per_s: f64,
    delivered: u64,
    /// Each node's CPU over the fan-out phase, then PostgreSQL's and nginx's.
    node_cpu: Vec<Duration>,
    pg_cpu: Duration,
    nginx_cpu: Duration,
}

/// Nodes on one database and nginx in front of them.
struct Installation {
    nodes: Vec<Server>,
    nginx: Nginx,
}

impl Installation {
    /// `count` nodes on a new database `db`: the first alone (it makes the schema), then the others.
    async fn start(cluster: &Cluster, db: &str, count: usize) -> Result<Option<Self>, String> {
        let url = cluster.create_db(db).await;
        let mut nodes = Vec::new();
        for i in 1..=count {
            nodes.push(Server::natter(
                &format!(
                    "password_iterations = 1000\npoll_timeout = \"5s\"\nstorage = \"postgres\"\n\
                     database_url = \"{url}\"\ncluster = true\nnode_name = \"node{i}\"\n\
                     trusted_proxies = [\"127.0.0.1\"]"
                ),
                "",
            )?);
        }
        let upstreams: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        Ok(Nginx::start(&upstreams)?.map(|nginx| Installation { nodes, nginx }))
    }

    fn cpu(&self) -> Vec<Duration> {
        self.nodes.iter().map(Server::cpu).collect()
    }

    fn stop(self) {
        drop(self.nginx);
        for node in self.nodes {
            node.stop();
        }
    }
}

pub(super) async fn nodes(s: &Scale, r: &mut Report) -> Result<(), String> {
    let Some(cluster) = Cluster::start_durable().await else {
        r.row(
            "13",
            WHAT,
            "skipped: no PostgreSQL binaries (apt-get install postgresql)".into(),
            "",
            "",
            Verdict::Skipped,
        );
        return Ok(());
    };
    let postmaster = servers::postmaster_pid(cluster.port);
    let logins = if s.smoke { 50 } else { 1000 };
    let mut all = Vec::new();
    for count in 1..=3 {
        eprintln!("[bench] 13: {count} node(s)");
        // Logins and posts on one installation, the fan-out on a fresh one: the posters'
        // sessions would otherwise be members of the readers' chat with queues nobody reads.
        let Some(install) = Installation::start(&cluster, &format!("w13_{count}_a"), count).await?
        else {
            r.row(
                "13",
                WHAT,
                "skipped: no nginx (apt-get install nginx, or set BENCH_NGINX_BIN)".into(),
                "",
                "",
                Verdict::Skipped,
            );
            return Ok(());
        };
        let addr = install.nginx.addr;
        let (logins_per_s, login) = login_storm(addr, logins).await?;
        let mut guests = writers(addr, s.writers, "w").await?;
        let t = Instant::now();
        let made = write_flat(&mut guests, t + s.phase, u64::MAX).await?;
        let posts_per_s = made as f64 / t.elapsed().as_secs_f64();
        drop(guests);
        install.stop();

        let install = Installation::start(&cluster, &format!("w13_{count}_c"), count)
            .await?
            .ok_or("nginx went away")?;
        let addrs: Vec<SocketAddr> = install.nodes.iter().map(|n| n.addr).collect();
        let mut guests = spread_writers(&addrs, s.writers).await?;
        let t = Instant::now();
        let made = write_flat(&mut guests, t + s.phase, u64::MAX).await?;
        let direct_posts_per_s = made as f64 / t.elapsed().as_secs_f64();
        drop(guests);
        install.stop();

        let install = Installation::start(&cluster, &format!("w13_{count}_b"), count)
            .await?
            .ok_or("nginx went away")?;
        let addr = install.nginx.addr;
        let (mut crowd, _) = Crowd::storm(addr, s.storm, Mode::Events, s.posters, "f").await?;
        if !crowd.mark(Duration::from_secs(300)).await? {
            return Err(format!("{count} node(s): the readers never drained"));
        }
        let cpu0 = install.cpu();
        let pg0 = postmaster.map(servers::tree_cpu_time).unwrap_or_default();
        let nginx0 = install.nginx.cpu();
        let run = crowd
            .phase(&install.nodes[0], 0, s.phase, None, None)
            .await?;
        let node_cpu = install
            .cpu()
            .iter()
            .zip(&cpu0)
            .map(|(after, before)| after.saturating_sub(*before))
            .collect();
        let pg_cpu = postmaster
            .map(servers::tree_cpu_time)
            .unwrap_or_default()
            .saturating_sub(pg0);
        let nginx_cpu = install.nginx.cpu().saturating_sub(nginx0);
        let keepalives = crowd.keepalives.clone();
        let reports = crowd.finish().await;
        keepalives.finish().await;
        let stats = phase_stats(&reports, 0, &run);
        let (overflowed, disordered, errors, first_error) = clean(&reports);
        let first_disorder = reports.iter().find_map(|r| r.disorder_seen.clone());
        install.stop();
        r.correct_row(
            "13",
            &format!(
                "{count} node(s): fan-out readers short, overflowed, out of order, or failed"
            ),
            format!(
                "{} of {} short, {overflowed} overflowed, {disordered} out of order{}, {errors} failed{}",
                stats.short_listeners,
                reports.len(),
                first_disorder
                    .map(|d| format!(" (first: {d})"))
                    .unwrap_or_default(),
                first_error
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            ),
            "0",
            stats.short_listeners == 0 && overflowed == 0 && disordered == 0 && errors == 0,
        );
        all.push(Figures {
            nodes: count,
            posts_per_s,
            direct_posts_per_s,
            logins_per_s,
            login,
            deliveries_per_s: stats.per_second,
            delivered: stats.delivered,
            node_cpu,
            pg_cpu,
            nginx_cpu,
        });
    }
    report(s, r, logins, &all);
    super::notify::notify(s, r, &cluster).await
}

/// `count` guests who joined Main, guest `i` on node `i mod nodes` and staying there.
async fn spread_writers(addrs: &[SocketAddr], count: usize) -> Result<Vec<Guest>, String> {
    let logged = join_all((0..count).map(|i| async move {
        let mut g = Guest::login(addrs[i % addrs.len()], &format!("d{i}")).await?;
        g.join("Main").await?;
        Ok::<Guest, String>(g)
    }))
    .await;
    logged.into_iter().collect()
}

/// `n` guest logins through nginx, `STORM_CONCURRENCY` at a time: logins/s and p50/p99 (ms).
async fn login_storm(addr: SocketAddr, n: usize) -> Result<(f64, (f64, f64)), String> {
    let gate = Arc::new(tokio::sync::Semaphore::new(STORM_CONCURRENCY));
    let t = Instant::now();
    let timed = join_all((0..n).map(|i| {
        let gate = gate.clone();
        async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            let t = Instant::now();
            Guest::login(addr, &format!("storm{i}")).await?;
            Ok::<u32, String>(t.elapsed().as_micros() as u32)
        }
    }))
    .await;
    let took = t.elapsed();
    let mut latencies = timed.into_iter().collect::<Result<Vec<_>, _>>()?;
    latencies.sort_unstable();
    Ok((
        n as f64 / took.as_secs_f64(),
        (percentile(&latencies, 0.5), percentile(&latencies, 0.99)),
    ))
}

/// ms of CPU per 1,000 delivered events.
fn per_thousand(cpu: Duration, delivered: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64
}

fn report(s: &Scale, r: &mut Report, logins: usize, all: &[Figures]) {
    for f in all {
        let n = f.nodes;
        r.num(&format!("w13_{n}_posts_per_s"), f.posts_per_s);
        r.num(&format!("w13_{n}_direct_posts_per_s"), f.direct_posts_per_s);
        r.num(&format!("w13_{n}_deliveries_per_s"), f.deliveries_per_s);
        r.num(&format!("w13_{n}_logins_per_s"), f.logins_per_s);
        r.num(&format!("w13_{n}_login_p50_ms"), f.login.0);
        r.num(&format!("w13_{n}_login_p99_ms"), f.login.1);
        let per_node: Vec<String> = f
            .node_cpu
            .iter()
            .enumerate()
            .map(|(i, cpu)| {
                let ms = per_thousand(*cpu, f.delivered);
                r.num(&format!("w13_{n}_node{}_cpu_ms_per_1000", i + 1), ms);
                format!("node{} {ms:.1}", i + 1)
            })
            .collect();
        let pg = per_thousand(f.pg_cpu, f.delivered);
        let nginx = per_thousand(f.nginx_cpu, f.delivered);
        r.num(&format!("w13_{n}_postgres_cpu_ms_per_1000"), pg);
        r.num(&format!("w13_{n}_nginx_cpu_ms_per_1000"), nginx);
        r.row(
            "13",
            &format!(
                "{n} node(s) behind nginx: durable posts/s from {} posters; fan-out deliveries/s to {} \
                 `/events` readers ({} posters); {logins} guest logins {STORM_CONCURRENCY} at a time",
                s.writers, s.storm, s.posters
            ),
            format!(
                "{} posts/s ({} without nginx); {} deliveries/s; {} logins/s, p50 / p99 {:.1} / {:.1} ms",
                fmt_int(f.posts_per_s),
                fmt_int(f.direct_posts_per_s),
                fmt_int(f.deliveries_per_s),
                fmt_int(f.logins_per_s),
                f.login.0,
                f.login.1
            ),
            "",
            "",
            Verdict::Info,
        );
        r.row(
            "13",
            &format!(
                "{n} node(s): CPU ms per 1,000 delivered events over the fan-out ({} delivered)",
                fmt_int(f.delivered as f64)
            ),
            format!(
                "{}; PostgreSQL {pg:.1}, nginx {nginx:.1}",
                per_node.join(", ")
            ),
            "",
            "",
            Verdict::Info,
        );
    }
    r.row(
        "13",
        "how to read these rows",
        format!(
            "every node reads and delivers every change, and all of them share this machine's {} cores \
             with PostgreSQL, nginx and the load generator: the rows show the cost of the shared bus, \
             not scale",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
        "",
        "",
        Verdict::Info,
    );
}
