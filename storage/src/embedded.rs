//! All three ports in one redb database: a file for `ticketing dev`, or memory
//! for tests.
//!
//! Rows are the serde_json of the domain types. Secondary orderings (concerts by
//! creation, schedules by concert, sessions by expiry) are index tables whose
//! keys sort the way the listings need, maintained in the same write transaction
//! as the rows, so an index never disagrees with its rows after a crash.
//!
//! redb allows one write transaction at a time, which is what makes "check the
//! e-mail is free, then claim it" a single atomic decision here: there are no
//! claims that can be left behind by a failed sign-up.

use crate::ports::{
    day_bucket, AccountStore, BookingRow, BookingRows, CatalogStore, ListCursor, Page,
    PaymentCreated, PaymentStore, PaymentToSweep, PaymentViews, RefundView, RequestLogRow,
    RequestLogs, RotateOutcome, Session, SessionStore, StoreError,
};
use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use ticketing_domain::account::{Email, User};
use ticketing_domain::catalog::{Concert, Schedule, Stage};
use ticketing_domain::events::PaymentSnapshot;
use ticketing_domain::ids::{ConcertId, PaymentId, ScheduleId, StageId, UserId};
use ticketing_domain::payment::PaymentRecord;
use uuid::Uuid;

type Json = &'static [u8];
/// (seconds, nanoseconds) of an instant: sorts exactly like `DateTime<Utc>`.
type Instant = (i64, u32);

const USERS: TableDefinition<u128, Json> = TableDefinition::new("users");
const USERS_BY_EMAIL: TableDefinition<&str, u128> = TableDefinition::new("users_by_email");
const USERS_BY_NICKNAME: TableDefinition<&str, u128> = TableDefinition::new("users_by_nickname");
const STAGES: TableDefinition<u128, Json> = TableDefinition::new("stages");
const CONCERTS: TableDefinition<u128, Json> = TableDefinition::new("concerts");
/// Live (not deleted) concerts only, so its length is the listing's total.
const CONCERTS_BY_CREATED: TableDefinition<(Instant, u128), ()> =
    TableDefinition::new("concerts_by_created");
const SCHEDULES: TableDefinition<u128, Json> = TableDefinition::new("schedules");
const PAYMENTS: TableDefinition<u128, Json> = TableDefinition::new("payments");
/// Payments in flight (a charge or a refund not finished), by when they went
/// in flight: what the sweeper finishes.
const PAYMENTS_WAITING: TableDefinition<(Instant, u128), ()> =
    TableDefinition::new("payments_waiting");
/// The payment sink's views, keyed by payment id, with the orderings the
/// listings need (`(day, bucket, time, id)` sorts like the CQL partitions).
const PAYMENT_VIEWS: TableDefinition<u128, Json> = TableDefinition::new("payment_views");
const PAYMENTS_BY_USER: TableDefinition<(u128, Instant, u128), ()> =
    TableDefinition::new("payments_by_user");
const PAYMENTS_BY_DAY: TableDefinition<(i32, i32, Instant, u128), ()> =
    TableDefinition::new("payments_by_day");
const REFUND_VIEWS: TableDefinition<u128, Json> = TableDefinition::new("refund_views");
const REFUNDS_BY_DAY: TableDefinition<(i32, i32, Instant, u128), ()> =
    TableDefinition::new("refunds_by_day");
const BOOKING_ROWS: TableDefinition<u128, Json> = TableDefinition::new("booking_rows");
const BOOKINGS_BY_USER: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("bookings_by_user");
const BOOKINGS_BY_SCHEDULE: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("bookings_by_schedule");
/// Request logs with their expiry, by day bucket and by user and day.
const REQUEST_LOGS: TableDefinition<u128, Json> = TableDefinition::new("request_logs");
const REQUEST_LOGS_BY_DAY: TableDefinition<(i32, i32, Instant, u128), ()> =
    TableDefinition::new("request_logs_by_day");
const REQUEST_LOGS_BY_USER: TableDefinition<(u128, i32, Instant, u128), ()> =
    TableDefinition::new("request_logs_by_user");
/// Expired request logs removed per write, so clean-up never makes one write
/// slow.
const REQUEST_LOG_SWEEP: usize = 64;
const SCHEDULES_BY_CONCERT: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("schedules_by_concert");
const SESSIONS: TableDefinition<u128, Json> = TableDefinition::new("sessions");
const SESSIONS_BY_EXPIRY: TableDefinition<(Instant, u128), ()> =
    TableDefinition::new("sessions_by_expiry");

/// Expired sessions removed per rotation, so that garbage collection never makes
/// one request slow.
const SESSION_SWEEP: usize = 64;

/// The embedded store. Cloning is cheap and every clone shares one database.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(format!("encoding a row: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what} row: {e}")))
}

fn instant(at: DateTime<Utc>) -> Instant {
    (at.timestamp(), at.timestamp_subsec_nanos())
}

