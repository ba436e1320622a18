//! Login tokens.
//!
//! - The access token is a short-lived HS256 JWT naming the user, role and
//!   session. It is checked on every request, together with the session's
//!   liveness in the session store, so logout takes effect at once.
//! - The refresh token is `<session id>.<random secret>`; only a SHA-256 of the
//!   secret is stored, and it is replaced on every use (rotation). Presenting an
//!   older secret revokes the session: someone replayed a stolen token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use thiserror::Error;
use ticketing_domain::account::Role;
use ticketing_domain::ids::UserId;
use uuid::Uuid;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token secret must be at least 32 bytes")]
    WeakSecret,
    #[error("token is invalid or expired")]
    Invalid,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub sub: Uuid,
    pub role: Role,
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    /// Guards against a refresh token or another JWT being used as access token.
    pub typ: String,
}

#[derive(Clone)]
pub struct TokenService {
    enc: Arc<EncodingKey>,
    dec: Arc<DecodingKey>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl TokenService {
    pub fn new(
        secret: &[u8],
        access_ttl: Duration,
        refresh_ttl: Duration,
    ) -> Result<Self, TokenError> {
        if secret.len() < 32 {
            return Err(TokenError::WeakSecret);
        }
        Ok(Self {
            enc: Arc::new(EncodingKey::from_secret(secret)),
            dec: Arc::new(DecodingKey::from_secret(secret)),
            access_ttl,
            refresh_ttl,
        })
    }

    pub fn issue_access(&self, user: UserId, role: Role, sid: Uuid, now: DateTime<Utc>) -> String {
        let claims = AccessClaims {
            sub: user.as_uuid(),
            role,
            sid,
            iat: now.timestamp(),
            exp: (now + self.access_ttl).timestamp(),
            typ: "access".into(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// Signature, algorithm, expiry (against `now`) and token type.
    pub fn verify_access(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<AccessClaims, TokenError> {
        let mut v = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the caller's clock, so tests can move time.
        v.validate_exp = false;
        v.required_spec_claims = ["exp", "sub"].into_iter().map(String::from).collect();
        let data = decode::<AccessClaims>(token, &self.dec, &v).map_err(|_| TokenError::Invalid)?;
        let c = data.claims;
        if c.typ != "access" || c.exp <= now.timestamp() {
            return Err(TokenError::Invalid);
        }
        Ok(c)
    }

    /// A new refresh token for `sid`, and the hash to store.
    pub fn new_refresh(&self, sid: Uuid) -> (String, String) {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let secret = B64URL.encode(secret);
        let hash = refresh_hash(&secret);
        (format!("{sid}.{secret}"), hash)
    }
}

/// Splits a presented refresh token into its session id and the hash of its
/// secret; `None` for anything not of that shape.
pub fn parse_refresh(token: &str) -> Option<(Uuid, String)> {
    let (sid, secret) = token.split_once('.')?;
    let sid = Uuid::parse_str(sid).ok()?;
    if secret.len() != 43 || B64URL.decode(secret).is_err() {
        return None;
    }
    Some((sid, refresh_hash(secret)))
}

fn refresh_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> TokenService {
        TokenService::new(&[7u8; 32], Duration::minutes(15), Duration::days(14)).unwrap()
    }

    #[test]
    fn access_tokens_verify_and_expire() {
        let s = svc();
        let now = Utc::now();
        let user = UserId::from_uuid(Uuid::from_u128(1));
        let sid = Uuid::from_u128(2);
        let t = s.issue_access(user, Role::Seller, sid, now);
        let c = s.verify_access(&t, now).unwrap();
        assert_eq!((c.sub, c.role, c.sid), (user.as_uuid(), Role::Seller, sid));
        assert_eq!(
            s.verify_access(&t, now + Duration::minutes(16)),
            Err(TokenError::Invalid)
        );
        let other =
            TokenService::new(&[8u8; 32], Duration::minutes(15), Duration::days(1)).unwrap();
        assert_eq!(
            other.verify_access(&t, now),
            Err(TokenError::Invalid),
            "forged"
        );
        let mut tampered = t.clone();
        tampered.insert(tampered.len() / 2, 'x');
        assert_eq!(s.verify_access(&tampered, now), Err(TokenError::Invalid));
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert!(TokenService::new(b"short", Duration::minutes(1), Duration::days(1)).is_err());
    }

    #[test]
    fn refresh_tokens_parse_back_to_their_hash() {
        let s = svc();
        let sid = Uuid::from_u128(9);
        let (token, hash) = s.new_refresh(sid);
        assert_eq!(parse_refresh(&token), Some((sid, hash.clone())));
        assert!(!hash.contains(token.split_once('.').unwrap().1));
        for bad in ["", "x.y", &format!("{sid}.short"), &format!("{sid}")] {
            assert_eq!(parse_refresh(bad), None, "{bad}");
        }
    }
}
