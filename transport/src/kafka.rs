//! The Kafka adapter (rdkafka over librdkafka), for the real stack.
//!
//! Delivery is at least once. The producer is idempotent (`acks=all`), so its
//! own retries never duplicate or reorder a partition. A consumer commits only
//! what its caller marked done: [`Consumer::commit`] stores the record's
//! offset + 1 (`enable.auto.offset.store=false`), librdkafka sends the stored
//! offsets to the group coordinator once a second (one request per interval,
//! however many records: a consumer replaying a topic at full speed must not
//! queue a commit request per record in front of its heartbeats), and
//! [`Consumer::close`] commits the latest offsets synchronously before leaving
//! the group. Whatever was not committed when a consumer dies, or when its
//! partitions move to another member, is read again there. Consumers read with
//! `isolation.level=read_committed`, so records of aborted transactions never
//! show.
//!
//! librdkafka's calls that wait on the network without a callback (watermarks,
//! committed offsets, metadata, a synchronous commit, closing a consumer) run
//! on tokio's blocking pool, never on a runtime worker.

use crate::health::ClientHealth;
use crate::ports::{Consumer, Delivered, OutRecord, Producer, Record, TransportError};

mod transactional;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
pub use transactional::KafkaTransactionalStream;

/// How long a broker round trip made on the blocking pool may take.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `send` waits for room in librdkafka's local queue before giving up.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the brokers are and who we are to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// Shows in broker logs and quotas; one per role (ingress, sink, …).
    pub client_id: String,
    /// librdkafka's `debug` contexts (e.g. `cgrp,eos`), for diagnosing a
    /// client in the field; `None` in normal operation (they are verbose).
    pub debug: Option<String>,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            client_id: client_id.into(),
            debug: None,
        }
    }

    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set_log_level(RDKafkaLogLevel::Info);
        if let Some(debug) = self.debug.as_deref().filter(|d| !d.is_empty()) {
            config
                .set("debug", debug)
                .set_log_level(RDKafkaLogLevel::Debug);
        }
        config
    }
}

fn unavailable(e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(e.to_string())
}

fn blocking_failed(e: tokio::task::JoinError) -> TransportError {
    TransportError::Other(format!("Kafka call on the blocking pool failed: {e}"))
}

/// Errors worth retrying later: the broker or the network, not the request.
fn is_transient(code: RDKafkaErrorCode) -> bool {
    type C = RDKafkaErrorCode;
    matches!(
        code,
        C::MessageTimedOut
            | C::QueueFull
            | C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::OperationTimedOut
            | C::RequestTimedOut
            | C::NetworkException
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::CoordinatorNotAvailable
            | C::NotCoordinator
            | C::CoordinatorLoadInProgress
            | C::RebalanceInProgress
            | C::Resolve
    )
}

fn transport_error(e: KafkaError, topic: Option<&str>) -> TransportError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            TransportError::UnknownTopic(topic.unwrap_or("?").to_string())
        }
        Some(code) if is_transient(code) => TransportError::Unavailable(e.to_string()),
        _ => TransportError::Other(e.to_string()),
    }
}

/// librdkafka's logs and errors, as structured tracing events.
#[derive(Clone)]
struct Logs {
    client_id: String,
}

impl ClientContext for Logs {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let client = self.client_id.as_str();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", client, facility, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", client, facility, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", client, facility, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", client, facility, "{message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka reports and then retries most errors by itself (a broker
        // restart shows up here); only fatal ones need someone to act.
        let client = self.client_id.as_str();
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(target: "librdkafka", client, error = %error, reason, "fatal Kafka client error");
        } else {
            tracing::warn!(target: "librdkafka", client, error = %error, reason, "Kafka client error");
        }
    }
}

/// Appends to Kafka. Clones share one librdkafka producer (and its
/// connections), so wrapping it in `Arc<dyn Producer>` or cloning is cheap.
#[derive(Clone)]
pub struct KafkaProducer {
    producer: FutureProducer<Logs>,
}

