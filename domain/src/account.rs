//! Accounts: validated values and the roles that gate every route.

use crate::audit::Audit;
use crate::error::ValidationError;
use crate::ids::UserId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What an account may do. Public sign-up can only create `User` or `Seller`;
/// the first `Manager` is bootstrapped from configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    User,
    Seller,
    Manager,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::User => "USER",
            Role::Seller => "SELLER",
            Role::Manager => "MANAGER",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "USER" => Ok(Role::User),
            "SELLER" => Ok(Role::Seller),
            "MANAGER" => Ok(Role::Manager),
            _ => Err(ValidationError::new(
                "INVALID_ROLE",
                "role",
                "role must be USER, SELLER or MANAGER",
            )),
        }
    }

    /// The role requested at public sign-up, refusing `MANAGER`.
    pub fn parse_for_signup(s: &str) -> Result<Self, ValidationError> {
        match Self::parse(s)? {
            Role::Manager => Err(ValidationError::new(
                "ROLE_NOT_ALLOWED",
                "role",
                "sign-up can only create USER or SELLER accounts",
            )),
            role => Ok(role),
        }
    }

    /// Sellers and managers create stages, concerts and schedules.
    pub const fn can_sell(self) -> bool {
        matches!(self, Role::Seller | Role::Manager)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A normalised (trimmed, lower-cased) e-mail address. Uniqueness is decided on
/// this form, so `Ann@Example.com` and `ann@example.com` are one account.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let invalid = |why: &str| ValidationError::new("INVALID_EMAIL", "email", why.to_string());
        let s = raw.trim().to_lowercase();
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(invalid("email must be 1 to 254 characters"));
        }
        let (local, domain) = s
            .split_once('@')
            .ok_or_else(|| invalid("email must contain @"))?;
        let domain_ok = !domain.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains('@')
            && local
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != ',' && c != ';');
        if !local_ok || !domain_ok {
            return Err(invalid("email is not a valid address"));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A public display name: 2 to 30 letters, digits, `_`, `-` or `.` (any script).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Nickname(String);

impl Nickname {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let s = raw.trim();
        let len = s.chars().count();
        if !(2..=30).contains(&len) {
            return Err(ValidationError::new(
                "INVALID_NICKNAME",
                "nickname",
                "nickname must be 2 to 30 characters",
            ));
        }
        if !s
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(ValidationError::new(
                "INVALID_NICKNAME",
                "nickname",
                "nickname may contain letters, digits, '_', '-' and '.' only",
            ));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness is decided on, so `Kim` and `kim` cannot both exist.
    pub fn canonical(&self) -> String {
        self.0.to_lowercase()
    }
}

/// A phone number normalised to digits with an optional leading `+` (E.164 length).
///
/// Deliberately has no `Display` and a redacting `Debug`: it is personal data that
/// must never reach a log line.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let trimmed = raw.trim();
        let (plus, rest) = match trimmed.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let mut digits = String::with_capacity(rest.len() + 1);
        if plus {
            digits.push('+');
        }
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '(' | ')' | '.' => {}
                _ => {
                    return Err(ValidationError::new(
                        "INVALID_PHONE",
                        "phone",
                        "phone may contain digits, spaces, '-', '(', ')' and a leading '+'",
                    ))
                }
            }
        }
        let n = digits.trim_start_matches('+').len();
        if !(8..=15).contains(&n) {
            return Err(ValidationError::new(
                "INVALID_PHONE",
                "phone",
                "phone must have 8 to 15 digits",
            ));
        }
        Ok(Self(digits))
    }

    /// The normalised number, for encryption and for the owner's own profile.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phone(<redacted>)")
    }
}

/// A plain-text password that satisfies the policy. Lives only as long as the
/// request that hashes it; redacted in `Debug`, never serialised.
#[derive(Clone)]
pub struct NewPassword(String);

impl NewPassword {
    pub const MIN_LEN: usize = 8;
    /// Bounded so that a huge body cannot make the hasher burn CPU.
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let n = raw.chars().count();
        if n < Self::MIN_LEN {
            return Err(ValidationError::new(
                "PASSWORD_TOO_SHORT",
                "password",
                "password must be at least 8 characters",
            ));
        }
        if n > Self::MAX_LEN {
            return Err(ValidationError::new(
                "PASSWORD_TOO_LONG",
                "password",
                "password must be at most 128 characters",
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(<redacted>)")
    }
}

/// A stored account. `password_hash` is a PHC string (argon2id) and
/// `phone_ciphertext` is an envelope (key id + AES-256-GCM); neither is ever
/// the plain value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub user_id: UserId,
    pub email: Email,
    pub nickname: Nickname,
    pub phone_ciphertext: String,
    pub password_hash: String,
    pub role: Role,
    pub profile_image: Option<String>,
    pub audit: Audit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "ann@@example.com",
            "a nn@example.com",
            "ann@.example.com",
            "ann@example..com",
        ] {
            assert_eq!(
                Email::parse(bad).unwrap_err().code,
                "INVALID_EMAIL",
                "{bad}"
            );
        }
    }

    #[test]
    fn phone_is_normalised_and_checked() {
        assert_eq!(
            Phone::parse("+82 10-1234-5678").unwrap().expose(),
            "+821012345678"
        );
        assert_eq!(
            Phone::parse("010-1234-5678").unwrap().expose(),
            "01012345678"
        );
        for bad in [
            "",
            "1234",
            "010-1234-567a",
            "+1234567890123456",
            "++821012345678",
        ] {
            assert_eq!(
                Phone::parse(bad).unwrap_err().code,
                "INVALID_PHONE",
                "{bad}"
            );
        }
    }

    #[test]
    fn phone_and_password_never_show_in_debug() {
        let phone = Phone::parse("01012345678").unwrap();
        assert!(!format!("{phone:?}").contains("1234"));
        let pw = NewPassword::parse("correct horse").unwrap();
        assert!(!format!("{pw:?}").contains("horse"));
    }

    #[test]
    fn password_policy() {
        assert_eq!(
            NewPassword::parse("short").unwrap_err().code,
            "PASSWORD_TOO_SHORT"
        );
        assert!(NewPassword::parse("12345678").is_ok());
        assert_eq!(
            NewPassword::parse(&"x".repeat(129)).unwrap_err().code,
            "PASSWORD_TOO_LONG"
        );
    }

    #[test]
    fn signup_cannot_create_a_manager() {
        assert_eq!(Role::parse_for_signup("USER").unwrap(), Role::User);
        assert_eq!(Role::parse_for_signup("SELLER").unwrap(), Role::Seller);
        assert_eq!(
            Role::parse_for_signup("MANAGER").unwrap_err().code,
            "ROLE_NOT_ALLOWED"
        );
        assert_eq!(
            Role::parse_for_signup("ROOT").unwrap_err().code,
            "INVALID_ROLE"
        );
    }

    #[test]
    fn nickname_rules() {
        assert!(Nickname::parse("김철수").is_ok());
        assert!(Nickname::parse("dj_k-9.x").is_ok());
        assert_eq!(Nickname::parse("a").unwrap_err().code, "INVALID_NICKNAME");
        assert_eq!(
            Nickname::parse("no spaces").unwrap_err().code,
            "INVALID_NICKNAME"
        );
        assert_eq!(Nickname::parse("Kim").unwrap().canonical(), "kim");
    }
}
