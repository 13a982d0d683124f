//! Workload 13, second part: `NOTIFY` inside every write transaction against one coalesced
//! wake-up, at the PostgreSQL level with `fsync` on. K writer connections commit transactions
//! shaped like a node's group (one `cluster_log` row with a ~200-byte body, sent in one flight);
//! variant A notifies inside each, variant B leaves that to one more connection that sends an
//! empty `NOTIFY natter_log` at most every 5 ms after a commit, as `store/postgres/tail.rs` does.

use super::{Report, Scale, Verdict, fmt_int, percentile};
use crate::cluster::Cluster;
use futures_util::future::join_all;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The reader connections listening, one per node of a three-node installation.
const LISTENERS: usize = 3;
/// The coalesced wake-up's shortest gap, as in tail.rs.
const GAP: Duration = Duration::from_millis(5);

/// One run's figures.
struct Run {
    per_s: f64,
    /// p50 and p99 of a transaction's round trip (BEGIN to COMMIT's answer), ms.
    p50: f64,
    p99: f64,
    notifies: u64,
}

pub(super) async fn notify(s: &Scale, r: &mut Report, cluster: &Cluster) -> Result<(), String> {
    eprintln!("[bench] 13: NOTIFY in the transaction vs the coalesced wake-up");
    cluster.create_db("w13_notify").await;
    cluster
        .client("w13_notify")
        .await
        .batch_execute(
            "CREATE TABLE cluster_log (xid xid8 NOT NULL DEFAULT pg_current_xact_id(), \
             idx INTEGER NOT NULL, node TEXT NOT NULL, epoch BIGINT NOT NULL, \
             written BIGINT NOT NULL, body BYTEA NOT NULL, PRIMARY KEY (xid, idx))",
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut listeners = Vec::new();
    for _ in 0..LISTENERS {
        let c = cluster.client("w13_notify").await;
        c.batch_execute("LISTEN natter_log")
            .await
            .map_err(|e| e.to_string())?;
        // The connection task reads and drops the notifications; the backend still sends them.
        listeners.push(c);
    }
    let length = if s.smoke {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(4)
    };
    for sync in ["on", "off"] {
        for writers in [3, 16] {
            let a = run(cluster, writers, sync, true, length).await?;
            let b = run(cluster, writers, sync, false, length).await?;
            for (key, v) in [("in_tx", &a), ("coalesced", &b)] {
                let k = format!("w13_notify_{key}_{writers}w_sync_{sync}");
                r.num(&format!("{k}_tx_per_s"), v.per_s);
                r.num(&format!("{k}_p50_ms"), v.p50);
                r.num(&format!("{k}_p99_ms"), v.p99);
            }
            r.row(
                "13",
                &format!(
                    "PostgreSQL alone, {writers} writers, synchronous_commit = {sync}: \
                     A `NOTIFY` in each transaction / B one coalesced `NOTIFY` (≤ 1 per 5 ms); \
                     transactions/s, p50 / p99 ms"
                ),
                format!(
                    "A {} tx/s, {:.2} / {:.2} ms; B {} tx/s, {:.2} / {:.2} ms ({} NOTIFYs); B/A {:.2}×",
                    fmt_int(a.per_s),
                    a.p50,
                    a.p99,
                    fmt_int(b.per_s),
                    b.p50,
                    b.p99,
                    fmt_int(b.notifies as f64),
                    b.per_s / a.per_s.max(1e-9)
                ),
                "",
                "",
                Verdict::Info,
            );
        }
    }
    drop(listeners);
    Ok(())
}

/// `writers` connections committing for `length`, notifying inside (`in_tx`) or through the ringer.
async fn run(
    cluster: &Cluster,
    writers: usize,
    sync: &str,
    in_tx: bool,
    length: Duration,
) -> Result<Run, String> {
    let body: String = (0..200).map(|i| format!("{:02x}", i as u8)).collect();
    let notify = if in_tx { "NOTIFY natter_log; " } else { "" };
    let ring = Arc::new(Notify::new());
    let done = Arc::new(AtomicBool::new(false));
    let notifies = Arc::new(AtomicU64::new(0));
    let ringer = (!in_tx).then(|| {
        let (ring, done, notifies) = (ring.clone(), done.clone(), notifies.clone());
        async move {
            let c = cluster.client("w13_notify").await;
            while !done.load(Ordering::Acquire) {
                ring.notified().await;
                let sent = Instant::now();
                c.batch_execute("NOTIFY natter_log")
                    .await
                    .map_err(|e| e.to_string())?;
                notifies.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(GAP.saturating_sub(sent.elapsed())).await;
            }
            Ok::<(), String>(())
        }
    });
    let mut clients = Vec::new();
    for _ in 0..writers {
        let c = cluster.client("w13_notify").await;
        c.batch_execute(&format!("SET synchronous_commit = {sync}"))
            .await
            .map_err(|e| e.to_string())?;
        clients.push(c);
    }
    let start = Instant::now();
    let end = start + length;
    let work = join_all(clients.iter().enumerate().map(|(i, c)| {
        let sql = format!(
            "BEGIN; INSERT INTO cluster_log (idx, node, epoch, written, body) \
             VALUES (0, 'node{i}', 1, 0, '\\x{body}'); {notify}COMMIT"
        );
        let ring = ring.clone();
        async move {
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                c.batch_execute(&sql).await.map_err(|e| e.to_string())?;
                latencies.push(t.elapsed().as_micros() as u32);
                ring.notify_one();
            }
            Ok::<Vec<u32>, String>(latencies)
        }
    }));
    let (results, ringer) = match ringer {
        Some(ringer) => {
            let stopper = async {
                let results = work.await;
                done.store(true, Ordering::Release);
                ring.notify_one();
                results
            };
            let (results, ringer) = tokio::join!(stopper, ringer);
            (results, Some(ringer))
        }
        None => (work.await, None),
    };
    let took = start.elapsed();
    if let Some(ringer) = ringer {
        ringer?;
    }
    let mut latencies = Vec::new();
    for one in results {
        latencies.extend(one?);
    }
    latencies.sort_unstable();
    Ok(Run {
        per_s: latencies.len() as f64 / took.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        notifies: notifies.load(Ordering::Relaxed),
    })
}
