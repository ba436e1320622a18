//! Events for tests: every variant, with and without its optional fields.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use ticketing_domain::account::Role;
use ticketing_domain::events::{
    ConcertCreated, Event, EventMeta, PaymentChange, PaymentChanged, PaymentSnapshot,
    RequestLogged, ScheduleCommandAnswered, ScheduleCommandIssued, ScheduleCreated,
    ScheduleFactRecorded, ScheduleSnapshotted, ScheduleTicked, SnapshotsCheckpointed, StageCreated,
    UserRegistered,
};
use ticketing_domain::payment::{PaymentStatus, Refund};
use ticketing_domain::schedule::{
    AbortReason, CancelReason, Command, Envelope, Fact, FactKind, HeldSeat, QueueStatus, Rejection,
    Reply, ScheduleState, SeatRef, Settings,
};
use uuid::Uuid;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | n)
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn meta(n: u128, actor: Option<u128>) -> EventMeta {
    EventMeta {
        event_id: id(n).into(),
        // Millisecond precision: what timestamp-millis carries.
        occurred_at: at("2026-03-01T12:34:56.789Z"),
        actor: actor.map(|a| id(a).into()),
    }
}

fn envelope(n: u128, command: Command) -> Envelope {
    Envelope {
        command_id: id(n).into(),
        at: at("2026-03-01T12:00:00.001Z"),
        // All 64 bits, stored in a signed long.
        seed: u64::MAX - 1,
        command,
    }
}

const SEAT: SeatRef = SeatRef { row: 500, col: 1 };

fn held() -> Vec<HeldSeat> {
    vec![
        HeldSeat {
            booking_id: id(40).into(),
            seat: SEAT,
        },
        HeldSeat {
            booking_id: id(41).into(),
            seat: SeatRef { row: 1, col: 200 },
        },
    ]
}

/// Every command, fact kind, reply, queue status and rejection, each in a
/// schedule event.
pub fn schedule_events() -> Vec<Event> {
    let user = || id(30).into();
    let commands = vec![
        Command::Join { user: user() },
        Command::Leave { user: user() },
        Command::Hold {
            user: user(),
            seats: vec![SEAT, SeatRef { row: 2, col: 3 }],
            booking_ids: vec![id(40).into(), id(41).into()],
        },
        Command::Release {
            user: user(),
            booking_id: id(40).into(),
        },
        Command::Tick,
        Command::StartPayment {
            user: user(),
            payment_id: id(45).into(),
            booking_ids: vec![id(40).into(), id(41).into()],
        },
        Command::CompletePayment {
            payment_id: id(45).into(),
        },
        Command::AbortPayment {
            payment_id: id(45).into(),
        },
        Command::Refund {
            payment_id: id(45).into(),
            booking_ids: vec![id(41).into()],
        },
    ];
    let facts = vec![
        FactKind::QueueJoined {
            user: user(),
            position: Some(u64::from(u32::MAX) * 4),
        },
        FactKind::QueueJoined {
            user: user(),
            position: None,
        },
        FactKind::QueueOpened { seed: u64::MAX },
        FactKind::Admitted {
            user: user(),
            position: 1,
            until: at("2026-03-01T12:10:00Z"),
        },
        FactKind::AdmissionExpired { user: user() },
        FactKind::QueueLeft { user: user() },
        FactKind::SeatsHeld {
            user: user(),
            seats: held(),
            until: at("2026-03-01T12:05:00Z"),
        },
        FactKind::BookingsCancelled {
            user: user(),
            seats: held(),
            reason: CancelReason::Released,
        },
        FactKind::BookingsCancelled {
            user: user(),
            seats: vec![],
            reason: CancelReason::Expired,
        },
        FactKind::Unchanged,
        FactKind::PaymentStarted {
            user: user(),
            payment_id: id(45).into(),
            seats: held(),
            until: at("2026-03-01T12:07:00Z"),
        },
        FactKind::SeatsSold {
            user: user(),
            payment_id: id(45).into(),
            seats: held(),
        },
        FactKind::PaymentAborted {
            user: user(),
            payment_id: id(45).into(),
            reason: AbortReason::NotCharged,
        },
        FactKind::PaymentAborted {
            user: user(),
            payment_id: id(45).into(),
            reason: AbortReason::TimedOut,
        },
        FactKind::SeatsRefunded {
            user: user(),
            payment_id: id(45).into(),
            seats: held(),
        },
    ];
    let rejections = vec![
        Rejection::NotAdmitted,
        Rejection::SeatUnavailable { seats: vec![SEAT] },
        Rejection::SeatLimit {
            limit: 4,
            already: 3,
        },
        Rejection::InvalidSeat { seat: SEAT },
        Rejection::DuplicateSeat { seat: SEAT },
        Rejection::EmptyHold,
        Rejection::BookingNotFound,
        Rejection::NotOwner,
        Rejection::BookingNotPending,
        Rejection::PaymentNotInProgress,
        Rejection::NotRefundable,
        Rejection::SaleClosed,
    ];
    let mut replies = vec![
        Reply::Queue(QueueStatus::Waiting {
            position: Some(7),
            ahead: Some(6),
            eta_seconds: Some(12),
        }),
        Reply::Queue(QueueStatus::Waiting {
            position: None,
            ahead: None,
            eta_seconds: None,
        }),
        Reply::Queue(QueueStatus::Admitted {
            position: 3,
            until: at("2026-03-01T12:10:00Z"),
        }),
        Reply::Queue(QueueStatus::Expired),
        Reply::Queue(QueueStatus::Left),
        Reply::Queue(QueueStatus::SoldOut),
        Reply::Queue(QueueStatus::NotInQueue),
        Reply::Joined(QueueStatus::Waiting {
            position: Some(8),
            ahead: Some(7),
            eta_seconds: Some(14),
        }),
        Reply::Joined(QueueStatus::Admitted {
            position: 1,
            until: at("2026-03-01T12:10:00Z"),
        }),
        Reply::Left,
        Reply::Held {
            booking_ids: vec![id(40).into(), id(41).into()],
            until: at("2026-03-01T12:05:00Z"),
        },
        Reply::Released,
        Reply::UnknownSchedule,
        Reply::None,
        Reply::PaymentStarted {
            seats: held(),
            total_price: 2 * 70_000,
            until: at("2026-03-01T12:07:00Z"),
        },
        Reply::Sold {
            booking_ids: vec![id(40).into(), id(41).into()],
        },
        Reply::PaymentAborted,
        Reply::Refunded {
            booking_ids: vec![id(41).into()],
            amount: 70_000,
        },
    ];
    replies.extend(rejections.into_iter().map(Reply::Rejected));

    let mut events = Vec::new();
    for (i, command) in commands.into_iter().enumerate() {
        events.push(Event::ScheduleCommandIssued(ScheduleCommandIssued {
            meta: meta(100 + i as u128, Some(30)),
            schedule_id: id(8).into(),
            envelope: envelope(200 + i as u128, command),
            reply_to: Some("ingress-7f3a".into()),
        }));
    }
    events.push(Event::ScheduleTicked(ScheduleTicked {
        meta: meta(120, None),
        partition: 11,
        envelope: envelope(121, Command::Tick),
    }));
    for (i, kind) in facts.into_iter().enumerate() {
        events.push(Event::ScheduleFactRecorded(ScheduleFactRecorded {
            meta: meta(300 + i as u128, None),
            schedule_id: id(8).into(),
            fact: Fact {
                command_id: id(400 + i as u128).into(),
                at: at("2026-03-01T12:00:00.002Z"),
                kind,
            },
        }));
    }
    for (i, reply) in replies.into_iter().enumerate() {
        events.push(Event::ScheduleCommandAnswered(ScheduleCommandAnswered {
            meta: meta(500 + i as u128, None),
            schedule_id: id(8).into(),
            command_id: id(600 + i as u128).into(),
            reply_to: "ingress-7f3a".into(),
            reply,
        }));
    }
    events
}

