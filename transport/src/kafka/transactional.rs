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
//!
//! Recovery: the stream never gives up on a broker that is away, however long.
//! A failed transaction leaves work to do before records flow again (abort it,
//! or renew the producer, then rewind to the committed offsets); `next` does
//! that work, answers `Unavailable` while the broker does not let it finish,
//! and keeps polling the consumer meanwhile so that rebalances are served and
//! the member stays in (or rejoins) its group.
//!
//! A broker restart in the middle of a transaction commonly leaves librdkafka's
//! transactional producer in a *fatal* state: the coordinator aborted the
//! timed-out transaction and bumped the epoch, so the producer's next call is
//! answered `INVALID_TXN_STATE` or `INVALID_PRODUCER_EPOCH` (which librdkafka
//! reports as "fenced by a newer instance", the same as real fencing). A fatal
//! producer is useless, but the instance is not: the stream creates a new
//! producer with the same transactional id (`init_transactions` again) and
//! carries on. A real zombie cannot win by doing the same: its consumer's
//! generation is stale, so its offsets are refused and its transactions
//! abort; and an instance fenced again and again (two live instances sharing
//! one id, a configuration error) stops after [`FATAL_LIMIT`] renewals within
//! [`FATAL_WINDOW`], so the process exits and says why.

use super::{
    blocking_failed, lag_of, observe_stats, to_record, transport_error, KafkaConfig, LagWatch,
    Logs, NETWORK_TIMEOUT, STATS_INTERVAL_MS,
};
use crate::health::ClientHealth;
use crate::ports::{
    OutRecord, Record, StreamEvent, TopicPartition, TransactionalStream, TransportError,
};
use async_trait::async_trait;
use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a dead instance's open transaction can block `read_committed`
/// readers (restores included) before the broker aborts it.
const TRANSACTION_TIMEOUT_MS: &str = "10000";
/// How long a member may be silent before its partitions move elsewhere.
const SESSION_TIMEOUT_MS: &str = "10000";
/// Transaction calls wait on the coordinator; bounded so a broken cluster
/// turns into an error instead of a hang.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// One step of recovery (an abort, an `init_transactions`, a rewind) waits at
/// most this long, so `next` comes back to poll the consumer in between.
const RECOVERY_STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long reading a changelog partition to its end may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);
/// Fatal producer errors tolerated within [`FATAL_WINDOW`] before the stream
/// stops for good (see the module docs).
pub const FATAL_LIMIT: usize = 5;
pub const FATAL_WINDOW: Duration = Duration::from_secs(600);

/// Assignment changes seen in librdkafka's rebalance callbacks, in order.
type Events = Arc<Mutex<VecDeque<StreamEvent>>>;

struct TxContext {
    logs: Logs,
    group: String,
    events: Events,
    health: ClientHealth,
}

impl ClientContext for TxContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.logs.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logs.error(error, reason);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        observe_stats(&self.health, statistics);
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

/// How the open transaction must end before anything else happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    Abort,
    /// `commit_transaction` timed out: librdkafka refuses an abort while
    /// that commit is in progress ("conflicting commit_transaction API
    /// call"); the call must be made again until it resolves. If it
    /// commits, the batch is in the log after all, which the rewind's
    /// restore reads like any other.
    ResumeCommit,
}

/// What must happen after a failed transaction before records flow again, in
/// this order. Nothing is handed out while any of it is pending: the
/// processor's in-memory state still holds the failed batch's decisions until
/// the `Revoked`/`Assigned` pair that the rewind queues makes it restore.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Recovery {
    /// The producer is in a fatal state: replace it (`init_transactions`
    /// aborts whatever its predecessor left open).
    renew_producer: bool,
    finish: Option<Finish>,
    /// Seek every owned partition to its committed offset and tell the
    /// processor to restore.
    rewind: bool,
}

impl Recovery {
    fn pending(&self) -> bool {
        self.renew_producer || self.finish.is_some() || self.rewind
    }
}

