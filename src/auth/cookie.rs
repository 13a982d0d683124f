//! The session cookie: `<id>.<hmac>` where id is 128 random bits and hmac signs it (docs/design.md, Sessions and presence).

use crate::error::ApiError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks cookie values; the key is `secret_key`.
#[derive(Clone)]
pub struct CookieSigner {
    /// HMAC keyed once: keying hashes the key twice, which every check would otherwise repeat.
    keyed: HmacSha256,
    name: &'static str,
    secure: bool,
}

/// A freshly issued session token: the cookie value for the client, the hash for storage.
pub struct IssuedToken {
    pub cookie_value: String,
    pub hash: [u8; 32],
}

impl CookieSigner {
    pub fn new(key: Vec<u8>, secure: bool) -> Self {
        // The __Host- prefix pins the cookie to this exact origin, but browsers require Secure for it.
        let name = if secure {
            "__Host-natter_session"
        } else {
            "natter_session"
        };
        // HMAC accepts keys of any length, so this cannot fail.
        let keyed = HmacSha256::new_from_slice(&key).expect("HMAC takes any key length");
        CookieSigner {
            keyed,
            name,
            secure,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// Makes a new random session id and its signed cookie value.
    pub fn issue(&self) -> Result<IssuedToken, ApiError> {
        let id = URL_SAFE_NO_PAD.encode(super::random_bytes::<16>()?);
        let mut mac = self.mac();
        mac.update(id.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok(IssuedToken {
            hash: super::sha256(id.as_bytes()),
            cookie_value: format!("{id}.{tag}"),
        })
    }

    /// Checks a cookie value's signature and returns the hash its session is stored under.
    pub fn verify(&self, value: &str) -> Option<[u8; 32]> {
        let (id, tag) = value.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(id.as_bytes());
        mac.verify_slice(&tag).ok()?;
        Some(super::sha256(id.as_bytes()))
    }

    /// Finds this server's cookie in a `Cookie` request header.
    pub fn from_header<'a>(&self, header: &'a str) -> Option<&'a str> {
        header
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.name)
            .map(|(_, value)| value)
    }

    /// `Set-Cookie` value that stores a session for `max_age_secs`.
    pub fn set_header(&self, value: &str, max_age_secs: u64) -> String {
        format!(
            "{}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_secs}{}",
            self.name,
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// `Set-Cookie` value that makes the browser forget the session.
    pub fn expire_header(&self) -> String {
        self.set_header("", 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_cookie_verifies_and_a_tampered_one_does_not() {
        let signer = CookieSigner::new(vec![7; 32], false);
        let token = signer.issue().unwrap();
        assert_eq!(signer.verify(&token.cookie_value), Some(token.hash));
        let other = CookieSigner::new(vec![8; 32], false);
        assert_eq!(other.verify(&token.cookie_value), None);
        let mut tampered = token.cookie_value.clone();
        tampered.replace_range(0..1, if tampered.starts_with('A') { "B" } else { "A" });
        assert_eq!(signer.verify(&tampered), None);
        assert_eq!(signer.verify("garbage"), None);
    }

    #[test]
    fn cookie_attributes_follow_the_scheme() {
        let plain = CookieSigner::new(vec![1; 32], false);
        let header = plain.set_header("v", 60);
        assert_eq!(
            header,
            "natter_session=v; HttpOnly; SameSite=Lax; Path=/; Max-Age=60"
        );
        let secure = CookieSigner::new(vec![1; 32], true);
        assert!(
            secure
                .set_header("v", 60)
                .starts_with("__Host-natter_session=v;")
        );
        assert!(secure.set_header("v", 60).ends_with("; Secure"));
        assert_eq!(
            plain.from_header("a=b; natter_session=xyz.abc; c=d"),
            Some("xyz.abc")
        );
    }
}
