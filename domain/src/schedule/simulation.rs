//! Deterministic simulation of one schedule: seeded random workloads of joins,
//! leaves, holds, releases, clock jumps, redeliveries and crashes (state thrown
//! away and rebuilt from the facts), checked after every step against the
//! state's own invariants and against an independent auditor that sees only
//! the facts.

use super::*;
use crate::events::{EventMeta, ScheduleCreated};
use crate::ids::*;
use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use std::collections::BTreeMap;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

fn user(n: u8) -> UserId {
    UserId::from_uuid(Uuid::from_u128(1000 + u128::from(n)))
}

pub(super) fn created(rows: u16, cols: u16, opens_in: Option<i64>) -> ScheduleCreated {
    ScheduleCreated {
        meta: EventMeta {
            event_id: EventId::from_uuid(Uuid::from_u128(1)),
            occurred_at: t0(),
            actor: None,
        },
        schedule_id: ScheduleId::from_uuid(Uuid::from_u128(2)),
        concert_id: ConcertId::from_uuid(Uuid::from_u128(3)),
        seller_id: UserId::from_uuid(Uuid::from_u128(4)),
        stage_id: StageId::from_uuid(Uuid::from_u128(5)),
        rows,
        cols,
        price: 1000,
        concert_date: "2030-02-01".parse().unwrap(),
        concert_time: "19:00:00".parse().unwrap(),
        sale_opens_at: opens_in.map(|s| t0() + Duration::seconds(s)),
    }
}

/// `created` with the show (and so the end of the sale) at `at`.
pub(super) fn starting_at(mut created: ScheduleCreated, at: DateTime<Utc>) -> ScheduleCreated {
    created.concert_date = at.date_naive();
    created.concert_time = at.time();
    created
}

/// Checks the facts alone, knowing nothing of the state's internals.
struct Auditor {
    settings: Settings,
    owner: BTreeMap<SeatRef, (BookingId, UserId, DateTime<Utc>)>,
    /// Payments in progress: their buyer, seats and window.
    paying: BTreeMap<PaymentId, (UserId, Vec<SeatRef>, DateTime<Utc>)>,
    sold: BTreeMap<SeatRef, (BookingId, UserId, PaymentId)>,
    refunded: BTreeMap<BookingId, PaymentId>,
    per_user: BTreeMap<UserId, u32>,
    admitted: BTreeMap<UserId, DateTime<Utc>>,
    last_position: u64,
    opened: bool,
    /// When the show starts: nothing may join, be admitted, hold or start
    /// paying from then on.
    closes: DateTime<Utc>,
}

impl Auditor {
    fn new(settings: Settings, closes: DateTime<Utc>) -> Self {
        Self {
            closes,
            settings,
            owner: BTreeMap::new(),
            paying: BTreeMap::new(),
            sold: BTreeMap::new(),
            refunded: BTreeMap::new(),
            per_user: BTreeMap::new(),
            admitted: BTreeMap::new(),
            last_position: 0,
            opened: false,
        }
    }

