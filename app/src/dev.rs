//! `ticketing dev`: ingress, sinks (and, as they arrive, processors) in one
//! process, over the embedded log, store and schema registry.

use crate::settings::DevSettings;
use crate::{ingress_state, secrets, serve, Backends};
use anyhow::Context;
use std::sync::Arc;
use ticketing_ingress::router;
use ticketing_runtime::shutdown::Shutdown;
use ticketing_runtime::{Metrics, Readiness};
use ticketing_schemas::{topics, EmbeddedSchemaRegistry, EventCodec};
use ticketing_sinks::catalog::CatalogSink;
use ticketing_sinks::runner;
use ticketing_storage::embedded::EmbeddedStore;
use ticketing_transport::embedded::EmbeddedLog;

pub async fn run(
    settings: DevSettings,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let dir = &settings.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let secrets = secrets::load_or_create(dir)?;
    let token_secret = settings
        .http
        .token_secret
        .clone()
        .unwrap_or(secrets.token_secret);
    let phone_keys = settings
        .http
        .phone_keys
        .clone()
        .unwrap_or(secrets.phone_keys);

    let store =
        EmbeddedStore::open(&dir.join("store.redb")).context("opening the embedded store")?;
    let registry = EmbeddedSchemaRegistry::open(&dir.join("schemas.json"))
        .context("opening the embedded schema registry")?;
    let codec = EventCodec::start(Arc::new(registry))
        .await
        .context("registering schemas")?;
    let topic_specs: Vec<(&str, i32)> =
        topics::ALL.iter().map(|t| (t.name, t.partitions)).collect();
    let log =
        EmbeddedLog::open(&dir.join("log"), &topic_specs).context("opening the embedded log")?;

    let metrics = Metrics::new("dev");
    let readiness = Readiness::default();
    let state = ingress_state(
        &settings.http,
        &token_secret,
        &phone_keys,
        Backends {
            accounts: Arc::new(store.clone()),
            catalog: Arc::new(store.clone()),
            sessions: Arc::new(store.clone()),
            producer: Arc::new(log.producer()),
            codec: codec.clone(),
        },
        metrics.clone(),
        readiness.clone(),
    )
    .await?;

    let consumer = log
        .consumer("catalog-sink", &[topics::CATALOG, topics::SCHEDULES])
        .context("subscribing the catalog sink")?;
    let sink = tokio::spawn(runner::run(
        consumer,
        Arc::new(CatalogSink::new(codec, Arc::new(store.clone()))),
        metrics,
        shutdown.clone(),
    ));

    readiness.set(true);
    tracing::info!(data_dir = %dir.display(), "ticketing dev is up");
    let served = serve(listener, router(state), shutdown).await;
    readiness.set(false);
    sink.await.context("catalog sink task")??;
    served
}
