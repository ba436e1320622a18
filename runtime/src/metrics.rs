//! The platform's Prometheus metrics. Label values are bounded: routes are the
//! matched route templates (never raw paths), topics and event names come from
//! fixed tables, and no label ever carries an id.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

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
    /// Request logs not sent to the log, by why (`full`: the ingress was
    /// answering faster than the log took them; `failed`: the log refused).
    pub request_logs_dropped: IntCounterVec,
}

impl Metrics {
    /// One set per process; `component` (ingress, sink, processor, dev) becomes a
    /// constant label so dashboards can tell the binaries apart.
    pub fn new(component: &str) -> Self {
        let registry = Registry::new_custom(
            Some("ticketing".into()),
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
        let request_logs_dropped = IntCounterVec::new(
            Opts::new(
                "request_logs_dropped_total",
                "Request logs the ingress could not send to the log, by why",
            ),
            &["why"],
        )
        .expect("valid metric");
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_latency.clone()),
            Box::new(events_produced.clone()),
            Box::new(events_consumed.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(sink_retries.clone()),
            Box::new(decisions.clone()),
            Box::new(transaction_latency.clone()),
            Box::new(partitions_owned.clone()),
            Box::new(request_logs_dropped.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
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
            request_logs_dropped,
        }
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
}
