//! The schedules' read model in memory: seat maps, queue statuses and bookings,
//! folded from the processors' changelog. `ticketing dev` serves reads from it.
//!
//! It folds the same facts with the same `ScheduleState::apply` as the
//! processor, so it can only be behind the processor, never different. It
//! keeps no offsets: whoever feeds it reads the changelog from its start (a new
//! consumer group per process start), which is also how it is rebuilt.

use crate::runner::{HandleError, RecordHandler};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use ticketing_domain::booking::{BookingStatus, IllegalTransition};
use ticketing_domain::events::Event;
use ticketing_domain::ids::{BookingId, ScheduleId, UserId};
use ticketing_domain::schedule::{
    FactKind, HeldSeat, QueueStatus, ScheduleState, SeatRef, Settings,
};
use ticketing_schemas::{CodecError, EventCodec};
use ticketing_storage::{
    BookingView, ScheduleReadModel, ScheduleViewChange, ScheduleViewWriter, SeatMapView, StoreError,
};
use ticketing_transport::Record;

#[derive(Default)]
struct Views {
    schedules: HashMap<ScheduleId, ScheduleState>,
    bookings: HashMap<BookingId, BookingView>,
    /// Oldest first; read backwards.
    by_user: HashMap<UserId, Vec<BookingId>>,
}

#[derive(Clone)]
pub struct ScheduleViews {
    settings: Settings,
    views: Arc<RwLock<Views>>,
}

impl ScheduleViews {
    /// `settings` are the processors': the ETA of a waiting buyer depends on
    /// them.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            views: Arc::default(),
        }
    }

    /// Folds one changelog event; other events are ignored.
    pub fn apply(&self, event: &Event) {
        self.apply_with_changes(event);
    }

    /// Folds one changelog event and says what it changed in the read model,
    /// as absolute values a [`ScheduleViewWriter`] can store. `None` for an
    /// event that is not about a known schedule.
    pub fn apply_with_changes(
        &self,
        event: &Event,
    ) -> Option<(ScheduleId, Vec<ScheduleViewChange>)> {
        let mut views = self.views.write();
        let views = &mut *views;
        match event {
            Event::ScheduleInitialised(created) => {
                let state = views
                    .schedules
                    .entry(created.schedule_id)
                    .or_insert_with(|| ScheduleState::new(created));
                Some((
                    created.schedule_id,
                    vec![ScheduleViewChange::Created {
                        rows: state.grid.rows(),
                        cols: state.grid.cols(),
                        price: state.price,
                        concert_id: state.concert_id,
                    }],
                ))
            }
            Event::ScheduleFactRecorded(e) => {
                let Some(state) = views.schedules.get_mut(&e.schedule_id) else {
                    tracing::warn!(schedule_id = %e.schedule_id, "a fact for a schedule never initialised");
                    return None;
                };
                state.apply(&e.fact);
                let mut changes = Vec::new();
                let entry_of = |state: &ScheduleState, user: UserId| {
                    state
                        .entry(user)
                        .map(|entry| ScheduleViewChange::Entry { user, entry })
                };
                match &e.fact.kind {
                    FactKind::QueueJoined { user, .. }
                    | FactKind::AdmissionExpired { user }
                    | FactKind::QueueLeft { user } => changes.extend(entry_of(state, *user)),
                    FactKind::QueueOpened { .. } => {
                        changes.extend(
                            state
                                .entries()
                                .map(|(user, entry)| ScheduleViewChange::Entry { user, entry }),
                        );
                    }
                    FactKind::Admitted { user, .. } => {
                        changes.extend(entry_of(state, *user));
                        changes.push(ScheduleViewChange::Rate(state.rate_window()));
                    }
                    FactKind::SeatsHeld { user, seats, until } => {
                        for held in seats {
                            changes.extend(seat_change(state, held.seat));
                            if views.bookings.contains_key(&held.booking_id) {
                                continue;
                            }
                            let view = BookingView {
                                booking_id: held.booking_id,
                                schedule_id: e.schedule_id,
                                concert_id: state.concert_id,
                                user_id: *user,
                                seat: held.seat,
                                price: state.price,
                                status: BookingStatus::Pending,
                                payment_id: None,
                                expires_at: Some(*until),
                            };
                            changes.push(ScheduleViewChange::Booking(view.clone()));
                            views.bookings.insert(held.booking_id, view);
                            views
                                .by_user
                                .entry(*user)
                                .or_default()
                                .push(held.booking_id);
                        }
                    }
                    FactKind::BookingsCancelled { seats, .. } => {
                        restate(&mut views.bookings, state, seats, &mut changes, |b| {
                            b.status = b.status.cancel()?;
                            Ok(())
                        });
                    }
                    FactKind::SeatsSold {
                        payment_id, seats, ..
                    } => {
                        restate(&mut views.bookings, state, seats, &mut changes, |b| {
                            b.status = b.status.confirm()?;
                            b.payment_id = Some(payment_id.as_uuid());
                            b.expires_at = None;
                            Ok(())
                        });
                        changes.push(ScheduleViewChange::SoldOut(state.is_sold_out()));
                    }
                    FactKind::SeatsRefunded { seats, .. } => {
                        restate(&mut views.bookings, state, seats, &mut changes, |b| {
                            b.status = b.status.cancel()?;
                            Ok(())
                        });
                        changes.push(ScheduleViewChange::SoldOut(state.is_sold_out()));
                    }
                    // Paying changes nothing a reader sees: the bookings stay
                    // PENDING and the seats HELD until the outcome.
                    FactKind::PaymentStarted { .. }
                    | FactKind::PaymentAborted { .. }
                    | FactKind::Unchanged => {}
                }
                Some((e.schedule_id, changes))
            }
            _ => None,
        }
    }
}

