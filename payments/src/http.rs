//! The PG's HTTP API, both sides: [`PgClient`] is the adapter the platform
//! uses against a real PG (or the sandbox server), and [`sandbox_router`]
//! serves a [`SandboxProvider`] over the same API for the real stack.
//!
//! The API follows a Korean PG's card key-in API:
//! - `POST /v1/payments/key-in` `{amount, orderId, orderName, cardNumber,
//!   cardExpirationYear, cardExpirationMonth}` → the payment;
//! - `POST /v1/payments/{paymentKey}/cancel` `{cancelReason, cancelAmount}`
//!   with an `Idempotency-Key` header → the payment;
//! - `GET /v1/payments/orders/{orderId}` → the payment, or 404
//!   `NOT_FOUND_PAYMENT`;
//! - errors are `{code, message}`; requests authenticate with HTTP Basic, the
//!   secret key as user name and an empty password.

use crate::provider::*;
use crate::sandbox::{SandboxProvider, CARD_TIMEOUT};
use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use ticketing_domain::payment::{Card, CardExpiry, CardNumber, Cvc};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyIn {
    amount: i64,
    order_id: String,
    order_name: String,
    card_number: String,
    card_expiration_year: String,
    card_expiration_month: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelBody {
    cancel_reason: String,
    cancel_amount: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct PgError {
    code: String,
    message: String,
}

fn basic(secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{secret}:"))
    )
}

// ----- client ----------------------------------------------------------------

/// The platform's adapter for the PG's HTTP API.
#[derive(Clone)]
pub struct PgClient {
    http: reqwest::Client,
    base: String,
    authorization: String,
}

impl PgClient {
    /// `timeout` bounds each call; a charge that outlives it is `Unknown` and
    /// is settled by a lookup.
    pub fn new(base: &str, secret_key: &str, timeout: Duration) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ProviderError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            authorization: basic(secret_key),
        })
    }

    /// Sends a request and reads the payment or the PG's error. `mutating`
    /// requests whose fate is unclear are `Unknown`; a read that fails is
    /// simply `Unavailable`.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        mutating: bool,
    ) -> Result<Option<ProviderPayment>, ProviderError> {
        let res = match req
            .header("Authorization", &self.authorization)
            .send()
            .await
        {
            Ok(r) => r,
            // Nothing reached the PG.
            Err(e) if e.is_connect() || e.is_builder() => {
                return Err(ProviderError::Unavailable(e.without_url().to_string()))
            }
            Err(e) if mutating => return Err(ProviderError::Unknown(e.without_url().to_string())),
            Err(e) => return Err(ProviderError::Unavailable(e.without_url().to_string())),
        };
        let status = res.status();
        let bytes = match res.bytes().await {
            Ok(b) => b,
            Err(e) if mutating => return Err(ProviderError::Unknown(e.without_url().to_string())),
            Err(e) => return Err(ProviderError::Unavailable(e.without_url().to_string())),
        };
        if status.is_success() {
            return serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                ProviderError::Unknown(format!("unreadable answer from the PG: {e}"))
            });
        }
        if status.is_server_error() {
            let why = format!("the PG answered {status}");
            return Err(if mutating {
                ProviderError::Unknown(why)
            } else {
                ProviderError::Unavailable(why)
            });
        }
        let err: PgError = serde_json::from_slice(&bytes).unwrap_or(PgError {
            code: format!("HTTP_{}", status.as_u16()),
            message: "the PG's error had no body".into(),
        });
        Err(match err.code.as_str() {
            "NOT_FOUND_PAYMENT" if !mutating => return Ok(None),
            "REJECT_CARD_COMPANY" | "INVALID_CARD_NUMBER" | "INVALID_CARD_EXPIRATION" => {
                ProviderError::Declined {
                    code: err.code,
                    message: err.message,
                }
            }
            "NOT_ENOUGH_BALANCE" | "EXCEED_MAX_DAILY_PAYMENT_COUNT" => {
                ProviderError::InsufficientFunds {
                    code: err.code,
                    message: err.message,
                }
            }
            _ => ProviderError::Refused {
                code: err.code,
                message: err.message,
            },
        })
    }
}

#[async_trait]
impl PaymentProvider for PgClient {
    async fn charge(&self, request: &ChargeRequest) -> Result<ProviderPayment, ProviderError> {
        let body = KeyIn {
            amount: request.amount,
            order_id: request.order_id.clone(),
            order_name: request.order_name.clone(),
            card_number: request.card.number.expose().to_string(),
            card_expiration_year: format!("{:02}", request.card.expiry.year % 100),
            card_expiration_month: format!("{:02}", request.card.expiry.month),
        };
        let req = self
            .http
            .post(format!("{}/v1/payments/key-in", self.base))
            // The order id doubles as the idempotency key: the PG then answers
            // a retried charge with the first outcome.
            .header("Idempotency-Key", &request.order_id)
            .json(&body);
        self.send(req, true)
            .await?
            .ok_or_else(|| ProviderError::Unknown("no payment in the answer".into()))
    }

