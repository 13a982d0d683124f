//! Reading the TOML config file, with errors that give its path and the line and column of a syntax error.

use std::path::Path;

use super::{ConfigError, DEFAULT_CONFIG_FILE};

/// The table in `--config PATH` (which must exist), else in `./config.toml` if present, else an empty one.
pub(super) fn read_file_layer(config_path: Option<&Path>) -> Result<toml::Table, ConfigError> {
    if let Some(path) = config_path {
        return read_config_file(path);
    }
    let path = Path::new(DEFAULT_CONFIG_FILE);
    match std::fs::read_to_string(path) {
        Ok(text) => parse_toml_table(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
        Err(e) => Err(cannot_read_config(path, &e)),
    }
}

/// Parses TOML text; `path` only names the source in the error.
pub(super) fn parse_toml_table(text: &str, path: &Path) -> Result<toml::Table, ConfigError> {
    toml::from_str::<toml::Table>(text).map_err(|e| {
        let place = match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!(" at line {line}, column {column}")
            }
            None => String::new(),
        };
        ConfigError::new(format!(
            "config file `{}` is not valid TOML{place}: {}",
            path.display(),
            e.message()
        ))
    })
}

/// A file named on the command line must exist.
fn read_config_file(path: &Path) -> Result<toml::Table, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_toml_table(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::new(format!(
            "config file `{}` does not exist",
            path.display()
        ))),
        Err(e) => Err(cannot_read_config(path, &e)),
    }
}

fn cannot_read_config(path: &Path, e: &std::io::Error) -> ConfigError {
    ConfigError::new(format!("cannot read config file `{}`: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::load_with;
    use crate::config::{Sources, from_toml_str, load};

    #[test]
    fn missing_config_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        let e = load(&Sources {
            config_path: Some(path.clone()),
            ..Sources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("does not exist"),
            "{e}"
        );
        let e = load_with("listen = ", &[], false).unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn without_a_path_the_working_directory_file_or_defaults_apply() {
        // cargo runs tests in the package directory, whose config.toml is the sample (equal to the defaults).
        assert_eq!(load(&Sources::default()), from_toml_str("", false));
    }
}
