//! The request log: every request the API answers becomes a `RequestLogged`
//! event (time, caller, method, path, status, latency; never a body, a query
//! string, a header or a token) on `ticketing.request-logs.v1`.
//!
//! Logging never slows or fails a request: the middleware hands the event to
//! a bounded queue and returns; a background task publishes. When the queue
//! is full (the log is slower than the traffic), the event is dropped and
//! counted (`ticketing_request_logs_dropped_total`).

use crate::publish::EventPublisher;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use futures::StreamExt;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use ticketing_domain::events::{Event, EventMeta, RequestLogged};
use ticketing_domain::ids::{EventId, UserId};
use ticketing_runtime::shutdown::Shutdown;
use ticketing_runtime::Metrics;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Requests waiting to be published; beyond this they are dropped.
pub const QUEUE: usize = 10_000;
/// Publishes in flight at once: the producer batches them.
const IN_FLIGHT: usize = 256;

/// Who called, filled in by the `Caller` extractor when a handler
/// authenticates, so the token is checked once and never reaches the log.
#[derive(Clone, Default)]
pub struct CallerSlot(Arc<OnceLock<UserId>>);

impl CallerSlot {
    pub fn fill(&self, user: UserId) {
        let _ = self.0.set(user);
    }

    pub fn get(&self) -> Option<UserId> {
        self.0.get().copied()
    }
}

/// The middleware's end of the queue.
#[derive(Clone)]
pub struct RequestLogger {
    tx: mpsc::Sender<RequestLogged>,
    metrics: Metrics,
}

impl RequestLogger {
    /// A logger and the task that publishes what it is given, until shutdown
    /// (then it publishes what is queued and ends).
    pub fn start(
        publisher: EventPublisher,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let failed = metrics.request_logs_dropped.with_label_values(&["failed"]);
        let task =
            tokio::spawn(async move {
                let queued = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|e| (e, rx))
                })
                .take_until(shutdown.wait());
                queued
                    .for_each_concurrent(IN_FLIGHT, |e| {
                        let (publisher, failed) = (publisher.clone(), failed.clone());
                        async move {
                            if let Err(err) = publisher.publish(&Event::RequestLogged(e)).await {
                                failed.inc();
                                tracing::debug!(error = %err, "request log not published");
                            }
                        }
                    })
                    .await;
            });
        (Self { tx, metrics }, task)
    }

    /// Queues `e`, or drops and counts it when the queue is full.
    pub fn log(&self, e: RequestLogged) {
        if self.tx.try_send(e).is_err() {
            self.metrics
                .request_logs_dropped
                .with_label_values(&["full"])
                .inc();
        }
    }
}

/// The event of one answered request.
pub fn logged(
    arrived: chrono::DateTime<Utc>,
    caller: Option<UserId>,
    method: &str,
    path: &str,
    status: u16,
    latency: std::time::Duration,
) -> RequestLogged {
    RequestLogged {
        meta: EventMeta {
            event_id: EventId::from_uuid(Uuid::now_v7()),
            // Milliseconds: what the event and the tables keep.
            occurred_at: chrono::DateTime::from_timestamp_millis(arrived.timestamp_millis())
                .unwrap_or(arrived),
            actor: caller,
        },
        method: method.to_string(),
        path: path.to_string(),
        status,
        latency_micros: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
    }
}

/// Logs every request: the path only (a query string may carry anything),
/// the caller if a handler authenticated one, the status and the time to
/// the response's head.
pub async fn record(State(logger): State<RequestLogger>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let arrived = Utc::now();
    let slot = CallerSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    logger.log(logged(
        arrived,
        slot.get(),
        &method,
        &path,
        response.status().as_u16(),
        started.elapsed(),
    ));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticketing_runtime::shutdown;
    use ticketing_schemas::{topics, EmbeddedSchemaRegistry, EventCodec};
    use ticketing_transport::embedded::EmbeddedLog;
    use ticketing_transport::Consumer;

    #[tokio::test]
    async fn queued_logs_are_published_and_a_full_queue_drops_and_counts() {
        let log = EmbeddedLog::in_memory(&[(topics::REQUEST_LOGS, 2)]);
        let codec = EventCodec::start(Arc::new(EmbeddedSchemaRegistry::in_memory()))
            .await
            .unwrap();
        let metrics = Metrics::new("t");
        let publisher =
            EventPublisher::new(codec.clone(), Arc::new(log.producer()), metrics.clone());
        let (trigger, stop) = shutdown::channel();
        let (logger, task) = RequestLogger::start(publisher, metrics.clone(), stop);
        let user = UserId::from_uuid(Uuid::now_v7());
        let d = std::time::Duration::from_micros(1500);
        logger.log(logged(
            Utc::now(),
            Some(user),
            "GET",
            "/api/v1/users/me",
            200,
            d,
        ));
        logger.log(logged(
            Utc::now(),
            None,
            "POST",
            "/api/v1/auth/login",
            401,
            d,
        ));
        let mut consumer = log.consumer("t", &[topics::REQUEST_LOGS]).unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            let r = tokio::time::timeout(std::time::Duration::from_secs(5), consumer.recv())
                .await
                .unwrap()
                .unwrap();
            match codec.decode(&r.payload).await.unwrap() {
                Event::RequestLogged(e) => {
                    got.push((e.meta.actor, e.path, e.status, e.latency_micros))
                }
                other => panic!("{other:?}"),
            }
        }
        got.sort_by_key(|g| g.2);
        assert_eq!(
            got,
            vec![
                (Some(user), "/api/v1/users/me".to_string(), 200, 1500),
                (None, "/api/v1/auth/login".to_string(), 401, 1500),
            ]
        );
        trigger.trigger();
        task.await.unwrap();

        // Nobody drains a queue of one: the second log is dropped and counted.
        let (tx, _rx) = mpsc::channel(1);
        let full = RequestLogger {
            tx,
            metrics: metrics.clone(),
        };
        full.log(logged(Utc::now(), None, "GET", "/a", 200, d));
        full.log(logged(Utc::now(), None, "GET", "/b", 200, d));
        assert_eq!(
            metrics
                .request_logs_dropped
                .with_label_values(&["full"])
                .get(),
            1
        );
    }
}
