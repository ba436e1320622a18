//! What the Kafka test binaries share: the broker's address and names no
//! other run uses.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use ticketing_transport::kafka::KafkaConfig;

/// `TICKETING_KAFKA_BROKERS`, default 127.0.0.1:9092.
pub fn config(client_id: &str) -> KafkaConfig {
    KafkaConfig::new(
        std::env::var("TICKETING_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        client_id,
    )
}

/// Unique within the run (counter) and across runs (time and process id).
pub fn unique(name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{name}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