impl KafkaProducer {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, TransportError> {
        let producer = cfg
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // lz4 is built into librdkafka (zstd would need another C library)
            // and is cheap on CPU, which 2-core hosts care about.
            .set("compression.type", "lz4")
            // The Java clients' partitioner, which the embedded log mirrors;
            // librdkafka's default (CRC32) would place keys elsewhere.
            .set("partitioner", "murmur2_random")
            // Give up on a record after 30 s rather than librdkafka's 5 minutes:
            // callers are HTTP requests that would have timed out long before.
            .set("message.timeout.ms", "30000")
            .create_with_context(Logs {
                client_id: cfg.client_id.clone(),
            })
            .map_err(|e| TransportError::Other(format!("creating the Kafka producer: {e}")))?;
        tracing::info!(brokers = %cfg.brokers, client = %cfg.client_id, "Kafka producer created");
        Ok(Self { producer })
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, record: OutRecord) -> Result<Delivered, TransportError> {
        let mut out = FutureRecord::to(&record.topic)
            .key(record.key.as_bytes())
            .payload(&record.payload);
        if let Some(p) = record.partition {
            out = out.partition(p);
        }
        match self.producer.send(out, QUEUE_TIMEOUT).await {
            Ok(delivery) => Ok(Delivered {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Err((e, _)) => {
                tracing::warn!(topic = %record.topic, error = %e, "Kafka send failed");
                Err(transport_error(e, Some(&record.topic)))
            }
        }
    }
}

/// How often a consumer's statistics are served: each one is a beat of its
/// [`ClientHealth`], so this bounds how stale a healthy pulse can look.
const STATS_INTERVAL_MS: &str = "1000";

/// A beat, and the group membership librdkafka reports: a member once the
/// coordinator is up and the join has settled (`steady`); a session timeout or
/// a lost coordinator shows as anything else.
fn observe_stats(health: &ClientHealth, json: &[u8]) {
    #[derive(serde::Deserialize)]
    struct Stats {
        cgrp: Option<Group>,
    }
    #[derive(serde::Deserialize)]
    struct Group {
        state: String,
        join_state: String,
    }
    health.beat();
    match serde_json::from_slice::<Stats>(json) {
        Ok(Stats { cgrp: Some(g) }) => {
            health.set_member(g.state == "up" && g.join_state == "steady")
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "unreadable librdkafka statistics"),
    }
}

/// The offsets this consumer has asked to commit and not yet seen through a
/// synchronous commit, by (topic, partition).
type Pending = Arc<Mutex<HashMap<(String, i32), i64>>>;

struct ConsumerLogs {
    logs: Logs,
    group: String,
    pending: Pending,
    assigned: Arc<AtomicBool>,
    health: ClientHealth,
}

impl ClientContext for ConsumerLogs {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.logs.log(level, facility, message);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        observe_stats(&self.health, statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logs.error(error, reason);
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect()
}

impl ConsumerContext for ConsumerLogs {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // Another member owns these now: committing them later (in
                // `close`) could move its progress back.
                let mut pending = self.pending.lock();
                for e in tpl.elements() {
                    pending.remove(&(e.topic().to_string(), e.partition()));
                }
                tracing::info!(group = %self.group, partitions = ?partitions(tpl), "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                self.assigned.store(true, Ordering::Release);
                tracing::info!(group = %self.group, partitions = ?partitions(tpl), "partitions assigned");
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "rebalance failed")
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            // The records will be read again by whoever owns the partition next.
            tracing::warn!(group = %self.group, error = %e, partitions = ?partitions(offsets),
                "offset commit failed");
        }
    }
}

type Stream = StreamConsumer<ConsumerLogs>;

/// One member of a Kafka consumer group. See the module docs for the commit
/// contract.
pub struct KafkaConsumer {
    consumer: Option<Arc<Stream>>,
    group: String,
    pending: Pending,
    lag: LagWatch,
    assigned: Arc<AtomicBool>,
    health: ClientHealth,
}

impl KafkaConsumer {
    /// Joins `group` and subscribes to `topics`. A group with no committed
    /// offset starts from the earliest record.
    pub fn new(cfg: &KafkaConfig, group: &str, topics: &[&str]) -> Result<Self, TransportError> {
        Self::build(cfg, group, topics, "earliest")
    }

