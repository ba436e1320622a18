//! The waiting room, seat holds and the buyer's bookings.
//!
//! Commands (join, leave, hold, release) go to the schedule's processor through
//! the [`ScheduleGateway`](crate::gateway::ScheduleGateway) and wait for its
//! decision; reads (queue status, bookings) come from the read model and never
//! touch a processor.
//!
//! Every command has an id. A client may name it with `Idempotency-Key: <uuid>`;
//! retrying with the same key is the same command, decided once, answered the
//! same way (a hold keeps its booking ids). Keys are scoped to the caller, so
//! one buyer's key can never replay another buyer's command.

use super::schedule_replies::{self, DecisionPending, HoldView, QueueView};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::gateway::GatewayError;
use crate::ids::derived_uuid;
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::time::Duration;
use ticketing_domain::booking::BookingStatus;
use ticketing_domain::ids::{BookingId, CommandId, ScheduleId, UserId};
use ticketing_domain::schedule::{Command, SeatRef};
use ticketing_storage::BookingView;
use utoipa::ToSchema;
use uuid::Uuid;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Seats one request may name. The per-buyer limit is decided by the processor;
/// this only keeps absurd requests from reaching it.
const MAX_SEATS_PER_REQUEST: usize = 64;
/// How often the live queue stream re-reads the status. The ETA moves with the
/// clock, so a change notification alone would not be enough anyway.
const LIVE_STATUS_EVERY: Duration = Duration::from_secs(1);
/// How long a release waits for a booking just held to reach the read model.
const BOOKING_VISIBLE_WITHIN: Duration = Duration::from_secs(2);

/// The command's id and the key the client retries with.
fn command_id(headers: &HeaderMap, caller: &Caller) -> ApiResult<(CommandId, Uuid)> {
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => Uuid::now_v7(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| Uuid::parse_str(s.trim()).ok())
            .ok_or_else(|| {
                ApiError::bad_request("INVALID_IDEMPOTENCY_KEY", "Idempotency-Key must be a UUID")
            })?,
    };
    let id = derived_uuid(&[
        b"command",
        caller.user_id.as_uuid().as_bytes(),
        key.as_bytes(),
    ]);
    Ok((CommandId::from_uuid(id), key))
}

/// One booking id per seat, derived from the command: a retried hold names the
/// same bookings, so the processor recognises it.
fn booking_ids(command: CommandId, seats: usize) -> Vec<BookingId> {
    (0..seats as u64)
        .map(|i| {
            BookingId::from_uuid(derived_uuid(&[
                b"booking",
                command.as_uuid().as_bytes(),
                &i.to_be_bytes(),
            ]))
        })
        .collect()
}

async fn decide(
    s: &AppState,
    schedule_id: ScheduleId,
    (command_id, key): (CommandId, Uuid),
    command: Command,
) -> Result<ticketing_domain::schedule::Reply, Response> {
    match s.schedules.decide(schedule_id, command_id, command).await {
        Ok(reply) => Ok(reply),
        Err(GatewayError::Pending(_)) => Err(DecisionPending {
            code: "DECISION_PENDING",
            message:
                "the decision is taking longer than usual; retry with the same Idempotency-Key"
                    .into(),
            command_id: key,
        }
        .into_response()),
        Err(e @ GatewayError::Unavailable(_)) => Err(ApiError::unavailable(e).into_response()),
    }
}

fn schedule_not_found() -> ApiError {
    ApiError::not_found("SCHEDULE_NOT_FOUND", "no such schedule")
}

#[utoipa::path(post, path = "/api/v1/schedules/{schedule_id}/queue", tag = "waiting room",
    params(("schedule_id" = Uuid, Path), ("Idempotency-Key" = Option<Uuid>, Header)), security(("bearer" = [])),
    responses((status = 201, body = QueueView, description = "joined"), (status = 200, body = QueueView, description = "already in the queue"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody, description = "SALE_CLOSED (the show has started)"),
              (status = 503, body = DecisionPending)))]