fn get_row<T: DeserializeOwned>(
    table: &impl ReadableTable<u128, Json>,
    what: &str,
    id: u128,
) -> Result<Option<T>, StoreError> {
    match table.get(id).map_err(unavailable)? {
        Some(guard) => decode(what, guard.value()).map(Some),
        None => Ok(None),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database file. A file holds one process: a second
    /// open of the same path fails until the first store is dropped.
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        let db = Database::create(path).map_err(unavailable)?;
        Self::init(db)
    }

    /// A store that lives as long as its last clone (tests, throwaway runs).
    pub fn in_memory() -> EmbeddedStore {
        // Nothing but memory allocation can fail on an empty in-memory backend,
        // and running out of memory aborts anyway: a Result would only be noise.
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("creating an in-memory redb database");
        Self::init(db).expect("creating the tables of an in-memory redb database")
    }

    /// Creates every table up front, so read transactions never meet a missing one.
    fn init(db: Database) -> Result<EmbeddedStore, StoreError> {
        let txn = db.begin_write().map_err(unavailable)?;
        {
            txn.open_table(USERS).map_err(unavailable)?;
            txn.open_table(USERS_BY_EMAIL).map_err(unavailable)?;
            txn.open_table(USERS_BY_NICKNAME).map_err(unavailable)?;
            txn.open_table(STAGES).map_err(unavailable)?;
            txn.open_table(CONCERTS).map_err(unavailable)?;
            txn.open_table(CONCERTS_BY_CREATED).map_err(unavailable)?;
            txn.open_table(SCHEDULES).map_err(unavailable)?;
            txn.open_table(SCHEDULES_BY_CONCERT).map_err(unavailable)?;
            txn.open_table(SESSIONS).map_err(unavailable)?;
            txn.open_table(SESSIONS_BY_EXPIRY).map_err(unavailable)?;
            txn.open_table(PAYMENT_VIEWS).map_err(unavailable)?;
            txn.open_table(PAYMENTS_BY_USER).map_err(unavailable)?;
            txn.open_table(PAYMENTS_BY_DAY).map_err(unavailable)?;
            txn.open_table(REFUND_VIEWS).map_err(unavailable)?;
            txn.open_table(REFUNDS_BY_DAY).map_err(unavailable)?;
            txn.open_table(BOOKING_ROWS).map_err(unavailable)?;
            txn.open_table(BOOKINGS_BY_USER).map_err(unavailable)?;
            txn.open_table(BOOKINGS_BY_SCHEDULE).map_err(unavailable)?;
            txn.open_table(REQUEST_LOGS).map_err(unavailable)?;
            txn.open_table(REQUEST_LOGS_BY_DAY).map_err(unavailable)?;
            txn.open_table(REQUEST_LOGS_BY_USER).map_err(unavailable)?;
            txn.open_table(PAYMENTS).map_err(unavailable)?;
            txn.open_table(PAYMENTS_WAITING).map_err(unavailable)?;
        }
        txn.commit().map_err(unavailable)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    /// Runs redb (which blocks on disk I/O and on the single writer lock) off the
    /// async runtime's worker threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| unavailable(format!("task failed: {e}")))?
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            // An error drops `txn` uncommitted, which aborts it: nothing is half-written.
            let out = f(&txn)?;
            txn.commit().map_err(unavailable)?;
            Ok(out)
        })
        .await
    }

    async fn read_row<T>(
        &self,
        table: TableDefinition<'static, u128, Json>,
        what: &'static str,
        id: Uuid,
    ) -> Result<Option<T>, StoreError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let t = txn.open_table(table).map_err(unavailable)?;
            get_row(&t, what, id.as_u128())
        })
        .await
    }
}

/// Drops `claims` entries that point at `owner` under a key other than `keep`:
/// they belonged to an earlier version of the same account.
fn release_other_claim(
    claims: &mut Table<&str, u128>,
    old_key: &str,
    keep: &str,
    owner: u128,
) -> Result<(), StoreError> {
    if old_key == keep {
        return Ok(());
    }
    let held_by_owner = claims.get(old_key).map_err(unavailable)?.map(|g| g.value()) == Some(owner);
    if held_by_owner {
        claims.remove(old_key).map_err(unavailable)?;
    }
    Ok(())
}

