//! Accounts and the catalog in CQL, for ScyllaDB and Apache Cassandra 5 alike.
//!
//! Only CQL both engines accept: plain tables, lightweight transactions (LWT),
//! logged batches and client-supplied write timestamps. No secondary or SAI
//! indexes, materialized views, counters, or `now()`/`uuid()` in writes.
//!
//! # Sign-up: claims, then the account row as the single commit point
//!
//! Uniqueness lives in two claim tables, `users_by_email` and
//! `users_by_nickname` (key → user_id), written only with LWT. A sign-up of
//! account A:
//!
//! 1. claims the e-mail (`INSERT … IF NOT EXISTS`);
//! 2. claims the nickname; if that fails, releases the e-mail claim
//!    (`DELETE … IF user_id = A`, the compensation) and answers `NicknameTaken`;
//! 3. commits by creating the `users` row with `INSERT … IF NOT EXISTS`.
//!
//! Readers only believe a claim whose account row exists, so an account exists
//! from step 3 on. A crash between steps leaves a claim pointing to a missing
//! row, which would block the e-mail or nickname for ever. Such a claim is
//! stale once it is older than [`CqlOptions::claim_stale_after`] (measured
//! against the new sign-up's `created_at`), and the next sign-up that wants it
//! first *fences* the old account: `INSERT INTO users (user_id, abandoned)
//! VALUES (old, true) IF NOT EXISTS`. Fencing and the old sign-up's own commit
//! are LWTs on the same partition, so exactly one wins: either the old account
//! committed (the claim is live and stays), or it can never commit (its commit
//! finds the fence row and gives up), and the claim is taken over with
//! `UPDATE … IF user_id = old`. Checking "the row is missing" and then taking
//! the claim without a fence would race with a slow but live sign-up and could
//! give two accounts one e-mail; the fence closes that window.
//!
//! A sign-up that stalls longer than the stale period may thus be fenced and
//! fail with `Unavailable`; the caller retries with a fresh account id.
//! An LWT whose outcome is unknown (timeout, contention) is resolved by reading
//! the partition at SERIAL consistency, never by guessing.
//!
//! # Catalog
//!
//! Every row is an idempotent upsert written with the row's `updated_at` as its
//! write timestamp, so replaying an event rewrites identical cells, and an
//! older version arriving late never overwrites a newer one. The listing copy
//! (`concerts_by_created`) and the per-concert schedule copy are written in the
//! same logged batch as the row.
//!
//! CQL `timestamp` keeps milliseconds: instants read back are truncated to the
//! millisecond.

mod request_logs;
mod views;

use crate::ports::{
    AccountStore, CatalogStore, Page, PaymentCreated, PaymentStore, PaymentToSweep, StoreError,
};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use futures::StreamExt;
use scylla::client::session::Session as CqlSession;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::query_result::QueryResult;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::unprepared::Statement;
use scylla::statement::Consistency;
use scylla::value::{CqlValue, Row};
use scylla::{DeserializeRow, SerializeRow};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use ticketing_domain::account::{Email, Nickname, Role, User};
use ticketing_domain::audit::{Audit, Deletion};
use ticketing_domain::catalog::{Concert, Schedule, SeatGrid, Stage};
use ticketing_domain::ids::{BookingId, ConcertId, PaymentId, ScheduleId, StageId, UserId};
use ticketing_domain::payment::{PaymentLedger, PaymentRecord, PaymentStatus};
use uuid::Uuid;

/// One schema change. Files are applied in `version` order and recorded in
/// `schema_migrations`; an applied file must never be edited (its checksum is
/// checked), only followed by a new one.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub cql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        cql: include_str!("../migrations/0001_init.cql"),
    },
    Migration {
        version: 2,
        name: "payments",
        cql: include_str!("../migrations/0002_payments.cql"),
    },
    Migration {
        version: 3,
        name: "payment_views",
        cql: include_str!("../migrations/0003_payment_views.cql"),
    },
    Migration {
        version: 4,
        name: "request_logs",
        cql: include_str!("../migrations/0004_request_logs.cql"),
    },
];

pub const DEFAULT_REPLICATION_FACTOR: u32 = 1;

/// Buckets of `concerts_by_created`. Changing it needs a migration that
/// rewrites the listing.
const LISTING_BUCKETS: i32 = 4;
/// Rows fetched per round trip when walking the listing.
const LISTING_PAGE: i32 = 500;
/// Attempts at one LWT step before giving up with `Unavailable`.
const LWT_ATTEMPTS: usize = 8;
/// Schema changes wait for every node to agree, which is slow on small machines.
const DDL_TIMEOUT: Duration = Duration::from_secs(120);
/// The migration lock expires on its own if its holder dies.
const MIGRATION_LOCK_TTL_SECS: i32 = 300;
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
pub struct CqlOptions {
    /// Used only when the keyspace is created; an existing keyspace keeps its own.
    pub replication_factor: u32,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub schema_agreement_timeout: Duration,
    /// How long a claim without its account row is presumed to belong to a
    /// sign-up still in flight.
    pub claim_stale_after: chrono::Duration,
}

impl Default for CqlOptions {
    fn default() -> Self {
        Self {
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            schema_agreement_timeout: Duration::from_secs(120),
            claim_stale_after: chrono::Duration::minutes(1),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("cql: {e}"))
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("cql: {e}"))
}

// ---------------------------------------------------------------------------
// Migrations
// ---------------------------------------------------------------------------

/// The keyspace name is spliced into CQL text (it cannot be a bind value), so
/// it is restricted to what an unquoted CQL identifier allows.
fn check_keyspace_name(keyspace: &str) -> Result<(), StoreError> {
    let mut chars = keyspace.chars();
    let ok = keyspace.len() <= 48
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "invalid keyspace name {keyspace:?}: letters, digits and '_', starting with a letter, at most 48"
        )))
    }
}

