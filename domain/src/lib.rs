//! The pure core of the ticketing platform.
//!
//! Everything here is deterministic: identifiers, time and randomness come in as
//! arguments, so the same inputs always give the same outputs. Adapters (HTTP,
//! Kafka, CQL, Redis, the embedded log) live in other crates; a test in this crate
//! keeps it that way.

pub mod account;
pub mod audit;
pub mod booking;
pub mod catalog;
pub mod error;
pub mod events;
pub mod ids;
pub mod payment;
pub mod schedule;

pub use error::ValidationError;
