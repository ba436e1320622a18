//! The schedule projection against a real Redis: after every changelog record,
//! the Redis read model answers exactly as the processor's own state does; a
//! replay from the start (a restarted sink) changes nothing; a stale writer
//! never moves the view back.

#![cfg(feature = "real-stack")]

use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use ticketing_domain::booking::BookingStatus;
use ticketing_domain::catalog::SeatStatus;
use ticketing_domain::events::{Event, EventMeta, ScheduleCreated, ScheduleFactRecorded};
use ticketing_domain::ids::*;
use ticketing_domain::schedule::{
    Command, Envelope, FactKind, QueueStatus, ScheduleState, SeatRef, Settings,
};
use ticketing_sinks::schedule_view::ScheduleViews;
use ticketing_storage::redis_schedules::RedisScheduleViews;
use ticketing_storage::{ScheduleReadModel, ScheduleViewWriter};
use uuid::Uuid;

const SETTINGS: Settings = Settings {
    max_active: 2,
    admission_ttl_secs: 120,
    hold_ttl_secs: 60,
    max_seats_per_user: 2,
    payment_ttl_secs: 30,
};

fn redis_url() -> String {
    std::env::var("TICKETING_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn t(s: i64) -> DateTime<Utc> {
    "2030-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::seconds(s)
}

fn meta() -> EventMeta {
    EventMeta {
        event_id: EventId::from_uuid(Uuid::now_v7()),
        occurred_at: t(0),
        actor: None,
    }
}

/// A small deterministic generator, so a failing seed replays.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % below
    }
}

/// One random sale: its changelog (with offsets) and the processor's state
/// after each record.
struct Sale {
    created: ScheduleCreated,
    users: Vec<UserId>,
    log: Vec<(i64, Event)>,
    states: Vec<ScheduleState>,
    last_at: i64,
}

