//! The sinks' tables: payments by buyer and by day, refunds by day, bookings
//! by buyer and by schedule.
//!
//! Every row is written whole with `USING TIMESTAMP` set to its version (a
//! payment's revision, a changelog offset): CQL keeps the cell with the
//! highest timestamp, so redeliveries rewrite identical cells and an older
//! version arriving late never wins. That is why only the sinks may write
//! these tables (a wall-clock timestamp would shadow every later version).

use super::{corrupt, idempotent, millis, prepare, unavailable, CqlStore};
use crate::ports::{
    day_bucket, BookingRow, BookingRows, ListCursor, PaymentViews, RefundView, StoreError,
};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use scylla::client::session::Session as CqlSession;
use scylla::statement::prepared::PreparedStatement;
use scylla::SerializeRow;
use ticketing_domain::booking::BookingStatus;
use ticketing_domain::events::PaymentSnapshot;
use ticketing_domain::ids::{BookingId, PaymentId, RefundId, ScheduleId, UserId};
use ticketing_domain::payment::{PaymentStatus, Refund};
use ticketing_domain::schedule::SeatRef;
use uuid::Uuid;

pub(super) struct ViewQueries {
    put_payment_by_user: PreparedStatement,
    put_payment_by_day: PreparedStatement,
    payments_of_user: PreparedStatement,
    payments_of_day: PreparedStatement,
    payments_of_day_before: PreparedStatement,
    put_refund: PreparedStatement,
    refunds_of_day: PreparedStatement,
    refunds_of_day_before: PreparedStatement,
    put_booking_by_user: PreparedStatement,
    put_booking_by_schedule: PreparedStatement,
    put_held_by_user: PreparedStatement,
    put_held_by_schedule: PreparedStatement,
    bookings_of_user: PreparedStatement,
    bookings_of_schedule: PreparedStatement,
}

const PAYMENT_COLUMNS: &str = "payment_id, user_id, schedule_id, concert_id, booking_ids, status, \
     total_price, refund_price, card_last4, revision, created_at, updated_at";
const REFUND_COLUMNS: &str =
    "refund_id, payment_id, user_id, schedule_id, concert_id, booking_ids, \
     total_price, amount, reason, requested_at, refunded_at";
const BOOKING_COLUMNS: &str = "booking_id, user_id, schedule_id, seat_row, seat_col, status, \
     payment_id, created_at, updated_at, version";

type PaymentCells = (
    Uuid,
    Uuid,
    Uuid,
    Uuid,
    Option<Vec<Uuid>>,
    String,
    i64,
    i64,
    String,
    i64,
    DateTime<Utc>,
    DateTime<Utc>,
);

type RefundCells = (
    Uuid,
    Uuid,
    Uuid,
    Uuid,
    Uuid,
    Option<Vec<Uuid>>,
    i64,
    i64,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);

type BookingCells = (
    Uuid,
    Uuid,
    Uuid,
    i32,
    i32,
    String,
    Option<Uuid>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    i64,
);

/// One payment row, bound by position (`USING TIMESTAMP ?` has no column
/// name to match).
#[derive(SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct PaymentWrite {
    day: Option<NaiveDate>,
    bucket: Option<i32>,
    payment_id: Uuid,
    user_id: Uuid,
    schedule_id: Uuid,
    concert_id: Uuid,
    booking_ids: Vec<Uuid>,
    status: &'static str,
    total_price: i64,
    refund_price: i64,
    card_last4: String,
    revision: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    created_by: Uuid,
    updated_by: Uuid,
    timestamp: i64,
}

/// The same row for `payments_by_user`, which has no day and bucket.
#[derive(SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct PaymentByUserWrite {
    payment_id: Uuid,
    user_id: Uuid,
    schedule_id: Uuid,
    concert_id: Uuid,
    booking_ids: Vec<Uuid>,
    status: &'static str,
    total_price: i64,
    refund_price: i64,
    card_last4: String,
    revision: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    created_by: Uuid,
    updated_by: Uuid,
    timestamp: i64,
}

impl PaymentWrite {
    fn by_user(self) -> PaymentByUserWrite {
        PaymentByUserWrite {
            payment_id: self.payment_id,
            user_id: self.user_id,
            schedule_id: self.schedule_id,
            concert_id: self.concert_id,
            booking_ids: self.booking_ids,
            status: self.status,
            total_price: self.total_price,
            refund_price: self.refund_price,
            card_last4: self.card_last4,
            revision: self.revision,
            created_at: self.created_at,
            updated_at: self.updated_at,
            created_by: self.created_by,
            updated_by: self.updated_by,
            timestamp: self.timestamp,
        }
    }
}

