//! Passwords are stored as argon2id PHC strings. Hashing is deliberately slow, so
//! it runs on the blocking pool, never on the async workers.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::{Arc, OnceLock};
use ticketing_domain::account::NewPassword;

#[derive(Clone)]
pub struct PasswordHasher {
    argon: Arc<Argon2<'static>>,
    /// Verified against when the e-mail is unknown, so that a login for an
    /// unknown account costs as much as one for a known account and response
    /// times do not reveal which e-mails are registered.
    dummy: Arc<OnceLock<String>>,
}

impl PasswordHasher {
    /// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
    pub fn new() -> Self {
        let params =
            Params::new(19 * 1024, 2, 1, None).expect("static argon2 parameters are valid");
        Self {
            argon: Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params)),
            dummy: Arc::new(OnceLock::new()),
        }
    }

    pub async fn hash(&self, password: &NewPassword) -> String {
        let argon = self.argon.clone();
        let pw = password.expose().to_string();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(pw.as_bytes(), &salt)
                .expect("argon2 with valid parameters cannot fail")
                .to_string()
        })
        .await
        .expect("the hashing task does not panic")
    }

    /// `stored` of `None` (unknown account) still spends one verification.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        let argon = self.argon.clone();
        let pw = password.to_string();
        let known = stored.is_some();
        let phc = match stored {
            Some(s) => s.to_string(),
            None => self.dummy_hash(),
        };
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc)
                .map(|h| argon.verify_password(pw.as_bytes(), &h).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        known && ok
    }

    fn dummy_hash(&self) -> String {
        self.dummy
            .get_or_init(|| {
                let salt = SaltString::generate(&mut OsRng);
                self.argon
                    .hash_password(b"not a real password", &salt)
                    .expect("argon2 with valid parameters cannot fail")
                    .to_string()
            })
            .clone()
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let h = PasswordHasher::new();
        let pw = NewPassword::parse("s3cret-password").unwrap();
        let a = h.hash(&pw).await;
        let b = h.hash(&pw).await;
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "every hash has its own salt");
        assert!(!a.contains("s3cret"));
        assert!(h.verify("s3cret-password", Some(&a)).await);
        assert!(!h.verify("wrong-password", Some(&a)).await);
        assert!(!h.verify("s3cret-password", None).await);
        assert!(!h.verify("s3cret-password", Some("not a phc string")).await);
    }
}