    fn observe(&mut self, f: &Fact) {
        if matches!(
            f.kind,
            FactKind::QueueJoined { .. }
                | FactKind::Admitted { .. }
                | FactKind::SeatsHeld { .. }
                | FactKind::PaymentStarted { .. }
        ) {
            assert!(f.at < self.closes, "sold on after the show started: {f:?}");
        }
        match &f.kind {
            FactKind::QueueOpened { .. } => self.opened = true,
            FactKind::QueueJoined { .. } | FactKind::Unchanged => {}
            FactKind::Admitted {
                user,
                position,
                until,
            } => {
                assert!(
                    *position > self.last_position,
                    "admission strictly in position order"
                );
                self.last_position = *position;
                assert!(
                    self.admitted.insert(*user, *until).is_none(),
                    "admitted twice"
                );
                assert!(
                    self.admitted.len() as u32 <= self.settings.max_active,
                    "over max_active"
                );
            }
            FactKind::AdmissionExpired { user } => {
                let until = self
                    .admitted
                    .remove(user)
                    .expect("only admitted buyers expire");
                assert!(until <= f.at, "admission expired early");
            }
            FactKind::QueueLeft { user } => {
                self.admitted.remove(user);
            }
            FactKind::SeatsHeld { user, seats, until } => {
                let until_admitted = self.admitted.get(user).expect("only admitted buyers hold");
                assert!(*until_admitted > f.at, "held after the admission ran out");
                for s in seats {
                    assert!(
                        !self.owner.contains_key(&s.seat) && !self.sold.contains_key(&s.seat),
                        "seat {:?} owned twice",
                        s.seat
                    );
                    self.owner.insert(s.seat, (s.booking_id, *user, *until));
                }
                let n = self.per_user.entry(*user).or_default();
                *n += seats.len() as u32;
                assert!(
                    *n <= self.settings.max_seats_per_user,
                    "per-buyer limit broken"
                );
            }
            FactKind::BookingsCancelled {
                user,
                seats,
                reason,
            } => {
                for s in seats {
                    assert!(
                        self.paying
                            .values()
                            .all(|(_, seats, _)| !seats.contains(&s.seat)),
                        "a hold being paid for was cancelled"
                    );
                    let (booking, owner, until) =
                        self.owner.remove(&s.seat).expect("cancelled a free seat");
                    assert_eq!((booking, owner), (s.booking_id, *user));
                    if *reason == CancelReason::Expired {
                        assert!(until <= f.at, "hold expired early");
                    }
                }
                *self.per_user.get_mut(user).unwrap() -= seats.len() as u32;
            }
            FactKind::PaymentStarted {
                user,
                payment_id,
                seats,
                until,
            } => {
                for s in seats {
                    let (booking, owner, _) = self.owner[&s.seat];
                    assert_eq!(
                        (booking, owner),
                        (s.booking_id, *user),
                        "paid for someone else's hold"
                    );
                    assert!(
                        self.paying
                            .values()
                            .all(|(_, paid, _)| !paid.contains(&s.seat)),
                        "one hold in two payments"
                    );
                }
                let seats = seats.iter().map(|s| s.seat).collect();
                assert!(
                    self.paying
                        .insert(*payment_id, (*user, seats, *until))
                        .is_none(),
                    "a payment started twice"
                );
            }
            FactKind::SeatsSold {
                user,
                payment_id,
                seats,
            } => {
                let (payer, paid, _) = self
                    .paying
                    .remove(payment_id)
                    .expect("sold without a payment in progress");
                assert_eq!(payer, *user);
                let mut sold_now: Vec<SeatRef> = seats.iter().map(|s| s.seat).collect();
                sold_now.sort();
                let mut paid = paid;
                paid.sort();
                assert_eq!(sold_now, paid, "exactly the paid-for seats are sold");
                for s in seats {
                    let (booking, _, _) = self.owner.remove(&s.seat).expect("sold a free seat");
                    assert_eq!(booking, s.booking_id);
                    assert!(
                        self.sold
                            .insert(s.seat, (s.booking_id, *user, *payment_id))
                            .is_none(),
                        "seat {:?} sold twice",
                        s.seat
                    );
                }
            }
            FactKind::PaymentAborted {
                payment_id, reason, ..
            } => {
                let (_, _, until) = self
                    .paying
                    .remove(payment_id)
                    .expect("aborted a payment not in progress");
                if *reason == AbortReason::TimedOut {
                    assert!(until <= f.at, "payment timed out early");
                }
            }
            FactKind::SeatsRefunded {
                user,
                payment_id,
                seats,
            } => {
                for s in seats {
                    let (booking, owner, payment) =
                        self.sold.remove(&s.seat).expect("refunded an unsold seat");
                    assert_eq!(
                        (booking, owner, payment),
                        (s.booking_id, *user, *payment_id)
                    );
                    self.refunded.insert(booking, payment);
                }
                *self.per_user.get_mut(user).unwrap() -= seats.len() as u32;
            }
        }
    }

