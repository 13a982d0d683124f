//! The effective configuration printed back as a loadable config file, with secrets redacted.

use std::time::Duration;

use super::{Config, IpNet, Secret};

impl Config {
    /// Every effective key as `key = value` lines in config-file order, with secrets redacted.
    pub fn effective_summary(&self) -> String {
        let proxies: Vec<String> = self.trusted_proxies.iter().map(IpNet::to_string).collect();
        let static_dir = self.static_dir.as_ref().map(|p| p.display().to_string());
        let top = vec![
            ("log_level", quoted(self.log_level.as_str())),
            ("listen", quoted(&self.listen.to_string())),
            ("public_url", quoted(&self.public_url)),
            ("data_dir", quoted(&self.data_dir.display().to_string())),
            ("secret_key", secret(self.secret_key.as_ref())),
            ("chats", string_list(&self.chats)),
            ("admins", string_list(&self.admins)),
            ("allow_guests", self.allow_guests.to_string()),
            ("allow_registration", self.allow_registration.to_string()),
            ("last_messages", self.last_messages.to_string()),
            ("poll_timeout", duration(self.poll_timeout)),
            ("inactivity_timeout", duration(self.inactivity_timeout)),
            ("session_max_age", duration(self.session_max_age)),
            (
                "event_queue_capacity",
                self.event_queue_capacity.to_string(),
            ),
            (
                "event_queue_idle_timeout",
                duration(self.event_queue_idle_timeout),
            ),
            ("max_body_bytes", self.max_body_bytes.to_string()),
            ("header_read_timeout", duration(self.header_read_timeout)),
            ("body_read_timeout", duration(self.body_read_timeout)),
            ("max_connections", self.max_connections.to_string()),
            (
                "max_connections_per_ip",
                self.max_connections_per_ip.to_string(),
            ),
            (
                "max_queues_per_session",
                self.max_queues_per_session.to_string(),
            ),
            (
                "max_sessions_per_user",
                self.max_sessions_per_user.to_string(),
            ),
            ("max_message_chars", self.max_message_chars.to_string()),
            ("password_iterations", self.password_iterations.to_string()),
            ("durability", quoted(self.durability.as_str())),
            ("cors_origins", string_list(&self.cors_origins)),
            ("trusted_proxies", string_list(&proxies)),
            ("static_dir", optional(static_dir)),
            ("database_url", secret(self.database_url.as_ref())),
        ];
        let mail = vec![
            ("provider", quoted(self.mail.provider.as_str())),
            ("from", quoted(&self.mail.from)),
            ("sendgrid_api_url", quoted(&self.mail.sendgrid_api_url)),
            ("sendgrid_key", secret(self.mail.sendgrid_key.as_ref())),
        ];
        let rl = &self.rate_limit;
        let rate_limit = vec![
            ("enabled", rl.enabled.to_string()),
            ("account_burst", rl.account_burst.to_string()),
            ("account_interval", duration(rl.account_interval)),
            (
                "reset_requests_per_hour",
                rl.reset_requests_per_hour.to_string(),
            ),
            ("message_burst", rl.message_burst.to_string()),
            ("messages_per_second", rl.messages_per_second.to_string()),
            ("request_burst", rl.request_burst.to_string()),
            ("requests_per_second", rl.requests_per_second.to_string()),
        ];
        let metrics = vec![(
            "listen",
            optional(self.metrics.listen.map(|a| a.to_string())),
        )];
        let bot = vec![
            ("enabled", self.bot.enabled.to_string()),
            ("name", quoted(&self.bot.name)),
        ];

        let mode = if self.dev { "dev" } else { "production" };
        let mut out = format!("# natter effective configuration ({mode} mode)\n");
        let sections = [
            ("", top),
            ("mail", mail),
            ("rate_limit", rate_limit),
            ("metrics", metrics),
            ("bot", bot),
        ];
        for (table, entries) in sections {
            if !table.is_empty() {
                out.push_str(&format!("\n[{table}]\n"));
            }
            for (key, value) in entries {
                out.push_str(&format!("{key} = {value}\n"));
            }
        }
        out
    }
}

/// A duration in the one unit that states it exactly ("7d", "10m", "500ms"), as people write them in the file;
/// humantime's own format would print "7days" or "11months 30days 3h 50m 24s".
pub(super) fn short_duration(value: Duration) -> String {
    let secs = value.as_secs();
    if value.subsec_nanos() == 0 {
        match secs {
            0 => "0s".to_string(),
            s if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
            s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
            s if s.is_multiple_of(60) => format!("{}m", s / 60),
            s => format!("{s}s"),
        }
    } else if value.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", value.as_millis())
    } else {
        humantime::format_duration(value).to_string()
    }
}

fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn string_list(items: &[String]) -> String {
    let values = items
        .iter()
        .map(|s| toml::Value::String(s.clone()))
        .collect();
    toml::Value::Array(values).to_string()
}

fn duration(value: Duration) -> String {
    quoted(&short_duration(value))
}

fn secret(value: Option<&Secret>) -> String {
    quoted(if value.is_some() {
        "<redacted>"
    } else {
        "<unset>"
    })
}

fn optional(value: Option<String>) -> String {
    quoted(value.as_deref().unwrap_or("<unset>"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::short_duration;
    use crate::config::test_support::{KEY32, vars};
    use crate::config::{Secret, Sources, from_toml_str};

    #[test]
    fn secrets_are_redacted_in_debug_and_summary() {
        let text = format!(
            "secret_key = \"{KEY32}\"\ndatabase_url = \"postgres://user:hunter2@db/natter\"\n\
             [mail]\nsendgrid_key = \"SG.very-secret\""
        );
        let c = from_toml_str(&text, false).unwrap();
        for shown in [format!("{c:?}"), c.effective_summary()] {
            assert!(
                !shown.contains(KEY32) && !shown.contains("hunter2") && !shown.contains("SG.very"),
                "{shown}"
            );
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        let summary = c.effective_summary();
        assert!(summary.contains("secret_key = \"<redacted>\""), "{summary}");
        assert!(
            summary.contains("[mail]\nprovider = \"sendgrid\""),
            "{summary}"
        );
        assert_eq!(format!("{}", Secret::new("x")), "<redacted>");
        assert_eq!(Secret::new("x").expose(), "x");

        let summary = from_toml_str("", true).unwrap().effective_summary();
        assert!(summary.contains("secret_key = \"<unset>\""), "{summary}");
        assert!(summary.contains("poll_timeout = \"29s\""), "{summary}");
        assert!(summary.contains("session_max_age = \"7d\""), "{summary}");
        assert_eq!(short_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(short_duration(Duration::from_secs(90)), "90s");
        assert!(summary.contains("chats = [\"Main\"]"), "{summary}");
        assert!(
            summary.starts_with("# natter effective configuration (dev mode)"),
            "{summary}"
        );
        // The summary is itself a loadable config file once the placeholders are dropped.
        let loadable: Vec<&str> = summary.lines().filter(|l| !l.contains("<unset>")).collect();
        assert_eq!(
            from_toml_str(&loadable.join("\n"), true),
            from_toml_str("", true)
        );

        let sources = Sources {
            env: vars(&[("SECRET_KEY", KEY32)]),
            ..Sources::default()
        };
        assert!(!format!("{sources:?}").contains(KEY32));
    }
}
