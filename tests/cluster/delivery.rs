//! Event delivery across nodes: whichever node a member polls and whichever node a post lands
//! on, every member gets every message once, all in one order.

use crate::client::Client;
use crate::harness::{CHAT, Harness};
use crate::traffic::{
    Inbox, assert_each_once, assert_no_troubles, collect, drain, events_reader, legacy_poller,
    poster, report,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Six guests and two registered accounts, each signed in through nginx, all in CHAT.
async fn members(cluster: &Harness) -> Vec<(String, Client)> {
    let mut members = Vec::new();
    for i in 1..=6 {
        let name = format!("guest{i}");
        members.push((name.clone(), cluster.guest(&name).await));
    }
    for name in ["alice", "bob"] {
        members.push((name.to_owned(), cluster.registered(name).await));
    }
    for (_, client) in &members {
        client.join(CHAT).await;
    }
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_member_gets_every_event_once_in_one_order() {
    let Some(cluster) = Harness::start().await else {
        return;
    };
    let members = members(&cluster).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for (name, client) in &members {
        let queue = client.open_queue().await;
        readers.push(events_reader(name, client.clone(), queue, stop.clone()));
    }
    let posting = Arc::new(AtomicBool::new(false));
    let posters = members
        .iter()
        .map(|(name, client)| {
            poster(
                client.clone(),
                CHAT,
                name,
                20,
                Duration::ZERO,
                posting.clone(),
            )
        })
        .collect();
    let (acked, failed) = collect(posters).await;
    assert_eq!(
        (acked.len(), failed),
        (8 * 20, 0),
        "every post answered 200"
    );
    let results = drain(readers, &acked, &stop, Duration::from_secs(60)).await;
    report("one order", acked.len(), failed, &results);
    assert_no_troubles(&results);
    for outcome in &results {
        assert_each_once(&outcome.name, &outcome.received, &acked);
    }
    let (first, order) = (&results[0].name, &results[0].received);
    for outcome in &results[1..] {
        assert_eq!(
            &outcome.received, order,
            "{} got the messages in another order than {first}",
            outcome.name
        );
    }
    // Messages of one chat arrive in id order (docs: Events, ordering).
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "messages in id order: {order:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_poll_through_round_robin_loses_nothing_and_repeats_nothing() {
    let Some(cluster) = Harness::start().await else {
        return;
    };
    let mut sessions = Vec::new();
    for i in 1..=4 {
        let name = format!("legacy{i}");
        let client = cluster.guest(&name).await;
        client.join(CHAT).await;
        sessions.push((name, client));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for (name, client) in &sessions {
        // Two pollers of one session (two tabs of the original client): nginx sends them to
        // different nodes, and they race for the session's one default queue.
        let inbox: Inbox = Arc::default();
        readers.push(legacy_poller(
            name,
            client.clone(),
            inbox.clone(),
            stop.clone(),
        ));
        readers.push(legacy_poller(
            &format!("{name} (second tab)"),
            client.clone(),
            inbox,
            stop.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posting = Arc::new(AtomicBool::new(false));
    let posters = sessions
        .iter()
        .map(|(name, client)| {
            poster(
                client.clone(),
                CHAT,
                name,
                15,
                Duration::from_millis(10),
                posting.clone(),
            )
        })
        .collect();
    let (acked, failed) = collect(posters).await;
    assert_eq!(
        (acked.len(), failed),
        (4 * 15, 0),
        "every post answered 200"
    );
    let results = drain(readers, &acked, &stop, Duration::from_secs(60)).await;
    report("legacy poll", acked.len(), failed, &results);
    assert_no_troubles(&results);
    // The two pollers of a session share one inbox: check it once per session.
    for pair in results.chunks(2) {
        assert_each_once(&pair[0].name, &pair[0].received, &acked);
        let nodes: BTreeSet<&String> = pair.iter().flat_map(|o| &o.served_by).collect();
        assert!(
            nodes.len() > 1,
            "{}: the polls of one session were answered by several nodes: {nodes:?}",
            pair[0].name
        );
    }
}