#[async_trait]
impl AccountStore for EmbeddedStore {
    /// E-mail, nickname and row are written in one transaction, so a failed
    /// sign-up leaves nothing behind. Inserting the same account again (a retried
    /// request) succeeds and rewrites the identical row.
    async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        let user = user.clone();
        self.write(move |txn| {
            let id = user.user_id.as_uuid().as_u128();
            let email = user.email.as_str();
            let nickname = user.nickname.canonical();
            let mut by_email = txn.open_table(USERS_BY_EMAIL).map_err(unavailable)?;
            let mut by_nickname = txn.open_table(USERS_BY_NICKNAME).map_err(unavailable)?;
            let mut users = txn.open_table(USERS).map_err(unavailable)?;

            let email_owner = by_email.get(email).map_err(unavailable)?.map(|g| g.value());
            if email_owner.is_some_and(|owner| owner != id) {
                return Err(StoreError::EmailTaken);
            }
            let nickname_owner = by_nickname
                .get(nickname.as_str())
                .map_err(unavailable)?
                .map(|g| g.value());
            if nickname_owner.is_some_and(|owner| owner != id) {
                return Err(StoreError::NicknameTaken);
            }
            if let Some(previous) = get_row::<User>(&users, "user", id)? {
                release_other_claim(&mut by_email, previous.email.as_str(), email, id)?;
                release_other_claim(
                    &mut by_nickname,
                    &previous.nickname.canonical(),
                    &nickname,
                    id,
                )?;
            }
            by_email.insert(email, id).map_err(unavailable)?;
            by_nickname
                .insert(nickname.as_str(), id)
                .map_err(unavailable)?;
            users
                .insert(id, encode(&user)?.as_slice())
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let email = email.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let by_email = txn.open_table(USERS_BY_EMAIL).map_err(unavailable)?;
            let Some(id) = by_email
                .get(email.as_str())
                .map_err(unavailable)?
                .map(|g| g.value())
            else {
                return Ok(None);
            };
            let users = txn.open_table(USERS).map_err(unavailable)?;
            match get_row(&users, "user", id)? {
                Some(user) => Ok(Some(user)),
                None => Err(StoreError::Corrupt(format!(
                    "e-mail claim points at missing user {}",
                    Uuid::from_u128(id)
                ))),
            }
        })
        .await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.read_row(USERS, "user", id.as_uuid()).await
    }
}

#[async_trait]
impl CatalogStore for EmbeddedStore {
    /// Every `put_*` keeps the version with the latest `updated_at`, as the CQL
    /// store's write timestamps do, so a late replay never rolls a row back.
    async fn put_stage(&self, stage: &Stage) -> Result<(), StoreError> {
        let id = stage.stage_id.as_uuid().as_u128();
        let row = encode(stage)?;
        let updated_at = stage.audit.updated_at;
        self.write(move |txn| {
            let mut stages = txn.open_table(STAGES).map_err(unavailable)?;
            let previous = get_row::<Stage>(&stages, "stage", id)?;
            if previous.is_some_and(|p| p.audit.updated_at > updated_at) {
                return Ok(());
            }
            stages.insert(id, row.as_slice()).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn put_concert(&self, concert: &Concert) -> Result<(), StoreError> {
        let id = concert.concert_id.as_uuid().as_u128();
        let row = encode(concert)?;
        let created = instant(concert.audit.created_at);
        let live = !concert.audit.is_deleted();
        let updated_at = concert.audit.updated_at;
        self.write(move |txn| {
            let mut concerts = txn.open_table(CONCERTS).map_err(unavailable)?;
            let mut listing = txn.open_table(CONCERTS_BY_CREATED).map_err(unavailable)?;
            let previous = get_row::<Concert>(&concerts, "concert", id)?;
            if previous
                .as_ref()
                .is_some_and(|p| p.audit.updated_at > updated_at)
            {
                return Ok(()); // a late replay of an older version
            }
            // The previous version's listing key may differ (other creation time,
            // or now deleted): remove it so the listing holds each concert once.
            if let Some(previous) = previous {
                listing
                    .remove((instant(previous.audit.created_at), id))
                    .map_err(unavailable)?;
            }
            concerts.insert(id, row.as_slice()).map_err(unavailable)?;
            if live {
                listing.insert((created, id), ()).map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        let id = schedule.schedule_id.as_uuid().as_u128();
        let concert = schedule.concert_id.as_uuid().as_u128();
        let row = encode(schedule)?;
        let updated_at = schedule.audit.updated_at;
        self.write(move |txn| {
            let mut schedules = txn.open_table(SCHEDULES).map_err(unavailable)?;
            let mut by_concert = txn.open_table(SCHEDULES_BY_CONCERT).map_err(unavailable)?;
            let previous = get_row::<Schedule>(&schedules, "schedule", id)?;
            if previous
                .as_ref()
                .is_some_and(|p| p.audit.updated_at > updated_at)
            {
                return Ok(());
            }
            if let Some(previous) = previous {
                by_concert
                    .remove((previous.concert_id.as_uuid().as_u128(), id))
                    .map_err(unavailable)?;
            }
            schedules.insert(id, row.as_slice()).map_err(unavailable)?;
            by_concert.insert((concert, id), ()).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn stage(&self, id: StageId) -> Result<Option<Stage>, StoreError> {
        self.read_row(STAGES, "stage", id.as_uuid()).await
    }

    async fn concert(&self, id: ConcertId) -> Result<Option<Concert>, StoreError> {
        self.read_row(CONCERTS, "concert", id.as_uuid()).await
    }

    async fn schedule(&self, id: ScheduleId) -> Result<Option<Schedule>, StoreError> {
        self.read_row(SCHEDULES, "schedule", id.as_uuid()).await
    }

    async fn schedules_of(&self, concert: ConcertId) -> Result<Vec<Schedule>, StoreError> {
        let concert = concert.as_uuid().as_u128();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let by_concert = txn.open_table(SCHEDULES_BY_CONCERT).map_err(unavailable)?;
            let schedules = txn.open_table(SCHEDULES).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in by_concert
                .range((concert, 0)..=(concert, u128::MAX))
                .map_err(unavailable)?
            {
                let (key, _) = entry.map_err(unavailable)?;
                let id = key.value().1;
                let schedule: Schedule = get_row(&schedules, "schedule", id)?.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "schedule index points at missing {}",
                        Uuid::from_u128(id)
                    ))
                })?;
                out.push(schedule);
            }
            // A concert has a handful of schedules: sorting here is cheaper than
            // keeping a second index keyed by date and time in step.
            out.sort_by_key(|s: &Schedule| (s.concert_date, s.concert_time, s.schedule_id));
            Ok(out)
        })
        .await
    }

    async fn list_concerts(&self, page: u32, size: u32) -> Result<Page<Concert>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let listing = txn.open_table(CONCERTS_BY_CREATED).map_err(unavailable)?;
            let concerts = txn.open_table(CONCERTS).map_err(unavailable)?;
            let total = listing.len().map_err(unavailable)?;
            let skip = u64::from(page) * u64::from(size);
            let mut items = Vec::new();
            if skip < total {
                // Keys sort oldest first; reversed they give newest first, ties by id descending.
                for entry in listing
                    .iter()
                    .map_err(unavailable)?
                    .rev()
                    .skip(skip as usize)
                    .take(size as usize)
                {
                    let (key, _) = entry.map_err(unavailable)?;
                    let id = key.value().1;
                    let concert = get_row(&concerts, "concert", id)?.ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "concert index points at missing {}",
                            Uuid::from_u128(id)
                        ))
                    })?;
                    items.push(concert);
                }
            }
            Ok(Page {
                items,
                page,
                size,
                total,
            })
        })
        .await
    }
}

