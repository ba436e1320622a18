//! The transport contract and the Kafka-only behaviour, against a running
//! broker: `deploy/local/stack.sh up kafka`, then
//! `cargo test -p ticketing-transport --features real-stack`.
//! `TICKETING_KAFKA_BROKERS` points elsewhere (default 127.0.0.1:9092). Every
//! test creates its own topics and groups, so runs never see each other.
#![cfg(feature = "real-stack")]

mod common;
use common::unique;

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use ticketing_transport::contract::{self, Harness, TOPIC_A_PARTITIONS, TOPIC_B_PARTITIONS};
use ticketing_transport::kafka::{ensure_topics, KafkaConfig, KafkaConsumer, KafkaProducer};
use ticketing_transport::partitioner::partition_for_key;
use ticketing_transport::{Consumer, OutRecord, Producer, TransportError};

fn config() -> KafkaConfig {
    common::config("transport-test")
}

struct KafkaHarness {
    cfg: KafkaConfig,
    a: String,
    b: String,
    producer: Arc<dyn Producer>,
}

impl KafkaHarness {
    async fn new() -> Self {
        let cfg = config();
        let (a, b) = (unique("contract-a"), unique("contract-b"));
        ensure_topics(
            &cfg,
            &[
                (&a, TOPIC_A_PARTITIONS, false),
                (&b, TOPIC_B_PARTITIONS, false),
            ],
        )
        .await
        .expect("topics created");
        let producer = Arc::new(KafkaProducer::new(&cfg).expect("producer"));
        Self {
            cfg,
            a,
            b,
            producer,
        }
    }
}

#[async_trait]
impl Harness for KafkaHarness {
    fn topic_a(&self) -> String {
        self.a.clone()
    }
    fn topic_b(&self) -> String {
        self.b.clone()
    }
    fn group(&self, name: &str) -> String {
        unique(name)
    }
    fn producer(&self) -> Arc<dyn Producer> {
        self.producer.clone()
    }
    async fn consumer(&self, group: &str, topics: &[&str]) -> Box<dyn Consumer> {
        Box::new(KafkaConsumer::new(&self.cfg, group, topics).expect("consumer"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_keep_order_and_partition() {
    contract::keys_keep_order_and_partition(&KafkaHarness::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_producers_keep_per_key_order() {
    contract::concurrent_producers_keep_per_key_order(&KafkaHarness::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_resumes_after_restart() {
    contract::commit_resumes_after_restart(&KafkaHarness::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_and_groups_are_independent() {
    contract::topics_and_groups_are_independent(&KafkaHarness::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ensure_topics_is_idempotent_and_makes_compacted_topics() {
    let cfg = config();
    let (plain, compacted) = (unique("plain"), unique("compacted"));
    let specs = [(plain.as_str(), 3, false), (compacted.as_str(), 1, true)];
    ensure_topics(&cfg, &specs).await.expect("created");
    ensure_topics(&cfg, &specs)
        .await
        .expect("existing topics are fine");
    let producer = KafkaProducer::new(&cfg).unwrap();
    let delivered = producer
        .send(OutRecord {
            topic: compacted.clone(),
            key: "k".into(),
            partition: None,
            payload: b"v".to_vec(),
        })
        .await
        .expect("the compacted topic takes keyed records");
    assert_eq!(delivered.partition, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lag_is_what_the_group_has_not_committed() {
    let h = KafkaHarness::new().await;
    let key = "lagging";
    let partition = partition_for_key(key.as_bytes(), TOPIC_B_PARTITIONS);
    for i in 0..5 {
        h.producer
            .send(OutRecord {
                topic: h.b.clone(),
                key: key.into(),
                partition: None,
                payload: format!("{i}").into_bytes(),
            })
            .await
            .unwrap();
    }
    let mut consumer = KafkaConsumer::new(&h.cfg, &unique("lag"), &[&h.b]).unwrap();
    contract::recv(&mut consumer).await;
    let second = contract::recv(&mut consumer).await;
    consumer.commit(&second).await.unwrap();
    // Reading needed the assignment, so lag covers both partitions. It is
    // looked up in the background: the first answers may be empty.
    let mut lag = Vec::new();
    for _ in 0..100 {
        lag = consumer.lag().await.expect("lag");
        if !lag.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let of = |p: i32| {
        lag.iter()
            .find(|(t, q, _)| *t == h.b && *q == p)
            .map(|l| l.2)
    };
    assert_eq!(of(partition), Some(3), "5 appended, 2 committed: {lag:?}");
    assert_eq!(
        of(1 - partition),
        Some(0),
        "nothing on the other partition: {lag:?}"
    );
    consumer.close().await.unwrap();
    assert!(matches!(consumer.lag().await, Err(TransportError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_consumer_leaves_its_commits_behind() {
    // Not closing is a crash-like exit: the background commit must still land
    // before the consumer leaves, or the records come again.
    let h = KafkaHarness::new().await;
    for i in 0..3 {
        h.producer
            .send(OutRecord {
                topic: h.a.clone(),
                key: "dropped".into(),
                partition: None,
                payload: format!("{i}").into_bytes(),
            })
            .await
            .unwrap();
    }
    let group = unique("drop");
    let mut first = KafkaConsumer::new(&h.cfg, &group, &[&h.a]).unwrap();
    let records = contract::recv_n(&mut first, 3).await;
    first.commit(&records[1]).await.unwrap();
    drop(first);
    let mut second = KafkaConsumer::new(&h.cfg, &group, &[&h.a]).unwrap();
    let again = tokio::time::timeout(Duration::from_secs(60), second.recv())
        .await
        .expect("a record")
        .unwrap();
    assert_eq!(again.payload, b"2", "resumes after the committed record");
    second.close().await.unwrap();
}
