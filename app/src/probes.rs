//! Liveness and readiness of the real stack's Kafka clients, as `/healthz`,
//! `/readyz` and two metrics per consumer (`ticketing_consumer_group_member`,
//! `ticketing_consumer_idle_seconds`).

use crate::settings::StackSettings;
use std::time::Duration;
use ticketing_runtime::shutdown::Shutdown;
use ticketing_runtime::{Check, Health, Metrics};
use ticketing_transport::{ClientHealth, Pulse};

/// How often the metrics are refreshed from the pulses.
const REFRESH: Duration = Duration::from_secs(2);

/// What being outside its consumer group means for a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Membership {
    /// The process cannot do its work outside the group (a processor, a
    /// sink): readiness fails.
    Required,
    /// Shown by the metric only. The ingress's reply listener: an ingress
    /// that left the load balancer would turn clients' 503s (with
    /// `Retry-After`, answered while the broker is away) into refused
    /// connections.
    Reported,
}

/// Watches one client: liveness fails when it has stalled for the stack's
/// `stall_after_secs`; readiness when it stalled, or (if `Required`) has been
/// outside its group for `outside_group_after_secs`.
pub(crate) fn watch(
    health: &Health,
    metrics: &Metrics,
    stack: &StackSettings,
    name: &str,
    client: ClientHealth,
    membership: Membership,
    shutdown: &Shutdown,
) {
    let stall_after = Duration::from_secs(stack.stall_after_secs.max(1));
    let outside_after = Duration::from_secs(stack.outside_group_after_secs);
    let probe = client.clone();
    health.watch(name, move || {
        match probe.pulse(stall_after, outside_after) {
            Pulse::Healthy => Check::Healthy,
            Pulse::Stalled(quiet) => Check::Stalled(format!(
                "no poll, commit or restore read for {} s",
                quiet.as_secs()
            )),
            Pulse::OutsideGroup(outside) if membership == Membership::Required => Check::Unready(
                format!("outside its consumer group for {} s", outside.as_secs()),
            ),
            Pulse::OutsideGroup(_) => Check::Healthy,
        }
    });
    let member = metrics.consumer_group_member.with_label_values(&[name]);
    let idle = metrics.consumer_idle.with_label_values(&[name]);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            if let Some(m) = client.is_member() {
                member.set(i64::from(m));
            }
            idle.set(client.since_progress().as_secs_f64());
            tokio::select! {
                _ = stop.clone().wait() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
    });
}
