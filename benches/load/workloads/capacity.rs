//! Workload 11: one node holds 10,000 online users (issue #25). The morning storm brings every
//! session online in chats of 100, nine in ten on `/events` queues that leave out presence and one
//! in ten on the legacy `/poll` with `presence_scope = "shared_chats"`; then messages flow over
//! the chats at a steady rate. The same storm at a smaller size under both presence scopes shows
//! what `shared_chats` saves.

use super::{Report, Scale, Verdict, fmt_int, keepalive_row_on, loadavg, percentile, us};
use crate::client::{Mode, stamped};
use crate::online::{self, Layout, Online, SessionReport, chats_config};
use crate::servers::{self, Server};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// The storm's target: every session online and drained within this.
const STORM_TARGET: Duration = Duration::from_secs(60);

fn layout(s: &Scale, sessions: usize) -> Layout {
    Layout {
        sessions,
        chats: (sessions / s.capacity_chat_size).max(1),
        legacy_every: 10,
    }
}

/// Starts natter with the layout's chats under `scope`; `None` when this build refuses the key.
fn start(layout: &Layout, scope: &str) -> Result<Option<Server>, String> {
    let config = format!(
        "{}\npresence_scope = \"{scope}\"",
        chats_config(layout.chats)
    );
    match Server::natter(&config, "") {
        Ok(server) => Ok(Some(server)),
        Err(log) if log.contains("presence_scope") => Ok(None),
        Err(log) => Err(log),
    }
}

/// What one storm came to, up to the drain.
struct Storm {
    online: Duration,
    /// Until every session had its chat's marker, from the first login.
    drained: Option<Duration>,
    events: u64,
    answers: u64,
    legacy_events: u64,
    cpu: Duration,
    client_cpu: Duration,
    /// Time natter's threads were ready to run but waited for a core.
    waited: Duration,
    load: String,
}

impl Storm {
    fn within_target(&self) -> bool {
        self.drained.is_some_and(|d| d <= STORM_TARGET)
    }

    fn describe(&self, wait: Duration) -> String {
        let drained = match self.drained {
            Some(d) => format!("drained at {:.1} s", d.as_secs_f64()),
            None => format!("not drained after {:.0} s", wait.as_secs_f64()),
        };
        format!(
            "{drained} (all online at {:.1} s); {} events in {} answers, {} of them on `/poll`; \
             server CPU {:.1} s, load generator CPU {:.1} s, natter's threads waiting for a core {:.1} s in all; \
             load average {}",
            self.online.as_secs_f64(),
            fmt_int(self.events as f64),
            fmt_int(self.answers as f64),
            fmt_int(self.legacy_events as f64),
            self.cpu.as_secs_f64(),
            self.client_cpu.as_secs_f64(),
            self.waited.as_secs_f64(),
            self.load
        )
    }
}

/// Brings `layout` online on `server` and waits for the drain.
async fn storm(server: &Server, layout: Layout, wait: Duration) -> Result<(Online, Storm), String> {
    let (cpu0, client_cpu0) = (server.cpu(), servers::cpu_time(std::process::id()));
    let waited0 = server.run_queue_wait();
    let start = Instant::now();
    let (mut online, came) = Online::arrive(server.addr, layout).await?;
    let drained = online
        .mark(wait.saturating_sub(came))
        .await?
        .then(|| start.elapsed());
    let storm = Storm {
        online: came,
        drained,
        events: online.shared.events.load(Ordering::Relaxed),
        answers: online.shared.answers.load(Ordering::Relaxed),
        legacy_events: online.legacy_events.load(Ordering::Relaxed),
        cpu: server.cpu().saturating_sub(cpu0),
        client_cpu: servers::cpu_time(std::process::id()).saturating_sub(client_cpu0),
        waited: server.run_queue_wait().saturating_sub(waited0),
        load: loadavg(),
    };
    Ok((online, storm))
}

