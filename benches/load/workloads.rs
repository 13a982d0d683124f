//! The workloads of issue #13, the report table, and the targets.

use crate::client::{self, Guest, Mode, Shared};
use crate::http::Conn;
use crate::keepalive::{self, Keepalives};
use crate::servers::{self, Server};
use futures_util::future::join_all;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    let steps: [(&'static str, &str); 8] = [
        ("1/3", "events storm and fan-out"),
        ("3", "legacy storm"),
        ("2/6/7", "legacy fan-out, keepalive, sign-in storm"),
        ("4", "parked polls"),
        ("5/8", "durable writes, idle footprint"),
        ("9", "metrics"),
        ("10", "keepalives from many sessions"),
        ("", ""),
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
            0 => events(&s, &mut r).await,
            1 => legacy_storm(&s, &mut r).await,
            2 => legacy_fanout(&s, &mut r, &baseline).await,
            3 => parked(&s, &mut r, &baseline).await,
            4 => writes(&s, &mut r).await,
            5 => metrics(&s, &mut r).await,
            _ => many_keepalives(&s, &mut r).await,
        };
        if let Err(e) = result {
            r.error(id, what, e);
        }
    }
    baseline.stop();
    r
}

/// Workloads 3 (login storm on `/events`) and 1 (fan-out to the same listeners).
async fn events(s: &Scale, r: &mut Report) -> Result<(), String> {
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

/// Workload 3 on the legacy `/poll`.
async fn legacy_storm(s: &Scale, r: &mut Report) -> Result<(), String> {
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
async fn legacy_fanout(s: &Scale, r: &mut Report, baseline: &Server) -> Result<(), String> {
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
async fn parked(s: &Scale, r: &mut Report, baseline: &Server) -> Result<(), String> {
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

/// Logs in `count` guests who joined Main.
async fn writers(addr: SocketAddr, count: usize, tag: &str) -> Result<Vec<Guest>, String> {
    let logged = join_all((0..count).map(|i| async move {
        let mut g = Guest::login(addr, &format!("{tag}{i}")).await?;
        g.join("Main").await?;
        Ok::<Guest, String>(g)
    }))
    .await;
    logged.into_iter().collect()
}

/// Every writer posts until `until` or until `budget` posts are made in all: posts made.
async fn write_flat(guests: &mut [Guest], until: Instant, budget: u64) -> Result<u64, String> {
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
async fn writes(s: &Scale, r: &mut Report) -> Result<(), String> {
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

/// Workload 9: fan-out with metrics on vs off, once `metrics.listen` is accepted.
async fn metrics(s: &Scale, r: &mut Report) -> Result<(), String> {
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

/// One correctness row and its figures: how many of a workload's keepalives failed.
fn keepalive_row(
    r: &mut Report,
    id: &'static str,
    workload: &str,
    key: &str,
    kept: &keepalive::Tally,
) {
    r.num(&format!("{key}_keepalives_sent"), kept.sent as f64);
    r.num(&format!("{key}_keepalives_failed"), kept.failed as f64);
    r.correct_row(
        id,
        &format!(
            "{workload}: keepalives {} s after each answer on their own connections, failed",
            keepalive::PERIOD.as_secs()
        ),
        kept.describe(),
        "0",
        kept.clean(),
    );
}

/// Workload 10: many signed-in sessions that only send keepalives, as the original clients do
/// between polls; none may fail (idle kept-alive connections must outlive the keepalive period).
async fn many_keepalives(s: &Scale, r: &mut Report) -> Result<(), String> {
    // Unpolled default queues stay small: this workload is about connections, not events.
    let server = Server::natter("event_queue_capacity = 16", "")?;
    let n = s.keepalive_sessions;
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let logins = join_all((0..n).map(|i| {
        let gate = gate.clone();
        let addr = server.addr;
        async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            // The login connection closes here: each session keeps only its keepalive connection.
            Guest::login(addr, &format!("ka{i}"))
                .await
                .map(|g| g.cookie)
        }
    }))
    .await;
    let keepalives = Keepalives::new(server.addr);
    for cookie in logins {
        keepalives.start(cookie?);
    }
    tokio::time::sleep(s.keepalive_length).await;
    let kept = keepalives.finish().await;
    server.stop();
    keepalive_row(
        r,
        "10",
        &format!(
            "{} signed-in sessions for {} s",
            fmt_int(n as f64),
            s.keepalive_length.as_secs()
        ),
        "w10",
        &kept,
    );
    Ok(())
}