fn sale(seed: u64, pre_opening: bool) -> Sale {
    let mut rng = SplitMix(seed);
    let created = ScheduleCreated {
        meta: meta(),
        schedule_id: ScheduleId::from_uuid(Uuid::now_v7()),
        concert_id: ConcertId::from_uuid(Uuid::now_v7()),
        seller_id: UserId::from_uuid(Uuid::now_v7()),
        stage_id: StageId::from_uuid(Uuid::now_v7()),
        rows: 2,
        cols: 3,
        price: 120,
        concert_date: "2030-02-01".parse().unwrap(),
        concert_time: "19:00:00".parse().unwrap(),
        sale_opens_at: pre_opening.then(|| t(20)),
    };
    let users: Vec<UserId> = (0..5).map(|_| UserId::from_uuid(Uuid::now_v7())).collect();
    let mut state = ScheduleState::new(&created);
    // Offsets as a partition hands them out: not from 0, with gaps (other
    // schedules' records in between).
    let mut offset = 1_000 + i64::try_from(rng.next(50)).unwrap();
    let mut log = vec![(offset, Event::ScheduleInitialised(created.clone()))];
    // The state after each record: facts applied one by one, as a restoring
    // processor would (`handle` applies a command's facts all at once).
    let mut replay = state.clone();
    let mut states = vec![replay.clone()];
    let mut live: Vec<(BookingId, UserId)> = Vec::new();
    let mut sold: Vec<(BookingId, UserId, PaymentId)> = Vec::new();
    let mut at = 0;
    for _ in 0..70 {
        at += i64::try_from(rng.next(25)).unwrap();
        let user = users[rng.next(users.len() as u64) as usize];
        let mut follow_up = None;
        let command = match rng.next(7) {
            0 | 1 => Command::Join { user },
            2 => Command::Leave { user },
            3 => Command::Hold {
                user,
                seats: vec![SeatRef {
                    row: rng.next(2) as u16 + 1,
                    col: rng.next(3) as u16 + 1,
                }],
                booking_ids: vec![BookingId::from_uuid(Uuid::now_v7())],
            },
            4 => match live.iter().find(|(_, owner)| *owner == user) {
                Some((b, _)) => Command::Release {
                    user,
                    booking_id: *b,
                },
                None => Command::Tick,
            },
            5 => {
                let payment_id = PaymentId::from_uuid(Uuid::now_v7());
                if rng.next(4) > 0 {
                    follow_up = Some(Command::CompletePayment { payment_id });
                }
                Command::StartPayment {
                    user,
                    payment_id,
                    booking_ids: live
                        .iter()
                        .filter(|(_, owner)| *owner == user)
                        .map(|(b, _)| *b)
                        .collect(),
                }
            }
            _ => match sold.iter().find(|(_, owner, _)| *owner == user) {
                Some((b, _, p)) => Command::Refund {
                    payment_id: *p,
                    booking_ids: vec![*b],
                },
                None => Command::Tick,
            },
        };
        let envs: Vec<Envelope> = std::iter::once(command)
            .chain(follow_up)
            .map(|command| Envelope {
                command_id: CommandId::from_uuid(Uuid::now_v7()),
                at: t(at),
                seed: seed ^ 0x5eed,
                command,
            })
            .collect();
        for fact in envs
            .iter()
            .flat_map(|env| state.handle(&SETTINGS, env).facts)
        {
            match &fact.kind {
                FactKind::SeatsHeld { user, seats, .. } => {
                    live.extend(seats.iter().map(|h| (h.booking_id, *user)))
                }
                FactKind::BookingsCancelled { seats, .. } => {
                    live.retain(|(b, _)| seats.iter().all(|h| h.booking_id != *b))
                }
                FactKind::SeatsSold {
                    user,
                    payment_id,
                    seats,
                } => {
                    live.retain(|(b, _)| seats.iter().all(|h| h.booking_id != *b));
                    sold.extend(seats.iter().map(|h| (h.booking_id, *user, *payment_id)));
                }
                FactKind::SeatsRefunded { seats, .. } => {
                    sold.retain(|(b, _, _)| seats.iter().all(|h| h.booking_id != *b))
                }
                _ => {}
            }
            offset += 1 + i64::try_from(rng.next(3)).unwrap();
            replay.apply(&fact);
            states.push(replay.clone());
            log.push((
                offset,
                Event::ScheduleFactRecorded(ScheduleFactRecorded {
                    meta: meta(),
                    schedule_id: created.schedule_id,
                    fact,
                }),
            ));
        }
    }
    assert_eq!(replay, state, "the facts rebuild the state");
    Sale {
        created,
        users,
        log,
        states,
        last_at: at,
    }
}

/// Feeds `log` through a fresh fold into the writer; answers how many records
/// the writer applied.
async fn project(redis: &RedisScheduleViews, log: &[(i64, Event)]) -> usize {
    let fold = ScheduleViews::new(SETTINGS);
    let mut applied = 0;
    for (offset, event) in log {
        let (schedule, changes) = fold.apply_with_changes(event).expect("a schedule event");
        if !changes.is_empty() && redis.apply(schedule, *offset, &changes).await.unwrap() {
            applied += 1;
        }
    }
    applied
}

