use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use ticketing_runtime::shutdown::Shutdown;
use ticketing_runtime::Metrics;
use ticketing_transport::{Consumer, Record, TransportError};

#[derive(Debug, Error)]
pub enum HandleError {
    /// The store or registry is unavailable: the same record is tried again.
    #[error("retryable: {0}")]
    Retryable(String),
    /// The record can never be handled (bytes that are not an event). It is
    /// logged and counted, then passed over so the partition is not blocked.
    #[error("poison record: {0}")]
    Poison(String),
}

#[async_trait]
pub trait RecordHandler: Send + Sync + 'static {
    /// A short, fixed name for logs and metric labels.
    fn name(&self) -> &'static str;
    async fn handle(&self, record: &Record) -> Result<(), HandleError>;
}

/// How often a sink publishes its consumer lag: often enough for a dashboard and
/// an autoscaler, rare enough that the broker round trip costs nothing.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// Sets `ticketing_consumer_lag{consumer, topic, partition}`. A failed look-up is
/// logged and skipped: lag is for watching, never a reason to stop consuming.
async fn report_lag<C: Consumer>(consumer: &C, name: &str, metrics: &Metrics) {
    match consumer.lag().await {
        Ok(lags) => {
            for (topic, partition, lag) in lags {
                metrics
                    .consumer_lag
                    .with_label_values(&[name, topic.as_str(), &partition.to_string()])
                    .set(lag);
            }
        }
        Err(e) => tracing::debug!(sink = name, error = %e, "consumer lag unavailable"),
    }
}

/// Back-off between retries of one record: doubling from 50 ms up to 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << attempt.min(7)).min(5_000))
}

