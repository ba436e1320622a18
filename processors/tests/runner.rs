//! The processor loop against a scripted in-memory stream that keeps the
//! transactional contract (outputs and offsets commit together, a failed
//! commit rewinds and re-assigns): crashes, failed commits and redeliveries
//! never lose or double a decision.

use async_trait::async_trait;
use chrono::{DateTime, Duration as Span, Utc};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use ticketing_domain::events::{Event, EventMeta, ScheduleCommandIssued, ScheduleCreated};
use ticketing_domain::ids::*;
use ticketing_domain::schedule::{
    CancelReason, Command, Envelope, FactKind, Reply, SeatRef, Settings,
};
use ticketing_processors::{ProcessorConfig, ScheduleProcessor};
use ticketing_runtime::shutdown;
use ticketing_runtime::Metrics;
use ticketing_schemas::{topics, EmbeddedSchemaRegistry, EventCodec};
use ticketing_transport::{
    OutRecord, Record, StreamEvent, TopicPartition, TransactionalStream, TransportError,
};
use uuid::Uuid;

/// The log as the test sees it: one input partition, the committed outputs,
/// and the committed input offset.
#[derive(Default)]
struct Log {
    inputs: Vec<Vec<u8>>,
    committed_offset: i64,
    changelog: Vec<Vec<u8>>,
    replies: Vec<Vec<u8>>,
    snapshots: Vec<Vec<u8>>,
    /// Every partition read: (topic, from).
    reads: Vec<(String, i64)>,
    /// Commits to fail, counted down.
    fail_commits: usize,
    commits: usize,
}

struct ScriptedStream {
    log: Arc<Mutex<Log>>,
    position: i64,
    events: VecDeque<StreamEvent>,
}

fn p0() -> TopicPartition {
    TopicPartition {
        topic: topics::SCHEDULES.into(),
        partition: 0,
    }
}

impl ScriptedStream {
    /// A member that just joined: it owns partition 0 from the committed offset.
    fn join(log: Arc<Mutex<Log>>) -> Self {
        let position = log.lock().committed_offset;
        Self {
            log,
            position,
            events: VecDeque::from([StreamEvent::Assigned(vec![p0()])]),
        }
    }
}

fn record(topic: &str, offset: i64, payload: &[u8]) -> Record {
    Record {
        topic: topic.into(),
        partition: 0,
        offset,
        key: None,
        payload: payload.to_vec(),
        timestamp: Utc::now(),
    }
}