/// Where in a transaction a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Open,
    Commit,
}

pub struct KafkaTransactionalStream {
    cfg: KafkaConfig,
    group: String,
    transactional_id: String,
    consumer: Arc<TxConsumer>,
    producer: FutureProducer<Logs>,
    events: Events,
    /// Records polled but not handed out yet (an assignment event came first).
    buffer: VecDeque<Record>,
    recovery: Recovery,
    /// When fatal producer errors happened, within [`FATAL_WINDOW`].
    fatal: VecDeque<Instant>,
    fatal_limit: usize,
    closed: bool,
    lag: LagWatch,
    health: ClientHealth,
    /// Reads changelog partitions for restores; created once, reassigned per read.
    restore: Option<Arc<BaseConsumer<Logs>>>,
}

/// Errors after which the producer can do nothing more (librdkafka's fatal
/// state, fencing among them): it must be replaced. Anything else aborts the
/// transaction.
fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(err) => {
            err.is_fatal()
                || matches!(
                    err.code(),
                    RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::InvalidProducerEpoch
                        | RDKafkaErrorCode::FencedInstanceId
                        | RDKafkaErrorCode::Fenced
                )
        }
        other => matches!(
            other.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fatal
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::FencedInstanceId
                    | RDKafkaErrorCode::Fenced
            )
        ),
    }
}

/// A transactional call that may be made again (a timeout).
fn retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(err) if err.is_retriable())
}

/// A transactional error after which only an abort is allowed.
fn requires_abort(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(err) if err.txn_requires_abort())
}

fn producer_for(
    cfg: &KafkaConfig,
    transactional_id: &str,
) -> Result<FutureProducer<Logs>, TransportError> {
    cfg.client()
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", "lz4")
        // Snapshots of big schedules (the snapshot topic allows 32 MiB).
        .set("message.max.bytes", "33554432")
        .set("partitioner", "murmur2_random")
        .create_with_context(Logs {
            client_id: cfg.client_id.clone(),
        })
        .map_err(|e| TransportError::Other(format!("creating the transactional producer: {e}")))
}

