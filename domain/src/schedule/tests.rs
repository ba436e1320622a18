//! Example-based tests of the waiting room and seat rules; the simulation
//! covers random interleavings.

use super::simulation::{created, starting_at};
use super::*;
use crate::ids::*;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

fn t(secs: i64) -> DateTime<Utc> {
    "2030-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::seconds(secs)
}

fn user(n: u128) -> UserId {
    UserId::from_uuid(Uuid::from_u128(500 + n))
}

struct Harness {
    state: ScheduleState,
    settings: Settings,
    ids: u128,
}

impl Harness {
    fn new(opens_in: Option<i64>, max_active: u32) -> Self {
        Self {
            state: ScheduleState::new(&created(3, 3, opens_in)),
            settings: Settings {
                max_active,
                admission_ttl_secs: 600,
                hold_ttl_secs: 300,
                payment_ttl_secs: 120,
                max_seats_per_user: 4,
            },
            ids: 0,
        }
    }

    fn send(&mut self, at: i64, seed: u64, command: Command) -> Decision {
        self.ids += 1;
        let env = Envelope {
            command_id: CommandId::from_uuid(Uuid::from_u128(self.ids)),
            at: t(at),
            seed,
            command,
        };
        let d = self.state.handle(&self.settings, &env);
        self.state.check_invariants(&self.settings);
        d
    }

