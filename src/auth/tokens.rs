//! Activation and reset tokens: random from the OS RNG, stored hashed, expiring, single use.

use super::{hashes_equal, random_bytes, sha256};
use crate::error::ApiError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// A single-use secret (activation or reset token), kept only as a SHA-256 hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub hash: [u8; 32],
    /// Unix seconds after which the token is refused.
    pub expires: i64,
    /// Wrong guesses so far (reset tokens die after 5).
    pub failures: u32,
}

/// Activation links stay valid for 24 hours.
pub const ACTIVATION_TTL_SECS: i64 = 24 * 3600;
/// Reset tokens stay valid for 30 minutes.
pub const RESET_TTL_SECS: i64 = 30 * 60;
/// Wrong guesses after which a reset token dies.
pub const RESET_MAX_FAILURES: u32 = 5;

const RESET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new activation token (32 random bytes, base64url) and its stored record.
pub fn new_activation(now: i64) -> Result<(String, TokenRecord), ApiError> {
    let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    Ok(record_for(token, now + ACTIVATION_TTL_SECS))
}

/// A new reset token (20 characters a person can type) and its stored record.
pub fn new_reset(now: i64) -> Result<(String, TokenRecord), ApiError> {
    let mut token = String::with_capacity(20);
    while token.len() < 20 {
        for byte in random_bytes::<32>()? {
            // Rejection sampling keeps every character equally likely (248 = 4 * 62).
            if byte < 248 && token.len() < 20 {
                token.push(RESET_ALPHABET[(byte % 62) as usize] as char);
            }
        }
    }
    Ok(record_for(token, now + RESET_TTL_SECS))
}

fn record_for(token: String, expires: i64) -> (String, TokenRecord) {
    let record = TokenRecord {
        hash: sha256(token.as_bytes()),
        expires,
        failures: 0,
    };
    (token, record)
}

/// What checking a presented token against the stored record found.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenCheck {
    Valid,
    /// Wrong token: the record counts the failure (and may now be dead).
    Wrong,
    /// Expired or used up: the record should be removed.
    Dead,
}

/// Checks `presented` against `record`, counting a wrong guess in the record.
pub fn check(record: &mut TokenRecord, presented: &str, now: i64, max_failures: u32) -> TokenCheck {
    if now > record.expires || record.failures >= max_failures {
        return TokenCheck::Dead;
    }
    if hashes_equal(&record.hash, &sha256(presented.as_bytes())) {
        TokenCheck::Valid
    } else {
        record.failures += 1;
        TokenCheck::Wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_tokens_are_twenty_alphanumerics() {
        let (token, record) = new_reset(100).unwrap();
        assert_eq!(token.len(), 20);
        assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(record.expires, 100 + RESET_TTL_SECS);
        assert_ne!(new_reset(100).unwrap().0, token);
    }

    #[test]
    fn tokens_expire_and_die_after_failures() {
        let (token, mut record) = new_activation(0).unwrap();
        assert_eq!(check(&mut record, &token, 10, 5), TokenCheck::Valid);
        assert_eq!(
            check(&mut record, &token, ACTIVATION_TTL_SECS + 1, 5),
            TokenCheck::Dead
        );
        for _ in 0..5 {
            assert_eq!(check(&mut record, "nope", 10, 5), TokenCheck::Wrong);
        }
        assert_eq!(check(&mut record, &token, 10, 5), TokenCheck::Dead);
    }
}