/// Every variant with every optional field set.
pub fn every_event() -> Vec<Event> {
    let mut events = vec![
        Event::UserRegistered(UserRegistered {
            meta: meta(1, Some(9)),
            user_id: id(2).into(),
            email: "ann@example.com".into(),
            nickname: "김철수".into(),
            role: Role::Seller,
        }),
        Event::StageCreated(StageCreated {
            meta: meta(3, Some(9)),
            stage_id: id(4).into(),
            seller_id: id(9).into(),
            name: "Main hall".into(),
            location: "Seoul".into(),
            rows: 500,
            cols: 200,
        }),
        Event::ConcertCreated(ConcertCreated {
            meta: meta(5, Some(9)),
            concert_id: id(6).into(),
            seller_id: id(9).into(),
            stage_id: id(4).into(),
            concert_name: "Show".into(),
            runtime_minutes: 1440,
            start_date: date("2026-12-01"),
            end_date: date("2026-12-31"),
            price: 100_000_000,
            concert_image: Some("https://img.example.com/a.png".into()),
        }),
        Event::ScheduleCreated(ScheduleCreated {
            meta: meta(7, Some(9)),
            schedule_id: id(8).into(),
            concert_id: id(6).into(),
            seller_id: id(9).into(),
            stage_id: id(4).into(),
            rows: 1,
            cols: 1,
            price: 0,
            concert_date: date("1969-07-20"),
            concert_time: NaiveTime::from_hms_milli_opt(23, 59, 59, 999).unwrap(),
            sale_opens_at: Some(at("1969-07-01T00:00:00.001Z")),
        }),
    ];
    if let Event::ScheduleCreated(created) = &events[3] {
        let mut initialised = created.clone();
        initialised.meta = meta(10, None);
        events.push(Event::ScheduleInitialised(initialised));
    }
    events.extend(schedule_events());
    events.extend(snapshot_events());
    events.extend(payment_events());
    events.push(Event::RequestLogged(RequestLogged {
        meta: meta(90, Some(91)),
        method: "POST".into(),
        path: "/api/v1/payments".into(),
        status: 201,
        latency_micros: u64::MAX >> 1,
    }));
    events
}

