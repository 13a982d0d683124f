//! Registered accounts: register, verify the email, sign in, reset the password (docs/api.md, Routes; docs/design.md, Mail).

use super::Service;
use super::presence::Issued;
use super::state::State;
use crate::auth::cookie::CookieSigner;
use crate::auth::password;
use crate::auth::tokens::{self, TokenCheck};
use crate::error::ApiError;
use crate::mail::outbox::queued_now;
use crate::model::{Email, Invalid, Password, UserName, name_key, now};
use crate::store::{Mail, Taken, UserRecord};
use std::time::Instant;

impl Service {
    /// `POST /api/register`: stores an unverified account and mails its activation link.
    pub async fn register(
        &self,
        raw_user: &str,
        raw_email: &str,
        raw_password: &str,
    ) -> Result<(), ApiError> {
        if !self.config.allow_registration {
            return Err(ApiError::RegistrationDisabled);
        }
        if !self.mail_enabled {
            return Err(ApiError::EmailNotConfigured);
        }
        if raw_password.is_empty() {
            return Err(Invalid::PasswordEmpty.into());
        }
        let name = UserName::parse(raw_user)?;
        let email = Email::parse(raw_email)?;
        let password = Password::parse(raw_password)?;
        // Checked before the expensive hash, and again under the lock before inserting.
        self.check_name_free(&mut self.lock(), &name)?;
        let password_hash = password::hash(password, self.config.password_iterations).await?;
        let created = now();
        let (token, activation) = tokens::new_activation(created)?;
        let user = UserRecord {
            name: name.as_str().to_owned(),
            email: email.as_str().to_owned(),
            password_hash,
            verified: false,
            admin: self.is_listed_admin(name.as_str()),
            bot: false,
            created,
            activation: Some(activation),
            reset: None,
        };
        let activation = queued_now(Mail::Activation {
            to: user.email.clone(),
            user: user.name.clone(),
            link: self.activation_link(&user.name, &token),
        });
        let epoch = {
            let mut st = self.lock();
            self.check_name_free(&mut st, &name)?;
            match self.store.insert_user(&user, Some(&activation))? {
                Ok(()) => st.accounts.add(&user.name),
                Err(Taken::Name) => return Err(ApiError::AlreadyRegistered),
                // Answer as for a new account, so the address's owner stays private; tell them instead.
                Err(Taken::Email) => {
                    self.store.queue_mail(&queued_now(Mail::AddressInUse {
                        to: user.email.clone(),
                        user: self.owner_of_email(&email)?,
                    }))?;
                }
            }
            self.store.write_epoch()
        };
        self.durable(epoch).await?;
        self.mail_wake.notify_one();
        Ok(())
    }

    /// A new account's name must be neither blocked nor taken, nor look like a taken name.
    fn check_name_free(&self, st: &mut State, name: &UserName) -> Result<(), ApiError> {
        if st.is_blocked(name.as_str(), Instant::now()) {
            return Err(ApiError::NameBlocked);
        }
        let registered =
            self.store.user(&name.key())?.is_some() || st.accounts.holds(name.as_str());
        if registered || self.is_bot_name(name.as_str()) {
            return Err(ApiError::AlreadyRegistered);
        }
        if st.online.contains_key(&name.key()) || st.online_names.holds(name.as_str()) {
            return Err(ApiError::AlreadyLoggedIn);
        }
        Ok(())
    }

    fn owner_of_email(&self, email: &Email) -> Result<String, ApiError> {
        let owner = self
            .store
            .user_key_by_email(&email.key())?
            .unwrap_or_default();
        Ok(self.store.user(&owner)?.map(|u| u.name).unwrap_or(owner))
    }

    fn activation_link(&self, user: &str, token: &str) -> String {
        format!(
            "{}/api/verifyEmail/{}/{}",
            self.config.public_url.trim_end_matches('/'),
            urlencoding::encode(user),
            token
        )
    }

    /// `GET /api/verifyEmail/{user}/{token}`: true if the link was valid and is now used up.
    pub async fn verify_email(&self, raw_user: &str, token: &str) -> Result<bool, ApiError> {
        let key = name_key(raw_user);
        let epoch = {
            let _st = self.lock();
            let Some(mut user) = self.store.user(&key)? else {
                return Ok(false);
            };
            let Some(mut record) = user.activation.take() else {
                return Ok(false);
            };
            match tokens::check(&mut record, token, now(), u32::MAX) {
                TokenCheck::Valid => {
                    user.verified = true;
                    user.admin = user.admin || self.is_listed_admin(&user.name);
                    self.store.update_user(&user, None)?;
                }
                // A wrong link leaves the real one usable; an expired one is dropped.
                TokenCheck::Wrong => return Ok(false),
                TokenCheck::Dead => {
                    self.store.update_user(&user, None)?;
                    return Ok(false);
                }
            }
            self.store.write_epoch()
        };
        self.durable(epoch).await?;
        Ok(true)
    }

