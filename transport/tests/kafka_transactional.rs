//! The Kafka transactional stream against a running broker (see
//! tests/kafka.rs for how to start one): what a commit makes visible, what an
//! abandoned batch leaves behind, fencing of a zombie, and a group splitting
//! its partitions between members.
#![cfg(feature = "real-stack")]

mod common;
use common::unique;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use ticketing_transport::kafka::{
    ensure_topics, KafkaConfig, KafkaConsumer, KafkaProducer, KafkaTransactionalStream,
};
use ticketing_transport::{
    Consumer, OutRecord, Producer, Record, StreamEvent, TopicPartition, TransactionalStream,
    TransportError,
};

const PARTITIONS: i32 = 4;

fn config() -> KafkaConfig {
    common::config("transactional-test")
}

struct Topics {
    input: String,
    output: String,
}

async fn topics() -> Topics {
    let t = Topics {
        input: unique("tx-in"),
        output: unique("tx-out"),
    };
    ensure_topics(
        &config(),
        &[
            (&t.input, PARTITIONS, false),
            (&t.output, PARTITIONS, false),
        ],
    )
    .await
    .unwrap();
    t
}

async fn stream(group: &str, input: &str, txid: &str) -> KafkaTransactionalStream {
    KafkaTransactionalStream::new(&config(), group, &[input], txid)
        .await
        .expect("the stream starts")
}

async fn produce(topic: &str, n: usize) {
    let producer = KafkaProducer::new(&config()).unwrap();
    for i in 0..n {
        producer
            .send(OutRecord {
                topic: topic.to_string(),
                key: format!("k{i}"),
                payload: format!("in-{i}").into_bytes(),
                partition: None,
            })
            .await
            .unwrap();
    }
}

/// Reads events until `n` records came (answering assignment changes), or
/// panics after a minute.
async fn records(s: &mut KafkaTransactionalStream, n: usize) -> Vec<Record> {
    let started = Instant::now();
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of {n} records came",
            got.len()
        );
        if let StreamEvent::Records(r) = s.next(100, Duration::from_millis(500)).await.unwrap() {
            got.extend(r);
        }
    }
    got
}

/// Records (not assignment events) that come within `wait`.
async fn quiet_for(s: &mut KafkaTransactionalStream, wait: Duration) -> Vec<Record> {
    let until = Instant::now() + wait;
    let mut got = Vec::new();
    while Instant::now() < until {
        if let StreamEvent::Records(r) = s.next(100, Duration::from_millis(250)).await.unwrap() {
            got.extend(r);
        }
    }
    got
}

fn payloads(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.payload.clone()).unwrap())
        .collect()
}

/// What a read-committed reader of `topic` sees within `wait`.
async fn committed_outputs(topic: &str, wait: Duration) -> BTreeSet<String> {
    let mut reader = KafkaConsumer::new(&config(), &unique("reader"), &[topic]).unwrap();
    let mut seen = BTreeSet::new();
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_millis(250), reader.recv()).await {
            seen.insert(String::from_utf8(r.payload.clone()).unwrap());
        }
    }
    seen
}

