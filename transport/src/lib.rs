//! The event log, behind a port. Producers append records keyed by the owning
//! aggregate (`schedule_id` for everything a schedule owns); consumers read one
//! group's share of partitions and commit offsets only after their work is done.
//!
//! Two adapters: [`kafka`] for the real stack and [`embedded`] for the
//! single-process `ticketing dev`. Both place a key on the same partition
//! number ([`partitioner`]), and both pass the checks in [`contract`].

pub mod contract;
pub mod embedded;
pub mod health;
pub mod kafka;
pub mod partitioner;
pub mod ports;

pub use health::{ClientHealth, Pulse};
pub use ports::*;
