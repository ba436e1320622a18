//! Events for tests: every variant, with and without its optional fields.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use ticketing_domain::account::Role;
use ticketing_domain::events::{
    ConcertCreated, Event, EventMeta, ScheduleCreated, StageCreated, UserRegistered,
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

/// Every variant with every optional field set.
pub fn every_event() -> Vec<Event> {
    vec![
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
                Event::ScheduleCreated(x) => {
                    x.meta.actor = None;
                    x.sale_opens_at = None;
                    x.concert_time = NaiveTime::MIN;
                }
            }
            e
        })
        .collect()
}
