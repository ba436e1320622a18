//! Sinks: consumers that turn the log's events into rows.
//!
//! Each sink is a [`runner::RecordHandler`]; the [`runner`] gives every sink the
//! same delivery rules: at least once, offsets committed only after the write,
//! writes idempotent so a redelivery rewrites the same row, and an unavailable
//! store makes the sink wait and retry rather than skip.

pub mod bookings;
pub mod catalog;
pub mod payments;
pub mod request_logs;
pub mod runner;
pub mod schedule_view;