/// What the sessions' reports say about the storm: failures as one line each, empty when clean.
fn storm_faults(reports: &[SessionReport], layout: &Layout, scope: &str) -> Vec<String> {
    let count = |f: &dyn Fn(&SessionReport) -> bool| reports.iter().filter(|r| f(r)).count();
    let errors = count(&|r| r.setup_error.is_some() || r.listen.error.is_some() || !r.listen.ended);
    let first_error = reports
        .iter()
        .find_map(|r| r.setup_error.clone().or_else(|| r.listen.error.clone()));
    let unaware = count(&|r| !r.seen.knows_all(layout, r.index));
    let unnoticed = count(&|r| r.seen.join_events != r.seen.join_notices);
    let presence_on_events = count(&|r| {
        r.mode == Mode::Events
            && r.seen.own_presence + r.seen.chat_presence + r.seen.foreign_presence > 0
    });
    let foreign = count(&|r| {
        r.mode == Mode::Legacy && scope == "shared_chats" && r.seen.foreign_presence > 0
    });
    let no_own_login = count(&|r| r.mode == Mode::Legacy && r.seen.own_presence == 0);
    let resynced = count(&|r| r.listen.overflowed);
    let disordered = count(&|r| r.listen.disorder);
    let mut faults = Vec::new();
    let mut fault = |n: usize, what: &str| {
        if n > 0 {
            faults.push(format!("{n} {what}"));
        }
    };
    fault(
        unaware,
        &format!(
            "sessions missed a member of their chat of {}",
            layout.chat_size()
        ),
    );
    fault(
        unnoticed,
        "sessions got ChatJoinEvents and SystemMessageChatJoinEvents in different numbers",
    );
    fault(
        presence_on_events,
        "`/events` sessions got presence events they left out",
    );
    fault(
        foreign,
        "`/poll` sessions got presence of users outside their chat under `shared_chats`",
    );
    fault(no_own_login, "`/poll` sessions missed their own LoginEvent");
    fault(resynced, "sessions got a ResyncEvent or lost their queue");
    fault(disordered, "sessions got events out of order");
    if errors > 0 {
        faults.push(format!(
            "{errors} sessions failed ({})",
            first_error.unwrap_or_else(|| "did not end".into())
        ));
    }
    faults
}

/// The storm at `sessions` under `scope`, with nothing else: drained time and events answered.
async fn compare(
    s: &Scale,
    sessions: usize,
    scope: &str,
) -> Result<Option<(Storm, Vec<String>)>, String> {
    let layout = layout(s, sessions);
    let Some(server) = start(&layout, scope)? else {
        return Ok(None);
    };
    let (online, storm) = storm(&server, layout, s.capacity_wait).await?;
    let keepalives = online.keepalives.clone();
    let reports = online.finish().await;
    keepalives.finish().await;
    server.stop();
    let faults = storm_faults(&reports, &layout, scope);
    Ok(Some((storm, faults)))
}

/// Messages at `rate` per second spread over the chats for `length`, each posted on time as its
/// own request (a slow answer does not hold back the next post). Returns posts per chat and how
/// long each post took to be answered (µs, sorted): a delivery cannot come before its commit.
async fn messages(
    online: &Online,
    rate: f64,
    length: Duration,
) -> Result<(Vec<u64>, Vec<u32>), String> {
    let layout = online.layout;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + length;
    let mut posts = JoinSet::new();
    let mut k = 0usize;
    loop {
        tick.tick().await;
        if Instant::now() >= end {
            break;
        }
        let (c, j) = (k % layout.chats, k / layout.chats);
        let (pool, cookies, shared) = (
            online.pool.clone(),
            online.cookies.clone(),
            online.shared.clone(),
        );
        posts.spawn(async move {
            let sent = Instant::now();
            online::post(&pool, &cookies, layout, c, j, &stamped(0, &shared))
                .await
                .map(|()| (c, sent.elapsed()))
        });
        k += 1;
    }
    let mut per_chat = vec![0u64; layout.chats];
    let mut answered = Vec::new();
    while let Some(done) = posts.join_next().await {
        let (c, took) = done.map_err(|e| e.to_string())??;
        per_chat[c] += 1;
        answered.push(took.as_micros().min(u32::MAX as u128) as u32);
    }
    answered.sort_unstable();
    Ok((per_chat, answered))
}

