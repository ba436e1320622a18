//! One schedule's waiting room and seat map, owned by exactly one processor.
//!
//! `handle` decides a command and returns the facts it produced; every change
//! of state goes through `apply(fact)`, which `handle` calls itself. So the facts
//! are a complete changelog: applying them to `ScheduleState::new` rebuilds the
//! state, which is how a processor recovers after a crash and how the read
//! models follow along.

use super::model::*;
use super::rng::shuffle;
use crate::catalog::{SeatGrid, SeatStatus};
use crate::events::ScheduleCreated;
use crate::ids::{BookingId, CommandId, ConcertId, PaymentId, ScheduleId, UserId};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

/// Command ids remembered to recognise a redelivered command.
const RECENT_COMMANDS: usize = 100_000;
/// Admission samples kept for the ETA's rate estimate.
const RATE_SAMPLES: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Seat {
    Available,
    Held {
        booking: BookingId,
        user: UserId,
    },
    Sold {
        booking: BookingId,
        user: UserId,
        payment: PaymentId,
    },
}

impl Seat {
    fn status(&self) -> SeatStatus {
        match self {
            Seat::Available => SeatStatus::Available,
            Seat::Held { .. } => SeatStatus::Held,
            Seat::Sold { .. } => SeatStatus::Sold,
        }
    }
}

/// A live hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Booking {
    user: UserId,
    seat: SeatRef,
    until: DateTime<Utc>,
    /// The payment charging for it: it cannot expire or be released meanwhile.
    #[serde(default)]
    paying: Option<PaymentId>,
}

/// A payment between its start and its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Payment {
    user: UserId,
    bookings: Vec<BookingId>,
    until: DateTime<Utc>,
}

/// A paid booking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SoldBooking {
    user: UserId,
    seat: SeatRef,
    payment: PaymentId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum EntryState {
    /// Joined before the opening; no position yet.
    PreQueue,
    Waiting,
    Admitted {
        until: DateTime<Utc>,
    },
    Expired,
    Left,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    position: Option<u64>,
    state: EntryState,
}

