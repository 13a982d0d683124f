//! The workloads of issue #13, the report table, and the targets: the pieces they share here,
//! one file per workload beside it.

mod capacity;
mod events;
mod legacy_fanout;
mod legacy_storm;
mod many_keepalives;
mod metrics;
#[cfg(feature = "pg")]
mod nodes;
#[cfg(feature = "pg")]
mod notify;
mod parked;
#[cfg(feature = "pg")]
mod postgres;
mod writes;

use crate::client::{self, Guest, Mode, Shared};
use crate::keepalive::{self, Keepalives};
use crate::servers::{self, Server};
use futures_util::future::join_all;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Sizes of every workload; the smoke run is tiny.
struct Scale {
    smoke: bool,
    /// Listeners in the login storm and the `/events` fan-out.
    storm: usize,
    legacy_listeners: usize,
    phase: Duration,
    posters: usize,
    parked: usize,
    writers: usize,
    users: usize,
    messages: u64,
    signers: usize,
    keepalive_clients: usize,
    /// Sessions sending keepalives as the original clients do, and for how long.
    keepalive_sessions: usize,
    keepalive_length: Duration,
    /// How long a legacy storm may take to drain before it counts as not drained.
    legacy_limit: Duration,
    /// Workload 11: sessions online, members per chat, messages per second and for how long,
    /// how long a storm may take before it counts as not drained, and the storms run under both
    /// presence scopes.
    capacity_sessions: usize,
    capacity_chat_size: usize,
    capacity_rate: f64,
    capacity_length: Duration,
    capacity_wait: Duration,
    capacity_compare: Vec<usize>,
}

