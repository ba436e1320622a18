//! Sign-up, login, token refresh, logout and the caller's own profile.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::routes::{meta, new_id};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use ticketing_domain::account::{Email, NewPassword, Nickname, Phone, Role, User};
use ticketing_domain::audit::Audit;
use ticketing_domain::events::{Event, UserRegistered};
use ticketing_domain::ids::UserId;
use ticketing_storage::{RotateOutcome, Session};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Deserialize, ToSchema)]
pub struct SignUpRequest {
    pub email: String,
    /// At least 8 characters.
    pub password: String,
    pub nickname: String,
    pub phone: String,
    /// `USER` or `SELLER`; `MANAGER` accounts are not created by sign-up.
    #[schema(example = "USER")]
    pub role: String,
    pub profile_image: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SignUpResponse {
    pub user_id: Uuid,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    pub user_id: Uuid,
    pub email: String,
    pub nickname: String,
    pub phone: String,
    #[schema(value_type = String, example = "USER")]
    pub role: Role,
    pub profile_image: Option<String>,
}

/// Creates an account and publishes `UserRegistered`.
#[utoipa::path(post, path = "/api/v1/users", tag = "accounts", request_body = SignUpRequest,
    responses((status = 201, body = SignUpResponse), (status = 409, body = crate::error::ErrorBody),
              (status = 400, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn sign_up(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<SignUpRequest>,
) -> ApiResult<(StatusCode, Json<SignUpResponse>)> {
    let role = Role::parse_for_signup(&req.role)?;
    let user_id = create_account(
        &s,
        &req.email,
        &req.password,
        &req.nickname,
        &req.phone,
        role,
        req.profile_image.as_deref(),
        None,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(SignUpResponse {
            user_id: user_id.as_uuid(),
        }),
    ))
}

/// Validates, hashes, encrypts, stores (claiming e-mail and nickname) and
/// announces an account. Shared by sign-up and the bootstrap manager.
#[allow(clippy::too_many_arguments)]
pub async fn create_account(
    s: &AppState,
    email: &str,
    password: &str,
    nickname: &str,
    phone: &str,
    role: Role,
    profile_image: Option<&str>,
    created_by: Option<UserId>,
) -> ApiResult<UserId> {
    let email = Email::parse(email)?;
    let password = NewPassword::parse(password)?;
    let nickname = Nickname::parse(nickname)?;
    let phone = Phone::parse(phone)?;
    let profile_image = match profile_image.map(str::trim) {
        None | Some("") => None,
        Some(url)
            if url.len() <= 2048 && (url.starts_with("https://") || url.starts_with("http://")) =>
        {
            Some(url.to_string())
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_PROFILE_IMAGE",
                "profile_image must be an http(s) URL of at most 2048 characters",
            ))
        }
    };
    let user_id: UserId = new_id();
    let event_meta = meta(created_by);
    let user = User {
        user_id,
        email: email.clone(),
        nickname: nickname.clone(),
        phone_ciphertext: s.phones.encrypt(user_id, &phone),
        password_hash: s.passwords.hash(&password).await,
        role,
        profile_image,
        audit: Audit::created(event_meta.occurred_at, created_by),
    };
    s.accounts.insert_user(&user).await?;
    let event = Event::UserRegistered(UserRegistered {
        meta: event_meta,
        user_id,
        email: email.as_str().to_string(),
        nickname: nickname.as_str().to_string(),
        role,
    });
    // The account is already stored (the store is the system of record for
    // credentials); a failed announcement must not turn a created account into
    // an error the client would retry into EMAIL_TAKEN.
    if let Err(e) = s.publisher.publish(&event).await {
        tracing::error!(error = %e, %user_id, "UserRegistered could not be published");
    }
    tracing::info!(%user_id, role = %role, "account created");
    Ok(user_id)
}

/// Exchanges e-mail and password for an access and a refresh token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "accounts", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::ErrorBody)))]
pub async fn login(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let user = match Email::parse(&req.email) {
        Ok(email) => s.accounts.user_by_email(&email).await?,
        Err(_) => None,
    }
    .filter(|u| !u.audit.is_deleted());
    // Over-long passwords are refused by policy; don't let them reach the hasher.
    let plausible = req.password.chars().count() <= NewPassword::MAX_LEN;
    let ok = plausible
        && s.passwords
            .verify(
                &req.password,
                user.as_ref().map(|u| u.password_hash.as_str()),
            )
            .await;
    let user = match (ok, user) {
        (true, Some(u)) => u,
        _ => {
            return Err(ApiError::unauthorized(
                "INVALID_CREDENTIALS",
                "email or password is wrong",
            ))
        }
    };
    let now = Utc::now();
    let sid = Uuid::now_v7();
    let (refresh, hash) = s.tokens.new_refresh(sid);
    s.sessions
        .create(&Session {
            session_id: sid,
            user_id: user.user_id,
            role: user.role,
            refresh_hash: hash,
            expires_at: now + s.tokens.refresh_ttl,
        })
        .await?;
    tracing::info!(user_id = %user.user_id, "login");
    Ok(Json(token_pair(
        &s,
        user.user_id,
        user.role,
        sid,
        refresh,
        now,
    )))
}

fn token_pair(
    s: &AppState,
    user: UserId,
    role: Role,
    sid: Uuid,
    refresh_token: String,
    now: chrono::DateTime<Utc>,
) -> TokenResponse {
    TokenResponse {
        access_token: s.tokens.issue_access(user, role, sid, now),
        refresh_token,
        token_type: "Bearer",
        expires_in: s.tokens.access_ttl.num_seconds(),
    }
}

/// Rotates the refresh token and issues a new access token. A refresh token
/// works once; presenting it again revokes the whole session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "accounts", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::ErrorBody)))]
pub async fn refresh(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let invalid = || {
        ApiError::unauthorized(
            "INVALID_REFRESH_TOKEN",
            "the refresh token is invalid, used or revoked",
        )
    };
    let (sid, presented) =
        crate::security::tokens::parse_refresh(req.refresh_token.trim()).ok_or_else(invalid)?;
    let (next, next_hash) = s.tokens.new_refresh(sid);
    let now = Utc::now();
    match s.sessions.rotate(sid, &presented, &next_hash, now).await? {
        RotateOutcome::Rotated(session) => Ok(Json(token_pair(
            &s,
            session.user_id,
            session.role,
            sid,
            next,
            now,
        ))),
        RotateOutcome::Reused => {
            tracing::warn!(session_id = %sid, "refresh token reused; session revoked");
            Err(invalid())
        }
        RotateOutcome::Unknown => Err(invalid()),
    }
}

/// Ends the session: its access and refresh tokens stop working at once.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "accounts", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody)))]
pub async fn logout(State(s): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    s.sessions.revoke(caller.session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own profile, phone number decrypted.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = MeResponse), (status = 401, body = crate::error::ErrorBody)))]
pub async fn me(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<MeResponse>> {
    let user = s
        .accounts
        .user_by_id(caller.user_id)
        .await?
        .filter(|u| !u.audit.is_deleted())
        .ok_or_else(|| ApiError::unauthorized("INVALID_TOKEN", "the account no longer exists"))?;
    let phone = s
        .phones
        .decrypt(user.user_id, &user.phone_ciphertext)
        .map_err(ApiError::unavailable)?;
    Ok(Json(MeResponse {
        user_id: user.user_id.as_uuid(),
        email: user.email.as_str().to_string(),
        nickname: user.nickname.as_str().to_string(),
        phone,
        role: user.role,
        profile_image: user.profile_image,
    }))
}
