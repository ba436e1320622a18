use async_trait::async_trait;
use chrono::{DateTime, Utc};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TransportError {
    /// The log could not take or give records right now; retrying may succeed.
    #[error("transport unavailable: {0}")]
    Unavailable(String),
    /// The topic is not declared (see `ticketing_schemas::topics`).
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// The consumer was closed or lost its assignment.
    #[error("consumer closed")]
    Closed,
    #[error("transport failure: {0}")]
    Other(String),
}

/// A record to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutRecord {
    pub topic: String,
    /// Decides the partition: equal keys always land on one partition, in order.
    pub key: String,
    /// Confluent wire format: magic byte, schema id, Avro body.
    pub payload: Vec<u8>,
}

/// Where an appended record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A record read from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub timestamp: DateTime<Utc>,
}

/// Appends records durably: `send` returns only once the log has the record
/// (acks from all in-sync replicas on Kafka, a synced write in the embedded log).
#[async_trait]
pub trait Producer: Send + Sync + 'static {
    async fn send(&self, record: OutRecord) -> Result<Delivered, TransportError>;
}

/// Reads a consumer group's partitions of some topics, at least once: what is
/// not committed is delivered again after a restart.
#[async_trait]
pub trait Consumer: Send + 'static {
    /// Waits for the next record. Cancel-safe: dropping the future (e.g. in a
    /// `select!` with a shutdown signal) loses no record.
    async fn recv(&mut self) -> Result<Record, TransportError>;
    /// Marks `record` and everything before it on its partition as done: the
    /// group's committed offset for that partition becomes `record.offset + 1`,
    /// where a restarted consumer resumes. It does not move the read position.
    /// An adapter may acknowledge commits in the background (Kafka does); a
    /// commit lost in a crash only means redelivery. `close` waits for them.
    async fn commit(&mut self, record: &Record) -> Result<(), TransportError>;
    /// Waits for outstanding commits and leaves the group; afterwards `recv`
    /// returns `Closed`. Call it on a clean shutdown to keep redelivery to the
    /// records that were really not done.
    async fn close(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    /// Records not yet committed, per `(topic, partition)` this consumer owns:
    /// the log's end offset minus the group's committed offset.
    async fn lag(&self) -> Result<Vec<(String, i32, i64)>, TransportError>;
}