impl Entry {
    fn view(&self) -> QueueEntry {
        match (&self.state, self.position) {
            (EntryState::Waiting, Some(position)) => QueueEntry::Waiting { position },
            (EntryState::Admitted { until }, Some(position)) => QueueEntry::Admitted {
                position,
                until: *until,
            },
            (EntryState::Waiting | EntryState::Admitted { .. }, None) => {
                unreachable!("waiting and admitted entries have a position")
            }
            (EntryState::PreQueue, _) => QueueEntry::PreQueue,
            (EntryState::Expired, _) => QueueEntry::Expired,
            (EntryState::Left, _) => QueueEntry::Left,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Timer {
    Admission(UserId),
    Hold(BookingId),
    Payment(PaymentId),
}

/// A bounded memory of command ids (oldest forgotten first), and which of
/// them held seats or put a buyer in line, so that a retried command is
/// answered with what it did. Stored as the ordered ids and those two lists;
/// the set is rebuilt from them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RecentRepr", into = "RecentRepr")]
struct RecentCommands {
    order: VecDeque<CommandId>,
    set: HashSet<CommandId>,
    held: HashSet<CommandId>,
    joined: HashSet<CommandId>,
}

/// How recent commands are stored in a snapshot. The first layout (ids only)
/// still reads.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum RecentRepr {
    Full {
        order: VecDeque<CommandId>,
        held: Vec<CommandId>,
        #[serde(default)]
        joined: Vec<CommandId>,
    },
    IdsOnly(VecDeque<CommandId>),
}

impl From<RecentRepr> for RecentCommands {
    fn from(r: RecentRepr) -> Self {
        let (order, held, joined) = match r {
            RecentRepr::Full {
                order,
                held,
                joined,
            } => (
                order,
                held.into_iter().collect(),
                joined.into_iter().collect(),
            ),
            RecentRepr::IdsOnly(order) => (order, HashSet::new(), HashSet::new()),
        };
        let set = order.iter().copied().collect();
        Self {
            order,
            set,
            held,
            joined,
        }
    }
}

impl From<RecentCommands> for RecentRepr {
    fn from(r: RecentCommands) -> Self {
        let sorted = |ids: HashSet<CommandId>| {
            let mut ids: Vec<CommandId> = ids.into_iter().collect();
            ids.sort();
            ids
        };
        RecentRepr::Full {
            order: r.order,
            held: sorted(r.held),
            joined: sorted(r.joined),
        }
    }
}

impl RecentCommands {
    fn insert(&mut self, id: CommandId) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > RECENT_COMMANDS {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                    self.held.remove(&old);
                    self.joined.remove(&old);
                }
            }
        }
    }
    fn contains(&self, id: &CommandId) -> bool {
        self.set.contains(id)
    }
    fn mark_held(&mut self, id: CommandId) {
        if self.set.contains(&id) {
            self.held.insert(id);
        }
    }
    fn held(&self, id: &CommandId) -> bool {
        self.held.contains(id)
    }
    fn mark_joined(&mut self, id: CommandId) {
        if self.set.contains(&id) {
            self.joined.insert(id);
        }
    }
    fn joined(&self, id: &CommandId) -> bool {
        self.joined.contains(id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    pub schedule_id: ScheduleId,
    pub concert_id: ConcertId,
    pub price: i64,
    pub grid: SeatGrid,
    pub sale_opens_at: Option<DateTime<Utc>>,
    /// When the show starts, and the sale ends. `None` only in snapshots
    /// written before the state knew it; such a schedule never closes.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// The latest time seen; time never runs backwards inside the state.
    clock: DateTime<Utc>,
    open: bool,
    seats: Vec<Seat>,
    bookings: BTreeMap<BookingId, Booking>,
    seats_by_user: BTreeMap<UserId, u32>,
    entries: BTreeMap<UserId, Entry>,
    pre_queue: Vec<UserId>,
    /// Waiting buyers by position: admission takes the smallest first.
    waiting: BTreeMap<u64, UserId>,
    next_position: u64,
    active: u32,
    admitted_total: u64,
    rate_samples: VecDeque<(DateTime<Utc>, u64)>,
    timers: BTreeSet<(DateTime<Utc>, Timer)>,
    recent: RecentCommands,
    #[serde(default)]
    payments: BTreeMap<PaymentId, Payment>,
    #[serde(default)]
    sold: BTreeMap<BookingId, SoldBooking>,
    /// Bookings given back, and the payment that bought them: a refund's seat
    /// step asked again is answered from here, however long ago it was
    /// decided (the memory of command ids is bounded; refunds are money).
    #[serde(default)]
    refunded: BTreeMap<BookingId, PaymentId>,
}

impl ScheduleState {
    /// The state a schedule starts in, from its creation event alone.
    pub fn new(created: &ScheduleCreated) -> Self {
        let grid = SeatGrid::new(i64::from(created.rows), i64::from(created.cols))
            .expect("a created schedule has a valid grid");
        Self {
            schedule_id: created.schedule_id,
            concert_id: created.concert_id,
            price: created.price,
            grid,
            sale_opens_at: created.sale_opens_at,
            starts_at: Some(
                created
                    .concert_date
                    .and_time(created.concert_time)
                    .and_utc(),
            ),
            clock: created.meta.occurred_at,
            open: created.sale_opens_at.is_none(),
            seats: vec![Seat::Available; grid.seat_count() as usize],
            bookings: BTreeMap::new(),
            seats_by_user: BTreeMap::new(),
            entries: BTreeMap::new(),
            pre_queue: Vec::new(),
            waiting: BTreeMap::new(),
            next_position: 1,
            active: 0,
            admitted_total: 0,
            rate_samples: VecDeque::new(),
            timers: BTreeSet::new(),
            recent: RecentCommands::default(),
            payments: BTreeMap::new(),
            sold: BTreeMap::new(),
            refunded: BTreeMap::new(),
        }
    }

    fn index(&self, seat: SeatRef) -> usize {
        (usize::from(seat.row) - 1) * usize::from(self.grid.cols()) + (usize::from(seat.col) - 1)
    }

    // ----- decisions ---------------------------------------------------------

    /// Decides one command at `env.at` (never earlier than time already seen).
    pub fn handle(&mut self, settings: &Settings, env: &Envelope) -> Decision {
        let now = env.at.max(self.clock);
        let mut facts = Vec::new();
        let duplicate = self.recent.contains(&env.command_id);
        // Time first: what is due before this command happens before it.
        self.open_if_due(env, now, &mut facts);
        self.fire_timers(env.command_id, now, &mut facts);
        self.admit(settings, env.command_id, now, &mut facts);
        // A redelivered command that already changed the state is answered from
        // the state, never acted on again (a second Leave after a re-join would
        // otherwise throw the buyer out).
        let reply = match (&env.command, duplicate) {
            (Command::Tick, _) => Reply::None,
            // A join retried after the show started is told the sale is over,
            // as it would be if it came now for the first time.
            (Command::Join { .. }, true) if self.sale_closed(now) => {
                Reply::Rejected(Rejection::SaleClosed)
            }
            // A retried join says whether it was the one that put the buyer
            // in line (201) or found them there (200).
            (Command::Join { user }, true) if self.recent.joined(&env.command_id) => {
                Reply::Joined(self.status_of(settings, *user, now))
            }
            (Command::Join { user }, true) => Reply::Queue(self.status_of(settings, *user, now)),
            (Command::Join { user }, false) => {
                self.join(settings, env.command_id, *user, now, &mut facts)
            }
            (Command::Leave { .. }, true) => Reply::Left,
            (Command::Leave { user }, false) => {
                self.leave(settings, env.command_id, *user, now, &mut facts)
            }
            // A hold decided before (its answer lost in a crash or a timeout)
            // is answered from what it achieved; one that held nothing changed
            // nothing, so it is decided afresh.
            (
                Command::Hold {
                    user, booking_ids, ..
                },
                true,
            ) if self.recent.held(&env.command_id) => self.replay_hold(*user, booking_ids),
            (
                Command::Hold {
                    user,
                    seats,
                    booking_ids,
                },
                _,
            ) => self.hold(
                settings,
                env.command_id,
                *user,
                seats,
                booking_ids,
                now,
                &mut facts,
            ),
            (Command::Release { .. }, true) => Reply::Released,
            (Command::Release { user, booking_id }, false) => {
                self.release(env.command_id, *user, *booking_id, now, &mut facts)
            }
            (Command::StartPayment { payment_id, .. }, true) => self.replay_payment(*payment_id),
            (
                Command::StartPayment {
                    user,
                    payment_id,
                    booking_ids,
                },
                false,
            ) => self.start_payment(
                settings,
                env.command_id,
                *user,
                *payment_id,
                booking_ids,
                now,
                &mut facts,
            ),
            (Command::CompletePayment { payment_id }, true) => self.replay_payment(*payment_id),
            (Command::CompletePayment { payment_id }, false) => {
                self.complete_payment(settings, env.command_id, *payment_id, now, &mut facts)
            }
            (Command::AbortPayment { .. }, true) => Reply::PaymentAborted,
            (Command::AbortPayment { payment_id }, false) => {
                self.abort_payment(env.command_id, *payment_id, now, &mut facts)
            }
            (Command::Refund { booking_ids, .. }, true) => Reply::Refunded {
                booking_ids: booking_ids.clone(),
                amount: self.price * booking_ids.len() as i64,
            },
            (
                Command::Refund {
                    payment_id,
                    booking_ids,
                },
                false,
            ) => self.refund(env.command_id, *payment_id, booking_ids, now, &mut facts),
        };
        if facts.is_empty() && !duplicate && env.command != Command::Tick {
            self.emit(&mut facts, env.command_id, now, FactKind::Unchanged);
        }
        Decision { facts, reply }
    }

    fn emit(
        &mut self,
        facts: &mut Vec<Fact>,
        command_id: CommandId,
        at: DateTime<Utc>,
        kind: FactKind,
    ) {
        let fact = Fact {
            command_id,
            at,
            kind,
        };
        self.apply(&fact);
        facts.push(fact);
    }

    fn open_if_due(&mut self, env: &Envelope, now: DateTime<Utc>, facts: &mut Vec<Fact>) {
        if !self.open && self.sale_opens_at.is_some_and(|t| now >= t) {
            self.emit(
                facts,
                env.command_id,
                now,
                FactKind::QueueOpened { seed: env.seed },
            );
        }
    }

    fn fire_timers(&mut self, command_id: CommandId, now: DateTime<Utc>, facts: &mut Vec<Fact>) {
        let due: Vec<Timer> = self
            .timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, t)| t.clone())
            .collect();
        // Payments first: one that runs out gives its holds back to their own
        // clocks, so those already past their end expire with the others below.
        for timer in &due {
            if let Timer::Payment(payment_id) = timer {
                if self
                    .payments
                    .get(payment_id)
                    .is_some_and(|p| p.until <= now)
                {
                    self.emit_abort(facts, command_id, now, *payment_id, AbortReason::TimedOut);
                }
            }
        }
        let mut expired_holds: BTreeMap<UserId, Vec<HeldSeat>> = BTreeMap::new();
        for timer in due {
            match timer {
                Timer::Admission(user) => {
                    let due = matches!(self.entries.get(&user), Some(Entry { state: EntryState::Admitted { until }, .. }) if *until <= now);
                    if due {
                        self.emit(facts, command_id, now, FactKind::AdmissionExpired { user });
                    }
                }
                Timer::Hold(booking_id) => {
                    // A hold being paid for waits for its payment's outcome.
                    if let Some(b) = self
                        .bookings
                        .get(&booking_id)
                        .filter(|b| b.until <= now && b.paying.is_none())
                    {
                        expired_holds.entry(b.user).or_default().push(HeldSeat {
                            booking_id,
                            seat: b.seat,
                        });
                    }
                }
                Timer::Payment(_) => {}
            }
        }
        for (user, seats) in expired_holds {
            self.emit(
                facts,
                command_id,
                now,
                FactKind::BookingsCancelled {
                    user,
                    seats,
                    reason: CancelReason::Expired,
                },
            );
        }
    }

    /// Fills free admission slots strictly in position order.
    /// Whether the show has started at `now`. The sale ends with it: nobody
    /// is admitted, joins, holds or starts paying from then on, while what is
    /// under way (payments started before, holds running out, refunds) ends
    /// as usual.
    pub fn sale_closed(&self, now: DateTime<Utc>) -> bool {
        self.starts_at.is_some_and(|t| now >= t)
    }

    fn admit(
        &mut self,
        settings: &Settings,
        command_id: CommandId,
        now: DateTime<Utc>,
        facts: &mut Vec<Fact>,
    ) {
        if !self.open || self.sale_closed(now) {
            return;
        }
        while self.active < settings.max_active {
            let Some((&position, &user)) = self.waiting.iter().next() else {
                break;
            };
            let until = now + Duration::seconds(settings.admission_ttl_secs);
            self.emit(
                facts,
                command_id,
                now,
                FactKind::Admitted {
                    user,
                    position,
                    until,
                },
            );
        }
    }

    fn join(
        &mut self,
        settings: &Settings,
        command_id: CommandId,
        user: UserId,
        now: DateTime<Utc>,
        facts: &mut Vec<Fact>,
    ) -> Reply {
        if self.sale_closed(now) {
            return Reply::Rejected(Rejection::SaleClosed);
        }
        let rejoin = match self.entries.get(&user).map(|e| &e.state) {
            None | Some(EntryState::Expired) | Some(EntryState::Left) => true,
            Some(_) => false,
        };
        if rejoin {
            let position = self.open.then_some(self.next_position);
            self.emit(
                facts,
                command_id,
                now,
                FactKind::QueueJoined { user, position },
            );
            self.admit(settings, command_id, now, facts);
            return Reply::Joined(self.status_of(settings, user, now));
        }
        Reply::Queue(self.status_of(settings, user, now))
    }

    fn leave(
        &mut self,
        settings: &Settings,
        command_id: CommandId,
        user: UserId,
        now: DateTime<Utc>,
        facts: &mut Vec<Fact>,
    ) -> Reply {
        let present = matches!(
            self.entries.get(&user).map(|e| &e.state),
            Some(EntryState::PreQueue | EntryState::Waiting | EntryState::Admitted { .. })
        );
        if present {
            self.emit(facts, command_id, now, FactKind::QueueLeft { user });
            self.admit(settings, command_id, now, facts);
        }
        Reply::Left
    }

    fn is_admitted(&self, user: UserId, now: DateTime<Utc>) -> bool {
        matches!(self.entries.get(&user), Some(Entry { state: EntryState::Admitted { until }, .. }) if *until > now)
    }

    #[allow(clippy::too_many_arguments)]
    fn hold(
        &mut self,
        settings: &Settings,
        command_id: CommandId,
        user: UserId,
        seats: &[SeatRef],
        booking_ids: &[BookingId],
        now: DateTime<Utc>,
        facts: &mut Vec<Fact>,
    ) -> Reply {
        let reject = |r| Reply::Rejected(r);
        if seats.is_empty() || seats.len() != booking_ids.len() {
            return reject(Rejection::EmptyHold);
        }
        let mut seen = BTreeSet::new();
        for &seat in seats {
            if !self.grid.contains(seat.row, seat.col) {
                return reject(Rejection::InvalidSeat { seat });
            }
            if !seen.insert(seat) {
                return reject(Rejection::DuplicateSeat { seat });
            }
        }
        if booking_ids.iter().collect::<BTreeSet<_>>().len() != booking_ids.len() {
            return reject(Rejection::EmptyHold);
        }
        // Booking ids come from the command id: bookings that exist already
        // were made by this very command, retried after the memory of command
        // ids let it go. It is answered from what it made, never made twice.
        let known = |b: &BookingId| {
            self.bookings.contains_key(b)
                || self.sold.contains_key(b)
                || self.refunded.contains_key(b)
        };
        if booking_ids.iter().all(known) {
            return self.replay_hold(user, booking_ids);
        }
        if booking_ids.iter().any(known) {
            return reject(Rejection::EmptyHold);
        }
        if self.sale_closed(now) {
            return reject(Rejection::SaleClosed);
        }
        if !self.is_admitted(user, now) {
            return reject(Rejection::NotAdmitted);
        }
        let already = self.seats_by_user.get(&user).copied().unwrap_or(0);
        if already as usize + seats.len() > settings.max_seats_per_user as usize {
            return reject(Rejection::SeatLimit {
                limit: settings.max_seats_per_user,
                already,
            });
        }
        let taken: Vec<SeatRef> = seats
            .iter()
            .copied()
            .filter(|s| self.seats[self.index(*s)] != Seat::Available)
            .collect();
        if !taken.is_empty() {
            return reject(Rejection::SeatUnavailable { seats: taken });
        }
        let until = now + Duration::seconds(settings.hold_ttl_secs);
        let held: Vec<HeldSeat> = seats
            .iter()
            .zip(booking_ids)
            .map(|(&seat, &booking_id)| HeldSeat { booking_id, seat })
            .collect();
        self.emit(
            facts,
            command_id,
            now,
            FactKind::SeatsHeld {
                user,
                seats: held,
                until,
            },
        );
        Reply::Held {
            booking_ids: booking_ids.to_vec(),
            until,
        }
    }

    /// A redelivered hold: answer what the first delivery achieved, if it still
    /// stands, without acting again.
    fn replay_hold(&self, user: UserId, booking_ids: &[BookingId]) -> Reply {
        let live: Vec<&Booking> = booking_ids
            .iter()
            .filter_map(|b| self.bookings.get(b))
            .collect();
        match live.first() {
            Some(first)
                if live.len() == booking_ids.len() && live.iter().all(|b| b.user == user) =>
            {
                Reply::Held {
                    booking_ids: booking_ids.to_vec(),
                    until: first.until,
                }
            }
            _ => Reply::Rejected(Rejection::BookingNotFound),
        }
    }

    fn release(
        &mut self,
        command_id: CommandId,
        user: UserId,
        booking_id: BookingId,
        now: DateTime<Utc>,
        facts: &mut Vec<Fact>,
    ) -> Reply {
        let Some(booking) = self.bookings.get(&booking_id) else {
            return Reply::Rejected(Rejection::BookingNotFound);
        };
        if booking.user != user {
            return Reply::Rejected(Rejection::NotOwner);
        }
        if booking.paying.is_some() {
            return Reply::Rejected(Rejection::BookingNotPending);
        }
        let seat = HeldSeat {
            booking_id,
            seat: booking.seat,
        };
        self.emit(
            facts,
            command_id,
            now,
            FactKind::BookingsCancelled {
                user,
                seats: vec![seat],
                reason: CancelReason::Released,
            },
        );
        Reply::Released
    }

    /// What a repeated payment command achieved, answered from the state.
    fn replay_payment(&self, payment_id: PaymentId) -> Reply {
        if let Some(p) = self.payments.get(&payment_id) {
            let seats = self.held_seats(&p.bookings);
            return Reply::PaymentStarted {
                total_price: self.price * seats.len() as i64,
                seats,
                until: p.until,
            };
        }
        let sold = self.sold_by(payment_id);
        if sold.is_empty() {
            Reply::Rejected(Rejection::PaymentNotInProgress)
        } else {
            Reply::Sold { booking_ids: sold }
        }
    }

    fn held_seats(&self, bookings: &[BookingId]) -> Vec<HeldSeat> {
        bookings
            .iter()
            .filter_map(|id| {
                self.bookings.get(id).map(|b| HeldSeat {
                    booking_id: *id,
                    seat: b.seat,
                })
            })
            .collect()
    }

    fn sold_by(&self, payment_id: PaymentId) -> Vec<BookingId> {
        self.sold
            .iter()
            .filter(|(_, s)| s.payment == payment_id)
            .map(|(id, _)| *id)
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn start_payment(
        &mut self,
        settings: &Settings,
        command_id: CommandId,
        user: UserId,
        payment_id: PaymentId,
        booking_ids: &[BookingId],
        now: DateTime<Utc>,
        facts: &mut Vec<Fact>,
    ) -> Reply {
        if let Some(p) = self.payments.get(&payment_id) {
            // The same payment asked again (a retry with a new command id).
            return if p.user == user && p.bookings == booking_ids {
                self.replay_payment(payment_id)
            } else {
                Reply::Rejected(Rejection::BookingNotPending)
            };
        }
        if self.sale_closed(now) {
            return Reply::Rejected(Rejection::SaleClosed);
        }
        if booking_ids.is_empty()
            || booking_ids.iter().collect::<BTreeSet<_>>().len() != booking_ids.len()
        {
            return Reply::Rejected(Rejection::EmptyHold);
        }
        if !self.sold_by(payment_id).is_empty() {
            return Reply::Rejected(Rejection::BookingNotPending);
        }
        for id in booking_ids {
            match (self.bookings.get(id), self.sold.get(id)) {
                (Some(b), _) if b.user != user => return Reply::Rejected(Rejection::NotOwner),
                (Some(b), _) if b.paying.is_some() => {
                    return Reply::Rejected(Rejection::BookingNotPending)
                }
                (Some(_), _) => {}
                (None, Some(s)) if s.user != user => return Reply::Rejected(Rejection::NotOwner),
                (None, Some(_)) => return Reply::Rejected(Rejection::BookingNotPending),
                (None, None) => return Reply::Rejected(Rejection::BookingNotFound),
            }
        }
        let seats = self.held_seats(booking_ids);
        let until = now + Duration::seconds(settings.payment_ttl_secs);
        self.emit(
            facts,
            command_id,
            now,
            FactKind::PaymentStarted {
                user,
                payment_id,
                seats: seats.clone(),
                until,
            },
        );
        Reply::PaymentStarted {
            total_price: self.price * seats.len() as i64,
            seats,
            until,
        }
    }

    fn complete_payment(
        &mut self,
        settings: &Settings,
        command_id: CommandId,
        payment_id: PaymentId,
        now: DateTime<Utc>,
        facts: &mut Vec<Fact>,
    ) -> Reply {
        let Some(p) = self.payments.get(&payment_id) else {
            return self.replay_payment(payment_id);
        };
        let user = p.user;
        let seats = self.held_seats(&p.bookings.clone());
        let booking_ids = seats.iter().map(|s| s.booking_id).collect();
        self.emit(
            facts,
            command_id,
            now,
            FactKind::SeatsSold {
                user,
                payment_id,
                seats,
            },
        );
        // Paid: the buyer's admission slot goes to the next in line.
        if self.is_admitted(user, now) {
            self.emit(facts, command_id, now, FactKind::QueueLeft { user });
            self.admit(settings, command_id, now, facts);
        }
        Reply::Sold { booking_ids }
    }

    /// Ends a payment in progress without a charge.
    fn emit_abort(
        &mut self,
        facts: &mut Vec<Fact>,
        command_id: CommandId,
        now: DateTime<Utc>,
        payment_id: PaymentId,
        reason: AbortReason,
    ) {
        if let Some(user) = self.payments.get(&payment_id).map(|p| p.user) {
            self.emit(
                facts,
                command_id,
                now,
                FactKind::PaymentAborted {
                    user,
                    payment_id,
                    reason,
                },
            );
        }
    }

    fn abort_payment(
        &mut self,
        command_id: CommandId,
        payment_id: PaymentId,
        now: DateTime<Utc>,
        facts: &mut Vec<Fact>,
    ) -> Reply {
        match self.payments.get(&payment_id) {
            Some(_) => {
                self.emit_abort(facts, command_id, now, payment_id, AbortReason::NotCharged);
                // Holds the payment kept past their end expire now.
                self.fire_timers(command_id, now, facts);
                Reply::PaymentAborted
            }
            // Sold by it: the charge happened; it cannot be undone by an abort.
            None if !self.sold_by(payment_id).is_empty() => {
                Reply::Rejected(Rejection::PaymentNotInProgress)
            }
            // Never started, or ended already without a charge.
            None => Reply::PaymentAborted,
        }
    }

    fn refund(
        &mut self,
        command_id: CommandId,
        payment_id: PaymentId,
        booking_ids: &[BookingId],
        now: DateTime<Utc>,
        facts: &mut Vec<Fact>,
    ) -> Reply {
        if booking_ids.is_empty()
            || booking_ids.iter().collect::<BTreeSet<_>>().len() != booking_ids.len()
        {
            return Reply::Rejected(Rejection::NotRefundable);
        }
        if booking_ids
            .iter()
            .all(|b| self.refunded.get(b) == Some(&payment_id))
        {
            // Done before: the same answer, nothing changes.
            return Reply::Refunded {
                booking_ids: booking_ids.to_vec(),
                amount: self.price * booking_ids.len() as i64,
            };
        }
        let mut seats = Vec::with_capacity(booking_ids.len());
        let mut user = None;
        for id in booking_ids {
            match self.sold.get(id) {
                Some(s) if s.payment == payment_id => {
                    user = Some(s.user);
                    seats.push(HeldSeat {
                        booking_id: *id,
                        seat: s.seat,
                    });
                }
                _ => return Reply::Rejected(Rejection::NotRefundable),
            }
        }
        let user = user.expect("at least one booking");
        self.emit(
            facts,
            command_id,
            now,
            FactKind::SeatsRefunded {
                user,
                payment_id,
                seats,
            },
        );
        Reply::Refunded {
            booking_ids: booking_ids.to_vec(),
            amount: self.price * booking_ids.len() as i64,
        }
    }

    // ----- the changelog -----------------------------------------------------

    /// Applies one fact. The only place state changes.
    pub fn apply(&mut self, fact: &Fact) {
        self.clock = self.clock.max(fact.at);
        self.recent.insert(fact.command_id);
        match &fact.kind {
            FactKind::QueueJoined { user, position } => {
                self.recent.mark_joined(fact.command_id);
                let state = match position {
                    Some(p) => {
                        self.waiting.insert(*p, *user);
                        self.next_position = self.next_position.max(p + 1);
                        EntryState::Waiting
                    }
                    None => {
                        self.pre_queue.push(*user);
                        EntryState::PreQueue
                    }
                };
                self.entries.insert(
                    *user,
                    Entry {
                        position: *position,
                        state,
                    },
                );
            }
            FactKind::QueueOpened { seed } => {
                self.open = true;
                let mut order = std::mem::take(&mut self.pre_queue);
                shuffle(&mut order, *seed);
                for user in order {
                    let position = self.next_position;
                    self.next_position += 1;
                    self.waiting.insert(position, user);
                    self.entries.insert(
                        user,
                        Entry {
                            position: Some(position),
                            state: EntryState::Waiting,
                        },
                    );
                }
            }
            FactKind::Admitted {
                user,
                position,
                until,
            } => {
                self.waiting.remove(position);
                self.entries.insert(
                    *user,
                    Entry {
                        position: Some(*position),
                        state: EntryState::Admitted { until: *until },
                    },
                );
                self.active += 1;
                self.admitted_total += 1;
                self.rate_samples.push_back((fact.at, self.admitted_total));
                if self.rate_samples.len() > RATE_SAMPLES {
                    self.rate_samples.pop_front();
                }
                self.timers.insert((*until, Timer::Admission(*user)));
            }
            FactKind::AdmissionExpired { user } => {
                self.end_entry(*user, EntryState::Expired);
            }
            FactKind::QueueLeft { user } => {
                self.end_entry(*user, EntryState::Left);
            }
            FactKind::SeatsHeld { user, seats, until } => {
                self.recent.mark_held(fact.command_id);
                for s in seats {
                    let i = self.index(s.seat);
                    self.seats[i] = Seat::Held {
                        booking: s.booking_id,
                        user: *user,
                    };
                    self.bookings.insert(
                        s.booking_id,
                        Booking {
                            user: *user,
                            seat: s.seat,
                            until: *until,
                            paying: None,
                        },
                    );
                    self.timers.insert((*until, Timer::Hold(s.booking_id)));
                }
                *self.seats_by_user.entry(*user).or_default() += seats.len() as u32;
            }
            FactKind::Unchanged => {}
            FactKind::PaymentStarted {
                user,
                payment_id,
                seats,
                until,
            } => {
                for s in seats {
                    if let Some(b) = self.bookings.get_mut(&s.booking_id) {
                        b.paying = Some(*payment_id);
                    }
                }
                self.payments.insert(
                    *payment_id,
                    Payment {
                        user: *user,
                        bookings: seats.iter().map(|s| s.booking_id).collect(),
                        until: *until,
                    },
                );
                self.timers.insert((*until, Timer::Payment(*payment_id)));
            }
            FactKind::SeatsSold {
                user,
                payment_id,
                seats,
            } => {
                for s in seats {
                    if let Some(b) = self.bookings.remove(&s.booking_id) {
                        self.timers.remove(&(b.until, Timer::Hold(s.booking_id)));
                    }
                    let i = self.index(s.seat);
                    self.seats[i] = Seat::Sold {
                        booking: s.booking_id,
                        user: *user,
                        payment: *payment_id,
                    };
                    self.sold.insert(
                        s.booking_id,
                        SoldBooking {
                            user: *user,
                            seat: s.seat,
                            payment: *payment_id,
                        },
                    );
                }
                self.end_payment(*payment_id);
            }
            FactKind::PaymentAborted { payment_id, .. } => {
                self.end_payment(*payment_id);
            }
            FactKind::SeatsRefunded {
                user,
                payment_id,
                seats,
            } => {
                for s in seats {
                    self.sold.remove(&s.booking_id);
                    self.refunded.insert(s.booking_id, *payment_id);
                    let i = self.index(s.seat);
                    self.seats[i] = Seat::Available;
                }
                self.uncount(*user, seats.len());
            }
            FactKind::BookingsCancelled { user, seats, .. } => {
                for s in seats {
                    if let Some(b) = self.bookings.remove(&s.booking_id) {
                        self.timers.remove(&(b.until, Timer::Hold(s.booking_id)));
                    }
                    let i = self.index(s.seat);
                    self.seats[i] = Seat::Available;
                }
                self.uncount(*user, seats.len());
            }
        }
    }

    fn uncount(&mut self, user: UserId, seats: usize) {
        if let Some(n) = self.seats_by_user.get_mut(&user) {
            *n = n.saturating_sub(seats as u32);
            if *n == 0 {
                self.seats_by_user.remove(&user);
            }
        }
    }

    /// A payment ended (sold or aborted): its bookings still held are no
    /// longer being paid for, and its window timer goes.
    fn end_payment(&mut self, payment_id: PaymentId) {
        if let Some(p) = self.payments.remove(&payment_id) {
            self.timers.remove(&(p.until, Timer::Payment(payment_id)));
            for id in &p.bookings {
                if let Some(b) = self.bookings.get_mut(id) {
                    b.paying = None;
                }
            }
        }
    }

    fn end_entry(&mut self, user: UserId, end: EntryState) {
        let Some(entry) = self.entries.get_mut(&user) else {
            return;
        };
        match std::mem::replace(&mut entry.state, end) {
            EntryState::Admitted { until } => {
                self.active -= 1;
                self.timers.remove(&(until, Timer::Admission(user)));
            }
            EntryState::Waiting => {
                if let Some(p) = entry.position {
                    self.waiting.remove(&p);
                }
            }
            EntryState::PreQueue => self.pre_queue.retain(|u| *u != user),
            EntryState::Expired | EntryState::Left => {}
        }
    }

    // ----- queries -----------------------------------------------------------

    /// What a buyer is told about their place.
    pub fn status_of(&self, settings: &Settings, user: UserId, now: DateTime<Utc>) -> QueueStatus {
        let Some(entry) = self.entry(user) else {
            return QueueStatus::NotInQueue;
        };
        let ahead = match entry {
            QueueEntry::Waiting { position } => self.waiting.range(..position).count() as u64,
            _ => 0,
        };
        entry.status(
            settings,
            ahead,
            &self.rate_window(),
            self.is_sold_out(),
            now,
        )
    }

    /// A buyer's entry as stored, `None` if they never joined.
    pub fn entry(&self, user: UserId) -> Option<QueueEntry> {
        self.entries.get(&user).map(Entry::view)
    }

    /// Every buyer's entry, by user id.
    pub fn entries(&self) -> impl Iterator<Item = (UserId, QueueEntry)> + '_ {
        self.entries.iter().map(|(u, e)| (*u, e.view()))
    }

    /// The measured admission rate.
    pub fn rate_window(&self) -> RateWindow {
        RateWindow {
            first: self.rate_samples.front().copied(),
            last: self.rate_samples.back().copied(),
        }
    }

    pub fn seat_status(&self, seat: SeatRef) -> Option<SeatStatus> {
        self.grid
            .contains(seat.row, seat.col)
            .then(|| self.seats[self.index(seat)].status())
    }

    /// Every seat, row-major, with its status.
    pub fn seat_map(&self) -> impl Iterator<Item = (SeatRef, SeatStatus)> + '_ {
        let cols = self.grid.cols();
        self.seats.iter().enumerate().map(move |(i, s)| {
            let seat = SeatRef {
                row: (i / usize::from(cols)) as u16 + 1,
                col: (i % usize::from(cols)) as u16 + 1,
            };
            (seat, s.status())
        })
    }

    /// Every seat SOLD.
    pub fn is_sold_out(&self) -> bool {
        self.sold.len() == self.seats.len()
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn active(&self) -> u32 {
        self.active
    }

    /// The live booking on a seat and its owner, if the seat is held.
    pub fn booking_at(&self, seat: SeatRef) -> Option<(BookingId, UserId)> {
        if !self.grid.contains(seat.row, seat.col) {
            return None;
        }
        match &self.seats[self.index(seat)] {
            Seat::Held { booking, user } => Some((*booking, *user)),
            Seat::Available | Seat::Sold { .. } => None,
        }
    }

    /// The paid booking on a seat, its owner and its payment, if the seat is
    /// sold.
    pub fn sale_at(&self, seat: SeatRef) -> Option<(BookingId, UserId, PaymentId)> {
        if !self.grid.contains(seat.row, seat.col) {
            return None;
        }
        match &self.seats[self.index(seat)] {
            Seat::Sold {
                booking,
                user,
                payment,
            } => Some((*booking, *user, *payment)),
            _ => None,
        }
    }

    /// The owner of a live booking, with its seat and expiry.
    pub fn booking(&self, id: BookingId) -> Option<(UserId, SeatRef, DateTime<Utc>)> {
        self.bookings.get(&id).map(|b| (b.user, b.seat, b.until))
    }

    /// Checks every internal invariant; panics with a description if one is
    /// broken. Cheap enough to call after every step in simulations.
    pub fn check_invariants(&self, settings: &Settings) {
        let admitted = self
            .entries
            .values()
            .filter(|e| matches!(e.state, EntryState::Admitted { .. }))
            .count() as u32;
        assert_eq!(
            admitted, self.active,
            "active counter matches admitted entries"
        );
        assert!(
            self.active <= settings.max_active,
            "never more than max_active admitted"
        );
        let mut per_user: BTreeMap<UserId, u32> = BTreeMap::new();
        let mut held = 0;
        let mut sold = 0;
        for (i, seat) in self.seats.iter().enumerate() {
            match seat {
                Seat::Held { booking, user } => {
                    let b = self
                        .bookings
                        .get(booking)
                        .expect("a held seat has its booking");
                    assert_eq!(b.user, *user, "seat and booking agree on the owner");
                    assert_eq!(self.index(b.seat), i, "booking points at its seat");
                    if let Some(p) = b.paying {
                        let payment = self
                            .payments
                            .get(&p)
                            .expect("a paying hold has its payment");
                        assert!(
                            payment.bookings.contains(booking),
                            "the payment lists its hold"
                        );
                    }
                    held += 1;
                    *per_user.entry(*user).or_default() += 1;
                }
                Seat::Sold {
                    booking,
                    user,
                    payment,
                } => {
                    let s = self.sold.get(booking).expect("a sold seat has its booking");
                    assert_eq!(
                        (s.user, s.payment),
                        (*user, *payment),
                        "sold seat and booking agree"
                    );
                    assert_eq!(self.index(s.seat), i, "sold booking points at its seat");
                    assert!(
                        !self.bookings.contains_key(booking),
                        "sold is not also held"
                    );
                    sold += 1;
                    *per_user.entry(*user).or_default() += 1;
                }
                Seat::Available => {}
            }
        }
        assert_eq!(held, self.bookings.len(), "one booking per held seat");
        for id in self.refunded.keys() {
            assert!(
                !self.sold.contains_key(id) && !self.bookings.contains_key(id),
                "a refunded booking is never held or sold again"
            );
        }
        assert_eq!(sold, self.sold.len(), "one sold booking per sold seat");
        for (id, p) in &self.payments {
            for b in &p.bookings {
                if let Some(booking) = self.bookings.get(b) {
                    assert_eq!(booking.paying, Some(*id), "a payment's holds name it");
                }
            }
            assert!(
                self.timers.contains(&(p.until, Timer::Payment(*id))),
                "every payment has its timer"
            );
        }
        assert_eq!(per_user, self.seats_by_user, "per-buyer seat counts");
        for n in per_user.values() {
            assert!(
                *n <= settings.max_seats_per_user,
                "never more than the per-buyer limit"
            );
        }
        for (p, u) in &self.waiting {
            let e = &self.entries[u];
            assert_eq!(
                (e.position, &e.state),
                (Some(*p), &EntryState::Waiting),
                "waiting index agrees"
            );
        }
        if self.open {
            assert!(
                self.pre_queue.is_empty(),
                "nobody left unplaced after opening"
            );
            if self.active < settings.max_active && !self.sale_closed(self.clock) {
                assert!(
                    self.waiting.is_empty(),
                    "a free slot never leaves someone waiting"
                );
            }
        }
        for (id, b) in &self.bookings {
            assert!(
                self.timers.contains(&(b.until, Timer::Hold(*id))),
                "every hold has its timer"
            );
        }
        assert_eq!(
            self.timers.len(),
            self.bookings.len() + self.active as usize + self.payments.len(),
            "no stale timers"
        );
    }
}
