//! Model check: random sequences of operations by several clients (guest login, sign-in,
//! session login, logout, join, leave, post, sweep, create and remove chat, restart) run
//! against a real server, and every answer, every client's event stream and every
//! getChats/getUsers/getLastMessages compared with a small in-memory model of docs/api.md
//! and docs/design.md, under either `presence_scope`, with queues taking every event type or
//! all but presence.

mod ops;
mod reference;
mod stream;
mod world;

use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases per run in CI; `MODEL_CASES` sets another count.
const CASES: u32 = 32;
/// Most operations in one case.
const MAX_OPS: usize = 30;

fn cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CASES)
}

#[test]
fn random_operations_by_several_clients_match_the_model() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let template = runtime.block_on(world::Template::create());
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        // Every shrinking step starts a server: bound the search for a smaller failure.
        max_shrink_time: 180_000,
        ..Config::default()
    });
    // A RefCell, not a Mutex: a case that panics must not poison the count for the next.
    let tally = std::cell::RefCell::new(world::Tally::default());
    // Each case runs under one `presence_scope`, chosen at random.
    let strategy = (proptest::bool::ANY, ops::sequence(MAX_OPS));
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
        "model check: {} cases, {} steps, {} events compared, answers {:?}",
        cases(),
        tally.steps,
        tally.events,
        tally.answers
    );
}
