//! The real stack: each role in its own process, over Kafka, CQL, Redis and the
//! schema registry.

use crate::probes::{self, Membership};
use crate::settings::{IngressSettings, ProcessorSettings, SinkSettings, StackSettings};
use crate::{
    ingress_state, serve, spawn_live_feed, spawn_payment_sweeper, Backends, IngressSecrets,
};
use anyhow::Context;
use std::sync::Arc;
use ticketing_ingress::gateway::listen_for_replies;
use ticketing_ingress::live::LiveEvent;
use ticketing_ingress::replies::PendingReplies;
use ticketing_ingress::router;
use ticketing_payments::http::PgClient;
use ticketing_processors::{ProcessorConfig, ScheduleProcessor};
use ticketing_runtime::shutdown::{Shutdown, ShutdownTrigger};
use ticketing_runtime::{ops_router, Health, Metrics};
use ticketing_schemas::{topics, EventCodec, HttpSchemaRegistry};
use ticketing_sinks::bookings::BookingSink;
use ticketing_sinks::catalog::CatalogSink;
use ticketing_sinks::payments::PaymentSink;
use ticketing_sinks::request_logs::RequestLogSink;
use ticketing_sinks::runner;
use ticketing_sinks::schedule_view::ScheduleProjectionSink;
use ticketing_storage::cql::CqlStore;
use ticketing_storage::redis_schedules::RedisScheduleViews;
use ticketing_storage::redis_sessions::RedisSessionStore;
use ticketing_transport::kafka::{
    ensure_declared_topics, KafkaConfig, KafkaConsumer, KafkaProducer, KafkaTransactionalStream,
    TopicDecl,
};

fn kafka(stack: &StackSettings, client_id: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: stack.kafka_brokers.clone(),
        client_id: client_id.to_string(),
        debug: stack.kafka_debug.clone(),
    }
}

async fn codec_and_topics(stack: &StackSettings, client_id: &str) -> anyhow::Result<EventCodec> {
    let retention_ms =
        (u64::from(stack.request_log_retention_days.max(1)) * 86_400_000).to_string();
    let request_logs = [("retention.ms", retention_ms.as_str())];
    let specs: Vec<TopicDecl<'_>> = topics::ALL
        .iter()
        .map(|t| TopicDecl {
            name: t.name,
            partitions: t.partitions,
            compacted: t.compacted,
            // Set where the topic is created; changing it later is an
            // operator's `kafka-configs --alter`.
            configs: if t.name == topics::REQUEST_LOGS {
                &request_logs
            } else {
                topics::configs(t.name)
            },
        })
        .collect();
    // One broker in the local stack and CI; production clusters are created
    // by their operator with the replication they need.
    ensure_declared_topics(&kafka(stack, client_id), &specs, 1)
        .await
        .context("creating topics")?;
    let registry = HttpSchemaRegistry::new(&stack.schema_registry_url);
    EventCodec::start(Arc::new(registry))
        .await
        .context("registering schemas")
}

