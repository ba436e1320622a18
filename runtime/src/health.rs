//! What `/healthz` and `/readyz` answer: a readiness flag the binary sets, plus
//! probes on its long-running loops (a Kafka consumer, a processor's
//! transaction loop) that say whether each still makes progress.
//!
//! Liveness fails only when a loop has stalled: an orchestrator restarts a
//! wedged process, never one whose broker is merely away (a loop waiting out
//! an outage still makes progress: it polls). Readiness fails while the flag is
//! down or any probe says the loop cannot do its work now (for example a
//! consumer that belongs to no group).

use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One probe's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Healthy,
    /// Running, but unable to do its work now (readiness fails).
    Unready(String),
    /// No progress for too long: the process is wedged (liveness fails).
    Stalled(String),
}

type ProbeFn = dyn Fn() -> Check + Send + Sync;

#[derive(Default)]
struct Inner {
    ready: AtomicBool,
    probes: RwLock<Vec<(String, Arc<ProbeFn>)>>,
}

/// Shared by a binary's loops and its ops router; clones share one state.
#[derive(Clone, Default)]
pub struct Health(Arc<Inner>);

impl Health {
    /// The binary's own word: set once its engines answered at start-up,
    /// cleared when it shuts down or its main loop ends.
    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::Release);
    }

    /// Adds a probe, checked on every `/healthz` and `/readyz`.
    pub fn watch(
        &self,
        name: impl Into<String>,
        probe: impl Fn() -> Check + Send + Sync + 'static,
    ) {
        self.0.probes.write().push((name.into(), Arc::new(probe)));
    }

    fn checks(&self) -> Vec<(String, Check)> {
        let probes: Vec<(String, Arc<ProbeFn>)> = self.0.probes.read().clone();
        probes
            .into_iter()
            .map(|(name, probe)| (name, probe()))
            .collect()
    }

    /// `Err` with the stalled loops' reasons when any has stalled.
    pub fn liveness(&self) -> Result<(), String> {
        let stalled: Vec<String> = self
            .checks()
            .into_iter()
            .filter_map(|(name, check)| match check {
                Check::Stalled(why) => Some(format!("{name}: {why}")),
                _ => None,
            })
            .collect();
        if stalled.is_empty() {
            Ok(())
        } else {
            Err(stalled.join("; "))
        }
    }

    /// `Err` with the reasons when the flag is down or any probe objects.
    pub fn readiness(&self) -> Result<(), String> {
        let mut why: Vec<String> = Vec::new();
        if !self.0.ready.load(Ordering::Acquire) {
            why.push("starting or stopping".into());
        }
        for (name, check) in self.checks() {
            match check {
                Check::Healthy => {}
                Check::Unready(w) | Check::Stalled(w) => why.push(format!("{name}: {w}")),
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU8;

    #[test]
    fn the_flag_and_every_probe_decide_readiness_and_only_stalls_decide_liveness() {
        let health = Health::default();
        assert!(health.readiness().is_err(), "not ready before the flag");
        assert!(health.liveness().is_ok());
        health.set_ready(true);
        assert!(health.readiness().is_ok());

        let state = Arc::new(AtomicU8::new(0));
        let seen = state.clone();
        health.watch("consumer", move || match seen.load(Ordering::Relaxed) {
            0 => Check::Healthy,
            1 => Check::Unready("in no group for 40 s".into()),
            _ => Check::Stalled("no poll for 130 s".into()),
        });
        assert!(health.readiness().is_ok() && health.liveness().is_ok());

        state.store(1, Ordering::Relaxed);
        assert_eq!(
            health.readiness(),
            Err("consumer: in no group for 40 s".into())
        );
        assert!(health.liveness().is_ok(), "out of its group is not wedged");

        state.store(2, Ordering::Relaxed);
        assert_eq!(health.liveness(), Err("consumer: no poll for 130 s".into()));
        assert!(health.readiness().is_err());

        state.store(0, Ordering::Relaxed);
        health.set_ready(false);
        assert!(health.readiness().is_err() && health.liveness().is_ok());
    }
}
