//! The HTTP contract of the waiting room and seat holds: how each decision of
//! the schedule processor is answered. Kept apart from the handlers so every
//! branch is tested without a processor.

use crate::error::ApiError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use ticketing_domain::schedule::{QueueStatus, Rejection, Reply, SeatRef};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct QueueView {
    /// `WAITING`, `ADMITTED`, `EXPIRED`, `LEFT`, `SOLD_OUT` or `NOT_IN_QUEUE`.
    pub status: &'static str,
    /// 1-based; absent while waiting for the sale to open (drawn then).
    pub position: Option<u64>,
    pub ahead: Option<u64>,
    pub eta_seconds: Option<u64>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub admitted_until: Option<DateTime<Utc>>,
}

impl From<&QueueStatus> for QueueView {
    fn from(s: &QueueStatus) -> Self {
        let bare = |status| QueueView {
            status,
            position: None,
            ahead: None,
            eta_seconds: None,
            admitted_until: None,
        };
        match s {
            QueueStatus::Waiting {
                position,
                ahead,
                eta_seconds,
            } => QueueView {
                status: "WAITING",
                position: *position,
                ahead: *ahead,
                eta_seconds: *eta_seconds,
                admitted_until: None,
            },
            QueueStatus::Admitted { position, until } => QueueView {
                status: "ADMITTED",
                position: Some(*position),
                ahead: Some(0),
                eta_seconds: Some(0),
                admitted_until: Some(*until),
            },
            QueueStatus::Expired => bare("EXPIRED"),
            QueueStatus::Left => bare("LEFT"),
            QueueStatus::SoldOut => bare("SOLD_OUT"),
            QueueStatus::NotInQueue => bare("NOT_IN_QUEUE"),
        }
    }
}

#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct HoldView {
    pub booking_ids: Vec<Uuid>,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct SeatView {
    pub row: u16,
    pub col: u16,
}

/// The body of a 409 `SEAT_UNAVAILABLE`: which seats were taken.
#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct SeatsTaken {
    pub code: &'static str,
    pub message: String,
    pub seats: Vec<SeatView>,
}

/// What a schedule command is answered with, as the handler will send it.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Queue(StatusCode, QueueView),
    Held(HoldView),
    NoContent,
    SeatsTaken(SeatsTaken),
    Error(ApiError),
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Queue(status, view) => (status, Json(view)).into_response(),
            Answer::Held(view) => (StatusCode::CREATED, Json(view)).into_response(),
            Answer::NoContent => StatusCode::NO_CONTENT.into_response(),
            Answer::SeatsTaken(body) => (StatusCode::CONFLICT, Json(body)).into_response(),
            Answer::Error(e) => e.into_response(),
        }
    }
}

/// The body of a 503 `DECISION_PENDING`: the processor has not answered in
/// time. Sending the request again with `Idempotency-Key: <command_id>` is
/// safe: it is the same command, decided at most once.
#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct DecisionPending {
    pub code: &'static str,
    pub message: String,
    pub command_id: Uuid,
}

impl IntoResponse for DecisionPending {
    fn into_response(self) -> Response {
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(self)).into_response();
        crate::error::retry_soon(&mut response);
        response
    }
}

fn seat_views(seats: &[SeatRef]) -> Vec<SeatView> {
    seats
        .iter()
        .map(|s| SeatView {
            row: s.row,
            col: s.col,
        })
        .collect()
}

