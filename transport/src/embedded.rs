//! An in-process partitioned log for `ticketing dev`: Kafka's model (topics,
//! keyed partitions, dense per-partition offsets, consumer groups with committed
//! offsets) with no broker.
//!
//! # Storage
//! Records and committed offsets live in one redb file, `log.redb` under the
//! directory given to [`EmbeddedLog::open`]. redb rather than our own segment
//! files because its commits are already crash-safe (checksummed copy-on-write
//! pages, so a torn write rolls back to the last commit): there is no recovery
//! code to write and get wrong, a batch of appends and offset commits lands
//! atomically, and the workspace already depends on it. The price, a B-tree
//! insert and an fsync per commit instead of a sequential append, is paid once
//! per *batch*: one writer thread takes every append and commit queued since its
//! last transaction and commits them together (group commit), so concurrent
//! producers share fsyncs. Nothing is ever deleted: there is no retention, and
//! a dev log grows until its directory is removed.
//!
//! # Consumer groups
//! `ticketing dev` runs one consumer per group, so a group here is one consumer
//! that owns every partition of its topics; there is no rebalancing. Creating a
//! second consumer for a group while the first is alive is refused (silently
//! splitting partitions would hide the bug of two sinks sharing a group, and
//! real rebalancing belongs to Kafka). Dropping or closing the consumer frees
//! the group.

