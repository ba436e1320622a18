use async_trait::async_trait;
use chrono::NaiveDate;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use ticketing_domain::account::{Email, Role, User};
use ticketing_domain::booking::BookingStatus;
use ticketing_domain::catalog::{Concert, Schedule, SeatStatus, Stage};
use ticketing_domain::events::{PaymentChange, PaymentChanged, PaymentSnapshot};
use ticketing_domain::ids::{BookingId, ConcertId, PaymentId, ScheduleId, StageId, UserId};
use ticketing_domain::payment::{PaymentRecord, Refund};
use ticketing_domain::schedule::{QueueEntry, QueueStatus, RateWindow, SeatRef};
use uuid::Uuid;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("email is already registered")]
    EmailTaken,
    #[error("nickname is already taken")]
    NicknameTaken,
    /// The engine could not be reached or failed; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be read back (corruption or an incompatible change).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// One page of a listing. `page` is 0-based.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub size: u32,
    pub total: u64,
}

/// Accounts. The store is the system of record for credentials, which never
/// travel on the event bus; uniqueness of e-mail and nickname is decided here.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates the account, claiming its e-mail and nickname atomically with
    /// respect to other sign-ups: two concurrent sign-ups with one e-mail give
    /// one `Ok` and one `EmailTaken`. A claim left behind by a failed sign-up
    /// must not block the owner of the e-mail for ever (implementations say how).
    /// The e-mail is checked before the nickname. Inserting the same account
    /// (same `user_id`) again, as a retried request does, succeeds.
    async fn insert_user(&self, user: &User) -> Result<(), StoreError>;
    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError>;
    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError>;
}

/// The catalog. Rows are written through by the ingress (read-your-writes) and
/// again by the catalog sink from the events (convergence): every `put_*` is an
/// idempotent upsert of the whole row. Engines may keep instants to the
/// millisecond only (CQL): callers should not rely on finer precision.
#[async_trait]
pub trait CatalogStore: Send + Sync + 'static {
    async fn put_stage(&self, stage: &Stage) -> Result<(), StoreError>;
    async fn put_concert(&self, concert: &Concert) -> Result<(), StoreError>;
    async fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError>;
    async fn stage(&self, id: StageId) -> Result<Option<Stage>, StoreError>;
    async fn concert(&self, id: ConcertId) -> Result<Option<Concert>, StoreError>;
    async fn schedule(&self, id: ScheduleId) -> Result<Option<Schedule>, StoreError>;
    /// A concert's schedules, ordered by date, time, then id; soft-deleted ones
    /// included (their audit says so), the caller filters.
    async fn schedules_of(&self, concert: ConcertId) -> Result<Vec<Schedule>, StoreError>;
    /// Concerts newest first (by creation time, then id), skipping deleted ones.
    async fn list_concerts(&self, page: u32, size: u32) -> Result<Page<Concert>, StoreError>;
}

/// A login: one access/refresh token family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: Uuid,
    pub user_id: UserId,
    pub role: Role,
    /// SHA-256 (hex) of the only refresh secret that may be used next.
    pub refresh_hash: String,
    /// The session (and so its refresh token) ends here at the latest.
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The presented secret was current; it is now replaced.
    Rotated(Session),
    /// The presented secret was an older one of this session: it leaked or was
    /// replayed, so the whole session has been revoked.
    Reused,
    /// No such live session (logged out, revoked or expired).
    Unknown,
}

/// Login sessions (Redis in the real stack). Revoking a session invalidates its
/// access and refresh tokens at once.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn create(&self, session: &Session) -> Result<(), StoreError>;
    /// Atomically: if `presented_hash` is the session's current refresh hash,
    /// replace it by `next_hash`; if it is not, revoke the session.
    async fn rotate(
        &self,
        session_id: Uuid,
        presented_hash: &str,
        next_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<RotateOutcome, StoreError>;
    async fn revoke(&self, session_id: Uuid) -> Result<(), StoreError>;
    async fn is_active(&self, session_id: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError>;
}

/// A booking as its buyer sees it: one seat of one schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingView {
    pub booking_id: BookingId,
    pub schedule_id: ScheduleId,
    pub concert_id: ConcertId,
    pub user_id: UserId,
    pub seat: SeatRef,
    /// Whole currency units, the schedule's price when the seat was held.
    pub price: i64,
    pub status: BookingStatus,
    pub payment_id: Option<Uuid>,
    /// When a PENDING booking's hold runs out.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A schedule's seats as the read model last saw them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeatMapView {
    pub rows: u16,
    pub cols: u16,
    /// Row-major, `rows * cols` entries.
    pub seats: Vec<SeatStatus>,
}

