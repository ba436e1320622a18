//! The managers' view of money: payments and refunds as the payment sink
//! recorded them, newest first, paged with an opaque cursor.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::live::LiveEvent;
use crate::AppState;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use ticketing_domain::events::{PaymentChange, PaymentChanged, PaymentSnapshot, RequestLogged};
use ticketing_domain::ids::UserId;
use ticketing_domain::payment::PaymentStatus;
use ticketing_storage::listing::{self, ListQuery};
use ticketing_storage::{ListCursor, RefundView, RequestLogRow};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 500;
/// The widest range one listing may ask for; a longer look back pages
/// through several requests.
pub const MAX_RANGE_DAYS: i64 = 31;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PaymentsQuery {
    /// `WAITING`, `COMPLETED`, `FAILED`, `CANCELED` or `PART_CANCELED`.
    pub status: Option<String>,
    /// RFC 3339 instant or `YYYY-MM-DD` (midnight UTC), inclusive; default:
    /// 24 hours before `to`.
    pub from: Option<String>,
    /// RFC 3339 instant or `YYYY-MM-DD` (midnight UTC), exclusive; default:
    /// now.
    pub to: Option<String>,
    /// 1 to 500; default 100.
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RefundsQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminPayment {
    pub payment_id: Uuid,
    pub user_id: Uuid,
    pub schedule_id: Uuid,
    pub concert_id: Uuid,
    pub status: &'static str,
    pub total_price: i64,
    pub refund_price: i64,
    pub card_last4: String,
    pub booking_ids: Vec<Uuid>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl From<&PaymentSnapshot> for AdminPayment {
    fn from(p: &PaymentSnapshot) -> Self {
        Self {
            payment_id: p.payment_id.as_uuid(),
            user_id: p.user_id.as_uuid(),
            schedule_id: p.schedule_id.as_uuid(),
            concert_id: p.concert_id.as_uuid(),
            status: p.status.as_str(),
            total_price: p.total_price,
            refund_price: p.refund_price,
            card_last4: p.card_last4.clone(),
            booking_ids: p.booking_ids.iter().map(|b| b.as_uuid()).collect(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminRefund {
    pub refund_id: Uuid,
    pub payment_id: Uuid,
    pub user_id: Uuid,
    pub schedule_id: Uuid,
    pub concert_id: Uuid,
    /// Always `REFUNDED`: only refunds whose money went back are listed.
    pub status: &'static str,
    /// The payment's total.
    pub total_price: i64,
    /// What this refund gave back.
    pub refund_price: i64,
    pub booking_ids: Vec<Uuid>,
    pub reason: String,
    #[schema(value_type = String, format = DateTime)]
    pub requested_at: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub refunded_at: DateTime<Utc>,
}

impl From<&RefundView> for AdminRefund {
    fn from(r: &RefundView) -> Self {
        Self {
            refund_id: r.refund.refund_id.as_uuid(),
            payment_id: r.payment_id.as_uuid(),
            user_id: r.user_id.as_uuid(),
            schedule_id: r.schedule_id.as_uuid(),
            concert_id: r.concert_id.as_uuid(),
            status: "REFUNDED",
            total_price: r.total_price,
            refund_price: r.refund.amount,
            booking_ids: r.refund.booking_ids.iter().map(|b| b.as_uuid()).collect(),
            reason: r.refund.reason.clone(),
            requested_at: r.refund.requested_at,
            refunded_at: r.refunded_at(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminPage<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A cursor is `<millis>_<uuid>`: opaque to clients, readable in logs.
pub fn encode_cursor(c: &ListCursor) -> String {
    format!("{}_{}", c.at.timestamp_millis(), c.id)
}

pub fn decode_cursor(raw: &str) -> Result<ListCursor, ApiError> {
    let bad = || ApiError::bad_request("INVALID_CURSOR", "cursor is not one this API returned");
    let (millis, id) = raw.split_once('_').ok_or_else(bad)?;
    Ok(ListCursor {
        at: millis
            .parse()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(bad)?,
        id: id.parse().map_err(|_| bad())?,
    })
}

fn instant(field: &str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(day) = raw.parse::<NaiveDate>() {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(ApiError::bad_request(
        "INVALID_TIME_RANGE",
        format!("{field} must be an RFC 3339 instant or a YYYY-MM-DD date"),
    ))
}

/// `[from, to)`: to defaults to now, from to a day before to.
pub fn time_range(
    from: Option<&str>,
    to: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = to.map(|t| instant("to", t)).transpose()?.unwrap_or(now);
    let from = from
        .map(|f| instant("from", f))
        .transpose()?
        .unwrap_or(to - Duration::days(1));
    if from >= to {
        return Err(ApiError::bad_request(
            "INVALID_TIME_RANGE",
            "from must be before to",
        ));
    }
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(ApiError::bad_request(
            "INVALID_TIME_RANGE",
            format!("at most {MAX_RANGE_DAYS} days at once"),
        ));
    }
    Ok((from, to))
}

pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        _ => Err(ApiError::bad_request(
            "INVALID_LIMIT",
            format!("limit is 1 to {MAX_LIMIT}"),
        )),
    }
}

fn query(
    from: Option<&str>,
    to: Option<&str>,
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<ListQuery, ApiError> {
    let (from, to) = time_range(from, to, Utc::now())?;
    Ok(ListQuery {
        from,
        to,
        after: cursor.map(decode_cursor).transpose()?,
        limit: page_limit(limit)?,
    })
}

/// Payments asked for in the range, newest first (MANAGER only).
#[utoipa::path(get, path = "/api/v1/admin/payments", tag = "admin",
    params(PaymentsQuery), security(("bearer" = [])),
    responses((status = 200, body = AdminPage<AdminPayment>),
              (status = 400, body = crate::error::ErrorBody, description = "INVALID_STATUS, INVALID_TIME_RANGE, INVALID_LIMIT, INVALID_CURSOR"),
              (status = 401, body = crate::error::ErrorBody, description = "UNAUTHENTICATED"),
              (status = 403, body = crate::error::ErrorBody, description = "FORBIDDEN: not a MANAGER")))]
pub async fn list_payments(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PaymentsQuery>,
) -> ApiResult<Json<AdminPage<AdminPayment>>> {
    caller.require_manager()?;
    let status = q
        .status
        .as_deref()
        .map(|raw| {
            PaymentStatus::parse(raw).ok_or_else(|| {
                ApiError::bad_request(
                    "INVALID_STATUS",
                    "status is WAITING, COMPLETED, FAILED, CANCELED or PART_CANCELED",
                )
            })
        })
        .transpose()?;
    let list = query(
        q.from.as_deref(),
        q.to.as_deref(),
        q.limit,
        q.cursor.as_deref(),
    )?;
    let page = listing::payments(s.payment_views.as_ref(), &list, |p| {
        status.is_none_or(|want| p.status == want)
    })
    .await
    .map_err(ApiError::unavailable)?;
    Ok(Json(AdminPage {
        items: page.items.iter().map(AdminPayment::from).collect(),
        next_cursor: page.next.as_ref().map(encode_cursor),
    }))
}

/// Refunds whose money went back in the range, newest first (MANAGER only).
#[utoipa::path(get, path = "/api/v1/admin/refunds", tag = "admin",
    params(RefundsQuery), security(("bearer" = [])),
    responses((status = 200, body = AdminPage<AdminRefund>),
              (status = 400, body = crate::error::ErrorBody, description = "INVALID_TIME_RANGE, INVALID_LIMIT, INVALID_CURSOR"),
              (status = 401, body = crate::error::ErrorBody, description = "UNAUTHENTICATED"),
              (status = 403, body = crate::error::ErrorBody, description = "FORBIDDEN: not a MANAGER")))]
pub async fn list_refunds(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RefundsQuery>,
) -> ApiResult<Json<AdminPage<AdminRefund>>> {
    caller.require_manager()?;
    let list = query(
        q.from.as_deref(),
        q.to.as_deref(),
        q.limit,
        q.cursor.as_deref(),
    )?;
    let page = listing::refunds(s.payment_views.as_ref(), &list)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(AdminPage {
        items: page.items.iter().map(AdminRefund::from).collect(),
        next_cursor: page.next.as_ref().map(encode_cursor),
    }))
}

/// What the live stream says of one change: `event: payment` with the
/// payment after it, and for a refund also `event: refund`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LivePayment {
    /// `STARTED`, `COMPLETED`, `FAILED` or `REFUNDED`.
    pub change: &'static str,
    #[serde(flatten)]
    pub payment: AdminPayment,
}

fn change_name(c: &PaymentChange) -> &'static str {
    match c {
        PaymentChange::Started => "STARTED",
        PaymentChange::Completed => "COMPLETED",
        PaymentChange::Failed => "FAILED",
        PaymentChange::Refunded(_) => "REFUNDED",
    }
}

fn sse(name: &'static str, id: String, data: &impl Serialize) -> SseEvent {
    SseEvent::default()
        .event(name)
        .id(id)
        .json_data(data)
        .unwrap_or_else(|_| SseEvent::default().event(name))
}

/// The events of one change, as they go on the stream. The SSE id is the
/// event's: a change published twice (after a crash) repeats it.
pub fn live_events(e: &PaymentChanged) -> Vec<SseEvent> {
    let id = e.meta.event_id.to_string();
    let mut out = vec![sse(
        "payment",
        id.clone(),
        &LivePayment {
            change: change_name(&e.change),
            payment: AdminPayment::from(&e.payment),
        },
    )];
    if let Some(refund) = RefundView::of(e) {
        out.push(sse(
            "refund",
            format!("{id}-refund"),
            &AdminRefund::from(&refund),
        ));
    }
    out
}

/// Payments and refunds as they happen (MANAGER only): Server-Sent Events,
/// `event: payment` (a `LivePayment`) for every change of a payment and
/// `event: refund` (an `AdminRefund`) for every refund. A subscriber too slow
/// to keep up gets a comment saying how many events it missed, and goes on.
#[utoipa::path(get, path = "/api/v1/admin/stream", tag = "admin", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", description = "`event: payment` (LivePayment) and `event: refund` (AdminRefund)"),
              (status = 401, body = crate::error::ErrorBody, description = "UNAUTHENTICATED"),
              (status = 403, body = crate::error::ErrorBody, description = "FORBIDDEN: not a MANAGER")))]
