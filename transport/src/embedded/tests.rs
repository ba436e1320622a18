use super::*;
use crate::contract::{self, Harness, TOPIC_A_PARTITIONS, TOPIC_B_PARTITIONS};
use std::time::Duration;
use tempfile::TempDir;

const A: &str = "contract-a";
const B: &str = "contract-b";
const TOPICS: &[(&str, i32)] = &[(A, TOPIC_A_PARTITIONS), (B, TOPIC_B_PARTITIONS)];

struct EmbeddedHarness {
    log: EmbeddedLog,
    _dir: Option<TempDir>,
}

impl EmbeddedHarness {
    fn memory() -> Self {
        Self {
            log: EmbeddedLog::in_memory(TOPICS),
            _dir: None,
        }
    }

    fn disk() -> Self {
        let dir = TempDir::new().unwrap();
        Self {
            log: EmbeddedLog::open(dir.path(), TOPICS).unwrap(),
            _dir: Some(dir),
        }
    }
}

#[async_trait]
impl Harness for EmbeddedHarness {
    fn topic_a(&self) -> String {
        A.into()
    }
    fn topic_b(&self) -> String {
        B.into()
    }
    fn group(&self, name: &str) -> String {
        name.into()
    }
    fn producer(&self) -> Arc<dyn Producer> {
        Arc::new(self.log.producer())
    }
    async fn consumer(&self, group: &str, topics: &[&str]) -> Box<dyn Consumer> {
        Box::new(self.log.consumer(group, topics).unwrap())
    }
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    contract::$name(&EmbeddedHarness::memory()).await;
                }
            )*
        }
        mod disk {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    contract::$name(&EmbeddedHarness::disk()).await;
                }
            )*
        }
    };
}

contract_tests!(
    keys_keep_order_and_partition,
    concurrent_producers_keep_per_key_order,
    commit_resumes_after_restart,
    topics_and_groups_are_independent,
);

fn out(topic: &str, key: &str, payload: &str) -> OutRecord {
    OutRecord {
        topic: topic.into(),
        key: key.into(),
        partition: None,
        payload: payload.as_bytes().to_vec(),
    }
}

fn text(r: &Record) -> String {
    String::from_utf8(r.payload.clone()).unwrap()
}

/// A key that lands on `partition` of a topic with `partitions` partitions.
fn key_on(partition: i32, partitions: i32) -> String {
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| partition_for_key(k.as_bytes(), partitions) == partition)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_offsets_survive_a_reopen() {
    let dir = TempDir::new().unwrap();
    let sent: Vec<Delivered> = {
        let log = EmbeddedLog::open(dir.path(), TOPICS).unwrap();
        let producer = log.producer();
        let mut sent = Vec::new();
        for i in 0..5 {
            sent.push(producer.send(out(A, "k", &format!("r{i}"))).await.unwrap());
        }
        let mut consumer = log.consumer("g", &[A]).unwrap();
        for _ in 0..3 {
            let r = consumer.recv().await.unwrap();
            consumer.commit(&r).await.unwrap();
        }
        sent
    };
    let p = sent[0].partition;
    assert_eq!(
        sent.iter().map(|d| d.offset).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );

    let log = EmbeddedLog::open(dir.path(), TOPICS).unwrap();
    let mut ends = vec![0; TOPIC_A_PARTITIONS as usize];
    ends[p as usize] = 5;
    assert_eq!(log.end_offsets(A), ends);
    assert_eq!(log.committed_offsets("g", A)[p as usize], 3);

    // The group resumes after r2; another group reads it all, timestamps intact.
    let mut consumer = log.consumer("g", &[A]).unwrap();
    assert_eq!(text(&consumer.recv().await.unwrap()), "r3");
    let mut fresh = log.consumer("other", &[A]).unwrap();
    let first = fresh.recv().await.unwrap();
    assert_eq!(
        (text(&first), first.partition, first.offset),
        ("r0".into(), p, 0)
    );
    assert_eq!(first.key.as_deref(), Some("k"));
    assert!(Utc::now() - first.timestamp < chrono::Duration::minutes(1));

    // New appends continue the dense offsets.
    let next = log.producer().send(out(A, "k", "r5")).await.unwrap();
    assert_eq!(
        next,
        Delivered {
            partition: p,
            offset: 5
        }
    );
}

#[test]
fn a_topic_may_grow_partitions_but_not_shrink() {
    let dir = TempDir::new().unwrap();
    drop(EmbeddedLog::open(dir.path(), &[("t", 2)]).unwrap());
    let grown = EmbeddedLog::open(dir.path(), &[("t", 3)]).unwrap();
    assert_eq!(grown.end_offsets("t").len(), 3);
    drop(grown);
    let shrunk = EmbeddedLog::open(dir.path(), &[("t", 2)]);
    assert!(
        matches!(shrunk, Err(TransportError::Other(_))),
        "shrinking is refused"
    );
}