/// One payment's changes, each status once.
pub fn payment_events() -> Vec<Event> {
    let snapshot = |status, refund_price, revision| PaymentSnapshot {
        payment_id: id(80).into(),
        user_id: id(81).into(),
        schedule_id: id(82).into(),
        concert_id: id(83).into(),
        booking_ids: vec![id(84).into(), id(85).into()],
        status,
        total_price: 140_000,
        refund_price,
        card_last4: "4242".into(),
        revision,
        created_at: at("2026-11-24T23:59:59.999Z"),
        updated_at: at("2026-11-25T00:00:01Z"),
    };
    let refund = |n: u128, booking: u128| Refund {
        refund_id: id(n).into(),
        booking_ids: vec![id(booking).into()],
        amount: 70_000,
        reason: "일정이 바뀌었어요".into(),
        requested_at: at("2026-11-25T01:00:00Z"),
        refunded_at: Some(at("2026-11-25T01:00:02.5Z")),
    };
    [
        (PaymentStatus::Waiting, 0, 0, PaymentChange::Started),
        (PaymentStatus::Failed, 0, 1, PaymentChange::Failed),
        (PaymentStatus::Completed, 0, 1, PaymentChange::Completed),
        (
            PaymentStatus::PartCanceled,
            70_000,
            3,
            PaymentChange::Refunded(refund(86, 84)),
        ),
        (
            PaymentStatus::Canceled,
            140_000,
            u64::MAX >> 1,
            PaymentChange::Refunded(refund(87, 85)),
        ),
    ]
    .into_iter()
    .enumerate()
    .map(|(n, (status, refunded, revision, change))| {
        Event::PaymentChanged(PaymentChanged {
            meta: meta(100 + n as u128, Some(81)),
            payment: snapshot(status, refunded, revision),
            change,
        })
    })
    .collect()
}

/// A snapshot of a schedule with a waiting room, an admission and a hold, and
/// a checkpoint.
pub fn snapshot_events() -> Vec<Event> {
    let created = ScheduleCreated {
        meta: meta(50, None),
        schedule_id: id(51).into(),
        concert_id: id(52).into(),
        seller_id: id(53).into(),
        stage_id: id(54).into(),
        rows: 3,
        cols: 4,
        price: 70_000,
        concert_date: date("2026-05-02"),
        concert_time: NaiveTime::from_hms_opt(19, 30, 0).unwrap(),
        sale_opens_at: None,
    };
    let settings = Settings {
        max_active: 1,
        ..Settings::default()
    };
    let mut state = ScheduleState::new(&created);
    for (n, command) in [
        Command::Join {
            user: id(60).into(),
        },
        Command::Join {
            user: id(61).into(),
        },
        Command::Hold {
            user: id(60).into(),
            seats: vec![SeatRef { row: 2, col: 2 }],
            booking_ids: vec![id(62).into()],
        },
    ]
    .into_iter()
    .enumerate()
    {
        state.handle(&settings, &envelope(70 + n as u128, command));
    }
    vec![
        Event::ScheduleSnapshotted(ScheduleSnapshotted {
            meta: meta(55, None),
            schedule_id: created.schedule_id,
            covers_to: i64::MAX,
            state: Box::new(state),
        }),
        Event::SnapshotsCheckpointed(SnapshotsCheckpointed {
            meta: meta(56, None),
            partition: 11,
            restore_from: 0,
        }),
    ]
}

/// Every variant with every optional field empty (and the system as actor).
pub fn without_optionals() -> Vec<Event> {
    every_event()
        .into_iter()
        .map(|mut e| {
            match &mut e {
                Event::UserRegistered(x) => {
                    x.meta.actor = None;
                    x.role = Role::User;
                }
                Event::StageCreated(x) => x.meta.actor = None,
                Event::ConcertCreated(x) => {
                    x.meta.actor = None;
                    x.concert_image = None;
                }
                Event::ScheduleCreated(x) | Event::ScheduleInitialised(x) => {
                    x.meta.actor = None;
                    x.sale_opens_at = None;
                    x.concert_time = NaiveTime::MIN;
                }
                Event::ScheduleCommandIssued(x) => {
                    x.meta.actor = None;
                    x.reply_to = None;
                    x.envelope.seed = 0;
                }
                Event::ScheduleTicked(x) => x.meta.actor = None,
                Event::ScheduleFactRecorded(x) => x.meta.actor = None,
                Event::ScheduleCommandAnswered(x) => x.meta.actor = None,
                Event::ScheduleSnapshotted(x) => x.meta.actor = None,
                Event::SnapshotsCheckpointed(x) => x.meta.actor = None,
                Event::PaymentChanged(x) => {
                    x.meta.actor = None;
                    x.payment.booking_ids.clear();
                }
                Event::RequestLogged(x) => x.meta.actor = None,
            }
            e
        })
        .collect()
}