pub async fn stream(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    caller.require_manager()?;
    let mut rx = s.live.subscribe();
    let stream = async_stream::stream! {
        loop {
            match rx.recv().await {
                Ok(LiveEvent::Payment(e)) => {
                    for event in live_events(&e) {
                        yield Ok(event);
                    }
                }
                Ok(LiveEvent::Request(_)) => {}
                Err(RecvError::Lagged(n)) => {
                    yield Ok(SseEvent::default().comment(format!("{n} events missed")));
                }
                Err(RecvError::Closed) => break,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RequestLogsQuery {
    /// Only this user's requests; all users' (anonymous included) without it.
    pub user_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RequestStreamQuery {
    /// Only this user's requests.
    pub user_id: Option<String>,
}

/// One answered request. Never a body, a query string, a header or a token.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminRequestLog {
    pub request_id: Uuid,
    /// When the request arrived.
    #[schema(value_type = String, format = DateTime)]
    pub time: DateTime<Utc>,
    /// `null` for an anonymous request.
    pub user_id: Option<Uuid>,
    pub method: String,
    /// Without the query string.
    pub path: String,
    pub status: u16,
    /// From arrival to the response's head, in milliseconds.
    pub latency_ms: f64,
}

impl From<&RequestLogRow> for AdminRequestLog {
    fn from(r: &RequestLogRow) -> Self {
        Self {
            request_id: r.request_id,
            time: r.at,
            user_id: r.user_id.map(|u| u.as_uuid()),
            method: r.method.clone(),
            path: r.path.clone(),
            status: r.status,
            latency_ms: r.latency_micros as f64 / 1000.0,
        }
    }
}

impl From<&RequestLogged> for AdminRequestLog {
    fn from(e: &RequestLogged) -> Self {
        Self {
            request_id: e.meta.event_id.as_uuid(),
            time: e.meta.occurred_at,
            user_id: e.meta.actor.map(|u| u.as_uuid()),
            method: e.method.clone(),
            path: e.path.clone(),
            status: e.status,
            latency_ms: e.latency_micros as f64 / 1000.0,
        }
    }
}

fn user_filter(raw: Option<&str>) -> Result<Option<UserId>, ApiError> {
    raw.map(|u| {
        u.parse::<Uuid>()
            .map(UserId::from_uuid)
            .map_err(|_| ApiError::bad_request("INVALID_USER_ID", "user_id is not a UUID"))
    })
    .transpose()
}

/// Answered requests in the range, newest first (MANAGER only). Kept for
/// `TICKETING_REQUEST_LOG_RETENTION_DAYS`.
#[utoipa::path(get, path = "/api/v1/admin/request-logs", tag = "admin",
    params(RequestLogsQuery), security(("bearer" = [])),
    responses((status = 200, body = AdminPage<AdminRequestLog>),
              (status = 400, body = crate::error::ErrorBody, description = "INVALID_USER_ID, INVALID_TIME_RANGE, INVALID_LIMIT, INVALID_CURSOR"),
              (status = 401, body = crate::error::ErrorBody, description = "UNAUTHENTICATED"),
              (status = 403, body = crate::error::ErrorBody, description = "FORBIDDEN: not a MANAGER")))]
pub async fn list_request_logs(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RequestLogsQuery>,
) -> ApiResult<Json<AdminPage<AdminRequestLog>>> {
    caller.require_manager()?;
    let user = user_filter(q.user_id.as_deref())?;
    let list = query(
        q.from.as_deref(),
        q.to.as_deref(),
        q.limit,
        q.cursor.as_deref(),
    )?;
    let page = listing::request_logs(s.request_logs.as_ref(), user, &list)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(AdminPage {
        items: page.items.iter().map(AdminRequestLog::from).collect(),
        next_cursor: page.next.as_ref().map(encode_cursor),
    }))
}

/// Answered requests as they happen (MANAGER only): Server-Sent Events,
/// `event: request` with an `AdminRequestLog`, optionally one user's only.
#[utoipa::path(get, path = "/api/v1/admin/request-logs/stream", tag = "admin",
    params(RequestStreamQuery), security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", description = "`event: request` (AdminRequestLog)"),
              (status = 400, body = crate::error::ErrorBody, description = "INVALID_USER_ID"),
              (status = 401, body = crate::error::ErrorBody, description = "UNAUTHENTICATED"),
              (status = 403, body = crate::error::ErrorBody, description = "FORBIDDEN: not a MANAGER")))]