#[async_trait]
impl PaymentStore for EmbeddedStore {
    async fn create_payment(&self, payment: &PaymentRecord) -> Result<PaymentCreated, StoreError> {
        let id = payment.payment_id.as_uuid().as_u128();
        let row = encode(payment)?;
        let waiting = payment.in_flight_since().map(instant);
        self.write(move |txn| {
            let mut payments = txn.open_table(PAYMENTS).map_err(unavailable)?;
            if let Some(existing) = get_row::<PaymentRecord>(&payments, "payment", id)? {
                return Ok(PaymentCreated::Existing(Box::new(existing)));
            }
            payments.insert(id, row.as_slice()).map_err(unavailable)?;
            if let Some(at) = waiting {
                let mut index = txn.open_table(PAYMENTS_WAITING).map_err(unavailable)?;
                index.insert((at, id), ()).map_err(unavailable)?;
            }
            Ok(PaymentCreated::Created)
        })
        .await
    }

    async fn payment(&self, id: PaymentId) -> Result<Option<PaymentRecord>, StoreError> {
        self.read_row(PAYMENTS, "payment", id.as_uuid()).await
    }

    async fn update_payment(
        &self,
        expected: &PaymentRecord,
        next: &PaymentRecord,
    ) -> Result<bool, StoreError> {
        let id = next.payment_id.as_uuid().as_u128();
        let expected = expected.revision;
        let next = next.clone();
        self.write(move |txn| {
            let mut payments = txn.open_table(PAYMENTS).map_err(unavailable)?;
            let Some(mut stored) = get_row::<PaymentRecord>(&payments, "payment", id)? else {
                return Ok(false);
            };
            if stored.revision != expected {
                return Ok(false);
            }
            let was = stored.in_flight_since();
            // The identity, the total and the card are fixed at creation.
            stored.ledger.status = next.ledger.status;
            stored.ledger.refund_price = next.ledger.refund_price;
            stored.payment_key = next.payment_key;
            stored.refunds = next.refunds;
            stored.updated_at = next.updated_at;
            stored.revision = expected + 1;
            payments
                .insert(id, encode(&stored)?.as_slice())
                .map_err(unavailable)?;
            // The entry of `was` stays until the change is published
            // (`forget_in_flight`), so a crash before that is swept too.
            let will = stored.in_flight_since();
            if let Some(at) = will.filter(|w| Some(*w) != was) {
                let mut index = txn.open_table(PAYMENTS_WAITING).map_err(unavailable)?;
                index.insert((instant(at), id), ()).map_err(unavailable)?;
            }
            Ok(true)
        })
        .await
    }

