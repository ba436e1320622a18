//! Events on the wire. The `.avsc` files in `schemas/avro/` are the one source
//! of truth; this crate embeds them, registers them in the schema registry with
//! BACKWARD compatibility, and encodes/decodes domain events in the Confluent
//! wire format. `topics` is the one place where topic names, keys and
//! partition counts are written down.

mod codec;
mod error;
mod mapping;
mod registry;
pub mod topics;

pub use codec::{split_header, EventCodec, COMPATIBILITY};
pub use error::CodecError;
pub use registry::{EmbeddedSchemaRegistry, HttpSchemaRegistry, SchemaRegistry};

/// One event's schema file, embedded at build time.
#[derive(Clone, Copy, Debug)]
pub struct SchemaFile {
    /// `Event::name` of the event it describes (also the record name).
    pub event: &'static str,
    /// The `.avsc` text as written.
    pub avsc: &'static str,
}

impl SchemaFile {
    /// The schema as registered: compact JSON, so that the text the registry
    /// stores does not depend on how the file is indented.
    pub fn compact(&self) -> Result<String, CodecError> {
        serde_json::from_str::<serde_json::Value>(self.avsc)
            .map(|v| v.to_string())
            .map_err(|e| CodecError::InvalidSchema(format!("{}: {e}", self.event)))
    }
}

macro_rules! schema_file {
    ($event:literal) => {
        SchemaFile {
            event: $event,
            avsc: include_str!(concat!("../avro/", $event, ".avsc")),
        }
    };
}

/// Every event schema, one per `ticketing_domain::events::Event` variant.
pub const SCHEMA_FILES: &[SchemaFile] = &[
    schema_file!("UserRegistered"),
    schema_file!("StageCreated"),
    schema_file!("ConcertCreated"),
    schema_file!("ScheduleCreated"),
    schema_file!("ScheduleInitialised"),
    schema_file!("ScheduleCommandIssued"),
    schema_file!("ScheduleTicked"),
    schema_file!("ScheduleFactRecorded"),
    schema_file!("ScheduleCommandAnswered"),
    schema_file!("ScheduleSnapshotted"),
    schema_file!("SnapshotsCheckpointed"),
    schema_file!("PaymentChanged"),
    schema_file!("RequestLogged"),
];

#[cfg(test)]
mod samples;
#[cfg(test)]
mod tests;