/// A seat as it now is, as a change for the read model.
fn seat_change(state: &ScheduleState, seat: SeatRef) -> Option<ScheduleViewChange> {
    state
        .seat_status(seat)
        .map(|status| ScheduleViewChange::Seat {
            index: u32::from(seat.row - 1) * u32::from(state.grid.cols()) + u32::from(seat.col - 1),
            status,
        })
}

/// Moves the booking of each seat through `step` (confirm, cancel) and records
/// the seat and the booking as changed. A step the booking's state refuses is
/// logged and skipped: the read model never invents a transition.
fn restate(
    bookings: &mut HashMap<BookingId, BookingView>,
    state: &ScheduleState,
    seats: &[HeldSeat],
    changes: &mut Vec<ScheduleViewChange>,
    step: impl Fn(&mut BookingView) -> Result<(), IllegalTransition>,
) {
    for held in seats {
        changes.extend(seat_change(state, held.seat));
        if let Some(b) = bookings.get_mut(&held.booking_id) {
            let mut next = b.clone();
            match step(&mut next) {
                Ok(()) => {
                    *b = next;
                    changes.push(ScheduleViewChange::Booking(b.clone()));
                }
                Err(e) => {
                    tracing::warn!(booking_id = %held.booking_id, error = %e, "booking transition skipped")
                }
            }
        }
    }
}

#[async_trait]
impl ScheduleReadModel for ScheduleViews {
    async fn seat_map(&self, schedule: ScheduleId) -> Result<Option<SeatMapView>, StoreError> {
        Ok(self
            .views
            .read()
            .schedules
            .get(&schedule)
            .map(|s| SeatMapView {
                rows: s.grid.rows(),
                cols: s.grid.cols(),
                seats: s.seat_map().map(|(_, status)| status).collect(),
            }))
    }

