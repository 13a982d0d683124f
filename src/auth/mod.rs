//! Passwords, session cookies and single-use tokens.

pub mod cookie;
pub mod password;
pub mod secret_key;
pub mod tokens;

use crate::error::ApiError;

/// Fills `buf` from the OS RNG; failure is an internal error, never a weak fallback.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| {
        log::error!("the OS random number generator failed: {e}");
        ApiError::Internal
    })?;
    Ok(buf)
}

/// SHA-256 of a secret, the only form in which tokens and session ids are stored.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Compares two hashes without an early exit.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
