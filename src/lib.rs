//! natter: a self-hosted group chat server in one binary.
//!
//! `build` (in `app`) opens storage, wires the service, hub and HTTP routes, and binds; tests
//! drive the returned `App` on `127.0.0.1:0`.

pub mod api;
mod app;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod files;
pub mod interchange;
pub mod logging;
pub mod mail;
pub mod model;
pub mod server;
pub mod store;
pub mod telemetry;

/// jemalloc keeps size classes apart and returns idle pages, so a busy spell does not leave RSS
/// high (docs/performance.md). Declared here rather than in the binary so that every build, debug
/// and release, and every test and bench linking this library runs on the same allocator.
/// (Unoptimised builds used to crash at thread start in jemalloc's sized free: a stack overflow in
/// flexi_logger's minimum-size flusher stacks, see docs/flexi_logger-stacks.md.)
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub use app::{App, StartError, StopSignals, build};
