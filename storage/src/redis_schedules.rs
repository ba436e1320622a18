//! The schedules' read model in Redis: seat maps, waiting-room entries and
//! bookings, written by the schedule view sink and read by every ingress.
//!
//! Layout (`{sid}` is a hash tag, so one schedule's keys share a cluster slot):
//! - `sv:{sid}:meta` hash: `rows`, `cols`, `price`, `concert`, `rate` (the
//!   admission-rate window, JSON), `sold_out` (`1` once every seat is SOLD)
//!   and `offset`, the last changelog offset applied to the schedule.
//! - `sv:{sid}:seats` string: one byte per seat, row-major, `A`/`H`/`S`. A seat
//!   map is one GET; a changed seat is one SETRANGE.
//! - `sv:{sid}:entries` hash: user id → the buyer's queue entry (JSON).
//! - `sv:{sid}:waiting` sorted set: waiting buyers scored by position, so the
//!   number ahead of a buyer is their ZRANK.
//! - `sv:booking:{id}` string: the booking (JSON); `sv:user:{id}:bookings`
//!   sorted set of the buyer's booking ids, scored by when they were held.
//!
//! All the changes of one changelog record go in one Lua script that first
//! compares the record's offset with the schedule's `offset`, so a replay or a
//! second, slower writer never moves the view back. The script touches the
//! booking keys of other slots too: it needs a single Redis (or a cluster
//! where the keys are routed by the proxy), which is how the platform deploys.

use crate::ports::{
    BookingView, ScheduleReadModel, ScheduleViewChange, ScheduleViewWriter, SeatMapView, StoreError,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::Script;
use ticketing_domain::catalog::SeatStatus;
use ticketing_domain::ids::{BookingId, ScheduleId, UserId};
use ticketing_domain::schedule::{QueueEntry, QueueStatus, RateWindow, Settings};

/// ARGV: the record's offset, then operations, each a tag and its arguments.
const APPLY: &str = r"
local meta, seats, entries, waiting = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local last = redis.call('HGET', meta, 'offset')
if last and tonumber(last) >= tonumber(ARGV[1]) then
  return 0
end
local i = 2
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'created' then
    redis.call('SET', seats, string.rep('A', tonumber(ARGV[i+1])), 'NX')
    redis.call('HSET', meta, 'rows', ARGV[i+2], 'cols', ARGV[i+3], 'price', ARGV[i+4], 'concert', ARGV[i+5])
    i = i + 6
  elseif op == 'seat' then
    redis.call('SETRANGE', seats, tonumber(ARGV[i+1]), ARGV[i+2])
    i = i + 3
  elseif op == 'entry' then
    redis.call('HSET', entries, ARGV[i+1], ARGV[i+2])
    if ARGV[i+3] == '' then
      redis.call('ZREM', waiting, ARGV[i+1])
    else
      redis.call('ZADD', waiting, ARGV[i+3], ARGV[i+1])
    end
    i = i + 4
  elseif op == 'rate' then
    redis.call('HSET', meta, 'rate', ARGV[i+1])
    i = i + 2
  elseif op == 'soldout' then
    redis.call('HSET', meta, 'sold_out', ARGV[i+1])
    i = i + 2
  elseif op == 'booking' then
    redis.call('SET', 'sv:booking:' .. ARGV[i+1], ARGV[i+4])
    redis.call('ZADD', 'sv:user:' .. ARGV[i+2] .. ':bookings', 'NX', ARGV[i+3], ARGV[i+1])
    i = i + 5
  else
    return redis.error_reply('unknown schedule view operation ' .. op)
  end
end
redis.call('HSET', meta, 'offset', ARGV[1])
return 1
";

#[derive(Clone)]
pub struct RedisScheduleViews {
    conn: ConnectionManager,
    apply: Script,
    settings: Settings,
}

impl std::fmt::Debug for RedisScheduleViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisScheduleViews").finish_non_exhaustive()
    }
}

struct Keys {
    meta: String,
    seats: String,
    entries: String,
    waiting: String,
}

fn keys(schedule: ScheduleId) -> Keys {
    Keys {
        meta: format!("sv:{{{schedule}}}:meta"),
        seats: format!("sv:{{{schedule}}}:seats"),
        entries: format!("sv:{{{schedule}}}:entries"),
        waiting: format!("sv:{{{schedule}}}:waiting"),
    }
}

fn booking_key(booking: BookingId) -> String {
    format!("sv:booking:{booking}")
}

fn user_bookings_key(user: UserId) -> String {
    format!("sv:user:{user}:bookings")
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("redis schedule view: {what}"))
}

fn seat_byte(status: SeatStatus) -> &'static str {
    match status {
        SeatStatus::Available => "A",
        SeatStatus::Held => "H",
        SeatStatus::Sold => "S",
    }
}

fn seat_status(byte: u8) -> Result<SeatStatus, StoreError> {
    match byte {
        b'A' => Ok(SeatStatus::Available),
        b'H' => Ok(SeatStatus::Held),
        b'S' => Ok(SeatStatus::Sold),
        other => Err(corrupt(format!("seat byte {other}"))),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| corrupt(format!("encoding: {e}")))
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(corrupt)
}