use crate::partitioner::partition_for_key;
use crate::ports::{
    Consumer, Delivered, OutRecord, Producer, Record, StreamEvent, TopicPartition,
    TransactionalStream, TransportError,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use tokio::sync::{oneshot, watch};

/// (topic, partition, offset): in key order, a partition's records are
/// contiguous and sorted by offset, so a fetch is one range scan.
type RecordKey = (&'static str, i32, i64);
/// (timestamp in ms, key, payload).
type RecordValue = (i64, Option<&'static str>, &'static [u8]);
const RECORDS: TableDefinition<RecordKey, RecordValue> = TableDefinition::new("records");
/// (group, topic, partition) → the next offset the group will read.
const COMMITTED: TableDefinition<(&str, &str, i32), i64> = TableDefinition::new("committed");
/// topic → partition count it was declared with.
const TOPICS: TableDefinition<&str, i32> = TableDefinition::new("topics");

/// Records read per partition at a time: enough to amortise a read transaction,
/// few enough that one busy partition does not buffer the whole log.
const FETCH_MAX: i64 = 256;
/// Upper bound on writes per transaction, so one huge burst does not delay the
/// first producer's acknowledgement indefinitely.
const BATCH_MAX: usize = 1024;

/// A handle on the log; clones share it.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    store: Store,
    groups: Mutex<HashMap<String, Group>>,
}

/// What the writer thread needs too (it must not hold `Inner`, whose drop is
/// what stops it).
struct Shared {
    topics: HashMap<String, Vec<Arc<Partition>>>,
    /// Bumped after every append; consumers wait on it instead of polling.
    appended: watch::Sender<u64>,
}

struct Partition {
    /// The next offset to assign. Records below it are durable and readable;
    /// it is raised only after the records are committed to the store.
    end: AtomicI64,
    /// The records themselves, in the in-memory log only.
    records: RwLock<Vec<Stored>>,
}

struct Stored {
    key: Option<String>,
    payload: Vec<u8>,
    timestamp: DateTime<Utc>,
}

#[derive(Default)]
struct Group {
    live: bool,
    committed: HashMap<(String, i32), i64>,
}

enum Store {
    Memory,
    Disk(Disk),
}

struct Disk {
    db: Arc<Database>,
    writes: Option<mpsc::Sender<Write>>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Disk {
    fn drop(&mut self) {
        // Closing the queue ends the writer after its current batch; joining it
        // releases the file, so the log can be reopened right away.
        drop(self.writes.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("embedded log writer panicked");
            }
        }
    }
}

enum Write {
    Append {
        topic: String,
        partition: i32,
        key: String,
        payload: Vec<u8>,
        timestamp_ms: i64,
        done: oneshot::Sender<Result<i64, TransportError>>,
    },
    Commit {
        group: String,
        topic: String,
        partition: i32,
        offset: i64,
        done: oneshot::Sender<Result<(), TransportError>>,
    },
    /// Appends and offset commits that land in one store transaction or not
    /// at all: a [`EmbeddedTransactionalStream`] batch.
    Transaction {
        appends: Vec<TxAppend>,
        commits: Vec<TxCommit>,
        timestamp_ms: i64,
        done: oneshot::Sender<Result<(), TransportError>>,
    },
}

struct TxAppend {
    topic: String,
    partition: i32,
    key: String,
    payload: Vec<u8>,
}

struct TxCommit {
    group: String,
    topic: String,
    partition: i32,
    offset: i64,
}

fn storage(context: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(format!("embedded log: {context}: {e}"))
}

fn now_millis() -> DateTime<Utc> {
    // Millisecond precision, as in Kafka: a record reads back equal whether it
    // came from memory or from disk.
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default()
}

fn declare(topics: &[(&str, i32)]) -> Result<HashMap<String, i32>, TransportError> {
    let mut declared = HashMap::new();
    for &(name, partitions) in topics {
        if name.is_empty() || partitions <= 0 {
            return Err(TransportError::Other(format!(
                "topic {name:?} declared with {partitions} partitions"
            )));
        }
        if let Some(previous) = declared.insert(name.to_string(), partitions) {
            if previous != partitions {
                return Err(TransportError::Other(format!(
                    "topic {name} declared twice, with {previous} and {partitions} partitions"
                )));
            }
        }
    }
    Ok(declared)
}

fn partitions_with_ends(ends: Vec<i64>) -> Vec<Arc<Partition>> {
    ends.into_iter()
        .map(|end| {
            Arc::new(Partition {
                end: AtomicI64::new(end),
                records: RwLock::new(Vec::new()),
            })
        })
        .collect()
}

impl EmbeddedLog {
    /// Opens (or creates) the durable log in `dir`, declaring `topics` with
    /// their partition counts. A topic may grow partitions between runs (keys
    /// then move, as in Kafka); shrinking is refused, since records in the
    /// dropped partitions would be stranded.
    pub fn open(dir: &Path, topics: &[(&str, i32)]) -> Result<Self, TransportError> {
        let declared = declare(topics)?;
        std::fs::create_dir_all(dir)
            .map_err(|e| storage(&format!("creating {}", dir.display()), e))?;
        let path = dir.join("log.redb");
        let db = Database::create(&path)
            .map_err(|e| storage(&format!("opening {}", path.display()), e))?;

        let mut ends: HashMap<String, Vec<i64>> = HashMap::new();
        let mut groups: HashMap<String, Group> = HashMap::new();
        let txn = db.begin_write().map_err(|e| storage("opening", e))?;
        {
            let mut meta = txn.open_table(TOPICS).map_err(|e| storage("opening", e))?;
            let records = txn.open_table(RECORDS).map_err(|e| storage("opening", e))?;
            let committed = txn
                .open_table(COMMITTED)
                .map_err(|e| storage("opening", e))?;
            for (name, &partitions) in &declared {
                let stored = meta
                    .get(name.as_str())
                    .map_err(|e| storage("reading topics", e))?
                    .map(|v| v.value());
                match stored {
                    Some(before) if before > partitions => {
                        return Err(TransportError::Other(format!(
                            "topic {name} has {before} partitions in {}, but is declared with {partitions}: \
                             records in the missing partitions would be stranded",
                            path.display()
                        )));
                    }
                    Some(before) if before < partitions => {
                        tracing::warn!(topic = %name, before, after = partitions,
                            "embedded log topic grew partitions; keys may now map to other partitions");
                    }
                    _ => {}
                }
                if stored != Some(partitions) {
                    meta.insert(name.as_str(), partitions)
                        .map_err(|e| storage("writing topics", e))?;
                }
                let mut topic_ends = Vec::with_capacity(partitions as usize);
                for p in 0..partitions {
                    let last = records
                        .range((name.as_str(), p, 0)..=(name.as_str(), p, i64::MAX))
                        .map_err(|e| storage("reading records", e))?
                        .next_back()
                        .transpose()
                        .map_err(|e| storage("reading records", e))?
                        .map(|(k, _)| k.value().2);
                    topic_ends.push(last.map_or(0, |offset| offset + 1));
                }
                ends.insert(name.clone(), topic_ends);
            }
            for entry in committed
                .iter()
                .map_err(|e| storage("reading offsets", e))?
            {
                let (k, v) = entry.map_err(|e| storage("reading offsets", e))?;
                let (group, topic, partition) = k.value();
                if declared.contains_key(topic) {
                    groups
                        .entry(group.to_string())
                        .or_default()
                        .committed
                        .insert((topic.to_string(), partition), v.value());
                }
            }
        }
        txn.commit().map_err(|e| storage("opening", e))?;

        let records: i64 = ends.values().flatten().sum();
        let shared = Arc::new(Shared {
            topics: ends
                .into_iter()
                .map(|(name, e)| (name, partitions_with_ends(e)))
                .collect(),
            appended: watch::Sender::new(0),
        });
        let db = Arc::new(db);
        let (writes, queue) = mpsc::channel();
        let writer = {
            let (db, shared) = (db.clone(), shared.clone());
            std::thread::Builder::new()
                .name("embedded-log-writer".into())
                .spawn(move || write_loop(&db, &shared, &queue))
                .map_err(|e| storage("starting the writer", e))?
        };
        tracing::info!(path = %path.display(), topics = declared.len(), records, groups = groups.len(),
            "embedded log opened");
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                store: Store::Disk(Disk {
                    db,
                    writes: Some(writes),
                    writer: Some(writer),
                }),
                groups: Mutex::new(groups),
            }),
        })
    }

    /// A log that lives only as long as its handles, for tests.
    ///
    /// # Panics
    /// On an invalid declaration (an empty name, a partition count below 1, or
    /// one topic declared with two counts): that is a bug in the caller.
    pub fn in_memory(topics: &[(&str, i32)]) -> Self {
        let declared = declare(topics).expect("valid topic declarations");
        let shared = Arc::new(Shared {
            topics: declared
                .into_iter()
                .map(|(name, partitions)| {
                    (name, partitions_with_ends(vec![0; partitions as usize]))
                })
                .collect(),
            appended: watch::Sender::new(0),
        });
        Self {
            inner: Arc::new(Inner {
                shared,
                store: Store::Memory,
                groups: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A producer; cheap, and clones share the log.
    pub fn producer(&self) -> EmbeddedProducer {
        EmbeddedProducer {
            inner: self.inner.clone(),
        }
    }

    /// The consumer of `group`, reading every partition of `topics` from the
    /// group's committed offsets (from the start where it has none). Fails if
    /// a topic is not declared or the group already has a live consumer.
    pub fn consumer(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<EmbeddedConsumer, TransportError> {
        let mut assigned = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for &topic in topics {
            if names.contains(&topic) {
                continue;
            }
            names.push(topic);
            self.inner.partitions(topic)?;
        }
        let mut groups = self.inner.groups.lock();
        let state = groups.entry(group.to_string()).or_default();
        if state.live {
            return Err(TransportError::Other(format!(
                "consumer group {group} already has a consumer: the embedded log serves one consumer per group"
            )));
        }
        state.live = true;
        for topic in names {
            for (p, partition) in self.inner.partitions(topic)?.iter().enumerate() {
                let p = p as i32;
                let from = state
                    .committed
                    .get(&(topic.to_string(), p))
                    .copied()
                    .unwrap_or(0);
                assigned.push(Assigned {
                    topic: topic.to_string(),
                    partition: p,
                    log: partition.clone(),
                    fetched: from,
                    buffer: VecDeque::new(),
                });
            }
        }
        tracing::debug!(group, topics = ?topics, partitions = assigned.len(), "embedded consumer joined");
        Ok(EmbeddedConsumer {
            inner: self.inner.clone(),
            group: group.to_string(),
            assigned,
            cursor: 0,
            appended: self.inner.shared.appended.subscribe(),
            closed: false,
        })
    }

    /// A reader of what is appended to `topics` from now on, on every
    /// partition: for a live view, where every reader sees everything. It is
    /// a group of its own and has nothing to commit.
    pub fn tail(&self, topics: &[&str]) -> Result<EmbeddedConsumer, TransportError> {
        static TAILS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = TAILS.fetch_add(1, Ordering::Relaxed);
        let mut consumer = self.consumer(&format!("tail-{n}"), topics)?;
        for a in &mut consumer.assigned {
            a.fetched = a.log.end.load(Ordering::Acquire);
        }
        Ok(consumer)
    }

    /// The next offset of each partition of `topic` (empty if undeclared): the
    /// high watermark, for lag metrics.
    pub fn end_offsets(&self, topic: &str) -> Vec<i64> {
        self.inner
            .shared
            .topics
            .get(topic)
            .map(|ps| ps.iter().map(|p| p.end.load(Ordering::Acquire)).collect())
            .unwrap_or_default()
    }

    /// The committed offset of `group` on each partition of `topic` (0 where it
    /// committed nothing; empty if the topic is undeclared).
    pub fn committed_offsets(&self, group: &str, topic: &str) -> Vec<i64> {
        let n = self.end_offsets(topic).len() as i32;
        let groups = self.inner.groups.lock();
        (0..n)
            .map(|p| {
                groups
                    .get(group)
                    .and_then(|g| g.committed.get(&(topic.to_string(), p)))
                    .copied()
                    .unwrap_or(0)
            })
            .collect()
    }
}

impl Inner {
    fn partitions(&self, topic: &str) -> Result<&[Arc<Partition>], TransportError> {
        self.shared
            .topics
            .get(topic)
            .map(Vec::as_slice)
            .ok_or_else(|| TransportError::UnknownTopic(topic.to_string()))
    }

    async fn append(&self, record: OutRecord) -> Result<Delivered, TransportError> {
        let partitions = self.partitions(&record.topic)?;
        let partition = match record.partition {
            None => partition_for_key(record.key.as_bytes(), partitions.len() as i32),
            Some(p) if (0..partitions.len() as i32).contains(&p) => p,
            Some(p) => {
                return Err(TransportError::Other(format!(
                    "{} has no partition {p}",
                    record.topic
                )))
            }
        };
        let timestamp = now_millis();
        let offset = match &self.store {
            Store::Memory => {
                let log = &partitions[partition as usize];
                let mut records = log.records.write();
                let offset = records.len() as i64;
                records.push(Stored {
                    key: Some(record.key),
                    payload: record.payload,
                    timestamp,
                });
                log.end.store(offset + 1, Ordering::Release);
                drop(records);
                self.shared.appended.send_modify(|n| *n = n.wrapping_add(1));
                offset
            }
            Store::Disk(disk) => {
                let (done, acked) = oneshot::channel();
                let write = Write::Append {
                    topic: record.topic,
                    partition,
                    key: record.key,
                    payload: record.payload,
                    timestamp_ms: timestamp.timestamp_millis(),
                    done,
                };
                disk.send(write)?;
                acked.await.map_err(|_| writer_gone())??
            }
        };
        Ok(Delivered { partition, offset })
    }

    fn partition_of(&self, record: &OutRecord) -> Result<i32, TransportError> {
        let partitions = self.partitions(&record.topic)?;
        match record.partition {
            None => Ok(partition_for_key(
                record.key.as_bytes(),
                partitions.len() as i32,
            )),
            Some(p) if (0..partitions.len() as i32).contains(&p) => Ok(p),
            Some(p) => Err(TransportError::Other(format!(
                "{} has no partition {p}",
                record.topic
            ))),
        }
    }

    /// Appends `outputs` and commits `offsets` (topic, partition, next offset)
    /// for `group`, atomically.
    async fn transact(
        &self,
        group: &str,
        outputs: Vec<OutRecord>,
        offsets: Vec<(String, i32, i64)>,
    ) -> Result<(), TransportError> {
        let mut appends = Vec::with_capacity(outputs.len());
        for record in outputs {
            let partition = self.partition_of(&record)?;
            appends.push(TxAppend {
                topic: record.topic,
                partition,
                key: record.key,
                payload: record.payload,
            });
        }
        let timestamp = now_millis();
        match &self.store {
            Store::Memory => {
                for a in appends {
                    let log = &self.shared.topics[&a.topic][a.partition as usize];
                    let mut records = log.records.write();
                    records.push(Stored {
                        key: Some(a.key),
                        payload: a.payload,
                        timestamp,
                    });
                    log.end.store(records.len() as i64, Ordering::Release);
                }
            }
            Store::Disk(disk) => {
                let (done, acked) = oneshot::channel();
                disk.send(Write::Transaction {
                    appends,
                    commits: offsets
                        .iter()
                        .map(|(topic, partition, offset)| TxCommit {
                            group: group.to_string(),
                            topic: topic.clone(),
                            partition: *partition,
                            offset: *offset,
                        })
                        .collect(),
                    timestamp_ms: timestamp.timestamp_millis(),
                    done,
                })?;
                acked.await.map_err(|_| writer_gone())??;
            }
        }
        let mut groups = self.groups.lock();
        let state = groups.entry(group.to_string()).or_default();
        for (topic, partition, offset) in offsets {
            state.committed.insert((topic, partition), offset);
        }
        drop(groups);
        self.shared.appended.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    async fn read(
        &self,
        topic: &str,
        log: &Partition,
        partition: i32,
        from: i64,
    ) -> Result<Vec<Record>, TransportError> {
        let to = log.end.load(Ordering::Acquire).min(from + FETCH_MAX);
        if from >= to {
            return Ok(Vec::new());
        }
        match &self.store {
            Store::Memory => {
                let records = log.records.read();
                Ok(records[from as usize..to as usize]
                    .iter()
                    .zip(from..)
                    .map(|(s, offset)| Record {
                        topic: topic.to_string(),
                        partition,
                        offset,
                        key: s.key.clone(),
                        payload: s.payload.clone(),
                        timestamp: s.timestamp,
                    })
                    .collect())
            }
            Store::Disk(disk) => {
                let db = disk.db.clone();
                let topic = topic.to_string();
                tokio::task::spawn_blocking(move || read_disk(&db, &topic, partition, from, to))
                    .await
                    .map_err(|e| storage("reading", e))?
            }
        }
    }

    async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), TransportError> {
        if let Store::Disk(disk) = &self.store {
            let (done, acked) = oneshot::channel();
            disk.send(Write::Commit {
                group: group.to_string(),
                topic: topic.to_string(),
                partition,
                offset,
                done,
            })?;
            acked.await.map_err(|_| writer_gone())??;
        }
        self.groups
            .lock()
            .entry(group.to_string())
            .or_default()
            .committed
            .insert((topic.to_string(), partition), offset);
        Ok(())
    }
}

fn writer_gone() -> TransportError {
    TransportError::Unavailable("embedded log writer stopped".into())
}

impl Disk {
    fn send(&self, write: Write) -> Result<(), TransportError> {
        self.writes
            .as_ref()
            .ok_or_else(writer_gone)?
            .send(write)
            .map_err(|_| writer_gone())
    }
}

fn read_disk(
    db: &Database,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
) -> Result<Vec<Record>, TransportError> {
    let txn = db.begin_read().map_err(|e| storage("reading", e))?;
    let table = txn.open_table(RECORDS).map_err(|e| storage("reading", e))?;
    let mut out = Vec::with_capacity((to - from) as usize);
    for entry in table
        .range((topic, partition, from)..(topic, partition, to))
        .map_err(|e| storage("reading", e))?
    {
        let (k, v) = entry.map_err(|e| storage("reading", e))?;
        let (_, _, offset) = k.value();
        let (timestamp_ms, key, payload) = v.value();
        out.push(Record {
            topic: topic.to_string(),
            partition,
            offset,
            key: key.map(str::to_string),
            payload: payload.to_vec(),
            timestamp: DateTime::from_timestamp_millis(timestamp_ms).unwrap_or_default(),
        });
    }
    if out.len() as i64 != to - from {
        // Offsets below `end` were committed before `end` moved: a hole means
        // the file was changed behind our back.
        return Err(TransportError::Other(format!(
            "embedded log: {topic}/{partition} is missing records in [{from}, {to})"
        )));
    }
    Ok(out)
}

fn write_loop(db: &Database, shared: &Shared, queue: &mpsc::Receiver<Write>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match queue.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        match write_batch(db, shared, &batch) {
            Ok((ends, offsets)) => {
                // Publish the new ends before acknowledging, so that whoever
                // learns of an offset can also read it.
                for ((topic, partition), end) in &ends {
                    shared.topics[*topic][*partition as usize]
                        .end
                        .store(*end, Ordering::Release);
                }
                let appended = !ends.is_empty();
                let mut offsets = offsets.into_iter();
                for write in batch {
                    match write {
                        Write::Append { done, .. } => {
                            let offset = offsets.next().expect("one offset per append");
                            let _ = done.send(Ok(offset));
                        }
                        Write::Commit { done, .. } | Write::Transaction { done, .. } => {
                            let _ = done.send(Ok(()));
                        }
                    }
                }
                if appended {
                    shared.appended.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "embedded log write failed");
                for write in batch {
                    let error = || storage("writing", &e);
                    match write {
                        Write::Append { done, .. } => {
                            let _ = done.send(Err(error()));
                        }
                        Write::Commit { done, .. } | Write::Transaction { done, .. } => {
                            let _ = done.send(Err(error()));
                        }
                    }
                }
            }
        }
    }
}

type BatchOutcome<'a> = (HashMap<(&'a str, i32), i64>, Vec<i64>);

/// Writes a batch in one transaction; returns the new partition ends and the
/// offset of each append, in order.
fn write_batch<'a>(
    db: &Database,
    shared: &Shared,
    batch: &'a [Write],
) -> Result<BatchOutcome<'a>, redb::Error> {
    let mut ends: HashMap<(&str, i32), i64> = HashMap::new();
    let mut offsets = Vec::with_capacity(batch.len());
    let txn = db.begin_write()?;
    {
        let mut records = txn.open_table(RECORDS)?;
        let mut committed = txn.open_table(COMMITTED)?;
        for write in batch {
            match write {
                Write::Append {
                    topic,
                    partition,
                    key,
                    payload,
                    timestamp_ms,
                    ..
                } => {
                    // Only this thread moves `end`, so it is the next free offset.
                    let end = ends.entry((topic.as_str(), *partition)).or_insert_with(|| {
                        shared.topics[topic][*partition as usize]
                            .end
                            .load(Ordering::Acquire)
                    });
                    records.insert(
                        (topic.as_str(), *partition, *end),
                        (*timestamp_ms, Some(key.as_str()), payload.as_slice()),
                    )?;
                    offsets.push(*end);
                    *end += 1;
                }
                Write::Commit {
                    group,
                    topic,
                    partition,
                    offset,
                    ..
                } => {
                    committed.insert((group.as_str(), topic.as_str(), *partition), *offset)?;
                }
                Write::Transaction {
                    appends,
                    commits,
                    timestamp_ms,
                    ..
                } => {
                    // The whole batch is one redb transaction, so these land
                    // together with everything else in it, or not at all.
                    for a in appends {
                        let end =
                            ends.entry((a.topic.as_str(), a.partition))
                                .or_insert_with(|| {
                                    shared.topics[&a.topic][a.partition as usize]
                                        .end
                                        .load(Ordering::Acquire)
                                });
                        records.insert(
                            (a.topic.as_str(), a.partition, *end),
                            (*timestamp_ms, Some(a.key.as_str()), a.payload.as_slice()),
                        )?;
                        *end += 1;
                    }
                    for c in commits {
                        committed
                            .insert((c.group.as_str(), c.topic.as_str(), c.partition), c.offset)?;
                    }
                }
            }
        }
    }
    // redb's default durability is Immediate: `commit` returns after fsync.
    txn.commit()?;
    Ok((ends, offsets))
}

