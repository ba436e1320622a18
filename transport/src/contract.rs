//! The contract of the transport ports, as checks any adapter must pass: the
//! embedded log runs them in its unit tests, Kafka in `tests/kafka.rs`. Each
//! check wants a fresh [`Harness`] (empty topics) and panics with a message on
//! the first broken rule.
//!
//! Only what holds on both adapters is checked: offsets increase but need not
//! be dense (Kafka's transaction markers take offsets), and records of
//! different partitions have no order between them.

use crate::partitioner::partition_for_key;
use crate::ports::{Consumer, Delivered, OutRecord, Producer, Record, TransportError};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Partitions of [`Harness::topic_a`].
pub const TOPIC_A_PARTITIONS: i32 = 4;
/// Partitions of [`Harness::topic_b`].
pub const TOPIC_B_PARTITIONS: i32 = 2;

/// How long one record may take to arrive. Generous because a Kafka consumer
/// first has to join its group.
pub const WAIT: Duration = Duration::from_secs(60);

/// Makes producers and consumers of one adapter over two empty topics.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A topic with [`TOPIC_A_PARTITIONS`] partitions.
    fn topic_a(&self) -> String;
    /// A topic with [`TOPIC_B_PARTITIONS`] partitions.
    fn topic_b(&self) -> String;
    /// A consumer group name unique to this harness.
    fn group(&self, name: &str) -> String;
    fn producer(&self) -> Arc<dyn Producer>;
    async fn consumer(&self, group: &str, topics: &[&str]) -> Box<dyn Consumer>;
}

fn out(topic: &str, key: &str, payload: String) -> OutRecord {
    OutRecord {
        topic: topic.to_string(),
        key: key.to_string(),
        partition: None,
        payload: payload.into_bytes(),
    }
}

async fn send(producer: &dyn Producer, topic: &str, key: &str, payload: String) -> Delivered {
    producer
        .send(out(topic, key, payload.clone()))
        .await
        .unwrap_or_else(|e| panic!("send {payload} to {topic}: {e}"))
}

fn text(record: &Record) -> String {
    String::from_utf8(record.payload.clone()).expect("contract payloads are UTF-8")
}

/// Receives one record, or panics after [`WAIT`].
pub async fn recv(consumer: &mut dyn Consumer) -> Record {
    match tokio::time::timeout(WAIT, consumer.recv()).await {
        Ok(Ok(record)) => record,
        Ok(Err(e)) => panic!("recv failed: {e}"),
        Err(_) => panic!("no record within {WAIT:?}"),
    }
}

/// Receives `n` records, in arrival order.
pub async fn recv_n(consumer: &mut dyn Consumer, n: usize) -> Vec<Record> {
    let mut records = Vec::with_capacity(n);
    for _ in 0..n {
        records.push(recv(consumer).await);
    }
    records
}

/// The first key, from `prefix-0` on, that lands on a partition other than those in `not`.
fn key_off(prefix: &str, partitions: i32, not: &[i32]) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|k| !not.contains(&partition_for_key(k.as_bytes(), partitions)))
        .expect("some key lands elsewhere")
}

/// Records of one key keep their order and their partition, which is the
/// Kafka (murmur2) partition of the key; the consumer sees exactly what the
/// producer was told.
pub async fn keys_keep_order_and_partition<H: Harness>(h: &H) {
    let topic = h.topic_a();
    let producer = h.producer();
    let keys: Vec<String> = (0..8).map(|i| format!("schedule-{i}")).collect();
    let rounds = 5;
    let mut delivered: HashMap<String, Vec<Delivered>> = HashMap::new();
    for round in 0..rounds {
        for key in &keys {
            let d = send(&*producer, &topic, key, format!("{key}/{round}")).await;
            assert_eq!(
                d.partition,
                partition_for_key(key.as_bytes(), TOPIC_A_PARTITIONS),
                "{key} must land on its murmur2 partition"
            );
            delivered.entry(key.clone()).or_default().push(d);
        }
    }
    for (key, ds) in &delivered {
        assert!(
            ds.windows(2).all(|w| w[0].offset < w[1].offset),
            "offsets of {key} must increase: {ds:?}"
        );
    }

    let mut consumer = h.consumer(&h.group("order"), &[&topic]).await;
    let records = recv_n(&mut *consumer, keys.len() * rounds).await;
    let mut next_round: HashMap<String, usize> = HashMap::new();
    let mut last_offset: HashMap<i32, i64> = HashMap::new();
    for r in &records {
        assert_eq!(r.topic, topic);
        let key = r.key.clone().expect("records carry their key");
        let round = next_round.entry(key.clone()).or_default();
        assert_eq!(
            text(r),
            format!("{key}/{round}"),
            "records of {key} must arrive in order"
        );
        let d = delivered[&key][*round];
        assert_eq!(
            (r.partition, r.offset),
            (d.partition, d.offset),
            "{key}/{round} read where it was delivered"
        );
        *round += 1;
        if let Some(before) = last_offset.insert(r.partition, r.offset) {
            assert!(
                before < r.offset,
                "partition {} went back from {before} to {}",
                r.partition,
                r.offset
            );
        }
    }
    consumer.close().await.expect("close");
}

