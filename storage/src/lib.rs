//! Where accounts, the catalog and login sessions are kept.
//!
//! The ingress and the sinks talk to the traits in [`ports`]; which engine sits
//! behind them is a start-up choice: [`embedded`] (a redb file under
//! `TICKETING_DATA_DIR`, for `ticketing dev`), or CQL + Redis for the real stack.

pub mod embedded;
pub mod ports;

pub use ports::*;