#[derive(SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct RefundWrite {
    day: NaiveDate,
    bucket: i32,
    refund_id: Uuid,
    payment_id: Uuid,
    user_id: Uuid,
    schedule_id: Uuid,
    concert_id: Uuid,
    booking_ids: Vec<Uuid>,
    total_price: i64,
    amount: i64,
    reason: String,
    requested_at: DateTime<Utc>,
    refunded_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    created_by: Uuid,
    updated_at: DateTime<Utc>,
    updated_by: Uuid,
    timestamp: i64,
}

impl ViewQueries {
    pub(super) async fn prepare(s: &CqlSession) -> Result<Self, StoreError> {
        let put_payment = |table: &str, key: &str, marks: &str| {
            format!(
                "INSERT INTO {table} ({key}{PAYMENT_COLUMNS}, created_by, updated_by, is_deleted) \
                 VALUES ({marks}?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false) USING TIMESTAMP ?"
            )
        };
        let by_day = |table: &str, columns: &str, order: &str| {
            (
                format!("SELECT {columns} FROM {table} WHERE day = ? AND bucket = ? LIMIT ?"),
                format!(
                    "SELECT {columns} FROM {table} WHERE day = ? AND bucket = ? AND {order} < (?, ?) LIMIT ?"
                ),
            )
        };
        let put_booking = |table: &str, created: bool| {
            let (col, mark) = if created {
                ("created_at, ", "?, ")
            } else {
                ("", "")
            };
            format!(
                "INSERT INTO {table} (booking_id, user_id, schedule_id, seat_row, seat_col, status, \
                 payment_id, {col}updated_at, version, created_by, updated_by, is_deleted) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, {mark}?, ?, ?, ?, false) USING TIMESTAMP ?"
            )
        };
        let (payments_of_day, payments_of_day_before) = by_day(
            "payments_by_day",
            PAYMENT_COLUMNS,
            "(created_at, payment_id)",
        );
        let (refunds_of_day, refunds_of_day_before) =
            by_day("refunds_by_day", REFUND_COLUMNS, "(refunded_at, refund_id)");
        let p = |cql: String| async move { prepare(s, &cql).await.map(idempotent) };
        Ok(Self {
            put_payment_by_user: p(put_payment("payments_by_user", "", "")).await?,
            put_payment_by_day: p(put_payment("payments_by_day", "day, bucket, ", "?, ?, ")).await?,
            payments_of_user: p(format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments_by_user WHERE user_id = ? LIMIT ?"
            ))
            .await?,
            payments_of_day: p(payments_of_day).await?,
            payments_of_day_before: p(payments_of_day_before).await?,
            put_refund: p(format!(
                "INSERT INTO refunds_by_day (day, bucket, {REFUND_COLUMNS}, created_at, created_by, \
                 updated_at, updated_by, is_deleted) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false) USING TIMESTAMP ?"
            ))
            .await?,
            refunds_of_day: p(refunds_of_day).await?,
            refunds_of_day_before: p(refunds_of_day_before).await?,
            put_booking_by_user: p(put_booking("bookings_by_user", false)).await?,
            put_booking_by_schedule: p(put_booking("bookings_by_schedule", false)).await?,
            put_held_by_user: p(put_booking("bookings_by_user", true)).await?,
            put_held_by_schedule: p(put_booking("bookings_by_schedule", true)).await?,
            bookings_of_user: p(format!(
                "SELECT {BOOKING_COLUMNS} FROM bookings_by_user WHERE user_id = ?"
            ))
            .await?,
            bookings_of_schedule: p(format!(
                "SELECT {BOOKING_COLUMNS} FROM bookings_by_schedule WHERE schedule_id = ?"
            ))
            .await?,
        })
    }
}

/// The write timestamp of a version: versions start at 0, CQL timestamps are
/// any i64, so the version itself serves.
fn version_timestamp(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| corrupt(format!("version {version} out of range")))
}

