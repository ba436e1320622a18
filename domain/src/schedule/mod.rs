//! The schedule processor's pure core: one schedule's waiting room and seat map,
//! decided without locks because exactly one processor owns a schedule.

pub mod model;
pub mod rng;
pub mod state;

#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;

pub use model::*;
pub use state::ScheduleState;
