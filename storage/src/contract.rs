//! The contract of the ports, as checks any adapter must pass. Each check expects
//! a store with no rows of its kind yet (a fresh database or keyspace), and
//! panics with a message on the first broken rule.
//!
//! Times are whole milliseconds because CQL timestamps and the Redis session
//! expiry keep no more; an adapter must give back exactly what it was given.

use crate::ports::{
    AccountStore, BookingRow, BookingRows, CatalogStore, ListCursor, PaymentCreated, PaymentStore,
    PaymentViews, RefundView, RequestLogRow, RequestLogs, RotateOutcome, Session, SessionStore,
    StoreError,
};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use ticketing_domain::account::{Email, Nickname, Role, User};
use ticketing_domain::audit::{Audit, Deletion};
use ticketing_domain::booking::BookingStatus;
use ticketing_domain::catalog::{Concert, Schedule, SeatGrid, Stage};
use ticketing_domain::events::PaymentSnapshot;
use ticketing_domain::ids::{
    BookingId, ConcertId, PaymentId, RefundId, ScheduleId, StageId, UserId,
};
use ticketing_domain::payment::{PaymentLedger, PaymentRecord, PaymentStatus, Refund};
use ticketing_domain::schedule::SeatRef;
use uuid::Uuid;

/// A fixed instant, so that runs are reproducible.
pub fn t0() -> DateTime<Utc> {
    "2026-03-01T09:00:00.123Z".parse().expect("a valid instant")
}

/// The wall clock truncated to milliseconds (for engines with real expiry).
pub fn now_millis() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now is in range")
}

fn id() -> Uuid {
    Uuid::now_v7()
}

/// A user whose phone and password columns are recognisable opaque strings: the
/// store must keep them byte for byte (encrypting and hashing are the caller's job).
pub fn user(email: &str, nickname: &str) -> User {
    let user_id = UserId::from_uuid(id());
    User {
        user_id,
        email: Email::parse(email).expect("a valid e-mail"),
        nickname: Nickname::parse(nickname).expect("a valid nickname"),
        phone_ciphertext: format!("k1:{user_id}:c2lwaGVy+/=="),
        password_hash: format!(
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaC17{}",
            user_id.as_uuid().simple()
        ),
        role: Role::User,
        profile_image: Some("https://img.example.com/a.png".into()),
        audit: Audit::created(t0(), None),
    }
}

fn taken(result: Result<(), StoreError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(StoreError::EmailTaken) => "email",
        Err(StoreError::NicknameTaken) => "nickname",
        Err(e) => panic!("unexpected store error: {e}"),
    }
}

pub async fn accounts(store: &dyn AccountStore) {
    let ann = user("Ann@Example.com", "Ann");
    store.insert_user(&ann).await.expect("first sign-up");
    assert_eq!(
        store.user_by_id(ann.user_id).await.unwrap().as_ref(),
        Some(&ann),
        "read back by id"
    );
    let by_email = store
        .user_by_email(&Email::parse(" ANN@example.COM").unwrap())
        .await
        .unwrap();
    assert_eq!(
        by_email.as_ref(),
        Some(&ann),
        "read back by e-mail in any case"
    );
    let stored = by_email.unwrap();
    assert_eq!(
        stored.phone_ciphertext, ann.phone_ciphertext,
        "phone stored as given"
    );
    assert_eq!(
        stored.password_hash, ann.password_hash,
        "password stored as given"
    );

    assert_eq!(
        taken(store.insert_user(&ann).await),
        "ok",
        "a retried sign-up is idempotent"
    );
    assert_eq!(
        store.user_by_id(ann.user_id).await.unwrap().as_ref(),
        Some(&ann)
    );

    assert_eq!(
        taken(store.insert_user(&user("ann@EXAMPLE.com", "someone")).await),
        "email"
    );
    assert_eq!(
        taken(store.insert_user(&user("other@example.com", "aNN")).await),
        "nickname"
    );
    assert_eq!(
        taken(store.insert_user(&user("ann@example.com", "ann")).await),
        "email",
        "e-mail is checked first"
    );

    // A sign-up refused for its nickname must not keep its e-mail.
    let bob_email = "bob@example.com";
    assert_eq!(
        taken(store.insert_user(&user(bob_email, "ANN")).await),
        "nickname"
    );
    assert_eq!(
        store
            .user_by_email(&Email::parse(bob_email).unwrap())
            .await
            .unwrap(),
        None
    );
    let bob = user(bob_email, "bob");
    assert_eq!(
        taken(store.insert_user(&bob).await),
        "ok",
        "the e-mail was released"
    );

    assert_eq!(
        store.user_by_id(UserId::from_uuid(id())).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .user_by_email(&Email::parse("nobody@example.com").unwrap())
            .await
            .unwrap(),
        None
    );

    concurrent_signups(store).await;
}

