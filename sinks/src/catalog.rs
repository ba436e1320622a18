use crate::runner::{HandleError, RecordHandler};
use async_trait::async_trait;
use std::sync::Arc;
use ticketing_domain::catalog::{Concert, Schedule, Stage};
use ticketing_domain::events::Event;
use ticketing_schemas::{CodecError, EventCodec};
use ticketing_storage::{CatalogStore, StoreError};
use ticketing_transport::Record;

/// Writes stages, concerts and schedules from their creation events. Each write
/// upserts the whole row from the event alone, so replaying a topic from the
/// start gives the same tables.
pub struct CatalogSink {
    codec: EventCodec,
    store: Arc<dyn CatalogStore>,
}

impl CatalogSink {
    pub fn new(codec: EventCodec, store: Arc<dyn CatalogStore>) -> Self {
        Self { codec, store }
    }
}

fn store_error(e: StoreError) -> HandleError {
    HandleError::Retryable(e.to_string())
}

#[async_trait]
impl RecordHandler for CatalogSink {
    fn name(&self) -> &'static str {
        "catalog-sink"
    }

    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let event = match self.codec.decode(&record.payload).await {
            Ok(e) => e,
            Err(CodecError::Registry(why)) => return Err(HandleError::Retryable(why)),
            Err(e) => return Err(HandleError::Poison(e.to_string())),
        };
        match &event {
            Event::StageCreated(e) => self
                .store
                .put_stage(&Stage::from(e))
                .await
                .map_err(store_error),
            Event::ConcertCreated(e) => self
                .store
                .put_concert(&Concert::from(e))
                .await
                .map_err(store_error),
            Event::ScheduleCreated(e) => self
                .store
                .put_schedule(&Schedule::from(e))
                .await
                .map_err(store_error),
            // Other events share these topics and belong to other consumers.
            _ => Ok(()),
        }
    }
}