async fn assert_agrees(redis: &RedisScheduleViews, sale: &Sale, state: &ScheduleState, at: i64) {
    let id = sale.created.schedule_id;
    let map = redis
        .seat_map(id)
        .await
        .unwrap()
        .expect("the schedule is known");
    assert_eq!((map.rows, map.cols), (2, 3));
    let expected: Vec<_> = state.seat_map().map(|(_, s)| s).collect();
    assert_eq!(map.seats, expected, "seat map");
    for user in &sale.users {
        for later in [0, 30, 200] {
            let now = t(at + later);
            assert_eq!(
                redis.queue_status(id, *user, now).await.unwrap(),
                Some(state.status_of(&SETTINGS, *user, now)),
                "queue status of {user} at +{later}s"
            );
        }
        let pending: HashMap<BookingId, SeatRef> = redis
            .bookings_of(*user)
            .await
            .unwrap()
            .into_iter()
            .filter(|b| b.status == BookingStatus::Pending)
            .map(|b| (b.booking_id, b.seat))
            .collect();
        let live: HashMap<BookingId, SeatRef> = state
            .seat_map()
            .filter_map(|(seat, _)| {
                state
                    .booking_at(seat)
                    .filter(|(_, owner)| owner == user)
                    .map(|(b, _)| (b, seat))
            })
            .collect();
        assert_eq!(pending, live, "pending bookings of {user}");
        let confirmed: HashMap<BookingId, (SeatRef, Option<Uuid>)> = redis
            .bookings_of(*user)
            .await
            .unwrap()
            .into_iter()
            .filter(|b| b.status == BookingStatus::Confirmed)
            .map(|b| (b.booking_id, (b.seat, b.payment_id)))
            .collect();
        let bought: HashMap<BookingId, (SeatRef, Option<Uuid>)> = state
            .seat_map()
            .filter_map(|(seat, _)| {
                state
                    .sale_at(seat)
                    .filter(|(_, owner, _)| owner == user)
                    .map(|(b, _, p)| (b, (seat, Some(p.as_uuid()))))
            })
            .collect();
        assert_eq!(confirmed, bought, "confirmed bookings of {user}");
    }
}

#[tokio::test]
async fn the_redis_view_answers_like_the_processor_after_every_record() {
    let redis = RedisScheduleViews::connect(&redis_url(), SETTINGS)
        .await
        .unwrap();
    for seed in 1..=6 {
        let sale = sale(seed, seed % 2 == 0);
        let fold = ScheduleViews::new(SETTINGS);
        let mut at = 0;
        for ((offset, event), state) in sale.log.iter().zip(&sale.states) {
            if let Event::ScheduleFactRecorded(e) = event {
                at = (e.fact.at - t(0)).num_seconds();
            }
            let (schedule, changes) = fold.apply_with_changes(event).unwrap();
            redis.apply(schedule, *offset, &changes).await.unwrap();
            assert_agrees(&redis, &sale, state, at).await;
        }
        let last = sale.states.last().unwrap();
        assert_agrees(&redis, &sale, last, sale.last_at).await;

        // A restarted sink replays everything: nothing is applied again.
        assert_eq!(project(&redis, &sale.log).await, 0, "seed {seed}");
        assert_agrees(&redis, &sale, last, sale.last_at).await;
    }
}

#[tokio::test]
async fn a_stale_writer_never_moves_the_view_back() {
    let redis = RedisScheduleViews::connect(&redis_url(), SETTINGS)
        .await
        .unwrap();
    let sale = sale(42, false);
    let applied = project(&redis, &sale.log).await;
    assert!(applied > 10, "the sale made changes ({applied})");
    // A slower writer still at the first half: every write is refused.
    let half = sale.log.len() / 2;
    assert_eq!(project(&redis, &sale.log[..half]).await, 0);
    assert_agrees(&redis, &sale, sale.states.last().unwrap(), sale.last_at).await;
}

#[tokio::test]
async fn an_unknown_schedule_and_a_stranger_read_as_nothing() {
    let redis = RedisScheduleViews::connect(&redis_url(), SETTINGS)
        .await
        .unwrap();
    let schedule = ScheduleId::from_uuid(Uuid::now_v7());
    let user = UserId::from_uuid(Uuid::now_v7());
    assert_eq!(redis.seat_map(schedule).await.unwrap(), None);
    assert_eq!(
        redis.queue_status(schedule, user, t(0)).await.unwrap(),
        None
    );
    assert!(redis.bookings_of(user).await.unwrap().is_empty());
    assert_eq!(
        redis
            .booking(BookingId::from_uuid(Uuid::now_v7()))
            .await
            .unwrap(),
        None
    );
}