fn scale(smoke: bool) -> Scale {
    if smoke {
        Scale {
            smoke,
            storm: 24,
            legacy_listeners: 10,
            phase: Duration::from_millis(1500),
            posters: 2,
            parked: 200,
            writers: 8,
            users: 50,
            messages: 600,
            signers: 2,
            keepalive_clients: 4,
            keepalive_sessions: 50,
            keepalive_length: Duration::from_secs(3),
            legacy_limit: Duration::from_secs(30),
            capacity_sessions: 40,
            capacity_chat_size: 10,
            capacity_rate: 50.0,
            capacity_length: Duration::from_secs(3),
            capacity_wait: Duration::from_secs(30),
            capacity_compare: vec![20, 40],
        }
    } else {
        Scale {
            smoke,
            storm: 1000,
            legacy_listeners: 100,
            phase: Duration::from_secs(10),
            // Enough that 100 posts/s is reachable when a post takes up to 80 ms.
            posters: 8,
            parked: 10_000,
            writers: 64,
            users: 10_000,
            messages: 100_000,
            signers: 20,
            keepalive_clients: 32,
            keepalive_sessions: 10_000,
            // Three and a half keepalive periods.
            keepalive_length: Duration::from_secs(35),
            legacy_limit: Duration::from_secs(120),
            capacity_sessions: 10_000,
            capacity_chat_size: 100,
            capacity_rate: 50.0,
            capacity_length: Duration::from_secs(60),
            capacity_wait: Duration::from_secs(300),
            capacity_compare: vec![1000, 2000],
        }
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Report

enum Verdict {
    Pass,
    Fail,
    /// A speed figure in a smoke run, or a figure without a target.
    Info,
    Skipped,
}

struct Row {
    id: &'static str,
    what: String,
    natter: String,
    baseline: String,
    target: String,
    verdict: Verdict,
}

pub struct Report {
    rows: Vec<Row>,
    json: Map<String, Value>,
    failures: Vec<String>,
    smoke: bool,
    fds: u64,
}

impl Report {
    fn row(
        &mut self,
        id: &'static str,
        what: &str,
        natter: String,
        baseline: &str,
        target: &str,
        verdict: Verdict,
    ) {
        self.rows.push(Row {
            id,
            what: what.to_owned(),
            natter,
            baseline: baseline.to_owned(),
            target: target.to_owned(),
            verdict,
        });
    }

    /// A speed target: judged in the full run only.
    fn speed(
        &mut self,
        id: &'static str,
        what: &str,
        natter: String,
        baseline: &str,
        target: &str,
        met: bool,
    ) {
        let verdict = match (self.smoke, met) {
            (true, _) => Verdict::Info,
            (false, true) => Verdict::Pass,
            (false, false) => Verdict::Fail,
        };
        self.row(id, what, natter, baseline, target, verdict);
    }

    /// A correctness check: judged in every run, and a failure fails the smoke run.
    fn correct_row(
        &mut self,
        id: &'static str,
        what: &str,
        natter: String,
        target: &str,
        ok: bool,
    ) {
        if !ok {
            self.failures.push(format!("{id} {what}: {natter}"));
        }
        let verdict = if ok { Verdict::Pass } else { Verdict::Fail };
        self.row(id, what, natter, "", target, verdict);
    }

    fn num(&mut self, key: &str, value: f64) {
        let value = (value * 1000.0).round() / 1000.0;
        self.json.insert(key.to_owned(), json!(value));
    }

    fn error(&mut self, id: &'static str, what: &str, err: String) {
        self.failures.push(format!("{id} {what}: {err}"));
        self.row(id, what, format!("error: {err}"), "", "", Verdict::Fail);
    }

    pub fn correct(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn print(&self, smoke: bool, load_before: &str, load_after: &str, took: Duration) {
        println!();
        println!(
            "## natter load benchmark{} — load average {load_before} before, {load_after} after; {} s; fd limit {}",
            if smoke {
                " (smoke: tiny scale, speed not judged)"
            } else {
                ""
            },
            took.as_secs(),
            self.fds
        );
        println!();
        println!("| # | workload | natter | baseline | target | result |");
        println!("|---|---|---|---|---|---|");
        for r in &self.rows {
            let verdict = match r.verdict {
                Verdict::Pass => "PASS",
                Verdict::Fail => "FAIL",
                Verdict::Info => "–",
                Verdict::Skipped => "skipped",
            };
            println!(
                "| {} | {} | {} | {} | {} | {verdict} |",
                r.id, r.what, r.natter, r.baseline, r.target
            );
        }
        println!();
        for r in &self.rows {
            match r.verdict {
                Verdict::Pass => println!("PASS {} {}", r.id, r.what),
                Verdict::Fail => println!("FAIL {} {}", r.id, r.what),
                _ => {}
            }
        }
        for f in &self.failures {
            println!("correctness failure: {f}");
        }
        let mut json = self.json.clone();
        json.insert("smoke".into(), json!(smoke));
        json.insert("load_before".into(), json!(load_before));
        json.insert("load_after".into(), json!(load_after));
        json.insert("seconds".into(), json!(took.as_secs()));
        let results: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({"id": r.id, "what": r.what, "natter": r.natter, "baseline": r.baseline,
                       "target": r.target, "result": match r.verdict {
                           Verdict::Pass => "pass", Verdict::Fail => "fail",
                           Verdict::Info => "info", Verdict::Skipped => "skipped" }})
            })
            .collect();
        json.insert("rows".into(), Value::Array(results));
        println!("BENCH_JSON {}", Value::Object(json));
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn fmt_int(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Listeners of one chat, the posters that feed them, and the marks that prove delivery.
struct Crowd {
    addr: SocketAddr,
    shared: Arc<Shared>,
    n: usize,
    handles: Vec<JoinHandle<client::Report>>,
    posters: Vec<Guest>,
    next_mark: usize,
    /// Every listener's keepalives, sent as the original clients do.
    keepalives: Arc<Keepalives>,
}

/// What one posting phase did.
struct PhaseRun {
    posted: u64,
    start: Instant,
    /// Until every listener saw the phase's closing mark.
    drained: Option<Instant>,
    cpu: Duration,
    /// The load generator's own CPU time over the same span.
    client_cpu: Duration,
    /// What the side task run during the phase returned (sign-ins completed).
    side: u64,
}

/// Summed over listeners.
struct PhaseStats {
    delivered: u64,
    expected: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    short_listeners: usize,
    /// Delivered messages per answer that carried any.
    per_answer: f64,
}

impl Crowd {
    /// Logs in `posters`, then `n` listeners 64 at a time, each listening as soon as it has joined.
    /// Returns once every listener has joined.
    async fn storm(
        addr: SocketAddr,
        n: usize,
        mode: Mode,
        posters: usize,
        tag: &str,
    ) -> Result<(Crowd, Duration), String> {
        let shared = Shared::new();
        let mut poster_guests = Vec::new();
        for i in 0..posters.max(1) {
            let mut g = Guest::login(addr, &format!("{tag}poster{i}")).await?;
            g.join("Main").await?;
            poster_guests.push(g);
        }
        let start = Instant::now();
        let gate = Arc::new(tokio::sync::Semaphore::new(64));
        let keepalives = Keepalives::new(addr);
        let mut handles = Vec::new();
        for i in 0..n {
            let gate = gate.clone();
            let shared = shared.clone();
            let keepalives = keepalives.clone();
            let name = format!("{tag}{i}");
            handles.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await.expect("open semaphore");
                let setup = async {
                    let mut g = Guest::login(addr, &name).await?;
                    let queue = match mode {
                        Mode::Events => Some(g.open_queue().await?),
                        Mode::Legacy => None,
                    };
                    g.join("Main").await?;
                    Ok::<_, String>((g, queue))
                }
                .await;
                drop(permit);
                shared.joined.fetch_add(1, Ordering::AcqRel);
                match setup {
                    Ok((g, queue)) => {
                        keepalives.start(g.cookie.clone());
                        client::listen(g, mode, queue, shared).await
                    }
                    Err(e) => client::Report {
                        error: Some(e),
                        ..Default::default()
                    },
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        while shared.joined.load(Ordering::Acquire) < n {
            if Instant::now() > deadline {
                shared.abort.store(true, Ordering::Release);
                return Err("listeners did not finish joining within 600 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = start.elapsed();
        Ok((
            Crowd {
                addr,
                shared,
                n,
                handles,
                posters: poster_guests,
                next_mark: 0,
                keepalives,
            },
            took,
        ))
    }

    /// Posts a marker and waits until every listener has it: everything before it is delivered.
    async fn mark(&mut self, limit: Duration) -> Result<bool, String> {
        let k = self.next_mark;
        self.next_mark += 1;
        self.posters[0].post(&format!("mark{k}")).await?;
        Ok(self.shared.wait_mark(k, self.n, limit).await)
    }

    /// Posts phase `phase` for `length`: flat out from every poster, or at `rate` posts/s in all.
    async fn phase(
        &mut self,
        server: &Server,
        phase: usize,
        length: Duration,
        rate: Option<f64>,
        during: Option<&(dyn Fn() -> JoinHandle<u64> + Sync)>,
    ) -> Result<PhaseRun, String> {
        let cpu0 = server.cpu();
        let client_cpu0 = servers::cpu_time(std::process::id());
        let start = Instant::now();
        let end = start + length;
        let shared = self.shared.clone();
        let side = during.map(|f| f());
        let count = self.posters.len();
        let results = join_all(self.posters.iter_mut().enumerate().map(|(i, p)| {
            let shared = shared.clone();
            async move {
                let mut posted = 0u64;
                let mut tick = rate.map(|r| {
                    let period = Duration::from_secs_f64(count as f64 / r);
                    let first = tokio::time::Instant::from_std(start)
                        + period.mul_f64(i as f64 / count as f64);
                    let mut t = tokio::time::interval_at(first, period);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    t
                });
                loop {
                    if let Some(t) = tick.as_mut() {
                        t.tick().await;
                    }
                    if Instant::now() >= end {
                        break;
                    }
                    p.post(&client::stamped(phase, &shared)).await?;
                    posted += 1;
                }
                Ok::<u64, String>(posted)
            }
        }))
        .await;
        let mut posted = 0;
        for r in results {
            posted += r?;
        }
        let side = match side {
            Some(side) => side.await.unwrap_or(0),
            None => 0,
        };
        let limit = Duration::from_secs(if posted > 0 { 120 } else { 10 });
        let drained = self.mark(limit).await?.then(Instant::now);
        let cpu = server.cpu().saturating_sub(cpu0);
        let client_cpu = servers::cpu_time(std::process::id()).saturating_sub(client_cpu0);
        Ok(PhaseRun {
            posted,
            start,
            drained,
            cpu,
            client_cpu,
            side,
        })
    }

    /// Ends every listener with an "end" message and collects their reports.
    async fn finish(mut self) -> Vec<client::Report> {
        if self.posters[0].post("end").await.is_err() {
            // A drain longer than inactivity_timeout took the idle poster offline: post as a new guest.
            if let Ok(mut closer) = Guest::login(self.addr, "closer").await
                && closer.join("Main").await.is_ok()
            {
                let _ = closer.post("end").await;
            }
        }
        let mut reports = Vec::new();
        let give_up = Instant::now() + Duration::from_secs(30);
        for h in self.handles {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.shared.abort.store(true, Ordering::Release);
            }
            match tokio::time::timeout(left.max(Duration::from_secs(10)), h).await {
                Ok(Ok(r)) => reports.push(r),
                _ => {
                    self.shared.abort.store(true, Ordering::Release);
                    reports.push(client::Report {
                        error: Some("listener did not end".into()),
                        ..Default::default()
                    });
                }
            }
        }
        let _ = self.addr;
        reports
    }
}

fn phase_stats(reports: &[client::Report], phase: usize, run: &PhaseRun) -> PhaseStats {
    let mut latencies = Vec::new();
    let mut delivered = 0;
    let mut last = run.start;
    let mut short = 0;
    let mut answers = 0;
    for r in reports {
        match r.phases.get(phase) {
            Some(p) => {
                delivered += p.count;
                answers += p.answers;
                latencies.extend_from_slice(&p.latencies_us);
                if let Some(l) = p.last {
                    last = last.max(l);
                }
                if p.count != run.posted {
                    short += 1;
                }
            }
            None if run.posted > 0 => short += 1,
            None => {}
        }
    }
    latencies.sort_unstable();
    let span = (last - run.start).as_secs_f64().max(1e-3);
    PhaseStats {
        delivered,
        expected: run.posted * reports.len() as u64,
        per_second: delivered as f64 / span,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().map_or(f64::NAN, |&m| m as f64 / 1000.0),
        short_listeners: short,
        per_answer: delivered as f64 / answers.max(1) as f64,
    }
}

/// Whether every listener ended cleanly, in order and without overflow.
fn clean(reports: &[client::Report]) -> (usize, usize, usize, Option<String>) {
    let overflowed = reports.iter().filter(|r| r.overflowed).count();
    let disordered = reports.iter().filter(|r| r.disorder).count();
    let errors = reports
        .iter()
        .filter(|r| r.error.is_some() || !r.ended)
        .count();
    let first = reports.iter().find_map(|r| r.error.clone());
    (overflowed, disordered, errors, first)
}

// ---------------------------------------------------------------------------------------------
// Workloads

pub async fn run_all(smoke: bool, fds: u64) -> Report {
    let s = scale(smoke);
    let mut r = Report {
        rows: Vec::new(),
        json: Map::new(),
        failures: Vec::new(),
        smoke,
        fds,
    };
    let baseline = Server::baseline();
    let steps: [(&'static str, &str); 10] = [
        ("1/3", "events storm and fan-out"),
        ("3", "legacy storm"),
        ("2/6/7", "legacy fan-out, keepalive, sign-in storm"),
        ("4", "parked polls"),
        ("5/8", "durable writes, idle footprint"),
        ("9", "metrics"),
        ("10", "keepalives from many sessions"),
        ("11", "capacity: 10,000 online, the morning storm"),
        ("12", "the PostgreSQL store against sled"),
        ("13", "several nodes"),
    ];
    for (i, (id, what)) in steps.iter().enumerate() {
        if id.is_empty() {
            break;
        }
        // BENCH_ONLY=7 or BENCH_ONLY=1,4 runs only the steps holding those workloads.
        if let Ok(only) = std::env::var("BENCH_ONLY")
            && !only
                .split(',')
                .any(|w| id.split('/').any(|x| x == w.trim()))
        {
            continue;
        }
        eprintln!("[bench] {id} {what} (load {})", loadavg());
        let result = match i {
            0 => events::events(&s, &mut r).await,
            1 => legacy_storm::legacy_storm(&s, &mut r).await,
            2 => legacy_fanout::legacy_fanout(&s, &mut r, &baseline).await,
            3 => parked::parked(&s, &mut r, &baseline).await,
            4 => writes::writes(&s, &mut r).await,
            5 => metrics::metrics(&s, &mut r).await,
            6 => many_keepalives::many_keepalives(&s, &mut r).await,
            7 => capacity::capacity(&s, &mut r).await,
            #[cfg(feature = "pg")]
            8 => postgres::postgres(&s, &mut r).await,
            #[cfg(feature = "pg")]
            _ => nodes::nodes(&s, &mut r).await,
            #[cfg(not(feature = "pg"))]
            _ => Ok(()),
        };
        if let Err(e) = result {
            r.error(id, what, e);
        }
    }
    baseline.stop();
    r
}

/// One correctness row and its figures: how many of a workload's keepalives failed, each
/// session's sent on a connection of its own.
fn keepalive_row(
    r: &mut Report,
    id: &'static str,
    workload: &str,
    key: &str,
    kept: &keepalive::Tally,
) {
    keepalive_row_on(r, id, workload, key, kept, "their own connections");
}

/// As [`keepalive_row`], with keepalives sent on `connections`.
fn keepalive_row_on(
    r: &mut Report,
    id: &'static str,
    workload: &str,
    key: &str,
    kept: &keepalive::Tally,
    connections: &str,
) {
    r.num(&format!("{key}_keepalives_sent"), kept.sent as f64);
    r.num(&format!("{key}_keepalives_failed"), kept.failed as f64);
    r.correct_row(
        id,
        &format!(
            "{workload}: keepalives {} s after each answer on {connections}, failed",
            keepalive::PERIOD.as_secs()
        ),
        kept.describe(),
        "0",
        kept.clean(),
    );
}
