//! The platform's Prometheus metrics. Label values are bounded: routes are the
//! matched route templates (never raw paths), topics and event names come from
//! fixed tables, and no label ever carries an id.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every series name starts with it.
const PREFIX: &str = "ticketing";

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_latency: HistogramVec,
    pub events_produced: IntCounterVec,
    pub events_consumed: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    pub sink_retries: IntCounterVec,
    /// Schedule commands decided, by outcome (`joined`, `held`, `rejected`, ...).
    pub decisions: IntCounterVec,
    /// One consume-decide-produce transaction of a processor, commit included.
    pub transaction_latency: HistogramVec,
    /// Partitions a processor instance owns now.
    pub partitions_owned: IntGaugeVec,
    /// 1 while a consumer is a member of its group, 0 while it is not (a
    /// session timed out, the coordinator is away, a rejoin has not settled).
    pub consumer_group_member: IntGaugeVec,
    /// Seconds since a consumer last made progress (a poll served, a
    /// transaction committed, a restore read); liveness fails past a bound.
    pub consumer_idle: prometheus::GaugeVec,
    /// Request logs not sent to the log, by why (`full`: the ingress was
    /// answering faster than the log took them; `failed`: the log refused).
    pub request_logs_dropped: IntCounterVec,
    /// The full name of every series family above, as Prometheus shows it.
    names: std::sync::Arc<[String]>,
}

impl Metrics {
    /// One set per process; `component` (ingress, sink, processor, dev) becomes a
    /// constant label so dashboards can tell the binaries apart.
    pub fn new(component: &str) -> Self {
        let registry = Registry::new_custom(
            Some(PREFIX.into()),
            Some([("component".to_string(), component.to_string())].into()),
        )
        .expect("static registry options are valid");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let http_latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route, method and status",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let events_produced = IntCounterVec::new(
            Opts::new("events_produced_total", "Events appended to the log"),
            &["topic", "event"],
        )
        .expect("valid metric");
        let events_consumed = IntCounterVec::new(
            Opts::new(
                "events_consumed_total",
                "Events read and handled from the log",
            ),
            &["topic", "consumer"],
        )
        .expect("valid metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "consumer_lag",
                "Records not yet handled, per consumer group, topic and partition",
            ),
            &["consumer", "topic", "partition"],
        )
        .expect("valid metric");
        let sink_retries = IntCounterVec::new(
            Opts::new(
                "sink_retries_total",
                "Writes a sink retried because its store was unavailable",
            ),
            &["sink"],
        )
        .expect("valid metric");
        let decisions = IntCounterVec::new(
            Opts::new(
                "schedule_decisions_total",
                "Schedule commands decided by the processor, by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let transaction_latency = HistogramVec::new(
            HistogramOpts::new(
                "processor_transaction_seconds",
                "One consume-decide-produce transaction, commit included",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["processor"],
        )
        .expect("valid metric");
        let partitions_owned = IntGaugeVec::new(
            Opts::new(
                "processor_partitions_owned",
                "Input partitions this processor instance owns",
            ),
            &["processor"],
        )
        .expect("valid metric");
        let consumer_group_member = IntGaugeVec::new(
            Opts::new(
                "consumer_group_member",
                "1 while the consumer is a member of its consumer group, else 0",
            ),
            &["consumer"],
        )
        .expect("valid metric");
        let consumer_idle = prometheus::GaugeVec::new(
            Opts::new(
                "consumer_idle_seconds",
                "Seconds since the consumer last polled, committed or restored",
            ),
            &["consumer"],
        )
        .expect("valid metric");
        let request_logs_dropped = IntCounterVec::new(
            Opts::new(
                "request_logs_dropped_total",
                "Request logs the ingress could not send to the log, by why",
            ),
            &["why"],
        )
        .expect("valid metric");
        let names: Vec<String> = [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_latency.clone()),
            Box::new(events_produced.clone()),
            Box::new(events_consumed.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(sink_retries.clone()),
            Box::new(decisions.clone()),
            Box::new(transaction_latency.clone()),
            Box::new(partitions_owned.clone()),
            Box::new(consumer_group_member.clone()),
            Box::new(consumer_idle.clone()),
            Box::new(request_logs_dropped.clone()),
        ]
        .into_iter()
        .map(|c| {
            let names: Vec<String> = c
                .desc()
                .iter()
                .map(|d| format!("{PREFIX}_{}", d.fq_name))
                .collect();
            registry.register(c).expect("metric names are unique");
            names
        })
        .collect::<Vec<_>>()
        .concat();
        Self {
            registry,
            http_requests,
            http_latency,
            events_produced,
            events_consumed,
            consumer_lag,
            sink_retries,
            decisions,
            transaction_latency,
            partitions_owned,
            consumer_group_member,
            consumer_idle,
            request_logs_dropped,
            names: names.into(),
        }
    }

    /// The family names this process exports (`ticketing_http_requests_total`,
    /// ...), labelled or not yet.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_series() {
        let m = Metrics::new("test");
        m.http_requests
            .with_label_values(&["/api/v1/users", "POST", "201"])
            .inc();
        m.consumer_lag
            .with_label_values(&["catalog-sink", "ticketing.catalog.v1", "0"])
            .set(3);
        let text = m.render();
        assert!(text.contains(
            r#"ticketing_http_requests_total{method="POST",route="/api/v1/users",status="201",component="test"} 1"#
        ));
        assert!(text.contains("ticketing_consumer_lag{"));
    }

    /// The `ticketing_*` families an ops file's queries name (histogram
    /// series read as their family).
    fn queried(text: &str) -> std::collections::BTreeSet<String> {
        let mut found = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("ticketing_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            found.insert(family.to_string());
            rest = &tail[end..];
        }
        found
    }

    /// A renamed metric would leave a panel or an alert silently empty; a new
    /// one without a panel would go unwatched.
    #[test]
    fn the_dashboard_and_the_alerts_name_only_metrics_that_exist_and_show_them_all() {
        let exported: std::collections::BTreeSet<String> =
            Metrics::new("test").names().iter().cloned().collect();
        assert_eq!(exported.len(), 12, "{exported:?}");
        let dashboard = queried(include_str!(
            "../../monitoring/grafana/dashboards/ticketing-overview.json"
        ));
        let alerts = queried(include_str!("../../monitoring/prometheus/alerts.yml"));
        for name in dashboard.iter().chain(&alerts) {
            assert!(
                exported.contains(name),
                "{name} is queried but not exported"
            );
        }
        for name in &exported {
            assert!(dashboard.contains(name), "{name} has no panel");
        }
    }
}
