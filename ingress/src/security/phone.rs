//! Phone numbers at rest: AES-256-GCM, with the key id stored beside the
//! ciphertext so keys can rotate (new numbers use the active key, old ones stay
//! readable while their key is configured).
//!
//! Envelope: `v1:<key id>:<base64(nonce || ciphertext+tag)>`. The user id is the
//! associated data, so a ciphertext copied onto another account does not decrypt.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;
use ticketing_domain::account::Phone;
use ticketing_domain::ids::UserId;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PhoneCryptoError {
    #[error("phone key configuration is invalid: {0}")]
    BadKeySpec(String),
    #[error("phone ciphertext uses unknown key id {0}")]
    UnknownKey(String),
    #[error("phone ciphertext is corrupt or belongs to another account")]
    Corrupt,
}

#[derive(Clone)]
pub struct PhoneCipher {
    active: String,
    keys: Arc<HashMap<String, Aes256Gcm>>,
}

impl PhoneCipher {
    /// `spec` is `kid:base64key[,kid:base64key...]`; the first key encrypts, all
    /// of them decrypt. Keys are 32 bytes.
    pub fn from_spec(spec: &str) -> Result<Self, PhoneCryptoError> {
        let mut keys = HashMap::new();
        let mut active = None;
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kid, b64) = part
                .split_once(':')
                .ok_or_else(|| PhoneCryptoError::BadKeySpec("expected kid:base64key".into()))?;
            if kid.is_empty()
                || !kid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(PhoneCryptoError::BadKeySpec(
                    "a key id is letters, digits, '-' or '_'".into(),
                ));
            }
            let bytes = B64
                .decode(b64)
                .map_err(|_| PhoneCryptoError::BadKeySpec(format!("key {kid} is not base64")))?;
            if bytes.len() != 32 {
                return Err(PhoneCryptoError::BadKeySpec(format!(
                    "key {kid} must be 32 bytes"
                )));
            }
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes));
            if keys.insert(kid.to_string(), cipher).is_some() {
                return Err(PhoneCryptoError::BadKeySpec(format!(
                    "key {kid} given twice"
                )));
            }
            active.get_or_insert_with(|| kid.to_string());
        }
        let active = active.ok_or_else(|| PhoneCryptoError::BadKeySpec("no key given".into()))?;
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

    pub fn encrypt(&self, owner: UserId, phone: &Phone) -> String {
        let cipher = &self.keys[&self.active];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = owner.as_uuid();
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: phone.expose().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a short message cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        format!("v1:{}:{}", self.active, B64.encode(blob))
    }

    pub fn decrypt(&self, owner: UserId, envelope: &str) -> Result<String, PhoneCryptoError> {
        let mut parts = envelope.splitn(3, ':');
        let (Some("v1"), Some(kid), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(PhoneCryptoError::Corrupt);
        };
        let cipher = self
            .keys
            .get(kid)
            .ok_or_else(|| PhoneCryptoError::UnknownKey(kid.to_string()))?;
        let blob = B64.decode(b64).map_err(|_| PhoneCryptoError::Corrupt)?;
        if blob.len() < 12 + 16 {
            return Err(PhoneCryptoError::Corrupt);
        }
        let (nonce, ct) = blob.split_at(12);
        let aad = owner.as_uuid();
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| PhoneCryptoError::Corrupt)?;
        String::from_utf8(plain).map_err(|_| PhoneCryptoError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn user(n: u128) -> UserId {
        UserId::from_uuid(Uuid::from_u128(n))
    }

    #[test]
    fn round_trip_hides_the_number_and_binds_the_owner() {
        let c = PhoneCipher::from_spec(&PhoneCipher::generate_spec("k1")).unwrap();
        let phone = Phone::parse("010-1234-5678").unwrap();
        let env = c.encrypt(user(1), &phone);
        assert!(env.starts_with("v1:k1:"));
        assert!(!env.contains("01012345678"));
        assert_ne!(env, c.encrypt(user(1), &phone), "nonces differ");
        assert_eq!(c.decrypt(user(1), &env).unwrap(), "01012345678");
        assert_eq!(c.decrypt(user(2), &env), Err(PhoneCryptoError::Corrupt));
    }

    #[test]
    fn rotation_keeps_old_ciphertexts_readable() {
        let old = PhoneCipher::generate_spec("k1");
        let new = PhoneCipher::generate_spec("k2");
        let before = PhoneCipher::from_spec(&old).unwrap();
        let env = before.encrypt(user(7), &Phone::parse("+821012345678").unwrap());
        let after = PhoneCipher::from_spec(&format!("{new},{old}")).unwrap();
        assert_eq!(after.decrypt(user(7), &env).unwrap(), "+821012345678");
        assert!(after
            .encrypt(user(7), &Phone::parse("+821012345678").unwrap())
            .starts_with("v1:k2:"));
        let only_new = PhoneCipher::from_spec(&new).unwrap();
        assert_eq!(
            only_new.decrypt(user(7), &env),
            Err(PhoneCryptoError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn bad_specs_and_envelopes_are_refused() {
        assert!(PhoneCipher::from_spec("").is_err());
        assert!(PhoneCipher::from_spec("k1").is_err());
        assert!(PhoneCipher::from_spec("k1:c2hvcnQ=").is_err());
        let c = PhoneCipher::from_spec(&PhoneCipher::generate_spec("k1")).unwrap();
        for bad in [
            "",
            "v1:k1:",
            "v2:k1:AAAA",
            "v1:k1:!!!",
            "v1:k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(c.decrypt(user(1), bad).is_err(), "{bad}");
        }
    }
}