/// Workload 11.
pub(super) async fn capacity(s: &Scale, r: &mut Report) -> Result<(), String> {
    let layout = layout(s, s.capacity_sessions);
    let Some(server) = start(&layout, "shared_chats")? else {
        r.row(
            "11",
            "capacity: 10,000 online in 100 chats of 100",
            "skipped: natter refuses `presence_scope` in this build".into(),
            "",
            "",
            Verdict::Skipped,
        );
        return Ok(());
    };
    let n = layout.sessions;
    let what = format!(
        "{} sessions in {} chats of {} ({} on `/events` without presence, {} on `/poll`, `shared_chats`)",
        fmt_int(n as f64),
        layout.chats,
        layout.chat_size(),
        fmt_int((n - layout.legacy()) as f64),
        fmt_int(layout.legacy() as f64),
    );
    let (mut online, storm) = storm(&server, layout, s.capacity_wait).await?;
    let rss_online = server.rss_kib();

    // Messages, then a marker: everything before it reached every member.
    let (cpu0, client_cpu0) = (server.cpu(), servers::cpu_time(std::process::id()));
    let waited0 = server.run_queue_wait();
    let start = Instant::now();
    let (posted, answered) = messages(&online, s.capacity_rate, s.capacity_length).await?;
    let (post_p50, post_p99) = (percentile(&answered, 0.50), percentile(&answered, 0.99));
    let drained = online.mark(Duration::from_secs(120)).await?;
    let span = start.elapsed();
    let cpu = server.cpu().saturating_sub(cpu0);
    let client_cpu = servers::cpu_time(std::process::id()).saturating_sub(client_cpu0);
    let waited = server.run_queue_wait().saturating_sub(waited0);
    let load = loadavg();
    let rss_end = server.rss_kib();
    let rss_peak = server.peak_rss_kib();

    let keepalives = online.keepalives.clone();
    let reports = online.finish().await;
    let kept = keepalives.finish().await;
    server.stop();

    // Per member: every message of its chat, once (a repeat is out of order).
    let mut latencies = Vec::new();
    let (mut delivered, mut short) = (0u64, 0usize);
    for rep in &reports {
        let got = rep.listen.phases.first();
        let count = got.map_or(0, |p| p.count);
        delivered += count;
        if count != posted[layout.chat_of(rep.index)] {
            short += 1;
        }
        if let Some(p) = got {
            latencies.extend_from_slice(&p.latencies_us);
        }
    }
    latencies.sort_unstable();
    let expected: u64 = posted.iter().map(|&p| p * layout.chat_size() as u64).sum();
    let total_posted: u64 = posted.iter().sum();
    let rate = total_posted as f64 / s.capacity_length.as_secs_f64();
    let (p50, p99, max) = (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().map_or(f64::NAN, |&m| m as f64 / 1000.0),
    );
    let faults = storm_faults(&reports, &layout, "shared_chats");
    let disordered = reports.iter().filter(|r| r.listen.disorder).count();
    let failed = reports
        .iter()
        .filter(|r| r.setup_error.is_some() || r.listen.error.is_some() || !r.listen.ended)
        .count();

    r.num("w11_online_s", storm.online.as_secs_f64());
    r.num(
        "w11_storm_drain_s",
        storm.drained.map_or(-1.0, |d| d.as_secs_f64()),
    );
    r.num("w11_storm_events", storm.events as f64);
    r.num("w11_storm_answers", storm.answers as f64);
    r.num("w11_storm_cpu_s", storm.cpu.as_secs_f64());
    r.speed(
        "11",
        &format!("morning storm, {what}: time until all are online and every queue is drained"),
        storm.describe(s.capacity_wait),
        "",
        "≤ 60 s",
        storm.within_target(),
    );
    r.correct_row(
        "11",
        "morning storm: every session has every event meant for it",
        if faults.is_empty() {
            format!(
                "every session knows all {} members of its chat; 0 presence events on `/events`, 0 from outside the chat on `/poll`; 0 resyncs, 0 out of order, 0 errors",
                layout.chat_size()
            )
        } else {
            faults.join("; ")
        },
        "0 lost",
        faults.is_empty() && storm.drained.is_some(),
    );

    r.num("w11_posts_per_s", rate);
    r.num("w11_p50_ms", p50);
    r.num("w11_p99_ms", p99);
    r.num("w11_post_answer_p99_ms", post_p99);
    r.num("w11_run_queue_wait_s", waited.as_secs_f64());
    r.num("w11_cpu_us_per_delivery", us(cpu) / delivered.max(1) as f64);
    r.num(
        "w11_client_cpu_us_per_delivery",
        us(client_cpu) / delivered.max(1) as f64,
    );
    r.speed(
        "11",
        &format!(
            "{} online, {:.0} messages/s over {} chats for {} s: post→delivery",
            fmt_int(n as f64),
            s.capacity_rate,
            layout.chats,
            s.capacity_length.as_secs()
        ),
        format!(
            "p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms (postMessage answered in p50 {post_p50:.1} ms, p99 {post_p99:.1} ms; {rate:.1} messages/s reached, {} deliveries/s; {:.1} µs server CPU and {:.1} µs load generator CPU per delivery, keepalives included, the server busy {:.0}% of one core, its threads waiting for a core {:.1} s in all over {:.0} s; load average {load})",
            fmt_int(delivered as f64 / span.as_secs_f64()),
            us(cpu) / delivered.max(1) as f64,
            us(client_cpu) / delivered.max(1) as f64,
            cpu.as_secs_f64() / span.as_secs_f64() * 100.0,
            waited.as_secs_f64(),
            span.as_secs_f64(),
        ),
        "",
        "p99 ≤ 100 ms",
        p99 <= 100.0 && rate >= 0.95 * s.capacity_rate,
    );
    r.correct_row(
        "11",
        "messages: every message delivered to every member of its chat once, in order",
        format!(
            "{} of {} delivered, {short} members short or over, {disordered} out of order, {failed} sessions failed",
            fmt_int(delivered as f64),
            fmt_int(expected as f64)
        ),
        "all, once, in order",
        delivered == expected && short == 0 && drained && disordered == 0 && failed == 0,
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    r.num("w11_rss_peak_mib", mib(rss_peak));
    r.num("w11_rss_online_mib", mib(rss_online));
    r.speed(
        "11",
        &format!("server RSS with {} online", fmt_int(n as f64)),
        format!(
            "peak {:.0} MiB ({:.0} MiB once all were online, {:.0} MiB after the messages)",
            mib(rss_peak),
            mib(rss_online),
            mib(rss_end)
        ),
        "",
        "≤ 400 MiB",
        rss_peak <= 400 * 1024,
    );
    keepalive_row_on(
        r,
        "11",
        &format!("{} online sessions", fmt_int(n as f64)),
        "w11",
        &kept,
        &format!(
            "{} connections shared with their other requests",
            online::POOL_CONNECTIONS
        ),
    );

    // What the scope saves: the same storm, smaller, under both scopes.
    let mut compare_faults = Vec::new();
    for &sessions in &s.capacity_compare {
        for scope in ["shared_chats", "everyone"] {
            eprintln!(
                "[bench] 11 storm of {sessions} under {scope} (load {})",
                loadavg()
            );
            let Some((storm, faults)) = compare(s, sessions, scope).await? else {
                continue;
            };
            let key = format!("w11_storm_{sessions}_{scope}");
            r.num(
                &format!("{key}_drain_s"),
                storm.drained.map_or(-1.0, |d| d.as_secs_f64()),
            );
            r.num(&format!("{key}_events"), storm.events as f64);
            r.num(&format!("{key}_poll_events"), storm.legacy_events as f64);
            r.row(
                "11",
                &format!(
                    "morning storm, {} sessions in chats of {}, `presence_scope = \"{scope}\"`",
                    fmt_int(sessions as f64),
                    s.capacity_chat_size
                ),
                storm.describe(s.capacity_wait),
                "",
                "",
                Verdict::Info,
            );
            compare_faults.extend(
                faults
                    .into_iter()
                    .map(|f| format!("{sessions} {scope}: {f}")),
            );
            if storm.drained.is_none() {
                compare_faults.push(format!("{sessions} {scope}: not drained"));
            }
        }
    }
    r.correct_row(
        "11",
        "morning storms under both scopes: every session has every event meant for it",
        if compare_faults.is_empty() {
            "0 lost, 0 resyncs, 0 out of order, 0 errors".into()
        } else {
            compare_faults.join("; ")
        },
        "0 lost",
        compare_faults.is_empty(),
    );
    Ok(())
}
