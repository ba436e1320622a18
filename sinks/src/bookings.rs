//! Bookings by buyer and by schedule, from the schedule processors'
//! changelog.

use crate::runner::{HandleError, RecordHandler};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use ticketing_domain::booking::BookingStatus;
use ticketing_domain::events::Event;
use ticketing_domain::ids::{PaymentId, ScheduleId, UserId};
use ticketing_domain::schedule::{Fact, FactKind, HeldSeat};
use ticketing_schemas::{CodecError, EventCodec};
use ticketing_storage::{BookingRow, BookingRows};
use ticketing_transport::Record;

/// Writes each booking a fact touches as a whole row versioned by the fact's
/// changelog offset. A schedule lives on one partition, so its offsets only
/// grow: the newest fact's row wins whatever order the writes land in, and a
/// replay from the start rewrites the same rows.
pub struct BookingSink {
    codec: EventCodec,
    store: Arc<dyn BookingRows>,
}

impl BookingSink {
    pub fn new(codec: EventCodec, store: Arc<dyn BookingRows>) -> Self {
        Self { codec, store }
    }
}

/// The rows one fact gives its bookings, each at `version`. Facts that do
/// not change a booking's status (a payment starting or aborting, the queue's
/// facts) give none.
pub fn booking_rows(schedule: ScheduleId, fact: &Fact, version: i64) -> Vec<BookingRow> {
    let row = |user: UserId,
               held: &HeldSeat,
               status: BookingStatus,
               payment: Option<PaymentId>,
               created: Option<DateTime<Utc>>| BookingRow {
        booking_id: held.booking_id,
        user_id: user,
        schedule_id: schedule,
        seat: held.seat,
        status,
        payment_id: payment,
        created_at: created,
        updated_at: fact.at,
        version,
    };
    match &fact.kind {
        FactKind::SeatsHeld { user, seats, .. } => seats
            .iter()
            .map(|h| row(*user, h, BookingStatus::Pending, None, Some(fact.at)))
            .collect(),
        FactKind::BookingsCancelled { user, seats, .. } => seats
            .iter()
            .map(|h| row(*user, h, BookingStatus::Cancelled, None, None))
            .collect(),
        FactKind::SeatsSold {
            user,
            payment_id,
            seats,
        } => seats
            .iter()
            .map(|h| row(*user, h, BookingStatus::Confirmed, Some(*payment_id), None))
            .collect(),
        FactKind::SeatsRefunded {
            user,
            payment_id,
            seats,
        } => seats
            .iter()
            .map(|h| row(*user, h, BookingStatus::Cancelled, Some(*payment_id), None))
            .collect(),
        FactKind::QueueJoined { .. }
        | FactKind::QueueOpened { .. }
        | FactKind::Admitted { .. }
        | FactKind::AdmissionExpired { .. }
        | FactKind::QueueLeft { .. }
        | FactKind::PaymentStarted { .. }
        | FactKind::PaymentAborted { .. }
        | FactKind::Unchanged => Vec::new(),
    }
}

#[async_trait]
impl RecordHandler for BookingSink {
    fn name(&self) -> &'static str {
        "booking-sink"
    }

    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let event = match self.codec.decode(&record.payload).await {
            Ok(e) => e,
            Err(CodecError::Registry(why)) => return Err(HandleError::Retryable(why)),
            Err(e) => return Err(HandleError::Poison(e.to_string())),
        };
        let Event::ScheduleFactRecorded(e) = event else {
            return Ok(());
        };
        for row in booking_rows(e.schedule_id, &e.fact, record.offset) {
            self.store
                .put_booking(&row)
                .await
                .map_err(|e| HandleError::Retryable(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticketing_domain::ids::{BookingId, CommandId};
    use ticketing_domain::schedule::{CancelReason, SeatRef};
    use uuid::Uuid;

    fn fact(kind: FactKind) -> Fact {
        Fact {
            command_id: CommandId::from_uuid(Uuid::now_v7()),
            at: DateTime::from_timestamp(1_900_000_000, 0).unwrap(),
            kind,
        }
    }

    #[test]
    fn a_booking_goes_pending_confirmed_cancelled_and_keeps_its_creation_time() {
        let schedule = ScheduleId::from_uuid(Uuid::now_v7());
        let user = UserId::from_uuid(Uuid::now_v7());
        let payment = PaymentId::from_uuid(Uuid::now_v7());
        let seats = vec![HeldSeat {
            booking_id: BookingId::from_uuid(Uuid::now_v7()),
            seat: SeatRef { row: 1, col: 2 },
        }];
        let held = booking_rows(
            schedule,
            &fact(FactKind::SeatsHeld {
                user,
                seats: seats.clone(),
                until: DateTime::from_timestamp(1_900_000_300, 0).unwrap(),
            }),
            7,
        );
        assert_eq!(held.len(), 1);
        assert_eq!(
            (
                held[0].status,
                held[0].version,
                held[0].created_at.is_some()
            ),
            (BookingStatus::Pending, 7, true)
        );
        let sold = booking_rows(
            schedule,
            &fact(FactKind::SeatsSold {
                user,
                payment_id: payment,
                seats: seats.clone(),
            }),
            9,
        );
        assert_eq!(
            (sold[0].status, sold[0].payment_id, sold[0].created_at),
            (BookingStatus::Confirmed, Some(payment), None)
        );
        let refunded = booking_rows(
            schedule,
            &fact(FactKind::SeatsRefunded {
                user,
                payment_id: payment,
                seats: seats.clone(),
            }),
            11,
        );
        assert_eq!(refunded[0].status, BookingStatus::Cancelled);
        let expired = booking_rows(
            schedule,
            &fact(FactKind::BookingsCancelled {
                user,
                seats,
                reason: CancelReason::Expired,
            }),
            12,
        );
        assert_eq!(
            (expired[0].status, expired[0].payment_id),
            (BookingStatus::Cancelled, None)
        );
        assert!(booking_rows(schedule, &fact(FactKind::Unchanged), 13).is_empty());
    }
}
