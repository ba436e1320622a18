//! Where accounts, the catalog and login sessions are kept.
//!
//! The ingress and the sinks talk to the traits in [`ports`]; which engine sits
//! behind them is a start-up choice: [`embedded`] (a redb file under
//! `TICKETING_DATA_DIR`, for `ticketing dev`), or [`cql`] + [`redis_sessions`]
//! for the real stack.

pub mod cql;
pub mod embedded;
pub mod listing;
pub mod ports;
mod redis_conn;
pub mod redis_schedules;
pub mod redis_sessions;

/// The behaviour every adapter must share, as runnable checks. Compiled for this
/// crate's tests and for the `real-stack` integration tests.
#[cfg(any(test, feature = "real-stack"))]
#[doc(hidden)]
pub mod contract;

pub use ports::*;