impl RedisScheduleViews {
    /// `settings` are the processors': a waiting buyer's ETA depends on them.
    /// Connects now (failing if Redis is unreachable); later outages are
    /// retried by the connection manager.
    pub async fn connect(url: &str, settings: Settings) -> Result<Self, StoreError> {
        let conn = crate::redis_conn::connect(url).await?;
        Ok(Self {
            conn,
            apply: Script::new(APPLY),
            settings,
        })
    }
}

#[async_trait]
impl ScheduleViewWriter for RedisScheduleViews {
    async fn apply(
        &self,
        schedule: ScheduleId,
        offset: i64,
        changes: &[ScheduleViewChange],
    ) -> Result<bool, StoreError> {
        let k = keys(schedule);
        let mut invocation = self.apply.prepare_invoke();
        invocation
            .key(&k.meta)
            .key(&k.seats)
            .key(&k.entries)
            .key(&k.waiting)
            .arg(offset);
        for change in changes {
            match change {
                ScheduleViewChange::Created {
                    rows,
                    cols,
                    price,
                    concert_id,
                } => {
                    invocation
                        .arg("created")
                        .arg(u32::from(*rows) * u32::from(*cols))
                        .arg(*rows)
                        .arg(*cols)
                        .arg(*price)
                        .arg(concert_id.to_string());
                }
                ScheduleViewChange::Seat { index, status } => {
                    invocation.arg("seat").arg(*index).arg(seat_byte(*status));
                }
                ScheduleViewChange::Entry { user, entry } => {
                    let position = match entry {
                        QueueEntry::Waiting { position } => position.to_string(),
                        _ => String::new(),
                    };
                    invocation
                        .arg("entry")
                        .arg(user.to_string())
                        .arg(json(entry)?)
                        .arg(position);
                }
                ScheduleViewChange::Rate(window) => {
                    invocation.arg("rate").arg(json(window)?);
                }
                ScheduleViewChange::SoldOut(sold_out) => {
                    invocation
                        .arg("soldout")
                        .arg(if *sold_out { "1" } else { "0" });
                }
                ScheduleViewChange::Booking(b) => {
                    // Held-until orders a buyer's bookings by when they were held
                    // (every hold lasts as long); `NX` keeps the first score.
                    let score = b.expires_at.map_or(0, |t| t.timestamp_millis());
                    invocation
                        .arg("booking")
                        .arg(b.booking_id.to_string())
                        .arg(b.user_id.to_string())
                        .arg(score)
                        .arg(json(b)?);
                }
            }
        }
        let mut conn = self.conn.clone();
        let applied: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(applied == 1)
    }

    async fn applied_offset(&self, schedule: ScheduleId) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("HGET")
            .arg(keys(schedule).meta)
            .arg("offset")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl ScheduleReadModel for RedisScheduleViews {
    async fn seat_map(&self, schedule: ScheduleId) -> Result<Option<SeatMapView>, StoreError> {
        let k = keys(schedule);
        let mut conn = self.conn.clone();
        let ((rows, cols), seats): ((Option<u16>, Option<u16>), Option<Vec<u8>>) = redis::pipe()
            .cmd("HMGET")
            .arg(&k.meta)
            .arg("rows")
            .arg("cols")
            .get(&k.seats)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let (Some(rows), Some(cols), Some(seats)) = (rows, cols, seats) else {
            return Ok(None);
        };
        if seats.len() != usize::from(rows) * usize::from(cols) {
            return Err(corrupt(format!(
                "{} seat bytes for a {rows}x{cols} stage",
                seats.len()
            )));
        }
        Ok(Some(SeatMapView {
            rows,
            cols,
            seats: seats
                .into_iter()
                .map(seat_status)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn queue_status(
        &self,
        schedule: ScheduleId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<QueueStatus>, StoreError> {
        let k = keys(schedule);
        let member = user.to_string();
        let mut conn = self.conn.clone();
        let ((rows, rate, sold_out), entry, rank): (
            (Option<u16>, Option<String>, Option<String>),
            Option<String>,
            Option<u64>,
        ) = redis::pipe()
            .cmd("HMGET")
            .arg(&k.meta)
            .arg("rows")
            .arg("rate")
            .arg("sold_out")
            .hget(&k.entries, &member)
            .zrank(&k.waiting, &member)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if rows.is_none() {
            return Ok(None);
        }
        let Some(entry) = entry else {
            return Ok(Some(QueueStatus::NotInQueue));
        };
        let entry: QueueEntry = parse_json(&entry)?;
        let rate: RateWindow = match rate {
            Some(r) => parse_json(&r)?,
            None => RateWindow::default(),
        };
        Ok(Some(entry.status(
            &self.settings,
            rank.unwrap_or(0),
            &rate,
            sold_out.as_deref() == Some("1"),
            now,
        )))
    }

    async fn bookings_of(&self, user: UserId) -> Result<Vec<BookingView>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(user_bookings_key(user))
            .arg(0)
            .arg(-1)
            .arg("REV")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| format!("sv:booking:{id}")).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        values
            .into_iter()
            .flatten()
            .map(|v| parse_json(&v))
            .collect()
    }

    async fn booking(&self, booking: BookingId) -> Result<Option<BookingView>, StoreError> {
        let mut conn = self.conn.clone();
        let value: Option<String> = redis::cmd("GET")
            .arg(booking_key(booking))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        value.map(|v| parse_json(&v)).transpose()
    }
}
