//! Who is calling: the `Caller` extractor checks the bearer token and that its
//! session is still live, and the role checks every route relies on.

use crate::error::ApiError;
use crate::request_log::CallerSlot;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::Utc;
use ticketing_domain::account::Role;
use ticketing_domain::ids::UserId;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    pub role: Role,
    pub session_id: Uuid,
}

impl Caller {
    /// Stages, concerts and schedules are created by sellers and managers.
    pub fn require_seller(&self) -> Result<(), ApiError> {
        if self.role.can_sell() {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "FORBIDDEN",
                "this action needs a SELLER or MANAGER account",
            ))
        }
    }

    /// The admin pages are for managers only.
    pub fn require_manager(&self) -> Result<(), ApiError> {
        if self.role == Role::Manager {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "FORBIDDEN",
                "this needs a MANAGER account",
            ))
        }
    }

    /// A seller may act on what it owns; a manager on everything.
    pub fn require_owner(&self, owner: UserId) -> Result<(), ApiError> {
        if self.role == Role::Manager || self.user_id == owner {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "NOT_OWNER",
                "only the owner or a MANAGER may do this",
            ))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthorized("UNAUTHENTICATED", "a bearer token is required")
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("UNAUTHENTICATED", "a bearer token is required")
            })?;
        let now = Utc::now();
        let claims = state
            .tokens
            .verify_access(token.trim(), now)
            .map_err(|_| invalid_token())?;
        if !state.sessions.is_active(claims.sid, now).await? {
            return Err(invalid_token());
        }
        let user_id = UserId::from_uuid(claims.sub);
        if let Some(slot) = parts.extensions.get::<CallerSlot>() {
            slot.fill(user_id);
        }
        Ok(Caller {
            user_id,
            role: claims.role,
            session_id: claims.sid,
        })
    }
}

fn invalid_token() -> ApiError {
    ApiError::unauthorized("INVALID_TOKEN", "the token is invalid, expired or revoked")
}
