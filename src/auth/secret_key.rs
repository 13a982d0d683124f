//! The cookie signing key: `secret_key` from the config, or one generated on the first start and
//! kept in `data_dir/secret_key`.

use crate::config::{self, Config};
use std::path::Path;

/// The cookie signing key: from the config, or generated once and kept in `data_dir/secret_key`.
pub fn load(config: &Config) -> Result<Vec<u8>, String> {
    if let Some(secret) = &config.secret_key {
        let key = secret.expose().as_bytes();
        if key.len() < config::MIN_SECRET_KEY_BYTES {
            // Only dev mode gets here: validation refuses a short key in production.
            log::warn!(
                "secret_key is only {} bytes long: stretched to {} with SHA-256 for development; production \
                 refuses it (generate one with `openssl rand -base64 32`)",
                key.len(),
                config::MIN_SECRET_KEY_BYTES
            );
            return Ok(stretch_dev_secret(key));
        }
        return Ok(key.to_vec());
    }
    let path = config.data_dir.join("secret_key");
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() >= 32 => Ok(bytes),
        Ok(_) => Err(format!(
            "{} is shorter than 32 bytes; delete it to generate a new one",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate_secret(&path),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// A short dev-mode key made 32 bytes long, the same on every start so that cookies survive a restart. It is no
/// stronger than the short key, which is why only dev mode accepts one.
fn stretch_dev_secret(key: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(b"natter dev secret_key\0");
    hash.update(key);
    hash.finalize().to_vec()
}

/// 32 new random bytes: a cookie key for a store that keeps its own.
pub fn fresh() -> Result<Vec<u8>, String> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("the OS random generator failed: {e}"))?;
    Ok(key.to_vec())
}

fn generate_secret(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let key = fresh()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(&key)
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    log::info!("generated a new secret key in {}", path.display());
    Ok(key.to_vec())
}

#[cfg(test)]
mod tests {
    use super::{load as secret_key, stretch_dev_secret};
    use crate::config::from_toml_str;

    #[test]
    fn a_short_secret_key_is_stretched_in_dev_mode_only() {
        let short = "secret_key = \"1234567890\"";
        let e = from_toml_str(short, false).unwrap_err().to_string();
        assert!(
            e.contains("at least 32 bytes long (it has 10")
                && e.contains("openssl rand -base64 32")
                && e.contains("/dev/urandom"),
            "{e}"
        );
        assert!(!e.contains("1234567890"), "{e}");
        let config = from_toml_str(short, true).unwrap();
        let key = secret_key(&config).unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(key, stretch_dev_secret(b"1234567890"));
        assert_ne!(key, stretch_dev_secret(b"1234567891"));
        // A long enough key is used as it is, in both modes.
        let long = "secret_key = \"0123456789abcdef0123456789abcdef\"";
        for dev in [false, true] {
            let config = from_toml_str(long, dev).unwrap();
            assert_eq!(
                secret_key(&config).unwrap(),
                b"0123456789abcdef0123456789abcdef"
            );
        }
        assert!(from_toml_str("secret_key = \" \"", true).is_err());
    }
}
