//! The end-to-end scenario through the real engines: ingress and catalog sink
//! run in-process against Kafka, Cassandra, Redis and the schema registry that
//! `make test` started. Each run uses its own keyspace.

#![cfg(feature = "real-stack")]

mod common;

use chrono::Utc;
use common::*;
use reqwest::StatusCode;
use scylla::client::session_builder::SessionBuilder;
use std::sync::Arc;
use std::time::Duration;
use ticketing::settings::{ProcessorSettings, ScheduleSettings, SinkSettings};
use ticketing_domain::events::{Event, EventMeta, StageCreated};
use ticketing_domain::ids::{EventId, StageId, UserId};
use ticketing_runtime::shutdown::{self, ShutdownTrigger};
use ticketing_runtime::Metrics;
use ticketing_schemas::{topics, EventCodec, HttpSchemaRegistry};
use ticketing_sinks::bookings::BookingSink;
use ticketing_sinks::payments::PaymentSink;
use ticketing_sinks::runner;
use ticketing_storage::cql::CqlStore;
use ticketing_transport::kafka::{KafkaConfig, KafkaConsumer, KafkaProducer};
use ticketing_transport::{Consumer, OutRecord, Producer};
use uuid::Uuid;

struct Stack {
    api: Api,
    sink_ops: Api,
    keyspace: String,
    trigger: ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Every processor started by these tests joins one group, so they must all
/// decide with the same settings; tests running at once share the partitions
/// (and exercise rebalancing as they start and stop).
const PROCESSOR_GROUP: &str = "schedule-processor-e2e";
pub const E2E_MAX_ACTIVE: u32 = 5;
pub const E2E_HOLD_TTL_SECS: i64 = 20;
const PG_SECRET: &str = "test_sk_e2e";

fn schedule_settings() -> ScheduleSettings {
    ScheduleSettings {
        admission_max_active: E2E_MAX_ACTIVE,
        admission_ttl_secs: 600,
        hold_ttl_secs: E2E_HOLD_TTL_SECS,
        max_seats_per_user: SCENARIO_MAX_SEATS,
        payment_ttl_secs: 120,
    }
}

async fn start() -> Stack {
    ticketing_runtime::telemetry::init();
    let keyspace = format!("e2e_{}", unique());
    let (trigger, stop) = shutdown::channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pg = spawn_pg_sandbox(PG_SECRET, stop.clone()).await;
    let ingress = test_ingress(
        addr,
        &keyspace,
        pg,
        PG_SECRET,
        schedule_settings(),
        10_000,
        60,
    );
    let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_ops = Api::new(ops.local_addr().unwrap());
    let sink = SinkSettings {
        stack: stack_settings(&keyspace),
        ops_listen: ops.local_addr().unwrap(),
        group: format!("catalog-sink-{keyspace}"),
        schedules: schedule_settings(),
    };
    let processor_ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let processor = ProcessorSettings {
        stack: stack_settings(&keyspace),
        schedules: schedule_settings(),
        ops_listen: processor_ops.local_addr().unwrap(),
        group: PROCESSOR_GROUP.into(),
        instance_id: format!("e2e-{keyspace}"),
        // Small, so the tests write and restore from snapshots.
        snapshot_every: 25,
    };
    let tasks = vec![
        tokio::spawn(ticketing::stack::run_ingress(
            ingress,
            listener,
            stop.clone(),
        )),
        tokio::spawn(ticketing::stack::run_sink(sink, ops, stop.clone())),
        tokio::spawn(ticketing::stack::run_processor(
            processor,
            processor_ops,
            stop,
        )),
    ];
    let api = Api::new(addr);
    api.wait_ready().await;
    sink_ops.wait_ready().await;
    Stack {
        api,
        sink_ops,
        keyspace,
        trigger,
        tasks,
    }
}

impl Stack {
    async fn stop(self) {
        self.trigger.trigger();
        for t in self.tasks {
            t.await.unwrap().unwrap();
        }
    }
}

async fn cql() -> scylla::client::session::Session {
    SessionBuilder::new()
        .known_nodes(stack_settings("").cql_nodes)
        .connection_timeout(Duration::from_secs(30))
        .build()
        .await
        .expect("CQL connects")
}

fn kafka() -> KafkaConfig {
    KafkaConfig {
        brokers: stack_settings("").kafka_brokers,
        client_id: "e2e-test".into(),
        debug: None,
    }
}

async fn codec() -> EventCodec {
    let registry = HttpSchemaRegistry::new(&stack_settings("").schema_registry_url);
    EventCodec::start(Arc::new(registry))
        .await
        .expect("codec starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_whole_api_works_on_the_real_stack() {
    let stack = start().await;
    accounts_scenario(&stack.api).await;
    let catalog = catalog_scenario(&stack.api).await;
    ops_scenario(&stack.api).await;

    // The StageCreated event is in Kafka, in the Confluent wire format, and a
    // codec with a cold cache decodes it through the registry.
    let mut consumer =
        KafkaConsumer::new(&kafka(), &format!("e2e-{}", unique()), &[topics::CATALOG]).unwrap();
    let fresh = codec().await;
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let r = consumer.recv().await.unwrap();
            assert_eq!(r.payload[0], 0, "Confluent magic byte");
            if let Event::StageCreated(e) = fresh.decode(&r.payload).await.unwrap() {
                if e.stage_id.to_string() == catalog.stage_id {
                    assert_eq!(
                        r.key.as_deref(),
                        Some(catalog.stage_id.as_str()),
                        "keyed by its id"
                    );
                    return e;
                }
            }
        }
    })
    .await
    .expect("StageCreated reaches Kafka");
    assert_eq!((found.rows, found.cols), (3, 4));
    assert_eq!(found.seller_id.to_string(), catalog.seller.user_id);

    // Rows are in the CQL tables; phone and password are not in plain text.
    let session = cql().await;
    let ks = &stack.keyspace;
    let rows = session
        .query_unpaged(
            format!("SELECT name, seat_rows, seat_cols FROM {ks}.stages WHERE stage_id = ?"),
            (Uuid::parse_str(&catalog.stage_id).unwrap(),),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let (name, r, c): (String, i32, i32) = rows.single_row().unwrap();
    assert_eq!((name.as_str(), r, c), ("Olympic Hall", 3, 4));
    let rows = session
        .query_unpaged(
            format!("SELECT phone, password FROM {ks}.users WHERE user_id = ?"),
            (Uuid::parse_str(&catalog.seller.user_id).unwrap(),),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let (phone, password): (String, String) = rows.single_row().unwrap();
    assert!(
        phone.starts_with("v1:") && !phone.contains("01012345678"),
        "{phone}"
    );
    assert!(password.starts_with("$argon2id$") && !password.contains(&catalog.seller.password));

    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_waiting_room_and_seat_holds_work_on_the_real_stack() {
    let stack = start().await;
    waiting_room_scenario(&stack.api, E2E_MAX_ACTIVE, E2E_HOLD_TTL_SECS).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_and_refunds_work_on_the_real_stack() {
    let stack = start().await;
    let (manager, _) = login(&stack.api, "admin@example.com", "admin-password-1").await;
    let seen = payments_scenario(&stack.api, &manager).await;
    request_logs_scenario(&stack.api, &manager).await;
    let keyspace = stack.keyspace.clone();
    // The live booking sink has the final states before the stack stops:
    // the first buyer's two bookings refunded, the second's two paid.
    let live = CqlStore::connect(&stack_settings("").cql_nodes, &keyspace)
        .await
        .unwrap();
    eventually("the live bookings final", 60, || async {
        use ticketing_domain::booking::BookingStatus::{Cancelled, Confirmed};
        use ticketing_storage::BookingRows;
        let count = |user: &str, status| {
            let live = &live;
            let user: UserId = user.parse().unwrap();
            async move {
                live.bookings_of_user(user)
                    .await
                    .unwrap()
                    .iter()
                    .filter(|b| b.status == status)
                    .count()
            }
        };
        (count(&seen.users[0], Cancelled).await == 2 && count(&seen.users[1], Confirmed).await == 2)
            .then_some(())
    })
    .await;
    stack.stop().await;
    replaying_the_topics_gives_the_same_tables(&keyspace, &seen).await;
}

/// Everything the sinks wrote about the scenario's buyers and schedules, in
/// a form that compares: rows in their tables' order.
#[derive(Debug, PartialEq)]
struct SinkTables {
    payments_by_user: Vec<ticketing_domain::events::PaymentSnapshot>,
    payments_by_day: Vec<ticketing_domain::events::PaymentSnapshot>,
    refunds_by_day: Vec<ticketing_storage::RefundView>,
    bookings_by_user: Vec<ticketing_storage::BookingRow>,
    bookings_by_schedule: Vec<ticketing_storage::BookingRow>,
}

async fn sink_tables(store: &CqlStore, seen: &PaymentsSeen) -> SinkTables {
    use ticketing_storage::listing::{self, ListQuery};
    use ticketing_storage::{BookingRows, PaymentViews};
    let users: Vec<UserId> = seen.users.iter().map(|u| u.parse().unwrap()).collect();
    let mut t = SinkTables {
        payments_by_user: vec![],
        payments_by_day: vec![],
        refunds_by_day: vec![],
        bookings_by_user: vec![],
        bookings_by_schedule: vec![],
    };
    for u in &users {
        t.payments_by_user
            .extend(store.payments_of_user(*u, 1000).await.unwrap());
        t.bookings_by_user
            .extend(store.bookings_of_user(*u).await.unwrap());
    }
    for s in &seen.schedules {
        t.bookings_by_schedule.extend(
            store
                .bookings_of_schedule(s.parse().unwrap())
                .await
                .unwrap(),
        );
    }
    let mut q = ListQuery {
        from: seen.started,
        to: Utc::now() + chrono::Duration::hours(1),
        after: None,
        limit: 500,
    };
    loop {
        let page = listing::payments(store, &q, |p| users.contains(&p.user_id))
            .await
            .unwrap();
        t.payments_by_day.extend(page.items);
        match page.next {
            Some(next) => q.after = Some(next),
            None => break,
        }
    }
    q.after = None;
    loop {
        let page = listing::refunds(store, &q).await.unwrap();
        t.refunds_by_day.extend(
            page.items
                .into_iter()
                .filter(|r| users.contains(&r.user_id)),
        );
        match page.next {
            Some(next) => q.after = Some(next),
            None => break,
        }
    }
    t
}

/// The payment and booking sinks, replaying their topics from the start into
/// an empty keyspace, build the same rows the live sinks built.
async fn replaying_the_topics_gives_the_same_tables(keyspace: &str, seen: &PaymentsSeen) {
    let nodes = stack_settings("").cql_nodes;
    let live = CqlStore::connect(&nodes, keyspace).await.unwrap();
    let replay_ks = format!("{keyspace}_replay");
    let replica = Arc::new(CqlStore::connect(&nodes, &replay_ks).await.unwrap());
    let codec = codec().await;
    let (trigger, stop) = shutdown::channel();
    let payments = KafkaConsumer::new(
        &kafka(),
        &format!("replay-payments-{replay_ks}"),
        &[topics::PAYMENTS],
    )
    .unwrap();
    let bookings = KafkaConsumer::new(
        &kafka(),
        &format!("replay-bookings-{replay_ks}"),
        &[topics::SCHEDULE_EVENTS],
    )
    .unwrap();
    let tasks = [
        tokio::spawn(runner::run(
            payments,
            Arc::new(PaymentSink::new(codec.clone(), replica.clone())),
            Metrics::new("replay"),
            stop.clone(),
        )),
        tokio::spawn(runner::run(
            bookings,
            Arc::new(BookingSink::new(codec, replica.clone())),
            Metrics::new("replay"),
            stop,
        )),
    ];
    let want = sink_tables(&live, seen).await;
    assert_eq!(want.refunds_by_day.len(), 2, "{want:#?}");
    assert!(want.payments_by_user.len() >= 5, "{want:#?}");
    assert!(!want.bookings_by_schedule.is_empty(), "{want:#?}");
    let mut got = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while std::time::Instant::now() < deadline {
        let now = sink_tables(&replica, seen).await;
        if now == want {
            got = Some(now);
            break;
        }
        got = Some(now);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    trigger.trigger();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(got.unwrap(), want, "the replayed tables differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flash_sale_sells_every_seat_at_most_once_on_the_real_stack() {
    let stack = start().await;
    let (held, lucky) =
        flash_sale_scenario(&stack.api, 40, 5, 6, SCENARIO_MAX_SEATS as usize).await;
    assert_eq!(held, 30, "every seat found a buyer");
    assert!(lucky >= 15, "{lucky} buyers got seats");
    stack.stop().await;
}

/// The catalog sink writes rows from events alone: an event produced straight to
/// Kafka (no ingress write-through) becomes a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalog_sink_writes_rows_from_events() {
    let stack = start().await;
    let codec = codec().await;
    let stage_id = StageId::from_uuid(Uuid::now_v7());
    let event = Event::StageCreated(StageCreated {
        meta: EventMeta {
            event_id: EventId::from_uuid(Uuid::now_v7()),
            occurred_at: chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis())
                .unwrap(),
            actor: None,
        },
        stage_id,
        seller_id: UserId::from_uuid(Uuid::now_v7()),
        name: "Sink Hall".into(),
        location: "Busan".into(),
        rows: 7,
        cols: 9,
    });
    let producer = KafkaProducer::new(&kafka()).unwrap();
    for _ in 0..2 {
        // Twice: a duplicate delivery must leave one identical row.
        producer
            .send(OutRecord {
                topic: topics::CATALOG.to_string(),
                key: stage_id.to_string(),
                partition: None,
                payload: codec.encode(&event).await.unwrap(),
            })
            .await
            .unwrap();
    }
    let session = cql().await;
    let query = format!(
        "SELECT name, seat_rows, seat_cols FROM {}.stages WHERE stage_id = ?",
        stack.keyspace
    );
    let row = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let res = session
                .query_unpaged(query.clone(), (stage_id.as_uuid(),))
                .await
                .unwrap()
                .into_rows_result()
                .unwrap();
            if let Some(row) = res
                .maybe_first_row::<(String, i32, i32)>()
                .expect("row types match")
            {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the sink writes the row");
    assert_eq!(row, ("Sink Hall".to_string(), 7, 9));
    let (s, _) = stack.api.get("/readyz", None).await;
    assert_eq!(s, StatusCode::OK);
    // The sink serves its own ops endpoints, with its lag per partition.
    let text = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let r = stack
                .sink_ops
                .http
                .get(format!("{}/metrics", stack.sink_ops.base))
                .send()
                .await
                .unwrap();
            let text = r.text().await.unwrap();
            // Two consumers report (the catalog and the schedule view); wait
            // for the catalog's.
            let catalog_lags = text
                .lines()
                .filter(|l| {
                    l.starts_with("ticketing_consumer_lag{")
                        && l.contains(r#"topic="ticketing.catalog.v1""#)
                })
                .count();
            if catalog_lags == 6 {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .expect("the sink reports its lag");
    for p in 0..6 {
        assert!(
            text.contains(&format!(
                r#"partition="{p}",topic="ticketing.catalog.v1",component="sink"}}"#
            )),
            "lag of catalog partition {p}: {text}"
        );
    }
    assert!(text.contains(r#"ticketing_events_consumed_total{consumer="catalog-sink",topic="ticketing.catalog.v1",component="sink"}"#), "{text}");
    stack.stop().await;
}
