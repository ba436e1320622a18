use std::sync::Arc;
use thiserror::Error;
use ticketing_domain::events::Event;
use ticketing_runtime::Metrics;
use ticketing_schemas::{topics, CodecError, EventCodec};
use ticketing_transport::{Delivered, OutRecord, Producer, TransportError};

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("encoding failed: {0}")]
    Codec(#[from] CodecError),
    #[error("the log did not take the event: {0}")]
    Transport(#[from] TransportError),
}

/// Encodes an event in the Confluent wire format and appends it to its topic,
/// keyed by the aggregate that owns it.
#[derive(Clone)]
pub struct EventPublisher {
    codec: EventCodec,
    producer: Arc<dyn Producer>,
    metrics: Metrics,
}

impl EventPublisher {
    pub fn new(codec: EventCodec, producer: Arc<dyn Producer>, metrics: Metrics) -> Self {
        Self {
            codec,
            producer,
            metrics,
        }
    }

    /// Returns once the log holds the event durably.
    pub async fn publish(&self, event: &Event) -> Result<Delivered, PublishError> {
        let topic = topics::topic_for(event);
        let payload = self.codec.encode(event).await?;
        let delivered = self
            .producer
            .send(OutRecord {
                topic: topic.to_string(),
                key: event.key(),
                partition: None,
                payload,
            })
            .await?;
        self.metrics
            .events_produced
            .with_label_values(&[topic, event.name()])
            .inc();
        Ok(delivered)
    }
}
