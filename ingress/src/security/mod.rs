//! Credentials and personal data at rest: password hashing, phone and card
//! encryption (one key ring type, separate rings), and login tokens.

pub mod card;
pub mod keyring;
pub mod password;
pub mod phone;
pub mod tokens;