    /// Nothing may outlive its deadline once time has passed it.
    fn check_deadlines(&self, now: DateTime<Utc>) {
        for (seat, (_, _, until)) in &self.owner {
            let paying = self
                .paying
                .values()
                .any(|(_, seats, _)| seats.contains(seat));
            assert!(
                paying || *until > now,
                "hold on {seat:?} outlived its deadline"
            );
        }
        for (p, (_, _, until)) in &self.paying {
            assert!(*until > now, "payment {p:?} outlived its window");
        }
        for (u, until) in &self.admitted {
            assert!(*until > now, "admission of {u:?} outlived its deadline");
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Join(u8),
    Leave(u8),
    Hold(u8, Vec<(u16, u16)>),
    Release(u8, usize),
    Pay(u8),
    Complete(usize),
    Abort(usize),
    Refund(usize, usize),
    Advance(i64),
    Tick,
    Redeliver(usize),
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12).prop_map(Op::Join),
        1 => (0u8..12).prop_map(Op::Leave),
        5 => (0u8..12, prop::collection::vec((0u16..5, 0u16..6), 0..4)).prop_map(|(u, s)| Op::Hold(u, s)),
        2 => (0u8..12, 0usize..64).prop_map(|(u, i)| Op::Release(u, i)),
        3 => (0u8..12).prop_map(Op::Pay),
        2 => (0usize..64).prop_map(Op::Complete),
        1 => (0usize..64).prop_map(Op::Abort),
        1 => (0usize..64, 1usize..4).prop_map(|(i, n)| Op::Refund(i, n)),
        3 => (1i64..40).prop_map(Op::Advance),
        1 => Just(Op::Tick),
        2 => (0usize..512).prop_map(Op::Redeliver),
        1 => Just(Op::Crash),
    ]
}

fn replay(created: &ScheduleCreated, facts: &[Fact]) -> ScheduleState {
    let mut s = ScheduleState::new(created);
    for f in facts {
        s.apply(f);
    }
    s
}

/// What a run produced, and how many commands it refused because the show had
/// started.
struct Outcome {
    facts: Vec<Fact>,
    refused_as_closed: usize,
    /// Refunds asked again under a new command id, answered from the state.
    repeated_refunds: usize,
}

