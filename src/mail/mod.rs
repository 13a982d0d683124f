//! Outgoing mail: how it reads (`render`) and how it leaves (`Transport`, chosen by the config). What is sent
//! (`store::Mail`) is a store record: every mail goes through the durable outbox in the store,
//! and `outbox` delivers it.

pub mod outbox;
pub mod sendgrid;
mod transport;

pub use transport::Transport;

use crate::store::Mail;

/// A mail ready for a provider: recipient, subject, plain text and HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Writes the subject and both bodies; every user-supplied value is escaped in the HTML.
pub fn render(mail: &Mail, public_url: &str) -> Rendered {
    match mail {
        Mail::Activation { to, user, link } => Rendered {
            to: to.clone(),
            subject: "Confirm your natter account".into(),
            text: format!(
                "Hello {user},\n\nthe account {user} was registered with this address at {public_url}.\n\
                 Open this link within 24 hours to confirm it:\n\n{link}\n\n\
                 If you did not register, ignore this mail.\n"
            ),
            html: format!(
                "<p>Hello {u},</p><p>the account <b>{u}</b> was registered with this address at {p}.</p>\
                 <p><a href=\"{l}\">Confirm your email address</a> (valid for 24 hours).</p>\
                 <p>If you did not register, ignore this mail.</p>",
                u = escape(user),
                p = escape(public_url),
                l = escape(link)
            ),
        },
        Mail::Reset { to, user, token } => Rendered {
            to: to.clone(),
            subject: "Your natter password reset token".into(),
            text: format!(
                "Hello {user},\n\na password reset was requested for your account at {public_url}.\n\
                 Type this token into the reset form within 30 minutes:\n\n{token}\n\n\
                 If you did not ask for it, ignore this mail; your password stays as it is.\n"
            ),
            html: format!(
                "<p>Hello {u},</p><p>a password reset was requested for your account at {p}.</p>\
                 <p>Type this token into the reset form within 30 minutes:</p><p><code>{t}</code></p>\
                 <p>If you did not ask for it, ignore this mail; your password stays as it is.</p>",
                u = escape(user),
                p = escape(public_url),
                t = escape(token)
            ),
        },
        Mail::AddressInUse { to, user } => Rendered {
            to: to.clone(),
            subject: "Someone tried to register with your address".into(),
            text: format!(
                "Hello,\n\nsomeone tried to register a new account at {public_url} with this address, \
                 which already belongs to the account {user}.\nIf that was you, sign in as {user} \
                 or reset its password. Otherwise ignore this mail.\n"
            ),
            html: format!(
                "<p>Hello,</p><p>someone tried to register a new account at {p} with this address, \
                 which already belongs to the account <b>{u}</b>.</p><p>If that was you, sign in as {u} \
                 or reset its password. Otherwise ignore this mail.</p>",
                u = escape(user),
                p = escape(public_url)
            ),
        },
    }
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            other => other.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_bodies_escape_names_and_links() {
        let mail = Mail::Activation {
            to: "a@example.org".into(),
            user: "<b>x".into(),
            link: "http://h/api/verifyEmail/%3Cb%3Ex/t?a=1&b=2".into(),
        };
        let rendered = render(&mail, "http://h");
        assert!(rendered.html.contains("&lt;b&gt;x"));
        assert!(rendered.html.contains("a=1&amp;b=2"));
        assert!(
            rendered
                .text
                .contains("http://h/api/verifyEmail/%3Cb%3Ex/t?a=1&b=2")
        );
        assert_eq!(rendered.subject, "Confirm your natter account");
    }
}
