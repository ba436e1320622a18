//! `flashsale`: B buyers arrive at the same second at one schedule, wait in
//! its waiting room, hold seats once admitted, and pay for them (or leave,
//! with `--pay false`). Reports joins/s, holds/s, payments/s, latency
//! percentiles per request, the time until every seat is held and until every
//! seat is paid for (sold out), and the number of oversold seats (which must be
//! 0: the run fails otherwise).
//!
//! It drives any running platform through its public HTTP API: `ticketing dev`
//! or the real stack's ingress. `loadtest/run.sh` starts either and records the
//! result.
//!
//! `--mode open` and `--mode capacity` measure capacity instead of a sale:
//! holds at a fixed offered rate, latency from the intended send time (see
//! [`openloop`]).

mod client;
mod openloop;
mod stats;
mod verdict;

use anyhow::Context;
use clap::Parser;
use client::Client;
use futures::stream::{self, StreamExt};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::json;
use stats::{Op, OpSummary, Stats};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use verdict::{Claim, Verdict};

#[derive(Parser, Debug, Clone)]
#[command(about = "Flash-sale load generator for the ticketing platform")]
struct Args {
    /// The platform's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base_url: String,
    /// Buyers arriving at once.
    #[arg(long, default_value_t = 1000)]
    buyers: usize,
    #[arg(long, default_value_t = 20)]
    rows: u32,
    #[arg(long, default_value_t = 25)]
    cols: u32,
    /// Seats one buyer tries to hold (1..=this, at random).
    #[arg(long, default_value_t = 2)]
    seats_per_buyer: usize,
    /// How often a waiting buyer asks for their status.
    #[arg(long, default_value_t = 250)]
    poll_ms: u64,
    /// Hold attempts per buyer before giving up (seats taken meanwhile).
    #[arg(long, default_value_t = 10)]
    hold_attempts: usize,
    /// Concurrent sign-ups and logins while preparing (not measured).
    #[arg(long, default_value_t = 16)]
    setup_concurrency: usize,
    /// What the run is against, for the report ("dev", "real-stack").
    #[arg(long, default_value = "dev")]
    target: String,
    /// Where to write the JSON report (also printed).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Seed of the buyers' seat choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Buyers pay for what they hold (the sandbox's test card that
    /// succeeds); without it they leave holding.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pay: bool,
    /// `closed`: the flash sale (each buyer waits for its answers). `open`:
    /// holds at `--rate` per second for `--step-secs`. `capacity`: open-loop
    /// steps from `--rate` up by `--step-factor` to `--max-rate`, stopping at
    /// the first whose p99 exceeds `--p99-bound-ms` or that has an error.
    /// The open modes need every buyer admitted at once: start the platform
    /// with TICKETING_ADMISSION_MAX_ACTIVE at least the buyers they sign up.
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    mode: Mode,
    /// Offered holds per second (the first step of a capacity search).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    #[arg(long, default_value_t = 8000.0)]
    max_rate: f64,
    #[arg(long, default_value_t = 1.5)]
    step_factor: f64,
    #[arg(long, default_value_t = 5)]
    step_secs: u64,
    #[arg(long, default_value_t = 100.0)]
    p99_bound_ms: f64,
    /// Single-seat holds per buyer in the open modes (at most the platform's
    /// TICKETING_MAX_SEATS_PER_USER).
    #[arg(long, default_value_t = 4)]
    holds_per_buyer: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Closed,
    Open,
    Capacity,
}

const TEST_CARD: &str = "4242424242424242";

/// How one buyer's visit ended.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Paid,
    Held,
    SoldOut,
    GaveUp,
    NotAdmitted,
    Failed,
}

#[derive(Serialize)]
struct Report {
    target: String,
    buyers: usize,
    seats: usize,
    seats_per_buyer: usize,
    setup_secs: f64,
    sale_secs: f64,
    joins_per_sec: f64,
    holds_per_sec: f64,
    payments_per_sec: f64,
    requests_per_sec: f64,
    /// Until every seat was held by someone.
    time_to_all_held_secs: Option<f64>,
    /// Until every seat was paid for (with `--pay`): the end-to-end sell-out.
    time_to_sell_out_secs: Option<f64>,
    seats_held: usize,
    seats_paid: usize,
    oversold: usize,
    verdict: Verdict,
    outcomes: BTreeMap<Outcome, usize>,
    requests: BTreeMap<Op, OpSummary>,
}

