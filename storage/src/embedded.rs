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
    AccountStore, CatalogStore, Page, PaymentCreated, PaymentStore, RotateOutcome, Session,
    SessionStore, StoreError,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
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
            let will = stored.in_flight_since();
            if was != will {
                let mut index = txn.open_table(PAYMENTS_WAITING).map_err(unavailable)?;
                if let Some(at) = was {
                    index.remove((instant(at), id)).map_err(unavailable)?;
                }
                if let Some(at) = will {
                    index.insert((instant(at), id), ()).map_err(unavailable)?;
                }
            }
            Ok(true)
        })
        .await
    }

    async fn payments_in_flight_before(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PaymentRecord>, StoreError> {
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
                let (_, id) = key.value();
                if let Some(p) = get_row::<PaymentRecord>(&payments, "payment", id)? {
                    out.push(p);
                }
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
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_store_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
        contract::accounts(&store).await;
        contract::catalog(&store).await;
        contract::sessions(&store, contract::now_millis()).await;
        contract::payments(&store).await;
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
