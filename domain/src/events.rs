//! The facts the platform records. Each event has an Avro schema in `schemas/`
//! (the source of truth for the wire form); these are the Rust shapes the core
//! works with. Secrets (password hashes, phone numbers, card numbers) never
//! appear in an event: topics are read by other teams.

use crate::account::Role;
use crate::ids::{
    BookingId, CommandId, ConcertId, EventId, PaymentId, ScheduleId, StageId, UserId,
};
use crate::payment::{PaymentRecord, PaymentStatus, Refund};
use crate::schedule::{Envelope, Fact, Reply, ScheduleState};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

/// Common to every event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMeta {
    pub event_id: EventId,
    pub occurred_at: DateTime<Utc>,
    /// The account that caused it; `None` for the system itself.
    pub actor: Option<UserId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub meta: EventMeta,
    pub user_id: UserId,
    pub email: String,
    pub nickname: String,
    pub role: Role,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageCreated {
    pub meta: EventMeta,
    pub stage_id: StageId,
    pub seller_id: UserId,
    pub name: String,
    pub location: String,
    pub rows: u16,
    pub cols: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcertCreated {
    pub meta: EventMeta,
    pub concert_id: ConcertId,
    pub seller_id: UserId,
    pub stage_id: StageId,
    pub concert_name: String,
    pub runtime_minutes: u32,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    pub price: i64,
    pub concert_image: Option<String>,
}

/// Opens a schedule's life on its own partition. It carries the seat grid and
/// price so that the schedule processor can build its state from this one event,
/// without reading the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleCreated {
    pub meta: EventMeta,
    pub schedule_id: ScheduleId,
    pub concert_id: ConcertId,
    pub seller_id: UserId,
    pub stage_id: StageId,
    pub rows: u16,
    pub cols: u16,
    pub price: i64,
    pub concert_date: NaiveDate,
    pub concert_time: NaiveTime,
    pub sale_opens_at: Option<DateTime<Utc>>,
}

/// A buyer's command to one schedule, decided by the schedule processor that
/// owns the schedule's partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleCommandIssued {
    pub meta: EventMeta,
    pub schedule_id: ScheduleId,
    pub envelope: Envelope,
    /// The ingress instance waiting for the answer; `None` when nobody waits.
    pub reply_to: Option<String>,
}

/// The clock's pulse for one partition of the schedules topic: it fires the
/// due timers of every schedule there, so holds expire on idle schedules too,
/// and a replay sees the same pulses. Written to an explicit partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleTicked {
    pub meta: EventMeta,
    pub partition: i32,
    /// Its command is `Command::Tick`.
    pub envelope: Envelope,
}

/// One fact decided for a schedule: the processor's output and changelog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleFactRecorded {
    pub meta: EventMeta,
    pub schedule_id: ScheduleId,
    pub fact: Fact,
}

/// The answer to one command, for the ingress instance that waits for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleCommandAnswered {
    pub meta: EventMeta,
    pub schedule_id: ScheduleId,
    pub command_id: CommandId,
    pub reply_to: String,
    pub reply: Reply,
}

/// One schedule's whole state as the processor holds it, taken so that a
/// restore reads this instead of the schedule's changelog from its start. It
/// covers every changelog record of the schedule's partition below
/// `covers_to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSnapshotted {
    pub meta: EventMeta,
    pub schedule_id: ScheduleId,
    pub covers_to: i64,
    pub state: Box<ScheduleState>,
}

/// Written with each round of snapshots of one partition: a restore reads the
/// latest snapshot of every schedule, then the changelog from `restore_from`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotsCheckpointed {
    pub meta: EventMeta,
    pub partition: i32,
    pub restore_from: i64,
}

/// A payment as recorded right after one change: every payment event carries
/// the whole row, so a sink writes complete rows from any single event and a
/// replay in any order settles on the newest `revision`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSnapshot {
    pub payment_id: PaymentId,
    pub user_id: UserId,
    pub schedule_id: ScheduleId,
    pub concert_id: ConcertId,
    pub booking_ids: Vec<BookingId>,
    pub status: PaymentStatus,
    pub total_price: i64,
    pub refund_price: i64,
    pub card_last4: String,
    pub revision: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&PaymentRecord> for PaymentSnapshot {
    fn from(p: &PaymentRecord) -> Self {
        Self {
            payment_id: p.payment_id,
            user_id: p.user_id,
            schedule_id: p.schedule_id,
            concert_id: p.concert_id,
            booking_ids: p.booking_ids.clone(),
            status: p.ledger.status,
            total_price: p.ledger.total_price,
            refund_price: p.ledger.refund_price,
            card_last4: p.card_last4.clone(),
            revision: p.revision,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// What happened to a payment. Money moves only in `Completed` (gross) and
/// `Refunded` (back to the buyer): the settlement sums those two.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentChange {
    /// Recorded WAITING, before the provider is asked to charge.
    Started,
    /// The provider charged the card.
    Completed,
    /// Declined, or abandoned before any charge: nothing was taken.
    Failed,
    /// Money went back for some bookings.
    Refunded(Refund),
}

impl PaymentChange {
    /// Names the change within its payment: an event about it always gets the
    /// same id, so a change published twice (after a crash) is recognised.
    pub fn key(&self) -> String {
        match self {
            PaymentChange::Started => "started".into(),
            PaymentChange::Completed => "completed".into(),
            PaymentChange::Failed => "failed".into(),
            PaymentChange::Refunded(r) => format!("refunded-{}", r.refund_id),
        }
    }
}

/// One change of a payment, with the payment as it stands after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentChanged {
    pub meta: EventMeta,
    pub payment: PaymentSnapshot,
    pub change: PaymentChange,
}

/// One HTTP request the ingress answered, for the managers' request log.
/// Never a body, a query string or a header: paths carry ids only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLogged {
    /// `event_id` is the request id; `occurred_at` when it arrived; `actor`
    /// the authenticated caller, `None` for anonymous requests.
    pub meta: EventMeta,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub latency_micros: u64,
}

