//! Explicit, field-by-field mapping between domain events and Avro values.
//! Written out by hand (no serde magic) so that the wire form changes only
//! when a schema file does, whatever happens to the Rust types.

use crate::CodecError;
use apache_avro::types::Value;
use chrono::{DateTime, NaiveDate, NaiveTime, Timelike, Utc};
use ticketing_domain::account::Role;
use ticketing_domain::events::{
    ConcertCreated, Event, EventMeta, ScheduleCreated, StageCreated, UserRegistered,
};
use uuid::Uuid;

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
const MILLIS_PER_DAY: i32 = 86_400_000;

// ---- encoding ------------------------------------------------------------

fn uuid(id: Uuid) -> Value {
    Value::Uuid(id)
}

fn timestamp(at: DateTime<Utc>) -> Value {
    Value::TimestampMillis(at.timestamp_millis())
}

/// Every optional field is `["null", T]`, so null is branch 0.
fn optional(value: Option<Value>) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(v)),
    }
}

fn date(d: NaiveDate) -> Result<Value, CodecError> {
    i32::try_from((d - EPOCH).num_days())
        .map(Value::Date)
        .map_err(|_| CodecError::Encode(format!("date {d} out of range")))
}

/// Sub-millisecond parts are dropped; a leap second is read as 59.999.
fn time(t: NaiveTime) -> Value {
    let nanos = t.nanosecond().min(999_999_999);
    // At most 86_399_999: fits an i32.
    Value::TimeMillis((t.num_seconds_from_midnight() * 1000 + nanos / 1_000_000) as i32)
}

fn int(field: &str, n: impl TryInto<i32>) -> Result<Value, CodecError> {
    n.try_into()
        .map(Value::Int)
        .map_err(|_| CodecError::Encode(format!("{field} does not fit an Avro int")))
}

fn meta(m: &EventMeta) -> [(String, Value); 3] {
    [
        ("event_id".into(), uuid(m.event_id.as_uuid())),
        ("occurred_at".into(), timestamp(m.occurred_at)),
        ("actor".into(), optional(m.actor.map(|a| uuid(a.as_uuid())))),
    ]
}

fn record(meta_fields: [(String, Value); 3], rest: Vec<(&str, Value)>) -> Value {
    let mut fields = Vec::with_capacity(3 + rest.len());
    fields.extend(meta_fields);
    fields.extend(rest.into_iter().map(|(k, v)| (k.to_string(), v)));
    Value::Record(fields)
}

pub(crate) fn to_value(event: &Event) -> Result<Value, CodecError> {
    Ok(match event {
        Event::UserRegistered(e) => {
            let role = e.role;
            let index = match role {
                Role::User => 0,
                Role::Seller => 1,
                Role::Manager => 2,
            };
            record(
                meta(&e.meta),
                vec![
                    ("user_id", uuid(e.user_id.as_uuid())),
                    ("email", Value::String(e.email.clone())),
                    ("nickname", Value::String(e.nickname.clone())),
                    ("role", Value::Enum(index, role.as_str().to_string())),
                ],
            )
        }
        Event::StageCreated(e) => record(
            meta(&e.meta),
            vec![
                ("stage_id", uuid(e.stage_id.as_uuid())),
                ("seller_id", uuid(e.seller_id.as_uuid())),
                ("name", Value::String(e.name.clone())),
                ("location", Value::String(e.location.clone())),
                ("rows", Value::Int(e.rows.into())),
                ("cols", Value::Int(e.cols.into())),
            ],
        ),
        Event::ConcertCreated(e) => record(
            meta(&e.meta),
            vec![
                ("concert_id", uuid(e.concert_id.as_uuid())),
                ("seller_id", uuid(e.seller_id.as_uuid())),
                ("stage_id", uuid(e.stage_id.as_uuid())),
                ("concert_name", Value::String(e.concert_name.clone())),
                (
                    "runtime_minutes",
                    int("runtime_minutes", e.runtime_minutes)?,
                ),
                ("start_date", date(e.start_date)?),
                ("end_date", date(e.end_date)?),
                ("price", Value::Long(e.price)),
                (
                    "concert_image",
                    optional(e.concert_image.clone().map(Value::String)),
                ),
            ],
        ),
        Event::ScheduleCreated(e) => record(
            meta(&e.meta),
            vec![
                ("schedule_id", uuid(e.schedule_id.as_uuid())),
                ("concert_id", uuid(e.concert_id.as_uuid())),
                ("seller_id", uuid(e.seller_id.as_uuid())),
                ("stage_id", uuid(e.stage_id.as_uuid())),
                ("rows", Value::Int(e.rows.into())),
                ("cols", Value::Int(e.cols.into())),
                ("price", Value::Long(e.price)),
                ("concert_date", date(e.concert_date)?),
                ("concert_time", time(e.concert_time)),
                ("sale_opens_at", optional(e.sale_opens_at.map(timestamp))),
            ],
        ),
    })
}

