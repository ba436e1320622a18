//! Paying for held seats and refunding them (docs/payments.md).
//!
//! `POST /api/v1/payments` needs an `Idempotency-Key`: the payment id is
//! derived from the caller and the key, so however often (or concurrently) a
//! request is sent, it is one payment and at most one charge. The flow itself
//! lives in [`PaymentService`](crate::payments::PaymentService); this module
//! checks who may do what and maps outcomes to the HTTP contract.

use super::schedules::{pending_booking_of, IDEMPOTENCY_KEY};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::ids::derived_uuid;
use crate::payments::{CancelError, CancelRequest, PayError, PayRequest};
use crate::routes::schedule_replies;
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use ticketing_domain::account::Role;
use ticketing_domain::ids::{BookingId, PaymentId, RefundId};
use ticketing_domain::payment::{Card, PaymentRecord, RefundError};
use utoipa::ToSchema;
use uuid::Uuid;

/// Bookings one payment may name; more than a buyer can hold anyway.
const MAX_BOOKINGS_PER_PAYMENT: usize = 64;
const MAX_KEY_LEN: usize = 255;
const MAX_REASON_CHARS: usize = 200;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardInput {
    /// 12 to 19 digits; spaces and dashes are ignored. Never stored in clear,
    /// never logged, never returned.
    pub number: String,
    /// `MM/YY`.
    pub expiry: String,
    pub cvc: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayBody {
    pub booking_ids: Vec<Uuid>,
    pub card: CardInput,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentCreatedView {
    pub payment_id: Uuid,
    /// `COMPLETED` (or `PART_CANCELED`/`CANCELED` on a replay after refunds).
    pub status: &'static str,
    pub total_price: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    pub refund_id: Uuid,
    pub booking_ids: Vec<Uuid>,
    pub amount: i64,
    pub reason: String,
    #[schema(value_type = String, format = DateTime)]
    pub requested_at: DateTime<Utc>,
    /// Unset while the refund is being carried out.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub refunded_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub payment_id: Uuid,
    pub user_id: Uuid,
    pub schedule_id: Uuid,
    pub concert_id: Uuid,
    /// `WAITING`, `COMPLETED`, `FAILED`, `CANCELED` or `PART_CANCELED`.
    pub status: &'static str,
    pub total_price: i64,
    pub refund_price: i64,
    pub card_last4: String,
    pub booking_ids: Vec<Uuid>,
    pub refunds: Vec<RefundView>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl From<&PaymentRecord> for PaymentView {
    fn from(p: &PaymentRecord) -> Self {
        Self {
            payment_id: p.payment_id.as_uuid(),
            user_id: p.user_id.as_uuid(),
            schedule_id: p.schedule_id.as_uuid(),
            concert_id: p.concert_id.as_uuid(),
            status: p.ledger.status.as_str(),
            total_price: p.ledger.total_price,
            refund_price: p.ledger.refund_price,
            card_last4: p.card_last4.clone(),
            booking_ids: p.booking_ids.iter().map(|b| b.as_uuid()).collect(),
            refunds: p
                .refunds
                .iter()
                .map(|r| RefundView {
                    refund_id: r.refund_id.as_uuid(),
                    booking_ids: r.booking_ids.iter().map(|b| b.as_uuid()).collect(),
                    amount: r.amount,
                    reason: r.reason.clone(),
                    requested_at: r.requested_at,
                    refunded_at: r.refunded_at,
                })
                .collect(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// The body of a 402 `PAYMENT_DECLINED`: the failed payment is recorded, and
/// the bookings stay held, so another card (with a new key) can be tried.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentFailed {
    pub code: &'static str,
    pub message: String,
    pub payment_id: Uuid,
    pub status: &'static str,
}

/// The payment's key as sent: any visible ASCII (UUIDs, PG-style order
/// keys), required, since a payment must never be created by a blind retry.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<String> {
    let Some(raw) = headers.get(IDEMPOTENCY_KEY) else {
        return Err(ApiError::bad_request(
            "IDEMPOTENCY_KEY_REQUIRED",
            "send an Idempotency-Key header; retry with the same key to get the same payment",
        ));
    };
    match raw.to_str().map(str::trim) {
        Ok(k)
            if !k.is_empty()
                && k.len() <= MAX_KEY_LEN
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(k.to_string())
        }
        _ => Err(ApiError::bad_request(
            "INVALID_IDEMPOTENCY_KEY",
            format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        )),
    }
}

fn payment_id(caller: &Caller, key: &str) -> PaymentId {
    PaymentId::from_uuid(derived_uuid(&[
        b"payment",
        caller.user_id.as_uuid().as_bytes(),
        key.as_bytes(),
    ]))
}

fn is_manager(caller: &Caller) -> bool {
    caller.role == Role::Manager
}

fn booking_list(ids: &[Uuid]) -> ApiResult<Vec<BookingId>> {
    let unique: BTreeSet<_> = ids.iter().collect();
    if ids.is_empty() || ids.len() > MAX_BOOKINGS_PER_PAYMENT || unique.len() != ids.len() {
        return Err(ApiError::bad_request(
            "INVALID_BOOKINGS",
            format!("name between 1 and {MAX_BOOKINGS_PER_PAYMENT} bookings, each once"),
        ));
    }
    Ok(ids.iter().copied().map(BookingId::from_uuid).collect())
}

#[utoipa::path(post, path = "/api/v1/payments", tag = "payments",
    params(("Idempotency-Key" = String, Header, description = "required; the same key is the same payment")),
    request_body = PayBody, security(("bearer" = [])),
    responses((status = 201, body = PaymentCreatedView, description = "paid: the bookings are CONFIRMED, the seats SOLD"),
              (status = 200, body = PaymentCreatedView, description = "a replay of a payment made with this key"),
              (status = 400, body = crate::error::ErrorBody, description = "IDEMPOTENCY_KEY_REQUIRED, INVALID_IDEMPOTENCY_KEY, INVALID_BOOKINGS"),
              (status = 402, body = PaymentFailed, description = "PAYMENT_DECLINED"),
              (status = 403, body = crate::error::ErrorBody, description = "NOT_OWNER"),
              (status = 404, body = crate::error::ErrorBody, description = "BOOKING_NOT_FOUND"),
              (status = 409, body = crate::error::ErrorBody, description = "BOOKING_NOT_PENDING, PAYMENT_WINDOW_EXPIRED"),
              (status = 422, body = crate::error::ErrorBody, description = "INVALID_CARD_NUMBER, INVALID_CARD_EXPIRY, INVALID_CVC, CARD_EXPIRED, IDEMPOTENCY_KEY_REUSED, BOOKINGS_OF_SEVERAL_SCHEDULES, SALE_CLOSED (the show has started)"),
              (status = 503, body = crate::error::ErrorBody, description = "PAYMENT_PENDING: retry with the same key")))]
pub async fn pay(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PayBody>,
) -> Result<Response, Response> {
    let e = IntoResponse::into_response;
    let key = idempotency_key(&headers).map_err(e)?;
    let booking_ids = booking_list(&body.booking_ids).map_err(e)?;
    let now = Utc::now();
    let card = Card::parse(
        &body.card.number,
        &body.card.expiry,
        &body.card.cvc,
        now.date_naive(),
    )
    .map_err(|v| ApiError::from(v).into_response())?;
    let payment_id = payment_id(&caller, &key);
    let existing = s
        .payments
        .payment(payment_id)
        .await
        .map_err(|x| ApiError::from(x).into_response())?;
    let (schedule_id, concert_id) = match &existing {
        Some(p) => {
            let same: BTreeSet<_> = booking_ids.iter().collect();
            if same != p.booking_ids.iter().collect() {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "IDEMPOTENCY_KEY_REUSED",
                    "this Idempotency-Key was used for a payment of other bookings",
                )
                .into_response());
            }
            (p.schedule_id, p.concert_id)
        }
        None => {
            // The read model answers who owns what, fast and without a
            // processor round trip; the processor decides again when it
            // freezes the seats, so a stale read can only refuse, never sell.
            let mut schedules = BTreeSet::new();
            let mut first = None;
            for id in &booking_ids {
                let b = pending_booking_of(&s, &caller, *id, "paid for")
                    .await
                    .map_err(e)?;
                schedules.insert(b.schedule_id);
                first.get_or_insert((b.schedule_id, b.concert_id));
            }
            if schedules.len() > 1 {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "BOOKINGS_OF_SEVERAL_SCHEDULES",
                    "one payment pays for bookings of one schedule",
                )
                .into_response());
            }
            first.expect("at least one booking")
        }
    };
    let request = PayRequest {
        payment_id,
        user_id: caller.user_id,
        schedule_id,
        concert_id,
        booking_ids,
        card,
    };
    match s.payments.pay_known(request, existing, now).await {
        Ok((record, replay)) => {
            let status = if replay {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let view = PaymentCreatedView {
                payment_id: record.payment_id.as_uuid(),
                status: record.ledger.status.as_str(),
                total_price: record.ledger.total_price,
            };
            Ok((status, Json(view)).into_response())
        }
        Err(PayError::Declined(record)) => Err((
            StatusCode::PAYMENT_REQUIRED,
            Json(PaymentFailed {
                code: "PAYMENT_DECLINED",
                message: "the card was declined; nothing was charged, and the seats stay held until their hold runs out".into(),
                payment_id: record.payment_id.as_uuid(),
                status: record.ledger.status.as_str(),
            }),
        )
            .into_response()),
        Err(PayError::Rejected(why)) => Err(schedule_replies::rejection(&why).into_response()),
        Err(PayError::WindowExpired(_)) => Err(ApiError::conflict(
            "PAYMENT_WINDOW_EXPIRED",
            "the payment took longer than its window; the charge was refunded and the seats were not sold",
        )
        .into_response()),
        Err(PayError::Pending(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "PAYMENT_PENDING",
            "the payment's outcome is not known yet; retry with the same Idempotency-Key",
        )
        .into_response()),
        Err(PayError::Unavailable(why)) => Err(ApiError::unavailable(why).into_response()),
    }
}

