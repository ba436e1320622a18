//! The schema registry port and its two adapters: a Confluent-compatible HTTP
//! registry for the real stack and an in-process one for `ticketing dev`.

mod embedded;
mod http;

pub use embedded::EmbeddedSchemaRegistry;
pub use http::HttpSchemaRegistry;

use crate::CodecError;
use async_trait::async_trait;

/// What the codec needs from a schema registry (Confluent semantics).
#[async_trait]
pub trait SchemaRegistry: Send + Sync + 'static {
    /// Registers `schema` under `subject` and returns its global id. A schema
    /// already registered under the subject returns its existing id; a new
    /// one must pass the subject's compatibility level
    /// (`CodecError::Incompatible` otherwise).
    async fn register(&self, subject: &str, schema: &str) -> Result<u32, CodecError>;

    /// The schema text behind an id (`CodecError::UnknownSchemaId` if none).
    async fn schema_by_id(&self, id: u32) -> Result<String, CodecError>;

    /// Sets a subject's compatibility level (`BACKWARD`, `FULL_TRANSITIVE`,
    /// `NONE`, ...). Allowed before the subject has any version.
    async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), CodecError>;
}

/// Compatibility levels as the Confluent API names them.
pub(crate) const LEVELS: &[&str] = &[
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
];