/// Folds facts of one schedule and writes their changes at the next offsets.
async fn feed(
    redis: &RedisScheduleViews,
    fold: &ScheduleViews,
    schedule_id: ScheduleId,
    facts: Vec<ticketing_domain::schedule::Fact>,
    offset: &mut i64,
) {
    for fact in facts {
        *offset += 1;
        let (schedule, changes) = fold
            .apply_with_changes(&Event::ScheduleFactRecorded(ScheduleFactRecorded {
                meta: meta(),
                schedule_id,
                fact,
            }))
            .unwrap();
        redis.apply(schedule, *offset, &changes).await.unwrap();
    }
}

/// A sale that sells out: the waiting buyer reads SOLD_OUT from Redis, the
/// buyer's bookings are CONFIRMED with their payment, and a refund puts the
/// seat back on sale and the buyer back in line.
#[tokio::test]
async fn a_sold_out_sale_and_a_refund_read_from_redis() {
    let redis = RedisScheduleViews::connect(&redis_url(), SETTINGS)
        .await
        .unwrap();
    let mut created = sale(1, false).created;
    created.schedule_id = ScheduleId::from_uuid(Uuid::now_v7());
    created.rows = 1;
    created.cols = 2;
    let (a, b) = (
        UserId::from_uuid(Uuid::now_v7()),
        UserId::from_uuid(Uuid::now_v7()),
    );
    let settings = Settings {
        max_active: 1,
        ..SETTINGS
    };
    let mut state = ScheduleState::new(&created);
    let fold = ScheduleViews::new(settings);
    let mut offset = 10;
    let (schedule, changes) = fold
        .apply_with_changes(&Event::ScheduleInitialised(created.clone()))
        .unwrap();
    redis.apply(schedule, offset, &changes).await.unwrap();
    let bookings = vec![
        BookingId::from_uuid(Uuid::now_v7()),
        BookingId::from_uuid(Uuid::now_v7()),
    ];
    let payment_id = PaymentId::from_uuid(Uuid::now_v7());
    let commands = [
        Command::Join { user: a },
        Command::Join { user: b },
        Command::Hold {
            user: a,
            seats: vec![SeatRef { row: 1, col: 1 }, SeatRef { row: 1, col: 2 }],
            booking_ids: bookings.clone(),
        },
        Command::StartPayment {
            user: a,
            payment_id,
            booking_ids: bookings.clone(),
        },
        Command::CompletePayment { payment_id },
    ];
    let run = |state: &mut ScheduleState, command: Command, at: i64| {
        let env = Envelope {
            command_id: CommandId::from_uuid(Uuid::now_v7()),
            at: t(at),
            seed: 1,
            command,
        };
        state.handle(&settings, &env).facts
    };
    let mut facts = Vec::new();
    for (i, c) in commands.into_iter().enumerate() {
        facts.extend(run(&mut state, c, i as i64));
    }
    feed(&redis, &fold, created.schedule_id, facts, &mut offset).await;
    let id = created.schedule_id;
    assert_eq!(
        redis.queue_status(id, b, t(10)).await.unwrap(),
        Some(QueueStatus::SoldOut)
    );
    let map = redis.seat_map(id).await.unwrap().unwrap();
    assert_eq!(map.seats, vec![SeatStatus::Sold, SeatStatus::Sold]);
    let mine = redis.bookings_of(a).await.unwrap();
    assert_eq!(mine.len(), 2);
    assert!(mine.iter().all(|x| x.status == BookingStatus::Confirmed
        && x.payment_id == Some(payment_id.as_uuid())
        && x.expires_at.is_none()));

    let refund = run(
        &mut state,
        Command::Refund {
            payment_id,
            booking_ids: vec![bookings[0]],
        },
        20,
    );
    feed(&redis, &fold, id, refund, &mut offset).await;
    assert!(matches!(
        redis.queue_status(id, b, t(21)).await.unwrap(),
        Some(QueueStatus::Admitted { .. })
    ));
    let map = redis.seat_map(id).await.unwrap().unwrap();
    assert_eq!(map.seats, vec![SeatStatus::Available, SeatStatus::Sold]);
    let refunded = redis.booking(bookings[0]).await.unwrap().unwrap();
    assert_eq!(refunded.status, BookingStatus::Cancelled);
}
