use thiserror::Error;

/// Everything that can go wrong between a domain event and its bytes.
///
/// Consumers decide retry versus dead-letter on the variant: only `Registry`
/// is transient (the registry could not be reached or answered oddly); every
/// other variant will fail the same way on every retry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// Not in the Confluent wire format, or an Avro body that does not decode
    /// with its writer schema.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The id in the header is not registered.
    #[error("schema id {0} is not registered")]
    UnknownSchemaId(u32),
    /// A well-formed record of a type this build has no event for (written by a
    /// newer producer, or a schema that belongs to another team).
    #[error("record {0} is not an event this build knows")]
    UnknownRecord(String),
    /// The registry (or the embedded one) refused a schema under the subject's
    /// compatibility level.
    #[error("schema for subject {subject} is incompatible: {reason}")]
    Incompatible { subject: String, reason: String },
    /// A schema that is not valid Avro, or a writer schema that cannot be read
    /// as the reader schema of its event.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    /// The event holds a value its schema cannot carry.
    #[error("event cannot be encoded: {0}")]
    Encode(String),
    /// The registry could not be reached, failed, or its file could not be
    /// read or written.
    #[error("schema registry: {0}")]
    Registry(String),
}
