//! `kill -9` of the Kafka broker, on the real stack: once during a flash sale
//! with payments, once while nothing sells. The processor runs as its own OS
//! process (the `ticketing` binary), the ingress and the sinks in this one;
//! nobody restarts anything but the broker. Within a bounded time every
//! partition is owned again, the buyers' retried commands are decided, and the
//! verdict is clean.
//!
//! Its own test binary: it stops the one broker every other test uses, and
//! cargo runs test binaries one after another. Its two tests take turns.

#![cfg(feature = "real-stack")]

mod common;

use common::*;
use reqwest::StatusCode;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use ticketing::settings::ScheduleSettings;
use ticketing_runtime::shutdown::{self, ShutdownTrigger};

/// The real-stack tests' processor group (see `processor_crash.rs`).
const GROUP: &str = "schedule-processor-e2e";
const PARTITIONS: u64 = 12;
const PG_SECRET: &str = "test_sk_broker";
/// How long the broker stays dead before it is started again.
const OUTAGE: Duration = Duration::from_secs(8);
/// From the broker's return: every partition owned again within this.
const RECOVERY_BOUND: Duration = Duration::from_secs(120);

/// The two tests stop the same broker: one at a time.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn schedules() -> ScheduleSettings {
    ScheduleSettings {
        admission_max_active: 20,
        admission_ttl_secs: 600,
        hold_ttl_secs: 300,
        max_seats_per_user: SCENARIO_MAX_SEATS,
        payment_ttl_secs: 120,
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `kill -9` of the broker `deploy/local/stack.sh` started, [`OUTAGE`] of
/// silence, then `stack.sh up kafka` (which returns once it is healthy).
/// Returns the instant the broker was back.
async fn restart_broker() -> Instant {
    let local = std::env::var("TICKETING_LOCAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".local"));
    let pid_file = local.join("run/kafka.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (is the stack of deploy/local/stack.sh up?)",
            pid_file.display()
        )
    });
    let pid = pid.trim().to_string();
    let killed = Command::new("kill").args(["-9", &pid]).status().unwrap();
    assert!(killed.success(), "kill -9 {pid}");
    // Gone for good before the outage is timed.
    while Path::new(&format!("/proc/{pid}")).exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(OUTAGE).await;
    let up = tokio::task::spawn_blocking(|| {
        Command::new(repo().join("deploy/local/stack.sh"))
            .args(["up", "kafka"])
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(up.success(), "stack.sh up kafka");
    Instant::now()
}

struct Rig {
    api: Api,
    processor_ops: Api,
    processor: Killed,
    log: PathBuf,
    trigger: ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _logs: tempfile::TempDir,
}

impl Rig {
    /// The processor's log, for a failing assertion's message.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn stop(mut self) {
        let _ = self.processor.0.kill();
        let _ = self.processor.0.wait();
        self.trigger.trigger();
        for t in std::mem::take(&mut self.tasks) {
            t.await.unwrap().unwrap();
        }
    }
}

async fn start(name: &str) -> Rig {
    let keyspace = format!("{name}_{}", unique());
    let (trigger, stop) = shutdown::channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pg = spawn_pg_sandbox(PG_SECRET, stop.clone()).await;
    // Payments cut short by the outage are settled soon (sweeper after 10 s).
    let ingress = test_ingress(addr, &keyspace, pg, PG_SECRET, schedules(), 5_000, 10);
    let (api, tasks) =
        start_ingress_and_sink(ingress, listener, &keyspace, schedules(), stop).await;

    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("processor.log");
    let ops_addr = free_addr();
    let processor = spawn_processor_process(
        &format!("broker-{keyspace}"),
        GROUP,
        50,
        &schedules(),
        ops_addr,
        &log,
    );
    let rig = Rig {
        api,
        processor_ops: Api::new(ops_addr),
        processor,
        log,
        trigger,
        tasks,
        _logs: logs,
    };
    wait_owned(&rig, Duration::from_secs(120)).await;
    rig
}

/// One sample of the processor's metrics.
async fn metric(rig: &Rig, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", rig.processor_ops.base))
        .await
        .expect("the processor's ops endpoint answers")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every partition owned, the consumer in its group, `/readyz` and
/// `/healthz` both 200.
async fn wait_owned(rig: &Rig, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let owned = metric(rig, "ticketing_processor_partitions_owned").await;
        let member = metric(rig, "ticketing_consumer_group_member").await;
        let (ready, _) = rig.processor_ops.get("/readyz", None).await;
        let (live, _) = rig.processor_ops.get("/healthz", None).await;
        if owned as u64 == PARTITIONS
            && member == 1.0
            && ready == StatusCode::OK
            && live == StatusCode::OK
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "partitions owned {owned}, member {member}, ready {ready}, live {live} after {within:?}; processor log:\n{}",
            rig.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What one buyer bought.
struct Bought {
    seats: BTreeSet<(u64, u64)>,
    payment_id: Option<String>,
}

/// One buyer: join, wait for admission, hold 1 or 2 free seats (again on a
/// conflict), pay for them with the card that succeeds, leave the line. Every
/// command is retried with its Idempotency-Key through 503s, as a client does
/// while the platform recovers.
async fn buy(api: &Api, schedule: &str, buyer: &Account, i: usize) -> Bought {
    join_and_wait_admitted(api, schedule, &buyer.access).await;
    let mut bought = Bought {
        seats: BTreeSet::new(),
        payment_id: None,
    };
    for attempt in 0..30 {
        let (pick, ids) = match try_hold(api, schedule, &buyer.access, i, attempt).await {
            HoldTry::Held { seats, booking_ids } => (seats, booking_ids),
            HoldTry::Taken => continue,
            HoldTry::NoneFree => break,
        };
        // The payment route reads the bookings from the read model, which
        // trails the hold's answer (by a lot while the schedule view sink
        // replays the changelog after a start or an outage).
        eventually("the held bookings in the read model", 120, || async {
            let pending: BTreeSet<String> = bookings(api, &buyer.access)
                .await
                .into_iter()
                .filter(|b| b["status"] == "PENDING")
                .map(|b| b["booking_id"].as_str().unwrap_or_default().to_string())
                .collect();
            ids.iter().all(|id| pending.contains(id)).then_some(())
        })
        .await;
        let key = uuid::Uuid::new_v4().to_string();
        let (s, paid) = pay(api, &buyer.access, &key, &ids, CARD_OK).await;
        assert!(
            s == StatusCode::CREATED || s == StatusCode::OK,
            "{s} {paid}"
        );
        assert_eq!(paid["status"], "COMPLETED", "{paid}");
        bought.seats = pick.into_iter().collect();
        bought.payment_id = Some(paid["payment_id"].as_str().unwrap().to_string());
        break;
    }
    let (s, body) = leave(api, schedule, &buyer.access).await;
    assert!(
        s == StatusCode::NO_CONTENT || s == StatusCode::NOT_FOUND,
        "{s} {body}"
    );
    bought
}

/// The verdict once everything caught up: no seat sold twice, the map shows
/// exactly the seats paid for as SOLD, every buyer's bookings are CONFIRMED
/// for what they paid, and every payment is COMPLETED in the payment sink's
/// table (the managers' listing).
async fn assert_clean(
    api: &Api,
    schedule: &str,
    buyers: &[Account],
    bought: &[Bought],
    since: chrono::DateTime<chrono::Utc>,
) {
    let mut owner: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for (i, b) in bought.iter().enumerate() {
        for seat in &b.seats {
            if let Some(prev) = owner.insert(*seat, i) {
                panic!("seat {seat:?} sold to buyers {prev} and {i}");
            }
        }
    }
    eventually("the map shows every seat paid for as SOLD", 60, || async {
        let sold: BTreeSet<(u64, u64)> = seat_statuses(api, schedule)
            .await
            .into_iter()
            .filter(|x| x.2 == "SOLD")
            .map(|x| (x.0, x.1))
            .collect();
        (sold == owner.keys().copied().collect()).then_some(())
    })
    .await;
    for (buyer, b) in buyers.iter().zip(bought) {
        let want = b.seats.clone();
        eventually("a buyer's bookings are CONFIRMED in CQL", 60, || async {
            let confirmed: BTreeSet<(u64, u64)> = bookings(api, &buyer.access)
                .await
                .into_iter()
                .filter(|x| x["status"] == "CONFIRMED" && x["schedule_id"] == schedule)
                .map(|x| (x["row"].as_u64().unwrap(), x["col"].as_u64().unwrap()))
                .collect();
            (confirmed == want).then_some(())
        })
        .await;
    }
    let (manager, _) = login(api, "admin@example.com", "admin-password-1").await;
    let paid: BTreeSet<String> = bought.iter().filter_map(|b| b.payment_id.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Every sink of the cluster writes every payment of the shared topic:
        // this test's are the ones since it started.
        let from = since
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .replace('+', "%2B");
        let listed = all_pages(
            api,
            &manager,
            &format!("/api/v1/admin/payments?from={from}&limit=200"),
        )
        .await;
        let completed: BTreeSet<String> = listed
            .iter()
            .filter(|p| p["status"] == "COMPLETED")
            .map(|p| p["payment_id"].as_str().unwrap().to_string())
            .collect();
        if paid.is_subset(&completed) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the payment sink's table misses {:?} as COMPLETED ({} rows listed)",
            paid.difference(&completed).collect::<Vec<_>>(),
            listed.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_mid_sale_comes_back_and_the_sale_finishes_clean() {
    let _turn = BROKER.lock().await;
    let since = chrono::Utc::now();
    let rig = start("broker_sale").await;
    let api = &rig.api;
    let (_, _, schedule) = schedule_on_sale(api, 6, 8, 1_000).await;
    let buyers = buyers_for(api, 40).await;

    let sale = {
        let api = rig.api.clone();
        let schedule = schedule.clone();
        let buyers = buyers.clone();
        tokio::spawn(async move {
            let runs = buyers
                .iter()
                .enumerate()
                .map(|(i, b)| buy(&api, &schedule, b, i));
            futures::future::join_all(runs).await
        })
    };
    eventually("some seats sold before the broker dies", 120, || async {
        let sold = seat_statuses(api, &schedule)
            .await
            .into_iter()
            .filter(|x| x.2 == "SOLD")
            .count();
        (sold >= 4).then_some(())
    })
    .await;
    let committed_before = metric(&rig, "ticketing_events_consumed_total").await;
    let back = restart_broker().await;

    // The first decision committed after the broker's return.
    let first_decision = loop {
        if metric(&rig, "ticketing_events_consumed_total").await > committed_before {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < RECOVERY_BOUND,
            "no decision committed within {RECOVERY_BOUND:?} of the broker's return; processor log:\n{}",
            rig.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_owned(&rig, RECOVERY_BOUND.saturating_sub(back.elapsed())).await;
    let owned_again = back.elapsed();

    let bought = match tokio::time::timeout(Duration::from_secs(300), sale).await {
        Ok(r) => r.expect("the buyers finished"),
        Err(_) => panic!("the sale did not finish; processor log:\n{}", rig.log()),
    };
    let sold: usize = bought.iter().map(|b| b.seats.len()).sum();
    assert_eq!(sold, 48, "every seat found exactly one buyer");
    assert_clean(api, &schedule, &buyers, &bought, since).await;
    let lag_zero = loop {
        let lag = metric(&rig, "ticketing_consumer_lag").await;
        // Transaction markers take offsets: an idle partition shows at most one.
        if lag <= PARTITIONS as f64 {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < Duration::from_secs(600),
            "lag stays at {lag}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "broker restart mid-sale: first decision {:.1} s, every partition owned {:.1} s, lag caught up {:.1} s after the broker's return",
        first_decision.as_secs_f64(),
        owned_again.as_secs_f64(),
        lag_zero.as_secs_f64()
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_broker_restart_with_no_sale_the_next_sale_works() {
    let _turn = BROKER.lock().await;
    let since = chrono::Utc::now();
    let rig = start("broker_idle").await;
    let back = restart_broker().await;
    wait_owned(&rig, RECOVERY_BOUND).await;
    eprintln!(
        "broker restart while idle: every partition owned {:.1} s after the broker's return",
        back.elapsed().as_secs_f64()
    );

    let api = &rig.api;
    let (_, _, schedule) = schedule_on_sale(api, 3, 4, 1_000).await;
    let buyers = buyers_for(api, 10).await;
    let runs = buyers
        .iter()
        .enumerate()
        .map(|(i, b)| buy(api, &schedule, b, i));
    let bought = tokio::time::timeout(Duration::from_secs(240), futures::future::join_all(runs))
        .await
        .unwrap_or_else(|_| panic!("the sale did not finish; processor log:\n{}", rig.log()));
    let sold: usize = bought.iter().map(|b| b.seats.len()).sum();
    assert_eq!(sold, 12, "every seat found exactly one buyer");
    assert_clean(api, &schedule, &buyers, &bought, since).await;
    rig.stop().await;
}
