//! Payments by buyer and by day, and refunds by day, from the payments topic.

use crate::runner::{HandleError, RecordHandler};
use async_trait::async_trait;
use std::sync::Arc;
use ticketing_domain::events::Event;
use ticketing_schemas::{CodecError, EventCodec};
use ticketing_storage::{PaymentViews, RefundView};
use ticketing_transport::Record;

/// Every event carries the whole payment, written as a versioned upsert, so
/// redeliveries and replays in any order leave the newest revision; a refund
/// row is written once more on each redelivery, identically.
pub struct PaymentSink {
    codec: EventCodec,
    store: Arc<dyn PaymentViews>,
}

impl PaymentSink {
    pub fn new(codec: EventCodec, store: Arc<dyn PaymentViews>) -> Self {
        Self { codec, store }
    }
}

#[async_trait]
impl RecordHandler for PaymentSink {
    fn name(&self) -> &'static str {
        "payment-sink"
    }

    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let event = match self.codec.decode(&record.payload).await {
            Ok(e) => e,
            Err(CodecError::Registry(why)) => return Err(HandleError::Retryable(why)),
            Err(e) => return Err(HandleError::Poison(e.to_string())),
        };
        let Event::PaymentChanged(e) = event else {
            return Ok(());
        };
        let retry = |e: ticketing_storage::StoreError| HandleError::Retryable(e.to_string());
        self.store
            .put_payment_view(&e.payment)
            .await
            .map_err(retry)?;
        if let Some(refund) = RefundView::of(&e) {
            self.store.put_refund_view(&refund).await.map_err(retry)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;
    use ticketing_domain::events::{EventMeta, PaymentChange, PaymentChanged, PaymentSnapshot};
    use ticketing_domain::ids::{
        BookingId, ConcertId, EventId, PaymentId, RefundId, ScheduleId, UserId,
    };
    use ticketing_domain::payment::{PaymentStatus, Refund};
    use ticketing_schemas::EmbeddedSchemaRegistry;
    use ticketing_storage::embedded::EmbeddedStore;
    use uuid::Uuid;

    /// One payment's history: started, completed, two refunds.
    fn history() -> Vec<PaymentChanged> {
        let at = |s: i64| DateTime::<Utc>::from_timestamp(1_900_000_000 + s, 0).unwrap();
        let bookings = vec![
            BookingId::from_uuid(Uuid::now_v7()),
            BookingId::from_uuid(Uuid::now_v7()),
        ];
        let snapshot = |revision, status, refunded| PaymentSnapshot {
            payment_id: PaymentId::from_uuid(Uuid::from_u128(7)),
            user_id: UserId::from_uuid(Uuid::from_u128(8)),
            schedule_id: ScheduleId::from_uuid(Uuid::from_u128(9)),
            concert_id: ConcertId::from_uuid(Uuid::from_u128(10)),
            booking_ids: bookings.clone(),
            status,
            total_price: 100,
            refund_price: refunded,
            card_last4: "4242".into(),
            revision,
            created_at: at(0),
            updated_at: at(revision as i64),
        };
        let refund = |n: u128, booking: BookingId, s: i64| Refund {
            refund_id: RefundId::from_uuid(Uuid::from_u128(n)),
            booking_ids: vec![booking],
            amount: 50,
            reason: "r".into(),
            requested_at: at(s),
            refunded_at: Some(at(s)),
        };
        let changes = [
            (
                snapshot(0, PaymentStatus::Waiting, 0),
                PaymentChange::Started,
            ),
            (
                snapshot(1, PaymentStatus::Completed, 0),
                PaymentChange::Completed,
            ),
            (
                snapshot(3, PaymentStatus::PartCanceled, 50),
                PaymentChange::Refunded(refund(1, bookings[0], 3)),
            ),
            (
                snapshot(5, PaymentStatus::Canceled, 100),
                PaymentChange::Refunded(refund(2, bookings[1], 5)),
            ),
        ];
        changes
            .into_iter()
            .map(|(payment, change)| PaymentChanged {
                meta: EventMeta {
                    event_id: EventId::from_uuid(Uuid::now_v7()),
                    occurred_at: payment.updated_at,
                    actor: Some(payment.user_id),
                },
                payment,
                change,
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// Delivered in any order, with any redeliveries, the tables end as
        /// the newest revision and the two refunds.
        #[test]
        fn any_order_and_redelivery_ends_in_the_newest_rows(
            order in Just((0..4usize).collect::<Vec<_>>()).prop_shuffle(),
            again in prop::collection::vec(0..4usize, 0..6),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let codec = EventCodec::start(Arc::new(EmbeddedSchemaRegistry::in_memory())).await.unwrap();
                let store = Arc::new(EmbeddedStore::in_memory());
                let sink = PaymentSink::new(codec.clone(), store.clone());
                let events = history();
                for (offset, i) in order.iter().chain(again.iter()).enumerate() {
                    let payload = codec.encode(&Event::PaymentChanged(events[*i].clone())).await.unwrap();
                    let record = Record {
                        topic: "t".into(),
                        partition: 0,
                        offset: offset as i64,
                        key: None,
                        payload,
                        timestamp: Utc::now(),
                    };
                    sink.handle(&record).await.unwrap();
                }
                let newest = events[3].payment.clone();
                let user = newest.user_id;
                assert_eq!(store.payments_of_user(user, 10).await.unwrap(), vec![newest.clone()]);
                let day = newest.created_at.date_naive();
                let bucket = ticketing_storage::day_bucket(newest.payment_id.as_uuid());
                assert_eq!(store.payments_of_day(day, bucket, None, 10).await.unwrap(), vec![newest]);
                let mut refunded = 0;
                for b in 0..ticketing_storage::DAY_BUCKETS {
                    for r in store.refunds_of_day(day, b, None, 10).await.unwrap() {
                        refunded += r.refund.amount;
                    }
                }
                assert_eq!(refunded, 100);
            });
        }
    }
}