async fn concurrent_signups(store: &dyn AccountStore) {
    // Same e-mail (in different cases), different nicknames: exactly one wins.
    let racers = [
        user("race@example.com", "racer1"),
        user("RACE@example.com", "racer2"),
        user("race@Example.com", "racer3"),
        user("Race@example.com", "racer4"),
        user("race@example.COM", "racer5"),
        user("rAce@example.com", "racer6"),
    ];
    let results = tokio::join!(
        store.insert_user(&racers[0]),
        store.insert_user(&racers[1]),
        store.insert_user(&racers[2]),
        store.insert_user(&racers[3]),
        store.insert_user(&racers[4]),
        store.insert_user(&racers[5]),
    );
    let outcomes = [
        results.0, results.1, results.2, results.3, results.4, results.5,
    ]
    .map(taken);
    assert_eq!(
        outcomes.iter().filter(|o| **o == "ok").count(),
        1,
        "one winner: {outcomes:?}"
    );
    assert!(
        outcomes.iter().all(|o| *o == "ok" || *o == "email"),
        "{outcomes:?}"
    );
    let winner = &racers[outcomes.iter().position(|o| *o == "ok").unwrap()];
    let found = store
        .user_by_email(&Email::parse("race@example.com").unwrap())
        .await
        .unwrap();
    assert_eq!(found.as_ref(), Some(winner));
    for (racer, outcome) in racers.iter().zip(outcomes) {
        if outcome != "ok" {
            assert_eq!(
                store.user_by_id(racer.user_id).await.unwrap(),
                None,
                "a loser leaves no row"
            );
        }
    }

    // Same nickname, different e-mails: one wins, and the losers' e-mails stay free.
    let racers = [
        user("n1@example.com", "Samenick"),
        user("n2@example.com", "samenick"),
        user("n3@example.com", "SAMENICK"),
        user("n4@example.com", "sameNick"),
    ];
    let results = tokio::join!(
        store.insert_user(&racers[0]),
        store.insert_user(&racers[1]),
        store.insert_user(&racers[2]),
        store.insert_user(&racers[3]),
    );
    let outcomes = [results.0, results.1, results.2, results.3].map(taken);
    assert_eq!(
        outcomes.iter().filter(|o| **o == "ok").count(),
        1,
        "one winner: {outcomes:?}"
    );
    assert!(
        outcomes.iter().all(|o| *o == "ok" || *o == "nickname"),
        "{outcomes:?}"
    );
    for (i, (racer, outcome)) in racers.iter().zip(outcomes).enumerate() {
        if outcome != "ok" {
            let retry = user(racer.email.as_str(), &format!("other{i}"));
            assert_eq!(
                taken(store.insert_user(&retry).await),
                "ok",
                "{} was released",
                racer.email.as_str()
            );
        }
    }
}

fn date(s: &str) -> NaiveDate {
    s.parse().expect("a valid date")
}

fn time(s: &str) -> NaiveTime {
    s.parse().expect("a valid time")
}

pub fn stage(seller: UserId) -> Stage {
    Stage {
        stage_id: StageId::from_uuid(id()),
        seller_id: seller,
        name: "Hall".into(),
        location: "Seoul".into(),
        grid: SeatGrid::new(10, 20).expect("a valid grid"),
        audit: Audit::created(t0(), Some(seller)),
    }
}