fn run(ops: Vec<Op>, opens_in: Option<i64>, starts_in: Option<i64>, seed: u64) -> Outcome {
    let settings = Settings {
        max_active: 3,
        admission_ttl_secs: 60,
        hold_ttl_secs: 30,
        payment_ttl_secs: 20,
        max_seats_per_user: 3,
    };
    let mut created = created(4, 5, opens_in);
    if let Some(s) = starts_in {
        created = starting_at(created, t0() + Duration::seconds(s));
    }
    let closes = ScheduleState::new(&created)
        .starts_at
        .expect("a new state knows when its show starts");
    let mut refused_as_closed = 0;
    let mut repeated_refunds = 0;
    let mut state = ScheduleState::new(&created);
    let mut auditor = Auditor::new(settings, closes);
    let mut facts: Vec<Fact> = Vec::new();
    let mut sent: Vec<Envelope> = Vec::new();
    let mut held: Vec<BookingId> = Vec::new();
    let mut holds_of: BTreeMap<UserId, Vec<BookingId>> = BTreeMap::new();
    let mut payments: Vec<PaymentId> = Vec::new();
    let mut bought: Vec<(PaymentId, Vec<BookingId>)> = Vec::new();
    let mut now = t0();
    let mut ids = 0u128;
    let next_id = |ids: &mut u128| {
        *ids += 1;
        Uuid::from_u128((u128::from(seed) << 64) | *ids)
    };
    // The tail drains the room: each hour-long jump expires every admission and
    // hold, and admits the next buyers; 12 buyers in slots of 3 need 4 rounds.
    let drain = (0..6).flat_map(|_| [Op::Advance(3600), Op::Tick]);
    for op in ops.into_iter().chain(drain) {
        let command = match op {
            Op::Advance(s) => {
                now += Duration::seconds(s);
                continue;
            }
            Op::Crash => {
                let rebuilt = replay(&created, &facts);
                assert_eq!(rebuilt, state, "the facts rebuild the state exactly");
                // So does a snapshot; the run goes on from the snapshot.
                let snapshot: ScheduleState =
                    serde_json::from_slice(&serde_json::to_vec(&state).unwrap()).unwrap();
                assert_eq!(snapshot, rebuilt, "a snapshot restores the state exactly");
                state = snapshot;
                continue;
            }
            Op::Redeliver(i) => {
                if sent.is_empty() {
                    continue;
                }
                let env = sent[i % sent.len()].clone();
                let before = state.clone();
                // A hold that held nothing changed nothing: it is decided afresh.
                let may_hold = matches!(env.command, Command::Hold { .. })
                    && !facts.iter().any(|f| {
                        f.command_id == env.command_id
                            && matches!(f.kind, FactKind::SeatsHeld { .. })
                    });
                let d = state.handle(&settings, &env);
                if matches!(env.command, Command::Join { .. }) {
                    let joined = facts.iter().any(|f| {
                        f.command_id == env.command_id
                            && matches!(f.kind, FactKind::QueueJoined { .. })
                    });
                    match d.reply {
                        Reply::Joined(_) => assert!(joined, "claimed a join it did not make"),
                        Reply::Queue(_) => assert!(!joined, "denied the join it made"),
                        Reply::Rejected(Rejection::SaleClosed) => assert!(now >= closes),
                        ref other => panic!("a join answered {other:?}"),
                    }
                }
                // A redelivery may only let time act (expiries, admissions,
                // opening), never repeat the command.
                for f in &d.facts {
                    assert!(
                        matches!(
                            f.kind,
                            FactKind::AdmissionExpired { .. }
                                | FactKind::Admitted { .. }
                                | FactKind::QueueOpened { .. }
                                | FactKind::PaymentAborted {
                                    reason: AbortReason::TimedOut,
                                    ..
                                }
                        ) || matches!(
                            f.kind,
                            FactKind::BookingsCancelled {
                                reason: CancelReason::Expired,
                                ..
                            }
                        ) || (may_hold && matches!(f.kind, FactKind::SeatsHeld { .. })),
                        "redelivery acted again: {f:?} (before: {:?})",
                        before.active()
                    );
                }
                for f in d.facts {
                    auditor.observe(&f);
                    facts.push(f);
                }
                state.check_invariants(&settings);
                continue;
            }
            Op::Join(u) => Command::Join { user: user(u) },
            Op::Leave(u) => Command::Leave { user: user(u) },
            Op::Tick => Command::Tick,
            Op::Hold(u, seats) => {
                let seats: Vec<SeatRef> = seats
                    .into_iter()
                    .map(|(row, col)| SeatRef { row, col })
                    .collect();
                let booking_ids = seats
                    .iter()
                    .map(|_| BookingId::from_uuid(next_id(&mut ids)))
                    .collect();
                Command::Hold {
                    user: user(u),
                    seats,
                    booking_ids,
                }
            }
            Op::Release(u, i) => {
                if held.is_empty() {
                    continue;
                }
                Command::Release {
                    user: user(u),
                    booking_id: held[i % held.len()],
                }
            }
            Op::Pay(u) => Command::StartPayment {
                user: user(u),
                payment_id: PaymentId::from_uuid(next_id(&mut ids)),
                booking_ids: holds_of.get(&user(u)).cloned().unwrap_or_default(),
            },
            Op::Complete(i) | Op::Abort(i) if payments.is_empty() => {
                let _ = i;
                continue;
            }
            Op::Complete(i) => Command::CompletePayment {
                payment_id: payments[i % payments.len()],
            },
            Op::Abort(i) => Command::AbortPayment {
                payment_id: payments[i % payments.len()],
            },
            Op::Refund(i, n) => {
                if bought.is_empty() {
                    continue;
                }
                let (payment_id, bookings) = &bought[i % bought.len()];
                Command::Refund {
                    payment_id: *payment_id,
                    booking_ids: bookings.iter().take(n).copied().collect(),
                }
            }
        };
        let env = Envelope {
            command_id: CommandId::from_uuid(next_id(&mut ids)),
            at: now,
            seed: seed ^ ids as u64,
            command,
        };
        let d = state.handle(&settings, &env);
        if env.at >= closes {
            // Every command here is new, every payment id too.
            match (&env.command, &d.reply) {
                (Command::Join { .. }, r) => {
                    assert_eq!(r, &Reply::Rejected(Rejection::SaleClosed));
                }
                (Command::Hold { .. }, Reply::Held { .. })
                | (Command::StartPayment { .. }, Reply::PaymentStarted { .. }) => {
                    panic!("sold on after the show started: {:?}", env.command)
                }
                _ => {}
            }
            if d.reply == Reply::Rejected(Rejection::SaleClosed) {
                refused_as_closed += 1;
            }
        }
        if matches!(env.command, Command::Join { .. }) && env.at < closes {
            let joined = d
                .facts
                .iter()
                .any(|f| matches!(f.kind, FactKind::QueueJoined { .. }));
            assert_eq!(
                matches!(d.reply, Reply::Joined(_)),
                joined,
                "a join tells whether it joined: {:?}",
                d.reply
            );
        }
        match (&env.command, &d.reply) {
            (Command::Hold { user, .. }, Reply::Held { booking_ids, .. }) => {
                held.extend(booking_ids);
                holds_of.entry(*user).or_default().extend(booking_ids);
            }
            (Command::StartPayment { payment_id, .. }, Reply::PaymentStarted { .. }) => {
                payments.push(*payment_id);
            }
            (Command::CompletePayment { payment_id }, Reply::Sold { booking_ids }) => {
                bought.push((*payment_id, booking_ids.clone()));
            }
            (
                Command::Refund {
                    payment_id,
                    booking_ids,
                },
                Reply::Refunded { .. },
            ) if !d
                .facts
                .iter()
                .any(|f| matches!(f.kind, FactKind::SeatsRefunded { .. })) =>
            {
                assert!(
                    booking_ids
                        .iter()
                        .all(|b| auditor.refunded.get(b) == Some(payment_id)),
                    "answered refunded without refunding"
                );
                repeated_refunds += 1;
            }
            (Command::Refund { .. }, Reply::Refunded { .. }) => {}
            (Command::Refund { .. }, Reply::Rejected(r)) => {
                assert_eq!(r, &Rejection::NotRefundable);
            }
            _ => {}
        }
        // Once every seat is sold, nobody still in line is told otherwise.
        if auditor.sold.len() == 20 {
            for u in 0..12 {
                let status = state.status_of(&settings, user(u), now);
                assert!(
                    matches!(
                        status,
                        QueueStatus::SoldOut
                            | QueueStatus::Left
                            | QueueStatus::Expired
                            | QueueStatus::NotInQueue
                    ),
                    "sold out, yet {status:?}"
                );
            }
        }
        for f in d.facts {
            auditor.observe(&f);
            facts.push(f);
        }
        state.check_invariants(&settings);
        auditor.check_deadlines(now);
        sent.push(env);
    }
    // Drained: every hold and admission has run out, nobody is left behind.
    assert!(auditor.owner.is_empty(), "every hold expires or is sold");
    assert!(auditor.paying.is_empty(), "every payment ends");
    assert!(auditor.admitted.is_empty(), "every admission expires");
    assert_eq!(replay(&created, &facts), state);
    Outcome {
        facts,
        refused_as_closed,
        repeated_refunds,
    }
}

