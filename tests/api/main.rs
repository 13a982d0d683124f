//! Integration tests: a real server on 127.0.0.1:0 with a temp sled directory, driven over HTTP.

mod abuse;
mod accounts;
mod backup;
mod chats;
mod chatty;
// The mirror tests' throwaway PostgreSQL, for the API tests that need one.
#[cfg(feature = "pg")]
#[allow(dead_code)]
#[path = "../mirror/cluster.rs"]
mod cluster;
mod connections;
mod conventions;
mod crash;
mod disk_full;
mod events;
mod helpers;
mod history;
mod hostile;
mod log_capture;
mod mail;
mod mail_recorder;
mod metrics;
mod model;
mod names;
mod offline;
mod operations;
mod presence_scope;
mod races;
mod restart;
mod scrape;
mod security;
mod sessions;
mod sigterm_restart;
mod soak;
mod stopping;
mod wire;