pub fn concert(stage: &Stage, created_at: DateTime<Utc>, name: &str) -> Concert {
    Concert {
        concert_id: ConcertId::from_uuid(id()),
        seller_id: stage.seller_id,
        stage_id: stage.stage_id,
        concert_name: name.into(),
        runtime_minutes: 120,
        start_date: date("2026-12-01"),
        end_date: date("2026-12-31"),
        price: 55_000,
        concert_image: name
            .len()
            .is_multiple_of(2)
            .then(|| format!("https://img.example.com/{name}.png")),
        audit: Audit::created(created_at, Some(stage.seller_id)),
    }
}

pub fn schedule(concert: &Concert, day: &str, at: &str) -> Schedule {
    Schedule {
        schedule_id: ScheduleId::from_uuid(id()),
        concert_id: concert.concert_id,
        concert_date: date(day),
        concert_time: time(at),
        sale_opens_at: Some(t0() + Duration::days(3)),
        audit: Audit::created(t0(), Some(concert.seller_id)),
    }
}

pub async fn catalog(store: &dyn CatalogStore) {
    let seller = UserId::from_uuid(id());
    let hall = stage(seller);
    store.put_stage(&hall).await.unwrap();
    store.put_stage(&hall).await.unwrap();
    assert_eq!(
        store.stage(hall.stage_id).await.unwrap().as_ref(),
        Some(&hall)
    );
    assert_eq!(store.stage(StageId::from_uuid(id())).await.unwrap(), None);
    // A late replay of an older version never rolls a row back.
    let mut renamed = hall.clone();
    renamed.name = "Grand Hall".into();
    renamed.audit.updated_at = t0() + Duration::hours(1);
    renamed.audit.updated_by = Some(seller);
    store.put_stage(&renamed).await.unwrap();
    store.put_stage(&hall).await.unwrap();
    assert_eq!(
        store.stage(hall.stage_id).await.unwrap().as_ref(),
        Some(&renamed)
    );

    // Nine concerts one minute apart, two more sharing one instant (ordered by id),
    // one deleted.
    let mut live: Vec<Concert> = (0..9)
        .map(|i| concert(&hall, t0() + Duration::minutes(i), &format!("show{i}")))
        .collect();
    let tie_at = t0() + Duration::minutes(4);
    live.push(concert(&hall, tie_at, "tie-a"));
    live.push(concert(&hall, tie_at, "tie-b"));
    let mut gone = concert(&hall, t0() + Duration::minutes(100), "gone");
    gone.audit.deletion = Some(Deletion {
        deleted_at: t0() + Duration::minutes(101),
        deleted_by: Some(seller),
    });
    gone.audit.updated_at = t0() + Duration::minutes(101);
    for c in live.iter().rev().chain([&gone]) {
        store.put_concert(c).await.unwrap();
        store.put_concert(c).await.unwrap(); // replayed event: same row, no duplicate
    }
    live.sort_by(|a, b| {
        (b.audit.created_at, b.concert_id).cmp(&(a.audit.created_at, a.concert_id))
    });
    assert_eq!(
        store.concert(live[3].concert_id).await.unwrap().as_ref(),
        Some(&live[3])
    );
    assert_eq!(
        store.concert(gone.concert_id).await.unwrap().as_ref(),
        Some(&gone),
        "deleted rows stay readable"
    );

    let mut seen = Vec::new();
    for page in 0..3 {
        let p = store.list_concerts(page, 4).await.unwrap();
        assert_eq!((p.page, p.size, p.total), (page, 4, 11));
        seen.extend(p.items);
    }
    assert_eq!(
        seen, live,
        "newest first, ties by id, deleted skipped, each once"
    );
    let beyond = store.list_concerts(3, 4).await.unwrap();
    assert!(beyond.items.is_empty());
    assert_eq!(beyond.total, 11);

    // Deleting a listed concert takes it out of the listing and the total.
    let live_before_drop = live[0].clone();
    let mut dropped = live.remove(0);
    dropped.audit.deletion = Some(Deletion {
        deleted_at: t0() + Duration::hours(5),
        deleted_by: Some(seller),
    });
    dropped.audit.updated_at = t0() + Duration::hours(5);
    store.put_concert(&dropped).await.unwrap();
    let p = store.list_concerts(0, 20).await.unwrap();
    assert_eq!(p.total, 10);
    assert_eq!(p.items, live);

    let show = &live[0];
    let other = &live[1];
    let mut wanted = vec![
        schedule(show, "2026-12-02", "19:30:00"),
        schedule(show, "2026-12-02", "14:00:00"),
        schedule(show, "2026-12-01", "20:00:00"),
        schedule(show, "2026-12-10", "09:00:00"),
        schedule(show, "2026-12-01", "20:00:00"),
    ];
    wanted[1].sale_opens_at = None;
    let elsewhere = schedule(other, "2026-12-01", "10:00:00");
    for s in wanted.iter().chain([&elsewhere]) {
        store.put_schedule(s).await.unwrap();
        store.put_schedule(s).await.unwrap();
    }
    wanted.sort_by_key(|s| (s.concert_date, s.concert_time, s.schedule_id));
    assert_eq!(store.schedules_of(show.concert_id).await.unwrap(), wanted);
    assert_eq!(
        store.schedules_of(other.concert_id).await.unwrap(),
        vec![elsewhere.clone()]
    );
    assert_eq!(
        store
            .schedule(wanted[2].schedule_id)
            .await
            .unwrap()
            .as_ref(),
        Some(&wanted[2])
    );
    assert_eq!(
        store.schedule(ScheduleId::from_uuid(id())).await.unwrap(),
        None
    );
    assert!(store
        .schedules_of(ConcertId::from_uuid(id()))
        .await
        .unwrap()
        .is_empty());

    // A schedule moved to another time is listed once, at its new place, and a
    // late replay of its first version does not move it back.
    let first = wanted.remove(0);
    let mut moved = first.clone();
    moved.concert_date = date("2026-12-20");
    moved.audit.updated_at = t0() + Duration::hours(1);
    store.put_schedule(&moved).await.unwrap();
    store.put_schedule(&first).await.unwrap();
    wanted.push(moved.clone());
    assert_eq!(store.schedules_of(show.concert_id).await.unwrap(), wanted);
    assert_eq!(
        store.schedule(moved.schedule_id).await.unwrap(),
        Some(moved)
    );

    // Nor does a late replay of a deleted concert's creation bring it back.
    let listed = store.list_concerts(0, 20).await.unwrap();
    store.put_concert(&live_before_drop).await.unwrap();
    assert_eq!(store.list_concerts(0, 20).await.unwrap(), listed);
}

