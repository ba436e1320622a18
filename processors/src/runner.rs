//! The schedule processor around a [`TransactionalStream`]: consume a batch of
//! the schedules topic, decide it with the partition workers, and produce the
//! facts (changelog) and answers (replies) in the same transaction that commits
//! the batch's offsets. Kafka in the real stack, the embedded log in `dev`.
//!
//! Recovery needs no special path: when a partition is assigned (at start, on a
//! rebalance, or after a failed commit) its worker is rebuilt from the
//! changelog partition of the same number, which holds exactly the committed
//! decisions; the inputs after the last commit are then handed out again and
//! decided again. Duplicate commands are recognised by the state itself.

use crate::partition::{Change, Input, Output, PartitionWorker};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use thiserror::Error;
use ticketing_domain::events::{
    Event, EventMeta, ScheduleCommandAnswered, ScheduleFactRecorded, ScheduleSnapshotted,
    SnapshotsCheckpointed,
};
use ticketing_domain::ids::{derived_uuid, CommandId, EventId};
use ticketing_domain::schedule::{Command, Envelope, Reply, Settings};
use ticketing_runtime::shutdown::Shutdown;
use ticketing_runtime::Metrics;
use ticketing_schemas::{topics, CodecError, EventCodec};
use ticketing_transport::{
    OutRecord, Record, StreamEvent, TopicPartition, TransactionalStream, TransportError,
};

#[derive(Clone, Debug)]
pub struct ProcessorConfig {
    /// Names this instance in metrics and logs.
    pub name: String,
    pub settings: Settings,
    /// Records decided per transaction: larger batches amortise the commit,
    /// smaller ones answer sooner.
    pub batch_max: usize,
    /// How often due timers fire on schedules that get no commands.
    pub tick_every: Duration,
    /// Changelog records of a partition between two rounds of snapshots: a
    /// restore reads at most about this many records past the snapshots.
    pub snapshot_every: usize,
    /// A partition with changes not yet in a snapshot gets a round at least
    /// this often, so quiet partitions restore fast too.
    pub snapshot_interval: Duration,
}

impl ProcessorConfig {
    pub fn new(name: impl Into<String>, settings: Settings) -> Self {
        Self {
            name: name.into(),
            settings,
            batch_max: 500,
            tick_every: Duration::from_millis(500),
            snapshot_every: 20_000,
            snapshot_interval: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Error)]
pub enum ProcessorError {
    /// Another instance owns our partitions now; this one must stop.
    #[error("fenced by a newer processor instance")]
    Fenced,
    #[error("encoding an output failed: {0}")]
    Encode(CodecError),
}

/// A snapshot larger than this is not written (the topic's limit is 32 MiB
/// before compression); the partition's restore then reads more changelog.
const MAX_SNAPSHOT_BYTES: usize = 30 * 1024 * 1024;

/// What changed in a partition since its last round of snapshots.
#[derive(Debug)]
struct SnapshotTracker {
    dirty: std::collections::BTreeSet<ticketing_domain::ids::ScheduleId>,
    changes: usize,
    last_round: Instant,
}

impl SnapshotTracker {
    fn new() -> Self {
        Self {
            dirty: Default::default(),
            changes: 0,
            last_round: Instant::now(),
        }
    }

    fn mark(&mut self, change: &Change) {
        self.changes += 1;
        self.dirty.insert(match change {
            Change::Created(c) => c.schedule_id,
            Change::Fact { schedule_id, .. } => *schedule_id,
        });
    }

    fn due(&self, config: &ProcessorConfig) -> bool {
        !self.dirty.is_empty()
            && (self.changes >= config.snapshot_every
                || self.last_round.elapsed() >= config.snapshot_interval)
    }
}

/// How long to wait before trying a failed transport or registry call again.
const RETRY_AFTER: Duration = Duration::from_millis(250);
const LAG_EVERY: Duration = Duration::from_secs(5);
const UNAVAILABLE_WARN_EVERY: Duration = Duration::from_secs(5);

/// A deterministic id for the `index`-th output of an input: a decision that is
/// redone after an aborted transaction produces the same event ids.
fn output_id(origin: &[u8], index: usize) -> EventId {
    EventId::from_uuid(derived_uuid(&[origin, &(index as u64).to_be_bytes()]))
}

fn outcome(reply: &Reply) -> &'static str {
    match reply {
        Reply::Queue(_) | Reply::Joined(_) => "queue",
        Reply::Left => "left",
        Reply::Held { .. } => "held",
        Reply::Released => "released",
        Reply::Rejected(_) => "rejected",
        Reply::UnknownSchedule => "unknown_schedule",
        Reply::None => "none",
        Reply::PaymentStarted { .. } => "payment_started",
        Reply::Sold { .. } => "sold",
        Reply::PaymentAborted => "payment_aborted",
        Reply::Refunded { .. } => "refunded",
    }
}

