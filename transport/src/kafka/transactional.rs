//! [`TransactionalStream`] over Kafka: consume with `read_committed`, produce
//! and commit the consumed offsets in one Kafka transaction (the EOS-v2 pattern
//! of KIP-447: `send_offsets_to_transaction` with the consumer group's
//! metadata, so a member that lost its partitions in a rebalance cannot commit
//! for them).
//!
//! Fencing: the transactional id is the instance's stable name. A restarted
//! instance calls `init_transactions`, which aborts whatever its previous self
//! left open and makes that self's later calls fail as fenced. Membership is
//! dynamic, not static (`group.instance.id`): a static member that shuts down
//! cleanly does not leave the group, so its partitions would sit idle for a
//! whole session timeout on every scale-down or deploy; a crashed member costs
//! one session timeout (10 s) instead, which is rarer.

use super::{
    blocking_failed, lag_of, to_record, transport_error, KafkaConfig, LagWatch, Logs,
    NETWORK_TIMEOUT,
};
use crate::ports::{
    OutRecord, Record, StreamEvent, TopicPartition, TransactionalStream, TransportError,
};
use async_trait::async_trait;
use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// How long a dead instance's open transaction can block `read_committed`
/// readers (restores included) before the broker aborts it.
const TRANSACTION_TIMEOUT_MS: &str = "10000";
/// How long a member may be silent before its partitions move elsewhere.
const SESSION_TIMEOUT_MS: &str = "10000";
/// Transaction calls wait on the coordinator; bounded so a broken cluster
/// turns into an error instead of a hang.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading a changelog partition to its end may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);

/// Assignment changes seen in librdkafka's rebalance callbacks, in order.
type Events = Arc<Mutex<VecDeque<StreamEvent>>>;

struct TxContext {
    logs: Logs,
    group: String,
    events: Events,
}

impl ClientContext for TxContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.logs.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logs.error(error, reason);
    }
}

fn topic_partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition {
            topic: e.topic().to_string(),
            partition: e.partition(),
        })
        .collect()
}

impl ConsumerContext for TxContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let tps = topic_partitions(tpl);
            tracing::info!(group = %self.group, partitions = tps.len(), "transactional stream: partitions revoked");
            self.events.lock().push_back(StreamEvent::Revoked(tps));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let tps = topic_partitions(tpl);
                tracing::info!(group = %self.group, partitions = tps.len(), "transactional stream: partitions assigned");
                self.events.lock().push_back(StreamEvent::Assigned(tps));
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "rebalance failed")
            }
            Rebalance::Revoke(_) => {}
        }
    }
}

type TxConsumer = StreamConsumer<TxContext>;

pub struct KafkaTransactionalStream {
    cfg: KafkaConfig,
    group: String,
    consumer: Arc<TxConsumer>,
    producer: FutureProducer<Logs>,
    events: Events,
    /// Records polled but not handed out yet (an assignment event came first).
    buffer: VecDeque<Record>,
    fenced: bool,
    lag: LagWatch,
}

/// Fatal errors (fencing among them) end this member; anything else aborts
/// the transaction.
fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(err) => {
            err.is_fatal()
                || matches!(
                    err.code(),
                    RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::InvalidProducerEpoch
                        | RDKafkaErrorCode::FencedInstanceId
                )
        }
        other => matches!(
            other.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fatal
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::FencedInstanceId
            )
        ),
    }
}

impl KafkaTransactionalStream {
    /// Joins `group` on `topics` as `transactional_id`, a name that must be
    /// stable across restarts of this instance and unique among live ones.
    pub async fn new(
        cfg: &KafkaConfig,
        group: &str,
        topics: &[&str],
        transactional_id: &str,
    ) -> Result<Self, TransportError> {
        let logs = Logs {
            client_id: cfg.client_id.clone(),
        };
        let producer: FutureProducer<Logs> = cfg
            .client()
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("compression.type", "lz4")
            // Snapshots of big schedules (the snapshot topic allows 32 MiB).
            .set("message.max.bytes", "33554432")
            .set("partitioner", "murmur2_random")
            .create_with_context(logs.clone())
            .map_err(|e| {
                TransportError::Other(format!("creating the transactional producer: {e}"))
            })?;
        let init = producer.clone();
        tokio::task::spawn_blocking(move || init.init_transactions(TXN_TIMEOUT))
            .await
            .map_err(blocking_failed)?
            .map_err(|e| {
                if is_fatal(&e) {
                    TransportError::Closed
                } else {
                    TransportError::Unavailable(format!("init_transactions: {e}"))
                }
            })?;

        let events = Events::default();
        let consumer: TxConsumer = cfg
            .client()
            .set("group.id", group)
            .set("session.timeout.ms", SESSION_TIMEOUT_MS)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create_with_context(TxContext {
                logs,
                group: group.to_string(),
                events: events.clone(),
            })
            .map_err(|e| {
                TransportError::Other(format!("creating the transactional consumer: {e}"))
            })?;
        consumer
            .subscribe(topics)
            .map_err(|e| TransportError::Other(format!("subscribing to {topics:?}: {e}")))?;
        tracing::info!(brokers = %cfg.brokers, group, transactional_id, topics = ?topics,
            "Kafka transactional stream started");
        Ok(Self {
            cfg: cfg.clone(),
            group: group.to_string(),
            consumer: Arc::new(consumer),
            producer,
            events,
            buffer: VecDeque::new(),
            fenced: false,
            lag: LagWatch::default(),
        })
    }

