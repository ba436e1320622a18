//! Paying for held seats (docs/payments.md): the record first, then the
//! processor freezes the seats, then the provider charges, then the record and
//! the processor learn the outcome. Every step can be repeated: the record is
//! created once per payment id, processor commands have ids derived from the
//! payment, and the provider charges an order id once. A charge whose outcome
//! is unknown is settled by asking the provider, never by charging again.

use crate::gateway::{GatewayError, ScheduleGateway};
use crate::ids::derived_uuid;
use crate::publish::{EventPublisher, PublishError};
use crate::security::card::CardCipher;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use thiserror::Error;
use ticketing_domain::events::{Event, EventMeta, PaymentChange, PaymentChanged, PaymentSnapshot};
use ticketing_domain::ids::{
    BookingId, CommandId, ConcertId, EventId, PaymentId, RefundId, ScheduleId, UserId,
};
use ticketing_domain::payment::{Card, PaymentLedger, PaymentRecord, PaymentStatus, RefundError};
use ticketing_domain::schedule::{Command, Rejection, Reply};
use ticketing_payments::{ChargeRequest, PaymentProvider, ProviderError};
use ticketing_storage::{PaymentCreated, PaymentStore, PaymentToSweep, StoreError};

/// A request to pay for some of a buyer's held bookings of one schedule.
#[derive(Clone, Debug)]
pub struct PayRequest {
    pub payment_id: PaymentId,
    pub user_id: UserId,
    pub schedule_id: ScheduleId,
    pub concert_id: ConcertId,
    pub booking_ids: Vec<BookingId>,
    pub card: Card,
}