/// Consumes until shutdown. Returns an error only when the consumer itself fails.
pub async fn run<C: Consumer>(
    mut consumer: C,
    handler: Arc<dyn RecordHandler>,
    metrics: Metrics,
    shutdown: Shutdown,
) -> Result<(), TransportError> {
    let name = handler.name();
    let mut lag_every = tokio::time::interval(LAG_INTERVAL);
    lag_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let record = tokio::select! {
            _ = shutdown.clone().wait() => break,
            _ = lag_every.tick() => {
                report_lag(&consumer, name, &metrics).await;
                continue;
            }
            // recv is cancel-safe: losing the race to the tick loses no record.
            r = consumer.recv() => r?,
        };
        let mut attempt = 0;
        loop {
            match handler.handle(&record).await {
                Ok(()) => break,
                Err(HandleError::Poison(why)) => {
                    tracing::error!(sink = name, topic = %record.topic, partition = record.partition,
                        offset = record.offset, reason = %why, "poison record passed over");
                    metrics.sink_retries.with_label_values(&["poison"]).inc();
                    break;
                }
                Err(HandleError::Retryable(why)) => {
                    // Waiting out a store is work, not a wedge: the consumer
                    // is not polled meanwhile, so the retry keeps its pulse.
                    if let Some(health) = consumer.health() {
                        health.beat();
                    }
                    metrics.sink_retries.with_label_values(&[name]).inc();
                    let wait = backoff(attempt);
                    tracing::warn!(sink = name, topic = %record.topic, partition = record.partition,
                        offset = record.offset, reason = %why, retry_in_ms = wait.as_millis() as u64, "write failed; retrying");
                    attempt += 1;
                    tokio::select! {
                        // The record stays uncommitted and comes again after a restart.
                        _ = shutdown.clone().wait() => return consumer.close().await,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        consumer.commit(&record).await?;
        metrics
            .events_consumed
            .with_label_values(&[record.topic.as_str(), name])
            .inc();
    }
    // Lets the last commits land before the process goes.
    consumer.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(50));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(6), Duration::from_millis(3_200));
        assert_eq!(backoff(7), Duration::from_millis(5_000));
        assert_eq!(backoff(40), Duration::from_millis(5_000));
    }

    use async_trait::async_trait;
    use parking_lot::Mutex;
    use std::collections::HashMap;
    use ticketing_runtime::shutdown;
    use ticketing_transport::embedded::EmbeddedLog;
    use ticketing_transport::{OutRecord, Producer};

    /// Fails each record `fail_times` times with a retryable error, calls
    /// payloads starting with `!` poison, and remembers what it handled.
    struct Flaky {
        fail_times: u32,
        attempts: Mutex<HashMap<i64, u32>>,
        handled: Mutex<Vec<Vec<u8>>>,
    }

    #[async_trait]
    impl RecordHandler for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn handle(&self, record: &Record) -> Result<(), HandleError> {
            if record.payload.starts_with(b"!") {
                return Err(HandleError::Poison("not an event".into()));
            }
            let mut attempts = self.attempts.lock();
            let n = attempts.entry(record.offset).or_default();
            *n += 1;
            if *n <= self.fail_times {
                return Err(HandleError::Retryable("store down".into()));
            }
            self.handled.lock().push(record.payload.clone());
            Ok(())
        }
    }

    #[tokio::test]
    async fn retries_until_the_write_lands_skips_poison_and_commits_after() {
        let log = EmbeddedLog::in_memory(&[("t", 1)]);
        let producer = log.producer();
        for payload in [&b"a"[..], b"!junk", b"b"] {
            producer
                .send(OutRecord {
                    topic: "t".into(),
                    key: "k".into(),
                    partition: None,
                    payload: payload.to_vec(),
                })
                .await
                .unwrap();
        }
        let handler = Arc::new(Flaky {
            fail_times: 2,
            attempts: Mutex::default(),
            handled: Mutex::default(),
        });
        let metrics = Metrics::new("test");
        let (trigger, stop) = shutdown::channel();
        let task = tokio::spawn(run(
            log.consumer("g", &["t"]).unwrap(),
            handler.clone(),
            metrics.clone(),
            stop,
        ));
        for _ in 0..200 {
            if log.committed_offsets("g", "t") == vec![3] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        trigger.trigger();
        task.await.unwrap().unwrap();
        assert_eq!(
            log.committed_offsets("g", "t"),
            vec![3],
            "all three committed"
        );
        assert_eq!(
            *handler.handled.lock(),
            vec![b"a".to_vec(), b"b".to_vec()],
            "in order, each once"
        );
        assert_eq!(metrics.sink_retries.with_label_values(&["flaky"]).get(), 4);
        assert_eq!(metrics.sink_retries.with_label_values(&["poison"]).get(), 1);
        assert_eq!(
            metrics
                .events_consumed
                .with_label_values(&["t", "flaky"])
                .get(),
            3
        );
        assert!(metrics.render().contains(
            r#"ticketing_consumer_lag{consumer="flaky",partition="0",topic="t",component="test"}"#
        ));
    }

    #[tokio::test]
    async fn an_uncommitted_record_comes_again_after_a_stop_mid_retry() {
        let log = EmbeddedLog::in_memory(&[("t", 1)]);
        log.producer()
            .send(OutRecord {
                topic: "t".into(),
                key: "k".into(),
                partition: None,
                payload: b"a".to_vec(),
            })
            .await
            .unwrap();
        let handler = Arc::new(Flaky {
            fail_times: u32::MAX,
            attempts: Mutex::default(),
            handled: Mutex::default(),
        });
        let (trigger, stop) = shutdown::channel();
        let task = tokio::spawn(run(
            log.consumer("g", &["t"]).unwrap(),
            handler.clone(),
            Metrics::new("t"),
            stop,
        ));
        tokio::time::sleep(Duration::from_millis(120)).await;
        trigger.trigger();
        task.await.unwrap().unwrap();
        assert_eq!(
            log.committed_offsets("g", "t"),
            vec![0],
            "nothing committed while the store was down"
        );
        assert!(handler.handled.lock().is_empty());
    }
}