#[async_trait]
impl TransactionalStream for ScriptedStream {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<StreamEvent, TransportError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(e);
        }
        let batch: Vec<Record> = {
            let log = self.log.lock();
            log.inputs
                .iter()
                .enumerate()
                .skip(self.position as usize)
                .take(max.min(3))
                .map(|(i, p)| record(topics::SCHEDULES, i as i64, p))
                .collect()
        };
        if batch.is_empty() {
            tokio::time::sleep(wait.min(Duration::from_millis(20))).await;
        }
        self.position += batch.len() as i64;
        Ok(StreamEvent::Records(batch))
    }

    async fn commit(
        &mut self,
        outputs: Vec<OutRecord>,
        consumed: &[Record],
    ) -> Result<(), TransportError> {
        let mut log = self.log.lock();
        if log.fail_commits > 0 {
            log.fail_commits -= 1;
            self.position = log.committed_offset;
            self.events.push_back(StreamEvent::Revoked(vec![p0()]));
            self.events.push_back(StreamEvent::Assigned(vec![p0()]));
            return Err(TransportError::Unavailable("scripted failure".into()));
        }
        log.commits += 1;
        for o in outputs {
            assert!(
                o.partition == Some(0) || o.topic == topics::SCHEDULE_REPLIES,
                "changelog on the input's partition"
            );
            match o.topic.as_str() {
                topics::SCHEDULE_EVENTS => log.changelog.push(o.payload),
                topics::SCHEDULE_REPLIES => log.replies.push(o.payload),
                topics::SCHEDULE_SNAPSHOTS => log.snapshots.push(o.payload),
                other => panic!("unexpected output topic {other}"),
            }
        }
        if let Some(last) = consumed.iter().map(|r| r.offset).max() {
            log.committed_offset = last + 1;
        }
        Ok(())
    }

    async fn read_partition(
        &mut self,
        topic: &str,
        _partition: i32,
        from: i64,
    ) -> Result<Vec<Record>, TransportError> {
        let mut log = self.log.lock();
        log.reads.push((topic.to_string(), from));
        let source = match topic {
            topics::SCHEDULE_EVENTS => &log.changelog,
            topics::SCHEDULE_SNAPSHOTS => &log.snapshots,
            other => panic!("read of {other}"),
        };
        Ok(source
            .iter()
            .enumerate()
            .skip(from as usize)
            .map(|(i, p)| record(topic, i as i64, p))
            .collect())
    }

    async fn end_offset(&mut self, topic: &str, _partition: i32) -> Result<i64, TransportError> {
        assert_eq!(topic, topics::SCHEDULE_EVENTS);
        Ok(self.log.lock().changelog.len() as i64)
    }

    async fn close(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    async fn lag(&self) -> Result<Vec<(String, i32, i64)>, TransportError> {
        Ok(vec![])
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

fn meta(at: DateTime<Utc>) -> EventMeta {
    EventMeta {
        event_id: EventId::from_uuid(Uuid::now_v7()),
        occurred_at: at,
        actor: None,
    }
}

struct Fixture {
    codec: EventCodec,
    log: Arc<Mutex<Log>>,
    schedule: ScheduleId,
    at: DateTime<Utc>,
}

impl Fixture {
    async fn new(rows: u16, cols: u16) -> Self {
        let codec = EventCodec::start(Arc::new(EmbeddedSchemaRegistry::in_memory()))
            .await
            .unwrap();
        let at = t0();
        let schedule = ScheduleId::from_uuid(Uuid::now_v7());
        let created = Event::ScheduleCreated(ScheduleCreated {
            meta: meta(at),
            schedule_id: schedule,
            concert_id: ConcertId::from_uuid(Uuid::now_v7()),
            seller_id: UserId::from_uuid(Uuid::now_v7()),
            stage_id: StageId::from_uuid(Uuid::now_v7()),
            rows,
            cols,
            price: 10,
            concert_date: "2030-02-01".parse().unwrap(),
            concert_time: "19:00:00".parse().unwrap(),
            sale_opens_at: None,
        });
        let f = Self {
            codec,
            log: Arc::default(),
            schedule,
            at,
        };
        f.push(&created).await;
        f
    }

    async fn push(&self, e: &Event) {
        let bytes = self.codec.encode(e).await.unwrap();
        self.log.lock().inputs.push(bytes);
    }

    async fn command(&self, id: u128, command: Command) {
        self.push(&Event::ScheduleCommandIssued(ScheduleCommandIssued {
            meta: meta(self.at),
            schedule_id: self.schedule,
            envelope: Envelope {
                command_id: CommandId::from_uuid(Uuid::from_u128(id)),
                at: self.at + Span::milliseconds(id as i64),
                seed: 7,
                command,
            },
            reply_to: Some("test".into()),
        }))
        .await;
    }

    /// Runs one processor member until every input is committed.
    async fn run_until_caught_up(&self, settings: Settings) {
        self.run_with(ProcessorConfig::new("test", settings)).await
    }

    async fn run_with(&self, config: ProcessorConfig) {
        let (trigger, stop) = shutdown::channel();
        let processor = ScheduleProcessor::new(
            ScriptedStream::join(self.log.clone()),
            self.codec.clone(),
            config,
            Metrics::new("test"),
        );
        let task = tokio::spawn(processor.run(stop));
        let end = self.log.lock().inputs.len() as i64;
        for _ in 0..500 {
            if self.log.lock().committed_offset == end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        trigger.trigger();
        task.await.unwrap().unwrap();
        assert_eq!(
            self.log.lock().committed_offset,
            end,
            "every input committed"
        );
    }

    async fn decoded(&self, payloads: &[Vec<u8>]) -> Vec<Event> {
        let mut out = Vec::new();
        for p in payloads {
            out.push(self.codec.decode(p).await.unwrap());
        }
        out
    }

    async fn replies(&self) -> Vec<(CommandId, Reply)> {
        let payloads = self.log.lock().replies.clone();
        self.decoded(&payloads)
            .await
            .into_iter()
            .map(|e| match e {
                Event::ScheduleCommandAnswered(a) => (a.command_id, a.reply),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// Seats held according to the committed changelog, with their holders.
    async fn held_seats(&self) -> Vec<(SeatRef, UserId)> {
        let payloads = self.log.lock().changelog.clone();
        let mut held = Vec::new();
        for e in self.decoded(&payloads).await {
            if let Event::ScheduleFactRecorded(f) = e {
                match f.fact.kind {
                    FactKind::SeatsHeld { user, seats, .. } => {
                        held.extend(seats.iter().map(|s| (s.seat, user)))
                    }
                    FactKind::BookingsCancelled { seats, .. } => {
                        held.retain(|(seat, _)| !seats.iter().any(|s| s.seat == *seat))
                    }
                    _ => {}
                }
            }
        }
        held
    }
}

/// The answers given to command `id`.
fn answers(replies: &[(CommandId, Reply)], id: u128) -> Vec<&Reply> {
    replies
        .iter()
        .filter(|(c, _)| *c == CommandId::from_uuid(Uuid::from_u128(id)))
        .map(|(_, r)| r)
        .collect()
}

/// Room for every buyer of the tests, holds that outlive them.
const SETTINGS: Settings = Settings {
    max_active: 10,
    admission_ttl_secs: 600,
    hold_ttl_secs: 600,
    max_seats_per_user: 2,
    payment_ttl_secs: 120,
};

fn user(n: u128) -> UserId {
    UserId::from_uuid(Uuid::from_u128(n))
}

fn hold(n: u128, row: u16, col: u16, booking: u128) -> Command {
    Command::Hold {
        user: user(n),
        seats: vec![SeatRef { row, col }],
        booking_ids: vec![BookingId::from_uuid(Uuid::from_u128(booking))],
    }
}

#[tokio::test]
async fn decisions_survive_a_crash_and_failed_commits_without_doubling() {
    let f = Fixture::new(1, 2).await;
    let settings = SETTINGS;
    f.command(1, Command::Join { user: user(1) }).await;
    f.command(2, Command::Join { user: user(2) }).await;
    f.command(3, hold(1, 1, 1, 100)).await;
    f.run_until_caught_up(settings).await;
    assert_eq!(
        f.held_seats().await,
        vec![(SeatRef { row: 1, col: 1 }, user(1))]
    );

    // A new member after a "crash" restores from the changelog: user 2 cannot
    // take user 1's seat, and a redelivered hold of user 1 is not a second hold.
    f.command(4, hold(2, 1, 1, 200)).await;
    f.command(3, hold(1, 1, 1, 100)).await;
    // Two commits fail: the batch is rewound and decided again each time.
    f.log.lock().fail_commits = 2;
    f.command(5, hold(2, 1, 2, 201)).await;
    f.run_until_caught_up(settings).await;

    assert_eq!(
        f.held_seats().await,
        vec![
            (SeatRef { row: 1, col: 1 }, user(1)),
            (SeatRef { row: 1, col: 2 }, user(2))
        ],
        "each seat held once, by the first to ask"
    );
    let replies = f.replies().await;
    let of = |id: u128| answers(&replies, id);
    assert!(matches!(of(4)[..], [Reply::Rejected(_)]), "{:?}", of(4));
    // The redelivered hold is answered like the first time, with its booking.
    assert_eq!(of(3).len(), 2);
    assert!(of(3).iter().all(|r| matches!(r, Reply::Held { booking_ids, .. } if booking_ids == &vec![BookingId::from_uuid(Uuid::from_u128(100))])));
    // Failed commits left no trace: one answer per decided command.
    assert_eq!(of(5).len(), 1, "{:?}", of(5));
    assert_eq!(f.log.lock().fail_commits, 0, "both failures were exercised");
}

#[tokio::test]
async fn holds_expire_on_an_idle_schedule() {
    let f = Fixture::new(1, 1).await;
    let settings = Settings {
        hold_ttl_secs: 1,
        ..SETTINGS
    };
    f.command(1, Command::Join { user: user(1) }).await;
    f.command(2, hold(1, 1, 1, 100)).await;
    let (trigger, stop) = shutdown::channel();
    let mut config = ProcessorConfig::new("test", settings);
    config.tick_every = Duration::from_millis(50);
    let task = tokio::spawn(
        ScheduleProcessor::new(
            ScriptedStream::join(f.log.clone()),
            f.codec.clone(),
            config,
            Metrics::new("test"),
        )
        .run(stop),
    );
    let mut expired = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let commits = f.log.lock().commits;
        if commits > 0 && f.log.lock().committed_offset == 3 && f.held_seats().await.is_empty() {
            let payloads = f.log.lock().changelog.clone();
            let kinds: Vec<FactKind> = f
                .decoded(&payloads)
                .await
                .into_iter()
                .filter_map(|e| match e {
                    Event::ScheduleFactRecorded(r) => Some(r.fact.kind),
                    _ => None,
                })
                .collect();
            assert!(
                kinds
                    .iter()
                    .any(|k| matches!(k, FactKind::SeatsHeld { .. })),
                "the hold was granted: {kinds:?}"
            );
            assert!(
                kinds.iter().any(|k| matches!(
                    k,
                    FactKind::BookingsCancelled {
                        reason: CancelReason::Expired,
                        ..
                    }
                )),
                "{kinds:?}"
            );
            expired = true;
            break;
        }
    }
    trigger.trigger();
    task.await.unwrap().unwrap();
    assert!(expired, "the hold expired with no command arriving");
}

/// With snapshots, a new member reads the latest snapshot of each schedule and
/// only the changelog after it, and decides exactly as if it had read the
/// whole changelog: a seat held before the snapshot stays held, a hold
/// redelivered after it is recognised.
#[tokio::test]
async fn a_restore_reads_the_snapshots_and_only_the_changelog_after_them() {
    let f = Fixture::new(1, 3).await;
    let settings = SETTINGS;
    let mut config = ProcessorConfig::new("test", settings);
    config.snapshot_every = 3;
    f.command(1, Command::Join { user: user(1) }).await;
    f.command(2, Command::Join { user: user(2) }).await;
    f.command(3, hold(1, 1, 1, 100)).await;
    f.command(4, Command::Join { user: user(3) }).await;
    f.run_with(config.clone()).await;
    let (snapshots, changelog_len) = {
        let log = f.log.lock();
        (log.snapshots.clone(), log.changelog.len() as i64)
    };
    let events = f.decoded(&snapshots).await;
    let restore_from = events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::SnapshotsCheckpointed(c) => Some(c.restore_from),
            _ => None,
        })
        .expect("a round of snapshots was written");
    assert!(
        events.iter().any(|e| matches!(e, Event::ScheduleSnapshotted(s) if s.schedule_id == f.schedule && s.covers_to == restore_from)),
        "the schedule's snapshot goes with the checkpoint"
    );
    assert!(restore_from > 0 && restore_from <= changelog_len);

    // A new member: user 2 cannot take user 1's seat, user 1's redelivered hold
    // is the same hold, user 3 gets a free seat.
    f.log.lock().reads.clear();
    f.command(5, hold(2, 1, 1, 200)).await;
    f.command(3, hold(1, 1, 1, 100)).await;
    f.command(6, hold(3, 1, 2, 300)).await;
    f.run_with(config).await;
    let reads = f.log.lock().reads.clone();
    let changelog_read = reads
        .iter()
        .find(|(t, _)| t == topics::SCHEDULE_EVENTS)
        .expect("the changelog was read");
    assert!(
        changelog_read.1 >= restore_from,
        "read from {} (checkpoint at {restore_from})",
        changelog_read.1
    );
    assert_eq!(
        f.held_seats().await,
        vec![
            (SeatRef { row: 1, col: 1 }, user(1)),
            (SeatRef { row: 1, col: 2 }, user(3))
        ]
    );
    let replies = f.replies().await;
    let of = |id: u128| answers(&replies, id);
    assert!(matches!(of(5)[..], [Reply::Rejected(_)]), "{:?}", of(5));
    assert_eq!(of(3).len(), 2);
    assert!(of(3).iter().all(|r| matches!(r, Reply::Held { booking_ids, .. } if booking_ids == &vec![BookingId::from_uuid(Uuid::from_u128(100))])));
    assert!(matches!(of(6)[..], [Reply::Held { .. }]), "{:?}", of(6));
}

/// A snapshot this build cannot read must not cost its schedule's history:
/// the restore falls back to the whole changelog.
#[tokio::test]
async fn an_unreadable_snapshot_falls_back_to_the_whole_changelog() {
    let f = Fixture::new(1, 2).await;
    let settings = SETTINGS;
    let mut config = ProcessorConfig::new("test", settings);
    config.snapshot_every = 2;
    f.command(1, Command::Join { user: user(1) }).await;
    f.command(2, hold(1, 1, 1, 100)).await;
    f.command(3, Command::Join { user: user(2) }).await;
    f.run_with(config.clone()).await;
    assert!(!f.log.lock().snapshots.is_empty(), "snapshots were written");
    f.log.lock().snapshots.insert(0, b"not avro".to_vec());
    f.log.lock().reads.clear();
    f.command(4, hold(2, 1, 1, 200)).await;
    f.run_with(config).await;
    let reads = f.log.lock().reads.clone();
    assert!(
        reads
            .iter()
            .any(|(t, from)| t == topics::SCHEDULE_EVENTS && *from == 0),
        "{reads:?}"
    );
    assert_eq!(
        f.held_seats().await,
        vec![(SeatRef { row: 1, col: 1 }, user(1))],
        "the seat held before the snapshot is still held"
    );
}