/// Producers sharing one `Arc<dyn Producer>` from many tasks: each task's
/// records keep their order.
pub async fn concurrent_producers_keep_per_key_order<H: Harness>(h: &H) {
    let topic = h.topic_a();
    let producer = h.producer();
    let (tasks, per_task) = (8, 25);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (producer, topic) = (producer.clone(), topic.clone());
        handles.push(tokio::spawn(async move {
            let key = format!("task-{t}");
            for i in 0..per_task {
                send(&*producer, &topic, &key, format!("{key}/{i}")).await;
            }
        }));
    }
    for handle in handles {
        handle.await.expect("producer task");
    }
    let mut consumer = h.consumer(&h.group("concurrent"), &[&topic]).await;
    let mut next: HashMap<String, usize> = HashMap::new();
    for r in recv_n(&mut *consumer, tasks * per_task).await {
        let key = r.key.clone().expect("key");
        let i = next.entry(key.clone()).or_default();
        assert_eq!(
            text(&r),
            format!("{key}/{i}"),
            "records of {key} must arrive in order"
        );
        *i += 1;
    }
    assert!(
        next.values().all(|&n| n == per_task),
        "every record once: {next:?}"
    );
    consumer.close().await.expect("close");
}

/// A restarted consumer resumes after the last committed offset of each
/// partition; what was read but not committed comes again.
pub async fn commit_resumes_after_restart<H: Harness>(h: &H) {
    let topic = h.topic_a();
    let producer = h.producer();
    let key_a = "resume-a";
    let partition_a = partition_for_key(key_a.as_bytes(), TOPIC_A_PARTITIONS);
    let key_b = key_off("resume-b", TOPIC_A_PARTITIONS, &[partition_a]);
    for i in 0..6 {
        send(&*producer, &topic, key_a, format!("a{i}")).await;
    }
    for i in 0..4 {
        send(&*producer, &topic, &key_b, format!("b{i}")).await;
    }
    let group = h.group("resume");

    // Read everything, commit only a2: a0..a2 are done, a3.. and all of b are not.
    let mut first = h.consumer(&group, &[&topic]).await;
    let records = recv_n(&mut *first, 10).await;
    let a2 = records
        .iter()
        .find(|r| text(r) == "a2")
        .expect("a2 was read");
    first.commit(a2).await.expect("commit a2");
    first.close().await.expect("close");
    drop(first);

    let mut second = h.consumer(&group, &[&topic]).await;
    let again = recv_n(&mut *second, 7).await;
    let of = |key: &str| -> Vec<String> {
        again
            .iter()
            .filter(|r| r.key.as_deref() == Some(key))
            .map(text)
            .collect()
    };
    assert_eq!(
        of(key_a),
        ["a3", "a4", "a5"],
        "resumes after the committed a2"
    );
    assert_eq!(
        of(&key_b),
        ["b0", "b1", "b2", "b3"],
        "an uncommitted partition is read again"
    );
    for last in ["a5", "b3"] {
        let r = again.iter().find(|r| text(r) == last).expect("read");
        second.commit(r).await.expect("commit");
    }
    second.close().await.expect("close");
    assert!(
        matches!(second.recv().await, Err(TransportError::Closed)),
        "a closed consumer returns Closed"
    );
    drop(second);

    // Everything is committed: the next record the group sees is a new one.
    send(&*producer, &topic, key_a, "a6".into()).await;
    let mut third = h.consumer(&group, &[&topic]).await;
    assert_eq!(
        text(&recv(&mut *third).await),
        "a6",
        "nothing committed comes again"
    );
    third.close().await.expect("close");
}

/// One consumer reads several topics; a consumer of one topic sees none of
/// another's; groups keep their own offsets.
pub async fn topics_and_groups_are_independent<H: Harness>(h: &H) {
    let (a, b) = (h.topic_a(), h.topic_b());
    let producer = h.producer();
    for i in 0..3 {
        send(&*producer, &a, &format!("x{i}"), format!("{a}:{i}")).await;
        send(&*producer, &b, &format!("y{i}"), format!("{b}:{i}")).await;
    }

    let mut both = h.consumer(&h.group("both"), &[&a, &b]).await;
    let mut seen: Vec<String> = Vec::new();
    for r in recv_n(&mut *both, 6).await {
        let payload = text(&r);
        assert!(
            payload.starts_with(&format!("{}:", r.topic)),
            "{payload} read as {}",
            r.topic
        );
        let partitions = if r.topic == b {
            TOPIC_B_PARTITIONS
        } else {
            TOPIC_A_PARTITIONS
        };
        assert!((0..partitions).contains(&r.partition));
        both.commit(&r).await.expect("commit");
        seen.push(payload);
    }
    seen.sort();
    let mut expected: Vec<String> = (0..3)
        .flat_map(|i| [format!("{a}:{i}"), format!("{b}:{i}")])
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    both.close().await.expect("close");

    // Another group starts from the beginning, whatever "both" committed.
    let mut only_b = h.consumer(&h.group("only-b"), &[&b]).await;
    let mut from_b: Vec<String> = recv_n(&mut *only_b, 3).await.iter().map(text).collect();
    from_b.sort();
    assert_eq!(
        from_b,
        (0..3).map(|i| format!("{b}:{i}")).collect::<Vec<_>>()
    );
    // Had a record of `a` been delivered, it would come before this marker.
    send(&*producer, &b, "y0", "marker".into()).await;
    assert_eq!(
        text(&recv(&mut *only_b).await),
        "marker",
        "a consumer of {b} reads nothing of {a}"
    );
    only_b.close().await.expect("close");
}
