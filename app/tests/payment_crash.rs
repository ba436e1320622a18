//! `kill -9` of an ingress between the charge and its record, on the real
//! stack: the ingress runs as its own OS process (the `ticketing` binary)
//! and is killed while the provider has charged the card but its answer is
//! still on the way. The payment is left WAITING; another ingress's sweeper
//! settles it by asking the provider, never by charging again, and the
//! buyer's retry with the same key reports it.
//!
//! Its own test binary, so its processor (in the one e2e group, see
//! `processor_crash.rs`) may use its own settings.

#![cfg(feature = "real-stack")]

mod common;

use common::*;
use reqwest::StatusCode;
use std::process::{Command, Stdio};
use std::time::Duration;
use ticketing::settings::{
    HttpSettings, IngressSettings, ProcessorSettings, ScheduleSettings, SinkSettings,
};
use ticketing_domain::ids::{derived_uuid, PaymentId, UserId};
use ticketing_payments::sandbox::SandboxProvider;
use ticketing_runtime::shutdown;
use ticketing_storage::PaymentStore;

const GROUP: &str = "schedule-processor-e2e";
const TOKEN_SECRET: &str = "an-integration-test-secret-of-enough-length";
const PG_SECRET: &str = "test_sk_crash";
/// The sandbox holds the lost answer this long: long enough to kill the
/// ingress while it waits.
const ANSWER_DELAY: Duration = Duration::from_secs(20);

fn schedules() -> ScheduleSettings {
    ScheduleSettings {
        admission_max_active: 5,
        admission_ttl_secs: 600,
        hold_ttl_secs: 300,
        max_seats_per_user: SCENARIO_MAX_SEATS,
        payment_ttl_secs: 120,
    }
}