    /// Drops buffered records of partitions this member no longer owns.
    fn forget(&mut self, revoked: &[TopicPartition]) {
        self.buffer.retain(|r| {
            !revoked
                .iter()
                .any(|tp| tp.topic == r.topic && tp.partition == r.partition)
        });
    }

    /// After an aborted transaction: every owned partition goes back to its
    /// committed offset, and the processor is told to rebuild its state.
    async fn rewind(&mut self) -> Result<(), TransportError> {
        self.buffer.clear();
        let consumer = self.consumer.clone();
        let owned =
            tokio::task::spawn_blocking(move || -> Result<Vec<TopicPartition>, TransportError> {
                let assignment = consumer
                    .assignment()
                    .map_err(|e| transport_error(e, None))?;
                if assignment.count() == 0 {
                    return Ok(Vec::new());
                }
                let committed = consumer
                    .committed_offsets(assignment.clone(), NETWORK_TIMEOUT)
                    .map_err(|e| transport_error(e, None))?;
                let mut seek = TopicPartitionList::new();
                for e in committed.elements() {
                    let to = match e.offset() {
                        Offset::Offset(o) => Offset::Offset(o),
                        _ => Offset::Beginning,
                    };
                    seek.add_partition_offset(e.topic(), e.partition(), to)
                        .map_err(|e| TransportError::Other(e.to_string()))?;
                }
                consumer
                    .seek_partitions(seek, NETWORK_TIMEOUT)
                    .map_err(|e| transport_error(e, None))?;
                Ok(topic_partitions(&assignment))
            })
            .await
            .map_err(blocking_failed)??;
        let mut events = self.events.lock();
        events.push_back(StreamEvent::Revoked(owned.clone()));
        events.push_back(StreamEvent::Assigned(owned));
        Ok(())
    }

    async fn abort(&mut self, why: KafkaError) -> TransportError {
        if is_fatal(&why) {
            self.fenced = true;
            tracing::error!(group = %self.group, error = %why, "fenced: this processor instance must stop");
            return TransportError::Closed;
        }
        tracing::warn!(group = %self.group, error = %why, "transaction aborted");
        let producer = self.producer.clone();
        let aborted =
            tokio::task::spawn_blocking(move || producer.abort_transaction(TXN_TIMEOUT)).await;
        match aborted {
            Ok(Ok(())) => {}
            Ok(Err(e)) if is_fatal(&e) => {
                self.fenced = true;
                return TransportError::Closed;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "abort_transaction failed"),
            Err(e) => tracing::warn!(error = %e, "abort_transaction did not run"),
        }
        if let Err(e) = self.rewind().await {
            tracing::warn!(error = %e, "rewinding after an abort failed; restarting the stream is the way out");
            self.fenced = true;
            return TransportError::Closed;
        }
        TransportError::Unavailable(format!("transaction aborted: {why}"))
    }
}