    /// Like [`KafkaConsumer::new`], but a group with no committed offset
    /// starts at the end: for a reader that only cares about what is produced
    /// after it joins (an ingress waiting for answers to its own commands).
    /// Wait for [`KafkaConsumer::assigned`] before relying on it.
    pub fn from_latest(
        cfg: &KafkaConfig,
        group: &str,
        topics: &[&str],
    ) -> Result<Self, TransportError> {
        Self::build(cfg, group, topics, "latest")
    }

    /// Turns true once the group has given this member its partitions.
    pub fn assigned(&self) -> Arc<AtomicBool> {
        self.assigned.clone()
    }

    /// Beats while the consumer is polled; says whether it is in its group.
    pub fn health(&self) -> ClientHealth {
        self.health.clone()
    }

    fn build(
        cfg: &KafkaConfig,
        group: &str,
        topics: &[&str],
        reset: &str,
    ) -> Result<Self, TransportError> {
        let pending = Pending::default();
        let assigned = Arc::new(AtomicBool::new(false));
        let health = ClientHealth::default();
        health.beat();
        let context = ConsumerLogs {
            logs: Logs {
                client_id: cfg.client_id.clone(),
            },
            group: group.to_string(),
            pending: pending.clone(),
            assigned: assigned.clone(),
            health: health.clone(),
        };
        let consumer: Stream = cfg
            .client()
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", reset)
            .set("isolation.level", "read_committed")
            .set("statistics.interval.ms", STATS_INTERVAL_MS)
            .create_with_context(context)
            .map_err(|e| TransportError::Other(format!("creating the Kafka consumer: {e}")))?;
        consumer
            .subscribe(topics)
            .map_err(|e| TransportError::Other(format!("subscribing to {topics:?}: {e}")))?;
        tracing::info!(brokers = %cfg.brokers, client = %cfg.client_id, group, topics = ?topics,
            "Kafka consumer subscribed");
        Ok(Self {
            consumer: Some(Arc::new(consumer)),
            group: group.to_string(),
            pending,
            lag: LagWatch::default(),
            assigned,
            health,
        })
    }

    fn live(&self) -> Result<&Arc<Stream>, TransportError> {
        self.consumer.as_ref().ok_or(TransportError::Closed)
    }

    /// Per assigned partition: how many records are past the group's committed
    /// offset (high watermark − committed; with no commit yet, − low
    /// watermark). Offsets taken by transaction markers count too, so an idle
    /// transactional partition may show a small non-zero lag.
    pub async fn lag(&self) -> Result<Vec<(String, i32, i64)>, TransportError> {
        let consumer = Arc::downgrade(self.live()?);
        let pending = self.pending.clone();
        self.lag.read(move || {
            let consumer = consumer.upgrade()?;
            let pending = pending.lock().clone();
            Some(lag_of(&*consumer, &pending))
        })
    }
}

/// How often the lag of a consumer is looked up in the background.
const LAG_REFRESH: Duration = Duration::from_secs(5);

type Lags = Vec<(String, i32, i64)>;
type LagLookup = Arc<dyn Fn() -> Option<Result<Lags, TransportError>> + Send + Sync>;

/// A consumer's lag, looked up by a background task and read from here:
/// the look-up costs broker round trips per partition (seconds on a busy
/// broker), which must never stall the loop that consumes.
#[derive(Clone, Default)]
pub(crate) struct LagWatch {
    latest: Arc<Mutex<Option<Result<Lags, String>>>>,
    started: Arc<std::sync::atomic::AtomicBool>,
}

impl LagWatch {
    /// The last lag looked up (empty before the first look-up). The first
    /// call starts the background task; `lookup` returns `None` once the
    /// consumer is gone, which ends it.
    pub(crate) fn read(
        &self,
        lookup: impl Fn() -> Option<Result<Lags, TransportError>> + Send + Sync + 'static,
    ) -> Result<Lags, TransportError> {
        if !self.started.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let latest = self.latest.clone();
            let lookup: LagLookup = Arc::new(lookup);
            tokio::spawn(async move {
                loop {
                    let once = lookup.clone();
                    match tokio::task::spawn_blocking(move || once()).await {
                        Ok(Some(result)) => {
                            *latest.lock() = Some(result.map_err(|e| e.to_string()));
                        }
                        Ok(None) | Err(_) => break,
                    }
                    tokio::time::sleep(LAG_REFRESH).await;
                }
            });
        }
        match &*self.latest.lock() {
            None => Ok(Vec::new()),
            Some(Ok(lags)) => Ok(lags.clone()),
            Some(Err(e)) => Err(TransportError::Unavailable(e.clone())),
        }
    }
}