// ---- decoding ------------------------------------------------------------

fn malformed(field: &str, why: impl std::fmt::Display) -> CodecError {
    CodecError::Malformed(format!("{field}: {why}"))
}

/// The fields of a decoded record, taken out by name. Values arrive already
/// resolved to the reader schema, but older writers and other tools may hand
/// over the plain Avro type instead of the logical one, so both are accepted.
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn new(value: Value) -> Result<Self, CodecError> {
        match value {
            Value::Record(fields) => Ok(Self(fields)),
            other => Err(CodecError::Malformed(format!(
                "expected a record, got {other:?}"
            ))),
        }
    }

    fn take(&mut self, name: &str) -> Result<Value, CodecError> {
        self.0
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::mem::replace(v, Value::Null))
            .ok_or_else(|| malformed(name, "missing"))
    }

    fn string(&mut self, name: &str) -> Result<String, CodecError> {
        match self.take(name)? {
            Value::String(s) => Ok(s),
            other => Err(malformed(name, format!("expected a string, got {other:?}"))),
        }
    }

    fn opt_string(&mut self, name: &str) -> Result<Option<String>, CodecError> {
        match unwrap_union(self.take(name)?) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(malformed(name, format!("expected a string, got {other:?}"))),
        }
    }

    fn uuid(&mut self, name: &str) -> Result<Uuid, CodecError> {
        as_uuid(name, self.take(name)?)
    }

    fn opt_uuid(&mut self, name: &str) -> Result<Option<Uuid>, CodecError> {
        unwrap_union(self.take(name)?)
            .map(|v| as_uuid(name, v))
            .transpose()
    }

    fn int(&mut self, name: &str) -> Result<i32, CodecError> {
        match self.take(name)? {
            Value::Int(n) => Ok(n),
            other => Err(malformed(name, format!("expected an int, got {other:?}"))),
        }
    }

    fn u16(&mut self, name: &str) -> Result<u16, CodecError> {
        let n = self.int(name)?;
        u16::try_from(n).map_err(|_| malformed(name, format!("{n} out of range")))
    }

    fn u32(&mut self, name: &str) -> Result<u32, CodecError> {
        let n = self.int(name)?;
        u32::try_from(n).map_err(|_| malformed(name, format!("{n} is negative")))
    }

    fn long(&mut self, name: &str) -> Result<i64, CodecError> {
        match self.take(name)? {
            Value::Long(n) => Ok(n),
            // Promoted from an int writer.
            Value::Int(n) => Ok(n.into()),
            other => Err(malformed(name, format!("expected a long, got {other:?}"))),
        }
    }

    fn timestamp(&mut self, name: &str) -> Result<DateTime<Utc>, CodecError> {
        as_timestamp(name, self.take(name)?)
    }

    fn opt_timestamp(&mut self, name: &str) -> Result<Option<DateTime<Utc>>, CodecError> {
        unwrap_union(self.take(name)?)
            .map(|v| as_timestamp(name, v))
            .transpose()
    }

    fn date(&mut self, name: &str) -> Result<NaiveDate, CodecError> {
        let days = match self.take(name)? {
            Value::Date(d) | Value::Int(d) => d,
            other => return Err(malformed(name, format!("expected a date, got {other:?}"))),
        };
        EPOCH
            .checked_add_signed(chrono::TimeDelta::days(days.into()))
            .ok_or_else(|| malformed(name, format!("{days} days out of range")))
    }

    fn time(&mut self, name: &str) -> Result<NaiveTime, CodecError> {
        let ms = match self.take(name)? {
            Value::TimeMillis(ms) | Value::Int(ms) => ms,
            other => return Err(malformed(name, format!("expected a time, got {other:?}"))),
        };
        if !(0..MILLIS_PER_DAY).contains(&ms) {
            return Err(malformed(name, format!("{ms} ms is not a time of day")));
        }
        // In range: checked above.
        let ms = ms as u32;
        NaiveTime::from_num_seconds_from_midnight_opt(ms / 1000, (ms % 1000) * 1_000_000)
            .ok_or_else(|| malformed(name, format!("{ms} ms is not a time of day")))
    }

    fn role(&mut self, name: &str) -> Result<Role, CodecError> {
        match self.take(name)? {
            Value::Enum(_, symbol) | Value::String(symbol) => {
                Role::parse(&symbol).map_err(|_| malformed(name, format!("unknown role {symbol}")))
            }
            other => Err(malformed(name, format!("expected an enum, got {other:?}"))),
        }
    }

    fn meta(&mut self) -> Result<EventMeta, CodecError> {
        Ok(EventMeta {
            event_id: self.uuid("event_id")?.into(),
            occurred_at: self.timestamp("occurred_at")?,
            actor: self.opt_uuid("actor")?.map(Into::into),
        })
    }
}