    async fn queue_status(
        &self,
        schedule: ScheduleId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<QueueStatus>, StoreError> {
        Ok(self
            .views
            .read()
            .schedules
            .get(&schedule)
            .map(|s| s.status_of(&self.settings, user, now)))
    }

    async fn bookings_of(&self, user: UserId) -> Result<Vec<BookingView>, StoreError> {
        let views = self.views.read();
        Ok(views
            .by_user
            .get(&user)
            .map(|ids| {
                ids.iter()
                    .rev()
                    .filter_map(|id| views.bookings.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn booking(&self, booking: BookingId) -> Result<Option<BookingView>, StoreError> {
        Ok(self.views.read().bookings.get(&booking).cloned())
    }
}

/// Feeds a [`ScheduleViews`] from the schedule events topic.
pub struct ScheduleViewSink {
    codec: EventCodec,
    views: ScheduleViews,
}

impl ScheduleViewSink {
    pub fn new(codec: EventCodec, views: ScheduleViews) -> Self {
        Self { codec, views }
    }
}

#[async_trait]
impl RecordHandler for ScheduleViewSink {
    fn name(&self) -> &'static str {
        "schedule-view"
    }

    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        match self.codec.decode(&record.payload).await {
            Ok(event) => {
                self.views.apply(&event);
                Ok(())
            }
            Err(CodecError::Registry(why)) => Err(HandleError::Retryable(why)),
            Err(e) => Err(HandleError::Poison(e.to_string())),
        }
    }
}

/// Keeps a read model outside the process (Redis) up to date: folds the
/// changelog in memory (the facts alone don't say, for instance, the order the
/// opening drew) and writes what each record changed, tagged with its offset.
///
/// It keeps no committed offsets that matter: started, it reads the changelog
/// from its start to rebuild the fold, and the writer skips what it already
/// holds, so a restart neither rewrites the view backwards nor misses a fact.
pub struct ScheduleProjectionSink {
    codec: EventCodec,
    fold: ScheduleViews,
    writer: Arc<dyn ScheduleViewWriter>,
    /// The changes of a record whose write failed, kept for its retry.
    pending: parking_lot::Mutex<Option<PendingWrite>>,
    /// What the writer is known to hold, per schedule: a replay after a
    /// restart skips those records without asking the writer each time.
    applied: parking_lot::Mutex<HashMap<ScheduleId, i64>>,
}

type PendingWrite = (i64, i32, (ScheduleId, Vec<ScheduleViewChange>));

impl ScheduleProjectionSink {
    pub fn new(codec: EventCodec, settings: Settings, writer: Arc<dyn ScheduleViewWriter>) -> Self {
        Self {
            codec,
            fold: ScheduleViews::new(settings),
            writer,
            pending: parking_lot::Mutex::new(None),
            applied: parking_lot::Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl RecordHandler for ScheduleProjectionSink {
    fn name(&self) -> &'static str {
        "schedule-projection"
    }

    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let event = match self.codec.decode(&record.payload).await {
            Ok(event) => event,
            Err(CodecError::Registry(why)) => return Err(HandleError::Retryable(why)),
            Err(e) => return Err(HandleError::Poison(e.to_string())),
        };
        // The fold moves once per record; a failed write is retried with the
        // changes already derived, never by folding the record twice.
        let changes = {
            let mut pending = self.pending.lock();
            match pending.take() {
                Some((offset, partition, changes))
                    if offset == record.offset && partition == record.partition =>
                {
                    Some(changes)
                }
                _ => self.fold.apply_with_changes(&event),
            }
        };
        let Some((schedule, changes)) = changes else {
            return Ok(());
        };
        if changes.is_empty() {
            return Ok(());
        }
        let known = self.applied.lock().get(&schedule).copied();
        let known = match known {
            Some(offset) => Some(offset),
            None => match self.writer.applied_offset(schedule).await {
                Ok(Some(offset)) => {
                    self.applied.lock().insert(schedule, offset);
                    Some(offset)
                }
                Ok(None) => {
                    // Offsets start at 0: -1 is "nothing applied yet".
                    self.applied.lock().insert(schedule, -1);
                    None
                }
                Err(e) => {
                    *self.pending.lock() =
                        Some((record.offset, record.partition, (schedule, changes)));
                    return Err(HandleError::Retryable(e.to_string()));
                }
            },
        };
        if known.is_some_and(|o| o >= record.offset) {
            return Ok(());
        }
        match self.writer.apply(schedule, record.offset, &changes).await {
            Ok(_) => {
                self.applied.lock().insert(schedule, record.offset);
                Ok(())
            }
            Err(e) => {
                *self.pending.lock() = Some((record.offset, record.partition, (schedule, changes)));
                Err(HandleError::Retryable(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;
    use ticketing_domain::events::{EventMeta, ScheduleCreated, ScheduleFactRecorded};
    use ticketing_domain::ids::*;
    use ticketing_domain::schedule::{Command, Envelope, SeatRef};
    use uuid::Uuid;

    fn t(s: i64) -> DateTime<Utc> {
        "2030-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::seconds(s)
    }

    fn meta() -> EventMeta {
        EventMeta {
            event_id: EventId::from_uuid(Uuid::from_u128(1)),
            occurred_at: t(0),
            actor: None,
        }
    }

    fn created() -> ScheduleCreated {
        ScheduleCreated {
            meta: meta(),
            schedule_id: ScheduleId::from_uuid(Uuid::from_u128(7)),
            concert_id: ConcertId::from_uuid(Uuid::from_u128(8)),
            seller_id: UserId::from_uuid(Uuid::from_u128(9)),
            stage_id: StageId::from_uuid(Uuid::from_u128(9)),
            rows: 2,
            cols: 3,
            price: 120,
            concert_date: "2030-02-01".parse().unwrap(),
            concert_time: "19:00:00".parse().unwrap(),
            sale_opens_at: None,
        }
    }

    fn user(n: u8) -> UserId {
        UserId::from_uuid(Uuid::from_u128(u128::from(n) + 100))
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    proptest! {
        /// Fed the processor's facts, the view answers every read exactly as
        /// the processor's own state would, after every step.
        #[test]
        fn the_view_answers_like_the_state(ops in prop::collection::vec((0u8..7, 0u8..5, 0u16..3, 0u16..4, 0i64..25), 1..80)) {
            let settings = Settings { max_active: 2, admission_ttl_secs: 120, hold_ttl_secs: 60, payment_ttl_secs: 30, max_seats_per_user: 2 };
            let c = created();
            let mut state = ScheduleState::new(&c);
            let views = ScheduleViews::new(settings);
            views.apply(&Event::ScheduleInitialised(c.clone()));
            let mut live: HashMap<BookingId, (UserId, SeatRef)> = HashMap::new();
            let mut sold: HashMap<BookingId, (UserId, SeatRef, PaymentId)> = HashMap::new();
            let mut paying: Vec<PaymentId> = Vec::new();
            let mut at = 0;
            for (i, (who, kind, row, col, dt)) in ops.into_iter().enumerate() {
                at += dt;
                let u = user(who);
                let id = 1_000 + i as u128;
                let mut follow_up = None;
                let command = match kind {
                    0 => Command::Join { user: u },
                    1 => Command::Leave { user: u },
                    2 => Command::Hold { user: u, seats: vec![SeatRef { row: row + 1, col: col + 1 }], booking_ids: vec![BookingId::from_uuid(Uuid::from_u128(id))] },
                    3 => match live.iter().find(|(_, (owner, _))| *owner == u) {
                        Some((b, _)) => Command::Release { user: u, booking_id: *b },
                        None => Command::Tick,
                    },
                    4 => {
                        let mine: Vec<BookingId> = live.iter().filter(|(_, (o, _))| *o == u).map(|(b, _)| *b).collect();
                        let payment_id = PaymentId::from_uuid(Uuid::from_u128(id));
                        // Usually paid at once; sometimes left to abort or time out.
                        if row > 0 {
                            follow_up = Some(Command::CompletePayment { payment_id });
                        }
                        Command::StartPayment { user: u, payment_id, booking_ids: mine }
                    }
                    5 => match paying.pop() {
                        Some(p) if row == 0 => Command::AbortPayment { payment_id: p },
                        Some(p) => Command::CompletePayment { payment_id: p },
                        None => Command::Tick,
                    },
                    6 => match sold.iter().find(|(_, (o, _, _))| *o == u) {
                        Some((b, (_, _, p))) => Command::Refund { payment_id: *p, booking_ids: vec![*b] },
                        None => Command::Tick,
                    },
                    _ => Command::Tick,
                };
                let envs: Vec<Envelope> = std::iter::once(command)
                    .chain(follow_up.take())
                    .enumerate()
                    .map(|(k, command)| Envelope { command_id: CommandId::from_uuid(Uuid::from_u128(id * 10 + k as u128)), at: t(at), seed: 5, command })
                    .collect();
                for fact in envs.iter().flat_map(|env| state.handle(&settings, env).facts) {
                    match &fact.kind {
                        FactKind::SeatsHeld { user, seats, .. } => { for h in seats { live.insert(h.booking_id, (*user, h.seat)); } }
                        FactKind::BookingsCancelled { seats, .. } => { for h in seats { live.remove(&h.booking_id); } }
                        FactKind::PaymentStarted { payment_id, .. } => paying.push(*payment_id),
                        FactKind::SeatsSold { user, payment_id, seats } => { for h in seats { live.remove(&h.booking_id); sold.insert(h.booking_id, (*user, h.seat, *payment_id)); } }
                        FactKind::SeatsRefunded { seats, .. } => { for h in seats { sold.remove(&h.booking_id); } }
                        _ => {}
                    }
                    views.apply(&Event::ScheduleFactRecorded(ScheduleFactRecorded { meta: meta(), schedule_id: c.schedule_id, fact }));
                }
                let map = block_on(views.seat_map(c.schedule_id)).unwrap().unwrap();
                let expected: Vec<_> = state.seat_map().map(|(_, s)| s).collect();
                prop_assert_eq!(map.seats, expected);
                for n in 0..4 {
                    for later in [0, 30, 200] {
                        let now = t(at + later);
                        prop_assert_eq!(block_on(views.queue_status(c.schedule_id, user(n), now)).unwrap(), Some(state.status_of(&settings, user(n), now)));
                    }
                    let pending: Vec<_> = block_on(views.bookings_of(user(n))).unwrap().into_iter().filter(|b| b.status == BookingStatus::Pending).map(|b| (b.booking_id, b.seat, b.price, b.concert_id)).collect();
                    let mut want: Vec<_> = live.iter().filter(|(_, (o, _))| *o == user(n)).map(|(b, (_, s))| (*b, *s, 120, c.concert_id)).collect();
                    let mut got = pending.clone();
                    got.sort();
                    want.sort();
                    prop_assert_eq!(got, want);
                    let mut confirmed: Vec<_> = block_on(views.bookings_of(user(n))).unwrap().into_iter().filter(|b| b.status == BookingStatus::Confirmed).map(|b| (b.booking_id, b.seat, b.payment_id)).collect();
                    let mut want: Vec<_> = sold.iter().filter(|(_, (o, _, _))| *o == user(n)).map(|(b, (_, s, p))| (*b, *s, Some(p.as_uuid()))).collect();
                    confirmed.sort();
                    want.sort();
                    prop_assert_eq!(confirmed, want);
                }
            }
        }
    }

    /// A writer that records every call, holding one offset per schedule.
    #[derive(Default)]
    struct CountingWriter {
        applied: parking_lot::Mutex<HashMap<ScheduleId, i64>>,
        applies: std::sync::atomic::AtomicUsize,
        lookups: std::sync::atomic::AtomicUsize,
        fail_next: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl ScheduleViewWriter for CountingWriter {
        async fn apply(
            &self,
            schedule: ScheduleId,
            offset: i64,
            _changes: &[ScheduleViewChange],
        ) -> Result<bool, StoreError> {
            use std::sync::atomic::Ordering::SeqCst;
            if self.fail_next.swap(false, SeqCst) {
                return Err(StoreError::Unavailable("down".into()));
            }
            self.applies.fetch_add(1, SeqCst);
            let mut applied = self.applied.lock();
            if applied.get(&schedule).is_some_and(|o| *o >= offset) {
                return Ok(false);
            }
            applied.insert(schedule, offset);
            Ok(true)
        }
        async fn applied_offset(&self, schedule: ScheduleId) -> Result<Option<i64>, StoreError> {
            self.lookups
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self.applied.lock().get(&schedule).copied())
        }
    }

    /// A restarted projection replays the changelog through its fold but asks
    /// the writer once per schedule, not once per record; a failed write is
    /// retried with the changes derived the first time.
    #[test]
    fn a_replay_skips_what_the_writer_holds() {
        use std::sync::atomic::Ordering::SeqCst;
        block_on(async {
            let registry = Arc::new(ticketing_schemas::EmbeddedSchemaRegistry::in_memory());
            let codec = EventCodec::start(registry).await.unwrap();
            let settings = Settings::default();
            let c = created();
            let mut state = ScheduleState::new(&c);
            let mut events = vec![Event::ScheduleInitialised(c.clone())];
            for i in 0..5u8 {
                let env = Envelope {
                    command_id: CommandId::from_uuid(Uuid::from_u128(500 + u128::from(i))),
                    at: t(i64::from(i)),
                    seed: 1,
                    command: Command::Join { user: user(i) },
                };
                for fact in state.handle(&settings, &env).facts {
                    events.push(Event::ScheduleFactRecorded(ScheduleFactRecorded {
                        meta: meta(),
                        schedule_id: c.schedule_id,
                        fact,
                    }));
                }
            }
            let mut records = Vec::new();
            for (i, e) in events.iter().enumerate() {
                records.push(Record {
                    topic: "changelog".into(),
                    partition: 3,
                    offset: 100 + i as i64,
                    key: None,
                    payload: codec.encode(e).await.unwrap(),
                    timestamp: t(0),
                });
            }
            let writer = Arc::new(CountingWriter::default());
            let first = ScheduleProjectionSink::new(codec.clone(), settings, writer.clone());
            writer.fail_next.store(true, SeqCst);
            assert!(first.handle(&records[0]).await.is_err());
            for r in &records {
                first.handle(r).await.unwrap();
            }
            let written = writer.applies.load(SeqCst);
            assert_eq!(written, records.len(), "every record written once");
            assert_eq!(writer.lookups.load(SeqCst), 1);

            let restarted = ScheduleProjectionSink::new(codec, settings, writer.clone());
            for r in &records {
                restarted.handle(r).await.unwrap();
            }
            assert_eq!(writer.applies.load(SeqCst), written, "nothing rewritten");
            assert_eq!(writer.lookups.load(SeqCst), 2, "one look-up per schedule");
        });
    }

    #[test]
    fn an_unknown_schedule_is_none() {
        let views = ScheduleViews::new(Settings::default());
        let id = ScheduleId::from_uuid(Uuid::from_u128(1));
        assert_eq!(block_on(views.seat_map(id)).unwrap(), None);
        assert_eq!(
            block_on(views.queue_status(id, user(1), t(0))).unwrap(),
            None
        );
        assert!(block_on(views.bookings_of(user(1))).unwrap().is_empty());
    }
}