pub async fn run_ingress(
    settings: IngressSettings,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let token_secret = settings
        .http
        .token_secret
        .clone()
        .context("TICKETING_TOKEN_SECRET is required outside dev")?;
    let phone_keys = settings
        .http
        .phone_keys
        .clone()
        .context("TICKETING_PHONE_KEYS is required outside dev")?;
    let card_keys = settings
        .http
        .card_keys
        .clone()
        .context("TICKETING_CARD_KEYS is required outside dev")?;
    let pg_url = settings
        .pg_url
        .clone()
        .context("TICKETING_PG_URL is required outside dev")?;
    let pg_secret = settings
        .pg_secret_key
        .clone()
        .context("TICKETING_PG_SECRET_KEY is required outside dev")?;
    let provider = PgClient::new(
        &pg_url,
        &pg_secret,
        std::time::Duration::from_millis(settings.pg_timeout_ms),
    )
    .context("payment provider client")?;
    let stack = &settings.stack;
    let core = settings.http.schedules.core()?;
    let codec = codec_and_topics(stack, "ticketing-ingress").await?;
    let cql = CqlStore::connect(&stack.cql_nodes, &stack.cql_keyspace)
        .await
        .context("connecting to CQL")?;
    let sessions = RedisSessionStore::connect(&stack.redis_url)
        .await
        .context("connecting to Redis")?;
    let producer =
        KafkaProducer::new(&kafka(stack, "ticketing-ingress")).context("Kafka producer")?;

    let metrics = Metrics::new("ingress");
    let readiness = Health::default();
    // This instance's reply address: answers to its commands come back keyed
    // by it.
    let reply_to = format!("ingress-{}", uuid::Uuid::now_v7());
    let replies = Arc::new(PendingReplies::default());
    // Only answers to this instance's own commands matter, all produced after
    // it starts: reading the topic's past would cost every start minutes of
    // other instances' answers.
    let answers = KafkaConsumer::from_latest(
        &kafka(stack, "ticketing-ingress"),
        &format!("replies-{reply_to}"),
        &[topics::SCHEDULE_REPLIES],
    )
    .context("Kafka replies consumer")?;
    let answers_assigned = answers.assigned();
    probes::watch(
        &readiness,
        &metrics,
        stack,
        "ingress-replies",
        answers.health(),
        Membership::Reported,
        &shutdown,
    );
    let listener_task = tokio::spawn(listen_for_replies(
        Box::new(answers),
        codec.clone(),
        replies.clone(),
        reply_to.clone(),
        shutdown.clone(),
    ));
    // Seat maps and queue statuses come from Redis, kept by the schedule view
    // sink: a read never goes through a processor.
    let views = RedisScheduleViews::connect(&stack.redis_url, core)
        .await
        .context("connecting to Redis (schedule views)")?;
    let cql = Arc::new(cql);
    let live_codec = codec.clone();
    let live_group = format!("admin-live-{reply_to}");
    let backends = Backends {
        accounts: cql.clone(),
        catalog: cql.clone(),
        payment_views: cql.clone(),
        request_logs: cql.clone(),
        payments: cql,
        provider: Arc::new(provider),
        sessions: Arc::new(sessions),
        schedule_reads: Arc::new(views),
        producer: Arc::new(producer),
        codec,
        replies,
        reply_to,
    };
    let (state, request_log_task) = ingress_state(
        &settings.http,
        IngressSecrets {
            token_secret: &token_secret,
            phone_keys: &phone_keys,
            card_keys: &card_keys,
        },
        backends,
        metrics,
        readiness.clone(),
        &shutdown,
    )
    .await?;
    // Ready once answers can arrive: a command sent before the replies
    // consumer has its partitions could have its answer skipped.
    let waited = std::time::Instant::now();
    while !answers_assigned.load(std::sync::atomic::Ordering::Acquire) {
        if waited.elapsed() > std::time::Duration::from_secs(60) {
            anyhow::bail!("the replies consumer got no partitions within 60 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let sweeper = spawn_payment_sweeper(
        state.payments.clone(),
        settings.http.payment_sweep_after_secs,
        shutdown.clone(),
    );
    // The admin live stream: every instance reads every payment event
    // produced after it starts, under a group of its own that commits nothing.
    let live = KafkaConsumer::from_latest(
        &kafka(stack, "ticketing-ingress"),
        &live_group,
        &LiveEvent::TOPICS,
    )
    .context("Kafka consumer (admin live streams)")?;
    let live_assigned = live.assigned();
    probes::watch(
        &readiness,
        &state.metrics,
        stack,
        "ingress-admin-live",
        live.health(),
        Membership::Reported,
        &shutdown,
    );
    let feed = spawn_live_feed(
        Box::new(live),
        live_codec,
        state.live.clone(),
        shutdown.clone(),
    );
    // Ready once the live stream reads: "from latest" is where the group
    // lands when it gets its partitions, so events before that would never
    // reach a manager connected now.
    let waited = std::time::Instant::now();
    while !live_assigned.load(std::sync::atomic::Ordering::Acquire) {
        if waited.elapsed() > std::time::Duration::from_secs(60) {
            anyhow::bail!("the admin live stream got no partitions within 60 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    readiness.set_ready(true);
    let served = serve(listener, router(state), shutdown).await;
    readiness.set_ready(false);
    listener_task.await.context("replies listener task")?;
    sweeper.await.context("payment sweeper task")?;
    request_log_task.await.context("request log task")?;
    feed.await.context("admin live feed task")?;
    served
}

pub async fn run_sink(
    settings: SinkSettings,
    ops_listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let stack = &settings.stack;
    let codec = codec_and_topics(stack, "ticketing-sink").await?;
    let cql = CqlStore::connect(&stack.cql_nodes, &stack.cql_keyspace)
        .await
        .context("connecting to CQL")?;
    let consumer = KafkaConsumer::new(
        &kafka(stack, "ticketing-sink"),
        &settings.group,
        &[topics::CATALOG, topics::SCHEDULES],
    )
    .context("Kafka consumer")?;
    let core = settings.schedules.core()?;
    let views = RedisScheduleViews::connect(&stack.redis_url, core)
        .await
        .context("connecting to Redis")?;
    // The projection rebuilds its fold from the changelog's start at every
    // start (so a group of its own each time); Redis skips what it already has.
    let changelog = KafkaConsumer::new(
        &kafka(stack, "ticketing-sink"),
        &format!("{}-schedule-view-{}", settings.group, uuid::Uuid::now_v7()),
        &[topics::SCHEDULE_EVENTS],
    )
    .context("Kafka changelog consumer")?;
    // Payments and bookings go to CQL with versioned writes: each sink has
    // a group of its own and resumes where it committed.
    let payments = KafkaConsumer::new(
        &kafka(stack, "ticketing-sink"),
        &format!("{}-payments", settings.group),
        &[topics::PAYMENTS],
    )
    .context("Kafka payments consumer")?;
    let bookings = KafkaConsumer::new(
        &kafka(stack, "ticketing-sink"),
        &format!("{}-bookings", settings.group),
        &[topics::SCHEDULE_EVENTS],
    )
    .context("Kafka bookings consumer")?;
    let request_logs = KafkaConsumer::new(
        &kafka(stack, "ticketing-sink"),
        &format!("{}-request-logs", settings.group),
        &[topics::REQUEST_LOGS],
    )
    .context("Kafka request-logs consumer")?;
    let metrics = Metrics::new("sink");
    let readiness = Health::default();
    for (name, consumer) in [
        ("sink-catalog", &consumer),
        ("sink-schedule-view", &changelog),
        ("sink-payments", &payments),
        ("sink-bookings", &bookings),
        ("sink-request-logs", &request_logs),
    ] {
        probes::watch(
            &readiness,
            &metrics,
            stack,
            name,
            consumer.health(),
            Membership::Required,
            &shutdown,
        );
    }
    // A sink loop that ends on its own (its consumer failed for good) ends
    // the process, instead of leaving it up and ready with one sink dead.
    let (stop_all, shutdown) = shutdown.linked();
    let ops = serve(
        ops_listener,
        ops_router(metrics.clone(), readiness.clone()),
        shutdown.clone(),
    );
    let asked = shutdown.clone();
    let cql = Arc::new(cql);
    let catalog = runner::run(
        consumer,
        Arc::new(CatalogSink::new(codec.clone(), cql.clone())),
        metrics.clone(),
        shutdown.clone(),
    );
    let payments = runner::run(
        payments,
        Arc::new(PaymentSink::new(codec.clone(), cql.clone())),
        metrics.clone(),
        shutdown.clone(),
    );
    let request_logs = runner::run(
        request_logs,
        Arc::new(RequestLogSink::new(
            codec.clone(),
            cql.clone(),
            stack.request_log_retention_days,
        )),
        metrics.clone(),
        shutdown.clone(),
    );
    let bookings = runner::run(
        bookings,
        Arc::new(BookingSink::new(codec.clone(), cql)),
        metrics.clone(),
        shutdown.clone(),
    );
    let projection = runner::run(
        changelog,
        Arc::new(ScheduleProjectionSink::new(codec, core, Arc::new(views))),
        metrics,
        shutdown,
    );
    readiness.set_ready(true);
    let end = |name, run| ends_the_process(name, run, &readiness, &stop_all, &asked);
    let (catalog, projection, payments, bookings, request_logs) = (
        end("sink catalog", catalog),
        end("sink schedule-view", projection),
        end("sink payments", payments),
        end("sink bookings", bookings),
        end("sink request-logs", request_logs),
    );
    let (ops, catalog, projection, payments, bookings, request_logs) =
        tokio::join!(ops, catalog, projection, payments, bookings, request_logs);
    readiness.set_ready(false);
    catalog.context("catalog sink")?;
    projection.context("schedule view sink")?;
    payments.context("payment sink")?;
    bookings.context("booking sink")?;
    request_logs.context("request-log sink")?;
    ops
}

pub async fn run_processor(
    settings: ProcessorSettings,
    ops_listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let stack = &settings.stack;
    let core = settings.schedules.core()?;
    let client_id = format!("ticketing-processor-{}", settings.instance_id);
    let codec = codec_and_topics(stack, &client_id).await?;
    let stream = KafkaTransactionalStream::new(
        &kafka(stack, &client_id),
        &settings.group,
        &[topics::SCHEDULES],
        &format!("ticketing-{}-{}", settings.group, settings.instance_id),
    )
    .await
    .context("Kafka transactional stream")?;
    let metrics = Metrics::new("processor");
    let readiness = Health::default();
    probes::watch(
        &readiness,
        &metrics,
        stack,
        &settings.instance_id,
        stream.health(),
        Membership::Required,
        &shutdown,
    );
    // The processor's loop ending (fenced for good) ends the process: an
    // orchestrator restarts it, instead of a process that stays up and ready
    // with no processor in it.
    let (stop_ops, ops_shutdown) = shutdown.linked();
    let ops = serve(
        ops_listener,
        ops_router(metrics.clone(), readiness.clone()),
        ops_shutdown,
    );
    let mut config = ProcessorConfig::new(settings.instance_id.clone(), core);
    config.snapshot_every = settings.snapshot_every.max(1);
    let processor = ScheduleProcessor::new(stream, codec, config, metrics);
    readiness.set_ready(true);
    let processed = ends_the_process(
        "processor",
        processor.run(shutdown.clone()),
        &readiness,
        &stop_ops,
        &shutdown,
    );
    let (ops, processed) = tokio::join!(ops, processed);
    processed.context("schedule processor")?;
    ops
}

/// Runs one of the process's main loops. If it ends while nobody asked the
/// process to stop (`asked` not triggered: fenced for good, a consumer failed
/// for good), the process turns unready and `stop` ends its other servers, so
/// it exits and an orchestrator restarts it, instead of living on, ready,
/// without that loop.
async fn ends_the_process<E: std::fmt::Debug>(
    name: &'static str,
    run: impl std::future::Future<Output = Result<(), E>>,
    health: &Health,
    stop: &ShutdownTrigger,
    asked: &Shutdown,
) -> Result<(), E> {
    let result = run.await;
    if !asked.is_triggered() {
        tracing::error!(role = name, outcome = ?result, "a main loop stopped on its own; the process stops");
        health.set_ready(false);
        stop.trigger();
    }
    result
}