/// Appends to the embedded log. `send` returns once the record is durable
/// (synced to disk, or in memory for [`EmbeddedLog::in_memory`]). Dropping a
/// pending `send` does not withdraw the record.
#[derive(Clone)]
pub struct EmbeddedProducer {
    inner: Arc<Inner>,
}

#[async_trait]
impl Producer for EmbeddedProducer {
    async fn send(&self, record: OutRecord) -> Result<Delivered, TransportError> {
        let topic = record.topic.clone();
        let delivered = self.inner.append(record).await?;
        tracing::trace!(topic = %topic, partition = delivered.partition, offset = delivered.offset, "appended");
        Ok(delivered)
    }
}

struct Assigned {
    topic: String,
    partition: i32,
    log: Arc<Partition>,
    /// The next offset to read from the log (the buffer holds what was read
    /// but not yet handed out).
    fetched: i64,
    buffer: VecDeque<Record>,
}

/// The one consumer of a group: every partition of its topics, served round
/// robin one record at a time, so a busy partition does not starve the others.
pub struct EmbeddedConsumer {
    inner: Arc<Inner>,
    group: String,
    assigned: Vec<Assigned>,
    cursor: usize,
    appended: watch::Receiver<u64>,
    closed: bool,
}

impl EmbeddedConsumer {
    /// Per partition: the records appended but not committed by this group.
    pub fn lag(&self) -> Vec<(String, i32, i64)> {
        let groups = self.inner.groups.lock();
        let committed = groups.get(&self.group).map(|g| &g.committed);
        self.assigned
            .iter()
            .map(|a| {
                let done = committed
                    .and_then(|c| c.get(&(a.topic.clone(), a.partition)))
                    .copied()
                    .unwrap_or(0);
                let end = a.log.end.load(Ordering::Acquire);
                (a.topic.clone(), a.partition, (end - done).max(0))
            })
            .collect()
    }