fn unwrap_union(value: Value) -> Option<Value> {
    match value {
        Value::Union(_, inner) => match *inner {
            Value::Null => None,
            v => Some(v),
        },
        Value::Null => None,
        v => Some(v),
    }
}

fn as_uuid(name: &str, value: Value) -> Result<Uuid, CodecError> {
    match value {
        Value::Uuid(u) => Ok(u),
        Value::String(s) => Uuid::parse_str(&s).map_err(|e| malformed(name, e)),
        other => Err(malformed(name, format!("expected a uuid, got {other:?}"))),
    }
}

fn as_timestamp(name: &str, value: Value) -> Result<DateTime<Utc>, CodecError> {
    let ms = match value {
        Value::TimestampMillis(ms) | Value::Long(ms) => ms,
        other => {
            return Err(malformed(
                name,
                format!("expected a timestamp, got {other:?}"),
            ))
        }
    };
    DateTime::from_timestamp_millis(ms).ok_or_else(|| malformed(name, format!("{ms} out of range")))
}

/// `event_name` is `Event::name` of the record's type, known from the writer
/// schema; `value` has been resolved to that event's reader schema.
pub(crate) fn from_value(event_name: &str, value: Value) -> Result<Event, CodecError> {
    let mut f = Fields::new(value)?;
    let meta = f.meta()?;
    Ok(match event_name {
        "UserRegistered" => Event::UserRegistered(UserRegistered {
            meta,
            user_id: f.uuid("user_id")?.into(),
            email: f.string("email")?,
            nickname: f.string("nickname")?,
            role: f.role("role")?,
        }),
        "StageCreated" => Event::StageCreated(StageCreated {
            meta,
            stage_id: f.uuid("stage_id")?.into(),
            seller_id: f.uuid("seller_id")?.into(),
            name: f.string("name")?,
            location: f.string("location")?,
            rows: f.u16("rows")?,
            cols: f.u16("cols")?,
        }),
        "ConcertCreated" => Event::ConcertCreated(ConcertCreated {
            meta,
            concert_id: f.uuid("concert_id")?.into(),
            seller_id: f.uuid("seller_id")?.into(),
            stage_id: f.uuid("stage_id")?.into(),
            concert_name: f.string("concert_name")?,
            runtime_minutes: f.u32("runtime_minutes")?,
            start_date: f.date("start_date")?,
            end_date: f.date("end_date")?,
            price: f.long("price")?,
            concert_image: f.opt_string("concert_image")?,
        }),
        "ScheduleCreated" => Event::ScheduleCreated(ScheduleCreated {
            meta,
            schedule_id: f.uuid("schedule_id")?.into(),
            concert_id: f.uuid("concert_id")?.into(),
            seller_id: f.uuid("seller_id")?.into(),
            stage_id: f.uuid("stage_id")?.into(),
            rows: f.u16("rows")?,
            cols: f.u16("cols")?,
            price: f.long("price")?,
            concert_date: f.date("concert_date")?,
            concert_time: f.time("concert_time")?,
            sale_opens_at: f.opt_timestamp("sale_opens_at")?,
        }),
        other => return Err(CodecError::UnknownRecord(other.to_string())),
    })
}