/// `init_transactions` on the blocking pool.
async fn init(producer: &FutureProducer<Logs>, timeout: Duration) -> Result<(), KafkaError> {
    let init = producer.clone();
    tokio::task::spawn_blocking(move || init.init_transactions(timeout))
        .await
        .map_err(|_| KafkaError::Canceled)?
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
        let producer = producer_for(cfg, transactional_id)?;
        init(&producer, TXN_TIMEOUT).await.map_err(|e| {
            if is_fatal(&e) {
                TransportError::Closed
            } else {
                TransportError::Unavailable(format!("init_transactions: {e}"))
            }
        })?;

        let events = Events::default();
        let health = ClientHealth::default();
        health.beat();
        let consumer: TxConsumer = cfg
            .client()
            .set("group.id", group)
            .set("session.timeout.ms", SESSION_TIMEOUT_MS)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("statistics.interval.ms", STATS_INTERVAL_MS)
            .create_with_context(TxContext {
                logs,
                group: group.to_string(),
                events: events.clone(),
                health: health.clone(),
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
            transactional_id: transactional_id.to_string(),
            consumer: Arc::new(consumer),
            producer,
            events,
            buffer: VecDeque::new(),
            recovery: Recovery::default(),
            fatal: VecDeque::new(),
            fatal_limit: FATAL_LIMIT,
            closed: false,
            lag: LagWatch::default(),
            health,
            restore: None,
        })
    }

    /// How many fatal producer errors within [`FATAL_WINDOW`] the stream
    /// survives by renewing its producer (default [`FATAL_LIMIT`]); one more
    /// and it stops with `Closed`. Zero: the first one stops it.
    pub fn with_fatal_limit(mut self, limit: usize) -> Self {
        self.fatal_limit = limit;
        self
    }

    /// Beats while the consumer is polled, a transaction commits or a restore
    /// reads; says whether the consumer is in its group.
    pub fn health(&self) -> ClientHealth {
        self.health.clone()
    }

    /// Drops buffered records of partitions this member no longer owns.
    fn forget(&mut self, revoked: &[TopicPartition]) {
        self.buffer.retain(|r| {
            !revoked
                .iter()
                .any(|tp| tp.topic == r.topic && tp.partition == r.partition)
        });
    }

    /// Every owned partition goes back to its committed offset, and the
    /// processor is told to rebuild its state.
    async fn rewind(&mut self) -> Result<(), TransportError> {
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
                    .committed_offsets(assignment.clone(), RECOVERY_STEP_TIMEOUT)
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
                    .seek_partitions(seek, RECOVERY_STEP_TIMEOUT)
                    .map_err(|e| transport_error(e, None))?;
                Ok(topic_partitions(&assignment))
            })
            .await
            .map_err(blocking_failed)??;
        // Polled before the seek, from positions past the failed batch.
        self.buffer.clear();
        let mut events = self.events.lock();
        events.push_back(StreamEvent::Revoked(owned.clone()));
        events.push_back(StreamEvent::Assigned(owned));
        Ok(())
    }

    /// Records what a failed transaction leaves to do, tries it once, and
    /// says what the caller gets: `Closed` only when this instance must stop.
    async fn fail(&mut self, why: KafkaError, stage: Stage) -> TransportError {
        if is_fatal(&why) {
            if let Some(stop) = self.count_fatal(&why) {
                return stop;
            }
            self.recovery = Recovery {
                renew_producer: true,
                finish: None,
                rewind: true,
            };
        } else {
            let resume = stage == Stage::Commit && retriable(&why);
            tracing::warn!(group = %self.group, error = %why, resume_commit = resume, "transaction failed");
            self.recovery.finish = Some(if resume {
                Finish::ResumeCommit
            } else {
                Finish::Abort
            });
            self.recovery.rewind = true;
        }
        match self.recover().await {
            Ok(()) => TransportError::Unavailable(format!("transaction failed: {why}")),
            Err(e) => e,
        }
    }

    /// Counts a fatal producer error; `Some(Closed)` once there were too many.
    fn count_fatal(&mut self, why: &dyn std::fmt::Display) -> Option<TransportError> {
        let now = Instant::now();
        self.fatal.push_back(now);
        while self
            .fatal
            .front()
            .is_some_and(|t| now.duration_since(*t) > FATAL_WINDOW)
        {
            self.fatal.pop_front();
        }
        if self.fatal.len() > self.fatal_limit {
            tracing::error!(group = %self.group, transactional_id = %self.transactional_id,
                fatal_errors = self.fatal.len(), window_secs = FATAL_WINDOW.as_secs(), error = %why,
                "the transactional producer keeps failing fatally (another live instance with this transactional id?); this processor instance stops");
            self.closed = true;
            return Some(TransportError::Closed);
        }
        tracing::warn!(group = %self.group, error = %why,
            "the transactional producer failed fatally (a broker restart mid-transaction does this); it is renewed and the partitions restored");
        None
    }

    /// Does what [`Recovery`] says, one step at a time, each bounded. `Ok`
    /// once nothing is pending; `Unavailable` while the broker does not let
    /// a step finish (called again later, it resumes); `Closed` if the
    /// instance must stop.
    async fn recover(&mut self) -> Result<(), TransportError> {
        // librdkafka may have turned the producer fatal in the background
        // (an epoch bump seen by its own threads) while a step kept failing
        // for another reason: no step of the old producer can succeed then.
        if !self.recovery.renew_producer {
            if let Some((code, why)) = self.producer.client().fatal_error() {
                if let Some(stop) = self.count_fatal(&format!("{code:?}: {why}")) {
                    return Err(stop);
                }
                self.recovery.renew_producer = true;
            }
        }
        if self.recovery.renew_producer {
            let producer = producer_for(&self.cfg, &self.transactional_id)?;
            match init(&producer, RECOVERY_STEP_TIMEOUT).await {
                Ok(()) => {
                    tracing::info!(group = %self.group, transactional_id = %self.transactional_id,
                        "transactional producer renewed");
                    self.producer = producer;
                    self.recovery.renew_producer = false;
                    // The new producer's init aborted whatever was open.
                    self.recovery.finish = None;
                }
                Err(e) if is_fatal(&e) => {
                    self.recovery.renew_producer = false;
                    return Err(Box::pin(self.fail(e, Stage::Open)).await);
                }
                Err(e) => {
                    return Err(TransportError::Unavailable(format!(
                        "renewing the transactional producer: {e}"
                    )))
                }
            }
        }
        if let Some(finish) = self.recovery.finish {
            let producer = self.producer.clone();
            let ended = tokio::task::spawn_blocking(move || match finish {
                Finish::Abort => producer.abort_transaction(RECOVERY_STEP_TIMEOUT),
                Finish::ResumeCommit => producer.commit_transaction(RECOVERY_STEP_TIMEOUT),
            })
            .await
            .map_err(blocking_failed)?;
            match ended {
                Ok(()) => self.recovery.finish = None,
                Err(e) if is_fatal(&e) => {
                    self.recovery.finish = None;
                    return Err(Box::pin(self.fail(e, Stage::Open)).await);
                }
                Err(e) => {
                    // A resumed commit that must abort after all; an abort
                    // refused because a timed-out commit is in progress.
                    if finish == Finish::ResumeCommit && requires_abort(&e) {
                        self.recovery.finish = Some(Finish::Abort);
                    } else if finish == Finish::Abort
                        && e.rdkafka_error_code() == Some(RDKafkaErrorCode::Conflict)
                    {
                        self.recovery.finish = Some(Finish::ResumeCommit);
                    }
                    return Err(TransportError::Unavailable(format!(
                        "ending the transaction ({finish:?}): {e}"
                    )));
                }
            }
        }
        if self.recovery.rewind {
            self.rewind().await?;
            self.recovery.rewind = false;
            tracing::info!(group = %self.group, "transactional stream recovered: partitions are restored from their last commit");
        }
        Ok(())
    }

    /// While recovery is pending: serves the consumer's callbacks
    /// (rebalances, statistics) without handing out records. What it reads
    /// is dropped; the rewind seeks back before anything is handed out.
    async fn pump(&mut self) {
        debug_assert!(
            self.recovery.rewind,
            "records are dropped only before a rewind"
        );
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {}
    }

    /// The restore consumer, created on first use. It has a group id only
    /// because librdkafka delivers a consumer's fetches through its group
    /// queue; it never subscribes and never commits.
    fn restore_consumer(&mut self) -> Result<Arc<BaseConsumer<Logs>>, TransportError> {
        if let Some(c) = &self.restore {
            return Ok(c.clone());
        }
        let consumer: BaseConsumer<Logs> = self
            .cfg
            .client()
            .set("group.id", format!("{}-restore", self.cfg.client_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            // A restore reads to the end and stops: a fetch that finds
            // nothing new (the end, or only a transaction marker past the
            // last record) must come back at once, not after librdkafka's
            // default 500 ms, which made every partition's restore cost
            // about a second however little it read.
            .set("fetch.wait.max.ms", "5")
            .create_with_context(Logs {
                client_id: self.cfg.client_id.clone(),
            })
            .map_err(|e| TransportError::Other(format!("creating the restore consumer: {e}")))?;
        let consumer = Arc::new(consumer);
        self.restore = Some(consumer.clone());
        Ok(consumer)
    }
}

#[async_trait]
impl TransactionalStream for KafkaTransactionalStream {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<StreamEvent, TransportError> {
        if self.closed {
            return Err(TransportError::Closed);
        }
        if self.recovery.pending() {
            self.pump().await;
            if let Err(e) = self.recover().await {
                if !matches!(e, TransportError::Closed) {
                    // Polled: the process is waiting out the broker, not wedged.
                    self.health.beat();
                }
                return Err(e);
            }
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
        if self.closed {
            return Err(TransportError::Closed);
        }
        if self.recovery.pending() {
            // A commit may only follow records handed out after a recovery.
            return Err(TransportError::Unavailable(
                "the stream is recovering from a failed transaction".into(),
            ));
        }
        let producer = self.producer.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || producer.begin_transaction())
            .await
            .map_err(blocking_failed)?
        {
            return Err(self.fail(e, Stage::Open).await);
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
                Err((e, _)) => return Err(self.fail(e, Stage::Open).await),
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.fail(e, Stage::Open).await),
                Err(_) => return Err(self.fail(KafkaError::Canceled, Stage::Open).await),
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
        let committed = tokio::task::spawn_blocking(move || -> Result<(), (KafkaError, Stage)> {
            let open = |e| (e, Stage::Open);
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), offset) in &next {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                    .map_err(open)?;
            }
            if next.is_empty() && produced {
                // Outputs with no input (timer facts): commit the positions
                // again, unchanged, so the broker still checks this member's
                // generation (KIP-447) and a member that lost its partitions
                // without noticing cannot add facts to them.
                for e in consumer.position().map_err(open)?.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        tpl.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o))
                            .map_err(open)?;
                    }
                }
            }
            if tpl.count() > 0 {
                // Only missing before the consumer joined its group, which it
                // has if it handed out the records being committed.
                let metadata = consumer
                    .group_metadata()
                    .ok_or(KafkaError::ConsumerCommit(RDKafkaErrorCode::State))
                    .map_err(open)?;
                producer
                    .send_offsets_to_transaction(&tpl, &metadata, TXN_TIMEOUT)
                    .map_err(open)?;
            }
            producer
                .commit_transaction(TXN_TIMEOUT)
                .map_err(|e| (e, Stage::Commit))
        })
        .await
        .map_err(blocking_failed)?;
        match committed {
            Ok(()) => {
                self.health.beat();
                Ok(())
            }
            Err((e, stage)) => Err(self.fail(e, stage).await),
        }
    }

    async fn read_partition(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
    ) -> Result<Vec<Record>, TransportError> {
        let consumer = self.restore_consumer()?;
        let topic = topic.to_string();
        let health = self.health.clone();
        tokio::task::spawn_blocking(move || {
            read_to_end(&consumer, &topic, partition, from, &health)
        })
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
        self.closed = true;
        let consumer = self.consumer.clone();
        let restore = self.restore.take();
        tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
            drop(restore);
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

/// The restore consumer needs no callbacks of its own.
impl ConsumerContext for Logs {}

/// Every committed record of one partition, from `from` (or the oldest kept)
/// to its end as of the call: the last stable offset, since the consumer reads
/// `read_committed` (aborted batches are skipped). The position (not the last
/// record) tells when the end is reached, because the last offsets may be
/// transaction markers. Each poll is a beat of `health`: a long restore is
/// progress, not a stall.
fn read_to_end(
    consumer: &BaseConsumer<Logs>,
    topic: &str,
    partition: i32,
    from: i64,
    health: &ClientHealth,
) -> Result<Vec<Record>, TransportError> {
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
    let read = (|| {
        let started = Instant::now();
        let mut out = Vec::new();
        loop {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) if m.topic() == topic && m.partition() == partition => {
                    out.push(to_record(&m))
                }
                // A fetch of an earlier read still in the queue.
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(topic, partition, error = %e, "restore read error; retrying")
                }
                None => {}
            }
            health.beat();
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
    })();
    if let Err(e) = consumer.unassign() {
        tracing::debug!(topic, partition, error = %e, "unassigning the restore consumer");
    }
    read
}
