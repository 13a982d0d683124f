//! The harness itself: nginx really spreads requests over every node in turn, skips a dead node
//! and uses it again once it is back. These hold for any nodes sharing one database.

use crate::harness::Harness;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The node that finally answered, from nginx's `$upstream_addr` ("a, b" after a retry: b).
fn answered_by(upstream: &Option<String>) -> String {
    let list = upstream.as_deref().expect("nginx names the upstream");
    list.rsplit(", ").next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_sends_requests_to_every_node_in_turn() {
    let Some(cluster) = Harness::start().await else {
        return;
    };
    let client = cluster.client();
    let mut order = Vec::new();
    for _ in 0..9 {
        let reply = client.get("/healthz").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["status"], "ok");
        // Each node names itself and how long ago it read the shared log (read every 250 ms).
        let by = answered_by(&reply.upstream);
        let node = cluster.nodes.iter().find(|n| n.addr() == by).unwrap();
        assert_eq!(reply.body["node"], node.name.as_str(), "{}", reply.body);
        assert!(
            reply.body["log_lag_ms"]
                .as_u64()
                .is_some_and(|ms| ms < 5_000),
            "{}",
            reply.body
        );
        order.push(by);
    }
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for addr in &order {
        *per_node.entry(addr.as_str()).or_default() += 1;
    }
    for node in &cluster.nodes {
        assert_eq!(per_node.get(node.addr().as_str()), Some(&3), "{order:?}");
    }
    assert!(
        order.windows(2).all(|w| w[0] != w[1]),
        "round robin: never the same node twice in a row: {order:?}"
    );
    // Each node's own request log agrees with what nginx says.
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster
        .nodes
        .iter()
        .any(|n| n.requests("GET /healthz 200") < 3)
    {
        assert!(
            Instant::now() < deadline,
            "each node logged 3 healthz requests"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logged: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|n| n.requests("GET /healthz 200"))
        .collect();
    assert_eq!(logged, [3, 3, 3]);
    println!("answered by, in order: {order:?}; request log lines per node: {logged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_skips_a_killed_node_and_uses_it_again_after_restart() {
    let Some(mut cluster) = Harness::start().await else {
        return;
    };
    let client = cluster.client();
    let dead = cluster.nodes[1].addr();
    cluster.kill(1);
    for _ in 0..6 {
        let reply = client.get("/healthz").await;
        assert_eq!(reply.status, 200, "a dead node's requests go elsewhere");
        assert_ne!(answered_by(&reply.upstream), dead);
    }
    cluster.restart(1);
    let direct = reqwest::get(cluster.nodes[1].url("/healthz"))
        .await
        .unwrap();
    assert_eq!(
        direct.status(),
        200,
        "the restarted node serves on its port"
    );
    // nginx tries the node again once fail_timeout has passed.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = client.get("/healthz").await;
        assert_eq!(reply.status, 200);
        if answered_by(&reply.upstream) == dead {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nginx never sent to the restarted node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gracefully_stopped_node_starts_again_on_its_port() {
    let Some(mut cluster) = Harness::start().await else {
        return;
    };
    for i in 0..3 {
        cluster.stop(i);
        let reply = cluster.client().get("/healthz").await;
        assert_eq!(reply.status, 200, "the other nodes answer meanwhile");
        cluster.restart(i);
        let direct = reqwest::get(cluster.nodes[i].url("/healthz"))
            .await
            .unwrap();
        assert_eq!(direct.status(), 200);
    }
}