/// Per assigned partition: how many records are past the group's committed
/// offset (or past `pending`, commits still in flight). Blocking.
pub(crate) fn lag_of<Ctx, K>(
    consumer: &K,
    pending: &HashMap<(String, i32), i64>,
) -> Result<Lags, TransportError>
where
    Ctx: ConsumerContext,
    K: rdkafka::consumer::Consumer<Ctx>,
{
    let assignment = consumer.assignment().map_err(unavailable)?;
    if assignment.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = consumer
        .committed_offsets(assignment.clone(), NETWORK_TIMEOUT)
        .map_err(unavailable)?;
    let mut lags = Vec::with_capacity(assignment.count());
    for e in assignment.elements() {
        let (topic, partition) = (e.topic(), e.partition());
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, NETWORK_TIMEOUT)
            .map_err(unavailable)?;
        let on_broker = committed
            .find_partition(topic, partition)
            .and_then(|p| match p.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        // A commit still in flight is newer than what the broker says.
        let local = pending.get(&(topic.to_string(), partition)).copied();
        let done = on_broker.max(local).unwrap_or(low);
        lags.push((topic.to_string(), partition, (high - done).max(0)));
    }
    Ok(lags)
}

fn to_record(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    Record {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        key: message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        timestamp: message
            .timestamp()
            .to_millis()
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or_else(Utc::now),
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn recv(&mut self) -> Result<Record, TransportError> {
        let consumer = self.live()?;
        loop {
            match consumer.recv().await {
                Ok(message) => return Ok(to_record(&message)),
                Err(KafkaError::MessageConsumptionFatal(code)) => {
                    tracing::error!(group = %self.group, error = %code, "Kafka consumer failed for good");
                    return Err(TransportError::Other(format!("Kafka consumer: {code}")));
                }
                // Everything else (an unreachable broker, a topic not created
                // yet) librdkafka retries by itself: report it and keep reading.
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, "Kafka consumer error; still consuming");
                }
            }
        }
    }

    async fn commit(&mut self, record: &Record) -> Result<(), TransportError> {
        let consumer = self.live()?;
        let next = record.offset + 1;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&record.topic, record.partition, Offset::Offset(next))
            .map_err(|e| TransportError::Other(e.to_string()))?;
        if let Err(e) = consumer.store_offsets(&tpl) {
            // The partition moved to another member meanwhile: it reads the
            // record again, as at-least-once allows.
            tracing::debug!(group = %self.group, topic = %record.topic, partition = record.partition,
                error = %e, "offset not stored");
            return Ok(());
        }
        self.pending
            .lock()
            .insert((record.topic.clone(), record.partition), next);
        Ok(())
    }

    async fn lag(&self) -> Result<Vec<(String, i32, i64)>, TransportError> {
        KafkaConsumer::lag(self).await
    }

    fn health(&self) -> Option<ClientHealth> {
        Some(self.health.clone())
    }

    async fn close(&mut self) -> Result<(), TransportError> {
        let Some(consumer) = self.consumer.take() else {
            return Ok(());
        };
        let offsets: Vec<((String, i32), i64)> = self.pending.lock().drain().collect();
        let group = self.group.clone();
        tokio::task::spawn_blocking(move || {
            let committed = if offsets.is_empty() {
                Ok(())
            } else {
                let mut tpl = TopicPartitionList::new();
                for ((topic, partition), offset) in &offsets {
                    tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                        .map_err(|e| TransportError::Other(e.to_string()))?;
                }
                consumer
                    .commit(&tpl, CommitMode::Sync)
                    .map_err(|e| transport_error(e, None))
            };
            // Dropping the last handle leaves the group (and waits for it).
            drop(consumer);
            tracing::info!(group = %group, partitions = offsets.len(), "Kafka consumer closed");
            committed
        })
        .await
        .map_err(blocking_failed)?
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // Leaving the group blocks until librdkafka has finished in-flight
        // commits and said goodbye to the coordinator: keep that off the
        // runtime's workers when there is a runtime.
        if let Some(consumer) = self.consumer.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn_blocking(move || drop(consumer));
            }
        }
    }
}