fn http(listen: std::net::SocketAddr, card_keys: &str, sweep_after: u64) -> HttpSettings {
    HttpSettings {
        listen,
        admin_email: None,
        admin_password: None,
        token_secret: Some(TOKEN_SECRET.into()),
        phone_keys: Some(ticketing_ingress::security::phone::PhoneCipher::generate_spec("it1")),
        card_keys: Some(card_keys.into()),
        access_ttl_secs: 900,
        refresh_ttl_secs: 3600,
        decision_timeout_ms: 10_000,
        payment_sweep_after_secs: sweep_after,
        schedules: schedules(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_between_charge_and_record_charges_once_and_completes() {
    ticketing_runtime::telemetry::init();
    let keyspace = format!("paycrash_{}", unique());
    let (trigger, stop) = shutdown::channel();

    // The provider: the test keeps a handle on its books.
    let sandbox = SandboxProvider::new();
    let pg_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pg = pg_listener.local_addr().unwrap();
    let pg_router =
        ticketing_payments::http::sandbox_router(sandbox.clone(), PG_SECRET, ANSWER_DELAY);
    let pg_stop = stop.clone();
    tokio::spawn(async move {
        axum::serve(pg_listener, pg_router)
            .with_graceful_shutdown(pg_stop.wait())
            .await
    });

    // The processor and the sinks, in process.
    let sink_ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = SinkSettings {
        stack: stack_settings(&keyspace),
        ops_listen: sink_ops.local_addr().unwrap(),
        group: format!("catalog-sink-{keyspace}"),
        schedules: schedules(),
    };
    let processor_ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let processor = ProcessorSettings {
        stack: stack_settings(&keyspace),
        schedules: schedules(),
        ops_listen: processor_ops.local_addr().unwrap(),
        group: GROUP.into(),
        instance_id: format!("e2e-{keyspace}"),
        snapshot_every: 1000,
    };
    let mut tasks = vec![
        tokio::spawn(ticketing::stack::run_sink(sink, sink_ops, stop.clone())),
        tokio::spawn(ticketing::stack::run_processor(
            processor,
            processor_ops,
            stop.clone(),
        )),
    ];

    // The first ingress, as its own process, waiting up to a minute for the
    // provider (so it is still waiting when it is killed).
    let card_keys = ticketing_ingress::security::card::CardCipher::generate_spec("it1");
    let first_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let logs = tempfile::tempdir().unwrap();
    let out = std::fs::File::create(logs.path().join("ingress.log")).unwrap();
    let first_ops = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let schedule_env = schedules();
    let mut first = Killed(
        Command::new(env!("CARGO_BIN_EXE_ticketing"))
            .arg("ingress")
            .env("TICKETING_LISTEN", first_addr.to_string())
            .env("TICKETING_OPS_LISTEN", first_ops.to_string())
            .env("TICKETING_CQL_KEYSPACE", &keyspace)
            .env("TICKETING_TOKEN_SECRET", TOKEN_SECRET)
            .env(
                "TICKETING_PHONE_KEYS",
                ticketing_ingress::security::phone::PhoneCipher::generate_spec("it1"),
            )
            .env("TICKETING_CARD_KEYS", &card_keys)
            .env("TICKETING_PG_URL", format!("http://{pg}"))
            .env("TICKETING_PG_SECRET_KEY", PG_SECRET)
            .env("TICKETING_PG_TIMEOUT_MS", "60000")
            // Its own sweeper must not settle the payment before the kill.
            .env("TICKETING_PAYMENT_SWEEP_AFTER_SECS", "3600")
            .env(
                "TICKETING_ADMISSION_MAX_ACTIVE",
                schedule_env.admission_max_active.to_string(),
            )
            .env(
                "TICKETING_HOLD_TTL_SECS",
                schedule_env.hold_ttl_secs.to_string(),
            )
            .env(
                "TICKETING_MAX_SEATS_PER_USER",
                schedule_env.max_seats_per_user.to_string(),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("the ticketing binary starts"),
    );
    let api = Api::new(first_addr);
    api.wait_ready().await;

    let (_, _, schedule) = schedule_on_sale(&api, 1, 2, 30_000).await;
    let buyer = sign_up_and_login(&api, "USER").await;
    let bookings = admitted_hold(
        &api,
        &schedule,
        &buyer.access,
        serde_json::json!([{"row": 1, "col": 1}, {"row": 1, "col": 2}]),
    )
    .await;
    let key = unique();
    let user: UserId = buyer.user_id.parse().unwrap();
    let payment_id = PaymentId::from_uuid(derived_uuid(&[
        b"payment",
        user.as_uuid().as_bytes(),
        key.as_bytes(),
    ]));

    // The buyer pays with the card whose answer is lost; once the provider
    // has charged, the ingress dies before it hears so.
    let paying = {
        let url = format!("http://{first_addr}/api/v1/payments");
        let body = serde_json::json!({"booking_ids": bookings,
            "card": {"number": CARD_TIMEOUT, "expiry": "12/35", "cvc": "123"}});
        let request = reqwest::Client::new()
            .post(url)
            .bearer_auth(&buyer.access)
            .header("idempotency-key", &key)
            .json(&body);
        tokio::spawn(async move { request.send().await.map(|r| r.status()) })
    };
    eventually("the provider charged", 30, || async {
        (sandbox.charges() == 1).then_some(())
    })
    .await;
    first.0.kill().expect("SIGKILL");
    first.0.wait().unwrap();
    let heard = paying.await.unwrap();
    assert!(heard.is_err(), "the buyer never heard: {heard:?}");

    let store = ticketing_storage::cql::CqlStore::connect(&stack_settings("").cql_nodes, &keyspace)
        .await
        .unwrap();
    let left = store
        .payment(payment_id)
        .await
        .unwrap()
        .expect("recorded before the charge");
    assert_eq!(
        left.ledger.status.as_str(),
        "WAITING",
        "cut short between charge and record"
    );

    // A second ingress, whose sweeper takes over after two seconds.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = Api::new(listener.local_addr().unwrap());
    let ingress = IngressSettings {
        http: http(listener.local_addr().unwrap(), &card_keys, 2),
        stack: stack_settings(&keyspace),
        pg_url: Some(format!("http://{pg}")),
        pg_secret_key: Some(PG_SECRET.into()),
        pg_timeout_ms: 5_000,
    };
    tasks.push(tokio::spawn(ticketing::stack::run_ingress(
        ingress, listener, stop,
    )));
    second.wait_ready().await;

    // Settled by the sweeper alone: no request for it is made until then.
    let settled = eventually("the sweeper completes the payment", 60, || async {
        let p = store.payment(payment_id).await.unwrap().unwrap();
        (p.ledger.status.as_str() != "WAITING").then_some(p)
    })
    .await;
    assert_eq!(settled.ledger.status.as_str(), "COMPLETED");
    assert_eq!(sandbox.charges(), 1, "asked, never charged again");
    eventually("the seats sold", 30, || async {
        let seats = seat_statuses(&second, &schedule).await;
        seats.iter().all(|(_, _, st)| st == "SOLD").then_some(())
    })
    .await;
    // The buyer's retry with the same key reports the payment.
    let (s, b) = pay(&second, &buyer.access, &key, &bookings, CARD_TIMEOUT).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (
            b["payment_id"].as_str(),
            b["status"].as_str(),
            b["total_price"].as_i64()
        ),
        (
            Some(payment_id.to_string().as_str()),
            Some("COMPLETED"),
            Some(60_000)
        )
    );
    assert_eq!(sandbox.charges(), 1);

    trigger.trigger();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}
