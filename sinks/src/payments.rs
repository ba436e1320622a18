//! Payments by buyer and by day, and refunds by day, from the payments topic.

use crate::runner::{HandleError, RecordHandler};
use async_trait::async_trait;
use std::sync::Arc;
use ticketing_domain::events::{Event, PaymentChange, PaymentChanged};
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

/// The refund row an event writes, if it is a refund.
pub fn refund_row(e: &PaymentChanged) -> Option<RefundView> {
    match &e.change {
        PaymentChange::Refunded(refund) => Some(RefundView {
            payment_id: e.payment.payment_id,
            user_id: e.payment.user_id,
            schedule_id: e.payment.schedule_id,
            concert_id: e.payment.concert_id,
            total_price: e.payment.total_price,
            refund: refund.clone(),
        }),
        _ => None,
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
        if let Some(refund) = refund_row(&e) {
            self.store.put_refund_view(&refund).await.map_err(retry)?;
        }
        Ok(())
    }
}
