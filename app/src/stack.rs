//! The real stack: each role in its own process, over Kafka, CQL, Redis and the
//! schema registry.

use crate::settings::{IngressSettings, SinkSettings, StackSettings};
use crate::{ingress_state, serve, Backends};
use anyhow::Context;
use std::sync::Arc;
use ticketing_ingress::router;
use ticketing_runtime::shutdown::Shutdown;
use ticketing_runtime::{ops_router, Metrics, Readiness};
use ticketing_schemas::{topics, EventCodec, HttpSchemaRegistry};
use ticketing_sinks::catalog::CatalogSink;
use ticketing_sinks::runner;
use ticketing_storage::cql::CqlStore;
use ticketing_storage::redis_sessions::RedisSessionStore;
use ticketing_transport::kafka::{ensure_topics, KafkaConfig, KafkaConsumer, KafkaProducer};

fn kafka(stack: &StackSettings, client_id: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: stack.kafka_brokers.clone(),
        client_id: client_id.to_string(),
    }
}

async fn codec_and_topics(stack: &StackSettings, client_id: &str) -> anyhow::Result<EventCodec> {
    let specs: Vec<(&str, i32, bool)> = topics::ALL
        .iter()
        .map(|t| (t.name, t.partitions, t.compacted))
        .collect();
    ensure_topics(&kafka(stack, client_id), &specs)
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
    let stack = &settings.stack;
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
    let readiness = Readiness::default();
    let cql = Arc::new(cql);
    let backends = Backends {
        accounts: cql.clone(),
        catalog: cql,
        sessions: Arc::new(sessions),
        producer: Arc::new(producer),
        codec,
    };
    let state = ingress_state(
        &settings.http,
        &token_secret,
        &phone_keys,
        backends,
        metrics,
        readiness.clone(),
    )
    .await?;
    readiness.set(true);
    serve(listener, router(state), shutdown).await
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
    let metrics = Metrics::new("sink");
    let readiness = Readiness::default();
    let ops = serve(
        ops_listener,
        ops_router(metrics.clone(), readiness.clone()),
        shutdown.clone(),
    );
    let sink = runner::run(
        consumer,
        Arc::new(CatalogSink::new(codec, Arc::new(cql))),
        metrics,
        shutdown,
    );
    readiness.set(true);
    let (ops, sink) = tokio::join!(ops, sink);
    sink.context("catalog sink")?;
    ops
}
