//! Data coming in from elsewhere and going out: natter's own backup format (`backup`, the
//! `export` and `import` commands and the online export) and chatty-server's database
//! (`chatty`, the `import-chatty` command). Both write through the store, every row checked as the
//! API would check it (`store::incoming`). The original's config keys and command-line flags are
//! read at every start, so they live with the configuration (`config/original.rs`) and the
//! command line (`cli/goflags.rs`).

pub mod backup;
#[cfg(feature = "pg")]
pub mod chatty;
