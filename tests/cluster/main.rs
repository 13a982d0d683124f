//! Cluster mode: three natter processes on one PostgreSQL database behind a real nginx that sends
//! each request to the next node (round robin). Every test starts its own PostgreSQL, nodes and
//! nginx. Without PostgreSQL's binaries or nginx they skip with a notice, unless
//! `TEST_REQUIRE_POSTGRES=1` / `TEST_REQUIRE_NGINX=1` (set by `.ci/run`) make that a failure.
#![cfg(feature = "pg")]

#[path = "../mirror/cluster.rs"]
#[allow(dead_code)]
mod pg;

mod any_node;
mod client;
mod delivery;
mod failover;
mod harness;
mod harness_checks;
mod model;
mod nginx;
mod node;
mod traffic;
mod web_client;
