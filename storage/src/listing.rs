//! Newest-first listings over a range of days whose rows are spread over the
//! buckets of each day (`payments_by_day`, `refunds_by_day`): a k-way merge
//! of the buckets, resumable with a cursor.

use crate::ports::{
    ListCursor, PaymentViews, RefundView, RequestLogRow, RequestLogs, StoreError, DAY_BUCKETS,
};
use chrono::{DateTime, Days, NaiveDate, Utc};
use std::future::Future;
use ticketing_domain::events::PaymentSnapshot;
use ticketing_domain::ids::UserId;
use uuid::Uuid;

/// At most this many rows are read for one page: a filter that matches
/// little returns a short page and a cursor rather than reading for ever.
pub const MAX_SCANNED: usize = 5_000;

/// Which rows of a listing: those in `[from, to)`, older than `after` when
/// resuming, at most `limit` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub after: Option<ListCursor>,
    pub limit: usize,
}

/// One page: the rows, and where the next page starts (`None` at the end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub next: Option<ListCursor>,
}

fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// Walks the days from the newest down, merging each day's buckets. A
/// bucket that filled its batch may hold more rows below its last one, so
/// rows older than the newest such "frontier" wait for the next round, read
/// from there.
async fn merged<T, F, Fut>(
    q: &ListQuery,
    buckets: i32,
    key: impl Fn(&T) -> ListCursor,
    keep: impl Fn(&T) -> bool,
    fetch: F,
) -> Result<Listed<T>, StoreError>
where
    F: Fn(NaiveDate, i32, Option<ListCursor>, usize) -> Fut,
    Fut: Future<Output = Result<Vec<T>, StoreError>>,
{
    let mut items = Vec::new();
    if q.limit == 0 || q.from >= q.to {
        return Ok(Listed { items, next: None });
    }
    // Strictly older than `to` (the nil id sorts first at that instant).
    let mut cursor = ListCursor {
        at: q.to,
        id: Uuid::nil(),
    };
    if let Some(after) = q.after {
        cursor = cursor.min(after);
    }
    let batch = q.limit.min(MAX_SCANNED) + 1;
    let first_day = q.from.date_naive();
    let mut scanned = 0;
    let mut day = cursor.at.date_naive();
    while day >= first_day {
        let before = (cursor.at.date_naive() == day).then_some(cursor);
        let mut rows = Vec::new();
        let mut frontier: Option<ListCursor> = None;
        for bucket in 0..buckets {
            let got = fetch(day, bucket, before, batch).await?;
            if got.len() == batch {
                let last = key(got.last().expect("a full batch"));
                frontier = frontier.max(Some(last));
            }
            rows.extend(got);
        }
        rows.sort_by_key(|r| std::cmp::Reverse(key(r)));
        for row in rows {
            let k = key(&row);
            if frontier.is_some_and(|f| k < f) {
                break;
            }
            if k.at < q.from {
                return Ok(Listed { items, next: None });
            }
            cursor = k;
            scanned += 1;
            if keep(&row) {
                items.push(row);
                if items.len() == q.limit {
                    return Ok(Listed {
                        items,
                        next: Some(cursor),
                    });
                }
            }
            if scanned >= MAX_SCANNED {
                return Ok(Listed {
                    items,
                    next: Some(cursor),
                });
            }
        }
        if frontier.is_none() {
            // The day is done: go on strictly before its midnight.
            cursor = ListCursor {
                at: start_of(day),
                id: Uuid::nil(),
            };
            match day.checked_sub_days(Days::new(1)) {
                Some(d) => day = d,
                None => break,
            }
        }
    }
    Ok(Listed { items, next: None })
}

/// Payments asked for in `[from, to)`, newest first, keeping those `keep`
/// accepts (a status filter).
pub async fn payments(
    views: &dyn PaymentViews,
    q: &ListQuery,
    keep: impl Fn(&PaymentSnapshot) -> bool,
) -> Result<Listed<PaymentSnapshot>, StoreError> {
    merged(
        q,
        DAY_BUCKETS,
        |p: &PaymentSnapshot| ListCursor {
            at: p.created_at,
            id: p.payment_id.as_uuid(),
        },
        keep,
        |day, bucket, before, n| views.payments_of_day(day, bucket, before, n),
    )
    .await
}

