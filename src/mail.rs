//! Outgoing mail: the `Mailer` trait and its providers.

/// A message for a person's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mail {
    /// The verification link after registration.
    Activation {
        to: String,
        user: String,
        link: String,
    },
    /// A password reset token to type into the reset form.
    Reset {
        to: String,
        user: String,
        token: String,
    },
    /// Someone tried to register with an address that already has an account.
    AddressInUse { to: String, user: String },
}

/// Delivers mail without making the caller wait for the provider.
pub trait Mailer: Send + Sync {
    /// Hands a mail over for delivery.
    fn send(&self, mail: Mail);
    /// False for the `none` provider: registration and reset are then refused.
    fn configured(&self) -> bool;
}

/// `provider = "log"`: writes links and tokens to the log (dev mode and tests).
pub struct LogMailer;

impl Mailer for LogMailer {
    fn send(&self, mail: Mail) {
        // The one deliberate exception to "no tokens in logs", and only with this provider.
        match mail {
            Mail::Activation { link, .. } => log::info!("activation link: {link}"),
            Mail::Reset { token, .. } => log::info!("reset password token: {token}"),
            Mail::AddressInUse { user, .. } => {
                log::info!("address-in-use notice for the account {user}")
            }
        }
    }

    fn configured(&self) -> bool {
        true
    }
}

/// `provider = "none"`: no mail can be sent.
pub struct NoMailer;

impl Mailer for NoMailer {
    fn send(&self, mail: Mail) {
        log::warn!("mail is not configured; dropped a {}", kind(&mail));
    }

    fn configured(&self) -> bool {
        false
    }
}

fn kind(mail: &Mail) -> &'static str {
    match mail {
        Mail::Activation { .. } => "activation mail",
        Mail::Reset { .. } => "reset mail",
        Mail::AddressInUse { .. } => "address-in-use notice",
    }
}