fn session(expires_at: DateTime<Utc>, hash: &str) -> Session {
    Session {
        session_id: id(),
        user_id: UserId::from_uuid(id()),
        role: Role::Seller,
        refresh_hash: hash.into(),
        expires_at,
    }
}

/// `now` must be close to the wall clock (engines such as Redis expire keys on
/// their own clock) and a whole number of milliseconds.
pub async fn sessions(store: &dyn SessionStore, now: DateTime<Utc>) {
    let hour = Duration::hours(1);
    let s = session(now + hour, "h0");
    store.create(&s).await.unwrap();
    assert!(store.is_active(s.session_id, now).await.unwrap());
    let rotated = store.rotate(s.session_id, "h0", "h1", now).await.unwrap();
    assert_eq!(
        rotated,
        RotateOutcome::Rotated(Session {
            refresh_hash: "h1".into(),
            ..s.clone()
        })
    );
    assert!(store.is_active(s.session_id, now).await.unwrap());
    assert!(matches!(
        store.rotate(s.session_id, "h1", "h2", now).await.unwrap(),
        RotateOutcome::Rotated(_)
    ));
    // The old secret again: a replay, so the whole session goes.
    assert_eq!(
        store.rotate(s.session_id, "h1", "h9", now).await.unwrap(),
        RotateOutcome::Reused
    );
    assert!(!store.is_active(s.session_id, now).await.unwrap());
    assert_eq!(
        store.rotate(s.session_id, "h2", "h3", now).await.unwrap(),
        RotateOutcome::Unknown
    );

    let s = session(now + hour, "r0");
    store.create(&s).await.unwrap();
    store.revoke(s.session_id).await.unwrap();
    store.revoke(s.session_id).await.unwrap();
    assert!(!store.is_active(s.session_id, now).await.unwrap());
    assert_eq!(
        store.rotate(s.session_id, "r0", "r1", now).await.unwrap(),
        RotateOutcome::Unknown
    );

    // Expiry is judged against the caller's clock...
    let s = session(now + hour, "e0");
    store.create(&s).await.unwrap();
    let later = now + hour + Duration::seconds(1);
    assert!(!store.is_active(s.session_id, later).await.unwrap());
    assert_eq!(
        store.rotate(s.session_id, "e0", "e1", later).await.unwrap(),
        RotateOutcome::Unknown
    );
    assert!(
        !store.is_active(s.session_id, now).await.unwrap(),
        "an expired session is gone for good"
    );
    // ...and a session created already expired is never active.
    let s = session(now - Duration::seconds(1), "x0");
    store.create(&s).await.unwrap();
    assert!(!store.is_active(s.session_id, now).await.unwrap());
    assert_eq!(
        store.rotate(s.session_id, "x0", "x1", now).await.unwrap(),
        RotateOutcome::Unknown
    );

    let unknown = id();
    assert!(!store.is_active(unknown, now).await.unwrap());
    assert_eq!(
        store.rotate(unknown, "a", "b", now).await.unwrap(),
        RotateOutcome::Unknown
    );
    store.revoke(unknown).await.unwrap();
}

