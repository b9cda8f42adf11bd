//! Bastion authentication: users who log in at ftpgate with an argon2id
//! password (and optionally a client certificate) and are mapped to a backend
//! account whose credentials the client never sees.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::fmt;

/// A secret that must never reach a log: Debug and Display print stars.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// A user authenticated by ftpgate itself.
#[derive(Debug, Clone)]
pub struct BastionUser {
    /// argon2id PHC string, as `ftpgate passwd` prints it.
    pub password_hash: String,
    /// A verified client certificate is required as well.
    pub client_cert: bool,
    /// Named backend from the configuration; `None`: the default backend.
    pub backend: Option<String>,
    /// The account ftpgate logs in with on the backend.
    pub backend_user: String,
    pub backend_password: Secret,
}

/// Hashes a password for the policy file (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Checks `password` against a PHC string. CPU-heavy by design: call it off
/// the async workers.
pub fn verify_password(hash: &str, password: &[u8]) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok())
}

/// Whether a PHC string is one `verify_password` can use.
pub fn valid_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str() == "argon2id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(valid_hash(&h));
        assert!(verify_password(&h, b"correct horse"));
        assert!(!verify_password(&h, b"wrong horse"));
        assert!(!verify_password("not a hash", b"x"));
        assert!(!valid_hash("$2b$12$bcrypthash"));
        assert_eq!(format!("{:?}", Secret::new("hunter2".into())), "****");
    }
}
