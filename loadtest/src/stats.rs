//! Latency histograms and counters per kind of request, shared by every
//! buyer task.

use hdrhistogram::Histogram;
use reqwest::StatusCode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Setup,
    Join,
    Status,
    Seats,
    Hold,
    Pay,
    Leave,
    Bookings,
}

#[derive(Default)]
struct PerOp {
    latency: Option<Histogram<u64>>,
    by_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    retries_503: u64,
}

#[derive(Default)]
pub struct Stats {
    ops: Mutex<BTreeMap<Op, PerOp>>,
}

/// One kind of request over the run.
#[derive(Debug, Serialize)]
pub struct OpSummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub by_status: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub retries_503: u64,
}

impl Stats {
    pub fn record(&self, op: Op, status: StatusCode, took: Duration) {
        let mut ops = self.ops.lock().expect("stats lock");
        let e = ops.entry(op).or_default();
        let h = e.latency.get_or_insert_with(|| {
            // 1 µs to 5 min, 3 significant digits.
            Histogram::new_with_bounds(1, 300_000_000, 3).expect("histogram bounds")
        });
        let _ = h.record(took.as_micros().clamp(1, 300_000_000) as u64);
        *e.by_status.entry(status.as_u16()).or_default() += 1;
    }

    pub fn failed(&self, op: Op) {
        self.ops
            .lock()
            .expect("stats lock")
            .entry(op)
            .or_default()
            .transport_errors += 1;
    }

    pub fn retried(&self, op: Op) {
        self.ops
            .lock()
            .expect("stats lock")
            .entry(op)
            .or_default()
            .retries_503 += 1;
    }

    pub fn summary(&self) -> BTreeMap<Op, OpSummary> {
        let ms = |us: u64| us as f64 / 1000.0;
        self.ops
            .lock()
            .expect("stats lock")
            .iter()
            .map(|(op, e)| {
                let h = e.latency.as_ref();
                let q = |quantile: f64| h.map_or(0.0, |h| ms(h.value_at_quantile(quantile)));
                (
                    *op,
                    OpSummary {
                        count: h.map_or(0, |h| h.len()),
                        p50_ms: q(0.50),
                        p95_ms: q(0.95),
                        p99_ms: q(0.99),
                        max_ms: h.map_or(0.0, |h| ms(h.max())),
                        by_status: e.by_status.clone(),
                        transport_errors: e.transport_errors,
                        retries_503: e.retries_503,
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_what_was_recorded() {
        let s = Stats::default();
        for ms in 1..=100 {
            s.record(Op::Hold, StatusCode::CREATED, Duration::from_millis(ms));
        }
        s.record(Op::Hold, StatusCode::CONFLICT, Duration::from_millis(1));
        s.retried(Op::Hold);
        let sum = s.summary();
        let hold = &sum[&Op::Hold];
        assert_eq!(hold.count, 101);
        assert!((hold.p50_ms - 50.0).abs() < 1.0, "{}", hold.p50_ms);
        assert!((hold.p99_ms - 99.0).abs() < 1.0, "{}", hold.p99_ms);
        assert_eq!(hold.by_status[&201], 100);
        assert_eq!(hold.by_status[&409], 1);
        assert_eq!(hold.retries_503, 1);
        assert!(!sum.contains_key(&Op::Join));
    }
}
