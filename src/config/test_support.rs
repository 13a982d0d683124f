//! Fixtures shared by the config tests.

use super::{Config, ConfigError, Sources, from_toml_str, load};

/// A valid `secret_key`: exactly the 32-byte minimum.
pub(super) const KEY32: &str = "0123456789abcdef0123456789abcdef";

/// Environment pairs as `Sources::env` holds them.
pub(super) fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Loads `file_text` from a temporary config file with this environment.
pub(super) fn load_with(
    file_text: &str,
    env: &[(&str, &str)],
    dev: bool,
) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, file_text).unwrap();
    load(&Sources {
        config_path: Some(path),
        dev,
        log_level: None,
        log_level_flag: None,
        env: vars(env),
    })
}

/// The error for this file text in production mode.
pub(super) fn error(text: &str) -> String {
    from_toml_str(text, false).unwrap_err().to_string()
}
