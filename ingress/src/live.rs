//! Live views for managers: a background task reads a topic from its end and
//! fans the events it picks out to every subscriber (the SSE handlers). Each
//! ingress instance reads every partition itself, so a manager connected to
//! any instance sees everything.

use std::sync::Arc;
use ticketing_domain::events::{Event, PaymentChanged, RequestLogged};
use ticketing_runtime::shutdown::Shutdown;
use ticketing_schemas::topics;
use ticketing_schemas::EventCodec;
use ticketing_transport::{Consumer, TransportError};
use tokio::sync::broadcast;

/// What the managers' live views show: payment changes and answered
/// requests, read from their topics by one consumer.
#[derive(Clone, Debug)]
pub enum LiveEvent {
    Payment(Box<PaymentChanged>),
    Request(RequestLogged),
}

impl LiveEvent {
    /// The topics the live views read.
    pub const TOPICS: [&'static str; 2] = [topics::PAYMENTS, topics::REQUEST_LOGS];

    /// What the live views keep of an event.
    pub fn pick(event: Event) -> Option<Self> {
        match event {
            Event::PaymentChanged(e) => Some(Self::Payment(Box::new(e))),
            Event::RequestLogged(e) => Some(Self::Request(e)),
            _ => None,
        }
    }
}

/// How many events a slow subscriber may fall behind before it skips some
/// (it is told how many, and carries on).
pub const FEED_CAPACITY: usize = 4096;

/// One live feed of `T`s. Cloning shares it.
#[derive(Clone)]
pub struct LiveFeed<T> {
    tx: broadcast::Sender<T>,
}

impl<T: Clone + Send + 'static> LiveFeed<T> {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<T> {
        self.tx.subscribe()
    }

    /// Hands `item` to every subscriber there is now; with none it is dropped:
    /// a live view has no history.
    pub fn send(&self, item: T) {
        let _ = self.tx.send(item);
    }
}

impl<T: Clone + Send + 'static> Default for LiveFeed<T> {
    fn default() -> Self {
        Self::new(FEED_CAPACITY)
    }
}

/// Feeds `feed` from `consumer` until shutdown: every record is decoded and
/// what `pick` keeps is sent. A record that cannot be decoded is skipped (the
/// sinks are where every record counts); a consumer that fails is retried
/// after a pause rather than taking the view down.
pub async fn run_feed<T: Clone + Send + 'static>(
    mut consumer: Box<dyn Consumer>,
    codec: EventCodec,
    pick: Arc<dyn Fn(Event) -> Option<T> + Send + Sync>,
    feed: LiveFeed<T>,
    shutdown: Shutdown,
) {
    loop {
        let record = tokio::select! {
            _ = shutdown.clone().wait() => break,
            r = consumer.recv() => r,
        };
        match record {
            Ok(record) => match codec.decode(&record.payload).await {
                Ok(event) => {
                    if let Some(item) = pick(event) {
                        feed.send(item);
                    }
                }
                Err(e) => {
                    tracing::debug!(topic = %record.topic, error = %e, "live view: record skipped")
                }
            },
            Err(TransportError::Closed) => break,
            Err(e) => {
                tracing::warn!(error = %e, "live view: consumer failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
    let _ = consumer.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticketing_domain::events::{EventMeta, RequestLogged};
    use ticketing_domain::ids::EventId;
    use ticketing_runtime::shutdown;
    use ticketing_schemas::EmbeddedSchemaRegistry;
    use ticketing_transport::embedded::EmbeddedLog;
    use ticketing_transport::{OutRecord, Producer};
    use uuid::Uuid;

    fn logged(path: &str) -> Event {
        Event::RequestLogged(RequestLogged {
            meta: EventMeta {
                event_id: EventId::from_uuid(Uuid::now_v7()),
                occurred_at: chrono::DateTime::from_timestamp_millis(1_900_000_000_000).unwrap(),
                actor: None,
            },
            method: "GET".into(),
            path: path.into(),
            status: 200,
            latency_micros: 5,
        })
    }

    #[tokio::test]
    async fn subscribers_get_what_is_picked_from_what_comes_after_the_start() {
        let log = EmbeddedLog::in_memory(&[(topics::REQUEST_LOGS, 3)]);
        let codec = EventCodec::start(Arc::new(EmbeddedSchemaRegistry::in_memory()))
            .await
            .unwrap();
        let producer = log.producer();
        let send = |event: Event| {
            let (codec, producer) = (codec.clone(), producer.clone());
            async move {
                producer
                    .send(OutRecord {
                        topic: topics::REQUEST_LOGS.into(),
                        key: event.key(),
                        partition: None,
                        payload: codec.encode(&event).await.unwrap(),
                    })
                    .await
                    .unwrap();
            }
        };
        send(logged("/before")).await;
        let feed = LiveFeed::<String>::new(16);
        let mut a = feed.subscribe();
        let mut b = feed.subscribe();
        let (trigger, stop) = shutdown::channel();
        let pick: Arc<dyn Fn(Event) -> Option<String> + Send + Sync> = Arc::new(|e| match e {
            Event::RequestLogged(r) if r.path != "/skip" => Some(r.path),
            _ => None,
        });
        let task = tokio::spawn(run_feed(
            Box::new(log.tail(&[topics::REQUEST_LOGS]).unwrap()),
            codec.clone(),
            pick,
            feed.clone(),
            stop,
        ));
        for p in ["/one", "/skip", "/two"] {
            send(logged(p)).await;
        }
        for rx in [&mut a, &mut b] {
            let mut got = vec![];
            for _ in 0..2 {
                got.push(
                    tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                        .await
                        .unwrap()
                        .unwrap(),
                );
            }
            got.sort();
            assert_eq!(got, ["/one", "/two"]);
        }
        trigger.trigger();
        task.await.unwrap();
    }
}
