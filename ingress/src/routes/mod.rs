pub mod accounts;
pub mod admin;
pub mod catalog;
pub mod payments;
pub mod schedule_replies;
pub mod schedules;

use chrono::Utc;
use ticketing_domain::events::EventMeta;
use ticketing_domain::ids::{EventId, UserId};
use uuid::Uuid;

/// Identifiers are minted here, at the edge, as UUIDv7: time-ordered, so CQL
/// clustering and Kafka keys spread well, and the core stays deterministic.
pub(crate) fn new_id<T: From<Uuid>>() -> T {
    T::from(Uuid::now_v7())
}

pub(crate) fn meta(actor: Option<UserId>) -> EventMeta {
    EventMeta {
        event_id: new_id::<EventId>(),
        // Millisecond precision: what Avro's timestamp-millis keeps, so an event
        // and the row rebuilt from it agree exactly.
        occurred_at: chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis())
            .expect("now is representable"),
        actor,
    }
}