/// Maps a rejection to its status and stable code.
pub fn rejection(r: &Rejection) -> Answer {
    let e = |status, code, msg: String| Answer::Error(ApiError::new(status, code, msg));
    match r {
        Rejection::NotAdmitted => e(
            StatusCode::FORBIDDEN,
            "NOT_ADMITTED",
            "you are not admitted to this schedule now; join the queue and wait for your turn"
                .into(),
        ),
        Rejection::SeatUnavailable { seats } => Answer::SeatsTaken(SeatsTaken {
            code: "SEAT_UNAVAILABLE",
            message: "some seats are already held or sold".into(),
            seats: seat_views(seats),
        }),
        Rejection::SeatLimit { limit, already } => e(
            StatusCode::UNPROCESSABLE_ENTITY,
            "SEAT_LIMIT",
            format!("at most {limit} seats per buyer; you already hold or own {already}"),
        ),
        Rejection::InvalidSeat { seat } => e(
            StatusCode::BAD_REQUEST,
            "INVALID_SEAT",
            format!("seat ({}, {}) is not on this stage", seat.row, seat.col),
        ),
        Rejection::DuplicateSeat { seat } => e(
            StatusCode::BAD_REQUEST,
            "DUPLICATE_SEAT",
            format!("seat ({}, {}) is named twice", seat.row, seat.col),
        ),
        Rejection::EmptyHold => e(
            StatusCode::BAD_REQUEST,
            "INVALID_HOLD",
            "name between 1 and the per-buyer limit of seats".into(),
        ),
        Rejection::BookingNotFound => e(
            StatusCode::NOT_FOUND,
            "BOOKING_NOT_FOUND",
            "no such pending booking".into(),
        ),
        Rejection::NotOwner => e(
            StatusCode::FORBIDDEN,
            "NOT_OWNER",
            "only the buyer who holds it may release it".into(),
        ),
        Rejection::BookingNotPending => e(
            StatusCode::CONFLICT,
            "BOOKING_NOT_PENDING",
            "the booking is being paid for, or is paid already".into(),
        ),
        Rejection::PaymentNotInProgress => e(
            StatusCode::CONFLICT,
            "PAYMENT_NOT_IN_PROGRESS",
            "no payment in progress with this id".into(),
        ),
        Rejection::NotRefundable => e(
            StatusCode::CONFLICT,
            "NOT_REFUNDABLE",
            "these bookings are not paid by this payment, or are refunded already".into(),
        ),
        Rejection::SaleClosed => e(
            StatusCode::UNPROCESSABLE_ENTITY,
            "SALE_CLOSED",
            "the show has started; tickets for it are no longer sold".into(),
        ),
    }
}

fn unknown_schedule() -> Answer {
    Answer::Error(ApiError::not_found(
        "SCHEDULE_NOT_FOUND",
        "no such schedule",
    ))
}

fn unexpected(what: &str, reply: &Reply) -> Answer {
    tracing::error!(?reply, "unexpected reply to {what}");
    Answer::Error(ApiError::unavailable(format!("unexpected reply to {what}")))
}

/// `POST .../queue`: 201 when this command put the buyer in line (also when
/// it is a retry of that command), 200 when the buyer was in line already.
pub fn join(reply: &Reply) -> Answer {
    match reply {
        Reply::Joined(s) => Answer::Queue(StatusCode::CREATED, QueueView::from(s)),
        Reply::Queue(s) => Answer::Queue(StatusCode::OK, QueueView::from(s)),
        Reply::UnknownSchedule => unknown_schedule(),
        Reply::Rejected(r) => rejection(r),
        other => unexpected("join", other),
    }
}

/// `DELETE .../queue/me`: 204, also when the buyer was not in line (idempotent).
pub fn leave(reply: &Reply) -> Answer {
    match reply {
        Reply::Left => Answer::NoContent,
        Reply::UnknownSchedule => unknown_schedule(),
        other => unexpected("leave", other),
    }
}

/// `POST .../holds`: 201 with the booking ids and the hold's expiry.
pub fn hold(reply: &Reply) -> Answer {
    match reply {
        Reply::Held { booking_ids, until } => Answer::Held(HoldView {
            booking_ids: booking_ids.iter().map(|b| b.as_uuid()).collect(),
            expires_at: *until,
        }),
        Reply::Rejected(r) => rejection(r),
        Reply::UnknownSchedule => unknown_schedule(),
        other => unexpected("hold", other),
    }
}