#[test]
fn declarations_are_checked() {
    let dir = TempDir::new().unwrap();
    assert!(EmbeddedLog::open(dir.path(), &[("t", 0)]).is_err());
    assert!(EmbeddedLog::open(dir.path(), &[("t", 1), ("t", 2)]).is_err());
    assert!(EmbeddedLog::open(dir.path(), &[("t", 2), ("t", 2)]).is_ok());
}

#[tokio::test]
async fn unknown_topics_are_reported() {
    let log = EmbeddedLog::in_memory(TOPICS);
    let sent = log.producer().send(out("nope", "k", "x")).await;
    assert!(matches!(sent, Err(TransportError::UnknownTopic(t)) if t == "nope"));
    assert!(matches!(
        log.consumer("g", &[A, "nope"]),
        Err(TransportError::UnknownTopic(_))
    ));
    assert!(log.end_offsets("nope").is_empty());
    // The failed subscription did not take the group.
    assert!(log.consumer("g", &[A]).is_ok());
}

#[tokio::test]
async fn one_consumer_per_group() {
    let log = EmbeddedLog::in_memory(TOPICS);
    let mut first = log.consumer("g", &[A]).unwrap();
    assert!(
        log.consumer("g", &[B]).is_err(),
        "a second consumer in a group is refused"
    );
    assert!(log.consumer("h", &[A]).is_ok(), "other groups are free");
    first.close().await.unwrap();
    assert!(matches!(first.recv().await, Err(TransportError::Closed)));
    let second = log.consumer("g", &[A]).unwrap();
    drop(second);
    assert!(log.consumer("g", &[A]).is_ok(), "dropping frees the group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_sleeps_until_a_record_arrives() {
    for harness in [EmbeddedHarness::memory(), EmbeddedHarness::disk()] {
        let log = harness.log.clone();
        let mut consumer = log.consumer("g", &[A, B]).unwrap();
        let waiting = tokio::spawn(async move {
            let r = consumer.recv().await.unwrap();
            (consumer, r)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "nothing to read yet");
        log.producer().send(out(B, "k", "hello")).await.unwrap();
        let (_consumer, r) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the append")
            .unwrap();
        assert_eq!((r.topic.as_str(), text(&r).as_str()), (B, "hello"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_dense_offsets() {
    for harness in [EmbeddedHarness::memory(), EmbeddedHarness::disk()] {
        let log = harness.log.clone();
        let producer: Arc<dyn Producer> = Arc::new(log.producer());
        let mut tasks = Vec::new();
        for t in 0..16 {
            let producer = producer.clone();
            tasks.push(tokio::spawn(async move {
                let mut delivered = Vec::new();
                for i in 0..50 {
                    delivered.push(
                        producer
                            .send(out(A, &format!("t{t}"), &format!("{i}")))
                            .await
                            .unwrap(),
                    );
                }
                delivered
            }));
        }
        let mut per_partition: HashMap<i32, Vec<i64>> = HashMap::new();
        for task in tasks {
            let delivered = task.await.unwrap();
            assert!(delivered.windows(2).all(|w| w[0].offset < w[1].offset));
            for d in delivered {
                per_partition.entry(d.partition).or_default().push(d.offset);
            }
        }
        for (p, mut offsets) in per_partition {
            offsets.sort_unstable();
            let n = offsets.len() as i64;
            assert_eq!(
                offsets,
                (0..n).collect::<Vec<_>>(),
                "partition {p} has dense offsets"
            );
            assert_eq!(log.end_offsets(A)[p as usize], n);
        }
    }
}

#[tokio::test]
async fn partitions_are_served_in_turn() {
    let log = EmbeddedLog::in_memory(&[("t", 3)]);
    let producer = log.producer();
    let keys: Vec<String> = (0..3).map(|p| key_on(p, 3)).collect();
    // Partition 0 gets a backlog first; the others must not wait for it.
    for i in 0..100 {
        producer
            .send(out("t", &keys[0], &format!("{i}")))
            .await
            .unwrap();
    }
    for key in &keys[1..] {
        producer.send(out("t", key, "x")).await.unwrap();
    }
    let mut consumer = log.consumer("g", &["t"]).unwrap();
    let mut first_six = Vec::new();
    for _ in 0..6 {
        first_six.push(consumer.recv().await.unwrap().partition);
    }
    assert_eq!(first_six, [0, 1, 2, 0, 0, 0]);
}

#[tokio::test]
async fn lag_counts_what_is_not_committed() {
    let log = EmbeddedLog::in_memory(TOPICS);
    let producer = log.producer();
    let key = key_on(1, TOPIC_B_PARTITIONS);
    for i in 0..5 {
        producer.send(out(B, &key, &format!("{i}"))).await.unwrap();
    }
    let mut consumer = log.consumer("g", &[B]).unwrap();
    let lag = |c: &EmbeddedConsumer| {
        c.lag()
            .into_iter()
            .map(|(_, p, l)| (p, l))
            .collect::<Vec<_>>()
    };
    assert_eq!(lag(&consumer), [(0, 0), (1, 5)]);
    consumer.recv().await.unwrap();
    let second = consumer.recv().await.unwrap();
    assert_eq!(
        lag(&consumer),
        [(0, 0), (1, 5)],
        "reading is not committing"
    );
    consumer.commit(&second).await.unwrap();
    assert_eq!(lag(&consumer), [(0, 0), (1, 3)]);
    assert_eq!(log.committed_offsets("g", B), [0, 2]);
    assert_eq!(log.end_offsets(B), [0, 5]);
}

#[tokio::test]
async fn commits_are_checked_against_the_assignment() {
    let log = EmbeddedLog::in_memory(TOPICS);
    let r = Record {
        topic: B.into(),
        partition: 0,
        offset: 0,
        key: None,
        payload: vec![],
        timestamp: Utc::now(),
    };
    let mut consumer = log.consumer("g", &[A]).unwrap();
    assert!(
        consumer.commit(&r).await.is_err(),
        "B is not read by this consumer"
    );
}

/// A sink's loop races `recv` against a shutdown signal; losing the race must
/// not lose records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_recv_loses_nothing() {
    let harness = EmbeddedHarness::disk();
    let producer = harness.log.producer();
    for i in 0..600 {
        producer
            .send(out(A, &format!("k{}", i % 7), &format!("{i}")))
            .await
            .unwrap();
    }
    let mut consumer = harness.log.consumer("g", &[A]).unwrap();
    let mut seen = Vec::new();
    let mut cancelled = 0;
    for attempt in 0..10_000 {
        if seen.len() == 600 {
            break;
        }
        if attempt % 2 == 0 {
            // Poll once and drop: a recv that had to go to disk is cancelled
            // while its read is in flight.
            tokio::select! {
                biased;
                r = consumer.recv() => seen.push(text(&r.unwrap()).parse::<u32>().unwrap()),
                _ = std::future::ready(()) => cancelled += 1,
            }
        } else {
            seen.push(
                text(&consumer.recv().await.unwrap())
                    .parse::<u32>()
                    .unwrap(),
            );
        }
    }
    assert!(cancelled > 0, "the test cancelled no recv");
    seen.sort_unstable();
    assert_eq!(seen, (0..600).collect::<Vec<_>>());
}

// ---- the transactional stream --------------------------------------------

/// Reads records until `n` have come (or panics after a while).
async fn records(stream: &mut EmbeddedTransactionalStream, n: usize) -> Vec<Record> {
    let mut got = Vec::new();
    for _ in 0..100 {
        match stream
            .next(n - got.len(), Duration::from_millis(50))
            .await
            .unwrap()
        {
            StreamEvent::Records(r) => got.extend(r),
            other => panic!("unexpected {other:?}"),
        }
        if got.len() == n {
            return got;
        }
    }
    panic!("only {} of {n} records came", got.len());
}

async fn assigned(stream: &mut EmbeddedTransactionalStream) -> Vec<TopicPartition> {
    match stream.next(10, Duration::from_millis(10)).await.unwrap() {
        StreamEvent::Assigned(tps) => tps,
        other => panic!("expected Assigned, got {other:?}"),
    }
}

async fn exactly_once_batches(log: &EmbeddedLog) {
    let producer = log.producer();
    for i in 0..3 {
        producer
            .send(out(A, &format!("k{i}"), &format!("in-{i}")))
            .await
            .unwrap();
    }
    let mut stream = log.transactional_stream("proc", &[A]).unwrap();
    let owned = assigned(&mut stream).await;
    assert_eq!(
        owned.len(),
        TOPIC_A_PARTITIONS as usize,
        "one member owns every partition"
    );
    assert!(
        stream.read_partition(B, 0, 0).await.unwrap().is_empty(),
        "an empty changelog"
    );

    // A batch decided and committed: its outputs appear with its offsets.
    let batch = records(&mut stream, 3).await;
    let outputs = vec![
        OutRecord {
            partition: Some(1),
            ..out(B, "x", "out-1")
        },
        OutRecord {
            partition: Some(1),
            ..out(B, "x", "out-2")
        },
    ];
    stream.commit(outputs, &batch).await.unwrap();
    let changelog: Vec<String> = stream
        .read_partition(B, 1, 0)
        .await
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert_eq!(changelog, ["out-1", "out-2"]);
    // The end is where the next record goes; a read from an offset starts there.
    assert_eq!(stream.end_offset(B, 1).await.unwrap(), 2);
    let tail = stream.read_partition(B, 1, 1).await.unwrap();
    assert_eq!(
        (text(&tail[0]), tail[0].offset, tail.len()),
        ("out-2".into(), 1, 1)
    );
    assert!(stream.read_partition(B, 1, 2).await.unwrap().is_empty());
    assert!(stream.read_partition(B, 1, 99).await.unwrap().is_empty());
    assert!(stream
        .lag()
        .await
        .unwrap()
        .iter()
        .all(|(_, _, lag)| *lag == 0));

    // A batch decided but never committed (the process dies): nothing of it
    // is visible, and its input comes again to the next member.
    producer.send(out(A, "k9", "in-9")).await.unwrap();
    let lost = records(&mut stream, 1).await;
    assert_eq!(text(&lost[0]), "in-9");
    drop(stream);
    let mut stream = log.transactional_stream("proc", &[A]).unwrap();
    assigned(&mut stream).await;
    let again = records(&mut stream, 1).await;
    assert_eq!(
        (text(&again[0]), again[0].offset),
        ("in-9".into(), lost[0].offset)
    );
    assert_eq!(stream.read_partition(B, 1, 0).await.unwrap().len(), 2);
    stream
        .commit(vec![out(B, "y", "out-9")], &again)
        .await
        .unwrap();
    match stream.next(10, Duration::from_millis(50)).await.unwrap() {
        StreamEvent::Records(r) => assert!(r.is_empty(), "everything was committed: {r:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn transactional_batches_commit_outputs_with_offsets_in_memory() {
    exactly_once_batches(&EmbeddedLog::in_memory(TOPICS)).await;
}

#[tokio::test]
async fn transactional_batches_commit_outputs_with_offsets_on_disk_and_survive_a_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), TOPICS).unwrap();
        exactly_once_batches(&log).await;
    }
    let log = EmbeddedLog::open(dir.path(), TOPICS).unwrap();
    let mut stream = log.transactional_stream("proc", &[A]).unwrap();
    assigned(&mut stream).await;
    match stream.next(10, Duration::from_millis(50)).await.unwrap() {
        StreamEvent::Records(r) => assert!(r.is_empty(), "offsets survived: {r:?}"),
        other => panic!("{other:?}"),
    }
    let changelog: Vec<String> = stream
        .read_partition(B, 1, 0)
        .await
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert_eq!(changelog, ["out-1", "out-2"]);
}

#[tokio::test]
async fn a_failed_commit_shows_nothing_and_rewinds_through_revoke_and_assign() {
    let log = EmbeddedLog::in_memory(TOPICS);
    log.producer().send(out(A, "k", "in")).await.unwrap();
    let mut stream = log.transactional_stream("proc", &[A]).unwrap();
    assigned(&mut stream).await;
    let batch = records(&mut stream, 1).await;
    // An output to an undeclared topic fails the whole batch.
    let err = stream
        .commit(
            vec![out(B, "x", "fine"), out("nowhere", "x", "bad")],
            &batch,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::UnknownTopic(_)), "{err:?}");
    for p in 0..TOPIC_B_PARTITIONS {
        assert!(
            stream.read_partition(B, p, 0).await.unwrap().is_empty(),
            "nothing of the batch is visible"
        );
    }
    assert!(matches!(
        stream.next(10, Duration::from_millis(10)).await.unwrap(),
        StreamEvent::Revoked(_)
    ));
    assigned(&mut stream).await;
    let again = records(&mut stream, 1).await;
    assert_eq!(
        again[0].offset, batch[0].offset,
        "the input is handed out again"
    );
}

#[tokio::test]
async fn tails_see_only_what_comes_after_them_and_each_sees_all() {
    let log = EmbeddedLog::in_memory(TOPICS);
    let producer = log.producer();
    producer.send(out(A, "k1", "before")).await.unwrap();
    let mut first = log.tail(&[A]).unwrap();
    let mut second = log.tail(&[A]).unwrap();
    for (k, v) in [("k1", "x"), ("k2", "y"), ("k3", "z")] {
        producer.send(out(A, k, v)).await.unwrap();
    }
    for tail in [&mut first, &mut second] {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let r = tokio::time::timeout(Duration::from_secs(5), tail.recv())
                .await
                .unwrap()
                .unwrap();
            seen.push(String::from_utf8(r.payload).unwrap());
        }
        seen.sort();
        assert_eq!(seen, ["x", "y", "z"], "not what came before");
    }
}
