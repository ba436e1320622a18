//! Login sessions in Redis.
//!
//! A session is a hash under `session:{id}` whose key expires at the session's
//! `expires_at` (PEXPIREAT), so Redis forgets ended sessions by itself. The
//! expiry is also kept as a field (`expires_ms`) because callers judge liveness
//! against their own `now`, which may run ahead of the Redis clock.
//!
//! Rotation is one Lua script, so "compare the refresh hash, then replace it or
//! revoke the session" cannot interleave with another rotation of the same
//! session: of two concurrent refreshes with one secret, one rotates and the
//! other is treated as a replay.

use crate::ports::{RotateOutcome, Session, SessionStore, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use ticketing_domain::account::Role;
use ticketing_domain::ids::UserId;
use uuid::Uuid;

/// Outcome tag first, then (on success) the fields needed to rebuild the session.
const ROTATE: &str = r"
local s = redis.call('HMGET', KEYS[1], 'refresh_hash', 'expires_ms', 'user_id', 'role', 'expires_at')
if not s[1] then
  return {'unknown'}
end
if tonumber(s[2]) <= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  return {'unknown'}
end
if s[1] ~= ARGV[1] then
  redis.call('DEL', KEYS[1])
  return {'reused'}
end
redis.call('HSET', KEYS[1], 'refresh_hash', ARGV[2])
return {'rotated', s[3], s[4], s[5]}
";

#[derive(Clone)]
pub struct RedisSessionStore {
    conn: ConnectionManager,
    rotate: Script,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore").finish_non_exhaustive()
    }
}

fn key(session_id: Uuid) -> String {
    format!("session:{session_id}")
}

// The URL may carry a password, so errors never include it; Redis' own error
// messages do not echo it either.
fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("redis session: {what}"))
}

impl RedisSessionStore {
    /// Connects (failing now if Redis is unreachable); later outages are retried
    /// by the connection manager, and calls fail with `Unavailable` meanwhile.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let conn = crate::redis_conn::connect(url).await?;
        Ok(Self {
            conn,
            rotate: Script::new(ROTATE),
        })
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(&self, session: &Session) -> Result<(), StoreError> {
        let key = key(session.session_id);
        let expires_ms = session.expires_at.timestamp_millis();
        let mut conn = self.conn.clone();
        // One MULTI, so a session never exists without its expiry, and a re-created
        // session keeps no field of an earlier one.
        redis::pipe()
            .atomic()
            .del(&key)
            .hset_multiple(
                &key,
                &[
                    ("user_id", session.user_id.to_string()),
                    ("role", session.role.as_str().to_string()),
                    ("refresh_hash", session.refresh_hash.clone()),
                    ("expires_at", session.expires_at.to_rfc3339()),
                    ("expires_ms", expires_ms.to_string()),
                ],
            )
            .pexpire_at(&key, expires_ms)
            .exec_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn rotate(
        &self,
        session_id: Uuid,
        presented_hash: &str,
        next_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<RotateOutcome, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .rotate
            .key(key(session_id))
            .arg(presented_hash)
            .arg(next_hash)
            .arg(now.timestamp_millis())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match reply.as_slice() {
            [tag] if tag == "unknown" => Ok(RotateOutcome::Unknown),
            [tag] if tag == "reused" => Ok(RotateOutcome::Reused),
            [tag, user_id, role, expires_at] if tag == "rotated" => {
                Ok(RotateOutcome::Rotated(Session {
                    session_id,
                    user_id: user_id.parse::<UserId>().map_err(corrupt)?,
                    role: Role::parse(role).map_err(corrupt)?,
                    refresh_hash: next_hash.to_string(),
                    expires_at: DateTime::parse_from_rfc3339(expires_at)
                        .map_err(corrupt)?
                        .with_timezone(&Utc),
                }))
            }
            other => Err(corrupt(format!(
                "unexpected rotate reply of {} items",
                other.len()
            ))),
        }
    }

    async fn revoke(&self, session_id: Uuid) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.del::<_, ()>(key(session_id))
            .await
            .map_err(unavailable)
    }

    async fn is_active(&self, session_id: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let expires_ms: Option<i64> = conn
            .hget(key(session_id), "expires_ms")
            .await
            .map_err(unavailable)?;
        Ok(expires_ms.is_some_and(|ms| now.timestamp_millis() < ms))
    }
}
