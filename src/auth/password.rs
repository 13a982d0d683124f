//! PBKDF2-HMAC-SHA256 password hashes as PHC strings, computed off the async workers. Accounts
//! imported from chatty-server still carry bcrypt hashes: those verify, and are replaced at the
//! first sign-in.

use crate::error::ApiError;
use crate::model::Password;
use pbkdf2::password_hash::{CustomizedPasswordHasher, PasswordVerifier};
use pbkdf2::phc::PasswordHash;
use pbkdf2::{Params, Pbkdf2};
use std::sync::OnceLock;
use tokio::sync::Semaphore;

/// Hashes running at once: one core fewer than the machine has (at least one), so a sign-in
/// storm queues here instead of taking every core from the async workers that deliver events.
fn hashing_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Semaphore::new(cores.saturating_sub(1).max(1))
    })
}

/// Runs one PBKDF2 computation on a blocking thread once a hashing slot is free.
async fn off_workers<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _slot = hashing_slots().acquire().await.ok()?;
    tokio::task::spawn_blocking(work).await.ok()
}

/// Hashes a password with `iterations` rounds and a fresh random salt.
pub async fn hash(password: Password, iterations: u32) -> Result<String, ApiError> {
    let salt: [u8; 16] = super::random_bytes()?;
    off_workers(move || hash_blocking(password.expose(), &salt, iterations))
        .await
        .ok_or(ApiError::Internal)?
}

fn hash_blocking(password: &str, salt: &[u8], iterations: u32) -> Result<String, ApiError> {
    let params = Params::new(iterations).map_err(|_| ApiError::Internal)?;
    Pbkdf2::default()
        .hash_password_with_params(password.as_bytes(), salt, params)
        .map(|h| h.to_string())
        .map_err(|e| {
            log::error!("password hashing failed: {e}");
            ApiError::Internal
        })
}

/// Checks a password against a stored hash. With no stored hash (unknown user) it checks
/// against `dummy` and answers false, so both paths cost the same time.
pub async fn verify(password: String, stored: Option<String>, dummy: &str) -> bool {
    let known = stored.is_some();
    let hash = stored.unwrap_or_else(|| dummy.to_owned());
    let dummy = dummy.to_owned();
    let matches = off_workers(move || {
        let matches = verify_blocking(&password, &hash);
        if is_bcrypt(&hash) {
            // bcrypt at chatty-server's cost 4 is quick: pay the PBKDF2 time as well, so a
            // not yet upgraded account answers as slowly as any other.
            let _ = verify_blocking(&password, &dummy);
        }
        matches
    })
    .await
    .unwrap_or(false);
    known && matches
}

fn verify_blocking(password: &str, stored: &str) -> bool {
    if is_bcrypt(stored) {
        return bcrypt::verify(password, stored).unwrap_or(false);
    }
    match PasswordHash::new(stored) {
        Ok(hash) => Pbkdf2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, for the unknown-user path of `verify`.
pub async fn dummy_hash(iterations: u32) -> Result<String, ApiError> {
    let random: [u8; 16] = super::random_bytes()?;
    let password = Password::parse(&format!("{random:02x?}")).map_err(|_| ApiError::Internal)?;
    hash(password, iterations).await
}

/// A bcrypt hash as chatty-server stored them (`$2a$`, `$2b$`, `$2y$`).
pub fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|prefix| stored.starts_with(prefix))
}

/// The round count inside a PBKDF2 PHC string; `None` for anything else (bcrypt too).
pub fn iterations_of(stored: &str) -> Option<u32> {
    let hash = PasswordHash::new(stored).ok()?;
    Params::try_from(&hash).ok().map(|p| p.rounds())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify_round_trips_and_keeps_the_round_count() {
        let password = Password::parse("correct horse").unwrap();
        let stored = hash(password, 1000).await.unwrap();
        assert!(stored.starts_with("$pbkdf2-sha256$i=1000"));
        assert_eq!(iterations_of(&stored), Some(1000));
        let dummy = dummy_hash(1000).await.unwrap();
        assert!(verify("correct horse".into(), Some(stored.clone()), &dummy).await);
        assert!(!verify("wrong horse".into(), Some(stored), &dummy).await);
        assert!(!verify("anything".into(), None, &dummy).await);
    }

    #[tokio::test]
    async fn bcrypt_hashes_from_chatty_verify_and_count_as_weaker() {
        let dummy = dummy_hash(1000).await.unwrap();
        for prefix in [
            bcrypt::Version::TwoA,
            bcrypt::Version::TwoB,
            bcrypt::Version::TwoY,
        ] {
            let stored = bcrypt::hash_with_result("sixchr", 4)
                .unwrap()
                .format_for_version(prefix);
            assert!(is_bcrypt(&stored), "{stored}");
            assert_eq!(iterations_of(&stored), None);
            assert!(verify("sixchr".into(), Some(stored.clone()), &dummy).await);
            assert!(!verify("sixchrs".into(), Some(stored), &dummy).await);
        }
        assert!(!is_bcrypt("$pbkdf2-sha256$i=1000,l=32$x$y"));
    }
}