/// Creates the topics that do not exist yet, with replication factor 1 (a
/// single-broker stack). See [`ensure_topics_with_replication`].
pub async fn ensure_topics(
    cfg: &KafkaConfig,
    topics: &[(&str, i32, bool)],
) -> Result<(), TransportError> {
    ensure_topics_with_replication(cfg, topics, 1).await
}

/// Creates the topics (name, partitions, compacted) that do not exist yet.
/// Existing topics are left alone, even with another partition count (adding
/// partitions moves keys, an operator's decision): that is logged as a warning.
pub async fn ensure_topics_with_replication(
    cfg: &KafkaConfig,
    topics: &[(&str, i32, bool)],
    replication: i32,
) -> Result<(), TransportError> {
    let topics: Vec<TopicDecl<'_>> = topics
        .iter()
        .map(|&(name, partitions, compacted)| TopicDecl {
            name,
            partitions,
            compacted,
            configs: &[],
        })
        .collect();
    ensure_declared_topics(cfg, &topics, replication).await
}

/// A topic as the platform declares it.
#[derive(Clone, Copy, Debug)]
pub struct TopicDecl<'a> {
    pub name: &'a str,
    pub partitions: i32,
    pub compacted: bool,
    /// Further topic configs (e.g. `retention.ms`), applied at creation.
    pub configs: &'a [(&'a str, &'a str)],
}

/// Creates the declared topics that do not exist yet, with their configs.
/// Existing topics are left alone (see [`ensure_topics_with_replication`]).
pub async fn ensure_declared_topics(
    cfg: &KafkaConfig,
    topics: &[TopicDecl<'_>],
    replication: i32,
) -> Result<(), TransportError> {
    let admin: AdminClient<Logs> = cfg
        .client()
        .create_with_context(Logs {
            client_id: cfg.client_id.clone(),
        })
        .map_err(|e| TransportError::Other(format!("creating the Kafka admin client: {e}")))?;
    let admin = Arc::new(admin);
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let mut topic =
                NewTopic::new(t.name, t.partitions, TopicReplication::Fixed(replication));
            if t.compacted {
                topic = topic.set("cleanup.policy", "compact");
            }
            for (key, value) in t.configs {
                topic = topic.set(key, value);
            }
            topic
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(NETWORK_TIMEOUT))
        .request_timeout(Some(NETWORK_TIMEOUT * 3));
    let results = admin.create_topics(&new, &options).await;
    let outcome = match results {
        Err(e) => Err(transport_error(e, None)),
        Ok(results) => results.into_iter().try_for_each(|result| match result {
            Ok(name) => {
                tracing::info!(topic = %name, replication, "Kafka topic created");
                Ok(())
            }
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "Kafka topic already exists");
                Ok(())
            }
            Err((name, code)) => Err(TransportError::Other(format!(
                "creating topic {name}: {code}"
            ))),
        }),
    };

    let declared: Vec<(String, i32)> = topics
        .iter()
        .map(|t| (t.name.to_string(), t.partitions))
        .collect();
    let checked = tokio::task::spawn_blocking(move || {
        if outcome.is_ok() {
            warn_on_partition_drift(&admin, &declared);
        }
        // The admin client's destructor waits for its threads: dropped here, off the runtime.
        drop(admin);
        outcome
    });
    checked.await.map_err(blocking_failed)?
}

fn warn_on_partition_drift(admin: &AdminClient<Logs>, declared: &[(String, i32)]) {
    let metadata = match admin.inner().fetch_metadata(None, NETWORK_TIMEOUT) {
        Ok(metadata) => metadata,
        Err(e) => {
            tracing::warn!(error = %e, "could not read topic metadata to check partition counts");
            return;
        }
    };
    for (name, partitions) in declared {
        if let Some(topic) = metadata.topics().iter().find(|t| t.name() == name) {
            let actual = topic.partitions().len() as i32;
            if actual != 0 && actual != *partitions {
                tracing::warn!(topic = %name, declared = partitions, actual,
                    "Kafka topic has another partition count than declared; left as it is");
            }
        }
    }
}
