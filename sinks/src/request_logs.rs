//! The managers' request log, from the request-logs topic.

use crate::runner::{HandleError, RecordHandler};
use async_trait::async_trait;
use chrono::Duration;
use std::sync::Arc;
use ticketing_domain::events::{Event, RequestLogged};
use ticketing_schemas::{CodecError, EventCodec};
use ticketing_storage::{RequestLogRow, RequestLogs};
use ticketing_transport::Record;

/// Writes each request as a row kept for the retention counted from the
/// request itself, so a replay of old records writes nothing that outlives
/// its time.
pub struct RequestLogSink {
    codec: EventCodec,
    store: Arc<dyn RequestLogs>,
    retention: Duration,
}

impl RequestLogSink {
    pub fn new(codec: EventCodec, store: Arc<dyn RequestLogs>, retention_days: u32) -> Self {
        Self {
            codec,
            store,
            retention: Duration::days(i64::from(retention_days.max(1))),
        }
    }
}

/// The row of one logged request.
pub fn request_row(e: &RequestLogged) -> RequestLogRow {
    RequestLogRow {
        request_id: e.meta.event_id.as_uuid(),
        at: e.meta.occurred_at,
        user_id: e.meta.actor,
        method: e.method.clone(),
        path: e.path.clone(),
        status: e.status,
        latency_micros: e.latency_micros,
    }
}

#[async_trait]
impl RecordHandler for RequestLogSink {
    fn name(&self) -> &'static str {
        "request-log-sink"
    }

    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let event = match self.codec.decode(&record.payload).await {
            Ok(e) => e,
            Err(CodecError::Registry(why)) => return Err(HandleError::Retryable(why)),
            Err(e) => return Err(HandleError::Poison(e.to_string())),
        };
        let Event::RequestLogged(e) = event else {
            return Ok(());
        };
        self.store
            .put_request_log(&request_row(&e), e.meta.occurred_at + self.retention)
            .await
            .map_err(|e| HandleError::Retryable(e.to_string()))
    }
}
