//! What the logger lets through: `log_level` for natter's own modules, and for the libraries it
//! uses no more than `dependency_log_level` (never louder than `log_level`).
//!
//! Libraries log what natter itself never would: at debug, tokio-postgres writes every statement
//! with its parameters (password hashes, emails, message texts), so `log_level = "debug"` must
//! not reach them unless the operator asks for it with a key of its own.

use crate::config::LogLevel;

/// The module path prefix of natter's own log lines (the library and the binary).
const OWN_MODULES: &str = "natter";

/// A flexi_logger specification such as `info, natter=debug`.
pub fn spec(level: LogLevel, dependencies: LogLevel) -> String {
    let dependencies = if dependencies.to_level_filter() < level.to_level_filter() {
        dependencies
    } else {
        level
    };
    format!("{dependencies}, {OWN_MODULES}={level}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use LogLevel::*;

    #[test]
    fn dependencies_are_never_louder_than_their_key_or_log_level() {
        assert_eq!(spec(Debug, Info), "info, natter=debug");
        assert_eq!(spec(Trace, Info), "info, natter=trace");
        assert_eq!(spec(Warn, Info), "warn, natter=warn");
        assert_eq!(spec(Debug, Debug), "debug, natter=debug");
        assert_eq!(spec(Info, Trace), "info, natter=info");
        assert_eq!(spec(Info, Error), "error, natter=info");
    }

    #[test]
    fn the_spec_parses_and_scopes_by_module() {
        let spec = flexi_logger::LogSpecification::parse(spec(Debug, Info)).unwrap();
        assert!(spec.enabled(log::Level::Debug, "natter::store::mirror::worker"));
        assert!(spec.enabled(log::Level::Debug, "natter"));
        assert!(!spec.enabled(log::Level::Debug, "tokio_postgres::query"));
        assert!(spec.enabled(log::Level::Info, "tokio_postgres::connection"));
        assert!(!spec.enabled(log::Level::Debug, "sled::pagecache"));
    }
}