/// `DELETE /bookings/{id}`: 204.
pub fn release(reply: &Reply) -> Answer {
    match reply {
        Reply::Released => Answer::NoContent,
        Reply::Rejected(r) => rejection(r),
        Reply::UnknownSchedule => Answer::Error(ApiError::not_found(
            "BOOKING_NOT_FOUND",
            "no such pending booking",
        )),
        other => unexpected("release", other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticketing_domain::ids::BookingId;

    fn code(a: &Answer) -> (StatusCode, &str) {
        match a {
            Answer::Error(e) => (e.status, e.code),
            Answer::SeatsTaken(t) => (StatusCode::CONFLICT, t.code),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_rejection_has_its_status_and_code() {
        let seat = SeatRef { row: 3, col: 3 };
        let cases = [
            (
                Rejection::NotAdmitted,
                StatusCode::FORBIDDEN,
                "NOT_ADMITTED",
            ),
            (
                Rejection::SeatUnavailable { seats: vec![seat] },
                StatusCode::CONFLICT,
                "SEAT_UNAVAILABLE",
            ),
            (
                Rejection::SeatLimit {
                    limit: 4,
                    already: 3,
                },
                StatusCode::UNPROCESSABLE_ENTITY,
                "SEAT_LIMIT",
            ),
            (
                Rejection::InvalidSeat { seat },
                StatusCode::BAD_REQUEST,
                "INVALID_SEAT",
            ),
            (
                Rejection::DuplicateSeat { seat },
                StatusCode::BAD_REQUEST,
                "DUPLICATE_SEAT",
            ),
            (
                Rejection::EmptyHold,
                StatusCode::BAD_REQUEST,
                "INVALID_HOLD",
            ),
            (
                Rejection::BookingNotFound,
                StatusCode::NOT_FOUND,
                "BOOKING_NOT_FOUND",
            ),
            (Rejection::NotOwner, StatusCode::FORBIDDEN, "NOT_OWNER"),
            (
                Rejection::SaleClosed,
                StatusCode::UNPROCESSABLE_ENTITY,
                "SALE_CLOSED",
            ),
        ];
        for (r, status, c) in cases {
            assert_eq!(code(&hold(&Reply::Rejected(r))), (status, c));
        }
        // A join after the show started is refused the same way.
        assert_eq!(
            code(&join(&Reply::Rejected(Rejection::SaleClosed))),
            (StatusCode::UNPROCESSABLE_ENTITY, "SALE_CLOSED")
        );
    }

    #[test]
    fn taken_seats_are_listed() {
        let r = Reply::Rejected(Rejection::SeatUnavailable {
            seats: vec![SeatRef { row: 1, col: 2 }, SeatRef { row: 3, col: 4 }],
        });
        let Answer::SeatsTaken(body) = hold(&r) else {
            panic!()
        };
        assert_eq!(
            body.seats,
            vec![SeatView { row: 1, col: 2 }, SeatView { row: 3, col: 4 }]
        );
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["code"], "SEAT_UNAVAILABLE");
        assert_eq!(json["seats"][1]["col"], 4);
    }

    #[test]
    fn queue_statuses_render_the_contract_fields() {
        let until: DateTime<Utc> = "2030-01-01T00:10:00Z".parse().unwrap();
        let a = join(&Reply::Joined(QueueStatus::Admitted { position: 7, until }));
        let Answer::Queue(status, view) = a else {
            panic!()
        };
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(
            (view.status, view.position, view.admitted_until),
            ("ADMITTED", Some(7), Some(until))
        );
        let a = join(&Reply::Queue(QueueStatus::Waiting {
            position: Some(9),
            ahead: Some(2),
            eta_seconds: Some(4),
        }));
        let Answer::Queue(status, view) = a else {
            panic!()
        };
        assert_eq!(status, StatusCode::OK, "already in line");
        assert_eq!(
            (view.status, view.position, view.ahead, view.eta_seconds),
            ("WAITING", Some(9), Some(2), Some(4))
        );
        let json = serde_json::to_value(QueueView::from(&QueueStatus::Waiting {
            position: None,
            ahead: None,
            eta_seconds: None,
        }))
        .unwrap();
        assert_eq!(json["status"], "WAITING");
        assert!(json["position"].is_null(), "drawn at the opening");
        assert_eq!(
            code(&join(&Reply::UnknownSchedule)),
            (StatusCode::NOT_FOUND, "SCHEDULE_NOT_FOUND")
        );
    }

    #[test]
    fn holds_leaves_and_releases() {
        let until: DateTime<Utc> = "2030-01-01T00:05:00Z".parse().unwrap();
        let b = BookingId::from_uuid(Uuid::from_u128(5));
        assert_eq!(
            hold(&Reply::Held {
                booking_ids: vec![b],
                until
            }),
            Answer::Held(HoldView {
                booking_ids: vec![b.as_uuid()],
                expires_at: until
            })
        );
        assert_eq!(leave(&Reply::Left), Answer::NoContent);
        assert_eq!(release(&Reply::Released), Answer::NoContent);
        assert_eq!(
            code(&release(&Reply::Rejected(Rejection::NotOwner))),
            (StatusCode::FORBIDDEN, "NOT_OWNER")
        );
        assert_eq!(
            code(&hold(&Reply::Left)).0,
            StatusCode::SERVICE_UNAVAILABLE,
            "a wrong reply is a server fault, not a client error"
        );
    }
}
