//! Nodes dying or restarting under load: clients carry on through the others, and every
//! acknowledged post still reaches every reader exactly once.

use crate::client::Client;
use crate::harness::{CHAT, Harness};
use crate::traffic::{
    Reader, assert_each_once, assert_no_troubles, collect, drain, events_reader, poster, report,
};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `count` guests in CHAT, each reading its own /events queue through nginx.
async fn readers(
    cluster: &Harness,
    prefix: &str,
    count: usize,
    stop: &Arc<AtomicBool>,
) -> (Vec<(String, Client)>, Vec<Reader>) {
    let mut members = Vec::new();
    let mut readers = Vec::new();
    for i in 1..=count {
        let name = format!("{prefix}{i}");
        let client = cluster.guest(&name).await;
        client.join(CHAT).await;
        let queue = client.open_queue().await;
        readers.push(events_reader(&name, client.clone(), queue, stop.clone()));
        members.push((name, client));
    }
    (members, readers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_loses_nothing() {
    let Some(mut cluster) = Harness::start().await else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (members, readers) = readers(&cluster, "load", 4, &stop).await;
    let posting = Arc::new(AtomicBool::new(false));
    let posters = members
        .iter()
        .map(|(name, client)| {
            poster(
                client.clone(),
                CHAT,
                name,
                60,
                Duration::from_millis(30),
                posting.clone(),
            )
        })
        .collect();
    // 60 posts 30 ms apart take over 1.8 s: the kill comes while they go on.
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.kill(1);
    let (mut acked, failed) = collect(posters).await;
    // Back on its config and port, the node serves these clients again.
    cluster.restart(1);
    for (name, client) in &members {
        let direct = cluster.on(client, 1);
        let reply = direct
            .post(
                "/api/loggedonly/postMessage",
                json!({ "chat": CHAT, "text": format!("{name} after the restart") }),
            )
            .await;
        let id = reply.body["id"].as_u64();
        assert_eq!(
            reply.status, 200,
            "the restarted node serves: {}",
            reply.body
        );
        acked.insert(id.unwrap());
    }
    let results = drain(readers, &acked, &stop, Duration::from_secs(60)).await;
    report("killed node", acked.len(), failed, &results);
    assert_no_troubles(&results);
    for outcome in &results {
        assert_each_once(&outcome.name, &outcome.received, &acked);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_restarted_one_by_one_under_load() {
    let Some(mut cluster) = Harness::start().await else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (members, readers) = readers(&cluster, "rolling", 4, &stop).await;
    let posting = Arc::new(AtomicBool::new(false));
    let posters = members
        .iter()
        .map(|(name, client)| {
            poster(
                client.clone(),
                CHAT,
                name,
                usize::MAX,
                Duration::from_millis(30),
                posting.clone(),
            )
        })
        .collect();
    for i in 0..cluster.nodes.len() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.stop(i);
        cluster.restart(i);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    posting.store(true, Ordering::SeqCst);
    let (acked, failed) = collect(posters).await;
    assert!(acked.len() > 40, "posts went on during the restarts");
    let results = drain(readers, &acked, &stop, Duration::from_secs(60)).await;
    report("rolling restart", acked.len(), failed, &results);
    assert_no_troubles(&results);
    for outcome in &results {
        assert_each_once(&outcome.name, &outcome.received, &acked);
    }
}