/// The statements of a migration file: `--` comments dropped, split on `;`.
pub fn statements(cql: &str) -> Vec<String> {
    let text: Vec<&str> = cql
        .lines()
        .map(|line| line.find("--").map_or(line, |at| &line[..at]))
        .collect();
    text.join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn checksum(cql: &str) -> String {
    Sha256::digest(cql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn ddl(session: &CqlSession, cql: &str) -> Result<(), StoreError> {
    let mut statement = Statement::new(cql);
    statement.set_request_timeout(Some(DDL_TIMEOUT));
    session
        .query_unpaged(statement, ())
        .await
        .map_err(|e| unavailable(format!("schema change failed: {e}")))?;
    Ok(())
}

/// The `[applied]` flag of an LWT result.
fn applied(result: QueryResult) -> Result<bool, StoreError> {
    let rows = result.into_rows_result().map_err(corrupt)?;
    let (index, _) = rows
        .column_specs()
        .get_by_name("[applied]")
        .ok_or_else(|| corrupt("LWT result without [applied]"))?;
    let row: Row = rows.first_row().map_err(corrupt)?;
    match row.columns.get(index) {
        Some(Some(CqlValue::Boolean(applied))) => Ok(*applied),
        _ => Err(corrupt("LWT [applied] is not a boolean")),
    }
}

/// Creates the keyspace (SimpleStrategy, replication factor 1) if needed and
/// applies the pending migrations; leaves `session` using the keyspace.
/// Returns the versions applied by this call (none when up to date).
pub async fn migrate(session: &CqlSession, keyspace: &str) -> Result<Vec<i32>, StoreError> {
    migrate_with_replication(session, keyspace, DEFAULT_REPLICATION_FACTOR).await
}

/// [`migrate`] with the replication factor of a keyspace created here.
///
/// Concurrent callers (several processes starting at once) serialise on an LWT
/// lease, so schema changes never race each other; every statement is also
/// idempotent, so a run cut short is simply repeated.
pub async fn migrate_with_replication(
    session: &CqlSession,
    keyspace: &str,
    replication_factor: u32,
) -> Result<Vec<i32>, StoreError> {
    check_keyspace_name(keyspace)?;
    if replication_factor == 0 {
        return Err(StoreError::Unavailable(
            "replication factor must be at least 1".into(),
        ));
    }
    ddl(
        session,
        &format!(
            "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
             {{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}"
        ),
    )
    .await?;
    session
        .use_keyspace(keyspace, false)
        .await
        .map_err(unavailable)?;
    ddl(
        session,
        "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version int PRIMARY KEY, name text, checksum text, applied_at timestamp)",
    )
    .await?;
    ddl(
        session,
        "CREATE TABLE IF NOT EXISTS schema_migration_lock \
         (name text PRIMARY KEY, owner uuid, acquired_at timestamp)",
    )
    .await?;

    let owner = Uuid::new_v4();
    acquire_migration_lock(session, owner).await?;
    let outcome = apply_pending(session).await;
    // Best effort: if this fails, the lease's TTL frees the lock.
    if let Err(e) = session
        .query_unpaged(
            "DELETE FROM schema_migration_lock WHERE name = 'migrate' IF owner = ?",
            (owner,),
        )
        .await
    {
        tracing::warn!(error = %e, "could not release the migration lock; it expires by itself");
    }
    outcome
}

async fn acquire_migration_lock(session: &CqlSession, owner: Uuid) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + MIGRATION_LOCK_WAIT;
    let lock = format!(
        "INSERT INTO schema_migration_lock (name, owner, acquired_at) VALUES ('migrate', ?, ?) \
         IF NOT EXISTS USING TTL {MIGRATION_LOCK_TTL_SECS}"
    );
    loop {
        match session
            .query_unpaged(lock.as_str(), (owner, Utc::now()))
            .await
        {
            Ok(result) => {
                if applied(result)? {
                    return Ok(());
                }
                tracing::info!("waiting for another process to finish migrating");
            }
            Err(e) => tracing::warn!(error = %e, "could not take the migration lock, retrying"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::Unavailable(
                "timed out waiting for the migration lock".into(),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn apply_pending(session: &CqlSession) -> Result<Vec<i32>, StoreError> {
    let rows = session
        .query_unpaged("SELECT version, checksum FROM schema_migrations", ())
        .await
        .map_err(unavailable)?
        .into_rows_result()
        .map_err(corrupt)?;
    let done: HashMap<i32, Option<String>> = rows
        .rows::<(i32, Option<String>)>()
        .map_err(corrupt)?
        .collect::<Result<_, _>>()
        .map_err(corrupt)?;
    let mut applied_now = Vec::new();
    for migration in MIGRATIONS {
        let sum = checksum(migration.cql);
        if let Some(recorded) = done.get(&migration.version) {
            if recorded.as_deref() != Some(sum.as_str()) {
                return Err(StoreError::Corrupt(format!(
                    "migration {} ({}) changed after it was applied",
                    migration.version, migration.name
                )));
            }
            continue;
        }
        for statement in statements(migration.cql) {
            ddl(session, &statement).await?;
        }
        session
            .query_unpaged(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
                (migration.version, migration.name, sum.as_str(), Utc::now()),
            )
            .await
            .map_err(unavailable)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied CQL migration"
        );
        applied_now.push(migration.version);
    }
    Ok(applied_now)
}

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

/// A row struct with the audit columns appended, and `COLUMNS`, its column list
/// for SELECT and INSERT, so queries and structs cannot drift apart.
macro_rules! row {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Clone, Debug, PartialEq, SerializeRow, DeserializeRow)]
        struct $name {
            $($field: $ty,)*
            created_at: DateTime<Utc>,
            created_by: Option<Uuid>,
            updated_at: DateTime<Utc>,
            updated_by: Option<Uuid>,
            is_deleted: Option<bool>,
            deleted_at: Option<DateTime<Utc>>,
            deleted_by: Option<Uuid>,
        }

        impl $name {
            const COLUMNS: &'static [&'static str] = &[
                $(stringify!($field),)*
                "created_at", "created_by", "updated_at", "updated_by",
                "is_deleted", "deleted_at", "deleted_by",
            ];

            #[allow(clippy::too_many_arguments)]
            fn new($($field: $ty,)* audit: &Audit) -> Self {
                Self {
                    $($field,)*
                    created_at: millis(audit.created_at),
                    created_by: audit.created_by.map(|u| u.as_uuid()),
                    updated_at: millis(audit.updated_at),
                    updated_by: audit.updated_by.map(|u| u.as_uuid()),
                    is_deleted: Some(audit.deletion.is_some()),
                    deleted_at: audit.deletion.as_ref().map(|d| millis(d.deleted_at)),
                    deleted_by: audit.deletion.as_ref().and_then(|d| d.deleted_by).map(|u| u.as_uuid()),
                }
            }

            fn audit(&self) -> Audit {
                let deletion = match (self.is_deleted, self.deleted_at) {
                    (Some(true), Some(deleted_at)) => Some(Deletion {
                        deleted_at,
                        deleted_by: self.deleted_by.map(UserId::from_uuid),
                    }),
                    _ => None,
                };
                Audit {
                    created_at: self.created_at,
                    created_by: self.created_by.map(UserId::from_uuid),
                    updated_at: self.updated_at,
                    updated_by: self.updated_by.map(UserId::from_uuid),
                    deletion,
                }
            }
        }
    };
}

fn select(columns: &[&str], table: &str, filter: &str) -> String {
    format!("SELECT {} FROM {table} WHERE {filter}", columns.join(", "))
}

fn insert(columns: &[&str], table: &str, suffix: &str) -> String {
    let marks = vec!["?"; columns.len()].join(", ");
    format!(
        "INSERT INTO {table} ({}) VALUES ({marks}){suffix}",
        columns.join(", ")
    )
}

row!(UserRow {
    user_id: Uuid,
    email: Option<String>,
    nickname: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    role: Option<String>,
    profile_image: Option<String>,
    abandoned: Option<bool>,
});

impl UserRow {
    fn from_user(u: &User) -> Self {
        Self::new(
            u.user_id.as_uuid(),
            Some(u.email.as_str().to_string()),
            Some(u.nickname.as_str().to_string()),
            Some(u.phone_ciphertext.clone()),
            Some(u.password_hash.clone()),
            Some(u.role.as_str().to_string()),
            u.profile_image.clone(),
            Some(false),
            &u.audit,
        )
    }

    fn is_abandoned(&self) -> bool {
        self.abandoned == Some(true)
    }

    /// The account, or `None` for a fence row.
    fn into_user(self) -> Result<Option<User>, StoreError> {
        if self.is_abandoned() {
            return Ok(None);
        }
        let audit = self.audit();
        let missing = |column: &str| corrupt(format!("user {} has no {column}", self.user_id));
        let email = self.email.as_deref().ok_or_else(|| missing("email"))?;
        let nickname = self
            .nickname
            .as_deref()
            .ok_or_else(|| missing("nickname"))?;
        let role = self.role.as_deref().ok_or_else(|| missing("role"))?;
        Ok(Some(User {
            user_id: UserId::from_uuid(self.user_id),
            email: Email::parse(email).map_err(corrupt)?,
            nickname: Nickname::parse(nickname).map_err(corrupt)?,
            phone_ciphertext: self.phone.clone().ok_or_else(|| missing("phone"))?,
            password_hash: self.password.clone().ok_or_else(|| missing("password"))?,
            role: Role::parse(role).map_err(corrupt)?,
            profile_image: self.profile_image,
            audit,
        }))
    }
}

#[derive(Clone, Copy, Debug, DeserializeRow)]
struct ClaimRow {
    user_id: Option<Uuid>,
    created_at: Option<DateTime<Utc>>,
}

row!(StageRow {
    stage_id: Uuid,
    seller_id: Uuid,
    name: String,
    location: String,
    seat_rows: i32,
    seat_cols: i32,
});

impl StageRow {
    fn from_stage(s: &Stage) -> Self {
        Self::new(
            s.stage_id.as_uuid(),
            s.seller_id.as_uuid(),
            s.name.clone(),
            s.location.clone(),
            i32::from(s.grid.rows()),
            i32::from(s.grid.cols()),
            &s.audit,
        )
    }

    fn into_stage(self) -> Result<Stage, StoreError> {
        Ok(Stage {
            stage_id: StageId::from_uuid(self.stage_id),
            seller_id: UserId::from_uuid(self.seller_id),
            grid: SeatGrid::new(i64::from(self.seat_rows), i64::from(self.seat_cols))
                .map_err(corrupt)?,
            audit: self.audit(),
            name: self.name,
            location: self.location,
        })
    }
}

row!(ConcertRow {
    concert_id: Uuid,
    seller_id: Uuid,
    stage_id: Uuid,
    concert_name: String,
    runtime_minutes: i32,
    start_date: NaiveDate,
    end_date: NaiveDate,
    price: i64,
    concert_image: Option<String>,
});

impl ConcertRow {
    fn from_concert(c: &Concert) -> Result<Self, StoreError> {
        Ok(Self::new(
            c.concert_id.as_uuid(),
            c.seller_id.as_uuid(),
            c.stage_id.as_uuid(),
            c.concert_name.clone(),
            i32::try_from(c.runtime_minutes)
                .map_err(|_| corrupt("runtime does not fit a CQL int"))?,
            c.start_date,
            c.end_date,
            c.price,
            c.concert_image.clone(),
            &c.audit,
        ))
    }

    fn into_concert(self) -> Result<Concert, StoreError> {
        Ok(Concert {
            concert_id: ConcertId::from_uuid(self.concert_id),
            seller_id: UserId::from_uuid(self.seller_id),
            stage_id: StageId::from_uuid(self.stage_id),
            runtime_minutes: u32::try_from(self.runtime_minutes).map_err(corrupt)?,
            start_date: self.start_date,
            end_date: self.end_date,
            price: self.price,
            audit: self.audit(),
            concert_name: self.concert_name,
            concert_image: self.concert_image,
        })
    }
}

/// A `concerts_by_created` row: the concert plus its bucket (read back as a
/// plain [`ConcertRow`]).
#[derive(Clone, Debug, SerializeRow)]
struct ListingRow {
    bucket: i32,
    #[scylla(flatten)]
    concert: ConcertRow,
}

fn listing_columns() -> Vec<&'static str> {
    let mut columns = vec!["bucket"];
    columns.extend_from_slice(ConcertRow::COLUMNS);
    columns
}

fn bucket_of(concert: Uuid) -> i32 {
    // UUIDv7 ends in random bits, so the low bits spread concerts evenly.
    (concert.as_u128() % LISTING_BUCKETS as u128) as i32
}

row!(ScheduleRow {
    schedule_id: Uuid,
    concert_id: Uuid,
    concert_date: NaiveDate,
    concert_time: NaiveTime,
    sale_opens_at: Option<DateTime<Utc>>,
});

impl ScheduleRow {
    fn from_schedule(s: &Schedule) -> Self {
        Self::new(
            s.schedule_id.as_uuid(),
            s.concert_id.as_uuid(),
            s.concert_date,
            s.concert_time,
            s.sale_opens_at.map(millis),
            &s.audit,
        )
    }

    fn into_schedule(self) -> Schedule {
        Schedule {
            schedule_id: ScheduleId::from_uuid(self.schedule_id),
            concert_id: ConcertId::from_uuid(self.concert_id),
            concert_date: self.concert_date,
            concert_time: self.concert_time,
            sale_opens_at: self.sale_opens_at,
            audit: self.audit(),
        }
    }
}

/// Write timestamp of a catalog row: its own `updated_at`, so the newest version
/// of a row wins whatever order the writes arrive in. Milliseconds, like the
/// stored value, so the same version written with and without sub-millisecond
/// digits (ingress write-through, then the event) gets one timestamp.
fn write_time(audit: &Audit) -> i64 {
    millis(audit.updated_at).timestamp_millis() * 1000
}

/// What a CQL `timestamp` keeps. Rows are built from truncated instants so that
/// comparing a stored row with a new one (has the listing key moved?) never
/// sees a difference the database cannot hold: a delete and an insert of one
/// key in one batch would otherwise leave the tombstone winning.
fn millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
}

// ---------------------------------------------------------------------------
// Statements
// ---------------------------------------------------------------------------

/// The LWT statements of one claim table.
struct ClaimQueries {
    claim: PreparedStatement,
    take_over: PreparedStatement,
    release: PreparedStatement,
    read: PreparedStatement,
    read_serial: PreparedStatement,
}

impl ClaimQueries {
    async fn prepare(session: &CqlSession, table: &str, key: &str) -> Result<Self, StoreError> {
        let claim = format!(
            "INSERT INTO {table} ({key}, user_id, created_at, created_by, updated_at, updated_by, is_deleted) \
             VALUES (?, ?, ?, ?, ?, ?, false) IF NOT EXISTS"
        );
        let take_over = format!(
            "UPDATE {table} SET user_id = ?, created_at = ?, created_by = ?, updated_at = ?, updated_by = ? \
             WHERE {key} = ? IF user_id = ?"
        );
        let release = format!("DELETE FROM {table} WHERE {key} = ? IF user_id = ?");
        let read = format!("SELECT user_id, created_at FROM {table} WHERE {key} = ?");
        Ok(Self {
            claim: prepare(session, &claim).await?,
            take_over: prepare(session, &take_over).await?,
            release: prepare(session, &release).await?,
            read: prepare(session, &read).await?,
            read_serial: serial(prepare(session, &read).await?),
        })
    }
}

struct Queries {
    email: ClaimQueries,
    nickname: ClaimQueries,
    commit_user: PreparedStatement,
    fence_user: PreparedStatement,
    user: PreparedStatement,
    /// Only the `abandoned` flag: what the sign-up protocol decides on, and
    /// readable whatever else a row holds.
    user_state_serial: PreparedStatement,
    put_stage: PreparedStatement,
    stage: PreparedStatement,
    put_concert: PreparedStatement,
    concert: PreparedStatement,
    put_listing: PreparedStatement,
    drop_listing: PreparedStatement,
    listing: PreparedStatement,
    count_listing: PreparedStatement,
    put_schedule: PreparedStatement,
    schedule: PreparedStatement,
    put_schedule_of: PreparedStatement,
    drop_schedule_of: PreparedStatement,
    schedules_of: PreparedStatement,
    create_payment: PreparedStatement,
    payment: PreparedStatement,
    payment_serial: PreparedStatement,
    update_payment: PreparedStatement,
    put_waiting: PreparedStatement,
    drop_waiting: PreparedStatement,
    waiting: PreparedStatement,
}

async fn prepare(session: &CqlSession, cql: &str) -> Result<PreparedStatement, StoreError> {
    session
        .prepare(cql)
        .await
        .map_err(|e| unavailable(format!("preparing {cql:?}: {e}")))
}

fn idempotent(mut statement: PreparedStatement) -> PreparedStatement {
    statement.set_is_idempotent(true);
    statement
}

/// SERIAL reads see (and complete) any LWT still in progress on the partition,
/// which is how an LWT with an unknown outcome is resolved.
fn serial(mut statement: PreparedStatement) -> PreparedStatement {
    statement.set_consistency(Consistency::LocalSerial);
    statement
}

impl Queries {
    async fn prepare(session: &CqlSession) -> Result<Self, StoreError> {
        let s = session;
        let listing_cols = listing_columns();
        let user_by_id = select(UserRow::COLUMNS, "users", "user_id = ?");
        let mut listing = idempotent(
            prepare(
                s,
                &select(ConcertRow::COLUMNS, "concerts_by_created", "bucket = ?"),
            )
            .await?,
        );
        listing.set_page_size(LISTING_PAGE);
        Ok(Self {
            email: ClaimQueries::prepare(s, "users_by_email", "email").await?,
            nickname: ClaimQueries::prepare(s, "users_by_nickname", "nickname").await?,
            commit_user: prepare(s, &insert(UserRow::COLUMNS, "users", " IF NOT EXISTS")).await?,
            fence_user: prepare(
                s,
                "INSERT INTO users (user_id, abandoned, created_at, created_by, updated_at, updated_by, is_deleted) \
                 VALUES (?, true, ?, ?, ?, ?, false) IF NOT EXISTS",
            )
            .await?,
            user: idempotent(prepare(s, &user_by_id).await?),
            user_state_serial: serial(
                prepare(s, "SELECT abandoned FROM users WHERE user_id = ?").await?,
            ),
            put_stage: idempotent(prepare(s, &insert(StageRow::COLUMNS, "stages", "")).await?),
            stage: idempotent(prepare(s, &select(StageRow::COLUMNS, "stages", "stage_id = ?")).await?),
            put_concert: idempotent(prepare(s, &insert(ConcertRow::COLUMNS, "concerts", "")).await?),
            concert: idempotent(prepare(s, &select(ConcertRow::COLUMNS, "concerts", "concert_id = ?")).await?),
            put_listing: idempotent(prepare(s, &insert(&listing_cols, "concerts_by_created", "")).await?),
            drop_listing: idempotent(
                prepare(
                    s,
                    "DELETE FROM concerts_by_created WHERE bucket = ? AND created_at = ? AND concert_id = ?",
                )
                .await?,
            ),
            listing,
            count_listing: idempotent(prepare(s, "SELECT COUNT(*) FROM concerts_by_created WHERE bucket = ?").await?),
            put_schedule: idempotent(prepare(s, &insert(ScheduleRow::COLUMNS, "schedules", "")).await?),
            schedule: idempotent(prepare(s, &select(ScheduleRow::COLUMNS, "schedules", "schedule_id = ?")).await?),
            put_schedule_of: idempotent(prepare(s, &insert(ScheduleRow::COLUMNS, "schedules_by_concert", "")).await?),
            drop_schedule_of: idempotent(
                prepare(
                    s,
                    "DELETE FROM schedules_by_concert \
                     WHERE concert_id = ? AND concert_date = ? AND concert_time = ? AND schedule_id = ?",
                )
                .await?,
            ),
            schedules_of: idempotent(
                prepare(s, &select(ScheduleRow::COLUMNS, "schedules_by_concert", "concert_id = ?")).await?,
            ),
            create_payment: prepare(s, &insert(PaymentRow::COLUMNS, "payments", " IF NOT EXISTS")).await?,
            payment: idempotent(prepare(s, &select(PaymentRow::COLUMNS, "payments", "payment_id = ?")).await?),
            payment_serial: serial(prepare(s, &select(PaymentRow::COLUMNS, "payments", "payment_id = ?")).await?),
            update_payment: prepare(
                s,
                "UPDATE payments SET status = ?, refund_price = ?, payment_key = ?, updated_at = ?, \
                 revision = ?, refunds = ? WHERE payment_id = ? IF revision = ?",
            )
            .await?,
            put_waiting: idempotent(
                prepare(s, "INSERT INTO payments_waiting (bucket, created_at, payment_id) VALUES (0, ?, ?)").await?,
            ),
            drop_waiting: idempotent(
                prepare(s, "DELETE FROM payments_waiting WHERE bucket = 0 AND created_at = ? AND payment_id = ?").await?,
            ),
            waiting: idempotent(
                prepare(
                    s,
                    "SELECT created_at, payment_id FROM payments_waiting WHERE bucket = 0 AND created_at < ? LIMIT ?",
                )
                .await?,
            ),
        })
    }
}

// ---------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------

/// Accounts and catalog over CQL. Cloning is cheap (one shared session).
#[derive(Clone)]
pub struct CqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    session: CqlSession,
    q: Queries,
    views: views::ViewQueries,
    request_logs: request_logs::RequestLogQueries,
    claim_stale_after: chrono::Duration,
}

