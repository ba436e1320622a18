//! `kill -9` of the schedule processor in the middle of a flash sale, on the
//! real stack: the processor runs as its own OS process (the `ticketing`
//! binary), is killed without warning while buyers hold seats, and is started
//! again. Nothing decided before the crash is lost, nothing is decided twice,
//! and holds still expire on time.
//!
//! Its own test binary, so no other processor of the e2e group runs at the same
//! time: the killed process owns every partition, the schedule's included.

#![cfg(feature = "real-stack")]

mod common;

use common::*;
use reqwest::StatusCode;
use std::time::Duration;
use ticketing::settings::{HttpSettings, IngressSettings, ScheduleSettings};
use ticketing_runtime::shutdown;

/// The real-stack tests' processor group: one group per cluster, since every
/// group writes the one changelog. No other member runs while this binary does
/// (cargo runs test binaries one after another), so its settings may differ:
/// a hold long enough to outlive the restart, so a seat held before the crash
/// must still be held by the same buyer after it.
const GROUP: &str = "schedule-processor-e2e";
const MAX_ACTIVE: u32 = 5;
const HOLD_TTL_SECS: i64 = 90;

fn schedules() -> ScheduleSettings {
    ScheduleSettings {
        admission_max_active: MAX_ACTIVE,
        admission_ttl_secs: 600,
        hold_ttl_secs: HOLD_TTL_SECS,
        max_seats_per_user: SCENARIO_MAX_SEATS,
        payment_ttl_secs: 120,
    }
}

/// The processor as a child process; its log goes to `log`. The restart
/// restores from snapshots plus the changelog after them.
fn spawn_processor(instance: &str, log: &std::path::Path) -> Killed {
    spawn_processor_process(instance, GROUP, 20, &schedules(), free_addr(), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_processor_mid_sale_loses_and_doubles_nothing() {
    let keyspace = format!("crash_{}", unique());
    let (trigger, stop) = shutdown::channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ingress = IngressSettings {
        http: HttpSettings {
            listen: addr,
            admin_email: None,
            admin_password: None,
            token_secret: Some("an-integration-test-secret-of-enough-length".into()),
            phone_keys: Some(ticketing_ingress::security::phone::PhoneCipher::generate_spec("it1")),
            card_keys: Some(ticketing_ingress::security::card::CardCipher::generate_spec("it1")),
            access_ttl_secs: 900,
            refresh_ttl_secs: 3600,
            decision_timeout_ms: 3_000,
            payment_sweep_after_secs: 60,
            schedules: schedules(),
        },
        stack: stack_settings(&keyspace),
        // Nothing is paid here: a provider nobody answers at is enough.
        pg_url: Some("http://127.0.0.1:9".into()),
        pg_secret_key: Some("test_sk_unused".into()),
        pg_timeout_ms: 1_000,
    };
    let (api, tasks) =
        start_ingress_and_sink(ingress, listener, &keyspace, schedules(), stop).await;

    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("processor.log");
    let instance = format!("crash-{keyspace}");
    let mut processor = spawn_processor(&instance, &log);

    let (_, _, schedule) = schedule_on_sale(&api, 6, 5, 700).await;
    let accounts = buyers_for(&api, 45).await;

    // The sale runs while the processor is killed and restarted under it.
    let sale = {
        let api = Api::new(addr);
        let schedule = schedule.clone();
        let accounts: Vec<Account> = accounts
            .iter()
            .map(|a| Account {
                user_id: a.user_id.clone(),
                email: a.email.clone(),
                password: a.password.clone(),
                access: a.access.clone(),
                refresh: a.refresh.clone(),
            })
            .collect();
        tokio::spawn(async move { run_buyers(&api, &schedule, &accounts).await })
    };
    let before = eventually("some seats held before the crash", 120, || async {
        let held: Vec<(u64, u64)> = seat_statuses(&api, &schedule)
            .await
            .into_iter()
            .filter(|x| x.2 == "HELD")
            .map(|x| (x.0, x.1))
            .collect();
        (held.len() >= 6).then_some(held)
    })
    .await;
    processor.0.kill().expect("SIGKILL");
    processor.0.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut processor = spawn_processor(&instance, &log);

    let held = match tokio::time::timeout(Duration::from_secs(240), sale).await {
        Ok(r) => r.expect("the buyers finished"),
        Err(_) => {
            let _ = processor.0.kill();
            panic!(
                "the sale did not finish; processor log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    };
    let total: usize = held.iter().sum();
    assert_eq!(total, 30, "every seat found exactly one buyer");
    assert_not_oversold(
        &api,
        &schedule,
        &accounts,
        total,
        SCENARIO_MAX_SEATS as usize,
    )
    .await;
    let now_held: Vec<(u64, u64)> = seat_statuses(&api, &schedule)
        .await
        .into_iter()
        .filter(|x| x.2 == "HELD")
        .map(|x| (x.0, x.1))
        .collect();
    for seat in &before {
        assert!(
            now_held.contains(seat),
            "seat {seat:?} held before the crash is still held (or expired on time)"
        );
    }

    // Every hold, decided before or after the crash, expires on time.
    eventually(
        "every hold expires",
        u64::try_from(HOLD_TTL_SECS).unwrap() + 60,
        || async {
            seat_statuses(&api, &schedule)
                .await
                .iter()
                .all(|x| x.2 == "AVAILABLE")
                .then_some(())
        },
    )
    .await;
    for buyer in &accounts {
        for b in bookings(&api, &buyer.access).await {
            assert_eq!(b["status"], "CANCELLED", "{b}");
        }
    }
    let (s, _) = api.get("/readyz", None).await;
    assert_eq!(s, StatusCode::OK);

    processor.0.kill().unwrap();
    processor.0.wait().unwrap();
    trigger.trigger();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}