    fn join(&mut self, at: i64, u: u128) -> QueueStatus {
        match self.send(at, 0, Command::Join { user: user(u) }).reply {
            Reply::Joined(s) | Reply::Queue(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn hold(&mut self, at: i64, u: u128, seats: &[(u16, u16)]) -> Reply {
        let seats: Vec<SeatRef> = seats
            .iter()
            .map(|&(row, col)| SeatRef { row, col })
            .collect();
        let booking_ids = seats
            .iter()
            .enumerate()
            .map(|(i, _)| {
                BookingId::from_uuid(Uuid::from_u128(1_000_000 + self.ids * 10 + i as u128))
            })
            .collect();
        self.send(
            at,
            0,
            Command::Hold {
                user: user(u),
                seats,
                booking_ids,
            },
        )
        .reply
    }

    fn status(&self, at: i64, u: u128) -> QueueStatus {
        self.state.status_of(&self.settings, user(u), t(at))
    }
}

fn position(s: &QueueStatus) -> Option<u64> {
    match s {
        QueueStatus::Waiting { position, .. } => *position,
        QueueStatus::Admitted { position, .. } => Some(*position),
        _ => None,
    }
}

#[test]
fn positions_follow_arrival_and_joining_twice_keeps_the_first() {
    let mut h = Harness::new(None, 1);
    assert!(matches!(
        h.join(1, 1),
        QueueStatus::Admitted { position: 1, .. }
    ));
    assert_eq!(position(&h.join(2, 2)), Some(2));
    assert_eq!(position(&h.join(3, 3)), Some(3));
    assert_eq!(position(&h.join(4, 2)), Some(2), "idempotent join");
    match h.status(5, 3) {
        QueueStatus::Waiting {
            ahead, eta_seconds, ..
        } => {
            assert_eq!(ahead, Some(1));
            assert!(eta_seconds.unwrap() > 0);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn early_joiners_are_shuffled_at_the_opening_and_late_ones_follow() {
    let mut orders = std::collections::BTreeSet::new();
    for seed in 0..20u64 {
        let mut h = Harness::new(Some(100), 1);
        for u in 1..=6 {
            assert_eq!(
                h.join(u as i64, u),
                QueueStatus::Waiting {
                    position: None,
                    ahead: None,
                    eta_seconds: None
                }
            );
        }
        // The first command at or after the opening opens the room, with its seed.
        let d = h.send(100, seed, Command::Tick);
        assert!(matches!(d.facts[0].kind, FactKind::QueueOpened { seed: s } if s == seed));
        let mut order: Vec<(u64, u128)> = (1..=6)
            .map(|u| (position(&h.status(100, u)).unwrap(), u))
            .collect();
        order.sort();
        assert_eq!(
            order.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5, 6]
        );
        assert_eq!(
            position(&h.join(101, 7)),
            Some(7),
            "after the opening: first come, first served"
        );
        orders.insert(order.into_iter().map(|(_, u)| u).collect::<Vec<_>>());
    }
    assert!(
        orders.len() > 10,
        "the opening order depends on the seed: {orders:?}"
    );
}

#[test]
fn slots_free_on_leave_and_expiry_and_go_to_the_next_in_line() {
    let mut h = Harness::new(None, 2);
    for u in 1..=4 {
        h.join(u as i64, u);
    }
    assert!(matches!(h.status(5, 2), QueueStatus::Admitted { .. }));
    assert!(matches!(
        h.status(5, 3),
        QueueStatus::Waiting {
            position: Some(3),
            ahead: Some(0),
            ..
        }
    ));
    let d = h.send(10, 0, Command::Leave { user: user(1) });
    assert_eq!(d.reply, Reply::Left);
    assert!(d.facts.iter().any(|f| f.kind
        == FactKind::Admitted {
            user: user(3),
            position: 3,
            until: t(610)
        }));
    assert_eq!(h.status(11, 1), QueueStatus::Left);
    // User 2's window (from t=2) runs out at t=602; the next command admits 4.
    let d = h.send(602, 0, Command::Tick);
    assert!(d
        .facts
        .iter()
        .any(|f| f.kind == FactKind::AdmissionExpired { user: user(2) }));
    assert!(matches!(
        h.status(602, 4),
        QueueStatus::Admitted { position: 4, .. }
    ));
    assert_eq!(h.status(602, 2), QueueStatus::Expired);
    // An expired buyer may join again, at the back.
    assert_eq!(position(&h.join(603, 2)), Some(5));
}

#[test]
fn holds_follow_every_rule() {
    let mut h = Harness::new(None, 1);
    assert_eq!(
        h.hold(1, 1, &[(1, 1)]),
        Reply::Rejected(Rejection::NotAdmitted)
    );
    h.join(1, 1);
    h.join(1, 2);
    assert_eq!(
        h.hold(2, 2, &[(1, 1)]),
        Reply::Rejected(Rejection::NotAdmitted),
        "still waiting"
    );
    assert_eq!(h.hold(2, 1, &[]), Reply::Rejected(Rejection::EmptyHold));
    assert_eq!(
        h.hold(2, 1, &[(4, 1)]),
        Reply::Rejected(Rejection::InvalidSeat {
            seat: SeatRef { row: 4, col: 1 }
        })
    );
    assert_eq!(
        h.hold(2, 1, &[(0, 1)]),
        Reply::Rejected(Rejection::InvalidSeat {
            seat: SeatRef { row: 0, col: 1 }
        })
    );
    assert_eq!(
        h.hold(2, 1, &[(1, 1), (1, 1)]),
        Reply::Rejected(Rejection::DuplicateSeat {
            seat: SeatRef { row: 1, col: 1 }
        })
    );
    assert_eq!(
        h.hold(2, 1, &[(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]),
        Reply::Rejected(Rejection::SeatLimit {
            limit: 4,
            already: 0
        })
    );
    let Reply::Held { booking_ids, until } = h.hold(3, 1, &[(1, 1), (1, 2), (1, 3)]) else {
        panic!()
    };
    assert_eq!(until, t(303));
    assert_eq!(
        h.state.seat_status(SeatRef { row: 1, col: 2 }),
        Some(crate::catalog::SeatStatus::Held)
    );
    assert_eq!(
        h.hold(4, 1, &[(2, 1), (2, 2)]),
        Reply::Rejected(Rejection::SeatLimit {
            limit: 4,
            already: 3
        }),
        "held seats count toward the limit"
    );
    // Buyer 1 leaves; buyer 2 is admitted and finds two of its seats taken.
    h.send(5, 0, Command::Leave { user: user(1) });
    assert_eq!(
        h.hold(6, 2, &[(1, 3), (2, 2), (1, 1)]),
        Reply::Rejected(Rejection::SeatUnavailable {
            seats: vec![SeatRef { row: 1, col: 3 }, SeatRef { row: 1, col: 1 }]
        })
    );
    // Only the owner releases; then the seat is free again.
    let b = booking_ids[0];
    assert_eq!(
        h.send(
            7,
            0,
            Command::Release {
                user: user(2),
                booking_id: b
            }
        )
        .reply,
        Reply::Rejected(Rejection::NotOwner)
    );
    assert_eq!(
        h.send(
            8,
            0,
            Command::Release {
                user: user(1),
                booking_id: b
            }
        )
        .reply,
        Reply::Released
    );
    assert!(matches!(h.hold(9, 2, &[(1, 1)]), Reply::Held { .. }));
    // The rest of buyer 1's hold expires on time, and only then.
    let d = h.send(302, 0, Command::Tick);
    assert!(d
        .facts
        .iter()
        .all(|f| !matches!(f.kind, FactKind::BookingsCancelled { .. })));
    let d = h.send(303, 0, Command::Tick);
    let expired: Vec<_> = d
        .facts
        .iter()
        .filter_map(|f| match &f.kind {
            FactKind::BookingsCancelled {
                user: u,
                seats,
                reason: CancelReason::Expired,
            } if *u == user(1) => Some(seats.len()),
            _ => None,
        })
        .collect();
    assert_eq!(expired, vec![2]);
    assert_eq!(
        h.state.seat_status(SeatRef { row: 1, col: 3 }),
        Some(crate::catalog::SeatStatus::Available)
    );
}

#[test]
fn a_redelivered_hold_answers_the_same_and_holds_nothing_more() {
    let mut h = Harness::new(None, 1);
    h.join(1, 1);
    let env = Envelope {
        command_id: CommandId::from_uuid(Uuid::from_u128(77)),
        at: t(2),
        seed: 0,
        command: Command::Hold {
            user: user(1),
            seats: vec![SeatRef { row: 2, col: 2 }],
            booking_ids: vec![BookingId::from_uuid(Uuid::from_u128(88))],
        },
    };
    let first = h.state.handle(&h.settings, &env);
    let again = h.state.handle(&h.settings, &Envelope { at: t(3), ..env });
    assert_eq!(first.reply, again.reply);
    assert!(again.facts.is_empty());
}

fn held_ids(r: &Reply) -> Vec<BookingId> {
    match r {
        Reply::Held { booking_ids, .. } => booking_ids.clone(),
        other => panic!("{other:?}"),
    }
}

fn payment(n: u128) -> PaymentId {
    PaymentId::from_uuid(Uuid::from_u128(9_000 + n))
}

/// A 3x3 stage where buyer 1 holds two seats and buyer 2 waits (one slot).
fn two_seats_held() -> (Harness, Vec<BookingId>) {
    let mut h = Harness::new(None, 1);
    h.join(0, 1);
    h.join(0, 2);
    let ids = held_ids(&h.hold(1, 1, &[(1, 1), (1, 2)]));
    (h, ids)
}

fn pay(h: &mut Harness, at: i64, u: u128, p: u128, ids: &[BookingId]) -> Reply {
    h.send(
        at,
        0,
        Command::StartPayment {
            user: user(u),
            payment_id: payment(p),
            booking_ids: ids.to_vec(),
        },
    )
    .reply
}

fn complete(h: &mut Harness, at: i64, p: u128) -> Decision {
    h.send(
        at,
        0,
        Command::CompletePayment {
            payment_id: payment(p),
        },
    )
}

#[test]
fn a_paid_hold_is_sold_frees_the_slot_and_never_expires() {
    let (mut h, ids) = two_seats_held();
    // Only the owner pays, only for live holds, each hold in one payment.
    assert_eq!(
        pay(&mut h, 2, 2, 1, &ids),
        Reply::Rejected(Rejection::NotOwner)
    );
    assert_eq!(
        pay(&mut h, 2, 1, 1, &[BookingId::from_uuid(Uuid::from_u128(5))]),
        Reply::Rejected(Rejection::BookingNotFound)
    );
    match pay(&mut h, 2, 1, 1, &ids) {
        Reply::PaymentStarted {
            seats, total_price, ..
        } => assert_eq!((seats.len(), total_price), (2, 2000)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        pay(&mut h, 3, 1, 2, &ids[..1]),
        Reply::Rejected(Rejection::BookingNotPending)
    );
    // Mid-payment the hold can neither be released nor expire (hold TTL 300 s).
    let release = h
        .send(
            4,
            0,
            Command::Release {
                user: user(1),
                booking_id: ids[0],
            },
        )
        .reply;
    assert_eq!(release, Reply::Rejected(Rejection::BookingNotPending));
    let d = complete(&mut h, 100, 1);
    assert_eq!(
        d.reply,
        Reply::Sold {
            booking_ids: ids.clone()
        }
    );
    assert!(d
        .facts
        .iter()
        .any(|f| matches!(f.kind, FactKind::QueueLeft { .. })));
    assert!(
        matches!(h.status(100, 2), QueueStatus::Admitted { .. }),
        "the slot went to the next buyer"
    );
    assert_eq!(
        h.state.seat_status(SeatRef { row: 1, col: 1 }),
        Some(crate::catalog::SeatStatus::Sold)
    );
    // Long after the hold would have expired, the seats are still sold.
    h.send(10_000, 0, Command::Tick);
    assert_eq!(
        h.state.seat_status(SeatRef { row: 1, col: 2 }),
        Some(crate::catalog::SeatStatus::Sold)
    );
    // A retried completion is answered the same, and an abort cannot undo it.
    let again = complete(&mut h, 10_001, 1).reply;
    assert_eq!(
        again,
        Reply::Sold {
            booking_ids: ids.clone()
        }
    );
    let abort = h
        .send(
            10_002,
            0,
            Command::AbortPayment {
                payment_id: payment(1),
            },
        )
        .reply;
    assert_eq!(abort, Reply::Rejected(Rejection::PaymentNotInProgress));
}

#[test]
fn an_aborted_or_timed_out_payment_gives_the_hold_back_to_its_clock() {
    let (mut h, ids) = two_seats_held();
    assert!(matches!(
        pay(&mut h, 2, 1, 1, &ids),
        Reply::PaymentStarted { .. }
    ));
    let abort = h
        .send(
            3,
            0,
            Command::AbortPayment {
                payment_id: payment(1),
            },
        )
        .reply;
    assert_eq!(abort, Reply::PaymentAborted);
    // Held again: another card may be tried, late in the hold (ends at 301 s).
    assert!(matches!(
        pay(&mut h, 250, 1, 2, &ids),
        Reply::PaymentStarted { .. }
    ));
    // Past the hold's end the payment keeps it (its window ends at 370 s)...
    let d = h.send(320, 0, Command::Tick);
    assert!(d.facts.is_empty(), "still paying at 320 s: {:?}", d.facts);
    // ...and once the window runs out with no outcome, the hold expires too.
    let d = h.send(400, 0, Command::Tick);
    let kinds: Vec<_> = d.facts.iter().map(|f| &f.kind).collect();
    assert!(
        matches!(
            kinds[..],
            [
                FactKind::PaymentAborted {
                    reason: AbortReason::TimedOut,
                    ..
                },
                FactKind::BookingsCancelled {
                    reason: CancelReason::Expired,
                    ..
                },
                ..
            ]
        ),
        "{kinds:?}"
    );
    // A charge that completes now is too late: the caller must refund it.
    let late = complete(&mut h, 401, 2).reply;
    assert_eq!(late, Reply::Rejected(Rejection::PaymentNotInProgress));
    assert_eq!(
        h.state.seat_status(SeatRef { row: 1, col: 1 }),
        Some(crate::catalog::SeatStatus::Available)
    );
}

#[test]
fn a_sale_sells_out_and_a_refund_puts_seats_back() {
    // One seat; buyer 1 buys it, buyer 2 waits: SOLD_OUT for buyer 2.
    let mut h = Harness {
        state: ScheduleState::new(&created(1, 1, None)),
        settings: Settings {
            max_active: 1,
            admission_ttl_secs: 600,
            hold_ttl_secs: 300,
            payment_ttl_secs: 120,
            max_seats_per_user: 4,
        },
        ids: 0,
    };
    h.join(0, 1);
    h.join(0, 2);
    h.join(0, 3);
    let ids = held_ids(&h.hold(1, 1, &[(1, 1)]));
    assert!(matches!(
        pay(&mut h, 2, 1, 1, &ids),
        Reply::PaymentStarted { .. }
    ));
    complete(&mut h, 3, 1);
    assert!(h.state.is_sold_out());
    assert_eq!(
        h.status(3, 2),
        QueueStatus::SoldOut,
        "admitted but nothing left"
    );
    assert_eq!(
        h.status(3, 3),
        QueueStatus::SoldOut,
        "waiting, nothing left"
    );
    assert_eq!(h.status(3, 9), QueueStatus::NotInQueue);
    // Refunds: only what this payment bought, once.
    let wrong = h
        .send(
            4,
            0,
            Command::Refund {
                payment_id: payment(7),
                booking_ids: ids.clone(),
            },
        )
        .reply;
    assert_eq!(wrong, Reply::Rejected(Rejection::NotRefundable));
    let refunded = h
        .send(
            5,
            0,
            Command::Refund {
                payment_id: payment(1),
                booking_ids: ids.clone(),
            },
        )
        .reply;
    assert_eq!(
        refunded,
        Reply::Refunded {
            booking_ids: ids.clone(),
            amount: 1000
        }
    );
    assert_eq!(
        h.state.seat_status(SeatRef { row: 1, col: 1 }),
        Some(crate::catalog::SeatStatus::Available)
    );
    assert!(!h.state.is_sold_out());
    assert!(matches!(h.status(5, 2), QueueStatus::Admitted { .. }));
    // Asked again under a new command id (as after the processor forgot the
    // first): the same answer, and nothing changes.
    let twice = h.send(
        6,
        0,
        Command::Refund {
            payment_id: payment(1),
            booking_ids: ids.clone(),
        },
    );
    assert_eq!(
        twice.reply,
        Reply::Refunded {
            booking_ids: ids.clone(),
            amount: 1000
        }
    );
    assert!(
        twice.facts.iter().all(|f| f.kind == FactKind::Unchanged),
        "{:?}",
        twice.facts
    );
    // Another payment never bought them.
    let other = h.send(
        6,
        0,
        Command::Refund {
            payment_id: payment(2),
            booking_ids: ids,
        },
    );
    assert_eq!(other.reply, Reply::Rejected(Rejection::NotRefundable));
    // The seat is on sale again: buyer 2, admitted, can hold it.
    assert!(matches!(h.hold(7, 2, &[(1, 1)]), Reply::Held { .. }));
}

/// A hold that was refused changed nothing, so its retry (same command id,
/// answer lost) is decided again, against the seats as they are now; a hold
/// that held is answered with what it held, never held twice.
#[test]
fn a_retried_hold_is_decided_again_only_if_it_held_nothing() {
    let mut h = Harness::new(None, 2);
    h.join(0, 1);
    h.join(0, 2);
    let taken = held_ids(&h.hold(1, 1, &[(1, 1)]));
    let retried = Envelope {
        command_id: CommandId::from_uuid(Uuid::from_u128(77_777)),
        at: t(2),
        seed: 0,
        command: Command::Hold {
            user: user(2),
            seats: vec![SeatRef { row: 1, col: 1 }],
            booking_ids: vec![BookingId::from_uuid(Uuid::from_u128(88_888))],
        },
    };
    let first = h.state.handle(&h.settings, &retried);
    assert!(matches!(
        first.reply,
        Reply::Rejected(Rejection::SeatUnavailable { .. })
    ));
    h.send(
        3,
        0,
        Command::Release {
            user: user(1),
            booking_id: taken[0],
        },
    );
    let again = h.state.handle(
        &h.settings,
        &Envelope {
            at: t(4),
            ..retried.clone()
        },
    );
    assert!(
        matches!(again.reply, Reply::Held { .. }),
        "{:?}",
        again.reply
    );
    let third = h.state.handle(
        &h.settings,
        &Envelope {
            at: t(5),
            ..retried
        },
    );
    assert_eq!(
        (third.facts.len(), &third.reply),
        (0, &again.reply),
        "held once, answered the same"
    );
    h.state.check_invariants(&h.settings);
}

#[test]
fn the_sale_ends_when_the_show_starts() {
    // One slot; the show starts at t=200.
    let mut h = Harness::new(None, 1);
    h.state = ScheduleState::new(&starting_at(created(3, 3, None), t(200)));
    assert!(matches!(h.join(1, 1), QueueStatus::Admitted { .. }));
    assert!(matches!(h.join(2, 2), QueueStatus::Waiting { .. }));
    let ids = held_ids(&h.hold(3, 1, &[(1, 1), (1, 2)]));
    assert!(matches!(
        pay(&mut h, 199, 1, 1, &ids[..1]),
        Reply::PaymentStarted { .. }
    ));

    // From the show's start: no joins (first or again), holds or new payments.
    let closed = Reply::Rejected(Rejection::SaleClosed);
    assert_eq!(h.hold(200, 1, &[(1, 3)]), closed);
    assert_eq!(
        h.send(200, 0, Command::Join { user: user(3) }).reply,
        closed
    );
    assert_eq!(
        h.send(200, 0, Command::Join { user: user(2) }).reply,
        closed
    );
    assert_eq!(pay(&mut h, 200, 1, 2, &ids[1..]), closed);
    // What started before ends as usual: the payment is asked again and completes.
    assert!(matches!(
        pay(&mut h, 201, 1, 1, &ids[..1]),
        Reply::PaymentStarted { .. }
    ));
    let d = complete(&mut h, 201, 1);
    assert_eq!(
        d.reply,
        Reply::Sold {
            booking_ids: ids[..1].to_vec()
        }
    );
    // A freed slot admits nobody any more.
    let d = h.send(202, 0, Command::Leave { user: user(1) });
    assert!(
        !d.facts
            .iter()
            .any(|f| matches!(f.kind, FactKind::Admitted { .. })),
        "{:?}",
        d.facts
    );
    assert!(matches!(h.status(202, 2), QueueStatus::Waiting { .. }));
    // The unpaid hold runs out on its own clock (t=303).
    let d = h.send(303, 0, Command::Tick);
    assert!(d.facts.iter().any(|f| matches!(
        &f.kind,
        FactKind::BookingsCancelled { reason: CancelReason::Expired, seats, .. } if seats[0].booking_id == ids[1]
    )));
    // The processor still gives a refunded seat back (the ingress decides
    // whether a refund may be asked for).
    let d = h.send(
        400,
        0,
        Command::Refund {
            payment_id: payment(1),
            booking_ids: ids[..1].to_vec(),
        },
    );
    assert!(matches!(d.reply, Reply::Refunded { .. }), "{:?}", d.reply);
    // The rule survives a snapshot.
    let snap: ScheduleState =
        serde_json::from_slice(&serde_json::to_vec(&h.state).unwrap()).unwrap();
    assert_eq!(snap.starts_at, Some(t(200)));
}

#[test]
fn a_join_says_whether_it_put_the_buyer_in_line_also_when_retried() {
    let mut h = Harness::new(None, 1);
    let first = h.send(1, 0, Command::Join { user: user(1) });
    assert!(matches!(
        first.reply,
        Reply::Joined(QueueStatus::Admitted { .. })
    ));
    // Another join by the same buyer finds them in line.
    assert!(matches!(
        h.send(2, 0, Command::Join { user: user(1) }).reply,
        Reply::Queue(QueueStatus::Admitted { .. })
    ));
    // The first join retried (its answer lost): it is still the one that joined.
    let retry = |h: &mut Harness, at, id: u128, u| {
        let env = Envelope {
            command_id: CommandId::from_uuid(Uuid::from_u128(id)),
            at: t(at),
            seed: 0,
            command: Command::Join { user: user(u) },
        };
        h.state.handle(&h.settings, &env).reply
    };
    assert!(matches!(
        retry(&mut h, 3, 1, 1),
        Reply::Joined(QueueStatus::Admitted { .. })
    ));
    // The second join retried found the buyer in line.
    assert!(matches!(
        retry(&mut h, 3, 2, 1),
        Reply::Queue(QueueStatus::Admitted { .. })
    ));
    // Before the sale opens too, and through a snapshot.
    let mut h = Harness::new(Some(100), 1);
    assert!(matches!(
        h.send(1, 0, Command::Join { user: user(2) }).reply,
        Reply::Joined(QueueStatus::Waiting { position: None, .. })
    ));
    h.state = serde_json::from_slice(&serde_json::to_vec(&h.state).unwrap()).unwrap();
    assert!(matches!(
        retry(&mut h, 2, 1, 2),
        Reply::Joined(QueueStatus::Waiting { .. })
    ));
}

/// Booking ids come from the hold's command id, so a hold whose bookings
/// exist already is that hold retried after its command id was forgotten:
/// it is answered from what it made and never makes them again, even once
/// they are sold or refunded.
#[test]
fn a_hold_retried_after_its_command_id_is_forgotten_is_answered_from_its_bookings() {
    let (mut h, ids) = two_seats_held();
    let seats = vec![SeatRef { row: 1, col: 1 }, SeatRef { row: 1, col: 2 }];
    let again = |h: &mut Harness, at, booking_ids: Vec<BookingId>| {
        h.send(
            at,
            0,
            Command::Hold {
                user: user(1),
                seats: seats.clone(),
                booking_ids,
            },
        )
    };
    let d = again(&mut h, 2, ids.clone());
    assert!(
        matches!(&d.reply, Reply::Held { booking_ids, .. } if *booking_ids == ids),
        "{:?}",
        d.reply
    );
    assert!(d.facts.iter().all(|f| f.kind == FactKind::Unchanged));
    // Some known, some new: not one hold's bookings.
    let mixed = vec![ids[0], BookingId::from_uuid(Uuid::from_u128(31_337))];
    assert_eq!(
        again(&mut h, 2, mixed).reply,
        Reply::Rejected(Rejection::EmptyHold)
    );
    // Sold: not held again (the state's checks run after every command).
    assert!(matches!(
        pay(&mut h, 3, 1, 1, &ids),
        Reply::PaymentStarted { .. }
    ));
    complete(&mut h, 4, 1);
    let d = again(&mut h, 5, ids.clone());
    assert_eq!(d.reply, Reply::Rejected(Rejection::BookingNotFound));
    assert!(d.facts.iter().all(|f| f.kind == FactKind::Unchanged));
    // Refunded: not held again either.
    h.send(
        6,
        0,
        Command::Refund {
            payment_id: payment(1),
            booking_ids: ids.clone(),
        },
    );
    let d = again(&mut h, 7, ids);
    assert_eq!(d.reply, Reply::Rejected(Rejection::BookingNotFound));
    assert!(d.facts.iter().all(|f| f.kind == FactKind::Unchanged));
}