#[async_trait]
impl TransactionalStream for KafkaTransactionalStream {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<StreamEvent, TransportError> {
        if self.fenced {
            return Err(TransportError::Closed);
        }
        let max = max.max(1);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let event = self.events.lock().pop_front();
            if let Some(event) = event {
                if let StreamEvent::Revoked(tps) = &event {
                    self.forget(tps);
                }
                return Ok(event);
            }
            if !self.buffer.is_empty() {
                let n = self.buffer.len().min(max);
                return Ok(StreamEvent::Records(self.buffer.drain(..n).collect()));
            }
            // Wait for the first record, then take whatever else is ready.
            let first = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => {
                    // The poll may have run a rebalance callback.
                    if self.events.lock().is_empty() {
                        return Ok(StreamEvent::Records(Vec::new()));
                    }
                    continue;
                }
                Ok(Ok(m)) => to_record(&m),
                Ok(Err(KafkaError::MessageConsumptionFatal(code))) => {
                    return Err(TransportError::Other(format!("Kafka consumer: {code}")))
                }
                Ok(Err(e)) => {
                    tracing::warn!(group = %self.group, error = %e, "Kafka consumer error; still consuming");
                    continue;
                }
            };
            self.buffer.push_back(first);
            while self.buffer.len() < max {
                match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                    Ok(Ok(m)) => self.buffer.push_back(to_record(&m)),
                    _ => break,
                }
            }
        }
    }

    async fn commit(
        &mut self,
        outputs: Vec<OutRecord>,
        consumed: &[Record],
    ) -> Result<(), TransportError> {
        if self.fenced {
            return Err(TransportError::Closed);
        }
        let producer = self.producer.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || producer.begin_transaction())
            .await
            .map_err(blocking_failed)?
        {
            return Err(self.abort(e).await);
        }
        let mut deliveries = Vec::with_capacity(outputs.len());
        for record in &outputs {
            let mut out = FutureRecord::to(&record.topic)
                .key(record.key.as_bytes())
                .payload(&record.payload);
            if let Some(p) = record.partition {
                out = out.partition(p);
            }
            match self.producer.send_result(out) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => return Err(self.abort(e).await),
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.abort(e).await),
                Err(_) => return Err(self.abort(KafkaError::Canceled).await),
            }
        }
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        for r in consumed {
            let e = next.entry((r.topic.clone(), r.partition)).or_insert(0);
            *e = (*e).max(r.offset + 1);
        }
        let producer = self.producer.clone();
        let consumer = self.consumer.clone();
        let produced = !outputs.is_empty();
        let committed = tokio::task::spawn_blocking(move || -> Result<(), KafkaError> {
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), offset) in &next {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
            }
            if next.is_empty() && produced {
                // Outputs with no input (timer facts): commit the positions
                // again, unchanged, so the broker still checks this member's
                // generation (KIP-447) and a member that lost its partitions
                // without noticing cannot add facts to them.
                for e in consumer.position()?.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        tpl.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o))?;
                    }
                }
            }
            if tpl.count() > 0 {
                // Only missing before the consumer joined its group, which it
                // has if it handed out the records being committed.
                let metadata = consumer
                    .group_metadata()
                    .ok_or(KafkaError::ConsumerCommit(RDKafkaErrorCode::State))?;
                producer.send_offsets_to_transaction(&tpl, &metadata, TXN_TIMEOUT)?;
            }
            producer.commit_transaction(TXN_TIMEOUT)
        })
        .await
        .map_err(blocking_failed)?;
        match committed {
            Ok(()) => Ok(()),
            Err(e) => Err(self.abort(e).await),
        }
    }

    async fn read_partition(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
    ) -> Result<Vec<Record>, TransportError> {
        let cfg = self.cfg.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || read_to_end(&cfg, &topic, partition, from))
            .await
            .map_err(blocking_failed)?
    }

    async fn end_offset(&mut self, topic: &str, partition: i32) -> Result<i64, TransportError> {
        let consumer = self.consumer.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            consumer
                .fetch_watermarks(&topic, partition, NETWORK_TIMEOUT)
                .map(|(_, high)| high)
                .map_err(|e| transport_error(e, Some(&topic)))
        })
        .await
        .map_err(blocking_failed)?
    }

    async fn close(&mut self) -> Result<(), TransportError> {
        self.fenced = true;
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        })
        .await
        .map_err(blocking_failed)
    }

    async fn lag(&self) -> Result<Vec<(String, i32, i64)>, TransportError> {
        let consumer = Arc::downgrade(&self.consumer);
        self.lag.read(move || {
            let consumer = consumer.upgrade()?;
            Some(lag_of(&*consumer, &HashMap::new()))
        })
    }
}

/// Every committed record of one partition, from `from` (or the oldest kept)
/// to the high watermark as of the call. A group-less consumer, `read_committed`, so
/// aborted batches are skipped; the position (not the last record) tells when
/// the end is reached, because the last offsets may be transaction markers.
/// The restore consumer needs no callbacks of its own.
impl ConsumerContext for Logs {}

fn read_to_end(
    cfg: &KafkaConfig,
    topic: &str,
    partition: i32,
    from: i64,
) -> Result<Vec<Record>, TransportError> {
    let consumer: BaseConsumer<Logs> = cfg
        .client()
        .set("group.id", format!("{}-restore", cfg.client_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .create_with_context(Logs {
            client_id: cfg.client_id.clone(),
        })
        .map_err(|e| TransportError::Other(format!("creating the restore consumer: {e}")))?;
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, NETWORK_TIMEOUT)
        .map_err(|e| transport_error(e, Some(topic)))?;
    if high <= low.max(from) {
        return Ok(Vec::new());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from.max(low)))
        .map_err(|e| TransportError::Other(e.to_string()))?;
    consumer
        .assign(&tpl)
        .map_err(|e| transport_error(e, Some(topic)))?;
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    loop {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => out.push(to_record(&m)),
            Some(Err(e)) => {
                tracing::warn!(topic, partition, error = %e, "restore read error; retrying")
            }
            None => {}
        }
        let position = consumer
            .position()
            .map_err(|e| transport_error(e, Some(topic)))?
            .find_partition(topic, partition)
            .and_then(|p| match p.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        if position.is_some_and(|p| p >= high) {
            return Ok(out);
        }
        if started.elapsed() > RESTORE_TIMEOUT {
            return Err(TransportError::Unavailable(format!(
                "{topic}/{partition}: not read to offset {high} within {RESTORE_TIMEOUT:?} (an open transaction?)"
            )));
        }
    }
}