    /// `POST /api/authorize`: checks the password and opens a new session.
    pub async fn authorize(
        &self,
        signer: &CookieSigner,
        raw_user: &str,
        raw_password: &str,
    ) -> Result<Issued, ApiError> {
        if raw_user.is_empty() {
            return Err(Invalid::UsernameEmpty.into());
        }
        if raw_password.is_empty() {
            return Err(Invalid::PasswordEmpty.into());
        }
        let key = name_key(raw_user);
        let user = self.store.user(&key)?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let account = user.as_ref().map_or(raw_user, |u| u.name.as_str());
        // Unknown users are checked against a dummy hash: same answer, same time.
        if !password::verify(raw_password.to_owned(), account, stored, &self.dummy_hash).await {
            return Err(ApiError::WrongCredentials);
        }
        let Some(user) = user else {
            return Err(ApiError::WrongCredentials);
        };
        if !user.verified {
            return Err(ApiError::EmailNotVerified);
        }
        let upgraded = self.stronger_hash(&user, raw_password).await?;
        self.registered_login(signer, &key, &user.password_hash, upgraded)
            .await
    }

    /// A hash with today's scheme and round count when the stored one is weaker: fewer
    /// rounds than `password_iterations`, or not PBKDF2 at all (bcrypt from chatty-server).
    async fn stronger_hash(
        &self,
        user: &UserRecord,
        raw_password: &str,
    ) -> Result<Option<String>, ApiError> {
        let target = self.config.password_iterations;
        let weaker = password::iterations_of(&user.password_hash).is_none_or(|i| i < target);
        if !weaker {
            return Ok(None);
        }
        // It just matched the stored hash, so even a 6-character one from chatty-server is kept.
        let password = Password::already_accepted(raw_password);
        Ok(Some(password::hash(password, target).await?))
    }

    /// `POST /api/requestResetPassword`: mails a reset token; unknown users get the same answer.
    pub async fn request_reset(&self, raw_user: &str) -> Result<(), ApiError> {
        if raw_user.is_empty() {
            return Err(Invalid::UsernameEmpty.into());
        }
        if !self.mail_enabled {
            return Err(ApiError::EmailNotConfigured);
        }
        let key = name_key(raw_user);
        let epoch = {
            let _st = self.lock();
            let Some(mut user) = self.store.user(&key)? else {
                return Ok(());
            };
            let (token, record) = tokens::new_reset(now())?;
            // A new request replaces any earlier token.
            user.reset = Some(record);
            let mail = queued_now(Mail::Reset {
                to: user.email.clone(),
                user: user.name.clone(),
                token,
            });
            self.store.update_user(&user, Some(&mail))?;
            self.store.write_epoch()
        };
        self.durable(epoch).await?;
        self.mail_wake.notify_one();
        Ok(())
    }

    /// `POST /api/resetPassword`: sets a new password and ends every session of the account.
    pub async fn reset_password(
        &self,
        raw_user: &str,
        token: &str,
        raw_password: &str,
    ) -> Result<(), ApiError> {
        if raw_user.is_empty() || token.is_empty() || raw_password.is_empty() {
            return Err(ApiError::SomeFieldsEmpty);
        }
        // Checked before the token, so a mistyped password does not burn the token.
        let password = Password::parse(raw_password)?;
        let key = name_key(raw_user);
        let new_hash = password::hash(password, self.config.password_iterations).await?;
        let (epoch, result) = {
            let mut st = self.lock();
            let Some(mut user) = self.store.user(&key)? else {
                return Err(ApiError::BadResetToken);
            };
            let Some(mut record) = user.reset.take() else {
                return Err(ApiError::BadResetToken);
            };
            match tokens::check(&mut record, token, now(), tokens::RESET_MAX_FAILURES) {
                TokenCheck::Valid => {}
                TokenCheck::Wrong => {
                    user.reset = Some(record);
                    self.store.update_user(&user, None)?;
                    return Err(ApiError::BadResetToken);
                }
                TokenCheck::Dead => {
                    self.store.update_user(&user, None)?;
                    return Err(ApiError::BadResetToken);
                }
            }
            // Sessions end first: if that fails, the password and the token stay as they were.
            let mut events = Vec::new();
            let ended = self.end_all_sessions(&mut st, &key, &mut events);
            let result = ended.and_then(|()| {
                user.password_hash = new_hash;
                // The token was mailed to the address, so using it proves the address too: an
                // account whose activation link is lost (imported unverified) gets in this way.
                if !user.verified {
                    user.verified = true;
                    user.activation = None;
                    user.admin = user.admin || self.is_listed_admin(&user.name);
                }
                Ok(self.store.update_user(&user, None)?)
            });
            (self.publish(events), result)
        };
        result?;
        self.durable(epoch).await
    }
}