impl std::fmt::Debug for CqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlStore").finish_non_exhaustive()
    }
}

/// Who holds a claim, as far as a sign-up is concerned.
enum Claim {
    Ours,
    Taken,
}

/// A SERIAL read inside an LWT retry loop: a failure (often a Paxos timeout
/// under contention) means "try the step again", not "give up".
fn settle<T>(read: Result<T, StoreError>) -> Option<T> {
    match read {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::debug!(error = %e, "SERIAL read failed; retrying the step");
            None
        }
    }
}

/// Spreads out retries of contended LWTs (Paxos rounds on one partition
/// pre-empt each other), with jitter so that the contenders do not collide again.
async fn backoff(attempt: usize) {
    if attempt == 0 {
        return;
    }
    let jitter = (Uuid::new_v4().as_u128() % 50) as u64;
    let base = 20u64 << attempt.min(5);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

impl CqlStore {
    /// Connects, applies pending migrations (creating the keyspace with
    /// replication factor 1 if it is missing) and prepares every statement.
    pub async fn connect(nodes: &[String], keyspace: &str) -> Result<CqlStore, StoreError> {
        Self::connect_with(nodes, keyspace, CqlOptions::default()).await
    }

    pub async fn connect_with(
        nodes: &[String],
        keyspace: &str,
        options: CqlOptions,
    ) -> Result<CqlStore, StoreError> {
        use scylla::client::execution_profile::ExecutionProfile;
        let profile = ExecutionProfile::builder()
            .request_timeout(Some(options.request_timeout))
            .build();
        let session = SessionBuilder::new()
            .known_nodes(nodes)
            .connection_timeout(options.connect_timeout)
            .schema_agreement_timeout(options.schema_agreement_timeout)
            .default_execution_profile_handle(profile.into_handle())
            .build()
            .await
            .map_err(unavailable)?;
        migrate_with_replication(&session, keyspace, options.replication_factor).await?;
        let q = Queries::prepare(&session).await?;
        let views = views::ViewQueries::prepare(&session).await?;
        let request_logs = request_logs::RequestLogQueries::prepare(&session).await?;
        Ok(CqlStore {
            inner: Arc::new(Inner {
                session,
                q,
                views,
                request_logs,
                claim_stale_after: options.claim_stale_after,
            }),
        })
    }

    fn session(&self) -> &CqlSession {
        &self.inner.session
    }

    fn q(&self) -> &Queries {
        &self.inner.q
    }

    async fn one<R>(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        self.session()
            .execute_unpaged(statement, values)
            .await
            .map_err(unavailable)?
            .into_rows_result()
            .map_err(corrupt)?
            .maybe_first_row::<R>()
            .map_err(corrupt)
    }

    /// Runs an LWT; `None` when its outcome is unknown (the caller then reads
    /// the partition at SERIAL to find out).
    async fn lwt(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Option<bool>, StoreError> {
        match self.session().execute_unpaged(statement, values).await {
            Ok(result) => applied(result).map(Some),
            Err(e) => {
                tracing::debug!(error = %e, "LWT outcome unknown; reading back at SERIAL");
                Ok(None)
            }
        }
    }

    // --- accounts ---------------------------------------------------------

    async fn claim(&self, c: &ClaimQueries, key: &str, user: &User) -> Result<Claim, StoreError> {
        let me = user.user_id.as_uuid();
        let at = user.audit.created_at;
        let by = user.audit.created_by.map(|u| u.as_uuid());
        for attempt in 0..LWT_ATTEMPTS {
            backoff(attempt).await;
            if self.lwt(&c.claim, (key, me, at, by, at, by)).await? == Some(true) {
                return Ok(Claim::Ours);
            }
            let Some(holder) = settle(self.one::<ClaimRow>(&c.read_serial, (key,)).await) else {
                continue;
            };
            // Gone: released meanwhile, so claim again.
            let Some(owner) = holder.and_then(|h| h.user_id) else {
                continue;
            };
            if owner == me {
                // Our own earlier attempt, or our insert whose reply was lost.
                return Ok(Claim::Ours);
            }
            let Some(exists) = settle(self.account_exists(owner).await) else {
                continue;
            };
            if exists {
                return Ok(Claim::Taken);
            }
            let stale = holder
                .and_then(|h| h.created_at)
                .is_none_or(|claimed| at - claimed > self.inner.claim_stale_after);
            if !stale {
                return Ok(Claim::Taken); // most likely a sign-up still in flight
            }
            if !self.fence(owner, user).await? {
                return Ok(Claim::Taken); // it committed after all
            }
            tracing::info!(abandoned = %owner, "taking over a claim left by an unfinished sign-up");
            if self
                .lwt(&c.take_over, (me, at, by, at, by, key, owner))
                .await?
                == Some(true)
            {
                return Ok(Claim::Ours);
            }
            // Someone else moved the claim, or the outcome is unknown: look again.
        }
        Err(StoreError::Unavailable(
            "cql: too much contention on a sign-up claim".into(),
        ))
    }

    /// `None` without a row, else whether the row is a fence (abandoned).
    async fn user_state(&self, user_id: Uuid) -> Result<Option<bool>, StoreError> {
        let row: Option<(Option<bool>,)> =
            self.one(&self.q().user_state_serial, (user_id,)).await?;
        Ok(row.map(|(abandoned,)| abandoned == Some(true)))
    }

    /// Whether `user_id` has a committed account (not a fence row).
    async fn account_exists(&self, user_id: Uuid) -> Result<bool, StoreError> {
        Ok(self.user_state(user_id).await? == Some(false))
    }

    /// Makes sure `owner` can never commit. `false` if it already has.
    async fn fence(&self, owner: Uuid, by: &User) -> Result<bool, StoreError> {
        let at = by.audit.created_at;
        let who = Some(by.user_id.as_uuid());
        for attempt in 0..LWT_ATTEMPTS {
            backoff(attempt).await;
            if self
                .lwt(&self.q().fence_user, (owner, at, who, at, who))
                .await?
                == Some(true)
            {
                return Ok(true);
            }
            if let Some(Some(abandoned)) = settle(self.user_state(owner).await) {
                return Ok(abandoned);
            }
        }
        Err(StoreError::Unavailable(
            "cql: could not settle an unfinished sign-up".into(),
        ))
    }

    /// Creates the account row. `false` if this sign-up was fenced.
    async fn commit(&self, user: &User) -> Result<bool, StoreError> {
        let row = UserRow::from_user(user);
        for attempt in 0..LWT_ATTEMPTS {
            backoff(attempt).await;
            if self.lwt(&self.q().commit_user, &row).await? == Some(true) {
                return Ok(true);
            }
            if let Some(Some(abandoned)) = settle(self.user_state(row.user_id).await) {
                return Ok(!abandoned);
            }
        }
        Err(StoreError::Unavailable(
            "cql: could not create the account row".into(),
        ))
    }

    /// Best effort: a claim that cannot be released now becomes stale and is
    /// taken over later.
    async fn release(&self, c: &ClaimQueries, key: &str, user: &User) {
        if let Err(e) = self
            .session()
            .execute_unpaged(&c.release, (key, user.user_id.as_uuid()))
            .await
        {
            tracing::warn!(error = %e, user_id = %user.user_id, "could not release a sign-up claim");
        }
    }

    // --- catalog ----------------------------------------------------------

    async fn batch(
        &self,
        batch: Batch,
        values: impl scylla::serialize::batch::BatchValues,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut batch = batch;
        batch.set_timestamp(Some(at));
        batch.set_is_idempotent(true);
        self.session()
            .batch(&batch, values)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn batch_of(statements: &[&PreparedStatement]) -> Batch {
        let mut batch = Batch::new(BatchType::Logged);
        for s in statements {
            batch.append_statement((*s).clone());
        }
        batch
    }

    async fn count_listing(&self) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for bucket in 0..LISTING_BUCKETS {
            let (n,): (i64,) = self
                .one(&self.q().count_listing, (bucket,))
                .await?
                .ok_or_else(|| corrupt("COUNT returned no row"))?;
            total += u64::try_from(n).map_err(corrupt)?;
        }
        Ok(total)
    }
}

#[async_trait]
impl AccountStore for CqlStore {
    /// See the module documentation for the protocol. A claim left by a failed
    /// sign-up blocks its e-mail or nickname for at most
    /// [`CqlOptions::claim_stale_after`]. Inserting the same account again
    /// succeeds (its claims and row are recognised as its own).
    async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        let q = self.q();
        let email = user.email.as_str();
        let nickname = user.nickname.canonical();
        if let Claim::Taken = self.claim(&q.email, email, user).await? {
            return Err(StoreError::EmailTaken);
        }
        match self.claim(&q.nickname, &nickname, user).await {
            Ok(Claim::Ours) => {}
            Ok(Claim::Taken) => {
                self.release(&q.email, email, user).await;
                return Err(StoreError::NicknameTaken);
            }
            Err(e) => {
                self.release(&q.email, email, user).await;
                return Err(e);
            }
        }
        // No release on an error here: the row may have been written, and
        // releasing the claims of a live account would free its e-mail.
        if self.commit(user).await? {
            return Ok(());
        }
        self.release(&q.email, email, user).await;
        self.release(&q.nickname, &nickname, user).await;
        Err(StoreError::Unavailable(
            "sign-up took too long and was abandoned; retry".into(),
        ))
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let Some(claim) = self
            .one::<ClaimRow>(&self.q().email.read, (email.as_str(),))
            .await?
        else {
            return Ok(None);
        };
        let Some(user_id) = claim.user_id else {
            return Ok(None);
        };
        let user = self.user_by_id(UserId::from_uuid(user_id)).await?;
        // A claim only counts once its account exists, and only for that address.
        Ok(user.filter(|u| &u.email == email))
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        match self.one::<UserRow>(&self.q().user, (id.as_uuid(),)).await? {
            Some(row) => row.into_user(),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl CatalogStore for CqlStore {
    async fn put_stage(&self, stage: &Stage) -> Result<(), StoreError> {
        let mut statement = self.q().put_stage.clone();
        statement.set_timestamp(Some(write_time(&stage.audit)));
        self.session()
            .execute_unpaged(&statement, StageRow::from_stage(stage))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn put_concert(&self, concert: &Concert) -> Result<(), StoreError> {
        let q = self.q();
        let row = ConcertRow::from_concert(concert)?;
        let id = concert.concert_id.as_uuid();
        let bucket = bucket_of(id);
        let previous: Option<ConcertRow> = self.one(&q.concert, (id,)).await?;
        if previous
            .as_ref()
            .is_some_and(|p| p.updated_at > row.updated_at)
        {
            // A late replay of an older version: the timestamps would discard its
            // cells anyway, but its listing key must not come back.
            return Ok(());
        }
        // The listing key only moves if the creation time was rewritten.
        let moved_from = previous
            .map(|p| p.created_at)
            .filter(|created| *created != row.created_at)
            .map(|created| (bucket, created, id));
        let key = (bucket, row.created_at, id);
        let at = write_time(&concert.audit);
        let live = !concert.audit.is_deleted();
        let listing = ListingRow {
            bucket,
            concert: row.clone(),
        };
        match (live, moved_from) {
            (true, None) => {
                self.batch(
                    Self::batch_of(&[&q.put_concert, &q.put_listing]),
                    (&row, &listing),
                    at,
                )
                .await
            }
            (true, Some(old)) => {
                let b = Self::batch_of(&[&q.put_concert, &q.put_listing, &q.drop_listing]);
                self.batch(b, (&row, &listing, old), at).await
            }
            (false, None) => {
                self.batch(
                    Self::batch_of(&[&q.put_concert, &q.drop_listing]),
                    (&row, key),
                    at,
                )
                .await
            }
            (false, Some(old)) => {
                let b = Self::batch_of(&[&q.put_concert, &q.drop_listing, &q.drop_listing]);
                self.batch(b, (&row, key, old), at).await
            }
        }
    }

    async fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        let q = self.q();
        let row = ScheduleRow::from_schedule(schedule);
        let previous: Option<ScheduleRow> = self.one(&q.schedule, (row.schedule_id,)).await?;
        if previous
            .as_ref()
            .is_some_and(|p| p.updated_at > row.updated_at)
        {
            return Ok(());
        }
        let at = write_time(&schedule.audit);
        let moved_from = previous
            .map(|p| (p.concert_id, p.concert_date, p.concert_time, p.schedule_id))
            .filter(|old| {
                *old != (
                    row.concert_id,
                    row.concert_date,
                    row.concert_time,
                    row.schedule_id,
                )
            });
        match moved_from {
            None => {
                self.batch(
                    Self::batch_of(&[&q.put_schedule, &q.put_schedule_of]),
                    (&row, &row),
                    at,
                )
                .await
            }
            Some(old) => {
                let b = Self::batch_of(&[&q.put_schedule, &q.put_schedule_of, &q.drop_schedule_of]);
                self.batch(b, (&row, &row, old), at).await
            }
        }
    }

    async fn stage(&self, id: StageId) -> Result<Option<Stage>, StoreError> {
        self.one::<StageRow>(&self.q().stage, (id.as_uuid(),))
            .await?
            .map(StageRow::into_stage)
            .transpose()
    }

    async fn concert(&self, id: ConcertId) -> Result<Option<Concert>, StoreError> {
        self.one::<ConcertRow>(&self.q().concert, (id.as_uuid(),))
            .await?
            .map(ConcertRow::into_concert)
            .transpose()
    }

    async fn schedule(&self, id: ScheduleId) -> Result<Option<Schedule>, StoreError> {
        Ok(self
            .one::<ScheduleRow>(&self.q().schedule, (id.as_uuid(),))
            .await?
            .map(ScheduleRow::into_schedule))
    }

    async fn schedules_of(&self, concert: ConcertId) -> Result<Vec<Schedule>, StoreError> {
        let rows = self
            .session()
            .execute_unpaged(&self.q().schedules_of, (concert.as_uuid(),))
            .await
            .map_err(unavailable)?
            .into_rows_result()
            .map_err(corrupt)?;
        let mut out: Vec<Schedule> = rows
            .rows::<ScheduleRow>()
            .map_err(corrupt)?
            .map(|r| r.map(ScheduleRow::into_schedule).map_err(corrupt))
            .collect::<Result<_, _>>()?;
        // The clustering order already gives date and time; ties between equal
        // slots are ordered here, where uuid order is byte order on every engine.
        out.sort_by_key(|s| (s.concert_date, s.concert_time, s.schedule_id));
        Ok(out)
    }

    /// Totals come from `COUNT(*)` over the buckets: exact and idempotent (no
    /// counter to drift on replays), at the cost of reading the listing's keys,
    /// which is fine for a catalogue of thousands of concerts. The page itself
    /// is a merge of the buckets' newest-first streams, so a page costs
    /// `page * size` skipped rows, never a sort of the whole listing.
    async fn list_concerts(&self, page: u32, size: u32) -> Result<Page<Concert>, StoreError> {
        let total = self.count_listing().await?;
        let skip = u64::from(page) * u64::from(size);
        let mut items = Vec::new();
        if skip >= total || size == 0 {
            return Ok(Page {
                items,
                page,
                size,
                total,
            });
        }
        let mut streams = Vec::new();
        let mut heads = Vec::new();
        for bucket in 0..LISTING_BUCKETS {
            let mut stream = self
                .session()
                .execute_iter(self.q().listing.clone(), (bucket,))
                .await
                .map_err(unavailable)?
                .rows_stream::<ConcertRow>()
                .map_err(corrupt)?;
            heads.push(stream.next().await.transpose().map_err(corrupt)?);
            streams.push(stream);
        }
        let mut skipped = 0u64;
        while items.len() < size as usize {
            let Some(newest) = heads.iter().flatten().map(|r| r.created_at).max() else {
                break;
            };
            // Rows sharing one creation instant are ordered by id here rather
            // than trusting each engine's uuid clustering order.
            let mut group = Vec::new();
            for (head, stream) in heads.iter_mut().zip(streams.iter_mut()) {
                while head.as_ref().is_some_and(|r| r.created_at == newest) {
                    group.extend(head.take());
                    *head = stream.next().await.transpose().map_err(corrupt)?;
                }
            }
            group.sort_by_key(|r| std::cmp::Reverse(r.concert_id));
            for row in group {
                if skipped < skip {
                    skipped += 1;
                } else if items.len() < size as usize {
                    items.push(row.into_concert()?);
                }
            }
        }
        Ok(Page {
            items,
            page,
            size,
            total,
        })
    }
}

// ---------------------------------------------------------------------------
// Payments
// ---------------------------------------------------------------------------

row!(PaymentRow {
    payment_id: Uuid,
    user_id: Uuid,
    schedule_id: Uuid,
    concert_id: Uuid,
    booking_ids: Vec<Uuid>,
    total_price: i64,
    refund_price: i64,
    status: String,
    card_last4: String,
    card: String,
    payment_key: Option<String>,
    revision: i64,
    refunds: String,
});

impl PaymentRow {
    fn from_payment(p: &PaymentRecord) -> Self {
        Self::new(
            p.payment_id.as_uuid(),
            p.user_id.as_uuid(),
            p.schedule_id.as_uuid(),
            p.concert_id.as_uuid(),
            p.booking_ids.iter().map(|b| b.as_uuid()).collect(),
            p.ledger.total_price,
            p.ledger.refund_price,
            p.ledger.status.as_str().to_string(),
            p.card_last4.clone(),
            p.card_cipher.clone(),
            p.payment_key.clone(),
            p.revision as i64,
            serde_json::to_string(&p.refunds).expect("refunds serialise"),
            // The buyer creates a payment; its outcomes are the platform's.
            // Payments are never deleted: money leaves a trail.
            &Audit {
                created_at: p.created_at,
                created_by: Some(p.user_id),
                updated_at: p.updated_at,
                updated_by: None,
                deletion: None,
            },
        )
    }

    fn into_payment(self) -> Result<PaymentRecord, StoreError> {
        let status = PaymentStatus::parse(&self.status)
            .ok_or_else(|| corrupt(format!("payment status {:?}", self.status)))?;
        let audit = self.audit();
        if audit.deletion.is_some() {
            return Err(corrupt("a payment marked deleted"));
        }
        Ok(PaymentRecord {
            payment_id: PaymentId::from_uuid(self.payment_id),
            user_id: UserId::from_uuid(self.user_id),
            schedule_id: ScheduleId::from_uuid(self.schedule_id),
            concert_id: ConcertId::from_uuid(self.concert_id),
            booking_ids: self
                .booking_ids
                .into_iter()
                .map(BookingId::from_uuid)
                .collect(),
            ledger: PaymentLedger {
                status,
                total_price: self.total_price,
                refund_price: self.refund_price,
            },
            card_last4: self.card_last4,
            card_cipher: self.card,
            payment_key: self.payment_key,
            created_at: audit.created_at,
            updated_at: audit.updated_at,
            revision: u64::try_from(self.revision)
                .map_err(|_| corrupt(format!("payment revision {}", self.revision)))?,
            refunds: serde_json::from_str(&self.refunds)
                .map_err(|e| corrupt(format!("payment refunds: {e}")))?,
        })
    }
}

impl CqlStore {
    async fn payment_row(
        &self,
        statement: &PreparedStatement,
        id: Uuid,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        self.one::<PaymentRow>(statement, (id,))
            .await?
            .map(PaymentRow::into_payment)
            .transpose()
    }
}

#[async_trait]
impl PaymentStore for CqlStore {
    async fn create_payment(&self, payment: &PaymentRecord) -> Result<PaymentCreated, StoreError> {
        let row = PaymentRow::from_payment(payment);
        if let Some(since) = payment.in_flight_since() {
            // Indexed first: a stale index row is skipped by the sweeper, a
            // missing one would hide a payment from it.
            self.put_in_flight(since, payment.payment_id).await?;
        }
        for attempt in 0..LWT_ATTEMPTS {
            backoff(attempt).await;
            match self
                .session()
                .execute_unpaged(&self.q().create_payment, &row)
                .await
            {
                Ok(result) => {
                    if applied(result)? {
                        return Ok(PaymentCreated::Created);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "payment insert outcome unknown"),
            }
            // Not applied, or unknown: what is there now decides.
            let Some(found) = settle(
                self.payment_row(&self.q().payment_serial, row.payment_id)
                    .await,
            ) else {
                continue;
            };
            return Ok(match found {
                Some(existing) if PaymentRow::from_payment(&existing) == row => {
                    PaymentCreated::Created
                }
                Some(existing) => PaymentCreated::Existing(Box::new(existing)),
                None => continue,
            });
        }
        Err(unavailable("payment insert: no outcome after retries"))
    }

    async fn payment(&self, id: PaymentId) -> Result<Option<PaymentRecord>, StoreError> {
        self.payment_row(&self.q().payment, id.as_uuid()).await
    }

    async fn update_payment(
        &self,
        expected: &PaymentRecord,
        next: &PaymentRecord,
    ) -> Result<bool, StoreError> {
        let id = next.payment_id.as_uuid();
        let row = PaymentRow::from_payment(next);
        let revision = expected.revision + 1;
        let was = expected.in_flight_since();
        let will = next.in_flight_since();
        if let Some(since) = will.filter(|w| Some(*w) != was) {
            self.put_in_flight(since, next.payment_id).await?;
        }
        let values = (
            row.status.as_str(),
            row.refund_price,
            row.payment_key.clone(),
            millis(next.updated_at),
            revision as i64,
            row.refunds.as_str(),
            id,
            expected.revision as i64,
        );
        for attempt in 0..LWT_ATTEMPTS {
            backoff(attempt).await;
            let applied = match self
                .session()
                .execute_unpaged(&self.q().update_payment, values.clone())
                .await
            {
                Ok(result) => Some(applied(result)?),
                Err(e) => {
                    tracing::debug!(error = %e, "payment update outcome unknown");
                    None
                }
            };
            let done = match applied {
                Some(done) => done,
                // Unknown: what is there now decides.
                None => {
                    let Some(found) = settle(self.payment_row(&self.q().payment_serial, id).await)
                    else {
                        continue;
                    };
                    match found {
                        None => false,
                        // Ours if it carries what we wrote.
                        Some(now) if now.revision == revision => {
                            (&now.ledger, &now.payment_key, &now.refunds)
                                == (&next.ledger, &next.payment_key, &next.refunds)
                        }
                        Some(now) if now.revision == expected.revision => continue,
                        Some(_) => false,
                    }
                }
            };
            // The entry of `was` stays until the change is published
            // (`forget_in_flight`), so a crash before that is swept too.
            return Ok(done);
        }
        Err(unavailable("payment update: no outcome after retries"))
    }

    async fn payments_to_sweep(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PaymentToSweep>, StoreError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let entries = self
            .session()
            .execute_unpaged(&self.q().waiting, (millis(before), limit))
            .await
            .map_err(unavailable)?
            .into_rows_result()
            .map_err(corrupt)?
            .rows::<(DateTime<Utc>, Uuid)>()
            .map_err(corrupt)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(corrupt)?;
        let mut out = Vec::with_capacity(entries.len());
        for (since, id) in entries {
            let id = PaymentId::from_uuid(id);
            match self.payment(id).await? {
                Some(payment) => out.push(PaymentToSweep { since, payment }),
                // Indexed, then never created: nothing to finish or publish.
                None => self.drop_in_flight(since, id).await,
            }
        }
        Ok(out)
    }

    async fn forget_in_flight(
        &self,
        id: PaymentId,
        since: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.session()
            .execute_unpaged(&self.q().drop_waiting, (millis(since), id.as_uuid()))
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

impl CqlStore {
    async fn put_in_flight(&self, since: DateTime<Utc>, id: PaymentId) -> Result<(), StoreError> {
        self.session()
            .execute_unpaged(&self.q().put_waiting, (millis(since), id.as_uuid()))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Best effort: a row left behind is dropped by the next sweep.
    async fn drop_in_flight(&self, since: DateTime<Utc>, id: PaymentId) {
        if let Err(e) = self
            .session()
            .execute_unpaged(&self.q().drop_waiting, (millis(since), id.as_uuid()))
            .await
        {
            tracing::debug!(error = %e, "stale payments_waiting row kept for the next sweep");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_portable() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "versions strictly increase");
            last = m.version;
            let stmts = statements(m.cql);
            assert!(!stmts.is_empty());
            for s in &stmts {
                let upper = s.to_uppercase();
                // Changing a table's options is idempotent as it is.
                if upper.starts_with("ALTER TABLE ") {
                    assert!(upper.contains(" WITH "), "options only: {s}");
                    continue;
                }
                assert!(
                    upper.starts_with("CREATE TABLE IF NOT EXISTS "),
                    "idempotent: {s}"
                );
                for banned in [
                    "INDEX",
                    "MATERIALIZED",
                    "COUNTER",
                    "NOW()",
                    "UUID()",
                    "CUSTOM",
                ] {
                    assert!(!upper.contains(banned), "{banned} is not portable: {s}");
                }
                for audit in [
                    "created_at",
                    "created_by",
                    "updated_at",
                    "updated_by",
                    "is_deleted",
                    "deleted_at",
                    "deleted_by",
                ] {
                    assert!(s.contains(audit), "audit column {audit} missing: {s}");
                }
            }
        }
        assert_eq!(statements(MIGRATIONS[0].cql).len(), 8);
        assert_eq!(statements(MIGRATIONS[1].cql).len(), 2);
        assert_eq!(statements(MIGRATIONS[2].cql).len(), 6);
        assert_eq!(statements(MIGRATIONS[3].cql).len(), 2);
    }

    #[test]
    fn statements_drop_comments_and_split() {
        let cql = "-- a; b\nCREATE TABLE IF NOT EXISTS a (x int PRIMARY KEY); -- c\n\nCREATE TABLE IF NOT EXISTS b (y int PRIMARY KEY);\n";
        assert_eq!(
            statements(cql),
            vec![
                "CREATE TABLE IF NOT EXISTS a (x int PRIMARY KEY)".to_string(),
                "CREATE TABLE IF NOT EXISTS b (y int PRIMARY KEY)".to_string(),
            ]
        );
    }

    #[test]
    fn keyspace_names_are_checked() {
        assert!(check_keyspace_name("ticketing").is_ok());
        assert!(check_keyspace_name("ticketing_test_0a1b").is_ok());
        for bad in ["", "1abc", "a-b", "a;DROP", "a b", &"a".repeat(49)] {
            assert!(check_keyspace_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rows_round_trip_the_domain_types() {
        let user = crate::contract::user("ann@example.com", "Ann");
        let back = UserRow::from_user(&user).into_user().unwrap();
        assert_eq!(back, Some(user.clone()));
        let hall = crate::contract::stage(user.user_id);
        assert_eq!(StageRow::from_stage(&hall).into_stage().unwrap(), hall);
        let mut show = crate::contract::concert(&hall, crate::contract::t0(), "show");
        show.audit.deletion = Some(Deletion {
            deleted_at: crate::contract::t0(),
            deleted_by: None,
        });
        assert_eq!(
            ConcertRow::from_concert(&show)
                .unwrap()
                .into_concert()
                .unwrap(),
            show
        );
        let slot = crate::contract::schedule(&show, "2026-12-01", "19:30:00");
        assert_eq!(ScheduleRow::from_schedule(&slot).into_schedule(), slot);
        assert!(listing_columns().starts_with(&["bucket", "concert_id"]));
        assert!((0..1000)
            .map(|_| bucket_of(Uuid::now_v7()))
            .all(|b| (0..LISTING_BUCKETS).contains(&b)));
    }
}