pub fn payment(created_at: DateTime<Utc>) -> PaymentRecord {
    PaymentRecord {
        payment_id: PaymentId::from_uuid(Uuid::now_v7()),
        user_id: UserId::from_uuid(Uuid::now_v7()),
        schedule_id: ScheduleId::from_uuid(Uuid::now_v7()),
        concert_id: ConcertId::from_uuid(Uuid::now_v7()),
        booking_ids: vec![
            BookingId::from_uuid(Uuid::now_v7()),
            BookingId::from_uuid(Uuid::now_v7()),
        ],
        ledger: PaymentLedger::new(140_000),
        card_last4: "4242".into(),
        card_cipher: "v1:c1:AAAA".into(),
        payment_key: None,
        created_at,
        updated_at: created_at,
        revision: 0,
        refunds: vec![],
    }
}

/// Payments: created once per id, changed only by compare-and-set on the
/// ledger, and WAITING ones listed for the sweeper until they leave WAITING.
pub async fn payments(store: &dyn PaymentStore) {
    let at = now_millis();
    let p = payment(at);
    assert_eq!(
        store.create_payment(&p).await.unwrap(),
        PaymentCreated::Created
    );
    assert_eq!(store.payment(p.payment_id).await.unwrap(), Some(p.clone()));
    // A retried creation finds the first, whatever it carries.
    let mut retry = p.clone();
    retry.card_last4 = "0002".into();
    assert_eq!(
        store.create_payment(&retry).await.unwrap(),
        PaymentCreated::Existing(Box::new(p.clone()))
    );
    assert_eq!(
        store
            .payment(PaymentId::from_uuid(Uuid::now_v7()))
            .await
            .unwrap(),
        None
    );

    // Payments in flight since before a moment are listed, oldest first.
    let older = payment(at - Duration::seconds(30));
    store.create_payment(&older).await.unwrap();
    let mut done = payment(at - Duration::seconds(20));
    done.ledger = done.ledger.complete().unwrap();
    store.create_payment(&done).await.unwrap();
    // "In flight" here: listed for the sweeper and still in flight.
    let in_flight = |before| async move {
        store
            .payments_to_sweep(before, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|w| w.payment.in_flight_since() == Some(w.since))
            .map(|w| w.payment.payment_id)
            .collect::<Vec<_>>()
    };
    let swept = |before, id| async move {
        store
            .payments_to_sweep(before, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|w| w.payment.payment_id == id)
            .map(|w| w.since)
            .collect::<Vec<_>>()
    };
    let ids: Vec<PaymentId> = in_flight(at + Duration::seconds(1))
        .await
        .into_iter()
        .filter(|w| [p.payment_id, older.payment_id, done.payment_id].contains(w))
        .collect();
    assert_eq!(
        ids,
        vec![older.payment_id, p.payment_id],
        "only WAITING, oldest first"
    );
    assert!(!in_flight(at - Duration::seconds(31))
        .await
        .contains(&older.payment_id));

    // Compare-and-set on the revision: the first change wins, a stale one is
    // refused.
    let charged = p.with_ledger(
        p.ledger.complete().unwrap(),
        Some("pk_1".into()),
        at + Duration::seconds(2),
    );
    let failed = p.with_ledger(p.ledger.fail().unwrap(), None, at);
    assert!(store.update_payment(&p, &charged).await.unwrap());
    assert!(
        !store.update_payment(&p, &failed).await.unwrap(),
        "stale revision"
    );
    let stored = store.payment(p.payment_id).await.unwrap().unwrap();
    assert_eq!(stored, charged);
    assert_eq!(stored.revision, 1);
    // Out of WAITING, but still listed until its change is published.
    assert!(!in_flight(at + Duration::seconds(1))
        .await
        .contains(&p.payment_id));
    assert_eq!(
        swept(at + Duration::seconds(1), p.payment_id).await,
        vec![p.created_at]
    );
    store
        .forget_in_flight(p.payment_id, p.created_at)
        .await
        .unwrap();
    assert!(swept(at + Duration::seconds(1), p.payment_id)
        .await
        .is_empty());

    // A refund in flight is listed from when it was asked, and its record
    // moves with the ledger in one change.
    let refund_id = RefundId::from_uuid(Uuid::now_v7());
    let asked_at = at + Duration::seconds(3);
    let asked = stored
        .request_refund(
            refund_id,
            Some(&p.booking_ids[..1]),
            "cannot come",
            asked_at,
        )
        .unwrap();
    assert!(store.update_payment(&stored, &asked).await.unwrap());
    assert_eq!(store.payment(p.payment_id).await.unwrap().unwrap(), asked);
    assert!(in_flight(asked_at + Duration::seconds(1))
        .await
        .contains(&p.payment_id));
    assert!(!in_flight(asked_at).await.contains(&p.payment_id));
    let refunded = asked
        .finish_refund(refund_id, at + Duration::seconds(4))
        .unwrap();
    assert!(store.update_payment(&asked, &refunded).await.unwrap());
    assert!(
        !store.update_payment(&asked, &refunded).await.unwrap(),
        "a refund lands once"
    );
    // Only the ledger, refunds, key and time change.
    let mut sneaky = refunded.clone();
    sneaky.ledger.total_price = 1;
    sneaky.card_last4 = "9999".into();
    sneaky.booking_ids.clear();
    sneaky.revision += 1;
    assert!(store.update_payment(&refunded, &sneaky).await.unwrap());
    let stored = store.payment(p.payment_id).await.unwrap().unwrap();
    assert_eq!(
        (stored.ledger.status, stored.ledger.refund_price),
        (PaymentStatus::PartCanceled, 70_000)
    );
    assert_eq!(stored.ledger.total_price, 140_000, "the total is fixed");
    assert_eq!(stored.card_last4, "4242");
    assert_eq!(stored.booking_ids, p.booking_ids);
    assert_eq!(stored.refunds, refunded.refunds);
    assert!(!in_flight(asked_at + Duration::seconds(1))
        .await
        .contains(&p.payment_id));
    store
        .forget_in_flight(p.payment_id, asked_at)
        .await
        .unwrap();
    assert!(swept(asked_at + Duration::seconds(1), p.payment_id)
        .await
        .is_empty());
    assert!(
        !store
            .update_payment(&payment(at), &payment(at))
            .await
            .unwrap(),
        "an unknown payment is not updated"
    );
}