/// The payment if the caller may see it: its buyer or a MANAGER.
async fn visible_payment(s: &AppState, caller: &Caller, id: Uuid) -> ApiResult<PaymentRecord> {
    let record = s
        .payments
        .payment(PaymentId::from_uuid(id))
        .await?
        .ok_or_else(|| ApiError::not_found("PAYMENT_NOT_FOUND", "no such payment"))?;
    if record.user_id != caller.user_id && !is_manager(caller) {
        return Err(ApiError::forbidden(
            "NOT_OWNER",
            "only the buyer or a MANAGER may see or cancel a payment",
        ));
    }
    Ok(record)
}

#[utoipa::path(get, path = "/api/v1/payments/{payment_id}", tag = "payments",
    params(("payment_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = PaymentView), (status = 403, body = crate::error::ErrorBody, description = "NOT_OWNER"),
              (status = 404, body = crate::error::ErrorBody, description = "PAYMENT_NOT_FOUND")))]
pub async fn get_payment(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(payment_id): ApiPath<Uuid>,
) -> ApiResult<Json<PaymentView>> {
    let record = visible_payment(&s, &caller, payment_id).await?;
    Ok(Json(PaymentView::from(&record)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// The bookings to cancel; all not cancelled yet when absent.
    pub booking_ids: Option<Vec<Uuid>>,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CancelView {
    pub payment_id: Uuid,
    /// `PART_CANCELED` or `CANCELED`.
    pub status: &'static str,
    pub refund_price: i64,
}

fn refund_refused(e: &RefundError) -> ApiError {
    let msg = e.to_string();
    match e {
        RefundError::NotPaid(_) => ApiError::conflict("PAYMENT_NOT_COMPLETED", msg),
        RefundError::AlreadyCanceled => ApiError::conflict("PAYMENT_ALREADY_CANCELED", msg),
        RefundError::BookingAlreadyCancelled(_) => {
            ApiError::conflict("BOOKING_ALREADY_CANCELLED", msg)
        }
        RefundError::NotInPayment(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "BOOKING_NOT_IN_PAYMENT",
            msg,
        ),
        RefundError::InvalidBookings => ApiError::bad_request("INVALID_BOOKINGS", msg),
        RefundError::InFlight(_) => ApiError::conflict("REFUND_IN_PROGRESS", msg),
    }
}

#[utoipa::path(post, path = "/api/v1/payments/{payment_id}/cancel", tag = "payments",
    params(("payment_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "the same key is the same refund")),
    request_body = CancelBody, security(("bearer" = [])),
    responses((status = 200, body = CancelView, description = "refunded; the cancelled bookings' seats are AVAILABLE again"),
              (status = 400, body = crate::error::ErrorBody, description = "INVALID_BOOKINGS, INVALID_IDEMPOTENCY_KEY"),
              (status = 403, body = crate::error::ErrorBody, description = "NOT_OWNER"),
              (status = 404, body = crate::error::ErrorBody, description = "PAYMENT_NOT_FOUND"),
              (status = 409, body = crate::error::ErrorBody, description = "PAYMENT_ALREADY_CANCELED, BOOKING_ALREADY_CANCELLED, PAYMENT_NOT_COMPLETED, NOT_REFUNDABLE"),
              (status = 422, body = crate::error::ErrorBody, description = "REFUND_CLOSED (the show has started), BOOKING_NOT_IN_PAYMENT, INVALID_REASON"),
              (status = 503, body = crate::error::ErrorBody, description = "REFUND_PENDING: retry with the same key")))]
pub async fn cancel_payment(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(payment_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CancelBody>,
) -> Result<Response, Response> {
    let e = IntoResponse::into_response;
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REASON",
            format!("give a reason of 1 to {MAX_REASON_CHARS} characters"),
        )
        .into_response());
    }
    let booking_ids = match &body.booking_ids {
        None => None,
        Some(ids) => Some(booking_list(ids).map_err(e)?),
    };
    let refund_id = match headers.get(IDEMPOTENCY_KEY) {
        None => RefundId::from_uuid(Uuid::now_v7()),
        Some(_) => {
            let key = idempotency_key(&headers).map_err(e)?;
            RefundId::from_uuid(derived_uuid(&[
                b"refund",
                caller.user_id.as_uuid().as_bytes(),
                payment_id.as_bytes(),
                key.as_bytes(),
            ]))
        }
    };
    let record = visible_payment(&s, &caller, payment_id).await.map_err(e)?;
    let now = Utc::now();
    // A retried refund is reported even after the show started.
    if record.refund(refund_id).is_none() {
        let schedule = s
            .catalog
            .schedule(record.schedule_id)
            .await
            .map_err(|x| ApiError::from(x).into_response())?;
        if schedule.is_some_and(|sc| sc.starts_at() <= now) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "REFUND_CLOSED",
                "the show has started; tickets can no longer be refunded",
            )
            .into_response());
        }
    }
    let request = CancelRequest {
        payment_id: record.payment_id,
        refund_id,
        booking_ids,
        reason: reason.to_string(),
    };
    match s.payments.cancel_known(request, record, now).await {
        Ok((record, _)) => Ok(Json(CancelView {
            payment_id: record.payment_id.as_uuid(),
            status: record.ledger.status.as_str(),
            refund_price: record.ledger.refund_price,
        })
        .into_response()),
        Err(CancelError::NotFound) => {
            Err(ApiError::not_found("PAYMENT_NOT_FOUND", "no such payment").into_response())
        }
        Err(CancelError::Refused(why)) => Err(refund_refused(&why).into_response()),
        Err(CancelError::NotRefundable) => Err(ApiError::conflict(
            "NOT_REFUNDABLE",
            "these bookings' seats are not sold by this payment",
        )
        .into_response()),
        Err(CancelError::Pending(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "REFUND_PENDING",
            "the refund is under way; retry with the same Idempotency-Key to see it finished",
        )
        .into_response()),
        Err(CancelError::Unavailable(why)) => Err(ApiError::unavailable(why).into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(key: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(k) = key {
            h.insert(IDEMPOTENCY_KEY, k.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_payment_needs_a_well_formed_key() {
        let code = |h: &HeaderMap| idempotency_key(h).unwrap_err().code;
        assert_eq!(code(&headers(None)), "IDEMPOTENCY_KEY_REQUIRED");
        assert_eq!(code(&headers(Some(""))), "INVALID_IDEMPOTENCY_KEY");
        assert_eq!(
            code(&headers(Some(&"k".repeat(256)))),
            "INVALID_IDEMPOTENCY_KEY"
        );
        assert_eq!(
            idempotency_key(&headers(Some(" order-42 "))).unwrap(),
            "order-42"
        );
    }

    #[test]
    fn payment_ids_are_the_callers_key() {
        let caller = |n: u128| Caller {
            user_id: ticketing_domain::ids::UserId::from_uuid(Uuid::from_u128(n)),
            role: Role::User,
            session_id: Uuid::from_u128(0),
        };
        assert_eq!(payment_id(&caller(1), "k"), payment_id(&caller(1), "k"));
        assert_ne!(payment_id(&caller(1), "k"), payment_id(&caller(2), "k"));
        assert_ne!(payment_id(&caller(1), "k"), payment_id(&caller(1), "l"));
    }

    #[test]
    fn booking_lists_are_bounded_and_unique() {
        let a = Uuid::from_u128(1);
        assert!(booking_list(&[]).is_err());
        assert!(booking_list(&[a, a]).is_err());
        assert!(booking_list(&vec![Uuid::from_u128(2); 65]).is_err());
        assert_eq!(booking_list(&[a]).unwrap(), vec![BookingId::from_uuid(a)]);
    }

    #[test]
    fn every_refund_refusal_has_its_status_and_code() {
        let b = BookingId::from_uuid(Uuid::from_u128(1));
        let cases = [
            (
                RefundError::NotPaid(ticketing_domain::payment::PaymentStatus::Failed),
                409,
                "PAYMENT_NOT_COMPLETED",
            ),
            (
                RefundError::AlreadyCanceled,
                409,
                "PAYMENT_ALREADY_CANCELED",
            ),
            (
                RefundError::BookingAlreadyCancelled(b),
                409,
                "BOOKING_ALREADY_CANCELLED",
            ),
            (RefundError::NotInPayment(b), 422, "BOOKING_NOT_IN_PAYMENT"),
            (RefundError::InvalidBookings, 400, "INVALID_BOOKINGS"),
        ];
        for (e, status, code) in cases {
            let api = refund_refused(&e);
            assert_eq!((api.status.as_u16(), api.code), (status, code), "{e:?}");
        }
    }
}