/// Guards the generator: random workloads must reach every kind of fact, or
/// the property above would pass while testing little.
#[test]
fn the_workload_reaches_every_kind_of_fact() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let mut kinds = std::collections::BTreeSet::new();
    let mut refused_as_closed = 0;
    let mut repeated_refunds = 0;
    for case in 0..40u64 {
        let ops = prop::collection::vec(op(), 150..200)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let opens_in = (case % 2 == 0).then_some(30);
        let starts_in = (case % 4 == 1).then_some(300);
        let outcome = run(ops, opens_in, starts_in, case);
        refused_as_closed += outcome.refused_as_closed;
        repeated_refunds += outcome.repeated_refunds;
        for f in outcome.facts {
            kinds.insert(match f.kind {
                FactKind::QueueJoined { position: None, .. } => "pre-queue join",
                FactKind::QueueJoined { .. } => "join",
                FactKind::QueueOpened { .. } => "opened",
                FactKind::Admitted { .. } => "admitted",
                FactKind::AdmissionExpired { .. } => "admission expired",
                FactKind::QueueLeft { .. } => "left",
                FactKind::SeatsHeld { .. } => "held",
                FactKind::BookingsCancelled {
                    reason: CancelReason::Released,
                    ..
                } => "released",
                FactKind::BookingsCancelled {
                    reason: CancelReason::Expired,
                    ..
                } => "hold expired",
                FactKind::Unchanged => "unchanged",
                FactKind::PaymentStarted { .. } => "payment started",
                FactKind::SeatsSold { .. } => "sold",
                FactKind::PaymentAborted {
                    reason: AbortReason::NotCharged,
                    ..
                } => "payment aborted",
                FactKind::PaymentAborted {
                    reason: AbortReason::TimedOut,
                    ..
                } => "payment timed out",
                FactKind::SeatsRefunded { .. } => "refunded",
            });
        }
    }
    assert_eq!(kinds.len(), 15, "reached only {kinds:?}");
    assert!(
        refused_as_closed > 0,
        "no command came after a show's start"
    );
    assert!(repeated_refunds > 0, "no refund was asked twice");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_workloads_keep_every_invariant(
        ops in prop::collection::vec(op(), 1..200),
        opens_in in prop::option::of(0i64..120),
        starts_in in prop::option::of(150i64..900),
        seed in any::<u64>(),
    ) {
        run(ops, opens_in, starts_in, seed);
    }
}