/// The sinks' payment and refund views: versioned upserts (an older
/// revision arriving late never wins), newest-first listings by buyer and by
/// day bucket, resumable with a cursor.
pub async fn payment_views(store: &dyn PaymentViews) {
    let user = UserId::from_uuid(Uuid::now_v7());
    let day = t0().date_naive() + chrono::Days::new(u64::from(Uuid::now_v7().as_u128() as u16) + 1);
    let start = day.and_hms_opt(10, 0, 0).unwrap().and_utc();
    // Ids with one bucket, so one bucket holds all of them.
    let id_in_bucket = || {
        let id = Uuid::now_v7().as_u128();
        Uuid::from_u128(id - id % crate::ports::DAY_BUCKETS as u128 + 3)
    };
    let snapshot = |n: i64, revision: u64, status: PaymentStatus| PaymentSnapshot {
        payment_id: PaymentId::from_uuid(id_in_bucket()),
        user_id: user,
        schedule_id: ScheduleId::from_uuid(Uuid::now_v7()),
        concert_id: ConcertId::from_uuid(Uuid::now_v7()),
        booking_ids: vec![BookingId::from_uuid(Uuid::now_v7())],
        status,
        total_price: 70_000,
        refund_price: 0,
        card_last4: "4242".into(),
        revision,
        created_at: start + Duration::seconds(n),
        updated_at: start + Duration::seconds(n),
    };
    let a = snapshot(1, 1, PaymentStatus::Completed);
    let mut b = snapshot(2, 0, PaymentStatus::Waiting);
    let c = snapshot(3, 1, PaymentStatus::Failed);
    for p in [&a, &b, &c] {
        store.put_payment_view(p).await.unwrap();
    }
    // A newer revision wins; an older one arriving after it does not.
    let mut b2 = b.clone();
    b2.revision = 1;
    b2.status = PaymentStatus::Completed;
    store.put_payment_view(&b2).await.unwrap();
    b.refund_price = 1;
    store.put_payment_view(&b).await.unwrap();
    // The same revision again rewrites the same row.
    store.put_payment_view(&a).await.unwrap();

    let mine = store.payments_of_user(user, 10).await.unwrap();
    assert_eq!(mine, vec![c.clone(), b2.clone(), a.clone()], "newest first");
    assert_eq!(store.payments_of_user(user, 2).await.unwrap().len(), 2);
    let bucket = crate::ports::day_bucket(a.payment_id.as_uuid());
    let page1 = store.payments_of_day(day, bucket, None, 2).await.unwrap();
    assert_eq!(page1, vec![c.clone(), b2.clone()]);
    let last = page1.last().unwrap();
    let cursor = ListCursor {
        at: last.created_at,
        id: last.payment_id.as_uuid(),
    };
    let page2 = store
        .payments_of_day(day, bucket, Some(cursor), 2)
        .await
        .unwrap();
    assert_eq!(page2, vec![a.clone()]);
    assert!(store
        .payments_of_day(day.succ_opt().unwrap(), bucket, None, 10)
        .await
        .unwrap()
        .is_empty());

    let refund = |n: i64| {
        let refund_id = RefundId::from_uuid(id_in_bucket());
        RefundView {
            payment_id: a.payment_id,
            user_id: user,
            schedule_id: a.schedule_id,
            concert_id: a.concert_id,
            total_price: a.total_price,
            refund: Refund {
                refund_id,
                booking_ids: a.booking_ids.clone(),
                amount: 35_000,
                reason: "cannot come".into(),
                requested_at: start + Duration::seconds(n),
                refunded_at: Some(start + Duration::seconds(n + 1)),
            },
        }
    };
    let (r1, r2) = (refund(10), refund(20));
    for r in [&r1, &r2, &r1] {
        store.put_refund_view(r).await.unwrap();
    }
    let rb = crate::ports::day_bucket(r1.refund.refund_id.as_uuid());
    assert_eq!(
        store.refunds_of_day(day, rb, None, 10).await.unwrap(),
        vec![r2.clone(), r1.clone()]
    );
    let cursor = ListCursor {
        at: r2.refunded_at(),
        id: r2.refund.refund_id.as_uuid(),
    };
    assert_eq!(
        store
            .refunds_of_day(day, rb, Some(cursor), 10)
            .await
            .unwrap(),
        vec![r1]
    );
}

