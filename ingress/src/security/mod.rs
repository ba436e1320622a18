//! Credentials and personal data at rest: password hashing, phone encryption
//! and login tokens.

pub mod password;
pub mod phone;
pub mod tokens;