/// What the schedule processors decided, as read models fed from their
/// changelog: Redis in the real stack, memory in `ticketing dev`. Reads never
/// go through a processor, so they may lag it by a moment; they are never
/// different from it once caught up.
#[async_trait]
pub trait ScheduleReadModel: Send + Sync + 'static {
    /// `None` for a schedule the model has not seen (yet).
    async fn seat_map(&self, schedule: ScheduleId) -> Result<Option<SeatMapView>, StoreError>;
    /// `None` for a schedule the model has not seen; `NotInQueue` for a buyer
    /// who never joined it.
    async fn queue_status(
        &self,
        schedule: ScheduleId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<QueueStatus>, StoreError>;
    /// The buyer's bookings, newest first.
    async fn bookings_of(&self, user: UserId) -> Result<Vec<BookingView>, StoreError>;
    async fn booking(&self, booking: BookingId) -> Result<Option<BookingView>, StoreError>;
}

/// One change to a schedule's read model, derived by the view sink from one
/// changelog fact and the state after it. Each carries absolute values (never
/// "one more"), so applying a change twice is the same as applying it once.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleViewChange {
    Created {
        rows: u16,
        cols: u16,
        price: i64,
        concert_id: ConcertId,
    },
    /// `index` is row-major from 0.
    Seat {
        index: u32,
        status: SeatStatus,
    },
    Entry {
        user: UserId,
        entry: QueueEntry,
    },
    Rate(RateWindow),
    Booking(BookingView),
    /// Every seat SOLD (true), or seats on sale again after a refund (false).
    SoldOut(bool),
}

/// The write side of a read model kept outside the process (Redis).
#[async_trait]
pub trait ScheduleViewWriter: Send + Sync + 'static {
    /// Applies the changes derived from the changelog record at `offset` of the
    /// schedule's partition, all or none. A record at or below the last offset
    /// applied for the schedule changes nothing and answers `false`: a replay
    /// after a restart, or a slower second writer, never moves the view back.
    async fn apply(
        &self,
        schedule: ScheduleId,
        offset: i64,
        changes: &[ScheduleViewChange],
    ) -> Result<bool, StoreError>;

    /// The last offset applied for the schedule, `None` if none was.
    async fn applied_offset(&self, schedule: ScheduleId) -> Result<Option<i64>, StoreError>;
}

/// What creating a payment found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentCreated {
    Created,
    /// A payment with this id exists already (a retried request): here it is.
    Existing(Box<PaymentRecord>),
}

/// Payments, the system of record for money.
#[async_trait]
pub trait PaymentStore: Send + Sync + 'static {
    /// Creates the payment unless one with its id exists.
    async fn create_payment(&self, payment: &PaymentRecord) -> Result<PaymentCreated, StoreError>;
    async fn payment(&self, id: PaymentId) -> Result<Option<PaymentRecord>, StoreError>;
    /// Records `next` (its status, refunded amount, refunds, payment key and
    /// update time) if the stored payment is still at `expected`'s revision,
    /// and moves it to the revision after; `false` when another change got
    /// there first. Other fields (the total among them) never change.
    async fn update_payment(
        &self,
        expected: &PaymentRecord,
        next: &PaymentRecord,
    ) -> Result<bool, StoreError>;
    /// Payments the sweeper looks at, oldest first: in flight (a charge or a
    /// refund whose outcome is not recorded) since before `before`, or moved
    /// out of flight since then without [`forget_in_flight`] being called,
    /// because the change that moved them is maybe not published yet.
    ///
    /// [`forget_in_flight`]: PaymentStore::forget_in_flight
    async fn payments_to_sweep(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PaymentToSweep>, StoreError>;
    /// The payment went out of flight at `since` and that change is
    /// published: the sweeper need not look at it again.
    async fn forget_in_flight(&self, id: PaymentId, since: DateTime<Utc>)
        -> Result<(), StoreError>;
}

/// A payment the sweeper looks at: still in flight since `since` (to be
/// finished), or no longer (its change to be published again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentToSweep {
    pub since: DateTime<Utc>,
    pub payment: PaymentRecord,
}

/// Buckets of one day in `payments_by_day` and `refunds_by_day`. Changing it
/// needs a migration that rewrites those tables: the settlement and the
/// admin listing read every bucket of a day.
pub const DAY_BUCKETS: i32 = 8;

/// The bucket of a payment or refund id within its day.
pub fn day_bucket(id: Uuid) -> i32 {
    // The low bits of a v7 or derived v8 id are random.
    (id.as_u128() % DAY_BUCKETS as u128) as i32
}