/// Refunds whose money went back in `[from, to)`, newest first.
pub async fn refunds(
    views: &dyn PaymentViews,
    q: &ListQuery,
) -> Result<Listed<RefundView>, StoreError> {
    merged(
        q,
        DAY_BUCKETS,
        |r: &RefundView| ListCursor {
            at: r.refunded_at(),
            id: r.refund.refund_id.as_uuid(),
        },
        |_| true,
        |day, bucket, before, n| views.refunds_of_day(day, bucket, before, n),
    )
    .await
}

fn request_key(r: &RequestLogRow) -> ListCursor {
    ListCursor {
        at: r.at,
        id: r.request_id,
    }
}

/// Requests that arrived in `[from, to)`, newest first: one user's, or
/// everyone's.
pub async fn request_logs(
    logs: &dyn RequestLogs,
    user: Option<UserId>,
    q: &ListQuery,
) -> Result<Listed<RequestLogRow>, StoreError> {
    match user {
        Some(user) => {
            merged(
                q,
                1,
                request_key,
                |_| true,
                |day, _, before, n| logs.request_logs_of_user(user, day, before, n),
            )
            .await
        }
        None => {
            merged(
                q,
                DAY_BUCKETS,
                request_key,
                |_| true,
                |day, bucket, before, n| logs.request_logs_of_day(day, bucket, before, n),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedStore;
    use chrono::Duration;
    use proptest::prelude::*;
    use ticketing_domain::ids::{ConcertId, PaymentId, ScheduleId, UserId};
    use ticketing_domain::payment::PaymentStatus;

    fn snapshot(at: DateTime<Utc>, status: PaymentStatus) -> PaymentSnapshot {
        PaymentSnapshot {
            payment_id: PaymentId::from_uuid(Uuid::now_v7()),
            user_id: UserId::from_uuid(Uuid::now_v7()),
            schedule_id: ScheduleId::from_uuid(Uuid::now_v7()),
            concert_id: ConcertId::from_uuid(Uuid::now_v7()),
            booking_ids: vec![],
            status,
            total_price: 1,
            refund_price: 0,
            card_last4: "4242".into(),
            revision: 1,
            created_at: at,
            updated_at: at,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Paging through any spread of payments over days and buckets, any
        /// page size and filter, yields exactly the matching payments in the
        /// range, newest first, each once.
        #[test]
        fn pages_cover_the_range_once_in_order(
            offsets in prop::collection::vec((0i64..4 * 86_400, any::<bool>()), 0..60),
            limit in 1usize..7,
            from_h in 0i64..30, to_h in 40i64..100,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let store = EmbeddedStore::in_memory();
                let t0 = "2030-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
                let mut all = Vec::new();
                for (secs, done) in offsets {
                    let status = if done { PaymentStatus::Completed } else { PaymentStatus::Failed };
                    let p = snapshot(t0 + Duration::seconds(secs), status);
                    store.put_payment_view(&p).await.unwrap();
                    all.push(p);
                }
                let (from, to) = (t0 + Duration::hours(from_h), t0 + Duration::hours(to_h));
                let keep = |p: &PaymentSnapshot| p.status == PaymentStatus::Completed;
                let mut want: Vec<_> = all.iter()
                    .filter(|p| p.created_at >= from && p.created_at < to && keep(p))
                    .cloned().collect();
                want.sort_by_key(|p| std::cmp::Reverse((p.created_at, p.payment_id.as_uuid())));
                let mut got = Vec::new();
                let mut after = None;
                for _ in 0..100 {
                    let page = payments(&store, &ListQuery { from, to, after, limit }, keep).await.unwrap();
                    assert!(page.items.len() <= limit);
                    got.extend(page.items);
                    match page.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                assert_eq!(got, want);
            });
        }
    }
}