/// Bookings by buyer and by schedule: the newest changelog version wins,
/// and the creation time set by the hold survives later changes.
pub async fn booking_rows(store: &dyn BookingRows) {
    let user = UserId::from_uuid(Uuid::now_v7());
    let schedule = ScheduleId::from_uuid(Uuid::now_v7());
    let at = t0();
    let held = BookingRow {
        booking_id: BookingId::from_uuid(Uuid::now_v7()),
        user_id: user,
        schedule_id: schedule,
        seat: SeatRef { row: 2, col: 3 },
        status: BookingStatus::Pending,
        payment_id: None,
        created_at: Some(at),
        updated_at: at,
        version: 10,
    };
    let sold = BookingRow {
        status: BookingStatus::Confirmed,
        payment_id: Some(PaymentId::from_uuid(Uuid::now_v7())),
        created_at: None,
        updated_at: at + Duration::seconds(5),
        version: 12,
        ..held.clone()
    };
    // Out of order: the sale lands first, the hold after it.
    store.put_booking(&sold).await.unwrap();
    store.put_booking(&held).await.unwrap();
    let want = BookingRow {
        created_at: Some(at),
        ..sold.clone()
    };
    assert_eq!(
        store.bookings_of_user(user).await.unwrap(),
        vec![want.clone()]
    );
    assert_eq!(
        store.bookings_of_schedule(schedule).await.unwrap(),
        vec![want.clone()]
    );
    // Replayed in order, the same row.
    store.put_booking(&held).await.unwrap();
    store.put_booking(&sold).await.unwrap();
    assert_eq!(store.bookings_of_user(user).await.unwrap(), vec![want]);
    let refunded = BookingRow {
        status: BookingStatus::Cancelled,
        created_at: None,
        version: 20,
        ..sold.clone()
    };
    store.put_booking(&refunded).await.unwrap();
    assert_eq!(
        store.bookings_of_schedule(schedule).await.unwrap()[0].status,
        BookingStatus::Cancelled
    );
}

