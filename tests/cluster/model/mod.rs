//! The API model check (tests/api/model) against three cluster nodes: its random operations by
//! four clients, each request of each client sent to a node picked at random (directly, not
//! through nginx), and every answer, every event and every getChats/getUsers/getLastMessages
//! compared with the same model. The operations, the model and the stream comparison are
//! tests/api/model's own files; only the real side (`world`) is the cluster's.

#[allow(dead_code)]
#[path = "../../api/model/ops.rs"]
mod ops;
#[allow(dead_code)]
#[path = "../../api/model/reference.rs"]
mod reference;
#[allow(dead_code)]
#[path = "../../api/model/stream.rs"]
mod stream;
mod world;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases per run (each starts three nodes); `CLUSTER_MODEL_CASES` sets another count.
const CASES: u32 = 5;
/// Most operations in one case.
const MAX_OPS: usize = 30;

fn cases() -> u32 {
    std::env::var("CLUSTER_MODEL_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CASES)
}

/// tests/api/model's sequences without `Sweep`: the sweeper that op calls runs inside a test
/// server's process; in a cluster it is the leader node's, by `sessions.last_seen`, out of reach.
fn sequence() -> impl Strategy<Value = Vec<ops::Op>> {
    ops::sequence(MAX_OPS).prop_map(|ops| {
        ops.into_iter()
            .filter(|op| !matches!(op, ops::Op::Sweep { .. }))
            .collect()
    })
}

#[test]
fn random_operations_on_random_nodes_match_the_model() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(template) = runtime.block_on(world::Template::create()) else {
        return;
    };
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        // Every shrinking step starts three nodes: bound the search for a smaller failure.
        max_shrink_time: 120_000,
        ..Config::default()
    });
    let tally = std::cell::RefCell::new(world::Tally::default());
    // Each case runs under one `presence_scope`, chosen at random.
    let strategy = (proptest::bool::ANY, sequence());
    let outcome = runner.run(&strategy, |(shared_chats, ops)| {
        let mut tally = tally.borrow_mut();
        runtime
            .block_on(world::run(&template, shared_chats, &ops, &mut tally))
            .map_err(TestCaseError::fail)
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    let tally = tally.into_inner();
    eprintln!(
        "cluster model check: {} cases, {} steps, {} events compared, {} node restarts, \
         requests per node {:?}, answers {:?}",
        cases(),
        tally.steps,
        tally.events,
        tally.restarts,
        tally.per_node,
        tally.answers
    );
}