pub async fn join_queue(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(schedule_id): ApiPath<Uuid>,
) -> Result<Response, Response> {
    let ids = command_id(&headers, &caller).map_err(IntoResponse::into_response)?;
    let schedule_id = ScheduleId::from_uuid(schedule_id);
    let reply = decide(
        &s,
        schedule_id,
        ids,
        Command::Join {
            user: caller.user_id,
        },
    )
    .await?;
    Ok(schedule_replies::join(&reply).into_response())
}

async fn status_of(s: &AppState, schedule: ScheduleId, user: UserId) -> ApiResult<QueueView> {
    match s
        .schedule_reads
        .queue_status(schedule, user, Utc::now())
        .await?
    {
        Some(st) => Ok(QueueView::from(&st)),
        // The catalog knows the schedule but the read model does not yet (it
        // was created a moment ago, or this instance is still rebuilding the
        // model after a start): an honest "try again", not a 404.
        None if s.catalog.schedule(schedule).await?.is_some() => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SCHEDULE_NOT_READY",
            "this schedule's waiting room is not readable yet; retry in a second",
        )),
        None => Err(schedule_not_found()),
    }
}

#[utoipa::path(get, path = "/api/v1/schedules/{schedule_id}/queue/me", tag = "waiting room",
    params(("schedule_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = QueueView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn my_queue_status(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(schedule_id): ApiPath<Uuid>,
) -> ApiResult<Json<QueueView>> {
    status_of(&s, ScheduleId::from_uuid(schedule_id), caller.user_id)
        .await
        .map(Json)
}

/// Server-Sent Events: a `queue` event with the status now and on every
/// change, until the status is final (EXPIRED, LEFT, SOLD_OUT).
#[utoipa::path(get, path = "/api/v1/schedules/{schedule_id}/queue/me/events", tag = "waiting room",
    params(("schedule_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", description = "`event: queue` with a QueueView as data"),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn my_queue_events(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(schedule_id): ApiPath<Uuid>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let schedule = ScheduleId::from_uuid(schedule_id);
    let first = status_of(&s, schedule, caller.user_id).await?;
    let user = caller.user_id;
    let stream = async_stream::stream! {
        let mut last = first;
        yield Ok(queue_event(&last));
        let mut tick = tokio::time::interval(LIVE_STATUS_EVERY);
        tick.tick().await;
        while !is_final(&last) {
            tick.tick().await;
            match status_of(&s, schedule, user).await {
                Ok(now) if now != last => {
                    yield Ok(queue_event(&now));
                    last = now;
                }
                Ok(_) => {}
                // A read model hiccup: keep the stream, try again next tick.
                Err(e) => tracing::debug!(code = e.code, "live queue status unavailable"),
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn is_final(v: &QueueView) -> bool {
    matches!(v.status, "EXPIRED" | "LEFT" | "SOLD_OUT")
}

fn queue_event(v: &QueueView) -> SseEvent {
    SseEvent::default()
        .event("queue")
        .json_data(v)
        .unwrap_or_else(|_| SseEvent::default().event("queue"))
}

#[utoipa::path(delete, path = "/api/v1/schedules/{schedule_id}/queue/me", tag = "waiting room",
    params(("schedule_id" = Uuid, Path), ("Idempotency-Key" = Option<Uuid>, Header)), security(("bearer" = [])),
    responses((status = 204, description = "left the queue (or was not in it)"), (status = 404, body = crate::error::ErrorBody),
              (status = 503, body = DecisionPending)))]
pub async fn leave_queue(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(schedule_id): ApiPath<Uuid>,
) -> Result<Response, Response> {
    let ids = command_id(&headers, &caller).map_err(IntoResponse::into_response)?;
    let reply = decide(
        &s,
        ScheduleId::from_uuid(schedule_id),
        ids,
        Command::Leave {
            user: caller.user_id,
        },
    )
    .await?;
    Ok(schedule_replies::leave(&reply).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeatRequest {
    /// 1-based.
    pub row: u16,
    /// 1-based.
    pub col: u16,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    pub seats: Vec<SeatRequest>,
}

#[utoipa::path(post, path = "/api/v1/schedules/{schedule_id}/holds", tag = "seats",
    params(("schedule_id" = Uuid, Path), ("Idempotency-Key" = Option<Uuid>, Header)), request_body = HoldRequest, security(("bearer" = [])),
    responses((status = 201, body = HoldView), (status = 400, body = crate::error::ErrorBody, description = "INVALID_SEAT, DUPLICATE_SEAT, INVALID_HOLD"),
              (status = 403, body = crate::error::ErrorBody, description = "NOT_ADMITTED"),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = schedule_replies::SeatsTaken),
              (status = 422, body = crate::error::ErrorBody, description = "SEAT_LIMIT, SALE_CLOSED (the show has started)"), (status = 503, body = DecisionPending)))]
pub async fn hold_seats(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(schedule_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<HoldRequest>,
) -> Result<Response, Response> {
    let ids = command_id(&headers, &caller).map_err(IntoResponse::into_response)?;
    if body.seats.is_empty() || body.seats.len() > MAX_SEATS_PER_REQUEST {
        return Err(ApiError::bad_request(
            "INVALID_HOLD",
            format!("name between 1 and {MAX_SEATS_PER_REQUEST} seats"),
        )
        .into_response());
    }
    let seats: Vec<SeatRef> = body
        .seats
        .iter()
        .map(|s| SeatRef {
            row: s.row,
            col: s.col,
        })
        .collect();
    let booking_ids = booking_ids(ids.0, seats.len());
    let reply = decide(
        &s,
        ScheduleId::from_uuid(schedule_id),
        ids,
        Command::Hold {
            user: caller.user_id,
            seats,
            booking_ids,
        },
    )
    .await?;
    Ok(schedule_replies::hold(&reply).into_response())
}

#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct BookingItem {
    pub booking_id: Uuid,
    pub schedule_id: Uuid,
    pub concert_id: Uuid,
    pub row: u16,
    pub col: u16,
    pub price: i64,
    /// `PENDING`, `CONFIRMED` or `CANCELLED`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<Uuid>,
    /// When a PENDING hold runs out.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<&BookingView> for BookingItem {
    fn from(b: &BookingView) -> Self {
        Self {
            booking_id: b.booking_id.as_uuid(),
            schedule_id: b.schedule_id.as_uuid(),
            concert_id: b.concert_id.as_uuid(),
            row: b.seat.row,
            col: b.seat.col,
            price: b.price,
            status: b.status.as_str(),
            payment_id: b.payment_id,
            expires_at: (b.status == BookingStatus::Pending)
                .then_some(b.expires_at)
                .flatten(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BookingList {
    pub items: Vec<BookingItem>,
}

#[utoipa::path(get, path = "/api/v1/bookings", tag = "seats", security(("bearer" = [])),
    responses((status = 200, body = BookingList)))]
pub async fn my_bookings(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<BookingList>> {
    let items = s
        .schedule_reads
        .bookings_of(caller.user_id)
        .await?
        .iter()
        .map(BookingItem::from)
        .collect();
    Ok(Json(BookingList { items }))
}

/// A booking just held may not be in the read model yet: look again briefly
/// before answering 404.
async fn find_booking(s: &AppState, id: BookingId) -> ApiResult<Option<BookingView>> {
    let deadline = tokio::time::Instant::now() + BOOKING_VISIBLE_WITHIN;
    loop {
        if let Some(b) = s.schedule_reads.booking(id).await? {
            return Ok(Some(b));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The caller's PENDING booking `id`, as the read model has it: what may be
/// released or paid for. 404 `BOOKING_NOT_FOUND`, 403 `NOT_OWNER`, 409
/// `BOOKING_NOT_PENDING` otherwise; `action` ("released", "paid for") says
/// what was refused.
pub(crate) async fn pending_booking_of(
    s: &AppState,
    caller: &Caller,
    id: BookingId,
    action: &str,
) -> ApiResult<BookingView> {
    let booking = find_booking(s, id)
        .await?
        .ok_or_else(|| ApiError::not_found("BOOKING_NOT_FOUND", format!("no booking {id}")))?;
    if booking.user_id != caller.user_id {
        // The same answer as for a booking that does not exist would hide
        // whether the id is real; the contract asks for the owner check, and
        // booking ids are unguessable, so say what is wrong.
        return Err(ApiError::forbidden(
            "NOT_OWNER",
            format!("booking {id} is not yours; only its buyer may have it {action}"),
        ));
    }
    if booking.status != BookingStatus::Pending {
        return Err(ApiError::conflict(
            "BOOKING_NOT_PENDING",
            format!(
                "booking {id} is {}; only a PENDING booking can be {action}",
                booking.status.as_str()
            ),
        ));
    }
    Ok(booking)
}

#[utoipa::path(delete, path = "/api/v1/bookings/{booking_id}", tag = "seats",
    params(("booking_id" = Uuid, Path), ("Idempotency-Key" = Option<Uuid>, Header)), security(("bearer" = [])),
    responses((status = 204, description = "the hold is released"), (status = 403, body = crate::error::ErrorBody, description = "NOT_OWNER"),
              (status = 404, body = crate::error::ErrorBody, description = "BOOKING_NOT_FOUND"),
              (status = 409, body = crate::error::ErrorBody, description = "BOOKING_NOT_PENDING"), (status = 503, body = DecisionPending)))]
pub async fn release_booking(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(booking_id): ApiPath<Uuid>,
) -> Result<Response, Response> {
    let ids = command_id(&headers, &caller).map_err(IntoResponse::into_response)?;
    let booking_id = BookingId::from_uuid(booking_id);
    let booking = pending_booking_of(&s, &caller, booking_id, "released")
        .await
        .map_err(IntoResponse::into_response)?;
    let reply = decide(
        &s,
        booking.schedule_id,
        ids,
        Command::Release {
            user: caller.user_id,
            booking_id,
        },
    )
    .await?;
    Ok(schedule_replies::release(&reply).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticketing_domain::account::Role;

    fn caller(n: u128) -> Caller {
        Caller {
            user_id: UserId::from_uuid(Uuid::from_u128(n)),
            role: Role::User,
            session_id: Uuid::from_u128(0),
        }
    }

    fn with_key(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(IDEMPOTENCY_KEY, key.parse().unwrap());
        h
    }

    #[test]
    fn a_retried_request_is_the_same_command_with_the_same_bookings() {
        let key = "0190e0e0-0000-7000-8000-000000000001";
        let (a, ka) = command_id(&with_key(key), &caller(1)).unwrap();
        let (b, kb) = command_id(&with_key(key), &caller(1)).unwrap();
        assert_eq!((a, ka), (b, kb));
        assert_eq!(booking_ids(a, 3), booking_ids(b, 3));
        let ids = booking_ids(a, 3);
        assert!(ids[0] != ids[1] && ids[1] != ids[2], "one id per seat");
    }

    #[test]
    fn keys_are_scoped_to_the_caller() {
        let key = "0190e0e0-0000-7000-8000-000000000001";
        let (a, _) = command_id(&with_key(key), &caller(1)).unwrap();
        let (b, _) = command_id(&with_key(key), &caller(2)).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn without_a_key_every_request_is_a_new_command() {
        let (a, ka) = command_id(&HeaderMap::new(), &caller(1)).unwrap();
        let (b, kb) = command_id(&HeaderMap::new(), &caller(1)).unwrap();
        assert_ne!(a, b);
        assert_ne!(ka, kb);
    }

    #[test]
    fn a_malformed_key_is_a_400() {
        let e = command_id(&with_key("not-a-uuid"), &caller(1)).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "INVALID_IDEMPOTENCY_KEY")
        );
    }
}
