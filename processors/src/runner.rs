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
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use thiserror::Error;
use ticketing_domain::events::{Event, EventMeta, ScheduleCommandAnswered, ScheduleFactRecorded};
use ticketing_domain::ids::{CommandId, EventId};
use ticketing_domain::schedule::{Command, Envelope, Reply, Settings};
use ticketing_runtime::shutdown::Shutdown;
use ticketing_runtime::Metrics;
use ticketing_schemas::{topics, CodecError, EventCodec};
use ticketing_transport::{
    OutRecord, Record, StreamEvent, TopicPartition, TransactionalStream, TransportError,
};
use uuid::Uuid;

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
}

impl ProcessorConfig {
    pub fn new(name: impl Into<String>, settings: Settings) -> Self {
        Self {
            name: name.into(),
            settings,
            batch_max: 500,
            tick_every: Duration::from_millis(500),
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

/// How long to wait before trying a failed transport or registry call again.
const RETRY_AFTER: Duration = Duration::from_millis(250);
const LAG_EVERY: Duration = Duration::from_secs(5);

/// A deterministic id for the `index`-th output of an input: a decision that is
/// redone after an aborted transaction produces the same event ids.
fn output_id(origin: &[u8], index: usize) -> EventId {
    let mut h = Sha256::new();
    h.update(origin);
    h.update((index as u64).to_be_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&h.finalize()[..16]);
    EventId::from_uuid(Uuid::new_v8(bytes))
}

fn outcome(reply: &Reply) -> &'static str {
    match reply {
        Reply::Queue(_) => "queue",
        Reply::Left => "left",
        Reply::Held { .. } => "held",
        Reply::Released => "released",
        Reply::Rejected(_) => "rejected",
        Reply::UnknownSchedule => "unknown_schedule",
        Reply::None => "none",
    }
}

pub struct ScheduleProcessor<S> {
    stream: S,
    codec: EventCodec,
    config: ProcessorConfig,
    metrics: Metrics,
    workers: BTreeMap<i32, PartitionWorker>,
}

impl<S: TransactionalStream> ScheduleProcessor<S> {
    pub fn new(stream: S, codec: EventCodec, config: ProcessorConfig, metrics: Metrics) -> Self {
        Self {
            stream,
            codec,
            config,
            metrics,
            workers: BTreeMap::new(),
        }
    }

    /// Runs until shutdown (Ok) or until fenced.
    pub async fn run(mut self, shutdown: Shutdown) -> Result<(), ProcessorError> {
        let mut next_tick = Instant::now() + self.config.tick_every;
        let mut next_lag = Instant::now() + LAG_EVERY;
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
                    tracing::warn!(processor = %self.config.name, error = %e, "the log is unavailable; retrying");
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

    /// Rebuilds the workers of newly owned partitions from their changelog.
    async fn assign(
        &mut self,
        tps: Vec<TopicPartition>,
        shutdown: &Shutdown,
    ) -> Result<(), ProcessorError> {
        for tp in tps.into_iter().filter(|tp| tp.topic == topics::SCHEDULES) {
            let started = Instant::now();
            let changelog = loop {
                match self
                    .stream
                    .read_partition(topics::SCHEDULE_EVENTS, tp.partition)
                    .await
                {
                    Ok(records) => break records,
                    Err(TransportError::Closed) => return Err(ProcessorError::Fenced),
                    Err(e) => {
                        tracing::warn!(partition = tp.partition, error = %e, "changelog unreadable; retrying");
                        if shutdown.is_triggered() {
                            return Ok(());
                        }
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                }
            };
            let mut worker = PartitionWorker::new(self.config.settings);
            let mut applied = 0usize;
            for record in &changelog {
                match self.decode(record, shutdown).await {
                    Some(Event::ScheduleInitialised(created)) => {
                        worker.restore(&Change::Created(created));
                        applied += 1;
                    }
                    Some(Event::ScheduleFactRecorded(f)) => {
                        worker.restore(&Change::Fact {
                            schedule_id: f.schedule_id,
                            fact: f.fact,
                        });
                        applied += 1;
                    }
                    _ => {}
                }
            }
            tracing::info!(
                processor = %self.config.name,
                partition = tp.partition,
                changes = applied,
                schedules = worker.schedules().count(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "partition restored from its changelog"
            );
            self.workers.insert(tp.partition, worker);
        }
        self.owned_changed();
        Ok(())
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
            return Ok(());
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
                Ok(())
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
        &self,
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
