//! PBKDF2-HMAC-SHA256 password hashes as PHC strings, computed off the async workers. Accounts
//! imported from chatty-server still carry bcrypt hashes: those verify, and are replaced at the
//! first sign-in.

use crate::error::ApiError;
use crate::model::Password;
use pbkdf2::password_hash::{CustomizedPasswordHasher, PasswordVerifier};
use pbkdf2::phc::PasswordHash;
use pbkdf2::{Params, Pbkdf2};
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
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

/// Highest bcrypt cost accepted: cost 12 already takes about a quarter second a try, and every
/// step doubles it (chatty-server wrote cost 4).
pub const MAX_BCRYPT_COST: u32 = 12;
/// bcrypt's own lowest cost.
const MIN_BCRYPT_COST: u32 = 4;
/// The config's default `password_iterations`: the round limit never falls below its multiple, so
/// a backup from a production host still loads into a test one with few rounds.
const DEFAULT_ITERATIONS: u32 = 600_000;
/// A stored PBKDF2 hash may have this many times the rounds natter would use today.
const ROUNDS_HEADROOM: u32 = 4;

/// Most PBKDF2 rounds a stored hash may ask for, given `password_iterations`.
pub fn max_rounds(password_iterations: u32) -> u32 {
    password_iterations
        .max(DEFAULT_ITERATIONS)
        .saturating_mul(ROUNDS_HEADROOM)
}

/// Checks a hash that arrives from outside (restore, import): bcrypt of cost 4 to 12, or
/// PBKDF2-SHA256 with at most `max_rounds` rounds. The error says why, never the hash.
pub fn check_stored(stored: &str, password_iterations: u32) -> Result<(), String> {
    if is_bcrypt(stored) {
        let parts: bcrypt::HashParts = stored
            .parse()
            .map_err(|_| "the password hash is not a well-formed bcrypt hash".to_owned())?;
        let cost = parts.get_cost();
        if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
            return Err(format!(
                "the bcrypt password hash has cost {cost}, outside {MIN_BCRYPT_COST} to \
                 {MAX_BCRYPT_COST}"
            ));
        }
        return Ok(());
    }
    let hash = PasswordHash::new(stored)
        .map_err(|_| "the password hash is neither PBKDF2 (PHC string) nor bcrypt".to_owned())?;
    if hash.algorithm.as_str() != "pbkdf2-sha256" {
        return Err(format!(
            "the password hash uses {}, not pbkdf2-sha256",
            hash.algorithm.as_str()
        ));
    }
    let params = Params::try_from(&hash)
        .map_err(|_| "the PBKDF2 password hash has invalid parameters".to_owned())?;
    let limit = max_rounds(password_iterations);
    if params.rounds() > limit {
        return Err(format!(
            "the PBKDF2 password hash has {} rounds, above the limit of {limit} (4 times \
             password_iterations, at least 4 times 600000)",
            params.rounds()
        ));
    }
    Ok(())
}

/// A description of what makes `stored` too costly to verify, if it is (bcrypt cost above 12,
/// PBKDF2 rounds above `max_rounds`).
fn too_costly(stored: &str, password_iterations: u32) -> Option<String> {
    if is_bcrypt(stored) {
        let cost = stored.parse::<bcrypt::HashParts>().ok()?.get_cost();
        return (cost > MAX_BCRYPT_COST).then(|| format!("bcrypt cost {cost}"));
    }
    let rounds = iterations_of(stored)?;
    (rounds > max_rounds(password_iterations)).then(|| format!("{rounds} PBKDF2 rounds"))
}

/// Logs a too costly stored hash, naming its account, the first time it is met (the set holds
/// only such hashes).
fn log_too_costly_once(account: &str, stored: &str, what: &str) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| Mutex::new(HashSet::new()));
    let first = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(stored.to_owned());
    if first {
        log::warn!(
            "the stored password hash of {account:?} asks for {what}, above natter's limit \
             (bcrypt cost {MAX_BCRYPT_COST}, PBKDF2 4 times password_iterations): its sign-ins are \
             refused as a wrong password; set a new password with `natter user set-password \
             {account}`"
        );
    }
}

/// Checks a password against a stored hash. With no stored hash (unknown user) it checks
/// against `dummy` and answers false, so both paths cost the same time. A stored hash above the
/// cost limits (derived from `dummy`'s rounds, which are `password_iterations`) is not run: it
/// answers as a wrong password would, and is logged once under `account`.
pub async fn verify(password: String, account: &str, stored: Option<String>, dummy: &str) -> bool {
    let iterations = iterations_of(dummy).unwrap_or(DEFAULT_ITERATIONS);
    let stored = match stored {
        Some(hash) => match too_costly(&hash, iterations) {
            Some(what) => {
                log_too_costly_once(account, &hash, &what);
                None
            }
            None => Some(hash),
        },
        None => None,
    };
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
        assert!(verify("correct horse".into(), "pat", Some(stored.clone()), &dummy).await);
        assert!(!verify("wrong horse".into(), "pat", Some(stored), &dummy).await);
        assert!(!verify("anything".into(), "pat", None, &dummy).await);
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
            assert!(verify("sixchr".into(), "pat", Some(stored.clone()), &dummy).await);
            assert!(!verify("sixchrs".into(), "pat", Some(stored), &dummy).await);
        }
        assert!(!is_bcrypt("$pbkdf2-sha256$i=1000,l=32$x$y"));
    }

    /// A `$2b$` hash of `cost` made without running it (cost 31 would take years).
    fn bcrypt_of_cost(cost: u32) -> String {
        let quick = bcrypt::hash_with_result("sixchr", 4).unwrap().to_string();
        format!("$2b${cost:02}{}", &quick[6..])
    }

    #[tokio::test]
    async fn hashes_above_the_cost_limits_answer_as_wrong_at_once() {
        let dummy = dummy_hash(1000).await.unwrap();
        let started = std::time::Instant::now();
        assert!(!verify("sixchr".into(), "pat", Some(bcrypt_of_cost(31)), &dummy).await);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let rounds = max_rounds(1000) + 1;
        let planted = format!(
            "$pbkdf2-sha256$i={rounds},l=32$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
        );
        let started = std::time::Instant::now();
        assert!(!verify("x".into(), "pat", Some(planted), &dummy).await);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Cost 12 still verifies.
        let twelve = bcrypt::hash("sixchr", 12).unwrap();
        assert!(verify("sixchr".into(), "pat", Some(twelve), &dummy).await);
    }

    #[test]
    fn incoming_hashes_are_checked_for_format_and_cost() {
        assert_eq!(max_rounds(1000), 2_400_000);
        assert_eq!(max_rounds(1_000_000), 4_000_000);
        assert!(check_stored(&bcrypt_of_cost(4), 1000).is_ok());
        assert!(check_stored(&bcrypt_of_cost(12), 1000).is_ok());
        let e = check_stored(&bcrypt_of_cost(31), 1000).unwrap_err();
        assert!(e.contains("cost 31"), "{e}");
        assert!(check_stored("$2b$04$short", 1000).is_err());
        assert!(check_stored("plaintext", 1000).is_err());
        assert!(check_stored("", 1000).is_err());
        let phc = |alg: &str, i: u32| {
            format!("${alg}$i={i},l=32$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g")
        };
        assert!(check_stored(&phc("pbkdf2-sha256", 600_000), 600_000).is_ok());
        let e = check_stored(&phc("pbkdf2-sha256", 2_400_001), 1000).unwrap_err();
        assert!(e.contains("2400001 rounds"), "{e}");
        assert!(check_stored(&phc("pbkdf2-sha512", 1000), 1000).is_err());
    }
}