/// Request logs: listed newest first by day bucket and by user, with a
/// cursor; rows past their expiry are never returned; a redelivery rewrites
/// the same row.
pub async fn request_logs(store: &dyn RequestLogs) {
    let user = UserId::from_uuid(Uuid::now_v7());
    let now = Utc::now();
    let keep = now + Duration::days(7);
    let base =
        DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap() - Duration::minutes(5);
    let row = |n: i64, user: Option<UserId>, path: &str| RequestLogRow {
        request_id: Uuid::now_v7(),
        at: base + Duration::seconds(n),
        user_id: user,
        method: "GET".into(),
        path: path.into(),
        status: 200,
        latency_micros: 1_234,
    };
    let a = row(1, Some(user), "/api/v1/users/me");
    let b = row(2, None, "/api/v1/concerts");
    let c = row(3, Some(user), "/api/v1/bookings");
    for r in [&a, &b, &c, &a] {
        store.put_request_log(r, keep).await.unwrap();
    }
    // Already expired: never shown.
    let gone = row(4, Some(user), "/gone");
    store
        .put_request_log(&gone, now - Duration::seconds(1))
        .await
        .unwrap();

    let day = base.date_naive();
    let mine = store
        .request_logs_of_user(user, day, None, 10)
        .await
        .unwrap();
    let day_of = |r: &RequestLogRow| r.at.date_naive();
    if day_of(&a) == day_of(&c) {
        assert_eq!(mine, vec![c.clone(), a.clone()], "newest first, each once");
        let cursor = ListCursor {
            at: c.at,
            id: c.request_id,
        };
        assert_eq!(
            store
                .request_logs_of_user(user, day, Some(cursor), 10)
                .await
                .unwrap(),
            vec![a.clone()]
        );
    }
    let bucket = crate::ports::day_bucket(b.request_id);
    let everyone = store
        .request_logs_of_day(day_of(&b), bucket, None, 1000)
        .await
        .unwrap();
    assert!(
        everyone.contains(&b),
        "anonymous requests are listed by day"
    );
    assert!(everyone.iter().all(|r| r.path != "/gone"));
    assert!(store
        .request_logs_of_user(user, day_of(&gone), None, 10)
        .await
        .unwrap()
        .iter()
        .all(|r| r.request_id != gone.request_id));
}
