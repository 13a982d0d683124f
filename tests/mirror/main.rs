//! PostgreSQL mirror and import tests against a real PostgreSQL that each test starts itself
//! (initdb + pg_ctl in a temp dir). Without the PostgreSQL binaries they skip with a notice,
//! unless `TEST_REQUIRE_POSTGRES=1` (set by `.ci/run`) makes that a failure.
#![cfg(feature = "pg")]

mod cluster;
mod import;
mod log_order;
mod mirror;
mod moving;
mod natter;
mod outage_load;
mod store;
