//! Secrets handed out and checked: random session ids, CSRF tokens and API token
//! secrets (only their SHA-256 is stored), and account passwords (argon2id).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The prefix of API token secrets, so a leaked one is recognisable in a scan.
pub const TOKEN_PREFIX: &str = "lw_";

/// Failure to get randomness or to hash.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(String);

/// 32 random bytes from the operating system, URL-safe base64 without padding.
pub fn random_token() -> Result<String, SecretError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| SecretError(format!("the operating system gave no random bytes: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A new API token secret: `lw_` and 256 random bits.
pub fn new_api_token() -> Result<String, SecretError> {
    Ok(format!("{TOKEN_PREFIX}{}", random_token()?))
}

/// SHA-256 of a high-entropy secret (session id, API token), lowercase hex: what the
/// store keeps and looks up.
pub fn sha256_hex(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Compares two secrets (or hashes) in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The argon2id hash (PHC string, the crate's default parameters: 19 MiB, 2 passes)
/// of a password. CPU-heavy: call it off the async runtime.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| SecretError(format!("the operating system gave no random bytes: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| SecretError(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretError(format!("cannot hash the password: {e}")))
}

/// Whether `password` matches the stored PHC hash (false for a malformed hash).
/// CPU-heavy: call it off the async runtime.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash that never matches, verified when the account does not exist so that a
/// wrong name takes as long as a wrong password.
pub fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password("no account has this password").unwrap_or_default())
}

/// What a password must be: 10 to 1024 characters.
pub fn check_password(p: &str) -> Result<(), String> {
    let n = p.chars().count();
    if n < 10 {
        return Err("the password must have at least 10 characters".into());
    }
    if n > 1024 {
        return Err("the password must have at most 1024 characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterz", &h));
        assert!(!verify_password("x", "not a hash"));
        // Salted: the same password hashes differently.
        assert_ne!(h, hash_password("correct horse battery").unwrap());
        assert!(check_password("short").is_err());
        assert!(check_password("long enough!").is_ok());
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_api_token().unwrap();
        let b = new_api_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("lw_") && a.len() == 3 + 43, "{a}");
        assert_eq!(sha256_hex("abc").len(), 64);
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
