//! What every binary of the platform shares: logging, metrics, health endpoints
//! and shutdown. Nothing here knows about tickets.

pub mod health;
pub mod metrics;
pub mod ops;
pub mod shutdown;
pub mod telemetry;

pub use health::{Check, Health};
pub use metrics::Metrics;
pub use ops::ops_router;
