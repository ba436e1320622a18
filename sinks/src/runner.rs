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
    loop {
        let record = tokio::select! {
            _ = shutdown.clone().wait() => break,
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
}