/// Where a newest-first listing resumes: rows strictly older than this
/// (time, then id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListCursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

/// A refund as the refunds table keeps it, with its payment's ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundView {
    pub payment_id: PaymentId,
    pub user_id: UserId,
    pub schedule_id: ScheduleId,
    pub concert_id: ConcertId,
    /// The payment's total, for the refund's context.
    pub total_price: i64,
    /// Finished: `refunded_at` is set.
    pub refund: Refund,
}

impl RefundView {
    /// The refund an event reports, if it reports one.
    pub fn of(e: &PaymentChanged) -> Option<Self> {
        match &e.change {
            PaymentChange::Refunded(refund) => Some(Self {
                payment_id: e.payment.payment_id,
                user_id: e.payment.user_id,
                schedule_id: e.payment.schedule_id,
                concert_id: e.payment.concert_id,
                total_price: e.payment.total_price,
                refund: refund.clone(),
            }),
            _ => None,
        }
    }

    pub fn refunded_at(&self) -> DateTime<Utc> {
        self.refund.refunded_at.unwrap_or(self.refund.requested_at)
    }
}

/// What the payment sink builds from the payments topic: payments by buyer
/// and by day, refunds by day. Writes are versioned upserts of whole rows
/// (a payment's revision): a replay in any order leaves the newest version.
#[async_trait]
pub trait PaymentViews: Send + Sync + 'static {
    async fn put_payment_view(&self, payment: &PaymentSnapshot) -> Result<(), StoreError>;
    async fn put_refund_view(&self, refund: &RefundView) -> Result<(), StoreError>;
    /// A buyer's payments, newest first.
    async fn payments_of_user(
        &self,
        user: UserId,
        limit: usize,
    ) -> Result<Vec<PaymentSnapshot>, StoreError>;
    /// One bucket of one day's payments, newest first, older than `before`.
    async fn payments_of_day(
        &self,
        day: NaiveDate,
        bucket: i32,
        before: Option<ListCursor>,
        limit: usize,
    ) -> Result<Vec<PaymentSnapshot>, StoreError>;
    /// One bucket of one day's refunds, newest first, older than `before`.
    async fn refunds_of_day(
        &self,
        day: NaiveDate,
        bucket: i32,
        before: Option<ListCursor>,
        limit: usize,
    ) -> Result<Vec<RefundView>, StoreError>;
}

/// A booking as the bookings sink keeps it, from the schedule changelog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingRow {
    pub booking_id: BookingId,
    pub user_id: UserId,
    pub schedule_id: ScheduleId,
    pub seat: SeatRef,
    pub status: BookingStatus,
    pub payment_id: Option<PaymentId>,
    /// Set by the hold only; a later change leaves it as it was.
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The changelog offset of the fact: the newest version wins.
    pub version: i64,
}

/// Bookings by buyer and by schedule, written by the bookings sink with
/// versioned upserts like [`PaymentViews`].
#[async_trait]
pub trait BookingRows: Send + Sync + 'static {
    async fn put_booking(&self, booking: &BookingRow) -> Result<(), StoreError>;
    async fn bookings_of_user(&self, user: UserId) -> Result<Vec<BookingRow>, StoreError>;
    async fn bookings_of_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<Vec<BookingRow>, StoreError>;
}

/// One HTTP request the ingress answered, as the request-log tables keep it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLogRow {
    pub request_id: Uuid,
    /// When the request arrived.
    pub at: DateTime<Utc>,
    /// `None` for an anonymous request.
    pub user_id: Option<UserId>,
    pub method: String,
    /// Without its query string.
    pub path: String,
    pub status: u16,
    pub latency_micros: u64,
}

/// The managers' request log, written by the request-log sink. Rows expire
/// on their own (CQL TTL): a read never returns a row past `expires_at`.
#[async_trait]
pub trait RequestLogs: Send + Sync + 'static {
    /// Writes the row (again, identically, on a redelivery), kept until
    /// `expires_at`. A row already expired is not written.
    async fn put_request_log(
        &self,
        row: &RequestLogRow,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// One bucket of one day's requests, newest first, older than `before`.
    async fn request_logs_of_day(
        &self,
        day: NaiveDate,
        bucket: i32,
        before: Option<ListCursor>,
        limit: usize,
    ) -> Result<Vec<RequestLogRow>, StoreError>;
    /// One user's requests of one day, newest first, older than `before`.
    async fn request_logs_of_user(
        &self,
        user: UserId,
        day: NaiveDate,
        before: Option<ListCursor>,
        limit: usize,
    ) -> Result<Vec<RequestLogRow>, StoreError>;
}
