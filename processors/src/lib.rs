//! The processors: partitioned state machines around the log.
//!
//! A processor instance owns some partitions of `ticketing.schedules.v1`; every
//! schedule lives on exactly one partition, so its waiting room and seat map
//! have exactly one writer and need no lock. [`partition::PartitionWorker`] is
//! the deterministic heart of one partition; the adapters feed it records and
//! carry its outputs to the log.

pub mod partition;
pub mod runner;

pub use runner::{ProcessorConfig, ProcessorError, ScheduleProcessor};