struct Sale {
    client: Client,
    schedule: String,
    args: Args,
    capacity: usize,
    started: Instant,
    seats_held: AtomicUsize,
    seats_paid: AtomicUsize,
    all_held_at_ms: AtomicU64,
    sold_out_at_ms: AtomicU64,
    last_join_done_ms: AtomicU64,
}

impl Sale {
    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// One buyer: join, wait for admission, hold, leave.
    async fn buyer(&self, i: usize, token: &str) -> (Outcome, Option<Claim>) {
        match self.visit(i, token).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("buyer {i}: {e:#}");
                (Outcome::Failed, None)
            }
        }
    }

    async fn visit(&self, i: usize, token: &str) -> anyhow::Result<(Outcome, Option<Claim>)> {
        let queue = format!("/api/v1/schedules/{}/queue", self.schedule);
        let a = self
            .client
            .command(Op::Join, Method::POST, &queue, token, Some(json!({})))
            .await?;
        self.last_join_done_ms
            .fetch_max(self.elapsed_ms(), Ordering::Relaxed);
        anyhow::ensure!(
            a.status.is_success(),
            "join answered {}: {}",
            a.status,
            a.body
        );
        let mut status = a.body["status"].as_str().unwrap_or_default().to_string();
        let me = format!("{queue}/me");
        while status != "ADMITTED" {
            match status.as_str() {
                "WAITING" | "NOT_IN_QUEUE" | "" => {}
                "SOLD_OUT" => return Ok((Outcome::SoldOut, None)),
                _ => return Ok((Outcome::NotAdmitted, None)),
            }
            if self.sold_out() {
                // Nothing left to wait for; leave so the room empties.
                self.leave(&me, token).await?;
                return Ok((Outcome::SoldOut, None));
            }
            tokio::time::sleep(Duration::from_millis(self.args.poll_ms)).await;
            let a = self
                .client
                .call(Op::Status, Method::GET, &me, Some(token), None, None)
                .await?;
            status = a.body["status"].as_str().unwrap_or_default().to_string();
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.args.seed ^ (i as u64) << 16);
        let want = rng.gen_range(1..=self.args.seats_per_buyer.max(1));
        let mut outcome = (Outcome::GaveUp, None);
        for _ in 0..self.args.hold_attempts {
            let mut free: Vec<(u64, u64)> = self
                .client
                .seats(&self.schedule)
                .await?
                .into_iter()
                .filter(|s| s.2 == "AVAILABLE")
                .map(|s| (s.0, s.1))
                .collect();
            if free.is_empty() {
                outcome = (Outcome::SoldOut, None);
                break;
            }
            free.shuffle(&mut rng);
            free.truncate(want);
            let seats: Vec<_> = free
                .iter()
                .map(|(r, c)| json!({"row": r, "col": c}))
                .collect();
            let a = self
                .client
                .command(
                    Op::Hold,
                    Method::POST,
                    &format!("/api/v1/schedules/{}/holds", self.schedule),
                    token,
                    Some(json!({ "seats": seats })),
                )
                .await?;
            match a.status {
                StatusCode::CREATED => {
                    let n = free.len();
                    let total = self.seats_held.fetch_add(n, Ordering::Relaxed) + n;
                    if total >= self.capacity {
                        self.mark(&self.all_held_at_ms);
                    }
                    let claim = Claim {
                        buyer: i,
                        seats: free,
                    };
                    if !self.args.pay {
                        outcome = (Outcome::Held, Some(claim));
                        break;
                    }
                    self.pay(token, &a.body["booking_ids"], n).await?;
                    // Paying freed the admission slot: nothing to leave.
                    return Ok((Outcome::Paid, Some(claim)));
                }
                // Someone was faster: look again.
                StatusCode::CONFLICT => continue,
                StatusCode::FORBIDDEN => {
                    outcome = (Outcome::NotAdmitted, None);
                    break;
                }
                other => anyhow::bail!("hold answered {other}: {}", a.body),
            }
        }
        self.leave(&me, token).await?;
        Ok(outcome)
    }

    async fn pay(
        &self,
        token: &str,
        booking_ids: &serde_json::Value,
        seats: usize,
    ) -> anyhow::Result<()> {
        let body = json!({
            "booking_ids": booking_ids,
            "card": {"number": TEST_CARD, "expiry": "12/35", "cvc": "123"},
        });
        let a = self
            .client
            .command(Op::Pay, Method::POST, "/api/v1/payments", token, Some(body))
            .await?;
        anyhow::ensure!(
            a.status == StatusCode::CREATED,
            "pay answered {}: {}",
            a.status,
            a.body
        );
        let total = self.seats_paid.fetch_add(seats, Ordering::Relaxed) + seats;
        if total >= self.capacity {
            self.mark(&self.sold_out_at_ms);
        }
        Ok(())
    }

    /// Records the first time a milestone is reached.
    fn mark(&self, at: &AtomicU64) {
        let _ = at.compare_exchange(0, self.elapsed_ms(), Ordering::Relaxed, Ordering::Relaxed);
    }

    async fn leave(&self, me: &str, token: &str) -> anyhow::Result<()> {
        let a = self
            .client
            .command(Op::Leave, Method::DELETE, me, token, None)
            .await?;
        anyhow::ensure!(
            a.status == StatusCode::NO_CONTENT,
            "leave answered {}: {}",
            a.status,
            a.body
        );
        Ok(())
    }

    fn sold_out(&self) -> bool {
        self.seats_held.load(Ordering::Relaxed) >= self.capacity
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stats = Arc::new(Stats::default());
    let client = Client::new(&args.base_url, stats.clone())?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    if args.mode != Mode::Closed {
        return open_loop(&args, &client, &run).await;
    }

    // ----- setup (not measured) ------------------------------------------
    let setup = Instant::now();
    let schedule = seller_schedule(client.clone(), &run, &args).await?;
    let tokens: Vec<String> = stream::iter(0..args.buyers)
        .map(|i| {
            let client = client.clone();
            let run = run.clone();
            async move { client.account("USER", &format!("b{i}-{run}")).await }
        })
        .buffered(args.setup_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()
        .context("the buyers' accounts")?;
    // The read model may trail the schedule's creation by a moment.
    let wait = Instant::now();
    while client.seats(&schedule).await.is_err() {
        anyhow::ensure!(
            wait.elapsed() < Duration::from_secs(60),
            "the schedule's seat map never appeared"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let setup_secs = setup.elapsed().as_secs_f64();
    eprintln!(
        "setup: {} buyers and a {}x{} schedule in {setup_secs:.1}s",
        args.buyers, args.rows, args.cols
    );
    // Requests other than sign-ups made while preparing (the seat-map wait).
    let setup_requests: u64 = stats
        .summary()
        .iter()
        .filter(|(op, _)| **op != Op::Setup)
        .map(|(_, s)| s.count)
        .sum();

    // ----- the sale --------------------------------------------------------
    let capacity = (args.rows * args.cols) as usize;
    let sale = Arc::new(Sale {
        client: client.clone(),
        schedule: schedule.clone(),
        args: args.clone(),
        capacity,
        started: Instant::now(),
        seats_held: AtomicUsize::new(0),
        seats_paid: AtomicUsize::new(0),
        all_held_at_ms: AtomicU64::new(0),
        sold_out_at_ms: AtomicU64::new(0),
        last_join_done_ms: AtomicU64::new(0),
    });
    let tasks: Vec<_> = tokens
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, token)| {
            let sale = sale.clone();
            tokio::spawn(async move { sale.buyer(i, &token).await })
        })
        .collect();
    let mut outcomes: BTreeMap<Outcome, usize> = BTreeMap::new();
    let mut claims = Vec::new();
    for t in tasks {
        let (outcome, claim) = t.await?;
        *outcomes.entry(outcome).or_default() += 1;
        claims.extend(claim);
    }
    let sale_secs = sale.started.elapsed().as_secs_f64();
    let sale_requests = stats
        .summary()
        .iter()
        .filter(|(op, _)| **op != Op::Setup)
        .map(|(_, s)| s.count)
        .sum::<u64>()
        - setup_requests;

    // ----- verification ----------------------------------------------------
    let map = client.seats(&schedule).await?;
    let mut pending_by_buyer = BTreeMap::new();
    for claim in &claims {
        let a = client
            .call(
                Op::Bookings,
                Method::GET,
                "/api/v1/bookings",
                Some(&tokens[claim.buyer]),
                None,
                None,
            )
            .await?;
        let seats: Vec<(u64, u64)> = a.body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|b| {
                        b["schedule_id"] == schedule.as_str()
                            && (b["status"] == "PENDING" || b["status"] == "CONFIRMED")
                    })
                    .filter_map(|b| Some((b["row"].as_u64()?, b["col"].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        pending_by_buyer.insert(claim.buyer, seats);
    }
    let verdict = verdict::judge(&claims, &map, &pending_by_buyer, args.seats_per_buyer);

    let requests = stats.summary();
    let joins = requests.get(&Op::Join).map_or(0, |s| s.count);
    let join_window = (sale.last_join_done_ms.load(Ordering::Relaxed).max(1)) as f64 / 1000.0;
    let held_requests = claims.len();
    let sold_out_ms = sale.sold_out_at_ms.load(Ordering::Relaxed);
    let all_held_ms = sale.all_held_at_ms.load(Ordering::Relaxed);
    let payments = requests
        .get(&Op::Pay)
        .and_then(|s| s.by_status.get(&201).copied())
        .unwrap_or(0);
    let report = Report {
        target: args.target.clone(),
        buyers: args.buyers,
        seats: capacity,
        seats_per_buyer: args.seats_per_buyer,
        setup_secs,
        sale_secs,
        joins_per_sec: joins as f64 / join_window,
        holds_per_sec: held_requests as f64 / sale_secs,
        payments_per_sec: payments as f64 / sale_secs,
        requests_per_sec: sale_requests as f64 / sale_secs,
        time_to_all_held_secs: (all_held_ms > 0).then(|| all_held_ms as f64 / 1000.0),
        time_to_sell_out_secs: (sold_out_ms > 0).then(|| sold_out_ms as f64 / 1000.0),
        seats_held: verdict.claimed_seats,
        seats_paid: sale.seats_paid.load(Ordering::Relaxed),
        oversold: verdict.oversold,
        verdict: verdict.clone(),
        outcomes,
        requests,
    };
    print_report(&args, &report)?;
    eprintln!(
        "{}: {} buyers, {} seats: joins/s {:.0}, holds/s {:.0}, payments/s {:.0}, sold out in {}, oversold {}",
        report.target,
        report.buyers,
        report.seats,
        report.joins_per_sec,
        report.holds_per_sec,
        report.payments_per_sec,
        report
            .time_to_sell_out_secs
            .map_or("(not sold out)".to_string(), |s| format!("{s:.2}s")),
        report.oversold
    );
    anyhow::ensure!(verdict.is_clean(), "the sale is not clean: {verdict:?}");
    Ok(())
}

#[derive(Serialize)]
struct OpenReport {
    target: String,
    mode: Mode,
    seats: usize,
    buyers: usize,
    setup_secs: f64,
    p99_bound_ms: f64,
    steps: Vec<openloop::Step>,
    /// The highest offered rate whose step held (p99 within the bound, no
    /// error); `None` if the first step failed.
    capacity_per_sec: Option<f64>,
    /// Seats the map shows HELD after the run, which must equal the holds
    /// answered 201 (each request asked for a seat nobody else wanted).
    seats_held_in_map: usize,
    holds_answered_ok: u64,
}

/// `--mode open` and `--mode capacity`.
async fn open_loop(args: &Args, client: &Client, run: &str) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.step_secs.max(1));
    let rates = match args.mode {
        Mode::Open => vec![args.rate],
        _ => openloop::rates(args.rate, args.step_factor, args.max_rate),
    };
    let total = openloop::requests_for(&rates, duration);
    let seats = (args.rows * args.cols) as usize;
    anyhow::ensure!(
        total <= seats,
        "the steps need {total} seats; the schedule has {seats} (raise --rows/--cols)"
    );
    let per_buyer = args.holds_per_buyer.max(1);
    let buyers = total.div_ceil(per_buyer);

    let setup = Instant::now();
    let schedule = seller_schedule(client.clone(), run, args).await?;
    let queue = format!("/api/v1/schedules/{schedule}/queue");
    // Everyone signs up, joins and is admitted before the clock starts.
    let tokens: Vec<String> = stream::iter(0..buyers)
        .map(|i| {
            let (client, queue) = (client.clone(), queue.clone());
            let tag = format!("o{i}-{run}");
            async move {
                let token = client.account("USER", &tag).await?;
                let a = client
                    .command(Op::Join, Method::POST, &queue, &token, Some(json!({})))
                    .await?;
                anyhow::ensure!(a.status.is_success(), "join answered {}: {}", a.status, a.body);
                let mut status = a.body["status"].as_str().unwrap_or_default().to_string();
                let waited = Instant::now();
                while status != "ADMITTED" {
                    anyhow::ensure!(
                        waited.elapsed() < Duration::from_secs(60),
                        "buyer {i} is {status}, not ADMITTED: start the platform with TICKETING_ADMISSION_MAX_ACTIVE >= {buyers}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let me = client
                        .call(Op::Status, Method::GET, &format!("{queue}/me"), Some(&token), None, None)
                        .await?;
                    status = me.body["status"].as_str().unwrap_or_default().to_string();
                }
                Ok(token)
            }
        })
        .buffered(args.setup_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()
        .context("the buyers")?;
    let setup_secs = setup.elapsed().as_secs_f64();
    eprintln!(
        "setup: {buyers} admitted buyers and a {}x{} schedule in {setup_secs:.1}s",
        args.rows, args.cols
    );

    let targets = openloop::Targets {
        schedule: &schedule,
        cols: args.cols,
        tokens: &tokens,
        per_buyer,
    };
    let mut steps = Vec::new();
    let mut first = 0;
    let mut capacity = None;
    for rate in rates {
        let step = openloop::step(client, &targets, first, rate, duration).await;
        first += step.sent;
        eprintln!(
            "offered {:>6.0}/s: achieved {:>6.0}/s, p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms, errors {:?}",
            step.offered_per_sec, step.achieved_per_sec, step.p50_ms, step.p99_ms, step.p999_ms, step.max_ms, step.errors
        );
        let held = step.held(args.p99_bound_ms);
        steps.push(step);
        if held {
            capacity = Some(rate);
        } else if args.mode == Mode::Capacity {
            break;
        }
        // Let the queue of the step drain before the next one starts.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ok: u64 = steps.iter().map(|s| s.ok).sum();
    let held_in_map = eventually_held(client, &schedule, ok as usize).await?;
    let report = OpenReport {
        target: args.target.clone(),
        mode: args.mode,
        seats,
        buyers,
        setup_secs,
        p99_bound_ms: args.p99_bound_ms,
        steps,
        capacity_per_sec: capacity,
        seats_held_in_map: held_in_map,
        holds_answered_ok: ok,
    };
    print_report(args, &report)?;
    eprintln!(
        "{}: capacity {} holds/s at p99 <= {} ms",
        report.target,
        capacity.map_or("(first step failed)".to_string(), |c| format!("{c:.0}")),
        args.p99_bound_ms
    );
    anyhow::ensure!(
        held_in_map == ok as usize,
        "the map shows {held_in_map} seats HELD, but {ok} holds were answered 201"
    );
    Ok(())
}

/// The HELD seats of the map, once the read model has caught up with `want`
/// (or after 60 s, whatever it shows then).
async fn eventually_held(client: &Client, schedule: &str, want: usize) -> anyhow::Result<usize> {
    let started = Instant::now();
    loop {
        let held = client
            .seats(schedule)
            .await?
            .iter()
            .filter(|s| s.2 == "HELD")
            .count();
        if held == want || started.elapsed() > Duration::from_secs(60) {
            return Ok(held);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A seller and their schedule of `--rows` × `--cols` seats, on sale now.
async fn seller_schedule(client: Client, run: &str, args: &Args) -> anyhow::Result<String> {
    let seller = client
        .account("SELLER", &format!("seller-{run}"))
        .await
        .context("the seller's account")?;
    client
        .schedule(&seller, args.rows, args.cols, 90)
        .await
        .context("the schedule")
}

/// The JSON report on standard output, and in `--json` if given.
fn print_report(args: &Args, report: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    println!("{text}");
    if let Some(path) = &args.json {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