    async fn payments_to_sweep(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PaymentToSweep>, StoreError> {
        let before = instant(before);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(PAYMENTS_WAITING).map_err(unavailable)?;
            let payments = txn.open_table(PAYMENTS).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in index.range(..(before, 0)).map_err(unavailable)? {
                if out.len() >= limit {
                    break;
                }
                let (key, _) = entry.map_err(unavailable)?;
                let ((secs, nanos), id) = key.value();
                if let Some(payment) = get_row::<PaymentRecord>(&payments, "payment", id)? {
                    let since = DateTime::from_timestamp(secs, nanos)
                        .ok_or_else(|| StoreError::Corrupt("payments_waiting time".into()))?;
                    out.push(PaymentToSweep { since, payment });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn forget_in_flight(
        &self,
        id: PaymentId,
        since: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let key = (instant(since), id.as_uuid().as_u128());
        self.write(move |txn| {
            let mut index = txn.open_table(PAYMENTS_WAITING).map_err(unavailable)?;
            index.remove(key).map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}

fn day_number(day: NaiveDate) -> i32 {
    day.num_days_from_ce()
}

/// The newest-first walk of one `(day, bucket)` of a by-day index, below
/// `before`.
fn day_keys(
    index: &impl ReadableTable<(i32, i32, Instant, u128), ()>,
    day: NaiveDate,
    bucket: i32,
    before: Option<ListCursor>,
    limit: usize,
) -> Result<Vec<u128>, StoreError> {
    let d = day_number(day);
    let low = (d, bucket, (i64::MIN, 0), 0);
    let high = match before {
        Some(c) => (d, bucket, instant(c.at), c.id.as_u128()),
        None => (d, bucket.saturating_add(1), (i64::MIN, 0), 0),
    };
    let mut out = Vec::new();
    for entry in index.range(low..high).map_err(unavailable)?.rev() {
        if out.len() >= limit {
            break;
        }
        let (key, _) = entry.map_err(unavailable)?;
        out.push(key.value().3);
    }
    Ok(out)
}

#[async_trait]
impl PaymentViews for EmbeddedStore {
    async fn put_payment_view(&self, payment: &PaymentSnapshot) -> Result<(), StoreError> {
        let p = payment.clone();
        self.write(move |txn| {
            let id = p.payment_id.as_uuid().as_u128();
            let mut views = txn.open_table(PAYMENT_VIEWS).map_err(unavailable)?;
            // A newer revision stays: replays in any order end at the newest.
            let newer = get_row::<PaymentSnapshot>(&views, "payment view", id)?
                .is_some_and(|old| old.revision > p.revision);
            if !newer {
                views
                    .insert(id, encode(&p)?.as_slice())
                    .map_err(unavailable)?;
            }
            // The keys never change: created_at and the ids are fixed.
            let created = instant(p.created_at);
            txn.open_table(PAYMENTS_BY_USER)
                .map_err(unavailable)?
                .insert((p.user_id.as_uuid().as_u128(), created, id), ())
                .map_err(unavailable)?;
            txn.open_table(PAYMENTS_BY_DAY)
                .map_err(unavailable)?
                .insert(
                    (
                        day_number(p.created_at.date_naive()),
                        day_bucket(p.payment_id.as_uuid()),
                        created,
                        id,
                    ),
                    (),
                )
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn put_refund_view(&self, refund: &RefundView) -> Result<(), StoreError> {
        let r = refund.clone();
        self.write(move |txn| {
            let id = r.refund.refund_id.as_uuid();
            let at = r.refunded_at();
            let mut views = txn.open_table(REFUND_VIEWS).map_err(unavailable)?;
            views
                .insert(id.as_u128(), encode(&r)?.as_slice())
                .map_err(unavailable)?;
            txn.open_table(REFUNDS_BY_DAY)
                .map_err(unavailable)?
                .insert(
                    (
                        day_number(at.date_naive()),
                        day_bucket(id),
                        instant(at),
                        id.as_u128(),
                    ),
                    (),
                )
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn payments_of_user(
        &self,
        user: UserId,
        limit: usize,
    ) -> Result<Vec<PaymentSnapshot>, StoreError> {
        let u = user.as_uuid().as_u128();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(PAYMENTS_BY_USER).map_err(unavailable)?;
            let views = txn.open_table(PAYMENT_VIEWS).map_err(unavailable)?;
            let mut out = Vec::new();
            let range = index
                .range((u, (i64::MIN, 0), 0)..=(u, (i64::MAX, u32::MAX), u128::MAX))
                .map_err(unavailable)?;
            for entry in range.rev().take(limit) {
                let (key, _) = entry.map_err(unavailable)?;
                out.extend(get_row::<PaymentSnapshot>(
                    &views,
                    "payment view",
                    key.value().2,
                )?);
            }
            Ok(out)
        })
        .await
    }

    async fn payments_of_day(
        &self,
        day: NaiveDate,
        bucket: i32,
        before: Option<ListCursor>,
        limit: usize,
    ) -> Result<Vec<PaymentSnapshot>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(PAYMENTS_BY_DAY).map_err(unavailable)?;
            let views = txn.open_table(PAYMENT_VIEWS).map_err(unavailable)?;
            let mut out = Vec::new();
            for id in day_keys(&index, day, bucket, before, limit)? {
                out.extend(get_row::<PaymentSnapshot>(&views, "payment view", id)?);
            }
            Ok(out)
        })
        .await
    }

    async fn refunds_of_day(
        &self,
        day: NaiveDate,
        bucket: i32,
        before: Option<ListCursor>,
        limit: usize,
    ) -> Result<Vec<RefundView>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(REFUNDS_BY_DAY).map_err(unavailable)?;
            let views = txn.open_table(REFUND_VIEWS).map_err(unavailable)?;
            let mut out = Vec::new();
            for id in day_keys(&index, day, bucket, before, limit)? {
                out.extend(get_row::<RefundView>(&views, "refund view", id)?);
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl BookingRows for EmbeddedStore {
    async fn put_booking(&self, booking: &BookingRow) -> Result<(), StoreError> {
        let b = booking.clone();
        self.write(move |txn| {
            let id = b.booking_id.as_uuid().as_u128();
            let mut rows = txn.open_table(BOOKING_ROWS).map_err(unavailable)?;
            let old = get_row::<BookingRow>(&rows, "booking", id)?;
            if old.as_ref().is_some_and(|o| o.version > b.version) {
                // Older than what is there; only a creation time it lacks counts.
                let mut o = old.expect("checked");
                if o.created_at.is_none() && b.created_at.is_some() {
                    o.created_at = b.created_at;
                    rows.insert(id, encode(&o)?.as_slice())
                        .map_err(unavailable)?;
                }
                return Ok(());
            }
            let mut row = b.clone();
            if row.created_at.is_none() {
                row.created_at = old.and_then(|o| o.created_at);
            }
            rows.insert(id, encode(&row)?.as_slice())
                .map_err(unavailable)?;
            txn.open_table(BOOKINGS_BY_USER)
                .map_err(unavailable)?
                .insert((b.user_id.as_uuid().as_u128(), id), ())
                .map_err(unavailable)?;
            txn.open_table(BOOKINGS_BY_SCHEDULE)
                .map_err(unavailable)?
                .insert((b.schedule_id.as_uuid().as_u128(), id), ())
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn bookings_of_user(&self, user: UserId) -> Result<Vec<BookingRow>, StoreError> {
        self.bookings_by(BOOKINGS_BY_USER, user.as_uuid()).await
    }

    async fn bookings_of_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<Vec<BookingRow>, StoreError> {
        self.bookings_by(BOOKINGS_BY_SCHEDULE, schedule.as_uuid())
            .await
    }
}

/// A request log row as kept here: with its expiry.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredRequestLog {
    row: RequestLogRow,
    expires_at: DateTime<Utc>,
}

type DayKey = (i32, i32, Instant, u128);
type UserKey = (u128, i32, Instant, u128);

fn request_log_keys(r: &RequestLogRow) -> (DayKey, Option<UserKey>) {
    let id = r.request_id.as_u128();
    let day = day_number(r.at.date_naive());
    let at = instant(r.at);
    (
        (day, day_bucket(r.request_id), at, id),
        r.user_id.map(|u| (u.as_uuid().as_u128(), day, at, id)),
    )
}

/// The live rows of `ids`, in order.
fn live_request_logs(
    rows: &impl ReadableTable<u128, Json>,
    ids: impl IntoIterator<Item = u128>,
    now: DateTime<Utc>,
) -> Result<Vec<RequestLogRow>, StoreError> {
    let mut out = Vec::new();
    for id in ids {
        if let Some(stored) = get_row::<StoredRequestLog>(rows, "request log", id)? {
            if stored.expires_at > now {
                out.push(stored.row);
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl RequestLogs for EmbeddedStore {
    async fn put_request_log(
        &self,
        row: &RequestLogRow,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        if expires_at <= now {
            return Ok(());
        }
        let stored = StoredRequestLog {
            row: row.clone(),
            expires_at,
        };
        self.write(move |txn| {
            let mut rows = txn.open_table(REQUEST_LOGS).map_err(unavailable)?;
            let mut by_day = txn.open_table(REQUEST_LOGS_BY_DAY).map_err(unavailable)?;
            let mut by_user = txn.open_table(REQUEST_LOGS_BY_USER).map_err(unavailable)?;
            // Oldest first: drop a few rows that have expired.
            let mut expired = Vec::new();
            for entry in by_day.iter().map_err(unavailable)?.take(REQUEST_LOG_SWEEP) {
                let (key, _) = entry.map_err(unavailable)?;
                let key = key.value();
                match get_row::<StoredRequestLog>(&rows, "request log", key.3)? {
                    Some(old) if old.expires_at > now => break,
                    old => expired.push((key, old)),
                }
            }
            for (key, old) in expired {
                rows.remove(key.3).map_err(unavailable)?;
                by_day.remove(key).map_err(unavailable)?;
                if let Some(user_key) = old.and_then(|o| request_log_keys(&o.row).1) {
                    by_user.remove(user_key).map_err(unavailable)?;
                }
            }
            let (day_key, user_key) = request_log_keys(&stored.row);
            rows.insert(stored.row.request_id.as_u128(), encode(&stored)?.as_slice())
                .map_err(unavailable)?;
            by_day.insert(day_key, ()).map_err(unavailable)?;
            if let Some(k) = user_key {
                by_user.insert(k, ()).map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn request_logs_of_day(
        &self,
        day: NaiveDate,
        bucket: i32,
        before: Option<ListCursor>,
        limit: usize,
    ) -> Result<Vec<RequestLogRow>, StoreError> {
        let now = Utc::now();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(REQUEST_LOGS_BY_DAY).map_err(unavailable)?;
            let rows = txn.open_table(REQUEST_LOGS).map_err(unavailable)?;
            live_request_logs(&rows, day_keys(&index, day, bucket, before, limit)?, now)
        })
        .await
    }

    async fn request_logs_of_user(
        &self,
        user: UserId,
        day: NaiveDate,
        before: Option<ListCursor>,
        limit: usize,
    ) -> Result<Vec<RequestLogRow>, StoreError> {
        let now = Utc::now();
        let u = user.as_uuid().as_u128();
        let d = day_number(day);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(REQUEST_LOGS_BY_USER).map_err(unavailable)?;
            let rows = txn.open_table(REQUEST_LOGS).map_err(unavailable)?;
            let low = (u, d, (i64::MIN, 0), 0);
            let high = match before {
                Some(c) => (u, d, instant(c.at), c.id.as_u128()),
                None => (u, d.saturating_add(1), (i64::MIN, 0), 0),
            };
            let mut ids = Vec::new();
            for entry in index
                .range(low..high)
                .map_err(unavailable)?
                .rev()
                .take(limit)
            {
                let (key, _) = entry.map_err(unavailable)?;
                ids.push(key.value().3);
            }
            live_request_logs(&rows, ids, now)
        })
        .await
    }
}

impl EmbeddedStore {
    /// The bookings under one partition of a by-user or by-schedule index,
    /// by booking id like the CQL tables.
    async fn bookings_by(
        &self,
        index: TableDefinition<'static, (u128, u128), ()>,
        key: Uuid,
    ) -> Result<Vec<BookingRow>, StoreError> {
        let k = key.as_u128();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(index).map_err(unavailable)?;
            let rows = txn.open_table(BOOKING_ROWS).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in index.range((k, 0)..=(k, u128::MAX)).map_err(unavailable)? {
                let (key, _) = entry.map_err(unavailable)?;
                out.extend(get_row::<BookingRow>(&rows, "booking", key.value().1)?);
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn create(&self, session: &Session) -> Result<(), StoreError> {
        let id = session.session_id.as_u128();
        let row = encode(session)?;
        let expiry = instant(session.expires_at);
        self.write(move |txn| {
            let mut sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
            let mut by_expiry = txn.open_table(SESSIONS_BY_EXPIRY).map_err(unavailable)?;
            if let Some(previous) = get_row::<Session>(&sessions, "session", id)? {
                by_expiry
                    .remove((instant(previous.expires_at), id))
                    .map_err(unavailable)?;
            }
            sessions.insert(id, row.as_slice()).map_err(unavailable)?;
            by_expiry.insert((expiry, id), ()).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn rotate(
        &self,
        session_id: Uuid,
        presented_hash: &str,
        next_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<RotateOutcome, StoreError> {
        let id = session_id.as_u128();
        let presented = presented_hash.to_string();
        let next = next_hash.to_string();
        self.write(move |txn| {
            let mut sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
            let mut by_expiry = txn.open_table(SESSIONS_BY_EXPIRY).map_err(unavailable)?;
            sweep_expired(&mut sessions, &mut by_expiry, now)?;
            let Some(mut session) = get_row::<Session>(&sessions, "session", id)? else {
                return Ok(RotateOutcome::Unknown);
            };
            if now >= session.expires_at {
                remove_session(&mut sessions, &mut by_expiry, &session)?;
                return Ok(RotateOutcome::Unknown);
            }
            if session.refresh_hash != presented {
                remove_session(&mut sessions, &mut by_expiry, &session)?;
                return Ok(RotateOutcome::Reused);
            }
            session.refresh_hash = next;
            sessions
                .insert(id, encode(&session)?.as_slice())
                .map_err(unavailable)?;
            Ok(RotateOutcome::Rotated(session))
        })
        .await
    }

    async fn revoke(&self, session_id: Uuid) -> Result<(), StoreError> {
        let id = session_id.as_u128();
        self.write(move |txn| {
            let mut sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
            let mut by_expiry = txn.open_table(SESSIONS_BY_EXPIRY).map_err(unavailable)?;
            if let Some(session) = get_row::<Session>(&sessions, "session", id)? {
                remove_session(&mut sessions, &mut by_expiry, &session)?;
            }
            Ok(())
        })
        .await
    }

    async fn is_active(&self, session_id: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let session: Option<Session> = self.read_row(SESSIONS, "session", session_id).await?;
        Ok(session.is_some_and(|s| now < s.expires_at))
    }
}

fn remove_session(
    sessions: &mut Table<u128, Json>,
    by_expiry: &mut Table<(Instant, u128), ()>,
    session: &Session,
) -> Result<(), StoreError> {
    let id = session.session_id.as_u128();
    sessions.remove(id).map_err(unavailable)?;
    by_expiry
        .remove((instant(session.expires_at), id))
        .map_err(unavailable)?;
    Ok(())
}

/// Sessions nobody logs out of would otherwise stay in the file for ever.
fn sweep_expired(
    sessions: &mut Table<u128, Json>,
    by_expiry: &mut Table<(Instant, u128), ()>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let due: Vec<(Instant, u128)> = by_expiry
        .range(..=(instant(now), u128::MAX))
        .map_err(unavailable)?
        .take(SESSION_SWEEP)
        .map(|entry| entry.map(|(key, _)| key.value()).map_err(unavailable))
        .collect::<Result<_, _>>()?;
    for key in due {
        by_expiry.remove(key).map_err(unavailable)?;
        sessions.remove(key.1).map_err(unavailable)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract;

    #[tokio::test]
    async fn in_memory_store_keeps_the_contract() {
        let store = EmbeddedStore::in_memory();
        contract::accounts(&store).await;
        contract::catalog(&store).await;
        contract::sessions(&store, contract::now_millis()).await;
        contract::payments(&store).await;
        contract::payment_views(&store).await;
        contract::booking_rows(&store).await;
        contract::request_logs(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_store_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
        contract::accounts(&store).await;
        contract::catalog(&store).await;
        contract::sessions(&store, contract::now_millis()).await;
        contract::payments(&store).await;
        contract::payment_views(&store).await;
        contract::booking_rows(&store).await;
        contract::request_logs(&store).await;
    }

    #[tokio::test]
    async fn everything_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let now = contract::now_millis();
        let ann = contract::user("ann@example.com", "Ann");
        let hall = contract::stage(ann.user_id);
        let show = contract::concert(&hall, contract::t0(), "show");
        let slot = contract::schedule(&show, "2026-12-01", "19:00:00");
        let session = Session {
            session_id: Uuid::now_v7(),
            user_id: ann.user_id,
            role: ann.role,
            refresh_hash: "h0".into(),
            expires_at: now + chrono::Duration::hours(1),
        };
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store.insert_user(&ann).await.unwrap();
            store.put_stage(&hall).await.unwrap();
            store.put_concert(&show).await.unwrap();
            store.put_schedule(&slot).await.unwrap();
            store.create(&session).await.unwrap();
            assert!(matches!(
                store
                    .rotate(session.session_id, "h0", "h1", now)
                    .await
                    .unwrap(),
                RotateOutcome::Rotated(_)
            ));
        }
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(
            store.user_by_email(&ann.email).await.unwrap(),
            Some(ann.clone())
        );
        assert!(matches!(
            store
                .insert_user(&contract::user("ANN@example.com", "x1"))
                .await,
            Err(StoreError::EmailTaken)
        ));
        assert_eq!(store.stage(hall.stage_id).await.unwrap(), Some(hall));
        let page = store.list_concerts(0, 10).await.unwrap();
        assert_eq!((page.items, page.total), (vec![show.clone()], 1));
        assert_eq!(
            store.schedules_of(show.concert_id).await.unwrap(),
            vec![slot]
        );
        assert!(store.is_active(session.session_id, now).await.unwrap());
        assert_eq!(
            store
                .rotate(session.session_id, "h0", "h2", now)
                .await
                .unwrap(),
            RotateOutcome::Reused
        );
    }

    #[tokio::test]
    async fn rotation_sweeps_expired_sessions() {
        let store = EmbeddedStore::in_memory();
        let now = contract::now_millis();
        let old = Session {
            session_id: Uuid::now_v7(),
            user_id: UserId::from_uuid(Uuid::now_v7()),
            role: ticketing_domain::account::Role::User,
            refresh_hash: "h".into(),
            expires_at: now - chrono::Duration::minutes(1),
        };
        store.create(&old).await.unwrap();
        assert_eq!(
            store.rotate(Uuid::now_v7(), "a", "b", now).await.unwrap(),
            RotateOutcome::Unknown
        );
        let left = store
            .blocking(|db| {
                let txn = db.begin_read().map_err(unavailable)?;
                let sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
                let by_expiry = txn.open_table(SESSIONS_BY_EXPIRY).map_err(unavailable)?;
                Ok((
                    sessions.len().map_err(unavailable)?,
                    by_expiry.len().map_err(unavailable)?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(left, (0, 0));
    }
}
