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
    /// Overrides the key's partition. Used where the partition itself is the
    /// address: a tick for one partition of the schedules topic, or a changelog
    /// record that must sit on the partition number of its input.
    pub partition: Option<i32>,
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
    /// The pulse probes read (see [`crate::health`]); `None` for adapters
    /// that run in-process and cannot stall apart from their caller.
    fn health(&self) -> Option<crate::health::ClientHealth> {
        None
    }
}

/// One partition of one topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// What a [`TransactionalStream`] hands its processor, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// Records of input partitions this member owns, each partition in offset
    /// order. Empty when nothing came within the wait.
    Records(Vec<Record>),
    /// Input partitions this member now owns. No record of theirs is handed out
    /// before this event, so the processor restores their state first.
    Assigned(Vec<TopicPartition>),
    /// Input partitions this member no longer owns: drop their state. Nothing
    /// uncommitted of theirs survives.
    Revoked(Vec<TopicPartition>),
}

/// Consume, decide, produce, exactly once: a batch's outputs and the input
/// offsets it consumed become visible together, or neither does (a Kafka
/// transaction with the offsets sent to it; one store transaction in the
/// embedded log). Readers of the outputs read committed records only.
///
/// One member of a group owns each input partition at a time; a member that
/// lost its partitions without noticing (a zombie) is fenced: its commits fail
/// with [`TransportError::Closed`] and it must stop.
#[async_trait]
pub trait TransactionalStream: Send + 'static {
    /// The next assignment change, or up to `max` records, waiting at most
    /// `wait` for records. Cancel-safe like [`Consumer::recv`].
    async fn next(
        &mut self,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<StreamEvent, TransportError>;

    /// Atomically appends `outputs` and marks every input record up to and
    /// including `consumed` (the last record handled per partition) as done.
    ///
    /// On `Err(Unavailable | Other)` nothing of the batch is visible and the
    /// stream rewinds to the last commit: its next events are `Revoked` then
    /// `Assigned` for every partition it owns, so the processor rebuilds its
    /// state from the changelog and the inputs are handed out again. While
    /// the log does not let the rewind finish (a broker that is away), `next`
    /// answers `Unavailable` and hands out nothing; it is called again later.
    /// `Err(Closed)` means this member must stop: it was closed, or fenced
    /// by another live instance (see the adapter's rules).
    async fn commit(
        &mut self,
        outputs: Vec<OutRecord>,
        consumed: &[Record],
    ) -> Result<(), TransportError>;

    /// Every committed record of one partition of `topic` (a changelog), from
    /// offset `from` (0: its start) to its end as of this call, in offset
    /// order.
    async fn read_partition(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
    ) -> Result<Vec<Record>, TransportError>;

    /// The offset the next record appended to the partition will get. Called
    /// by the owner of the partition right after a commit, it is where that
    /// commit's records end: nobody else writes there.
    async fn end_offset(&mut self, topic: &str, partition: i32) -> Result<i64, TransportError>;

    /// Leaves the group; an open transaction is aborted.
    async fn close(&mut self) -> Result<(), TransportError>;

    /// Records not yet committed, per input `(topic, partition)` this member
    /// owns, like [`Consumer::lag`].
    async fn lag(&self) -> Result<Vec<(String, i32, i64)>, TransportError>;
}