/// Every event the platform produces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    UserRegistered(UserRegistered),
    StageCreated(StageCreated),
    ConcertCreated(ConcertCreated),
    ScheduleCreated(ScheduleCreated),
    /// The schedule processor's copy of `ScheduleCreated` at the head of the
    /// schedule's changelog, so that the changelog alone rebuilds its state.
    ScheduleInitialised(ScheduleCreated),
    ScheduleCommandIssued(ScheduleCommandIssued),
    ScheduleTicked(ScheduleTicked),
    ScheduleFactRecorded(ScheduleFactRecorded),
    ScheduleCommandAnswered(ScheduleCommandAnswered),
    ScheduleSnapshotted(ScheduleSnapshotted),
    SnapshotsCheckpointed(SnapshotsCheckpointed),
    PaymentChanged(PaymentChanged),
    RequestLogged(RequestLogged),
}

impl Event {
    pub fn meta(&self) -> &EventMeta {
        match self {
            Event::UserRegistered(e) => &e.meta,
            Event::StageCreated(e) => &e.meta,
            Event::ConcertCreated(e) => &e.meta,
            Event::ScheduleCreated(e) | Event::ScheduleInitialised(e) => &e.meta,
            Event::ScheduleCommandIssued(e) => &e.meta,
            Event::ScheduleTicked(e) => &e.meta,
            Event::ScheduleFactRecorded(e) => &e.meta,
            Event::ScheduleCommandAnswered(e) => &e.meta,
            Event::ScheduleSnapshotted(e) => &e.meta,
            Event::SnapshotsCheckpointed(e) => &e.meta,
            Event::PaymentChanged(e) => &e.meta,
            Event::RequestLogged(e) => &e.meta,
        }
    }

    /// The Kafka key: the id of the aggregate that owns the event, so that all of
    /// one schedule's events land on one partition, in order.
    pub fn key(&self) -> String {
        match self {
            Event::UserRegistered(e) => e.user_id.to_string(),
            Event::StageCreated(e) => e.stage_id.to_string(),
            Event::ConcertCreated(e) => e.concert_id.to_string(),
            Event::ScheduleCreated(e) | Event::ScheduleInitialised(e) => e.schedule_id.to_string(),
            Event::ScheduleCommandIssued(e) => e.schedule_id.to_string(),
            // Ticks go to an explicit partition; the key only names them.
            Event::ScheduleTicked(e) => format!("tick-{}", e.partition),
            Event::ScheduleFactRecorded(e) => e.schedule_id.to_string(),
            // Replies are keyed by the waiting instance, so one instance's
            // answers stay on one partition of the replies topic.
            Event::ScheduleCommandAnswered(e) => e.reply_to.clone(),
            // Compaction keeps the latest snapshot of each schedule and the
            // latest checkpoint of each partition.
            Event::ScheduleSnapshotted(e) => e.schedule_id.to_string(),
            Event::SnapshotsCheckpointed(e) => format!("checkpoint-{}", e.partition),
            // A payment's changes stay in order on one partition; payments
            // are not decided by the schedule processor, so the schedule
            // need not be the key (and a flash sale's payments spread out).
            Event::PaymentChanged(e) => e.payment.payment_id.to_string(),
            // A caller's requests stay in order; anonymous ones spread.
            Event::RequestLogged(e) => e
                .meta
                .actor
                .map_or_else(|| e.meta.event_id.to_string(), |u| u.to_string()),
        }
    }

    /// A stable name, used as the Avro record name and in metrics labels.
    pub const fn name(&self) -> &'static str {
        match self {
            Event::UserRegistered(_) => "UserRegistered",
            Event::StageCreated(_) => "StageCreated",
            Event::ConcertCreated(_) => "ConcertCreated",
            Event::ScheduleCreated(_) => "ScheduleCreated",
            Event::ScheduleInitialised(_) => "ScheduleInitialised",
            Event::ScheduleCommandIssued(_) => "ScheduleCommandIssued",
            Event::ScheduleTicked(_) => "ScheduleTicked",
            Event::ScheduleFactRecorded(_) => "ScheduleFactRecorded",
            Event::ScheduleCommandAnswered(_) => "ScheduleCommandAnswered",
            Event::ScheduleSnapshotted(_) => "ScheduleSnapshotted",
            Event::SnapshotsCheckpointed(_) => "SnapshotsCheckpointed",
            Event::PaymentChanged(_) => "PaymentChanged",
            Event::RequestLogged(_) => "RequestLogged",
        }
    }
}
