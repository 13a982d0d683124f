//! What a SIGHUP changed: the keys applied at once and those that wait for a restart.

use super::Config;

/// Keys a SIGHUP applies without a restart.
pub const RELOADED_KEYS: &[&str] = &["log_level"];

/// One line for the log after a reload: which keys differ from the running configuration, and
/// which of them need a restart.
pub fn reload_report(running: &Config, loaded: &Config) -> String {
    let changed = running.changed_keys(loaded);
    if changed.is_empty() {
        return "SIGHUP: config reloaded, no key changed".into();
    }
    let (applied, waiting): (Vec<&str>, Vec<&str>) =
        changed.iter().partition(|key| RELOADED_KEYS.contains(key));
    let mut parts = Vec::new();
    if !applied.is_empty() {
        parts.push(format!("{} (applied now)", applied.join(", ")));
    }
    if !waiting.is_empty() {
        parts.push(format!(
            "{} (take effect only after a restart: systemctl restart natter)",
            waiting.join(", ")
        ));
    }
    format!("SIGHUP: config reloaded; changed: {}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::reload_report;
    use crate::config::from_toml_str;

    #[test]
    fn the_report_names_each_changed_key_and_which_need_a_restart() {
        let running = from_toml_str("", true).unwrap();
        assert_eq!(
            reload_report(&running, &running),
            "SIGHUP: config reloaded, no key changed"
        );
        let loaded = from_toml_str(
            "log_level = \"debug\"\nlisten = \"127.0.0.1:9\"\n[mail]\nfrom = \"a@example.org\"",
            true,
        )
        .unwrap();
        // In dev mode an unset public_url follows listen's port, so it changes with it.
        assert_eq!(
            reload_report(&running, &loaded),
            "SIGHUP: config reloaded; changed: log_level (applied now); listen, public_url, \
             mail.from (take effect only after a restart: systemctl restart natter)"
        );
    }
}
