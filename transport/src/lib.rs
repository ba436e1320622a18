//! The event log, behind a port. Producers append records keyed by the owning
//! aggregate (`schedule_id` for everything a schedule owns); consumers read one
//! group's share of partitions and commit offsets only after their work is done.

pub mod ports;

pub use ports::*;
