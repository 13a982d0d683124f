//! How mail leaves: the transport the config's `mail.provider` names, and one delivery through it.

use super::Rendered;
use super::sendgrid::SendGrid;
use crate::config::{Config, MailProvider};
use crate::store::Mail;

/// How queued mail leaves the server.
pub enum Transport {
    /// `provider = "log"`: links and tokens go to the log (dev mode and tests).
    Log,
    /// `provider = "sendgrid"`: the SendGrid v3 API.
    SendGrid(SendGrid),
}

impl Transport {
    /// Delivers one mail; an error means "try again later".
    pub async fn deliver(&self, mail: &Mail, rendered: &Rendered) -> Result<(), String> {
        match self {
            Transport::Log => {
                // The one deliberate exception to "no tokens in logs", and only with this provider.
                match mail {
                    Mail::Activation { link, .. } => log::info!("activation link: {link}"),
                    Mail::Reset { token, .. } => log::info!("reset password token: {token}"),
                    Mail::AddressInUse { user, .. } => {
                        log::info!("address-in-use notice for the account {user}")
                    }
                }
                Ok(())
            }
            Transport::SendGrid(client) => client.send(rendered).await,
        }
    }

    /// The configured way out for mail; `None` with `provider = "none"`.
    pub fn from_config(config: &Config) -> Result<Option<Transport>, String> {
        match config.mail.provider {
            MailProvider::Log => Ok(Some(Transport::Log)),
            MailProvider::None => Ok(None),
            MailProvider::Sendgrid => {
                // Config validation already demands a key with this provider.
                let key = config.mail.sendgrid_key.as_ref().ok_or_else(|| {
                    "mail.sendgrid_key is required with provider \"sendgrid\"".to_owned()
                })?;
                let client = SendGrid::new(
                    &config.mail.sendgrid_api_url,
                    key.expose(),
                    &config.mail.from,
                )?;
                Ok(Some(Transport::SendGrid(client)))
            }
        }
    }
}
