//! The request-log tables: rows with a TTL, listed newest first per day
//! bucket or per user and day.

use super::views::limit;
use super::{corrupt, idempotent, millis, prepare, unavailable, CqlStore};
use crate::ports::{day_bucket, ListCursor, RequestLogRow, RequestLogs, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use scylla::client::session::Session as CqlSession;
use scylla::statement::prepared::PreparedStatement;
use scylla::SerializeRow;
use ticketing_domain::ids::UserId;
use uuid::Uuid;

pub(super) struct RequestLogQueries {
    put_by_day: PreparedStatement,
    put_by_user: PreparedStatement,
    of_day: PreparedStatement,
    of_day_before: PreparedStatement,
    of_user: PreparedStatement,
    of_user_before: PreparedStatement,
}

const COLUMNS: &str = "request_id, at, user_id, method, path, status, latency_micros";

type Cells = (Uuid, DateTime<Utc>, Option<Uuid>, String, String, i32, i64);

/// One row, bound by position (`USING TTL ?` has no column name).
#[derive(SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct ByDayWrite<'a> {
    day: NaiveDate,
    bucket: i32,
    at: DateTime<Utc>,
    request_id: Uuid,
    user_id: Option<Uuid>,
    method: &'a str,
    path: &'a str,
    status: i32,
    latency_micros: i64,
    created_at: DateTime<Utc>,
    created_by: Option<Uuid>,
    updated_at: DateTime<Utc>,
    updated_by: Option<Uuid>,
    ttl: i32,
}

#[derive(SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct ByUserWrite<'a> {
    user_id: Uuid,
    day: NaiveDate,
    at: DateTime<Utc>,
    request_id: Uuid,
    method: &'a str,
    path: &'a str,
    status: i32,
    latency_micros: i64,
    created_at: DateTime<Utc>,
    created_by: Uuid,
    updated_at: DateTime<Utc>,
    updated_by: Uuid,
    ttl: i32,
}

impl RequestLogQueries {
    pub(super) async fn prepare(s: &CqlSession) -> Result<Self, StoreError> {
        let p = |cql: String| async move { prepare(s, &cql).await.map(idempotent) };
        Ok(Self {
            put_by_day: p(
                "INSERT INTO request_logs_by_day (day, bucket, at, request_id, user_id, method, path, \
                 status, latency_micros, created_at, created_by, updated_at, updated_by, is_deleted) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false) USING TTL ?"
                    .into(),
            )
            .await?,
            put_by_user: p(
                "INSERT INTO request_logs_by_user (user_id, day, at, request_id, method, path, \
                 status, latency_micros, created_at, created_by, updated_at, updated_by, is_deleted) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false) USING TTL ?"
                    .into(),
            )
            .await?,
            of_day: p(format!(
                "SELECT {COLUMNS} FROM request_logs_by_day WHERE day = ? AND bucket = ? LIMIT ?"
            ))
            .await?,
            of_day_before: p(format!(
                "SELECT {COLUMNS} FROM request_logs_by_day WHERE day = ? AND bucket = ? \
                 AND (at, request_id) < (?, ?) LIMIT ?"
            ))
            .await?,
            of_user: p(format!(
                "SELECT {COLUMNS} FROM request_logs_by_user WHERE user_id = ? AND day = ? LIMIT ?"
            ))
            .await?,
            of_user_before: p(format!(
                "SELECT {COLUMNS} FROM request_logs_by_user WHERE user_id = ? AND day = ? \
                 AND (at, request_id) < (?, ?) LIMIT ?"
            ))
            .await?,
        })
    }
}

fn row_of(c: Cells) -> Result<RequestLogRow, StoreError> {
    Ok(RequestLogRow {
        request_id: c.0,
        at: c.1,
        user_id: c.2.map(UserId::from_uuid),
        method: c.3,
        path: c.4,
        status: u16::try_from(c.5).map_err(corrupt)?,
        latency_micros: u64::try_from(c.6).map_err(corrupt)?,
    })
}

#[async_trait]
impl RequestLogs for CqlStore {
    async fn put_request_log(
        &self,
        row: &RequestLogRow,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let ttl = (expires_at - now).num_seconds();
        if ttl <= 0 {
            return Ok(());
        }
        let ttl = i32::try_from(ttl).unwrap_or(i32::MAX);
        let at = millis(row.at);
        let day = at.date_naive();
        let user = row.user_id.map(|u| u.as_uuid());
        let status = i32::from(row.status);
        let latency = i64::try_from(row.latency_micros).unwrap_or(i64::MAX);
        let q = &self.inner.request_logs;
        let by_day = self.session().execute_unpaged(
            &q.put_by_day,
            ByDayWrite {
                day,
                bucket: day_bucket(row.request_id),
                at,
                request_id: row.request_id,
                user_id: user,
                method: &row.method,
                path: &row.path,
                status,
                latency_micros: latency,
                created_at: at,
                created_by: user,
                updated_at: at,
                updated_by: user,
                ttl,
            },
        );
        match user {
            Some(user) => {
                let by_user = self.session().execute_unpaged(
                    &q.put_by_user,
                    ByUserWrite {
                        user_id: user,
                        day,
                        at,
                        request_id: row.request_id,
                        method: &row.method,
                        path: &row.path,
                        status,
                        latency_micros: latency,
                        created_at: at,
                        created_by: user,
                        updated_at: at,
                        updated_by: user,
                        ttl,
                    },
                );
                let (a, b) = futures::join!(by_day, by_user);
                a.map_err(unavailable)?;
                b.map_err(unavailable)?;
            }
            None => {
                by_day.await.map_err(unavailable)?;
            }
        }
        Ok(())
    }

    async fn request_logs_of_day(
        &self,
        day: NaiveDate,
        bucket: i32,
        before: Option<ListCursor>,
        n: usize,
    ) -> Result<Vec<RequestLogRow>, StoreError> {
        let q = &self.inner.request_logs;
        let rows = match before {
            None => {
                self.rows::<Cells>(&q.of_day, (day, bucket, limit(n)))
                    .await?
            }
            Some(c) => {
                self.rows::<Cells>(
                    &q.of_day_before,
                    (day, bucket, millis(c.at), c.id, limit(n)),
                )
                .await?
            }
        };
        rows.into_iter().map(row_of).collect()
    }

    async fn request_logs_of_user(
        &self,
        user: UserId,
        day: NaiveDate,
        before: Option<ListCursor>,
        n: usize,
    ) -> Result<Vec<RequestLogRow>, StoreError> {
        let q = &self.inner.request_logs;
        let u = user.as_uuid();
        let rows = match before {
            None => self.rows::<Cells>(&q.of_user, (u, day, limit(n))).await?,
            Some(c) => {
                self.rows::<Cells>(&q.of_user_before, (u, day, millis(c.at), c.id, limit(n)))
                    .await?
            }
        };
        rows.into_iter().map(row_of).collect()
    }
}
