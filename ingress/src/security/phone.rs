//! Phone numbers at rest, encrypted under `TICKETING_PHONE_KEYS` and bound to
//! their account (the user id is the associated data).

use super::keyring::{CryptoError, Keyring};
use ticketing_domain::account::Phone;
use ticketing_domain::ids::UserId;

pub type PhoneCryptoError = CryptoError;

#[derive(Clone)]
pub struct PhoneCipher(Keyring);

impl PhoneCipher {
    /// See [`Keyring::from_spec`].
    pub fn from_spec(spec: &str) -> Result<Self, CryptoError> {
        Keyring::from_spec(spec).map(Self)
    }

    pub fn generate_spec(kid: &str) -> String {
        Keyring::generate_spec(kid)
    }

    pub fn encrypt(&self, owner: UserId, phone: &Phone) -> String {
        self.0
            .encrypt(owner.as_uuid().as_bytes(), phone.expose().as_bytes())
    }

    pub fn decrypt(&self, owner: UserId, envelope: &str) -> Result<String, CryptoError> {
        let plain = self.0.decrypt(owner.as_uuid().as_bytes(), envelope)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Corrupt)
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
    fn a_phone_is_bound_to_its_account() {
        let c = PhoneCipher::from_spec(&PhoneCipher::generate_spec("k1")).unwrap();
        let phone = Phone::parse("010-1234-5678").unwrap();
        let env = c.encrypt(user(1), &phone);
        assert!(!env.contains("01012345678"));
        assert_eq!(c.decrypt(user(1), &env).unwrap(), "01012345678");
        assert_eq!(c.decrypt(user(2), &env), Err(CryptoError::Corrupt));
    }
}