fn outputs_for(topic: &str, records: &[Record]) -> Vec<OutRecord> {
    records
        .iter()
        .map(|r| OutRecord {
            topic: topic.to_string(),
            key: r.key.clone().unwrap_or_default(),
            payload: format!("out-of-{}", String::from_utf8(r.payload.clone()).unwrap())
                .into_bytes(),
            partition: Some(r.partition),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_makes_outputs_and_input_offsets_visible_together() {
    let t = topics().await;
    let group = unique("tx-group");
    produce(&t.input, 8).await;
    let mut s = stream(&group, &t.input, &unique("tx")).await;
    let got = records(&mut s, 8).await;
    assert_eq!(payloads(&got).len(), 8);
    s.commit(outputs_for(&t.output, &got), &got).await.unwrap();
    // A timer-driven batch: outputs without inputs.
    s.commit(
        vec![OutRecord {
            topic: t.output.clone(),
            key: "tick".into(),
            payload: b"tick-fact".to_vec(),
            partition: Some(0),
        }],
        &[],
    )
    .await
    .unwrap();
    s.close().await.unwrap();

    let seen = committed_outputs(&t.output, Duration::from_secs(6)).await;
    let mut want: BTreeSet<String> = (0..8).map(|i| format!("out-of-in-{i}")).collect();
    want.insert("tick-fact".into());
    assert_eq!(seen, want);

    // The offsets went with the outputs: the group's next member starts after them.
    let mut next = stream(&group, &t.input, &unique("tx")).await;
    assert!(quiet_for(&mut next, Duration::from_secs(4))
        .await
        .is_empty());
    produce(&t.input, 1).await;
    let later = records(&mut next, 1).await;
    assert_eq!(payloads(&later), BTreeSet::from(["in-0".to_string()]));
    next.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_batch_leaves_nothing_and_its_inputs_come_again() {
    let t = topics().await;
    let group = unique("tx-group");
    produce(&t.input, 6).await;
    let txid = unique("tx");
    let mut s = stream(&group, &t.input, &txid).await;
    let first = records(&mut s, 6).await;
    // The member dies before committing its batch.
    s.close().await.unwrap();
    drop(s);

    let mut again = stream(&group, &t.input, &txid).await;
    let second = records(&mut again, 6).await;
    assert_eq!(
        payloads(&first),
        payloads(&second),
        "every input comes again"
    );
    again
        .commit(outputs_for(&t.output, &second), &second)
        .await
        .unwrap();
    again.close().await.unwrap();
    let seen = committed_outputs(&t.output, Duration::from_secs(6)).await;
    assert_eq!(seen.len(), 6, "each output once: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zombie_is_fenced_and_its_batch_never_appears() {
    let t = topics().await;
    let group = unique("tx-group");
    let txid = unique("tx");
    produce(&t.input, 4).await;
    // A stream that renews nothing: the first fencing stops it.
    let mut zombie = stream(&group, &t.input, &txid).await.with_fatal_limit(0);
    let got = records(&mut zombie, 4).await;
    // The same instance starts again while the old one still runs (a paused
    // process that comes back): the new one takes the transactional id.
    let mut successor = stream(&unique("tx-other-group"), &t.input, &txid).await;
    let err = zombie
        .commit(outputs_for(&t.output, &got), &got)
        .await
        .expect_err("the zombie cannot commit");
    assert!(matches!(err, TransportError::Closed), "{err:?}");
    assert!(matches!(
        zombie.next(10, Duration::from_millis(100)).await,
        Err(TransportError::Closed)
    ));
    successor.close().await.unwrap();
    let seen = committed_outputs(&t.output, Duration::from_secs(5)).await;
    assert!(seen.is_empty(), "the fenced batch is invisible: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_left_fatal_is_renewed_and_the_batch_is_decided_again_exactly_once() {
    // What a broker restart mid-transaction does to librdkafka's producer
    // (a fatal error, reported as fencing), made here by fencing it.
    let t = topics().await;
    let group = unique("tx-group");
    let txid = unique("tx");
    produce(&t.input, 4).await;
    let mut s = stream(&group, &t.input, &txid).await;
    let got = records(&mut s, 4).await;
    let mut other = stream(&unique("tx-other-group"), &t.input, &txid).await;
    let err = s
        .commit(outputs_for(&t.output, &got), &got)
        .await
        .expect_err("the fenced producer cannot commit");
    assert!(matches!(err, TransportError::Unavailable(_)), "{err:?}");
    // The stream renews its producer and rewinds: a restore, then the same
    // inputs again.
    let started = Instant::now();
    let mut restored = false;
    let mut again = Vec::new();
    while again.len() < 4 {
        assert!(started.elapsed() < Duration::from_secs(60), "no recovery");
        match s.next(100, Duration::from_millis(250)).await {
            Ok(StreamEvent::Assigned(_)) => restored = true,
            Ok(StreamEvent::Records(r)) => {
                assert!(restored || r.is_empty(), "records before the restore");
                again.extend(r);
            }
            Ok(StreamEvent::Revoked(_)) | Err(TransportError::Unavailable(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(payloads(&again), payloads(&got));
    s.commit(outputs_for(&t.output, &again), &again)
        .await
        .expect("the renewed producer commits");
    other.close().await.unwrap();
    s.close().await.unwrap();
    let seen = committed_outputs(&t.output, Duration::from_secs(6)).await;
    assert_eq!(
        seen.len(),
        4,
        "each output once, the fenced batch never: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_of_a_group_split_the_partitions() {
    let t = topics().await;
    let group = unique("tx-group");
    let mut a = stream(&group, &t.input, &unique("tx-a")).await;
    let mut b = stream(&group, &t.input, &unique("tx-b")).await;
    let mut owned_a: BTreeSet<TopicPartition> = BTreeSet::new();
    let mut owned_b: BTreeSet<TopicPartition> = BTreeSet::new();
    let started = Instant::now();
    loop {
        for (s, owned) in [(&mut a, &mut owned_a), (&mut b, &mut owned_b)] {
            match s.next(10, Duration::from_millis(200)).await.unwrap() {
                StreamEvent::Assigned(tps) => owned.extend(tps),
                StreamEvent::Revoked(tps) => {
                    for tp in tps {
                        owned.remove(&tp);
                    }
                }
                StreamEvent::Records(_) => {}
            }
        }
        if !owned_a.is_empty()
            && !owned_b.is_empty()
            && owned_a.len() + owned_b.len() == PARTITIONS as usize
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no split: {owned_a:?} / {owned_b:?}"
        );
    }
    assert!(owned_a.is_disjoint(&owned_b), "{owned_a:?} / {owned_b:?}");
    // Each member gets exactly the records of its own partitions.
    produce(&t.input, 20).await;
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    let until = Instant::now() + Duration::from_secs(60);
    while got_a.len() + got_b.len() < 20 && Instant::now() < until {
        if let StreamEvent::Records(r) = a.next(100, Duration::from_millis(200)).await.unwrap() {
            got_a.extend(r);
        }
        if let StreamEvent::Records(r) = b.next(100, Duration::from_millis(200)).await.unwrap() {
            got_b.extend(r);
        }
    }
    assert_eq!(got_a.len() + got_b.len(), 20);
    for r in &got_a {
        assert!(owned_a.iter().any(|tp| tp.partition == r.partition));
    }
    for r in &got_b {
        assert!(owned_b.iter().any(|tp| tp.partition == r.partition));
    }
    a.commit(Vec::new(), &got_a).await.unwrap();
    b.commit(Vec::new(), &got_b).await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_is_read_from_an_offset_up_to_its_end() {
    let t = topics().await;
    let group = unique("tx-group");
    produce(&t.input, 1).await;
    let mut s = stream(&group, &t.input, &unique("tx")).await;
    let got = records(&mut s, 1).await;
    let outputs: Vec<OutRecord> = (0..5)
        .map(|i| OutRecord {
            topic: t.output.clone(),
            key: "k".into(),
            payload: format!("c{i}").into_bytes(),
            partition: Some(2),
        })
        .collect();
    s.commit(outputs, &got).await.unwrap();
    let all = s.read_partition(&t.output, 2, 0).await.unwrap();
    assert_eq!(
        payloads(&all),
        (0..5).map(|i| format!("c{i}")).collect::<BTreeSet<_>>()
    );
    // Past the records (and the transaction's marker, which takes an offset).
    let end = s.end_offset(&t.output, 2).await.unwrap();
    assert!(end > all[4].offset, "end {end} after {}", all[4].offset);
    let tail = s.read_partition(&t.output, 2, all[3].offset).await.unwrap();
    assert_eq!(
        payloads(&tail),
        BTreeSet::from(["c3".to_string(), "c4".to_string()])
    );
    assert!(s
        .read_partition(&t.output, 2, end)
        .await
        .unwrap()
        .is_empty());
    s.close().await.unwrap();
}
