//! Explicit, field-by-field mapping between domain events and Avro values.
//! Written out by hand (no serde magic) so that the wire form changes only
//! when a schema file does, whatever happens to the Rust types.

use crate::CodecError;
use apache_avro::types::Value;
use chrono::{DateTime, NaiveDate, NaiveTime, Timelike, Utc};
use ticketing_domain::account::Role;
use ticketing_domain::events::{
    ConcertCreated, Event, EventMeta, PaymentChange, PaymentChanged, PaymentSnapshot,
    RequestLogged, ScheduleCommandAnswered, ScheduleCommandIssued, ScheduleCreated,
    ScheduleFactRecorded, ScheduleSnapshotted, ScheduleTicked, SnapshotsCheckpointed, StageCreated,
    UserRegistered,
};
use ticketing_domain::payment::{PaymentStatus, Refund};

/// How a snapshot's state is encoded; a reader refuses formats it does not know.
const STATE_FORMAT: &str = "json-v1";
use ticketing_domain::ids::{BookingId, CommandId, RefundId, UserId};
use ticketing_domain::schedule::{
    AbortReason, CancelReason, Command, Envelope, Fact, FactKind, HeldSeat, QueueStatus, Rejection,
    Reply, SeatRef,
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

// ---- the schedule processor's vocabulary ---------------------------------
//
// Rust enums with payloads are unions of named records; the branch index is
// the variant's place in the schema's union, so these functions and the
// `.avsc` files must list variants in the same order.

fn branch(index: u32, fields: Vec<(&str, Value)>) -> Value {
    Value::Union(
        index,
        Box::new(Value::Record(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )),
    )
}

fn plain(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn user(u: UserId) -> (&'static str, Value) {
    ("user_id", uuid(u.as_uuid()))
}

fn seat(s: &SeatRef) -> Value {
    plain(vec![
        ("row", Value::Int(s.row.into())),
        ("col", Value::Int(s.col.into())),
    ])
}

fn seats(list: &[SeatRef]) -> Value {
    Value::Array(list.iter().map(seat).collect())
}

fn held_seats(list: &[HeldSeat]) -> Value {
    Value::Array(
        list.iter()
            .map(|h| {
                plain(vec![
                    ("booking_id", uuid(h.booking_id.as_uuid())),
                    ("row", Value::Int(h.seat.row.into())),
                    ("col", Value::Int(h.seat.col.into())),
                ])
            })
            .collect(),
    )
}

fn long(field: &str, n: u64) -> Result<Value, CodecError> {
    i64::try_from(n)
        .map(Value::Long)
        .map_err(|_| CodecError::Encode(format!("{field} does not fit an Avro long")))
}

/// Seeds use all 64 bits: stored bit for bit in a long.
fn seed(n: u64) -> Value {
    Value::Long(n as i64)
}

fn envelope(e: &Envelope) -> Vec<(&'static str, Value)> {
    vec![
        ("command_id", uuid(e.command_id.as_uuid())),
        ("issued_at", timestamp(e.at)),
        ("seed", seed(e.seed)),
    ]
}

fn command(c: &Command) -> Value {
    match c {
        Command::Join { user: u } => branch(0, vec![user(*u)]),
        Command::Leave { user: u } => branch(1, vec![user(*u)]),
        Command::Hold {
            user: u,
            seats: list,
            booking_ids,
        } => branch(
            2,
            vec![
                user(*u),
                ("seats", seats(list)),
                (
                    "booking_ids",
                    Value::Array(booking_ids.iter().map(|b| uuid(b.as_uuid())).collect()),
                ),
            ],
        ),
        Command::Release {
            user: u,
            booking_id,
        } => branch(
            3,
            vec![user(*u), ("booking_id", uuid(booking_id.as_uuid()))],
        ),
        Command::Tick => branch(4, vec![]),
        Command::StartPayment {
            user: u,
            payment_id,
            booking_ids,
        } => branch(
            5,
            vec![
                user(*u),
                ("payment_id", uuid(payment_id.as_uuid())),
                ("booking_ids", booking_uuids(booking_ids)),
            ],
        ),
        Command::CompletePayment { payment_id } => {
            branch(6, vec![("payment_id", uuid(payment_id.as_uuid()))])
        }
        Command::AbortPayment { payment_id } => {
            branch(7, vec![("payment_id", uuid(payment_id.as_uuid()))])
        }
        Command::Refund {
            payment_id,
            booking_ids,
        } => branch(
            8,
            vec![
                ("payment_id", uuid(payment_id.as_uuid())),
                ("booking_ids", booking_uuids(booking_ids)),
            ],
        ),
    }
}

fn booking_uuids(ids: &[BookingId]) -> Value {
    Value::Array(ids.iter().map(|b| uuid(b.as_uuid())).collect())
}

fn fact_kind(k: &FactKind) -> Result<Value, CodecError> {
    Ok(match k {
        FactKind::QueueJoined { user: u, position } => branch(
            0,
            vec![
                user(*u),
                (
                    "position",
                    optional(position.map(|p| long("position", p)).transpose()?),
                ),
            ],
        ),
        FactKind::QueueOpened { seed: s } => branch(1, vec![("seed", seed(*s))]),
        FactKind::Admitted {
            user: u,
            position,
            until,
        } => branch(
            2,
            vec![
                user(*u),
                ("position", long("position", *position)?),
                ("admitted_until", timestamp(*until)),
            ],
        ),
        FactKind::AdmissionExpired { user: u } => branch(3, vec![user(*u)]),
        FactKind::QueueLeft { user: u } => branch(4, vec![user(*u)]),
        FactKind::SeatsHeld {
            user: u,
            seats: list,
            until,
        } => branch(
            5,
            vec![
                user(*u),
                ("seats", held_seats(list)),
                ("held_until", timestamp(*until)),
            ],
        ),
        FactKind::BookingsCancelled {
            user: u,
            seats: list,
            reason,
        } => {
            let reason = match reason {
                CancelReason::Released => Value::Enum(0, "RELEASED".into()),
                CancelReason::Expired => Value::Enum(1, "EXPIRED".into()),
            };
            branch(
                6,
                vec![user(*u), ("seats", held_seats(list)), ("reason", reason)],
            )
        }
        FactKind::Unchanged => branch(7, vec![]),
        FactKind::PaymentStarted {
            user: u,
            payment_id,
            seats: list,
            until,
        } => branch(
            8,
            vec![
                user(*u),
                ("payment_id", uuid(payment_id.as_uuid())),
                ("seats", held_seats(list)),
                ("payment_until", timestamp(*until)),
            ],
        ),
        FactKind::SeatsSold {
            user: u,
            payment_id,
            seats: list,
        } => branch(
            9,
            vec![
                user(*u),
                ("payment_id", uuid(payment_id.as_uuid())),
                ("seats", held_seats(list)),
            ],
        ),
        FactKind::PaymentAborted {
            user: u,
            payment_id,
            reason,
        } => {
            let reason = match reason {
                AbortReason::NotCharged => Value::Enum(0, "NOT_CHARGED".into()),
                AbortReason::TimedOut => Value::Enum(1, "TIMED_OUT".into()),
            };
            branch(
                10,
                vec![
                    user(*u),
                    ("payment_id", uuid(payment_id.as_uuid())),
                    ("reason", reason),
                ],
            )
        }
        FactKind::SeatsRefunded {
            user: u,
            payment_id,
            seats: list,
        } => branch(
            11,
            vec![
                user(*u),
                ("payment_id", uuid(payment_id.as_uuid())),
                ("seats", held_seats(list)),
            ],
        ),
    })
}

const QUEUE_STATES: [&str; 6] = [
    "WAITING",
    "ADMITTED",
    "EXPIRED",
    "LEFT",
    "SOLD_OUT",
    "NOT_IN_QUEUE",
];

fn queue_status(q: &QueueStatus, joined: bool) -> Result<Value, CodecError> {
    let opt_long = |field, n: Option<u64>| -> Result<Value, CodecError> {
        Ok(optional(n.map(|n| long(field, n)).transpose()?))
    };
    let (state, position, ahead, eta, until) = match q {
        QueueStatus::Waiting {
            position,
            ahead,
            eta_seconds,
        } => (0, *position, *ahead, *eta_seconds, None),
        QueueStatus::Admitted { position, until } => (1, Some(*position), None, None, Some(*until)),
        QueueStatus::Expired => (2, None, None, None, None),
        QueueStatus::Left => (3, None, None, None, None),
        QueueStatus::SoldOut => (4, None, None, None, None),
        QueueStatus::NotInQueue => (5, None, None, None, None),
    };
    Ok(branch(
        0,
        vec![
            (
                "status",
                Value::Enum(state, QUEUE_STATES[state as usize].to_string()),
            ),
            ("position", opt_long("position", position)?),
            ("ahead", opt_long("ahead", ahead)?),
            ("eta_seconds", opt_long("eta_seconds", eta)?),
            ("admitted_until", optional(until.map(timestamp))),
            ("joined", Value::Boolean(joined)),
        ],
    ))
}

fn rejection(r: &Rejection) -> Value {
    match r {
        Rejection::NotAdmitted => branch(0, vec![]),
        Rejection::SeatUnavailable { seats: list } => branch(1, vec![("seats", seats(list))]),
        Rejection::SeatLimit { limit, already } => branch(
            2,
            vec![
                // Limits are small counts; a u32 above i32::MAX is not a real limit.
                ("limit", Value::Int((*limit).min(i32::MAX as u32) as i32)),
                (
                    "already",
                    Value::Int((*already).min(i32::MAX as u32) as i32),
                ),
            ],
        ),
        Rejection::InvalidSeat { seat: s } => branch(3, vec![("seat", seat(s))]),
        Rejection::DuplicateSeat { seat: s } => branch(4, vec![("seat", seat(s))]),
        Rejection::EmptyHold => branch(5, vec![]),
        Rejection::BookingNotFound => branch(6, vec![]),
        Rejection::NotOwner => branch(7, vec![]),
        Rejection::BookingNotPending => branch(8, vec![]),
        Rejection::PaymentNotInProgress => branch(9, vec![]),
        Rejection::NotRefundable => branch(10, vec![]),
        Rejection::SaleClosed => branch(11, vec![]),
    }
}

fn reply(r: &Reply) -> Result<Value, CodecError> {
    Ok(match r {
        Reply::Queue(q) => queue_status(q, false)?,
        Reply::Joined(q) => queue_status(q, true)?,
        Reply::Left => branch(1, vec![]),
        Reply::Held { booking_ids, until } => branch(
            2,
            vec![
                (
                    "booking_ids",
                    Value::Array(booking_ids.iter().map(|b| uuid(b.as_uuid())).collect()),
                ),
                ("held_until", timestamp(*until)),
            ],
        ),
        Reply::Released => branch(3, vec![]),
        Reply::Rejected(why) => branch(4, vec![("reason", rejection(why))]),
        Reply::UnknownSchedule => branch(5, vec![]),
        Reply::None => branch(6, vec![]),
        Reply::PaymentStarted {
            seats: list,
            total_price,
            until,
        } => branch(
            7,
            vec![
                ("seats", held_seats(list)),
                ("total_price", Value::Long(*total_price)),
                ("payment_until", timestamp(*until)),
            ],
        ),
        Reply::Sold { booking_ids } => branch(8, vec![("booking_ids", booking_uuids(booking_ids))]),
        Reply::PaymentAborted => branch(9, vec![]),
        Reply::Refunded {
            booking_ids,
            amount,
        } => branch(
            10,
            vec![
                ("booking_ids", booking_uuids(booking_ids)),
                ("amount", Value::Long(*amount)),
            ],
        ),
    })
}

fn schedule_created(e: &ScheduleCreated) -> Result<Value, CodecError> {
    Ok(record(
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
    ))
}

// ---- payments and request logs -------------------------------------------

/// The `PaymentStatus` enum's symbols, in schema order.
const PAYMENT_STATUSES: [PaymentStatus; 5] = [
    PaymentStatus::Waiting,
    PaymentStatus::Completed,
    PaymentStatus::Failed,
    PaymentStatus::Canceled,
    PaymentStatus::PartCanceled,
];

fn uuids<T>(ids: &[T], as_uuid: impl Fn(&T) -> Uuid) -> Value {
    Value::Array(ids.iter().map(|i| uuid(as_uuid(i))).collect())
}

fn payment_changed(e: &PaymentChanged) -> Result<Value, CodecError> {
    let p = &e.payment;
    let status_index = PAYMENT_STATUSES
        .iter()
        .position(|s| *s == p.status)
        .expect("every status is a symbol") as u32;
    let change = match &e.change {
        PaymentChange::Started => branch(0, vec![]),
        PaymentChange::Completed => branch(1, vec![]),
        PaymentChange::Failed => branch(2, vec![]),
        PaymentChange::Refunded(r) => branch(
            3,
            vec![
                ("refund_id", uuid(r.refund_id.as_uuid())),
                ("booking_ids", uuids(&r.booking_ids, BookingId::as_uuid)),
                ("amount", Value::Long(r.amount)),
                ("reason", Value::String(r.reason.clone())),
                ("requested_at", timestamp(r.requested_at)),
                (
                    "refunded_at",
                    timestamp(r.refunded_at.ok_or_else(|| {
                        CodecError::Encode("a refund is published once it is done".into())
                    })?),
                ),
            ],
        ),
    };
    Ok(record(
        meta(&e.meta),
        vec![
            ("payment_id", uuid(p.payment_id.as_uuid())),
            user(p.user_id),
            ("schedule_id", uuid(p.schedule_id.as_uuid())),
            ("concert_id", uuid(p.concert_id.as_uuid())),
            ("booking_ids", uuids(&p.booking_ids, BookingId::as_uuid)),
            (
                "status",
                Value::Enum(status_index, p.status.as_str().to_string()),
            ),
            ("total_price", Value::Long(p.total_price)),
            ("refund_price", Value::Long(p.refund_price)),
            ("last4", Value::String(p.card_last4.clone())),
            ("revision", long("revision", p.revision)?),
            ("created_at", timestamp(p.created_at)),
            ("updated_at", timestamp(p.updated_at)),
            ("change", change),
        ],
    ))
}

fn request_logged(e: &RequestLogged) -> Result<Value, CodecError> {
    Ok(record(
        meta(&e.meta),
        vec![
            ("method", Value::String(e.method.clone())),
            ("path", Value::String(e.path.clone())),
            ("status", Value::Int(e.status.into())),
            ("latency_micros", long("latency_micros", e.latency_micros)?),
        ],
    ))
}

pub(crate) fn to_value(event: &Event) -> Result<Value, CodecError> {
    Ok(match event {
        Event::PaymentChanged(e) => payment_changed(e)?,
        Event::RequestLogged(e) => request_logged(e)?,
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
        Event::ScheduleCreated(e) | Event::ScheduleInitialised(e) => schedule_created(e)?,
        Event::ScheduleCommandIssued(e) => {
            let mut rest = vec![("schedule_id", uuid(e.schedule_id.as_uuid()))];
            rest.extend(envelope(&e.envelope));
            rest.push(("command", command(&e.envelope.command)));
            rest.push(("reply_to", optional(e.reply_to.clone().map(Value::String))));
            record(meta(&e.meta), rest)
        }
        Event::ScheduleSnapshotted(e) => record(
            meta(&e.meta),
            vec![
                ("schedule_id", uuid(e.schedule_id.as_uuid())),
                ("covers_to", Value::Long(e.covers_to)),
                ("state_format", Value::String(STATE_FORMAT.into())),
                (
                    "state",
                    Value::Bytes(
                        serde_json::to_vec(&e.state)
                            .map_err(|e| CodecError::Encode(format!("schedule state: {e}")))?,
                    ),
                ),
            ],
        ),
        Event::SnapshotsCheckpointed(e) => record(
            meta(&e.meta),
            vec![
                ("partition", Value::Int(e.partition)),
                ("restore_from", Value::Long(e.restore_from)),
            ],
        ),
        Event::ScheduleTicked(e) => {
            let mut rest = vec![("partition", Value::Int(e.partition))];
            rest.extend(envelope(&e.envelope));
            record(meta(&e.meta), rest)
        }
        Event::ScheduleFactRecorded(e) => record(
            meta(&e.meta),
            vec![
                ("schedule_id", uuid(e.schedule_id.as_uuid())),
                ("command_id", uuid(e.fact.command_id.as_uuid())),
                ("decided_at", timestamp(e.fact.at)),
                ("fact", fact_kind(&e.fact.kind)?),
            ],
        ),
        Event::ScheduleCommandAnswered(e) => record(
            meta(&e.meta),
            vec![
                ("schedule_id", uuid(e.schedule_id.as_uuid())),
                ("command_id", uuid(e.command_id.as_uuid())),
                ("reply_to", Value::String(e.reply_to.clone())),
                ("reply", reply(&e.reply)?),
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

    fn bool(&mut self, name: &str) -> Result<bool, CodecError> {
        match self.take(name)? {
            Value::Boolean(b) => Ok(b),
            other => Err(malformed(
                name,
                format!("expected a boolean, got {other:?}"),
            )),
        }
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

    fn u64(&mut self, name: &str) -> Result<u64, CodecError> {
        let n = self.long(name)?;
        u64::try_from(n).map_err(|_| malformed(name, format!("{n} is negative")))
    }

    fn opt_u64(&mut self, name: &str) -> Result<Option<u64>, CodecError> {
        match unwrap_union(self.take(name)?) {
            None => Ok(None),
            Some(Value::Long(n)) => u64::try_from(n)
                .map(Some)
                .map_err(|_| malformed(name, format!("{n} is negative"))),
            Some(Value::Int(n)) => u64::try_from(n)
                .map(Some)
                .map_err(|_| malformed(name, format!("{n} is negative"))),
            Some(other) => Err(malformed(name, format!("expected a long, got {other:?}"))),
        }
    }

    /// The inverse of `seed`: the long's bits are the seed.
    fn seed(&mut self, name: &str) -> Result<u64, CodecError> {
        Ok(self.long(name)? as u64)
    }

    fn array(&mut self, name: &str) -> Result<Vec<Value>, CodecError> {
        match self.take(name)? {
            Value::Array(items) => Ok(items),
            other => Err(malformed(name, format!("expected an array, got {other:?}"))),
        }
    }

    fn booking_ids(&mut self, name: &str) -> Result<Vec<BookingId>, CodecError> {
        Ok(self.uuids(name)?.into_iter().map(BookingId::from).collect())
    }

    fn uuids(&mut self, name: &str) -> Result<Vec<Uuid>, CodecError> {
        self.array(name)?
            .into_iter()
            .map(|v| as_uuid(name, v))
            .collect()
    }

    fn union(&mut self, name: &str) -> Result<(u32, Value), CodecError> {
        match self.take(name)? {
            Value::Union(index, inner) => Ok((index, *inner)),
            other => Err(malformed(name, format!("expected a union, got {other:?}"))),
        }
    }

    fn symbol(&mut self, name: &str) -> Result<String, CodecError> {
        match self.take(name)? {
            Value::Enum(_, symbol) | Value::String(symbol) => Ok(symbol),
            other => Err(malformed(name, format!("expected an enum, got {other:?}"))),
        }
    }

    fn user(&mut self) -> Result<UserId, CodecError> {
        Ok(self.uuid("user_id")?.into())
    }

    fn seat(&mut self, name: &str) -> Result<SeatRef, CodecError> {
        seat_of(self.take(name)?)
    }

    fn seats(&mut self, name: &str) -> Result<Vec<SeatRef>, CodecError> {
        self.array(name)?.into_iter().map(seat_of).collect()
    }

    fn held_seats(&mut self, name: &str) -> Result<Vec<HeldSeat>, CodecError> {
        self.array(name)?
            .into_iter()
            .map(|v| {
                let mut f = Fields::new(v)?;
                Ok(HeldSeat {
                    booking_id: f.uuid("booking_id")?.into(),
                    seat: SeatRef {
                        row: f.u16("row")?,
                        col: f.u16("col")?,
                    },
                })
            })
            .collect()
    }

    /// The envelope's fields, around a command decoded separately.
    fn envelope(&mut self, command: Command) -> Result<Envelope, CodecError> {
        Ok(Envelope {
            command_id: CommandId::from(self.uuid("command_id")?),
            at: self.timestamp("issued_at")?,
            seed: self.seed("seed")?,
            command,
        })
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

fn seat_of(value: Value) -> Result<SeatRef, CodecError> {
    let mut f = Fields::new(value)?;
    Ok(SeatRef {
        row: f.u16("row")?,
        col: f.u16("col")?,
    })
}

fn unknown_branch(field: &str, index: u32) -> CodecError {
    malformed(field, format!("no branch {index} in this build"))
}

fn command_of((index, value): (u32, Value)) -> Result<Command, CodecError> {
    let mut f = Fields::new(value)?;
    Ok(match index {
        0 => Command::Join { user: f.user()? },
        1 => Command::Leave { user: f.user()? },
        2 => Command::Hold {
            user: f.user()?,
            seats: f.seats("seats")?,
            booking_ids: f
                .uuids("booking_ids")?
                .into_iter()
                .map(BookingId::from)
                .collect(),
        },
        3 => Command::Release {
            user: f.user()?,
            booking_id: f.uuid("booking_id")?.into(),
        },
        4 => Command::Tick,
        5 => Command::StartPayment {
            user: f.user()?,
            payment_id: f.uuid("payment_id")?.into(),
            booking_ids: f.booking_ids("booking_ids")?,
        },
        6 => Command::CompletePayment {
            payment_id: f.uuid("payment_id")?.into(),
        },
        7 => Command::AbortPayment {
            payment_id: f.uuid("payment_id")?.into(),
        },
        8 => Command::Refund {
            payment_id: f.uuid("payment_id")?.into(),
            booking_ids: f.booking_ids("booking_ids")?,
        },
        other => return Err(unknown_branch("command", other)),
    })
}

fn fact_kind_of((index, value): (u32, Value)) -> Result<FactKind, CodecError> {
    let mut f = Fields::new(value)?;
    Ok(match index {
        0 => FactKind::QueueJoined {
            user: f.user()?,
            position: f.opt_u64("position")?,
        },
        1 => FactKind::QueueOpened {
            seed: f.seed("seed")?,
        },
        2 => FactKind::Admitted {
            user: f.user()?,
            position: f.u64("position")?,
            until: f.timestamp("admitted_until")?,
        },
        3 => FactKind::AdmissionExpired { user: f.user()? },
        4 => FactKind::QueueLeft { user: f.user()? },
        5 => FactKind::SeatsHeld {
            user: f.user()?,
            seats: f.held_seats("seats")?,
            until: f.timestamp("held_until")?,
        },
        6 => FactKind::BookingsCancelled {
            user: f.user()?,
            seats: f.held_seats("seats")?,
            reason: match f.symbol("reason")?.as_str() {
                "RELEASED" => CancelReason::Released,
                "EXPIRED" => CancelReason::Expired,
                other => return Err(malformed("reason", format!("unknown reason {other}"))),
            },
        },
        7 => FactKind::Unchanged,
        8 => FactKind::PaymentStarted {
            user: f.user()?,
            payment_id: f.uuid("payment_id")?.into(),
            seats: f.held_seats("seats")?,
            until: f.timestamp("payment_until")?,
        },
        9 => FactKind::SeatsSold {
            user: f.user()?,
            payment_id: f.uuid("payment_id")?.into(),
            seats: f.held_seats("seats")?,
        },
        10 => FactKind::PaymentAborted {
            user: f.user()?,
            payment_id: f.uuid("payment_id")?.into(),
            reason: match f.symbol("reason")?.as_str() {
                "NOT_CHARGED" => AbortReason::NotCharged,
                "TIMED_OUT" => AbortReason::TimedOut,
                other => return Err(malformed("reason", format!("unknown reason {other}"))),
            },
        },
        11 => FactKind::SeatsRefunded {
            user: f.user()?,
            payment_id: f.uuid("payment_id")?.into(),
            seats: f.held_seats("seats")?,
        },
        other => return Err(unknown_branch("fact", other)),
    })
}

fn queue_status_of(f: &mut Fields) -> Result<QueueStatus, CodecError> {
    let status = f.symbol("status")?;
    let position = f.opt_u64("position")?;
    let ahead = f.opt_u64("ahead")?;
    let eta_seconds = f.opt_u64("eta_seconds")?;
    let until = f.opt_timestamp("admitted_until")?;
    Ok(match status.as_str() {
        "WAITING" => QueueStatus::Waiting {
            position,
            ahead,
            eta_seconds,
        },
        "ADMITTED" => QueueStatus::Admitted {
            position: position.ok_or_else(|| malformed("position", "missing for ADMITTED"))?,
            until: until.ok_or_else(|| malformed("admitted_until", "missing for ADMITTED"))?,
        },
        "EXPIRED" => QueueStatus::Expired,
        "LEFT" => QueueStatus::Left,
        "SOLD_OUT" => QueueStatus::SoldOut,
        "NOT_IN_QUEUE" => QueueStatus::NotInQueue,
        other => return Err(malformed("status", format!("unknown queue state {other}"))),
    })
}

fn rejection_of((index, value): (u32, Value)) -> Result<Rejection, CodecError> {
    let mut f = Fields::new(value)?;
    Ok(match index {
        0 => Rejection::NotAdmitted,
        1 => Rejection::SeatUnavailable {
            seats: f.seats("seats")?,
        },
        2 => Rejection::SeatLimit {
            limit: f.u32("limit")?,
            already: f.u32("already")?,
        },
        3 => Rejection::InvalidSeat {
            seat: f.seat("seat")?,
        },
        4 => Rejection::DuplicateSeat {
            seat: f.seat("seat")?,
        },
        5 => Rejection::EmptyHold,
        6 => Rejection::BookingNotFound,
        7 => Rejection::NotOwner,
        8 => Rejection::BookingNotPending,
        9 => Rejection::PaymentNotInProgress,
        10 => Rejection::NotRefundable,
        11 => Rejection::SaleClosed,
        other => return Err(unknown_branch("reason", other)),
    })
}

fn reply_of((index, value): (u32, Value)) -> Result<Reply, CodecError> {
    let mut f = Fields::new(value)?;
    Ok(match index {
        0 => {
            let status = queue_status_of(&mut f)?;
            if f.bool("joined")? {
                Reply::Joined(status)
            } else {
                Reply::Queue(status)
            }
        }
        1 => Reply::Left,
        2 => Reply::Held {
            booking_ids: f
                .uuids("booking_ids")?
                .into_iter()
                .map(BookingId::from)
                .collect(),
            until: f.timestamp("held_until")?,
        },
        3 => Reply::Released,
        4 => Reply::Rejected(rejection_of(f.union("reason")?)?),
        5 => Reply::UnknownSchedule,
        6 => Reply::None,
        7 => Reply::PaymentStarted {
            seats: f.held_seats("seats")?,
            total_price: f.long("total_price")?,
            until: f.timestamp("payment_until")?,
        },
        8 => Reply::Sold {
            booking_ids: f.booking_ids("booking_ids")?,
        },
        9 => Reply::PaymentAborted,
        10 => Reply::Refunded {
            booking_ids: f.booking_ids("booking_ids")?,
            amount: f.long("amount")?,
        },
        other => return Err(unknown_branch("reply", other)),
    })
}

fn schedule_created_of(meta: EventMeta, f: &mut Fields) -> Result<ScheduleCreated, CodecError> {
    Ok(ScheduleCreated {
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
    })
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
        "ScheduleCreated" => Event::ScheduleCreated(schedule_created_of(meta, &mut f)?),
        "ScheduleInitialised" => Event::ScheduleInitialised(schedule_created_of(meta, &mut f)?),
        "ScheduleCommandIssued" => {
            let schedule_id = f.uuid("schedule_id")?.into();
            let command = command_of(f.union("command")?)?;
            Event::ScheduleCommandIssued(ScheduleCommandIssued {
                meta,
                schedule_id,
                envelope: f.envelope(command)?,
                reply_to: f.opt_string("reply_to")?,
            })
        }
        "ScheduleSnapshotted" => {
            let schedule_id = f.uuid("schedule_id")?.into();
            let covers_to = f.long("covers_to")?;
            let format = f.string("state_format")?;
            if format != STATE_FORMAT {
                return Err(malformed(
                    "state_format",
                    format!("{format} is not a state format this build reads"),
                ));
            }
            let state = match f.take("state")? {
                Value::Bytes(b) => {
                    serde_json::from_slice(&b).map_err(|e| malformed("state", e.to_string()))?
                }
                other => return Err(malformed("state", format!("not bytes: {other:?}"))),
            };
            Event::ScheduleSnapshotted(ScheduleSnapshotted {
                meta,
                schedule_id,
                covers_to,
                state,
            })
        }
        "SnapshotsCheckpointed" => Event::SnapshotsCheckpointed(SnapshotsCheckpointed {
            meta,
            partition: f.int("partition")?,
            restore_from: f.long("restore_from")?,
        }),
        "ScheduleTicked" => Event::ScheduleTicked(ScheduleTicked {
            meta,
            partition: f.int("partition")?,
            envelope: f.envelope(Command::Tick)?,
        }),
        "ScheduleFactRecorded" => Event::ScheduleFactRecorded(ScheduleFactRecorded {
            meta,
            schedule_id: f.uuid("schedule_id")?.into(),
            fact: Fact {
                command_id: CommandId::from(f.uuid("command_id")?),
                at: f.timestamp("decided_at")?,
                kind: fact_kind_of(f.union("fact")?)?,
            },
        }),
        "ScheduleCommandAnswered" => Event::ScheduleCommandAnswered(ScheduleCommandAnswered {
            meta,
            schedule_id: f.uuid("schedule_id")?.into(),
            command_id: CommandId::from(f.uuid("command_id")?),
            reply_to: f.string("reply_to")?,
            reply: reply_of(f.union("reply")?)?,
        }),
        "PaymentChanged" => {
            let payment = PaymentSnapshot {
                payment_id: f.uuid("payment_id")?.into(),
                user_id: f.user()?,
                schedule_id: f.uuid("schedule_id")?.into(),
                concert_id: f.uuid("concert_id")?.into(),
                booking_ids: f.booking_ids("booking_ids")?,
                status: {
                    let symbol = f.symbol("status")?;
                    PaymentStatus::parse(&symbol)
                        .ok_or_else(|| malformed("status", format!("unknown status {symbol}")))?
                },
                total_price: f.long("total_price")?,
                refund_price: f.long("refund_price")?,
                card_last4: f.string("last4")?,
                revision: f.u64("revision")?,
                created_at: f.timestamp("created_at")?,
                updated_at: f.timestamp("updated_at")?,
            };
            let change = match f.union("change")? {
                (0, _) => PaymentChange::Started,
                (1, _) => PaymentChange::Completed,
                (2, _) => PaymentChange::Failed,
                (3, v) => {
                    let mut r = Fields::new(v)?;
                    PaymentChange::Refunded(Refund {
                        refund_id: RefundId::from_uuid(r.uuid("refund_id")?),
                        booking_ids: r.booking_ids("booking_ids")?,
                        amount: r.long("amount")?,
                        reason: r.string("reason")?,
                        requested_at: r.timestamp("requested_at")?,
                        refunded_at: Some(r.timestamp("refunded_at")?),
                    })
                }
                (other, _) => return Err(unknown_branch("change", other)),
            };
            Event::PaymentChanged(PaymentChanged {
                meta,
                payment,
                change,
            })
        }
        "RequestLogged" => Event::RequestLogged(RequestLogged {
            meta,
            method: f.string("method")?,
            path: f.string("path")?,
            status: f.u16("status")?,
            latency_micros: f.u64("latency_micros")?,
        }),
        other => return Err(CodecError::UnknownRecord(other.to_string())),
    })
}