pub async fn stream_request_logs(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RequestStreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    caller.require_manager()?;
    let user = user_filter(q.user_id.as_deref())?;
    let mut rx = s.live.subscribe();
    let stream = async_stream::stream! {
        loop {
            match rx.recv().await {
                Ok(LiveEvent::Request(e)) if user.is_none() || e.meta.actor == user => {
                    yield Ok(sse("request", e.meta.event_id.to_string(), &AdminRequestLog::from(&e)));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    yield Ok(SseEvent::default().comment(format!("{n} events missed")));
                }
                Err(RecvError::Closed) => break,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let c = ListCursor {
            at: DateTime::from_timestamp_millis(1_900_000_000_123).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&c)).unwrap(), c);
        for junk in ["", "x", "12_notauuid", "abc_0190", "_"] {
            assert_eq!(decode_cursor(junk).unwrap_err().code, "INVALID_CURSOR");
        }
    }

    #[test]
    fn time_ranges_default_to_a_day_and_are_bounded() {
        let now: DateTime<Utc> = "2030-05-05T12:00:00Z".parse().unwrap();
        assert_eq!(
            time_range(None, None, now).unwrap(),
            (now - Duration::days(1), now)
        );
        let (from, to) =
            time_range(Some("2030-05-01"), Some("2030-05-02T00:00:00+09:00"), now).unwrap();
        assert_eq!(from.to_rfc3339(), "2030-05-01T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2030-05-01T15:00:00+00:00");
        for (f, t) in [
            (Some("yesterday"), None),
            (Some("2030-05-02"), Some("2030-05-01")),
            (Some("2030-01-01"), Some("2030-05-01")),
        ] {
            assert_eq!(
                time_range(f, t, now).unwrap_err().code,
                "INVALID_TIME_RANGE"
            );
        }
        assert_eq!(page_limit(Some(0)).unwrap_err().code, "INVALID_LIMIT");
        assert_eq!(page_limit(Some(501)).unwrap_err().code, "INVALID_LIMIT");
        assert_eq!(page_limit(None).unwrap(), DEFAULT_LIMIT);
    }
}
