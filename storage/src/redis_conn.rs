//! One way to open Redis for every store that lives there.

use crate::ports::StoreError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// Connects now (failing if Redis is unreachable); later outages are retried
/// by the connection manager, and calls fail with `Unavailable` meanwhile. The
/// URL may carry a password, so errors never include it.
pub(crate) async fn connect(url: &str) -> Result<ConnectionManager, StoreError> {
    let client = redis::Client::open(url)
        .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL ({:?})", e.kind())))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))
}
