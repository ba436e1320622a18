//! The schedule projection against a real Redis: after every changelog record,
//! the Redis read model answers exactly as the processor's own state does; a
//! replay from the start (a restarted sink) changes nothing; a stale writer
//! never moves the view back.

#![cfg(feature = "real-stack")]

use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use ticketing_domain::booking::BookingStatus;
use ticketing_domain::events::{Event, EventMeta, ScheduleCreated, ScheduleFactRecorded};
use ticketing_domain::ids::*;
use ticketing_domain::schedule::{Command, Envelope, FactKind, ScheduleState, SeatRef, Settings};
use ticketing_sinks::schedule_view::ScheduleViews;
use ticketing_storage::redis_schedules::RedisScheduleViews;
use ticketing_storage::{ScheduleReadModel, ScheduleViewWriter};
use uuid::Uuid;

const SETTINGS: Settings = Settings {
    max_active: 2,
    admission_ttl_secs: 120,
    hold_ttl_secs: 60,
    max_seats_per_user: 2,
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
    let mut at = 0;
    for _ in 0..70 {
        at += i64::try_from(rng.next(25)).unwrap();
        let user = users[rng.next(users.len() as u64) as usize];
        let command = match rng.next(5) {
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
            _ => match live.iter().find(|(_, owner)| *owner == user) {
                Some((b, _)) => Command::Release {
                    user,
                    booking_id: *b,
                },
                None => Command::Tick,
            },
        };
        let env = Envelope {
            command_id: CommandId::from_uuid(Uuid::now_v7()),
            at: t(at),
            seed: seed ^ 0x5eed,
            command,
        };
        for fact in state.handle(&SETTINGS, &env).facts {
            match &fact.kind {
                FactKind::SeatsHeld { user, seats, .. } => {
                    live.extend(seats.iter().map(|h| (h.booking_id, *user)))
                }
                FactKind::BookingsCancelled { seats, .. } => {
                    live.retain(|(b, _)| seats.iter().all(|h| h.booking_id != *b))
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
