//! The pulse of one log client, for liveness and readiness probes: when it
//! last made progress (a poll served, a transaction committed, a restore read
//! a batch) and whether it belongs to its consumer group.
//!
//! Kafka clients beat from librdkafka's statistics callback, which is served
//! only while the application polls the consumer: a loop stuck anywhere else
//! (a call that never returns, a restore that never ends) stops the beats even
//! though librdkafka's own threads are fine. The same statistics say whether
//! the group coordinator counts this member in (`cgrp.join_state`).

use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const UNKNOWN: u8 = 0;
const MEMBER: u8 = 1;
const OUTSIDE: u8 = 2;

#[derive(Debug)]
struct Inner {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last progress.
    progress_ms: AtomicI64,
    membership: AtomicU8,
    /// Milliseconds since `epoch` of the last change of `membership`.
    membership_since_ms: AtomicI64,
}

/// Clones share one pulse.
#[derive(Clone, Debug)]
pub struct ClientHealth(Arc<Inner>);

impl Default for ClientHealth {
    fn default() -> Self {
        Self(Arc::new(Inner {
            epoch: Instant::now(),
            progress_ms: AtomicI64::new(0),
            membership: AtomicU8::new(UNKNOWN),
            membership_since_ms: AtomicI64::new(0),
        }))
    }
}

/// What a probe makes of a pulse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pulse {
    Healthy,
    /// Polled, but not a member of its group for this long.
    OutsideGroup(Duration),
    /// No progress for this long.
    Stalled(Duration),
}

impl ClientHealth {
    fn now_ms(&self) -> i64 {
        self.0.epoch.elapsed().as_millis() as i64
    }

    /// The client made progress now.
    pub fn beat(&self) {
        self.0.progress_ms.store(self.now_ms(), Ordering::Release);
    }

    /// The group coordinator counts this client in (or not). Clients without a
    /// group never call it and are never reported outside one.
    pub fn set_member(&self, member: bool) {
        let new = if member { MEMBER } else { OUTSIDE };
        if self.0.membership.swap(new, Ordering::AcqRel) != new {
            self.0
                .membership_since_ms
                .store(self.now_ms(), Ordering::Release);
        }
    }

    /// Whether the client is in its group now (`None`: not known yet).
    pub fn is_member(&self) -> Option<bool> {
        match self.0.membership.load(Ordering::Acquire) {
            MEMBER => Some(true),
            OUTSIDE => Some(false),
            _ => None,
        }
    }

    pub fn since_progress(&self) -> Duration {
        let last = self.0.progress_ms.load(Ordering::Acquire);
        Duration::from_millis((self.now_ms() - last).max(0) as u64)
    }

    /// Stalled once no progress for `stall_after`; outside its group once it
    /// has been so for `outside_after` (a rebalance takes it out briefly).
    pub fn pulse(&self, stall_after: Duration, outside_after: Duration) -> Pulse {
        let quiet = self.since_progress();
        if quiet >= stall_after {
            return Pulse::Stalled(quiet);
        }
        if self.is_member() == Some(false) {
            let since = self.0.membership_since_ms.load(Ordering::Acquire);
            let outside = Duration::from_millis((self.now_ms() - since).max(0) as u64);
            if outside >= outside_after {
                return Pulse::OutsideGroup(outside);
            }
        }
        Pulse::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pulse_is_stalled_without_beats_and_outside_after_the_grace() {
        let h = ClientHealth::default();
        h.beat();
        let long = Duration::from_secs(3600);
        assert_eq!(h.pulse(long, long), Pulse::Healthy);
        assert!(matches!(h.pulse(Duration::ZERO, long), Pulse::Stalled(_)));
        assert_eq!(h.is_member(), None);
        h.set_member(false);
        assert_eq!(h.pulse(long, long), Pulse::Healthy, "within the grace");
        assert!(matches!(
            h.pulse(long, Duration::ZERO),
            Pulse::OutsideGroup(_)
        ));
        h.set_member(true);
        assert_eq!(h.pulse(long, Duration::ZERO), Pulse::Healthy);
        assert_eq!(h.is_member(), Some(true));
    }
}