pub struct ScheduleProcessor<S> {
    stream: S,
    codec: EventCodec,
    config: ProcessorConfig,
    metrics: Metrics,
    workers: BTreeMap<i32, PartitionWorker>,
    snapshots: BTreeMap<i32, SnapshotTracker>,
}

impl<S: TransactionalStream> ScheduleProcessor<S> {
    pub fn new(stream: S, codec: EventCodec, config: ProcessorConfig, metrics: Metrics) -> Self {
        Self {
            stream,
            codec,
            config,
            metrics,
            workers: BTreeMap::new(),
            snapshots: BTreeMap::new(),
        }
    }

    /// Runs until shutdown (Ok) or until fenced.
    pub async fn run(mut self, shutdown: Shutdown) -> Result<(), ProcessorError> {
        let mut next_tick = Instant::now() + self.config.tick_every;
        let mut next_lag = Instant::now() + LAG_EVERY;
        let mut last_unavailable_warning: Option<Instant> = None;
        let result = loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let event = tokio::select! {
                _ = shutdown.clone().wait() => break Ok(()),
                e = self.stream.next(self.config.batch_max, wait) => e,
            };
            let step = match event {
                Ok(StreamEvent::Assigned(tps)) => self.assign(tps, &shutdown).await,
                Ok(StreamEvent::Revoked(tps)) => {
                    for tp in tps.iter().filter(|tp| tp.topic == topics::SCHEDULES) {
                        self.workers.remove(&tp.partition);
                        self.snapshots.remove(&tp.partition);
                    }
                    self.owned_changed();
                    Ok(())
                }
                Ok(StreamEvent::Records(records)) => {
                    let due = Instant::now() >= next_tick;
                    if due {
                        next_tick = Instant::now() + self.config.tick_every;
                    }
                    if records.is_empty() && !due {
                        Ok(())
                    } else {
                        self.decide_batch(&records, due, &shutdown).await
                    }
                }
                Err(TransportError::Closed) => Err(ProcessorError::Fenced),
                Err(e) => {
                    // Retried every RETRY_AFTER for as long as the broker is
                    // away: one warning per interval, the rest at debug.
                    if last_unavailable_warning
                        .is_none_or(|at: Instant| at.elapsed() >= UNAVAILABLE_WARN_EVERY)
                    {
                        last_unavailable_warning = Some(Instant::now());
                        tracing::warn!(processor = %self.config.name, error = %e, "the log is unavailable; retrying");
                    } else {
                        tracing::debug!(processor = %self.config.name, error = %e, "the log is unavailable; retrying");
                    }
                    tokio::time::sleep(RETRY_AFTER).await;
                    Ok(())
                }
            };
            if let Err(e) = step {
                break Err(e);
            }
            if Instant::now() >= next_lag {
                next_lag = Instant::now() + LAG_EVERY;
                self.publish_lag().await;
            }
        };
        if let Err(e) = self.stream.close().await {
            tracing::debug!(error = %e, "closing the processor's stream");
        }
        self.workers.clear();
        self.snapshots.clear();
        self.owned_changed();
        result
    }

    fn owned_changed(&self) {
        self.metrics
            .partitions_owned
            .with_label_values(&[&self.config.name])
            .set(self.workers.len() as i64);
    }

    async fn publish_lag(&self) {
        if let Ok(lags) = self.stream.lag().await {
            for (topic, partition, lag) in lags {
                self.metrics
                    .consumer_lag
                    .with_label_values(&[&self.config.name, &topic, &partition.to_string()])
                    .set(lag);
            }
        }
    }

    /// Reads a whole partition (from `from`), retrying while the log is
    /// unavailable. `None` when shutting down.
    async fn read_all(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        shutdown: &Shutdown,
    ) -> Result<Option<Vec<Record>>, ProcessorError> {
        loop {
            match self.stream.read_partition(topic, partition, from).await {
                Ok(records) => return Ok(Some(records)),
                Err(TransportError::Closed) => return Err(ProcessorError::Fenced),
                Err(e) => {
                    tracing::warn!(topic, partition, error = %e, "unreadable; retrying");
                    if shutdown.is_triggered() {
                        return Ok(None);
                    }
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    /// Rebuilds the workers of newly owned partitions: the latest snapshot of
    /// each schedule, then the changelog from where the partition's latest
    /// round of snapshots ends (from its start if it never had one).
    async fn assign(
        &mut self,
        tps: Vec<TopicPartition>,
        shutdown: &Shutdown,
    ) -> Result<(), ProcessorError> {
        for tp in tps.into_iter().filter(|tp| tp.topic == topics::SCHEDULES) {
            let started = Instant::now();
            let Some(snapshot_records) = self
                .read_all(topics::SCHEDULE_SNAPSHOTS, tp.partition, 0, shutdown)
                .await?
            else {
                return Ok(());
            };
            let mut snapshots = BTreeMap::new();
            let mut restore_from = 0;
            let mut unreadable = false;
            for record in &snapshot_records {
                match self.decode(record, shutdown).await {
                    Some(Event::ScheduleSnapshotted(s)) => {
                        snapshots.insert(s.schedule_id, s);
                    }
                    Some(Event::SnapshotsCheckpointed(c)) if c.partition == tp.partition => {
                        restore_from = c.restore_from;
                    }
                    Some(_) => {}
                    None => unreadable = true,
                }
            }
            if restore_from == 0 || unreadable {
                // No round ever completed here, or a snapshot this build cannot
                // read (its schedule's earlier changelog would be skipped): the
                // changelog from its start is the whole truth.
                snapshots.clear();
                restore_from = 0;
            }
            let mut worker = PartitionWorker::new(self.config.settings);
            let mut covers = BTreeMap::new();
            let from_snapshots = snapshots.len();
            for (id, s) in snapshots {
                covers.insert(id, s.covers_to);
                worker.restore_snapshot(*s.state);
            }
            let Some(changelog) = self
                .read_all(
                    topics::SCHEDULE_EVENTS,
                    tp.partition,
                    restore_from,
                    shutdown,
                )
                .await?
            else {
                return Ok(());
            };
            let mut tracker = SnapshotTracker::new();
            let mut applied = 0usize;
            for record in &changelog {
                let change = match self.decode(record, shutdown).await {
                    Some(Event::ScheduleInitialised(created)) => Change::Created(created),
                    Some(Event::ScheduleFactRecorded(f)) => Change::Fact {
                        schedule_id: f.schedule_id,
                        fact: f.fact,
                    },
                    _ => continue,
                };
                let schedule_id = match &change {
                    Change::Created(c) => c.schedule_id,
                    Change::Fact { schedule_id, .. } => *schedule_id,
                };
                // Already in the schedule's snapshot.
                if covers.get(&schedule_id).is_some_and(|c| record.offset < *c) {
                    continue;
                }
                worker.restore(&change);
                tracker.mark(&change);
                applied += 1;
            }
            tracing::info!(
                processor = %self.config.name,
                partition = tp.partition,
                snapshots = from_snapshots,
                restore_from,
                changes = applied,
                schedules = worker.schedules().count(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "partition restored"
            );
            self.workers.insert(tp.partition, worker);
            self.snapshots.insert(tp.partition, tracker);
        }
        self.owned_changed();
        Ok(())
    }

    /// Runs the rounds of snapshots that are due, after a commit or on a tick.
    async fn snapshot_due(&mut self) -> Result<(), ProcessorError> {
        let due: Vec<i32> = self
            .snapshots
            .iter()
            .filter(|(p, t)| self.workers.contains_key(p) && t.due(&self.config))
            .map(|(p, _)| *p)
            .collect();
        for partition in due {
            self.snapshot_round(partition).await?;
        }
        Ok(())
    }

    /// Writes the state of every schedule of `partition` that changed since the
    /// last round, and the checkpoint that lets a restore start at the
    /// changelog's current end, in one transaction. A round that cannot be
    /// written is skipped: restores then read more changelog, nothing else.
    async fn snapshot_round(&mut self, partition: i32) -> Result<(), ProcessorError> {
        let covers_to = match self
            .stream
            .end_offset(topics::SCHEDULE_EVENTS, partition)
            .await
        {
            Ok(o) => o,
            Err(TransportError::Closed) => return Err(ProcessorError::Fenced),
            Err(e) => {
                tracing::warn!(partition, error = %e, "changelog end unknown; snapshots postponed");
                return Ok(());
            }
        };
        let (Some(worker), Some(tracker)) =
            (self.workers.get(&partition), self.snapshots.get(&partition))
        else {
            return Ok(());
        };
        let origin = format!("snapshot/{partition}/{covers_to}");
        let now = chrono::Utc::now();
        let mut events = Vec::with_capacity(tracker.dirty.len() + 1);
        for (i, id) in tracker.dirty.iter().enumerate() {
            if let Some(state) = worker.schedule(*id) {
                events.push(Event::ScheduleSnapshotted(ScheduleSnapshotted {
                    meta: EventMeta {
                        event_id: output_id(origin.as_bytes(), i),
                        occurred_at: now,
                        actor: None,
                    },
                    schedule_id: *id,
                    covers_to,
                    state: Box::new(state.clone()),
                }));
            }
        }
        events.push(Event::SnapshotsCheckpointed(SnapshotsCheckpointed {
            meta: EventMeta {
                event_id: output_id(origin.as_bytes(), usize::MAX),
                occurred_at: now,
                actor: None,
            },
            partition,
            restore_from: covers_to,
        }));
        let mut outputs = Vec::with_capacity(events.len());
        let mut bytes = 0;
        for event in &events {
            let payload = self.encoded(event).await?;
            if payload.len() > MAX_SNAPSHOT_BYTES {
                tracing::warn!(partition, key = %event.key(), bytes = payload.len(),
                    "a snapshot is too large to write; this round is skipped");
                return Ok(());
            }
            bytes += payload.len();
            outputs.push(OutRecord {
                topic: topics::SCHEDULE_SNAPSHOTS.to_string(),
                key: event.key(),
                partition: Some(partition),
                payload,
            });
        }
        let schedules = outputs.len() - 1;
        match self.stream.commit(outputs, &[]).await {
            Ok(()) => {
                tracing::info!(processor = %self.config.name, partition, covers_to, schedules, bytes,
                    "snapshots written");
                self.snapshots.insert(partition, SnapshotTracker::new());
                Ok(())
            }
            Err(TransportError::Closed) => Err(ProcessorError::Fenced),
            Err(e) => {
                tracing::warn!(processor = %self.config.name, partition, error = %e,
                    "snapshots not written; the partition will be restored");
                Ok(())
            }
        }
    }

    /// Decodes a record; a registry outage is waited out (the record cannot be
    /// skipped), a record that can never be decoded is skipped and logged.
    async fn decode(&self, record: &Record, shutdown: &Shutdown) -> Option<Event> {
        loop {
            match self.codec.decode(&record.payload).await {
                Ok(e) => return Some(e),
                Err(CodecError::Registry(why)) if !shutdown.is_triggered() => {
                    tracing::warn!(error = %why, "schema registry unavailable; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                Err(e) => {
                    tracing::error!(topic = %record.topic, partition = record.partition, offset = record.offset,
                        error = %e, "undecodable record skipped");
                    return None;
                }
            }
        }
    }

    async fn decide_batch(
        &mut self,
        records: &[Record],
        tick: bool,
        shutdown: &Shutdown,
    ) -> Result<(), ProcessorError> {
        let started = Instant::now();
        let mut outputs = Vec::new();
        if tick {
            let now =
                chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis())
                    .expect("now is representable");
            let partitions: Vec<i32> = self.workers.keys().copied().collect();
            for partition in partitions {
                let origin = format!("tick/{partition}/{}", now.timestamp_millis());
                let envelope = Envelope {
                    command_id: CommandId::from_uuid(output_id(origin.as_bytes(), 0).as_uuid()),
                    at: now,
                    seed: rand::random(),
                    command: Command::Tick,
                };
                let out = self.worker(partition).handle(&Input::Tick(envelope));
                self.encode(partition, origin.as_bytes(), out, None, &mut outputs)
                    .await?;
            }
        }
        for record in records {
            let Some(event) = self.decode(record, shutdown).await else {
                continue;
            };
            let (input, reply_to) = match event {
                Event::ScheduleCreated(c) => (Input::Created(c), None),
                Event::ScheduleCommandIssued(c) => (
                    Input::Command {
                        schedule_id: c.schedule_id,
                        envelope: c.envelope,
                    },
                    c.reply_to,
                ),
                Event::ScheduleTicked(t) => (Input::Tick(t.envelope), None),
                other => {
                    tracing::warn!(event = other.name(), "not a schedule input; skipped");
                    continue;
                }
            };
            let out = self.worker(record.partition).handle(&input);
            tracing::trace!(partition = record.partition, offset = record.offset, input = ?input,
                changes = out.changes.len(), answer = ?out.answer.as_ref().map(|a| &a.reply), "decided");
            if let Some(answer) = &out.answer {
                self.metrics
                    .decisions
                    .with_label_values(&[outcome(&answer.reply)])
                    .inc();
            }
            let origin = format!("{}/{}/{}", record.topic, record.partition, record.offset);
            self.encode(
                record.partition,
                origin.as_bytes(),
                out,
                reply_to,
                &mut outputs,
            )
            .await?;
        }
        if outputs.is_empty() && records.is_empty() {
            return self.snapshot_due().await;
        }
        let produced = outputs.len();
        match self.stream.commit(outputs, records).await {
            Ok(()) => {
                self.metrics
                    .events_consumed
                    .with_label_values(&[topics::SCHEDULES, &self.config.name])
                    .inc_by(records.len() as u64);
                self.metrics
                    .transaction_latency
                    .with_label_values(&[&self.config.name])
                    .observe(started.elapsed().as_secs_f64());
                tracing::trace!(
                    inputs = records.len(),
                    outputs = produced,
                    "batch committed"
                );
                self.snapshot_due().await
            }
            Err(TransportError::Closed) => Err(ProcessorError::Fenced),
            Err(e) => {
                // The stream rewinds and re-assigns: state is rebuilt from the
                // changelog, which does not contain this batch.
                tracing::warn!(processor = %self.config.name, error = %e, "batch not committed; its partitions will be restored");
                Ok(())
            }
        }
    }

    /// The worker of an owned partition. Records only come for owned ones; a
    /// worker created here would be for a partition whose assignment was missed,
    /// which the stream's contract rules out, so it is logged loudly.
    fn worker(&mut self, partition: i32) -> &mut PartitionWorker {
        let settings = self.config.settings;
        self.workers.entry(partition).or_insert_with(|| {
            tracing::error!(partition, "a record of a partition that was never assigned");
            PartitionWorker::new(settings)
        })
    }

    async fn encode(
        &mut self,
        partition: i32,
        origin: &[u8],
        out: Output,
        reply_to: Option<String>,
        into: &mut Vec<OutRecord>,
    ) -> Result<(), ProcessorError> {
        let mut index = 0;
        let mut next_meta = |at| {
            index += 1;
            EventMeta {
                event_id: output_id(origin, index),
                occurred_at: at,
                actor: None,
            }
        };
        let mut events = Vec::with_capacity(out.changes.len() + 1);
        let tracker = self
            .snapshots
            .entry(partition)
            .or_insert_with(SnapshotTracker::new);
        for change in &out.changes {
            tracker.mark(change);
        }
        for change in out.changes {
            events.push(match change {
                Change::Created(created) => Event::ScheduleInitialised(created),
                Change::Fact { schedule_id, fact } => {
                    Event::ScheduleFactRecorded(ScheduleFactRecorded {
                        meta: next_meta(fact.at),
                        schedule_id,
                        fact,
                    })
                }
            });
        }
        for event in events {
            into.push(OutRecord {
                topic: topics::SCHEDULE_EVENTS.to_string(),
                key: event.key(),
                // The changelog partition has the number of its input partition:
                // that is what a restoring worker reads.
                partition: Some(partition),
                payload: self.encoded(&event).await?,
            });
        }
        if let (Some(answer), Some(reply_to)) = (out.answer, reply_to) {
            let event = Event::ScheduleCommandAnswered(ScheduleCommandAnswered {
                meta: next_meta(chrono::Utc::now()),
                schedule_id: answer.schedule_id,
                command_id: answer.command_id,
                reply_to,
                reply: answer.reply,
            });
            into.push(OutRecord {
                topic: topics::SCHEDULE_REPLIES.to_string(),
                key: event.key(),
                partition: None,
                payload: self.encoded(&event).await?,
            });
        }
        Ok(())
    }

    async fn encoded(&self, event: &Event) -> Result<Vec<u8>, ProcessorError> {
        loop {
            match self.codec.encode(event).await {
                Ok(bytes) => return Ok(bytes),
                Err(CodecError::Registry(why)) => {
                    tracing::warn!(error = %why, "schema registry unavailable; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                Err(e) => return Err(ProcessorError::Encode(e)),
            }
        }
    }
}
