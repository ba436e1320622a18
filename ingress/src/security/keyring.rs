//! Personal and payment data at rest: AES-256-GCM under a ring of keys, with
//! the key id stored beside the ciphertext so keys can rotate (new values use
//! the active key, old ones stay readable while their key is configured).
//!
//! Envelope: `v1:<key id>:<base64(nonce || ciphertext+tag)>`. Each caller
//! binds a value to its owner through the associated data (a user id, a
//! payment id), so a ciphertext copied onto another record does not decrypt.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("key configuration is invalid: {0}")]
    BadKeySpec(String),
    #[error("ciphertext uses unknown key id {0}")]
    UnknownKey(String),
    #[error("ciphertext is corrupt or belongs to another record")]
    Corrupt,
}

#[derive(Clone)]
pub struct Keyring {
    active: String,
    keys: Arc<HashMap<String, Aes256Gcm>>,
}

impl Keyring {
    /// `spec` is `kid:base64key[,kid:base64key...]`; the first key encrypts,
    /// all of them decrypt. Keys are 32 bytes.
    pub fn from_spec(spec: &str) -> Result<Self, CryptoError> {
        let mut keys = HashMap::new();
        let mut active = None;
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kid, b64) = part
                .split_once(':')
                .ok_or_else(|| CryptoError::BadKeySpec("expected kid:base64key".into()))?;
            if kid.is_empty()
                || !kid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(CryptoError::BadKeySpec(
                    "a key id is letters, digits, '-' or '_'".into(),
                ));
            }
            let bytes = B64
                .decode(b64)
                .map_err(|_| CryptoError::BadKeySpec(format!("key {kid} is not base64")))?;
            if bytes.len() != 32 {
                return Err(CryptoError::BadKeySpec(format!(
                    "key {kid} must be 32 bytes"
                )));
            }
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes));
            if keys.insert(kid.to_string(), cipher).is_some() {
                return Err(CryptoError::BadKeySpec(format!("key {kid} given twice")));
            }
            active.get_or_insert_with(|| kid.to_string());
        }
        let active = active.ok_or_else(|| CryptoError::BadKeySpec("no key given".into()))?;
        Ok(Self {
            active,
            keys: Arc::new(keys),
        })
    }

    /// A fresh single-key spec, for `ticketing dev`'s first start.
    pub fn generate_spec(kid: &str) -> String {
        let key = Aes256Gcm::generate_key(OsRng);
        format!("{kid}:{}", B64.encode(key))
    }

    pub fn encrypt(&self, aad: &[u8], plain: &[u8]) -> String {
        let cipher = &self.keys[&self.active];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(&nonce, Payload { msg: plain, aad })
            .expect("AES-GCM encryption of a short message cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        format!("v1:{}:{}", self.active, B64.encode(blob))
    }

    pub fn decrypt(&self, aad: &[u8], envelope: &str) -> Result<Vec<u8>, CryptoError> {
        let mut parts = envelope.splitn(3, ':');
        let (Some("v1"), Some(kid), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CryptoError::Corrupt);
        };
        let cipher = self
            .keys
            .get(kid)
            .ok_or_else(|| CryptoError::UnknownKey(kid.to_string()))?;
        let blob = B64.decode(b64).map_err(|_| CryptoError::Corrupt)?;
        if blob.len() < 12 + 16 {
            return Err(CryptoError::Corrupt);
        }
        let (nonce, ct) = blob.split_at(12);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| CryptoError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_hides_the_value_and_binds_the_owner() {
        let k = Keyring::from_spec(&Keyring::generate_spec("k1")).unwrap();
        let env = k.encrypt(b"owner-1", b"secret value");
        assert!(env.starts_with("v1:k1:"));
        assert!(!env.contains("secret"));
        assert_ne!(env, k.encrypt(b"owner-1", b"secret value"), "nonces differ");
        assert_eq!(k.decrypt(b"owner-1", &env).unwrap(), b"secret value");
        assert_eq!(k.decrypt(b"owner-2", &env), Err(CryptoError::Corrupt));
    }

    #[test]
    fn rotation_keeps_old_ciphertexts_readable() {
        let old = Keyring::generate_spec("k1");
        let new = Keyring::generate_spec("k2");
        let env = Keyring::from_spec(&old).unwrap().encrypt(b"o", b"v");
        let after = Keyring::from_spec(&format!("{new},{old}")).unwrap();
        assert_eq!(after.decrypt(b"o", &env).unwrap(), b"v");
        assert!(after.encrypt(b"o", b"v").starts_with("v1:k2:"));
        let only_new = Keyring::from_spec(&new).unwrap();
        assert_eq!(
            only_new.decrypt(b"o", &env),
            Err(CryptoError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn bad_specs_and_envelopes_are_refused() {
        assert!(Keyring::from_spec("").is_err());
        assert!(Keyring::from_spec("k1").is_err());
        assert!(Keyring::from_spec("k1:c2hvcnQ=").is_err());
        assert!(Keyring::from_spec("k 1:AAAA").is_err());
        let one = Keyring::generate_spec("k1");
        assert!(Keyring::from_spec(&format!("{one},{one}")).is_err());
        let k = Keyring::from_spec(&one).unwrap();
        for bad in [
            "",
            "v1:k1:",
            "v2:k1:AAAA",
            "v1:k1:!!!",
            "v1:k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(k.decrypt(b"o", bad).is_err(), "{bad}");
        }
    }
}