pub(super) fn limit(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn payment_of(c: PaymentCells) -> Result<PaymentSnapshot, StoreError> {
    Ok(PaymentSnapshot {
        payment_id: PaymentId::from_uuid(c.0),
        user_id: UserId::from_uuid(c.1),
        schedule_id: ScheduleId::from_uuid(c.2),
        concert_id: c.3.into(),
        booking_ids: c
            .4
            .unwrap_or_default()
            .into_iter()
            .map(BookingId::from_uuid)
            .collect(),
        status: PaymentStatus::parse(&c.5)
            .ok_or_else(|| corrupt(format!("payment status {:?}", c.5)))?,
        total_price: c.6,
        refund_price: c.7,
        card_last4: c.8,
        revision: u64::try_from(c.9).map_err(corrupt)?,
        created_at: c.10,
        updated_at: c.11,
    })
}

fn refund_of(c: RefundCells) -> RefundView {
    RefundView {
        payment_id: PaymentId::from_uuid(c.1),
        user_id: UserId::from_uuid(c.2),
        schedule_id: ScheduleId::from_uuid(c.3),
        concert_id: c.4.into(),
        total_price: c.6,
        refund: Refund {
            refund_id: RefundId::from_uuid(c.0),
            booking_ids: c
                .5
                .unwrap_or_default()
                .into_iter()
                .map(BookingId::from_uuid)
                .collect(),
            amount: c.7,
            reason: c.8,
            requested_at: c.9,
            refunded_at: Some(c.10),
        },
    }
}

fn booking_of(c: BookingCells) -> Result<BookingRow, StoreError> {
    let coordinate = |n: i32| u16::try_from(n).map_err(corrupt);
    Ok(BookingRow {
        booking_id: BookingId::from_uuid(c.0),
        user_id: UserId::from_uuid(c.1),
        schedule_id: ScheduleId::from_uuid(c.2),
        seat: SeatRef {
            row: coordinate(c.3)?,
            col: coordinate(c.4)?,
        },
        status: BookingStatus::parse(&c.5)
            .ok_or_else(|| corrupt(format!("booking status {:?}", c.5)))?,
        payment_id: c.6.map(PaymentId::from_uuid),
        created_at: c.7,
        updated_at: c.8,
        version: c.9,
    })
}

impl CqlStore {
    fn v(&self) -> &ViewQueries {
        &self.inner.views
    }

    pub(super) async fn rows<R>(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + 'static,
    {
        let mut stream = self
            .session()
            .execute_iter(statement.clone(), values)
            .await
            .map_err(unavailable)?
            .rows_stream::<R>()
            .map_err(corrupt)?;
        let mut out = Vec::new();
        while let Some(row) = stream.next().await {
            out.push(row.map_err(corrupt)?);
        }
        Ok(out)
    }
}

#[async_trait]
impl PaymentViews for CqlStore {
    async fn put_payment_view(&self, p: &PaymentSnapshot) -> Result<(), StoreError> {
        let ts = version_timestamp(p.revision)?;
        let user = p.user_id.as_uuid();
        let day = p.created_at.date_naive();
        let row = |day: Option<NaiveDate>| PaymentWrite {
            day,
            bucket: day.map(|_| day_bucket(p.payment_id.as_uuid())),
            payment_id: p.payment_id.as_uuid(),
            user_id: user,
            schedule_id: p.schedule_id.as_uuid(),
            concert_id: p.concert_id.as_uuid(),
            booking_ids: p.booking_ids.iter().map(|b| b.as_uuid()).collect(),
            status: p.status.as_str(),
            total_price: p.total_price,
            refund_price: p.refund_price,
            card_last4: p.card_last4.clone(),
            revision: ts,
            created_at: millis(p.created_at),
            updated_at: millis(p.updated_at),
            created_by: user,
            updated_by: user,
            timestamp: ts,
        };
        let (a, b) = futures::join!(
            self.session()
                .execute_unpaged(&self.v().put_payment_by_user, row(None).by_user()),
            self.session()
                .execute_unpaged(&self.v().put_payment_by_day, row(Some(day)))
        );
        a.map_err(unavailable)?;
        b.map_err(unavailable)?;
        Ok(())
    }

    async fn put_refund_view(&self, r: &RefundView) -> Result<(), StoreError> {
        let at = millis(r.refunded_at());
        let id = r.refund.refund_id.as_uuid();
        let user = r.user_id.as_uuid();
        let row = RefundWrite {
            day: at.date_naive(),
            bucket: day_bucket(id),
            refund_id: id,
            payment_id: r.payment_id.as_uuid(),
            user_id: user,
            schedule_id: r.schedule_id.as_uuid(),
            concert_id: r.concert_id.as_uuid(),
            booking_ids: r.refund.booking_ids.iter().map(|b| b.as_uuid()).collect(),
            total_price: r.total_price,
            amount: r.refund.amount,
            reason: r.refund.reason.clone(),
            requested_at: millis(r.refund.requested_at),
            refunded_at: at,
            created_at: at,
            created_by: user,
            updated_at: at,
            updated_by: user,
            // A refund row never changes: its own time is a stable timestamp.
            timestamp: at.timestamp_millis(),
        };
        self.session()
            .execute_unpaged(&self.v().put_refund, row)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn payments_of_user(
        &self,
        user: UserId,
        n: usize,
    ) -> Result<Vec<PaymentSnapshot>, StoreError> {
        self.rows::<PaymentCells>(&self.v().payments_of_user, (user.as_uuid(), limit(n)))
            .await?
            .into_iter()
            .map(payment_of)
            .collect()
    }

    async fn payments_of_day(
        &self,
        day: NaiveDate,
        bucket: i32,
        before: Option<ListCursor>,
        n: usize,
    ) -> Result<Vec<PaymentSnapshot>, StoreError> {
        let rows = match before {
            None => {
                self.rows::<PaymentCells>(&self.v().payments_of_day, (day, bucket, limit(n)))
                    .await?
            }
            Some(c) => {
                self.rows::<PaymentCells>(
                    &self.v().payments_of_day_before,
                    (day, bucket, millis(c.at), c.id, limit(n)),
                )
                .await?
            }
        };
        rows.into_iter().map(payment_of).collect()
    }

    async fn refunds_of_day(
        &self,
        day: NaiveDate,
        bucket: i32,
        before: Option<ListCursor>,
        n: usize,
    ) -> Result<Vec<RefundView>, StoreError> {
        let rows = match before {
            None => {
                self.rows::<RefundCells>(&self.v().refunds_of_day, (day, bucket, limit(n)))
                    .await?
            }
            Some(c) => {
                self.rows::<RefundCells>(
                    &self.v().refunds_of_day_before,
                    (day, bucket, millis(c.at), c.id, limit(n)),
                )
                .await?
            }
        };
        Ok(rows.into_iter().map(refund_of).collect())
    }
}

#[async_trait]
impl BookingRows for CqlStore {
    async fn put_booking(&self, b: &BookingRow) -> Result<(), StoreError> {
        let user = b.user_id.as_uuid();
        let head = (
            b.booking_id.as_uuid(),
            user,
            b.schedule_id.as_uuid(),
            i32::from(b.seat.row),
            i32::from(b.seat.col),
            b.status.as_str(),
            b.payment_id.map(|p| p.as_uuid()),
        );
        let updated = millis(b.updated_at);
        let (h0, h1, h2, h3, h4, h5, h6) = head;
        let (by_user, by_schedule) = match b.created_at {
            Some(created) => {
                let values = (
                    h0,
                    h1,
                    h2,
                    h3,
                    h4,
                    h5,
                    h6,
                    millis(created),
                    updated,
                    b.version,
                    user,
                    user,
                    b.version,
                );
                let q = self.v();
                futures::join!(
                    self.session().execute_unpaged(&q.put_held_by_user, values),
                    self.session()
                        .execute_unpaged(&q.put_held_by_schedule, values)
                )
            }
            None => {
                let values = (
                    h0, h1, h2, h3, h4, h5, h6, updated, b.version, user, user, b.version,
                );
                let q = self.v();
                futures::join!(
                    self.session()
                        .execute_unpaged(&q.put_booking_by_user, values),
                    self.session()
                        .execute_unpaged(&q.put_booking_by_schedule, values)
                )
            }
        };
        by_user.map_err(unavailable)?;
        by_schedule.map_err(unavailable)?;
        Ok(())
    }

    async fn bookings_of_user(&self, user: UserId) -> Result<Vec<BookingRow>, StoreError> {
        self.rows::<BookingCells>(&self.v().bookings_of_user, (user.as_uuid(),))
            .await?
            .into_iter()
            .map(booking_of)
            .collect()
    }

    async fn bookings_of_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<Vec<BookingRow>, StoreError> {
        self.rows::<BookingCells>(&self.v().bookings_of_schedule, (schedule.as_uuid(),))
            .await?
            .into_iter()
            .map(booking_of)
            .collect()
    }
}