#[derive(Debug, Error)]
pub enum PayError {
    /// The card was declined or had no funds: nothing was charged; the
    /// bookings stay held until their hold runs out.
    #[error("the payment was declined")]
    Declined(Box<PaymentRecord>),
    /// The processor refused to freeze the bookings (not the buyer's, not
    /// pending, gone).
    #[error("the bookings cannot be paid for: {0:?}")]
    Rejected(Rejection),
    /// The charge completed after the payment's window: it was refunded.
    #[error("the payment window ran out; the charge was refunded")]
    WindowExpired(Box<PaymentRecord>),
    /// The outcome is not known yet (the provider or the processor did not
    /// answer); the payment settles itself, and a retry with the same key
    /// reports it.
    #[error("payment {0} is still being settled")]
    Pending(PaymentId),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for PayError {
    fn from(e: StoreError) -> Self {
        PayError::Unavailable(e.to_string())
    }
}

/// A request to refund some (or all) of a payment's bookings.
#[derive(Clone, Debug)]
pub struct CancelRequest {
    pub payment_id: PaymentId,
    /// Names the refund: a retried request with the same id is the same
    /// refund, carried out once.
    pub refund_id: RefundId,
    /// `None`: every booking not cancelled yet.
    pub booking_ids: Option<Vec<BookingId>>,
    pub reason: String,
}

#[derive(Debug, Error)]
pub enum CancelError {
    #[error("no such payment")]
    NotFound,
    #[error(transparent)]
    Refused(#[from] RefundError),
    /// The processor found the seats not refundable (not sold by this
    /// payment): nothing was given back.
    #[error("the seats of these bookings are not refundable")]
    NotRefundable,
    /// The outcome is not known yet; the refund finishes itself, and a retry
    /// with the same key reports it.
    #[error("refund of payment {0} is still being carried out")]
    Pending(PaymentId),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for CancelError {
    fn from(e: StoreError) -> Self {
        CancelError::Unavailable(e.to_string())
    }
}

impl From<PayError> for CancelError {
    fn from(e: PayError) -> Self {
        match e {
            PayError::Pending(id) => CancelError::Pending(id),
            other => CancelError::Unavailable(other.to_string()),
        }
    }
}

/// Compare-and-set rounds before a refund request gives up on a payment
/// that keeps changing under it.
const CAS_ROUNDS: usize = 8;

/// The id of one step of one payment, stable across retries.
fn step_id(payment: PaymentId, step: &str) -> CommandId {
    CommandId::from_uuid(derived_uuid(&[
        b"payment-step",
        payment.as_uuid().as_bytes(),
        step.as_bytes(),
    ]))
}

/// The processor command of one refund, stable across retries and sweeps.
fn refund_step_id(refund: RefundId) -> CommandId {
    CommandId::from_uuid(derived_uuid(&[b"refund-step", refund.as_uuid().as_bytes()]))
}

pub struct PaymentService {
    store: Arc<dyn PaymentStore>,
    provider: Arc<dyn PaymentProvider>,
    schedules: Arc<dyn ScheduleGateway>,
    cards: CardCipher,
    events: EventPublisher,
}

/// What the provider said about a charge, once known.
enum Charge {
    Done(String),
    NotCharged,
}

impl PaymentService {
    pub fn new(
        store: Arc<dyn PaymentStore>,
        provider: Arc<dyn PaymentProvider>,
        schedules: Arc<dyn ScheduleGateway>,
        cards: CardCipher,
        events: EventPublisher,
    ) -> Self {
        Self {
            store,
            provider,
            schedules,
            cards,
            events,
        }
    }

    /// Records `next` if the payment is still at `before`'s revision, then
    /// publishes what changed.
    async fn update(
        &self,
        before: &PaymentRecord,
        next: &PaymentRecord,
    ) -> Result<bool, StoreError> {
        if !self.store.update_payment(before, next).await? {
            return Ok(false);
        }
        self.announce(Some(before), next).await;
        Ok(true)
    }

    /// Publishes the changes from `before` to `after` on the payments topic.
    /// Once published, a payment that went out of flight leaves the
    /// sweeper's list; until then (a failed publish, a crash) the sweeper
    /// publishes its history again, with the same event ids.
    async fn announce(&self, before: Option<&PaymentRecord>, after: &PaymentRecord) {
        if let Err(e) = self.publish(after, after.changes_since(before)).await {
            tracing::warn!(payment_id = %after.payment_id, error = %e,
                "payment change not published; the sweeper publishes it later");
            return;
        }
        let left = before
            .and_then(PaymentRecord::in_flight_since)
            .filter(|since| after.in_flight_since() != Some(*since));
        if let Some(since) = left {
            if let Err(e) = self.store.forget_in_flight(after.payment_id, since).await {
                tracing::debug!(payment_id = %after.payment_id, error = %e,
                    "published payment kept on the sweeper's list");
            }
        }
    }

    async fn publish(
        &self,
        record: &PaymentRecord,
        changes: Vec<PaymentChange>,
    ) -> Result<(), PublishError> {
        for change in changes {
            self.events.publish(&change_event(record, change)).await?;
        }
        Ok(())
    }

    /// Pays, or reports what an earlier attempt with the same payment id
    /// achieved. `Ok((record, replay))`: `replay` when the payment existed.
    pub async fn pay(
        &self,
        req: PayRequest,
        now: DateTime<Utc>,
    ) -> Result<(PaymentRecord, bool), PayError> {
        let existing = self.store.payment(req.payment_id).await?;
        self.pay_known(req, existing, now).await
    }

    /// [`Self::pay`] for a caller that has just read the payment's record
    /// (`existing`), so it is not read twice.
    pub async fn pay_known(
        &self,
        req: PayRequest,
        existing: Option<PaymentRecord>,
        now: DateTime<Utc>,
    ) -> Result<(PaymentRecord, bool), PayError> {
        if let Some(existing) = existing {
            let settled = match existing.ledger.status {
                PaymentStatus::Waiting => self.settle(existing, Some(&req.card), now).await?,
                _ => existing,
            };
            return Self::outcome(settled).map(|r| (r, true));
        }
        // The processor freezes the seats and names the price before anything
        // is recorded or charged: a crash here leaves nothing to undo (the
        // payment window runs out and the holds go on).
        let start = Command::StartPayment {
            user: req.user_id,
            payment_id: req.payment_id,
            booking_ids: req.booking_ids.clone(),
        };
        let total = match self
            .decide(req.schedule_id, req.payment_id, "start", start)
            .await?
        {
            Reply::PaymentStarted { total_price, .. } => total_price,
            Reply::Rejected(why) => return Err(PayError::Rejected(why)),
            other => return Err(PayError::Unavailable(format!("unexpected reply {other:?}"))),
        };
        let record = PaymentRecord {
            payment_id: req.payment_id,
            user_id: req.user_id,
            schedule_id: req.schedule_id,
            concert_id: req.concert_id,
            booking_ids: req.booking_ids.clone(),
            ledger: PaymentLedger::new(total),
            card_last4: req.card.number.last4().to_string(),
            card_cipher: self.cards.encrypt(req.payment_id, &req.card.number),
            payment_key: None,
            created_at: now,
            updated_at: now,
            revision: 0,
            refunds: vec![],
        };
        let (record, replay) = match self.store.create_payment(&record).await? {
            PaymentCreated::Created => {
                self.announce(None, &record).await;
                (record, false)
            }
            // A concurrent request with the same key got there first.
            PaymentCreated::Existing(existing) => (*existing, true),
        };
        let settled = self.settle(record, Some(&req.card), now).await?;
        Self::outcome(settled).map(|r| (r, replay))
    }

    fn outcome(record: PaymentRecord) -> Result<PaymentRecord, PayError> {
        match record.ledger.status {
            PaymentStatus::Completed | PaymentStatus::PartCanceled => Ok(record),
            PaymentStatus::Failed => Err(PayError::Declined(Box::new(record))),
            PaymentStatus::Canceled => Err(PayError::WindowExpired(Box::new(record))),
            PaymentStatus::Waiting => Err(PayError::Pending(record.payment_id)),
        }
    }

    /// Drives a recorded WAITING payment to its outcome. With the card (the
    /// buyer's request) it may charge; without it (the sweeper) it only asks
    /// the provider what happened.
    async fn settle(
        &self,
        record: PaymentRecord,
        card: Option<&Card>,
        now: DateTime<Utc>,
    ) -> Result<PaymentRecord, PayError> {
        let order = record.payment_id.to_string();
        let total = record.ledger.total_price;
        let charge = match (self.provider.lookup(&order).await, card) {
            (Ok(Some(p)), _) => Charge::Done(p.payment_key),
            (Ok(None), Some(card)) => {
                let request = ChargeRequest {
                    order_id: order.clone(),
                    order_name: format!("{} tickets", record.booking_ids.len()),
                    amount: total,
                    card: card.clone(),
                };
                match self.provider.charge(&request).await {
                    Ok(p) => Charge::Done(p.payment_key),
                    Err(
                        ProviderError::Declined { .. } | ProviderError::InsufficientFunds { .. },
                    ) => Charge::NotCharged,
                    // Never charge again: ask what happened.
                    Err(ProviderError::Unknown(_)) => match self.provider.lookup(&order).await {
                        Ok(Some(p)) => Charge::Done(p.payment_key),
                        Ok(None) => Charge::NotCharged,
                        Err(_) => return Err(PayError::Pending(record.payment_id)),
                    },
                    // Another attempt is charging this order right now.
                    Err(ProviderError::Refused { code, .. })
                        if code == "ALREADY_PROCESSED_PAYMENT" =>
                    {
                        return Err(PayError::Pending(record.payment_id))
                    }
                    Err(e) => return Err(PayError::Unavailable(e.to_string())),
                }
            }
            // The sweeper: not charged by now means never charged.
            (Ok(None), None) => Charge::NotCharged,
            (Err(_), _) => return Err(PayError::Pending(record.payment_id)),
        };
        let id = record.payment_id;
        match charge {
            Charge::NotCharged => {
                let abort = Command::AbortPayment { payment_id: id };
                self.decide(record.schedule_id, id, "abort", abort).await?;
                let failed = record.ledger.fail().expect("from waiting");
                self.finish(&record, failed, None, now).await
            }
            Charge::Done(key) => {
                let complete = Command::CompletePayment { payment_id: id };
                let sold = self
                    .decide(record.schedule_id, id, "complete", complete)
                    .await?;
                let completed = record.ledger.complete().expect("from waiting");
                if let Reply::Sold { .. } = sold {
                    return self.finish(&record, completed, Some(key), now).await;
                }
                // Too late: the seats went back on sale. The money goes back.
                const WHY: &str = "payment window ran out";
                self.provider
                    .cancel(&key, total, WHY, &RefundId::of_late_charge(id).to_string())
                    .await
                    .map_err(|e| PayError::Unavailable(e.to_string()))?;
                let refunded = record
                    .charged_too_late(key, WHY, now)
                    .expect("from waiting");
                self.write(&record, refunded).await
            }
        }
    }

    async fn decide(
        &self,
        schedule: ScheduleId,
        payment: PaymentId,
        step: &str,
        command: Command,
    ) -> Result<Reply, PayError> {
        match self
            .schedules
            .decide(schedule, step_id(payment, step), command)
            .await
        {
            Ok(reply) => Ok(reply),
            Err(GatewayError::Pending(_)) => Err(PayError::Pending(payment)),
            Err(GatewayError::Unavailable(why)) => Err(PayError::Unavailable(why)),
        }
    }

    /// Moves the record out of WAITING; if another attempt got there first,
    /// its outcome stands.
    async fn finish(
        &self,
        record: &PaymentRecord,
        ledger: PaymentLedger,
        payment_key: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<PaymentRecord, PayError> {
        self.write(record, record.with_ledger(ledger, payment_key, now))
            .await
    }

    /// Records `next`; if another attempt moved the payment first, its
    /// outcome stands.
    async fn write(
        &self,
        record: &PaymentRecord,
        next: PaymentRecord,
    ) -> Result<PaymentRecord, PayError> {
        if self.update(record, &next).await? {
            return Ok(next);
        }
        self.store
            .payment(record.payment_id)
            .await?
            .ok_or_else(|| PayError::Unavailable("the payment vanished".into()))
    }

    /// The payment as recorded.
    pub async fn payment(&self, id: PaymentId) -> Result<Option<PaymentRecord>, StoreError> {
        self.store.payment(id).await
    }

    /// Refunds some bookings of a paid payment: the refund is recorded in
    /// flight, the processor puts the seats back on sale, the provider gives
    /// the money back, and the ledger moves. Each step is repeatable, so a
    /// retry (or the sweeper, after a crash) finishes what was started.
    /// `Ok((record, replay))`: `replay` when the refund existed.
    pub async fn cancel(
        &self,
        req: CancelRequest,
        now: DateTime<Utc>,
    ) -> Result<(PaymentRecord, bool), CancelError> {
        let record = self
            .store
            .payment(req.payment_id)
            .await?
            .ok_or(CancelError::NotFound)?;
        self.cancel_known(req, record, now).await
    }

    /// [`Self::cancel`] for a caller that has just read the payment's record,
    /// so it is not read twice. A stale `record` costs one compare-and-set
    /// round, never a wrong refund.
    pub async fn cancel_known(
        &self,
        req: CancelRequest,
        mut record: PaymentRecord,
        now: DateTime<Utc>,
    ) -> Result<(PaymentRecord, bool), CancelError> {
        for _ in 0..CAS_ROUNDS {
            if record.refund(req.refund_id).is_some() {
                let done = self.finish_refund(record, req.refund_id, now).await?;
                return Ok((done, true));
            }
            // Someone else's refund is in flight (a concurrent request, or
            // one cut short by a crash): it goes first.
            if let Some(other) = record.refund_in_flight().map(|r| r.refund_id) {
                record = match self.finish_refund(record, other, now).await {
                    Ok(r) => r,
                    Err(CancelError::NotRefundable) => self.reload(req.payment_id).await?,
                    Err(e) => return Err(e),
                };
                continue;
            }
            let asked = record.request_refund(
                req.refund_id,
                req.booking_ids.as_deref(),
                &req.reason,
                now,
            )?;
            if self.update(&record, &asked).await? {
                let done = self.finish_refund(asked, req.refund_id, now).await?;
                return Ok((done, false));
            }
            record = self.reload(req.payment_id).await?;
        }
        Err(CancelError::Unavailable(
            "the payment kept changing; retry".into(),
        ))
    }

    async fn reload(&self, id: PaymentId) -> Result<PaymentRecord, CancelError> {
        self.store
            .payment(id)
            .await?
            .ok_or_else(|| CancelError::Unavailable("the payment vanished".into()))
    }

    /// Carries a recorded refund to its end (or reports it ended).
    async fn finish_refund(
        &self,
        mut record: PaymentRecord,
        id: RefundId,
        now: DateTime<Utc>,
    ) -> Result<PaymentRecord, CancelError> {
        for _ in 0..CAS_ROUNDS {
            let refund = record
                .refund(id)
                .cloned()
                .ok_or(CancelError::NotRefundable)?;
            if refund.refunded_at.is_some() {
                return Ok(record);
            }
            let seats = Command::Refund {
                payment_id: record.payment_id,
                booking_ids: refund.booking_ids.clone(),
            };
            match self
                .schedules
                .decide(record.schedule_id, refund_step_id(id), seats)
                .await
            {
                Ok(Reply::Refunded { amount, .. }) => {
                    if amount != refund.amount {
                        // The last refund takes the remainder of a total that
                        // does not divide evenly; anything else is a bug.
                        tracing::warn!(payment_id = %record.payment_id, refund_id = %id,
                            seats_amount = amount, refund_amount = refund.amount,
                            "refund amount differs from the seats' price");
                    }
                }
                Ok(Reply::Rejected(Rejection::NotRefundable)) => {
                    let dropped = record.drop_refund(id, now);
                    if !self.update(&record, &dropped).await? {
                        record = self.reload(record.payment_id).await?;
                        continue;
                    }
                    return Err(CancelError::NotRefundable);
                }
                Ok(other) => {
                    return Err(CancelError::Unavailable(format!(
                        "unexpected reply {other:?}"
                    )))
                }
                Err(GatewayError::Pending(_)) => {
                    return Err(CancelError::Pending(record.payment_id))
                }
                Err(GatewayError::Unavailable(why)) => return Err(CancelError::Unavailable(why)),
            }
            let key = record
                .payment_key
                .clone()
                .ok_or_else(|| CancelError::Unavailable("a paid payment without its key".into()))?;
            match self
                .provider
                .cancel(&key, refund.amount, &refund.reason, &id.to_string())
                .await
            {
                Ok(_) => {}
                Err(ProviderError::Unknown(_) | ProviderError::Unavailable(_)) => {
                    return Err(CancelError::Pending(record.payment_id))
                }
                Err(e) => return Err(CancelError::Unavailable(e.to_string())),
            }
            let next = record
                .finish_refund(id, now)
                .map_err(|e| CancelError::Unavailable(e.to_string()))?;
            if self.update(&record, &next).await? {
                tracing::info!(payment_id = %record.payment_id, refund_id = %id,
                    amount = refund.amount, "refunded");
                return Ok(next);
            }
            record = self.reload(record.payment_id).await?;
        }
        Err(CancelError::Unavailable(
            "the payment kept changing; retry".into(),
        ))
    }

    /// Finishes payments in flight since before `before` (a crash between
    /// the charge and its record, or in the middle of a refund): asks the
    /// provider, never charges. Payments that moved on without their change
    /// being published have their history published again.
    pub async fn sweep(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> usize {
        let listed = match self.store.payments_to_sweep(before, 100).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "payment sweep: store unavailable");
                return 0;
            }
        };
        let mut settled = 0;
        for PaymentToSweep {
            since,
            payment: record,
        } in listed
        {
            let id = record.payment_id;
            if record.in_flight_since() != Some(since) {
                match self.publish(&record, record.changes_since(None)).await {
                    Ok(()) => {
                        settled += 1;
                        if let Err(e) = self.store.forget_in_flight(id, since).await {
                            tracing::debug!(payment_id = %id, error = %e, "sweep: entry kept");
                        }
                    }
                    Err(e) => {
                        tracing::info!(payment_id = %id, error = %e, "payment not published yet")
                    }
                }
            } else if record.ledger.status == PaymentStatus::Waiting {
                match self.settle(record, None, now).await {
                    Ok(_) | Err(PayError::Rejected(_)) => settled += 1,
                    Err(e) => {
                        tracing::info!(payment_id = %id, error = %e, "payment not settled yet")
                    }
                }
            } else if let Some(refund) = record.refund_in_flight().map(|r| r.refund_id) {
                match self.finish_refund(record, refund, now).await {
                    Ok(_) | Err(CancelError::NotRefundable) => settled += 1,
                    Err(e) => {
                        tracing::info!(payment_id = %id, error = %e, "refund not finished yet")
                    }
                }
            }
        }
        settled
    }
}

/// The event of one change of a payment. Its id comes from the payment and
/// the change, so publishing it again (after a crash) repeats the id.
pub fn change_event(record: &PaymentRecord, change: PaymentChange) -> Event {
    let event_id = derived_uuid(&[
        b"payment-event",
        record.payment_id.as_uuid().as_bytes(),
        change.key().as_bytes(),
    ]);
    Event::PaymentChanged(PaymentChanged {
        meta: EventMeta {
            event_id: EventId::from_uuid(event_id),
            occurred_at: record.updated_at,
            actor: Some(record.user_id),
        },
        payment: PaymentSnapshot::from(record),
        change,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use chrono::Duration;
    use parking_lot::Mutex;
    use ticketing_domain::events::{EventMeta, ScheduleCreated};
    use ticketing_domain::ids::{EventId, StageId};
    use ticketing_domain::schedule::{Envelope, ScheduleState, SeatRef, Settings};
    use ticketing_payments::sandbox::*;
    use ticketing_runtime::Metrics;
    use ticketing_schemas::{topics, EmbeddedSchemaRegistry, EventCodec};
    use ticketing_storage::embedded::EmbeddedStore;
    use ticketing_transport::embedded::EmbeddedLog;
    use ticketing_transport::Consumer;
    use uuid::Uuid;

    fn t(s: i64) -> DateTime<Utc> {
        "2030-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::seconds(s)
    }

    /// The processor, in process: the pure state behind the gateway, with a
    /// clock the test moves.
    struct FakeGateway {
        state: Mutex<ScheduleState>,
        settings: Settings,
        now: Mutex<DateTime<Utc>>,
    }

    #[async_trait]
    impl ScheduleGateway for FakeGateway {
        async fn decide(
            &self,
            _schedule: ScheduleId,
            command_id: CommandId,
            command: Command,
        ) -> Result<Reply, GatewayError> {
            let env = Envelope {
                command_id,
                at: *self.now.lock(),
                seed: 1,
                command,
            };
            let mut state = self.state.lock();
            let reply = state.handle(&self.settings, &env).reply;
            state.check_invariants(&self.settings);
            Ok(reply)
        }
    }

    struct World {
        service: PaymentService,
        log: EmbeddedLog,
        codec: EventCodec,
        gateway: Arc<FakeGateway>,
        sandbox: SandboxProvider,
        store: Arc<EmbeddedStore>,
        buyer: UserId,
        bookings: Vec<BookingId>,
        schedule: ScheduleId,
        concert: ConcertId,
    }

    fn uid() -> Uuid {
        Uuid::now_v7()
    }

    /// A 1x3 stage where the buyer holds two seats.
    async fn world() -> World {
        let created = ScheduleCreated {
            meta: EventMeta {
                event_id: EventId::from_uuid(uid()),
                occurred_at: t(0),
                actor: None,
            },
            schedule_id: ScheduleId::from_uuid(uid()),
            concert_id: ConcertId::from_uuid(uid()),
            seller_id: UserId::from_uuid(uid()),
            stage_id: StageId::from_uuid(uid()),
            rows: 1,
            cols: 3,
            price: 70_000,
            concert_date: "2030-02-01".parse().unwrap(),
            concert_time: "19:00:00".parse().unwrap(),
            sale_opens_at: None,
        };
        let settings = Settings {
            max_active: 5,
            admission_ttl_secs: 600,
            hold_ttl_secs: 300,
            payment_ttl_secs: 60,
            max_seats_per_user: 4,
        };
        let gateway = Arc::new(FakeGateway {
            state: Mutex::new(ScheduleState::new(&created)),
            settings,
            now: Mutex::new(t(1)),
        });
        let buyer = UserId::from_uuid(uid());
        let bookings = vec![BookingId::from_uuid(uid()), BookingId::from_uuid(uid())];
        gateway
            .decide(
                created.schedule_id,
                CommandId::from_uuid(uid()),
                Command::Join { user: buyer },
            )
            .await
            .unwrap();
        let held = gateway
            .decide(
                created.schedule_id,
                CommandId::from_uuid(uid()),
                Command::Hold {
                    user: buyer,
                    seats: vec![SeatRef { row: 1, col: 1 }, SeatRef { row: 1, col: 2 }],
                    booking_ids: bookings.clone(),
                },
            )
            .await
            .unwrap();
        assert!(matches!(held, Reply::Held { .. }));
        let sandbox = SandboxProvider::new();
        let store = Arc::new(EmbeddedStore::in_memory());
        let cards = CardCipher::from_spec(&CardCipher::generate_spec("c1")).unwrap();
        let log = EmbeddedLog::in_memory(&[(topics::PAYMENTS, 2)]);
        let codec = EventCodec::start(Arc::new(EmbeddedSchemaRegistry::in_memory()))
            .await
            .unwrap();
        let events =
            EventPublisher::new(codec.clone(), Arc::new(log.producer()), Metrics::new("t"));
        World {
            service: PaymentService::new(
                store.clone(),
                Arc::new(sandbox.clone()),
                gateway.clone(),
                cards,
                events,
            ),
            log,
            codec,
            gateway,
            sandbox,
            store,
            buyer,
            bookings,
            schedule: created.schedule_id,
            concert: created.concert_id,
        }
    }

    impl World {
        /// A service over the same store, provider and seats whose events go
        /// nowhere (their topic is missing): a process that dies before
        /// publishing.
        async fn mute(&self) -> PaymentService {
            let nowhere = EmbeddedLog::in_memory(&[]);
            PaymentService::new(
                self.store.clone(),
                Arc::new(self.sandbox.clone()),
                self.gateway.clone(),
                CardCipher::from_spec(&CardCipher::generate_spec("c1")).unwrap(),
                EventPublisher::new(
                    self.codec.clone(),
                    Arc::new(nowhere.producer()),
                    Metrics::new("t"),
                ),
            )
        }

        /// Every change published so far, as `(payment, change key, status)`.
        async fn published(&self) -> Vec<(PaymentId, String, PaymentStatus)> {
            let mut consumer = self
                .log
                .consumer(&uid().to_string(), &[topics::PAYMENTS])
                .unwrap();
            let mut out = Vec::new();
            let ends: i64 = self.log.end_offsets(topics::PAYMENTS).iter().sum();
            for _ in 0..ends {
                let record = consumer.recv().await.unwrap();
                match self.codec.decode(&record.payload).await.unwrap() {
                    Event::PaymentChanged(e) => {
                        out.push((e.payment.payment_id, e.change.key(), e.payment.status))
                    }
                    other => panic!("not a payment event: {other:?}"),
                }
            }
            out.sort_by(|a, b| a.1.cmp(&b.1));
            out
        }

        fn request(&self, payment: PaymentId, number: &str) -> PayRequest {
            PayRequest {
                payment_id: payment,
                user_id: self.buyer,
                schedule_id: self.schedule,
                concert_id: self.concert,
                booking_ids: self.bookings.clone(),
                card: Card::parse(number, "12/35", "123", t(0).date_naive()).unwrap(),
            }
        }

        /// The processor freezes the bookings for payment `id`, as the
        /// service's first step would.
        async fn start(&self, id: PaymentId) {
            self.gateway
                .decide(
                    self.schedule,
                    step_id(id, "start"),
                    Command::StartPayment {
                        user: self.buyer,
                        payment_id: id,
                        booking_ids: self.bookings.clone(),
                    },
                )
                .await
                .unwrap();
        }

        /// The record the service writes before charging.
        fn waiting_record(&self, id: PaymentId) -> PaymentRecord {
            PaymentRecord {
                payment_id: id,
                user_id: self.buyer,
                schedule_id: self.schedule,
                concert_id: self.concert,
                booking_ids: self.bookings.clone(),
                ledger: PaymentLedger::new(140_000),
                card_last4: "4242".into(),
                card_cipher: "v1:c1:x".into(),
                payment_key: None,
                created_at: t(2),
                updated_at: t(2),
                revision: 0,
                refunds: vec![],
            }
        }

        fn seat(&self, col: u16) -> ticketing_domain::catalog::SeatStatus {
            self.gateway
                .state
                .lock()
                .seat_status(SeatRef { row: 1, col })
                .unwrap()
        }
    }

    use ticketing_domain::catalog::SeatStatus::{Available, Held, Sold};

    #[tokio::test]
    async fn a_good_card_pays_once_however_often_it_is_sent() {
        let w = world().await;
        let id = PaymentId::from_uuid(uid());
        let (paid, replay) = w.service.pay(w.request(id, CARD_OK), t(2)).await.unwrap();
        assert!(!replay);
        assert_eq!(paid.ledger.status, PaymentStatus::Completed);
        assert_eq!(paid.ledger.total_price, 140_000);
        assert_eq!(paid.card_last4, "4242");
        assert!(!paid.card_cipher.contains("4242424242424242"));
        assert_eq!((w.seat(1), w.seat(2), w.seat(3)), (Sold, Sold, Available));
        let (again, replay) = w.service.pay(w.request(id, CARD_OK), t(3)).await.unwrap();
        assert!(replay);
        assert_eq!(again, paid);
        assert_eq!(w.sandbox.charges(), 1, "one charge");
    }

    #[tokio::test]
    async fn a_declined_card_charges_nothing_and_leaves_the_seats_held() {
        let w = world().await;
        let id = PaymentId::from_uuid(uid());
        let e = w
            .service
            .pay(w.request(id, CARD_DECLINED), t(2))
            .await
            .unwrap_err();
        assert!(
            matches!(e, PayError::Declined(ref r) if r.ledger.status == PaymentStatus::Failed),
            "{e:?}"
        );
        assert_eq!((w.seat(1), w.seat(2)), (Held, Held));
        assert_eq!(w.sandbox.charges(), 0);
        // Another card, another payment: it goes through.
        let (paid, _) = w
            .service
            .pay(w.request(PaymentId::from_uuid(uid()), CARD_OK), t(3))
            .await
            .unwrap();
        assert_eq!(paid.ledger.status, PaymentStatus::Completed);
        assert_eq!(w.seat(1), Sold);
    }

    #[tokio::test]
    async fn a_lost_answer_is_settled_by_asking_not_by_charging_again() {
        let w = world().await;
        let id = PaymentId::from_uuid(uid());
        let (paid, _) = w
            .service
            .pay(w.request(id, CARD_TIMEOUT), t(2))
            .await
            .unwrap();
        assert_eq!(paid.ledger.status, PaymentStatus::Completed);
        assert_eq!(w.sandbox.charges(), 1);
        assert_eq!(w.seat(2), Sold);
    }

    #[tokio::test]
    async fn a_crash_between_charge_and_record_is_settled_by_the_sweeper() {
        let w = world().await;
        let id = PaymentId::from_uuid(uid());
        // The seats are frozen and the record written, the charge goes
        // through... and the process dies before recording it.
        w.start(id).await;
        let request = w.request(id, CARD_OK);
        w.store.create_payment(&w.waiting_record(id)).await.unwrap();
        w.sandbox
            .charge(&ChargeRequest {
                order_id: id.to_string(),
                order_name: "2 tickets".into(),
                amount: 140_000,
                card: request.card.clone(),
            })
            .await
            .unwrap();
        // The sweeper finds it and finishes the job, without a second charge.
        assert_eq!(w.service.sweep(t(30), t(30)).await, 1);
        let stored = w.store.payment(id).await.unwrap().unwrap();
        assert_eq!(stored.ledger.status, PaymentStatus::Completed);
        assert_eq!(w.sandbox.charges(), 1);
        assert_eq!(w.seat(1), Sold);
        assert_eq!(
            w.service.sweep(t(40), t(40)).await,
            0,
            "nothing left waiting"
        );
    }

    #[tokio::test]
    async fn an_abandoned_payment_without_a_charge_is_failed_by_the_sweeper() {
        let w = world().await;
        let id = PaymentId::from_uuid(uid());
        w.start(id).await;
        assert!(w.store.payment(id).await.unwrap().is_none());
        w.store.create_payment(&w.waiting_record(id)).await.unwrap();
        assert_eq!(w.service.sweep(t(30), t(30)).await, 1);
        let stored = w.store.payment(id).await.unwrap().unwrap();
        assert_eq!(stored.ledger.status, PaymentStatus::Failed);
        assert_eq!(w.sandbox.charges(), 0);
        assert_eq!((w.seat(1), w.seat(2)), (Held, Held), "held again, not sold");
    }

    #[tokio::test]
    async fn a_payment_whose_window_ran_out_is_neither_recorded_nor_charged() {
        let w = world().await;
        let id = PaymentId::from_uuid(uid());
        // Frozen at t=1; the window (60 s) runs out before the buyer's request
        // comes back (a retry after a crash, say).
        w.start(id).await;
        *w.gateway.now.lock() = t(100);
        let e = w
            .service
            .pay(w.request(id, CARD_OK), t(100))
            .await
            .unwrap_err();
        assert!(
            matches!(e, PayError::Rejected(Rejection::PaymentNotInProgress)),
            "{e:?}"
        );
        assert_eq!(w.store.payment(id).await.unwrap(), None);
        assert_eq!(w.sandbox.charges(), 0);
    }

    /// A provider that is so slow the payment window runs out during the charge.
    struct SlowProvider {
        inner: SandboxProvider,
        gateway: Arc<FakeGateway>,
    }

    #[async_trait]
    impl PaymentProvider for SlowProvider {
        async fn charge(
            &self,
            request: &ChargeRequest,
        ) -> Result<ticketing_payments::ProviderPayment, ProviderError> {
            let r = self.inner.charge(request).await;
            *self.gateway.now.lock() = t(200);
            r
        }
        async fn cancel(
            &self,
            key: &str,
            amount: i64,
            reason: &str,
            idempotency_key: &str,
        ) -> Result<ticketing_payments::ProviderPayment, ProviderError> {
            self.inner
                .cancel(key, amount, reason, idempotency_key)
                .await
        }
        async fn lookup(
            &self,
            order: &str,
        ) -> Result<Option<ticketing_payments::ProviderPayment>, ProviderError> {
            self.inner.lookup(order).await
        }
    }

    #[tokio::test]
    async fn a_charge_that_lands_after_the_window_is_refunded() {
        let w = world().await;
        let slow = PaymentService::new(
            w.store.clone(),
            Arc::new(SlowProvider {
                inner: w.sandbox.clone(),
                gateway: w.gateway.clone(),
            }),
            w.gateway.clone(),
            CardCipher::from_spec(&CardCipher::generate_spec("c1")).unwrap(),
            w.service.events.clone(),
        );
        let id = PaymentId::from_uuid(uid());
        let e = slow.pay(w.request(id, CARD_OK), t(2)).await.unwrap_err();
        let PayError::WindowExpired(record) = e else {
            panic!("{e:?}")
        };
        assert_eq!(record.ledger.status, PaymentStatus::Canceled);
        assert_eq!(record.ledger.refund_price, 140_000);
        let at_provider = w.sandbox.lookup(&id.to_string()).await.unwrap().unwrap();
        assert_eq!(
            (at_provider.status, at_provider.balance_amount),
            (ticketing_payments::ProviderStatus::Canceled, 0),
            "the money went back"
        );
        assert_ne!(w.seat(1), Sold, "never sold");
        let refund = RefundId::of_late_charge(id);
        assert_eq!(
            w.published().await,
            vec![
                (id, "completed".into(), PaymentStatus::Canceled),
                (id, format!("refunded-{refund}"), PaymentStatus::Canceled),
                (id, "started".into(), PaymentStatus::Waiting),
            ],
            "the books show the charge and the refund"
        );
    }

    #[tokio::test]
    async fn bookings_that_cannot_be_paid_are_refused_before_any_record() {
        let w = world().await;
        let mut req = w.request(PaymentId::from_uuid(uid()), CARD_OK);
        req.user_id = UserId::from_uuid(uid());
        let e = w.service.pay(req.clone(), t(2)).await.unwrap_err();
        assert!(
            matches!(e, PayError::Rejected(Rejection::NotOwner)),
            "{e:?}"
        );
        assert_eq!(w.store.payment(req.payment_id).await.unwrap(), None);
        assert_eq!(w.sandbox.charges(), 0);
    }

    fn cancel(
        payment: PaymentId,
        refund: RefundId,
        bookings: Option<Vec<BookingId>>,
    ) -> CancelRequest {
        CancelRequest {
            payment_id: payment,
            refund_id: refund,
            booking_ids: bookings,
            reason: "cannot come".into(),
        }
    }

    async fn balance(w: &World, id: PaymentId) -> i64 {
        w.sandbox
            .lookup(&id.to_string())
            .await
            .unwrap()
            .unwrap()
            .balance_amount
    }

    #[tokio::test]
    async fn a_partial_then_a_full_refund_puts_the_seats_back_on_sale() {
        let w = world().await;
        let id = PaymentId::from_uuid(uid());
        w.service.pay(w.request(id, CARD_OK), t(2)).await.unwrap();
        let first = RefundId::from_uuid(uid());
        let (part, replay) = w
            .service
            .cancel(cancel(id, first, Some(vec![w.bookings[0]])), t(3))
            .await
            .unwrap();
        assert!(!replay);
        assert_eq!(part.ledger.status, PaymentStatus::PartCanceled);
        assert_eq!(part.ledger.refund_price, 70_000);
        assert_eq!((w.seat(1), w.seat(2)), (Available, Sold));
        assert_eq!(balance(&w, id).await, 70_000);
        // The same request again: the same refund, reported, not repeated.
        let (again, replay) = w
            .service
            .cancel(cancel(id, first, Some(vec![w.bookings[0]])), t(4))
            .await
            .unwrap();
        assert!(replay);
        assert_eq!(again, part);
        assert_eq!(balance(&w, id).await, 70_000);
        // A new request for the same booking: it is cancelled already.
        let e = w
            .service
            .cancel(
                cancel(id, RefundId::from_uuid(uid()), Some(vec![w.bookings[0]])),
                t(4),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, CancelError::Refused(RefundError::BookingAlreadyCancelled(b)) if b == w.bookings[0]),
            "{e:?}"
        );
        // The rest.
        let (all, _) = w
            .service
            .cancel(cancel(id, RefundId::from_uuid(uid()), None), t(5))
            .await
            .unwrap();
        assert_eq!(all.ledger.status, PaymentStatus::Canceled);
        assert_eq!(all.ledger.refund_price, 140_000);
        assert_eq!((w.seat(1), w.seat(2)), (Available, Available));
        assert_eq!(balance(&w, id).await, 0);
        let e = w
            .service
            .cancel(cancel(id, RefundId::from_uuid(uid()), None), t(6))
            .await
            .unwrap_err();
        assert!(
            matches!(e, CancelError::Refused(RefundError::AlreadyCanceled)),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_refund_cut_short_by_a_crash_is_finished_by_the_sweeper() {
        let w = world().await;
        let id = PaymentId::from_uuid(uid());
        let (paid, _) = w.service.pay(w.request(id, CARD_OK), t(2)).await.unwrap();
        // The refund is recorded and the seats go back on sale... and the
        // process dies before the provider is asked.
        let refund = RefundId::from_uuid(uid());
        let asked = paid
            .request_refund(refund, None, "cannot come", t(3))
            .unwrap();
        assert!(w.store.update_payment(&paid, &asked).await.unwrap());
        w.gateway
            .decide(
                w.schedule,
                refund_step_id(refund),
                Command::Refund {
                    payment_id: id,
                    booking_ids: w.bookings.clone(),
                },
            )
            .await
            .unwrap();
        assert_eq!(balance(&w, id).await, 140_000, "not paid back yet");
        assert_eq!(w.service.sweep(t(2), t(40)).await, 0, "not due yet");
        assert_eq!(w.service.sweep(t(30), t(40)).await, 1);
        let stored = w.store.payment(id).await.unwrap().unwrap();
        assert_eq!(stored.ledger.status, PaymentStatus::Canceled);
        assert_eq!(stored.refund(refund).unwrap().refunded_at, Some(t(40)));
        assert_eq!(balance(&w, id).await, 0);
        assert_eq!((w.seat(1), w.seat(2)), (Available, Available));
        assert_eq!(w.service.sweep(t(50), t(50)).await, 0, "nothing left");
    }

    #[tokio::test]
    async fn a_refund_in_flight_goes_before_the_next_one() {
        let w = world().await;
        let id = PaymentId::from_uuid(uid());
        let (paid, _) = w.service.pay(w.request(id, CARD_OK), t(2)).await.unwrap();
        let stuck = RefundId::from_uuid(uid());
        let asked = paid
            .request_refund(stuck, Some(&w.bookings[..1]), "first", t(3))
            .unwrap();
        assert!(w.store.update_payment(&paid, &asked).await.unwrap());
        let (done, _) = w
            .service
            .cancel(cancel(id, RefundId::from_uuid(uid()), None), t(4))
            .await
            .unwrap();
        assert_eq!(done.ledger.status, PaymentStatus::Canceled);
        assert_eq!(done.refunds.len(), 2);
        assert_eq!(
            done.refund(stuck).unwrap().booking_ids,
            w.bookings[..1].to_vec()
        );
        assert_eq!(balance(&w, id).await, 0);
    }

    #[tokio::test]
    async fn a_failed_payment_is_not_refundable() {
        let w = world().await;
        let id = PaymentId::from_uuid(uid());
        w.service
            .pay(w.request(id, CARD_DECLINED), t(2))
            .await
            .unwrap_err();
        let e = w
            .service
            .cancel(cancel(id, RefundId::from_uuid(uid()), None), t(3))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                CancelError::Refused(RefundError::NotPaid(PaymentStatus::Failed))
            ),
            "{e:?}"
        );
        let e = w
            .service
            .cancel(
                cancel(
                    PaymentId::from_uuid(uid()),
                    RefundId::from_uuid(uid()),
                    None,
                ),
                t(3),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, CancelError::NotFound), "{e:?}");
    }

    #[tokio::test]
    async fn every_change_is_published_once_with_the_payment_after_it() {
        let w = world().await;
        let id = PaymentId::from_uuid(uid());
        w.service.pay(w.request(id, CARD_OK), t(2)).await.unwrap();
        w.service.pay(w.request(id, CARD_OK), t(3)).await.unwrap();
        assert_eq!(
            w.published().await,
            vec![
                (id, "completed".into(), PaymentStatus::Completed),
                (id, "started".into(), PaymentStatus::Waiting),
            ],
            "a replayed request publishes nothing"
        );
        let refund = RefundId::from_uuid(uid());
        w.service
            .cancel(cancel(id, refund, Some(w.bookings[..1].to_vec())), t(4))
            .await
            .unwrap();
        let all = w.published().await;
        assert_eq!(all.len(), 3);
        assert!(all.contains(&(
            id,
            format!("refunded-{refund}"),
            PaymentStatus::PartCanceled
        )));
        // Everything published: nothing left for the sweeper.
        assert_eq!(w.service.sweep(t(1000), t(1000)).await, 0);
        assert_eq!(w.published().await.len(), 3);
    }

    #[tokio::test]
    async fn changes_lost_in_a_crash_are_published_by_the_sweeper() {
        let w = world().await;
        let id = PaymentId::from_uuid(uid());
        let mute = w.mute().await;
        mute.pay(w.request(id, CARD_OK), t(2)).await.unwrap();
        assert!(w.published().await.is_empty());
        assert_eq!(w.service.sweep(t(1000), t(1000)).await, 1);
        assert_eq!(
            w.published().await,
            vec![
                (id, "completed".into(), PaymentStatus::Completed),
                (id, "started".into(), PaymentStatus::Completed),
            ],
            "the history again, with the payment as it now is"
        );
        assert_eq!(w.service.sweep(t(1000), t(1000)).await, 0, "once");
    }
}
