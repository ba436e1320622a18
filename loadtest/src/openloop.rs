//! Open-loop load: holds sent at a fixed offered rate whatever the platform
//! answers, each one's latency measured from the instant it was due (not from
//! when it could be sent), so a platform that falls behind shows its queueing
//! instead of slowing the client down (no coordinated omission, as wrk2 and
//! Gatling's constant-rate injection do it). Every request is one free seat of
//! a big schedule held by an admitted buyer, so the figure is the rate of
//! decisions, not how fast seats run out.
//!
//! A capacity search steps the offered rate up until the p99 passes a bound
//! or a request fails, and reports the highest rate that held.

use crate::client::Client;
use hdrhistogram::Histogram;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Requests in flight at most; past it a due request is counted as dropped
/// by the client (the platform is far behind, the step has failed anyway).
const MAX_IN_FLIGHT: usize = 20_000;

/// Who holds which seat: request `i` is buyer `i / per_buyer`'s hold of seat
/// `first_seat + i` (row-major), so no two requests ever want the same seat.
pub struct Targets<'a> {
    pub schedule: &'a str,
    pub cols: u32,
    pub tokens: &'a [String],
    pub per_buyer: usize,
}

impl Targets<'_> {
    fn seat(&self, index: usize) -> (u64, u64) {
        let cols = self.cols as usize;
        ((index / cols + 1) as u64, (index % cols + 1) as u64)
    }

    fn token(&self, index: usize) -> &str {
        &self.tokens[index / self.per_buyer]
    }
}

/// One step at one offered rate.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub offered_per_sec: f64,
    pub duration_secs: f64,
    pub sent: usize,
    /// Holds answered 201 per second of the step (until the last answer).
    pub achieved_per_sec: f64,
    pub ok: u64,
    /// Anything but 201, by status (`transport` when no answer came,
    /// `dropped` when the client had too many requests in flight).
    pub errors: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// How late the client itself sent requests at worst (its own lag,
    /// included in the latencies above).
    pub max_send_lag_ms: f64,
}

impl Step {
    pub fn held(&self, p99_bound_ms: f64) -> bool {
        self.errors.is_empty() && self.p99_ms <= p99_bound_ms
    }
}

struct Tally {
    latency: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    last_answer: Option<Instant>,
}

/// Sends `count` holds at `rate` per second, starting with seat `first`.
pub async fn step(
    client: &Client,
    targets: &Targets<'_>,
    first: usize,
    rate: f64,
    duration: Duration,
) -> Step {
    let count = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
    let tally = Arc::new(Mutex::new(Tally {
        latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"),
        ok: 0,
        errors: BTreeMap::new(),
        last_answer: None,
    }));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let path = format!("/api/v1/schedules/{}/holds", targets.schedule);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut max_lag = Duration::ZERO;
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        max_lag = max_lag.max(tokio::time::Instant::now().saturating_duration_since(due));
        let index = first + i;
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            *tally
                .lock()
                .expect("tally")
                .errors
                .entry("dropped".into())
                .or_default() += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (row, col) = targets.seat(index);
        let token = targets.token(index).to_string();
        let body = json!({ "seats": [{ "row": row, "col": col }] });
        let (client, path, tally, in_flight) = (
            client.clone(),
            path.clone(),
            tally.clone(),
            in_flight.clone(),
        );
        let due = due.into_std();
        tasks.push(tokio::spawn(async move {
            let key = uuid::Uuid::new_v4().to_string();
            let answer = client
                .once(Method::POST, &path, Some(&token), Some(&key), Some(body))
                .await;
            let now = Instant::now();
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let mut t = tally.lock().expect("tally");
            let took = now.saturating_duration_since(due);
            let _ = t
                .latency
                .record(took.as_micros().clamp(1, 600_000_000) as u64);
            t.last_answer = Some(t.last_answer.map_or(now, |l| l.max(now)));
            match answer {
                Ok(StatusCode::CREATED) => t.ok += 1,
                Ok(other) => *t.errors.entry(other.as_u16().to_string()).or_default() += 1,
                Err(_) => *t.errors.entry("transport".into()).or_default() += 1,
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let t = tally.lock().expect("tally");
    let ms = |us: u64| us as f64 / 1000.0;
    let window = t
        .last_answer
        .map_or(duration, |l| l.saturating_duration_since(start.into_std()))
        .max(Duration::from_millis(1));
    Step {
        offered_per_sec: rate,
        duration_secs: duration.as_secs_f64(),
        sent: count,
        achieved_per_sec: t.ok as f64 / window.as_secs_f64(),
        ok: t.ok,
        errors: t.errors.clone(),
        p50_ms: ms(t.latency.value_at_quantile(0.50)),
        p99_ms: ms(t.latency.value_at_quantile(0.99)),
        p999_ms: ms(t.latency.value_at_quantile(0.999)),
        max_ms: ms(t.latency.max()),
        max_send_lag_ms: max_lag.as_secs_f64() * 1000.0,
    }
}

/// The offered rates of a capacity search: `start`, then each `factor` times
/// the last, up to `max` (inclusive).
pub fn rates(start: f64, factor: f64, max: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut r = start.max(1.0);
    while r <= max * 1.000_001 {
        out.push(r.round());
        if factor <= 1.0 {
            break;
        }
        r *= factor;
    }
    out
}

/// Requests a list of steps needs in all.
pub fn requests_for(rates: &[f64], duration: Duration) -> usize {
    rates
        .iter()
        .map(|r| (r * duration.as_secs_f64()).round().max(1.0) as usize)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_steps_geometrically_up_to_its_ceiling() {
        assert_eq!(
            rates(500.0, 2.0, 4000.0),
            vec![500.0, 1000.0, 2000.0, 4000.0]
        );
        assert_eq!(rates(500.0, 1.5, 1200.0), vec![500.0, 750.0, 1125.0]);
        assert_eq!(rates(300.0, 1.0, 9000.0), vec![300.0], "one fixed rate");
        assert_eq!(requests_for(&[500.0, 1000.0], Duration::from_secs(4)), 6000);
    }

    #[test]
    fn requests_never_share_a_seat_and_each_buyer_gets_its_quota() {
        let tokens: Vec<String> = (0..3).map(|i| format!("t{i}")).collect();
        let t = Targets {
            schedule: "s",
            cols: 5,
            tokens: &tokens,
            per_buyer: 4,
        };
        let seats: std::collections::BTreeSet<_> = (0..12).map(|i| t.seat(i)).collect();
        assert_eq!(seats.len(), 12);
        assert_eq!(t.seat(0), (1, 1));
        assert_eq!(t.seat(5), (2, 1));
        assert_eq!((t.token(3), t.token(4), t.token(11)), ("t0", "t1", "t2"));
    }

    #[test]
    fn a_step_holds_only_without_errors_and_under_the_bound() {
        let mut s = Step {
            offered_per_sec: 100.0,
            duration_secs: 1.0,
            sent: 100,
            achieved_per_sec: 100.0,
            ok: 100,
            errors: BTreeMap::new(),
            p50_ms: 3.0,
            p99_ms: 40.0,
            p999_ms: 60.0,
            max_ms: 70.0,
            max_send_lag_ms: 1.0,
        };
        assert!(s.held(100.0));
        assert!(!s.held(20.0));
        s.errors.insert("503".into(), 1);
        assert!(!s.held(100.0));
    }
}