    async fn cancel(
        &self,
        payment_key: &str,
        amount: i64,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, ProviderError> {
        let req = self
            .http
            .post(format!("{}/v1/payments/{payment_key}/cancel", self.base))
            .header("Idempotency-Key", idempotency_key)
            .json(&CancelBody {
                cancel_reason: reason.to_string(),
                cancel_amount: amount,
            });
        self.send(req, true)
            .await?
            .ok_or_else(|| ProviderError::Unknown("no payment in the answer".into()))
    }

    async fn lookup(&self, order_id: &str) -> Result<Option<ProviderPayment>, ProviderError> {
        let req = self
            .http
            .get(format!("{}/v1/payments/orders/{order_id}", self.base));
        self.send(req, false).await
    }
}

// ----- sandbox server ----------------------------------------------------------

#[derive(Clone)]
struct Server {
    provider: SandboxProvider,
    authorization: Arc<str>,
    /// How long the "times out" card keeps the caller waiting (after the
    /// charge is recorded), longer than any sane client timeout.
    timeout_delay: Duration,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(PgError {
            code: code.into(),
            message: message.into(),
        }),
    )
        .into_response()
}

fn provider_error(e: ProviderError) -> Response {
    match e {
        ProviderError::Declined { code, message }
        | ProviderError::InsufficientFunds { code, message } => {
            error(StatusCode::FORBIDDEN, &code, &message)
        }
        ProviderError::Refused { code, message } if code == "NOT_FOUND_PAYMENT" => {
            error(StatusCode::NOT_FOUND, &code, &message)
        }
        ProviderError::Refused { code, message } => error(StatusCode::BAD_REQUEST, &code, &message),
        ProviderError::Unknown(m) | ProviderError::Unavailable(m) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "PROVIDER_ERROR", &m)
        }
    }
}

fn authorised(server: &Server, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == &*server.authorization)
}

fn unauthorised() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED_KEY",
        "the secret key is missing or wrong",
    )
}

async fn key_in(State(s): State<Server>, headers: HeaderMap, Json(body): Json<KeyIn>) -> Response {
    if !authorised(&s, &headers) {
        return unauthorised();
    }
    let number = match CardNumber::parse(&body.card_number) {
        Ok(n) => n,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_CARD_NUMBER",
                "the card number is not valid",
            )
        }
    };
    let expiry = match CardExpiry::parse(&format!(
        "{}/{}",
        body.card_expiration_month, body.card_expiration_year
    )) {
        Ok(e) => e,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_CARD_EXPIRATION",
                "the expiry is not valid",
            )
        }
    };
    let timeout_card = number.expose() == CARD_TIMEOUT;
    let request = ChargeRequest {
        order_id: body.order_id,
        order_name: body.order_name,
        amount: body.amount,
        card: Card {
            number,
            expiry,
            // The key-in API carries no security code; the platform checked it.
            cvc: Cvc::parse("000").expect("a valid placeholder"),
        },
    };
    match s.provider.charge(&request).await {
        Ok(p) => Json(p).into_response(),
        Err(ProviderError::Unknown(_)) if timeout_card => {
            // Charged, but the answer comes too late for the caller.
            tokio::time::sleep(s.timeout_delay).await;
            match s.provider.lookup(&request.order_id).await {
                Ok(Some(p)) => Json(p).into_response(),
                _ => error(StatusCode::INTERNAL_SERVER_ERROR, "PROVIDER_ERROR", "lost"),
            }
        }
        Err(e) => provider_error(e),
    }
}

async fn cancel(
    State(s): State<Server>,
    Path(payment_key): Path<String>,
    headers: HeaderMap,
    Json(body): Json<CancelBody>,
) -> Response {
    if !authorised(&s, &headers) {
        return unauthorised();
    }
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "an Idempotency-Key header is required",
        );
    };
    match s
        .provider
        .cancel(&payment_key, body.cancel_amount, &body.cancel_reason, key)
        .await
    {
        Ok(p) => Json(p).into_response(),
        Err(e) => provider_error(e),
    }
}

async fn by_order(
    State(s): State<Server>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorised(&s, &headers) {
        return unauthorised();
    }
    match s.provider.lookup(&order_id).await {
        Ok(Some(p)) => Json(p).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND_PAYMENT",
            "no payment for this order",
        ),
        Err(e) => provider_error(e),
    }
}

/// The sandbox PG over HTTP, accepting `secret_key`.
pub fn sandbox_router(
    provider: SandboxProvider,
    secret_key: &str,
    timeout_delay: Duration,
) -> Router {
    Router::new()
        .route("/v1/payments/key-in", post(key_in))
        .route("/v1/payments/{payment_key}/cancel", post(cancel))
        .route("/v1/payments/orders/{order_id}", get(by_order))
        .with_state(Server {
            provider,
            authorization: basic(secret_key).into(),
            timeout_delay,
        })
}