    /// The next record of the first partition, from the cursor on, that has one.
    async fn next_ready(&mut self) -> Result<Option<Record>, TransportError> {
        let n = self.assigned.len();
        for step in 0..n {
            let i = (self.cursor + step) % n;
            if self.assigned[i].buffer.is_empty() {
                let a = &self.assigned[i];
                if a.fetched >= a.log.end.load(Ordering::Acquire) {
                    continue;
                }
                let read = self
                    .inner
                    .read(&a.topic, &a.log, a.partition, a.fetched)
                    .await?;
                // No await from here on: a recv cancelled during the read above
                // leaves `fetched` and the buffer as they were.
                let a = &mut self.assigned[i];
                a.fetched += read.len() as i64;
                a.buffer.extend(read);
            }
            if let Some(record) = self.assigned[i].buffer.pop_front() {
                self.cursor = (i + 1) % n;
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    fn release(&mut self) {
        if !self.closed {
            self.closed = true;
            if let Some(group) = self.inner.groups.lock().get_mut(&self.group) {
                group.live = false;
            }
        }
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn recv(&mut self) -> Result<Record, TransportError> {
        loop {
            if self.closed {
                return Err(TransportError::Closed);
            }
            // Mark the current version seen *before* looking, so an append
            // racing with the look still wakes the wait below.
            self.appended.borrow_and_update();
            if let Some(record) = self.next_ready().await? {
                return Ok(record);
            }
            if self.appended.changed().await.is_err() {
                return Err(TransportError::Closed);
            }
        }
    }

    async fn commit(&mut self, record: &Record) -> Result<(), TransportError> {
        if self.closed {
            return Err(TransportError::Closed);
        }
        if !self
            .assigned
            .iter()
            .any(|a| a.topic == record.topic && a.partition == record.partition)
        {
            return Err(TransportError::Other(format!(
                "{}/{} is not read by consumer group {}",
                record.topic, record.partition, self.group
            )));
        }
        self.inner
            .commit(
                &self.group,
                &record.topic,
                record.partition,
                record.offset + 1,
            )
            .await
    }

    /// Commits are synchronous here, so closing only frees the group.
    async fn close(&mut self) -> Result<(), TransportError> {
        self.release();
        Ok(())
    }

    async fn lag(&self) -> Result<Vec<(String, i32, i64)>, TransportError> {
        Ok(EmbeddedConsumer::lag(self))
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        self.release();
    }
}

impl EmbeddedLog {
    /// The transactional member of `group` over every partition of `topics`
    /// (see [`TransactionalStream`]). Like [`EmbeddedLog::consumer`], one
    /// member per group: there is no rebalancing here, so its first event
    /// assigns it everything.
    pub fn transactional_stream(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<EmbeddedTransactionalStream, TransportError> {
        let consumer = self.consumer(group, topics)?;
        let owned = consumer
            .assigned
            .iter()
            .map(|a| TopicPartition {
                topic: a.topic.clone(),
                partition: a.partition,
            })
            .collect();
        Ok(EmbeddedTransactionalStream {
            consumer,
            events: VecDeque::from([StreamEvent::Assigned(owned)]),
        })
    }
}

/// Consume-decide-produce over the embedded log: a batch's outputs and its
/// input offsets are one store transaction (see [`TransactionalStream`]).
pub struct EmbeddedTransactionalStream {
    /// Its reading half: the group's one consumer, whose position this stream
    /// moves and rewinds.
    consumer: EmbeddedConsumer,
    events: VecDeque<StreamEvent>,
}

impl EmbeddedTransactionalStream {
    fn log_of(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, TransportError> {
        self.consumer
            .inner
            .partitions(topic)?
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| TransportError::Other(format!("{topic} has no partition {partition}")))
    }

    fn owned(&self) -> Vec<TopicPartition> {
        self.consumer
            .assigned
            .iter()
            .map(|a| TopicPartition {
                topic: a.topic.clone(),
                partition: a.partition,
            })
            .collect()
    }

    /// Back to the last commit: what was handed out since is handed out again,
    /// after the processor has rebuilt its state.
    fn rewind(&mut self) {
        let committed = self
            .consumer
            .inner
            .groups
            .lock()
            .get(&self.consumer.group)
            .map(|g| g.committed.clone())
            .unwrap_or_default();
        for a in &mut self.consumer.assigned {
            a.fetched = committed
                .get(&(a.topic.clone(), a.partition))
                .copied()
                .unwrap_or(0);
            a.buffer.clear();
        }
        let owned = self.owned();
        self.events.push_back(StreamEvent::Revoked(owned.clone()));
        self.events.push_back(StreamEvent::Assigned(owned));
    }
}

#[async_trait]
impl TransactionalStream for EmbeddedTransactionalStream {
    async fn next(
        &mut self,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<StreamEvent, TransportError> {
        if let Some(event) = self.events.pop_front() {
            return Ok(event);
        }
        if self.consumer.closed {
            return Err(TransportError::Closed);
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut batch = Vec::new();
        loop {
            self.consumer.appended.borrow_and_update();
            while batch.len() < max.max(1) {
                match self.consumer.next_ready().await? {
                    Some(record) => batch.push(record),
                    None => break,
                }
            }
            if !batch.is_empty() {
                return Ok(StreamEvent::Records(batch));
            }
            match tokio::time::timeout_at(deadline, self.consumer.appended.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(TransportError::Closed),
                Err(_) => return Ok(StreamEvent::Records(batch)),
            }
        }
    }

    async fn commit(
        &mut self,
        outputs: Vec<OutRecord>,
        consumed: &[Record],
    ) -> Result<(), TransportError> {
        if self.consumer.closed {
            return Err(TransportError::Closed);
        }
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        for r in consumed {
            let e = next.entry((r.topic.clone(), r.partition)).or_insert(0);
            *e = (*e).max(r.offset + 1);
        }
        let offsets = next.into_iter().map(|((t, p), o)| (t, p, o)).collect();
        let result = self
            .consumer
            .inner
            .transact(&self.consumer.group, outputs, offsets)
            .await;
        if result.is_err() {
            self.rewind();
        }
        result
    }

    async fn read_partition(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
    ) -> Result<Vec<Record>, TransportError> {
        let inner = &self.consumer.inner;
        let log = self.log_of(topic, partition)?;
        let end = log.end.load(Ordering::Acquire);
        let from = from.clamp(0, end);
        let mut out = Vec::with_capacity((end - from) as usize);
        while from + (out.len() as i64) < end {
            let chunk = inner
                .read(topic, &log, partition, from + out.len() as i64)
                .await?;
            if chunk.is_empty() {
                break;
            }
            out.extend(chunk);
        }
        out.truncate((end - from) as usize);
        Ok(out)
    }

    async fn end_offset(&mut self, topic: &str, partition: i32) -> Result<i64, TransportError> {
        Ok(self.log_of(topic, partition)?.end.load(Ordering::Acquire))
    }

    async fn close(&mut self) -> Result<(), TransportError> {
        self.consumer.release();
        Ok(())
    }

    async fn lag(&self) -> Result<Vec<(String, i32, i64)>, TransportError> {
        Ok(self.consumer.lag())
    }
}

#[cfg(test)]
mod tests;
