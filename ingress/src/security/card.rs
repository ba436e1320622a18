//! Card numbers at rest, encrypted under `TICKETING_CARD_KEYS` (a key ring of
//! its own, so phone keys never open card data) and bound to their payment
//! (the payment id is the associated data). Only the last four digits are ever
//! stored or shown in clear.

use super::keyring::{CryptoError, Keyring};
use ticketing_domain::ids::PaymentId;
use ticketing_domain::payment::CardNumber;

#[derive(Clone)]
pub struct CardCipher(Keyring);

impl CardCipher {
    /// See [`Keyring::from_spec`].
    pub fn from_spec(spec: &str) -> Result<Self, CryptoError> {
        Keyring::from_spec(spec).map(Self)
    }

    pub fn generate_spec(kid: &str) -> String {
        Keyring::generate_spec(kid)
    }

    pub fn encrypt(&self, payment: PaymentId, number: &CardNumber) -> String {
        self.0
            .encrypt(payment.as_uuid().as_bytes(), number.expose().as_bytes())
    }

    pub fn decrypt(&self, payment: PaymentId, envelope: &str) -> Result<CardNumber, CryptoError> {
        let plain = self.0.decrypt(payment.as_uuid().as_bytes(), envelope)?;
        let digits = String::from_utf8(plain).map_err(|_| CryptoError::Corrupt)?;
        CardNumber::parse(&digits).map_err(|_| CryptoError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn payment(n: u128) -> PaymentId {
        PaymentId::from_uuid(Uuid::from_u128(n))
    }

    #[test]
    fn a_card_is_bound_to_its_payment_and_never_stored_in_clear() {
        let c = CardCipher::from_spec(&CardCipher::generate_spec("c1")).unwrap();
        let number = CardNumber::parse("4242 4242 4242 4242").unwrap();
        let env = c.encrypt(payment(1), &number);
        assert!(!env.contains("4242424242424242"));
        assert_eq!(c.decrypt(payment(1), &env).unwrap(), number);
        assert_eq!(c.decrypt(payment(2), &env), Err(CryptoError::Corrupt));
    }
}
